"""Synthetic, seeded scheduling problems for tests and benchmarks.

The numbers imitate what the trainer and profiler produce for MobileNet-v1-224 apps:

- Cost: per-layer time from multiply-accumulate counts, with depthwise convolutions (memory
  bound) ten times slower per MAC than dense ones; about 18 ms for the whole network.
- Quality: per-frame recall and false-positive rate stay nearly flat as more of the base is
  frozen, and fall off a cliff at the deepest one or two cut points, where only the last
  layers are specialised (the shape of the thesis's Fig. 2b).

The same seed always gives the same problem, and app i does not depend on how many apps are
generated after it. Pure logic: no I/O.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import get_args

import numpy as np

from mainstream.core.errors import InvalidParameterError
from scheduler.fleet import Fleet, FleetApp, FleetCamera, FleetNode
from scheduler.problem import (
    DEFAULT_FPS_OPTIONS,
    AppSpec,
    Candidate,
    CutPoint,
    Objective,
    Problem,
    Profile,
)

BASE_MODEL = "mobilenet_v1"
INPUT_CUT = "input"

# Default budget as a fraction of running every app's whole network at the camera rate.
DEFAULT_BUDGET_FRACTION = 0.25

EVENT_LENGTH_RANGE_S = (0.2, 1.0)
EVENT_FREQUENCY_RANGE = (0.1, 0.9)
CORRELATION_RANGE = (0.1, 0.9)

# Throughput of the imitated edge CPU, in MACs per millisecond.
_DENSE_MACS_PER_MS = 40e6
_DEPTHWISE_MACS_PER_MS = 4e6

_INPUT_SIZE = 224
_STEM_CHANNELS = 32
# (stride, output channels) of MobileNet-v1's 13 depthwise-separable blocks.
_BLOCKS: tuple[tuple[int, int], ...] = (
    (1, 64),
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (2, 1024),
    (1, 1024),
)
_IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class _Layer:
    """One place the base can be cut, with the time of the layer that ends there."""

    name: str
    cost_ms: float
    depthwise: bool = False


def mobilenet_v1_layers(width_multiplier: float = 1.0) -> tuple[tuple[str, float], ...]:
    """Every cut point of the imitated MobileNet-v1-224 with its cumulative cost in ms.

    Starts at `input` (cost 0) and ends at `conv_pw_13_relu`, after which only pooling and the
    classifier remain; `mobilenet_v1_total_cost` is the whole network including those.
    `width_multiplier` thins every layer as MobileNet's alpha does (0.5: about a third of the time).
    """
    cumulative = 0.0
    result = [(INPUT_CUT, 0.0)]
    for layer in _layers(width_multiplier):
        cumulative += layer.cost_ms
        result.append((layer.name, cumulative))
    return tuple(result)


def mobilenet_v1_total_cost(width_multiplier: float = 1.0) -> float:
    """Whole-network time in ms: every layer plus average pooling and the 1000-way classifier."""
    final_size = _INPUT_SIZE // 2 // math.prod(stride for stride, _ in _BLOCKS)
    features = _thin(_BLOCKS[-1][1], width_multiplier)
    head_macs = final_size * final_size * features + features * _IMAGENET_CLASSES
    layers = _layers(width_multiplier)
    return sum(layer.cost_ms for layer in layers) + head_macs / _DENSE_MACS_PER_MS


def example_profile(num_cut_points: int = 16, width_multiplier: float = 1.0) -> Profile:
    """A MobileNet-v1-224-like cost profile with `num_cut_points` cut points (input included).

    `input` and the deepest cut `conv_pw_13_relu` (only the classifier specialised) are always
    there; in between come evenly spaced block outputs (`conv1_relu`, `conv_pw_k_relu`) and,
    past 15, depthwise outputs (`conv_dw_k_relu`), up to all 28. The default 16 are `input`,
    `conv1_relu`, `conv_pw_1_relu` ... `conv_pw_12_relu`, `conv_dw_13_relu`, `conv_pw_13_relu`.
    A `width_multiplier` other than 1 names the base `mobilenet_v1_<alpha * 100>` (a second,
    cheaper base model whose stem is never shared with the first).
    """
    if not (isinstance(width_multiplier, numbers.Real) and 0.1 <= width_multiplier <= 1.0):
        raise InvalidParameterError("width_multiplier", width_multiplier, "a number in [0.1, 1]")
    layers = _layers(width_multiplier)
    deepest = layers[-1].name
    block_outputs = [layer.name for layer in layers[:-1] if not layer.depthwise]
    depthwise_outputs = [layer.name for layer in layers if layer.depthwise]
    most = 2 + len(block_outputs) + len(depthwise_outputs)
    if (
        not isinstance(num_cut_points, numbers.Integral)
        or isinstance(num_cut_points, bool)
        or not 2 <= num_cut_points <= most
    ):
        raise InvalidParameterError("num_cut_points", num_cut_points, f"an integer in [2, {most}]")

    inner = num_cut_points - 2
    chosen = set(_evenly_spaced(block_outputs, min(inner, len(block_outputs))))
    chosen |= set(_evenly_spaced(depthwise_outputs, max(0, inner - len(block_outputs))))
    chosen |= {INPUT_CUT, deepest}
    cut_points = [
        CutPoint(name=name, cumulative_cost=round(cost, 4))
        for name, cost in mobilenet_v1_layers(width_multiplier)
        if name in chosen
    ]
    return Profile(
        base_model=BASE_MODEL
        if width_multiplier == 1.0
        else f"{BASE_MODEL}_{round(width_multiplier * 100):03d}",
        cost_unit="ms",
        cut_points=cut_points,
        total_cost=round(mobilenet_v1_total_cost(width_multiplier), 4),
    )


def generate_apps(num_apps: int, seed: int, profile: Profile) -> list[AppSpec]:
    """`num_apps` apps on one camera with random event statistics and a candidate per cut point.

    Candidates follow the published accuracy-vs-depth shape: recall falls and the false-positive
    rate rises only a little across most cut points, then sharply at the deepest one or two.
    """
    _validate_count("num_apps", num_apps)
    app_seeds = np.random.SeedSequence(seed).spawn(num_apps)
    width = max(2, len(str(num_apps - 1)))
    return [
        _generate_app(f"app{index:0{width}d}", np.random.default_rng(app_seed), profile)
        for index, app_seed in enumerate(app_seeds)
    ]


def generate_problem(
    num_apps: int,
    seed: int,
    budget: float | None = None,
    camera_fps: float = 10,
    objective: Objective = "mean_f1",
    num_cut_points: int = 16,
) -> Problem:
    """A complete, valid scheduling problem over `example_profile(num_cut_points)`.

    Without a `budget`, the default is DEFAULT_BUDGET_FRACTION of `no_sharing_full_rate_cost`:
    far too little to run every app unshared at the camera rate, plenty for some sharing.
    """
    _validate_count("num_apps", num_apps)
    if not (isinstance(camera_fps, numbers.Real) and math.isfinite(camera_fps) and camera_fps > 0):
        raise InvalidParameterError("camera_fps", camera_fps, "a finite number > 0")
    if objective not in get_args(Objective):
        raise InvalidParameterError("objective", objective, f"one of {get_args(Objective)}")
    profile = example_profile(num_cut_points)
    if budget is None:
        budget = DEFAULT_BUDGET_FRACTION * no_sharing_full_rate_cost(profile, num_apps, camera_fps)
    elif not (isinstance(budget, numbers.Real) and math.isfinite(budget) and budget > 0):
        raise InvalidParameterError("budget", budget, "a finite number > 0")

    fps_options = sorted({fps for fps in DEFAULT_FPS_OPTIONS if fps <= camera_fps} | {camera_fps})
    return Problem(
        camera_fps=camera_fps,
        budget=round(float(budget), 4),
        objective=objective,
        fps_options=[float(fps) for fps in fps_options],
        profile=profile,
        apps=generate_apps(num_apps, seed, profile),
    )


def no_sharing_full_rate_cost(profile: Profile, num_apps: int, camera_fps: float) -> float:
    """Cost of every app running the whole network, unshared, on every camera frame."""
    per_frame = profile.total_cost + profile.decode_cost + profile.split_overhead
    return num_apps * camera_fps * per_frame


def generate_fleet_problem(
    num_apps: int,
    num_cameras: int,
    seed: int,
    num_base_models: int = 2,
    budget_fraction: float = 0.1,
    decode_cost: float = 0.5,
    num_cut_points: int = 16,
) -> Problem:
    """Many apps on several cameras and base models: the shape of a node serving a site.

    App i watches camera `i % num_cameras` and uses base model `(i // num_cameras) %
    num_base_models`, so every camera carries apps of every base. The bases are MobileNet-v1
    at widths 1, 0.5, 0.75, 0.25 (each its own stem); every camera frame analysed costs
    `decode_cost` (so a camera's bases share its decoding). The budget is `budget_fraction` of
    running every app's whole network, unshared, on every camera frame.
    """
    _validate_count("num_apps", num_apps)
    _validate_count("num_cameras", num_cameras)
    if num_base_models not in range(1, len(_FLEET_WIDTHS) + 1):
        raise InvalidParameterError(
            "num_base_models", num_base_models, f"an integer in [1, {len(_FLEET_WIDTHS)}]"
        )
    profiles = [
        example_profile(num_cut_points, width).model_copy(update={"decode_cost": decode_cost})
        for width in _FLEET_WIDTHS[:num_base_models]
    ]
    app_seeds = np.random.SeedSequence(seed).spawn(num_apps)
    width = max(2, len(str(num_apps - 1)))
    apps = []
    for index, app_seed in enumerate(app_seeds):
        profile = profiles[(index // num_cameras) % num_base_models]
        app = _generate_app(f"app{index:0{width}d}", np.random.default_rng(app_seed), profile)
        app.camera = f"cam{index % num_cameras:02d}"
        apps.append(app)
    camera_fps = 10.0
    full_rate = sum(
        camera_fps * (profile.total_cost + decode_cost)
        for app in apps
        for profile in profiles
        if profile.base_model == app.base_model
    )
    return Problem(
        camera_fps=camera_fps,
        budget=round(budget_fraction * full_rate, 4),
        fps_options=[float(fps) for fps in DEFAULT_FPS_OPTIONS],
        profiles=profiles,
        apps=apps,
    )


_FLEET_WIDTHS = (1.0, 0.5, 0.75, 0.25)

PAPER_FPS_OPTIONS: tuple[float, ...] = (
    *(round(0.1 * step, 1) for step in range(1, 10)),
    *(float(fps) for fps in range(1, 11)),
)
"""The 19 analysis rates of the original Mainstream experiments (0.1 to 10 fps)."""

# Cumulative cost of MobileNets-224 up to each cut point the original experiments used, in the
# units of the original profile (measured on an Intel NUC), and of the whole network.
_PAPER_CUTS: tuple[tuple[str, float], ...] = (
    ("input", 0.0),
    ("k3", 3.0),
    ("k9", 8.211),
    ("k15", 11.129),
    ("k21", 14.959),
    ("k27", 17.093),
    ("k33", 18.386),
    ("k39", 18.535),
    ("k45", 18.761),
    ("k51", 18.985),
    ("k57", 19.342),
    ("k63", 19.64),
    ("k69", 19.897),
    ("k75", 20.272),
    ("k81", 20.77),
    ("k84", 20.803),
)
_PAPER_TOTAL_COST = 20.814


def paper_profile() -> Profile:
    """The MobileNets-224 profile of the original experiments: 16 cut points, NUC cost units."""
    return Profile(
        base_model="mobilenet_224_paper",
        cost_unit="nuc_units",
        cut_points=[CutPoint(name=name, cumulative_cost=cost) for name, cost in _PAPER_CUTS],
        total_cost=_PAPER_TOTAL_COST,
    )


def generate_paper_problem(
    num_apps: int, seed: int, budget: float, objective: Objective = "mean_f1"
) -> Problem:
    """Apps shaped like the original experiments' (thesis Fig. 2b), on one 10 fps camera.

    Per-frame quality is nearly flat over most cut points, with noise of a few thousandths so
    that many cut points are near-ties, and falls off a cliff over the last few; the rates
    are the 19 of `PAPER_FPS_OPTIONS`. These are the problems that defeated the first exact
    search (see `search.py`); the benchmark and tests use them at budgets 50 to 300.
    """
    _validate_count("num_apps", num_apps)
    if not (isinstance(budget, numbers.Real) and math.isfinite(budget) and budget > 0):
        raise InvalidParameterError("budget", budget, "a finite number > 0")
    profile = paper_profile()
    app_seeds = np.random.SeedSequence([seed, 1]).spawn(num_apps)
    width = max(2, len(str(num_apps - 1)))
    return Problem(
        camera_fps=10.0,
        budget=float(budget),
        objective=objective,
        fps_options=list(PAPER_FPS_OPTIONS),
        profile=profile,
        apps=[
            _generate_paper_app(f"app{index:0{width}d}", np.random.default_rng(app_seed), profile)
            for index, app_seed in enumerate(app_seeds)
        ],
    )


def _generate_paper_app(name: str, rng: np.random.Generator, profile: Profile) -> AppSpec:
    count = len(profile.cut_points)
    top_recall = rng.uniform(0.6, 0.97)
    top_false_positive_rate = rng.uniform(0.01, 0.35)
    # Where the cliff starts (one of the last five cut points) and how deep it goes.
    cliff_start = int(rng.integers(count - 5, count - 1))
    cliff_recall_loss = rng.uniform(0.1, 0.5)
    cliff_false_positive_rise = rng.uniform(0.02, 0.15)
    gentle_loss = rng.uniform(0.0, 0.02)
    noise = rng.uniform(-0.004, 0.004, size=(count, 2))
    candidates = []
    for index, cut in enumerate(profile.cut_points):
        into_cliff = max(0, index - cliff_start + 1) / (count - cliff_start)
        severity = into_cliff**3  # small steps first, the deepest cut takes most of it
        recall = (
            top_recall
            - gentle_loss * index / (count - 1)
            - cliff_recall_loss * severity
            + noise[index, 0]
        )
        false_positive_rate = (
            top_false_positive_rate
            + 0.5 * gentle_loss * index / (count - 1)
            + cliff_false_positive_rise * severity
            + noise[index, 1]
        )
        candidates.append(
            Candidate(
                cut_point=cut.name,
                recall=_probability(recall),
                false_positive_rate=_probability(false_positive_rate),
            )
        )
    return AppSpec(
        name=name,
        base_model=profile.base_model,
        event_length_s=round(float(rng.uniform(*EVENT_LENGTH_RANGE_S)), 4),
        event_frequency=round(float(rng.uniform(*EVENT_FREQUENCY_RANGE)), 4),
        correlation=round(float(rng.uniform(*CORRELATION_RANGE)), 4),
        x_vote=1,
        candidates=candidates,
    )


def _generate_app(name: str, rng: np.random.Generator, profile: Profile) -> AppSpec:
    event_length_s = rng.uniform(*EVENT_LENGTH_RANGE_S)
    event_frequency = rng.uniform(*EVENT_FREQUENCY_RANGE)
    correlation = rng.uniform(*CORRELATION_RANGE)

    # Quality of the fully specialised model (cut at the input) ...
    best_recall = rng.uniform(0.80, 0.97)
    best_false_positive_rate = rng.uniform(0.01, 0.08)
    # ... the slow loss across the flat part, and the cliff at the deepest cuts.
    gentle_recall_loss = rng.uniform(0.01, 0.05)
    gentle_false_positive_rise = rng.uniform(0.005, 0.02)
    second_deepest_recall_loss = rng.uniform(0.02, 0.08)
    second_deepest_false_positive_rise = rng.uniform(0.01, 0.04)
    deepest_recall_loss = rng.uniform(0.15, 0.35)
    deepest_false_positive_rise = rng.uniform(0.05, 0.15)

    count = len(profile.cut_points)
    candidates = []
    for index, cut in enumerate(profile.cut_points):
        frozen_fraction = index / (count - 1) if count > 1 else 0.0
        second_deepest_or_deeper = count >= 3 and index >= count - 2
        deepest = count >= 2 and index == count - 1
        recall = (
            best_recall
            - gentle_recall_loss * frozen_fraction
            - second_deepest_recall_loss * second_deepest_or_deeper
            - deepest_recall_loss * deepest
        )
        false_positive_rate = (
            best_false_positive_rate
            + gentle_false_positive_rise * frozen_fraction
            + second_deepest_false_positive_rise * second_deepest_or_deeper
            + deepest_false_positive_rise * deepest
        )
        candidates.append(
            Candidate(
                cut_point=cut.name,
                recall=_probability(recall),
                false_positive_rate=_probability(false_positive_rate),
            )
        )
    return AppSpec(
        name=name,
        base_model=profile.base_model,
        event_length_s=round(float(event_length_s), 4),
        event_frequency=round(float(event_frequency), 4),
        correlation=round(float(correlation), 4),
        x_vote=1,
        candidates=candidates,
    )


def _thin(channels: int, width_multiplier: float) -> int:
    return max(1, round(channels * width_multiplier))


def _layers(width_multiplier: float = 1.0) -> list[_Layer]:
    """MobileNet-v1-224's layers up to the last block's output, with their time in ms."""
    size = _INPUT_SIZE // 2
    channels = _thin(_STEM_CHANNELS, width_multiplier)
    layers = [_Layer("conv1_relu", size * size * 3 * 3 * 3 * channels / _DENSE_MACS_PER_MS)]
    for number, (stride, full_channels) in enumerate(_BLOCKS, start=1):
        out_channels = _thin(full_channels, width_multiplier)
        size //= stride
        depthwise_macs = size * size * channels * 3 * 3
        pointwise_macs = size * size * channels * out_channels
        layers.append(
            _Layer(f"conv_dw_{number}_relu", depthwise_macs / _DEPTHWISE_MACS_PER_MS, True)
        )
        layers.append(_Layer(f"conv_pw_{number}_relu", pointwise_macs / _DENSE_MACS_PER_MS))
        channels = out_channels
    return layers


def _evenly_spaced(names: list[str], count: int) -> list[str]:
    """`count` of `names`, evenly spaced and always ending with the last one."""
    return [names[-(-(index + 1) * len(names) // count) - 1] for index in range(count)]


def _probability(value: float) -> float:
    return round(min(1.0, max(0.0, float(value))), 4)


def _validate_count(field: str, value: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise InvalidParameterError(field, value, "an integer >= 1")


NODE_SPEEDS: tuple[float, ...] = (1.0, 0.6, 1.5, 0.8)
"""Cost of a frame on fleet node i relative to the first (cycled): heterogeneous machines."""


def generate_fleet(
    num_nodes: int,
    num_cameras: int,
    seed: int,
    apps_per_camera: int = 2,
    budget_fraction: float = 0.3,
    num_cut_points: int = 8,
    decode_cost: float = 0.5,
    objective: Objective = "mean_f1",
    fps_options: tuple[float, ...] = DEFAULT_FPS_OPTIONS,
) -> Fleet:
    """Nodes of different speeds and budgets, and cameras with a few apps each.

    Node i runs the same base on a machine `NODE_SPEEDS[i % 4]` times as costly per frame as
    the first, with a budget of `budget_fraction` of running its even share of the cameras'
    apps unshared at the camera rate there (varied by up to 30 % per node), so that where a
    camera goes matters. Camera j's apps are generated as in `generate_apps`.
    """
    _validate_count("num_nodes", num_nodes)
    _validate_count("num_cameras", num_cameras)
    _validate_count("apps_per_camera", apps_per_camera)
    if objective not in get_args(Objective):
        raise InvalidParameterError("objective", objective, f"one of {get_args(Objective)}")
    base = example_profile(num_cut_points).model_copy(update={"decode_cost": decode_cost})
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    nodes = []
    for index in range(num_nodes):
        speed = NODE_SPEEDS[index % len(NODE_SPEEDS)]
        profile = _scaled_profile(base, speed)
        share = num_cameras * apps_per_camera / num_nodes
        full = share * 10.0 * (profile.total_cost + profile.decode_cost)
        budget = round(budget_fraction * full * float(rng.uniform(0.7, 1.3)), 4)
        nodes.append(FleetNode(name=f"node{index:02d}", budget=budget, profile=profile))
    camera_seeds = np.random.SeedSequence(seed).spawn(num_cameras)
    cameras = []
    for index, camera_seed in enumerate(camera_seeds):
        camera_rng = np.random.default_rng(camera_seed)
        name = f"cam{index:02d}"
        apps = []
        for number in range(apps_per_camera):
            app = _generate_app(f"{name}-app{number}", camera_rng, base)
            apps.append(FleetApp.model_validate(app.model_dump() | {"camera": name}))
        cameras.append(FleetCamera(name=name, apps=apps))
    return Fleet(
        camera_fps=10.0,
        objective=objective,
        fps_options=list(fps_options),
        nodes=nodes,
        cameras=cameras,
    )


def _scaled_profile(profile: Profile, speed: float) -> Profile:
    """The same base on a machine `speed` times as costly per frame."""
    return profile.model_copy(
        update={
            "cut_points": [
                CutPoint(name=cut.name, cumulative_cost=round(cut.cumulative_cost * speed, 4))
                for cut in profile.cut_points
            ],
            "total_cost": round(profile.total_cost * speed, 4),
            "decode_cost": round(profile.decode_cost * speed, 4),
        }
    )
