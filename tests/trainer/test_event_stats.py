import math
from pathlib import Path

import numpy as np
import pytest

from mainstream.core.errors import InvalidParameterError
from scheduler.event_model import detection_probability, samples_per_window
from trainer.event_stats import (
    FALLBACK_CORRELATION,
    EventInterval,
    compact_fires,
    direct_correlation,
    empirical_recall_curve,
    estimate_correlation,
    event_statistics,
    model_recall_curve,
)


def markov_fires(
    fire_probability: float,
    correlation: float,
    event_lengths: list[int],
    rng: np.random.Generator,
    gap: int = 7,
) -> tuple[np.ndarray, list[EventInterval]]:
    """Per-frame fires of the two-state chain of DESIGN §2, one independent chain per event.

    Frames between events never fire. P(fire->fire) = p + (1-p)c, P(miss->fire) = p - pc.
    """
    p, c = fire_probability, correlation
    fires: list[bool] = []
    intervals = []
    for length in event_lengths:
        fires += [False] * gap
        fired = bool(rng.random() < p)
        event = [fired]
        for _ in range(length - 1):
            fired = bool(rng.random() < (p + (1 - p) * c if fired else p - p * c))
            event.append(fired)
        intervals.append(EventInterval(len(fires), len(fires) + length - 1))
        fires += event
    fires += [False] * gap
    return np.array(fires), intervals


# --- event_statistics ------------------------------------------------------------------------


def test_event_statistics_exact_on_hand_made_intervals() -> None:
    intervals = [
        EventInterval(0, 9, "train"),  # 10 frames
        EventInterval(20, 24, "train"),  # 5 frames
        EventInterval(22, 29, "train"),  # 8 frames, overlaps the previous one
        EventInterval(50, 53, "car"),  # 4 frames
    ]
    stats = event_statistics(intervals, total_frames=100, fps=10.0, label="train")
    assert stats.event_count == 3
    assert stats.mean_event_length_s == pytest.approx((1.0 + 0.5 + 0.8) / 3)
    assert stats.min_event_length_s == pytest.approx(0.5)
    assert stats.max_event_length_s == pytest.approx(1.0)
    # Frames 0-9 and 20-29 are covered: overlaps count once.
    assert stats.event_frequency == pytest.approx(0.2)

    every_label = event_statistics(intervals, total_frames=100, fps=10.0)
    assert every_label.event_count == 4
    assert every_label.event_frequency == pytest.approx(0.24)
    assert every_label.min_event_length_s == pytest.approx(0.4)


def test_event_statistics_feeds_the_manifest() -> None:
    stats = event_statistics([EventInterval(10, 19)], total_frames=40, fps=5.0)
    manifest_stats = stats.to_manifest(0.42, how_measured="hand labels")
    assert manifest_stats.event_length_s == pytest.approx(2.0)
    assert manifest_stats.event_frequency == pytest.approx(0.25)
    assert manifest_stats.correlation == 0.42
    assert manifest_stats.camera_fps == 5.0
    assert manifest_stats.how_measured == "hand labels"


@pytest.mark.parametrize(
    ("intervals", "total_frames", "fps", "field"),
    [
        ([EventInterval(0, 100)], 100, 10.0, "intervals"),
        ([], 100, 10.0, "intervals"),
        ([EventInterval(0, 3)], 0, 10.0, "total_frames"),
        ([EventInterval(0, 3)], 100, 0.0, "fps"),
    ],
)
def test_event_statistics_rejects_bad_input(
    intervals: list[EventInterval], total_frames: int, fps: float, field: str
) -> None:
    with pytest.raises(InvalidParameterError) as error:
        event_statistics(intervals, total_frames, fps)
    assert error.value.field == field


def test_interval_rejects_reversed_ends() -> None:
    with pytest.raises(InvalidParameterError, match="end_frame"):
        EventInterval(5, 4)
    assert EventInterval(5, 5).frame_count == 1  # inclusive ends


# --- recall curves -----------------------------------------------------------------------------


def test_empirical_curve_counts_every_phase() -> None:
    fires = np.zeros(20, dtype=bool)
    fires[6] = True  # the second frame of an event covering frames 5..8
    curve = empirical_recall_curve(fires, [EventInterval(5, 8)], strides=[1, 2, 3, 4, 5])
    # Stride s: exactly one of the s phases samples frame 6.
    assert curve == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5])


