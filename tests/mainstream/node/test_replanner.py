"""The re-planning decision: the band, hysteresis, cool-down and the corrected profile."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mainstream.node.replanner import (
    NodeMeasurement,
    ReplanConfig,
    ReplanState,
    Window,
    corrected_profile,
    decide,
    worth_growing,
)
from scheduler.problem import CutPoint, Profile

KEY = "mobilenet_v1@abc"
BUDGET = 100.0
CONFIG = ReplanConfig(windows=2, min_interval_s=60.0, over_margin=1.1, headroom_margin=0.7)
PROFILE = Profile(
    base_model=KEY,
    cut_points=[
        CutPoint(name="input", cumulative_cost=0.0),
        CutPoint(name="a", cumulative_cost=2.0),
        CutPoint(name="b", cumulative_cost=5.0),
    ],
    total_cost=8.0,
    split_overhead=0.5,
    engine="keras",
)


def nodes(scale_a: float = 1.0, scale_b: float = 1.0, scale_head: float = 1.0, frames: int = 50):
    """The DAG of one app at cut b, each node `scale` times slower than the profile says."""
    return (
        NodeMeasurement(KEY, "input", "input", 0.2, frames),
        NodeMeasurement(KEY, "input", "a", 2.0 * scale_a, frames),
        NodeMeasurement(KEY, "a", "b", 3.0 * scale_b, frames),
        NodeMeasurement(KEY, "b", None, 3.5 * scale_head, frames),
    )


def window(cost: float, measured: tuple[NodeMeasurement, ...] | None = None) -> Window:
    return Window(seconds=10.0, cost_ms_per_s=cost, nodes=measured if measured else nodes())


def run(costs: list[float], state: ReplanState | None = None, start: float = 1000.0):
    """Feed one window per cost, 10 s apart; the decisions."""
    state = state or ReplanState()
    decisions = []
    for step, cost in enumerate(costs):
        decision = decide(
            window(cost), BUDGET, 90.0, {KEY: PROFILE}, state, start + 10 * step, CONFIG
        )
        decisions.append(decision)
        state = decision.state
    return decisions


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(st.floats(min_value=70.0, max_value=110.0), min_size=1, max_size=20),
    over=st.integers(min_value=0, max_value=5),
    under=st.integers(min_value=0, max_value=5),
)
def test_never_replans_inside_the_band(costs: list[float], over: int, under: int) -> None:
    state = ReplanState(windows_over=over, windows_under=under)
    assert all(d.action == "keep" for d in run(costs, state))


def test_replans_down_only_after_consecutive_windows_over_budget() -> None:
    assert [d.action for d in run([150.0, 150.0])] == ["keep", "down"]
    # One window back in the band starts the count again.
    assert [d.action for d in run([150.0, 100.0, 150.0, 150.0])] == ["keep", "keep", "keep", "down"]
    down = run([150.0, 150.0])[-1]
    assert down.reason.startswith("over budget: measured 150.0 ms/s > budget 100")
    assert set(down.profiles) == {KEY}


def test_grows_only_after_consecutive_windows_with_headroom() -> None:
    decisions = run([40.0, 40.0])
    assert [d.action for d in decisions] == ["keep", "grow"]
    assert decisions[-1].reason.startswith("headroom: measured 40.0 ms/s < 0.7 x budget 100")
    assert worth_growing(0.70, 0.75, CONFIG)
    assert not worth_growing(0.70, 0.702, CONFIG)
    assert not worth_growing(0.70, 0.60, CONFIG)


def test_waits_the_minimum_interval_between_replans() -> None:
    # Over budget all along: down at 10 s, then nothing until 60 s have passed.
    actions = [d.action for d in run([150.0] * 9)]
    assert actions == ["keep", "down", "keep", "keep", "keep", "keep", "keep", "down", "keep"]


def test_a_window_with_too_few_frames_decides_nothing() -> None:
    quiet = Window(seconds=10.0, cost_ms_per_s=500.0, nodes=nodes(frames=1))
    state = ReplanState(windows_over=5)
    decision = decide(quiet, BUDGET, 90.0, {KEY: PROFILE}, state, 0.0, CONFIG)
    assert decision.action == "keep" and decision.state == state


@settings(max_examples=100, deadline=None)
@given(scale=st.floats(min_value=0.05, max_value=50.0), frames=st.integers(1, 500))
def test_uniformly_slower_nodes_scale_the_whole_profile(scale: float, frames: int) -> None:
    measured = nodes(scale, scale, scale, frames)
    busy = sum(n.ms_per_frame * n.frames for n in measured) / 10.0
    corrected = corrected_profile(PROFILE, measured, Window(10.0, busy, measured))
    for before, after in zip(PROFILE.cut_points, corrected.cut_points, strict=True):
        assert after.name == before.name
        assert after.cumulative_cost == pytest.approx(scale * before.cumulative_cost, rel=1e-9)
    assert corrected.total_cost == pytest.approx(scale * PROFILE.total_cost, rel=1e-9)
    assert corrected.split_overhead == pytest.approx(scale * PROFILE.split_overhead, rel=1e-9)
    assert corrected.decode_cost == pytest.approx(0.2)
    # What the scheduler needs to keep using the profile on this machine survives.
    assert corrected.model_extra is not None and corrected.model_extra["engine"] == "keras"


def test_each_stretch_is_scaled_by_the_nodes_that_cover_it() -> None:
    measured = nodes(scale_a=1.0, scale_b=3.0, scale_head=2.0)
    busy = sum(n.ms_per_frame * n.frames for n in measured) / 10.0
    corrected = corrected_profile(PROFILE, measured, Window(10.0, busy, measured))
    costs = [cut.cumulative_cost for cut in corrected.cut_points]
    assert costs == pytest.approx([0.0, 2.0, 2.0 + 3 * 3.0])
    assert corrected.total_cost == pytest.approx(costs[-1] + 2 * 3.0)
    assert corrected.split_overhead == pytest.approx(2 * 0.5)


def test_busy_time_outside_the_nodes_scales_every_cost() -> None:
    measured = nodes()
    node_ms_per_s = sum(n.ms_per_frame * n.frames for n in measured) / 10.0
    corrected = corrected_profile(PROFILE, measured, Window(10.0, 2 * node_ms_per_s, measured))
    assert corrected.total_cost == pytest.approx(2 * PROFILE.total_cost)
    assert corrected.decode_cost == pytest.approx(2 * 0.2)


def test_a_profile_ten_times_too_cheap_is_corrected_to_reality() -> None:
    cheap = PROFILE.model_copy(
        update={
            "cut_points": [
                CutPoint(name=c.name, cumulative_cost=c.cumulative_cost / 10)
                for c in PROFILE.cut_points
            ],
            "total_cost": PROFILE.total_cost / 10,
            "split_overhead": PROFILE.split_overhead / 10,
        }
    )
    measured = nodes()  # what the true PROFILE predicts
    busy = sum(n.ms_per_frame * n.frames for n in measured) / 10.0
    decision = decide(
        Window(10.0, busy * 5, measured),
        BUDGET / 10,
        busy / 10,
        {KEY: cheap},
        ReplanState(windows_over=1),
        0.0,
        CONFIG,
    )
    assert decision.action == "down"
    # All nodes 10x the cheap profile, busy time 5x the nodes' time: 50x overall.
    assert decision.profiles[KEY].total_cost == pytest.approx(50 * cheap.total_cost)


def test_a_nodes_first_calls_never_count_as_cost() -> None:
    from edge_runtime.dag import NodeTiming
    from mainstream.node.replanner import _Sample, _Snapshot, _window

    warm, cold = NodeTiming(), NodeTiming()
    warm.add(5.0, 1)
    segment = NodeMeasurement(KEY, "input", "a", 0.0, 0)
    head = NodeMeasurement(KEY, "a", None, 0.0, 0)

    def snapshot(at: float, busy: float) -> _Snapshot:
        samples = (
            _Sample(segment, warm, warm.total_ms, warm.frames),
            _Sample(head, cold, cold.total_ms, cold.frames),
        )
        return _Snapshot(at=at, busy_ms=busy, marker=(1, 1), samples=samples)

    before = snapshot(0.0, 5.0)
    warm.add(4.0, 2)
    cold.add(900.0, 1)  # compiling
    cold.add(6.0, 1)
    window, warming_up = _window(before, snapshot(2.0, 5.0 + 4.0 + 906.0 + 2.0))
    assert warming_up
    assert window.nodes == (NodeMeasurement(KEY, "input", "a", 2.0, 2),)
    assert window.cost_ms_per_s == pytest.approx((4.0 + 2.0) / 2.0)

    later = snapshot(2.0, 917.0)
    cold.add(7.0, 1)
    window, warming_up = _window(later, snapshot(4.0, 917.0 + 7.0))
    assert not warming_up and window.nodes == (NodeMeasurement(KEY, "a", None, 7.0, 1),)
