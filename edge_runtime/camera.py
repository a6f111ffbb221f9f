"""Cameras: one decode thread per camera, an explicit state machine, reconnects, bounded queues.

A :class:`Camera` reads its source in its own thread so inference never blocks capture
(DESIGN §6): decoded frames go into a bounded :class:`FrameQueue` that drops the *oldest*
frame when the consumer falls behind, and into a latest-frame slot for snapshots.

Life cycle (:data:`ALLOWED_TRANSITIONS`):

- ``stopped → starting`` on ``start()``;
- ``starting → streaming`` at the first frame, ``→ reconnecting`` when the open fails;
- ``streaming → reconnecting`` when a read fails or no frame came for `watchdog_s`;
- ``reconnecting → streaming`` at the first frame after a reopen;
- ``→ failed`` from any active state when retrying cannot help or attempts run out, and
  ``failed → starting`` on ``start()``;
- ``→ stopped`` from any active state on ``stop()``, or when a file ends without `loop`.

A lost stream is retried with capped exponential backoff (:func:`backoff_delay`), forever by
default. The backoff starts over only after a connection has delivered frames for
`stable_after_s`: a flapping source (connects, sends a frame or two, drops) keeps counting as
failing, so its retries slow down instead of hammering it every `backoff_base_s`.
Errors that retrying cannot fix (a missing file) go straight to ``failed``. Nothing a
source does can raise out of the decode thread: the camera records `last_error` instead, and
clears it when frames flow again.

Decoding follows demand. Told the rate its frames are analysed at
(:meth:`Camera.set_analysis_rate`, the plan's highest app rate on the camera), a camera queues
only the frames that analysis uses, chosen by the same deterministic rule as the DAG's
:class:`~edge_runtime.rate.RateAccumulator` (DESIGN §6), and makes the choice right after
``grab()``, before ``retrieve()``: a frame that neither analysis nor a viewer (someone who asked
for :meth:`Camera.latest_frame` in the last `view_hold_s`) nor the frame listener (the clip
recorder, at its own rate) needs is never converted, and on a source that decodes in ``retrieve()`` (Motion-JPEG files and HTTP streams, synthetic) never decoded. Such frames
are counted in ``frames_not_needed`` (every frame past the configured fps that analysis does not
use, whether or not a viewer or the listener had it decoded), and those never decoded in ``frames_not_decoded``.
Every grabbed frame is thus delivered, skipped (configured fps) or not needed.

The no-frame watchdog is enforced inside the blocking read itself (the backend's read timeout
is set to `watchdog_s`), because a read blocked in native code can only be interrupted safely
from within. ``stop()`` waits at most `stop_timeout_s` for the thread; a thread still
stuck in such a read then finishes on its own and can no longer publish frames or states.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from types import MappingProxyType, TracebackType
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_runtime.rate import RateAccumulator
from edge_runtime.source_types import (
    Frame,
    FrameSource,
    PermanentSourceError,
    SourceConfig,
    describe_source,
    parse_source_url,
)
from edge_runtime.sources import Pacer, open_source
from mainstream.core.errors import (
    ConflictError,
    InvalidParameterError,
    MainstreamError,
    NotFoundError,
    SourceError,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# State machine


class CameraState(str, Enum):
    STARTING = "starting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"
    FAILED = "failed"


ACTIVE_STATES = frozenset({CameraState.STARTING, CameraState.STREAMING, CameraState.RECONNECTING})

ALLOWED_TRANSITIONS: Mapping[CameraState, frozenset[CameraState]] = MappingProxyType(
    {
        CameraState.STOPPED: frozenset({CameraState.STARTING}),
        CameraState.STARTING: frozenset(
            {
                CameraState.STREAMING,
                CameraState.RECONNECTING,
                CameraState.STOPPED,
                CameraState.FAILED,
            }
        ),
        CameraState.STREAMING: frozenset(
            {CameraState.RECONNECTING, CameraState.STOPPED, CameraState.FAILED}
        ),
        CameraState.RECONNECTING: frozenset(
            {CameraState.STREAMING, CameraState.STOPPED, CameraState.FAILED}
        ),
        CameraState.FAILED: frozenset({CameraState.STARTING}),
    }
)


class InvalidTransitionError(MainstreamError):
    """A camera was asked to move between two states that are not connected."""

    http_status = 409


@dataclass(frozen=True)
class StateChange:
    camera_id: str
    previous: CameraState
    current: CameraState
    reason: str
    at: float  # wall-clock time.time()


StateListener = Callable[[StateChange], None]
# Called with each frame a camera delivers, from its decode thread; must return at once (the
# clip recorder's pre-roll buffer is one).
FrameListener = Callable[[Frame], None]


class CameraStateMachine:
    """The current state of one camera and the only way to change it."""

    def __init__(self, camera_id: str, state: CameraState = CameraState.STOPPED) -> None:
        self.camera_id = camera_id
        self._state = state

    @property
    def state(self) -> CameraState:
        return self._state

    def can_transition(self, new: CameraState) -> bool:
        return new in ALLOWED_TRANSITIONS.get(self._state, frozenset())

    def transition(
        self, new: CameraState, reason: str = "", at: float | None = None
    ) -> StateChange:
        if not self.can_transition(new):
            allowed = sorted(s.value for s in ALLOWED_TRANSITIONS.get(self._state, frozenset()))
            raise InvalidTransitionError(
                f"camera {self.camera_id}: cannot go from {self._state.value} to {new.value} "
                f"(allowed: {', '.join(allowed) or 'none'})"
            )
        change = StateChange(
            self.camera_id, self._state, new, reason, time.time() if at is None else at
        )
        self._state = new
        return change


# ---------------------------------------------------------------------------------------------
# Pure helpers: backoff, frame-rate gate


def backoff_delay(
    attempt: int, *, base_s: float, cap_s: float, jitter: float = 0.0, random_fraction: float = 0.0
) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry).

    ``min(cap_s, base_s * 2 ** (attempt - 1))``, shortened by up to `jitter` of itself
    (``random_fraction`` in [0, 1) picks how much) so cameras that failed together do not
    all retry at the same instant. Never more than `cap_s`.
    """
    if attempt < 1:
        raise InvalidParameterError("attempt", attempt, "an integer >= 1")
    if not base_s > 0:
        raise InvalidParameterError("base_s", base_s, "seconds > 0")
    if not cap_s >= base_s:
        raise InvalidParameterError("cap_s", cap_s, f"seconds >= base_s ({base_s})")
    if not 0.0 <= jitter <= 1.0:
        raise InvalidParameterError("jitter", jitter, "a fraction in [0, 1]")
    if not 0.0 <= random_fraction < 1.0:
        raise InvalidParameterError("random_fraction", random_fraction, "a number in [0, 1)")
    doublings = min(attempt - 1, 64)  # beyond this the cap always wins; avoids float overflow
    full = min(cap_s, base_s * 2.0**doublings)
    return full * (1.0 - jitter * random_fraction)


