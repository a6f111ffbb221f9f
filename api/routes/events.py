"""`/api/events`: stored events, filtered and paginated, their snapshots, and operators' marks
(an event is real or a false alarm), which feed the app's precision estimate and the plan."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response

from api.byte_ranges import byte_range_response
from api.deps import ServicesDep, Viewer, admin
from mainstream.node.services import Principal
from mainstream.node.services.models import (
    MAX_EVENT_PAGE,
    MAX_ROW_NUMBER,
    EventPage,
    EventView,
    FeedbackView,
    ReviewRequest,
    ReviewResult,
)

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


@router.get("/feedback", response_model=list[FeedbackView], dependencies=[Viewer])
def feedback(services: ServicesDep) -> list[FeedbackView]:
    """Per app: events marked true, false and not marked, and the precision estimate."""
    return services.events.feedback()


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


@router.get(
    "/{event_id}/clip.webm",
    response_class=Response,
    responses={
        200: {"content": {"video/webm": {}}},
        206: {"description": "The byte range asked for (`Range: bytes=...`)"},
    },
    dependencies=[Viewer],
)
def event_clip(
    event_id: str,
    services: ServicesDep,
    range_header: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    """The event's video clip (WebM, VP8): `clips.pre_s` before its start to `clips.post_s`
    after its end. 404 until it is stored. Serves byte ranges (browsers seek with them)."""
    clip = services.events.clip(event_id)
    return byte_range_response(clip.data, clip.content_type, range_header)


@router.put("/{event_id}/review", response_model=ReviewResult)
def review_event(
    event_id: str,
    request: ReviewRequest,
    services: ServicesDep,
    principal: Annotated[Principal, Depends(admin)],
) -> ReviewResult:
    """Mark the event true (a real event) or false (a false alarm), replacing an earlier mark.

    Admin only: the mark changes the app's precision estimate, and the node re-plans at once
    when the app's predicted F1 moves by `feedback.replan_delta` or more (`replanned`).
    """
    return services.events.review(event_id, request, by=principal.name)


@router.delete("/{event_id}/review", response_model=ReviewResult)
def clear_review(
    event_id: str, services: ServicesDep, principal: Annotated[Principal, Depends(admin)]
) -> ReviewResult:
    """Remove the event's mark."""
    return services.events.clear_review(event_id)
