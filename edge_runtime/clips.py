"""Event clips: a short video around each event, from a per-camera ring of recent frames.

Every camera's delivered frames pass :meth:`ClipRecorder.on_frame` (a camera frame listener),
thinned to `fps`; the newest `pre_s` seconds of them stay in a :class:`FrameRing`, capped at
`buffer_bytes` per camera (raw RGB: 640x480 is 0.88 MiB a frame, so 3 s at 5 fps, 16 frames,
take 14.1 MiB; a larger camera gets a shorter pre-roll rather than more memory). When an event starts, a
recording takes the ring's frames from `pre_s` before it and then every new frame until
`post_s` after the event's end, at most `max_s` in all, and encodes them on a thread of its own.

The codec is VP8 in WebM: the pinned OpenCV build (FFmpeg without an H.264 encoder) writes
H.264 nowhere, and its `mp4v` (MPEG-4 part 2) plays in VLC but not in Chromium or Firefox,
while VP8/WebM plays in every current browser. The video is written to a temporary file and
stored in the event store in one transaction once complete, then the file is deleted: a crash
mid-clip leaves no clip, never a partial one (the node removes its temporary folder at start).
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.camera import FrameRateGate
from edge_runtime.detector import EventChange, Transition
from edge_runtime.event_store import EventStore, StoredClip
from edge_runtime.source_types import Frame

logger = logging.getLogger(__name__)

CONTENT_TYPE = "video/webm"
FOURCC = "VP80"
# VP8 in a Matroska file: what browsers play as video/webm (WebM is Matroska with a narrower
# document type; Chromium plays both). FFmpeg's WebM muxer would print a "tag not supported"
# line to stderr for every clip, which its Matroska muxer does not.
TEMP_SUFFIX = ".mkv"
_FINISH_GRACE_S = 2.0  # past its end, a recording that gets no frames (camera stopped) finishes
_BACKLOG_S = 4.0  # seconds of frames a recording may queue beyond its pre-roll (encoder behind)


@dataclass(frozen=True)
class ClipConfig:
    """What a clip covers and what its buffers may cost (built from the node's settings)."""

    pre_s: float = 3.0
    post_s: float = 3.0
    max_s: float = 30.0
    fps: float = 5.0
    buffer_bytes: int = 32 * 1024 * 1024

    def ring_frames(self) -> int:
        """Frames the pre-roll needs at `fps` (the byte cap may keep fewer)."""
        return math.ceil(self.pre_s * self.fps) + 1


class FrameRing:
    """A camera's newest frames: at most `pre_s` seconds old and `max_bytes` of images."""

    def __init__(self, pre_s: float, max_bytes: int) -> None:
        self.pre_s = pre_s
        self.max_bytes = max_bytes
        self._frames: deque[Frame] = deque()
        self.bytes = 0
        self.capped = False  # whether the byte cap ever shortened the pre-roll

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame: Frame) -> None:
        self._frames.append(frame)
        self.bytes += frame.image.nbytes
        oldest_wanted = frame.wall_time - self.pre_s
        while self._frames and (
            self._frames[0].wall_time < oldest_wanted or self.bytes > self.max_bytes
        ):
            if self._frames[0].wall_time >= oldest_wanted:
                self.capped = True
            self.bytes -= self._frames.popleft().image.nbytes

    def since(self, wall_time: float) -> list[Frame]:
        return [frame for frame in self._frames if frame.wall_time >= wall_time]


