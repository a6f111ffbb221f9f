"""The analytical event model (DESIGN §2): hand-computed cases, properties, brute force,
rejection of bad parameters, and agreement with the Monte-Carlo simulation of the same process."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mainstream.core.errors import InvalidParameterError
from scheduler.event_model import (
    EventParams,
    event_quality,
    event_quality_for_rates,
    miss_probabilities,
    miss_probability_grid,
    samples_per_window,
)
from scheduler.simulation import (
    simulate_detection,
    simulate_event_quality,
    simulate_false_alarm_probability,
    simulate_recall,
    simulate_sample_counts,
)


def params(**overrides: float) -> EventParams:
    """A valid option; tests override the fields they are about."""
    fields: dict[str, float] = {
        "camera_fps": 10,
        "analysis_fps": 5,
        "event_length_s": 0.5,
        "event_frequency": 0.2,
        "correlation": 0.3,
        "recall": 0.9,
        "false_positive_rate": 0.05,
        "x_vote": 1,
    }
    fields.update(overrides)
    return EventParams(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Hand-computed cases. Notation: mm = P(miss|miss) = 1-p+pc, ff = P(fire|fire) = p+(1-p)c.


@dataclass(frozen=True)
class HandCase:
    name: str
    params: EventParams
    recall: float
    false_alarm: float
    precision: float
    f1: float


def _precision(recall: float, false_alarm: float, phi: float) -> float:
    return phi * recall / (phi * recall + (1 - phi) * false_alarm)


def _f1(recall: float, precision: float) -> float:
    return 2 * recall * precision / (recall + precision)


_k = 0.5 ** (10 / 3)
_fractional_recall = 1 - 0.1 - 0.1 * (0.2 + 0.8 * _k)
_fractional_false_alarm = 1 - 0.45 - 0.45 * (0.9 + 0.1 * _k)
_k30 = 0.2 ** (30 / 7)
_thirty_recall = 1 - 0.9 * 0.5 * (0.5 + 0.5 * _k30) - 0.1 * 0.5 * (0.5 + 0.5 * _k30) ** 2
_thirty_false_alarm = 1 - 0.9 * 0.95 * (0.95 + 0.05 * _k30) - 0.1 * 0.95 * (0.95 + 0.05 * _k30) ** 2

HAND_CASES = [
    # D = 0.5 s * 10 fps = 5 frames, stride 1: r = 5 always.
    # R = 1 - 0.1 * 0.37^4 (mm = 0.1 + 0.27);  Q = 1 - 0.95 * 0.965^4 (mm = 0.95 + 0.015).
    HandCase(
        "integer window",
        params(analysis_fps=10, correlation=0.3, recall=0.9, false_positive_rate=0.05),
        recall=0.998125839,
        false_alarm=0.17617899940625,
        precision=7985006712 / 13622734693,
        f1=1774445936 / 2402526077,
    ),
    # D = 5 camera frames, stride 10/3: D/s = 1.5, so r = 1 or 2 with probability 1/2 each.
    # The samples' correlation is the camera-rate c to the stride: k = 0.5 ** (10/3).
    # a = 0.8: miss(1) = 0.2, miss(2) = 0.2 * (0.2 + 0.8k), R = 1 - 0.1 - 0.1 * (0.2 + 0.8k).
    # q = 0.1: miss(1) = 0.9, miss(2) = 0.9 * (0.9 + 0.1k), Q = 1 - 0.45 - 0.45 * (0.9 + 0.1k).
    # (With D counted at the analysis rate, D/s = 0.45 and R would be 0.36; with c applied
    # unchanged at the analysis rate, as before, R would be 0.84.)
    HandCase(
        "fractional window, camera-rate D",
        params(analysis_fps=3, correlation=0.5, recall=0.8, false_positive_rate=0.1),
        recall=_fractional_recall,
        false_alarm=_fractional_false_alarm,
        precision=_precision(_fractional_recall, _fractional_false_alarm, 0.2),
        f1=_f1(_fractional_recall, _precision(_fractional_recall, _fractional_false_alarm, 0.2)),
    ),
    # r = 3, X = 2. Sequences without two fires in a row: MMM, MMF, MFM, FMM, FMF, so
    # miss = (1-p)·mm + (1-p)(1-mm)(1-ff) + p(1-ff).
    # a = 0.6, c = 0.5: mm = 0.7, ff = 0.8: miss = 0.28 + 0.024 + 0.12 = 0.424, R = 0.576.
    # q = 0.2: mm = 0.9, ff = 0.6: miss = 0.72 + 0.032 + 0.08 = 0.832, Q = 0.168.
    # phi = 0.5: P = 0.288 / 0.372 = 24/31, F1 = 72/109.
    HandCase(
        "X = 2 over three samples",
        params(
            analysis_fps=10,
            event_length_s=0.3,
            event_frequency=0.5,
            correlation=0.5,
            recall=0.6,
            false_positive_rate=0.2,
            x_vote=2,
        ),
        recall=0.576,
        false_alarm=0.168,
        precision=24 / 31,
        f1=72 / 109,
    ),
    # D = 5 frames, stride 10: D/s = 0.5, so half the windows hold no sample at all.
    # R = 0.5 * 0.9 = 0.45, Q = 0.5 * 0.1 = 0.05; phi = 0.3: P = 0.135 / 0.17 = 27/34, F1 = 27/47.
    # (With D counted at the analysis rate, D/s = 0.05 and R would be 0.045.)
    HandCase(
        "window shorter than the stride",
        params(
            analysis_fps=1,
            event_frequency=0.3,
            correlation=0.4,
            recall=0.9,
            false_positive_rate=0.1,
        ),
        recall=0.45,
        false_alarm=0.05,
        precision=27 / 34,
        f1=27 / 47,
    ),
    # r = 2 < X = 3: nothing can ever be reported; precision is 1 by convention, F1 is 0.
    HandCase(
        "vote longer than the window",
        params(analysis_fps=5, event_length_s=0.4, x_vote=3),
        recall=0.0,
        false_alarm=0.0,
        precision=1.0,
        f1=0.0,
    ),
    # c = 1: every sample repeats the first, so R = a and Q = q whatever r is.
    # phi = 0.5: P = 0.35 / 0.4 = 7/8, F1 = 7/9.
    HandCase(
        "perfect correlation",
        params(
            analysis_fps=10,
            event_length_s=1.0,
            event_frequency=0.5,
            correlation=1.0,
            recall=0.7,
            false_positive_rate=0.1,
        ),
        recall=0.7,
        false_alarm=0.1,
        precision=7 / 8,
        f1=7 / 9,
    ),
    # c = 0, a = 1/2: four fair coin flips; 8 of the 16 sequences have no two heads in a row.
    # q = 0: no false alarms, P = 1, F1 = 2/3.
    HandCase(
        "independent samples, X = 2",
        params(
            analysis_fps=10,
            event_length_s=0.4,
            event_frequency=0.1,
            correlation=0.0,
            recall=0.5,
            false_positive_rate=0.0,
            x_vote=2,
        ),
        recall=0.5,
        false_alarm=0.0,
        precision=1.0,
        f1=2 / 3,
    ),
    # D = 0.3 * 30 = 9 frames, stride 30/7: D/s = 2.1, r = 2 w.p. 0.9 and 3 w.p. 0.1.
    # Sample correlation k = 0.2 ** (30/7). a = 0.5: mm = 0.5 + 0.5k, miss(2) = 0.5 mm,
    # miss(3) = 0.5 mm^2. q = 0.05: mm = 0.95 + 0.05k, miss(2) = 0.95 mm, miss(3) = 0.95 mm^2.
    HandCase(
        "30 fps camera, 7 fps analysis",
        params(
            camera_fps=30,
            analysis_fps=7,
            event_length_s=0.3,
            event_frequency=0.25,
            correlation=0.2,
            recall=0.5,
            false_positive_rate=0.05,
        ),
        recall=_thirty_recall,
        false_alarm=_thirty_false_alarm,
        precision=_precision(_thirty_recall, _thirty_false_alarm, 0.25),
        f1=_f1(_thirty_recall, _precision(_thirty_recall, _thirty_false_alarm, 0.25)),
    ),
]


@pytest.mark.parametrize("case", HAND_CASES, ids=lambda case: case.name)
def test_hand_computed_quality(case: HandCase) -> None:
    quality = event_quality(case.params)
    assert quality.recall == pytest.approx(case.recall, abs=1e-12)
    assert quality.false_alarm_probability == pytest.approx(case.false_alarm, abs=1e-12)
    assert quality.precision == pytest.approx(case.precision, abs=1e-12)
    assert quality.f1 == pytest.approx(case.f1, abs=1e-12)


@pytest.mark.parametrize(
    ("event_length_s", "camera_fps", "analysis_fps", "expected"),
    [
        (0.5, 10, 10, [(5, 1.0)]),
        (0.5, 10, 3, [(1, 0.5), (2, 0.5)]),
        (0.3, 30, 7, [(2, 0.9), (3, 0.1)]),
        (0.5, 10, 1, [(0, 0.5), (1, 0.5)]),
        (2.0, 10, 0.1, [(0, 0.8), (1, 0.2)]),
        (1.0, 25, 2.5, [(2, 0.5), (3, 0.5)]),
    ],
)
def test_samples_per_window(
    event_length_s: float, camera_fps: float, analysis_fps: float, expected: list
) -> None:
    counts = samples_per_window(event_length_s, camera_fps, analysis_fps)
    assert [count for count, _ in counts] == [count for count, _ in expected]
    assert [prob for _, prob in counts] == pytest.approx([prob for _, prob in expected])


def test_window_is_counted_in_camera_frames() -> None:
    """D = event_length_s * camera_fps. Counting D at the analysis rate (the original bug) would
    give 0.5 s * 3 fps = 1.5 frames, D/s = 0.45, i.e. counts [(0, 0.55), (1, 0.45)]."""
    counts = samples_per_window(0.5, 10, 3)
    assert [count for count, _ in counts] == [1, 2]
    assert [prob for _, prob in counts] == pytest.approx([0.5, 0.5])
    assert event_quality(params(analysis_fps=3, correlation=0.5, recall=0.8)).recall == (
        pytest.approx(_fractional_recall)
    )
    # An event lasting 1 s, analysed at 2 fps, always yields 2 samples on any camera.
    for camera_fps in (2, 5, 10, 30, 60):
        assert samples_per_window(1.0, camera_fps, 2) == [(2, 1.0)]
    # Same check through the simulation, which lays the grid over camera frames literally.
    counts = simulate_sample_counts(params(camera_fps=30, analysis_fps=3), 100_000, seed=3)
    assert set(np.unique(counts)) == {1, 2}
    assert np.mean(counts == 2) == pytest.approx(0.5, abs=0.01)


# ---------------------------------------------------------------------------------------------
# Properties.

probabilities = st.floats(min_value=0.0, max_value=1.0)
correlations = st.floats(min_value=0.0, max_value=1.0)
votes = st.integers(min_value=1, max_value=5)
camera_rates = st.sampled_from([5.0, 10.0, 15.0, 25.0, 30.0])
event_lengths = st.floats(min_value=0.05, max_value=3.0)
event_frequencies = st.floats(min_value=0.01, max_value=0.99)
rate_fractions = st.floats(min_value=0.01, max_value=1.0)


@st.composite
def options(draw: st.DrawFn) -> EventParams:
    camera_fps = draw(camera_rates)
    return EventParams(
        camera_fps=camera_fps,
        analysis_fps=camera_fps * draw(rate_fractions),
        event_length_s=draw(event_lengths),
        event_frequency=draw(event_frequencies),
        correlation=draw(correlations),
        recall=draw(probabilities),
        false_positive_rate=draw(probabilities),
        x_vote=draw(votes),
    )


@given(option=options(), first=probabilities, second=probabilities)
def test_recall_is_monotone_in_per_frame_recall(
    option: EventParams, first: float, second: float
) -> None:
    low, high = sorted((first, second))
    low_recall = event_quality(replace(option, recall=low)).recall
    high_recall = event_quality(replace(option, recall=high)).recall
    assert low_recall <= high_recall + 1e-12


@given(option=options(), first=rate_fractions, second=rate_fractions)
def test_recall_is_monotone_in_analysis_rate(
    option: EventParams, first: float, second: float
) -> None:
    low, high = sorted((first, second))
    low_recall = event_quality(replace(option, analysis_fps=option.camera_fps * low)).recall
    high_recall = event_quality(replace(option, analysis_fps=option.camera_fps * high)).recall
    assert low_recall <= high_recall + 1e-12


@given(option=options(), first=probabilities, second=probabilities)
# Windows of 3-4 samples can never hold a 5-vote: Q must be exactly 0 for any q, not rounding
# noise that would flip precision from 1 to 0 when R = 0.
@example(
    option=params(
        camera_fps=25,
        analysis_fps=25,
        event_length_s=0.125,
        event_frequency=0.5,
        correlation=0.0,
        recall=0.0,
        false_positive_rate=0.0,
        x_vote=5,
    ),
    first=1.0,
    second=0.04,
)
def test_precision_is_antitone_in_false_positive_rate(
    option: EventParams, first: float, second: float
) -> None:
    low, high = sorted((first, second))
    low_precision = event_quality(replace(option, false_positive_rate=low)).precision
    high_precision = event_quality(replace(option, false_positive_rate=high)).precision
    assert high_precision <= low_precision + 1e-12


@given(option=options())
def test_quality_lies_in_unit_interval(option: EventParams) -> None:
    quality = event_quality(option)
    for value in (quality.recall, quality.false_alarm_probability, quality.precision, quality.f1):
        assert -1e-12 <= value <= 1 + 1e-12


@given(fire=probabilities, correlation=correlations, samples=st.integers(0, 60))
def test_single_vote_is_the_closed_form(fire: float, correlation: float, samples: int) -> None:
    misses = miss_probabilities(fire, correlation, 1, samples)
    closed_form = (
        1.0 if samples == 0 else (1 - fire) * (1 - fire + fire * correlation) ** (samples - 1)
    )
    assert misses[samples] == pytest.approx(closed_form, rel=1e-12, abs=1e-300)


@given(option=options())
def test_single_vote_recall_is_the_expected_closed_form(option: EventParams) -> None:
    option = replace(option, x_vote=1)
    # The analysed samples' correlation is the camera-rate correlation to the stride.
    p, c = option.recall, option.correlation ** (option.camera_fps / option.analysis_fps)
    expected_miss = sum(
        prob * (1.0 if count == 0 else (1 - p) * (1 - p + p * c) ** (count - 1))
        for count, prob in samples_per_window(
            option.event_length_s, option.camera_fps, option.analysis_fps
        )
    )
    assert event_quality(option).recall == pytest.approx(1 - expected_miss, abs=1e-12)


def brute_force_miss(fire: float, correlation: float, x_vote: int, samples: int) -> float:
    """P(no run of `x_vote` fires) by summing the chain probability of every fire sequence."""
    fire_after_fire = fire + (1 - fire) * correlation
    fire_after_miss = 1 - (1 - fire + fire * correlation)
    total = 0.0
    for sequence in itertools.product((False, True), repeat=samples):
        probability = 1.0
        for position, fired in enumerate(sequence):
            if position == 0:
                chance = fire
            elif sequence[position - 1]:
                chance = fire_after_fire
            else:
                chance = fire_after_miss
            probability *= chance if fired else 1 - chance
        longest_run = max(
            (len(list(run)) for value, run in itertools.groupby(sequence) if value), default=0
        )
        if longest_run < x_vote:
            total += probability
    return total


@settings(max_examples=60, deadline=None)
@given(fire=probabilities, correlation=correlations, x_vote=st.integers(1, 4))
def test_vote_dp_equals_brute_force(fire: float, correlation: float, x_vote: int) -> None:
    max_samples = 9
    misses = miss_probabilities(fire, correlation, x_vote, max_samples)
    for samples in range(max_samples + 1):
        expected = brute_force_miss(fire, correlation, x_vote, samples)
        assert misses[samples] == pytest.approx(expected, abs=1e-12), samples


@settings(max_examples=40, deadline=None)
@given(
    fires=st.lists(probabilities, min_size=1, max_size=4),
    sample_correlations=st.lists(correlations, min_size=1, max_size=3),
    x_vote=st.integers(1, 5),
    max_samples=st.integers(0, 12),
)
def test_the_miss_grid_is_the_scalar_recursion_bit_for_bit(
    fires: list[float], sample_correlations: list[float], x_vote: int, max_samples: int
) -> None:
    grid = miss_probability_grid(
        np.array(fires), np.array(sample_correlations), x_vote, max_samples
    )
    for row, correlation in enumerate(sample_correlations):
        for column, fire in enumerate(fires):
            expected = miss_probabilities(fire, correlation, x_vote, max_samples)
            assert grid[:, row, column].tolist() == expected


@given(option=options(), fractions=st.lists(rate_fractions, min_size=1, max_size=13))
def test_many_rates_at_once_equals_one_at_a_time(
    option: EventParams, fractions: list[float]
) -> None:
    rates = [option.camera_fps * fraction for fraction in fractions]
    together = event_quality_for_rates(
        rates,
        camera_fps=option.camera_fps,
        event_length_s=option.event_length_s,
        event_frequency=option.event_frequency,
        correlation=option.correlation,
        recall=option.recall,
        false_positive_rate=option.false_positive_rate,
        x_vote=option.x_vote,
    )
    assert together == [event_quality(replace(option, analysis_fps=rate)) for rate in rates]


# ---------------------------------------------------------------------------------------------
# Out-of-range parameters are rejected, never clamped.

BAD_PARAMETERS = [
    ("camera_fps", 0),
    ("camera_fps", -10),
    ("camera_fps", math.inf),
    ("camera_fps", math.nan),
    ("camera_fps", None),
    ("analysis_fps", 0),
    ("analysis_fps", -1),
    ("analysis_fps", 10.5),
    ("analysis_fps", math.nan),
    ("event_length_s", 0),
    ("event_length_s", -0.5),
    ("event_length_s", math.inf),
    ("event_frequency", 0),
    ("event_frequency", 1),
    ("event_frequency", 1.5),
    ("event_frequency", -0.1),
    ("event_frequency", math.nan),
    ("correlation", -1e-9),
    ("correlation", 1.000001),
    ("correlation", "0.5"),
    ("recall", -0.01),
    ("recall", 1 + 1e-9),
    ("recall", math.nan),
    ("false_positive_rate", 2),
    ("false_positive_rate", -1e-12),
    ("x_vote", 0),
    ("x_vote", -1),
    ("x_vote", 1.5),
    ("x_vote", True),
]


@pytest.mark.parametrize(("field", "value"), BAD_PARAMETERS)
def test_out_of_range_parameter_is_rejected(field: str, value: object) -> None:
    with pytest.raises(InvalidParameterError) as raised:
        params(**{field: value})  # type: ignore[arg-type]
    assert raised.value.field == field
    assert field in str(raised.value)
    assert repr(value) in str(raised.value)


def test_many_rates_rejects_a_bad_rate() -> None:
    with pytest.raises(InvalidParameterError, match="analysis_fps=12"):
        event_quality_for_rates(
            [1, 5, 12],
            camera_fps=10,
            event_length_s=0.5,
            event_frequency=0.2,
            correlation=0.3,
            recall=0.9,
            false_positive_rate=0.05,
        )


def test_numpy_scalars_are_accepted() -> None:
    option = params(recall=np.float32(0.75), correlation=np.float64(0.4), x_vote=np.int64(2))  # type: ignore[arg-type]
    assert 0 < event_quality(option).recall < 1


@pytest.mark.parametrize(("field", "value"), [("trials", 0), ("trials", 1.5), ("trials", -3)])
def test_simulation_rejects_bad_trials(field: str, value: object) -> None:
    with pytest.raises(InvalidParameterError, match=field):
        simulate_recall(params(), value, seed=0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Agreement with the Monte-Carlo simulation of the same process.

TOLERANCE = 0.005
TRIALS = 400_000

SIMULATED_OPTIONS = [
    params(analysis_fps=10, correlation=0.3, recall=0.9, false_positive_rate=0.05),
    params(analysis_fps=3, correlation=0.5, recall=0.7, false_positive_rate=0.1),
    params(analysis_fps=0.5, event_length_s=1.0, correlation=0.2, recall=0.8),
    params(
        camera_fps=30,
        analysis_fps=7,
        event_length_s=0.3,
        correlation=0.8,
        recall=0.8,
        false_positive_rate=0.2,
        x_vote=2,
    ),
    params(
        analysis_fps=10,
        event_length_s=1.0,
        event_frequency=0.4,
        correlation=0.0,
        recall=0.6,
        false_positive_rate=0.3,
        x_vote=3,
    ),
    params(
        analysis_fps=6,
        event_length_s=0.7,
        event_frequency=0.5,
        correlation=1.0,
        recall=0.75,
        false_positive_rate=0.15,
        x_vote=2,
    ),
    params(
        camera_fps=25,
        analysis_fps=2.5,
        event_length_s=2.3,
        event_frequency=0.6,
        correlation=0.6,
        recall=0.5,
        false_positive_rate=0.02,
        x_vote=4,
    ),
    params(
        analysis_fps=9,
        event_length_s=0.2,
        event_frequency=0.3,
        correlation=0.9,
        recall=0.95,
        false_positive_rate=0.08,
        x_vote=2,
    ),
    params(analysis_fps=4, event_length_s=0.8, recall=1.0, false_positive_rate=0.0),
]


def f1_standard_error(recall: float, false_alarm: float, event_frequency: float) -> float:
    """Delta-method standard error of the simulated F1 with TRIALS windows of each kind.

    F1 = 2·phi·R / (phi·(R + 1) + (1 - phi)·Q), with R and Q estimated independently.
    """
    phi = event_frequency
    denominator = phi * (recall + 1) + (1 - phi) * false_alarm
    d_recall = 2 * phi * (phi + (1 - phi) * false_alarm) / denominator**2
    d_false_alarm = -2 * phi * recall * (1 - phi) / denominator**2
    variance = (
        d_recall**2 * recall * (1 - recall) + d_false_alarm**2 * false_alarm * (1 - false_alarm)
    ) / TRIALS
    return math.sqrt(variance)


@pytest.mark.parametrize(
    "option",
    SIMULATED_OPTIONS,
    ids=[
        f"F{option.camera_fps}-f{option.analysis_fps}-X{option.x_vote}-c{option.correlation}"
        for option in SIMULATED_OPTIONS
    ],
)
def test_model_agrees_with_simulation(option: EventParams) -> None:
    analytic = event_quality(option)
    # The tolerance must sit far outside the sampling noise for this check to be meaningful
    # and reliable: at least 4 standard errors for every compared quantity.
    assert 4 * 0.5 / math.sqrt(TRIALS) < TOLERANCE
    assert (
        4
        * f1_standard_error(
            analytic.recall, analytic.false_alarm_probability, option.event_frequency
        )
        < TOLERANCE
    )

    simulated = simulate_event_quality(option, TRIALS, seed=20240611)
    assert simulated.recall == pytest.approx(analytic.recall, abs=TOLERANCE)
    assert simulated.false_alarm_probability == pytest.approx(
        analytic.false_alarm_probability, abs=TOLERANCE
    )
    assert simulated.f1 == pytest.approx(analytic.f1, abs=TOLERANCE)


def test_simulation_matches_its_parts_and_is_seeded() -> None:
    option = SIMULATED_OPTIONS[3]
    quality = simulate_event_quality(option, 20_000, seed=5)
    assert quality.recall == simulate_recall(option, 20_000, seed=5)
    assert quality.false_alarm_probability == simulate_false_alarm_probability(
        option, 20_000, seed=5
    )
    assert quality == simulate_event_quality(option, 20_000, seed=5)
    assert quality != simulate_event_quality(option, 20_000, seed=6)


def test_simulation_detects_a_deliberately_wrong_model() -> None:
    """The simulation must be able to tell the right window length from the buggy one."""
    option = params(analysis_fps=3, correlation=0.5, recall=0.8)
    simulated = simulate_recall(option, TRIALS, seed=11)
    buggy = event_quality(replace(option, event_length_s=option.event_length_s * 3 / 10))
    assert abs(simulated - buggy.recall) > 10 * TOLERANCE
    assert simulated == pytest.approx(event_quality(option).recall, abs=TOLERANCE)


def test_simulated_detection_on_long_windows_is_fast_enough() -> None:
    """Guard against an accidental per-trial Python loop: 200k windows of 10 samples."""
    import time

    start = time.perf_counter()
    simulate_detection(
        fire_probability=0.3,
        correlation=0.5,
        x_vote=2,
        frames_per_event=10.0,
        stride=1.0,
        trials=200_000,
        rng=np.random.default_rng(0),
    )
    assert time.perf_counter() - start < 2.0


def test_simulation_detects_the_correlation_applied_at_the_analysis_rate() -> None:
    """Fires come from a camera-rate chain: samples 5 frames apart have correlation c**5, not c.

    The earlier model applied c unchanged at every analysis rate; the simulation, which walks
    every camera frame, must tell the two apart by far more than its sampling noise.
    """
    option = params(analysis_fps=2, event_length_s=2.0, correlation=0.8, recall=0.6)
    simulated = simulate_recall(option, 200_000, seed=13)
    assert simulated == pytest.approx(event_quality(option).recall, abs=TOLERANCE)
    unchanged = 1 - sum(
        prob * (1 - 0.6) * (1 - 0.6 + 0.6 * 0.8) ** (count - 1)
        for count, prob in samples_per_window(2.0, 10, 2)
    )
    assert abs(simulated - unchanged) > 10 * TOLERANCE
