"""The one settings object of a node.

Values come from the defaults, then a YAML file (`load_settings(path)`), then `MAINSTREAM_*`
environment variables (nested fields with `__`: `MAINSTREAM_API__PORT=9000`). Secrets (`admin_token`,
`mqtt.password`, `webhooks.secret`, `trainer.worker_token`, `api.metrics_token`,
`registry_token`) are read from the environment only; a config file that contains one is rejected,
so that secrets never end up in files that get copied around or committed.

Every way a config can be wrong becomes one :class:`ConfigError` whose `problems` name each bad
field by its path (``api.port: Input should be less than or equal to 65535``).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from edge_runtime.camera import CameraConfig
from edge_runtime.camera_policy import CameraPolicy, check_camera_url
from edge_runtime.sinks.settings import MqttSettings, WebhookSettings
from mainstream.core.errors import MainstreamError
from mainstream.core.yaml_files import describe_yaml_error
from mainstream.node.app_spec import AppCreate

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_PORT = 8780
ENV_PREFIX = "MAINSTREAM_"
SECRET_FIELDS: tuple[str, ...] = (
    "admin_token",
    "mqtt.password",
    "webhooks.secret",
    "trainer.worker_token",
    "registry_token",
    "api.metrics_token",
)
"""Fields (dotted paths) that may only come from the environment."""

_NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def default_data_dir() -> Path:
    """The user's data directory (XDG), e.g. ~/.local/share/mainstream."""
    xdg = os.environ.get("XDG_DATA_HOME")
    root = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return root / "mainstream"


