"""A fast greedy schedule, for problems beyond the exact search's reach and as its first guess.

Start from the cheapest schedule (exact, see `arrays.min_cost_choice`), then keep applying the
upgrade (one app switching to a better option) with the highest F1 gain per unit of extra
cost, the stem cost change included, until no upgrade fits the budget. For `min_f1` the
worst app is raised first, as cheaply as possible, until it cannot be; the rest of the budget
then goes to the mean without lowering the floor.

Apps on different stem trees (cameras) do not change each other's upgrade costs, so after a
switch only the switched app's tree is priced again: hundreds of apps stay fast. The greedy
stops at its deadline with the (always feasible) schedule it has reached.

Pure logic: numpy only, no I/O.
"""

from __future__ import annotations

import time

import numpy as np

from scheduler.arrays import (
    SearchArrays,
    Solution,
    independent_parts,
    make_solution,
    min_cost_choice,
    search_arrays,
)
from scheduler.deadline import DEFAULT_TIME_LIMIT_S, Deadline
from scheduler.options import SearchSpace
from scheduler.problem import Objective


class UpgradeCosts:
    """Cost of switching any one app to any one of its options, given everyone else's."""

    def __init__(self, arrays: SearchArrays) -> None:
        self.arrays = arrays
        self.parts = independent_parts(arrays, arrays.valid)
        self.part_of = np.zeros(arrays.num_apps, dtype=np.int64)
        self.segments: list[np.ndarray] = []  # per part: the costly segments its apps use
        self.weighted_needs: list[np.ndarray] = []  # per part: [s, t] weight of s if t needs s
        for index, apps in enumerate(self.parts):
            self.part_of[apps] = index
            used = arrays.needs[arrays.segment[apps][arrays.valid[apps]]].any(axis=0)
            segments = np.nonzero(used)[0]
            self.segments.append(segments)
            needs = arrays.needs[np.ix_(segments, segments)]
            self.weighted_needs.append((needs * arrays.weight[segments][None, :]).T)
        self.extra = np.zeros(arrays.cost.shape)

    def extra_costs(self, choice: list[int]) -> np.ndarray:
        """(apps, width): change of the total cost if app a alone switched to option o."""
        for part in range(len(self.parts)):
            self._price_part(part, choice)
        return self.extra.copy()

    def switched(self, choice: list[int], app: int) -> np.ndarray:
        """The same after `app` switched (only its own part is priced again); not copied."""
        self._price_part(int(self.part_of[app]), choice)
        return self.extra

    def _price_part(self, part: int, choice: list[int]) -> None:
        arrays, apps, segments = self.arrays, self.parts[part], self.segments[part]
        chosen = np.asarray(choice)[apps]
        branch_change = arrays.cost[apps] - arrays.cost[apps, chosen][:, None]
        if len(segments) == 0:
            self.extra[apps] = branch_change
            return
        needs = arrays.needs[:, segments]  # rows: segment of an option (-1: the last, none)
        demand = arrays.rate[apps, chosen][:, None] * needs[arrays.segment[apps, chosen]]
        # The stem each app would leave behind: the highest demand among the other apps.
        ordered = np.sort(np.vstack((demand, np.zeros((1, len(segments))))), axis=0)
        top, second = ordered[-1], ordered[-2]
        is_top = demand >= top[None, :]
        unique_top = is_top & (is_top.sum(axis=0) == 1)[None, :]
        without = np.where(unique_top, second[None, :], top[None, :])  # (apps, segments)
        # Extra stem an option on segment t at level l adds on top of `without`:
        # sum over segments s it needs of weight_s * (rate_l - without_s)+.
        shortfall = np.maximum(arrays.levels[None, :, None] - without[:, None, :], 0.0)
        extra_stem = shortfall @ self.weighted_needs[part]  # (apps, levels, local segment t)
        extra_stem = np.concatenate((extra_stem, np.zeros((*extra_stem.shape[:2], 1))), axis=2)
        local = np.full(arrays.num_segments + 1, len(segments))  # -1 and others: no stem
        local[segments] = np.arange(len(segments))
        weight = arrays.weight[segments]
        rows = np.arange(len(apps))[:, None]
        stem_after = (without @ weight)[:, None] + extra_stem[
            rows, arrays.level[apps], local[arrays.segment[apps]]
        ]
        stem_now = float(weight @ top)
        self.extra[apps] = stem_after - stem_now + branch_change


