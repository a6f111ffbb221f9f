"""At most a few reads are worked on at once, so that the API cannot starve detection.

The runtime's threads share this process (and its interpreter lock) with the API. Fifty
clients asking for a thousand events each kept fifty worker threads runnable, and the
detection thread, which needs the lock between model calls, got it rarely: the analysed rate
fell by a third. :class:`ReadGate` lets `max_concurrent` reads (GETs, and dry runs, which plan
but change nothing) run; the others wait on the event loop, where waiting costs nothing, in
arrival order. Server-Sent Events and health checks are
not gated (a live stream lasts for hours and a load balancer must get its answer), nor are
file downloads.
"""

from __future__ import annotations

import asyncio

from api.limits import ASGIApp, Receive, Scope, Send

GATED_POSTS = ("/api/schedule/dry-run",)
"""Requests that only read although they are POSTs: a dry run plans (up to the scheduler's
time limit of CPU) and changes nothing."""

UNGATED_PREFIXES = ("/api/live", "/api/health/", "/ui/")
UNGATED_SUFFIXES = ("/archive", "/weights", "/stream.mjpg")
"""Paths that are never queued: long-lived streams, health checks, the dashboard's files, and
file downloads (a slow client would hold a place for minutes, using no CPU)."""


class ReadGate:
    """ASGI middleware: at most `max_concurrent` reads in the application at once."""

    def __init__(self, app: ASGIApp, *, max_concurrent: int) -> None:
        self.app = app
        self.max_concurrent = max_concurrent
        self._semaphore: asyncio.Semaphore | None = None  # made on the server's event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _gated(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrent)
        async with self._semaphore:
            await self.app(scope, receive, send)


def _gated(method: str, path: str) -> bool:
    if method == "POST":
        return path.rstrip("/") in GATED_POSTS
    if method not in ("GET", "HEAD"):
        return False
    return not (path.startswith(UNGATED_PREFIXES) or path.endswith(UNGATED_SUFFIXES))
