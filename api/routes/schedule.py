"""`/api/schedule`: the plan in force, its history, and what-if plans."""

from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import ServicesDep, Viewer
from mainstream.node.registry import PlanRecord
from mainstream.node.services import MAX_ROW_NUMBER, DryRunRequest, DryRunResult, ScheduleView

router = APIRouter(prefix="/api/schedule", tags=["schedule"])


@router.get("", response_model=ScheduleView, dependencies=[Viewer])
def schedule(services: ServicesDep) -> ScheduleView:
    """The plan in force: predicted figures, baselines, and what the runtime measured."""
    return services.schedule.current()


@router.get("/history", response_model=list[PlanRecord], dependencies=[Viewer])
def history(
    services: ServicesDep,
    limit: int = Query(default=20, ge=1, le=200),
    offset: int = Query(default=0, ge=0, le=MAX_ROW_NUMBER),
) -> list[PlanRecord]:
    """Earlier plans, newest first."""
    return services.schedule.history(limit, offset)


@router.post("/dry-run", response_model=DryRunResult, dependencies=[Viewer])
def dry_run(request: DryRunRequest, services: ServicesDep) -> DryRunResult:
    """The plan and both baselines after adding/removing apps or with another budget.

    Nothing is deployed or stored; 422 when nothing fits the budget.
    """
    return services.schedule.dry_run(request)
