"""The operations of a node, shared by the REST API and the CLI.

Routes and commands only parse input and call these; every rule lives here. Changes follow the
node's propose / commit / apply steps (:mod:`mainstream.node`), so a change that cannot be
carried out (an infeasible plan, an unusable package) raises and leaves the registry and the
running node as they were.

Token helpers (:func:`create_token`, :func:`verify_token`) need only a registry, so
`mainstream token create` works without starting a node.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge_runtime.camera import CameraConfig
from edge_runtime.detector import EventRecord
from edge_runtime.event_store import EventQuery
from mainstream.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    InvalidParameterError,
    MainstreamError,
    ModelError,
    NotFoundError,
    PackageError,
    WeakCandidatesError,
)
from mainstream.manifest import (
    MAX_EVENT_LENGTH_S,
    WEAK_CANDIDATE_ADVICE,
    BaseModelInfo,
    Manifest,
    weak_candidates,
)
from mainstream.package import read_package, verify_package
from mainstream.registry import (
    AppRecord,
    BaseRecord,
    CameraRecord,
    PackageRecord,
    PlanRecord,
    Registry,
    Role,
    TokenRecord,
    XVote,
    utc_now,
)
from mainstream.settings import Settings, validation_problems
from scheduler.problem import AppPlan, Objective, Plan

if TYPE_CHECKING:
    from mainstream.fleet import RegistryClient
    from mainstream.node import Node

logger = logging.getLogger(__name__)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
TOKEN_PREFIX = "mst_"
MAX_EVENT_PAGE = 1000
MAX_ROW_NUMBER = 2**63 - 1  # SQLite's largest INTEGER: ids, versions and offsets beyond it fail
PackageVersion = Annotated[int, Field(ge=1, le=MAX_ROW_NUMBER)] | Literal["latest"]
# The event model's work grows with vote X times the frames in an event window; beyond these
# the scheduler would spend minutes (or all memory) on one request, so the API refuses them.
MAX_X_VOTE = 100
MAX_WEIGHT = 1e6  # beyond it the weighted objective loses all precision


class TooLargeError(MainstreamError):
    """An upload is larger than the node accepts."""

    http_status = 413
    exit_code = 2


class InvalidRequestError(MainstreamError, ValueError):
    """A request body does not validate; `problems` name each bad field by its path."""

    http_status = 422
    exit_code = 2

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"invalid {what}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# Requests


class EventOverrides(BaseModel):
    """Event statistics that replace the package's measured ones for this deployment."""

    model_config = ConfigDict(extra="forbid")

    event_length_s: float | None = Field(default=None, gt=0, le=MAX_EVENT_LENGTH_S)
    event_frequency: float | None = Field(default=None, gt=0, lt=1)
    correlation: float | None = Field(default=None, ge=0, le=1)

    def values(self) -> dict[str, float]:
        return {key: value for key, value in self.model_dump().items() if value is not None}


