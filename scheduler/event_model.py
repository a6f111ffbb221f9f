"""Analytical event-F1 model (DESIGN §2; thesis §3, Eqs. 1-4, generalised to X-voting).

An app analyses a camera at `analysis_fps` out of `camera_fps`. An event covers
`event_length_s * camera_fps` camera frames; with a random phase the app samples
`floor(D/s)` or `floor(D/s) + 1` of them. The detector's fires on consecutive *camera* frames
form a two-state Markov chain (fire / miss) with stationary fire probability p and lag-1
correlation c. The app sees every s-th frame (s = camera_fps / analysis_fps), and a two-state
chain looked at every s-th step is again such a chain, with the same p and correlation c**s
(the second eigenvalue of the transition matrix is c, so that of its s-th power is c**s).
So the analysed samples form a chain with correlation `c**s`: `sample_correlation`. With a
fractional stride the gaps alternate between floor(s) and ceil(s) camera frames and c**s is
their geometric mean. An event is reported when `x_vote` consecutive samples fire.

The correlation is stored and estimated at the camera rate because that is what the trainer
can measure without bias (consecutive camera frames); a single c applied at every analysis
rate, as earlier versions did, made frames one second apart as alike as frames 0.1 s apart.

Pure logic: no I/O, no framework imports.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mainstream.core.errors import InvalidParameterError


@dataclass(frozen=True)
class EventParams:
    """Everything the model needs for one app running one option (cut point, rate, vote)."""

    camera_fps: float
    analysis_fps: float
    event_length_s: float
    event_frequency: float
    correlation: float
    recall: float
    false_positive_rate: float
    x_vote: int = 1

    def __post_init__(self) -> None:
        validate_stream(
            self.camera_fps, self.event_length_s, self.event_frequency, self.correlation
        )
        validate_rate(self.analysis_fps, self.camera_fps)
        validate_probability("recall", self.recall)
        validate_probability("false_positive_rate", self.false_positive_rate)
        validate_x_vote(self.x_vote)


@dataclass(frozen=True)
class EventQuality:
    """Event-level recall, precision and F1 of one option."""

    recall: float
    precision: float
    f1: float
    false_alarm_probability: float


def _is_real(value: object) -> bool:
    """True for int/float/numpy scalars; False for bool, None, strings and the like."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_probability(field: str, value: float) -> None:
    if not (_is_real(value) and 0.0 <= value <= 1.0):
        raise InvalidParameterError(field, value, "a probability in [0, 1]")


def validate_x_vote(x_vote: int) -> None:
    if not isinstance(x_vote, numbers.Integral) or isinstance(x_vote, bool) or x_vote < 1:
        raise InvalidParameterError("x_vote", x_vote, "an integer >= 1")


def validate_rate(analysis_fps: float, camera_fps: float) -> None:
    if not (
        _is_real(analysis_fps)
        and math.isfinite(analysis_fps)
        and 0.0 < analysis_fps <= camera_fps * (1 + 1e-9)
    ):
        raise InvalidParameterError(
            "analysis_fps", analysis_fps, f"0 < analysis_fps <= camera_fps ({camera_fps})"
        )


def validate_stream(
    camera_fps: float, event_length_s: float, event_frequency: float, correlation: float
) -> None:
    """Check the per-app stream statistics; raise with the offending field named."""
    if not (_is_real(camera_fps) and math.isfinite(camera_fps) and camera_fps > 0):
        raise InvalidParameterError("camera_fps", camera_fps, "a finite number > 0")
    if not (_is_real(event_length_s) and math.isfinite(event_length_s) and event_length_s > 0):
        raise InvalidParameterError("event_length_s", event_length_s, "a finite number > 0")
    if not (_is_real(event_frequency) and 0.0 < event_frequency < 1.0):
        raise InvalidParameterError("event_frequency", event_frequency, "0 < event_frequency < 1")
    validate_probability("correlation", correlation)


def samples_per_window(
    event_length_s: float, camera_fps: float, analysis_fps: float
) -> list[tuple[int, float]]:
    """Distribution of the number of analysed frames in one event window: [(count, prob)].

    The window is `D = event_length_s * camera_fps` camera frames (camera rate, not the
    analysis rate) and the stride is `s = camera_fps / analysis_fps`.
    """
    frames_per_event = event_length_s * camera_fps
    stride = camera_fps / analysis_fps
    expected = frames_per_event / stride
    whole = math.floor(expected + 1e-12)
    fraction = max(0.0, expected - whole)
    if fraction < 1e-12:
        return [(whole, 1.0)]
    return [(whole, 1.0 - fraction), (whole + 1, fraction)]


