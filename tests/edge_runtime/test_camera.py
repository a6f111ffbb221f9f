"""Cameras: state machine, backoff, frame queue, and real streams that die and come back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge_runtime.camera import (
    ALLOWED_TRANSITIONS,
    Camera,
    CameraConfig,
    CameraManager,
    CameraState,
    CameraStateMachine,
    FrameQueue,
    FrameRateGate,
    InvalidTransitionError,
    StateChange,
    backoff_delay,
)
from edge_runtime.source_types import Frame
from mainstream.core.errors import ConflictError, InvalidParameterError, NotFoundError
from tests.edge_runtime.servers import (
    MjpegServer,
    RtspServer,
    index_brightness,
    rtsp_server_unavailable_reason,
    write_test_video,
)

S = CameraState
FAST_RETRY = {"backoff_base_s": 0.05, "backoff_cap_s": 0.2, "backoff_jitter": 0.0}
FAST_PROBE = {"analyzeduration": "500000", "probesize": "65536"}


def make_frame(sequence: int) -> Frame:
    return Frame("cam", sequence, sequence / 10, np.zeros((2, 2, 3), np.uint8), 0.0, time.time())


class StateRecorder:
    """Collects a camera's state changes, in the order they were announced."""

    def __init__(self) -> None:
        self.changes: list[StateChange] = []

    def __call__(self, change: StateChange) -> None:
        self.changes.append(change)

    @property
    def states(self) -> list[CameraState]:
        return [change.current for change in self.changes]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("camera") / "clip.avi", frames=10, fps=20)


# -- state machine -----------------------------------------------------------------------------


def test_state_machine_allows_exactly_the_documented_transitions() -> None:
    for source in CameraState:
        for target in CameraState:
            machine = CameraStateMachine("cam", source)
            if target in ALLOWED_TRANSITIONS.get(source, frozenset()):
                change = machine.transition(target, "because")
                assert (change.previous, change.current, change.reason) == (
                    source,
                    target,
                    "because",
                )
                assert machine.state is target
            else:
                with pytest.raises(InvalidTransitionError, match=f"from {source.value} to"):
                    machine.transition(target)
                assert machine.state is source


def test_state_machine_rejects_skipping_start() -> None:
    machine = CameraStateMachine("cam")
    assert machine.state is S.STOPPED
    with pytest.raises(InvalidTransitionError, match="stopped to streaming"):
        machine.transition(S.STREAMING)
    machine.transition(S.STARTING)
    machine.transition(S.RECONNECTING)
    with pytest.raises(InvalidTransitionError):
        machine.transition(S.STARTING)
    machine.transition(S.FAILED)
    with pytest.raises(InvalidTransitionError):
        machine.transition(S.STREAMING)  # a failed camera must be started again


# -- backoff, rate gate, queue -----------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = [backoff_delay(n, base_s=0.5, cap_s=4.0) for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert backoff_delay(10_000, base_s=0.5, cap_s=4.0) == 4.0  # no overflow


def test_backoff_jitter_only_shortens() -> None:
    assert backoff_delay(3, base_s=1, cap_s=60, jitter=0.5, random_fraction=0.0) == 4.0
    assert backoff_delay(3, base_s=1, cap_s=60, jitter=0.5, random_fraction=0.5) == 3.0
    assert backoff_delay(3, base_s=1, cap_s=60, jitter=0.5, random_fraction=0.999) > 2.0
    assert backoff_delay(9, base_s=1, cap_s=60, jitter=1.0, random_fraction=0.25) == 45.0


@pytest.mark.parametrize(
    "arguments",
    [
        {"attempt": 0, "base_s": 1, "cap_s": 2},
        {"attempt": 1, "base_s": 0, "cap_s": 2},
        {"attempt": 1, "base_s": 3, "cap_s": 2},
        {"attempt": 1, "base_s": 1, "cap_s": 2, "jitter": 1.5},
        {"attempt": 1, "base_s": 1, "cap_s": 2, "random_fraction": 1.0},
    ],
)
def test_backoff_rejects_bad_parameters(arguments: dict[str, float]) -> None:
    with pytest.raises(InvalidParameterError):
        backoff_delay(**arguments)  # type: ignore[arg-type]


def test_frame_rate_gate_thins_evenly() -> None:
    gate = FrameRateGate(10)
    kept_30 = [i for i in range(30) if gate.keep(i / 30)]
    assert kept_30 == list(range(0, 30, 3))
    gate = FrameRateGate(10)
    assert sum(gate.keep(i / 25) for i in range(250)) == 100  # 10 s of 25 fps
    gate = FrameRateGate(10)
    assert all(gate.keep(i / 5) for i in range(20))  # a slower source is never thinned
    assert gate.keep(0.0)  # the clock restarted: start over


