"""`GET /api/live`: what happens on the node, as it happens (Server-Sent Events).

    event: event    data: {"type": "new"|"update"|"end", "event": <the event as /api/events has it>}
    event: camera   data: {"camera": "<id>", "state": "...", "previous": "...", "reason": "..."}
    event: status   data: <the /api/stats JSON>, at once and then every 2 s
    : keepalive     every 15 s, so that proxies keep the connection open

Browsers' EventSource cannot send headers, so the token may also come as `?token=...`. A client
that reads too slowly loses the oldest messages (a `: dropped N` comment says how many); the
node never waits for it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse

from api.deps import Credentials, ServicesDep
from edge_runtime.camera import StateChange
from edge_runtime.detector import EventChange
from edge_runtime.live import LiveHub, LiveMessage
from mainstream.node.services import EventView, Principal

router = APIRouter(tags=["live"])

STATUS_INTERVAL_S = 2.0
KEEPALIVE_INTERVAL_S = 15.0
RETRY_MS = 3000  # how long EventSource waits before reconnecting


def live_viewer(
    services: ServicesDep,
    credentials: Credentials,
    token: str | None = Query(default=None, description="The bearer token, for EventSource"),
) -> Principal:
    """A viewer token from the Authorization header or from `?token=`."""
    if credentials is not None:
        return services.tokens.verify(f"{credentials.scheme} {credentials.credentials}")
    return services.tokens.verify(f"Bearer {token}" if token else None)


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
