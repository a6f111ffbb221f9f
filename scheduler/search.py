"""Exact search for the best schedule (DESIGN §3-4).

The problem: every app picks one of its options (cut point, rate, vote); stem segments run at
the highest rate of the apps below them; the total cost must fit the budget. Objectives:
`mean_f1` (weighted mean of the apps' F1) or `min_f1` (the worst app's F1, ties broken by the
weighted mean).

How `solve_exact` proves its optimum, in short:
- Fix the rate of every stem segment and the rest is a multiple-choice knapsack (one option
  per app, branch costs only), which `_knapsack` solves exactly by merging Pareto frontiers
  of (cost, score) with Lagrangian bounds. `_StemSearch` is a branch and bound over the stem
  rates, fixed deepest segment first, whose bounds charge the stem in three ways: a segment
  set faster than the ones below it must be the exact rate of some app right there (a
  "witness"); every tree owes at least the largest stem any single option needs; and once no
  such step can pay off, the rest of the stem is settled at once.
- `min_f1`: the cheapest schedule with every app at or above an F1 floor is an exact dynamic
  programme over the stem (`min_cost_choice`), so a binary search finds the best floor; then
  the best weighted mean is searched among options at or above it.
- Apps on different cameras (or base models without decode cost) share nothing but the
  budget; each such part lists its candidate sub-schedules and a knapsack joins them
  (`_best_mean_by_parts`), instead of multiplying their search trees.
- `solve_milp`: a mixed-integer program for scipy's HiGHS, independent of all the above and
  kept as the reference the tests compare against (several seconds at 10+ apps).

Costs fit when at most `budget * (1 + 1e-9)` (cost_model.budget_limit), in every solver.

Pure logic: numpy/scipy only, no I/O.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import numpy as np

from scheduler.arrays import (
    ENUMERATE_LIMIT,
    PRUNE_EPS,
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
from scheduler.knapsack import (
    best_knapsack,
    every_assignment,
    frontier_window,
    lagrangian_grid,
    merge_classes,
    pareto_items,
)
from scheduler.milp import solve_milp
from scheduler.options import SearchSpace
from scheduler.problem import Objective

__all__ = [
    "ENUMERATE_LIMIT",
    "SearchArrays",
    "Solution",
    "best_min_f1_floor",
    "make_solution",
    "min_cost_choice",
    "schedule_cost_of",
    "search_arrays",
    "segment_levels",
    "solve_exact",
    "solve_milp",
]


class _StemSearch:
    """Depth-first branch and bound over the rate of every costly stem segment.

    Segments are fixed deepest first (children before parents), so a fixed segment's rate is
    a lower bound for every segment above it: the bound of a node already pays those
    segments at that rate. Bounds are Lagrangian relaxations of the budget in which options
    on fixed segments are limited to the fixed rate and options on unfixed segments are not
    (see `_expand`, `_stem_bound` and `_no_step_can_win` for what keeps them tight).

    The search has three goals:
    - "best": the highest total score within `limit`; leaves are multiple-choice knapsacks
      solved exactly by `best_knapsack`;
    - "reduced": the highest `score - multiplier * cost`, no budget (a Lagrangian dual value);
    - "window": every Pareto-optimal (cost, score) within `limit` whose reduced value is at
      least `threshold` (see `_best_mean_by_parts`).
    """

    def __init__(
        self,
        arrays: SearchArrays,
        allowed: np.ndarray,
        incumbent: tuple[float, list[int]] | None,
        goal: Literal["best", "reduced", "window"] = "best",
        multiplier: float | None = None,
        threshold: float = -np.inf,
    ) -> None:
        self.arrays = arrays
        self.allowed = allowed & arrays.valid
        self.order = arrays.post_order()
        self.goal = goal
        self.fixed_multiplier = multiplier
        # Bounds read `limit` as the budget; with no budget (reduced) they bound the reduced
        # value directly. A window prunes what cannot reach the threshold, a fixed floor.
        self.limit = 0.0 if goal == "reduced" else arrays.limit
        self.check_budget = goal != "reduced"
        self.best_value = incumbent[0] if incumbent else -np.inf
        self.best_choice = incumbent[1] if incumbent else None
        self.threshold = threshold
        if goal == "window":
            assert multiplier is not None
            self.best_value = threshold + multiplier * self.limit
        self.points: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # window results
        self.nodes = 0
        self.leaves = 0
        segments = arrays.num_segments
        self.is_ancestor = arrays.needs[:segments].copy()  # [s, u]: u strictly above s
        self.is_ancestor[np.arange(segments), np.arange(segments)] = False
        # Levels worth trying per segment: 0 and the rates of allowed options below it.
        self.useful = np.zeros((segments, len(arrays.levels)), dtype=bool)
        self.useful[:, 0] = True
        apps, columns = np.nonzero(self.allowed)
        below = arrays.needs[arrays.segment[apps, columns]]  # (options, segments)
        for segment in range(segments):
            self.useful[segment, arrays.level[apps, columns][below[:, segment]]] = True
        self.score_allowed = np.where(self.allowed, arrays.score, -np.inf)
        self.cost_allowed = np.where(self.allowed, arrays.cost, 0.0)
        # The root of every segment's tree, and each app's tree (-1: needs no costly segment).
        self.tree_of = np.append(arrays.tree_root(), -1)
        self.app_tree = np.max(np.where(arrays.valid, self.tree_of[arrays.segment], -1), axis=1)

    def run(self) -> None:
        arrays = self.arrays
        multiplier = (
            self.fixed_multiplier
            if self.fixed_multiplier is not None
            else _root_multiplier(arrays, self.allowed)
        )
        segments = arrays.num_segments
        if segments == 0:
            self._leaf(np.zeros(0), multiplier)
        else:
            self._expand(
                0,
                sigma=np.zeros(segments),
                fixed=np.zeros(segments, dtype=bool),
                lower=np.zeros(segments),
                multiplier=multiplier,
            )

    def _grid(self, multiplier: float) -> np.ndarray:
        if self.fixed_multiplier is not None:
            return np.array([self.fixed_multiplier])
        return lagrangian_grid(multiplier, 9, 4.0)

    def _expand(
        self,
        position: int,
        sigma: np.ndarray,
        fixed: np.ndarray,
        lower: np.ndarray,
        multiplier: float,
    ) -> None:
        arrays = self.arrays
        self.nodes += 1
        if self._stem_bound(sigma, fixed, lower, multiplier) <= self.best_value + PRUNE_EPS:
            return
        if self._no_step_can_win(sigma, fixed, lower, multiplier):
            self._leaf(self._without_steps(sigma, fixed), multiplier)
            return
        segment = self.order[position]
        levels = arrays.levels
        # Candidate rates for this segment: useful ones at or above what the segments below need.
        floor_level = int(np.searchsorted(levels, lower[segment] - 1e-12))
        candidates = np.nonzero(self.useful[segment])[0]
        candidates = np.union1d(candidates[candidates >= floor_level], [floor_level])

        # Stem already paid (fixed segments) and owed at least (lower bounds of the others).
        unfixed = ~fixed
        unfixed[segment] = False
        ancestors = self.is_ancestor[segment]
        fixed_cost = float(arrays.weight[fixed] @ sigma[fixed])
        others_cost = float(arrays.weight[unfixed & ~ancestors] @ lower[unfixed & ~ancestors])
        rates = levels[candidates]
        above = unfixed & ancestors
        above_cost = np.maximum(lower[above][None, :], rates[:, None]) @ arrays.weight[above]
        capacity = (
            self.limit - fixed_cost - others_cost - arrays.weight[segment] * rates - above_cost
        )

        # Options elsewhere are admissible as the node stands; options on this segment by rate.
        padded_sigma = np.append(np.where(fixed, sigma, np.inf), np.inf)
        on_segment = self.allowed & (arrays.segment == segment)
        elsewhere = self.allowed & ~on_segment & (arrays.rate <= padded_sigma[arrays.segment])
        grid = self._grid(multiplier)
        lam = grid[:, None, None]
        score_elsewhere = np.where(elsewhere, self.score_allowed, -np.inf)
        best_elsewhere = np.max(score_elsewhere[None] - lam * self.cost_allowed[None], axis=2)
        exact = np.full((len(grid), arrays.num_apps, len(levels)), -np.inf)
        apps, columns = np.nonzero(on_segment)
        exact[:, apps, arrays.level[apps, columns]] = (
            arrays.score[apps, columns][None, :]
            - grid[:, None] * arrays.cost[apps, columns][None, :]
        )
        by_level = np.maximum.accumulate(exact, axis=2)[:, :, candidates]
        exact = exact[:, :, candidates]
        per_app = np.maximum(best_elsewhere[:, :, None], by_level)  # (grid, apps, candidates)
        bounds_by_lam = per_app.sum(axis=1) + grid[:, None] * capacity[None, :]
        # A segment set faster than every segment below it is only worth it if some app runs
        # right there at exactly that rate; otherwise a slower setting does the same for less.
        # So one app must take that option: charge the cheapest such switch.
        step = rates > lower[segment] + 1e-12
        switch_loss = np.min(
            np.where(
                np.isfinite(exact), per_app - np.where(np.isfinite(exact), exact, 0.0), np.inf
            ),
            axis=1,
        )  # (grid, candidates)
        bounds_by_lam[:, step] -= switch_loss[:, step]
        best_lam = np.argmin(bounds_by_lam, axis=0)
        bounds = bounds_by_lam[best_lam, np.arange(len(candidates))]

        # The cheapest each app can be must fit too (with the witness of a step).
        cheapest_elsewhere = np.min(np.where(elsewhere, arrays.cost, np.inf), axis=1)
        exact_cost = np.full((arrays.num_apps, len(levels)), np.inf)
        exact_cost[apps, arrays.level[apps, columns]] = arrays.cost[apps, columns]
        cost_by_level = np.minimum.accumulate(exact_cost, axis=1)[:, candidates]
        per_app_cost = np.minimum(cheapest_elsewhere[:, None], cost_by_level)
        cheapest = per_app_cost.sum(axis=0)
        exact_at = exact_cost[:, candidates]
        extra = np.min(
            np.where(
                np.isfinite(exact_at),
                exact_at - np.where(np.isfinite(per_app_cost), per_app_cost, 0.0),
                np.inf,
            ),
            axis=0,
        )
        cheapest[step] += extra[step]
        feasible = np.isfinite(bounds)
        if self.check_budget:
            feasible &= cheapest <= capacity + 1e-12

        for index in np.argsort(-bounds):
            if not feasible[index] or bounds[index] <= self.best_value + PRUNE_EPS:
                continue
            rate = float(rates[index])
            child_sigma = sigma.copy()
            child_sigma[segment] = rate
            child_fixed = fixed.copy()
            child_fixed[segment] = True
            child_lower = lower.copy()
            child_lower[ancestors] = np.maximum(child_lower[ancestors], rate)
            child_multiplier = float(grid[best_lam[index]])
            if position + 1 == len(self.order):
                self._leaf(child_sigma, child_multiplier)
            else:
                self._expand(position + 1, child_sigma, child_fixed, child_lower, child_multiplier)

    def _stem_bound(
        self, sigma: np.ndarray, fixed: np.ndarray, lower: np.ndarray, multiplier: float
    ) -> float:
        """A Lagrangian bound of the node that also charges the unfixed stem.

        The unfixed segments of a tree must run at least as fast as every option below them
        needs: in each tree, the stem beyond the lower bounds costs at least the largest
        `excess` any single app's option adds (what it would cost were that app alone).
        For a threshold t on that excess, each app takes its best option within t and the
        tree pays t; maximising over t (in bins, rounding in the bound's favour) keeps the
        bound valid while charging the shared stem once.
        """
        arrays = self.arrays
        levels = arrays.levels
        unfixed = ~fixed
        padded_sigma = np.append(np.where(fixed, sigma, np.inf), np.inf)
        admissible = self.allowed & (arrays.rate <= padded_sigma[arrays.segment])
        grid = self._grid(multiplier)
        gain = (
            np.where(admissible, self.score_allowed, -np.inf)[None]
            - grid[:, None, None] * self.cost_allowed[None]
        )  # (grid, apps, width)
        owed = float(arrays.weight[fixed] @ sigma[fixed] + arrays.weight[unfixed] @ lower[unfixed])
        total = grid * (self.limit - owed)

        raise_to = np.maximum(levels[None, :] - lower[:, None], 0.0) * arrays.weight[:, None]
        raise_to[fixed] = 0.0
        per_level = np.vstack((arrays.needs[:-1].astype(float) @ raise_to, np.zeros(len(levels))))
        excess = np.where(admissible, per_level[arrays.segment, arrays.level], 0.0)

        open_trees = [tree for tree in np.unique(self.app_tree) if tree >= 0 and unfixed[tree]]
        in_open_tree = np.isin(self.app_tree, open_trees)
        total = total + gain[:, ~in_open_tree].max(axis=2).sum(axis=1)
        bins = 24
        for tree in open_trees:
            members = np.nonzero(self.app_tree == tree)[0]
            member_excess = excess[members]
            positive = member_excess[admissible[members] & (member_excess > 0)]
            thresholds = np.unique(
                np.concatenate(([0.0], np.quantile(positive, np.linspace(0, 1, bins))))
                if len(positive)
                else np.zeros(1)
            )
            position = np.searchsorted(thresholds, member_excess)  # bin of each option
            best = np.full((len(members), len(thresholds), len(grid)), -np.inf)
            rows, columns = np.nonzero(admissible[members])
            np.maximum.at(best, (rows, position[rows, columns]), gain[:, members[rows], columns].T)
            best = np.maximum.accumulate(best, axis=1).sum(axis=0).T  # (grid, bins)
            penalty = np.concatenate(([0.0], thresholds[:-1]))
            total = total + np.max(best - grid[:, None] * penalty[None, :], axis=1)
        return float(np.min(total))

    def _no_step_can_win(
        self, sigma: np.ndarray, fixed: np.ndarray, lower: np.ndarray, multiplier: float
    ) -> bool:
        """True when no unfixed segment can run faster than the segments below it.

        Such a step at segment u and rate r needs some app right on u at exactly r (see the
        witness in `_expand`), and the stem from u up at r at least. If the Lagrangian bound
        of every such (u, r) is below the incumbent, only the schedule without steps is left.
        """
        arrays = self.arrays
        levels = arrays.levels
        unfixed = ~fixed
        padded_sigma = np.append(np.where(fixed, sigma, np.inf), np.inf)
        admissible = self.allowed & (arrays.rate <= padded_sigma[arrays.segment])
        grid = self._grid(multiplier)
        score = np.where(admissible, self.score_allowed, -np.inf)
        best = np.max(score[None] - grid[:, None, None] * self.cost_allowed[None], axis=2)

        # Gain of each app's option right on unfixed segment u at level l, if it is a step.
        apps, columns = np.nonzero(admissible & unfixed[arrays.segment] & (arrays.segment >= 0))
        segments, option_levels = arrays.segment[apps, columns], arrays.level[apps, columns]
        is_step = levels[option_levels] > lower[segments] + 1e-12
        apps, columns = apps[is_step], columns[is_step]
        segments, option_levels = segments[is_step], option_levels[is_step]
        if len(apps) == 0:
            return True
        loss = np.full((len(grid), arrays.num_apps, arrays.num_segments, len(levels)), np.inf)
        gains = arrays.score[apps, columns][None, :] - grid[:, None] * arrays.cost[apps, columns]
        loss[:, apps, segments, option_levels] = best[:, apps] - gains
        witness_loss = loss.min(axis=1)  # (grid, segments, levels)

        # Stem owed with a step at (u, l): the lower bounds, with u and the unfixed above it at l.
        owed = float(arrays.weight[fixed] @ sigma[fixed] + arrays.weight[unfixed] @ lower[unfixed])
        raise_to = np.maximum(levels[None, :] - lower[:, None], 0.0) * arrays.weight[:, None]
        raise_to[fixed] = 0.0
        extra = arrays.needs[:-1].astype(float) @ raise_to  # (segments u, levels)
        capacity = self.limit - owed - extra
        bounds = (
            best.sum(axis=1)[:, None, None] + grid[:, None, None] * capacity[None] - witness_loss
        )
        return bool(np.max(np.min(bounds, axis=0)) <= self.best_value + PRUNE_EPS)

    def _without_steps(self, sigma: np.ndarray, fixed: np.ndarray) -> np.ndarray:
        """Stem rates when every unfixed segment runs just as fast as the fastest below it."""
        result = sigma.copy()
        for segment in self.order:
            if not fixed[segment]:
                children = self.arrays.children[segment]
                result[segment] = max((result[child] for child in children), default=0.0)
        return result

    def _leaf(self, sigma: np.ndarray, multiplier: float) -> None:
        arrays = self.arrays
        self.leaves += 1
        admissible = arrays.admissible(sigma, self.allowed)
        stem = float(arrays.weight @ sigma)
        if self.goal == "reduced":
            lam = multiplier
            gain = np.where(admissible, arrays.score - lam * self.cost_allowed, -np.inf)
            value = float(gain.max(axis=1).sum()) - lam * stem
            if value > self.best_value:
                self.best_value = value
                self.best_choice = [int(column) for column in gain.argmax(axis=1)]
        elif self.goal == "window":
            lam = multiplier
            found = frontier_window(
                arrays, admissible, self.limit - stem, lam, self.threshold + lam * stem
            )
            if found is not None:
                costs, scores, picks = found
                self.points.append((costs + stem, scores, picks))
        else:
            result = best_knapsack(
                arrays, admissible, self.limit - stem, self.best_value, multiplier
            )
            if result is not None:
                self.best_value, self.best_choice = result


def _root_multiplier(arrays: SearchArrays, allowed: np.ndarray) -> float:
    """A Lagrange multiplier for the budget that roughly minimises the root bound."""
    grid = np.geomspace(1e-6, 1e3, 64) / max(arrays.limit, 1e-12)
    scores = np.where(allowed, arrays.score, -np.inf)
    costs = np.where(allowed, arrays.cost, 0.0)
    values = grid * arrays.limit + np.max(
        scores[None] - grid[:, None, None] * costs[None], axis=2
    ).sum(axis=1)
    return float(grid[int(np.argmin(values))])


def _best_mean(
    arrays: SearchArrays,
    allowed: np.ndarray,
    incumbent: list[int] | None,
    enumerate_limit: int = ENUMERATE_LIMIT,
) -> tuple[list[int], dict[str, float]] | None:
    """The choice with the highest total score among `allowed` options that fits."""
    allowed = allowed & arrays.valid
    rows = np.arange(arrays.num_apps)
    if incumbent is None or not allowed[rows, incumbent].all():
        cheapest = min_cost_choice(arrays, allowed)
        incumbent = cheapest[1] if cheapest is not None else None
    if incumbent is None or arrays.total_cost(incumbent) > arrays.limit:
        return None
    start = (float(arrays.score[rows, incumbent].sum()), list(incumbent))
    if math.prod(int(count) for count in allowed.sum(axis=1)) <= enumerate_limit:
        _, scores, picks = every_assignment(arrays, allowed, arrays.limit)
        best = int(np.argmax(scores))  # never empty: the incumbent fits
        return [int(column) for column in picks[best]], {"nodes": 0.0, "leaves": 0.0}
    parts = independent_parts(arrays, allowed)
    if len(parts) > 1:
        return _best_mean_by_parts(arrays, allowed, start, parts, enumerate_limit)
    search = _StemSearch(arrays, allowed, start)
    search.run()
    assert search.best_choice is not None
    return search.best_choice, {"nodes": float(search.nodes), "leaves": float(search.leaves)}


def _best_mean_by_parts(
    arrays: SearchArrays,
    allowed: np.ndarray,
    incumbent: tuple[float, list[int]],
    parts: list[np.ndarray],
    enumerate_limit: int,
) -> tuple[list[int], dict[str, float]]:
    """Best choice when the apps form independent parts (cameras) linked only by the budget.

    Searching all parts' stems together would multiply their search trees. Instead each part
    lists the Pareto-optimal (cost, score) sub-choices that could belong to a choice better
    than the incumbent, and a knapsack over the parts picks one per part. Small parts list
    every assignment. For the others, with a Lagrange multiplier `lam` for the budget: let L_k
    be the best `score - lam * cost` of part k alone (exact, from a "reduced" search) and z
    the incumbent's score; a choice better than z uses, in part k, a sub-choice whose reduced
    value is at least `L_k - gap`, gap = lam * limit + sum(L) - z, and only those are listed.
    """
    zero = float(incumbent[0])
    stats = {"nodes": 0.0, "leaves": 0.0}
    subsets = [arrays.restrict(apps, arrays.limit) for apps in parts]
    sub_allowed = [allowed[apps] for apps in parts]
    min_costs = []
    for sub, sub_ok in zip(subsets, sub_allowed, strict=True):
        cheapest = min_cost_choice(sub, sub_ok)
        assert cheapest is not None
        min_costs.append(cheapest[0])
    rooms = [arrays.limit - (sum(min_costs) - own) for own in min_costs]

    listed: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for index, (sub, sub_ok) in enumerate(zip(subsets, sub_allowed, strict=True)):
        if math.prod(int(count) for count in sub_ok.sum(axis=1)) <= enumerate_limit:
            listed[index] = every_assignment(sub, sub_ok, rooms[index])

    def reduced_values(lam: float) -> list[float]:
        values = []
        for index, (sub, sub_ok, apps) in enumerate(zip(subsets, sub_allowed, parts, strict=True)):
            if index in listed:
                costs, scores, _ = listed[index]
                values.append(float(np.max(scores - lam * costs)))
                continue
            known = [incumbent[1][app] for app in apps]
            known_value = float(
                sub.score[np.arange(len(apps)), known].sum() - lam * sub.total_cost(known)
            )
            search = _StemSearch(sub, sub_ok, (known_value, known), "reduced", lam)
            search.run()
            stats["nodes"] += search.nodes
            stats["leaves"] += search.leaves
            values.append(search.best_value)
        return values

    multiplier, reduced_best = _best_multiplier(
        reduced_values, _root_multiplier(arrays, allowed), arrays.limit
    )
    gap = max(0.0, multiplier * arrays.limit + sum(reduced_best) - zero)

    classes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for index, (sub, sub_ok) in enumerate(zip(subsets, sub_allowed, strict=True)):
        threshold = reduced_best[index] - gap - 1e-12
        if index in listed:
            costs, scores, picks = listed[index]
            inside = scores - multiplier * costs >= threshold
            classes.append((costs[inside], scores[inside], picks[inside]))
            continue
        window = _StemSearch(
            replace(sub, limit=rooms[index]), sub_ok, None, "window", multiplier, threshold
        )
        window.run()
        stats["nodes"] += window.nodes
        stats["leaves"] += window.leaves
        if not window.points:
            return list(incumbent[1]), stats  # nothing in this part can beat the incumbent
        costs = np.concatenate([points[0] for points in window.points])
        scores = np.concatenate([points[1] for points in window.points])
        picks = np.vstack([points[2] for points in window.points])
        costs, scores, keep = pareto_items(costs, scores, np.arange(len(costs)))
        classes.append((costs, scores, picks[keep]))

    merged = merge_classes(
        [costs for costs, _, _ in classes],
        [scores for _, scores, _ in classes],
        arrays.limit,
        zero,
        multiplier,
    )
    if merged is None:
        return list(incumbent[1]), stats
    choice = list(incumbent[1])
    for apps, (_, _, picks), pick in zip(parts, classes, merged[1], strict=True):
        for app, column in zip(apps.tolist(), picks[pick].tolist(), strict=True):
            choice[app] = int(column)
    return choice, stats


def _best_multiplier(
    reduced_values: Callable[[float], list[float]], guess: float, limit: float, steps: int = 8
) -> tuple[float, list[float]]:
    """Roughly minimise the Lagrangian dual lam * limit + sum(reduced_values(lam)).

    The dual is convex in lam; a golden-section search on log(lam) around `guess` is enough,
    since any multiplier gives a valid (if wider) window.
    """

    def dual(log_lam: float) -> tuple[float, float, list[float]]:
        lam = math.exp(log_lam)
        values = reduced_values(lam)
        return lam * limit + sum(values), lam, values

    low, high = math.log(guess) - 2.0, math.log(guess) + 3.0
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    best_left, best_right = dual(left), dual(right)
    best = min(best_left, best_right, key=lambda item: item[0])
    for _ in range(steps):
        if best_left[0] <= best_right[0]:
            high, right, best_right = right, left, best_left
            left = high - ratio * (high - low)
            best_left = dual(left)
        else:
            low, left, best_left = left, right, best_right
            right = low + ratio * (high - low)
            best_right = dual(right)
        best = min(best, best_left, best_right, key=lambda item: item[0])
    return best[1], best[2]


def solve_exact(
    space: SearchSpace,
    objective: Objective,
    incumbent: list[int] | None = None,
    enumerate_limit: int = ENUMERATE_LIMIT,
) -> Solution | None:
    """The proven optimum of `objective` within the budget; None when nothing fits.

    `incumbent`, a feasible choice (e.g. the greedy's), only speeds the search up.
    `min_f1` first finds the best floor on every app's F1, then the best mean above it.
    Below `enumerate_limit` assignments every assignment is simply scored (0: always search).
    """
    started = time.perf_counter()
    arrays = search_arrays(space)
    allowed = arrays.valid.copy()
    cheapest = min_cost_choice(arrays, allowed)
    if cheapest is None or cheapest[0] > arrays.limit:
        return None
    if objective == "min_f1":
        floor = best_min_f1_floor(arrays, allowed)
        if floor is None:
            return None
        allowed &= arrays.f1 >= floor
    result = _best_mean(arrays, allowed, incumbent, enumerate_limit)
    if result is None:
        return None
    choice, stats = result
    stats["solve_time_s"] = time.perf_counter() - started
    return make_solution(space, choice, **stats)