def test_empirical_curve_of_a_frame_chain_matches_the_model_at_c_to_the_stride() -> None:
    # Sub-sampling a two-state chain every s frames gives a chain with correlation c**s, so the
    # measured curve checks both the phase logic and the scheduler's model.
    rng = np.random.default_rng(1)
    p, c = 0.35, 0.6
    fires, intervals = markov_fires(p, c, [9] * 4000, rng)
    strides = [1, 2, 3, 4]
    measured = empirical_recall_curve(fires, intervals, strides)
    for stride, value in zip(strides, measured, strict=True):
        expected = detection_probability(
            p, c**stride, 1, samples_per_window(0.9, 10.0, 10.0 / stride)
        )
        assert value == pytest.approx(expected, abs=0.02)


def test_model_curve_averages_over_event_lengths() -> None:
    # The correlation is per camera frame: samples 2 frames apart have c**2.
    curve = model_recall_curve(0.5, 0.3, [4, 4, 10], 10.0, [2])
    short = detection_probability(0.5, 0.3**2, 1, samples_per_window(0.4, 10.0, 5.0))
    long = detection_probability(0.5, 0.3**2, 1, samples_per_window(1.0, 10.0, 5.0))
    assert curve[0] == pytest.approx((2 * short + long) / 3)


# --- correlation estimates ----------------------------------------------------------------------


def transition_standard_error(p: float, c: float, pairs: int) -> float:
    """Standard error of c = 1 - a - b from `pairs` consecutive-frame pairs of the chain.

    a = P(fire | miss) = p(1 - c) is counted on about (1 - p)·pairs pairs and b = P(miss |
    fire) = (1 - p)(1 - c) on about p·pairs, so var(c) = a(1 - a)/((1 - p)n) + b(1 - b)/(pn).
    """
    a, b = p * (1 - c), (1 - p) * (1 - c)
    return math.sqrt(a * (1 - a) / ((1 - p) * pairs) + b * (1 - b) / (p * pairs))


@pytest.mark.parametrize("correlation", [0.1, 0.5, 0.9])
def test_estimate_recovers_the_camera_rate_correlation_of_a_known_chain(
    correlation: float,
) -> None:
    rng = np.random.default_rng(int(correlation * 100))
    lengths = [int(n) for n in rng.integers(4, 16, size=600)]
    fires, intervals = markov_fires(0.4, correlation, lengths, rng)
    estimate = estimate_correlation(fires, intervals, camera_fps=10.0)
    pairs = sum(length - 1 for length in lengths)  # about 5,000
    tolerance = 4 * transition_standard_error(0.4, correlation, pairs)  # 0.03-0.05
    assert estimate.correlation == pytest.approx(correlation, abs=tolerance)
    assert estimate.direct_correlation == pytest.approx(correlation, abs=tolerance)
    assert estimate.identifiable and estimate.source == "event frames"
    assert estimate.low < estimate.correlation < estimate.high
    assert estimate.transitions.after_fire + estimate.transitions.after_miss == pairs
    assert estimate.per_frame_recall == pytest.approx(0.4, abs=0.03)
    assert estimate.event_count == 600
    assert "600 held-out events" in estimate.method
    # The model, with c raised to the stride, reproduces the measured recall-vs-stride curve.
    assert estimate.residual_rms < 0.03
    evidence = estimate.evidence()
    assert evidence.interval == (estimate.low, estimate.high)
    assert evidence.fire_fire == estimate.transitions.fire_fire and evidence.events == 600


def test_intervals_cover_the_true_correlation_about_as_often_as_they_say() -> None:
    """90 % intervals from small held-out sets (20 events of 8 frames) hold the true c in
    85-95 % of 200 simulated sets (binomial spread at 90 %: 2.1 points)."""
    rng = np.random.default_rng(2026)
    held = 0
    for trial in range(200):
        correlation = (0.1, 0.5, 0.9)[trial % 3]
        fires, intervals = markov_fires(0.5, correlation, [8] * 20, rng, gap=2)
        estimate = estimate_correlation(fires, intervals, camera_fps=10.0, strides=[1])
        held += estimate.low <= correlation <= estimate.high
    assert 170 <= held <= 190


@pytest.mark.parametrize("correlation", [0.0, 1.0])
def test_extreme_correlations_are_recovered_over_many_strides(correlation: float) -> None:
    rng = np.random.default_rng(7)
    fires, intervals = markov_fires(0.3, correlation, [12] * 1500, rng)
    estimate = estimate_correlation(fires, intervals, camera_fps=10.0)
    assert estimate.strides == list(range(1, 13))
    assert estimate.correlation == pytest.approx(correlation, abs=0.05)
    assert estimate.residual_rms < 0.02
    assert [point.stride for point in estimate.curve] == estimate.strides
    assert estimate.curve[3].analysis_fps == pytest.approx(2.5)


