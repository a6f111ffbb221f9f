"""Multiple-choice knapsacks: one item per class, total cost within a capacity, best score.

The search's leaves (fixed stem rates, each app picks one option it may use) and the join of
independent parts (each part picks one of its sub-schedules) are both this problem. It is
solved exactly by merging Pareto frontiers of (cost, score) class by class, dropping partial
choices that even a Lagrangian bound on the remaining classes cannot lift above the best
complete choice known.

Pure logic: numpy only, no I/O.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from scheduler.arrays import PRUNE_EPS, SearchArrays
from scheduler.deadline import Deadline


def lagrangian_grid(center: float, steps: int = 9, spread: float = 6.0) -> np.ndarray:
    """Zero and `steps` prices spread over `2 ** spread` around `center` (for bounds)."""
    around = max(center, 1e-12) * np.power(2.0, np.linspace(-spread / 2, spread / 2, steps))
    return np.concatenate(([0.0], around))


def best_knapsack(
    arrays: SearchArrays,
    admissible: np.ndarray,
    capacity: float,
    floor: float,
    multipliers: np.ndarray,
    deadline: Deadline | None = None,
) -> tuple[float, list[int]] | None:
    """Best total score with one admissible option per app and branch cost <= capacity.

    Returns (score, columns) only if the score beats `floor`; None otherwise. `multipliers`
    are the prices of the budget its Lagrangian bounds try (`lagrangian_grid`). Past the
    deadline it returns the best it has found (no longer proven best).
    """
    apps = arrays.num_apps
    rows = np.arange(apps)
    min_costs = np.where(admissible, arrays.cost, np.inf).min(axis=1)
    if not np.isfinite(min_costs).all() or min_costs.sum() > capacity:
        return None
    gains = (
        np.where(admissible, arrays.score, -np.inf)[None]
        - multipliers[:, None, None] * (np.where(admissible, arrays.cost, 0.0)[None])
    )
    best_terms = gains.max(axis=2)  # (multipliers, apps)
    if float(np.min(multipliers * capacity + best_terms.sum(axis=1))) <= floor + PRUNE_EPS:
        return None  # the Lagrangian bound cannot beat the floor

    items = [
        pareto_items(
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
    return merge_frontiers(items, capacity, floor, multipliers, best_terms, start, deadline)


def merge_classes(
    costs: list[np.ndarray],
    scores: list[np.ndarray],
    capacity: float,
    floor: float,
    multipliers: np.ndarray,
    deadline: Deadline | None = None,
    start: tuple[float, list[int]] | None = None,
) -> tuple[float, list[int]] | None:
    """Multiple-choice knapsack over plain item lists: one item per class, total cost within
    `capacity`, best total score if it beats `floor`. Returns (score, item index per class).
    `start`, a choice known to fit (score, item index per class), only helps the pruning."""
    items = [
        pareto_items(class_costs, class_scores, np.arange(len(class_costs)))
        for class_costs, class_scores in zip(costs, scores, strict=True)
    ]
    if any(len(class_costs) == 0 for class_costs, _, _ in items):
        return None
    best_terms = np.array(
        [
            [
                float(np.max(class_scores - lam * class_costs))
                for class_costs, class_scores, _ in items
            ]
            for lam in multipliers
        ]
    )
    return merge_frontiers(items, capacity, floor, multipliers, best_terms, start, deadline)


def pareto_items(
    costs: np.ndarray, scores: np.ndarray, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The items no other item beats on both cost and score, by increasing cost."""
    order = np.lexsort((-scores, costs))
    costs, scores, ids = costs[order], scores[order], ids[order]
    previous_best = np.maximum.accumulate(np.append(-np.inf, scores[:-1]))
    keep = scores > previous_best
    return costs[keep], scores[keep], ids[keep]


