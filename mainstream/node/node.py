"""The daemon object: one node's registry, cameras, runtime, cost profiles and the plan in force.

A change to the node (an app or camera added, changed or removed) goes in three steps, so that a
change that cannot be carried out leaves everything as it was:

1. :meth:`Node.propose` plans the new state and builds its deployments without touching anything
   that runs (an infeasible plan or a model that cannot be built raises here);
2. the caller commits the change and :meth:`Node.record` of the proposal in one registry
   transaction;
3. :meth:`Node.apply` swaps the new deployments into the running runtime and starts or stops
   cameras. Cameras keep streaming and apps that stay keep their open events.

:class:`mainstream.node.services.Services` drives these steps under :meth:`Node.changes`, which
serialises changes. TensorFlow is imported only when a model is built or a profile measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import resource
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_runtime.camera import CameraConfig, CameraManager, CameraState, StateChange
from edge_runtime.clips import ClipConfig, ClipRecorder
from edge_runtime.deployer import (
    BaseProvider,
    DeployedApp,
    analysis_rate,
    build_deployments,
    problem_for,
)
from edge_runtime.detector import ENDED_RESTART, EventChange, Transition
from edge_runtime.engines import EngineOptions, configure_tensorflow_threads, resolve_engine
from edge_runtime.event_store import EventStore
from edge_runtime.live import LiveHub
from edge_runtime.overlay import ScoreLine, draw_scores
from edge_runtime.profiler import default_budget
from edge_runtime.runtime import CameraDeployment, EdgeRuntime
from edge_runtime.sinks import SinkFanOut, build_sinks
from edge_runtime.source_types import Frame, SyntheticSourceConfig, encode_jpeg
from mainstream.core.errors import InfeasibleError, MainstreamError, ModelError, NotFoundError
from mainstream.core.manifest import Manifest
from mainstream.core.package import Package
from mainstream.node.feedback import FeedbackConfig, FeedbackLoop
from mainstream.node.package_cache import PackageCache
from mainstream.node.profiles import ProfileStore
from mainstream.node.registry import (
    AppRecord,
    CameraRecord,
    PlanRecord,
    PlanStatus,
    Registry,
    Transaction,
    utc_now,
)
from mainstream.node.replanner import ReplanConfig, ReplanMonitor
from mainstream.node.retention import RetentionKeeper
from mainstream.node.settings import Settings
from scheduler.planner import make_plan
from scheduler.problem import Objective, Plan, Problem

logger = logging.getLogger(__name__)

NOTHING_TO_PLAN = "no enabled apps on enabled cameras"


class NotReadyError(MainstreamError):
    """The node cannot answer yet (no frame from the camera yet, still starting...)."""

    http_status = 503
    expose_message = True  # says what to wait for; reveals nothing internal


@dataclass
class Proposal:
    """A planned state of the node, not yet committed nor running."""

    reason: str
    status: PlanStatus
    budget: float
    cameras: list[CameraRecord]  # the enabled cameras
    message: str = ""
    problem: Problem | None = None
    plan: Plan | None = None
    apps: dict[str, DeployedApp] = field(default_factory=dict)
    deployments: list[CameraDeployment] | None = None  # None: keep what runs
    dag_key: str = ""  # what the DAGs depend on; equal keys mean the running DAGs can stay
    models_in_use: set[tuple[str, str]] = field(default_factory=set)
    new_plan: bool = True  # False when the plan in force already answers this problem


@dataclass
class _Prepared:
    """The scheduling problem of a state of the node, and what building it needs."""

    reason: str
    budget: float
    cameras: list[CameraRecord]  # the enabled cameras
    active: list[AppRecord]  # the enabled apps on enabled cameras
    packages: dict[str, Package]
    deployed: dict[str, DeployedApp]
    used_fps: dict[str, float]
    problem: Problem


def describe_plan(plan: Plan) -> str:
    """One log line: each app's cut point and rate, and the plan's cost against its budget."""
    apps = ", ".join(f"{app.name} at {app.cut_point} {app.fps:g} fps" for app in plan.apps)
    return f"{apps or 'no apps'}; {plan.total_cost:.0f} of {plan.budget:.0f} ms/s"


@dataclass
class SchedulerCounters:
    """How often and how long the scheduler ran on this node since start."""

    solves: int = 0  # problems solved (dry runs included)
    solve_seconds_total: float = 0.0
    last_solve_seconds: float = 0.0
    replans: int = 0  # new plans put in force (the first one included)


@dataclass
class _Measurement:
    """What the runtime had counted when the plan in force was applied."""

    since_wall: datetime
    since: float
    frames: dict[str, int]


class Node:
    """One Mainstream node. `start()` brings it up, `stop()` winds it down cleanly."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(settings.registry_path, settings.blobs_dir)
        self.events = EventStore(settings.events_path)
        self.clips: ClipRecorder | None = None
        if settings.clips.enabled and settings.role == "node":
            clips = settings.clips
            self.clips = ClipRecorder(
                ClipConfig(
                    pre_s=clips.pre_s,
                    post_s=clips.post_s,
                    max_s=clips.max_s,
                    fps=clips.fps,
                    buffer_bytes=int(clips.buffer_mb * 1024 * 1024),
                ),
                self.events,
                settings.clips_temp_dir,
                on_stored=self._publish_clip,
            )
        self.cameras = CameraManager(
            on_state_change=self._publish_camera_state,
            on_frame=None if self.clips is None else self.clips.on_frame,
            on_frame_fps=None if self.clips is None else self.clips.config.fps,
        )
        # Resolved once: profiles, DAGs and /api/stats all see the same engine.
        self.engine = resolve_engine(
            settings.runtime.engine,
            settings.runtime.openvino_precision,
            frames_in_flight=settings.runtime.frames_in_flight,
        )
        logger.info("inference engine: %s", self.engine.reason)
        self.runtime = EdgeRuntime(
            self.cameras,
            self.events,
            listeners=[self._publish_event],
            batch_cameras=settings.runtime.batch_cameras,
            frames_in_flight=self.engine.frames_in_flight,
        )
        self.sinks = SinkFanOut()  # MQTT and webhooks, built by start()
        self.live = LiveHub()  # the /api/live stream
        self.scheduler = SchedulerCounters()
        self.bases = BaseProvider(settings.bases_dir)
        self.started_at: float | None = None
        self.last_error: str | None = None
        self.packages = PackageCache(self.registry, settings.cache_dir)
        self.profiles = ProfileStore(
            self.registry,
            self.bases,
            self.engine.name,
            settings.runtime.openvino_precision,
            settings.runtime.profile_repeats,
            self.engine.frames_in_flight,
        )
        self._change_lock = threading.RLock()
        self._counters_lock = threading.Lock()
        self._dag_key = ""
        self._plan: PlanRecord | None = None
        self._measurement: _Measurement | None = None
        self._stopped = False
        self.replanner = ReplanMonitor(self, ReplanConfig.from_settings(settings.runtime))
        self.feedback = FeedbackLoop(self, FeedbackConfig.from_settings(settings.feedback))
        self.retention = RetentionKeeper(self.events, settings.retention)

    # -- life cycle ----------------------------------------------------------------------------

    def _configure_threads(self) -> None:
        """Apply the configured TensorFlow thread pools before any model runs."""
        runtime = self.settings.runtime
        if runtime.tf_intra_op_threads is None and runtime.tf_inter_op_threads is None:
            return

        defaults = EngineOptions()
        configure_tensorflow_threads(
            EngineOptions(
                intra_op_threads=runtime.tf_intra_op_threads or defaults.intra_op_threads,
                inter_op_threads=runtime.tf_inter_op_threads or defaults.inter_op_threads,
            )
        )

    def start(self) -> None:
        """Register the configured cameras, start the runtime and deploy the registered apps.

        Events the last run left open (it crashed) are closed first, with `ended_by`
        "restart", and their end goes to the sinks built just before.
        A state that cannot be deployed (say, the budget no longer fits the apps) does not stop
        the node: the API stays up to fix it, and readiness reports the problem.
        In the registry role (a fleet's shared registry) the node only stores and serves
        packages: no cameras, runtime, sinks, profiles or plan.
        """
        with self._change_lock:
            if self.settings.role == "registry":
                self._collect_garbage()
                self.started_at = time.time()
                logger.info("running as a shared registry: no cameras, runtime or plan")
                return
            self._configure_threads()
            self.sinks = self._build_sinks()
            self.feedback.listen(self.sinks.subscribe)
            self._close_events_left_open()
            self._collect_garbage()
            self.register_startup_cameras()
            self.runtime.start()
            self.started_at = time.time()
            try:
                proposal = self.propose(
                    "node started",
                    self.registry.list_apps(),
                    self.registry.list_cameras(),
                )
            except MainstreamError as error:
                logger.error("the registered apps cannot be deployed: %s", error)
                self.last_error = str(error)
                proposal = self._empty_proposal("node started; nothing deployed", error)
            self.commit(proposal)
        self.retention.start()  # on its own thread: a first pass now, then every interval
        if self.settings.runtime.replan:
            self.replanner.start()

    def stop(self) -> None:
        """Stop analysing (open events are closed and stored), then the cameras; then the sinks,
        so that the end of every event closed here still goes out; close files."""
        self.replanner.stop()  # outside the lock: the monitor takes it to re-plan
        self.feedback.close()  # likewise: a mark from MQTT may be re-planning
        self.retention.stop()  # before the event store closes under it
        with self._change_lock:
            if self._stopped:
                return
            self._stopped = True
            self.runtime.stop()
            self.cameras.stop_all()
            if self.clips is not None:  # stores the clips of events just closed, then the sinks
                self.clips.close()
            self.sinks.close()
            self.live.close()
            self.events.close()
            self.registry.close()
            self.packages.clear()

    def _build_sinks(self) -> SinkFanOut:
        """The configured sinks, started; a sink that cannot be built is logged, never fatal."""
        settings = self.settings
        try:
            return build_sinks(
                node=settings.node_name,
                data_dir=settings.data_dir,
                mqtt=settings.mqtt,
                webhooks=settings.webhooks,
                base_url=public_url(settings),
                snapshots=self.events.snapshot,
            )
        except Exception:
            logger.exception("the event sinks could not be started; events are only stored")
            return SinkFanOut()

    def _close_events_left_open(self) -> None:
        """End the events a crash left open (nothing analyses yet, so every open event is one)
        at the last frame stored for them, and tell the sinks: their "end" never went out."""
        try:
            closed = self.events.close_open(ENDED_RESTART)
        except Exception:  # a damaged file: the node still starts, the events stay open
            logger.exception("could not close the events left open by the last run")
            return
        for event in closed:
            logger.warning(
                "event %s (%s on %s) was left open by the last run; closed at its last frame",
                event.id,
                event.app,
                event.camera,
            )
            self._publish_event(EventChange(Transition.END, event))

    def _publish_event(self, change: EventChange) -> None:
        """Runtime listener: a committed event change goes to the sinks and the live stream
        (a new event's detection context is stored first, for feedback)."""
        if self.clips is not None:
            self.clips.on_event(change)
            change = self.clips.annotate(change)
        self.feedback.on_event(change)
        self.sinks(change)
        self.live(change)

    def _publish_clip(self, event_id: str) -> None:
        """An event's clip is stored: an "update" with its URL goes to the sinks and the live
        stream (the event's "end" went out before the clip's post-roll was recorded)."""
        event = self.events.get(event_id)
        if event is None:
            return
        change = EventChange(Transition.UPDATE, event, clip_stored=True)
        self.sinks(change)
        self.live(change)

    def _publish_camera_state(self, change: StateChange) -> None:
        if self.clips is not None and change.current is CameraState.STOPPED:
            self.clips.forget_camera(change.camera_id)
        self.sinks.on_camera_state(change)
        self.live.on_camera_state(change)

    @property
    def running(self) -> bool:
        return self.started_at is not None and not self._stopped

    @contextlib.contextmanager
    def changes(self) -> Iterator[None]:
        """Hold while proposing, committing and applying one change."""
        with self._change_lock:
            yield

    def _collect_garbage(self) -> None:
        """Remove what an interrupted upload or clip can leave: staged files, unrecorded blobs
        and partial clips."""
        shutil.rmtree(self.settings.data_dir / "tmp", ignore_errors=True)
        shutil.rmtree(self.settings.clips_temp_dir, ignore_errors=True)  # clips a crash cut short
        recorded = {package.sha256 for package in self.registry.list_packages()}
        for orphan in self.registry.blobs.names() - recorded:
            logger.info("removing package blob %s, which no package record refers to", orphan)
            self.registry.blobs.delete(orphan)
        for stale in self.registry.blobs.root.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def register_startup_cameras(self) -> None:
        """Register the configured cameras the registry lacks (again harmless)."""
        missing = [
            config
            for config in self.settings.startup_cameras()
            if not self.registry.has_camera(config.id)
        ]
        if missing:
            with self.registry.transaction() as transaction:
                for config in missing:
                    transaction.add_camera(config)
            logger.info("registered camera(s) %s", ", ".join(c.id for c in missing))
        for record in self.registry.list_cameras():
            try:  # registered before the policy was in force, or under a looser one
                self.settings.check_camera(record.config)
            except MainstreamError as error:
                logger.error(
                    "camera %s is refused by camera_policy and is not started: %s; "
                    "change or remove it",
                    record.id,
                    error,
                )

    def camera_allowed(self, config: CameraConfig) -> bool:
        """Whether the camera policy accepts this camera (refused ones are never started)."""
        try:
            self.settings.check_camera(config)
        except MainstreamError:
            return False
        return True

    # -- planning ------------------------------------------------------------------------------

    def budget(self, override: float | None = None) -> float:
        """Compute budget in ms per second: the override, the setting, or derived."""
        if override is not None:
            return override
        if self.settings.runtime.budget_ms_per_s is not None:
            return self.settings.runtime.budget_ms_per_s

        # Each frame in flight runs on its own stream: the budget counts every stream.
        return default_budget(self.settings.runtime.utilisation, self.engine.frames_in_flight)

    def camera_fps(self, config: CameraConfig) -> float:
        """The camera rate F the plan assumes for a camera."""
        if config.fps is not None:
            return config.fps
        source = config.source_config()
        if isinstance(source, SyntheticSourceConfig):
            return source.fps
        return self.settings.runtime.default_camera_fps

    def propose(
        self,
        reason: str,
        apps: Sequence[AppRecord],
        cameras: Sequence[CameraRecord],
        *,
        budget: float | None = None,
        objective: Objective | None = None,
        build: bool = True,
    ) -> Proposal:
        """Plan the node with these apps and cameras; with `build`, also build the deployments.

        Only enabled apps on enabled cameras are planned; a camera the camera policy refuses
        (registered before it was in force) counts as disabled. Raises InfeasibleError when
        nothing fits the budget and ModelError when the apps cannot run together.
        """
        prepared = self._prepare(reason, apps, cameras, budget, objective)
        if isinstance(prepared, Proposal):
            return prepared
        return self._solve(prepared, build)

    def what_if(
        self,
        reason: str,
        snapshot: Callable[[], tuple[Sequence[AppRecord], Sequence[CameraRecord]]],
        *,
        budget: float | None = None,
        objective: Objective | None = None,
    ) -> Proposal:
        """Plan a hypothetical state of the node (a dry run) without blocking changes.

        `snapshot` runs under the change lock and returns the apps and cameras to plan; the
        packages and cost profiles are looked up under it too (they are shared with changes).
        The plan search, the long part, runs after the lock is released. Nothing is built,
        stored or applied.
        """
        with self._change_lock:
            apps, cameras = snapshot()
            prepared = self._prepare(reason, apps, cameras, budget, objective)
        if isinstance(prepared, Proposal):
            return prepared
        return self._solve(prepared, build=False)

    def _prepare(
        self,
        reason: str,
        apps: Sequence[AppRecord],
        cameras: Sequence[CameraRecord],
        budget: float | None,
        objective: Objective | None,
    ) -> _Prepared | Proposal:
        """The scheduling problem of these apps and cameras, or the empty proposal."""
        enabled_cameras = [
            camera for camera in cameras if camera.enabled and self.camera_allowed(camera.config)
        ]
        camera_ids = {camera.id for camera in enabled_cameras}
        active = [app for app in apps if app.enabled and app.camera in camera_ids]
        effective_budget = self.budget(budget)
        if not active:
            return Proposal(
                reason=reason,
                status="empty",
                budget=effective_budget,
                cameras=enabled_cameras,
                message=NOTHING_TO_PLAN,
                deployments=[],
                new_plan=self._differs_from_current("empty", NOTHING_TO_PLAN),
            )
        packages = {app.name: self.packages.of_app(app) for app in active}
        deployed = {app.name: self.deployed_app(app, packages[app.name].manifest) for app in active}
        fps = {camera.id: self.camera_fps(camera.config) for camera in enabled_cameras}
        used_fps = {app.camera: fps[app.camera] for app in active}
        profiles = self.profiles.for_apps(list(deployed.values()), packages)
        problem = problem_for(
            list(deployed.values()),
            profiles,
            effective_budget,
            used_fps,
            objective or self.settings.runtime.objective,
            self.settings.planning.confidence,
        )
        problem = self.feedback.corrected(problem, active)
        return _Prepared(
            reason=reason,
            budget=effective_budget,
            cameras=enabled_cameras,
            active=active,
            packages=packages,
            deployed=deployed,
            used_fps=used_fps,
            problem=problem,
        )

    def _solve(self, prepared: _Prepared, build: bool) -> Proposal:
        """Search the plan of a prepared problem (reusing the plan in force when it answers
        the same problem); with `build`, build its deployments (under the change lock)."""
        reason, problem, packages = prepared.reason, prepared.problem, prepared.packages
        deployed, active, used_fps = prepared.deployed, prepared.active, prepared.used_fps
        effective_budget, enabled_cameras = prepared.budget, prepared.cameras
        current = self.registry.current_plan()
        if (
            current is not None
            and current.status == "ok"
            and current.plan is not None
            and current.problem is not None
            and _same(current.problem, problem)
        ):
            plan, new_plan = current.plan, False
        else:
            solve_started = time.perf_counter()
            plan = make_plan(
                problem,
                solver=self.settings.scheduler.solver,
                with_baselines=True,
                time_limit_s=self.settings.scheduler.time_limit_s,
            )
            self._count_solve(time.perf_counter() - solve_started)
            new_plan = True
        proposal = Proposal(
            reason=reason,
            status="ok",
            budget=effective_budget,
            cameras=enabled_cameras,
            problem=problem,
            plan=plan,
            apps=deployed,
            new_plan=new_plan,
        )
        proposal.models_in_use = {
            (packages[planned.name].archive_sha256, planned.cut_point) for planned in plan.apps
        }
        proposal.dag_key = _dag_key(plan, active, used_fps)
        if build:
            if proposal.dag_key == self._dag_key:
                proposal.deployments = self._with_new_detectors(plan, deployed)
            else:
                loaded = {
                    name: self.packages.loading_models(package)
                    for name, package in packages.items()
                }
                proposal.deployments = build_deployments(
                    plan,
                    deployed,
                    loaded,
                    self.bases,
                    used_fps,
                    self.engine.name,
                    fuse_heads=self.settings.runtime.fuse_heads,
                    update_every_frames=self.settings.runtime.event_update_every_frames,
                    precision=self.settings.runtime.openvino_precision,
                    camera_selects_frames=True,
                    streams=self.engine.frames_in_flight,
                )
        return proposal

    def _count_solve(self, seconds: float) -> None:
        with self._counters_lock:  # dry runs solve outside the change lock
            self.scheduler.solves += 1
            self.scheduler.solve_seconds_total += seconds
            self.scheduler.last_solve_seconds = seconds

    def _with_new_detectors(
        self, plan: Plan, apps: Mapping[str, DeployedApp]
    ) -> list[CameraDeployment]:
        """The running DAGs with the detector settings of `plan` (only those changed)."""
        deployments = []
        for camera in sorted({planned.camera for planned in plan.apps}):
            running = self.runtime.deployment(camera)
            if running is None:
                raise ModelError(f"camera {camera!r} has no running deployment to update")
            detectors = {
                planned.name: apps[planned.name].detector_config(
                    planned.x_vote, planned.fps, self.settings.runtime.event_update_every_frames
                )
                for planned in plan.apps
                if planned.camera == camera
            }
            deployments.append(dataclasses.replace(running, detectors=detectors))
        return deployments

    def _empty_proposal(self, reason: str, error: MainstreamError) -> Proposal:
        status: PlanStatus = "infeasible" if isinstance(error, InfeasibleError) else "error"
        return Proposal(
            reason=reason,
            status=status,
            budget=self.budget(),
            cameras=self.registry.list_cameras(enabled_only=True),
            message=str(error),
            deployments=[],
            new_plan=self._differs_from_current(status, str(error)),
        )

    def _differs_from_current(self, status: PlanStatus, message: str) -> bool:
        current = self.registry.current_plan()
        return current is None or (current.status, current.message) != (status, message)

    def deployed_app(self, app: AppRecord, manifest: Manifest) -> DeployedApp:
        return DeployedApp(
            name=app.name,
            camera=app.camera,
            manifest=manifest,
            x_vote=app.x_vote,
            weight=app.weight,
            event_overrides=dict(app.event_overrides),
            threshold=app.threshold,
            quiet_time_s=app.quiet_time_s,
            min_fps=app.min_fps,
            max_fps=app.max_fps,
        )

    def planned_value(self, reason: str) -> float | None:
        """The objective the registered apps would reach if planned now; nothing is built."""
        trial = self.propose(
            reason, self.registry.list_apps(), self.registry.list_cameras(), build=False
        )
        return trial.plan.value if trial.plan is not None else None

    # -- committing and applying ---------------------------------------------------------------

    def change_plan(
        self,
        reason: str,
        apps: Sequence[AppRecord] | None = None,
        cameras: Sequence[CameraRecord] | None = None,
        store: Callable[[Transaction], object] | None = None,
    ) -> Proposal:
        """The one way the plan in force changes: plan `apps` on `cameras` (default: the
        registered ones) and :meth:`commit` the result with the change `store` writes.

        Call under :meth:`changes`. Nothing is stored or touched when planning fails.
        """
        proposal = self.propose(
            reason,
            self.registry.list_apps() if apps is None else apps,
            self.registry.list_cameras() if cameras is None else cameras,
        )
        self.commit(proposal, store)
        return proposal

    def commit(
        self, proposal: Proposal, store: Callable[[Transaction], object] | None = None
    ) -> None:
        """Store the change (`store`) and the proposal's plan in one registry transaction,
        then make the running node match it."""
        with self.registry.transaction() as transaction:
            if store is not None:
                store(transaction)
            self.record(transaction, proposal)
        self.apply(proposal)
        self.sinks.on_inventory(
            {app.name: app.camera for app in self.registry.list_apps()},
            [camera.id for camera in self.registry.list_cameras()],
        )

    def record(self, transaction: Transaction, proposal: Proposal) -> None:
        """Store the proposal's plan as the plan in force (in the caller's transaction)."""
        if not proposal.new_plan:
            return
        transaction.record_plan(
            reason=proposal.reason,
            status=proposal.status,
            message=proposal.message,
            budget=proposal.budget,
            plan=proposal.plan,
            problem=proposal.problem,
        )

    def apply(self, proposal: Proposal) -> None:
        """Make the running node match a committed proposal: cameras, then deployments."""
        wanted = {camera.id: camera.config for camera in proposal.cameras}
        added = []  # started once their DAG's rate is set, so their first frames are chosen too
        for camera_id, config in wanted.items():
            if camera_id in self.cameras:
                self.cameras.update(config)
            else:
                added.append(self.cameras.add(config, start=False))
        try:
            if proposal.deployments is not None:
                new_cameras = {deployment.camera for deployment in proposal.deployments}
                for deployment in proposal.deployments:
                    # The camera decodes only the frames the DAG analyses (it was built for them).
                    camera = self.cameras.get(deployment.camera)
                    camera.set_analysis_rate(
                        analysis_rate(deployment), self.camera_fps(camera.config)
                    )
                    self.runtime.deploy(deployment)
                for camera_id in self.cameras.ids() + list(wanted):
                    if camera_id not in new_cameras and self.runtime.deployment(camera_id):
                        self.runtime.undeploy(camera_id)
                    if camera_id not in new_cameras and camera_id in self.cameras:
                        self.cameras.get(camera_id).set_analysis_rate(None)
                self._dag_key = proposal.dag_key
                self.packages.keep_models(proposal.models_in_use)
                self._start_measuring()
        finally:
            for camera in added:
                camera.start()
        for camera_id in set(self.cameras.ids()) - set(wanted):
            if self.runtime.deployment(camera_id):
                self.runtime.undeploy(camera_id)
            self.cameras.remove(camera_id)
        self._plan = self.registry.current_plan()
        self.feedback.plan_applied(self._plan, self.registry.list_apps())
        if proposal.new_plan:
            self.scheduler.replans += 1
            if proposal.plan is not None:
                logger.info("plan in force (%s): %s", proposal.reason, describe_plan(proposal.plan))
        if proposal.status in ("ok", "empty"):
            self.last_error = None

    def _start_measuring(self) -> None:
        stats = self.runtime.stats()
        self.runtime.reset_cost_window()
        self._measurement = _Measurement(
            since_wall=utc_now(),
            since=time.monotonic(),
            frames={name.split("/", 1)[1]: s.frames_analysed for name, s in stats.apps.items()},
        )

    # -- what the node reports -----------------------------------------------------------------

    @property
    def plan_in_force(self) -> PlanRecord | None:
        return self._plan

    def measured(self) -> dict[str, Any] | None:
        """What the runtime measured since the plan in force was applied."""
        measurement = self._measurement
        if measurement is None:
            return None
        stats = self.runtime.stats()
        seconds = max(1e-6, time.monotonic() - measurement.since)
        apps = {}
        for name, app_stats in stats.apps.items():
            app = name.split("/", 1)[1]
            analysed = app_stats.frames_analysed - measurement.frames.get(app, 0)
            apps[app] = {
                "camera": app_stats.camera,
                "fps": analysed / seconds,
                "frames_analysed": app_stats.frames_analysed,
                "events": app_stats.events,
                "active": app_stats.active,
                "last_score": app_stats.last_score,
            }
        return {
            "since": measurement.since_wall,
            "seconds": seconds,
            "cost_ms_per_s": stats.measured_cost_ms_per_s,
            "apps": apps,
        }

    def latest_jpeg(self, camera_id: str) -> bytes:
        return encode_jpeg(self._latest_frame(camera_id).image)

    def live_view_jpeg(self, camera_id: str) -> tuple[int, bytes]:
        """The camera's latest frame with each of its apps' latest score drawn on it, and the
        frame's sequence number (a live view sends a frame only once)."""
        frame = self._latest_frame(camera_id)
        lines = sorted(
            (
                ScoreLine(app=stats.app, score=stats.last_score, in_event=stats.active)
                for stats in self.runtime.stats().apps.values()
                if stats.camera == camera_id
            ),
            key=lambda line: line.app,
        )
        return frame.sequence, encode_jpeg(draw_scores(frame.image, lines))

    def _latest_frame(self, camera_id: str) -> Frame:
        record = self.registry.get_camera(camera_id)  # NotFoundError
        if not record.enabled or camera_id not in self.cameras:
            raise NotReadyError(f"camera {camera_id!r} is not running")
        frame = self.cameras.get(camera_id).latest_frame()
        if frame is None:
            raise NotReadyError(f"camera {camera_id!r} has not delivered a frame yet")
        return frame

    def camera_status(self, camera_id: str) -> dict[str, Any] | None:
        if camera_id not in self.cameras:
            return None
        try:
            return self.cameras.get(camera_id).stats().to_dict()
        except NotFoundError:
            return None


