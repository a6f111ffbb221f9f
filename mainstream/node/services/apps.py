"""Apps: deploy a package on a camera, change or remove it; each change re-plans the node."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from edge_runtime.deployer import planner_rates
from mainstream.core.errors import (
    ConflictError,
    InvalidParameterError,
    MainstreamError,
    NotFoundError,
)
from mainstream.node.app_spec import check_fps_range
from mainstream.node.registry import (
    AppRecord,
    PackageRecord,
)

if TYPE_CHECKING:
    pass

from mainstream.node.node import Node
from mainstream.node.services.base import NodeService
from mainstream.node.services.models import (
    AppCreate,
    AppUpdate,
    AppView,
)
from mainstream.node.services.packages import PackageService

logger = logging.getLogger(__name__)


class AppService(NodeService):
    """Apps: deploy a package on a camera, change or remove it; each change re-plans the node."""

    def __init__(self, node: Node, packages: PackageService) -> None:
        super().__init__(node)
        self.packages = packages  # an app's package is pulled from the fleet when missing
        packages.stored_listeners.append(self._run_waiting_declared_apps)

    # -- apps the config file declares -----------------------------------------------------------

    def declared(self, name: str) -> bool:
        """Whether the config file declares this app (then the file, not the API, sets it)."""
        return any(app.name == name for app in self.settings.apps)

    def _refuse_declared(self, name: str, change: str) -> None:
        if self.declared(name):
            raise ConflictError(
                f"app {name!r} is declared in the config file (apps:); {change} it there "
                "and restart the node"
            )

    def register_declared(self) -> list[str]:
        """Before the node starts: register each app the config file declares, or bring it
        back to the file's values; returns one line per app that cannot be registered yet
        (its package or camera is missing), which is also logged. Nothing is planned here:
        the node plans every app when it starts."""
        problems = []
        for request in self.settings.apps:
            try:
                self.packages.ensure_local(request.package or request.name, request.version)
                wanted = self.new_record(request)
                self._check_rates(wanted)
                with self.registry.transaction() as transaction:
                    if not self.registry.has_app(request.name):
                        transaction.add_app(wanted)
                        logger.info("app %s registered from the config file", request.name)
                    elif _differs(current := self.registry.get_app(request.name), wanted):
                        transaction.update_app(wanted)
                        logger.info(
                            "app %s brought back to the config file's values (was: %s)",
                            request.name,
                            _settings_of(current),
                        )
            except MainstreamError as error:
                problems.append(f"app {request.name!r} in the config file: {error}")
                logger.error(
                    "app %s in the config file is not run: %s; it runs once this is fixed "
                    "(a missing package: as soon as it is uploaded)",
                    request.name,
                    error,
                )
        return problems

    def _run_waiting_declared_apps(self, package: PackageRecord) -> None:
        """A package was stored: run the declared apps that waited for it."""
        for request in self.settings.apps:
            if (request.package or request.name) != package.app:
                continue
            if self.registry.has_app(request.name) or not self.node.running:
                continue
            try:
                self._create(request)
            except MainstreamError as error:
                logger.error("app %s in the config file is not run: %s", request.name, error)

    def list_all(self) -> list[AppView]:
        return [self._view(app) for app in self.registry.list_apps()]

    def get(self, name: str) -> AppView:
        return self._view(self.registry.get_app(name))

    def _view(self, app: AppRecord) -> AppView:
        plan = self.node.plan_in_force
        planned = None
        if plan is not None and plan.plan is not None:
            planned = next((p for p in plan.plan.apps if p.name == app.name), None)
        measured = self.node.measured()
        runtime = measured["apps"].get(app.name) if measured else None
        return AppView(app=app, planned=planned, runtime=runtime, declared=self.declared(app.name))

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

    def new_record(self, request: AppCreate) -> AppRecord:
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
            min_fps=request.min_fps,
            max_fps=request.max_fps,
        )

    def _check_rates(self, app: AppRecord) -> None:
        """Refuse an app whose [min_fps, max_fps] holds none of the rates its camera's plans
        choose among (before planning: the range, not the budget, is what is wrong)."""
        if app.min_fps is None and app.max_fps is None:
            return
        try:
            check_fps_range(app.min_fps, app.max_fps)
        except ValueError as error:
            raise InvalidParameterError(
                "min_fps, max_fps", [app.min_fps, app.max_fps], str(error)
            ) from None
        camera = self.registry.get_camera(app.camera)
        rates = planner_rates(self.node.camera_fps(camera.config))
        low = app.min_fps if app.min_fps is not None else 0.0
        high = app.max_fps if app.max_fps is not None else float("inf")
        if not any(low <= fps <= high for fps in rates):
            raise InvalidParameterError(
                "min_fps, max_fps",
                [app.min_fps, app.max_fps],
                f"a range that holds one of the rates app {app.name!r} can be planned at on "
                f"camera {app.camera!r}: {', '.join(f'{fps:g}' for fps in rates)} fps",
            )

    def create(self, request: AppCreate) -> AppView:
        """Register an app; the node re-plans and runs it without a restart.

        A package the node does not hold is pulled from the shared registry first (when
        `registry_url` is set), outside the change lock: downloads do not hold up other changes.
        A name the config file declares is the file's (it runs once its package is here).
        """
        if not self.registry.has_app(request.name):
            self._refuse_declared(request.name, "set")
        return self._create(request)

    def _create(self, request: AppCreate) -> AppView:
        if self.registry.has_app(request.name):  # checked again under the lock
            raise ConflictError(f"app {request.name!r} already exists")
        self.packages.ensure_local(request.package or request.name, request.version)
        with self.node.changes():
            if self.registry.has_app(request.name):
                raise ConflictError(f"app {request.name!r} already exists")
            record = self.new_record(request)
            self._check_rates(record)
            apps = [*self.registry.list_apps(), record]
            proposal = self.node.change_plan(
                f"app {record.name} added",
                apps=apps,
                store=lambda transaction: transaction.add_app(record),
            )
        logger.info("app %s added (%s)", record.name, proposal.status)
        return self.get(record.name)

    def update(self, name: str, request: AppUpdate, reason: str | None = None) -> AppView:
        """Change an app and re-plan; `reason` says why in the plan history (default: "app
        NAME changed")."""
        self._refuse_declared(name, "change")
        if request.package is not None or request.version is not None:
            before = self.registry.get_app(name)
            self.packages.ensure_local(
                request.package or before.package_app, request.version or "latest"
            )
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
            for field in ("min_fps", "max_fps"):  # an explicit null lifts the limit
                if field in request.model_fields_set:
                    changes[field] = getattr(request, field)
            updated = current.model_copy(update=changes)
            self._check_rates(updated)
            apps = [updated if a.name == name else a for a in self.registry.list_apps()]
            self.node.change_plan(
                reason or f"app {name} changed",
                apps=apps,
                store=lambda transaction: transaction.update_app(updated),
            )
        return self.get(name)

    def delete(self, name: str) -> None:
        self._refuse_declared(name, "remove")
        with self.node.changes():
            self.registry.get_app(name)
            apps = [app for app in self.registry.list_apps() if app.name != name]
            self.node.change_plan(
                f"app {name} removed",
                apps=apps,
                store=lambda transaction: transaction.delete_app(name),
            )
        logger.info("app %s removed", name)


_SETTINGS_FIELDS = (
    "package_sha256",
    "camera",
    "event_overrides",
    "weight",
    "x_vote",
    "threshold",
    "quiet_time_s",
    "enabled",
    "min_fps",
    "max_fps",
)


def _settings_of(app: AppRecord) -> dict[str, Any]:
    return {field: getattr(app, field) for field in _SETTINGS_FIELDS}


def _differs(current: AppRecord, wanted: AppRecord) -> bool:
    return _settings_of(current) != _settings_of(wanted)
