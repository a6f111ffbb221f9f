"""Which solver runs, for how long, and the certified answer it returns.

Every solver takes a time limit and returns the best schedule it found with a proven upper
bound on the optimum (`Solution.upper_bound`, equal to the value when proven optimal):

- `exact`: the search (search.py), seeded with a greedy schedule when the problem is one
  stem tree (with several, the search's own first schedule is better and cheaper).
- `milp`: scipy's HiGHS (milp.py); its dual bound.
- `greedy`: the greedy (greedy.py), then the Lagrangian dual as its bound.
- `auto`: the exact search, which proves most problems optimal in milliseconds. For
  `mean_f1` on models HiGHS handles quickly, what it leaves unproven after 20 % of the limit
  goes to reduced-cost fixing (milp.py `close_gap_mean`): the LP relaxation's reduced costs
  fix most variables, and HiGHS closes the gap on the rest. (On the paper-shaped problems at
  large budgets the search's bound stays a few 1e-5 above the optimum for minutes; HiGHS on
  the whole program needs one to two seconds, on the fixed one about a tenth.) Where the
  search's bounds are relaxed (a camera with more apps on one base model than a subset table
  holds) and the limit is a few seconds, HiGHS on the whole program gets the rest of the
  time; the better schedule and the smaller bound are kept.

Pure logic: no I/O.
"""

from __future__ import annotations

import time
from typing import Literal

from scheduler.arrays import (
    OPTIMALITY_TOLERANCE,
    SearchArrays,
    Solution,
    independent_parts,
    make_solution,
    search_arrays,
)
from scheduler.deadline import DEFAULT_TIME_LIMIT_S, Deadline
from scheduler.greedy import greedy_choice
from scheduler.milp import close_gap_mean, solve_milp
from scheduler.options import SearchSpace
from scheduler.problem import Objective
from scheduler.search import solve_exact, upper_bound, values_are_exact

Solver = Literal["auto", "exact", "greedy", "milp"]
SOLVERS: tuple[Solver, ...] = ("auto", "exact", "greedy", "milp")

GREEDY_SHARE = 0.15
"""Of the time limit, what the greedy may use when it only seeds another solver."""

SEARCH_SHARE = 0.5
"""Of the time limit, what `auto` gives the search before HiGHS may take over."""

FIXING_SEARCH_SHARE = 0.2
"""Of the time limit, what `auto` gives the search before reduced-cost fixing and HiGHS try
to close the gap (`mean_f1`, small models): the search proves most problems in
milliseconds, and the rest are near-ties that only an integer program's cuts separate."""

MILP_MIN_TIME_S = 2.0
"""`auto` lets HiGHS try only with at least this much time: below, it rarely gets further than
the search, and it overruns short limits (its presolve does not look at the clock)."""

MILP_OPTION_LIMIT = 3000
"""`auto` lets HiGHS try only problems with at most this many options (its model grows
with them and takes seconds to build and solve beyond)."""


def solve(
    space: SearchSpace,
    objective: Objective,
    solver: Solver = "auto",
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
) -> Solution | None:
    """The best schedule `solver` finds within `time_limit_s`, with a proven upper bound on
    the optimum; None when nothing fits the budget (proven exactly in every case)."""
    started = time.perf_counter()
    deadline = Deadline.after(time_limit_s)
    if solver == "milp":
        solution = solve_milp(space, objective, time_limit_s)
    elif solver == "greedy":
        solution = _greedy(space, objective, deadline)
    elif solver == "exact":
        solution = _exact(space, objective, deadline)
    else:
        solution = _auto(space, objective, deadline)
    if solution is not None:
        solution.stats["solve_time_s"] = time.perf_counter() - started
    return solution


def optimality_gap(value: float, bound: float) -> float:
    """Relative gap `(bound - value) / bound`: 0 when proven optimal, at most 1."""
    if bound - value <= OPTIMALITY_TOLERANCE or bound <= 0.0:
        return 0.0
    return min(1.0, (bound - value) / bound)


def _greedy_seed(
    arrays: SearchArrays, objective: Objective, deadline: Deadline
) -> tuple[bool, list[int] | None]:
    """(whether the budget can fit at all, a first schedule for the search or None).

    Only a problem that is one stem tree gets a greedy schedule: with several trees the
    search's own first schedule (each tree's best choices near the dual's minimum, joined by
    a knapsack, then the greedy's fill from there) is better and cheaper, while the greedy
    from the cheapest schedule needs an upgrade per step for hundreds of apps.
    """
    if len(independent_parts(arrays, arrays.valid)) > 1:
        return True, None
    seed = greedy_choice(arrays, objective, deadline=deadline.share(GREEDY_SHARE))
    return seed is not None, seed


def _greedy(space: SearchSpace, objective: Objective, deadline: Deadline) -> Solution | None:
    choice = greedy_choice(search_arrays(space), objective, deadline=deadline.share(0.65))
    if choice is None:
        return None
    solution = make_solution(space, choice)
    bound = upper_bound(space, objective, max(0.0, deadline.remaining()))
    value = solution.value(objective)
    solution.upper_bound = value if bound is None else max(value, bound)
    return solution


def _exact(space: SearchSpace, objective: Objective, deadline: Deadline) -> Solution | None:
    arrays = search_arrays(space)
    fits, seed = _greedy_seed(arrays, objective, deadline)
    if not fits:
        return None
    return solve_exact(
        space, objective, incumbent=seed, time_limit_s=deadline.remaining(), arrays=arrays
    )


def _auto(space: SearchSpace, objective: Objective, deadline: Deadline) -> Solution | None:
    arrays = search_arrays(space)
    fits, seed = _greedy_seed(arrays, objective, deadline)
    if not fits:
        return None
    options = sum(len(rates) for rates in space.rate)
    fixing_may_help = objective == "mean_f1" and options <= MILP_OPTION_LIMIT
    milp_may_help = (
        deadline.remaining() >= MILP_MIN_TIME_S
        and options <= MILP_OPTION_LIMIT
        and not values_are_exact(space)
    )
    if fixing_may_help:
        search_deadline = deadline.share(FIXING_SEARCH_SHARE)
    elif milp_may_help:
        search_deadline = deadline.share(SEARCH_SHARE)
    else:
        search_deadline = deadline
    found = solve_exact(
        space,
        objective,
        incumbent=seed,
        time_limit_s=search_deadline.remaining(),
        arrays=arrays,
    )
    if found is None or found.proven(objective) or deadline.expired():
        return found
    if fixing_may_help:
        found = close_gap_mean(space, found, deadline.remaining())
        found.stats["method_fixing"] = 1.0
        if found.proven(objective) or deadline.expired():
            return found
    if not milp_may_help:
        return found
    reference = solve_milp(space, objective, deadline.remaining())
    if reference is None:
        return found
    bound = min(found.bound(), reference.bound())
    best = reference if reference.value(objective) > found.value(objective) else found
    best.set_bound(bound, objective)
    best.stats["method_milp"] = float(best is reference)
    return best