class _Recording:
    """One event's clip: frames queued by the camera's thread, encoded on a thread of its own."""

    def __init__(
        self,
        event_id: str,
        camera: str,
        first_s: float,
        last_s: float,
        fps: float,
        temp_file: Path,
        backlog: int,
    ) -> None:
        self.event_id = event_id
        self.camera = camera
        self.first_s = first_s  # wall time of the clip's first frame
        self.limit_s = last_s  # wall time past which no frame is taken (max_s)
        self.until_s = last_s  # lowered to the event's end + post_s when it ends
        self.fps = fps
        self.temp_file = temp_file
        self.frames: queue.Queue[Frame | None] = queue.Queue(maxsize=backlog)
        self.dropped = 0
        self.ending = threading.Event()
        self.thread: threading.Thread | None = None

    def offer(self, frame: Frame) -> None:
        try:
            self.frames.put_nowait(frame)
        except queue.Full:  # the encoder fell behind: the clip skips frames, memory stays bounded
            self.dropped += 1

    def finish(self) -> None:
        """No more frames: the writer ends the clip once it has encoded those queued."""
        self.ending.set()
        with contextlib.suppress(queue.Full):  # else the writer sees `ending` when it runs dry
            self.frames.put_nowait(None)


@dataclass
class ClipCounters:
    written: int = 0
    failed: int = 0
    frames_dropped: int = 0
    bytes_written: int = 0


ClipStored = Callable[[str], None]


