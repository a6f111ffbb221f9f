"""Live re-planning: correct the cost profile with what the runtime measures, then plan again.

A plan is only as good as the cost profile it was made with. The runtime times every node of
its DAGs (segments and heads) and its whole busy time; every measurement window the
:class:`ReplanMonitor` compares that measured cost with the budget:

- measured > `over_margin` x budget for `windows` windows in a row: re-plan *down*, with the
  profile's costs scaled by measured / predicted per node (:func:`corrected_profiles`);
- measured < `headroom_margin` x budget for `windows` windows in a row: try to *grow*; the new
  plan is applied only when it is better than the plan in force (:func:`worth_growing`);
- inside the band, nothing happens; after a re-plan (or an attempt) nothing happens for
  `min_interval_s`, so the node never flaps between plans.

Only clean windows count: the first one after any deployment, and those in which a DAG node ran
for the first time (it compiled its model) and the one after, are skipped; a window with too
few analysed frames (slow apps) is extended until it has enough.

The decision (:func:`decide`) is pure logic; the monitor thread is the adapter that reads the
runtime and drives the node's propose / record / apply steps, storing the corrected profile as
the node's measured profile so later changes plan with it too.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mainstream.core.errors import MainstreamError
from scheduler.problem import CutPoint, Profile

if TYPE_CHECKING:
    from edge_runtime.runtime import EdgeRuntime
    from mainstream.node.registry import PlanRecord
    from mainstream.node.settings import RuntimeSettings

logger = logging.getLogger(__name__)

Action = Literal["keep", "down", "grow"]


@dataclass(frozen=True)
class ReplanConfig:
    """When to re-plan; see the module docstring for the meaning of each field."""

    window_s: float = 10.0
    over_margin: float = 1.1
    headroom_margin: float = 0.7
    windows: int = 2
    min_interval_s: float = 60.0
    min_gain: float = 0.005  # objective gain that makes growing worth a new plan
    min_frames: int = 3  # a window with fewer analysed frames says nothing

    @classmethod
    def from_settings(cls, runtime: RuntimeSettings) -> ReplanConfig:
        return cls(
            window_s=runtime.replan_interval_s,
            over_margin=runtime.replan_over_margin,
            headroom_margin=runtime.replan_headroom_margin,
            windows=runtime.replan_windows,
            min_interval_s=runtime.replan_min_interval_s,
        )


@dataclass(frozen=True)
class NodeMeasurement:
    """Wall time of one DAG node over a window.

    A segment runs the base from `start_cut` to `end_cut` (both "input": the input node, which
    prepares the frame); an app head (`end_cut` None) runs from `start_cut` to the output.
    """

    base_model: str  # the profile key of the base
    start_cut: str
    end_cut: str | None
    ms_per_frame: float
    frames: int


@dataclass(frozen=True)
class Window:
    """What the runtime measured over one window."""

    seconds: float
    cost_ms_per_s: float  # busy time of the runtime per second of the window
    nodes: tuple[NodeMeasurement, ...] = ()


@dataclass(frozen=True)
class ReplanState:
    """Hysteresis counters carried from one window to the next."""

    windows_over: int = 0
    windows_under: int = 0
    last_replan_at: float | None = None  # monotonic seconds


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    state: ReplanState
    profiles: dict[str, Profile] = field(default_factory=dict)  # corrected, by profile key


def decide(
    window: Window,
    budget: float,
    predicted_cost: float,
    profiles: Mapping[str, Profile],
    state: ReplanState,
    now: float,
    config: ReplanConfig,
) -> Decision:
    """Whether to re-plan after this window, and the corrected profiles to re-plan with."""
    analysed = sum(node.frames for node in window.nodes if node.end_cut is None)
    if window.seconds <= 0 or analysed < config.min_frames:
        return Decision("keep", "too few analysed frames to judge", state)
    measured = window.cost_ms_per_s
    over = measured > config.over_margin * budget
    under = measured < config.headroom_margin * budget
    counted = ReplanState(
        windows_over=state.windows_over + 1 if over else 0,
        windows_under=state.windows_under + 1 if under else 0,
        last_replan_at=state.last_replan_at,
    )
    cooling = (
        state.last_replan_at is not None and now - state.last_replan_at < config.min_interval_s
    )
    if cooling or not (over or under):
        return Decision("keep", "within the band" if not cooling else "cooling down", counted)
    if over and counted.windows_over >= config.windows:
        reason = (
            f"over budget: measured {measured:.1f} ms/s > budget {budget:g} "
            f"(plan predicted {predicted_cost:.1f})"
        )
        return Decision(
            "down", reason, ReplanState(last_replan_at=now), _corrected(profiles, window)
        )
    if under and counted.windows_under >= config.windows:
        reason = (
            f"headroom: measured {measured:.1f} ms/s < {config.headroom_margin:g} x budget "
            f"{budget:g} (plan predicted {predicted_cost:.1f})"
        )
        return Decision(
            "grow", reason, ReplanState(last_replan_at=now), _corrected(profiles, window)
        )
    return Decision("keep", "waiting for consecutive windows", counted)


def worth_growing(current_value: float, proposed_value: float, config: ReplanConfig) -> bool:
    """A grown plan replaces the plan in force only when it is clearly better."""
    return proposed_value > current_value + config.min_gain


def _corrected(profiles: Mapping[str, Profile], window: Window) -> dict[str, Profile]:
    measured_keys = {node.base_model for node in window.nodes}
    return {
        key: corrected_profile(profile, [n for n in window.nodes if n.base_model == key], window)
        for key, profile in profiles.items()
        if key in measured_keys
    }


def corrected_profile(
    profile: Profile, nodes: Sequence[NodeMeasurement], window: Window
) -> Profile:
    """The profile with each stretch of the network scaled by measured / predicted time.

    The network is cut into intervals: between consecutive cut points, and from the last cut
    point to the output. Each measured node covers some intervals; an interval's scale is the
    measured time over the predicted time of the nodes covering it (summed over their frames),
    intervals no node covers take the scale of all nodes together. The runtime's busy time
    beyond its nodes' time (the glue between them) scales every cost alike, so the corrected
    profile accounts for everything the budget is compared with. The input node (frame
    preparation) becomes the per-frame `decode_cost` the cost model charges per camera.
    """
    cumulative = [cut.cumulative_cost for cut in profile.cut_points]
    index = {cut.name: position for position, cut in enumerate(profile.cut_points)}
    intervals = [b - a for a, b in itertools.pairwise(cumulative)]
    intervals.append(profile.total_cost - cumulative[-1])  # the last cut point to the output
    tail = len(intervals)  # covered intervals are numbered 1..tail

    def covered(node: NodeMeasurement) -> range:
        start = index[node.start_cut] + 1
        end = tail if node.end_cut is None else index[node.end_cut]
        return range(start, end + 1)

    measured_ms = [0.0] * (tail + 1)
    predicted_ms = [0.0] * (tail + 1)
    heads_measured = heads_predicted = all_measured = all_predicted = 0.0
    input_ms = input_frames = 0.0
    for node in nodes:
        if node.frames <= 0 or node.start_cut not in index:
            continue
        if node.end_cut is not None and node.end_cut not in index:
            continue
        spent = node.ms_per_frame * node.frames
        if node.end_cut == node.start_cut:  # the input node: no base layers
            input_ms += spent
            input_frames += node.frames
            continue
        span = covered(node)
        expected = sum(intervals[i - 1] for i in span)
        if node.end_cut is None:
            expected += profile.split_overhead_at(index[node.start_cut])
            heads_measured += spent
            heads_predicted += expected * node.frames
        for i in span:
            measured_ms[i] += spent
            predicted_ms[i] += expected * node.frames
        all_measured += spent
        all_predicted += expected * node.frames

    overall = all_measured / all_predicted if all_predicted > 0 else 1.0
    nodes_ms = sum(node.ms_per_frame * node.frames for node in nodes)
    glue = window.cost_ms_per_s * window.seconds / nodes_ms if nodes_ms > 0 else 1.0
    glue = max(glue, 1.0)  # busy time includes the nodes' time; less is window-edge noise

    def scale(i: int) -> float:
        return (measured_ms[i] / predicted_ms[i] if predicted_ms[i] > 0 else overall) * glue

    costs = [0.0]
    for i in range(1, tail):
        costs.append(costs[-1] + intervals[i - 1] * scale(i))
    total = costs[-1] + intervals[tail - 1] * scale(tail)
    head_scale = (heads_measured / heads_predicted if heads_predicted > 0 else overall) * glue
    decode = input_ms / input_frames * glue if input_frames else profile.decode_cost
    return profile.model_copy(
        update={
            "cut_points": [
                CutPoint(
                    name=cut.name,
                    cumulative_cost=cost,
                    split_overhead=(
                        None if cut.split_overhead is None else cut.split_overhead * head_scale
                    ),
                )
                for cut, cost in zip(profile.cut_points, costs, strict=True)
            ],
            "total_cost": max(total, 1e-9),
            "split_overhead": profile.split_overhead * head_scale,
            "decode_cost": decode,
            "runtime_correction": {"scale": overall * glue, "window_s": window.seconds},
        }
    )


# ---------------------------------------------------------------------------------------------
# The monitor thread (the adapter between the runtime, the decision and the node)


@dataclass(frozen=True)
class _Sample:
    node: NodeMeasurement
    timing: Any  # the runtime's NodeTiming object (identity tells DAG rebuilds apart)
    total_ms: float
    frames: int


@dataclass(frozen=True)
class _Snapshot:
    at: float
    busy_ms: float
    marker: tuple[int | None, int]  # (plan id, deployments count): a window spans one plan
    samples: tuple[_Sample, ...]


class ProfileBook(Protocol):
    """Where a node keeps the cost profiles it plans with."""

    def stored(self, keys: Iterable[str]) -> dict[str, Profile | None]: ...

    def save(self, profiles: Mapping[str, Profile]) -> None: ...


class ReplanTarget(Protocol):
    """What the monitor needs of a node (:class:`mainstream.node.node.Node` is one): the plan
    in force and the runtime's timings to judge it, and one way to re-plan."""

    @property
    def runtime(self) -> EdgeRuntime: ...

    @property
    def profiles(self) -> ProfileBook: ...

    @property
    def plan_in_force(self) -> PlanRecord | None: ...

    @property
    def running(self) -> bool: ...

    def changes(self) -> AbstractContextManager[None]:
        """Held while re-planning: no other change runs meanwhile."""
        ...

    def planned_value(self, reason: str) -> float | None:
        """The objective of the plan the registered apps would get now (nothing deployed)."""
        ...

    def change_plan(self, reason: str) -> object:
        """Plan the registered apps again and put the plan in force."""
        ...


