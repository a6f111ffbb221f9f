"""`GET /api/live`: what happens on the node, as it happens (Server-Sent Events).

    event: event    data: {"type": "new"|"update"|"end", "event": <the event as /api/events has it>}
    event: camera   data: {"camera": "<id>", "state": "...", "previous": "...", "reason": "..."}
    event: status   data: <the /api/stats JSON>, at once and then every 2 s
    : keepalive     every 15 s, so that proxies keep the connection open

Browsers' EventSource cannot send headers, and a token in a URL ends up in logs and histories.
So a client first asks `POST /api/live/ticket` (with its bearer token in the header) for a
ticket, then opens `GET /api/live?ticket=...`: a ticket is good for one connection within
30 s (a reconnection needs a new one). `?token=...` still works, for older clients. A client
that reads too slowly loses the oldest messages (a `: dropped N` comment says how many); the
node never waits for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.deps import Credentials, ServicesDep, viewer
from edge_runtime.camera import StateChange
from edge_runtime.detector import EventChange
from edge_runtime.live import LiveHub, LiveMessage
from mainstream.core.errors import AuthError
from mainstream.node.services import EventView, Principal

router = APIRouter(tags=["live"])

STATUS_INTERVAL_S = 2.0
KEEPALIVE_INTERVAL_S = 15.0
RETRY_MS = 3000  # how long EventSource waits before reconnecting


TICKET_TTL_S = 30.0
MAX_TICKETS = 1024  # outstanding tickets; beyond it the oldest is forgotten


class LiveTicket(BaseModel):
    ticket: str
    expires_in_s: float


class LiveTickets:
    """Short-lived, single-use tickets that stand for a token on one `/api/live` connection.

    Only the tickets' SHA-256 digests are kept, in memory: a restart forgets them all, and
    that is fine, since a ticket is good for seconds. Thread-safe.
    """

    def __init__(
        self,
        ttl_s: float = TICKET_TTL_S,
        max_tickets: int = MAX_TICKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_tickets = max_tickets
        self._clock = clock
        self._lock = threading.Lock()
        self._tickets: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def issue(self, principal: Principal) -> str:
        """A new ticket for `principal`, valid for `ttl_s` seconds and one use."""
        ticket = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            while self._tickets and next(iter(self._tickets.values()))[1] <= now:
                self._tickets.popitem(last=False)  # expired (issued in order, so oldest first)
            while len(self._tickets) >= self.max_tickets:
                self._tickets.popitem(last=False)
            self._tickets[_digest(ticket)] = (principal, now + self.ttl_s)
        return ticket

    def redeem(self, ticket: str) -> Principal:
        """The principal a ticket stands for; the ticket is used up. AuthError when it is
        unknown, used or expired."""
        with self._lock:
            entry = self._tickets.pop(_digest(ticket), None)
        if entry is None or entry[1] <= self._clock():
            raise AuthError("unknown, used or expired live ticket; ask POST /api/live/ticket")
        return entry[0]


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("utf-8", "replace")).hexdigest()


_tickets_lock = threading.Lock()


def live_tickets(app: FastAPI) -> LiveTickets:
    """The application's ticket book (made on first use)."""
    with _tickets_lock:
        tickets: LiveTickets | None = getattr(app.state, "live_tickets", None)
        if tickets is None:
            tickets = app.state.live_tickets = LiveTickets()
        return tickets


def live_viewer(
    request: Request,
    services: ServicesDep,
    credentials: Credentials,
    ticket: str | None = Query(
        default=None, description="A ticket from `POST /api/live/ticket` (one use, 30 s)"
    ),
    token: str | None = Query(
        default=None, description="The bearer token (kept for older clients; prefer a ticket)"
    ),
) -> Principal:
    """A viewer token from the Authorization header, a ticket (`?ticket=`) or `?token=`."""
    if credentials is not None:
        return services.tokens.verify(f"{credentials.scheme} {credentials.credentials}")
    if ticket is not None:
        return live_tickets(request.app).redeem(ticket)
    return services.tokens.verify(f"Bearer {token}" if token else None)


@router.post("/api/live/ticket", response_model=LiveTicket)
def live_ticket(
    request: Request, response: Response, principal: Annotated[Principal, Depends(viewer)]
) -> LiveTicket:
    """A ticket to open `/api/live` once within 30 s without a token in the URL (EventSource
    cannot send headers). The bearer token goes in the Authorization header."""
    tickets = live_tickets(request.app)
    response.headers["Cache-Control"] = "no-store"
    return LiveTicket(ticket=tickets.issue(principal), expires_in_s=tickets.ttl_s)


def sse(kind: str, data: dict[str, Any]) -> str:
    """One Server-Sent Event; compact JSON never contains a newline."""
    body = json.dumps(jsonable_encoder(data), separators=(",", ":"), allow_nan=False)
    return f"event: {kind}\ndata: {body}\n\n"


def message_data(message: LiveMessage) -> dict[str, Any]:
    if isinstance(message.payload, EventChange):
        view = EventView.of(message.payload.event)
        return {
            "type": message.payload.transition.value,
            "event": json.loads(view.model_dump_json()),  # NaN scores become null
        }
    change: StateChange = message.payload
    return {
        "camera": change.camera_id,
        "state": change.current.value,
        "previous": change.previous.value,
        "reason": change.reason,
    }


async def live_stream(hub: LiveHub, services: ServicesDep) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()

    def wake() -> None:  # called from runtime and camera threads
        loop.call_soon_threadsafe(woken.set)

    subscription = hub.subscribe(wake)
    try:
        yield f"retry: {RETRY_MS}\n\n"
        next_status = time.monotonic()
        next_keepalive = time.monotonic() + KEEPALIVE_INTERVAL_S
        reported_drops = 0
        while True:
            now = time.monotonic()
            if now >= next_status:
                stats = await run_in_threadpool(services.health.stats)
                yield sse("status", stats)
                next_status = now + STATUS_INTERVAL_S
            if now >= next_keepalive:
                yield ": keepalive\n\n"
                next_keepalive = now + KEEPALIVE_INTERVAL_S
            try:
                timeout = max(0.0, min(next_status, next_keepalive) - time.monotonic())
                await asyncio.wait_for(woken.wait(), timeout)
            except TimeoutError:
                pass
            woken.clear()
            messages = subscription.drain()
            if subscription.dropped > reported_drops:
                yield f": dropped {subscription.dropped - reported_drops}\n\n"
                reported_drops = subscription.dropped
            for message in messages:
                yield sse(message.kind, message_data(message))
            if subscription.closed:
                return
    finally:
        subscription.close()


@router.get(
    "/api/live",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
    dependencies=[Depends(live_viewer)],
)
def live(request: Request, services: ServicesDep) -> StreamingResponse:
    """Events, camera states and node statistics as they happen (Server-Sent Events)."""
    hub: LiveHub = request.app.state.node.live
    return StreamingResponse(
        live_stream(hub, services),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
