"""Placing a fleet's cameras on its nodes, and planning each node (DESIGN §3-4, fleets).

On one node, cameras share nothing but the budget: decoding and every stem segment belong
to one camera (DESIGN §3). So a node's best value for a set of cameras S, V(S), is the node
scheduler's optimum on S alone, and V is subadditive: V(S + T) <= V(S) + V(T) (split any
joint schedule of S + T into its S and T parts; each fits the budget alone). That gives:

- **Node values**: every camera's schedules on a node kind (profiles) are listed once, with
  cost, score and worst F1 (`CameraPoints`; cameras with more than CAMERA_SCHEDULE_LIMIT
  schedules are left to the node scheduler); V(S) is then an exact multiple-choice knapsack
  over the cameras' lists, milliseconds where the node scheduler takes a tenth of a second
  or more. Memoised per node kind (budget and profiles) and camera set.
- **Exact** (small fleets): depth-first branch and bound over camera -> node assignments,
  started from the heuristic's placement. A partial assignment is bounded by the node values
  of what is placed plus, for every camera not yet placed, its best value alone on any node
  (subadditivity); only the first of several identical empty nodes is tried. Proven optimal
  when the search finishes and every node value it used was exact.
- **Heuristic** (beyond): cameras placed one by one, hardest first (fewest nodes it fits,
  then most F1 at stake), where they add the most, then moves and swaps of cameras between
  nodes while they improve and time remains.
- **Bound**: for `mean_f1` the Lagrangian relaxation of the node budgets with one price per
  node kind, `sum_k lam_k * B_k + sum over cameras of max over kinds of the camera's best
  score - lam_k * cost there`, minimised by coordinate descent on a grid of prices, or the
  exact search's own bound when it finishes. For `min_f1`, the worst camera's best floor
  alone on its best node. Both are relaxations: on generated fleets they lie 1-2 % above
  the optimum (`bench/fleet.py`), so a heuristic's reported gap overstates its distance.

`min_f1` (max-min over every app of the fleet) places to maximise the worst node's floor,
ties broken by the sum of the nodes' means at their own floors; each node's plan maximises
its mean at or above its own floor.

Pure logic: no I/O.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mainstream.core.errors import InfeasibleError, InvalidParameterError
from scheduler.arrays import OPTIMALITY_TOLERANCE, independent_parts, search_arrays
from scheduler.cost_model import budget_limit
from scheduler.deadline import Deadline
from scheduler.fleet import Fleet, FleetNode, FleetPlan, NodePlacement, PlacementBaseline
from scheduler.knapsack import lagrangian_grid, merge_classes, pareto_items
from scheduler.options import AppOptions, SearchSpace, build_option_tables, build_search_space
from scheduler.planner import evaluate_assignment
from scheduler.problem import Problem
from scheduler.solvers import optimality_gap, solve
from scheduler.stem_program import StemTables, tree_layout

Method = Literal["auto", "exact", "heuristic"]
METHODS: tuple[Method, ...] = ("auto", "exact", "heuristic")

DEFAULT_FLEET_TIME_LIMIT_S = 10.0
"""How long a fleet placement may search unless told otherwise."""

EXACT_ASSIGNMENT_LIMIT = 20_000
"""`auto` searches exactly when at most this many camera -> node assignments exist."""

NODE_SOLVE_SHARE = 0.05
"""Of the fleet's time limit, the most one node plan may take during the search."""

CAMERA_SCHEDULE_LIMIT = 50_000
"""A camera with at most this many schedules has them all listed once per node kind; node
values are then exact knapsacks over the cameras' lists (milliseconds), else node plans."""

PRICE_STEPS = 120
"""Prices of the Lagrangian bound's grid, over six decades (12 % apart)."""

COORDINATE_ROUNDS = 20
"""Most rounds of coordinate descent over the node kinds' budget prices."""

HEURISTIC_SEED_SHARE = 0.2
"""Of the exact search's time, what the heuristic may take to give it a first placement."""

EPSILON = 1e-12