def test_frame_queue_drops_the_oldest_and_counts() -> None:
    queue = FrameQueue(3)
    dropped = [queue.put(make_frame(i)) for i in range(5)]
    assert [d.sequence if d else None for d in dropped] == [None, None, None, 0, 1]
    assert queue.dropped == 2 and len(queue) == 3
    assert [queue.get(0).sequence for _ in range(3)] == [2, 3, 4]  # type: ignore[union-attr]
    started = time.monotonic()
    assert queue.get(0.1) is None
    assert 0.08 <= time.monotonic() - started < 1.0
    with pytest.raises(InvalidParameterError):
        FrameQueue(0)


def test_frame_queue_put_wait_blocks_until_room_or_stop() -> None:
    queue = FrameQueue(1)
    stop = threading.Event()
    assert queue.put_wait(make_frame(0), stop)
    taken = threading.Event()

    def take() -> None:
        taken.set()
        queue.get()

    threading.Timer(0.1, take).start()
    assert queue.put_wait(make_frame(1), stop)
    assert taken.is_set()  # it returned only once the consumer made room
    threading.Timer(0.1, stop.set).start()
    assert not queue.put_wait(make_frame(2), stop)
    assert queue.get(0).sequence == 1  # type: ignore[union-attr]


# -- config ------------------------------------------------------------------------------------


def test_camera_config_validates_at_the_boundary() -> None:
    config = CameraConfig(id="gate-1", url="synthetic://", resolution="320x240")
    assert config.resolution == (320, 240)
    assert config.watchdog_s == 20 and config.max_reconnect_attempts is None
    for bad in (
        {"id": "bad id!", "url": "synthetic://"},
        {"id": "c", "url": "gopher://x"},
        {"id": "c", "url": "synthetic://", "resolution": "wide"},
        {"id": "c", "url": "synthetic://", "resolution": (0, 10)},
        {"id": "c", "url": "synthetic://", "queue_size": 0},
        {"id": "c", "url": "synthetic://", "backoff_base_s": 5, "backoff_cap_s": 1},
        {"id": "c", "url": "synthetic://", "colour": "red"},
    ):
        with pytest.raises(ValidationError):
            CameraConfig(**bad)
    with pytest.raises(ValidationError, match="gopher"):
        CameraConfig(id="c", url="gopher://x")


# -- cameras on files and synthetic sources ----------------------------------------------------


def test_camera_plays_a_file_to_the_end(clip: Path) -> None:
    recorder = StateRecorder()
    config = CameraConfig(id="yard", url=str(clip), paced=False, queue_size=16)  # room for all
    camera = Camera(config, on_state_change=recorder)
    camera.start()
    frames = list(camera.frames())
    assert [frame.sequence for frame in frames] == list(range(10))
    brightness = [int(frame.image[60, 4, 0]) for frame in frames]
    assert brightness == pytest.approx([index_brightness(i) for i in range(10)], abs=8)
    assert recorder.states == [S.STARTING, S.STREAMING, S.STOPPED]
    assert recorder.changes[-1].reason == "end of stream"
    stats = camera.stats()
    assert stats.state is S.STOPPED and stats.frames_decoded == stats.frames_delivered == 10
    assert stats.frames_dropped == 0 and stats.last_error is None
    assert stats.frame_size == (160, 120) and stats.decode_ms_avg > 0
    assert camera.latest_frame() is frames[-1]


def test_camera_paces_a_file_at_native_fps(clip: Path) -> None:
    camera = Camera(CameraConfig(id="yard", url=str(clip), paced=True, loop=True))
    with camera:
        started = time.monotonic()
        frames = []
        while time.monotonic() - started < 1.2:
            frame = camera.get(timeout=1)
            assert frame is not None
            frames.append(frame)
        stats = camera.stats()
    assert 18 <= len(frames) <= 27  # 20 fps for 1.2 s, minus start-up
    gaps = np.diff([frame.wall_time for frame in frames])
    assert np.median(gaps) == pytest.approx(0.05, abs=0.015)
    assert stats.fps_in == pytest.approx(20, abs=4) and stats.frames_dropped == 0


