"""Per-frame figures as estimates: Beta posteriors, the correlation's posterior, and plans
made on them (scheduler/estimates.py, the planner's F1 interval and `confidence`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta as beta_distribution

from mainstream.core.errors import InvalidParameterError
from mainstream.core.manifest import design_effect
from scheduler.estimates import (
    TransitionCounts,
    correlation_posterior,
    frame_correlation,
    planning_rates,
    rate_estimate,
    transition_counts,
)
from scheduler.planner import evaluate_assignment, make_plan
from scheduler.problem import Problem


@st.composite
def counts(draw: st.DrawFn) -> tuple[int, int]:
    trials = draw(st.integers(0, 5000))
    return draw(st.integers(0, trials)), trials


@given(counted=counts(), level=st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99]))
def test_the_interval_holds_the_mean_and_never_leaves_0_1(
    counted: tuple[int, int], level: float
) -> None:
    successes, trials = counted
    estimate = rate_estimate(successes, trials, level)
    assert 0.0 <= estimate.low <= estimate.mean <= estimate.high <= 1.0
    assert 0.0 < estimate.mean < 1.0  # a count is never a rate of exactly 0 or 1
    assert estimate.mean == pytest.approx((successes + 0.5) / (trials + 1))


@given(trials=st.integers(1, 100_000))
def test_zero_false_positives_is_never_a_rate_of_zero(trials: int) -> None:
    estimate = rate_estimate(0, trials)
    assert estimate.counted == 0.0
    assert estimate.low == 0.0
    assert estimate.mean == pytest.approx(0.5 / (trials + 1))
    # The upper end is the Jeffreys posterior's 95 % quantile: about 1.92 / n for large n.
    assert estimate.high == pytest.approx(beta_distribution.ppf(0.95, 0.5, trials + 0.5))
    assert estimate.mean < estimate.high < 3.0 / trials + 1e-12


@given(counted=counts(), confidence=st.floats(0.9, 0.99))
def test_a_confident_plan_takes_the_pessimistic_side_of_both_figures(
    counted: tuple[int, int], confidence: float
) -> None:
    successes, trials = counted
    recall = rate_estimate(successes, trials)
    false_positive_rate = rate_estimate(trials - successes, trials)
    assert planning_rates(recall, false_positive_rate, None) == (
        recall.mean,
        false_positive_rate.mean,
    )
    planned_recall, planned_fpr = planning_rates(recall, false_positive_rate, confidence)
    assert planned_recall <= recall.mean and planned_fpr >= false_positive_rate.mean
    # The more confident, the more pessimistic.
    tighter_recall, tighter_fpr = planning_rates(recall, false_positive_rate, 0.995)
    assert tighter_recall <= planned_recall and tighter_fpr >= planned_fpr


@pytest.mark.parametrize(("rate", "most"), [(0.002, 0.99), (0.05, 0.94), (0.5, 0.94)])
def test_intervals_cover_the_true_rate_about_as_often_as_they_say(rate: float, most: float) -> None:
    """Of 2,000 simulated counts of 300 frames, at least 86 % of the 90 % intervals hold the
    rate (binomial spread at 90 %: 0.7 %), and not much more than 90 % where the counts are
    not tiny. At 0.002 (0.6 expected fires) the counts are so few and discrete that the
    intervals are conservative (about 98 %), the lower end being 0 for a count of 0."""
    rng = np.random.default_rng(int(rate * 1000))
    fires = rng.binomial(300, rate, size=2000)
    held = sum((estimate := rate_estimate(int(k), 300)).low <= rate <= estimate.high for k in fires)
    assert 0.86 * 2000 <= held <= most * 2000


def test_more_frames_give_narrower_intervals() -> None:
    widths = [rate_estimate(n // 10, n).high - rate_estimate(n // 10, n).low for n in (50, 500)]
    assert widths[1] < widths[0] / 3  # about 1/sqrt(10)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [((3, 2), "successes"), ((-1, 2), "successes"), ((1, True), "trials"), ((1, 2, 1.0), "level")],
)
def test_bad_counts_are_refused(arguments: tuple[Any, ...], field: str) -> None:
    with pytest.raises(InvalidParameterError) as error:
        rate_estimate(*arguments)
    assert error.value.field == field


# --- the correlation ---------------------------------------------------------------------------


def chain(p: float, c: float, frames: int, rng: np.random.Generator) -> np.ndarray:
    fired = np.empty(frames, dtype=bool)
    fired[0] = rng.random() < p
    draws = rng.random(frames)
    for index in range(1, frames):
        fired[index] = draws[index] < (p + (1 - p) * c if fired[index - 1] else p - p * c)
    return fired


@pytest.mark.parametrize(("rate", "correlation", "frames"), [(0.1, 0.8, 300), (0.6, 0.7, 200)])
def test_runs_of_fires_count_as_fewer_frames_so_intervals_keep_their_word(
    rate: float, correlation: float, frames: int
) -> None:
    # Held-out frames of one scene are a chain, not independent draws: counted as independent
    # the 90 % interval covers the true rate about half the time; weighed by the measured
    # design effect, about as often as it says.
    rng = np.random.default_rng(7)
    plain = weighed = 0
    for _ in range(200):
        fires = chain(rate, correlation, frames, rng)
        rho = frame_correlation(transition_counts(fires)) or 0.0
        counted = rate_estimate(int(fires.sum()), frames)
        honest = rate_estimate(int(fires.sum()), frames, design_effect=design_effect(rho))
        plain += counted.low <= rate <= counted.high
        weighed += honest.low <= rate <= honest.high
    assert plain < 0.65 * 200
    assert weighed >= 0.8 * 200


@given(counted=counts(), rho=st.floats(0.0, 1.0))
def test_a_design_effect_widens_the_interval_around_a_nearby_mean(
    counted: tuple[int, int], rho: float
) -> None:
    successes, trials = counted
    plain = rate_estimate(successes, trials)
    weighed = rate_estimate(successes, trials, design_effect=design_effect(rho))
    assert weighed.low <= plain.low + 1e-9 and weighed.high >= plain.high - 1e-9
    assert weighed.effective_trials == pytest.approx(trials / design_effect(rho))
    assert design_effect(rho) == pytest.approx((1 + min(rho, 0.95)) / (1 - min(rho, 0.95)))


def test_transitions_are_counted_pair_by_pair() -> None:
    counted = transition_counts(np.array([1, 1, 0, 0, 0, 1], dtype=bool))
    assert counted == TransitionCounts(fire_fire=1, fire_miss=1, miss_fire=1, miss_miss=2)
    assert counted + counted == TransitionCounts(2, 2, 2, 4)


@pytest.mark.parametrize("correlation", [0.1, 0.5, 0.9])
def test_the_correlation_of_frames_apart_is_turned_into_the_camera_rate_one(
    correlation: float,
) -> None:
    # 20,000 frames at p 0.4: c's standard error is below 0.01; every other frame has c**2.
    rng = np.random.default_rng(int(correlation * 10))
    fires = chain(0.4, correlation, 20_000, rng)
    direct = correlation_posterior(transition_counts(fires))
    every_other = correlation_posterior(transition_counts(fires[::2]), frame_gap=2)
    for estimate in (direct, every_other):
        assert estimate.identifiable
        assert estimate.low <= correlation <= estimate.high
    assert direct.mean == pytest.approx(correlation, abs=0.04)
    assert direct.counted == pytest.approx(correlation, abs=0.04)
    if correlation >= 0.5:  # 0.1 two frames apart is 0.01: not told apart from 0 there
        assert every_other.mean == pytest.approx(correlation, abs=0.04)


def test_without_misses_only_the_prior_speaks() -> None:
    estimate = correlation_posterior(TransitionCounts(fire_fire=500))
    assert not estimate.identifiable and estimate.counted is None
    assert estimate.high - estimate.low > 0.8  # c is then anywhere in [0, 1]


# --- plans made on estimates -------------------------------------------------------------------


def issue_problem(evidence: bool, confidence: float | None = None) -> Problem:
    """The package of the issue: recall 88/94, no false positive in 206 frames, 2 events."""
    candidate: dict[str, Any] = {
        "cut_point": "conv_pw_1_relu",
        "recall": 88 / 94,
        "false_positive_rate": 0.0,
    }
    if evidence:
        candidate["evidence"] = {
            "positive_frames": 94,
            "positive_fires": 88,
            "negative_frames": 206,
            "negative_fires": 0,
            "events": 2,
        }
    return Problem.model_validate(
        {
            "camera_fps": 10,
            "budget": 30,
            "confidence": confidence,
            "profile": {
                "base_model": "mobilenet_v1",
                "cut_points": [
                    {"name": "input", "cumulative_cost": 0},
                    {"name": "conv_pw_1_relu", "cumulative_cost": 2.0},
                ],
                "total_cost": 10.0,
            },
            "apps": [
                {
                    "name": "street",
                    "event_length_s": 3.0,
                    "event_frequency": 0.3,
                    "correlation": 0.5,
                    "correlation_interval": [0.3, 0.7] if evidence else None,
                    "x_vote": "auto",
                    "candidates": [candidate],
                }
            ],
        }
    )


def test_a_plan_on_counts_votes_where_a_plan_on_ratios_saw_no_reason_to() -> None:
    ratios = make_plan(issue_problem(evidence=False), with_baselines=False).apps[0]
    assert (ratios.x_vote, ratios.f1_interval) == (1, None)
    assert ratios.f1 == pytest.approx(1.0)  # FP rate 0: no false alarm, nothing to vote off
    assert ratios.evidence_warning is None

    estimated = make_plan(issue_problem(evidence=True), with_baselines=False)
    app = estimated.apps[0]
    assert app.x_vote >= 2  # false positives are possible, so voting pays
    assert app.f1 < 1.0 and app.f1_interval is not None
    low, high = app.f1_interval
    assert low < app.f1 <= high <= 1.0
    assert app.evidence_warning == "2 held-out events (< 10); 206 negative frames (< 1,000)"
    assert estimated.confidence is None
    assert '"f1_interval":[' in estimated.model_dump_json()


@settings(max_examples=20, deadline=None)
@given(confidence=st.floats(0.9, 0.99))
def test_a_confident_plan_never_promises_more(confidence: float) -> None:
    mean = make_plan(issue_problem(evidence=True), with_baselines=False)
    pessimistic = make_plan(issue_problem(True, confidence), with_baselines=False)
    assert pessimistic.confidence == confidence
    assert pessimistic.value <= mean.value + 1e-12
    # A given schedule is scored on the same planning figures.
    app = pessimistic.apps[0]
    given_plan = evaluate_assignment(
        issue_problem(True, confidence), {"street": (app.cut_point, app.fps, app.x_vote)}
    )
    assert math.isclose(given_plan.apps[0].f1, app.f1, rel_tol=1e-12)