class AppCreate(BaseModel):
    """Deploy a registered package as an app on a camera."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Unique app name on this node")
    package: str | None = Field(
        default=None, description="App name of the package to run; default: `name`"
    )
    version: PackageVersion = Field(default="latest", description="Package version")
    camera: str | None = Field(
        default=None, description="Camera id; default: the node's default camera"
    )
    event_overrides: EventOverrides = Field(default_factory=EventOverrides)
    weight: float = Field(
        default=1.0, gt=0, le=MAX_WEIGHT, description="Weight of the app's F1 in the plan"
    )
    x_vote: XVote = Field(default=1, description="Consecutive fires that open an event, or auto")
    threshold: float = Field(default=0.5, ge=0, le=1, description="Score that counts as a fire")
    quiet_time_s: float = Field(default=2.0, ge=0, description="Seconds without fire to end")
    enabled: bool = True

    @field_validator("x_vote")
    @classmethod
    def _positive_vote(cls, value: XVote) -> XVote:
        return _positive_vote(value)


class AppUpdate(BaseModel):
    """Change an app; fields left out keep their values."""

    model_config = ConfigDict(extra="forbid")

    package: str | None = None
    version: PackageVersion | None = None
    camera: str | None = None
    event_overrides: EventOverrides | None = None
    weight: float | None = Field(default=None, gt=0, le=MAX_WEIGHT)
    x_vote: XVote | None = None
    threshold: float | None = Field(default=None, ge=0, le=1)
    quiet_time_s: float | None = Field(default=None, ge=0)
    enabled: bool | None = None

    @field_validator("x_vote")
    @classmethod
    def _positive_vote(cls, value: XVote | None) -> XVote | None:
        return None if value is None else _positive_vote(value)


def _positive_vote(value: XVote) -> XVote:
    if isinstance(value, int) and not 1 <= value <= MAX_X_VOTE:
        raise ValueError(f"x_vote must be 1 to {MAX_X_VOTE} or 'auto'")
    return value


class CameraCreate(CameraConfig):
    """A camera to register: its config plus whether it runs."""

    enabled: bool = True

    def camera_config(self) -> CameraConfig:
        return CameraConfig(**self.model_dump(exclude={"enabled"}))


class DryRunRequest(BaseModel):
    """Plan the node with some apps added or removed, or another budget, deploying nothing."""

    model_config = ConfigDict(extra="forbid")

    add_apps: list[AppCreate] = Field(default_factory=list)
    remove_apps: list[str] = Field(default_factory=list)
    budget: float | None = Field(default=None, gt=0, description="ms per second")
    objective: Objective | None = None


# ---------------------------------------------------------------------------------------------
# Answers


class UploadResult(BaseModel):
    package: PackageRecord
    created: bool


class PackageSummary(BaseModel):
    """A package without its whole manifest (for listings)."""

    app: str
    version: int
    sha256: str
    latest: bool
    size_bytes: int
    uploaded_at: datetime
    base_model: str
    base_fingerprint: str
    classes: list[str]
    positive_class: str
    cut_points: list[str]

    @classmethod
    def of(cls, record: PackageRecord) -> PackageSummary:
        manifest = record.manifest
        return cls(
            app=record.app,
            version=record.version,
            sha256=record.sha256,
            latest=record.latest,
            size_bytes=record.size_bytes,
            uploaded_at=record.uploaded_at,
            base_model=manifest.base_model.name,
            base_fingerprint=record.base_fingerprint,
            classes=manifest.app.classes,
            positive_class=manifest.app.positive_class,
            cut_points=[candidate.cut_point for candidate in manifest.candidates],
        )


class AppView(BaseModel):
    app: AppRecord
    planned: AppPlan | None = None
    runtime: dict[str, Any] | None = None


class CameraView(BaseModel):
    camera: CameraRecord
    status: dict[str, Any] | None = None
    apps: list[str] = Field(default_factory=list)


class ScheduleView(BaseModel):
    status: Literal["ok", "empty", "infeasible", "error", "none"]
    id: int | None = None
    created_at: datetime | None = None
    reason: str = ""
    message: str = ""
    budget: float | None = None
    plan: Plan | None = None
    measured: dict[str, Any] | None = None


class DryRunResult(BaseModel):
    status: Literal["ok", "empty"]
    budget: float
    plan: Plan | None
    current_value: float | None = Field(description="Objective value of the plan in force")


class EventView(BaseModel):
    id: str
    app: str
    camera: str
    start_time: float
    end_time: float | None
    open: bool
    peak_score: float
    peak_frame: int
    frames_analysed: int
    frames_fired: int

    @classmethod
    def of(cls, event: EventRecord) -> EventView:
        return cls(open=event.end_time is None, **event.__dict__)


class EventPage(BaseModel):
    items: list[EventView]
    limit: int
    offset: int
    next_offset: int | None


@dataclass(frozen=True)
class Principal:
    """Who made a request: a token's name and role."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# ---------------------------------------------------------------------------------------------
# Tokens (registry only)