def merge_frontiers(
    items: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    capacity: float,
    floor: float,
    multipliers: np.ndarray,
    best_terms: np.ndarray,
    start: tuple[float, list[int]] | None,
    deadline: Deadline | None = None,
) -> tuple[float, list[int]] | None:
    """Exact multiple-choice knapsack by merging Pareto frontiers, class by class.

    `items` per class: (costs, scores, ids) Pareto-sorted. Partial choices form a frontier of
    (cost, score); one is dropped when even the Lagrangian bound of the remaining classes
    (`best_terms[m, k]` = max over class k's items of score - multipliers[m] * cost) cannot
    lift it above the best complete choice known. Returns (score, ids) above `floor`, or None.
    Past the deadline the merge stops with the best complete choice it has seen.
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
        if deadline is not None and deadline.expired():
            break
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


def every_assignment(
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
    cost, score, keep = pareto_items(cost, score, np.arange(len(cost)))
    return cost, score, picks[keep]


def best_by_listing(
    arrays: SearchArrays, allowed: np.ndarray, floor: float, deadline: Deadline
) -> tuple[tuple[float, list[int]] | None, bool]:
    """The best fitting assignment worth more than `floor`, by listing them all: every pair
    of options of the two apps with most options is scored at once, for each combination of
    the others' options in turn (skipped when even the pair's best score cannot beat the
    best so far). For a few apps with many near-tied options this beats any bound.

    Returns (score, columns) or None, and whether the listing finished before the deadline.
    """
    columns = [np.nonzero(allowed[app])[0] for app in range(arrays.num_apps)]
    assert arrays.num_apps >= 2, "listing pairs needs two apps"
    pair = sorted(range(arrays.num_apps), key=lambda app: len(columns[app]))[-2:]
    others = [app for app in range(arrays.num_apps) if app not in pair]
    grid = np.meshgrid(columns[pair[0]], columns[pair[-1]], indexing="ij")
    first, second = grid[0].ravel(), grid[1].ravel()
    demand = np.maximum(
        arrays.rate[pair[0], first][:, None] * arrays.needs[arrays.segment[pair[0], first]],
        arrays.rate[pair[-1], second][:, None] * arrays.needs[arrays.segment[pair[-1], second]],
    )
    pair_cost = arrays.cost[pair[0], first] + arrays.cost[pair[-1], second]
    pair_score = arrays.score[pair[0], first] + arrays.score[pair[-1], second]
    # The pair's best score within a branch-cost allowance: a bound that needs no stem.
    by_cost = np.argsort(pair_cost, kind="stable")
    sorted_cost = pair_cost[by_cost]
    best_within = np.maximum.accumulate(pair_score[by_cost])
    scores = {app: arrays.score[app].tolist() for app in others}
    costs = {app: arrays.cost[app].tolist() for app in others}
    needs = {
        app: np.where(arrays.valid[app], arrays.rate[app], 0.0)[:, None]
        * arrays.needs[arrays.segment[app]]
        for app in others
    }
    best: tuple[float, list[int]] | None = None
    bar = floor
    for combination in itertools.product(*(columns[app] for app in others)):
        if deadline.expired():
            return best, False
        score = sum(scores[app][column] for app, column in zip(others, combination, strict=True))
        if score + best_within[-1] <= bar + PRUNE_EPS:
            continue  # not even the pair's best could lift it
        own_cost = sum(costs[app][column] for app, column in zip(others, combination, strict=True))
        own_stem = np.max(
            [needs[app][column] for app, column in zip(others, combination, strict=True)]
            + [np.zeros(arrays.num_segments)],
            axis=0,
        )
        allowance = arrays.limit - own_cost - float(own_stem @ arrays.weight)
        within = int(np.searchsorted(sorted_cost, allowance, side="right"))
        if within == 0 or score + best_within[within - 1] <= bar + PRUNE_EPS:
            continue  # nor the pair's best within what the budget leaves
        stem = np.maximum(demand, own_stem[None, :])
        cost = pair_cost + own_cost
        total = score + pair_score
        fits = cost + stem @ arrays.weight <= arrays.limit
        if not fits.any():
            continue
        top = int(np.argmax(np.where(fits, total, -np.inf)))
        if total[top] > bar + PRUNE_EPS:
            bar = float(total[top])
            choice = [0] * arrays.num_apps
            for app, column in zip(others, combination, strict=True):
                choice[app] = int(column)
            choice[pair[0]], choice[pair[-1]] = int(first[top]), int(second[top])
            best = (bar, choice)
    return best, True


def frontier_points(
    arrays: SearchArrays,
    admissible: np.ndarray,
    stem: float,
    room: float,
    lams: np.ndarray,
    offsets: np.ndarray,
    floor: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every Pareto-optimal (cost, score) choice of admissible options that could beat `floor`.

    Costs include `stem` and must stay within `room`. A choice of cost c and score s could
    beat the floor only if `offsets[m] + s - lams[m] * c > floor` for every price m (a
    Lagrangian bound on the whole problem); partial choices are dropped as soon as even their
    best completion fails that. Returns (costs, scores, columns per app), possibly empty.
    """
    apps = arrays.num_apps
    empty = (np.zeros(0), np.zeros(0), np.zeros((0, apps), dtype=np.int64))
    if not admissible.any(axis=1).all():
        return empty
    cost = np.where(admissible, arrays.cost, 0.0)
    reduced = np.where(
        admissible[None], arrays.score[None] - lams[:, None, None] * cost[None], -np.inf
    )
    best_reduced = reduced.max(axis=2)  # (prices, apps)
    # An option is worth listing only if, with every other app at its best, the bound still
    # beats the floor: its shortfall from its app's best must be below the slack at every price.
    slack = offsets - lams * stem + best_reduced.sum(axis=1) - floor - PRUNE_EPS
    worth = admissible & np.all(best_reduced[:, :, None] - reduced < slack[:, None, None], axis=0)
    min_costs = np.where(worth, arrays.cost, np.inf).min(axis=1)
    if not np.isfinite(min_costs).all() or stem + min_costs.sum() > room:
        return empty
    columns_of = [np.nonzero(worth[app])[0] for app in range(apps)]
    if math.prod(len(columns) for columns in columns_of) <= SMALL_PRODUCT:
        return _every_point(arrays, columns_of, stem, room, lams, offsets, floor)
    admissible = worth
    reduced = np.where(
        admissible[None],
        arrays.score[None] - lams[:, None, None] * np.where(admissible, arrays.cost, 0.0)[None],
        -np.inf,
    )  # (prices, apps, width)
    best_reduced = reduced.max(axis=2)
    suffix_reduced = np.concatenate(
        (np.cumsum(best_reduced[:, ::-1], axis=1)[:, ::-1], np.zeros((len(lams), 1))), axis=1
    )
    suffix_min_cost = np.append(np.cumsum(min_costs[::-1])[::-1], 0.0)
    frontier_cost, frontier_score = np.full(1, stem), np.zeros(1)
    frontier_picks = np.zeros((1, 0), dtype=np.int64)
    for app in range(apps):
        columns = np.nonzero(admissible[app])[0]
        cand_cost = (frontier_cost[:, None] + arrays.cost[app, columns][None, :]).ravel()
        cand_score = (frontier_score[:, None] + arrays.score[app, columns][None, :]).ravel()
        keep = cand_cost + suffix_min_cost[app + 1] <= room
        bound = np.min(
            offsets[:, None]
            + cand_score[None, :]
            - lams[:, None] * cand_cost[None, :]
            + suffix_reduced[:, app + 1 : app + 2],
            axis=0,
        )
        keep &= bound > floor + PRUNE_EPS
        indices = np.nonzero(keep)[0]
        if len(indices) == 0:
            return empty
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


SMALL_PRODUCT = 4096
"""Below this many combinations, `frontier_points` scores them all at once."""


def _every_point(
    arrays: SearchArrays,
    columns_of: list[np.ndarray],
    stem: float,
    room: float,
    lams: np.ndarray,
    offsets: np.ndarray,
    floor: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`frontier_points` for a few combinations: score every one, keep the Pareto ones."""
    grids = np.meshgrid(*columns_of, indexing="ij")
    picks = np.stack([grid.ravel() for grid in grids], axis=1)
    rows = np.arange(arrays.num_apps)[None, :]
    cost = stem + arrays.cost[rows, picks].sum(axis=1)
    score = arrays.score[rows, picks].sum(axis=1)
    bound = np.min(offsets[:, None] + score[None, :] - lams[:, None] * cost[None, :], axis=0)
    keep = (cost <= room) & (bound > floor + PRUNE_EPS)
    cost, score, ids = pareto_items(cost[keep], score[keep], np.nonzero(keep)[0])
    return cost, score, picks[ids]