def test_camera_loops_a_file_and_stops_promptly_and_idempotently(clip: Path) -> None:
    recorder = StateRecorder()
    camera = Camera(
        # "block" so that a slow test machine cannot lose the first frames
        CameraConfig(id="yard", url=str(clip), loop=True, paced=False, queue_policy="block"),
        on_state_change=recorder,
    )
    camera.start()
    camera.start()  # no effect while running
    frames = [camera.get(timeout=2) for _ in range(25)]
    assert all(frame is not None for frame in frames)
    timestamps = [frame.timestamp for frame in frames if frame is not None]
    assert timestamps == sorted(timestamps) and timestamps[24] == pytest.approx(24 / 20)
    started = time.monotonic()
    camera.stop()
    camera.stop()
    assert time.monotonic() - started < 1.0
    assert recorder.states == [S.STARTING, S.STREAMING, S.STOPPED]
    assert camera.state is S.STOPPED
    camera.start()  # a stopped camera can start again, frame numbers keep growing
    frame = camera.get(timeout=2)
    camera.stop()
    assert frame is not None and frame.sequence > frames[-1].sequence  # type: ignore[union-attr]


def test_slow_consumer_loses_the_oldest_frames_never_blocks_capture() -> None:
    camera = Camera(CameraConfig(id="s", url="synthetic://?size=32x24", paced=False, queue_size=4))
    with camera:
        assert camera.wait_for_state(S.STREAMING, timeout=2)
        time.sleep(0.3)  # nobody reads
        stats = camera.stats()
        queued = [camera.get(0) for _ in range(4)]
    assert stats.frames_dropped > 0 and stats.dropped_fps > 0
    assert stats.queue_depth == 4
    # Nothing was consumed: every delivered frame is either still queued or was dropped
    # (one frame may be between the two counters at the moment of the snapshot).
    assert stats.frames_delivered - stats.frames_dropped - stats.queue_depth in (0, 1)
    sequences = [frame.sequence for frame in queued if frame is not None]
    assert len(sequences) == 4 and sequences == sorted(sequences)
    assert sequences[0] > 0  # the first frames were pushed out


def test_block_policy_hands_every_frame_to_a_slow_consumer() -> None:
    camera = Camera(
        CameraConfig(
            id="offline",
            url="synthetic://?size=32x24&frames=30",
            paced=False,
            queue_size=2,
            queue_policy="block",
        )
    )
    camera.start()
    sequences = []
    for frame in camera.frames():
        sequences.append(frame.sequence)
        time.sleep(0.002)
    assert sequences == list(range(30))
    assert camera.stats().frames_dropped == 0


def test_camera_thins_to_the_configured_fps_and_resizes() -> None:
    camera = Camera(
        CameraConfig(
            id="s",
            url="synthetic://?fps=30&size=64x48&frames=60",
            fps=10,
            paced=False,
            resolution=(32, 24),
            queue_size=100,
        )
    )
    camera.start()
    frames = list(camera.frames())
    assert [frame.sequence for frame in frames] == list(range(0, 60, 3))
    assert all(frame.image.shape == (24, 32, 3) for frame in frames)
    stats = camera.stats()
    assert stats.frames_decoded == 60 and stats.frames_skipped == 40
    assert stats.frames_delivered == 20 and stats.skipped_fps > 0


def test_missing_file_fails_with_a_clear_error_in_the_thread(tmp_path: Path) -> None:
    recorder = StateRecorder()
    camera = Camera(
        CameraConfig(id="c", url=f"file://{tmp_path}/absent.mp4"), on_state_change=recorder
    )
    camera.start()
    assert camera.wait_for_state(S.FAILED, timeout=3)
    assert recorder.states == [S.STARTING, S.FAILED]
    assert camera.stats().last_error == f"video file not found: {tmp_path}/absent.mp4"
    assert list(camera.frames()) == []
    camera.stop()
    assert camera.state is S.FAILED  # the error stays visible


def test_not_a_video_fails_without_retrying(tmp_path: Path) -> None:
    garbage = tmp_path / "notes.mp4"
    garbage.write_text("not a video")
    camera = Camera(CameraConfig(id="c", url=str(garbage)))
    camera.start()
    assert camera.wait_for_state(S.FAILED, timeout=3)
    stats = camera.stats()
    assert "cannot decode" in (stats.last_error or "") and stats.reconnects == 0


def test_unreachable_stream_gives_up_after_max_attempts() -> None:
    recorder = StateRecorder()
    camera = Camera(
        CameraConfig(
            id="c",
            url="http://127.0.0.1:9/video.mjpg",
            max_reconnect_attempts=2,
            open_timeout_s=1,
            **FAST_RETRY,
        ),
        on_state_change=recorder,
    )
    camera.start()
    assert camera.wait_for_state(S.FAILED, timeout=5)
    stats = camera.stats()
    assert stats.reconnects == 2
    assert (stats.last_error or "").startswith("gave up after 3 failed attempt(s): cannot open")
    assert recorder.states == [S.STARTING, S.RECONNECTING, S.FAILED]


