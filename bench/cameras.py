"""Cameras per node: the most cameras this box sustains at the plan's rates, decode included.

Every camera plays the same generated 640x480 Motion-JPEG file at 10 fps (looped, paced as a
live camera) through the node's own path: a :class:`CameraManager` camera decoding it, an
:class:`EdgeRuntime` analysing its frames (one worker per base, cameras batched) with a DAG
built by :func:`edge_runtime.deployer.camera_dag`, the camera told the DAG's rate
(:meth:`Camera.set_analysis_rate`) so it decodes only the frames analysis uses, and events
stored in SQLite. Each camera runs 4 apps (``--apps``) on one base; their cut points and rates
are the scheduler's plan for a generated workload on this machine's measured profile (as in
``bench/runtime.py``). The strategies differ only in what runs per frame, at the same rates:

- ``mainstream``: the plan's cut points, shared stem (engine ``--engine``);
- ``mainstream-decode-all``: the same, but the camera decodes every frame and the DAG
  thins them (as before cameras decoded on demand): what decoding on demand saves;
- ``max-sharing``: every app at the deepest cut point (only the head its own);
- ``no-sharing``: each app runs its whole model (Keras), nothing shared;
- ``openvino-per-app``: each app's whole model as its own OpenVINO model (when it imports);
- ``mainstream-openvino``: the plan through OpenVINO (when it imports).

A camera count N is *sustained* when, over a measuring window after a warm-up, every app on
every camera analyses at least ``--hold`` (95 %) of its planned rate (give or take the one
frame where the window cuts its stride) and no camera's backlog grows (no frame dropped, queue
no deeper at the end than at the start plus one, the least of three readings 0.1 s apart each
time). N is searched by doubling from 1, then bisection, up to ``--max-cameras`` and within
``--strategy-time-s`` per row. The table gives, per strategy,
the largest N sustained, the frames decoded per second there, the worst app's analysed rate
as a fraction of its plan, and N over No-Sharing's N (the goal: >= 6x at 4 apps), next to
what the cost model predicts for that ratio from the measured profile (compute per camera of
No-Sharing over the strategy's; Keras rows only). At the same rates, sharing alone cannot
give more than about `apps`x: the rest must come from the engine.

The heads are untrained (scores do not matter for throughput); every camera's DAG shares the
compiled models of one template DAG (the runtime runs a base's cameras in one thread, and a
batched segment runs one camera's model on every camera's frame anyway), so building a probe
costs no compilation per camera. Timings depend on what else runs: the header prints the load
average before and after. Run: ``python bench/cameras.py --quick`` (5 s windows, 60 s of
search per row: 10-15 minutes on 2 busy cores, a few of them compiling the OpenVINO rows;
``--strategies mainstream,no-sharing`` for the main ratio alone), or without ``--quick`` for
20 s windows; ``--input-size 224 --alpha 1.0`` for the model the node usually runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Run as `python bench/cameras.py`, this folder comes first on the import path and its sibling
# `scheduler.py` / `trainer.py` would hide the packages of the same name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

from edge_runtime.camera import CameraConfig, CameraManager  # noqa: E402
from edge_runtime.dag import CameraDag, HeadSpec, NodeTiming, SegmentNode  # noqa: E402
from edge_runtime.deployer import camera_dag  # noqa: E402
from edge_runtime.detector import DetectorConfig  # noqa: E402
from edge_runtime.engines import openvino_available  # noqa: E402
from edge_runtime.event_store import EventStore  # noqa: E402
from edge_runtime.rate import RateAccumulator  # noqa: E402
from edge_runtime.runtime import CameraDeployment, EdgeRuntime  # noqa: E402
from edge_runtime.source_types import SyntheticSourceConfig  # noqa: E402
from edge_runtime.synthetic_source import SyntheticScene  # noqa: E402

CAMERA_FPS = 10.0
FRAME_SIZE = (640, 480)


@dataclass(frozen=True)
class Strategy:
    name: str
    apps: tuple[tuple[str, float], ...]  # (cut point, fps) per app
    engine: str
    fuse: bool
    decode_all: bool = False  # the camera decodes every frame; the DAG thins them
    shared: bool = True  # the cost model's view: False for apps run end to end on their own


@dataclass(frozen=True)
class Probe:
    cameras: int
    sustained: bool
    worst_hold: float  # lowest analysed/planned rate over every app of every camera
    decoded_fps: float  # frames actually decoded per second, all cameras
    grabbed_fps: float  # frames read from the sources per second, all cameras
    dropped: int
    backlog_growth: int
    why: str


def write_video(path: Path, seconds: float, codec: str) -> Path:
    """A 640x480 10 fps clip of moving shapes on a textured background (not trivially small
    JPEGs), written once with OpenCV."""
    import cv2

    width, height = FRAME_SIZE
    scene = SyntheticScene(
        SyntheticSourceConfig(seed=7, fps=CAMERA_FPS, width=width, height=height, shapes=6)
    )
    texture = np.random.default_rng(7).integers(0, 40, (height, width, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec), CAMERA_FPS, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {codec} to {path}")
    for index in range(int(seconds * CAMERA_FPS)):
        rgb = np.clip(scene.render(index).astype(np.int16) + texture, 0, 255).astype(np.uint8)
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()
    return path


def plan_apps(profile: Any, apps: int, budget_fraction: float) -> tuple[Any, Any]:
    """The scheduler's plan for `apps` generated apps on one camera (as bench/runtime.py)."""
    from scheduler.planner import make_plan
    from scheduler.workload import generate_problem

    problem = generate_problem(apps, seed=apps)
    cut_names = [cut.name for cut in profile.cut_points]
    for app in problem.apps:
        for index, candidate in enumerate(app.candidates):
            candidate.cut_point = cut_names[
                min(index * len(cut_names) // len(app.candidates), len(cut_names) - 1)
            ]
        app.candidates = list(
            {candidate.cut_point: candidate for candidate in app.candidates}.values()
        )
        app.base_model = profile.base_model
    problem = problem.model_copy(update={"profile": profile, "profiles": None})
    problem.budget = budget_fraction * apps * profile.total_cost * problem.camera_fps
    return problem, make_plan(problem, with_baselines=False)


def predicted_cost(problem: Any, plan: Any, profile: Any, strategy: Strategy) -> float:
    """The cost model's compute per second for one camera running `strategy` (DESIGN §3)."""
    from scheduler.cost_model import Placement, schedule_cost

    depth = {cut.name: index for index, cut in enumerate(profile.cut_points)}
    camera = {app.name: app.camera for app in problem.apps}
    placements = {
        app.name: Placement(camera[app.name], profile.base_model, depth[cut], fps, strategy.shared)
        for app, (cut, fps) in zip(plan.apps, strategy.apps, strict=True)
    }
    return float(schedule_cost(problem, placements).total)


def clone_dag(template: CameraDag, camera: str) -> CameraDag:
    """A DAG for another camera: its own frame selectors and timings, the template's models."""

    def clone(segment: SegmentNode, parent_rate: float) -> SegmentNode:
        node = dataclasses.replace(
            segment,
            selector=RateAccumulator(segment.rate, parent_rate),
            heads=[],
            child=None,
            timing=NodeTiming(),
            fused_calls=0,
            fused_segment_calls=0,
        )
        node.heads = [
            dataclasses.replace(
                head, selector=RateAccumulator(head.spec.fps, segment.rate), timing=NodeTiming()
            )
            for head in segment.heads
        ]
        if segment.child is not None:
            node.child = clone(segment.child, segment.rate)
        return node

    root = clone(template.root, template.camera_fps)
    return CameraDag(
        camera, template.camera_fps, root, template.preprocess, template.base_fingerprint
    )


def probe(
    count: int,
    template: CameraDag,
    strategy: Strategy,
    input_size: int,
    video: Path,
    folder: Path,
    warm_up_s: float,
    window_s: float,
    hold: float,
) -> Probe:
    """Run `count` cameras with `strategy` and measure whether they hold the plan's rates."""
    store = EventStore(folder / f"events-{strategy.name}-{count}.db")
    manager = CameraManager()
    runtime = EdgeRuntime(manager, store)
    detectors = {f"app{i}": DetectorConfig(threshold=0.99) for i in range(len(strategy.apps))}
    cameras = [f"cam{index:03d}" for index in range(count)]
    for camera in cameras:
        runtime.deploy(
            CameraDeployment(camera, clone_dag(template, camera), input_size, dict(detectors))
        )
    runtime.start()
    try:
        for camera in cameras:
            added = manager.add(
                CameraConfig(id=camera, url=str(video), fps=CAMERA_FPS, loop=True), start=False
            )
            # The DAG was built for its own rate: the camera decodes only the frames it takes.
            if not strategy.decode_all:
                added.set_analysis_rate(template.camera_fps, CAMERA_FPS)
            added.start()
        time.sleep(warm_up_s)
        before_apps = runtime.stats().apps
        before_cams = manager.stats()
        before_depth = settled_depths(manager)
        started = time.monotonic()
        time.sleep(window_s)
        after_apps = runtime.stats().apps
        after_cams = manager.stats()
        after_depth = settled_depths(manager)
        elapsed = time.monotonic() - started
    finally:
        runtime.stop()
        manager.stop_all()
    planned = {f"app{i}": fps for i, (_, fps) in enumerate(strategy.apps)}
    holds = []
    short = 0
    for name, stats in after_apps.items():
        analysed = stats.frames_analysed - before_apps[name].frames_analysed
        expected = planned[name.split("/", 1)[1]] * elapsed
        holds.append(analysed / expected)
        # One frame either way is where the window happens to cut the app's stride.
        short += analysed + 1 < hold * expected
    worst = min(holds)
    dropped = sum(after_cams[c].frames_dropped - before_cams[c].frames_dropped for c in cameras)
    growth = max(after_depth[c] - before_depth[c] for c in cameras)
    grabbed = sum(after_cams[c].frames_decoded - before_cams[c].frames_decoded for c in cameras)
    not_decoded = sum(
        after_cams[c].frames_not_decoded - before_cams[c].frames_not_decoded for c in cameras
    )
    reasons = []
    if short:
        reasons.append(f"{short} app(s) below {hold:.0%} of their rate")
    if dropped:
        reasons.append(f"{dropped} frames dropped")
    if growth > 1:
        reasons.append(f"a queue grew by {growth}")
    return Probe(
        cameras=count,
        sustained=not reasons,
        worst_hold=worst,
        decoded_fps=(grabbed - not_decoded) / elapsed,
        grabbed_fps=grabbed / elapsed,
        dropped=dropped,
        backlog_growth=growth,
        why="; ".join(reasons) or "held",
    )


def settled_depths(manager: CameraManager, readings: int = 3, gap_s: float = 0.1) -> dict[str, int]:
    """Each camera's queue depth, the least of a few readings: a frame that arrived while the
    worker was busy with a batch is not a backlog."""
    depths: dict[str, int] = {}
    for reading in range(readings):
        if reading:
            time.sleep(gap_s)
        for camera, stats in manager.stats().items():
            depths[camera] = min(depths.get(camera, stats.queue_depth), stats.queue_depth)
    return depths


def largest_sustained(
    run: Callable[[int], Probe], max_cameras: int, deadline: float
) -> tuple[Probe | None, int | None]:
    """Doubling from 1 camera, then bisection; stops at `max_cameras` or the deadline.

    Returns the probe of the largest N sustained and the smallest N found not sustained
    (None when none failed); more than one apart when the deadline cut the search short.
    """
    best: Probe | None = None
    failed_at: int | None = None
    count = 1
    while count <= max_cameras and time.monotonic() < deadline:
        result = run(count)
        print(
            f"    N={count:<4} {'held  ' if result.sustained else 'missed'} worst app "
            f"{result.worst_hold:6.1%}  decoded {result.decoded_fps:6.1f} fps  "
            f"read {result.grabbed_fps:6.1f} fps  ({result.why})",
            flush=True,
        )
        if not result.sustained:
            failed_at = count
            break
        best = result
        if count == max_cameras:
            break
        count = min(count * 2, max_cameras)
    low = best.cameras if best else 0
    high = failed_at
    while high is not None and high - low > 1 and time.monotonic() < deadline:
        middle = (low + high) // 2
        result = run(middle)
        print(
            f"    N={middle:<4} {'held  ' if result.sustained else 'missed'} worst app "
            f"{result.worst_hold:6.1%}  decoded {result.decoded_fps:6.1f} fps  "
            f"read {result.grabbed_fps:6.1f} fps  ({result.why})",
            flush=True,
        )
        if result.sustained:
            low, best = middle, result
        else:
            high = middle
    return best, high


def load_average() -> str:
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Short windows (a few minutes)")
    parser.add_argument("--apps", type=int, default=4, help="Apps per camera")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--engine", default="keras", help="Engine of the mainstream row")
    parser.add_argument(
        "--strategies",
        default="mainstream,mainstream-decode-all,max-sharing,no-sharing,openvino-per-app,"
        "mainstream-openvino",
        help="Comma-separated rows (OpenVINO rows are left out when it does not import)",
    )
    parser.add_argument("--codec", default="MJPG", help="MJPG (decoded on demand) or mp4v")
    parser.add_argument("--hold", type=float, default=0.95, help="Fraction of planned rate")
    parser.add_argument("--max-cameras", type=int, default=256)
    parser.add_argument("--warm-up-s", type=float, default=None)
    parser.add_argument("--window-s", type=float, default=None)
    parser.add_argument(
        "--strategy-time-s", type=float, default=None, help="Search time per strategy"
    )
    parser.add_argument(
        "--budget-fraction",
        type=float,
        default=0.25,
        help="Plan budget as a fraction of No-Sharing's cost of every app on every frame",
    )
    arguments = parser.parse_args()
    warm_up_s = arguments.warm_up_s or (3.0 if arguments.quick else 8.0)
    window_s = arguments.window_s or (5.0 if arguments.quick else 20.0)
    strategy_time_s = arguments.strategy_time_s or (90.0 if arguments.quick else 900.0)

    from edge_runtime.profiler import measure_profile
    from mainstream.core.bases import (
        BaseConfig,
        calibrated_base,
        untrained_head,
        weights_fingerprint,
    )

    started_load = load_average()
    config = BaseConfig("mobilenet_v1", input_size=arguments.input_size, alpha=arguments.alpha)
    images = np.random.default_rng(0).integers(
        0, 255, (8, config.input_size, config.input_size, 3), dtype=np.uint8
    )
    base = calibrated_base(config, images)
    fingerprint = weights_fingerprint(base)
    profile = measure_profile(
        config,
        arguments.engine,  # type: ignore[arg-type]
        camera_resolution=FRAME_SIZE,
        base_model=base,
        repeats=7,
    )
    problem, plan = plan_apps(profile, arguments.apps, arguments.budget_fraction)
    planned = tuple((app.cut_point, float(app.fps)) for app in plan.apps)
    whole = tuple(("input", fps) for _, fps in planned)
    deepest = tuple((profile.cut_points[-1].name, fps) for _, fps in planned)

    strategies = {
        "mainstream": Strategy("mainstream", planned, arguments.engine, True),
        "mainstream-decode-all": Strategy(
            "mainstream-decode-all", planned, arguments.engine, True, decode_all=True
        ),
        "max-sharing": Strategy("max-sharing", deepest, arguments.engine, True),
        "no-sharing": Strategy("no-sharing", whole, "keras", False, shared=False),
        "openvino-per-app": Strategy("openvino-per-app", whole, "openvino", False, shared=False),
        "mainstream-openvino": Strategy("mainstream-openvino", planned, "openvino", True),
    }
    chosen = [name.strip() for name in arguments.strategies.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(strategies))
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; choose among {sorted(strategies)}")
    if not openvino_available():
        skipped = [name for name in chosen if strategies[name].engine == "openvino"]
        chosen = [name for name in chosen if name not in skipped]
        if skipped:
            print(f"openvino does not import: not running {', '.join(skipped)}")

    print(
        f"cameras per node: {arguments.apps} apps per camera on MobileNet v1 alpha {config.alpha} "
        f"at {config.input_size} px; cameras {FRAME_SIZE[0]}x{FRAME_SIZE[1]} at {CAMERA_FPS:g} fps "
        f"({arguments.codec} file, looped, paced, decoded by the camera code)\n"
        f"plan (budget {plan.budget:.0f} ms/s): "
        + ", ".join(f"app{i} {cut}@{fps:g}fps" for i, (cut, fps) in enumerate(planned))
        + f"\nsustained = every app >= {arguments.hold:.0%} of its planned rate over "
        f"{window_s:g} s after {warm_up_s:g} s warm-up, no frame dropped, no queue growing; "
        f"N by doubling then bisection, at most {arguments.max_cameras} cameras and "
        f"{strategy_time_s:g} s per strategy\n"
        f"{os.cpu_count()} CPUs; load average at start {started_load}",
        flush=True,
    )

    results: dict[str, Probe | None] = {}
    missed: dict[str, int | None] = {}
    with tempfile.TemporaryDirectory(prefix="mainstream-cameras-") as tmp:
        folder = Path(tmp)
        suffix = ".avi" if arguments.codec.upper() == "MJPG" else ".mp4"
        video = write_video(folder / f"camera{suffix}", 20.0, arguments.codec)
        for name in chosen:
            strategy = strategies[name]
            print(f"  {name} ({strategy.engine}):", flush=True)
            heads = [
                HeadSpec(f"app{i}", cut, fps, 1, untrained_head(base, cut, i), fingerprint)
                for i, (cut, fps) in enumerate(strategy.apps)
            ]
            # Built for its highest app rate, as the node builds it for a camera that decodes
            # only what analysis takes (edge_runtime.deployer.build_deployments).
            template = camera_dag(
                "template",
                CAMERA_FPS if strategy.decode_all else max(fps for _, fps in strategy.apps),
                heads,
                base,
                fingerprint,
                config,
                strategy.engine,  # type: ignore[arg-type]
                strategy.fuse,
            )
            deadline = time.monotonic() + strategy_time_s

            def run(
                count: int, strategy: Strategy = strategy, template: CameraDag = template
            ) -> Probe:
                return probe(
                    count,
                    template,
                    strategy,
                    config.input_size,
                    video,
                    folder,
                    warm_up_s,
                    window_s,
                    arguments.hold,
                )

            best, failed = largest_sustained(run, arguments.max_cameras, deadline)
            results[name], missed[name] = best, failed

    baseline = results.get("no-sharing")
    baseline_cost = predicted_cost(problem, plan, profile, strategies["no-sharing"])
    print(f"\nload average at end {load_average()} (at start {started_load})")
    print(
        f"{'strategy':<22} {'max N':>6} {'decoded fps':>12} {'worst app hold':>15} "
        f"{'vs no-sharing':>14} {'predicted':>10}"
    )
    for name in chosen:
        strategy, best = strategies[name], results[name]
        predicted = (
            f"{baseline_cost / predicted_cost(problem, plan, profile, strategy):.2f}x"
            if strategy.engine == "keras" and arguments.engine == "keras"
            else "-"
        )
        if best is None:
            print(f"{name:<22} {0:>6} {'-':>12} {'-':>15} {'-':>14} {predicted:>10}")
            continue
        ratio = f"{best.cameras / baseline.cameras:.2f}x" if baseline else "-"
        failed = missed[name]
        cut_short = failed is not None and failed - best.cameras > 1
        count = f"{best.cameras}..{failed - 1}" if cut_short and failed else str(best.cameras)
        print(
            f"{name:<22} {count:>6} {best.decoded_fps:>12.1f} "
            f"{best.worst_hold:>15.1%} {ratio:>14} {predicted:>10}"
        )
    print(
        "max N: most cameras sustained (A..B: the time limit stopped the search with A held "
        "and B+1 missed); decoded fps: frames decoded per second there, all "
        "cameras; worst app hold: lowest analysed/planned rate of any app there; predicted: "
        "No-Sharing's compute per camera over the row's, by the cost model on the measured "
        "profile (decode included)"
    )


if __name__ == "__main__":
    main()
