"""Runtime throughput benchmark: No-Sharing vs Max-Sharing vs the scheduler's plan, both engines.

For 1, 2, 4 and 8 apps on one base model, every app analyses every frame; the table gives
frames per second through the node's runtime (`EdgeRuntime`: its workers, `frames_in_flight`
frames at once, detectors and event store; frames handed over decoded, as fast as it takes
them), the ideal fps computed from each node timed in isolation (with as many calls at once as
frames in flight), preprocessing included (so `ratio` shows the executor's own overhead), the
fraction of the *limit*, the speed-up over No-Sharing, and the process RSS. The limit is what
the box does with the same model: the base and one head through OpenVINO in f32 with the
THROUGHPUT hint and an AsyncInferQueue of (at least 2) requests on the same threads. Each
figure is the median of `--rounds` rounds run in rotating order. No-Sharing runs one separate
full model per app, one after the other (the baseline). Max-Sharing and the plan run as the
node runs them (`runtime.fuse_heads`): the last segment and its heads run as one model, and
with the Keras engine the heads that share a cut point run in one call, while the ideal times
each segment and each app's head alone, so a ratio above 1 is the fusion's gain. The plan then
runs at its own rates, and the inference time the node measures is compared with what the
profile (measured in the same mode: engine, precision, frames in flight) predicts. A table of
Max-Sharing on several cameras (`--cameras`, batched on one base) gives their total fps
against the limit. A last table runs the 4-app plan-shaped DAG with OpenVINO in each precision
(`runtime.openvino_precision`) next to Keras on the same frames: fps and the largest change of
any app's score. Run: `python bench/runtime.py [--input-size 224 --alpha 1.0 --frames 60]`;
`--in-flight 1` runs the node as it ran with one frame at a time.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

# Run as `python bench/runtime.py`, this folder comes first on the import path and its sibling
# `scheduler.py` / `trainer.py` would hide the packages of the same name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

from edge_runtime.dag import CameraDag, HeadSpec  # noqa: E402
from edge_runtime.deployer import camera_dag  # noqa: E402
from edge_runtime.engines import openvino_available, resolve_engine  # noqa: E402
from edge_runtime.profiler import measure_profile, time_per_call_ms  # noqa: E402
from edge_runtime.source_types import Frame  # noqa: E402


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def planned(profile: Any, apps: int, seed: int, budget_fraction: float) -> Any:
    """The plan the scheduler picks for a generated workload on the measured profile.

    The budget is `budget_fraction` of what No-Sharing needs to run every app on every frame,
    the same scale as `bench/scheduler.py`; a loose budget lets every app keep its whole model.
    """
    from scheduler.planner import make_plan
    from scheduler.workload import generate_problem

    problem = generate_problem(apps, seed=seed)
    cut_names = [cut.name for cut in profile.cut_points]
    # Map the generated apps' candidates onto this machine's cut points, keeping curve shapes.
    for app in problem.apps:
        for index, candidate in enumerate(app.candidates):
            candidate.cut_point = cut_names[
                min(index * len(cut_names) // len(app.candidates), len(cut_names) - 1)
            ]
        unique = {candidate.cut_point: candidate for candidate in app.candidates}
        app.candidates = list(unique.values())
        app.base_model = profile.base_model
    # The bench feeds decoded frames: no decode cost in the plan either.
    problem = problem.model_copy(
        update={
            "profile": profile.model_copy(update={"decode_cost": 0.0}),
            "profiles": None,
            "budget": problem.budget,
        }
    )
    problem.budget = budget_fraction * apps * profile.total_cost * problem.camera_fps
    return make_plan(problem, with_baselines=False)


class _BenchCamera:
    """Stands in for a camera: hands out its frames at once, each once, then nothing."""

    def __init__(self, camera: str, images: np.ndarray, first_sequence: int) -> None:
        now = time.time()
        self._frames = deque(
            Frame(camera, first_sequence + index, (first_sequence + index) / 10, image, 0.0, now)
            for index, image in enumerate(images)
        )
        self._lock = threading.Lock()

    def get(self, timeout: float | None = None) -> Frame | None:
        with self._lock:
            if self._frames:
                return self._frames.popleft()
        time.sleep(min(timeout or 0.0, 0.005))
        return None


class _BenchCameras:
    """Stands in for the CameraManager of the node's runtime."""

    def __init__(self, cameras: dict[str, _BenchCamera]) -> None:
        self._cameras = cameras

    def get(self, camera_id: str) -> _BenchCamera:
        return self._cameras[camera_id]