def sample_correlation(correlation: float, camera_fps: float, analysis_fps: float) -> float:
    """Lag-1 correlation of the analysed samples: the camera-rate correlation to the stride.

    `correlation ** (camera_fps / analysis_fps)`; at the camera rate it is `correlation` itself.
    """
    stride = camera_fps / analysis_fps
    if stride <= 1.0:
        return correlation
    return correlation**stride


def miss_probabilities(
    fire_probability: float, correlation: float, x_vote: int, max_samples: int
) -> list[float]:
    """P(no run of `x_vote` fires in r samples) for r = 0..max_samples, by a DP over run length.

    With x_vote = 1 this is `(1-p) * (1-p+p*c)^(r-1)`, the paper's Eq. 3.
    """
    p, c = fire_probability, correlation
    miss_after_miss = 1.0 - p + p * c
    fire_after_miss = 1.0 - miss_after_miss
    fire_after_fire = p + (1.0 - p) * c
    miss_after_fire = 1.0 - fire_after_fire

    result = [1.0]
    if max_samples == 0:
        return result
    if x_vote <= 2:  # the common votes, on scalars: the same arithmetic as the loop below
        return _miss_probabilities_short(p, x_vote, max_samples, miss_after_miss, miss_after_fire)
    # run[j]: probability of a current run of j fires (j < x_vote) with no x-run seen yet.
    run = [0.0] * x_vote
    run[0] = 1.0 - p
    if x_vote > 1:
        run[1] = p
    result.append(_no_run_yet(run, 1, x_vote))
    for samples in range(2, max_samples + 1):
        nxt = [0.0] * x_vote
        nxt[0] = run[0] * miss_after_miss + sum(run[1:]) * miss_after_fire
        if x_vote > 1:
            nxt[1] = run[0] * fire_after_miss
            for j in range(1, x_vote - 1):
                nxt[j + 1] = run[j] * fire_after_fire
        run = nxt
        result.append(_no_run_yet(run, samples, x_vote))
    return result


def _miss_probabilities_short(
    p: float, x_vote: int, max_samples: int, miss_after_miss: float, miss_after_fire: float
) -> list[float]:
    """`miss_probabilities` for X = 1 and X = 2, bit for bit: the planner calls it for every
    candidate at every rate, and lists of one or two run lengths cost more than the sums."""
    fire_after_miss = 1.0 - miss_after_miss
    no_fire, one_fire = 1.0 - p, p  # run[0], run[1]
    result = [1.0, no_fire if x_vote == 1 else 1.0]
    for _ in range(2, max_samples + 1):
        if x_vote == 1:
            no_fire = no_fire * miss_after_miss + 0 * miss_after_fire
            result.append(no_fire)
        else:
            no_fire, one_fire = (
                no_fire * miss_after_miss + one_fire * miss_after_fire,
                no_fire * fire_after_miss,
            )
            result.append(no_fire + one_fire)
    return result


def miss_probability_grid(
    fire_probabilities: np.ndarray, correlations: np.ndarray, x_vote: int, max_samples: int
) -> np.ndarray:
    """`miss_probabilities` for many fire probabilities and correlations at once:
    `grid[r, i, j]` is `miss_probabilities(fire_probabilities[j], correlations[i], x_vote,
    max_samples)[r]`, bit for bit (the same operations, elementwise).

    The option tables need it for every candidate at every rate: one numpy step per sample
    instead of one Python loop per (candidate, rate).
    """
    p = np.asarray(fire_probabilities, dtype=float)[None, :]
    c = np.asarray(correlations, dtype=float)[:, None]
    miss_after_miss = 1.0 - p + p * c
    fire_after_miss = 1.0 - miss_after_miss
    fire_after_fire = p + (1.0 - p) * c
    miss_after_fire = 1.0 - fire_after_fire
    shape = (c.shape[0], p.shape[1])
    grid = np.empty((max_samples + 1, *shape))
    grid[0] = 1.0
    if max_samples == 0:
        return grid
    # run[j]: probability of a current run of j fires (j < x_vote) with no x-run seen yet.
    run = [np.broadcast_to(1.0 - p, shape)] + [np.zeros(shape)] * (x_vote - 1)
    if x_vote > 1:
        run[1] = np.broadcast_to(p, shape)
    grid[1] = run[0] if x_vote == 1 else 1.0
    for samples in range(2, max_samples + 1):
        if x_vote == 1:  # as `_miss_probabilities_short`
            run = [run[0] * miss_after_miss + 0 * miss_after_fire]
        elif x_vote == 2:
            run = [run[0] * miss_after_miss + run[1] * miss_after_fire, run[0] * fire_after_miss]
        else:
            nxt = [np.zeros(shape)] * x_vote
            nxt[0] = run[0] * miss_after_miss + sum(run[1:]) * miss_after_fire
            nxt[1] = run[0] * fire_after_miss
            for j in range(1, x_vote - 1):
                nxt[j + 1] = run[j] * fire_after_fire
            run = nxt
        if x_vote <= 2:
            grid[samples] = run[0] if x_vote == 1 else run[0] + run[1]
        else:
            grid[samples] = sum(run) if samples >= x_vote else 1.0
    return grid


