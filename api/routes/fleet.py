"""`/api/fleet/plan`: where a fleet's cameras should run, computed by this daemon (usually the
fleet's shared registry); `mainstream fleet apply` sends the result to each node's own API."""

from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import Admin
from scheduler.fleet import Fleet, FleetPlan
from scheduler.fleet_placement import Method, place_fleet

router = APIRouter(prefix="/api/fleet", tags=["fleet"])

MAX_TIME_LIMIT_S = 60.0


@router.post("/plan", response_model=FleetPlan, dependencies=[Admin])
def plan(
    fleet: Fleet,
    time_limit_s: float = Query(default=10.0, gt=0, le=MAX_TIME_LIMIT_S),
    method: Method = "auto",
) -> FleetPlan:
    """Place the fleet's cameras on its nodes and plan every node (the FLEET.yaml shape as
    JSON). Nothing is deployed; 422 when no placement fits. Admin only: it searches for up
    to `time_limit_s` seconds."""
    return place_fleet(fleet, method, time_limit_s)
