"""Operator feedback on a running node: marks in, precision estimates and re-plans out.

An operator marks an event true or false (REST, CLI, dashboard or an MQTT command). The mark
is stored with the event (:class:`edge_runtime.event_store.EventStore`), and the app's
estimate is updated: a Beta posterior on its event-level precision and the per-frame FPR shift
that makes the event model produce it (:mod:`scheduler.feedback`). Once an app has
`feedback.min_reviews` marks, every plan of the node uses the shifted FPRs for it
(:meth:`FeedbackLoop.corrected`), and a mark that moves the app's predicted F1 by
`feedback.replan_delta` or more re-plans the node at once, with the counts in the reason.

Which option reported an event matters: the same marks mean a higher per-frame FPR under a
vote of 2 than under 1. So when an event starts the node records its detection context (the
app's cut point, rate and vote in the plan, its package and threshold), and a mark counts
towards the estimate only for events of the app's current package and threshold, each judged
under the option that reported it. After a re-plan the earlier marks therefore still imply
the same FPR, and the node does not re-plan again until new marks say something new.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edge_runtime.detector import EventChange, EventRecord, Transition
from edge_runtime.event_store import DetectionContext, EventReview, ReviewCounts
from mainstream.core.errors import InvalidParameterError, MainstreamError, NotFoundError
from mainstream.node.registry import AppRecord, PlanRecord
from scheduler.feedback import (
    MarkedOption,
    implied_shift,
    mean_precision,
    option_params,
    precision_posterior,
    quality_with_shift,
    shifted,
    with_shift,
)
from scheduler.problem import AppPlan, AppSpec, Problem

if TYPE_CHECKING:
    from mainstream.node.node import Node
    from mainstream.node.settings import FeedbackSettings

logger = logging.getLogger(__name__)

REVIEW_TOPIC = "events/+/review/set"
"""MQTT command topic under `<prefix>/<node>`; the payload is `true`, `false` or `clear`."""
MQTT_QUEUE_SIZE = 100  # MQTT marks waiting for the worker; more are dropped with a warning


@dataclass(frozen=True)
class FeedbackConfig:
    """When marks change plans; see `FeedbackSettings` for each field."""

    enabled: bool = True
    min_reviews: int = 5
    replan_delta: float = 0.02
    prior_strength: float = 4.0
    interval_level: float = 0.9

    @classmethod
    def from_settings(cls, settings: FeedbackSettings) -> FeedbackConfig:
        return cls(
            enabled=settings.enabled,
            min_reviews=settings.min_reviews,
            replan_delta=settings.replan_delta,
            prior_strength=settings.prior_strength,
        )


@dataclass(frozen=True)
class AppFeedback:
    """What the marks on one app's events say, next to what the plan in force predicts.

    `true`/`false`/`unreviewed` count every event of the app on its camera; the estimate uses
    the `counted_*` marks (events of the app's current package and threshold whose detection
    context is known). `in_force`: enough marks that plans use the estimate.
    """

    app: str
    camera: str
    true: int = 0
    false: int = 0
    unreviewed: int = 0
    counted_true: int = 0
    counted_false: int = 0
    in_force: bool = False
    predicted_precision: float | None = None  # the package's figures, for the counted events
    precision: float | None = None  # posterior mean
    precision_interval: tuple[float, float] | None = None
    fpr_shift: float | None = None
    false_positive_rate: float | None = None  # implied at the cut point in force
    planned_f1: float | None = None
    adjusted_precision: float | None = None  # at the option in force, with the estimate in force
    adjusted_f1: float | None = None

    @property
    def counted(self) -> int:
        return self.counted_true + self.counted_false

    def replan_reason(self, config: FeedbackConfig) -> str | None:
        """Why the plan in force no longer fits the marks, or None when it still does."""
        if self.planned_f1 is None or self.adjusted_f1 is None:
            return None
        if abs(self.adjusted_f1 - self.planned_f1) < config.replan_delta:
            return None
        change = f"predicted F1 {self.planned_f1:.2f} -> {self.adjusted_f1:.2f}"
        if not self.in_force:
            return (
                f"feedback: {self.counted} reviewed events of {self.app} on {self.camera}, "
                f"fewer than {config.min_reviews}: the package's figures again ({change})"
            )
        return (
            f"feedback: {self.counted_false} of {self.counted} reviewed events false "
            f"({self.app} on {self.camera}; {change})"
        )


@dataclass(frozen=True)
class ReviewOutcome:
    """A stored (or cleared) mark, the app's estimate after it, and the re-plan it caused."""

    event: EventRecord
    review: EventReview | None
    feedback: AppFeedback | None
    replanned: str | None  # the new plan's reason