def create_token(
    registry: Registry, role: Role, name: str | None = None
) -> tuple[TokenRecord, str]:
    """A new bearer token; the secret is returned once and only its hash is stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    label = name or f"{role}-{utc_now().strftime('%Y%m%d%H%M%S')}"
    with registry.transaction() as transaction:
        record = transaction.add_token(label, role, secret)
    return record, secret


def verify_token(
    registry: Registry, authorization: str | None, admin_secret: str | None = None
) -> Principal:
    """The principal of an `Authorization: Bearer ...` header; AuthError when missing or wrong."""
    if not authorization:
        raise AuthError("this endpoint needs a bearer token (Authorization: Bearer <token>)")
    scheme, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    if admin_secret and hmac.compare_digest(secret.encode(), admin_secret.encode()):
        return Principal(name="environment admin token", role="admin")
    token = registry.token_for_secret(secret)
    if token is None:
        raise AuthError("unknown or revoked token")
    return Principal(name=token.name, role=token.role)


def require_role(principal: Principal, role: Role) -> None:
    if role == "admin" and not principal.is_admin:
        raise ForbiddenError(f"token {principal.name!r} is a viewer token; this needs an admin")


# ---------------------------------------------------------------------------------------------
# Times


def parse_time(field: str, value: str | float | None) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 date-time (UTC when no zone)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameterError(
            field, value, "seconds since the epoch or an ISO 8601 date-time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


# ---------------------------------------------------------------------------------------------
# Services


class Services:
    """Every operation on a node; the API and the CLI call these and nothing else."""

    def __init__(self, node: Node) -> None:
        self.node = node

    @property
    def registry(self) -> Registry:
        return self.node.registry

    @property
    def settings(self) -> Settings:
        return self.node.settings

    # -- packages ------------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        """Where uploads are written before they are checked (same disk as the blob store)."""
        folder = self.settings.data_dir / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def upload_package(
        self,
        source: Path | bytes,
        *,
        version: int | None = None,
        expected_app: str | None = None,
        load_models: bool = True,
        force: bool = False,
    ) -> UploadResult:
        """Verify an M-Package completely, then store it as the next version of its app.

        Nothing is stored unless every check passes: archive and manifest checks, checksums,
        every model loaded in Keras safe mode, and a base the node knows or that the package
        bundles (bundled weights must have the fingerprint the manifest claims). A package
        pulled from the shared registry keeps the registry's `version` and must be of the
        `expected_app`. A package with a candidate no better than the majority class is
        refused unless `force` (it would be planned on figures that promise nothing).
        """
        if isinstance(source, bytes):
            with tempfile.NamedTemporaryFile(
                dir=self.staging_dir(), suffix=".mpkg", delete=False
            ) as handle:
                handle.write(source)
            path = Path(handle.name)
            try:
                return self.upload_package(
                    path,
                    version=version,
                    expected_app=expected_app,
                    load_models=load_models,
                    force=force,
                )
            finally:
                path.unlink(missing_ok=True)

        path = Path(source)
        if not path.is_file():
            raise PackageError(f"{str(path)!r} is not a file")
        size = path.stat().st_size
        limit = self.settings.api.max_upload_bytes
        if size > limit:
            raise TooLargeError(f"the package has {size} bytes; this node accepts {limit} at most")
        if size == 0:
            raise PackageError("the upload is empty")
        # load_models=False only for a package whose models this node's own trainer process
        # has just loaded (training jobs): the API process then needs no TensorFlow.
        report = verify_package(path, load_models=load_models)
        manifest, sha256 = report.manifest, report.archive_sha256
        if expected_app is not None and manifest.app.name != expected_app:
            raise PackageError(
                f"the archive is a package of app {manifest.app.name!r}, not of {expected_app!r}"
            )
        weak = weak_candidates(manifest)
        if weak and not force:
            listed = "; ".join(f"{candidate.cut_point}: {candidate.reason}" for candidate in weak)
            raise WeakCandidatesError(
                f"package of app {manifest.app.name!r} refused: {len(weak)} of "
                f"{len(manifest.candidates)} candidate(s) are no better than the majority class "
                f"({listed}); {WEAK_CANDIDATE_ADVICE}, or upload with force"
            )

        with self.node.changes():
            existing = self.registry.package_by_sha(sha256)
            if existing is not None:
                return UploadResult(package=existing, created=False)
            base, created_files = self._base_for(path, manifest)
            blob_created = self.registry.blobs.put(path, sha256)
            try:
                with self.registry.transaction() as transaction:
                    if base is not None:
                        transaction.add_base(*base)
                    record = transaction.add_package(manifest, sha256, size, version)
            except BaseException:
                if blob_created:
                    self.registry.blobs.delete(sha256)
                for created in created_files:
                    created.unlink(missing_ok=True)
                raise
        logger.info("stored package %s v%d (%s)", record.app, record.version, sha256[:12])
        return UploadResult(package=record, created=True)

    def _base_for(
        self, path: Path, manifest: Manifest
    ) -> tuple[tuple[BaseModelInfo, str] | None, list[Path]]:
        """The base row to record with the package (None: already recorded) and new files."""
        from mainstream.bases import registered_base_record

        info = manifest.base_model
        fingerprint = info.weights_fingerprint
        if self.registry.get_base(fingerprint) is not None:
            return None, []
        bases_dir = self.settings.bases_dir
        if (bases_dir / f"{fingerprint}.json").is_file():
            record = registered_base_record(fingerprint, bases_dir)
            return (record.info, record.weights_file), []
        if manifest.base_weights is None:
            raise PackageError(
                f"unknown base: {info.name} with weights fingerprint {fingerprint[:12]}… is not "
                "registered on this node and the package does not bundle its weights "
                "(base/weights.h5); register the base first or rebuild the package with the "
                "base weights included"
            )
        return self._register_bundled_base(path, manifest)

    def _register_bundled_base(
        self, path: Path, manifest: Manifest
    ) -> tuple[tuple[BaseModelInfo, str], list[Path]]:
        """Check the bundled base weights against the fingerprint, then save them as a base."""
        with read_package(path) as package:
            weights = package.base_weights_path
            assert weights is not None  # the caller checked manifest.base_weights
            return self._save_checked_base(
                weights,
                manifest.base_model,
                what="the bundled base weights",
                blame="the package is inconsistent or was tampered with",
                provenance={"bundled_in_package": manifest.app.name},
            )

    def _save_checked_base(
        self,
        weights: Path,
        info: BaseModelInfo,
        what: str,
        blame: str,
        provenance: dict[str, str],
    ) -> tuple[tuple[BaseModelInfo, str], list[Path]]:
        """Save base weights as a registered base once they have the fingerprint `info` names.

        Returns the base row to record and the files created (to remove if the change fails).
        """
        from mainstream.bases import BaseConfig, build_base, save_base, weights_fingerprint

        height, width, _ = info.input_shape
        if height != width:
            raise PackageError(f"base input shape {info.input_shape} is not square")
        bases_dir = self.settings.bases_dir
        fingerprint = info.weights_fingerprint
        targets = [bases_dir / f"{fingerprint}.weights.h5", bases_dir / f"{fingerprint}.json"]
        existed = {target for target in targets if target.exists()}
        try:
            config = BaseConfig(
                name=info.name, input_size=height, alpha=info.alpha or 1.0, weights=str(weights)
            )
            model = build_base(config)
        except (InvalidParameterError, ModelError) as error:
            raise PackageError(f"{what} cannot be used: {error}") from error
        actual = weights_fingerprint(model)
        if actual != fingerprint:
            raise PackageError(
                f"{what} have fingerprint {actual[:12]}… but the manifest says "
                f"{fingerprint[:12]}…; {blame}"
            )
        saved = save_base(
            model, config, bases_dir, weights_source=info.weights_source, provenance=provenance
        )
        created = [target for target in targets if target not in existed]
        return (saved, targets[0].name), created

    def list_packages(self, app: str | None = None) -> list[PackageSummary]:
        return [PackageSummary.of(record) for record in self.registry.list_packages(app)]

    def get_package(self, app: str, version: int | Literal["latest"]) -> PackageRecord:
        return self.registry.get_package(app, version)

    def delete_package(self, app: str, version: int | Literal["latest"]) -> None:
        with self.node.changes():
            record = self.registry.get_package(app, version)
            with self.registry.transaction() as transaction:
                transaction.delete_package(record.app, record.version)
            self.registry.blobs.delete(record.sha256)
            self.node.forget_package(record.sha256)
        logger.info("deleted package %s v%d", record.app, record.version)

    def package_archive(
        self, app: str, version: int | Literal["latest"]
    ) -> tuple[PackageRecord, Path]:
        """A stored package version and the path of its archive (what nodes pull)."""
        record = self.registry.get_package(app, version)
        blob = self.registry.blobs.path(record.sha256)
        if not blob.is_file():
            raise NotFoundError(f"package {record.app} v{record.version}: its archive is missing")
        return record, blob

    def pull_package(self, app: str, version: int | Literal["latest"]) -> UploadResult:
        """Fetch a package version from the fleet's shared registry (`registry_url`) and store it.

        The archive is streamed to the staging folder under `api.max_upload_bytes`, must hash to
        the sha256 the shared registry lists, and is then stored exactly like an upload (same
        validation), under the shared registry's version number. A base the node lacks and the
        package does not bundle is pulled too, and kept only if the package is stored.
        """
        from mainstream.fleet import RegistryClient

        staging = self.staging_dir() / f"pull-{uuid.uuid4().hex}.mpkg"
        base_files: list[Path] = []
        try:
            with RegistryClient.from_settings(self.settings) as client:
                listed = client.package(app, version)
                client.download(listed, staging, self.settings.api.max_upload_bytes)
                base_files = self._pull_base(client, listed.manifest)
            # The shared registry already accepted it (forced or not): same package, same answer.
            result = self.upload_package(
                staging, version=listed.version, expected_app=listed.app, force=True
            )
        except BaseException:
            for created in base_files:
                created.unlink(missing_ok=True)
            raise
        finally:
            staging.unlink(missing_ok=True)
        logger.info(
            "pulled package %s v%d (%s) from the shared registry",
            listed.app,
            listed.version,
            listed.sha256[:12],
        )
        return result

    def _pull_base(self, client: RegistryClient, manifest: Manifest) -> list[Path]:
        """Fetch the base of `manifest` when this node lacks it and the package does not bundle
        it; the weights must have the manifest's fingerprint. Returns the files created."""
        fingerprint = manifest.base_model.weights_fingerprint
        if (
            manifest.base_weights is not None
            or self.registry.get_base(fingerprint) is not None
            or (self.settings.bases_dir / f"{fingerprint}.json").is_file()
        ):
            return []
        staging = self.staging_dir() / f"base-{uuid.uuid4().hex}.weights.h5"
        try:
            client.download_base_weights(fingerprint, staging, self.settings.api.max_upload_bytes)
            _, created = self._save_checked_base(
                staging,
                manifest.base_model,
                what="the base weights sent by the shared registry",
                blame="they were corrupted or tampered with",
                provenance={"pulled_from": client.url},
            )
        finally:
            staging.unlink(missing_ok=True)
        logger.info("pulled base %s from the shared registry", fingerprint[:12])
        return created

    def list_bases(self) -> list[BaseRecord]:
        return self.registry.list_bases()

    def base_weights(self, fingerprint: str) -> tuple[BaseRecord, Path]:
        """A registered base and the path of its weights file (what nodes pull)."""
        record = self.registry.get_base(fingerprint)
        if record is None:
            raise NotFoundError(f"no base with weights fingerprint {fingerprint!r}")
        path = self.settings.bases_dir / record.weights_file
        if not path.is_file():
            raise NotFoundError(f"base {fingerprint[:12]}…: its weights file is missing")
        return record, path

    def _ensure_package(self, app: str, version: int | Literal["latest"]) -> None:
        """Pull a package version this node does not hold, when a shared registry is set.

        `latest` means the newest version held here; only a node that holds no version of the
        app asks the shared registry for its latest.
        """
        if self.settings.registry_url is None:
            return
        try:
            self.registry.get_package(app, version)
        except NotFoundError:
            self.pull_package(app, version)

    # -- cameras -------------------------------------------------------------------------------

    def list_cameras(self) -> list[CameraView]:
        apps = self.registry.list_apps()
        return [self._camera_view(record, apps) for record in self.registry.list_cameras()]

    def get_camera(self, camera_id: str) -> CameraView:
        return self._camera_view(self.registry.get_camera(camera_id), self.registry.list_apps())

    def _camera_view(self, record: CameraRecord, apps: list[AppRecord]) -> CameraView:
        return CameraView(
            camera=record,
            status=self.node.camera_status(record.id),
            apps=[app.name for app in apps if app.camera == record.id],
        )

    def create_camera(self, request: CameraCreate) -> CameraView:
        config = request.camera_config()
        with self.node.changes():
            if self.registry.has_camera(config.id):
                raise ConflictError(f"camera {config.id!r} already exists")
            record = CameraRecord(
                id=config.id,
                config=config,
                enabled=request.enabled,
                created_at=utc_now(),
                updated_at=utc_now(),
            )
            cameras = [*self.registry.list_cameras(), record]
            proposal = self.node.propose(
                f"camera {config.id} added", self.registry.list_apps(), cameras
            )
            with self.registry.transaction() as transaction:
                transaction.add_camera(config, request.enabled)
                self.node.record(transaction, proposal)
            self.node.apply(proposal)
        return self.get_camera(config.id)

    def replace_camera(self, camera_id: str, request: CameraCreate) -> CameraView:
        if request.id != camera_id:
            raise InvalidParameterError("id", request.id, f"the id in the path ({camera_id!r})")
        return self._change_camera(camera_id, request.camera_config(), request.enabled)

    def update_camera(self, camera_id: str, changes: dict[str, Any]) -> CameraView:
        """Apply a partial change (any CameraConfig field, or `enabled`)."""
        current = self.registry.get_camera(camera_id)
        if "id" in changes and changes["id"] != camera_id:
            raise InvalidParameterError("id", changes["id"], "unchanged (cameras keep their id)")
        fields = current.config.model_dump() | dict(changes)
        enabled = fields.pop("enabled", current.enabled)
        try:
            config = CameraConfig.model_validate(fields)
        except ValidationError as error:
            raise InvalidRequestError("camera", validation_problems(error)) from error
        if not isinstance(enabled, bool):
            raise InvalidParameterError("enabled", enabled, "true or false")
        return self._change_camera(camera_id, config, enabled)

    def _change_camera(self, camera_id: str, config: CameraConfig, enabled: bool) -> CameraView:
        with self.node.changes():
            current = self.registry.get_camera(camera_id)
            changed = current.model_copy(update={"config": config, "enabled": enabled})
            cameras = [changed if c.id == camera_id else c for c in self.registry.list_cameras()]
            proposal = self.node.propose(
                f"camera {camera_id} changed", self.registry.list_apps(), cameras
            )
            with self.registry.transaction() as transaction:
                transaction.update_camera(config, enabled)
                self.node.record(transaction, proposal)
            self.node.apply(proposal)
        return self.get_camera(camera_id)

    def delete_camera(self, camera_id: str) -> None:
        with self.node.changes():
            self.registry.get_camera(camera_id)
            users = [app.name for app in self.registry.list_apps() if app.camera == camera_id]
            if users:
                raise ConflictError(
                    f"camera {camera_id!r} is used by app(s) {', '.join(users)}; remove them first"
                )
            cameras = [c for c in self.registry.list_cameras() if c.id != camera_id]
            proposal = self.node.propose(
                f"camera {camera_id} removed", self.registry.list_apps(), cameras
            )
            with self.registry.transaction() as transaction:
                transaction.delete_camera(camera_id)
                self.node.record(transaction, proposal)
            self.node.apply(proposal)

    def latest_jpeg(self, camera_id: str) -> bytes:
        return self.node.latest_jpeg(camera_id)

    # -- apps ----------------------------------------------------------------------------------

    def list_apps(self) -> list[AppView]:
        return [self._app_view(app) for app in self.registry.list_apps()]

    def get_app(self, name: str) -> AppView:
        return self._app_view(self.registry.get_app(name))

    def _app_view(self, app: AppRecord) -> AppView:
        plan = self.node.plan_in_force
        planned = None
        if plan is not None and plan.plan is not None:
            planned = next((p for p in plan.plan.apps if p.name == app.name), None)
        measured = self.node.measured()
        runtime = measured["apps"].get(app.name) if measured else None
        return AppView(app=app, planned=planned, runtime=runtime)

    def _resolve_package(self, package: str, version: int | Literal["latest"]) -> PackageRecord:
        try:
            return self.registry.get_package(package, version)
        except NotFoundError:
            where = "" if self.settings.registry_url is None else " nor in the shared registry"
            raise NotFoundError(
                f"no package for app {package!r} version {version} on this node{where}; "
                "upload it first"
            ) from None

    def _default_camera(self) -> str:
        default = self.settings.default_camera
        if default is not None and self.registry.has_camera(default.id):
            return default.id
        cameras = self.registry.list_cameras()
        if len(cameras) == 1:
            return cameras[0].id
        raise InvalidParameterError("camera", None, "the id of a registered camera")

    def _new_app_record(self, request: AppCreate) -> AppRecord:
        package = self._resolve_package(request.package or request.name, request.version)
        camera = request.camera or self._default_camera()
        self.registry.get_camera(camera)  # NotFoundError
        return AppRecord(
            name=request.name,
            package_sha256=package.sha256,
            package_app=package.app,
            package_version=package.version,
            camera=camera,
            event_overrides=request.event_overrides.values(),
            weight=request.weight,
            x_vote=request.x_vote,
            threshold=request.threshold,
            quiet_time_s=request.quiet_time_s,
            enabled=request.enabled,
        )

    def create_app(self, request: AppCreate) -> AppView:
        """Register an app; the node re-plans and runs it without a restart.

        A package the node does not hold is pulled from the shared registry first (when
        `registry_url` is set), outside the change lock: downloads do not hold up other changes.
        """
        if self.registry.has_app(request.name):  # checked again under the lock
            raise ConflictError(f"app {request.name!r} already exists")
        self._ensure_package(request.package or request.name, request.version)
        with self.node.changes():
            if self.registry.has_app(request.name):
                raise ConflictError(f"app {request.name!r} already exists")
            record = self._new_app_record(request)
            apps = [*self.registry.list_apps(), record]
            proposal = self.node.propose(
                f"app {record.name} added", apps, self.registry.list_cameras()
            )
            with self.registry.transaction() as transaction:
                transaction.add_app(record)
                self.node.record(transaction, proposal)
            self.node.apply(proposal)
        logger.info("app %s added (%s)", record.name, proposal.status)
        return self.get_app(record.name)

    def update_app(self, name: str, request: AppUpdate) -> AppView:
        if request.package is not None or request.version is not None:
            before = self.registry.get_app(name)
            self._ensure_package(request.package or before.package_app, request.version or "latest")
        with self.node.changes():
            current = self.registry.get_app(name)
            changes: dict[str, Any] = {}
            if request.package is not None or request.version is not None:
                package = self._resolve_package(
                    request.package or current.package_app, request.version or "latest"
                )
                changes |= {
                    "package_sha256": package.sha256,
                    "package_app": package.app,
                    "package_version": package.version,
                }
            if request.camera is not None:
                self.registry.get_camera(request.camera)
                changes["camera"] = request.camera
            if request.event_overrides is not None:
                changes["event_overrides"] = request.event_overrides.values()
            for field in ("weight", "x_vote", "threshold", "quiet_time_s", "enabled"):
                value = getattr(request, field)
                if value is not None:
                    changes[field] = value
            updated = current.model_copy(update=changes)
            apps = [updated if a.name == name else a for a in self.registry.list_apps()]
            proposal = self.node.propose(f"app {name} changed", apps, self.registry.list_cameras())
            with self.registry.transaction() as transaction:
                transaction.update_app(updated)
                self.node.record(transaction, proposal)
            self.node.apply(proposal)
        return self.get_app(name)

    def delete_app(self, name: str) -> None:
        with self.node.changes():
            self.registry.get_app(name)
            apps = [app for app in self.registry.list_apps() if app.name != name]
            proposal = self.node.propose(f"app {name} removed", apps, self.registry.list_cameras())
            with self.registry.transaction() as transaction:
                transaction.delete_app(name)
                self.node.record(transaction, proposal)
            self.node.apply(proposal)
        logger.info("app %s removed", name)

    # -- schedule ------------------------------------------------------------------------------

    def schedule(self) -> ScheduleView:
        """The plan in force, with what the runtime measured since it was applied."""
        record = self.node.plan_in_force
        if record is None:
            return ScheduleView(status="none")
        return ScheduleView(
            status=record.status,
            id=record.id,
            created_at=record.created_at,
            reason=record.reason,
            message=record.message,
            budget=record.budget,
            plan=record.plan,
            measured=self.node.measured() if record.status == "ok" else None,
        )

    def plan_history(self, limit: int = 20, offset: int = 0) -> list[PlanRecord]:
        if not 1 <= limit <= 200:
            raise InvalidParameterError("limit", limit, "1 to 200")
        if not 0 <= offset <= MAX_ROW_NUMBER:
            raise InvalidParameterError("offset", offset, f"0 to {MAX_ROW_NUMBER}")
        return self.registry.plan_history(limit, offset)

    def dry_run(self, request: DryRunRequest) -> DryRunResult:
        """The plan (and both baselines) the node would run after a change; nothing deployed.

        Raises InfeasibleError when nothing fits the budget.
        """
        with self.node.changes():
            apps = {app.name: app for app in self.registry.list_apps()}
            for name in request.remove_apps:
                if name not in apps:
                    raise NotFoundError(f"dry run: no app {name!r} to remove")
                del apps[name]
            for addition in request.add_apps:
                if addition.name in apps:
                    raise ConflictError(f"dry run: app {addition.name!r} already exists")
                apps[addition.name] = self._new_app_record(addition)
            proposal = self.node.propose(
                "dry run",
                list(apps.values()),
                self.registry.list_cameras(),
                budget=request.budget,
                objective=request.objective,
                build=False,
            )
        current = self.node.plan_in_force
        return DryRunResult(
            status="ok" if proposal.status == "ok" else "empty",
            budget=proposal.budget,
            plan=proposal.plan,
            current_value=current.plan.value if current is not None and current.plan else None,
        )

    # -- events --------------------------------------------------------------------------------

    def events(
        self,
        app: str | None = None,
        camera: str | None = None,
        since: str | float | None = None,
        until: str | float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> EventPage:
        if not 1 <= limit <= MAX_EVENT_PAGE:
            raise InvalidParameterError("limit", limit, f"1 to {MAX_EVENT_PAGE}")
        if not 0 <= offset <= MAX_ROW_NUMBER:
            raise InvalidParameterError("offset", offset, f"0 to {MAX_ROW_NUMBER}")
        query = EventQuery(
            app=app,
            camera=camera,
            since=parse_time("since", since),
            until=parse_time("until", until),
            limit=limit,
            offset=offset,
        )
        items = [EventView.of(event) for event in self.node.events.query(query)]
        return EventPage(
            items=items,
            limit=limit,
            offset=offset,
            next_offset=offset + len(items) if len(items) == limit else None,
        )

    def event(self, event_id: str) -> EventView:
        event = self.node.events.get(event_id)
        if event is None:
            raise NotFoundError(f"no event {event_id!r}")
        return EventView.of(event)

    def event_snapshot(self, event_id: str) -> bytes:
        self.event(event_id)
        snapshot = self.node.events.snapshot(event_id)
        if snapshot is None:
            raise NotFoundError(f"event {event_id!r} has no snapshot")
        return snapshot

    # -- tokens --------------------------------------------------------------------------------

    def create_token(self, role: Role, name: str | None = None) -> tuple[TokenRecord, str]:
        return create_token(self.registry, role, name)

    def verify_token(self, authorization: str | None) -> Principal:
        admin = self.settings.admin_token
        return verify_token(
            self.registry, authorization, admin.get_secret_value() if admin else None
        )

    def list_tokens(self) -> list[TokenRecord]:
        return self.registry.list_tokens()

    def delete_token(self, token_id: int) -> None:
        if not 1 <= token_id <= MAX_ROW_NUMBER:
            raise NotFoundError(f"no token with id {token_id}")
        with self.registry.transaction() as transaction:
            transaction.delete_token(token_id)

    # -- health --------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return self.node.readiness()

    def stats(self) -> dict[str, Any]:
        return self.node.stats()