def default_node_name() -> str:
    """The host name, reduced to the characters a node name may hold (MQTT topics use it)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()).strip("-.") or "node"
    return name[:64]


class ConfigError(MainstreamError, ValueError):
    """A config file cannot be read or does not describe valid settings."""

    http_status = 422
    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"invalid configuration in {source}:\n{listing}")


class ApiSettings(BaseModel):
    """The REST API: where it listens, what is open without a token, upload limits."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    host: str = Field(default="127.0.0.1", description="Address to listen on")
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, description="Port to listen on")
    open_health: bool = Field(
        default=True, description="Serve /api/health/* without a token (for load balancers)"
    )
    metrics_access: Literal["token", "loopback", "open"] = Field(
        default="token",
        description="Who may scrape /metrics: token: an API token or `metrics_token`; "
        "loopback: also anyone on this machine (127.0.0.0/8, ::1) without a token; "
        "open: anyone without a token",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="A token that reads /metrics and nothing else (for Prometheus); from the "
        "environment only (MAINSTREAM_API__METRICS_TOKEN)",
    )
    max_concurrent_reads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Reads (GETs and dry runs) worked on at once; more wait their turn, so "
        "that API load cannot slow detection (live streams, health checks and downloads "
        "are not counted)",
    )
    max_live_views: int = Field(
        default=8,
        ge=0,
        le=256,
        description="Live camera views (MJPEG streams) served at once; more get 429",
    )
    max_upload_bytes: int = Field(
        default=256 * MiB, gt=0, description="Largest package upload accepted"
    )
    max_json_bytes: int = Field(
        default=1 * MiB,
        gt=0,
        description="Largest request body of every route but uploads; larger ones get 413 "
        "before they are read",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest wait for the next part of a request body; a client that sends "
        "slower gets 408 and the connection is closed",
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="URL others reach this API under, for links in MQTT and webhook messages; "
        "default: http://<host>:<port> (paths only when listening on 0.0.0.0 or ::)",
    )

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_is_long(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (a guessable token opens /metrics)")
        return token

    @model_validator(mode="before")
    @classmethod
    def _open_metrics_became_metrics_access(cls, values: Any) -> Any:
        """Version 0.1 configs said `open_metrics: true`; it is `metrics_access: open` now."""
        if not isinstance(values, Mapping) or "open_metrics" not in values:
            return values
        moved = {key: value for key, value in values.items() if key != "open_metrics"}
        if "metrics_access" not in moved:
            opened = values["open_metrics"]
            if not isinstance(opened, bool):
                opened = str(opened).strip().lower() in ("1", "true", "yes", "on")
            moved["metrics_access"] = "open" if opened else "token"
            logger.warning(
                "config: api.open_metrics is now api.metrics_access (%s); please move it",
                moved["metrics_access"],
            )
        return moved


class RuntimeSettings(BaseModel):
    """How the node runs its apps: engine, compute budget and how profiles are measured."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    engine: Literal["auto", "keras", "openvino"] = Field(
        default="auto",
        description="Inference engine; auto: openvino on x86 when installed (the fastest "
        "correct engine there), keras otherwise; chosen once at start-up (shown in /api/stats)",
    )
    openvino_precision: Literal["f32", "bf16", "f16"] = Field(
        default="f32",
        description="What the openvino engine computes in: f32 matches Keras; bf16/f16 are "
        "faster where the CPU has them (bench/runtime.py measures speed and score change)",
    )
    frames_in_flight: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="Frames analysed at once per base (OpenVINO: one stream and infer request "
        "each, on a share of the threads); None: 2 with openvino on 2+ cores, else 1",
    )
    budget_ms_per_s: float | None = Field(
        default=None,
        gt=0,
        description="Compute budget in ms per second; None: derived from `utilisation`",
    )
    utilisation: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Share of the inference streams' time (one per frame in flight) the "
        "derived budget may use",
    )
    objective: Literal["mean_f1", "min_f1"] = Field(
        default="mean_f1", description="What the plan maximises: mean or worst app event F1"
    )
    default_camera_fps: float = Field(
        default=10.0, gt=0, description="Camera rate F assumed when a camera does not say"
    )
    profile_repeats: int = Field(
        default=7, ge=1, le=1000, description="Timed calls per cut point when measuring"
    )
    tf_intra_op_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="TensorFlow threads per op; None: TensorFlow's default (1 suits 2-core boxes)",
    )
    tf_inter_op_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="TensorFlow ops run at once; None: TensorFlow's default",
    )
    batch_cameras: bool = Field(
        default=True,
        description="Run a shared segment once on the frames of all cameras on the same base",
    )
    fuse_heads: bool = Field(
        default=True,
        description="On the frames they all analyse, run the apps of the deepest cut point "
        "in one call with the base segment before them, and (Keras engine) the apps that "
        "share any cut point in one call; OpenVINO copies weights, so it fuses only several "
        "light heads",
    )
    event_update_every_frames: int = Field(
        default=0,
        ge=0,
        description="Also send an update of an open event every this many analysed frames "
        "(0: only when its peak score improves)",
    )
    replan: bool = Field(
        default=True,
        description="Re-plan with the measured cost when the runtime runs over the budget "
        "(and grow back when there is headroom)",
    )
    replan_interval_s: float = Field(
        default=10.0, gt=0, description="Length of one measurement window for re-planning"
    )
    replan_min_interval_s: float = Field(
        default=60.0, ge=0, description="Least time between two re-plans"
    )
    replan_windows: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Consecutive windows out of the band before re-planning",
    )
    replan_over_margin: float = Field(
        default=1.1, ge=1, description="Re-plan down when measured cost > this x budget"
    )
    replan_headroom_margin: float = Field(
        default=0.7, gt=0, lt=1, description="Try to grow when measured cost < this x budget"
    )


class SchedulerSettings(BaseModel):
    """How plans are searched: which solver, and how long one plan may take."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    solver: Literal["auto", "exact", "greedy", "milp"] = Field(
        default="auto",
        description="auto: exact search, with the MILP and greedy where they help; or force one",
    )
    time_limit_s: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="Longest one plan search may take; the plan found by then is used, "
        "with its proven optimality gap",
    )
    max_dry_run_apps: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Most apps one dry run may add; larger what-if requests get 422",
    )


