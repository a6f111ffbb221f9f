"""Operator feedback (scheduler/feedback.py): the Beta posterior on event precision, and the
per-frame FPR that makes the event model produce a given precision."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mainstream.core.errors import InvalidParameterError
from mainstream.core.manifest import FrameEvidence
from scheduler.event_model import EventParams, event_quality
from scheduler.feedback import (
    MarkedOption,
    false_positive_rate_for,
    implied_shift,
    mean_precision,
    option_params,
    precision_posterior,
    with_shift,
)
from scheduler.problem import AppSpec, Candidate

probabilities = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def options(draw: st.DrawFn) -> EventParams:
    """A valid option with small windows (the model's cost grows with samples x vote)."""
    camera_fps = draw(st.sampled_from([5.0, 10.0, 15.0]))
    return EventParams(
        camera_fps=camera_fps,
        analysis_fps=draw(st.sampled_from([0.5, 1.0, 2.0, camera_fps])),
        event_length_s=draw(st.floats(min_value=0.2, max_value=4.0)),
        event_frequency=draw(st.floats(min_value=0.01, max_value=0.5)),
        correlation=draw(probabilities),
        recall=draw(st.floats(min_value=0.05, max_value=1.0)),
        false_positive_rate=draw(probabilities),
        x_vote=draw(st.integers(min_value=1, max_value=3)),
    )


def precision_at(params: EventParams, rate: float) -> float:
    return event_quality(replace(params, false_positive_rate=rate)).precision


@settings(max_examples=60, deadline=None)
@given(options(), probabilities)
def test_the_implied_fpr_reproduces_the_precision_it_was_asked_for(
    params: EventParams, rate: float
) -> None:
    target = precision_at(params, rate)
    found = false_positive_rate_for(target, params)
    assert 0.0 <= found <= 1.0
    assert precision_at(params, found) == pytest.approx(target, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(options(), probabilities, probabilities)
def test_a_lower_precision_needs_at_least_as_high_an_fpr(
    params: EventParams, first: float, second: float
) -> None:
    low, high = sorted((first, second))
    assert false_positive_rate_for(low, params) >= false_positive_rate_for(high, params) - 1e-9


@settings(max_examples=30, deadline=None)
@given(options(), options(), st.integers(1, 20), st.integers(1, 20))
def test_marks_that_agree_with_the_package_leave_its_fprs_alone(
    first: EventParams, second: EventParams, first_events: int, second_events: int
) -> None:
    """A target equal to what the package predicts is met by no shift (or by one that
    changes no precision: flat stretches of the model)."""
    marked = [MarkedOption(first, first_events), MarkedOption(second, second_events)]
    predicted = mean_precision(marked)
    shift = implied_shift(predicted, marked)
    assert mean_precision(marked, shift) == pytest.approx(predicted, abs=1e-6)


def test_an_fpr_of_zero_moves_when_events_turn_out_false() -> None:
    """The package measured FPR 0 (no false fire in a few hundred frames); operators mark
    6 of 9 events false: the implied FPR is well above 0, and F1 falls."""
    params = EventParams(10.0, 3.0, 2.0, 0.1, 0.5, 0.94, 0.0, 1)
    assert event_quality(params).precision == 1.0
    posterior = precision_posterior(1.0, true_marks=3, false_marks=6)
    assert posterior.mean == pytest.approx((4 * 0.98 + 3) / 13)
    rate = false_positive_rate_for(posterior.mean, params)
    assert 0.001 < rate < 0.1
    assert precision_at(params, rate) == pytest.approx(posterior.mean, abs=1e-6)
    assert event_quality(replace(params, false_positive_rate=rate)).f1 < 0.7


@settings(max_examples=80, deadline=None)
@given(probabilities, st.integers(0, 200), st.integers(0, 200), st.floats(0.1, 50.0))
def test_the_posterior_lies_between_the_prediction_and_the_marks(
    predicted: float, true_marks: int, false_marks: int, strength: float
) -> None:
    posterior = precision_posterior(predicted, true_marks, false_marks, strength)
    centre = min(0.98, max(0.02, predicted))
    assert posterior.alpha + posterior.beta == pytest.approx(strength + true_marks + false_marks)
    if true_marks + false_marks:
        observed = true_marks / (true_marks + false_marks)
        low, high = sorted((centre, observed))
        assert low - 1e-12 <= posterior.mean <= high + 1e-12
    else:
        assert posterior.mean == pytest.approx(centre)
    first, last = posterior.interval(0.9)
    assert 0.0 <= first < last <= 1.0
    if min(posterior.alpha, posterior.beta) >= 1:  # a very skewed belief's mean is in its tail
        assert first <= posterior.mean <= last


def test_more_marks_narrow_the_interval() -> None:
    few = precision_posterior(0.9, 1, 2).interval()
    many = precision_posterior(0.9, 10, 20).interval()
    assert many[1] - many[0] < few[1] - few[0]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidParameterError, match="predicted"):
        precision_posterior(1.5, 1, 1)
    with pytest.raises(InvalidParameterError, match="prior_strength"):
        precision_posterior(0.5, 1, 1, prior_strength=0)
    with pytest.raises(InvalidParameterError, match="target_precision"):
        false_positive_rate_for(math.nan, EventParams(10.0, 1.0, 1.0, 0.1, 0.5, 0.9, 0.1))


def test_the_shift_moves_every_candidate_within_zero_and_one() -> None:
    app = AppSpec(
        name="trains",
        event_length_s=2.0,
        event_frequency=0.1,
        correlation=0.5,
        candidates=[
            Candidate(cut_point="a", recall=0.9, false_positive_rate=0.0),
            Candidate(cut_point="b", recall=0.8, false_positive_rate=0.97),
        ],
    )
    moved = with_shift(app, 0.05)
    assert [c.planned_rates(None)[1] for c in moved.candidates] == [0.05, 1.0]
    assert [c.planned_rates(None)[1] for c in with_shift(app, -0.5).candidates] == [0.0, 0.47]
    assert [c.false_positive_rate for c in moved.candidates] == [0.0, 0.97]  # as measured
    assert moved.candidates[1].rate_bounds()[1] == (1.0, 1.0)
    params = option_params(app, 10.0, "b", 2.0, 2)
    assert params is not None and (params.recall, params.x_vote) == (0.8, 2)
    assert option_params(app, 10.0, "gone", 2.0, 1) is None


def test_the_shift_applies_to_the_posterior_the_scheduler_plans_on() -> None:
    """A package with counts is planned on its posterior, so the shift must move that."""
    evidence = FrameEvidence(
        positive_frames=94, positive_fires=88, negative_frames=206, negative_fires=0
    )
    candidate = Candidate(cut_point="a", recall=0.936, false_positive_rate=0.0, evidence=evidence)
    app = AppSpec(
        name="trains",
        event_length_s=2.0,
        event_frequency=0.1,
        correlation=0.5,
        candidates=[candidate],
    )
    mean = candidate.planned_rates(None)[1]
    assert 0 < mean < 0.01  # 0 of 206 is not a rate of 0
    moved = with_shift(app, 0.1).candidates[0]
    assert moved.planned_rates(None)[1] == pytest.approx(mean + 0.1)
    assert moved.planned_rates(0.9)[1] == pytest.approx(candidate.planned_rates(0.9)[1] + 0.1)
    params = option_params(with_shift(app, 0.1), 10.0, "a", 2.0, 1)
    assert params is not None and params.false_positive_rate == pytest.approx(mean + 0.1)
