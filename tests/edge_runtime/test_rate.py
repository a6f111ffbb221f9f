import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_runtime.rate import RateAccumulator
from mainstream.core.errors import InvalidParameterError
from scheduler.problem import DEFAULT_FPS_OPTIONS


def selected(accumulator: RateAccumulator, frames: int) -> list[int]:
    return [index for index in range(frames) if accumulator.offer()]


@pytest.mark.parametrize("rate", DEFAULT_FPS_OPTIONS)
def test_keeps_exactly_the_planned_rate(rate: float) -> None:
    camera_fps = 10.0
    frames = 6000  # ten minutes of video
    kept = selected(RateAccumulator(rate, camera_fps), frames)
    assert abs(len(kept) - frames * rate / camera_fps) <= 1


def test_spacing_is_even() -> None:
    kept = selected(RateAccumulator(4, 10), 100)
    gaps = {b - a for a, b in itertools.pairwise(kept)}
    assert gaps <= {2, 3}
    assert kept[0] == 0  # a new app starts at once


@given(
    parent=st.sampled_from(DEFAULT_FPS_OPTIONS),
    child=st.sampled_from(DEFAULT_FPS_OPTIONS),
)
def test_nested_selection_is_a_subset_at_the_child_rate(parent: float, child: float) -> None:
    if child > parent:
        parent, child = child, parent
    camera_fps = 10.0
    stem = RateAccumulator(parent, camera_fps)
    head = RateAccumulator(child, parent)
    stem_frames, head_frames = [], []
    for index in range(3000):
        if stem.offer():
            stem_frames.append(index)
            if head.offer():
                head_frames.append(index)
    assert set(head_frames) <= set(stem_frames)
    assert abs(len(head_frames) - 3000 * child / camera_fps) <= 2


@pytest.mark.parametrize(("rate", "parent"), [(0, 10), (-1, 10), (11, 10), (1, 0)])
def test_rejects_bad_rates(rate: float, parent: float) -> None:
    with pytest.raises(InvalidParameterError):
        RateAccumulator(rate, parent)
