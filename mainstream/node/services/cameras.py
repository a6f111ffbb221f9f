"""Cameras: register, change and remove them; each change re-plans the node."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edge_runtime.camera import CameraConfig
from mainstream.core.errors import (
    ConflictError,
    InvalidParameterError,
)
from mainstream.node.registry import (
    AppRecord,
    CameraRecord,
    utc_now,
)
from mainstream.node.settings import validation_problems

if TYPE_CHECKING:
    pass

from mainstream.node.services.base import NodeService
from mainstream.node.services.models import (
    CameraCreate,
    CameraView,
    InvalidRequestError,
)

logger = logging.getLogger(__name__)


class CameraService(NodeService):
    """Cameras: register, change and remove them; each change re-plans the node.

    Every new or changed camera must pass the node's camera policy (`camera_policy`): a
    refused URL or FFmpeg option raises PolicyError (422) before anything is stored or started.
    """

    def list_all(self) -> list[CameraView]:
        apps = self.registry.list_apps()
        return [self._view(record, apps) for record in self.registry.list_cameras()]

    def get(self, camera_id: str) -> CameraView:
        return self._view(self.registry.get_camera(camera_id), self.registry.list_apps())

    def _view(self, record: CameraRecord, apps: list[AppRecord]) -> CameraView:
        return CameraView(
            camera=record,
            status=self.node.camera_status(record.id),
            apps=[app.name for app in apps if app.camera == record.id],
        )

    def create(self, request: CameraCreate) -> CameraView:
        config = request.camera_config()
        self.settings.check_camera(config)
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
            self.node.change_plan(
                f"camera {config.id} added",
                cameras=cameras,
                store=lambda transaction: transaction.add_camera(config, request.enabled),
            )
        return self.get(config.id)

    def replace(self, camera_id: str, request: CameraCreate) -> CameraView:
        if request.id != camera_id:
            raise InvalidParameterError("id", request.id, f"the id in the path ({camera_id!r})")
        return self._change(camera_id, request.camera_config(), request.enabled)

    def update(self, camera_id: str, changes: dict[str, Any]) -> CameraView:
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
        return self._change(camera_id, config, enabled)

    def _change(self, camera_id: str, config: CameraConfig, enabled: bool) -> CameraView:
        self.settings.check_camera(config)
        with self.node.changes():
            current = self.registry.get_camera(camera_id)
            changed = current.model_copy(update={"config": config, "enabled": enabled})
            cameras = [changed if c.id == camera_id else c for c in self.registry.list_cameras()]
            self.node.change_plan(
                f"camera {camera_id} changed",
                cameras=cameras,
                store=lambda transaction: transaction.update_camera(config, enabled),
            )
        return self.get(camera_id)

    def delete(self, camera_id: str) -> None:
        with self.node.changes():
            self.registry.get_camera(camera_id)
            users = [app.name for app in self.registry.list_apps() if app.camera == camera_id]
            if users:
                raise ConflictError(
                    f"camera {camera_id!r} is used by app(s) {', '.join(users)}; remove them first"
                )
            cameras = [c for c in self.registry.list_cameras() if c.id != camera_id]
            self.node.change_plan(
                f"camera {camera_id} removed",
                cameras=cameras,
                store=lambda transaction: transaction.delete_camera(camera_id),
            )

    def latest_jpeg(self, camera_id: str) -> bytes:
        return self.node.latest_jpeg(camera_id)

    def live_view_jpeg(self, camera_id: str) -> tuple[int, bytes]:
        """The latest frame with the apps' scores drawn on it, and its sequence number."""
        return self.node.live_view_jpeg(camera_id)
