"""Runtime throughput benchmark: No-Sharing vs Max-Sharing vs the scheduler's plan, both engines.

For 1, 2, 4 and 8 apps on one base model, every app analyses every frame; the table gives
frames per second through the whole DAG, the ideal fps computed from each node timed in
isolation, preprocessing included (so `ratio` shows the executor's own overhead), the speed-up
over No-Sharing, and the process RSS. Each figure is the median of `--rounds` rounds run in
rotating order. No-Sharing runs one separate full model per app, one after the other (the
baseline). Max-Sharing and the plan run as the node runs them (`runtime.fuse_heads`): the last
segment and its heads run as one model, and with the Keras engine the heads that share a cut
point run in one call, while the ideal times each segment and each app's head alone, so a ratio
above 1 is the fusion's gain. A last table runs the 4-app plan-shaped DAG with OpenVINO in each
precision (`runtime.openvino_precision`) next to Keras on the same frames: fps and the largest
change of any app's score. Run: `python bench/runtime.py [--input-size 224 --alpha 1.0 --frames 60]`.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Run as `python bench/runtime.py`, this folder comes first on the import path and its sibling
# `scheduler.py` / `trainer.py` would hide the packages of the same name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

from edge_runtime.dag import CameraDag, HeadSpec  # noqa: E402
from edge_runtime.deployer import camera_dag  # noqa: E402
from edge_runtime.engines import openvino_available  # noqa: E402
from edge_runtime.profiler import measure_profile, time_per_call_ms  # noqa: E402


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


def run_dag(dag: CameraDag, images: np.ndarray) -> float:
    """Frames per second of one pass over `images` (every app on every frame)."""
    for index in range(3):
        dag.process(images[index], index, 0.0)
    started = time.perf_counter()
    for index, image in enumerate(images):
        dag.process(image, index, index / 10)
    return len(images) / (time.perf_counter() - started)


def cost_ms_per_s(dag: CameraDag, images: np.ndarray, seconds: float) -> float:
    """Compute per second of video when every app runs at its planned rate (camera at 10 fps)."""
    frames = int(seconds * 10)
    for index in range(3):
        dag.process(images[index], index, 0.0)
    started = time.perf_counter()
    for index in range(frames):
        dag.process(images[index % len(images)], index, 1.0 + index / 10)
    return (time.perf_counter() - started) * 1000.0 / seconds


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


def ideal_fps(dag: CameraDag, sample: np.ndarray) -> float:
    """Each node timed alone on the tensor it receives; the ideal is the sum of those times.

    Preprocessing the camera frame counts as a node: every executor has to do it.
    """
    frame = sample[np.newaxis]
    total_ms = time_per_call_ms(lambda: dag.preprocess(frame))
    tensor = dag.preprocess(frame)
    for segment in dag.segments():
        if segment.run is not None:
            run, inputs = segment.run, tensor
            total_ms += time_per_call_ms(lambda run=run, inputs=inputs: run(inputs))  # type: ignore[misc]
            tensor = segment.run(tensor)
        for head in segment.heads:
            run, inputs = head.run, tensor
            total_ms += time_per_call_ms(lambda run=run, inputs=inputs: run(inputs))  # type: ignore[misc]
    return 1000.0 / total_ms


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
    parser.add_argument("--engines", default="keras,openvino")
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
    app_counts = [int(count) for count in arguments.apps.split(",")]

    print(
        f"MobileNet v1 alpha {config.alpha} at {config.input_size} px, {arguments.frames} frames per run, "
        f"median of {arguments.rounds} rounds in rotating order"
    )

    def bench_dag(
        apps: list[tuple[str, float]], engine: str, fuse: bool, precision: str = "f32"
    ) -> CameraDag:
        """A DAG of untrained heads at (cut point, fps), built as the node builds it."""
        heads = [
            HeadSpec(f"app{i}", cut, fps, 1, untrained_head(base, cut, i), fingerprint)
            for i, (cut, fps) in enumerate(apps)
        ]
        return camera_dag(
            "bench",
            10.0,
            heads,
            base,
            fingerprint,
            config,
            engine,
            fuse,
            precision,  # type: ignore[arg-type]
        )

    rows = []
    profile_for_plan = None
    for engine in engines:
        profile = measure_profile(config, engine, base_model=base, repeats=9)
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
                    [(cut, 10.0) for cut in cuts], engine, fuse=strategy != "no-sharing"
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
                    measured_runs[strategy].append(run_dag(dags[strategy], images))
                    ideal_runs[strategy].append(ideal_fps(dags[strategy], images[0]))
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
                    )
                )
            del dags
            for row in rows[-3:]:
                speedup = row[3] / fps_by_strategy["no-sharing"]
                print(
                    f"{row[0]:<9} apps={row[1]:<2} {row[2]:<12} fps {row[3]:7.1f}  ideal {row[4]:7.1f}  "
                    f"ratio {row[5]:4.2f}  vs no-sharing {speedup:5.2f}x  rss {row[6]:6.0f} MiB  cuts {row[7]}",
                    flush=True,
                )
            dag = bench_dag([(app.cut_point, app.fps) for app in plan.apps], engine, fuse=True)
            measured_cost = cost_ms_per_s(dag, images, arguments.plan_seconds)
            print(
                f"{engine:<9} apps={apps:<2} plan at its rates (budget {plan.budget:.0f} ms/s, "
                f"fps {sorted(app.fps for app in plan.apps)}): predicted {plan.total_cost:6.1f} ms/s, "
                f"measured {measured_cost:6.1f} ms/s, ratio {measured_cost / plan.total_cost:4.2f}",
                flush=True,
            )

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