def _no_run_yet(run: list[float], samples: int, x_vote: int) -> float:
    # Fewer samples than the vote can never report: exactly 1, not 1 minus rounding noise
    # (a spurious 1e-16 false-alarm probability would turn precision 1 into 0 when R = 0).
    return sum(run) if samples >= x_vote else 1.0


def detection_probability(
    fire_probability: float,
    correlation: float,
    x_vote: int,
    sample_counts: Sequence[tuple[int, float]],
) -> float:
    """1 - E_r[miss]: the probability that a window yields an X-run of fires."""
    max_samples = max(count for count, _ in sample_counts)
    misses = miss_probabilities(fire_probability, correlation, x_vote, max_samples)
    return expected_detection(misses, sample_counts)


def expected_detection(
    misses: Sequence[float], sample_counts: Sequence[tuple[int, float]]
) -> float:
    """E_r[1 - miss(r)]: detection probability from a miss table and a window-count distribution.

    Summed this way rather than as 1 - E_r[miss(r)] so that a window that cannot detect
    contributes exactly 0 although the count probabilities only sum to 1 up to rounding.
    """
    detection = sum(prob * (1.0 - misses[count]) for count, prob in sample_counts)
    return min(1.0, max(0.0, detection))


def precision_from(recall: float, false_alarm: float, event_frequency: float) -> float:
    denominator = event_frequency * recall + (1.0 - event_frequency) * false_alarm
    if denominator <= 0.0:
        return 1.0
    return event_frequency * recall / denominator


def f1_from(recall: float, precision: float) -> float:
    if recall <= 0.0 or precision <= 0.0:
        return 0.0
    return 2.0 * recall * precision / (recall + precision)


def event_quality(params: EventParams) -> EventQuality:
    """Event-level recall, precision and F1 for one option (DESIGN §2)."""
    counts = samples_per_window(params.event_length_s, params.camera_fps, params.analysis_fps)
    correlation = sample_correlation(params.correlation, params.camera_fps, params.analysis_fps)
    recall = detection_probability(params.recall, correlation, params.x_vote, counts)
    false_alarm = detection_probability(
        params.false_positive_rate, correlation, params.x_vote, counts
    )
    precision = precision_from(recall, false_alarm, params.event_frequency)
    return EventQuality(
        recall=recall,
        precision=precision,
        f1=f1_from(recall, precision),
        false_alarm_probability=false_alarm,
    )


def event_quality_for_rates(
    analysis_fps_values: Sequence[float],
    *,
    camera_fps: float,
    event_length_s: float,
    event_frequency: float,
    correlation: float,
    recall: float,
    false_positive_rate: float,
    x_vote: int = 1,
) -> list[EventQuality]:
    """`event_quality` of one option at many analysis rates, in the order given.

    The results are identical to calling `event_quality` per rate: each rate has its own
    sample correlation, so its own miss tables, each as long as its window needs.
    """
    validate_stream(camera_fps, event_length_s, event_frequency, correlation)
    validate_probability("recall", recall)
    validate_probability("false_positive_rate", false_positive_rate)
    validate_x_vote(x_vote)
    for analysis_fps in analysis_fps_values:
        validate_rate(analysis_fps, camera_fps)
    if not analysis_fps_values:
        return []

    qualities = []
    for analysis_fps in analysis_fps_values:
        counts = samples_per_window(event_length_s, camera_fps, analysis_fps)
        max_samples = max(count for count, _ in counts)
        at_rate = sample_correlation(correlation, camera_fps, analysis_fps)
        event_misses = miss_probabilities(recall, at_rate, x_vote, max_samples)
        negative_misses = miss_probabilities(false_positive_rate, at_rate, x_vote, max_samples)
        event_recall = expected_detection(event_misses, counts)
        false_alarm = expected_detection(negative_misses, counts)
        precision = precision_from(event_recall, false_alarm, event_frequency)
        qualities.append(
            EventQuality(
                recall=event_recall,
                precision=precision,
                f1=f1_from(event_recall, precision),
                false_alarm_probability=false_alarm,
            )
        )
    return qualities
