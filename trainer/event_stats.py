"""An app's event statistics, measured from labelled video (DESIGN §2 inputs).

The scheduler's event model needs, per app: the event length, the event frequency (fraction of
time covered by events) and the inter-frame correlation `c` of the detector's fires within an
event. The first two come straight from the labelled intervals. `c` is a property of the scene
and the model together (consecutive frames of an event look alike, so a model that misses one
frame tends to miss the next); it is measured from the per-frame fires of a model on held-out
events.

The main estimator fits `c` so that the analytical recall-vs-stride curve
(:mod:`scheduler.event_model`, X = 1) matches the recall-vs-stride curve measured on the
held-out events: that is exactly the use the scheduler makes of `c`. A direct estimator
(P(miss | miss) of consecutive frames) is computed alongside for comparison.

Pure logic: numpy and scipy only, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from mainstream.core.errors import InvalidParameterError
from mainstream.core.manifest import EventStats
from scheduler.event_model import detection_probability, samples_per_window


@dataclass(frozen=True)
class EventInterval:
    """One labelled event: camera frames `start_frame..end_frame`, both ends INCLUSIVE."""

    start_frame: int
    end_frame: int
    label: str = "event"

    def __post_init__(self) -> None:
        if self.start_frame < 0:
            raise InvalidParameterError("start_frame", self.start_frame, "a frame index >= 0")
        if self.end_frame < self.start_frame:
            raise InvalidParameterError(
                "end_frame", self.end_frame, f"end_frame >= start_frame ({self.start_frame})"
            )

    @property
    def frame_count(self) -> int:
        return self.end_frame - self.start_frame + 1


@dataclass(frozen=True)
class EventStatistics:
    """Event length and frequency of one labelled stream."""

    event_count: int
    mean_event_length_s: float
    min_event_length_s: float
    max_event_length_s: float
    event_frequency: float
    total_frames: int
    camera_fps: float

    def to_manifest(self, correlation: float, how_measured: str = "") -> EventStats:
        """The manifest's `event_stats` block, once the correlation is known."""
        return EventStats(
            event_length_s=self.mean_event_length_s,
            min_event_length_s=self.min_event_length_s,
            event_frequency=self.event_frequency,
            correlation=correlation,
            camera_fps=self.camera_fps,
            how_measured=how_measured,
        )


@dataclass(frozen=True)
class RecallPoint:
    """Event recall at one sampling stride: measured, and predicted by the fitted model."""

    stride: int
    analysis_fps: float
    empirical_recall: float
    model_recall: float


@dataclass(frozen=True)
class CorrelationEstimate:
    """The fitted inter-frame correlation and how it was obtained."""

    correlation: float
    per_frame_recall: float
    method: str
    curve: list[RecallPoint]
    strides: list[int]
    event_count: int
    # P(miss | miss) on consecutive event frames turned into c; None when undefined.
    direct_correlation: float | None
    # False when the fires do not determine c (per-frame recall 0 or 1): any c fits equally.
    identifiable: bool
    residual_rms: float


def event_statistics(
    intervals: Sequence[EventInterval],
    total_frames: int,
    fps: float,
    label: str | None = None,
) -> EventStatistics:
    """Mean/min/max event length (s) and event frequency of labelled intervals.

    Frequency is the fraction of the `total_frames` covered by at least one interval
    (overlapping intervals count once). `label` keeps only intervals with that label.
    """
    if isinstance(total_frames, bool) or not isinstance(total_frames, int) or total_frames <= 0:
        raise InvalidParameterError("total_frames", total_frames, "an integer > 0")
    if not (math.isfinite(fps) and fps > 0):
        raise InvalidParameterError("fps", fps, "a finite number > 0")
    chosen = [interval for interval in intervals if label is None or interval.label == label]
    if not chosen:
        raise InvalidParameterError(
            "intervals", f"{len(intervals)} intervals (label={label!r})", "at least one event"
        )
    for interval in chosen:
        if interval.end_frame >= total_frames:
            raise InvalidParameterError(
                "intervals",
                f"{interval.start_frame}..{interval.end_frame}",
                f"frames inside the stream (0..{total_frames - 1})",
            )
    lengths_s = np.array([interval.frame_count for interval in chosen], dtype=float) / fps
    covered = np.zeros(total_frames, dtype=bool)
    for interval in chosen:
        covered[interval.start_frame : interval.end_frame + 1] = True
    return EventStatistics(
        event_count=len(chosen),
        mean_event_length_s=float(lengths_s.mean()),
        min_event_length_s=float(lengths_s.min()),
        max_event_length_s=float(lengths_s.max()),
        event_frequency=float(covered.mean()),
        total_frames=total_frames,
        camera_fps=float(fps),
    )


