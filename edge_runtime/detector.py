"""Per-app event detection: X-voting start, quiet-time end (DESIGN §7).

Pure logic: the detector turns the scores of analysed frames into event transitions. The caller
owns persistence (store before publish) and snapshot encoding.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from enum import Enum

from mainstream.core.errors import InvalidParameterError


class Transition(str, Enum):
    NEW = "new"
    UPDATE = "update"
    END = "end"


# Why an event ended (`EventRecord.ended_by`); None while it is open.
ENDED_QUIET = "quiet"  # no analysed frame fired for the quiet time (the normal end)
ENDED_STOPPED = "stopped"  # the app, the camera's analysis or the node stopped
ENDED_RESTART = "restart"  # left open by a crash; closed when the node started again


@dataclass(frozen=True)
class EventRecord:
    """What is known about one event at one moment; `end_time` is None while it is open.

    `last_time` is the time of the latest frame that fired (None in records made before it
    existed); `ended_by` says why the event ended (`ENDED_*`; None while it is open);
    `has_clip` whether the event's video clip is stored (it is written after the event).
    """

    id: str
    app: str
    camera: str
    start_time: float
    end_time: float | None
    peak_score: float
    peak_frame: int
    frames_analysed: int
    frames_fired: int
    last_time: float | None = None
    ended_by: str | None = None
    has_clip: bool = False


@dataclass(frozen=True)
class EventChange:
    transition: Transition
    event: EventRecord
    peak_improved: bool = False
    clip_stored: bool = False  # an "update" that announces the event's clip


QUIET_INTERVALS = 1.5
"""An event stays open at least this many analysis intervals without a fire (one missed frame
must not split it)."""


def model_quiet_time(event_length_s: float, analysis_fps: float) -> float:
    """The quiet time that makes the detector count events as the event model does (DESIGN §2).

    The model scores one window of the app's mean event length: a true event is found when some
    X consecutive samples in its window fire, and a negative window of that length raises at
    most one false alarm. Ending an event only after `event_length_s` without a fire merges the
    fires of one window, so a true event with a short gap (a missed frame, an occlusion) is one
    event and a burst of false fires one false alarm; 1.5 analysis intervals is the floor, so
    that the next analysed frame can still continue the event.
    """
    if not (event_length_s > 0 and analysis_fps > 0):
        raise InvalidParameterError(
            "event_length_s, analysis_fps", (event_length_s, analysis_fps), "both > 0"
        )
    return round(max(event_length_s, QUIET_INTERVALS / analysis_fps), 3)


@dataclass
class DetectorConfig:
    threshold: float = 0.5
    x_vote: int = 1
    quiet_time_s: float = 2.0
    update_every_frames: int = 0  # 0: send updates only when the peak improves

    def __post_init__(self) -> None:
        if not (0.0 <= self.threshold <= 1.0):
            raise InvalidParameterError("threshold", self.threshold, "a score in [0, 1]")
        if self.x_vote < 1:
            raise InvalidParameterError("x_vote", self.x_vote, "an integer >= 1")
        if self.quiet_time_s < 0:
            raise InvalidParameterError("quiet_time_s", self.quiet_time_s, "seconds >= 0")


@dataclass
class EventDetector:
    """X consecutive analysed frames that fire open an event; `quiet_time_s` without a fire closes it."""

    app: str
    camera: str
    config: DetectorConfig = field(default_factory=DetectorConfig)
    _run_length: int = 0
    _open: EventRecord | None = None
    _last_fire_time: float = 0.0
    _frames_since_update: int = 0

    @property
    def is_active(self) -> bool:
        return self._open is not None

    @property
    def open_event(self) -> EventRecord | None:
        return self._open

    def observe(self, timestamp: float, frame_index: int, score: float) -> list[EventChange]:
        """Feed one analysed frame's positive-class score; return the transitions it causes."""
        fired = score >= self.config.threshold
        changes: list[EventChange] = []
        if self._open is not None and timestamp - self._last_fire_time > self.config.quiet_time_s:
            changes.append(self._close(self._last_fire_time, ENDED_QUIET))
        self._run_length = self._run_length + 1 if fired else 0
        if fired:
            self._last_fire_time = timestamp

        if self._open is None:
            if self._run_length >= self.config.x_vote:
                self._open = EventRecord(
                    id=uuid.uuid4().hex,
                    app=self.app,
                    camera=self.camera,
                    start_time=timestamp,
                    end_time=None,
                    peak_score=score,
                    peak_frame=frame_index,
                    frames_analysed=1,
                    frames_fired=1,
                    last_time=timestamp,
                )
                self._frames_since_update = 0
                changes.append(EventChange(Transition.NEW, self._open, peak_improved=True))
            return changes

        improved = score > self._open.peak_score
        self._open = replace(
            self._open,
            peak_score=max(score, self._open.peak_score),
            peak_frame=frame_index if improved else self._open.peak_frame,
            frames_analysed=self._open.frames_analysed + 1,
            frames_fired=self._open.frames_fired + int(fired),
            last_time=self._last_fire_time,
        )
        self._frames_since_update += 1
        every = self.config.update_every_frames
        if improved or (every and self._frames_since_update >= every):
            self._frames_since_update = 0
            changes.append(EventChange(Transition.UPDATE, self._open, peak_improved=improved))
        return changes

    def advance_clock(self, timestamp: float) -> list[EventChange]:
        """Close an open event once the quiet time has passed, even if no frame was analysed."""
        if self._open is not None and timestamp - self._last_fire_time > self.config.quiet_time_s:
            return [self._close(self._last_fire_time, ENDED_QUIET)]
        return []

    def flush(self) -> list[EventChange]:
        """Close any open event now (the stream ended or the app was removed)."""
        if self._open is None:
            return []
        return [self._close(self._last_fire_time, ENDED_STOPPED)]

    def _close(self, end_time: float, ended_by: str) -> EventChange:
        assert self._open is not None
        closed = replace(self._open, end_time=end_time, ended_by=ended_by)
        self._open = None
        self._run_length = 0
        return EventChange(Transition.END, closed)
