"""Run the scheduler over many budgets (and workload sizes) and compare it with the baselines.

A sweep answers "how much does Mainstream gain over Max-Sharing and No-Sharing, and where?".
Every point plans one problem at one budget with `planner.make_plan`; a budget at which nothing
fits is recorded as infeasible for all three strategies rather than stopping the sweep.

Pure logic: the caller passes `on_point` to show progress; nothing here prints or writes files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from mainstream.core.errors import InfeasibleError, InvalidParameterError
from scheduler.deadline import DEFAULT_TIME_LIMIT_S
from scheduler.planner import Solver, make_plan
from scheduler.problem import BaselinePlan, Objective, Plan, Problem
from scheduler.workload import generate_problem

Strategy = Literal["mainstream", "max_sharing", "no_sharing"]

STRATEGIES: tuple[Strategy, ...] = ("mainstream", "max_sharing", "no_sharing")
STRATEGY_LABELS: dict[Strategy, str] = {
    "mainstream": "Mainstream",
    "max_sharing": "Max-Sharing",
    "no_sharing": "No-Sharing",
}

SweepSource = Literal["problem", "problem_subsets", "generated"]
OnPoint = Callable[["SweepPoint"], None]


class StrategyOutcome(BaseModel):
    """What one strategy achieves at one point; `value` is None when nothing fits the budget."""

    feasible: bool
    value: float | None = None
    total_cost: float | None = None
    app_f1: dict[str, float] = Field(default_factory=dict)
    optimality_gap: float | None = None  # as the plan reports it; None: not known

    @classmethod
    def infeasible(cls) -> StrategyOutcome:
        return cls(feasible=False)


class SweepPoint(BaseModel):
    """One (workload size, budget) pair with the objective value of each strategy."""

    num_apps: int
    budget: float
    mainstream: StrategyOutcome
    max_sharing: StrategyOutcome
    no_sharing: StrategyOutcome

    def outcome(self, strategy: Strategy) -> StrategyOutcome:
        outcome: StrategyOutcome = getattr(self, strategy)
        return outcome

    def gain_over_best_baseline(self) -> float | None:
        """Mainstream's value minus the better baseline's (None if Mainstream is infeasible)."""
        if self.mainstream.value is None:
            return None
        baseline_values = [
            outcome.value
            for outcome in (self.max_sharing, self.no_sharing)
            if outcome.value is not None
        ]
        return self.mainstream.value - max(baseline_values, default=0.0)


class SweepResult(BaseModel):
    """All points of a sweep, in the order they were planned."""

    objective: Objective
    solver: str
    source: SweepSource
    budget_unit: str = ""
    seed: int | None = None
    points: list[SweepPoint]

    def app_counts(self) -> list[int]:
        return sorted({point.num_apps for point in self.points})

    def budgets(self) -> list[float]:
        return sorted({point.budget for point in self.points})

    def points_for(self, num_apps: int) -> list[SweepPoint]:
        """The points of one workload size, by increasing budget."""
        return sorted(
            (point for point in self.points if point.num_apps == num_apps),
            key=lambda point: point.budget,
        )

    def series(
        self, strategy: Strategy, num_apps: int | None = None
    ) -> list[tuple[float, float | None]]:
        """(budget, value) pairs of one strategy for one workload size (default: the first)."""
        size = self.app_counts()[0] if num_apps is None else num_apps
        return [(point.budget, point.outcome(strategy).value) for point in self.points_for(size)]


def evaluate_point(
    problem: Problem, solver: Solver = "auto", time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> SweepPoint:
    """Plan `problem` once and record Mainstream and both baselines; infeasible is a result."""
    try:
        plan = make_plan(problem, solver=solver, with_baselines=True, time_limit_s=time_limit_s)
    except InfeasibleError:
        # The baselines search a subset of Mainstream's options: if nothing fits for
        # Mainstream, nothing fits for them either.
        return SweepPoint(
            num_apps=len(problem.apps),
            budget=problem.budget,
            mainstream=StrategyOutcome.infeasible(),
            max_sharing=StrategyOutcome.infeasible(),
            no_sharing=StrategyOutcome.infeasible(),
        )
    return SweepPoint(
        num_apps=len(problem.apps),
        budget=problem.budget,
        mainstream=_outcome_of_plan(plan),
        max_sharing=_outcome_of_baseline(plan.baselines.get("max_sharing")),
        no_sharing=_outcome_of_baseline(plan.baselines.get("no_sharing")),
    )


def sweep_budgets(
    problem: Problem,
    budgets: Sequence[float],
    *,
    solver: Solver = "auto",
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    on_point: OnPoint | None = None,
) -> SweepResult:
    """Plan `problem` at each budget (the problem's own budget is ignored)."""
    checked = _checked_budgets(budgets)
    points = [
        _evaluate(with_budget(problem, budget), solver, time_limit_s, on_point)
        for budget in checked
    ]
    return SweepResult(
        objective=problem.objective,
        solver=solver,
        source="problem",
        budget_unit=budget_unit(problem),
        points=points,
    )


def sweep_app_subsets(
    problem: Problem,
    app_counts: Sequence[int],
    budgets: Sequence[float] | None = None,
    *,
    solver: Solver = "auto",
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    on_point: OnPoint | None = None,
) -> SweepResult:
    """Plan the first n apps of `problem` for each n, at each budget (default: its own)."""
    counts = _checked_app_counts(app_counts, available=len(problem.apps))
    checked = _checked_budgets(budgets) if budgets is not None else [problem.budget]
    points = [
        _evaluate(with_budget(first_apps(problem, count), budget), solver, time_limit_s, on_point)
        for count in counts
        for budget in checked
    ]
    return SweepResult(
        objective=problem.objective,
        solver=solver,
        source="problem_subsets",
        budget_unit=budget_unit(problem),
        points=points,
    )


def sweep_generated(
    app_counts: Sequence[int],
    budgets: Sequence[float] | None = None,
    *,
    seed: int = 0,
    objective: Objective = "mean_f1",
    camera_fps: float = 10.0,
    solver: Solver = "auto",
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    on_point: OnPoint | None = None,
) -> SweepResult:
    """Generate one workload per size (same seed) and plan it at each budget.

    Without `budgets` each workload is planned at the budget the generator picks for its size.
    """
    counts = _checked_app_counts(app_counts, available=None)
    checked = _checked_budgets(budgets) if budgets is not None else None
    points = []
    unit = ""
    for count in counts:
        workload = generate_problem(count, seed, camera_fps=camera_fps, objective=objective)
        unit = budget_unit(workload)
        for budget in checked if checked is not None else [workload.budget]:
            points.append(_evaluate(with_budget(workload, budget), solver, time_limit_s, on_point))
    return SweepResult(
        objective=objective,
        solver=solver,
        source="generated",
        budget_unit=unit,
        seed=seed,
        points=points,
    )


def budget_unit(problem: Problem) -> str:
    """The budget's unit: the profile's cost per frame times frames per second, e.g. 'ms/s'."""
    units = {profile.cost_unit for profile in problem.all_profiles()}
    return f"{units.pop()}/s" if len(units) == 1 else "cost/s"


def with_budget(problem: Problem, budget: float) -> Problem:
    """The same problem at another budget."""
    _check_budget(budget)
    return problem.model_copy(update={"budget": float(budget)})


def first_apps(problem: Problem, count: int) -> Problem:
    """The problem restricted to its first `count` apps (the rest of it unchanged)."""
    _checked_app_counts([count], available=len(problem.apps))
    return problem.model_copy(update={"apps": list(problem.apps[:count])})


def budgets_around(
    budget: float, count: int = 9, low: float = 0.25, high: float = 2.0
) -> list[float]:
    """`count` budgets from `low*budget` to `high*budget`, always including `budget` itself.

    Used by reports to show where the given budget sits on the F1-vs-budget curve.
    """
    _check_budget(budget)
    if count < 2:
        raise InvalidParameterError("count", count, "an integer >= 2")
    if not 0 < low < 1 < high:
        raise InvalidParameterError("low/high", (low, high), "0 < low < 1 < high")
    values = set(budget_range(low * budget, high * budget, count))
    values.add(float(budget))
    return sorted(values)


def budget_range(minimum: float, maximum: float, steps: int) -> list[float]:
    """`steps` evenly spaced budgets from `minimum` to `maximum` inclusive."""
    _check_budget(minimum)
    _check_budget(maximum)
    if maximum < minimum:
        raise InvalidParameterError("budget range", (minimum, maximum), "MIN <= MAX")
    if steps < 1 or (steps == 1 and maximum != minimum):
        raise InvalidParameterError("steps", steps, "an integer >= 2 (or 1 when MIN equals MAX)")
    if steps == 1:
        return [float(minimum)]
    step = (maximum - minimum) / (steps - 1)
    return [_round_budget(minimum + index * step) for index in range(steps)]


def _evaluate(
    problem: Problem, solver: Solver, time_limit_s: float, on_point: OnPoint | None
) -> SweepPoint:
    point = evaluate_point(problem, solver, time_limit_s)
    if on_point is not None:
        on_point(point)
    return point


def _outcome_of_plan(plan: Plan) -> StrategyOutcome:
    return StrategyOutcome(
        feasible=True,
        value=plan.value,
        total_cost=plan.total_cost,
        app_f1={app.name: app.f1 for app in plan.apps},
        optimality_gap=plan.optimality_gap,
    )


def _outcome_of_baseline(baseline: BaselinePlan | None) -> StrategyOutcome:
    if baseline is None or not baseline.feasible:
        return StrategyOutcome.infeasible()
    return StrategyOutcome(
        feasible=True,
        value=baseline.value,
        total_cost=baseline.total_cost,
        app_f1={app.name: app.f1 for app in baseline.apps},
        optimality_gap=baseline.optimality_gap,
    )


def _round_budget(value: float) -> float:
    """Drop floating-point noise (0.30000000000000004) so budgets print and compare cleanly."""
    return float(f"{value:.6g}")


def _check_budget(budget: float) -> None:
    if not (isinstance(budget, int | float) and math.isfinite(budget) and budget > 0):
        raise InvalidParameterError("budget", budget, "a finite number > 0")


def _checked_budgets(budgets: Sequence[float]) -> list[float]:
    if not budgets:
        raise InvalidParameterError("budgets", list(budgets), "at least one budget")
    for budget in budgets:
        _check_budget(budget)
    return [float(budget) for budget in budgets]


def _checked_app_counts(app_counts: Sequence[int], available: int | None) -> list[int]:
    if not app_counts:
        raise InvalidParameterError("app_counts", list(app_counts), "at least one app count")
    for count in app_counts:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidParameterError("app_counts", count, "integers >= 1")
        if available is not None and count > available:
            raise InvalidParameterError(
                "app_counts", count, f"at most the problem's {available} apps"
            )
    return list(app_counts)