class RetentionSettings(BaseModel):
    """How long events and their snapshots are kept; a background task prunes the rest."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    days: float | None = Field(
        default=30.0,
        gt=0,
        description="Delete events that ended more than this many days ago (null: however old)",
    )
    max_mb_per_app: float | None = Field(
        default=None,
        gt=0,
        description="Keep at most this many MB of each app's events, the newest (snapshots "
        "and clips plus about 128 bytes per event); null: no cap",
    )
    interval_s: float = Field(
        default=600.0, ge=1, le=86_400, description="How often pruning runs (also once at start)"
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="Events deleted per transaction; the runtime writes between batches",
    )


class ClipsSettings(BaseModel):
    """A short video (WebM, VP8) around each event, from a ring buffer of recent frames."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(default=True, description="Record a clip of each event")
    pre_s: float = Field(
        default=3.0, ge=0, le=30, description="Seconds of video before the event's start"
    )
    post_s: float = Field(
        default=3.0, ge=0, le=60, description="Seconds of video after the event's end"
    )
    max_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Longest clip: a longer event's clip ends this long after the clip's start",
    )
    fps: float = Field(
        default=5.0,
        gt=0,
        le=30,
        description="Frame rate of clips (and of the pre-roll buffer); each frame is encoded "
        "once per open event, so a lower rate costs less CPU",
    )
    buffer_mb: float = Field(
        default=32.0,
        gt=0,
        le=4096,
        description="Most memory (MiB) the pre-roll buffer of one camera takes (raw frames: "
        "640x480 at 5 fps for 3 s is 16 frames, 14.1 MiB); a larger camera gets a shorter "
        "pre-roll",
    )


class PlanningSettings(BaseModel):
    """How sure the plan must be of the apps' per-frame figures (estimates with uncertainty)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    confidence: float | None = Field(
        default=None,
        ge=0.5,
        lt=1,
        description="None: plan on the posterior means of each candidate's per-frame recall "
        "and false-positive rate; e.g. 0.9: on pessimistic quantiles (recall's 10 %, the "
        "false-positive rate's 90 %), for plans that hold with that confidence",
    )


class FeedbackSettings(BaseModel):
    """How operators' marks on events (true / false) change an app's estimates and the plan."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(
        default=True,
        description="Plan with the per-frame FPR that the marks on each app's events imply",
    )
    min_reviews: int = Field(
        default=5,
        ge=1,
        description="Marks an app needs (on events of its current package and threshold) "
        "before its estimate is used",
    )
    replan_delta: float = Field(
        default=0.02,
        gt=0,
        le=1,
        description="Re-plan at once when a mark moves an app's predicted F1 by this much",
    )
    prior_strength: float = Field(
        default=4.0,
        gt=0,
        le=1000,
        description="Weight, in marks, of the package's predicted precision in the estimate "
        "(the Beta prior's pseudo-count)",
    )


