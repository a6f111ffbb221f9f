"""The search space as the solvers see it, and what every solver shares (DESIGN §3-4).

`search_arrays` turns the option tables into padded matrices over (app, kept option) with the
stem forest reduced to its costly segments. Around them: the `Solution` a solver returns (with
the proven bound on its objective), the exact cheapest schedule under a floor on every app's
F1 (`min_cost_choice`, which also proves infeasibility), the best such floor for `min_f1`,
and the split of the apps into parts that share nothing but the budget.

Costs fit when at most `budget * (1 + 1e-9)` (cost_model.budget_limit), in every solver.

Pure logic: numpy only, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

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
    # A proven upper bound on `value(objective)` for the objective solved (None: unknown);
    # equal to the value when the solution is proven optimal.
    upper_bound: float | None = None

    def value(self, objective: Objective) -> float:
        return self.mean_f1 if objective == "mean_f1" else self.min_f1

    def bound(self) -> float:
        """The proven upper bound, infinite when none is known."""
        return math.inf if self.upper_bound is None else self.upper_bound

    def set_bound(self, bound: float, objective: Objective) -> None:
        """Record a proven bound: never below the value, and the value itself when within
        OPTIMALITY_TOLERANCE of it (proven optimal)."""
        value = self.value(objective)
        self.upper_bound = value if bound - value <= OPTIMALITY_TOLERANCE else bound

    def proven(self, objective: Objective) -> bool:
        """Whether the bound proves this solution optimal."""
        return self.bound() - self.value(objective) <= OPTIMALITY_TOLERANCE


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


PRUNE_EPS = 1e-12
"""A branch is dropped when its bound does not beat the incumbent by more than this."""

OPTIMALITY_TOLERANCE = 1e-9
"""A schedule whose proven bound is within this of its value counts as optimal."""

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


def independent_parts(arrays: SearchArrays, allowed: np.ndarray) -> list[np.ndarray]:
    """Groups of apps that share no stem segment: one per tree, one per app needing none."""
    roots = np.append(arrays.tree_root(), -1)
    app_tree = np.max(np.where(allowed, roots[arrays.segment], -1), axis=1)
    parts = [np.nonzero(app_tree == tree)[0] for tree in np.unique(app_tree[app_tree >= 0])]
    parts += [np.array([app]) for app in np.nonzero(app_tree < 0)[0]]
    return parts