def test_perfect_detector_is_reported_as_not_identifiable() -> None:
    fires = np.zeros(30, dtype=bool)
    fires[5:15] = True
    estimate = estimate_correlation(fires, [EventInterval(5, 14)], camera_fps=10.0)
    assert not estimate.identifiable
    assert estimate.source == "fallback"
    assert estimate.correlation == FALLBACK_CORRELATION
    assert (estimate.low, estimate.high) == (0.0, 1.0)
    assert "not identifiable" in estimate.method
    assert direct_correlation(fires, [EventInterval(5, 14)]) is None


def test_a_perfect_detector_borrows_c_from_its_false_alarms() -> None:
    # Every event frame fires, but between events the detector fires in bursts.
    rng = np.random.default_rng(11)
    negatives, _ = markov_fires(0.3, 0.6, [4000], rng, gap=0)
    fires = np.concatenate([negatives, np.ones(10, dtype=bool)])
    event = EventInterval(len(negatives), len(negatives) + 9)
    estimate = estimate_correlation(fires, [event], camera_fps=10.0)
    assert estimate.source == "negative frames"
    assert estimate.identifiable
    assert estimate.correlation == pytest.approx(0.6, abs=0.1)


def test_unevaluated_events_are_left_out() -> None:
    rng = np.random.default_rng(5)
    fires, intervals = markov_fires(0.5, 0.5, [8] * 10, rng)
    evaluated = np.ones_like(fires)
    evaluated[intervals[0].start_frame + 2] = False
    estimate = estimate_correlation(fires, intervals, 10.0, strides=[1, 2], evaluated=evaluated)
    assert estimate.event_count == 9


def test_fires_on_every_other_frame_give_the_camera_rate_correlation() -> None:
    rng = np.random.default_rng(9)
    fires, intervals = markov_fires(0.4, 0.7, [16] * 2000, rng, gap=6)
    sampled = np.arange(0, len(fires), 2)
    compacted, events, step = compact_fires(sampled, fires[sampled], intervals)
    assert step == 2
    assert len(events) == 2000
    assert np.array_equal(compacted, fires[sampled])
    # Frames two apart have correlation c**2; told the gap, the estimate is c itself.
    lagged = estimate_correlation(compacted, events, camera_fps=10.0 / step, strides=[1])
    assert lagged.correlation == pytest.approx(0.7**2, abs=0.03)
    estimate = estimate_correlation(
        compacted, events, camera_fps=10.0 / step, strides=[1], frame_gap=step
    )
    assert estimate.correlation == pytest.approx(0.7, abs=0.03)
    assert estimate.frame_gap == 2 and "2 camera frames apart" in estimate.method


def test_compact_fires_drops_events_with_a_missing_frame() -> None:
    frames = np.array([0, 2, 4, 8, 10, 12, 14])
    fired = np.array([0, 1, 1, 0, 1, 0, 0], dtype=bool)
    intervals = [EventInterval(1, 4), EventInterval(4, 9), EventInterval(9, 13)]
    _, kept, step = compact_fires(frames, fired, intervals)
    assert step == 2
    # Frame 6 was not sampled: the middle event is incomplete. 9..13 -> positions 4..5.
    assert kept == [EventInterval(1, 2), EventInterval(4, 5)]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"strides": [0]}, "strides"),
        ({"strides": []}, "strides"),
        ({"camera_fps": -1.0}, "camera_fps"),
        ({"intervals": [EventInterval(0, 99)]}, "intervals"),
        ({"intervals": []}, "intervals"),
    ],
)
def test_estimate_correlation_rejects_bad_input(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {
        "fires": np.zeros(20, dtype=bool),
        "intervals": [EventInterval(2, 6)],
        "camera_fps": 10.0,
    }
    arguments.update(kwargs)
    with pytest.raises(InvalidParameterError) as error:
        estimate_correlation(**arguments)  # type: ignore[arg-type]
    assert error.value.field == field


def test_statistics_of_a_synthetic_video_match_the_request(tmp_path: Path) -> None:
    from trainer.datasets import read_event_csv
    from trainer.synth import SynthConfig, generate_video

    config = SynthConfig(
        duration_s=30, event_length_s=2.0, event_frequency=0.3, kinds=["train"], seed=4
    )
    summary = generate_video(tmp_path / "v.avi", tmp_path / "v.csv", config, show_progress=False)
    stats = event_statistics(read_event_csv(tmp_path / "v.csv"), summary.total_frames, summary.fps)
    assert stats.event_frequency == pytest.approx(0.3, abs=0.02)
    assert stats.mean_event_length_s == pytest.approx(2.0, rel=0.25)
    assert stats.event_count == summary.event_count
    assert stats.event_frequency == pytest.approx(summary.realised_event_frequency)
