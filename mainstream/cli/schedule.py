"""`mainstream schedule`: plan cut points and frame rates for apps under a compute budget.

    mainstream schedule dry-run examples/problem.json
    mainstream schedule dry-run examples/problem.yaml --json
    mainstream schedule dry-run examples/problem.json --report plan.html
    mainstream schedule sweep examples/problem.json --budget-range 20:200:10
    mainstream schedule sweep --apps 1,2,5,10 --report sweep.html

With a running node (`--server URL`, env MAINSTREAM_SERVER), `show` prints the plan in force
and `dry-run` without a PROBLEM file asks the node what it would plan after a change:

    mainstream schedule show --server http://edge-1:8780
    mainstream schedule dry-run --add-app buses=buses:2 --remove-app trains --budget 200

Only the scheduler (numpy/scipy) is imported here: no TensorFlow, no OpenCV.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import click
from tqdm import tqdm

from mainstream.cli.api_client import app_request
from mainstream.cli.client import (
    DEFAULT_SERVER,
    PackageSpec,
    echo_json,
    json_option,
    number,
    open_client,
    server_option,
    token_option,
)
from mainstream.cli.problem_files import load_problem
from mainstream.core.errors import NotFoundError
from scheduler.deadline import DEFAULT_TIME_LIMIT_S
from scheduler.planner import SOLVERS, make_plan
from scheduler.problem import Objective, Plan
from scheduler.report import format_plan, format_sweep, html_report, sweep_html_report
from scheduler.sweep import (
    Solver,
    SweepPoint,
    SweepResult,
    budget_range,
    budgets_around,
    sweep_app_subsets,
    sweep_budgets,
    sweep_generated,
)

OBJECTIVES = ("mean_f1", "min_f1")
DEFAULT_GENERATED_APP_COUNTS = (1, 2, 5, 10)

_problem_argument = click.Path(dir_okay=False, path_type=Path)
_report_option = click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML report (charts, tables, inputs) to this file.",
)
_solver_option = click.option(
    "--solver",
    type=click.Choice(SOLVERS),
    default="auto",
    show_default=True,
    help="auto: exact search, with the MILP and greedy where they help; exact: the search "
    "alone; greedy: fast marginal-gain heuristic; milp: integer program.",
)
_time_limit_option = click.option(
    "--time-limit",
    "time_limit_s",
    type=click.FloatRange(min=0, min_open=True, max=600),
    default=DEFAULT_TIME_LIMIT_S,
    show_default=True,
    help="Seconds one plan may take; the best plan found by then is printed with its proven "
    "optimality gap.",
)
_objective_option = click.option(
    "--objective",
    type=click.Choice(OBJECTIVES),
    default=None,
    help="Override the problem's objective: mean_f1 (average) or min_f1 (fairness).",
)


@click.group()
def schedule() -> None:
    """Choose each app's cut point and frame rate to maximise event F1 under a budget."""


@schedule.command("show")
@server_option
@token_option
@json_option
def show(server: str, token: str | None, as_json: bool) -> None:
    """The plan a running node is following, and what its runtime measured since."""
    with open_client(server, token) as client:
        view = client.schedule()
    if as_json:
        echo_json(view)
        return
    click.echo(_describe_schedule(view), nl=False)


