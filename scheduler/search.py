"""Exact search for the best schedule, within a time limit (DESIGN §3-4).

The problem: every app picks one of its options (cut point, rate, vote); stem segments run at
the highest rate of the apps below them; the total cost must fit the budget. Objectives:
`mean_f1` (weighted mean of the apps' F1) or `min_f1` (the worst app's F1, ties broken by the
weighted mean).

How `solve_exact` works:
- Apps on different cameras (or base models without decode cost) share nothing but the
  budget: they form independent parts, one stem tree each.
- With a price `lam` on the budget, each part's best `score - lam * cost` is an exact dynamic
  programme (stem_program.py), so `lam * limit + sum over parts` is an upper bound on the
  optimum for every price, and its minimum over prices (the Lagrangian dual) is found by
  zooming in on a grid of prices: a proven bound in milliseconds, before any search.
- A first schedule comes from the parts' best choices at prices around the minimum, joined
  by a multiple-choice knapsack within the budget.
- Then every part's full stem choices that could still beat that schedule are visited, pruned
  by the smallest of the bounds over a grid of prices. One part: each visited stem choice is
  a multiple-choice knapsack over the apps (knapsack.py), solved exactly. Several parts: each
  lists its Pareto-optimal (cost, score) sub-schedules that could belong to a better schedule,
  and a knapsack over the parts joins them.
- A few apps with many options (too many assignments to score at once) are listed outright,
  pair by pair (`knapsack.best_by_listing`): near-ties that no bound separates cost nothing.
- `min_f1`: the cheapest schedule with every app at or above an F1 floor is an exact dynamic
  programme over the stem (`min_cost_choice`), so a binary search finds the best floor; then
  the best weighted mean is searched among options at or above it.

Why the earlier search stalled on the original paper's data: its bounds priced the budget
with a multiplier chosen while ignoring the stem, and charged the shared stem only as much
as the single most demanding app needs. With flat accuracy curves the deepest cut points are
as good as the shallowest and their branches cost almost nothing, so that multiplier came out
near zero and the stem was nearly free in every bound (0.91 at the root of the stall case,
whose optimum is 0.636): nothing was pruned until the last few segments, and the tree of
stem rates (13 segments x 20 rates) was walked almost whole. The exact per-tree programme
prices the stem exactly for every multiplier, so the bound is the true Lagrangian dual
(0.656 there), and the search proves the stall case optimal in about 15 ms (71 nodes).

Every step watches a deadline. When it passes, the best schedule found is returned with the
smallest bound proven so far (`Solution.upper_bound`); when the search completes, the bound
equals the value: proven optimal.

Costs fit when at most `budget * (1 + 1e-9)` (cost_model.budget_limit), in every solver.

Pure logic: numpy/scipy only, no I/O.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from scheduler.arrays import (
    ENUMERATE_LIMIT,
    OPTIMALITY_TOLERANCE,
    SearchArrays,
    Solution,
    best_min_f1_floor,
    independent_parts,
    make_solution,
    min_cost_choice,
    schedule_cost_of,
    search_arrays,
    segment_levels,
)
from scheduler.deadline import DEFAULT_TIME_LIMIT_S, Deadline
from scheduler.greedy import greedy_choice
from scheduler.knapsack import (
    best_by_listing,
    best_knapsack,
    every_assignment,
    frontier_points,
    merge_classes,
)
from scheduler.milp import solve_milp
from scheduler.options import SearchSpace
from scheduler.problem import Objective
from scheduler.stem_program import (
    TABLE_CELLS,
    PartTables,
    StaircaseWalk,
    StemTables,
    layout_key,
    part_options,
    tree_layout,
)

__all__ = [
    "DEFAULT_TIME_LIMIT_S",
    "ENUMERATE_LIMIT",
    "OPTIMALITY_TOLERANCE",
    "SearchArrays",
    "Solution",
    "best_mean",
    "best_min_f1_floor",
    "make_solution",
    "min_cost_choice",
    "schedule_cost_of",
    "search_arrays",
    "segment_levels",
    "solve_exact",
    "solve_milp",
    "upper_bound",
    "values_are_exact",
]

PRICE_STEPS = 16
"""Prices per round of the search for the Lagrangian dual, and at most per walk."""

TARGET_STEPS = 16
"""The first target lies this fraction of the gap below the bound (then 4, 16, ... times)."""

LEAF_PRICES = 3
"""Prices whose bounds filter the sub-schedules listed at one full stem choice."""

LISTING_PAIRS = 40_000
LISTING_COMBINATIONS = 25_000
"""A few apps are listed outright (`best_by_listing`) when their two largest option counts
multiply to at most `LISTING_PAIRS` and the others' to at most `LISTING_COMBINATIONS`:
usually milliseconds (half the time at most), and faster than proving bounds on many
near-ties; the search takes over if the listing runs out of its time."""

FIRST_PRICES = 5
"""Prices at which every part's best choice becomes a candidate for the first schedule."""