def test_listener_errors_do_not_stop_the_camera() -> None:
    def broken_listener(change: StateChange) -> None:
        raise RuntimeError("listener bug")

    camera = Camera(CameraConfig(id="c", url="synthetic://?size=16x16&frames=5", paced=False))
    camera.add_state_listener(broken_listener)
    camera.start()
    assert len(list(camera.frames())) == 5
    assert camera.state is S.STOPPED


# -- cameras on live network streams -----------------------------------------------------------


def test_mjpeg_camera_reconnects_after_the_server_dies_and_returns() -> None:
    recorder = StateRecorder()
    with MjpegServer(fps=25) as server:
        camera = Camera(
            CameraConfig(id="door", url=server.url, watchdog_s=2, open_timeout_s=1, **FAST_RETRY),
            on_state_change=recorder,
        )
        with camera:
            assert camera.wait_for_state(S.STREAMING, timeout=5)
            before = camera.get(timeout=2)
            assert before is not None and before.image.shape == (120, 160, 3)
            server.kill()
            assert camera.wait_for_state(S.RECONNECTING, timeout=3)
            time.sleep(0.3)  # a few refused attempts
            assert camera.state is S.RECONNECTING
            assert camera.stats().last_error is not None
            server.restart()  # same port
            assert camera.wait_for_state(S.STREAMING, timeout=5)
            while (
                frame := camera.get(timeout=2)
            ) is not None and frame.sequence <= before.sequence + 3:
                pass
            assert frame is not None
            stats = camera.stats()
    assert recorder.states[:4] == [S.STARTING, S.STREAMING, S.RECONNECTING, S.STREAMING]
    assert stats.reconnects >= 1 and stats.last_error is None  # cleared once frames flow
    assert stats.fps_in > 0 and stats.last_frame_time is not None
    assert camera.state is S.STOPPED


def test_watchdog_reconnects_a_stream_that_stops_sending() -> None:
    recorder = StateRecorder()
    with MjpegServer(fps=25) as server:
        config = CameraConfig(
            id="hung", url=server.url, watchdog_s=1.0, open_timeout_s=1, **FAST_RETRY
        )
        with Camera(config, on_state_change=recorder) as camera:
            assert camera.wait_for_state(S.STREAMING, timeout=5)
            server.stall()  # connection stays open, frames stop
            stalled_at = time.monotonic()
            assert camera.wait_for_state(S.RECONNECTING, timeout=4)
            silent_s = time.monotonic() - stalled_at
            assert 0.8 <= silent_s <= 3.0
            assert "watchdog" in (camera.stats().last_error or "")
            server.resume()
            assert camera.wait_for_state(S.STREAMING, timeout=5)
    assert recorder.states[:4] == [S.STARTING, S.STREAMING, S.RECONNECTING, S.STREAMING]


def retry_attempts(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The attempt numbers of the camera's "attempt N failed; retrying" log lines."""
    return [
        int(record.args[1])  # type: ignore[index]
        for record in caplog.records
        if record.name == "edge_runtime.camera" and "retrying in" in record.msg
    ]


def test_a_flapping_source_keeps_growing_the_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="edge_runtime.camera")
    recorder = StateRecorder()
    retry = {"backoff_base_s": 0.05, "backoff_cap_s": 1.0, "backoff_jitter": 0.0}
    with MjpegServer(fps=50, frames_per_connection=4) as server:
        config = CameraConfig(
            id="flaky",
            url=server.url,
            open_timeout_s=1,
            watchdog_s=2,
            stable_after_s=30,
            ffmpeg_options=FAST_PROBE,
            **retry,
        )
        with Camera(config, on_state_change=recorder) as camera:
            deadline = time.monotonic() + 8
            while len(retry_attempts(caplog)) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            frames = camera.stats().frames_delivered
    attempts = retry_attempts(caplog)
    assert recorder.states.count(S.STREAMING) >= 2 and frames > 0  # it did connect, repeatedly
    assert attempts[:4] == [1, 2, 3, 4]  # never back to 1 although frames came in between


