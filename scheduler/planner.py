"""The one entry point that turns a scheduling problem into a plan (DESIGN §4).

`make_plan` builds every app's option table, searches for the best schedule and reports it
together with the two baselines, planned with the same event model, budget and solver:
No-Sharing (each app's most accurate candidate run end to end, nothing shared) and
Max-Sharing (every app on its deepest cut point, only the head specialised).

`evaluate_assignment` prices and scores a schedule given from outside, so that re-planning and
replay can compare the model's prediction with what was measured.

An app's `cost` in a plan is its share of the total: its own branch, plus an even part of
every stem and decode computation it consumes (each analysed frame of a shared segment is
split evenly among the apps that analyse it). The shares add up to `total_cost`.

Every planned app also gets the 90 % credible interval of its predicted F1 (`f1_interval`)
when its figures come with held-out counts: see `f1_interval`.

Pure logic: no I/O.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from mainstream.core.errors import InfeasibleError, InvalidParameterError
from scheduler.arrays import Solution, min_cost_choice, search_arrays
from scheduler.cost_model import Placement, schedule_cost
from scheduler.deadline import DEFAULT_TIME_LIMIT_S
from scheduler.event_model import EventParams, event_quality
from scheduler.options import Option, SearchSpace, Sharing, build_option_tables, build_search_space
from scheduler.problem import AppPlan, AppSpec, BaselinePlan, Candidate, Objective, Plan, Problem
from scheduler.solvers import SOLVERS, Solver, optimality_gap, solve

__all__ = ["SOLVERS", "Solver", "evaluate_assignment", "f1_interval", "make_plan", "predicted_f1"]

DESCRIBE_RESERVE_S = 0.05
"""Of a plan's time limit, what is kept for describing the schedule once it is found."""


def make_plan(
    problem: Problem,
    solver: Solver = "auto",
    with_baselines: bool = True,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
) -> Plan:
    """Plan `problem`: the best schedule `solver` finds, with the baselines if asked.

    The plan comes back within `time_limit_s` (building its option tables included), with a
    proven bound on the optimum (`Plan.upper_bound`, `Plan.optimality_gap`); each baseline is
    planned within the same limit again, so with baselines the call takes up to three times
    as long (baselines are small problems and usually take milliseconds).
    Raises InfeasibleError, with the minimum cost needed, when no schedule fits the budget.
    A baseline that does not fit is reported with feasible=False and value 0.
    """
    if solver not in SOLVERS:
        raise InvalidParameterError("solver", solver, f"one of {SOLVERS}")
    if not (isinstance(time_limit_s, int | float) and time_limit_s > 0):
        raise InvalidParameterError("time_limit_s", time_limit_s, "a number of seconds > 0")
    started = time.perf_counter()
    space = build_search_space(problem, build_option_tables(problem, "shared"))
    solution = _solve(space, problem.objective, solver, _left(started, time_limit_s))
    if solution is None:
        raise InfeasibleError(_infeasible_message(problem, space))
    apps, total_cost = _app_plans(problem, space, solution, shared=True)
    value = solution.value(problem.objective)
    bound = _bound(solution, value)
    plan = Plan(
        objective=problem.objective,
        value=value,
        budget=problem.budget,
        total_cost=total_cost,
        confidence=problem.confidence,
        solver=solver,
        solve_time_s=time.perf_counter() - started,
        apps=apps,
        upper_bound=bound,
        optimality_gap=optimality_gap(value, bound),
    )
    if with_baselines:
        plan.baselines = {
            "max_sharing": _baseline(problem, "max_sharing", solver, time_limit_s),
            "no_sharing": _baseline(problem, "no_sharing", solver, time_limit_s),
        }
    return plan


def _left(started: float, time_limit_s: float) -> float:
    """What is left of the limit for the solver, keeping a little to describe the plan."""
    reserve = min(DESCRIBE_RESERVE_S, 0.05 * time_limit_s)
    return max(1e-3, time_limit_s - reserve - (time.perf_counter() - started))


def _solve(
    space: SearchSpace, objective: Objective, solver: Solver, time_limit_s: float
) -> Solution | None:
    return solve(space, objective, solver, time_limit_s)


def _bound(solution: Solution, value: float) -> float:
    bound = solution.upper_bound
    return value if bound is None or not math.isfinite(bound) else max(bound, value)