@dataclass
class MeanResult:
    """The best choice found for the weighted mean, and a proven bound on any choice's."""

    choice: list[int]
    upper_bound: float
    stats: dict[str, float] = field(default_factory=dict)


def solve_exact(
    space: SearchSpace,
    objective: Objective,
    incumbent: list[int] | None = None,
    enumerate_limit: int = ENUMERATE_LIMIT,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    arrays: SearchArrays | None = None,
) -> Solution | None:
    """The best schedule found within `time_limit_s`, with a proven bound; None when nothing
    fits the budget.

    `solution.upper_bound == solution.value(objective)` when it is proven optimal.
    `incumbent`, a feasible choice (e.g. the greedy's), only helps the search. Problems with
    at most `enumerate_limit` assignments are simply listed (0: always search). `arrays`:
    `search_arrays(space)` when the caller has them already.
    """
    started = time.perf_counter()
    deadline = Deadline.after(time_limit_s)
    arrays = search_arrays(space) if arrays is None else arrays
    allowed = arrays.valid.copy()
    cheapest = min_cost_choice(arrays, allowed)
    if cheapest is None or cheapest[0] > arrays.limit:
        return None
    floor = None
    if objective == "min_f1":
        floor = best_min_f1_floor(arrays, allowed)
        if floor is None:
            return None
        allowed &= arrays.f1 >= floor
    if incumbent is None and objective == "mean_f1":
        incumbent = cheapest[1]  # what best_mean would start from
    result = best_mean(arrays, allowed, incumbent, deadline, enumerate_limit)
    if result is None:  # cannot happen after the checks above; kept for the type checker
        return None
    result.stats["solve_time_s"] = time.perf_counter() - started
    solution = make_solution(space, result.choice, **result.stats)
    if objective == "min_f1":
        assert floor is not None
        solution.upper_bound = max(floor, solution.min_f1)  # the floor search is exact
    else:
        solution.upper_bound = result.upper_bound
    return solution


