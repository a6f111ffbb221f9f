"""The live runtime: camera frames -> shared-stem DAG -> detectors -> event store -> sinks.

One worker thread per camera takes frames from the camera's bounded queue (capture never waits
for inference) and runs them through that camera's current DAG. Cameras whose DAGs run the same
base (same weights fingerprint) share one worker instead: at each tick it takes the frames the
cameras have ready and runs every segment they have in common once, on the batch of their
frames (:func:`edge_runtime.dag.process_together`). With `frames_in_flight` > 1 a group has
that many workers: each takes a tick's frames and decides what they run in the cameras' frame
order, runs them at the same time as the others (an engine with several infer requests keeps
every core busy), and hands the scores to the detectors in that same order. Deploying a new
plan swaps the DAG between two frames: cameras keep streaming, and detectors of apps that stay
keep their open events. Every event transition is committed to the store before listeners
(MQTT, webhooks, WebSocket) hear of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edge_runtime.camera import Camera, CameraManager
from edge_runtime.dag import (
    AppScore,
    CameraDag,
    DagFrame,
    FrameWork,
    run_selected,
    select_together,
)
from edge_runtime.detector import DetectorConfig, EventChange, EventDetector, Transition
from edge_runtime.event_store import EventStore
from edge_runtime.source_types import Frame, encode_jpeg

logger = logging.getLogger(__name__)

EventListener = Callable[[EventChange], None]

IDLE_POLL_S = 0.2  # how long a worker waits for a frame before it looks around again
GATHER_S = 0.01  # how long a batching worker waits for the other cameras' frames of a tick


@dataclass(frozen=True)
class CameraDeployment:
    """What runs on one camera: its DAG plus each app's detector settings."""

    camera: str
    dag: CameraDag
    input_size: int
    detectors: dict[str, DetectorConfig]


@dataclass
class AppRuntimeStats:
    app: str
    camera: str
    frames_analysed: int = 0
    events: int = 0
    active: bool = False
    last_score: float | None = None


@dataclass
class RuntimeStats:
    cameras: dict[str, int] = field(default_factory=dict)  # frames processed per camera
    apps: dict[str, AppRuntimeStats] = field(default_factory=dict)
    node_ms_per_frame: dict[str, float] = field(default_factory=dict)
    measured_cost_ms_per_s: float = 0.0
    deployments: int = 0
    busy_ms_total: float = 0.0  # inference time since the runtime was made; never reset


@dataclass
class _Pipeline:
    """One worker group's frames in flight: taken and selected in order, committed in order."""

    take_lock: threading.Lock = field(default_factory=threading.Lock)
    committed: threading.Condition = field(default_factory=threading.Condition)
    next_ticket: int = 0
    next_commit: int = 0
    last_frame: dict[str, float] = field(default_factory=dict)  # camera -> monotonic time


@dataclass(frozen=True)
class _Selected:
    """A tick's frames, resized, with what each will run."""

    items: list[tuple[CameraDeployment, Frame]]
    inputs: list[DagFrame]
    work: list[FrameWork]


