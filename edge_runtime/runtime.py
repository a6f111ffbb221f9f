"""The live runtime: camera frames -> shared-stem DAG -> detectors -> event store -> sinks.

One worker thread per camera takes frames from the camera's bounded queue (capture never waits
for inference) and runs them through that camera's current DAG. Deploying a new plan swaps the
DAG between two frames: cameras keep streaming, and detectors of apps that stay keep their open
events. Every event transition is committed to the store before listeners (MQTT, webhooks,
WebSocket) hear of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.camera import CameraManager
from edge_runtime.dag import CameraDag
from edge_runtime.detector import DetectorConfig, EventChange, EventDetector, Transition
from edge_runtime.event_store import EventStore
from edge_runtime.sources import Frame, encode_jpeg

logger = logging.getLogger(__name__)

EventListener = Callable[[EventChange], None]


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


class EdgeRuntime:
    """Runs deployments on the cameras of a CameraManager; thread-safe deploy/undeploy."""

    def __init__(
        self,
        cameras: CameraManager,
        store: EventStore,
        listeners: list[EventListener] | None = None,
    ) -> None:
        self.cameras = cameras
        self.store = store
        self.listeners: list[EventListener] = list(listeners or [])
        self._lock = threading.Lock()
        self._deployments: dict[str, CameraDeployment] = {}
        self._detectors: dict[tuple[str, str], EventDetector] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._stats = RuntimeStats()
        self._busy_ms = 0.0
        self._busy_since = time.monotonic()
        self._running = False

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
            start_worker = (
                not self._stop.is_set() and self._running and deployment.camera not in self._workers
            )
        for change in closed:
            self._handle(change, None)
        if start_worker:
            self._start_worker(deployment.camera)

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
            cameras = list(self._deployments)
        for camera in cameras:
            self._start_worker(camera)

    def stop(self) -> None:
        """Stop the workers, then close every open event (nothing is left dangling)."""
        self._stop.set()
        for worker in list(self._workers.values()):
            worker.join(timeout=10)
        self._workers.clear()
        with self._lock:
            self._running = False
            closed = [
                change for detector in self._detectors.values() for change in detector.flush()
            ]
        for change in closed:
            self._handle(change, None)

    def _start_worker(self, camera: str) -> None:
        worker = threading.Thread(
            target=self._work, args=(camera,), name=f"runtime-{camera}", daemon=True
        )
        self._workers[camera] = worker
        worker.start()

    # -- the per-camera loop -------------------------------------------------------------------

    def _work(self, camera_id: str) -> None:
        while not self._stop.is_set():
            deployment = self.deployment(camera_id)
            if deployment is None:
                break
            try:
                camera = self.cameras.get(camera_id)
            except Exception:  # the camera was removed: wait for it or for a new deployment
                time.sleep(0.2)
                continue
            frame = camera.get(timeout=0.2)
            if frame is None:
                self._advance_clocks(camera_id, time.time())
                continue
            try:
                self.process_frame(deployment, frame)
            except Exception:
                logger.exception("camera %s: frame %d failed in the DAG", camera_id, frame.sequence)
        with self._lock:
            self._workers.pop(camera_id, None)

    def process_frame(self, deployment: CameraDeployment, frame: Frame) -> None:
        """Analyse one frame with a deployment; public so replay and tests can drive it directly."""
        import cv2

        size = deployment.input_size
        image = frame.image
        if image.shape[0] != size or image.shape[1] != size:
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        started = time.perf_counter()
        scores = deployment.dag.process(image, frame.sequence, frame.timestamp)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        changes: list[tuple[EventChange, np.ndarray]] = []
        with self._lock:
            self._busy_ms += elapsed_ms
            self._stats.cameras[deployment.camera] = (
                self._stats.cameras.get(deployment.camera, 0) + 1
            )
            for score in scores:
                detector = self._detectors.get((deployment.camera, score.app))
                if detector is None:
                    continue
                stats = self._stats.apps[f"{deployment.camera}/{score.app}"]
                stats.frames_analysed += 1
                stats.last_score = score.score
                for change in detector.observe(frame.timestamp, frame.sequence, score.score):
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
            )

    def reset_cost_window(self) -> None:
        with self._lock:
            self._busy_ms = 0.0
            self._busy_since = time.monotonic()
