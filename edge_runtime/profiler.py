"""Measure this machine's cost profile of a base model (DESIGN §3).

The scheduler plans with the cumulative cost C(k) of running the base from the input to each
cut point; the runtime's fidelity depends on these numbers being measured here, with the engine
the daemon will use, in steady state (compiled, warmed up, batch 1), with as many calls at
once as the runtime keeps frames in flight.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import partial
from typing import Any

import numpy as np

from edge_runtime.engines import (
    CompiledModel,
    EngineName,
    EngineOptions,
    Precision,
    compile_model,
    effective_precision,
)
from mainstream.core.bases import BaseConfig, build_base, default_cut_points, split_model
from scheduler.problem import CutPoint, Profile

DEFAULT_BUDGET_UTILISATION = 0.8


def time_per_call_ms(
    run: Callable[[], object], warmup: int = 3, repeats: int = 15, concurrency: int = 1
) -> float:
    """Median wall time of one call after warm-up (median: robust to a noisy neighbour).

    `concurrency` > 1: that many threads call at once, as a runtime with that many frames in
    flight does, and each call is timed while the others run (their median).
    """
    for _ in range(warmup):
        run()

    def timed_calls() -> list[float]:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            times.append((time.perf_counter() - started) * 1000.0)
        return times

    if concurrency <= 1:
        return statistics.median(timed_calls())
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(timed_calls) for _ in range(concurrency)]
        return statistics.median([ms for future in futures for ms in future.result()])


def head_model(base: Any, classes: int = 2) -> Any:
    """A typical app head (pooling + dense + softmax) on the base's output, for total_cost."""
    import keras  # TensorFlow loads only when a model is built or run

    inputs = keras.Input(base.output_shape[1:])
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(pooled))


def _branch_overhead(
    model: Any,
    head: Any,
    cut: CutPoint,
    tensor: np.ndarray,
    total_ms: float,
    compiled: Callable[[Any], CompiledModel],
    timed: Callable[[Callable[[], object]], float],
    progress: Callable[[str], None] | None,
) -> float:
    """The branch from `cut` timed as one model, less what the cost model already charges."""
    import keras  # TensorFlow loads only when a model is built or run

    if progress:
        progress(f"timing the branch {cut.name} -> output")
    _, rest = split_model(model, cut.name)
    cut_tensor = keras.Input(shape=tuple(tensor.shape[1:]))
    branch = compiled(keras.Model(cut_tensor, head(rest(cut_tensor))))
    branch_ms = timed(lambda: branch(tensor))
    return max(0.0, branch_ms - (total_ms - cut.cumulative_cost))


def measure_decode_ms(width: int, height: int, input_size: int, frames: int = 30) -> float:
    """Decode (MJPEG) and resize one camera frame of the given resolution to the model input."""
    import cv2  # OpenCV loads only when frames are decoded or drawn

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="mainstream-profile-") as folder:
        path = os.path.join(folder, "probe.avi")
        writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (width, height))
        base_image = cv2.GaussianBlur(
            rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (9, 9), 0
        )
        for index in range(frames):
            writer.write(np.roll(base_image, index * 3, axis=1))
        writer.release()
        capture = cv2.VideoCapture(path)
        samples = []
        while True:
            started = time.perf_counter()
            ok, frame = capture.read()
            if not ok:
                break
            cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (input_size, input_size))
            samples.append((time.perf_counter() - started) * 1000.0)
        capture.release()
    return statistics.median(samples[3:] or samples) if samples else 0.0