class TrainerSettings(BaseModel):
    """Where training jobs run: in a child process of this node, or on a remote trainer worker."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: Literal["local", "remote"] = Field(
        default="local", description="local: a child process here; remote: `worker_url`"
    )
    worker_url: str | None = Field(
        default=None, description="Base URL of a `mainstream trainer worker` (mode remote)"
    )
    worker_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the worker expects; from the environment only "
        "(MAINSTREAM_TRAINER__WORKER_TOKEN)",
    )
    max_concurrent_jobs: int = Field(
        default=1, ge=1, le=16, description="Training jobs run at once; more wait in a queue"
    )
    datasets_dir: Path | None = Field(
        default=None,
        description="Folder that dataset references are resolved in; default: <data_dir>/datasets",
    )

    @model_validator(mode="after")
    def _remote_needs_url(self) -> TrainerSettings:
        if self.mode == "remote" and not self.worker_url:
            raise ValueError("mode 'remote' needs worker_url")
        if self.worker_url and not self.worker_url.lower().startswith(("http://", "https://")):
            raise ValueError(f"worker_url {self.worker_url!r} is not an http(s) URL")
        return self


class NodeConfig(BaseModel):
    """The fields of a node's configuration, as a config file holds them.

    :class:`Settings` adds reading the environment; this class checks a file alone.
    """

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, title="Mainstream node configuration"
    )

    data_dir: Path = Field(
        default_factory=default_data_dir, description="Where everything is stored"
    )
    node_name: str = Field(
        default_factory=default_node_name,
        pattern=_NODE_NAME_PATTERN,
        description="Name of this node in events and topics",
    )
    role: Literal["node", "registry"] = Field(
        default="node",
        description="node: API + cameras + runtime; registry: API and package store only "
        "(a fleet's shared registry)",
    )
    registry_url: str | None = Field(
        default=None,
        description="Base URL of the fleet's shared registry (`mainstream serve --role "
        "registry`); packages this node lacks are pulled from it when an app needs them",
    )
    registry_token: SecretStr | None = Field(
        default=None,
        description="Viewer token of the shared registry; from the environment only "
        "(MAINSTREAM_REGISTRY_TOKEN)",
    )
    api: ApiSettings = Field(default_factory=ApiSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    planning: PlanningSettings = Field(default_factory=PlanningSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    clips: ClipsSettings = Field(default_factory=ClipsSettings)
    camera_policy: CameraPolicy = Field(
        default_factory=CameraPolicy,
        description="What camera URLs and FFmpeg options are accepted",
    )
    cameras: list[CameraConfig] = Field(
        default_factory=list,
        description="Cameras registered at start when the registry does not have them yet",
    )
    apps: list[AppCreate] = Field(
        default_factory=list,
        description="Apps this file declares (name, package, version, camera, weight, x_vote, "
        "threshold, quiet_time_s, event_overrides, enabled, min_fps, max_fps): registered or brought back to "
        "these values at every start, and not changed or deleted over the API",
    )
    default_camera: CameraConfig | None = Field(
        default=None,
        description="A camera registered at start when missing, and given to apps that name "
        "none (say `{id: test, url: 'synthetic://?fps=10'}` to try apps without hardware)",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="An admin bearer token; from the environment only (MAINSTREAM_ADMIN_TOKEN)",
    )

    @model_validator(mode="before")
    @classmethod
    def _solver_moved_to_scheduler(cls, values: Any) -> Any:
        """Version 0.1 configs said `runtime.solver`; it is `scheduler.solver` now."""
        if not isinstance(values, Mapping):
            return values
        runtime = values.get("runtime")
        if not isinstance(runtime, Mapping) or "solver" not in runtime:
            return values
        moved = dict(values)
        moved["runtime"] = {key: value for key, value in runtime.items() if key != "solver"}
        scheduler = values.get("scheduler")
        scheduler = dict(scheduler) if isinstance(scheduler, Mapping) else {}
        if "solver" not in scheduler:
            scheduler["solver"] = runtime["solver"]
            logger.warning(
                "config: runtime.solver is now scheduler.solver (%s); please move it",
                runtime["solver"],
            )
        moved["scheduler"] = scheduler
        return moved

    @field_validator("registry_url")
    @classmethod
    def _registry_url_is_http(cls, url: str | None) -> str | None:
        if url is not None and not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"registry_url {url!r} is not an http(s) URL")
        return url.rstrip("/") if url else None

    @field_validator("cameras")
    @classmethod
    def _unique_camera_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        ids = [camera.id for camera in cameras]
        duplicates = sorted({camera_id for camera_id in ids if ids.count(camera_id) > 1})
        if duplicates:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(duplicates)}")
        return cameras

    @field_validator("apps")
    @classmethod
    def _unique_app_names(cls, apps: list[AppCreate], info: ValidationInfo) -> list[AppCreate]:
        names = [app.name for app in apps]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"app names must be unique; repeated: {', '.join(duplicates)}")
        if apps and info.data.get("role") == "registry":
            raise ValueError("a shared registry (role registry) runs no apps")
        return apps

    @field_validator("cameras", "default_camera")
    @classmethod
    def _cameras_follow_the_policy(
        cls, value: list[CameraConfig] | CameraConfig | None, info: ValidationInfo
    ) -> list[CameraConfig] | CameraConfig | None:
        policy, data_dir = info.data.get("camera_policy"), info.data.get("data_dir")
        if policy is None or data_dir is None:  # already invalid: reported on its own
            return value
        in_force = policy.with_file_dirs(data_dir)
        cameras = value if isinstance(value, list) else [value] if value is not None else []
        problems = []
        for camera in cameras:
            try:
                check_camera_url(camera.url, in_force, ffmpeg_options=camera.ffmpeg_options)
            except MainstreamError as error:
                problems.append(f"camera {camera.id!r}: {error}")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    def camera_policy_in_force(self) -> CameraPolicy:
        """The camera policy with its file folders made absolute (default: <data_dir>/media)."""
        return self.camera_policy.with_file_dirs(self.data_dir)

    def check_camera(self, config: CameraConfig) -> None:
        """Raise PolicyError when the camera policy refuses this camera's URL or options."""
        check_camera_url(
            config.url, self.camera_policy_in_force(), ffmpeg_options=config.ffmpeg_options
        )

    @property
    def bases_dir(self) -> Path:
        """Registered base models: `<fingerprint>.weights.h5` plus `<fingerprint>.json`."""
        return self.data_dir / "bases"

    @property
    def blobs_dir(self) -> Path:
        """Uploaded packages, content-addressed: `<sha256>.mpkg`."""
        return self.data_dir / "blobs"

    @property
    def cache_dir(self) -> Path:
        """Extracted packages; can be deleted at any time while the node is stopped."""
        return self.data_dir / "cache"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "registry.db"

    @property
    def events_path(self) -> Path:
        return self.data_dir / "events.db"

    @property
    def clips_temp_dir(self) -> Path:
        """Clips being written; emptied at start (a clip is stored only once complete)."""
        return self.data_dir / "clips-partial"

    def startup_cameras(self) -> list[CameraConfig]:
        """The configured cameras, then the default camera unless one has its id."""
        cameras = list(self.cameras)
        if self.default_camera is not None and self.default_camera.id not in {
            camera.id for camera in cameras
        }:
            cameras.append(self.default_camera)
        return cameras