def run_node(
    dags: list[CameraDag], images: np.ndarray, in_flight: int, folder: Path
) -> tuple[float, float]:
    """Every camera's frames through the node's runtime (EdgeRuntime: its workers, batching
    of cameras on one base, `in_flight` frames at once, detectors and event store), as fast
    as it takes them. Returns (frames per second over all cameras, inference ms per frame as
    the node measures it). The detectors never fire: the bench times analysis, not snapshots."""
    from edge_runtime.detector import DetectorConfig
    from edge_runtime.event_store import EventStore
    from edge_runtime.runtime import CameraDeployment, EdgeRuntime

    size = int(images.shape[1])
    store = EventStore(folder / f"events-{time.monotonic_ns()}.db")
    try:
        first = next(iter(dags)).frames_seen
        cameras = {dag.camera: _BenchCamera(dag.camera, images, first + 1) for dag in dags}
        runtime = EdgeRuntime(
            _BenchCameras(cameras),  # type: ignore[arg-type]
            store,
            frames_in_flight=in_flight,
            event_clock="media",
        )
        for dag in dags:
            detectors = {
                head.spec.app: DetectorConfig(threshold=1.0, quiet_time_s=1.0)
                for head in dag.heads()
            }
            runtime.deploy(CameraDeployment(dag.camera, dag, size, detectors))
        total = len(images) * len(dags)
        started = time.perf_counter()
        runtime.start()
        # stats() takes the runtime's lock: polled sparingly, not to slow what it measures.
        while sum(runtime.stats().cameras.values()) < total:
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        busy_ms = runtime.stats().busy_ms_total
        runtime.stop()
    finally:
        store.close()
    return total / elapsed, busy_ms / total


def clone_dag(dag: CameraDag, camera: str) -> CameraDag:
    """The same compiled DAG for another camera: its own rate selectors and timings, the
    same compiled models (a node compiles per camera; the bench saves the conversions)."""
    from dataclasses import replace

    from edge_runtime.dag import NodeTiming
    from edge_runtime.rate import RateAccumulator

    def fresh(selector: Any) -> Any:
        return RateAccumulator(selector.rate, selector.parent_rate)

    copies = []
    for segment in dag.segments():
        heads = [
            replace(head, selector=fresh(head.selector), timing=NodeTiming())
            for head in segment.heads
        ]
        copies.append(
            replace(
                segment,
                selector=fresh(segment.selector),
                heads=heads,
                child=None,
                timing=NodeTiming(),
            )
        )
    for parent, child in itertools.pairwise(copies):
        parent.child = child
    return CameraDag(camera, dag.camera_fps, copies[0], dag.preprocess, dag.base_fingerprint)


