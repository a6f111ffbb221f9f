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
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from scheduler.cost_model import budget_limit
from scheduler.options import SearchSpace
from scheduler.problem import Objective


@dataclass
class Solution:
    """One option per app (position among its kept options) and what it achieves."""

    choice: list[int]
    cost: float
    mean_f1: float  # weighted by app weight
    min_f1: float
    stats: dict[str, float] = field(default_factory=dict)

    def value(self, objective: Objective) -> float:
        return self.mean_f1 if objective == "mean_f1" else self.min_f1


def segment_levels(space: SearchSpace) -> list[np.ndarray]:
    """Rates each segment may usefully run at: 0 and the rates of options below it."""
    below: list[set[float]] = [set() for _ in space.segments]
    for segments, rates in zip(space.segment_of, space.rate, strict=True):
        for segment, rate in zip(segments.tolist(), rates.tolist(), strict=True):
            while segment >= 0:
                below[segment].add(rate)
                segment = space.segments[segment].parent
    return [np.array(sorted(levels | {0.0})) for levels in below]


def schedule_cost_of(space: SearchSpace, choice: list[int]) -> float:
    """Total cost of a choice: branches plus every segment at the highest rate below it."""
    running = np.zeros(len(space.segments))
    branches = 0.0
    for app, position in enumerate(choice):
        branches += float(space.cost[app][position])
        rate = float(space.rate[app][position])
        segment = int(space.segment_of[app][position])
        while segment >= 0 and running[segment] < rate:
            running[segment] = rate
            segment = space.segments[segment].parent
    weights = np.array([segment.cost_per_frame for segment in space.segments])
    return branches + float(weights @ running)


def make_solution(space: SearchSpace, choice: list[int], **stats: float) -> Solution:
    f1 = [float(space.f1[app][position]) for app, position in enumerate(choice)]
    score = sum(float(space.score[app][position]) for app, position in enumerate(choice))
    return Solution(
        choice=list(choice),
        cost=schedule_cost_of(space, choice),
        mean_f1=score,
        min_f1=min(f1),
        stats=dict(stats),
    )


# --------------------------------------------------------------------------------------------
# Padded arrays: one row per app, one column per kept option.
# --------------------------------------------------------------------------------------------

PRUNE_EPS = 1e-12
"""A branch is dropped when its bound does not beat the incumbent by more than this."""

ENUMERATE_LIMIT = 200_000
"""Problems (or independent parts) with at most this many assignments are listed outright."""


