"""From registered apps to running DAGs: build the scheduler's problem, then the deployments.

This is the seam of the data flow (DESIGN §1): packages and cameras in the registry become a
scheduling problem; the plan that comes back becomes one CameraDeployment per camera.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from edge_runtime.dag import (
    CameraDag,
    HeadSpec,
    build_camera_dag,
    fused_heads_model,
    fused_segment_model,
    segment_model,
)
from edge_runtime.detector import DetectorConfig, model_quiet_time
from edge_runtime.engines import EngineName, EngineOptions, Precision, compile_model
from edge_runtime.runtime import CameraDeployment
from mainstream.core.bases import (
    cut_output_shape,
    discover_cut_points,
    load_package_base,
    preprocess,
)
from mainstream.core.errors import ModelError, NotFoundError
from mainstream.core.manifest import Manifest
from scheduler.problem import (
    DEFAULT_FPS_OPTIONS,
    AppSpec,
    Objective,
    Plan,
    Problem,
    Profile,
)

logger = logging.getLogger(__name__)


def profile_key(manifest: Manifest) -> str:
    """Apps share a stem only when their base weights are identical: key profiles by fingerprint."""
    return f"{manifest.base_model.name}@{manifest.base_model.weights_fingerprint[:12]}"


@dataclass(frozen=True)
class DeployedApp:
    """An app as registered on a node: its package manifest plus deployment settings."""

    name: str
    camera: str
    manifest: Manifest
    x_vote: int | Literal["auto"] = 1
    weight: float = 1.0
    event_overrides: Mapping[str, float] = field(default_factory=dict)
    threshold: float = 0.5
    quiet_time_s: float | Literal["auto"] = "auto"  # auto: model_quiet_time at the planned rate
    min_fps: float | None = None  # the planner's rates for the app: none below ...
    max_fps: float | None = None  # ... and none above

    def app_spec(self) -> AppSpec:
        """The app as the scheduler sees it, with the held-out counts behind its figures
        (stored, or derived from a version-1 package)."""
        return AppSpec.from_manifest(
            self.manifest,
            overrides=self.event_overrides,
            name=self.name,
            camera=self.camera,
            base_model=profile_key(self.manifest),
            x_vote=self.x_vote,
            weight=self.weight,
            min_fps=self.min_fps,
            max_fps=self.max_fps,
        )

    def detector_config(
        self, x_vote: int, analysis_fps: float, update_every_frames: int = 0
    ) -> DetectorConfig:
        """How this app turns scores into events, with the vote and rate its plan chose."""
        return DetectorConfig(
            threshold=self.threshold,
            x_vote=x_vote,
            quiet_time_s=self.resolved_quiet_time(analysis_fps),
            update_every_frames=update_every_frames,
        )

    def resolved_quiet_time(self, analysis_fps: float) -> float:
        """The quiet time in seconds: as set, or (auto) the event model's window."""
        if self.quiet_time_s != "auto":
            return self.quiet_time_s
        length = self.event_overrides.get(
            "event_length_s", self.manifest.event_stats.event_length_s
        )
        return model_quiet_time(length, analysis_fps)


def planner_rates(camera_fps: float) -> list[float]:
    """The analysis rates a node's planner chooses among for cameras at `camera_fps`."""
    return [fps for fps in DEFAULT_FPS_OPTIONS if fps <= camera_fps] or [camera_fps]


def problem_for(
    apps: Sequence[DeployedApp],
    profiles: Sequence[Profile],
    budget: float,
    camera_fps: Mapping[str, float],
    objective: Objective = "mean_f1",
    confidence: float | None = None,
) -> Problem:
    """The scheduling problem of a node. All cameras must share one rate F (DESIGN §4)."""
    rates = {camera_fps[app.camera] for app in apps if app.camera in camera_fps}
    missing = sorted({app.camera for app in apps} - set(camera_fps))
    if missing:
        raise NotFoundError(f"apps refer to unknown cameras: {', '.join(missing)}")
    if len(rates) > 1:
        raise ModelError(
            f"all cameras of a node must run at one frame rate for now; got {sorted(rates)}"
        )
    rate = rates.pop() if rates else 10.0
    return Problem(
        camera_fps=rate,
        budget=budget,
        objective=objective,
        confidence=confidence,
        fps_options=planner_rates(rate),
        profiles=list(profiles),
        apps=[app.app_spec() for app in apps],
    )


class BaseProvider:
    """Builds each base model once per fingerprint: from the registry of bases in `bases_dir`
    (None: none) or else from the weights a package bundles."""

    def __init__(self, bases_dir: Path | None) -> None:
        self.bases_dir = bases_dir
        self._loaded: dict[str, tuple[Any, Any]] = {}

    def get(self, manifest: Manifest, package_root: Path | None = None) -> tuple[Any, Any]:

        fingerprint = manifest.base_model.weights_fingerprint
        if fingerprint in self._loaded:
            return self._loaded[fingerprint]
        loaded = load_package_base(manifest, package_root, self.bases_dir)
        self._loaded[fingerprint] = loaded
        return loaded


