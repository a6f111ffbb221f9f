"""The operations of a node, one service per resource, shared by the REST API and the CLI.

Routes and commands only parse input and call these; every rule lives here. A change goes
through the node's one plan-change path (:meth:`mainstream.node.node.Node.change_plan`), so a
change that cannot be carried out (an infeasible plan, an unusable package) raises and leaves
the registry and the running node as they were.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstream.node.registry import Registry
from mainstream.node.services.apps import AppService
from mainstream.node.services.cameras import CameraService
from mainstream.node.services.events import EventService, parse_time
from mainstream.node.services.health import HealthService
from mainstream.node.services.models import (
    MAX_ROW_NUMBER,
    AppCreate,
    AppUpdate,
    AppView,
    CameraCreate,
    CameraView,
    DryRunRequest,
    DryRunResult,
    EventOverrides,
    EventPage,
    EventView,
    FeedbackView,
    InvalidRequestError,
    PackageSummary,
    PackageVersion,
    Principal,
    ReviewRequest,
    ReviewResult,
    ReviewView,
    ScheduleView,
    TooLargeError,
    UploadResult,
)
from mainstream.node.services.packages import PackageService
from mainstream.node.services.schedule import ScheduleService
from mainstream.node.services.tokens import (
    TokenService,
    create_token,
    require_role,
    verify_token,
)
from mainstream.node.settings import Settings

if TYPE_CHECKING:
    from mainstream.node.node import Node

__all__ = [
    "MAX_ROW_NUMBER",
    "AppCreate",
    "AppUpdate",
    "AppView",
    "CameraCreate",
    "CameraView",
    "DryRunRequest",
    "DryRunResult",
    "EventOverrides",
    "EventPage",
    "EventView",
    "FeedbackView",
    "InvalidRequestError",
    "PackageSummary",
    "PackageVersion",
    "Principal",
    "ReviewRequest",
    "ReviewResult",
    "ReviewView",
    "ScheduleView",
    "Services",
    "TooLargeError",
    "UploadResult",
    "create_token",
    "parse_time",
    "require_role",
    "verify_token",
]


class Services:
    """Every operation on a node, by resource: `services.apps.create(...)`,
    `services.packages.upload(...)`; the API and the CLI call these and nothing else."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.packages = PackageService(node)
        self.cameras = CameraService(node)
        self.apps = AppService(node, self.packages)
        self.schedule = ScheduleService(node, self.apps)
        self.events = EventService(node)
        self.tokens = TokenService(node)
        self.health = HealthService(node)

    def start(self) -> list[str]:
        """Start the node with the config file's apps: its cameras first (an app names one),
        then the declared apps registered or brought back to the file's values, then the node,
        which plans them all at once. Returns the declared apps that cannot run yet."""
        if self.settings.role == "registry":
            self.node.start()
            return []
        self.node.register_startup_cameras()
        problems = self.apps.register_declared()
        self.node.start()
        return problems

    @property
    def registry(self) -> Registry:
        return self.node.registry

    @property
    def settings(self) -> Settings:
        return self.node.settings