def measure_profile(
    config: BaseConfig,
    engine: EngineName = "keras",
    cut_points: list[str] | None = None,
    camera_resolution: tuple[int, int] | None = None,
    repeats: int = 15,
    progress: Callable[[str], None] | None = None,
    base_model: Any = None,
    split_per_cut: bool = True,
    precision: Precision = "f32",
    frames_in_flight: int = 1,
) -> Profile:
    """Measure C(k) for every cut point, the total cost, the per-split overhead and decode cost.

    With `split_per_cut`, the branch from every cut point (the rest of the network and a
    head, compiled as one model like an app's candidate) is timed too, and what it costs
    beyond `total - C(k)` is that cut's split overhead: engines that convert tensors to their
    own layout pay more where the tensor is large (early cuts). The profile records the
    engine, the precision and the frames in flight it was measured with
    (`profile_matches_machine`): with `frames_in_flight` > 1, OpenVINO models are compiled
    with that many streams and every call is timed while as many run at once, which is what a
    frame costs the node then (the budget counts that many streams, :func:`default_budget`).
    """
    model = base_model if base_model is not None else build_base(config)
    cuts = cut_points or default_cut_points(config, model)
    options = EngineOptions(precision=precision, streams=frames_in_flight)
    timed = partial(time_per_call_ms, repeats=repeats, concurrency=frames_in_flight)
    size = config.input_size
    frame = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)

    def compiled(keras_model: Any) -> CompiledModel:
        return compile_model(keras_model, engine, options)

    cumulative: list[CutPoint] = [CutPoint(name=cuts[0], cumulative_cost=0.0)]
    tensors = {cuts[0]: frame}
    for cut in cuts[1:]:
        if progress:
            progress(f"timing input -> {cut}")
        stem, _ = split_model(model, cut)
        run = compiled(stem)
        cost = timed(partial(run, frame))
        tensors[cut] = run(frame)
        # Timing noise must not make the cumulative cost go down along the network.
        cumulative.append(
            CutPoint(name=cut, cumulative_cost=max(cost, cumulative[-1].cumulative_cost))
        )

    if progress:
        progress("timing the whole network with a head")
    body = compiled(model)
    head = compiled(head_model(model))
    features = body(frame)
    body_ms = timed(lambda: body(frame))
    head_ms = timed(lambda: head(features))
    total = max(body_ms, cumulative[-1].cumulative_cost) + head_ms

    split_overhead = 0.0
    if len(cuts) > 2:
        middle = cuts[len(cuts) // 2]
        stem_part, rest_part = split_model(model, middle)
        first, second = compiled(stem_part), compiled(rest_part)
        middle_tensor = first(frame)
        chained = timed(lambda: first(frame)) + timed(lambda: second(middle_tensor))
        split_overhead = max(0.0, chained - body_ms)

    if split_per_cut:
        branch_head = head_model(model)
        cumulative = [
            cut.model_copy(
                update={
                    "split_overhead": _branch_overhead(
                        model,
                        branch_head,
                        cut,
                        tensors[cut.name],
                        total,
                        compiled,
                        timed,
                        progress,
                    )
                }
            )
            for cut in cumulative
        ]

    decode_ms = 0.0
    if camera_resolution is not None:
        if progress:
            progress("timing decode")
        decode_ms = measure_decode_ms(camera_resolution[0], camera_resolution[1], size)

    return Profile(
        base_model=config.name,
        cost_unit="ms",
        cut_points=cumulative,
        total_cost=total,
        decode_cost=decode_ms,
        split_overhead=split_overhead,
        engine=engine,
        precision=effective_precision(engine, precision),
        frames_in_flight=frames_in_flight,
        input_size=size,
        alpha=config.alpha,
        weights=config.weights,
        head_cost=head_ms,
        camera_resolution=list(camera_resolution) if camera_resolution else None,
        machine=machine_description(),
        measured_at=datetime.now(timezone.utc).isoformat(),
    )


def machine_description() -> dict[str, object]:
    """Enough to notice that a stored profile was measured on another machine or engine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count() or 1, "system": platform.system()}


def profile_matches_machine(
    profile: Profile, engine: str, precision: str = "f32", frames_in_flight: int = 1
) -> bool:
    """A profile is reusable only for the same engine, precision and frames in flight on the
    same kind of machine (a profile that does not say its frames in flight had 1).

    A profile that does not say its precision was measured before precision was asked for
    explicitly: OpenVINO may have run it in bf16, so it is not reused for anything.
    """
    extra = profile.model_extra or {}
    return (
        extra.get("engine") == engine
        and extra.get("precision") == effective_precision(engine, precision)
        and extra.get("machine") == machine_description()
        and extra.get("frames_in_flight", 1) == frames_in_flight
    )


def default_budget(utilisation: float = DEFAULT_BUDGET_UTILISATION, cores: float = 1.0) -> float:
    """Budget in ms of compute per second: a share of what `cores` inference streams can do
    (the runtime's frames in flight: each runs on its own share of the cores)."""
    return 1000.0 * utilisation * cores