def empirical_recall_curve(
    fires: np.ndarray, intervals: Sequence[EventInterval], strides: Sequence[int]
) -> np.ndarray:
    """Measured event recall per stride, averaged over events and over all phases.

    At stride `s` and phase `k` the app analyses camera frames k, k+s, k+2s, ...; an event is
    detected when at least one analysed frame inside it fires (X = 1). Every phase 0..s-1 is
    equally likely, which is the random phase the analytical model assumes.
    """
    # Phase k detects an event exactly when some firing frame t of it has t % stride == k, so
    # the detected phases of an event are the distinct residues of its firing frames.
    fired_frames = [
        np.flatnonzero(fires[iv.start_frame : iv.end_frame + 1]) + iv.start_frame
        for iv in intervals
    ]
    event_ids = np.repeat(np.arange(len(intervals)), [len(f) for f in fired_frames])
    frames = np.concatenate(fired_frames) if fired_frames else np.zeros(0, dtype=np.int64)
    recalls = [
        len(np.unique(event_ids * stride + frames % stride)) / (stride * len(intervals))
        for stride in strides
    ]
    return np.array(recalls)


def model_recall_curve(
    per_frame_recall: float,
    correlation: float,
    event_frames: Sequence[int],
    camera_fps: float,
    strides: Sequence[int],
) -> np.ndarray:
    """The analytical model's event recall per stride (X = 1), averaged over the events' lengths."""
    lengths, counts = np.unique(np.asarray(event_frames), return_counts=True)
    weights = counts / counts.sum()
    curve = []
    for stride in strides:
        recall = 0.0
        for length, weight in zip(lengths, weights, strict=True):
            sample_counts = samples_per_window(
                float(length) / camera_fps, camera_fps, camera_fps / stride
            )
            recall += weight * detection_probability(
                per_frame_recall, correlation, 1, sample_counts
            )
        curve.append(recall)
    return np.array(curve)


def direct_correlation(fires: np.ndarray, intervals: Sequence[EventInterval]) -> float | None:
    """c from P(miss | miss) of consecutive frames inside events: P(mm) = 1 - p + p*c.

    Returns None when undefined (no misses, or no fires). The raw value is clipped to [0, 1]:
    noise or a non-stationary detector can push it slightly outside.
    """
    event_fires = [fires[iv.start_frame : iv.end_frame + 1] for iv in intervals]
    all_fires = np.concatenate(event_fires)
    p = float(all_fires.mean())
    misses_followed = 0
    miss_miss = 0
    for segment in event_fires:
        previous_missed = ~segment[:-1]
        misses_followed += int(previous_missed.sum())
        miss_miss += int((previous_missed & ~segment[1:]).sum())
    if misses_followed == 0 or p == 0.0:
        return None
    p_miss_miss = miss_miss / misses_followed
    return float(np.clip((p_miss_miss - (1.0 - p)) / p, 0.0, 1.0))


def compact_fires(
    frame_indices: np.ndarray, fired: np.ndarray, intervals: Sequence[EventInterval]
) -> tuple[np.ndarray, list[EventInterval], int]:
    """Fires of frames sampled every k-th camera frame, as a sequence :func:`estimate_correlation`
    can use: returns (fires, intervals re-indexed to positions in that sequence, k).

    Pass `camera_fps / k` as the camera rate: the sampled frames then play the camera's part,
    and strides count sampled frames. Events with a sampled frame missing are left out.
    """
    frames = np.asarray(frame_indices, dtype=np.int64)
    fired = np.asarray(fired, dtype=bool)
    if frames.ndim != 1 or frames.shape != fired.shape:
        raise InvalidParameterError(
            "fired", f"shape {fired.shape}", f"one value per frame index {frames.shape}"
        )
    steps = np.diff(frames)
    if len(frames) == 0 or (steps <= 0).any():
        raise InvalidParameterError("frame_indices", "unsorted or empty", "increasing frames")
    step = int(steps.min()) if len(steps) else 1
    kept = []
    for interval in intervals:
        first = int(np.searchsorted(frames, interval.start_frame))
        last = int(np.searchsorted(frames, interval.end_frame, side="right")) - 1
        if last < first:
            continue
        complete = (
            frames[first] - interval.start_frame < step
            and interval.end_frame - frames[last] < step
            and bool((steps[first:last] == step).all())
        )
        if complete:
            kept.append(EventInterval(first, last, interval.label))
    return fired, kept, step


def default_strides(event_frames: Sequence[int], max_stride: int = 30) -> list[int]:
    """Strides 1..min(max_stride, median event length): from every frame to ~one per event."""
    median = int(np.median(np.asarray(event_frames)))
    return list(range(1, max(2, min(max_stride, median)) + 1))


