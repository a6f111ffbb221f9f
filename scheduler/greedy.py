"""A fast greedy schedule, for problems beyond the exact search's reach and as its first guess.

Start from the cheapest schedule (exact, see `search.min_cost_choice`), then keep applying the
upgrade (one app switching to a better option) with the highest F1 gain per unit of extra
cost, the stem cost change included, until no upgrade fits the budget. For `min_f1` the
worst app is raised first, as cheaply as possible, until it cannot be; the rest of the budget
then goes to the mean without lowering the floor.

Pure logic: numpy only, no I/O.
"""

from __future__ import annotations

import time

import numpy as np

from scheduler.arrays import SearchArrays, Solution, make_solution, min_cost_choice, search_arrays
from scheduler.options import SearchSpace
from scheduler.problem import Objective


class UpgradeCosts:
    """Cost of switching any one app to any one of its options, given everyone else's."""

    def __init__(self, arrays: SearchArrays) -> None:
        self.arrays = arrays
        # weighted_needs[s, t] = cost per frame of segment s if an option on t needs it.
        self.weighted_needs = (arrays.needs[:-1] * arrays.weight[None, :]).T
        self.rows = np.arange(arrays.num_apps)

    def extra_costs(self, choice: list[int]) -> np.ndarray:
        """(apps, width): change of the total cost if app a alone switched to option o."""
        arrays, rows = self.arrays, self.rows
        demand = (
            arrays.rate[rows, choice][:, None] * arrays.needs[arrays.segment[rows, choice]]
        )  # (apps, segments): what each app's current option needs
        # The stem each app would leave behind: the highest demand among the other apps.
        ordered = np.sort(np.vstack((demand, np.zeros((1, arrays.num_segments)))), axis=0)
        top, second = ordered[-1], ordered[-2]
        is_top = demand >= top[None, :]
        unique_top = is_top & (is_top.sum(axis=0) == 1)[None, :]
        without = np.where(unique_top, second[None, :], top[None, :])  # (apps, segments)
        # Extra stem an option on segment t at level l adds on top of `without`:
        # sum over segments s it needs of weight_s * (rate_l - without_s)+.
        shortfall = np.maximum(arrays.levels[None, :, None] - without[:, None, :], 0.0)
        extra_stem = shortfall @ self.weighted_needs  # (apps, levels, segments t)
        extra_stem = np.concatenate((extra_stem, np.zeros((*extra_stem.shape[:2], 1))), axis=2)
        stem_after = (without @ arrays.weight)[:, None] + extra_stem[
            rows[:, None], arrays.level, arrays.segment
        ]
        stem_now = float(arrays.weight @ top)
        branch_change = arrays.cost - arrays.cost[rows, choice][:, None]
        return stem_after - stem_now + branch_change


def greedy_choice(
    arrays: SearchArrays, objective: Objective, allowed: np.ndarray | None = None
) -> list[int] | None:
    """A feasible choice built greedily, or None when even the cheapest does not fit."""
    allowed = arrays.valid.copy() if allowed is None else allowed & arrays.valid
    start = min_cost_choice(arrays, allowed)
    if start is None or start[0] > arrays.limit:
        return None
    choice = start[1]
    upgrades = UpgradeCosts(arrays)
    if objective == "min_f1":
        choice = _raise_floor(arrays, upgrades, choice, allowed)
        floor = min(float(arrays.f1[app, position]) for app, position in enumerate(choice))
        allowed = allowed & (arrays.f1 >= floor)
    return _raise_mean(arrays, upgrades, choice, allowed)


def _raise_mean(
    arrays: SearchArrays, upgrades: UpgradeCosts, choice: list[int], allowed: np.ndarray
) -> list[int]:
    rows = np.arange(arrays.num_apps)
    cost = arrays.total_cost(choice)
    while True:
        extra = upgrades.extra_costs(choice)
        gain = np.where(allowed, arrays.score - arrays.score[rows, choice][:, None], -np.inf)
        fits = allowed & (gain > 0) & (cost + extra <= arrays.limit)
        if not fits.any():
            return choice
        free = fits & (extra <= 0)
        if free.any():  # better and no dearer: take the biggest gain
            app, column = np.unravel_index(np.argmax(np.where(free, gain, -np.inf)), gain.shape)
        else:
            ratio = np.full(gain.shape, -np.inf)
            np.divide(gain, extra, out=ratio, where=fits)
            app, column = np.unravel_index(np.argmax(ratio), ratio.shape)
        choice[int(app)] = int(column)
        cost += float(extra[app, column])


def _raise_floor(
    arrays: SearchArrays, upgrades: UpgradeCosts, choice: list[int], allowed: np.ndarray
) -> list[int]:
    rows = np.arange(arrays.num_apps)
    cost = arrays.total_cost(choice)
    while True:
        f1_now = arrays.f1[rows, choice]
        worst = int(np.argmin(f1_now))
        extra = upgrades.extra_costs(choice)[worst]
        better = allowed[worst] & (arrays.f1[worst] > f1_now[worst])
        fits = better & (cost + extra <= arrays.limit)
        if not fits.any():
            return choice
        column = int(np.argmin(np.where(fits, extra, np.inf)))
        choice[worst] = column
        cost += float(extra[column])


def solve_greedy(space: SearchSpace, objective: Objective) -> Solution | None:
    """Greedy schedule for `objective`; None when nothing fits the budget."""
    started = time.perf_counter()
    choice = greedy_choice(search_arrays(space), objective)
    if choice is None:
        return None
    return make_solution(space, choice, solve_time_s=time.perf_counter() - started)