def _baseline(
    problem: Problem, sharing: Sharing, solver: Solver, time_limit_s: float
) -> BaselinePlan:
    started = time.perf_counter()
    space = build_search_space(problem, build_option_tables(problem, sharing))
    solution = _solve(space, problem.objective, solver, _left(started, time_limit_s))
    if solution is None:  # infeasibility is proven exactly: nothing to gain, no gap
        return BaselinePlan(value=0.0, feasible=False, upper_bound=0.0, optimality_gap=0.0)
    apps, total_cost = _app_plans(problem, space, solution, shared=sharing != "no_sharing")
    value = solution.value(problem.objective)
    bound = _bound(solution, value)
    return BaselinePlan(
        value=value,
        total_cost=total_cost,
        apps=apps,
        upper_bound=bound,
        optimality_gap=optimality_gap(value, bound),
    )


def _infeasible_message(problem: Problem, space: SearchSpace) -> str:
    arrays = search_arrays(space)
    cheapest = min_cost_choice(arrays, arrays.valid)
    needed = f"{cheapest[0]:.6g}" if cheapest is not None else "unknown"
    unit = problem.all_profiles()[0].cost_unit
    return (
        f"no schedule fits the budget of {problem.budget:g} {unit}/s: even the cheapest "
        f"schedule (every app at its cheapest option, sharing all it can) costs {needed} "
        f"{unit}/s; raise the budget to at least that or remove apps"
    )


def _app_plans(
    problem: Problem, space: SearchSpace, solution: Solution, shared: bool
) -> tuple[list[AppPlan], float]:
    options = [space.option(app, position) for app, position in enumerate(solution.choice)]
    return _describe(problem, options, shared)


def _describe(problem: Problem, options: list[Option], shared: bool) -> tuple[list[AppPlan], float]:
    """AppPlans for one option per app (problem order) and the schedule's total cost."""
    placements = {
        app.name: Placement(
            camera=app.camera,
            base_model=app.base_model or "",
            stem_depth=option.stem_depth,
            fps=option.fps,
            shared=shared,
        )
        for app, option in zip(problem.apps, options, strict=True)
    }
    breakdown = schedule_cost(problem, placements)
    apps = []
    for app, option in zip(problem.apps, options, strict=True):
        candidate = _candidate_at(app, option.cut_point)
        apps.append(
            AppPlan(
                name=app.name,
                camera=app.camera,
                base_model=app.base_model or "",
                cut_point=option.cut_point,
                fps=option.fps,
                x_vote=option.x_vote,
                recall=option.recall,
                precision=option.precision,
                f1=option.f1,
                cost=breakdown.app_shares[app.name],
                f1_interval=f1_interval(
                    problem.camera_fps, app, candidate, option.fps, option.x_vote, option.f1
                ),
                evidence_warning=candidate.thin_evidence(),
            )
        )
    return apps, breakdown.total


def _candidate_at(app: AppSpec, cut_point: str) -> Candidate:
    return next(candidate for candidate in app.candidates if candidate.cut_point == cut_point)


def predicted_f1(
    camera_fps: float,
    app: AppSpec,
    candidate: Candidate,
    fps: float,
    x_vote: int,
    confidence: float | None = None,
) -> tuple[float, tuple[float, float] | None]:
    """One candidate's predicted event F1 at (fps, X), as a plan would state it, and its
    90 % interval (None without evidence)."""
    point = event_quality(planned_params(camera_fps, app, candidate, fps, x_vote, confidence)).f1
    return point, f1_interval(camera_fps, app, candidate, fps, x_vote, point)


def planned_params(
    camera_fps: float,
    app: AppSpec,
    candidate: Candidate,
    fps: float,
    x_vote: int,
    confidence: float | None = None,
) -> EventParams:
    """The event model's inputs for one option, with the per-frame figures the scheduler
    plans on under `confidence`."""
    recall, false_positive_rate = candidate.planned_rates(confidence)
    return EventParams(
        camera_fps=camera_fps,
        analysis_fps=fps,
        event_length_s=app.event_length_s,
        event_frequency=app.event_frequency,
        correlation=app.correlation,
        recall=recall,
        false_positive_rate=false_positive_rate,
        x_vote=x_vote,
    )