class Settings(BaseSettings, NodeConfig):
    """Root configuration of a Mainstream node: a NodeConfig that also reads MAINSTREAM_*."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", allow_inf_nan=False
    )


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, recursing into nested mappings."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def validation_problems(error: ValidationError) -> list[str]:
    """One line per error: `field.path[index]: message`, without pydantic's "Value error, "."""
    problems = []
    for item in error.errors():
        location = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"]
        ).lstrip(".")
        message = str(item["msg"]).removeprefix("Value error, ").replace("\n", " ")
        problems.append(f"{location or '(root)'}: {message}")
    return problems


def _has_path(document: Mapping[str, Any], dotted: str) -> bool:
    """Whether `document` holds a (non-null) value at `a.b.c`."""
    head, _, rest = dotted.partition(".")
    value = document.get(head)
    if not rest:
        return value is not None
    return isinstance(value, Mapping) and _has_path(value, rest)


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML (or JSON) config file; secrets in it are refused."""
    source = str(path)
    if not path.is_file():
        raise ConfigError(source, ["(file): no such file"])
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(
            source, [f"(file): not valid YAML: {describe_yaml_error(error, source)}"]
        ) from error
    except UnicodeDecodeError as error:
        raise ConfigError(source, [f"(file): not UTF-8 text: {error}"]) from error
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(source, [f"(root): expected a mapping, got {type(document).__name__}"])
    secrets = [name for name in SECRET_FIELDS if _has_path(document, name)]
    if secrets:
        raise ConfigError(
            source,
            [
                f"{name}: secrets are read from the environment only "
                f"({ENV_PREFIX}{name.replace('.', '__').upper()}); remove it from the file"
                for name in secrets
            ],
        )
    return document


def load_settings(
    path: Path | str | None = None, *, environment: bool = True, **overrides: Any
) -> Settings:
    """Settings from defaults, the YAML file at `path`, the environment, then `overrides`.

    With `environment=False` the MAINSTREAM_* variables are ignored (to check a file alone).
    """
    file_values = read_config_file(Path(path)) if path is not None else {}
    source = str(path) if path is not None else "the environment"
    try:
        from_environment = EnvSettingsSource(Settings)() if environment else {}
        values = _merge(_merge(file_values, from_environment), overrides)
        if not environment:
            # Validated without the environment; constructing must not read it either.
            return Settings.model_construct(**dict(NodeConfig.model_validate(values)))
        return Settings(**values)
    except ValidationError as error:
        raise ConfigError(source, validation_problems(error)) from error
    except ValueError as error:  # the environment source fails on malformed JSON values
        raise ConfigError(source, [f"(environment): {error}"]) from error


def settings_json_schema() -> dict[str, Any]:
    """The JSON schema of the config file (served at /api/config/schema)."""
    schema = NodeConfig.model_json_schema()
    for dotted in SECRET_FIELDS:  # environment only, never in the file
        *parents, name = dotted.split(".")
        properties = schema["properties"]
        for parent in parents:
            reference = properties[parent].get("$ref", "")
            properties = schema["$defs"][reference.rsplit("/", 1)[-1]]["properties"]
        properties.pop(name, None)
    return schema