@schedule.command("dry-run")
@click.argument("problem_path", metavar="[PROBLEM]", type=_problem_argument, required=False)
@_solver_option
@_time_limit_option
@click.option(
    "--budget",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Override the problem's (or the node's) compute budget (cost units per second).",
)
@_objective_option
@click.option(
    "--confidence",
    type=click.FloatRange(min=0.5, max=1, max_open=True),
    default=None,
    help="Plan on pessimistic quantiles of the per-frame figures (e.g. 0.9: recall's 10 %, "
    "the FP rate's 90 %) instead of their posterior means; needs held-out counts in the "
    "problem's candidates (`evidence`). A node uses its planning.confidence.",
)
@click.option("--json", "as_json", is_flag=True, help="Print only the plan as JSON on stdout.")
@_report_option
@click.option(
    "--server",
    envvar="MAINSTREAM_SERVER",
    default=None,
    show_envvar=True,
    help=f"Ask this node instead of planning a file (default without PROBLEM: {DEFAULT_SERVER}).",
)
@token_option
@click.option(
    "--add-app",
    "add_apps",
    multiple=True,
    metavar="NAME[=APP[:VERSION]][@CAMERA]",
    help="Node mode: plan as if this app were added (or a JSON object as `apps add` takes).",
)
@click.option(
    "--remove-app",
    "remove_apps",
    multiple=True,
    metavar="NAME",
    help="Node mode: plan as if this app were removed.",
)
@click.pass_context
def dry_run(
    ctx: click.Context,
    problem_path: Path | None,
    solver: str,
    time_limit_s: float,
    budget: float | None,
    objective: str | None,
    confidence: float | None,
    as_json: bool,
    report_path: Path | None,
    server: str | None,
    token: str | None,
    add_apps: tuple[str, ...],
    remove_apps: tuple[str, ...],
) -> None:
    """Plan PROBLEM (a .json or .yaml file) and print the schedule; nothing is deployed.

    The table shows, per app, the cut point (how much of the base network it shares), the
    frame rate, the vote X and the predicted event recall, precision and F1 (with its 90 %
    interval when the candidates carry held-out counts), next to the Max-Sharing and
    No-Sharing baselines at the same budget.

    Without PROBLEM (or with --server) the running node plans its own apps, changed by
    --add-app / --remove-app / --budget, and deploys nothing.
    """
    server_on_command_line = (
        ctx.get_parameter_source("server") == click.core.ParameterSource.COMMANDLINE
    )
    if problem_path is None or server_on_command_line:
        if problem_path is not None:
            raise click.UsageError("give either PROBLEM (plan a file) or --server, not both")
        if report_path is not None:
            raise click.UsageError("--report needs a PROBLEM file")
        for name, flag in (
            ("solver", "--solver"),
            ("time_limit_s", "--time-limit"),
            ("confidence", "--confidence"),
        ):
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError(f"{flag} needs a PROBLEM file (the node uses its own)")
        _dry_run_on_node(
            server or DEFAULT_SERVER, token, add_apps, remove_apps, budget, objective, as_json
        )
        return
    if add_apps or remove_apps:
        raise click.UsageError("--add-app / --remove-app ask a node: leave out PROBLEM")
    problem = load_problem(
        problem_path, budget=budget, objective=_objective(objective), confidence=confidence
    )
    plan = make_plan(
        problem, solver=_solver(solver), with_baselines=True, time_limit_s=time_limit_s
    )
    if report_path is not None:
        _check_writable(report_path)
        budgets = budgets_around(problem.budget)
        sweep = sweep_budgets(
            problem,
            budgets,
            solver=_solver(solver),
            time_limit_s=time_limit_s,
            on_point=_progress(len(budgets), "budget sweep"),
        )
        _write_text_atomically(report_path, html_report(plan, problem, sweep))
        click.echo(f"report written to {report_path}", err=True)
    if as_json:
        click.echo(plan.model_dump_json(indent=2))
    else:
        click.echo(format_plan(plan, problem), nl=False)