def test_a_stream_healthy_for_stable_after_s_starts_the_backoff_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="edge_runtime.camera")
    retry = {"backoff_base_s": 0.05, "backoff_cap_s": 1.0, "backoff_jitter": 0.0}
    with MjpegServer(fps=50, frames_per_connection=25) as server:  # ~0.5 s per connection
        config = CameraConfig(
            id="ok",
            url=server.url,
            open_timeout_s=1,
            watchdog_s=2,
            stable_after_s=0.1,
            ffmpeg_options=FAST_PROBE,
            **retry,
        )
        with Camera(config):
            deadline = time.monotonic() + 8
            while len(retry_attempts(caplog)) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
    assert retry_attempts(caplog)[:3] == [1, 1, 1]


def test_stop_does_not_hang_on_a_blocked_read() -> None:
    with MjpegServer(fps=25) as server:
        camera = Camera(CameraConfig(id="hung", url=server.url, watchdog_s=20), stop_timeout_s=0.5)
        camera.start()
        assert camera.wait_for_state(S.STREAMING, timeout=5)
        server.stall()
        time.sleep(0.3)  # the decode thread is now blocked inside FFmpeg's read
        delivered = camera.stats().frames_delivered
        started = time.monotonic()
        camera.stop()
        assert time.monotonic() - started < 1.5
        assert camera.state is S.STOPPED
        server.resume()  # the old read returns; its thread must publish nothing
        time.sleep(0.3)
        assert camera.stats().frames_delivered == delivered
        assert camera.state is S.STOPPED


@pytest.fixture(scope="module")
def rtsp_available() -> None:
    reason = rtsp_server_unavailable_reason()
    if reason is not None:
        pytest.skip(f"RTSP test server cannot run: {reason}")


@pytest.mark.usefixtures("rtsp_available")
def test_rtsp_camera_reconnects_after_the_server_is_killed_and_restarted() -> None:
    recorder = StateRecorder()
    with RtspServer(fps=15, size=(320, 240)) as server:
        config = CameraConfig(
            id="rtsp",
            url=server.url,
            ffmpeg_options=FAST_PROBE,
            watchdog_s=2,
            open_timeout_s=2,
            **FAST_RETRY,
        )
        with Camera(config, on_state_change=recorder) as camera:
            assert camera.wait_for_state(S.STREAMING, timeout=8)
            frame = camera.get(timeout=3)
            assert frame is not None and frame.image.shape == (240, 320, 3)
            server.kill()
            assert camera.wait_for_state(S.RECONNECTING, timeout=4)
            server.restart()
            assert camera.wait_for_state(S.STREAMING, timeout=8)
            assert camera.get(timeout=3) is not None
            stats = camera.stats()
    assert recorder.states[:4] == [S.STARTING, S.STREAMING, S.RECONNECTING, S.STREAMING]
    assert stats.reconnects >= 1


# -- several cameras ---------------------------------------------------------------------------


def test_manager_changes_one_camera_without_touching_the_others() -> None:
    changes = StateRecorder()
    with CameraManager(on_state_change=changes) as manager:
        steady = manager.add(CameraConfig(id="steady", url="synthetic://?fps=50&size=32x24"))
        other = manager.add(CameraConfig(id="other", url="synthetic://?fps=50&size=32x24"))
        assert steady.wait_for_state(S.STREAMING, timeout=2)
        assert other.wait_for_state(S.STREAMING, timeout=2)
        with pytest.raises(ConflictError):
            manager.add(CameraConfig(id="steady", url="synthetic://"))
        steady_changes = sum(1 for change in changes.changes if change.camera_id == "steady")

        updated = manager.update(other.config.model_copy(update={"resolution": (16, 12)}))
        assert updated is other
        assert other.wait_for_state(S.STREAMING, timeout=2)
        deadline = time.monotonic() + 2
        while (frame := other.get(timeout=1)) is not None and frame.image.shape != (12, 16, 3):
            assert time.monotonic() < deadline
        assert manager.update(other.config) is other  # unchanged config: nothing restarts

        manager.remove("other")
        assert other.state is S.STOPPED and "other" not in manager
        with pytest.raises(NotFoundError):
            manager.get("other")
        with pytest.raises(NotFoundError):
            manager.remove("other")

        manager.sync([steady.config, CameraConfig(id="new", url="synthetic://?size=16x16")])
        assert sorted(manager.ids()) == ["new", "steady"]
        delivered = steady.stats().frames_delivered
        time.sleep(0.2)
        stats = manager.stats()
        assert set(stats) == {"new", "steady"}
        assert stats["steady"].frames_delivered > delivered
        assert sum(1 for c in changes.changes if c.camera_id == "steady") == steady_changes
        assert stats["steady"].to_dict()["state"] == "streaming"
    assert steady.state is S.STOPPED and manager.get("new").state is S.STOPPED