def greedy_choice(
    arrays: SearchArrays,
    objective: Objective,
    allowed: np.ndarray | None = None,
    deadline: Deadline | None = None,
    start: list[int] | None = None,
) -> list[int] | None:
    """A feasible choice built greedily, or None when even the cheapest does not fit.

    `start`, a feasible choice, replaces the cheapest schedule as the starting point.
    """
    deadline = deadline or Deadline.never()
    allowed = arrays.valid.copy() if allowed is None else allowed & arrays.valid
    if start is None:
        cheapest = min_cost_choice(arrays, allowed)
        if cheapest is None or cheapest[0] > arrays.limit:
            return None
        start = cheapest[1]
    choice = list(start)
    upgrades = UpgradeCosts(arrays)
    if objective == "min_f1":
        choice = _raise_floor(arrays, upgrades, choice, allowed, deadline)
        floor = min(float(arrays.f1[app, position]) for app, position in enumerate(choice))
        allowed = allowed & (arrays.f1 >= floor)
    return _raise_mean(arrays, upgrades, choice, allowed, deadline)


def _raise_mean(
    arrays: SearchArrays,
    upgrades: UpgradeCosts,
    choice: list[int],
    allowed: np.ndarray,
    deadline: Deadline,
) -> list[int]:
    rows = np.arange(arrays.num_apps)
    cost = arrays.total_cost(choice)
    extra = upgrades.extra_costs(choice)
    gain = np.where(allowed, arrays.score - arrays.score[rows, choice][:, None], -np.inf)
    while not deadline.expired():
        fits = allowed & (gain > 0) & (cost + extra <= arrays.limit)
        if not fits.any():
            return choice
        free = fits & (extra <= 0)
        if free.any():  # better and no dearer: take the biggest gain
            flat = int(np.argmax(np.where(free, gain, -np.inf)))
        else:
            ratio = np.full(gain.shape, -np.inf)
            np.divide(gain, extra, out=ratio, where=fits)
            flat = int(np.argmax(ratio))
        app, column = divmod(flat, gain.shape[1])
        choice[app] = column
        cost += float(extra[app, column])
        extra = upgrades.switched(choice, app)
        gain[app] = np.where(allowed[app], arrays.score[app] - arrays.score[app, column], -np.inf)
    return choice


def _raise_floor(
    arrays: SearchArrays,
    upgrades: UpgradeCosts,
    choice: list[int],
    allowed: np.ndarray,
    deadline: Deadline,
) -> list[int]:
    rows = np.arange(arrays.num_apps)
    cost = arrays.total_cost(choice)
    extra = upgrades.extra_costs(choice)
    while not deadline.expired():
        f1_now = arrays.f1[rows, choice]
        worst = int(np.argmin(f1_now))
        better = allowed[worst] & (arrays.f1[worst] > f1_now[worst])
        fits = better & (cost + extra[worst] <= arrays.limit)
        if not fits.any():
            return choice
        column = int(np.argmin(np.where(fits, extra[worst], np.inf)))
        choice[worst] = column
        cost += float(extra[worst, column])
        extra = upgrades.switched(choice, worst)
    return choice


def solve_greedy(
    space: SearchSpace, objective: Objective, time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> Solution | None:
    """Greedy schedule for `objective` (where it got to in `time_limit_s`); None when nothing
    fits the budget. No bound: `solvers.solve(..., "greedy")` adds one."""
    started = time.perf_counter()
    deadline = Deadline.after(time_limit_s)
    choice = greedy_choice(search_arrays(space), objective, deadline=deadline)
    if choice is None:
        return None
    return make_solution(space, choice, solve_time_s=time.perf_counter() - started)
