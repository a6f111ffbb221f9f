"""Frames of several cameras batched through the segments their DAGs share (same base)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.camera import CameraConfig, CameraManager, CameraState
from edge_runtime.dag import (
    CameraDag,
    DagFrame,
    HeadSpec,
    build_camera_dag,
    process_together,
    segment_model,
)
from edge_runtime.detector import DetectorConfig
from edge_runtime.engines import CompiledModel, compile_model
from edge_runtime.event_store import EventQuery, EventStore
from edge_runtime.runtime import CameraDeployment, EdgeRuntime
from tests.edge_runtime.test_dag import CONFIG, calibrated_base, head_at

cv2 = pytest.importorskip("cv2")
keras = pytest.importorskip("keras")
bases = pytest.importorskip("mainstream.core.bases")


class CountingCompiler:
    """Compiles models for real and records the batch size of every call of each."""

    def __init__(self) -> None:
        self.batches: dict[int, list[int]] = {}  # id of the compiled model -> batch sizes

    def __call__(self, model: Any) -> CompiledModel:
        run = compile_model(model, "keras")
        calls: list[int] = []

        def counted(batch: np.ndarray) -> np.ndarray:
            calls.append(len(batch))
            return run(batch)

        self.batches[id(counted)] = calls
        return counted

    def calls_of(self, dags: list[CameraDag], end_cut: str) -> list[int]:
        return [
            size
            for dag in dags
            for segment in dag.segments()
            if segment.end_cut == end_cut and segment.run is not None
            for size in self.batches[id(segment.run)]
        ]


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    images = np.random.default_rng(1).integers(0, 255, (24, 96, 96, 3), dtype=np.uint8)
    base = calibrated_base(images)
    cuts = bases.default_cut_points(CONFIG, base)
    fingerprint = bases.weights_fingerprint(base)
    plan = [("middle", cuts[4], 10.0), ("deep", cuts[8], 5.0)]
    heads = [
        HeadSpec(app, cut, fps, 1, head_at(base, cut, seed), fingerprint)
        for seed, (app, cut, fps) in enumerate(plan)
    ]
    return {
        "images": images,
        "base": base,
        "cuts": cuts,
        "fingerprint": fingerprint,
        "heads": heads,
    }


def build(setup: dict[str, Any], camera: str, compile_fn: Callable[[Any], CompiledModel]) -> Any:
    return build_camera_dag(
        camera=camera,
        camera_fps=10.0,
        heads=setup["heads"],
        base_model=setup["base"],
        base_fingerprint=setup["fingerprint"],
        cut_points_in_order=setup["cuts"],
        segment_model=segment_model,
        cut_shape=bases.cut_output_shape,
        compile_fn=compile_fn,
        preprocess=lambda batch: bases.preprocess(CONFIG, batch),
        warm_up=False,  # the test counts the calls frames make
    )


def test_batched_cameras_score_as_alone_with_one_call_per_shared_segment(
    setup: dict[str, Any],
) -> None:
    images = setup["images"]
    ticks = 10
    alone = CountingCompiler()
    separate = [build(setup, camera, alone) for camera in ("cam0", "cam1")]
    expected = [
        [dag.process(images[2 * t + c], t, t / 10) for c, dag in enumerate(separate)]
        for t in range(ticks)
    ]
    together = CountingCompiler()
    batched = [build(setup, camera, together) for camera in ("cam0", "cam1")]
    got = [
        process_together(
            [DagFrame(dag, images[2 * t + c], t, t / 10) for c, dag in enumerate(batched)]
        )
        for t in range(ticks)
    ]
    for tick_expected, tick_got in zip(expected, got, strict=True):
        for camera_expected, camera_got in zip(tick_expected, tick_got, strict=True):
            assert [s.app for s in camera_got] == [s.app for s in camera_expected]
            for score, reference in zip(camera_got, camera_expected, strict=True):
                assert score.score == pytest.approx(reference.score, abs=1e-5)
    assert len({round(s.score, 4) for tick in got for camera in tick for s in camera}) > 4

    middle, deep = setup["cuts"][4], setup["cuts"][8]
    # Alone: each camera calls each segment once per frame it runs on (10 and 5 fps).
    assert alone.calls_of(separate, middle) == [1] * ticks * 2
    assert alone.calls_of(separate, deep) == [1] * (ticks // 2) * 2
    # Together: one call per tick for both cameras, on a batch of two.
    assert together.calls_of(batched, middle) == [2] * ticks
    assert together.calls_of(batched, deep) == [2] * (ticks // 2)
    # Each camera's node timings still count its own frames.
    for dag in batched:
        assert [s.timing.frames for s in dag.segments()] == [ticks, ticks, ticks // 2]


def test_dags_on_different_bases_are_not_batched(setup: dict[str, Any]) -> None:
    compiler = CountingCompiler()
    first = build(setup, "cam0", compiler)
    second = build(setup, "cam1", compiler)
    second.base_fingerprint = "0" * 64  # another base: nothing can be shared
    image = setup["images"][0]
    process_together([DagFrame(first, image, 0, 0.0), DagFrame(second, image, 0, 0.0)])
    assert compiler.calls_of([first, second], setup["cuts"][4]) == [1, 1]


def write_video(path: Path, bright: tuple[int, int], frames: int = 40) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (128, 96))
    for index in range(frames):
        level = 230 if bright[0] <= index <= bright[1] else 25
        writer.write(np.full((96, 128, 3), level, dtype=np.uint8))
    writer.release()


def brightness_head() -> Any:
    """A real Keras head on the preprocessed input: its positive score rises with brightness."""
    inputs = keras.Input((96, 96, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(pooled))
    dense.set_weights([np.array([[-3.0, 3.0]] * 3, dtype=np.float32), np.zeros(2, np.float32)])
    return model


def stem_head(model: Any, cut: str) -> Any:
    """An app head deeper in the base, so the cameras' DAGs have a real segment to share."""
    inputs = keras.Input(bases.cut_output_shape(model, cut))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled))