@dataclass(frozen=True)
class SearchArrays:
    """The search space as padded matrices, with the stem forest reduced to costly segments.

    Segments that cost nothing (no decode cost, equal cumulative costs) are merged into the
    segment above them: an option's `segment` is the nearest costly segment it needs, or -1
    when it needs none. A segment's parent always has a smaller index. Padding columns have
    rate +inf, score -inf and are not `valid`.
    """

    segment: np.ndarray  # (apps, width) int
    rate: np.ndarray  # (apps, width)
    level: np.ndarray  # (apps, width) int: index of the rate in `levels`
    score: np.ndarray  # (apps, width)
    f1: np.ndarray  # (apps, width)
    cost: np.ndarray  # (apps, width)
    valid: np.ndarray  # (apps, width) bool
    weight: np.ndarray  # (segments,) cost per frame of each costly segment
    parent: np.ndarray  # (segments,) int, -1 for a root
    children: list[list[int]]
    levels: np.ndarray  # every rate any option uses, with 0, ascending
    limit: float  # the largest total cost that fits the budget
    # needs[t, s]: an option on segment t needs segment s (s is t or above it). One extra
    # last row, all False, is what segment -1 reads.
    needs: np.ndarray

    @property
    def num_apps(self) -> int:
        return int(self.rate.shape[0])

    @property
    def num_segments(self) -> int:
        return int(self.weight.shape[0])

    def post_order(self) -> list[int]:
        """Every segment after all segments below it."""
        order: list[int] = []

        def visit(segment: int) -> None:
            for child in self.children[segment]:
                visit(child)
            order.append(segment)

        for root in np.nonzero(self.parent < 0)[0].tolist():
            visit(root)
        return order

    def stem_rates(self, choice: list[int]) -> np.ndarray:
        """The rate each segment must run at for a choice: the highest below it."""
        rows = np.arange(self.num_apps)
        demand = self.rate[rows, choice][:, None] * self.needs[self.segment[rows, choice]]
        return demand.max(axis=0, initial=0.0)

    def total_cost(self, choice: list[int]) -> float:
        branches = sum(float(self.cost[app, position]) for app, position in enumerate(choice))
        return branches + float(self.weight @ self.stem_rates(choice))

    def tree_root(self) -> np.ndarray:
        """(segments,): the root of each segment's tree (parents have smaller indices)."""
        if self.num_segments == 0:
            return np.zeros(0, dtype=np.int64)
        return np.argmax(self.needs[:-1], axis=1)

    def restrict(self, apps: np.ndarray, limit: float) -> SearchArrays:
        """The same arrays for a subset of apps, keeping only the segments they can need."""
        used = self.needs[self.segment[apps][self.valid[apps]]].any(axis=0)
        kept = np.nonzero(used)[0]
        renumber = np.full(self.num_segments + 1, -1, dtype=np.int64)
        renumber[kept] = np.arange(len(kept))
        parent = renumber[self.parent[kept]]
        children: list[list[int]] = [[] for _ in kept]
        for child, above in enumerate(parent.tolist()):
            if above >= 0:
                children[above].append(child)
        return SearchArrays(
            segment=renumber[self.segment[apps]],
            rate=self.rate[apps],
            level=self.level[apps],
            score=self.score[apps],
            f1=self.f1[apps],
            cost=self.cost[apps],
            valid=self.valid[apps],
            weight=self.weight[kept],
            parent=parent,
            children=children,
            levels=self.levels,
            limit=limit,
            needs=np.vstack((self.needs[np.ix_(kept, kept)], np.zeros((1, len(kept)), dtype=bool))),
        )

    def admissible(self, sigma: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """Options that run within the stem rates `sigma` (-1 segments need nothing)."""
        padded = np.append(sigma, np.inf)  # segment -1 reads the +inf at the end
        return allowed & (self.rate <= padded[self.segment])


def search_arrays(space: SearchSpace) -> SearchArrays:
    costly = [segment.cost_per_frame > 0 for segment in space.segments]
    # Map every original segment to the nearest costly one at or above it (-1: none).
    nearest: list[int] = []
    for index, segment in enumerate(space.segments):
        if costly[index]:
            nearest.append(index)
        else:
            nearest.append(nearest[segment.parent] if segment.parent >= 0 else -1)
    kept_segments = [index for index, flag in enumerate(costly) if flag]
    renumber = {old: new for new, old in enumerate(kept_segments)}
    renumber[-1] = -1
    parent = np.array(
        [
            renumber[nearest[space.segments[old].parent]] if space.segments[old].parent >= 0 else -1
            for old in kept_segments
        ],
        dtype=np.int64,
    )
    weight = np.array([space.segments[old].cost_per_frame for old in kept_segments])
    children: list[list[int]] = [[] for _ in kept_segments]
    for child, above in enumerate(parent.tolist()):
        if above >= 0:
            children[above].append(child)

    apps = space.num_apps
    width = max(len(rates) for rates in space.rate)
    levels = np.array(sorted({0.0} | {float(r) for rates in space.rate for r in rates}))
    segment_of = np.full((apps, width), -1, dtype=np.int64)
    rate = np.full((apps, width), np.inf)
    score = np.full((apps, width), -np.inf)
    f1 = np.full((apps, width), -np.inf)
    cost = np.full((apps, width), np.inf)
    for app in range(apps):
        count = len(space.rate[app])
        segment_of[app, :count] = [renumber[nearest[s]] for s in space.segment_of[app].tolist()]
        rate[app, :count] = space.rate[app]
        score[app, :count] = space.score[app]
        f1[app, :count] = space.f1[app]
        cost[app, :count] = space.cost[app]
    # Options of one app that share a costly segment and a rate cost exactly the same (their
    # cut points differ only by free layers): keep the best of them.
    for app in range(apps):
        best_at: dict[tuple[int, float], int] = {}
        for column in range(len(space.rate[app])):
            key = (int(segment_of[app, column]), float(rate[app, column]))
            if key not in best_at or score[app, column] > score[app, best_at[key]]:
                best_at[key] = column
        for column in set(range(len(space.rate[app]))) - set(best_at.values()):
            segment_of[app, column], rate[app, column] = -1, np.inf
            score[app, column] = f1[app, column] = -np.inf
            cost[app, column] = np.inf
    valid = np.isfinite(rate)
    level = np.zeros((apps, width), dtype=np.int64)
    level[valid] = np.searchsorted(levels, rate[valid])
    needs = np.zeros((len(kept_segments) + 1, len(kept_segments)), dtype=bool)
    for index in range(len(kept_segments)):
        above = index
        while above >= 0:
            needs[index, above] = True
            above = int(parent[above])
    return SearchArrays(
        segment=segment_of,
        rate=rate,
        level=level,
        score=score,
        f1=f1,
        cost=cost,
        valid=valid,
        weight=weight,
        parent=parent,
        children=children,
        levels=levels,
        limit=budget_limit(space.budget),
        needs=needs,
    )


# --------------------------------------------------------------------------------------------
# Minimum cost with a floor on every app's F1: an exact dynamic programme over the stem.
# --------------------------------------------------------------------------------------------


def min_cost_choice(arrays: SearchArrays, allowed: np.ndarray) -> tuple[float, list[int]] | None:
    """The cheapest schedule using only `allowed` options; None if some app has none.

    For the cheapest schedule each app only ever needs, per segment, its slowest allowed
    option there; and an option is useless when a deeper one is no faster (the deeper one
    never costs more). What is left of an app is a chain whose rates rise with depth, so
    under any stem rates the options an app can use are a prefix of its chain: its cost is
    its first option's branch minus the savings of each further option the stem admits. That
    makes the total a sum over segments of terms in the segment's own rate, minimised
    exactly by a dynamic programme over the stem forest with rates falling with depth.
    """
    apps, num_levels = arrays.num_apps, len(arrays.levels)
    segments = arrays.num_segments
    if not allowed.any(axis=1).all():
        return None
    per_level = np.zeros((segments + 1, num_levels))  # last row: segment -1 (needs nothing)
    required = np.zeros(segments + 1, dtype=np.int64)
    base_cost = 0.0
    chains: list[list[tuple[int, int, float]]] = []  # per app: (segment, level, saving) ...
    firsts: list[tuple[int, float]] = []
    for app in range(apps):
        columns = np.nonzero(allowed[app])[0]
        # Slowest allowed option per segment (ties: cheapest).
        slowest: dict[int, int] = {}
        for column in columns[np.lexsort((arrays.cost[app, columns], arrays.rate[app, columns]))]:
            slowest.setdefault(int(arrays.segment[app, column]), int(column))
        deepest = max(slowest)
        path = np.nonzero(arrays.needs[deepest])[0].tolist() if deepest >= 0 else []
        ordered = [slowest[s] for s in [-1, *path] if s in slowest]
        # Drop options that a deeper, no faster option makes useless.
        chain: list[int] = []
        for column in reversed(ordered):
            if not chain or arrays.rate[app, column] < arrays.rate[app, chain[-1]]:
                chain.append(column)
        chain.reverse()
        first = chain[0]
        base_cost += float(arrays.cost[app, first])
        first_segment = int(arrays.segment[app, first])
        required[first_segment] = max(required[first_segment], int(arrays.level[app, first]))
        best_so_far = float(arrays.cost[app, first])
        links = []
        for column in chain[1:]:
            saving = max(0.0, best_so_far - float(arrays.cost[app, column]))
            best_so_far = min(best_so_far, float(arrays.cost[app, column]))
            links.append((int(arrays.segment[app, column]), int(arrays.level[app, column]), saving))
            per_level[int(arrays.segment[app, column]), int(arrays.level[app, column])] -= saving
        chains.append(links)
        firsts.append((first, float(arrays.cost[app, first])))
    per_level = np.cumsum(per_level, axis=1)
    per_level[:segments] += arrays.weight[:, None] * arrays.levels[None, :]
    for segment in range(segments):
        per_level[segment, : required[segment]] = np.inf

    # Tree DP: best[s, l] = cost of s's subtree with s at level l; children at most l.
    best = per_level[:segments].copy()
    for segment in arrays.post_order():
        for child in arrays.children[segment]:
            best[segment] += np.minimum.accumulate(best[child])
    sigma_level = np.zeros(segments, dtype=np.int64)
    total = base_cost + float(per_level[segments, -1])
    for root in np.nonzero(arrays.parent < 0)[0].tolist():
        stack = [(root, num_levels - 1)]
        while stack:
            segment, ceiling = stack.pop()
            chosen = int(np.argmin(best[segment, : ceiling + 1]))
            sigma_level[segment] = chosen
            if segment == root:
                total += float(best[segment, chosen])
            stack.extend((child, chosen) for child in arrays.children[segment])
    if not np.isfinite(total):
        return None
    sigma = arrays.levels[sigma_level]
    usable = arrays.admissible(sigma, allowed)
    cost = np.where(usable, arrays.cost, np.inf)
    choice = [int(np.argmin(cost[app])) for app in range(apps)]
    return arrays.total_cost(choice), choice


# --------------------------------------------------------------------------------------------
# Multiple-choice knapsack for fixed stem rates: exact, by merging Pareto frontiers.
# --------------------------------------------------------------------------------------------


def _lagrangian_grid(center: float, steps: int = 13, spread: float = 4.0) -> np.ndarray:
    return center * np.power(2.0, np.linspace(-spread / 2, spread / 2, steps))


def _knapsack(
    arrays: SearchArrays,
    admissible: np.ndarray,
    capacity: float,
    floor: float,
    multiplier: float,
) -> tuple[float, list[int]] | None:
    """Best total score with one admissible option per app and branch cost <= capacity.

    Returns (score, columns) only if the score beats `floor`; None otherwise.
    `multiplier` centres the grid of Lagrange multipliers used for bounds.
    """
    apps = arrays.num_apps
    rows = np.arange(apps)
    min_costs = np.where(admissible, arrays.cost, np.inf).min(axis=1)
    if not np.isfinite(min_costs).all() or min_costs.sum() > capacity:
        return None
    multipliers = np.concatenate(([0.0], _lagrangian_grid(max(multiplier, 1e-12), 9, 6.0)))
    gains = (
        np.where(admissible, arrays.score, -np.inf)[None]
        - multipliers[:, None, None] * (np.where(admissible, arrays.cost, 0.0)[None])
    )
    best_terms = gains.max(axis=2)  # (multipliers, apps)
    if float(np.min(multipliers * capacity + best_terms.sum(axis=1))) <= floor + PRUNE_EPS:
        return None  # the Lagrangian bound cannot beat the floor

    items = [
        _pareto_items(
            arrays.cost[app, admissible[app]],
            arrays.score[app, admissible[app]],
            np.nonzero(admissible[app])[0],
        )
        for app in range(apps)
    ]
    # First guess: the best Lagrangian choice that fits.
    picks = gains.argmax(axis=2)  # (multipliers, apps)
    pick_costs = arrays.cost[rows[None, :], picks].sum(axis=1)
    pick_scores = arrays.score[rows[None, :], picks].sum(axis=1)
    fitting = np.nonzero(pick_costs <= capacity)[0]
    start = None
    if len(fitting):
        best_pick = int(fitting[np.argmax(pick_scores[fitting])])
        start = (float(pick_scores[best_pick]), [int(column) for column in picks[best_pick]])
    return _merge_frontiers(items, capacity, floor, multipliers, best_terms, start)


def _merge_classes(
    costs: list[np.ndarray],
    scores: list[np.ndarray],
    capacity: float,
    floor: float,
    multiplier: float,
) -> tuple[float, list[int]] | None:
    """Multiple-choice knapsack over plain item lists: one item per class, total cost within
    `capacity`, best total score if it beats `floor`. Returns (score, item index per class)."""
    items = [
        _pareto_items(class_costs, class_scores, np.arange(len(class_costs)))
        for class_costs, class_scores in zip(costs, scores, strict=True)
    ]
    if any(len(class_costs) == 0 for class_costs, _, _ in items):
        return None
    multipliers = np.concatenate(([0.0], _lagrangian_grid(max(multiplier, 1e-12), 9, 6.0)))
    best_terms = np.array(
        [
            [
                float(np.max(class_scores - lam * class_costs))
                for class_costs, class_scores, _ in items
            ]
            for lam in multipliers
        ]
    )
    return _merge_frontiers(items, capacity, floor, multipliers, best_terms, None)


def _pareto_items(
    costs: np.ndarray, scores: np.ndarray, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The items no other item beats on both cost and score, by increasing cost."""
    order = np.lexsort((-scores, costs))
    costs, scores, ids = costs[order], scores[order], ids[order]
    previous_best = np.maximum.accumulate(np.append(-np.inf, scores[:-1]))
    keep = scores > previous_best
    return costs[keep], scores[keep], ids[keep]


def _merge_frontiers(
    items: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    capacity: float,
    floor: float,
    multipliers: np.ndarray,
    best_terms: np.ndarray,
    start: tuple[float, list[int]] | None,
) -> tuple[float, list[int]] | None:
    """Exact multiple-choice knapsack by merging Pareto frontiers, class by class.

    `items` per class: (costs, scores, ids) Pareto-sorted. Partial choices form a frontier of
    (cost, score); one is dropped when even the Lagrangian bound of the remaining classes
    (`best_terms[m, k]` = max over class k's items of score - multipliers[m] * cost) cannot
    lift it above the best complete choice known. Returns (score, ids) above `floor`, or None.
    """
    min_costs = np.array([class_costs[0] for class_costs, _, _ in items])
    min_scores = np.array([class_scores[0] for _, class_scores, _ in items])
    suffix_terms = np.concatenate(
        (np.cumsum(best_terms[:, ::-1], axis=1)[:, ::-1], np.zeros((len(multipliers), 1))), axis=1
    )
    suffix_min_cost = np.append(np.cumsum(min_costs[::-1])[::-1], 0.0)
    suffix_min_score = np.append(np.cumsum(min_scores[::-1])[::-1], 0.0)
    if suffix_min_cost[0] > capacity:
        return None

    def upper_bound(k: int, room: np.ndarray) -> np.ndarray:
        bound = np.min(multipliers[:, None] * room[None, :] + suffix_terms[:, k : k + 1], axis=0)
        return np.where(room >= suffix_min_cost[k] - 1e-12, bound, -np.inf)

    best_value = float(min_scores.sum())  # every class at its cheapest item fits
    best_ids = [int(ids[0]) for _, _, ids in items]
    if start is not None and start[0] > best_value:
        best_value, best_ids = start
    bar = max(floor, best_value)

    frontier_cost = np.zeros(1)
    frontier_score = np.zeros(1)
    history: list[tuple[np.ndarray, np.ndarray]] = []  # per class: (parent index, item index)
    for k, (costs, scores, _) in enumerate(items):
        cand_cost = (frontier_cost[:, None] + costs[None, :]).ravel()
        cand_score = (frontier_score[:, None] + scores[None, :]).ravel()
        room = capacity - cand_cost
        keep = room >= suffix_min_cost[k + 1] - 1e-12
        keep &= cand_score + upper_bound(k + 1, room) > bar + PRUNE_EPS
        indices = np.nonzero(keep)[0]
        if len(indices) == 0:
            break
        cand_cost, cand_score = cand_cost[indices], cand_score[indices]
        # A partial choice completed with every later class's cheapest item fits: use it.
        completed = cand_score + suffix_min_score[k + 1]
        top = int(np.argmax(completed))
        if completed[top] > bar + PRUNE_EPS:
            bar = best_value = float(completed[top])
            tail = [int(ids[0]) for _, _, ids in items[k + 1 :]]
            best_ids = _backtrack(history, items, int(indices[top]), len(costs), k) + tail
        order = np.lexsort((-cand_score, cand_cost))
        sorted_score = cand_score[order]
        previous_best = np.maximum.accumulate(np.append(-np.inf, sorted_score[:-1]))
        pareto = order[sorted_score > previous_best]
        chosen = indices[pareto]
        history.append((chosen // len(costs), chosen % len(costs)))
        frontier_cost, frontier_score = cand_cost[pareto], cand_score[pareto]

    if best_value <= floor + PRUNE_EPS:
        return None
    return best_value, best_ids


def _backtrack(
    history: list[tuple[np.ndarray, np.ndarray]],
    items: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    flat_index: int,
    width: int,
    stage: int,
) -> list[int]:
    """Columns chosen for apps 0..stage by the candidate `flat_index` of merge `stage`."""
    parent, item = flat_index // width, flat_index % width
    picks = [int(items[stage][2][item])]
    for k in range(stage - 1, -1, -1):
        parents, chosen_items = history[k]
        picks.append(int(items[k][2][chosen_items[parent]]))
        parent = int(parents[parent])
    return picks[::-1]


# --------------------------------------------------------------------------------------------
# Branch and bound over the stem rates.
# --------------------------------------------------------------------------------------------


class _StemSearch:
    """Depth-first branch and bound over the rate of every costly stem segment.

    Segments are fixed deepest first (children before parents), so a fixed segment's rate is
    a lower bound for every segment above it: the bound of a node already pays those
    segments at that rate. Bounds are Lagrangian relaxations of the budget in which options
    on fixed segments are limited to the fixed rate and options on unfixed segments are not
    (see `_expand`, `_stem_bound` and `_no_step_can_win` for what keeps them tight).

    The search has three goals:
    - "best": the highest total score within `limit`; leaves are multiple-choice knapsacks
      solved exactly by `_knapsack`;
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
        return _lagrangian_grid(multiplier, 9, 4.0)

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
            found = _frontier_window(
                arrays, admissible, self.limit - stem, lam, self.threshold + lam * stem
            )
            if found is not None:
                costs, scores, picks = found
                self.points.append((costs + stem, scores, picks))
        else:
            result = _knapsack(arrays, admissible, self.limit - stem, self.best_value, multiplier)
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


def _frontier_window(
    arrays: SearchArrays,
    admissible: np.ndarray,
    capacity: float,
    multiplier: float,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Every Pareto-optimal (branch cost, score) choice within `capacity` whose reduced value
    `score - multiplier * cost` reaches `threshold`: (costs, scores, columns per app)."""
    apps = arrays.num_apps
    costs_all = np.where(admissible, arrays.cost, np.inf)
    min_costs = costs_all.min(axis=1)
    if not np.isfinite(min_costs).all() or min_costs.sum() > capacity:
        return None
    reduced = np.where(
        admissible, arrays.score - multiplier * np.where(admissible, arrays.cost, 0.0), -np.inf
    )
    best_reduced = reduced.max(axis=1)
    suffix_reduced = np.append(np.cumsum(best_reduced[::-1])[::-1], 0.0)
    suffix_min_cost = np.append(np.cumsum(min_costs[::-1])[::-1], 0.0)
    if suffix_reduced[0] < threshold:
        return None
    frontier_cost, frontier_score = np.zeros(1), np.zeros(1)
    frontier_picks = np.zeros((1, 0), dtype=np.int64)
    for app in range(apps):
        columns = np.nonzero(admissible[app])[0]
        cand_cost = (frontier_cost[:, None] + arrays.cost[app, columns][None, :]).ravel()
        cand_score = (frontier_score[:, None] + arrays.score[app, columns][None, :]).ravel()
        keep = cand_cost + suffix_min_cost[app + 1] <= capacity
        keep &= cand_score - multiplier * cand_cost + suffix_reduced[app + 1] >= threshold
        indices = np.nonzero(keep)[0]
        if len(indices) == 0:
            return None
        cand_cost, cand_score = cand_cost[indices], cand_score[indices]
        order = np.lexsort((-cand_score, cand_cost))
        sorted_score = cand_score[order]
        previous_best = np.maximum.accumulate(np.append(-np.inf, sorted_score[:-1]))
        pareto = order[sorted_score > previous_best]
        chosen = indices[pareto]
        frontier_picks = np.column_stack(
            (frontier_picks[chosen // len(columns)], columns[chosen % len(columns)])
        )
        frontier_cost, frontier_score = cand_cost[pareto], cand_score[pareto]
    return frontier_cost, frontier_score, frontier_picks


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
        _, scores, picks = _every_assignment(arrays, allowed, arrays.limit)
        best = int(np.argmax(scores))  # never empty: the incumbent fits
        return [int(column) for column in picks[best]], {"nodes": 0.0, "leaves": 0.0}
    parts = _independent_parts(arrays, allowed)
    if len(parts) > 1:
        return _best_mean_by_parts(arrays, allowed, start, parts, enumerate_limit)
    search = _StemSearch(arrays, allowed, start)
    search.run()
    assert search.best_choice is not None
    return search.best_choice, {"nodes": float(search.nodes), "leaves": float(search.leaves)}


def _independent_parts(arrays: SearchArrays, allowed: np.ndarray) -> list[np.ndarray]:
    """Groups of apps that share no stem segment: one per tree, one per app needing none."""
    roots = np.append(arrays.tree_root(), -1)
    app_tree = np.max(np.where(allowed, roots[arrays.segment], -1), axis=1)
    parts = [np.nonzero(app_tree == tree)[0] for tree in np.unique(app_tree[app_tree >= 0])]
    parts += [np.array([app]) for app in np.nonzero(app_tree < 0)[0]]
    return parts


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
            listed[index] = _every_assignment(sub, sub_ok, rooms[index])

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
        costs, scores, keep = _pareto_items(costs, scores, np.arange(len(costs)))
        classes.append((costs, scores, picks[keep]))

    merged = _merge_classes(
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


def _every_assignment(
    arrays: SearchArrays, allowed: np.ndarray, room: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pareto-optimal (cost, score, columns) over every assignment of a small part."""
    columns = [np.nonzero(allowed[app])[0] for app in range(arrays.num_apps)]
    grids = np.meshgrid(*columns, indexing="ij")
    picks = np.stack([grid.ravel() for grid in grids], axis=1)  # (assignments, apps)
    cost = np.zeros(len(picks))
    score = np.zeros(len(picks))
    stem = np.zeros((len(picks), arrays.num_segments))
    for app in range(arrays.num_apps):
        chosen = picks[:, app]
        cost += arrays.cost[app, chosen]
        score += arrays.score[app, chosen]
        stem = np.maximum(
            stem, arrays.rate[app, chosen][:, None] * arrays.needs[arrays.segment[app, chosen]]
        )
    cost += stem @ arrays.weight
    fits = cost <= room
    cost, score, picks = cost[fits], score[fits], picks[fits]
    cost, score, keep = _pareto_items(cost, score, np.arange(len(cost)))
    return cost, score, picks[keep]


def best_min_f1_floor(arrays: SearchArrays, allowed: np.ndarray) -> float | None:
    """The highest F1 that every app can reach at once within the budget (None: nothing fits).

    The answer is one of the options' F1 values; a binary search over them asks the exact
    minimum-cost programme whether all apps at or above a floor fit.
    """
    allowed = allowed & arrays.valid
    ceiling = float(np.min(np.max(np.where(allowed, arrays.f1, -np.inf), axis=1)))
    values = np.unique(arrays.f1[allowed])
    values = values[values <= ceiling]

    def fits_floor(floor: float) -> bool:
        result = min_cost_choice(arrays, allowed & (arrays.f1 >= floor))
        return result is not None and result[0] <= arrays.limit

    if len(values) == 0 or not fits_floor(float(values[0])):
        return None
    low, high = 0, len(values) - 1  # values[low] fits; find the last that does
    while low < high:
        middle = (low + high + 1) // 2
        if fits_floor(float(values[middle])):
            low = middle
        else:
            high = middle - 1
    return float(values[low])


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


def solve_milp(
    space: SearchSpace, objective: Objective, time_limit_s: float = 600.0
) -> Solution | None:
    """Solve with scipy's MILP (HiGHS). Returns None when nothing fits the budget.

    Variables: x[a, o] = app a runs option o; y[s, l] = segment s runs at >= its l-th level.
    Each app's demand for a segment is linked to y level by level, which keeps the relaxation
    tight. `min_f1` is solved in two stages: the best worst F1, then the best mean with every
    app at least that good.
    """
    started = time.perf_counter()
    first = _milp_stage(space, objective, minimum_f1=None, time_limit_s=time_limit_s)
    if first is None:
        return None
    if objective == "min_f1":
        floor = first.min_f1
        second = _milp_stage(space, "mean_f1", minimum_f1=floor, time_limit_s=time_limit_s)
        if second is not None and second.min_f1 >= floor - 1e-12:
            first = second
    first.stats["solve_time_s"] = time.perf_counter() - started
    return first


def _milp_stage(
    space: SearchSpace, objective: Objective, minimum_f1: float | None, time_limit_s: float
) -> Solution | None:
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
    ancestors = [_ancestors(space, segment) for segment in range(len(space.segments))]
    for app, (segments, rates) in enumerate(zip(space.segment_of, space.rate, strict=True)):
        demand: dict[int, list[tuple[int, float]]] = {}
        for o, (segment, rate) in enumerate(zip(segments.tolist(), rates.tolist(), strict=True)):
            for above in ancestors[segment]:
                for position in range(1, len(levels[above])):
                    if levels[above][position] <= rate:
                        key = level_offset[above] + position - 1
                        demand.setdefault(key, []).append((x_offset[app] + o, 1.0))
        for key, entries in demand.items():
            add_row([*entries, (key, -1.0)], -np.inf, 0.0)
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
    result = milp(
        objective_vector,
        constraints=LinearConstraint(matrix, np.array(lower), np.array(upper)),
        integrality=integrality,
        bounds=Bounds(bounds_low, bounds_high),
        options={"time_limit": time_limit_s, "mip_rel_gap": 0.0},
    )
    if result.x is None:
        return None
    choice = [
        int(np.argmax(result.x[x_offset[app] : x_offset[app] + len(rates)]))
        for app, rates in enumerate(space.rate)
    ]
    return make_solution(space, choice)


def _ancestors(space: SearchSpace, segment: int) -> list[int]:
    """The segment itself and every segment above it."""
    chain = []
    while segment >= 0:
        chain.append(segment)
        segment = space.segments[segment].parent
    return chain