class FrameRateGate:
    """Thins a source to at most `fps` frames per second of its own timestamps.

    The plan assumes a camera rate F; a camera that sends more is thinned here, evenly and
    deterministically for files, before any colour conversion is paid for.
    """

    def __init__(self, fps: float) -> None:
        if not fps > 0:
            raise InvalidParameterError("fps", fps, "frames per second > 0")
        self.interval = 1.0 / fps
        self._next_due: float | None = None

    def keep(self, timestamp: float) -> bool:
        due = self._next_due
        if due is not None and timestamp < due - 2 * self.interval:
            due = None  # the clock went backwards (a new stream): start over
        if due is not None and timestamp < due - self.interval / 4:
            return False
        on_schedule = due is not None and timestamp - due < self.interval
        self._next_due = (due if on_schedule and due is not None else timestamp) + self.interval
        return True


# ---------------------------------------------------------------------------------------------
# Frame queue


class FrameQueue:
    """A bounded, thread-safe FIFO of frames that drops the oldest frame when full."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise InvalidParameterError("queue_size", maxsize, "an integer >= 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._frames: deque[Frame] = deque()
        self._condition = threading.Condition()

    def __len__(self) -> int:
        with self._condition:
            return len(self._frames)

    def put(self, frame: Frame) -> Frame | None:
        """Append a frame; returns the oldest frame it pushed out, if the queue was full."""
        with self._condition:
            dropped = None
            if len(self._frames) >= self.maxsize:
                dropped = self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self._condition.notify()
            return dropped

    def put_wait(self, frame: Frame, stop: threading.Event, poll_s: float = 0.05) -> bool:
        """Append a frame, waiting for room (offline replay); False when `stop` was set."""
        with self._condition:
            while len(self._frames) >= self.maxsize:
                if stop.is_set():
                    return False
                self._condition.wait(poll_s)
            self._frames.append(frame)
            self._condition.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest frame; None when none arrived within `timeout` seconds (0: don't wait)."""
        with self._condition:
            if not self._frames and timeout != 0:
                self._condition.wait_for(lambda: bool(self._frames), timeout)
            if not self._frames:
                return None
            frame = self._frames.popleft()
            self._condition.notify_all()  # room for a waiting put_wait
            return frame

    def clear(self) -> None:
        with self._condition:
            self._frames.clear()
            self._condition.notify_all()