def test_the_runtime_batches_cameras_of_one_base_and_keeps_their_events_apart(
    tmp_path: Path,
) -> None:
    model = bases.build_base(CONFIG)
    fingerprint = bases.weights_fingerprint(model)
    cuts = bases.discover_cut_points(model)
    compiler = CountingCompiler()
    spans = {"cam0": (10, 19), "cam1": (25, 34)}
    manager = CameraManager()
    runtime = EdgeRuntime(manager, EventStore(tmp_path / "events.db"), event_clock="media")
    dags = []
    for camera, span in spans.items():
        write_video(tmp_path / f"{camera}.avi", span)
        heads = [
            HeadSpec("lights", "input", 10.0, 1, brightness_head(), fingerprint),
            HeadSpec("deeper", cuts[2], 10.0, 1, stem_head(model, cuts[2]), fingerprint),
        ]
        dag = build_camera_dag(
            camera,
            10.0,
            heads,
            model,
            fingerprint,
            cuts,
            segment_model,
            bases.cut_output_shape,
            compiler,
            lambda batch: bases.preprocess(CONFIG, batch),
            warm_up=False,  # the test counts the calls frames make
        )
        dags.append(dag)
        detectors = {
            "lights": DetectorConfig(threshold=0.5, x_vote=1, quiet_time_s=0.5),
            "deeper": DetectorConfig(threshold=0.5, x_vote=1, quiet_time_s=0.5),
        }
        runtime.deploy(CameraDeployment(camera, dag, 96, detectors))
    runtime.start()
    for camera in spans:
        manager.add(
            CameraConfig(
                id=camera,
                url=str(tmp_path / f"{camera}.avi"),
                paced=False,
                queue_policy="block",
                queue_size=8,
            )
        )
    for camera in spans:
        assert manager.get(camera).wait_for_state(
            CameraState.STOPPED, CameraState.FAILED, timeout=60
        )
    deadline = time.monotonic() + 60
    while runtime.stats().cameras != {"cam0": 40, "cam1": 40} and time.monotonic() < deadline:
        time.sleep(0.05)
    runtime.stop()
    manager.stop_all()

    assert runtime.stats().cameras == {"cam0": 40, "cam1": 40}
    for camera, (start, end) in spans.items():
        events = runtime.store.query(EventQuery(app="lights", camera=camera))
        assert [(round(e.start_time * 10), round((e.end_time or 0) * 10)) for e in events] == [
            (start, end)
        ]
    sizes = compiler.calls_of(dags, cuts[2])
    assert sum(sizes) == 80, "every frame of both cameras ran through the stem once"
    assert max(sizes) == 2 and len(sizes) < 80, "frames of the two cameras were batched"
