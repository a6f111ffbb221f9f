import pytest

from edge_runtime.detector import DetectorConfig, EventDetector, Transition
from mainstream.core.errors import InvalidParameterError


def feed(
    detector: EventDetector, scores: list[float], fps: float = 1.0
) -> list[tuple[Transition, int]]:
    out = []
    for index, score in enumerate(scores):
        for change in detector.observe(index / fps, index, score):
            out.append((change.transition, index))
    return out


def test_single_fire_opens_with_x1_and_quiet_time_closes() -> None:
    detector = EventDetector("trains", "cam", DetectorConfig(x_vote=1, quiet_time_s=2.0))
    changes = feed(detector, [0.1, 0.9, 0.2, 0.1, 0.1, 0.1])
    assert changes == [(Transition.NEW, 1), (Transition.END, 4)]
    assert not detector.is_active


def test_x_vote_needs_consecutive_fires() -> None:
    detector = EventDetector("trains", "cam", DetectorConfig(x_vote=3, quiet_time_s=1.0))
    changes = feed(detector, [0.9, 0.9, 0.1, 0.9, 0.9, 0.1, 0.9, 0.9, 0.9])
    assert changes == [(Transition.NEW, 8)]
    event = detector.open_event
    assert event is not None and event.start_time == 8.0


def test_peak_and_counters_and_end_time() -> None:
    detector = EventDetector("trains", "cam", DetectorConfig(x_vote=1, quiet_time_s=1.5))
    changes = []
    for index, score in enumerate([0.6, 0.8, 0.7, 0.2, 0.1, 0.1]):
        changes += detector.observe(float(index), index, score)
    end = [change for change in changes if change.transition is Transition.END]
    assert len(end) == 1
    record = end[0].event
    assert record.peak_score == 0.8 and record.peak_frame == 1
    assert record.start_time == 0.0 and record.end_time == 2.0
    assert record.frames_fired == 3
    updates = [change for change in changes if change.transition is Transition.UPDATE]
    assert [u.event.peak_score for u in updates] == [0.8]


def test_periodic_updates_between_better_peaks() -> None:
    config = DetectorConfig(x_vote=1, quiet_time_s=10.0, update_every_frames=3)
    detector = EventDetector("trains", "cam", config)
    changes = []
    for index, score in enumerate([0.9, 0.6, 0.6, 0.6, 0.95, 0.6, 0.6, 0.6, 0.6]):
        changes += detector.observe(float(index), index, score)
    updates = [(c.event.frames_analysed, c.peak_improved) for c in changes[1:]]
    # every third frame after the last update, and at once on a better peak (which restarts the count)
    assert updates == [(4, False), (5, True), (8, False)]
    assert [c.transition for c in changes] == [Transition.NEW] + [Transition.UPDATE] * 3


def test_flush_and_clock_close_open_events() -> None:
    detector = EventDetector("a", "cam", DetectorConfig(quiet_time_s=5))
    detector.observe(0.0, 0, 0.99)
    assert detector.advance_clock(3.0) == []
    assert [c.transition for c in detector.advance_clock(6.0)] == [Transition.END]
    detector.observe(10.0, 10, 0.99)
    assert [c.transition for c in detector.flush()] == [Transition.END]
    assert detector.flush() == []


def test_a_fire_after_a_long_gap_starts_a_new_event() -> None:
    detector = EventDetector("a", "cam", DetectorConfig(quiet_time_s=1))
    first = detector.observe(0.0, 0, 0.9)[0].event.id
    changes = detector.observe(10.0, 100, 0.9)
    assert [c.transition for c in changes] == [Transition.END, Transition.NEW]
    assert changes[1].event.id != first


@pytest.mark.parametrize("kwargs", [{"threshold": 1.5}, {"x_vote": 0}, {"quiet_time_s": -1}])
def test_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidParameterError):
        DetectorConfig(**kwargs)  # type: ignore[arg-type]
