"""The live runtime end to end on a real video file: events stored, plan swaps without restarts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.camera import CameraConfig, CameraManager, CameraState
from edge_runtime.dag import HeadSpec, build_camera_dag, segment_model
from edge_runtime.detector import DetectorConfig, EventChange, Transition
from edge_runtime.engines import compile_model
from edge_runtime.event_store import EventQuery, EventStore
from edge_runtime.runtime import CameraDeployment, EdgeRuntime
from edge_runtime.source_types import Frame

cv2 = pytest.importorskip("cv2")
keras = pytest.importorskip("keras")
bases = pytest.importorskip("mainstream.core.bases")

CONFIG = bases.BaseConfig("mobilenet_v1", input_size=96, alpha=0.25)
BRIGHT_SPANS = [(10, 19), (40, 49)]  # frames (inclusive) in which the scene lights up


def write_video(path: Path, frames: int = 60) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (128, 96))
    for index in range(frames):
        bright = any(start <= index <= end for start, end in BRIGHT_SPANS)
        writer.write(np.full((96, 128, 3), 230 if bright else 25, dtype=np.uint8))
    writer.release()


def brightness_head(threshold_sign: float = 1.0) -> Any:
    """A real Keras head on the preprocessed input: its positive score rises with brightness."""
    inputs = keras.Input((96, 96, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(pooled))
    dense.set_weights(
        [np.array([[-3.0, 3.0]] * 3, dtype=np.float32) * threshold_sign, np.zeros(2, np.float32)]
    )
    return model


@pytest.fixture(scope="module")
def base() -> tuple[Any, str]:
    model = bases.build_base(CONFIG)
    return model, bases.weights_fingerprint(model)


def deployment(base: tuple[Any, str], apps: dict[str, int]) -> CameraDeployment:
    model, fingerprint = base
    heads = [HeadSpec(app, "input", 10.0, 1, brightness_head(), fingerprint) for app in apps]
    dag = build_camera_dag(
        "cam0",
        10.0,
        heads,
        model,
        fingerprint,
        bases.discover_cut_points(model),
        segment_model,
        bases.cut_output_shape,
        lambda m: compile_model(m, "keras"),
        lambda batch: bases.preprocess(CONFIG, batch),
    )
    detectors = {
        app: DetectorConfig(threshold=0.5, x_vote=x_vote, quiet_time_s=0.5)
        for app, x_vote in apps.items()
    }
    return CameraDeployment("cam0", dag, 96, detectors)


def run_to_end(runtime: EdgeRuntime, manager: CameraManager, timeout: float = 60.0) -> None:
    camera = manager.get("cam0")
    assert camera.wait_for_state(CameraState.STOPPED, CameraState.FAILED, timeout=timeout)
    deadline = time.monotonic() + timeout
    while camera.stats().queue_depth > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the last frame taken from the queue is still being analysed
    runtime.stop()


@pytest.mark.parametrize("frames_in_flight", [1, 2])
def test_events_are_detected_stored_and_published(
    tmp_path: Path, base: tuple[Any, str], frames_in_flight: int
) -> None:
    """With two frames in flight they run at once, yet the detectors see them in order: the
    same events (the X = 2 vote would shift them otherwise)."""
    video = tmp_path / "scene.avi"
    write_video(video)
    store = EventStore(tmp_path / "events.db")
    heard: list[EventChange] = []
    manager = CameraManager()
    runtime = EdgeRuntime(
        manager,
        store,
        listeners=[heard.append],
        event_clock="media",
        frames_in_flight=frames_in_flight,
    )
    runtime.deploy(deployment(base, {"lights": 2}))
    runtime.start()
    manager.add(
        CameraConfig(id="cam0", url=str(video), paced=False, queue_policy="block", queue_size=4)
    )
    run_to_end(runtime, manager)
    manager.stop_all()

    events = store.query(EventQuery(app="lights"))
    assert len(events) == 2
    # X = 2: the second bright analysed frame opens the event; it ends at the last bright frame.
    assert [round(e.start_time * 10) for e in events] == [11, 41]
    assert [round((e.end_time or 0) * 10) for e in events] == [19, 49]
    assert all(store.snapshot(e.id) for e in events)
    assert [c.transition for c in heard if c.transition is not Transition.UPDATE] == [
        Transition.NEW,
        Transition.END,
        Transition.NEW,
        Transition.END,
    ]
    stats = runtime.stats()
    assert stats.apps["cam0/lights"].frames_analysed == 60
    assert stats.apps["cam0/lights"].events == 2


def test_plan_swap_keeps_the_camera_and_open_events(tmp_path: Path, base: tuple[Any, str]) -> None:
    video = tmp_path / "scene.avi"
    write_video(video)
    store = EventStore(tmp_path / "events.db")
    manager = CameraManager()
    runtime = EdgeRuntime(manager, store, event_clock="media")
    first = deployment(base, {"lights": 1})
    runtime.deploy(first)
    manager.add(
        CameraConfig(id="cam0", url=str(video), paced=False, queue_policy="block", queue_size=2)
    )
    camera = manager.get("cam0")
    # Drive the runtime by hand so the swap happens at a known frame: mid-event (frame 15).
    frames = []
    while len(frames) < 60:
        frame = camera.get(timeout=5)
        if frame is None:
            break
        frames.append(frame)
        runtime.process_frame(runtime.deployment("cam0") or first, frame)
        if frame.sequence == 15:
            runtime.deploy(deployment(base, {"lights": 1, "also_lights": 1}))
            assert manager.get("cam0") is camera  # the camera was not restarted
    runtime.stop()
    manager.stop_all()
    lights = store.query(EventQuery(app="lights"))
    also = store.query(EventQuery(app="also_lights"))
    assert len(lights) == 2, "the open event must survive the swap as one event"
    assert round(lights[0].start_time * 10) == 10 and round((lights[0].end_time or 0) * 10) == 19
    assert [round(e.start_time * 10) for e in also] == [16, 40]
    assert [f.sequence for f in frames] == list(range(60))


def test_wall_event_clock_anchors_media_time_and_never_goes_back(tmp_path: Path) -> None:
    runtime = EdgeRuntime(CameraManager(), EventStore(tmp_path / "events.db"))
    image = np.zeros((4, 4, 3), np.uint8)

    def frame(sequence: int, media_s: float, wall_s: float) -> Frame:
        return Frame("cam0", sequence, media_s, image, 0.0, wall_s)

    wall = 1_800_000_000.0
    first = runtime._event_time(frame(0, 0.0, wall))
    later = runtime._event_time(frame(1, 2.5, wall + 2.6))  # decoding jitter is ignored
    assert first == wall and later == wall + 2.5
    restarted = runtime._event_time(frame(2, 0.0, wall + 9.0))  # the file source reopened
    assert restarted == wall + 9.0
    assert runtime._event_time(frame(3, 0.5, wall + 9.5)) == wall + 9.5

    media = EdgeRuntime(CameraManager(), EventStore(tmp_path / "media.db"), event_clock="media")
    assert media._event_time(frame(0, 3.0, wall)) == 3.0
