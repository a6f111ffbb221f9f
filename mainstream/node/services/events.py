"""Stored events: filtered pages, one event, its snapshot and clip."""

from __future__ import annotations

import dataclasses
import logging
import math
from datetime import datetime, timezone

from edge_runtime.event_store import EventQuery, StoredClip
from mainstream.core.errors import (
    InvalidParameterError,
    NotFoundError,
)
from mainstream.node.feedback import ReviewOutcome
from mainstream.node.services.base import NodeService
from mainstream.node.services.models import (
    MAX_EVENT_PAGE,
    MAX_ROW_NUMBER,
    EventPage,
    EventView,
    FeedbackView,
    ReviewRequest,
    ReviewResult,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Times


def parse_time(field: str, value: str | float | None) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 date-time (UTC when no zone)."""
    if value is None or value == "":
        return None
    number: float | None = None
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number):
            raise InvalidParameterError(field, value, "a finite number of seconds")
        return number
    assert isinstance(value, str)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameterError(
            field, value, "seconds since the epoch or an ISO 8601 date-time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


class EventService(NodeService):
    """Stored events: filtered pages, one event, its snapshot and clip."""

    def list_all(
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
        events = self.node.events.query(query)
        reviews = self.node.events.reviews([event.id for event in events])
        items = [EventView.of(event, reviews.get(event.id)) for event in events]
        return EventPage(
            items=items,
            limit=limit,
            offset=offset,
            next_offset=offset + len(items) if len(items) == limit else None,
        )

    def get(self, event_id: str) -> EventView:
        event = self.node.events.get(event_id)
        if event is None:
            raise NotFoundError(f"no event {event_id!r}")
        return EventView.of(event, self.node.events.reviews([event_id]).get(event_id))

    def snapshot(self, event_id: str) -> bytes:
        self.get(event_id)
        snapshot = self.node.events.snapshot(event_id)
        if snapshot is None:
            raise NotFoundError(f"event {event_id!r} has no snapshot")
        return snapshot

    def clip(self, event_id: str) -> StoredClip:
        """The event's stored video clip (complete: a clip is stored whole or not at all)."""
        self.get(event_id)
        clip = self.node.events.clip(event_id)
        if clip is None:
            raise NotFoundError(f"event {event_id!r} has no clip (yet)")
        return clip

    def review(self, event_id: str, request: ReviewRequest, by: str) -> ReviewResult:
        """Mark the event true or false (replacing an earlier mark); the node re-plans when
        the app's predicted F1 moves by `feedback.replan_delta` or more."""
        outcome = self.node.feedback.review(event_id, request.is_true, request.note, by)
        return _result(outcome)

    def clear_review(self, event_id: str) -> ReviewResult:
        """Remove the event's mark; the app's estimate goes back to the remaining marks."""
        return _result(self.node.feedback.clear(event_id))

    def feedback(self) -> list[FeedbackView]:
        """Every app's marks and estimate."""
        return [
            FeedbackView(**dataclasses.asdict(item))
            for item in self.node.feedback.estimates().values()
        ]


def _result(outcome: ReviewOutcome) -> ReviewResult:
    return ReviewResult(
        event=EventView.of(outcome.event, outcome.review),
        feedback=None
        if outcome.feedback is None
        else FeedbackView(**dataclasses.asdict(outcome.feedback)),
        replanned=outcome.replanned,
    )