class ClipRecorder:
    """Rings per camera and one recording per open event; stores each finished clip.

    Thread-safe: `on_frame` runs on the cameras' decode threads, `on_event` on the runtime's.
    `on_stored(event_id)` is called on the writer's thread after a clip is committed.
    """

    def __init__(
        self,
        config: ClipConfig,
        store: EventStore,
        temp_dir: Path,
        on_stored: ClipStored | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.temp_dir = temp_dir
        self.on_stored = on_stored
        self.counters = ClipCounters()
        self._lock = threading.Lock()
        self._rings: dict[str, FrameRing] = {}
        self._gates: dict[str, FrameRateGate] = {}
        self._recordings: dict[str, _Recording] = {}
        self._with_clip: OrderedDict[str, None] = OrderedDict()  # recent events with a clip
        self._closed = False

    # -- listeners -----------------------------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        """Camera frame listener: keep the frame (at `fps`) and hand it to recordings."""
        with self._lock:
            if self._closed:
                return
            gate = self._gates.get(frame.camera_id)
            if gate is None:
                gate = self._gates[frame.camera_id] = FrameRateGate(self.config.fps)
            if not gate.keep(frame.wall_time):
                return
            ring = self._rings.get(frame.camera_id)
            if ring is None:
                ring = FrameRing(self.config.pre_s, self.config.buffer_bytes)
                self._rings[frame.camera_id] = ring
            was_capped = ring.capped
            ring.add(frame)
            if ring.capped and not was_capped:
                logger.warning(
                    "camera %s: clip pre-roll shortened to %d frames (%.1f s) by "
                    "clips.buffer_mb; %dx%d frames take %.1f MB each",
                    frame.camera_id,
                    len(ring),
                    len(ring) / self.config.fps,
                    frame.width,
                    frame.height,
                    frame.image.nbytes / 1e6,
                )
            for recording in self._recordings.values():
                if recording.camera != frame.camera_id:
                    continue
                if frame.wall_time > recording.until_s:
                    recording.finish()
                else:
                    recording.offer(frame)

    def on_event(self, change: EventChange) -> None:
        """Runtime event listener: a new event starts a recording, its end sets the post-roll."""
        event = change.event
        with self._lock:
            if self._closed:
                return
            if change.transition is Transition.NEW and event.id not in self._recordings:
                self._start(event.id, event.camera, event.start_time)
            elif change.transition is Transition.END:
                recording = self._recordings.get(event.id)
                if recording is not None and event.end_time is not None:
                    recording.until_s = min(recording.limit_s, event.end_time + self.config.post_s)

    def annotate(self, change: EventChange) -> EventChange:
        """The change with `has_clip` set when this event's clip is already stored (an event
        that outlasts `max_s` gets its clip while still open)."""
        with self._lock:
            stored = change.event.id in self._with_clip
        if stored and not change.event.has_clip:
            return replace(change, event=replace(change.event, has_clip=True))
        return change

    def forget_camera(self, camera_id: str) -> None:
        """Drop a stopped camera's buffered frames (its recordings finish on their own)."""
        with self._lock:
            self._rings.pop(camera_id, None)
            self._gates.pop(camera_id, None)

    # -- figures and shutdown ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "recording": len(self._recordings),
                "written": self.counters.written,
                "failed": self.counters.failed,
                "frames_dropped": self.counters.frames_dropped,
                "bytes_written": self.counters.bytes_written,
                "buffer_bytes": sum(ring.bytes for ring in self._rings.values()),
            }

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish every recording with the frames it has and store it (within `timeout_s`)."""
        with self._lock:
            self._closed = True
            recordings = list(self._recordings.values())
            self._rings.clear()
        for recording in recordings:
            recording.finish()
        deadline = time.monotonic() + timeout_s
        for recording in recordings:
            if recording.thread is not None:
                recording.thread.join(max(0.0, deadline - time.monotonic()))

    # -- recording -----------------------------------------------------------------------------

    def _start(self, event_id: str, camera: str, start_time: float) -> None:
        config = self.config
        first_s = start_time - config.pre_s
        ring = self._rings.get(camera)
        recording = _Recording(
            event_id,
            camera,
            first_s=first_s,
            last_s=first_s + config.max_s,
            fps=config.fps,
            temp_file=self.temp_dir / f"{event_id}-{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}",
            backlog=config.ring_frames() + math.ceil(_BACKLOG_S * config.fps),
        )
        for frame in ring.since(first_s) if ring is not None else []:
            recording.offer(frame)
        self._recordings[event_id] = recording
        recording.thread = threading.Thread(
            target=self._write, args=(recording,), name=f"clip-{event_id[:8]}", daemon=True
        )
        recording.thread.start()

    def _write(self, recording: _Recording) -> None:
        """Encode the recording's frames, then store the clip and delete the temporary file."""
        frames = 0
        writer: Any = None
        size: tuple[int, int] | None = None
        try:
            import cv2  # OpenCV loads only when a clip is written

            while True:
                try:
                    frame = recording.frames.get(timeout=0.5)
                except queue.Empty:
                    if recording.ending.is_set():
                        break
                    if time.time() > recording.until_s + _FINISH_GRACE_S:
                        break  # no frames come (camera stopped or slow): end the clip here
                    continue
                if frame is None or frame.wall_time > recording.until_s:
                    break
                if writer is None:
                    size = (frame.width, frame.height)
                    recording.temp_file.parent.mkdir(parents=True, exist_ok=True)
                    writer = cv2.VideoWriter(
                        str(recording.temp_file),
                        cv2.VideoWriter.fourcc(*FOURCC),
                        recording.fps,
                        size,
                    )
                    if not writer.isOpened():
                        raise RuntimeError(f"OpenCV cannot write {FOURCC} video")
                image = frame.image
                if size is not None and (frame.width, frame.height) != size:
                    image = np.asarray(cv2.resize(image, size))  # the camera was reconfigured
                writer.write(np.ascontiguousarray(image[:, :, ::-1]))
                frames += 1
            if writer is not None:
                writer.release()
                writer = None
            if frames:
                data = recording.temp_file.read_bytes()
                clip = StoredClip(
                    recording.event_id, CONTENT_TYPE, frames, frames / recording.fps, data
                )
                if self.store.save_clip(clip):
                    self._stored(recording, len(data))
        except Exception:
            logger.exception("event %s: the clip could not be written", recording.event_id)
            with self._lock:
                self.counters.failed += 1
        finally:
            if writer is not None:
                writer.release()
            recording.temp_file.unlink(missing_ok=True)
            with self._lock:
                self._recordings.pop(recording.event_id, None)
                self.counters.frames_dropped += recording.dropped

    def _stored(self, recording: _Recording, size: int) -> None:
        with self._lock:
            self.counters.written += 1
            self.counters.bytes_written += size
            self._with_clip[recording.event_id] = None
            while len(self._with_clip) > 1024:
                self._with_clip.popitem(last=False)
        if self.on_stored is not None:
            try:
                self.on_stored(recording.event_id)
            except Exception:
                logger.exception("event %s: announcing the clip failed", recording.event_id)
