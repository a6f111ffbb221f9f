"""Cost model of a schedule (DESIGN §3).

Apps on the same camera and base model share the base network up to their cut points. Each
stem segment between consecutive cut points runs once per frame at the highest rate among the
apps that need it (cut at or beyond the segment); each app pays its own branch from its cut to
the output. Optional extras from the profile: decoding, once per camera at the camera's highest
analysed rate, and a split overhead per branch that starts from a shared stem.

Pure logic: no I/O, no framework imports.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scheduler.problem import Problem, Profile

FEASIBILITY_TOLERANCE = 1e-9
"""A schedule fits when its cost is at most `budget * (1 + FEASIBILITY_TOLERANCE)`."""


def budget_limit(budget: float) -> float:
    """The largest cost that still counts as within `budget` (absorbs rounding of sums)."""
    return budget * (1.0 + FEASIBILITY_TOLERANCE)


def fits(cost: float, budget: float) -> bool:
    return cost <= budget_limit(budget)


@dataclass(frozen=True)
class Placement:
    """Where one app runs, as far as cost is concerned."""

    camera: str
    base_model: str
    stem_depth: int  # index of the cut point its branch starts from; 0 means nothing shared
    fps: float
    shared: bool = True  # False: the app runs end to end on its own (the No-Sharing baseline)


@dataclass(frozen=True)
class CostBreakdown:
    """The cost of a schedule, total and by part, plus each app's share of it."""

    total: float
    stems: dict[tuple[str, str], float]  # (camera, base_model) -> shared stem cost
    branches: dict[str, float]  # app -> its branch, split overhead included
    decode: dict[str, float]  # camera -> decode cost
    app_shares: dict[str, float]  # app -> branch + its share of stems and decode; sums to total


def branch_cost(profile: Profile, stem_depth: int, fps: float, shared: bool = True) -> float:
    """What an app alone pays per second: the network from its cut to the output.

    Every head fed by the shared DAG of its camera and base model (whatever its cut) also
    pays the profile's split overhead per analysed frame; an app run end to end on its own
    (`shared=False`, No-Sharing) has no DAG and pays none.
    """
    return fps * branch_cost_per_frame(profile, stem_depth, shared)


def branch_cost_per_frame(profile: Profile, stem_depth: int, shared: bool = True) -> float:
    """`branch_cost` per analysed frame: the network from the cut to the output, plus the
    split overhead of a shared branch."""
    cut_cost = profile.cut_points[stem_depth].cumulative_cost
    overhead = profile.split_overhead_at(stem_depth) if shared else 0.0
    return profile.total_cost - cut_cost + overhead


def stem_cost(cumulative_costs: Sequence[float], demands: Sequence[tuple[int, float]]) -> float:
    """Cost per second of one shared stem, segment by segment.

    `demands` are (stem_depth, fps) of the apps on the stem. Segment j-1 -> j runs at the
    highest rate among apps with depth >= j.
    """
    total = 0.0
    for j in range(1, len(cumulative_costs)):
        rate = max((fps for depth, fps in demands if depth >= j), default=0.0)
        total += (cumulative_costs[j] - cumulative_costs[j - 1]) * rate
    return total


def stem_cost_by_rate(
    cumulative_costs: Sequence[float], demands: Sequence[tuple[int, float]]
) -> float:
    """The same stem cost, summed over rate layers instead of segments.

    With the distinct rates r_1 < r_2 < ... the stem runs the frames of layer
    (r_{i-1}, r_i] up to the deepest cut among apps with rate >= r_i.
    """
    total, previous = 0.0, 0.0
    for rate in sorted({fps for _, fps in demands}):
        deepest = max(depth for depth, fps in demands if fps >= rate)
        total += (rate - previous) * cumulative_costs[deepest]
        previous = rate
    return total


def camera_decode_cost(problem: Problem, camera: str) -> float:
    """Decode cost per frame of one camera: the largest among the profiles its apps use."""
    costs = [
        problem.profile_for(app.base_model or "").decode_cost
        for app in problem.apps
        if app.camera == camera
    ]
    return max(costs, default=0.0)


def _airport_shares(layers: list[tuple[float, list[str], float]]) -> dict[str, float]:
    """Split costs that come in rate layers evenly among the apps that consume each layer.

    Each layer is (rate width, apps consuming it, cost per frame of the layer).
    """
    shares: dict[str, float] = defaultdict(float)
    for width, users, cost_per_frame in layers:
        for user in users:
            shares[user] += width * cost_per_frame / len(users)
    return shares


def _stem_layers(
    cumulative_costs: Sequence[float], demands: Mapping[str, tuple[int, float]]
) -> list[tuple[float, list[str], float]]:
    """Layers of a stem for cost sharing: each segment's frames, cut into rate layers."""
    layers = []
    for j in range(1, len(cumulative_costs)):
        segment = cumulative_costs[j] - cumulative_costs[j - 1]
        if segment <= 0:
            continue
        users = {name: fps for name, (depth, fps) in demands.items() if depth >= j}
        previous = 0.0
        for rate in sorted(set(users.values())):
            consumers = [name for name, fps in users.items() if fps >= rate]
            layers.append((rate - previous, consumers, segment))
            previous = rate
    return layers


def schedule_cost(problem: Problem, placements: Mapping[str, Placement]) -> CostBreakdown:
    """Cost of a schedule: stems + branches (+ decode and split overheads) (DESIGN §3).

    Each app's share is its branch plus an even part of every stem (and decode) computation it
    consumes: one frame of a segment is split among the apps that analyse that frame. Two apps
    at 1 and 5 fps on one segment split the 1 fps both use in halves; the app at 5 fps alone
    pays for the other 4 fps. The shares add up to the total.
    """
    groups: dict[tuple[str, str], dict[str, tuple[int, float]]] = defaultdict(dict)
    cameras: dict[str, dict[str, float]] = defaultdict(dict)
    branches: dict[str, float] = {}
    for name, placement in placements.items():
        profile = problem.profile_for(placement.base_model)
        branches[name] = branch_cost(profile, placement.stem_depth, placement.fps, placement.shared)
        groups[(placement.camera, placement.base_model)][name] = (
            placement.stem_depth,
            placement.fps,
        )
        cameras[placement.camera][name] = placement.fps

    shares: dict[str, float] = dict(branches)
    stems: dict[tuple[str, str], float] = {}
    for (camera, base_model), demands in groups.items():
        cumulative = [cut.cumulative_cost for cut in problem.profile_for(base_model).cut_points]
        stems[(camera, base_model)] = stem_cost(cumulative, list(demands.values()))
        for name, share in _airport_shares(_stem_layers(cumulative, demands)).items():
            shares[name] += share

    decode: dict[str, float] = {}
    for camera, rates in cameras.items():
        per_frame = camera_decode_cost(problem, camera)
        decode[camera] = per_frame * max(rates.values())
        if per_frame > 0:
            demands = {name: (1, fps) for name, fps in rates.items()}
            for name, share in _airport_shares(_stem_layers([0.0, per_frame], demands)).items():
                shares[name] += share

    total = sum(stems.values()) + sum(branches.values()) + sum(decode.values())
    return CostBreakdown(
        total=total, stems=stems, branches=branches, decode=decode, app_shares=shares
    )
