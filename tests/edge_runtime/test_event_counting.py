"""The detector counts events as the event model does when its quiet time is the model's window.

Fires are simulated frame by frame from the camera-rate chain of DESIGN §2 (per-frame recall
inside events, false-positive rate outside, correlation c between consecutive camera frames),
the detector sees every s-th frame, and its events are compared with the model's figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_runtime.detector import (
    QUIET_INTERVALS,
    DetectorConfig,
    EventDetector,
    Transition,
    model_quiet_time,
)
from mainstream.core.errors import InvalidParameterError
from scheduler.event_model import EventParams, event_quality

CAMERA_FPS = 10.0
ANALYSIS_FPS = 5.0
EVENT_LENGTH_S = 4.0
PARAMS = EventParams(
    camera_fps=CAMERA_FPS,
    analysis_fps=ANALYSIS_FPS,
    event_length_s=EVENT_LENGTH_S,
    event_frequency=0.2,
    correlation=0.3,
    recall=0.35,  # a flickering detector: true events have gaps in their fires
    false_positive_rate=0.01,
    x_vote=2,
)
EVENTS = 300


@dataclass(frozen=True)
class Counted:
    events_found: int  # true events with at least one reported event starting inside
    starts_inside: int  # reported events that start inside a true event
    false_alarms: int  # reported events that start outside every true event
    negative_windows: float  # non-event time in event lengths


def simulate(params: EventParams, quiet_time_s: float, events: int, seed: int) -> Counted:
    rng = np.random.default_rng(seed)
    window = round(params.event_length_s * params.camera_fps)
    stride = round(params.camera_fps / params.analysis_fps)
    mean_gap = window * (1 - params.event_frequency) / params.event_frequency
    inside: list[np.ndarray] = []
    spans = []
    position = 0
    for _ in range(events):  # gaps of at least two windows keep events apart
        gap = 2 * window + int(rng.exponential(mean_gap - 2 * window))
        inside += [np.zeros(gap, bool), np.ones(window, bool)]
        spans.append((position + gap, position + gap + window))
        position += gap + window
    region = np.concatenate(inside)
    fires = np.zeros(len(region), bool)
    draws = rng.random(len(region))
    c = params.correlation
    for index, event_frame in enumerate(region):
        p = params.recall if event_frame else params.false_positive_rate
        if index == 0 or event_frame != region[index - 1]:
            fires[index] = draws[index] < p  # a new region starts from its stationary rate
        else:
            previous = fires[index - 1]
            fires[index] = draws[index] < (p + (1 - p) * c if previous else p * (1 - c))
    detector = EventDetector("app", "cam", DetectorConfig(0.5, params.x_vote, quiet_time_s))
    starts = [
        frame
        for frame in range(int(rng.integers(stride)), len(region), stride)
        for change in detector.observe(frame / params.camera_fps, frame, float(fires[frame]))
        if change.transition is Transition.NEW
    ]
    found, inside_count, false_alarms = set(), 0, 0
    begins = np.array([begin for begin, _ in spans])
    for start in starts:
        candidate = int(np.searchsorted(begins, start, side="right")) - 1
        if candidate >= 0 and start < spans[candidate][1]:
            found.add(candidate)
            inside_count += 1
        else:
            false_alarms += 1
    negative_frames = len(region) - events * window
    return Counted(len(found), inside_count, false_alarms, negative_frames / window)


def test_with_the_model_quiet_time_one_true_event_is_one_reported_event() -> None:
    model = event_quality(PARAMS)
    counted = simulate(PARAMS, model_quiet_time(EVENT_LENGTH_S, ANALYSIS_FPS), EVENTS, seed=1)
    assert counted.starts_inside == counted.events_found  # no event split in two
    recall = counted.events_found / EVENTS
    standard_error = math.sqrt(model.recall * (1 - model.recall) / EVENTS)
    assert abs(recall - model.recall) < 4 * standard_error + 0.01
    expected_false = model.false_alarm_probability * counted.negative_windows
    assert abs(counted.false_alarms - expected_false) < 4 * math.sqrt(expected_false) + 2


def test_a_short_quiet_time_splits_true_events_the_model_counts_once() -> None:
    counted = simulate(PARAMS, 0.5, EVENTS, seed=1)
    assert counted.starts_inside > 1.3 * counted.events_found


@given(
    event_length_s=st.floats(0.05, 600, allow_nan=False),
    analysis_fps=st.floats(0.01, 60, allow_nan=False),
)
def test_the_quiet_time_covers_the_window_and_the_next_analysed_frame(
    event_length_s: float, analysis_fps: float
) -> None:
    quiet = model_quiet_time(event_length_s, analysis_fps)
    assert quiet >= round(event_length_s, 3) - 1e-9
    assert quiet >= round(QUIET_INTERVALS / analysis_fps, 3) - 1e-9
    assert quiet == pytest.approx(max(event_length_s, QUIET_INTERVALS / analysis_fps), abs=1e-3)


def test_the_quiet_time_needs_a_length_and_a_rate() -> None:
    with pytest.raises(InvalidParameterError):
        model_quiet_time(0.0, 1.0)
    with pytest.raises(InvalidParameterError):
        model_quiet_time(1.0, 0.0)