def upper_bound(
    space: SearchSpace, objective: Objective, time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> float | None:
    """A proven upper bound on the optimum of `objective`, found without searching (for
    schedules found otherwise, e.g. the greedy's). None when nothing fits the budget.

    `mean_f1`: the Lagrangian dual of the budget; `min_f1`: the best floor, which is exact.
    """
    deadline = Deadline.after(time_limit_s)
    arrays = search_arrays(space)
    cheapest = min_cost_choice(arrays, arrays.valid)
    if cheapest is None or cheapest[0] > arrays.limit:
        return None
    if objective == "min_f1":
        return best_min_f1_floor(arrays, arrays.valid)
    return _PartsSearch(arrays, arrays.valid.copy(), cheapest[1], deadline).dual_bound()


def values_are_exact(space: SearchSpace) -> bool:
    """Whether the stem programme's values are exact on every part (no chain has more apps
    than one subset table holds); when not, its bounds are looser and HiGHS may do better."""
    arrays = search_arrays(space)
    parts = independent_parts(arrays, arrays.valid)
    for apps in parts:
        sub = arrays.restrict(apps, arrays.limit)
        if not tree_layout(sub, sub.valid).exact:
            return False
    return True


def best_mean(
    arrays: SearchArrays,
    allowed: np.ndarray,
    incumbent: list[int] | None,
    deadline: Deadline,
    enumerate_limit: int = ENUMERATE_LIMIT,
) -> MeanResult | None:
    """The highest total score among `allowed` options that fits, within the deadline."""
    allowed = allowed & arrays.valid
    rows = np.arange(arrays.num_apps)
    if (
        incumbent is None
        or not allowed[rows, incumbent].all()
        or arrays.total_cost(incumbent) > arrays.limit
    ):
        cheapest = min_cost_choice(arrays, allowed)
        if cheapest is None or cheapest[0] > arrays.limit:
            return None
        incumbent = cheapest[1]
    if math.prod(int(count) for count in allowed.sum(axis=1)) <= enumerate_limit:
        _, scores, picks = every_assignment(arrays, allowed, arrays.limit)
        best = int(np.argmax(scores))  # never empty: the incumbent fits
        value = float(scores[best])
        return MeanResult([int(column) for column in picks[best]], value, {"enumerated": 1.0})
    counts = sorted(int(count) for count in allowed.sum(axis=1))
    if (
        enumerate_limit > 0
        and len(counts) >= 2
        and counts[-1] * counts[-2] <= LISTING_PAIRS
        and math.prod(counts[:-2]) <= LISTING_COMBINATIONS
    ):
        value = float(arrays.score[rows, incumbent].sum())
        found, finished = best_by_listing(arrays, allowed, value, deadline.share(0.5))
        if found is not None:
            value, incumbent = found
        if finished:
            return MeanResult(list(incumbent), value, {"listed_all": 1.0})
    return _PartsSearch(arrays, allowed, list(incumbent), deadline).run()


class _PartsSearch:
    """The Lagrangian dual, a first schedule from it, then the walks that prove the optimum."""

    def __init__(
        self, arrays: SearchArrays, allowed: np.ndarray, incumbent: list[int], deadline: Deadline
    ) -> None:
        self.arrays = arrays
        self.deadline = deadline
        self.allowed_all = allowed
        self.parts = independent_parts(arrays, allowed)
        self.subs = [arrays.restrict(apps, arrays.limit) for apps in self.parts]
        self.allowed = [allowed[apps] for apps in self.parts]
        self.layouts = [
            tree_layout(sub, ok) for sub, ok in zip(self.subs, self.allowed, strict=True)
        ]
        shapes: dict[tuple[object, ...], list[int]] = {}
        for part, (sub, layout) in enumerate(zip(self.subs, self.layouts, strict=True)):
            shapes.setdefault(layout_key(sub, layout), []).append(part)
        self.batches = list(shapes.values())  # parts whose tables are computed together
        self.options = [
            part_options(sub, ok) for sub, ok in zip(self.subs, self.allowed, strict=True)
        ]
        self.choice = list(incumbent)
        rows = np.arange(arrays.num_apps)
        self.value = float(arrays.score[rows, incumbent].sum())
        self.stats: dict[str, float] = {"parts": float(len(self.parts)), "nodes": 0.0}
        self.round_s = 0.0  # the longest a round of tables has taken: no round is started late
        self.prices = np.zeros(1)  # the walks' prices of the budget, set once the dual is known
        self.walks: list[StaircaseWalk] = []
        self.values = np.zeros((len(self.parts), 1))  # every part's value at every price
        # One part: the best knapsack found at each full stem choice (None: not above the
        # value known when it was solved).
        self.leaf_best: dict[bytes, tuple[float, list[int]] | None] = {}
        # Several parts: sub-schedules listed at each full stem choice, with their bounds.
        self.leaf_points: dict[
            tuple[int, bytes], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
        ] = {}

    # -- the dual --------------------------------------------------------------------------

    def _rows_per_table(self, part: int, for_walks: bool = True) -> int:
        """How many (part, price) rows of this part's shape one batch of tables may hold
        (more when only the values are wanted: then one table per group is kept)."""
        layout, levels = self.layouts[part], len(self.arrays.levels)
        cells = sum(
            (len(layout.chains[group.chain]) + 1 if group.chain >= 0 and for_walks else 1)
            * 2 ** len(group.apps)
            * levels
            for group in layout.groups
        )
        if not for_walks:  # the gains too, which are then most of it
            cells += self.subs[part].num_apps * (self.subs[part].num_segments + 1) * levels
        return max(1, TABLE_CELLS // max(1, cells))

    def _tables(self, lams: np.ndarray, for_walks: bool = True) -> list[PartTables]:
        """Every part's tables at the prices `lams` (at most `_rows_per_table` of them),
        parts of one shape computed together."""
        started = time.perf_counter()
        found: dict[int, PartTables] = {}
        for members in self.batches:
            per_batch = max(1, self._rows_per_table(members[0], for_walks) // len(lams))
            for start in range(0, len(members), per_batch):
                chunk = members[start : start + per_batch]
                tables = StemTables(
                    [(self.subs[part], self.allowed[part]) for part in chunk],
                    self.layouts[chunk[0]],
                    lams,
                    [self.options[part] for part in chunk],
                    for_walks,
                )
                found.update((part, tables.part(index)) for index, part in enumerate(chunk))
        self.round_s = max(self.round_s, time.perf_counter() - started)
        return [found[part] for part in range(len(self.parts))]

    def _values_at(self, lams: np.ndarray) -> np.ndarray:
        """(parts, prices): every part's value at every price, in as few batches as fit."""
        width = min(self._rows_per_table(part, False) for part in range(len(self.parts)))
        return np.hstack(
            [
                np.vstack(
                    [
                        tables.values()
                        for tables in self._tables(lams[start : start + width], for_walks=False)
                    ]
                )
                for start in range(0, len(lams), width)
            ]
        )

    def _dual_on(self, lams: np.ndarray) -> np.ndarray:
        """The Lagrangian dual `lam * limit + sum of part values` at every price of `lams`."""
        values = self._values_at(lams)
        dual: np.ndarray = lams * self.arrays.limit + values.sum(axis=0)
        return dual

    def _coarse_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Prices over six decades (moved out while the minimum is at the far end) and the
        dual at each: the first proven bound, and where to look closer."""
        limit = max(self.arrays.limit, 1e-12)
        lams = np.concatenate(([0.0], np.geomspace(1e-4, 1e2, PRICE_STEPS - 1) / limit))
        for _ in range(3):
            dual = self._dual_on(lams)
            if int(np.argmin(dual)) < len(lams) - 1 or self.deadline.expired():
                break
            lams = lams[-1] * np.geomspace(1.0, 1e4, PRICE_STEPS)
        return lams, dual

    def _time_for_a_round(self) -> bool:
        return self.deadline.remaining() > 1.5 * self.round_s

    @staticmethod
    def _bracket(lams: np.ndarray, dual: np.ndarray) -> tuple[float, float, float]:
        """(low, best, high): the best price of a grid and its neighbours, which enclose the
        dual's minimum (it is convex). `best` is never 0 (the walks spread around it)."""
        best = int(np.argmin(dual))
        low = float(lams[best - 1]) if best > 0 else 0.0
        high = float(lams[min(best + 1, len(lams) - 1)])
        centre = float(lams[best]) if lams[best] > 0 else float(lams[min(1, len(lams) - 1)])
        return low, centre, high

    def _zoom(
        self, low: float, high: float, lams: np.ndarray, dual: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The dual on a fine grid between `low` and `high`, merged with what is known."""
        fine = self._between(low, high, PRICE_STEPS)
        fine = fine[~np.isin(fine, lams)]
        order_lams = np.concatenate((lams, fine))
        order_dual = np.concatenate((dual, self._dual_on(fine)))
        order = np.argsort(order_lams, kind="stable")
        return order_lams[order], order_dual[order]

    def _first_schedule(self) -> None:
        """Each part's best choices at the walk prices nearest the dual's minimum, joined by
        a knapsack over the parts, then the budget the join left spent greedily."""
        walk_duals = self.prices * self.arrays.limit + self.values.sum(axis=0)
        nearest = np.argsort(walk_duals)[:FIRST_PRICES]
        candidates = [
            [
                self._point(part, choice)
                for choice in [self._own(part), *self._part_choices(part, walk, nearest.tolist())]
            ]
            for part, walk in enumerate(self.walks)
        ]
        self._join(candidates, aligned=True)
        filled = greedy_choice(
            self.arrays, "mean_f1", self.allowed_all, self.deadline.share(0.2), start=self.choice
        )
        if filled is not None:
            self.choice = filled
            rows = np.arange(self.arrays.num_apps)
            self.value = float(self.arrays.score[rows, filled].sum())

    @staticmethod
    def _between(low: float, high: float, count: int) -> np.ndarray:
        return np.unique(np.concatenate(([low], np.geomspace(max(low, high * 1e-4), high, count))))

    def _set_walks(self, low: float, centre: float, high: float) -> float:
        """Walk tables at zero, `centre` and a fine grid between `low` and `high` (where the
        dual's minimum lies), and for one part a spread of prices around `centre` too.

        With one part, deep nodes each find the price that suits them in the spread. With
        several, a part's bounds add the others' values at the same price, which are tight
        only near the dual's minimum: there only the fine grid helps, and fewer prices make
        every node cheaper. Returns the smallest dual among the prices.
        """
        most = PRICE_STEPS if len(self.parts) == 1 else PRICE_STEPS // 2
        count = min(most, *(self._rows_per_table(part) for part in range(len(self.parts))))
        spread = centre * np.array([1 / 8, 1 / 4, 1 / 2, 2, 4, 8])[: max(0, (count - 2) // 2)]
        if len(self.parts) > 1:
            spread = spread[:0]
        fine = self._between(low, high, max(1, count - 1 - len(spread)))
        self.prices = np.unique(np.concatenate(([0.0, centre], spread, fine)))[:count]
        self.walks = [StaircaseWalk(tables) for tables in self._tables(self.prices)]
        self.leaf_points = {}
        self.values = np.vstack([walk.tables.values() for walk in self.walks])
        return float(np.min(self.prices * self.arrays.limit + self.values.sum(axis=0)))

    def dual_bound(self) -> float:
        """The Lagrangian dual's minimum on a coarse grid and one closer look: a proven bound
        on the total score, without searching."""
        lams, dual = self._coarse_grid()
        if not self.deadline.expired():
            low, _, high = self._bracket(lams, dual)
            lams, dual = self._zoom(low, high, lams, dual)
        return float(np.min(dual))

    # -- the proof ------------------------------------------------------------------------

    def run(self) -> MeanResult:
        started = time.perf_counter()
        lams, dual = self._coarse_grid()
        proven = float(np.min(dual))
        self.stats["coarse_dual"] = proven
        low, centre, high = self._bracket(lams, dual)
        if not self.deadline.expired():
            lams, dual = self._zoom(low, high, lams, dual)
            proven = min(proven, float(np.min(dual)))
            low, centre, high = self._bracket(lams, dual)
        if self.deadline.expired():
            return self._result(proven)
        proven = min(proven, self._set_walks(low, centre, high))
        self._first_schedule()
        self.stats.update(first_value=self.value, first_s=time.perf_counter() - started)

        # A closer look at the dual's minimum: a tighter bound, and (for several parts,
        # whose listings are bounded at the walks' prices) walks priced closer to it.
        if proven - self.value > OPTIMALITY_TOLERANCE and self._time_for_a_round():
            walk_best = proven
            lams = np.concatenate((lams, self.prices))
            dual = np.concatenate((dual, self.prices * self.arrays.limit + self.values.sum(0)))
            low, centre, high = self._bracket(lams, dual)
            lams, dual = self._zoom(low, high, lams, dual)
            proven = min(proven, float(np.min(dual)))
            step = (proven - self.value) / TARGET_STEPS
            if len(self.parts) > 1 and walk_best - proven > step and self._time_for_a_round():
                proven = min(proven, self._set_walks(*self._bracket(lams, dual)))
        self.stats.update(dual=proven, dual_s=time.perf_counter() - started)

        # Then targets ever lower below the bound: every schedule better than the target is
        # visited, so finding one proves it optimal; finding none proves the target a bound.
        # Close targets keep the first rounds small when the first schedule is already good.
        step = max((proven - self.value) / TARGET_STEPS, OPTIMALITY_TOLERANCE)
        while proven - self.value > OPTIMALITY_TOLERANCE and not self.deadline.expired():
            target = max(self.value, proven - step)
            before = self.value
            finished, open_bound = self._visit_above(target)
            self.stats["rounds"] = self.stats.get("rounds", 0.0) + 1
            if not finished:
                return self._result(min(proven, max(open_bound, self.value)))
            if self.value > before and self.value > target:
                return self._result(self.value)
            proven = min(proven, max(target, self.value))
            step *= 4
        return self._result(proven)

    def _part_choices(self, part: int, walk: StaircaseWalk, prices: list[int]) -> list[list[int]]:
        """The part's best choice at each of some walk prices (clipped to the ones there are)."""
        prices = [max(0, min(price, len(walk.tables.lams) - 1)) for price in prices]
        sub, ok = self.subs[part], self.allowed[part]
        choices = []
        for price, levels in zip(prices, walk.best_levels(prices), strict=True):
            admissible = sub.admissible(sub.levels[levels], ok)
            lam = walk.tables.lams[price]
            cost = np.where(admissible, sub.cost, 0.0)
            gain = np.where(admissible, sub.score - lam * cost, -np.inf)
            choices.append([int(column) for column in gain.argmax(axis=1)])
        return choices

    def _point(self, part: int, choice: list[int]) -> tuple[float, float, list[int]]:
        """(cost, score, choice) of one sub-choice of a part."""
        sub = self.subs[part]
        score = float(sub.score[np.arange(sub.num_apps), choice].sum())
        return sub.total_cost(choice), score, choice

    def _join(
        self, candidates: list[list[tuple[float, float, list[int]]]], aligned: bool = False
    ) -> None:
        """Best schedule made of one listed (cost, score, sub-choice) per part that fits.

        `aligned`: every part lists its points in the same order (the same prices), so the
        parts' k-th points together are a schedule: the best that fits starts the join off
        with a bar near the optimum (far fewer partial choices survive the bound).
        """
        costs = [np.array([point[0] for point in points]) for points in candidates]
        scores = [np.array([point[1] for point in points]) for points in candidates]
        start = None
        if aligned:
            totals = [
                (sum(float(score[k]) for score in scores), k)
                for k in range(min(len(cost) for cost in costs))
                if sum(float(cost[k]) for cost in costs) <= self.arrays.limit
            ]
            if totals:
                best, k = max(totals)
                start = (best, [k] * len(candidates))
        joined = merge_classes(
            costs, scores, self.arrays.limit, self.value, self.prices, self.deadline, start
        )
        if joined is None:
            return
        for part, pick in enumerate(joined[1]):
            chosen = candidates[part][pick][2]
            for app, column in zip(self.parts[part].tolist(), chosen, strict=True):
                self.choice[app] = int(column)
        self.value = float(self.arrays.score[np.arange(self.arrays.num_apps), self.choice].sum())

    def _own(self, part: int) -> list[int]:
        return [self.choice[app] for app in self.parts[part].tolist()]

    def _visit_above(self, target: float) -> tuple[bool, float]:
        """Find the best schedule worth more than `target`, if any (it becomes the choice).

        Returns whether the visit finished, and a bound on what it left unvisited.
        """
        if len(self.parts) == 1:
            return self._visit_one(target)
        return self._visit_parts(target), np.inf

    def _visit_one(self, target: float) -> tuple[bool, float]:
        """One part: each stem choice that could beat the floor is a knapsack, solved exactly."""
        walk, sub, ok, apps = self.walks[0], self.subs[0], self.allowed[0], self.parts[0]
        floor = target

        def on_leaf(rates: np.ndarray, leaf_values: np.ndarray) -> float:
            nonlocal floor
            key = rates.tobytes()
            if key not in self.leaf_best:
                # Solved once, above the best value known (the lowest floor any later round
                # can have): later rounds, with lower targets, only look the answer up.
                stem = float(sub.weight @ rates)
                self.leaf_best[key] = best_knapsack(
                    sub,
                    sub.admissible(rates, ok),
                    sub.limit - stem,
                    self.value,
                    self.prices,
                    self.deadline,
                )
            found = self.leaf_best[key]
            if found is not None and found[0] > self.value:
                self.value = found[0]
                for app, column in zip(apps.tolist(), found[1], strict=True):
                    self.choice[app] = int(column)
            floor = max(floor, self.value)
            return floor

        finished, open_bound = walk.search(self.prices * sub.limit, target, on_leaf, self.deadline)
        self.stats["leaves"] = float(walk.leaves)
        return finished and not self.deadline.expired(), open_bound

    def _visit_parts(self, target: float) -> bool:
        """Several parts: list each part's sub-schedules that could belong to a schedule
        worth more than `target`, then join them with a knapsack over the parts."""
        limit = self.arrays.limit
        minimum = [
            float(np.where(ok, sub.cost, np.inf).min(axis=1).sum())
            for sub, ok in zip(self.subs, self.allowed, strict=True)
        ]
        total = self.values.sum(axis=0)
        classes: list[list[tuple[float, float, list[int]]]] = []
        for part, walk in enumerate(self.walks):
            sub, ok = self.subs[part], self.allowed[part]
            offsets = self.prices * limit + total - self.values[part]
            room = limit - (sum(minimum) - minimum[part])
            listed = [self._point(part, self._own(part))]

            def on_leaf(
                rates: np.ndarray,
                leaf_values: np.ndarray,
                part: int = part,
                sub: SearchArrays = sub,
                ok: np.ndarray = ok,
                offsets: np.ndarray = offsets,
                room: float = room,
                listed: list[tuple[float, float, list[int]]] = listed,
            ) -> float:
                key = (part, rates.tobytes())
                if key not in self.leaf_points:
                    # Listed once, for the lowest target any round can have (the value of
                    # the best schedule known), each point with its bound; rounds filter.
                    # The prices that bound this stem choice most tightly do nearly all the work.
                    tight = np.argsort(offsets + leaf_values)[:LEAF_PRICES]
                    costs, scores, picks = frontier_points(
                        sub,
                        sub.admissible(rates, ok),
                        float(sub.weight @ rates),
                        room,
                        self.prices[tight],
                        offsets[tight],
                        self.value,
                    )
                    bounds = np.min(
                        offsets[tight][:, None]
                        + scores[None, :]
                        - self.prices[tight][:, None] * costs[None, :],
                        axis=0,
                        initial=np.inf,
                    )
                    self.leaf_points[key] = (bounds, costs, scores, picks)
                bounds, costs, scores, picks = self.leaf_points[key]
                above = bounds > target
                costs, scores, picks = costs[above], scores[above], picks[above]
                listed.extend(
                    (float(cost), float(score), [int(column) for column in row])
                    for cost, score, row in zip(costs, scores, picks, strict=True)
                )
                return target

            finished, _ = walk.search(offsets, target, on_leaf, self.deadline)
            if not finished:
                return False
            classes.append(listed)
        self.stats["listed"] = float(sum(len(listed) for listed in classes))
        self._join(classes)
        return not self.deadline.expired()

    def _result(self, bound: float) -> MeanResult:
        self.stats["nodes"] = float(sum(walk.nodes for walk in self.walks))
        bound = max(bound, self.value)
        if bound - self.value <= OPTIMALITY_TOLERANCE:
            bound = self.value
        return MeanResult(list(self.choice), bound, dict(self.stats))