def head_to_head(
    bench_dag: Any, last_cut: str, limit: Any, images: np.ndarray, cameras: int, rounds: int
) -> None:
    """The goal's figures side by side: the limit, and Max-Sharing (one app) through the node's
    runtime with 1 and 2 frames in flight, on one camera and on `cameras` cameras, in rotating
    order, medians of `rounds` (a noisy neighbour disturbs one round, not the comparison)."""
    folder = Path(tempfile.mkdtemp(prefix="mainstream-bench-h2h-"))
    runs: dict[str, Any] = {"limit": lambda: limit(images)}
    for in_flight in (1, 2):
        one = bench_dag([(last_cut, 10.0)], "openvino", True, "f32", in_flight)
        many = [clone_dag(one, f"cam{index}") for index in range(cameras)]
        run_node([one], images[:6], in_flight, folder)
        run_node(many, images[:6], in_flight, folder)
        runs[f"1 camera, {in_flight} in flight"] = partial(
            lambda dag, flight: run_node([dag], images, flight, folder)[0], one, in_flight
        )
        runs[f"{cameras} cameras, {in_flight} in flight"] = partial(
            lambda dags, flight: run_node(dags, images, flight, folder)[0], many, in_flight
        )
    names = list(runs)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(runs[name]())
    limit_fps_median = statistics.median(results["limit"])
    print("\nhead to head, Max-Sharing with one app, OpenVINO f32 (fps of all cameras together):")
    print(f"{'path':<28} {'fps':>7} {'of limit':>8}   rounds")
    for name in names:
        median = statistics.median(results[name])
        spread = ", ".join(f"{value:.1f}" for value in results[name])
        print(f"{name:<28} {median:7.1f} {median / limit_fps_median:8.2f}   {spread}", flush=True)


def run_dag(dag: CameraDag, images: np.ndarray, in_flight: int, folder: Path) -> float:
    """Frames per second of one camera's pass over `images` through the node's runtime
    (every app on every frame), after a short warm-up pass."""
    run_node([dag], images[:6], in_flight, folder)
    return run_node([dag], images, in_flight, folder)[0]


def cost_ms_per_s(
    dag: CameraDag, images: np.ndarray, seconds: float, in_flight: int, folder: Path
) -> float:
    """Inference ms per second of video, as the node measures it (the sum of its workers'
    inference time), when every app runs at its planned rate (camera at 10 fps)."""
    frames = int(seconds * 10)
    run_node([dag], images[:6], in_flight, folder)
    video = images[np.arange(frames) % len(images)]
    fps, ms_per_frame = run_node([dag], video, in_flight, folder)
    del fps
    return ms_per_frame * frames / seconds


def scores_and_fps(dag: CameraDag, images: np.ndarray) -> tuple[np.ndarray, float]:
    """Every app's score on every frame (apps in name order), and the fps of that pass."""
    for index in range(3):
        dag.process(images[index], index, 0.0)
    scores = []
    started = time.perf_counter()
    for index, image in enumerate(images):
        scores.append([s.score for s in sorted(dag.process(image, index, index / 10), key=_app)])
    return np.asarray(scores), len(images) / (time.perf_counter() - started)


def _app(score: Any) -> str:
    return str(score.app)