@dataclass(frozen=True)
class NodeValue:
    """A node's answer for one set of cameras, in the fleet's units.

    `mean_f1`: `value` is the node's apps' weighted F1 sum over the fleet's total weight (its
    share of the fleet mean); `min_f1`: its worst app's F1, with `secondary` that share.
    """

    value: float
    bound: float
    secondary: float = 0.0
    schedule: tuple[tuple[str, str, float, int], ...] = ()  # (app, cut point, fps, X)


@dataclass
class _Kind:
    """Nodes that share budget and profiles: one problem over every camera they may take."""

    problem: Problem
    tables: dict[str, AppOptions]  # app name -> its option table on this kind
    points: dict[str, CameraPoints | None]  # camera -> its schedules (None: too many)


@dataclass(frozen=True)
class CameraPoints:
    """Every schedule of one camera's apps that fits the kind's budget, in fleet units:
    cost, score (share of the fleet mean), worst app F1, and the options chosen."""

    cost: np.ndarray
    score: np.ndarray
    min_f1: np.ndarray
    picks: np.ndarray  # (schedules, apps): position among each app's kept options
    space: SearchSpace

    def within(self, limit: float) -> CameraPoints:
        """The schedules that cost at most `limit`."""
        keep = self.cost <= limit
        return CameraPoints(
            self.cost[keep], self.score[keep], self.min_f1[keep], self.picks[keep], self.space
        )

    def schedule(self, row: int) -> tuple[tuple[str, str, float, int], ...]:
        chosen = []
        for app, position in enumerate(self.picks[row].tolist()):
            option = self.space.option(app, position)
            name = self.space.tables[app].name
            chosen.append((name, option.cut_point, option.fps, option.x_vote))
        return tuple(chosen)


