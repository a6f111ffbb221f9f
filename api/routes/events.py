"""`/api/events`: stored events, filtered and paginated, and their snapshots."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from api.deps import ServicesDep, Viewer
from mainstream.node.services.models import MAX_EVENT_PAGE, MAX_ROW_NUMBER, EventPage, EventView

router = APIRouter(prefix="/api/events", tags=["events"])


@router.get("", response_model=EventPage, dependencies=[Viewer])
def list_events(
    services: ServicesDep,
    app: str | None = None,
    camera: str | None = None,
    since: str | None = Query(
        default=None, description="Start time at or after: epoch seconds or ISO 8601"
    ),
    until: str | None = Query(default=None, description="Start time before this"),
    limit: int = Query(default=100, ge=1, le=MAX_EVENT_PAGE),
    offset: int = Query(default=0, ge=0, le=MAX_ROW_NUMBER),
) -> EventPage:
    """Events in order of start time; follow `next_offset` for the next page."""
    return services.events.list_all(app, camera, since, until, limit, offset)


@router.get("/{event_id}", response_model=EventView, dependencies=[Viewer])
def get_event(event_id: str, services: ServicesDep) -> EventView:
    return services.events.get(event_id)


@router.get(
    "/{event_id}/snapshot.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
    dependencies=[Viewer],
)
def event_snapshot(event_id: str, services: ServicesDep) -> Response:
    """The frame with the event's highest score, as JPEG."""
    return Response(services.events.snapshot(event_id), media_type="image/jpeg")
