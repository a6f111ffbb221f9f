"""`mainstream fleet`: place a fleet's cameras on its nodes and plan every node.

    mainstream fleet plan examples/fleet.yaml                 # dry run: the table
    mainstream fleet plan examples/fleet.yaml --json
    mainstream fleet apply examples/fleet.yaml --dry-run      # the API calls it would make
    mainstream fleet apply examples/fleet.yaml --token T      # make them
    mainstream fleet apply examples/fleet.yaml --token T --registry http://mainstream-registry:8780

With `--registry`, the fleet's shared registry computes the plan (`POST /api/fleet/plan`).
`apply` reaches each node at its `url` in the fleet file with the same token (an admin
token every node accepts, e.g. MAINSTREAM_ADMIN_TOKEN in the Kubernetes secret) and adds or
removes cameras and apps through the node's own API; every node then plans its own apps.
Only the scheduler and the HTTP client are imported: no TensorFlow, no OpenCV.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mainstream.cli.api_client import ApiClient
from mainstream.cli.client import token_option
from mainstream.cli.problem_files import load_fleet
from mainstream.core.errors import InvalidParameterError
from mainstream.node.fleet_apply import FleetAction, NodeState, fleet_actions, missing_urls
from scheduler.fleet import Fleet, FleetPlan
from scheduler.fleet_placement import DEFAULT_FLEET_TIME_LIMIT_S, METHODS, Method, place_fleet
from scheduler.fleet_report import format_fleet_plan

_fleet_argument = click.argument(
    "fleet_path", metavar="FLEET", type=click.Path(dir_okay=False, path_type=Path)
)
_time_limit_option = click.option(
    "--time-limit",
    "time_limit_s",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    default=DEFAULT_FLEET_TIME_LIMIT_S,
    show_default=True,
    help="Seconds for the whole placement; the plan states its proven gap.",
)
_objective_option = click.option(
    "--objective",
    type=click.Choice(("mean_f1", "min_f1")),
    default=None,
    help="Override the file's objective: mean F1 over all apps, or the worst app's F1.",
)
_method_option = click.option(
    "--method",
    type=click.Choice(METHODS),
    default="auto",
    show_default=True,
    help="exact: branch and bound over placements; heuristic: greedy placement and swaps; "
    "auto: exact while the placements are few.",
)


@click.group()
def fleet() -> None:
    """Place cameras on the nodes of a fleet and plan each node."""


_registry_option = click.option(
    "--registry",
    default=None,
    metavar="URL",
    help="Have this daemon (the fleet's shared registry, `serve --role registry`) compute "
    "the plan (POST /api/fleet/plan, with --token) instead of this machine.",
)


def _plan(
    path: Path,
    objective: str | None,
    method: str,
    time_limit_s: float,
    registry: str | None = None,
    token: str | None = None,
) -> tuple[Fleet, FleetPlan]:
    fleet_file = load_fleet(path, objective=objective)  # type: ignore[arg-type]
    if registry is not None:
        with ApiClient(registry, token) as client:
            answer = client.fleet_plan(fleet_file.model_dump(mode="json"), time_limit_s, method)
        return fleet_file, FleetPlan.model_validate(answer)
    method_name: Method = method  # type: ignore[assignment]
    return fleet_file, place_fleet(fleet_file, method_name, time_limit_s)


@fleet.command("plan")
@_fleet_argument
@_time_limit_option
@_objective_option
@_method_option
@click.option("--json", "as_json", is_flag=True, help="Print the fleet plan as JSON.")
def plan_command(
    fleet_path: Path, time_limit_s: float, objective: str | None, method: str, as_json: bool
) -> None:
    """Place FLEET's cameras (a .yaml or .json file) and print the plan; nothing is applied.

    Per node: its cameras, apps, cost against its budget and predicted F1; per app its cut
    point, rate and F1; the proven bound and gap; and the same fleet placed round-robin.
    """
    fleet_file, fleet_plan = _plan(fleet_path, objective, method, time_limit_s)
    if as_json:
        click.echo(fleet_plan.model_dump_json(indent=2))
    else:
        click.echo(format_fleet_plan(fleet_plan, fleet_file), nl=False)


@fleet.command("apply")
@_fleet_argument
@_time_limit_option
@_objective_option
@_method_option
@click.option("--dry-run", is_flag=True, help="Print the API calls without making them.")
@_registry_option
@token_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan and the calls as JSON.")
def apply_command(
    fleet_path: Path,
    time_limit_s: float,
    objective: str | None,
    method: str,
    dry_run: bool,
    registry: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Place FLEET's cameras and give each node its cameras and apps through its API.

    Each node's current cameras and apps are read first; only the differences are sent
    (removals first). Cameras and apps that FLEET does not name are left alone.
    """
    fleet_file, fleet_plan = _plan(fleet_path, objective, method, time_limit_s, registry, token)
    problems = missing_urls(fleet_file, fleet_plan)
    if problems:
        raise InvalidParameterError("fleet file", str(fleet_path), "urls: " + "; ".join(problems))
    urls = {node.name: node.url or "" for node in fleet_file.nodes}
    states = {}
    for node in fleet_file.nodes:
        if not node.url:
            continue
        with ApiClient(node.url, token) as client:
            states[node.name] = NodeState(
                cameras=frozenset(view["camera"]["id"] for view in client.list_cameras()),
                apps={view["app"]["name"]: view["app"]["camera"] for view in client.list_apps()},
            )
    actions = fleet_actions(fleet_file, fleet_plan, states)
    if not dry_run:
        for action in actions:
            with ApiClient(urls[action.node], token) as client:
                _send(client, action)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "plan": fleet_plan.model_dump(mode="json"),
                    "actions": [action.describe() for action in actions],
                    "applied": not dry_run,
                },
                indent=2,
            )
        )
        return
    click.echo(format_fleet_plan(fleet_plan, fleet_file), nl=False)
    click.echo("")
    verb = "would make" if dry_run else "made"
    click.echo(f"{len(actions)} API calls {verb}:" if actions else "nothing to change")
    for action in actions:
        click.echo(f"  {action.describe()}")


def _send(client: ApiClient, action: FleetAction) -> None:
    if action.kind == "remove_app":
        client.delete_app(action.name)
    elif action.kind == "remove_camera":
        client.delete_camera(action.name)
    elif action.kind == "add_camera":
        client.create_camera(action.name, action.url or "", fps=action.fps)
    else:
        client.create_app(action.name, package=action.package, camera=action.camera)