class Placer:
    """The memoised node values of one fleet and the searches over placements."""

    def __init__(self, fleet: Fleet, deadline: Deadline, node_time_limit_s: float) -> None:
        self.fleet = fleet
        self.deadline = deadline
        self.node_time_limit_s = node_time_limit_s
        self.objective = fleet.objective
        self.total_weight = fleet.total_weight()
        self.cameras = {camera.name: camera for camera in fleet.cameras}
        self.kind_of: dict[str, str] = {node.name: node.kind() for node in fleet.nodes}
        # Option tables and camera schedules depend on the profiles, not the budget: nodes
        # that differ only in budget share them (schedules listed up to the largest budget).
        shared: dict[str, _Kind] = {}
        largest: dict[str, FleetNode] = {}
        for node in fleet.nodes:
            key = node.profiles_key()
            if key not in largest or node.budget > largest[key].budget:
                largest[key] = node
        self.kinds: dict[str, _Kind] = {}
        for node in fleet.nodes:
            if self.kind_of[node.name] in self.kinds:
                continue
            apps = [
                app
                for camera in fleet.cameras
                if node in fleet.eligible_nodes(camera)
                for app in camera.apps
            ]
            if not apps:
                continue
            key = node.profiles_key()
            if key not in shared:
                problem = fleet.node_problem(largest[key], apps)
                tables = {table.name: table for table in build_option_tables(problem)}
                shared[key] = _Kind(problem, tables, {})
                for camera in {app.camera for app in problem.apps}:
                    shared[key].points[camera] = self._camera_points(shared[key], camera)
            common = shared[key]
            self.kinds[self.kind_of[node.name]] = _Kind(
                common.problem.model_copy(update={"budget": node.budget}),
                common.tables,
                common.points,
            )
        self.eligible = {
            camera.name: [node.name for node in fleet.eligible_nodes(camera)]
            for camera in fleet.cameras
        }
        self.memo: dict[tuple[str, frozenset[str]], NodeValue | None] = {}
        self.all_proven = True
        self.evaluations = 0

    # -- one node ------------------------------------------------------------------------------

    def empty_value(self) -> NodeValue:
        if self.objective == "mean_f1":
            return NodeValue(0.0, 0.0)
        return NodeValue(math.inf, math.inf, 0.0)

    def space(self, node: str, cameras: frozenset[str]) -> tuple[Problem, SearchSpace]:
        kind = self.kinds[self.kind_of[node]]
        problem = kind.problem.model_copy(
            update={"apps": [app for app in kind.problem.apps if app.camera in cameras]}
        )
        tables = [kind.tables[app.name] for app in problem.apps]
        return problem, build_search_space(problem, tables)

    def _camera_points(self, kind: _Kind, camera: str) -> CameraPoints | None:
        """Every schedule of the camera alone that fits the kind's budget; None when there
        are more than CAMERA_SCHEDULE_LIMIT (the node scheduler plans such cameras)."""
        problem = kind.problem.model_copy(
            update={"apps": [app for app in kind.problem.apps if app.camera == camera]}
        )
        space = build_search_space(problem, [kind.tables[app.name] for app in problem.apps])
        arrays = search_arrays(space)
        columns = [np.nonzero(arrays.valid[app])[0] for app in range(arrays.num_apps)]
        if math.prod(len(c) for c in columns) > CAMERA_SCHEDULE_LIMIT:
            return None
        picks = np.stack([grid.ravel() for grid in np.meshgrid(*columns, indexing="ij")], axis=1)
        cost = np.zeros(len(picks))
        score = np.zeros(len(picks))
        worst = np.full(len(picks), np.inf)
        stem = np.zeros((len(picks), arrays.num_segments))
        for app in range(arrays.num_apps):
            chosen = picks[:, app]
            cost += arrays.cost[app, chosen]
            score += arrays.score[app, chosen]
            worst = np.minimum(worst, arrays.f1[app, chosen])
            stem = np.maximum(
                stem, arrays.rate[app, chosen][:, None] * arrays.needs[arrays.segment[app, chosen]]
            )
        cost += stem @ arrays.weight
        share = sum(app.weight for app in problem.apps) / self.total_weight
        fits = cost <= arrays.limit
        cost, score, worst, picks = cost[fits], score[fits] * share, worst[fits], picks[fits]
        if self.objective == "mean_f1":  # only the (cost, score) frontier can be best
            cost, score, keep = pareto_items(cost, score, np.arange(len(cost)))
            worst, picks = worst[keep], picks[keep]
        return CameraPoints(cost, score, worst, picks, space)

    def node_value(self, node: str, cameras: frozenset[str]) -> NodeValue | None:
        """The node's best for `cameras` (exact from the cameras' schedules, else the node
        scheduler's within its time limit); None when they do not fit."""
        if not cameras:
            return self.empty_value()
        key = (self.kind_of[node], cameras)
        if key not in self.memo:
            kind = self.kinds[self.kind_of[node]]
            points = [kind.points[camera] for camera in sorted(cameras)]
            if all(p is not None for p in points):
                self.memo[key] = self._join(kind, [p for p in points if p is not None])
            else:
                self.memo[key] = self._solve(node, cameras)
            self.evaluations += 1
        return self.memo[key]

    def _join(self, kind: _Kind, points: list[CameraPoints]) -> NodeValue | None:
        """Exact: one schedule per camera, within the budget (a multiple-choice knapsack)."""
        limit = budget_limit(kind.problem.budget)
        points = [p.within(limit) for p in points]
        if any(len(p.cost) == 0 for p in points):
            return None
        if self.objective == "min_f1":
            floors = np.unique(np.concatenate([p.min_f1 for p in points]))[::-1]
            cheapest = np.zeros(len(floors))
            for p in points:
                order = np.argsort(-p.min_f1, kind="stable")
                running = np.minimum.accumulate(p.cost[order])
                reach = np.searchsorted(-p.min_f1[order], -floors, side="right")
                cheapest += np.where(reach > 0, running[np.maximum(reach - 1, 0)], np.inf)
            fitting = np.nonzero(cheapest <= limit)[0]
            if len(fitting) == 0:
                return None
            floor = float(floors[fitting[0]])
            allowed = [p.min_f1 >= floor for p in points]
        else:
            floor = -math.inf
            allowed = [np.ones(len(p.cost), dtype=bool) for p in points]
        costs = [p.cost[ok] for p, ok in zip(points, allowed, strict=True)]
        scores = [p.score[ok] for p, ok in zip(points, allowed, strict=True)]
        centre = sum(float(s.max()) for s in scores) / max(limit, 1e-12)
        joined = merge_classes(costs, scores, limit, -math.inf, lagrangian_grid(centre))
        if joined is None:
            return None
        total, picks = joined
        schedule = tuple(
            item
            for p, ok, pick in zip(points, allowed, picks, strict=True)
            for item in p.schedule(int(np.nonzero(ok)[0][pick]))
        )
        if self.objective == "mean_f1":
            return NodeValue(total, total, schedule=schedule)
        return NodeValue(floor, floor, total, schedule)

    def _solve(self, node: str, cameras: frozenset[str]) -> NodeValue | None:
        """The node scheduler on the whole node, within the per-node time limit."""
        problem, space = self.space(node, cameras)
        limit = max(1e-3, min(self.node_time_limit_s, self.deadline.remaining()))
        solution = solve(space, self.objective, "auto", limit)
        if solution is None:
            return None
        if not solution.proven(self.objective):
            self.all_proven = False
        weight = sum(app.weight for app in problem.apps) / self.total_weight
        schedule = []
        for app, position in enumerate(solution.choice):
            option = space.option(app, position)
            schedule.append((space.tables[app].name, option.cut_point, option.fps, option.x_vote))
        if self.objective == "mean_f1":
            return NodeValue(
                solution.mean_f1 * weight, solution.bound() * weight, schedule=tuple(schedule)
            )
        return NodeValue(
            solution.min_f1, solution.bound(), solution.mean_f1 * weight, tuple(schedule)
        )

    # -- whole placements ----------------------------------------------------------------------

    def combine(self, values: list[NodeValue]) -> tuple[float, float]:
        """(value, secondary) of a placement from its nodes' values."""
        if self.objective == "mean_f1":
            return sum(v.value for v in values), 0.0
        return min((v.value for v in values), default=math.inf), sum(v.secondary for v in values)

    def combine_bounds(self, values: list[NodeValue]) -> float:
        if self.objective == "mean_f1":
            return sum(v.bound for v in values)
        return min((v.bound for v in values), default=math.inf)

    def evaluate(self, sets: dict[str, frozenset[str]]) -> tuple[float, float] | None:
        values = []
        for node, cameras in sets.items():
            value = self.node_value(node, cameras)
            if value is None:
                return None
            values.append(value)
        return self.combine(values)

    def alone(self) -> dict[str, dict[str, NodeValue]]:
        """Every camera's value alone on every node it fits (by kind)."""
        result: dict[str, dict[str, NodeValue]] = {}
        for camera, nodes in self.eligible.items():
            result[camera] = {}
            for node in nodes:
                value = self.node_value(node, frozenset({camera}))
                if value is not None:
                    result[camera][node] = value
            if not result[camera]:
                raise InfeasibleError(
                    f"camera {camera!r} fits on no node: even alone, its apps' cheapest "
                    f"schedule exceeds every eligible node's budget ({', '.join(nodes)})"
                )
        return result

    def placements(self, sets: dict[str, frozenset[str]]) -> list[NodePlacement]:
        """Each node's cameras (file order) and plan, as the search valued it."""
        result = []
        for node in self.fleet.nodes:
            cameras = [c.name for c in self.fleet.cameras if c.name in sets[node.name]]
            plan = None
            if cameras:
                value = self.node_value(node.name, frozenset(cameras))
                if value is None:
                    raise InfeasibleError(
                        f"node {node.name!r} cannot fit cameras {cameras} within its budget"
                    )
                problem, _ = self.space(node.name, frozenset(cameras))
                given = {app: (cut, fps, x_vote) for app, cut, fps, x_vote in value.schedule}
                plan = evaluate_assignment(problem, given).model_copy(
                    update={"solver": "fleet", "upper_bound": None}
                )
            result.append(
                NodePlacement(
                    node=node.name,
                    budget=node.budget,
                    cameras=cameras,
                    total_cost=plan.total_cost if plan is not None else 0.0,
                    plan=plan,
                )
            )
        return result

    # -- exact -----------------------------------------------------------------------------

    def exact(
        self,
        alone: dict[str, dict[str, NodeValue]],
        start: dict[str, frozenset[str]] | None = None,
    ) -> tuple[dict[str, frozenset[str]] | None, float, bool]:
        """Branch and bound over assignments, from the placement `start` if given (it only
        prunes): (best placement or None, proven bound, finished)."""
        nodes = [node.name for node in self.fleet.nodes]
        order = sorted(alone, key=lambda c: -max(v.bound for v in alone[c].values()))
        # Optimistic rest: each camera's best bound alone on any node, summed / minimised.
        best_alone = [max(v.bound for v in alone[c].values()) for c in order]
        if self.objective == "mean_f1":
            rest = [sum(best_alone[i:]) for i in range(len(order) + 1)]
        else:
            rest = [min(best_alone[i:], default=math.inf) for i in range(len(order) + 1)]
        state = _BranchState()
        if start is not None:
            key = self.evaluate(start)
            if key is not None:
                state.placement, state.key = dict(start), key
                state.leaf_bound = key[0]

        def partial_bound(values: list[NodeValue], index: int) -> float:
            here = self.combine_bounds(values)
            return here + rest[index] if self.objective == "mean_f1" else min(here, rest[index])

        def visit(
            index: int, sets: dict[str, frozenset[str]], values: dict[str, NodeValue]
        ) -> None:
            if self.deadline.expired():
                state.finished = False
                return
            incumbent = state.key
            here = partial_bound(list(values.values()), index)
            # mean_f1: nothing below can beat the incumbent; min_f1: nothing below reaches
            # its floor (ties may still raise the secondary mean, so they are visited).
            if (self.objective == "mean_f1" and here <= incumbent[0] + EPSILON) or (
                here < incumbent[0] - EPSILON
            ):
                return
            if index == len(order):
                key = self.combine(list(values.values()))
                state.leaf_bound = max(state.leaf_bound, self.combine_bounds(list(values.values())))
                if key > incumbent:
                    state.placement, state.key = dict(sets), key
                return
            camera = order[index]
            tried_empty: set[str] = set()
            choices = sorted(
                alone[camera], key=lambda n: -alone[camera][n].bound
            )  # best node for it first
            for node in choices:
                if not sets[node]:
                    kind = self.kind_of[node]
                    if kind in tried_empty:
                        continue  # an identical empty node was tried already
                    tried_empty.add(kind)
                value = self.node_value(node, sets[node] | {camera})
                if value is None:
                    continue  # supersets do not fit either
                if self.objective == "min_f1":
                    trial = dict(values)
                    trial[node] = value
                    if partial_bound(list(trial.values()), index + 1) < incumbent[0] - EPSILON:
                        continue
                sets[node], previous = sets[node] | {camera}, sets[node]
                old = values[node]
                values[node] = value
                visit(index + 1, sets, values)
                sets[node], values[node] = previous, old

        start_sets = {node: frozenset[str]() for node in nodes}
        visit(0, start_sets, {node: self.empty_value() for node in nodes})
        return state.placement, max(state.leaf_bound, state.key[0]), state.finished

    # -- heuristic -------------------------------------------------------------------------

    def heuristic(
        self, alone: dict[str, dict[str, NodeValue]], deadline: Deadline | None = None
    ) -> dict[str, frozenset[str]] | None:
        """Greedy by marginal value, hardest cameras first, then moves and swaps until
        `deadline` (default: the search's)."""
        if deadline is not None:
            saved, self.deadline = self.deadline, deadline
            try:
                return self.heuristic(alone)
            finally:
                self.deadline = saved
        nodes = [node.name for node in self.fleet.nodes]
        sets = {node: frozenset[str]() for node in nodes}
        # Hardest first: fewest nodes it fits on, then the most value at stake.
        order = sorted(
            alone, key=lambda c: (len(alone[c]), -max(v.value for v in alone[c].values()))
        )
        for camera in order:
            chosen, chosen_key = None, None
            for node in alone[camera]:
                trial = dict(sets)
                trial[node] = sets[node] | {camera}
                key = self._key_changed(sets, trial, [node])
                if key is not None and (chosen_key is None or key > chosen_key):
                    chosen, chosen_key = node, key
            if chosen is None:
                return None
            sets[chosen] = sets[chosen] | {camera}
        self._improve(sets, alone)
        return sets

    def _key_changed(
        self,
        before: dict[str, frozenset[str]],
        after: dict[str, frozenset[str]],
        changed: list[str],
    ) -> tuple[float, float] | None:
        """The placement's (value, secondary) after a change on `changed` nodes (None: no fit)."""
        for node in changed:
            if self.node_value(node, after[node]) is None:
                return None
        return self.evaluate(after)

    def _improve(
        self, sets: dict[str, frozenset[str]], alone: dict[str, dict[str, NodeValue]]
    ) -> None:
        current = self.evaluate(sets)
        assert current is not None
        improved = True
        while improved and not self.deadline.expired():
            improved = False
            where = {camera: node for node, cameras in sets.items() for camera in cameras}
            for camera in sorted(where):
                for node in alone[camera]:
                    if node == where[camera] or self.deadline.expired():
                        continue
                    trial = dict(sets)
                    trial[where[camera]] = sets[where[camera]] - {camera}
                    trial[node] = sets[node] | {camera}
                    key = self._key_changed(sets, trial, [where[camera], node])
                    if key is not None and _better(key, current):
                        sets.update(trial)
                        current, improved = key, True
                        where[camera] = node
            if improved:
                continue
            cameras = sorted(where)
            for first_index, first in enumerate(cameras):
                for second in cameras[first_index + 1 :]:
                    if self.deadline.expired():
                        return
                    a, b = where[first], where[second]
                    if a == b or b not in alone[first] or a not in alone[second]:
                        continue
                    trial = dict(sets)
                    trial[a] = (sets[a] - {first}) | {second}
                    trial[b] = (sets[b] - {second}) | {first}
                    key = self._key_changed(sets, trial, [a, b])
                    if key is not None and _better(key, current):
                        sets.update(trial)
                        current, improved = key, True
                        where[first], where[second] = b, a
                        break
                if improved:
                    break

    # -- bounds ----------------------------------------------------------------------------

    def relaxation_bound(self, alone: dict[str, dict[str, NodeValue]]) -> float:
        """A proven bound on any placement's value, without searching placements."""
        if self.objective == "min_f1":
            return min(max(v.bound for v in nodes.values()) for nodes in alone.values())
        no_sharing_of_budget = sum(max(v.bound for v in nodes.values()) for nodes in alone.values())
        return min(no_sharing_of_budget, self._lagrangian_bound(alone))

    def _lagrangian_bound(self, alone: dict[str, dict[str, NodeValue]]) -> float:
        """min over prices of `sum_k lam_k * B_k + sum_c max_k G[c, k](lam_k)`: node kind k
        (total budget B_k) prices its budget at lam_k, and G[c, k](lam) is camera c's best
        `score - lam * cost` on kind k. Valid for every choice of prices (each camera runs
        somewhere, each kind's cost stays within B_k), so the prices are found by coordinate
        descent on a grid, starting from the best common price."""
        kinds = list(self.kinds)
        budgets = np.array(
            [
                sum(node.budget for node in self.fleet.nodes if self.kind_of[node.name] == kind)
                for kind in kinds
            ]
        )
        lams = np.concatenate(([0.0], np.geomspace(1e-4, 1e2, PRICE_STEPS) / budgets.sum()))
        gains = self._gains(alone, kinds, lams)  # (cameras, kinds, prices)
        common = lams[:, None] * budgets.sum() + gains.max(axis=1).sum(axis=0)[:, None]
        chosen = np.full(len(kinds), int(np.argmin(common)))
        best = float(np.min(common))
        for _ in range(COORDINATE_ROUNDS):
            changed = False
            for k in range(len(kinds)):
                others = np.delete(np.arange(len(kinds)), k)
                rest = (
                    gains[:, others, chosen[others]].max(axis=1)
                    if len(others)
                    else np.full(gains.shape[0], -np.inf)
                )
                totals = np.maximum(gains[:, k, :], rest[:, None]).sum(axis=0)
                fixed = float(lams[chosen[others]] @ budgets[others]) if len(others) else 0.0
                values = fixed + lams * budgets[k] + totals
                pick = int(np.argmin(values))
                if values[pick] < best - 1e-15:
                    best, chosen[k], changed = float(values[pick]), pick, True
            if not changed or self.deadline.expired():
                break
        return best

    def _gains(
        self, alone: dict[str, dict[str, NodeValue]], kinds: list[str], lams: np.ndarray
    ) -> np.ndarray:
        """(cameras, kinds, prices): each camera's best `score - lam * cost` on each kind
        (fleet units; -inf where it does not fit), from its listed schedules or, without
        them, the stem programme."""
        cameras = list(alone)
        row = {camera: index for index, camera in enumerate(cameras)}
        gains = np.full((len(cameras), len(kinds), len(lams)), -np.inf)
        for k, kind_key in enumerate(kinds):
            kind = self.kinds[kind_key]
            fits_here = {
                camera
                for camera, nodes in alone.items()
                if any(self.kind_of[node] == kind_key for node in nodes)
            }
            unlisted = set()
            for camera in fits_here:
                listed = kind.points.get(camera)
                if listed is None:
                    unlisted.add(camera)
                    continue
                points = listed.within(budget_limit(kind.problem.budget))
                gains[row[camera], k] = np.max(
                    points.score[None, :] - lams[:, None] * points.cost[None, :], axis=1
                )
            if not unlisted:
                continue
            problem = kind.problem.model_copy(
                update={"apps": [app for app in kind.problem.apps if app.camera in unlisted]}
            )
            space = build_search_space(problem, [kind.tables[app.name] for app in problem.apps])
            arrays = search_arrays(space)
            share = sum(app.weight for app in problem.apps) / self.total_weight
            arrays = dataclasses.replace(arrays, score=arrays.score * share)
            totals: dict[str, np.ndarray] = {}
            for apps in independent_parts(arrays, arrays.valid):
                camera = problem.apps[int(apps[0])].camera
                sub = arrays.restrict(apps, arrays.limit)
                tables = StemTables([(sub, sub.valid)], tree_layout(sub, sub.valid), lams)
                totals[camera] = totals.get(camera, np.zeros(len(lams))) + tables.values()[0]
            for camera, values in totals.items():
                gains[row[camera], k] = values
        return gains


