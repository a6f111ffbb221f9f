"""Monte-Carlo simulation of the process the event model describes (DESIGN §2).

It exists to check the closed forms in `event_model`, so it simulates the process literally
instead of reusing any of the model's formulas: each trial draws the fire/miss outcome of every
*camera* frame of a window of `D = event_length_s * camera_fps` frames from the two-state
Markov chain (the first frame fires with probability p; afterwards P(fire | fire) =
p + (1 - p)·c and P(fire | miss) = 1 - (1 - p + p·c)), lays a sampling grid with stride
`s = camera_fps / analysis_fps` and a uniformly random phase over it (the sample at position
x looks at camera frame floor(x)), and reports the window when `x_vote` consecutive samples
fired. The model's sample correlation c**s is not used here: the simulation walks the camera
frames between samples, so it checks that step too (exact for whole strides; for fractional
ones the gaps alternate and c**s is their geometric mean).

Trials are vectorised across a numpy array and walked one camera frame at a time, so the cost
is about `trials x camera frames per window` element operations. Pure logic: no I/O.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from mainstream.core.errors import InvalidParameterError
from scheduler.event_model import (
    EventParams,
    EventQuality,
    f1_from,
    precision_from,
    validate_probability,
    validate_x_vote,
)

# Trials simulated per numpy batch; bounds memory to a few MiB whatever `trials` is.
TRIALS_PER_BATCH = 1 << 18


def simulate_event_quality(params: EventParams, trials: int, seed: int) -> EventQuality:
    """Simulated event recall, false-alarm probability, precision and F1 of one option.

    Event windows and negative windows use independent random streams derived from `seed`,
    the same ones `simulate_recall` and `simulate_false_alarm_probability` use.
    """
    recall = simulate_recall(params, trials, seed)
    false_alarm = simulate_false_alarm_probability(params, trials, seed)
    precision = precision_from(recall, false_alarm, params.event_frequency)
    return EventQuality(
        recall=recall,
        precision=precision,
        f1=f1_from(recall, precision),
        false_alarm_probability=false_alarm,
    )


def simulate_recall(params: EventParams, trials: int, seed: int) -> float:
    """Fraction of simulated event windows in which `x_vote` consecutive samples fired."""
    event_stream, _ = _streams(seed)
    return simulate_detection(
        fire_probability=params.recall,
        correlation=params.correlation,
        x_vote=params.x_vote,
        frames_per_event=params.event_length_s * params.camera_fps,
        stride=params.camera_fps / params.analysis_fps,
        trials=trials,
        rng=event_stream,
    )


def simulate_false_alarm_probability(params: EventParams, trials: int, seed: int) -> float:
    """Fraction of simulated negative windows (same length, fire probability q) that alarm."""
    _, negative_stream = _streams(seed)
    return simulate_detection(
        fire_probability=params.false_positive_rate,
        correlation=params.correlation,
        x_vote=params.x_vote,
        frames_per_event=params.event_length_s * params.camera_fps,
        stride=params.camera_fps / params.analysis_fps,
        trials=trials,
        rng=negative_stream,
    )


def simulate_sample_counts(params: EventParams, trials: int, seed: int) -> np.ndarray:
    """Number of analysed samples that land in each of `trials` randomly phased windows."""
    _validate_trials(trials)
    frames_per_event = params.event_length_s * params.camera_fps
    stride = params.camera_fps / params.analysis_fps
    phase = np.random.default_rng(seed).random(trials) * stride
    positions = phase[:, np.newaxis] + stride * np.arange(_max_samples(frames_per_event, stride))
    return np.count_nonzero(positions < frames_per_event, axis=1)


def simulate_detection(
    *,
    fire_probability: float,
    correlation: float,
    x_vote: int,
    frames_per_event: float,
    stride: float,
    trials: int,
    rng: np.random.Generator,
) -> float:
    """Fraction of `trials` randomly phased windows that contain `x_vote` consecutive fires."""
    validate_probability("fire_probability", fire_probability)
    validate_probability("correlation", correlation)
    validate_x_vote(x_vote)
    if not (math.isfinite(frames_per_event) and frames_per_event > 0):
        raise InvalidParameterError("frames_per_event", frames_per_event, "a finite number > 0")
    if not (math.isfinite(stride) and stride >= 1.0 - 1e-9):
        raise InvalidParameterError("stride", stride, "a finite number >= 1 (camera frames)")
    _validate_trials(trials)

    detected = 0
    for start in range(0, trials, TRIALS_PER_BATCH):
        batch = min(TRIALS_PER_BATCH, trials - start)
        detected += _count_detections(
            fire_probability, correlation, x_vote, frames_per_event, stride, batch, rng
        )
    return detected / trials


def _count_detections(
    fire_probability: float,
    correlation: float,
    x_vote: int,
    frames_per_event: float,
    stride: float,
    trials: int,
    rng: np.random.Generator,
) -> int:
    p, c = fire_probability, correlation
    fire_after_fire = p + (1.0 - p) * c
    fire_after_miss = 1.0 - (1.0 - p + p * c)

    # The camera frame each trial's next sample looks at (the grid's position, floored).
    next_position = rng.random(trials) * stride
    # The loop updates these buffers in place: it is the whole cost of a simulation.
    uniform = np.empty(trials)
    fire_threshold = np.empty(trials)
    fired = np.zeros(trials, dtype=bool)
    sampled = np.zeros(trials, dtype=bool)
    run_length = np.zeros(trials, dtype=np.int32)
    detected = np.zeros(trials, dtype=bool)
    for frame in range(math.ceil(frames_per_event)):
        rng.random(out=uniform)
        if frame == 0:
            fire_threshold.fill(p)
        else:
            # P(fire | previous fired) - P(fire | previous missed) = c, so one fused update.
            np.multiply(fired, fire_after_fire - fire_after_miss, out=fire_threshold)
            fire_threshold += fire_after_miss
        np.less(uniform, fire_threshold, out=fired)
        # A stride >= 1 puts at most one sample on a camera frame; none past the window.
        np.less(next_position, frame + 1, out=sampled)
        sampled &= next_position < frames_per_event
        # Sampled frames extend the run of fires or end it; the others leave it as it is.
        run_length += sampled
        run_length *= fired | ~sampled
        detected |= sampled & (run_length >= x_vote)
        next_position += stride * sampled
    return int(np.count_nonzero(detected))


def _max_samples(frames_per_event: float, stride: float) -> int:
    """An upper bound on the samples a window can hold; positions past the window are masked."""
    return math.floor(frames_per_event / stride) + 1


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for event windows and negative windows."""
    event_seed, negative_seed = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(event_seed), np.random.default_rng(negative_seed)


def _validate_trials(trials: int) -> None:
    if isinstance(trials, bool) or not isinstance(trials, numbers.Integral) or trials < 1:
        raise InvalidParameterError("trials", trials, "an integer >= 1")