def estimate_correlation(
    fires: np.ndarray,
    intervals: Sequence[EventInterval],
    camera_fps: float,
    strides: Sequence[int] | None = None,
    evaluated: np.ndarray | None = None,
) -> CorrelationEstimate:
    """Fit the inter-frame correlation c of DESIGN §2 to a model's fires on held-out events.

    `fires[t]` says whether the model fired on camera frame t (indices as in `intervals`).
    Only frames inside the events are used. `evaluated` (same shape, optional) marks frames the
    model was actually run on; events with any unevaluated frame are left out. For frames
    loaded with a frame step, see :func:`compact_fires`.

    The per-frame recall p is the fire rate over event frames. c minimises the squared gap
    between the measured recall-vs-stride curve and the model's (X = 1) over c in [0, 1]:
    a grid of step 0.01, then a bounded scalar search around the best grid point.
    """
    fires = np.asarray(fires, dtype=bool)
    if fires.ndim != 1:
        raise InvalidParameterError("fires", f"shape {fires.shape}", "a 1-D array, one per frame")
    if not (math.isfinite(camera_fps) and camera_fps > 0):
        raise InvalidParameterError("camera_fps", camera_fps, "a finite number > 0")
    for interval in intervals:
        if interval.end_frame >= len(fires):
            raise InvalidParameterError(
                "intervals",
                f"{interval.start_frame}..{interval.end_frame}",
                f"frames covered by fires (0..{len(fires) - 1})",
            )
    usable = list(intervals)
    if evaluated is not None:
        evaluated = np.asarray(evaluated, dtype=bool)
        if evaluated.shape != fires.shape:
            raise InvalidParameterError(
                "evaluated", f"shape {evaluated.shape}", f"the shape of fires {fires.shape}"
            )
        usable = [iv for iv in usable if evaluated[iv.start_frame : iv.end_frame + 1].all()]
    if not usable:
        raise InvalidParameterError(
            "intervals", f"{len(intervals)} events", "at least one fully evaluated event"
        )

    event_frames = [interval.frame_count for interval in usable]
    chosen_strides = list(strides) if strides is not None else default_strides(event_frames)
    if not chosen_strides or any(
        isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1 for s in chosen_strides
    ):
        raise InvalidParameterError("strides", chosen_strides, "a non-empty list of integers >= 1")
    chosen_strides = [int(s) for s in chosen_strides]

    p = float(np.concatenate([fires[iv.start_frame : iv.end_frame + 1] for iv in usable]).mean())
    measured = empirical_recall_curve(fires, usable, chosen_strides)

    def squared_error(c: float) -> float:
        predicted = model_recall_curve(p, c, event_frames, camera_fps, chosen_strides)
        return float(np.sum((predicted - measured) ** 2))

    direct = direct_correlation(fires, usable)
    identifiable = 0.0 < p < 1.0
    description = (
        f"recall-vs-stride least squares (X=1) on {len(usable)} held-out events, "
        f"strides {chosen_strides[0]}..{chosen_strides[-1]} ({len(chosen_strides)} strides), "
        f"camera {camera_fps:g} fps, per-frame recall {p:.3f}"
    )
    if identifiable:
        grid = np.linspace(0.0, 1.0, 101)
        errors = [squared_error(float(c)) for c in grid]
        best = int(np.argmin(errors))
        low, high = grid[max(0, best - 1)], grid[min(len(grid) - 1, best + 1)]
        refined = minimize_scalar(
            squared_error, bounds=(low, high), method="bounded", options={"xatol": 1e-4}
        )
        correlation = float(grid[best])
        if refined.success and squared_error(float(refined.x)) <= errors[best]:
            correlation = float(refined.x)
    else:
        # The curve does not depend on c when p is 0 or 1; report 0 and say so.
        correlation = 0.0
        description += "; not identifiable (per-frame recall is 0 or 1), correlation set to 0"
    if direct is not None:
        description += f"; direct P(miss|miss) estimate {direct:.3f}"

    predicted = model_recall_curve(p, correlation, event_frames, camera_fps, chosen_strides)
    curve = [
        RecallPoint(
            stride=stride,
            analysis_fps=camera_fps / stride,
            empirical_recall=float(emp),
            model_recall=float(mod),
        )
        for stride, emp, mod in zip(chosen_strides, measured, predicted, strict=True)
    ]
    return CorrelationEstimate(
        correlation=correlation,
        per_frame_recall=p,
        method=description,
        curve=curve,
        strides=chosen_strides,
        event_count=len(usable),
        direct_correlation=direct,
        identifiable=identifiable,
        residual_rms=float(np.sqrt(np.mean((predicted - measured) ** 2))),
    )