class ReplanMonitor:
    """Checks the runtime every window and re-plans the node when the decision says so."""

    def __init__(self, node: ReplanTarget, config: ReplanConfig) -> None:
        self.node = node
        self.config = config
        self.replans = 0
        self.last_reason: str | None = None
        self.last_at: datetime | None = None
        self._state = ReplanState()
        self._baseline: _Snapshot | None = None
        self._settling = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="replan-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; call without holding the node's change lock (the thread takes it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def stats(self) -> dict[str, Any]:
        return {
            "enabled": self._thread is not None and self._thread.is_alive(),
            "count": self.replans,
            "last_reason": self.last_reason,
            "last_at": self.last_at.isoformat() if self.last_at else None,
        }

    def _loop(self) -> None:
        while not self._stop.wait(self.config.window_s):
            try:
                self.check()
            except Exception:  # the monitor must outlive any one bad window
                logger.exception("re-planning check failed")

    def check(self) -> Decision | None:
        """Close the current window: decide, and re-plan if needed. None: no usable window."""
        snapshot = self._snapshot()
        previous, self._baseline = self._baseline, snapshot
        if previous is None or previous.marker != snapshot.marker:
            # A new deployment: its first window holds compilation and warm-up; start afresh.
            self._state = ReplanState(last_replan_at=self._state.last_replan_at)
            return None
        record = self.node.plan_in_force
        if record is None or record.plan is None or record.problem is None:
            return None
        window, warming_up = _window(previous, snapshot)
        if warming_up or self._settling:
            # A node ran for the first time (it compiled); the frame that did it may end in the
            # next window, so that one is skipped too.
            self._settling = warming_up
            return None
        analysed = sum(node.frames for node in window.nodes if node.end_cut is None)
        if analysed < self.config.min_frames:
            self._baseline = previous  # slow apps: let the window grow until it says something
            return None
        profiles = {profile.base_model: profile for profile in record.problem.all_profiles()}
        decision = decide(
            window,
            record.budget if record.budget is not None else record.plan.budget,
            record.plan.total_cost,
            profiles,
            self._state,
            snapshot.at,
            self.config,
        )
        self._state = decision.state
        logger.debug(
            "re-planning window of %.1f s: measured %.1f ms/s, budget %g, predicted %.1f: %s",
            window.seconds,
            window.cost_ms_per_s,
            record.plan.budget,
            record.plan.total_cost,
            decision.reason,
        )
        if decision.action != "keep":
            self._replan(decision, record.id, record.plan.value)
        return decision

    def _snapshot(self) -> _Snapshot:
        node = self.node
        record = node.plan_in_force
        stats = node.runtime.stats()
        samples: list[_Sample] = []
        if record is not None and record.plan is not None:
            bases = {app.camera: app.base_model for app in record.plan.apps}
            for camera, key in bases.items():
                deployment = node.runtime.deployment(camera)
                if deployment is None:
                    continue
                for segment in deployment.dag.segments():
                    measured = NodeMeasurement(key, segment.start_cut, segment.end_cut, 0.0, 0)
                    samples.append(_sample(measured, segment.timing))
                for head in deployment.dag.heads():
                    measured = NodeMeasurement(key, head.spec.cut_point, None, 0.0, 0)
                    samples.append(_sample(measured, head.timing))
        return _Snapshot(
            at=time.monotonic(),
            busy_ms=stats.busy_ms_total,
            marker=(record.id if record is not None else None, stats.deployments),
            samples=tuple(samples),
        )

    def _replan(self, decision: Decision, plan_id: int, current_value: float) -> None:
        node = self.node
        with node.changes():
            record = node.plan_in_force
            if self._stop.is_set() or not node.running or record is None or record.id != plan_id:
                return  # stopping, or the plan changed while this window was measured
            previous = node.profiles.stored(decision.profiles)
            node.profiles.save(decision.profiles)
            restore = {key: profile for key, profile in previous.items() if profile is not None}
            try:
                if decision.action == "grow":
                    value = node.planned_value(decision.reason)
                    if value is None or not worth_growing(current_value, value, self.config):
                        node.profiles.save(restore)
                        return
                node.change_plan(decision.reason)
            except MainstreamError as error:
                node.profiles.save(restore)
                logger.warning("re-planning (%s) failed: %s", decision.reason, error)
                return
        self.replans += 1
        self.last_reason = decision.reason
        self.last_at = datetime.now().astimezone()
        logger.info("re-planned: %s", decision.reason)