class EdgeRuntime:
    """Runs deployments on the cameras of a CameraManager; thread-safe deploy/undeploy."""

    def __init__(
        self,
        cameras: CameraManager,
        store: EventStore,
        listeners: list[EventListener] | None = None,
        batch_cameras: bool = True,
        event_clock: Literal["wall", "media"] = "wall",
        frames_in_flight: int = 1,
    ) -> None:
        """`event_clock` "wall": events carry wall-clock times even for files and synthetic
        cameras, whose frames count media time from 0 (their media time is anchored to the wall
        clock at their first frame, so durations stay those of the video); "media": the
        frames' own timestamps, for offline runs that compare events with a video's labels.
        `frames_in_flight`: workers per group (see the module's docstring).
        """
        self.cameras = cameras
        self.store = store
        self.listeners: list[EventListener] = list(listeners or [])
        self.batch_cameras = batch_cameras
        self._lock = threading.Lock()
        self._deployments: dict[str, CameraDeployment] = {}
        self._detectors: dict[tuple[str, str], EventDetector] = {}
        self._workers: dict[str, list[threading.Thread]] = {}
        self._pipelines: dict[str, _Pipeline] = {}
        self.frames_in_flight = max(1, frames_in_flight)
        self._stop = threading.Event()
        self._stats = RuntimeStats()
        self._busy_ms = 0.0
        self._busy_ms_total = 0.0
        self._busy_since = time.monotonic()
        self._running = False
        self.event_clock = event_clock
        self._clock_anchor: dict[str, tuple[float, float]] = {}  # camera -> (offset, last time)

    # -- deployment ----------------------------------------------------------------------------

    def deploy(self, deployment: CameraDeployment) -> None:
        """Swap in a new DAG for one camera without touching the camera itself."""
        closed: list[EventChange] = []
        with self._lock:
            wanted = set(deployment.detectors)
            for (camera, app), detector in list(self._detectors.items()):
                if camera == deployment.camera and app not in wanted:
                    closed += detector.flush()
                    del self._detectors[(camera, app)]
            for app, config in deployment.detectors.items():
                key = (deployment.camera, app)
                if key in self._detectors:
                    self._detectors[key].config = config
                else:
                    self._detectors[key] = EventDetector(app, deployment.camera, config)
                self._stats.apps.setdefault(
                    f"{deployment.camera}/{app}", AppRuntimeStats(app, deployment.camera)
                )
            for name in list(self._stats.apps):
                camera, app = name.split("/", 1)
                if camera == deployment.camera and app not in wanted:
                    del self._stats.apps[name]
            self._deployments[deployment.camera] = deployment
            self._stats.deployments += 1
            workers: list[threading.Thread] = []
            if not self._stop.is_set() and self._running:
                workers = self._new_workers(self._group_of(deployment))
        for change in closed:
            self._handle(change, None)
        for worker in workers:
            worker.start()

    def undeploy(self, camera: str) -> None:
        """Stop analysing a camera; its open events end now."""
        closed: list[EventChange] = []
        with self._lock:
            self._deployments.pop(camera, None)
            for key in [key for key in self._detectors if key[0] == camera]:
                closed += self._detectors.pop(key).flush()
            for name in [name for name in self._stats.apps if name.startswith(f"{camera}/")]:
                del self._stats.apps[name]
        for change in closed:
            self._handle(change, None)

    def deployment(self, camera: str) -> CameraDeployment | None:
        with self._lock:
            return self._deployments.get(camera)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._running = True
            self._stop.clear()
            groups = {self._group_of(deployment) for deployment in self._deployments.values()}
            workers = [worker for group in sorted(groups) for worker in self._new_workers(group)]
        for worker in workers:
            worker.start()

    def stop(self) -> None:
        """Stop the workers, then close every open event (nothing is left dangling)."""
        self._stop.set()
        with self._lock:
            workers = [worker for group in self._workers.values() for worker in group]
        for worker in workers:
            if worker.ident is not None:  # registered by a deploy that has not started it yet
                worker.join(timeout=10)
        with self._lock:
            self._workers.clear()
            self._pipelines.clear()
            self._running = False
            closed = [
                change for detector in self._detectors.values() for change in detector.flush()
            ]
        for change in closed:
            self._handle(change, None)

    def _event_time(self, frame: Frame) -> float:
        """The time events see for `frame` (caller holds the lock); see `event_clock`."""
        if self.event_clock == "media":
            return frame.timestamp
        anchor = self._clock_anchor.get(frame.camera_id)
        offset = anchor[0] if anchor is not None else frame.wall_time - frame.timestamp
        event_time = frame.timestamp + offset
        if anchor is not None and event_time < anchor[1]:  # the source started again from 0
            offset = frame.wall_time - frame.timestamp
            event_time = max(frame.timestamp + offset, anchor[1])
        self._clock_anchor[frame.camera_id] = (offset, event_time)
        return event_time

    def _group_of(self, deployment: CameraDeployment) -> str:
        """The worker a camera's frames go to: one per base when batching, else one per camera."""
        fingerprint = deployment.dag.base_fingerprint
        if self.batch_cameras and fingerprint:
            return f"base:{fingerprint}"
        return f"camera:{deployment.camera}"

    def _new_workers(self, group: str) -> list[threading.Thread]:
        """Register (call under the lock) the workers of a group that has none; the caller
        starts them."""
        if group in self._workers:
            return []
        pipeline = _Pipeline()
        self._pipelines[group] = pipeline
        workers = [
            threading.Thread(
                target=self._work,
                args=(group, pipeline),
                name=f"runtime-{group[:40]}-{index}",
                daemon=True,
            )
            for index in range(self.frames_in_flight)
        ]
        self._workers[group] = workers
        return workers

    def _leave(self, group: str) -> None:
        """The calling worker of `group` ends (call under the lock)."""
        workers = self._workers.get(group, [])
        if threading.current_thread() in workers:
            workers.remove(threading.current_thread())
        if not workers:
            self._workers.pop(group, None)
            self._pipelines.pop(group, None)

    # -- the worker loop -----------------------------------------------------------------------

    def _work(self, group: str, pipeline: _Pipeline) -> None:
        while not self._stop.is_set():
            with self._lock:
                members = {
                    camera: deployment
                    for camera, deployment in self._deployments.items()
                    if self._group_of(deployment) == group
                }
                if not members:
                    self._leave(group)
                    return
            cameras: dict[str, Camera] = {}
            for camera_id in sorted(members):
                try:
                    cameras[camera_id] = self.cameras.get(camera_id)
                except Exception:  # the camera was removed: wait for it or for a new deployment
                    continue
            if not cameras:
                time.sleep(IDLE_POLL_S)
                continue
            # Frames are taken, and what they run decided, in the cameras' order; they run
            # outside the lock, beside the other workers' frames, and commit in that order.
            with pipeline.take_lock:
                frames = self._gather(cameras)
                now = time.monotonic()
                for camera_id, _ in frames:
                    pipeline.last_frame[camera_id] = now
                for camera_id in cameras:
                    stalled = now - pipeline.last_frame.setdefault(camera_id, now) >= IDLE_POLL_S
                    if stalled and self.event_clock == "wall":  # media time stands still
                        self._advance_clocks(camera_id, time.time())
                if not frames:
                    continue
                try:
                    selected = self._select(
                        [(members[camera_id], frame) for camera_id, frame in frames]
                    )
                except Exception:
                    logger.exception("frames of %s could not be prepared", ", ".join(cameras))
                    continue
                ticket = pipeline.next_ticket
                pipeline.next_ticket += 1
            scores: list[list[AppScore]] | None = None
            elapsed_ms = 0.0
            try:
                scores, elapsed_ms = self._run(selected)
            except Exception:
                logger.exception(
                    "frames %s failed in the DAG",
                    ", ".join(f"{camera_id}#{frame.sequence}" for camera_id, frame in frames),
                )
            with pipeline.committed:
                while pipeline.next_commit != ticket:
                    pipeline.committed.wait(timeout=1.0)
                try:
                    if scores is not None:
                        self._commit(selected, scores, elapsed_ms)
                except Exception:
                    logger.exception("events of frames failed to commit")
                finally:
                    pipeline.next_commit += 1
                    pipeline.committed.notify_all()
        with self._lock:
            self._leave(group)

    def _gather(self, cameras: dict[str, Camera]) -> list[tuple[str, Frame]]:
        """The frames of one tick: at most one (the oldest queued) per camera.

        Waits up to IDLE_POLL_S for a first frame, then GATHER_S for the other cameras' frames,
        so that cameras streaming in step are analysed together.
        """
        ids = list(cameras)
        if len(ids) == 1:
            frame = cameras[ids[0]].get(timeout=IDLE_POLL_S)
            return [] if frame is None else [(ids[0], frame)]
        ready: dict[str, Frame] = {}
        deadline = time.monotonic() + IDLE_POLL_S
        turn = 0
        while not ready and not self._stop.is_set():
            for camera_id in ids:
                frame = cameras[camera_id].get(timeout=0)
                if frame is not None:
                    ready[camera_id] = frame
            if ready or time.monotonic() >= deadline:
                break
            waited = ids[turn % len(ids)]
            turn += 1
            frame = cameras[waited].get(timeout=GATHER_S)
            if frame is not None:
                ready[waited] = frame
        gather_until = time.monotonic() + GATHER_S
        for camera_id in ids:
            if ready and camera_id not in ready:
                frame = cameras[camera_id].get(timeout=max(0.0, gather_until - time.monotonic()))
                if frame is not None:
                    ready[camera_id] = frame
        return [(camera_id, ready[camera_id]) for camera_id in ids if camera_id in ready]

    def process_frame(self, deployment: CameraDeployment, frame: Frame) -> None:
        """Analyse one frame with a deployment; public so replay and tests can drive it directly."""
        self.process_frames([(deployment, frame)])

    def process_frames(self, items: list[tuple[CameraDeployment, Frame]]) -> None:
        """Analyse one frame of each of several cameras together (shared segments batched)."""
        selected = self._select(items)
        scores, elapsed_ms = self._run(selected)
        self._commit(selected, scores, elapsed_ms)

    def _select(self, items: list[tuple[CameraDeployment, Frame]]) -> _Selected:
        """Resize the frames to the base's input and decide what each runs (in frame order)."""
        import cv2  # OpenCV loads only when frames are decoded or drawn

        inputs = []
        for deployment, frame in items:
            size = deployment.input_size
            image = frame.image
            if image.shape[0] != size or image.shape[1] != size:
                image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            inputs.append(DagFrame(deployment.dag, image, frame.sequence, frame.timestamp))
        return _Selected(items, inputs, select_together(inputs))

    @staticmethod
    def _run(selected: _Selected) -> tuple[list[list[AppScore]], float]:
        """The frames' scores and the inference time it took (may run beside other ticks)."""
        started = time.perf_counter()
        scores = run_selected(selected.inputs, selected.work)
        return scores, (time.perf_counter() - started) * 1000.0

    def _commit(
        self, selected: _Selected, all_scores: list[list[AppScore]], elapsed_ms: float
    ) -> None:
        """Count the frames and feed the scores to the detectors; events go to the store."""
        changes: list[tuple[EventChange, np.ndarray]] = []
        with self._lock:
            self._busy_ms += elapsed_ms
            self._busy_ms_total += elapsed_ms
            for (deployment, frame), scores in zip(selected.items, all_scores, strict=True):
                self._stats.cameras[deployment.camera] = (
                    self._stats.cameras.get(deployment.camera, 0) + 1
                )
                event_time = self._event_time(frame)
                for score in scores:
                    detector = self._detectors.get((deployment.camera, score.app))
                    if detector is None:
                        continue
                    stats = self._stats.apps[f"{deployment.camera}/{score.app}"]
                    stats.frames_analysed += 1
                    stats.last_score = score.score
                    for change in detector.observe(event_time, frame.sequence, score.score):
                        changes.append((change, frame.image))
                    stats.active = detector.is_active
        for change, full_image in changes:
            snapshot = encode_jpeg(full_image) if change.peak_improved else None
            self._handle(change, snapshot)

    def _advance_clocks(self, camera: str, now: float) -> None:
        with self._lock:
            changes = [
                change
                for (camera_id, _), detector in self._detectors.items()
                if camera_id == camera
                for change in detector.advance_clock(now)
            ]
        for change in changes:
            self._handle(change, None)

    def _handle(self, change: EventChange, snapshot: bytes | None) -> None:
        """Store first, then publish: a listener failure never loses an event."""
        self.store.save(change.event, snapshot)
        if change.transition is Transition.END:
            with self._lock:
                stats = self._stats.apps.get(f"{change.event.camera}/{change.event.app}")
                if stats is not None:
                    stats.events += 1
                    stats.active = False
        for listener in self.listeners:
            try:
                listener(change)
            except Exception:
                logger.exception("event listener %r failed", listener)

    # -- measurements --------------------------------------------------------------------------

    def stats(self) -> RuntimeStats:
        with self._lock:
            elapsed_s = max(1e-6, time.monotonic() - self._busy_since)
            node_ms = {
                f"{camera}:{segment.name}": segment.timing.ms_per_frame
                for camera, deployment in self._deployments.items()
                for segment in deployment.dag.segments()
            } | {
                f"{camera}:{head.spec.app}": head.timing.ms_per_frame
                for camera, deployment in self._deployments.items()
                for head in deployment.dag.heads()
            }
            return RuntimeStats(
                cameras=dict(self._stats.cameras),
                apps={
                    name: AppRuntimeStats(**vars(stats)) for name, stats in self._stats.apps.items()
                },
                node_ms_per_frame=node_ms,
                measured_cost_ms_per_s=self._busy_ms / elapsed_s,
                deployments=self._stats.deployments,
                busy_ms_total=self._busy_ms_total,
            )

    def reset_cost_window(self) -> None:
        with self._lock:
            self._busy_ms = 0.0
            self._busy_since = time.monotonic()