@schedule.command("sweep")
@click.argument("problem_path", metavar="[PROBLEM]", type=_problem_argument, required=False)
@click.option("--budgets", "budget_list", help="Comma-separated budgets, e.g. 50,100,150.")
@click.option(
    "--budget-range",
    "budget_range_text",
    help="MIN:MAX:STEPS, e.g. 20:200:10 (STEPS evenly spaced budgets, both ends included).",
)
@click.option(
    "--apps",
    "app_counts_text",
    help=(
        "Comma-separated workload sizes, e.g. 1,2,5,10. With PROBLEM: its first N apps; "
        "without: generated workloads (default 1,2,5,10)."
    ),
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of generated workloads.")
@_solver_option
@_time_limit_option
@_objective_option
@click.option("--json", "as_json", is_flag=True, help="Print only the sweep as JSON on stdout.")
@_report_option
def sweep(
    problem_path: Path | None,
    budget_list: str | None,
    budget_range_text: str | None,
    app_counts_text: str | None,
    seed: int,
    solver: str,
    time_limit_s: float,
    objective: str | None,
    as_json: bool,
    report_path: Path | None,
) -> None:
    """Compare Mainstream with Max-Sharing and No-Sharing over budgets and workload sizes.

    With PROBLEM and no budgets, sweeps from a quarter to twice the problem's budget. Without
    PROBLEM, generates workloads of the --apps sizes (each at its own default budget unless
    budgets are given). Budgets where nothing fits are reported as infeasible.
    """
    if budget_list is not None and budget_range_text is not None:
        raise click.UsageError("give either --budgets or --budget-range, not both")
    budgets = None
    if budget_list is not None:
        budgets = _parse_floats(budget_list, "--budgets")
    elif budget_range_text is not None:
        budgets = _parse_budget_range(budget_range_text)
    app_counts = _parse_ints(app_counts_text, "--apps") if app_counts_text is not None else None
    if report_path is not None:
        _check_writable(report_path)

    result: SweepResult
    if problem_path is not None:
        problem = load_problem(problem_path, objective=_objective(objective))
        if app_counts is not None:
            total = len(app_counts) * (len(budgets) if budgets else 1)
            result = sweep_app_subsets(
                problem,
                app_counts,
                budgets,
                solver=_solver(solver),
                time_limit_s=time_limit_s,
                on_point=_progress(total, "sweep"),
            )
        else:
            chosen = budgets if budgets is not None else budgets_around(problem.budget)
            result = sweep_budgets(
                problem,
                chosen,
                solver=_solver(solver),
                time_limit_s=time_limit_s,
                on_point=_progress(len(chosen), "sweep"),
            )
    else:
        counts = app_counts if app_counts is not None else list(DEFAULT_GENERATED_APP_COUNTS)
        total = len(counts) * (len(budgets) if budgets else 1)
        result = sweep_generated(
            counts,
            budgets,
            seed=seed,
            objective=_objective(objective) or "mean_f1",
            solver=_solver(solver),
            time_limit_s=time_limit_s,
            on_point=_progress(total, "sweep"),
        )

    if report_path is not None:
        _write_text_atomically(report_path, sweep_html_report(result))
        click.echo(f"report written to {report_path}", err=True)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        click.echo(format_sweep(result), nl=False)


def _dry_run_on_node(
    server: str,
    token: str | None,
    add_apps: tuple[str, ...],
    remove_apps: tuple[str, ...],
    budget: float | None,
    objective: str | None,
    as_json: bool,
) -> None:
    """POST /api/schedule/dry-run and print the answer."""
    additions = [_app_addition(spec) for spec in add_apps]
    with open_client(server, token) as client:
        result = client.dry_run(
            additions, list(remove_apps), budget=budget, objective=_objective(objective)
        )
    if as_json:
        echo_json(result)
        return
    changes = [f"+{spec['name']}" for spec in additions] + [f"-{name}" for name in remove_apps]
    click.echo(
        f"Dry run on {server}"
        + (f" ({', '.join(changes)})" if changes else "")
        + f", budget {number(result['budget'])}; nothing deployed"
    )
    click.echo("")
    if result["plan"] is None:
        click.echo("  no apps would run: nothing to plan")
    else:
        click.echo(format_plan(Plan.model_validate(result["plan"])), nl=False)
    current = result.get("current_value")
    click.echo(f"  Plan in force: objective {'-' if current is None else f'{current:.3f}'}")


def _app_addition(spec: str) -> dict[str, Any]:
    """NAME[=APP[:VERSION]][@CAMERA], or a JSON object with the fields of `apps add`."""

    if spec.lstrip().startswith("{"):
        try:
            body = json.loads(spec)
        except ValueError as error:
            raise click.BadParameter(f"not valid JSON: {error}", param_hint="--add-app") from None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise click.BadParameter("a JSON app needs a 'name'", param_hint="--add-app")
        return body
    rest, _, camera = spec.partition("@")
    name, _, package_text = rest.partition("=")
    if not name:
        raise click.BadParameter(f"{spec!r} has no app name", param_hint="--add-app")
    package, version = PackageSpec().convert(package_text or name, None, None)
    return app_request(
        name,
        package=package,
        version=version,  # type: ignore[arg-type]
        camera=camera or None,
    )


def _describe_schedule(view: dict[str, Any]) -> str:
    """The ScheduleView of a node as text: which plan, why, its table, what was measured."""
    status = view["status"]
    if status == "none":
        return "no plan yet: the node has not planned (is it started?)\n"
    lines = [f"Plan {view['id']} ({status}), {view['created_at']}: {view['reason']}"]
    if view.get("message"):
        lines.append(f"  {view['message']}")
    lines.append("")
    if view.get("plan") is None:
        lines.append("  no apps run" if status == "empty" else "  no plan in force")
        return "\n".join(lines) + "\n"
    text = "\n".join(lines) + "\n" + format_plan(Plan.model_validate(view["plan"]))
    measured = view.get("measured")
    if measured:
        text += (
            f"\n  Measured over {measured['seconds']:.0f} s: cost "
            f"{number(measured.get('cost_ms_per_s'), 1)} ms/s\n"
        )
        for name, app in sorted(measured["apps"].items()):
            text += (
                f"    {name}: {number(app['fps'], 2)} fps analysed, {app['events']} events"
                f"{', event open' if app.get('active') else ''}\n"
            )
    return text


def _solver(name: str) -> Solver:
    return cast(Solver, name)


def _objective(name: str | None) -> Objective | None:
    return cast(Objective | None, name)


def _progress(total: int, description: str) -> Callable[[SweepPoint], None]:
    """A sweep callback that advances a progress bar on stderr (only on a terminal)."""
    bar: Any = tqdm(total=total, desc=description, unit="plan", file=sys.stderr, disable=None)

    def advance(point: SweepPoint) -> None:
        bar.update(1)
        if bar.n >= total:
            bar.close()

    return advance


def _parse_floats(text: str, option: str) -> list[float]:
    values = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise click.BadParameter(
                f"{item.strip()!r} is not a number", param_hint=option
            ) from None
        if not value > 0:
            raise click.BadParameter(f"{item.strip()} must be > 0", param_hint=option)
        values.append(value)
    return values


def _parse_ints(text: str, option: str) -> list[int]:
    values = []
    for item in text.split(","):
        try:
            value = int(item)
        except ValueError:
            raise click.BadParameter(
                f"{item.strip()!r} is not a whole number", param_hint=option
            ) from None
        if value < 1:
            raise click.BadParameter(f"{value} must be >= 1", param_hint=option)
        values.append(value)
    return values


def _parse_budget_range(text: str) -> list[float]:
    parts = text.split(":")
    if len(parts) != 3:
        raise click.BadParameter(
            f"{text!r} is not MIN:MAX:STEPS (e.g. 20:200:10)", param_hint="--budget-range"
        )
    minimum, maximum = _parse_floats(f"{parts[0]},{parts[1]}", "--budget-range")
    (steps,) = _parse_ints(parts[2], "--budget-range")
    return budget_range(minimum, maximum, steps)


def _check_writable(path: Path) -> None:
    """Fail before the (possibly long) planning, not after it."""
    parent = path.resolve().parent
    if not parent.is_dir():
        raise NotFoundError(f"cannot write the report: directory {parent} does not exist")


def _write_text_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename, so no half-written report remains."""
    descriptor, temporary = tempfile.mkstemp(
        dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the report from other users
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