def _sample(node: NodeMeasurement, timing: Any) -> _Sample:
    return _Sample(node, timing, float(timing.total_ms), int(timing.frames))


def _window(previous: _Snapshot, current: _Snapshot) -> tuple[Window, bool]:
    """The difference of two snapshots, and whether some node ran for the first time in it.

    A node's first call compiles its model: a node that had not run before the window is left
    out, and its time taken out of the busy time, so that compilation never looks like cost.
    """
    before = {id(sample.timing): sample for sample in previous.samples}
    nodes = []
    busy = current.busy_ms - previous.busy_ms
    warming_up = False
    for sample in current.samples:
        old = before.get(id(sample.timing))
        total_ms = sample.total_ms - (old.total_ms if old is not None else 0.0)
        frames = sample.frames - (old.frames if old is not None else 0)
        if frames > 0 and (old is None or old.frames == 0):
            warming_up = True
            busy -= total_ms
        elif frames > 0:
            nodes.append(
                NodeMeasurement(
                    sample.node.base_model,
                    sample.node.start_cut,
                    sample.node.end_cut,
                    total_ms / frames,
                    frames,
                )
            )
    seconds = current.at - previous.at
    cost = max(0.0, busy) / seconds if seconds > 0 else 0.0
    return Window(seconds=seconds, cost_ms_per_s=cost, nodes=tuple(nodes)), warming_up