def camera_dag(
    camera: str,
    camera_fps: float,
    heads: list[HeadSpec],
    base_model: Any,
    base_fingerprint: str,
    config: Any,
    engine: EngineName = "keras",
    fuse_heads: bool = True,
    precision: Precision = "f32",
    streams: int = 1,
) -> CameraDag:
    """One camera's DAG on `base_model` (of BaseConfig `config`), compiled for `engine`.

    `fuse_heads`: the last segment and the heads after it also run as one model, and with the
    Keras engine the apps that share any cut point also run in one call (see
    `edge_runtime.dag`). Keras models share their weights; an OpenVINO model holds its own
    copy, so with OpenVINO only the last segment is fused with its heads, and only when there
    are several and that copy holds no more weights than the base itself (fusing heads alone
    gained 0-12 %). `precision`: what the OpenVINO engine computes in (Keras: always f32).
    `streams`: OpenVINO requests run at once (the runtime's frames in flight).
    """

    options = EngineOptions(precision=precision, streams=streams)
    return build_camera_dag(
        camera=camera,
        camera_fps=camera_fps,
        heads=heads,
        base_model=base_model,
        base_fingerprint=base_fingerprint,
        cut_points_in_order=discover_cut_points(base_model),
        segment_model=segment_model,
        cut_shape=cut_output_shape,
        compile_fn=lambda model: compile_model(model, engine, options),
        preprocess=partial(preprocess, config),
        fuse_heads=fused_heads_model if fuse_heads and engine == "keras" else None,
        fuse_segment=segment_fusion(engine, base_model) if fuse_heads else None,
    )


def segment_fusion(engine: EngineName, base_model: Any) -> Callable[[Any, Sequence[Any]], Any]:
    """How `camera_dag` fuses the last segment with its heads on `engine`."""
    if engine == "keras":
        return fused_segment_model
    return partial(_fused_segment_within, limit=int(base_model.count_params() * 1.1))


def _fused_segment_within(segment: Any, heads: Sequence[Any], limit: int) -> Any | None:
    """The fused model of a segment with several heads when its own copy of the weights stays
    within `limit` parameters (the base's, plus the heads' last layers). None otherwise: one
    call saved per frame does not pay for a copy of the network, and heavy heads' call
    overhead is small next to their compute anyway."""
    copied = segment.count_params() + sum(head.count_params() for head in heads)
    return fused_segment_model(segment, heads) if len(heads) > 1 and copied <= limit else None


def build_deployments(
    plan: Plan,
    apps: Mapping[str, DeployedApp],
    packages: Mapping[str, Any],
    bases: BaseProvider,
    camera_fps: Mapping[str, float],
    engine: EngineName = "keras",
    fuse_heads: bool = True,
    update_every_frames: int = 0,
    precision: Precision = "f32",
    camera_selects_frames: bool = False,
    streams: int = 1,
) -> list[CameraDeployment]:
    """One deployment per camera. `packages[app]` is an open mainstream.core.package.Package.

    `fuse_heads`: see :func:`camera_dag`; `update_every_frames`: see
    :class:`edge_runtime.detector.DetectorConfig`. `camera_selects_frames`: the camera queues
    only the frames of its highest planned app rate (:meth:`Camera.set_analysis_rate` with
    :func:`analysis_rate` of the deployment, before decoding them), so each DAG is built for
    that rate and analyses every frame it gets: the same frames as a DAG built for the camera
    rate that gets them all. `streams`: see :func:`camera_dag`.
    """

    by_camera: dict[str, list[Any]] = {}
    for planned in plan.apps:
        if planned.name not in apps:
            raise NotFoundError(f"the plan names app {planned.name!r}, which is not registered")
        by_camera.setdefault(apps[planned.name].camera, []).append(planned)

    deployments = []
    for camera, planned_apps in by_camera.items():
        fingerprints = {apps[p.name].manifest.base_model.weights_fingerprint for p in planned_apps}
        if len(fingerprints) > 1:
            raise ModelError(
                f"camera {camera!r} has apps on {len(fingerprints)} different bases; run one base per camera"
            )
        first = apps[planned_apps[0].name]
        config, base_model = bases.get(first.manifest, packages[first.name].root)
        heads = []
        for planned in planned_apps:
            app = apps[planned.name]
            classes = app.manifest.app.classes
            heads.append(
                HeadSpec(
                    app=planned.name,
                    cut_point=planned.cut_point,
                    fps=planned.fps,
                    positive_index=classes.index(app.manifest.app.positive_class),
                    model=packages[planned.name].load_candidate(planned.cut_point),
                    base_fingerprint=app.manifest.base_model.weights_fingerprint,
                )
            )
        dag = camera_dag(
            camera,
            max(p.fps for p in planned_apps) if camera_selects_frames else camera_fps[camera],
            heads,
            base_model,
            first.manifest.base_model.weights_fingerprint,
            config,
            engine,
            fuse_heads,
            precision,
            streams,
        )
        detectors = {
            p.name: apps[p.name].detector_config(p.x_vote, p.fps, update_every_frames)
            for p in planned_apps
        }
        deployments.append(CameraDeployment(camera, dag, config.input_size, detectors))
    return deployments


def analysis_rate(deployment: CameraDeployment) -> float:
    """The rate a deployment's DAG takes frames at: its highest app rate."""
    return deployment.dag.root.rate
