"""An app's event statistics, measured from labelled video (DESIGN §2 inputs).

The scheduler's event model needs, per app: the event length, the event frequency (fraction of
time covered by events) and the inter-frame correlation `c` of the detector's fires within an
event. The first two come straight from the labelled intervals. `c` is a property of the scene
and the model together (consecutive frames of an event look alike, so a model that misses one
frame tends to miss the next); it is measured from the per-frame fires of a model on held-out
events.

`c` is the lag-1 correlation of the fires on consecutive *camera* frames (the event model
raises it to the stride for slower analysis rates). It is estimated directly from the
transitions between consecutive held-out event frames (fire->fire, fire->miss, miss->fire,
miss->miss): c = 1 - P(fire | miss) - P(miss | fire), with a Jeffreys posterior on each
transition probability (:func:`scheduler.estimates.correlation_posterior`), so the estimate
carries a credible interval. An earlier estimator fitted one c to the measured recall-vs-stride
curve while the model applied that c unchanged at every stride; as the true correlation of
frames s apart is c**s, that fit was biased towards 0 (true c 0.5 gave 0.000). The curve is
still measured, and compared with the model's, as a check of the whole model.

Pure logic: numpy and scipy only, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mainstream.core.errors import InvalidParameterError
from mainstream.core.manifest import CorrelationEvidence, EventStats
from scheduler.estimates import (
    CREDIBLE_LEVEL,
    CorrelationPosterior,
    TransitionCounts,
    correlation_posterior,
    frame_correlation,
    transition_counts,
)
from scheduler.event_model import detection_probability, sample_correlation, samples_per_window


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

    def to_manifest(
        self,
        correlation: float,
        how_measured: str = "",
        evidence: CorrelationEvidence | None = None,
    ) -> EventStats:
        """The manifest's `event_stats` block, once the correlation is known."""
        return EventStats(
            event_length_s=self.mean_event_length_s,
            min_event_length_s=self.min_event_length_s,
            event_frequency=self.event_frequency,
            correlation=correlation,
            camera_fps=self.camera_fps,
            how_measured=how_measured,
            correlation_evidence=evidence,
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
    """The camera-rate inter-frame correlation, its interval and how it was obtained."""

    correlation: float  # posterior mean: what the scheduler uses
    low: float
    high: float
    level: float
    per_frame_recall: float
    method: str
    curve: list[RecallPoint]
    strides: list[int]
    event_count: int
    # 1 - P(fire|miss) - P(miss|fire) from the counted ratios of the transitions used, at the
    # camera rate; None when they do not determine it.
    direct_correlation: float | None
    # False when neither the event frames nor the negative frames determine c (no misses or
    # no fires among them): c is then the stated fallback.
    identifiable: bool
    residual_rms: float
    transitions: TransitionCounts
    source: str  # "event frames", "negative frames" or "fallback"
    frame_gap: int  # camera frames between consecutive entries of the fires

    def evidence(self) -> CorrelationEvidence:
        """What the manifest keeps of it (format version 2)."""
        return CorrelationEvidence(
            interval=(self.low, self.high),
            level=self.level,
            source=self.source,
            identifiable=self.identifiable,
            frame_gap=self.frame_gap,
            fire_fire=self.transitions.fire_fire,
            fire_miss=self.transitions.fire_miss,
            miss_fire=self.transitions.miss_fire,
            miss_miss=self.transitions.miss_miss,
            events=self.event_count,
        )


FALLBACK_CORRELATION = 0.0
"""c when no held-out transitions determine it: independent frames, which (with X = 1)
predict the most false alarms; its interval is then the whole of [0, 1]."""


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
    """The analytical model's event recall per stride (X = 1), averaged over the events' lengths.

    `correlation` is that of consecutive entries (camera frames); the model raises it to the
    stride.
    """
    lengths, counts = np.unique(np.asarray(event_frames), return_counts=True)
    weights = counts / counts.sum()
    curve = []
    for stride in strides:
        recall = 0.0
        for length, weight in zip(lengths, weights, strict=True):
            sample_counts = samples_per_window(
                float(length) / camera_fps, camera_fps, camera_fps / stride
            )
            at_stride = sample_correlation(correlation, camera_fps, camera_fps / stride)
            recall += weight * detection_probability(per_frame_recall, at_stride, 1, sample_counts)
        curve.append(recall)
    return np.array(curve)


def direct_correlation(fires: np.ndarray, intervals: Sequence[EventInterval]) -> float | None:
    """c = 1 - P(fire | miss) - P(miss | fire) from the counted transitions inside events.

    Returns None when undefined (no misses, or no fires, followed by another event frame).
    The value is clipped to [0, 1]: noise or a non-stationary detector can push it outside.
    """
    counts = event_transitions(fires, intervals)
    return correlation_posterior(counts).counted


def event_transitions(fires: np.ndarray, intervals: Sequence[EventInterval]) -> TransitionCounts:
    """Transitions between consecutive frames of each event (never across two events)."""
    total = TransitionCounts()
    for interval in intervals:
        total += transition_counts(fires[interval.start_frame : interval.end_frame + 1])
    return total


def negative_transitions(
    fires: np.ndarray, intervals: Sequence[EventInterval], evaluated: np.ndarray | None
) -> TransitionCounts:
    """Transitions between consecutive evaluated frames outside every event."""
    negative = np.ones(len(fires), dtype=bool)
    for interval in intervals:
        negative[interval.start_frame : interval.end_frame + 1] = False
    if evaluated is not None:
        negative &= evaluated
    pairs = negative[:-1] & negative[1:]
    before, after = fires[:-1][pairs], fires[1:][pairs]
    return TransitionCounts(
        fire_fire=int(np.count_nonzero(before & after)),
        fire_miss=int(np.count_nonzero(before & ~after)),
        miss_fire=int(np.count_nonzero(~before & after)),
        miss_miss=int(np.count_nonzero(~before & ~after)),
    )


def class_frame_correlations(
    fires: np.ndarray, intervals: Sequence[EventInterval], evaluated: np.ndarray | None = None
) -> tuple[float | None, float | None]:
    """Lag-1 correlation of the fires on consecutive frames inside the events and on
    consecutive evaluated frames outside them; None where the fires do not determine it."""
    fired = np.asarray(fires, dtype=bool)
    return (
        frame_correlation(event_transitions(fired, intervals)),
        frame_correlation(negative_transitions(fired, intervals, evaluated)),
    )


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
    frame_gap: int = 1,
    level: float = CREDIBLE_LEVEL,
) -> CorrelationEstimate:
    """Estimate the camera-rate inter-frame correlation c of DESIGN §2 from held-out fires.

    `fires[t]` says whether the model fired on entry t (indices as in `intervals`); entries
    are `frame_gap` camera frames apart (1: every camera frame; see :func:`compact_fires`) and
    `camera_fps` is the rate of the entries. `evaluated` (same shape, optional) marks entries
    the model was actually run on; events with any unevaluated entry are left out.

    c comes from the transitions inside the held-out events (:mod:`scheduler.estimates`).
    When they do not determine it (the model fired on every event frame, or on none), the
    transitions between negative frames are used, and when those do not either, c is
    `FALLBACK_CORRELATION` with the interval [0, 1]. The recall-vs-stride curve (strides in
    entries, X = 1) is measured and set beside the model's as a check; `residual_rms` says how
    far apart they are.
    """
    fires = np.asarray(fires, dtype=bool)
    if fires.ndim != 1:
        raise InvalidParameterError("fires", f"shape {fires.shape}", "a 1-D array, one per frame")
    if not (math.isfinite(camera_fps) and camera_fps > 0):
        raise InvalidParameterError("camera_fps", camera_fps, "a finite number > 0")
    if isinstance(frame_gap, bool) or not isinstance(frame_gap, int) or frame_gap < 1:
        raise InvalidParameterError("frame_gap", frame_gap, "an integer >= 1")
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

    transitions = event_transitions(fires, usable)
    source = "event frames"
    if not transitions.identifiable:
        transitions = negative_transitions(fires, intervals, evaluated)
        source = "negative frames"
    posterior: CorrelationPosterior = correlation_posterior(transitions, frame_gap, level)
    gap_note = f"{frame_gap} camera frames apart, " if frame_gap > 1 else ""
    description = (
        f"transitions between consecutive {source} ({gap_note}{len(usable)} held-out events, "
        f"{transitions.after_fire + transitions.after_miss} pairs: "
        f"fire->fire {transitions.fire_fire}, fire->miss {transitions.fire_miss}, "
        f"miss->fire {transitions.miss_fire}, miss->miss {transitions.miss_miss}); "
        f"camera-rate c {posterior.mean:.3f}, {level:.0%} interval "
        f"[{posterior.low:.3f}, {posterior.high:.3f}] (Jeffreys posterior mean); "
        f"per-frame recall {p:.3f}"
    )
    if posterior.identifiable:
        correlation, low, high = posterior.mean, posterior.low, posterior.high
    else:
        source = "fallback"
        correlation, low, high = FALLBACK_CORRELATION, 0.0, 1.0
        description = (
            f"not identifiable: the model fired on every held-out frame or on none, inside "
            f"the {len(usable)} events and outside them; correlation set to "
            f"{FALLBACK_CORRELATION:g} (independent frames: with X = 1 the most false alarms), "
            f"interval [0, 1]; per-frame recall {p:.3f}"
        )

    per_entry = correlation**frame_gap
    predicted = model_recall_curve(p, per_entry, event_frames, camera_fps, chosen_strides)
    residual = float(np.sqrt(np.mean((predicted - measured) ** 2)))
    description += (
        f"; recall-vs-stride check over strides {chosen_strides[0]}..{chosen_strides[-1]}: "
        f"model vs measured rms {residual:.3f}"
    )
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
        low=low,
        high=high,
        level=level,
        per_frame_recall=p,
        method=description,
        curve=curve,
        strides=chosen_strides,
        event_count=len(usable),
        direct_correlation=posterior.counted,
        identifiable=posterior.identifiable,
        residual_rms=residual,
        transitions=transitions,
        source=source,
        frame_gap=frame_gap,
    )