class _RateMeter:
    """Events per second over the last `window_s` seconds (or since the first event, when
    that is more recent, so a camera that just started does not look slow)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._first: float | None = None

    def reset(self) -> None:
        self._times.clear()
        self._first = None

    def record(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._times.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        if self._first is None:
            return 0.0
        span = max(1.0, min(self.window_s, now - self._first))
        return len(self._times) / span

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()


# ---------------------------------------------------------------------------------------------
# Config and stats

_CAMERA_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class CameraConfig(BaseModel):
    """One camera, as written in the node config or sent to the API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Unique camera name: letters, digits, '_', '.', '-'")
    url: str = Field(description="File path, rtsp://, http(s)://, usb:N, /dev/videoN, synthetic://")
    fps: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Camera rate F the plan assumes; faster sources are thinned to it",
    )
    resolution: tuple[int, int] | None = Field(
        default=None, description="Resize decoded frames to (width, height); accepts '640x480'"
    )
    queue_size: int = Field(default=8, ge=1, le=10_000)
    queue_policy: Literal["drop_oldest", "block"] = Field(
        default="drop_oldest",
        description="'block' waits for the consumer instead of dropping (offline replay only)",
    )
    watchdog_s: float = Field(
        default=20.0, gt=0, description="Reconnect after this long without a frame"
    )
    open_timeout_s: float = Field(default=10.0, gt=0)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_cap_s: float = Field(default=30.0, gt=0)
    backoff_jitter: float = Field(default=0.2, ge=0, le=1)
    stable_after_s: float = Field(
        default=30.0,
        ge=0,
        description="A connection must deliver frames this long before a drop starts the "
        "backoff over; shorter ones (a flapping source) count as failed attempts",
    )
    max_reconnect_attempts: int | None = Field(
        default=None,
        ge=0,
        description="Give up (state 'failed') after this many failed attempts in a row "
        "(a connection shorter than stable_after_s counts as one); None: retry forever",
    )
    loop: bool = Field(default=False, description="Files: start again at the end")
    paced: bool = Field(
        default=True,
        description="Files and synthetic: play at native fps (False: as fast as possible)",
    )
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    ffmpeg_options: dict[str, str] = Field(
        default_factory=dict, description="Extra FFmpeg demuxer options for network streams"
    )

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _CAMERA_ID_PATTERN.fullmatch(value):
            raise InvalidParameterError(
                "id",
                value,
                "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
            )
        return value

    @field_validator("resolution", mode="before")
    @classmethod
    def _parse_resolution(cls, value: object) -> object:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
            if not match:
                raise InvalidParameterError("resolution", value, "WIDTHxHEIGHT, e.g. 640x480")
            return (int(match.group(1)), int(match.group(2)))
        return value

    @field_validator("resolution")
    @classmethod
    def _check_resolution(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not all(1 <= side <= 16384 for side in value):
            raise InvalidParameterError("resolution", value, "width and height in [1, 16384]")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> CameraConfig:
        if self.backoff_cap_s < self.backoff_base_s:
            raise InvalidParameterError(
                "backoff_cap_s", self.backoff_cap_s, f">= backoff_base_s ({self.backoff_base_s})"
            )
        self.source_config()  # the URL must parse; raises a message naming it
        return self

    def source_config(self) -> SourceConfig:
        return parse_source_url(
            self.url,
            loop=self.loop,
            rtsp_transport=self.rtsp_transport,
            ffmpeg_options=self.ffmpeg_options,
        )


@dataclass(frozen=True)
class CameraStats:
    """A snapshot of one camera's health. Rates are over the last few seconds."""

    camera_id: str
    state: CameraState
    fps_in: float  # frames grabbed from the source per second
    fps_out: float  # frames handed to the queue per second
    skipped_fps: float  # frames thinned out to hold the configured fps
    dropped_fps: float  # oldest frames dropped because the consumer fell behind
    frames_decoded: int  # frames grabbed from the source (the name predates lazy decoding)
    frames_delivered: int
    frames_skipped: int
    frames_dropped: int
    # Demand-driven decoding (see the module docstring): the analysis rate the queue is
    # thinned to (None: every frame is queued), frames past the configured fps that analysis
    # does not use (not queued; decoded only for a viewer), and grabbed frames never decoded
    # at all (skipped or not needed, on a source that decodes only on retrieve).
    analysis_fps: float | None
    not_needed_fps: float
    frames_not_needed: int
    frames_not_decoded: int
    decode_ms_avg: float  # recent average of grab + colour conversion + resize
    reconnects: int  # retries scheduled after a failed open or a lost stream
    last_error: str | None
    last_frame_time: float | None  # wall clock of the last delivered frame
    queue_depth: int
    queue_size: int
    frame_size: tuple[int, int] | None  # (width, height) of the last delivered frame

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


# ---------------------------------------------------------------------------------------------
# Camera


@dataclass
class _Run:
    """One start() of a camera; a stopped run can no longer publish frames or states."""

    config: CameraConfig
    source_config: SourceConfig
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    streaming_since: float | None = None  # monotonic time of this connection's first frame


@dataclass
class _AnalysisDemand:
    """Which frames past the configured fps analysis uses: `selector` picks `fps` of every
    `camera_fps` frames, as the root of a DAG planned for that camera rate would."""

    fps: float
    camera_fps: float
    selector: RateAccumulator


class _StreamEnd(Enum):
    STOPPED = "stopped"  # stop() was called
    ENDED = "ended"  # a finite source (file, synthetic) ran out


_DECODE_MS_SMOOTHING = 0.1  # weight of the newest frame in the decode-time average


class Camera:
    """One camera: decode thread, state machine, reconnects, frame queue and stats."""

    def __init__(
        self,
        config: CameraConfig,
        *,
        on_state_change: StateListener | None = None,
        stop_timeout_s: float = 5.0,
        view_hold_s: float = 5.0,
    ) -> None:
        """`view_hold_s`: after a call to :meth:`latest_frame`, every frame is decoded for
        this long (a live view or snapshot keeps seeing fresh frames)."""
        if not view_hold_s > 0:
            raise InvalidParameterError("view_hold_s", view_hold_s, "seconds > 0")
        self._config = config
        self.view_hold_s = view_hold_s
        self._demand: _AnalysisDemand | None = None
        self._viewed_until = -math.inf  # monotonic time until which a viewer wants every frame
        self._source_config = config.source_config()
        self.stop_timeout_s = stop_timeout_s
        self._lock = threading.RLock()
        self._notify_lock = threading.RLock()  # keeps listener calls in transition order
        self._machine = CameraStateMachine(config.id)
        self._listeners: list[StateListener] = [on_state_change] if on_state_change else []
        self._frame_listener: FrameListener | None = None
        self._listener_gate: FrameRateGate | None = None  # None with a listener: every frame
        self._queue = FrameQueue(config.queue_size)
        self._run: _Run | None = None
        self._latest: Frame | None = None
        self._next_sequence = 0
        # stats
        self._fps_in = _RateMeter()
        self._fps_out = _RateMeter()
        self._skips = _RateMeter()
        self._drops = _RateMeter()
        self._not_needed = _RateMeter()
        self._frames_not_needed = 0
        self._frames_not_decoded = 0
        self._frames_decoded = 0
        self._frames_delivered = 0
        self._frames_skipped = 0
        self._frames_dropped = 0
        self._decode_ms_avg = 0.0
        self._reconnects = 0
        self._last_error: str | None = None
        self._last_frame_time: float | None = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._config.id

    @property
    def config(self) -> CameraConfig:
        return self._config

    @property
    def state(self) -> CameraState:
        with self._lock:
            return self._machine.state

    @property
    def is_active(self) -> bool:
        """True while starting, streaming or reconnecting."""
        return self.state in ACTIVE_STATES

    def add_state_listener(self, listener: StateListener) -> None:
        """Call `listener(change)` after every state change, in order, from the thread that
        made the change. Listeners must return quickly and never wait for the camera."""
        with self._lock:
            self._listeners.append(listener)

    def remove_state_listener(self, listener: StateListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def set_frame_listener(self, listener: FrameListener | None, fps: float | None = None) -> None:
        """Hand every decoded frame to `listener` too (None: to nobody), and decode at least
        `fps` frames a second for it (None: every frame), as a :class:`FrameRateGate` of
        `fps` on the frames' timestamps picks them, whether analysis needs them or not."""
        with self._lock:
            self._frame_listener = listener
            self._listener_gate = FrameRateGate(fps) if listener is not None and fps else None

    def start(self) -> None:
        """Start decoding; does nothing while already active. Restarts a failed camera."""
        with self._notify_lock:
            with self._lock:
                if self._machine.state in ACTIVE_STATES:
                    return
                run = _Run(self._config, self._source_config)
                self._run = run
                for meter in (
                    self._fps_in,
                    self._fps_out,
                    self._skips,
                    self._drops,
                    self._not_needed,
                ):
                    meter.reset()
                change = self._machine.transition(CameraState.STARTING, "start requested")
                thread = threading.Thread(
                    target=self._decode_thread, args=(run,), name=f"camera-{self.id}", daemon=True
                )
                run.thread = thread
            self._notify(change)
        thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop decoding and wait (at most `timeout_s`, default `stop_timeout_s`) for the thread.

        `timeout_s=0` only asks the thread to stop. Idempotent. A failed camera stays failed so
        its error remains visible.
        """
        with self._notify_lock:
            with self._lock:
                run = self._run
                if run is not None:
                    run.stop.set()
                change = None
                if self._machine.state in ACTIVE_STATES:
                    change = self._machine.transition(CameraState.STOPPED, "stop requested")
            if change is not None:
                self._notify(change)
        thread = run.thread if run is not None else None
        if thread is None or thread is threading.current_thread() or not thread.is_alive():
            return
        wait_s = self.stop_timeout_s if timeout_s is None else timeout_s
        if wait_s <= 0:  # only asked to stop: the caller waits later
            return
        thread.join(wait_s)
        if thread.is_alive():
            logger.warning(
                "camera %s: decode thread still blocked in a read; it exits when the read "
                "times out and will publish nothing more",
                self.id,
            )

    def reconfigure(self, config: CameraConfig) -> None:
        """Apply a new config: the decode thread restarts, consumers keep this object."""
        if config.id != self.id:
            raise InvalidParameterError("id", config.id, f"the same camera id ({self.id})")
        source_config = config.source_config()
        restart = self.state is not CameraState.STOPPED
        self.stop()
        with self._lock:
            self._config = config
            self._source_config = source_config
            if config.queue_size != self._queue.maxsize:
                self._queue = FrameQueue(config.queue_size)
        if restart:
            self.start()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest queued frame; None if none arrived within `timeout` seconds."""
        return self._current_queue().get(timeout)

    def frames(self, poll_s: float = 0.1) -> Iterator[Frame]:
        """Queued frames as they arrive, until the camera is stopped or failed and drained."""
        while True:
            queue = self._current_queue()
            frame = queue.get(poll_s)
            if frame is not None:
                yield frame
            elif not self.is_active and len(queue) == 0:
                return

    def latest_frame(self) -> Frame | None:
        """The most recent decoded frame (for snapshots), whether or not it was consumed.

        Asking counts as watching: for `view_hold_s` from now every frame is decoded, so the
        next call sees the newest frame even when analysis needs only some of them.
        """
        with self._lock:
            self._viewed_until = time.monotonic() + self.view_hold_s
            return self._latest

    def set_analysis_rate(self, fps: float | None, camera_fps: float | None = None) -> None:
        """Queue only the `fps` of every `camera_fps` frames that analysis uses (None: every frame).

        `camera_fps` is the camera rate the consumer's DAG was planned for, and the frames
        chosen are those a :class:`~edge_runtime.rate.RateAccumulator` of `fps` under
        `camera_fps` keeps, starting afresh with the next frame (unless the rates are those
        already in force): a DAG built for the camera
        rate `fps` then analyses exactly the frames one built for `camera_fps` would have.
        The choice is made before decoding, so unneeded frames cost no conversion (and, on
        sources that decode on retrieve, no decoding).
        """
        if fps is None:
            demand = None
        else:
            if camera_fps is None:
                raise InvalidParameterError("camera_fps", camera_fps, "the camera rate (fps > 0)")
            demand = _AnalysisDemand(fps, camera_fps, RateAccumulator(fps, camera_fps))
        with self._lock:
            current = self._demand
            same = (
                current is not None
                and demand is not None
                and (current.fps, current.camera_fps) == (demand.fps, demand.camera_fps)
            )
            if not same:  # the same rates keep the selection's phase
                self._demand = demand

    @property
    def analysis_fps(self) -> float | None:
        """The analysis rate the queue is thinned to; None when every frame is queued."""
        with self._lock:
            return self._demand.fps if self._demand is not None else None

    def wait_for_state(self, *states: CameraState, timeout: float) -> bool:
        """Block until the camera is in one of `states`; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self.state in states:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.01, remaining))

    def stats(self) -> CameraStats:
        now = time.monotonic()
        with self._lock:
            last = self._latest
            return CameraStats(
                camera_id=self.id,
                state=self._machine.state,
                fps_in=self._fps_in.rate(now),
                fps_out=self._fps_out.rate(now),
                skipped_fps=self._skips.rate(now),
                dropped_fps=self._drops.rate(now),
                frames_decoded=self._frames_decoded,
                frames_delivered=self._frames_delivered,
                frames_skipped=self._frames_skipped,
                frames_dropped=self._frames_dropped,
                analysis_fps=self._demand.fps if self._demand is not None else None,
                not_needed_fps=self._not_needed.rate(now),
                frames_not_needed=self._frames_not_needed,
                frames_not_decoded=self._frames_not_decoded,
                decode_ms_avg=self._decode_ms_avg,
                reconnects=self._reconnects,
                last_error=self._last_error,
                last_frame_time=self._last_frame_time,
                queue_depth=len(self._queue),
                queue_size=self._queue.maxsize,
                frame_size=(last.width, last.height) if last is not None else None,
            )

    def __enter__(self) -> Camera:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Camera(id={self.id!r}, source={describe_source(self._source_config)!r}, state={self.state.value})"

    # -- decode thread ------------------------------------------------------------------------

    def _current_queue(self) -> FrameQueue:
        with self._lock:
            return self._queue

    def _notify(self, change: StateChange) -> None:
        level = logging.WARNING if change.current is CameraState.FAILED else logging.INFO
        logger.log(
            level,
            "camera %s: %s -> %s (%s)",
            change.camera_id,
            change.previous.value,
            change.current.value,
            change.reason,
        )
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(change)
            except Exception:  # a listener's bug must not stop the camera
                logger.exception("camera %s: state listener failed", self.id)

    def _transition(self, run: _Run, new: CameraState, reason: str) -> None:
        """Change state on behalf of `run`, unless that run was stopped or replaced."""
        with self._notify_lock:
            with self._lock:
                if run is not self._run or run.stop.is_set() or self._machine.state is new:
                    return
                change = self._machine.transition(new, reason)
            self._notify(change)

    def _record_error(self, run: _Run, message: str, *, log: bool = True) -> None:
        with self._lock:
            if run is self._run:
                self._last_error = message
        if log:
            logger.warning("camera %s: %s", self.id, message)

    def _clear_error(self, run: _Run) -> None:
        """Frames flow again: the last error is history (the logs keep it)."""
        with self._lock:
            if run is self._run:
                self._last_error = None

    def _decode_thread(self, run: _Run) -> None:
        try:
            self._connect_loop(run)
        except Exception as error:  # a bug here must not kill the process or hide the camera
            logger.exception("camera %s: decode thread crashed", self.id)
            self._record_error(run, f"internal error: {error!r}")
            self._transition(run, CameraState.FAILED, "internal error")

    def _connect_loop(self, run: _Run) -> None:
        config = run.config
        jitter_random = random.Random()
        failures = 0  # consecutive failed attempts; reset by a connection that stayed healthy
        while not run.stop.is_set():
            run.streaming_since = None
            try:
                source = open_source(
                    run.source_config,
                    open_timeout_s=config.open_timeout_s,
                    read_timeout_s=config.watchdog_s,
                )
                try:
                    if self._stream(run, source) is _StreamEnd.ENDED:
                        self._transition(run, CameraState.STOPPED, "end of stream")
                    return
                finally:
                    source.close()
            except PermanentSourceError as error:
                self._record_error(run, str(error), log=False)  # the transition logs it
                self._transition(run, CameraState.FAILED, str(error))
                return
            except SourceError as error:
                message = str(error)
            except Exception as error:  # e.g. cv2.error from a corrupt stream: retry it
                logger.exception("camera %s: unexpected error reading the source", self.id)
                message = f"unexpected error reading the source: {error!r}"
            if run.stop.is_set():
                return
            since = run.streaming_since
            if since is not None and time.monotonic() - since >= config.stable_after_s:
                failures = 0  # the stream was healthy for a while: start the backoff over
            failures += 1
            self._record_error(run, message, log=False)  # logged below with the retry delay
            limit = config.max_reconnect_attempts
            if limit is not None and failures > limit:
                reason = f"gave up after {failures} failed attempt(s): {message}"
                self._record_error(run, reason, log=False)
                self._transition(run, CameraState.FAILED, reason)
                return
            self._transition(run, CameraState.RECONNECTING, message)
            delay = backoff_delay(
                failures,
                base_s=config.backoff_base_s,
                cap_s=config.backoff_cap_s,
                jitter=config.backoff_jitter,
                random_fraction=jitter_random.random(),
            )
            logger.warning(
                "camera %s: attempt %d failed (%s); retrying in %.1f s",
                self.id,
                failures,
                message,
                delay,
            )
            with self._lock:
                if run is self._run:
                    self._reconnects += 1
            run.stop.wait(delay)

    def _stream(self, run: _Run, source: FrameSource) -> _StreamEnd:
        """Read frames until stopped or the source ends; raises SourceError if it breaks."""
        config = run.config
        pacer = Pacer() if config.paced and source.media_clock else None
        gate = FrameRateGate(config.fps) if config.fps else None
        last_frame_at = time.monotonic()
        announced = False  # whether this connection has moved the camera to STREAMING
        while not run.stop.is_set():
            started = time.perf_counter()
            try:
                timestamp = source.grab()
            except PermanentSourceError:
                raise
            except SourceError as error:
                silent_s = time.monotonic() - last_frame_at
                if silent_s >= config.watchdog_s * 0.9:
                    raise SourceError(
                        f"watchdog: no frame for {silent_s:.1f} s (limit {config.watchdog_s:g} s): {error}"
                    ) from error
                raise
            grab_ms = (time.perf_counter() - started) * 1000.0
            now = time.monotonic()
            if timestamp is None:
                return _StreamEnd.ENDED
            last_frame_at = now
            sequence = self._count_grabbed(run, now)
            if sequence is None:
                return _StreamEnd.STOPPED
            if gate is not None and not gate.keep(timestamp):
                self._count_skipped(run, now, decoded=not source.decodes_on_retrieve)
                continue
            analysed, viewed = self._wanted(now, timestamp)
            if not analysed:
                decoded = viewed or not announced or not source.decodes_on_retrieve
                self._count_not_needed(run, now, decoded=decoded)
                if not (viewed or not announced):
                    continue
            if pacer is not None:
                delay = pacer.delay_for(timestamp, now)
                if delay > 0 and run.stop.wait(delay):
                    return _StreamEnd.STOPPED
            started = time.perf_counter()
            image = _resize(source.retrieve(), config.resolution)
            image.flags.writeable = False
            decode_ms = grab_ms + (time.perf_counter() - started) * 1000.0
            frame = Frame(self.id, sequence, timestamp, image, decode_ms, time.time())
            if not announced:
                run.streaming_since = time.monotonic()
                self._clear_error(run)
                source_name = describe_source(run.source_config)
                self._transition(run, CameraState.STREAMING, f"receiving frames from {source_name}")
                announced = True
            if not self._deliver(run, frame, to_queue=analysed):
                return _StreamEnd.STOPPED
        return _StreamEnd.STOPPED

    def _wanted(self, now: float, timestamp: float) -> tuple[bool, bool]:
        """Whether analysis uses the frame just grabbed (it is offered to the analysis
        selector here, once per frame past the configured fps), and whether a viewer or the
        frame listener wants it."""
        with self._lock:
            demand = self._demand
            analysed = demand is None or demand.selector.offer()
            listened = self._frame_listener is not None and (
                self._listener_gate is None or self._listener_gate.keep(timestamp)
            )
            return analysed, listened or now < self._viewed_until

    def _count_grabbed(self, run: _Run, now: float) -> int | None:
        with self._lock:
            if run is not self._run:
                return None
            sequence = self._next_sequence
            self._next_sequence += 1
            self._frames_decoded += 1
            self._fps_in.record(now)
            return sequence

    def _count_skipped(self, run: _Run, now: float, *, decoded: bool) -> None:
        with self._lock:
            if run is self._run:
                self._frames_skipped += 1
                self._skips.record(now)
                self._frames_not_decoded += 0 if decoded else 1

    def _count_not_needed(self, run: _Run, now: float, *, decoded: bool) -> None:
        with self._lock:
            if run is self._run:
                self._frames_not_needed += 1
                self._not_needed.record(now)
                self._frames_not_decoded += 0 if decoded else 1

    def _deliver(self, run: _Run, frame: Frame, *, to_queue: bool = True) -> bool:
        """Publish a frame to the latest slot and (`to_queue`) the queue; False once the run
        is stopped."""
        now = time.monotonic()
        with self._lock:
            if run is not self._run or run.stop.is_set():
                return False
            queue = self._queue
            first = self._latest is None
            self._latest = frame
            if first or not math.isfinite(self._decode_ms_avg):
                self._decode_ms_avg = frame.decode_ms
            else:
                self._decode_ms_avg += _DECODE_MS_SMOOTHING * (
                    frame.decode_ms - self._decode_ms_avg
                )
            if to_queue:
                self._frames_delivered += 1
                self._fps_out.record(now)
                self._last_frame_time = frame.wall_time
        self._tell_frame_listener(frame)
        if not to_queue:
            return True
        if run.config.queue_policy == "block":
            return queue.put_wait(frame, run.stop)
        if queue.put(frame) is not None:
            with self._lock:
                self._frames_dropped += 1
                self._drops.record(now)
        return True

    def _tell_frame_listener(self, frame: Frame) -> None:
        listener = self._frame_listener
        if listener is None:
            return
        try:
            listener(frame)
        except Exception:  # a listener's bug must not stop the camera
            logger.exception("camera %s: frame listener failed", self.id)


def _resize(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """The image at (width, height), or unchanged when no size is configured."""
    if size is None or (image.shape[1], image.shape[0]) == size:
        return image
    import cv2  # OpenCV loads only when frames are decoded or drawn

    shrinking = size[0] * size[1] < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, size, interpolation=interpolation))


# ---------------------------------------------------------------------------------------------
# Several cameras


class CameraManager:
    """The cameras of a node. Adding, removing or changing one never touches the others."""

    def __init__(
        self,
        *,
        on_state_change: StateListener | None = None,
        stop_timeout_s: float = 5.0,
        on_frame: FrameListener | None = None,
        on_frame_fps: float | None = None,
    ) -> None:
        """`on_frame`, `on_frame_fps`: every camera's frame listener and the rate it needs
        (:meth:`Camera.set_frame_listener`)."""
        self._on_state_change = on_state_change
        self._on_frame = on_frame
        self._on_frame_fps = on_frame_fps
        self._stop_timeout_s = stop_timeout_s
        self._cameras: dict[str, Camera] = {}
        self._lock = threading.RLock()

    def add(self, config: CameraConfig, *, start: bool = True) -> Camera:
        with self._lock:
            if config.id in self._cameras:
                raise ConflictError(f"camera {config.id!r} already exists")
            camera = Camera(
                config, on_state_change=self._on_state_change, stop_timeout_s=self._stop_timeout_s
            )
            camera.set_frame_listener(self._on_frame, self._on_frame_fps)
            self._cameras[config.id] = camera
        if start:
            camera.start()
        return camera

    def remove(self, camera_id: str) -> None:
        with self._lock:
            camera = self._cameras.pop(camera_id, None)
        if camera is None:
            raise NotFoundError(f"no camera {camera_id!r}")
        camera.stop()

    def update(self, config: CameraConfig) -> Camera:
        """Apply a changed config to an existing camera (no-op when nothing changed)."""
        camera = self.get(config.id)
        if camera.config != config:
            camera.reconfigure(config)
        return camera

    def sync(self, configs: Iterable[CameraConfig]) -> None:
        """Make the running cameras exactly `configs`: add, update and remove as needed."""
        wanted = {config.id: config for config in configs}
        for camera_id in set(self.ids()) - set(wanted):
            self.remove(camera_id)
        for camera_id, config in wanted.items():
            if camera_id in self:
                self.update(config)
            else:
                self.add(config)

    def get(self, camera_id: str) -> Camera:
        with self._lock:
            camera = self._cameras.get(camera_id)
        if camera is None:
            raise NotFoundError(f"no camera {camera_id!r}")
        return camera

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._cameras)

    def cameras(self) -> list[Camera]:
        with self._lock:
            return list(self._cameras.values())

    def __contains__(self, camera_id: object) -> bool:
        with self._lock:
            return camera_id in self._cameras

    def __len__(self) -> int:
        with self._lock:
            return len(self._cameras)

    def stats(self) -> dict[str, CameraStats]:
        return {camera.id: camera.stats() for camera in self.cameras()}

    def start_all(self) -> None:
        for camera in self.cameras():
            camera.start()

    def stop_all(self) -> None:
        """Stop every camera; their threads are asked to stop first so they wind down together."""
        cameras = self.cameras()
        for camera in cameras:
            camera.stop(timeout_s=0)
        deadline = time.monotonic() + self._stop_timeout_s
        for camera in cameras:
            camera.stop(timeout_s=max(0.01, deadline - time.monotonic()))

    def __enter__(self) -> CameraManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