class FeedbackLoop:
    """Marks, estimates and feedback re-plans of one node (see the module docstring)."""

    def __init__(self, node: Node, config: FeedbackConfig) -> None:
        self.node = node
        self.config = config
        self.replans = 0
        self.last_reason: str | None = None
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every mark: cached estimates are stale
        self._cache: dict[tuple[object, ...], AppFeedback] = {}
        self._contexts: dict[str, DetectionContext] = {}  # by app, for events starting now
        self._commands: queue.Queue[tuple[str, bytes]] = queue.Queue(MQTT_QUEUE_SIZE)
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def _confidence(self) -> float | None:
        """The confidence the node plans with: estimates are judged on the same figures."""
        return self.node.settings.planning.confidence

    # -- marks -----------------------------------------------------------------------------------

    def review(self, event_id: str, verdict: bool, note: str = "", by: str = "") -> ReviewOutcome:
        """Store the mark (replacing an earlier one) and re-plan if the app's F1 moved enough."""
        review = EventReview(event_id, verdict, note, time.time(), by)
        if not self.node.events.review(review):
            raise NotFoundError(f"no event {event_id!r}")
        return self._after_change(event_id, review)

    def clear(self, event_id: str) -> ReviewOutcome:
        """Remove the event's mark (if any) and re-plan if the app's F1 moved enough."""
        if self.node.events.get(event_id) is None:
            raise NotFoundError(f"no event {event_id!r}")
        self.node.events.clear_review(event_id)
        return self._after_change(event_id, None)

    def _after_change(self, event_id: str, review: EventReview | None) -> ReviewOutcome:
        with self._lock:
            self._generation += 1
        event = self.node.events.get(event_id)
        if event is None:  # deleted meanwhile
            raise NotFoundError(f"no event {event_id!r}")
        self.node.sinks.on_review(event_id, None if review is None else review.verdict)
        replanned = self._replan_if_needed(event.app, event.camera)
        feedback = self.estimate_of(event.app)
        return ReviewOutcome(event, review, feedback, replanned)

    def _replan_if_needed(self, app_name: str, camera: str) -> str | None:
        if not self.config.enabled or not self.node.running:
            return None
        with self.node.changes():
            feedback = self.estimate_of(app_name)
            if feedback is None or feedback.camera != camera:
                return None
            reason = feedback.replan_reason(self.config)
            if reason is None:
                return None
            try:
                self.node.change_plan(reason)
            except MainstreamError as error:
                logger.warning("re-planning (%s) failed: %s", reason, error)
                return None
        with self._lock:
            self.replans += 1
            self.last_reason = reason
        logger.info("re-planned: %s", reason)
        return reason

    # -- estimates ---------------------------------------------------------------------------------

    def estimate_of(self, app_name: str) -> AppFeedback | None:
        """The estimate of a registered app against the plan in force (None: no such app)."""
        apps = [app for app in self.node.registry.list_apps() if app.name == app_name]
        if not apps:
            return None
        return self.estimates(apps).get(app_name)

    def estimates(self, apps: Sequence[AppRecord] | None = None) -> dict[str, AppFeedback]:
        """The estimate of each app (default: every registered one), by app name."""
        apps = self.node.registry.list_apps() if apps is None else apps
        counts = {(c.app, c.camera): c for c in self.node.events.review_counts()}
        record = self.node.plan_in_force
        planned = _planned_apps(record)
        camera_fps = record.problem.camera_fps if record and record.problem else None
        found = {}
        for app in apps:
            spec = self._base_spec(app)
            fps = camera_fps if camera_fps is not None else self._camera_fps(app)
            found[app.name] = self._estimate(
                app, spec, fps, planned.get(app.name), counts.get((app.name, app.camera))
            )
        return found

    def corrected(self, problem: Problem, apps: Sequence[AppRecord]) -> Problem:
        """The problem with each app's FPRs shifted as its marks say (apps with enough marks).

        `problem` holds the package's figures; the plan in force gives the option each app
        runs now, for the estimate's adjusted figures only.
        """
        if not self.config.enabled:
            return problem
        by_name = {app.name: app for app in apps}
        planned = _planned_apps(self.node.plan_in_force)
        specs = []
        changed = False
        for spec in problem.apps:
            app = by_name.get(spec.name)
            if app is not None:
                feedback = self._estimate(
                    app, spec, problem.camera_fps, planned.get(app.name), None
                )
                if feedback.in_force and feedback.fpr_shift is not None:
                    spec = with_shift(spec, feedback.fpr_shift)
                    changed = True
            specs.append(spec)
        return problem.model_copy(update={"apps": specs}) if changed else problem

    def _estimate(
        self,
        app: AppRecord,
        spec: AppSpec | None,
        camera_fps: float,
        planned: AppPlan | None,
        counts: ReviewCounts | None,
    ) -> AppFeedback:
        totals = counts or ReviewCounts(app.name, app.camera, 0, 0, 0)
        option = (planned.cut_point, planned.fps, planned.x_vote, planned.f1) if planned else None
        with self._lock:
            key = (
                app.name,
                app.camera,
                app.package_sha256,
                app.threshold,
                app.updated_at,  # event overrides and anything else the spec depends on
                camera_fps,
                option,
                self._generation,
            )
            cached = self._cache.get(key)
        if cached is None:
            cached = self._estimate_marks(app, spec, camera_fps, planned)
            with self._lock:
                if len(self._cache) > 1000:
                    self._cache.clear()
                self._cache[key] = cached
        return replace(cached, true=totals.true, false=totals.false, unreviewed=totals.unreviewed)

    def _estimate_marks(
        self, app: AppRecord, spec: AppSpec | None, camera_fps: float, planned: AppPlan | None
    ) -> AppFeedback:
        """The estimate from the marks that count (the expensive part, cached)."""
        empty = AppFeedback(app=app.name, camera=app.camera)
        if spec is None:
            return empty
        groups: dict[tuple[str, float, int], list[int]] = {}
        for mark in self.node.events.reviewed(app.name, app.camera):
            context = mark.context
            if (
                context is None
                or context.package_sha256 != app.package_sha256
                or context.threshold != app.threshold
            ):
                continue
            tally = groups.setdefault((context.cut_point, context.fps, context.x_vote), [0, 0])
            tally[0 if mark.verdict else 1] += 1
        options, true_marks, false_marks = [], 0, 0
        for (cut_point, fps, x_vote), (true, false) in groups.items():
            params = option_params(spec, camera_fps, cut_point, fps, x_vote, self._confidence)
            if params is None:  # an option the app can no longer run
                continue
            options.append(MarkedOption(params, true + false))
            true_marks, false_marks = true_marks + true, false_marks + false
        planned_f1 = planned.f1 if planned is not None else None
        now = (
            option_params(
                spec, camera_fps, planned.cut_point, planned.fps, planned.x_vote, self._confidence
            )
            if planned is not None
            else None
        )
        if not options:
            adjusted = quality_with_shift(now, 0.0) if now is not None else None
            return AppFeedback(
                app=app.name,
                camera=app.camera,
                planned_f1=planned_f1,
                adjusted_precision=adjusted.precision if adjusted else None,
                adjusted_f1=adjusted.f1 if adjusted else None,
            )
        predicted = mean_precision(options)
        posterior = precision_posterior(
            predicted, true_marks, false_marks, self.config.prior_strength
        )
        shift = implied_shift(posterior.mean, options)
        in_force = true_marks + false_marks >= self.config.min_reviews
        adjusted = quality_with_shift(now, shift if in_force else 0.0) if now else None
        return AppFeedback(
            app=app.name,
            camera=app.camera,
            counted_true=true_marks,
            counted_false=false_marks,
            in_force=in_force,
            predicted_precision=predicted,
            precision=posterior.mean,
            precision_interval=posterior.interval(self.config.interval_level),
            fpr_shift=shift,
            false_positive_rate=shifted(now, shift).false_positive_rate if now else None,
            planned_f1=planned_f1,
            adjusted_precision=adjusted.precision if adjusted else None,
            adjusted_f1=adjusted.f1 if adjusted else None,
        )

    def _base_spec(self, app: AppRecord) -> AppSpec | None:
        """The app as its package describes it (no feedback), or None if it cannot be read."""
        record = self.node.registry.package_by_sha(app.package_sha256)
        if record is None:  # the package is gone: the app cannot be planned either
            return None
        return self.node.deployed_app(app, record.manifest).app_spec()

    def _camera_fps(self, app: AppRecord) -> float:
        try:
            return self.node.camera_fps(self.node.registry.get_camera(app.camera).config)
        except NotFoundError:
            return self.node.settings.runtime.default_camera_fps

    # -- detection contexts ------------------------------------------------------------------------

    def plan_applied(self, record: PlanRecord | None, apps: Sequence[AppRecord]) -> None:
        """Remember how each app now detects, for the events that start from now on."""
        by_name = {app.name: app for app in apps}
        contexts = {}
        for planned in _planned_apps(record).values():
            app = by_name.get(planned.name)
            if app is None:
                continue
            contexts[planned.name] = DetectionContext(
                event_id="",
                plan_id=record.id if record else None,
                cut_point=planned.cut_point,
                fps=planned.fps,
                x_vote=planned.x_vote,
                package_sha256=app.package_sha256,
                threshold=app.threshold,
            )
        with self._lock:
            self._contexts = contexts

    def on_event(self, change: EventChange) -> None:
        """Runtime listener: store the detection context of each event as it starts."""
        if change.transition is not Transition.NEW:
            return
        with self._lock:
            context = self._contexts.get(change.event.app)
        if context is None:
            return
        try:
            self.node.events.save_context(replace(context, event_id=change.event.id))
        except Exception:  # feedback must never stop detection
            logger.exception("could not store the detection context of event %s", change.event.id)

    # -- MQTT commands -----------------------------------------------------------------------------

    def listen(
        self, subscribe: Callable[[str, Callable[[str, bytes], None]], Sequence[str]]
    ) -> None:
        """Take marks from MQTT (`<prefix>/<node>/events/<id>/review/set`), worked on one at a
        time by a worker thread: the network thread only queues them."""
        if self._worker is not None or not subscribe(REVIEW_TOPIC, self._queue_command):
            return  # listening already, or no sink takes commands
        self._worker = threading.Thread(target=self._work, name="feedback-commands", daemon=True)
        self._worker.start()

    def close(self) -> None:
        """Stop taking MQTT marks; call without holding the node's change lock (the worker
        takes it to re-plan)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self._stopping.set()
        worker.join(timeout=30)

    def _queue_command(self, topic: str, payload: bytes) -> None:
        try:
            self._commands.put_nowait((topic, payload))
        except queue.Full:
            logger.warning("mqtt: too many review commands waiting; dropped one on %s", topic)

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                topic, payload = self._commands.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.command(topic, payload)
            except MainstreamError as error:
                logger.warning("mqtt: review command on %s refused: %s", topic, error)
            except Exception:  # the worker must outlive any one bad command
                logger.exception("mqtt: review command on %s failed", topic)

    def command(self, topic: str, payload: bytes) -> ReviewOutcome:
        """Carry out one MQTT review command (`true`, `false` or `clear`)."""
        levels = topic.split("/")
        if len(levels) < 4 or levels[-4] != "events" or levels[-2:] != ["review", "set"]:
            raise InvalidParameterError("topic", topic, ".../events/<id>/review/set")
        event_id = levels[-3]
        verdict = parse_verdict(payload.decode("utf-8", errors="replace"))
        if verdict is None:
            return self.clear(event_id)
        return self.review(event_id, verdict, by="mqtt")

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "enabled": self.config.enabled,
                "replans": self.replans,
                "last_reason": self.last_reason,
            }


def parse_verdict(text: str) -> bool | None:
    """`true`/`false` (any case, also on/off, 1/0) as a verdict; `clear` or nothing: None."""
    word = text.strip().lower()
    if word in ("true", "on", "1", "yes"):
        return True
    if word in ("false", "off", "0", "no"):
        return False
    if word in ("", "clear", "none", "null"):
        return None
    raise InvalidParameterError("verdict", text[:40], "true, false or clear")


def _planned_apps(record: PlanRecord | None) -> dict[str, AppPlan]:
    if record is None or record.plan is None or record.status != "ok":
        return {}
    return {app.name: app for app in record.plan.apps}
