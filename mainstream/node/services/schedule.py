"""The plan in force, its history, and dry runs of hypothetical changes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mainstream.core.errors import (
    ConflictError,
    InvalidParameterError,
    NotFoundError,
)
from mainstream.node.registry import (
    AppRecord,
    CameraRecord,
    PlanRecord,
)

if TYPE_CHECKING:
    pass

from mainstream.node.node import Node
from mainstream.node.services.apps import AppService
from mainstream.node.services.base import NodeService
from mainstream.node.services.models import (
    MAX_ROW_NUMBER,
    DryRunRequest,
    DryRunResult,
    ScheduleView,
)

logger = logging.getLogger(__name__)


class ScheduleService(NodeService):
    """The plan in force, its history, and dry runs of hypothetical changes."""

    def __init__(self, node: Node, apps: AppService) -> None:
        super().__init__(node)
        self.apps = apps  # a dry run builds app records as a real change would

    def current(self) -> ScheduleView:
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

    def history(self, limit: int = 20, offset: int = 0) -> list[PlanRecord]:
        if not 1 <= limit <= 200:
            raise InvalidParameterError("limit", limit, "1 to 200")
        if not 0 <= offset <= MAX_ROW_NUMBER:
            raise InvalidParameterError("offset", offset, f"0 to {MAX_ROW_NUMBER}")
        return self.registry.plan_history(limit, offset)

    def dry_run(self, request: DryRunRequest) -> DryRunResult:
        """The plan (and both baselines) the node would run after a change; nothing deployed.

        At most `scheduler.max_dry_run_apps` added apps (InvalidParameterError beyond). The
        change lock is held only to read the node's state; the plan is searched without it,
        so a dry run never delays a change. Raises InfeasibleError when nothing fits the budget.
        """
        most = self.settings.scheduler.max_dry_run_apps
        if len(request.add_apps) > most:
            raise InvalidParameterError(
                "add_apps",
                f"{len(request.add_apps)} apps",
                f"at most {most} apps per dry run (scheduler.max_dry_run_apps)",
            )

        def snapshot() -> tuple[list[AppRecord], list[CameraRecord]]:
            apps = {app.name: app for app in self.registry.list_apps()}
            for name in request.remove_apps:
                if name not in apps:
                    raise NotFoundError(f"dry run: no app {name!r} to remove")
                del apps[name]
            for addition in request.add_apps:
                if addition.name in apps:
                    raise ConflictError(f"dry run: app {addition.name!r} already exists")
                apps[addition.name] = self.apps.new_record(addition)
            return list(apps.values()), self.registry.list_cameras()

        proposal = self.node.what_if(
            "dry run", snapshot, budget=request.budget, objective=request.objective
        )
        current = self.node.plan_in_force
        return DryRunResult(
            status="ok" if proposal.status == "ok" else "empty",
            budget=proposal.budget,
            plan=proposal.plan,
            current_value=current.plan.value if current is not None and current.plan else None,
        )
