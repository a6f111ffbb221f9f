"""The mixed-integer program for scipy's HiGHS: an independent reference and a fallback.

It shares nothing with the exact search but the search space, so the tests use it as the
reference, and the `auto` solver uses its dual bound where the search's own bounds are weak.

Pure logic: numpy/scipy only, no I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import coo_matrix, csr_matrix

from scheduler.arrays import (
    OPTIMALITY_TOLERANCE,
    Solution,
    make_solution,
    min_cost_choice,
    search_arrays,
    segment_levels,
)
from scheduler.cost_model import budget_limit
from scheduler.deadline import DEFAULT_TIME_LIMIT_S, Deadline
from scheduler.greedy import greedy_choice
from scheduler.options import SearchSpace
from scheduler.problem import Objective

HIGHS_TIME_SHARE = {"small": 0.9, "large": 0.6}
"""Of the time left, what HiGHS is told it has: its presolve does not look at the clock, so
the rest absorbs its overrun, which grows with the model (`LARGE_MODEL` options)."""

LARGE_MODEL = 5000


def solve_milp(
    space: SearchSpace, objective: Objective, time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> Solution | None:
    """Solve with scipy's MILP (HiGHS) within `time_limit_s`. None when nothing fits the budget.

    Variables: x[a, o] = app a runs option o; y[s, l] = segment s runs at >= its l-th level.
    Each app's demand for a segment is linked to y level by level, which keeps the relaxation
    tight. `min_f1` is solved in two stages: the best worst F1, then the best mean with every
    app at least that good. The solution's `upper_bound` is HiGHS's dual bound (equal to the
    value when HiGHS proves it optimal). When time runs out before HiGHS finds a schedule,
    the greedy's schedule is returned with what bound there is.
    """
    started = time.perf_counter()
    deadline = Deadline.after(time_limit_s)
    arrays = search_arrays(space)
    cheapest = min_cost_choice(arrays, arrays.valid)
    if cheapest is None or cheapest[0] > arrays.limit:
        return None  # proven by the exact minimum-cost programme, not by HiGHS
    # A schedule to fall back on should HiGHS find none in time: the greedy's, quickly.
    fallback = greedy_choice(arrays, objective, deadline=deadline.share(0.2)) or cheapest[1]
    first, bound = _milp_stage(space, objective, None, deadline)
    if first is None:
        first = make_solution(space, fallback)
    if objective == "min_f1" and not deadline.expired():
        floor = first.min_f1
        second, _ = _milp_stage(space, "mean_f1", floor, deadline)
        if second is not None and second.min_f1 >= floor - 1e-12:
            first = second
    if bound is None:  # every app at its best, budget ignored
        best = np.where(arrays.valid, arrays.f1 if objective == "min_f1" else arrays.score, -np.inf)
        best_each = best.max(axis=1)
        bound = float(best_each.min() if objective == "min_f1" else best_each.sum())
    first.set_bound(bound, objective)
    first.stats["solve_time_s"] = time.perf_counter() - started
    return first


def close_gap_mean(
    space: SearchSpace, incumbent: Solution, time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> Solution:
    """Prove `incumbent` optimal for `mean_f1`, or find better, by reduced-cost fixing.

    Why: on flat accuracy curves the search's Lagrangian bound (equal to this program's LP
    relaxation) stays a few 1e-5 above the optimum however long it searches, and HiGHS on the
    whole program needs about a second of cuts to close that gap. With the LP's reduced costs,
    every option or stem level whose reduced cost exceeds the gap `LP - incumbent` cannot be
    part of a schedule better than the incumbent (LP + reduced cost is a bound on any
    schedule that moves it off its bound), so it is fixed where the LP has it; usually two
    thirds of the variables go, and HiGHS solves the rest in a tenth of the time.
    Returns the better of the incumbent and HiGHS's schedule, with the proven bound.
    """
    deadline = Deadline.after(time_limit_s)
    value = incumbent.value("mean_f1")
    if incumbent.proven("mean_f1"):
        return incumbent
    model = _build_model(space, "mean_f1", None, deadline)
    if model is None or deadline.expired():
        return incumbent
    relaxation = _solve_relaxation(model, deadline)
    if relaxation is None:
        return incumbent
    lp_bound, reduced_low, reduced_high, x = relaxation
    best = incumbent
    bound = min(lp_bound + LP_BOUND_SLACK, incumbent.bound())
    gap = lp_bound - value
    if gap > OPTIMALITY_TOLERANCE and not deadline.expired():
        # Keep a safety margin over HiGHS's dual feasibility tolerance (1e-7).
        threshold = gap + FIXING_MARGIN
        low, high = model.bounds_low.copy(), model.bounds_high.copy()
        high[(x <= FIXED_AT) & (reduced_low > threshold)] = 0.0
        low[(x >= 1.0 - FIXED_AT) & (-reduced_high > threshold)] = 1.0
        found, reduced_bound = _run_highs(space, model, low, high, deadline)
        if found is not None and found.value("mean_f1") > value:
            best = found
        if reduced_bound is not None:
            # Better than the incumbent means inside the reduced program.
            bound = min(bound, max(value, reduced_bound))
    best.set_bound(bound, "mean_f1")
    return best


FIXING_MARGIN = 1e-6
"""Reduced costs within this of the gap are not trusted to fix a variable."""

LP_BOUND_SLACK = 1e-7
"""Added to the LP's optimum before it counts as a bound (HiGHS's LP tolerances)."""

HIGHS_ABSOLUTE_GAP = 1e-6
"""How far below its dual bound HiGHS may call a schedule optimal (its `mip_abs_gap`)."""

OBJECTIVE_SCALE = 10_000.0
"""HiGHS sees the objective times this, so that its absolute gap is 1e-10 in F1."""

FIXED_AT = 1e-9
"""An LP value this close to a bound counts as at the bound."""


def _solve_relaxation(
    model: _Model, deadline: Deadline
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray] | None:
    """The LP relaxation's bound (maximisation), its reduced costs at the lower and upper
    variable bounds (scipy's minimisation signs) and its solution; None if not solved."""
    equal = np.isfinite(model.lower) & (model.lower == model.upper)
    if np.any(np.isfinite(model.lower[~equal])):
        return None  # only `=` and `<=` rows are built
    result = linprog(
        model.objective,
        A_ub=model.matrix[~equal],
        b_ub=model.upper[~equal],
        A_eq=model.matrix[equal],
        b_eq=model.upper[equal],
        bounds=np.column_stack([model.bounds_low, model.bounds_high]),
        method="highs",
        options={"time_limit": max(1e-3, 0.5 * deadline.remaining())},
    )
    if result.status != 0 or result.x is None:
        return None
    return -float(result.fun), result.lower.marginals, result.upper.marginals, result.x


@dataclass
class _Model:
    """The program of one stage, in the arrays scipy takes; `x_offset[a]` is where app a's
    option variables start."""

    objective: np.ndarray
    matrix: csr_matrix
    lower: np.ndarray
    upper: np.ndarray
    integrality: np.ndarray
    bounds_low: np.ndarray
    bounds_high: np.ndarray
    x_offset: list[int]
    num_options: int

    def choice(self, space: SearchSpace, x: np.ndarray) -> list[int]:
        return [
            int(np.argmax(x[self.x_offset[app] : self.x_offset[app] + len(rates)]))
            for app, rates in enumerate(space.rate)
        ]


def _milp_stage(
    space: SearchSpace, objective: Objective, minimum_f1: float | None, deadline: Deadline
) -> tuple[Solution | None, float | None]:
    """The stage's best schedule found in time (None: none) and its proven bound on the
    stage's objective (None: none proven)."""
    model = _build_model(space, objective, minimum_f1, deadline)
    if model is None or deadline.remaining() <= 0.0:
        return None, None
    return _run_highs(space, model, model.bounds_low, model.bounds_high, deadline)


def _run_highs(
    space: SearchSpace,
    model: _Model,
    bounds_low: np.ndarray,
    bounds_high: np.ndarray,
    deadline: Deadline,
) -> tuple[Solution | None, float | None]:
    size = "large" if model.num_options > LARGE_MODEL else "small"
    result = milp(
        OBJECTIVE_SCALE * model.objective,
        constraints=LinearConstraint(model.matrix, model.lower, model.upper),
        integrality=model.integrality,
        bounds=Bounds(bounds_low, bounds_high),
        options={
            "time_limit": max(1e-3, HIGHS_TIME_SHARE[size] * deadline.remaining()),
            "mip_rel_gap": 0.0,
        },
    )
    # HiGHS calls a schedule optimal within an absolute gap of 1e-6 (its `mip_abs_gap`, which
    # scipy does not pass on), pruning nodes within it, so neither its value nor its dual
    # bound is exact beyond that: the objective is scaled up until that is below
    # OPTIMALITY_TOLERANCE, and the bound allows for it.
    dual_bound = getattr(result, "mip_dual_bound", None)
    bound = None
    if dual_bound is not None and np.isfinite(dual_bound):
        bound = -float(dual_bound) / OBJECTIVE_SCALE
    if result.status == 0 and result.x is not None:
        optimum = -float(result.fun) / OBJECTIVE_SCALE
        bound = max(bound if bound is not None else optimum, optimum)
    if bound is not None:
        bound += HIGHS_ABSOLUTE_GAP / OBJECTIVE_SCALE
    if result.x is None:
        return None, bound
    solution = make_solution(space, model.choice(space, result.x))
    if solution.cost > budget_limit(space.budget):  # HiGHS's tolerances: not a schedule
        return None, bound
    return solution, bound


def _build_model(
    space: SearchSpace, objective: Objective, minimum_f1: float | None, deadline: Deadline
) -> _Model | None:
    """The integer program of one stage; None when the deadline passed while building it."""
    levels = segment_levels(space)
    level_offset = []
    x_offset, count = [], 0
    for rates in space.rate:
        x_offset.append(count)
        count += len(rates)
    for segment_levels_ in levels:
        level_offset.append(count)
        count += len(segment_levels_) - 1  # level 0 needs no variable
    use_t = objective == "min_f1"
    t_index = count
    num_vars = count + (1 if use_t else 0)

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lower: list[float] = []
    upper: list[float] = []

    def add_row(entries: list[tuple[int, float]], lo: float, hi: float) -> None:
        row = len(lower)
        for col, value in entries:
            rows.append(row)
            cols.append(col)
            vals.append(value)
        lower.append(lo)
        upper.append(hi)

    def add_row_arrays(columns: np.ndarray, values: np.ndarray, lo: float, hi: float) -> None:
        rows.extend([len(lower)] * len(columns))
        cols.extend(columns.tolist())
        vals.extend(values.tolist())
        lower.append(lo)
        upper.append(hi)

    def y(segment: int, rate: float) -> int:
        position = int(np.searchsorted(levels[segment], rate))
        return level_offset[segment] + position - 1

    # One option per app.
    for app, rates in enumerate(space.rate):
        add_row([(x_offset[app] + o, 1.0) for o in range(len(rates))], 1.0, 1.0)
    # Levels are nested: y[s, l+1] <= y[s, l] and y[s, l] <= y[parent, same rate].
    for segment, segment_levels_ in enumerate(levels):
        parent = space.segments[segment].parent
        for position in range(1, len(segment_levels_)):
            here = level_offset[segment] + position - 1
            if position > 1:
                add_row([(here, 1.0), (here - 1, -1.0)], -np.inf, 0.0)
            if parent >= 0:
                add_row([(here, 1.0), (y(parent, segment_levels_[position]), -1.0)], -np.inf, 0.0)
    # Demand: app a's options at or below segment s with rate >= level l need y[s, l].
    # (Built with numpy per app and segment: the model has thousands of rows.)
    ancestors = [_ancestors(space, segment) for segment in range(len(space.segments))]
    for app, (segments, rates) in enumerate(zip(space.segment_of, space.rate, strict=True)):
        if deadline.expired():  # building a large model takes a while: stop in time
            return None
        columns = x_offset[app] + np.arange(len(rates))
        for above in sorted({a for segment in set(segments.tolist()) for a in ancestors[segment]}):
            below = np.array([above in ancestors[int(segment)] for segment in segments])
            level_values = np.asarray(levels[above])
            # Positions 1..reached[o] are the levels at or below option o's rate.
            reached = np.where(below, np.searchsorted(level_values, rates, side="right") - 1, 0)
            for position in range(1, int(reached.max(initial=0)) + 1):
                needing = columns[reached >= position]
                add_row_arrays(
                    np.append(needing, level_offset[above] + position - 1),
                    np.append(np.ones(len(needing)), -1.0),
                    -np.inf,
                    0.0,
                )
    # Budget.
    budget_row: list[tuple[int, float]] = []
    for app, costs in enumerate(space.cost):
        budget_row.extend((x_offset[app] + o, float(c)) for o, c in enumerate(costs.tolist()))
    for segment, segment_levels_ in enumerate(levels):
        weight = space.segments[segment].cost_per_frame
        for position in range(1, len(segment_levels_)):
            step = float(segment_levels_[position] - segment_levels_[position - 1])
            budget_row.append((level_offset[segment] + position - 1, weight * step))
    add_row(budget_row, -np.inf, budget_limit(space.budget))

    objective_vector = np.zeros(num_vars)
    integrality = np.ones(num_vars)
    bounds_low = np.zeros(num_vars)
    bounds_high = np.ones(num_vars)
    if use_t:
        objective_vector[t_index] = -1.0
        integrality[t_index] = 0
        for app, f1 in enumerate(space.f1):
            add_row(
                [(t_index, 1.0)] + [(x_offset[app] + o, -float(v)) for o, v in enumerate(f1)],
                -np.inf,
                0.0,
            )
    else:
        for app, score in enumerate(space.score):
            objective_vector[x_offset[app] : x_offset[app] + len(score)] = -score
    if minimum_f1 is not None:
        for app, f1 in enumerate(space.f1):
            too_low = np.nonzero(f1 < minimum_f1)[0]
            bounds_high[x_offset[app] + too_low] = 0.0

    matrix = coo_matrix((vals, (rows, cols)), shape=(len(lower), num_vars)).tocsr()
    return _Model(
        objective=objective_vector,
        matrix=matrix,
        lower=np.array(lower),
        upper=np.array(upper),
        integrality=integrality,
        bounds_low=bounds_low,
        bounds_high=bounds_high,
        x_offset=x_offset,
        num_options=sum(len(rates) for rates in space.rate),
    )


def _ancestors(space: SearchSpace, segment: int) -> list[int]:
    """The segment itself and every segment above it."""
    chain = []
    while segment >= 0:
        chain.append(segment)
        segment = space.segments[segment].parent
    return chain