def public_url(settings: Settings) -> str:
    """The URL others reach this node's API under (links in MQTT and webhook messages):
    `api.public_url`, else the listening address; "" (paths only) on a wildcard address."""
    if settings.api.public_url:
        return settings.api.public_url.rstrip("/")
    host = settings.api.host
    if host in ("", "0.0.0.0", "::"):
        return ""
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api.port}"


def process_usage() -> dict[str, float]:
    """CPU seconds and resident memory of this process, as Prometheus' process collector
    reports them (process_cpu_seconds_total, process_resident_memory_bytes)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        rss_bytes = float(pages * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):  # no /proc: the peak is the best there is
        rss_bytes = float(usage.ru_maxrss * 1024)
    return {"cpu_seconds": usage.ru_utime + usage.ru_stime, "rss_bytes": rss_bytes}


def _same(stored: Problem, current: Problem) -> bool:
    return json.loads(stored.model_dump_json()) == json.loads(current.model_dump_json())


def _dag_key(plan: Plan, apps: Sequence[AppRecord], camera_fps: Mapping[str, float]) -> str:
    """What the running DAGs depend on: the plan's cuts and rates, the models, the cameras.

    Detector settings (threshold, vote, quiet time) are not part of it: changing only those
    keeps the DAGs and swaps the detector settings.
    """
    return json.dumps(
        {
            "plan": [
                app.model_dump(include={"name", "camera", "cut_point", "fps"}) for app in plan.apps
            ],
            "models": {app.name: app.package_sha256 for app in apps},
            "cameras": dict(camera_fps),
        },
        sort_keys=True,
    )