@dataclass
class _BranchState:
    """The branch and bound's incumbent placement, its (value, secondary) and what is proven."""

    placement: dict[str, frozenset[str]] | None = None
    key: tuple[float, float] = (-math.inf, -math.inf)
    leaf_bound: float = -math.inf  # the best bound of any complete placement visited
    finished: bool = True


def _better(key: tuple[float, float], than: tuple[float, float]) -> bool:
    return key[0] > than[0] + OPTIMALITY_TOLERANCE or (
        abs(key[0] - than[0]) <= OPTIMALITY_TOLERANCE and key[1] > than[1] + OPTIMALITY_TOLERANCE
    )


def count_assignments(fleet: Fleet) -> int:
    return math.prod(len(fleet.eligible_nodes(camera)) for camera in fleet.cameras)


def place_fleet(
    fleet: Fleet,
    method: Method = "auto",
    time_limit_s: float = DEFAULT_FLEET_TIME_LIMIT_S,
    with_round_robin: bool = True,
) -> FleetPlan:
    """Assign every camera to a node and plan every node, within about `time_limit_s`.

    Raises InfeasibleError when a camera fits on no node, or when no placement that fits
    every camera was found (proven when the search is exact and finished).
    """
    if method not in METHODS:
        raise InvalidParameterError("method", method, f"one of {METHODS}")
    if not (isinstance(time_limit_s, int | float) and time_limit_s > 0):
        raise InvalidParameterError("time_limit_s", time_limit_s, "a number of seconds > 0")
    started = time.perf_counter()
    # The search gets most of the limit; the bound and the baseline the rest.
    deadline = Deadline.after(0.8 * time_limit_s)
    placer = Placer(fleet, deadline, NODE_SOLVE_SHARE * time_limit_s)
    alone = placer.alone()
    exact = method == "exact" or (
        method == "auto" and count_assignments(fleet) <= EXACT_ASSIGNMENT_LIMIT
    )
    bound = math.inf
    sets = None
    if exact:
        seed = placer.heuristic(alone, deadline.share(HEURISTIC_SEED_SHARE))
        sets, search_bound, finished = placer.exact(alone, seed)
        if finished and sets is None:
            raise InfeasibleError(
                "no placement fits: every assignment of cameras to nodes exceeds some node's "
                "budget; add nodes, raise budgets or remove apps"
            )
        if finished:
            bound = search_bound
    if sets is None:
        sets = placer.heuristic(alone)
    if sets is None:
        raise InfeasibleError(
            "no placement found that fits every camera within its node's budget (the search "
            "is not exhaustive at this size); add nodes, raise budgets or remove apps"
        )
    if not math.isfinite(bound):
        placer.deadline = Deadline.after(max(0.05, 0.1 * time_limit_s))
        bound = placer.relaxation_bound(alone)
    nodes = placer.placements(sets)
    value = _fleet_value(fleet, nodes)
    bound = max(bound, value)
    if bound - value <= OPTIMALITY_TOLERANCE:
        bound = value
    fleet_plan = FleetPlan(
        objective=fleet.objective,
        value=value,
        upper_bound=bound,
        optimality_gap=optimality_gap(value, bound),
        method=_method_name(exact, bound == value),
        solve_time_s=0.0,
        nodes=nodes,
    )
    if with_round_robin:
        fleet_plan.round_robin = round_robin(fleet, placer)
    fleet_plan.solve_time_s = time.perf_counter() - started
    return fleet_plan