def limit_runner(base: Any, config: Any) -> tuple[Any, int]:
    """What the box does with the same model: the base and one head through OpenVINO in f32,
    THROUGHPUT hint, an AsyncInferQueue of the optimal number of requests (at least 2), on the
    engines' threads; frames preprocessed on the way in, as a node must. Returns (a function
    `images -> fps` of one pass, requests)."""
    import keras
    import openvino as ov

    from edge_runtime.engines import EngineOptions, openvino_compiled
    from edge_runtime.profiler import head_model
    from mainstream.core.bases import preprocess

    full = keras.Model(base.input, head_model(base)(base.output))
    compiled = openvino_compiled(full, EngineOptions(precision="f32"), hint="THROUGHPUT")
    requests = max(2, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    queue = ov.AsyncInferQueue(compiled, requests)

    def run(images: np.ndarray) -> float:
        started = time.perf_counter()
        for index in range(len(images)):
            queue.start_async([preprocess(config, images[index : index + 1])])
        queue.wait_all()
        return len(images) / (time.perf_counter() - started)

    return run, requests


def ideal_fps(dag: CameraDag, sample: np.ndarray, in_flight: int = 1) -> float:
    """Each node timed alone on the tensor it receives; the ideal is the sum of those times.

    Preprocessing the camera frame counts as a node: every executor has to do it. With
    `in_flight` > 1 each node is timed while as many calls of it run at once, and that many
    frames progress together.
    """
    timed = partial(time_per_call_ms, concurrency=in_flight)
    frame = sample[np.newaxis]
    total_ms = timed(lambda: dag.preprocess(frame))
    tensor = dag.preprocess(frame)
    for segment in dag.segments():
        if segment.run is not None:
            run, inputs = segment.run, tensor
            total_ms += timed(lambda run=run, inputs=inputs: run(inputs))  # type: ignore[misc]
            tensor = segment.run(tensor)
        for head in segment.heads:
            run, inputs = head.run, tensor
            total_ms += timed(lambda run=run, inputs=inputs: run(inputs))  # type: ignore[misc]
    return in_flight * 1000.0 / total_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument(
        "--plan-seconds",
        type=float,
        default=30.0,
        help="Video seconds run at the plan's rates to compare measured with predicted cost",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="Rounds per strategy (rotating order; medians)"
    )
    parser.add_argument("--apps", default="1,2,4,8")
    parser.add_argument("--cameras", default="4", help="Camera counts of the last table ('' skips)")
    parser.add_argument("--engines", default="keras,openvino")
    parser.add_argument(
        "--head-to-head",
        type=int,
        default=0,
        help="Rounds of the limit vs the node's Max-Sharing path with 1 and 2 frames in flight "
        "on 1 and --cameras cameras, rotating (0: skip)",
    )
    parser.add_argument(
        "--cuts",
        type=int,
        default=0,
        help="Profile only this many cut points, evenly spread, input and last included "
        "(0: all; fewer is quicker to measure, the plan then has fewer choices)",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=None,
        help="Frames in flight (runtime.frames_in_flight); default: as the node resolves it",
    )
    parser.add_argument(
        "--precisions",
        default="f32,bf16,f16",
        help="OpenVINO precisions compared with Keras in the last table ('' skips it)",
    )
    parser.add_argument(
        "--budget-fraction",
        type=float,
        default=0.25,
        help="Budget of the 'mainstream' row, as a fraction of No-Sharing's cost",
    )
    arguments = parser.parse_args()

    from mainstream.core.bases import (
        BaseConfig,
        calibrated_base,
        discover_cut_points,
        untrained_head,
        weights_fingerprint,
    )

    config = BaseConfig("mobilenet_v1", input_size=arguments.input_size, alpha=arguments.alpha)
    images = np.random.default_rng(0).integers(
        0, 255, (arguments.frames, config.input_size, config.input_size, 3), dtype=np.uint8
    )
    base = calibrated_base(config, images[:8])
    fingerprint = weights_fingerprint(base)
    order = discover_cut_points(base)
    engines = [
        name for name in arguments.engines.split(",") if name != "openvino" or openvino_available()
    ]
    app_counts = [int(count) for count in arguments.apps.split(",") if count]
    camera_counts = [int(count) for count in arguments.cameras.split(",") if count]
    folder = Path(tempfile.mkdtemp(prefix="mainstream-bench-runtime-"))

    print(
        f"MobileNet v1 alpha {config.alpha} at {config.input_size} px, {arguments.frames} frames per run, "
        f"median of {arguments.rounds} rounds in rotating order"
    )
    limit = 0.0
    if openvino_available():
        limit_run, requests = limit_runner(base, config)
        limit_run(images[:6])  # warm-up
        limit = statistics.median(limit_run(images) for _ in range(arguments.rounds))
        print(
            f"limit: the base and one head, OpenVINO f32 THROUGHPUT, {requests} async requests: "
            f"{limit:.1f} fps (each row's 'of limit' is its fps / this)"
        )

    def of_limit(fps: float) -> str:
        return f"{fps / limit:4.2f}" if limit else "   -"

    def bench_dag(
        apps: list[tuple[str, float]],
        engine: str,
        fuse: bool,
        precision: str = "f32",
        in_flight: int = 1,
        camera: str = "bench",
    ) -> CameraDag:
        """A DAG of untrained heads at (cut point, fps), built as the node builds it."""
        heads = [
            HeadSpec(f"app{i}", cut, fps, 1, untrained_head(base, cut, i), fingerprint)
            for i, (cut, fps) in enumerate(apps)
        ]
        return camera_dag(
            camera,
            10.0,
            heads,
            base,
            fingerprint,
            config,
            engine,
            fuse,
            precision,  # type: ignore[arg-type]
            in_flight,
        )

    if arguments.head_to_head and openvino_available():
        head_to_head(
            bench_dag,
            order[-1],
            limit_run,
            images,
            max(camera_counts or [4]),
            arguments.head_to_head,
        )

    rows = []
    plan_rows = []
    profile_for_plan = None
    for engine in engines if app_counts else []:
        in_flight = resolve_engine(engine, frames_in_flight=arguments.in_flight).frames_in_flight
        cuts = order
        if arguments.cuts >= 2:
            picks = np.linspace(0, len(order) - 1, arguments.cuts).round().astype(int)
            cuts = [order[index] for index in sorted(set(picks.tolist()))]
        profile = measure_profile(
            config,
            engine,
            cut_points=cuts,
            base_model=base,
            repeats=9,
            frames_in_flight=in_flight,
        )
        profile_for_plan = profile_for_plan or profile
        for apps in app_counts:
            plan = planned(profile, apps, seed=apps, budget_fraction=arguments.budget_fraction)
            strategies = {
                "no-sharing": ["input"] * apps,
                "max-sharing": [order[-1]] * apps,
                "mainstream": [app.cut_point for app in plan.apps],
            }
            dags = {
                # No-Sharing is the baseline of one separate model per app.
                strategy: bench_dag(
                    [(cut, 10.0) for cut in cuts],
                    engine,
                    fuse=strategy != "no-sharing",
                    in_flight=in_flight,
                )
                for strategy, cuts in strategies.items()
            }
            # Rounds in rotating order, medians: a noisy neighbour disturbs one round of one
            # strategy, not the comparison.
            measured_runs: dict[str, list[float]] = {strategy: [] for strategy in strategies}
            ideal_runs: dict[str, list[float]] = {strategy: [] for strategy in strategies}
            names = list(strategies)
            for round_index in range(arguments.rounds):
                shift = round_index % len(names)
                for strategy in names[shift:] + names[:shift]:
                    measured_runs[strategy].append(
                        run_dag(dags[strategy], images, in_flight, folder)
                    )
                    ideal_runs[strategy].append(ideal_fps(dags[strategy], images[0], in_flight))
            fps_by_strategy = {
                strategy: statistics.median(runs) for strategy, runs in measured_runs.items()
            }
            for strategy, cuts in strategies.items():
                measured = fps_by_strategy[strategy]
                ideal = statistics.median(ideal_runs[strategy])
                rows.append(
                    (
                        engine,
                        apps,
                        strategy,
                        measured,
                        ideal,
                        measured / ideal,
                        rss_mib(),
                        sorted(set(cuts)),
                        in_flight,
                    )
                )
            del dags
            for row in rows[-3:]:
                speedup = row[3] / fps_by_strategy["no-sharing"]
                print(
                    f"{row[0]:<9} apps={row[1]:<2} {row[2]:<12} in flight {row[8]}  fps {row[3]:7.1f}  "
                    f"ideal {row[4]:7.1f}  ratio {row[5]:4.2f}  of limit {of_limit(row[3])}  "
                    f"vs no-sharing {speedup:5.2f}x  rss {row[6]:6.0f} MiB  cuts {row[7]}",
                    flush=True,
                )
            dag = bench_dag(
                [(app.cut_point, app.fps) for app in plan.apps], engine, True, "f32", in_flight
            )
            measured_cost = cost_ms_per_s(dag, images, arguments.plan_seconds, in_flight, folder)
            plan_rows.append((engine, apps, plan.total_cost, measured_cost))
            print(
                f"{engine:<9} apps={apps:<2} plan at its rates (budget {plan.budget:.0f} ms/s, "
                f"fps {sorted(app.fps for app in plan.apps)}): predicted {plan.total_cost:6.1f} ms/s, "
                f"measured {measured_cost:6.1f} ms/s, ratio {measured_cost / plan.total_cost:4.2f}",
                flush=True,
            )

    camera_rows = []
    for engine in engines:
        in_flight = resolve_engine(engine, frames_in_flight=arguments.in_flight).frames_in_flight
        for cameras in camera_counts:
            for apps in (1, 4):
                first = bench_dag([(order[-1], 10.0)] * apps, engine, True, "f32", in_flight)
                dags_of_cameras = [clone_dag(first, f"cam{index}") for index in range(cameras)]
                run_node(dags_of_cameras, images[:6], in_flight, folder)
                runs = [
                    run_node(dags_of_cameras, images, in_flight, folder)[0]
                    for _ in range(arguments.rounds)
                ]
                camera_rows.append((engine, cameras, apps, in_flight, statistics.median(runs)))
                del dags_of_cameras

    print("\nMax-Sharing, every app on every frame (fps of one camera; 'of limit': / the limit):")
    print(
        f"{'engine':<9} {'apps':>4} {'in flight':>9} {'fps':>7} {'ideal':>7} {'ratio':>5} {'of limit':>8}"
    )
    for row in rows:
        if row[2] == "max-sharing":
            print(
                f"{row[0]:<9} {row[1]:>4} {row[8]:>9} {row[3]:7.1f} {row[4]:7.1f} {row[5]:5.2f} "
                f"{of_limit(row[3]):>8}"
            )
    if camera_rows:
        print("\nMax-Sharing on several cameras (frames of all cameras per second, batched):")
        print(
            f"{'engine':<9} {'cameras':>7} {'apps':>4} {'in flight':>9} {'fps':>7} {'of limit':>8}"
        )
        for engine, cameras, apps, in_flight, fps in camera_rows:
            print(
                f"{engine:<9} {cameras:>7} {apps:>4} {in_flight:>9} {fps:7.1f} {of_limit(fps):>8}"
            )
    print("\nPlan at its rates, inference cost per second of video (predicted by the profile):")
    print(f"{'engine':<9} {'apps':>4} {'predicted':>9} {'measured':>9} {'ratio':>5}")
    for engine, apps, predicted, measured in plan_rows:
        print(f"{engine:<9} {apps:>4} {predicted:9.1f} {measured:9.1f} {measured / predicted:5.2f}")

    precisions = [name for name in arguments.precisions.split(",") if name]
    if precisions and openvino_available():
        precision_table(profile_for_plan, bench_dag, images, precisions)


def precision_table(
    profile: Any, bench_dag: Any, images: np.ndarray, precisions: list[str]
) -> None:
    """OpenVINO in each precision vs Keras (f32) on the same 4-app plan-shaped DAG."""
    plan = planned(profile, 4, seed=4, budget_fraction=0.25)
    apps = [(app.cut_point, 10.0) for app in plan.apps]
    reference, keras_fps = scores_and_fps(bench_dag(apps, "keras", fuse=True), images)
    print(f"\nprecision (4 apps, cuts {sorted({cut for cut, _ in apps})}, every frame):")
    print(f"{'engine':<9} {'precision':<9} {'fps':>7} {'max |Δscore| vs keras':>22}")
    print(f"{'keras':<9} {'f32':<9} {keras_fps:7.1f} {0.0:>22.4f}")
    for precision in precisions:
        try:
            scores, fps = scores_and_fps(bench_dag(apps, "openvino", True, precision), images)
        except Exception as error:  # an unsupported precision on this CPU: say so, go on
            print(f"{'openvino':<9} {precision:<9} {'-':>7} {'not run: ' + str(error)[:60]:>22}")
            continue
        delta = float(np.max(np.abs(scores - reference)))
        print(f"{'openvino':<9} {precision:<9} {fps:7.1f} {delta:>22.4f}", flush=True)


if __name__ == "__main__":
    main()