def f1_interval(
    camera_fps: float,
    app: AppSpec,
    candidate: Candidate,
    fps: float,
    x_vote: int,
    point: float,
) -> tuple[float, float] | None:
    """The 90 % credible interval of the F1 predicted (`point`) for one candidate at (fps, X);
    None when neither its figures nor the correlation carry evidence.

    Cheap and deterministic: the event model evaluated at the ends of the inputs' 90 %
    intervals rather than over posterior samples. F1 rises with the per-frame recall and
    falls with the FP rate, so over the box of their intervals its extremes lie at the corners
    (recall low, FP high) and (recall high, FP low); the correlation moves event recall and
    false alarms the same way, so at each corner both ends of its interval (and the point
    value) are tried and the lowest and highest F1 kept. The box of two 90 % intervals holds
    the pair with only about 81 % probability, but its corners are more extreme than the F1
    quantiles they stand for; on four cases (weak to strong, 100-3,000 negative frames, X 1
    and 2) 95-98 % of F1 values drawn from the posteriors fell inside, so the interval errs
    on the wide side. The point estimate is always inside (a confidence above 0.95 can plan
    outside the box).
    """
    if candidate.evidence is None and app.correlation_interval is None:
        return None
    (recall_low, recall_high), (fpr_low, fpr_high) = candidate.rate_bounds()
    correlations = {app.correlation}
    if app.correlation_interval is not None:
        correlations |= set(app.correlation_interval)
    values = [
        event_quality(
            EventParams(
                camera_fps=camera_fps,
                analysis_fps=fps,
                event_length_s=app.event_length_s,
                event_frequency=app.event_frequency,
                correlation=correlation,
                recall=recall,
                false_positive_rate=false_positive_rate,
                x_vote=x_vote,
            )
        ).f1
        for recall, false_positive_rate in ((recall_low, fpr_high), (recall_high, fpr_low))
        for correlation in sorted(correlations)
    ]
    return min([*values, point]), max([*values, point])


def evaluate_assignment(problem: Problem, assignment: Mapping[str, tuple[str, float, int]]) -> Plan:
    """Predicted cost and F1 of a given schedule: {app name: (cut_point, fps, x_vote)}.

    Every app of the problem must be assigned, to one of its candidates' cut points, a rate in
    (0, camera_fps] (not necessarily one of `fps_options`) and a vote >= 1. The result is a
    Plan with solver "given"; it fits the budget iff `cost_model.fits(total_cost, budget)`.
    """
    names = {app.name for app in problem.apps}
    unknown = sorted(set(assignment) - names)
    if unknown:
        raise InvalidParameterError(
            "assignment", unknown, f"names of the problem's apps {sorted(names)}"
        )
    missing = sorted(names - set(assignment))
    if missing:
        raise InvalidParameterError(
            "assignment", missing, "an entry for every app (these have none)"
        )

    options = []
    for app in problem.apps:
        cut_point, fps, x_vote = assignment[app.name]
        candidate = next((c for c in app.candidates if c.cut_point == cut_point), None)
        if candidate is None:
            raise InvalidParameterError(
                f"assignment[{app.name!r}].cut_point",
                cut_point,
                f"one of the app's candidate cut points {[c.cut_point for c in app.candidates]}",
            )
        quality = event_quality(
            planned_params(problem.camera_fps, app, candidate, fps, x_vote, problem.confidence)
        )
        profile = problem.profile_for(app.base_model or "")
        depth = profile.index_of(cut_point)
        options.append(
            Option(
                cut_index=depth,
                cut_point=cut_point,
                stem_depth=depth,
                fps=float(fps),
                x_vote=int(x_vote),
                recall=quality.recall,
                precision=quality.precision,
                f1=quality.f1,
                branch_cost=0.0,  # priced by the cost model below
            )
        )
    apps, total_cost = _describe(problem, options, shared=True)
    total_weight = sum(app.weight for app in problem.apps)
    mean_f1 = sum(app.weight * plan.f1 for app, plan in zip(problem.apps, apps, strict=True))
    value = (
        mean_f1 / total_weight if problem.objective == "mean_f1" else min(plan.f1 for plan in apps)
    )
    return Plan(
        objective=problem.objective,
        value=value,
        budget=problem.budget,
        total_cost=total_cost,
        confidence=problem.confidence,
        solver="given",
        solve_time_s=0.0,
        apps=apps,
    )