def _fleet_value(fleet: Fleet, placements: list[NodePlacement]) -> float:
    weights = {app.name: app.weight for camera in fleet.cameras for app in camera.apps}
    planned = [app for node in placements if node.plan is not None for app in node.plan.apps]
    if fleet.objective == "min_f1":
        return min(app.f1 for app in planned)
    return sum(weights[app.name] * app.f1 for app in planned) / fleet.total_weight()


def round_robin_sets(fleet: Fleet) -> dict[str, frozenset[str]]:
    """Camera i on the i-th node in turn, skipping nodes without its base models."""
    sets: dict[str, frozenset[str]] = {node.name: frozenset() for node in fleet.nodes}
    turn = 0
    for camera in fleet.cameras:
        eligible = {node.name for node in fleet.eligible_nodes(camera)}
        while fleet.nodes[turn % len(fleet.nodes)].name not in eligible:
            turn += 1
        sets[fleet.nodes[turn % len(fleet.nodes)].name] |= {camera.name}
        turn += 1
    return sets


def round_robin(fleet: Fleet, placer: Placer) -> PlacementBaseline:
    """Round-robin placement, each node planned like the placement's own nodes; infeasible
    (value 0) when some node cannot fit its share."""
    sets = round_robin_sets(fleet)
    try:
        nodes = placer.placements(sets)
    except InfeasibleError:
        return PlacementBaseline(value=0.0, feasible=False)
    return PlacementBaseline(value=_fleet_value(fleet, nodes), nodes=nodes)


def _method_name(exact: bool, proven: bool) -> str:
    if not exact:
        return "heuristic"
    return "exact" if proven else "exact (time limit)"


__all__ = [
    "DEFAULT_FLEET_TIME_LIMIT_S",
    "METHODS",
    "Method",
    "NodeValue",
    "Placer",
    "count_assignments",
    "place_fleet",
    "round_robin",
    "round_robin_sets",
]
