"""Event clips: the pre-roll ring, a recording from `pre_s` before an event to `post_s` after it,
stored whole in the event store (a crash mid-clip leaves no clip, never a partial one)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_runtime.clips import CONTENT_TYPE, ClipConfig, ClipRecorder, FrameRing
from edge_runtime.detector import EventChange, EventRecord, Transition
from edge_runtime.event_store import EventStore
from edge_runtime.source_types import Frame

# Frames an hour ahead of the clock: a recording ends early when no frame comes for a while
# after its last wanted wall time, which these frames never reach.
T0 = time.time() + 3600.0
SIZE = (160, 120)


def frame(index: int, fps: float = 10.0, camera: str = "cam0") -> Frame:
    """Frame `index` of a 10 fps camera; its brightness encodes the index (readable back)."""
    image = np.full((SIZE[1], SIZE[0], 3), (index * 4) % 256, dtype=np.uint8)
    image.flags.writeable = False
    wall = T0 + index / fps
    return Frame(camera, index, wall, image, 1.0, wall)


def event(end_time: float | None = None) -> EventRecord:
    return EventRecord("ev1", "trains", "cam0", T0 + 2.0, end_time, 0.9, 20, 5, 5)


def decoded_frames(data: bytes, folder: Path) -> list[np.ndarray]:
    path = folder / "clip.webm"
    path.write_bytes(data)
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames


@given(st.lists(st.integers(min_value=1, max_value=5000), max_size=60))
def test_the_ring_keeps_the_newest_frames_within_its_age_and_byte_limits(
    sizes: list[int],
) -> None:
    ring = FrameRing(pre_s=1.0, max_bytes=8000)
    for index, size in enumerate(sizes):
        image = np.zeros(size, dtype=np.uint8)
        ring.add(Frame("cam0", index, index / 10, image, 0.0, T0 + index / 10))
        kept = ring.since(0.0)
        assert ring.bytes == sum(f.image.nbytes for f in kept) <= max(8000, size)
        assert kept[-1].sequence == index  # the newest frame is always kept
        assert all(f.wall_time >= T0 + index / 10 - 1.0 - 1e-9 for f in kept)


def test_a_clip_covers_pre_roll_to_post_roll_and_is_announced(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    store = EventStore(tmp_path / "events.db")
    stored = threading.Event()
    announced: list[str] = []

    def on_stored(event_id: str) -> None:
        announced.append(event_id)
        stored.set()

    config = ClipConfig(pre_s=1.0, post_s=1.0, fps=5.0)
    recorder = ClipRecorder(config, store, tmp_path / "tmp", on_stored=on_stored)
    for index in range(0, 21):  # 0-2 s: the pre-roll
        recorder.on_frame(frame(index))
    opened = event()
    store.save(opened)
    recorder.on_event(EventChange(Transition.NEW, opened))
    for index in range(21, 31):  # 2-3 s: the event
        recorder.on_frame(frame(index))
    ended = replace(opened, end_time=T0 + 3.0, ended_by="quiet")
    store.save(ended)
    recorder.on_event(EventChange(Transition.END, ended))
    for index in range(31, 51):  # 3-5 s: the post-roll ends at 4 s
        recorder.on_frame(frame(index))
    assert stored.wait(20), recorder.stats()
    clip = store.clip("ev1")
    assert clip is not None and clip.content_type == CONTENT_TYPE
    assert clip.data[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file
    images = decoded_frames(clip.data, tmp_path)
    # 1 s before the start to 1 s after the end at 5 fps: frames 10, 12, ..., 40.
    assert len(images) == clip.frames == 16
    assert images[0].shape == (SIZE[1], SIZE[0], 3)
    brightness = [int(np.median(image)) for image in images]
    assert abs(brightness[0] - 40) <= 4 and abs(brightness[-1] - 160) <= 4
    assert announced == ["ev1"]
    assert store.get("ev1") == replace(ended, has_clip=True)
    change = recorder.annotate(EventChange(Transition.UPDATE, ended))
    assert change.event.has_clip  # later messages about the event carry the clip too
    assert recorder.stats()["written"] == 1
    assert not list((tmp_path / "tmp").glob("*"))  # the temporary file is gone
    recorder.close()
    # Writing a clip prints nothing (FFmpeg's WebM muxer would complain about the VP8 tag).
    assert "not supported" not in capfd.readouterr().err


def test_stopping_stores_the_clips_of_events_still_recording(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    recorder = ClipRecorder(ClipConfig(pre_s=1.0, post_s=3.0, fps=5.0), store, tmp_path / "tmp")
    for index in range(0, 21):
        recorder.on_frame(frame(index))
    opened = event()
    store.save(opened)
    recorder.on_event(EventChange(Transition.NEW, opened))
    recorder.close(timeout_s=20)
    clip = store.clip("ev1")
    assert clip is not None and len(decoded_frames(clip.data, tmp_path)) == clip.frames == 6


CRASH = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.edge_runtime.test_clips import frame, event
from edge_runtime.clips import ClipConfig, ClipRecorder
from edge_runtime.detector import EventChange, Transition
from edge_runtime.event_store import EventStore
store = EventStore({db!r})
recorder = ClipRecorder(ClipConfig(pre_s=1.0, post_s=60.0, fps=5.0), store, Path({tmp!r}))
opened = event()
store.save(opened)
for index in range(0, 21):
    recorder.on_frame(frame(index))
recorder.on_event(EventChange(Transition.NEW, opened))
for index in range(21, 60):
    recorder.on_frame(frame(index))
time.sleep(1.0)  # the writer is encoding: the clip's file exists, its end does not
print(len(os.listdir({tmp!r})), flush=True)
os._exit(9)
"""


def test_a_crash_mid_clip_leaves_the_event_and_no_clip(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[2])
    db, tmp = str(tmp_path / "events.db"), str(tmp_path / "tmp")
    script = CRASH.format(root=root, db=db, tmp=tmp)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root
    )
    assert result.returncode == 9, result.stderr
    assert result.stdout.strip() == "1"  # the partial clip was on disk when the process died
    store = EventStore(db)
    stored = store.get("ev1")
    assert stored is not None and stored.end_time is None and not stored.has_clip
    assert store.clip("ev1") is None
