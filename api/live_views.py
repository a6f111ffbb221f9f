"""Live camera views: MJPEG streams of the latest frames with the apps' scores drawn on them.

A browser shows `multipart/x-mixed-replace` in a plain `<img>`, so the dashboard needs no
polling and no script to play it. Each view sends a frame only when the camera has a new one,
at most `fps` a second, and the number of views at once is bounded (`api.max_live_views`),
so that watching never competes with detection for more than a few JPEG encodings.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

from fastapi import Request

from mainstream.core.errors import BusyError

BOUNDARY = "frame"
MEDIA_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"


class LiveViewSlots:
    """How many live views are open; refuses one more than the setting allows."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.open >= self.limit:
                raise BusyError(
                    f"{self.open} live views are open, the most api.max_live_views allows"
                )
            self.open += 1

    def give_back(self) -> None:
        with self._lock:
            self.open = max(0, self.open - 1)


def part(jpeg: bytes) -> bytes:
    """One frame of the multipart stream."""
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    return head.encode("ascii") + jpeg + b"\r\n"


async def frames(
    request: Request,
    first: tuple[int, bytes],
    latest: Callable[[], tuple[int, bytes]],
    fps: float,
    slots: LiveViewSlots,
) -> AsyncIterator[bytes]:
    """The stream's parts: the first frame at once, then each new frame at most `fps` a second,
    until the client leaves or the camera stops (the slot is given back either way)."""
    try:
        sequence, jpeg = first
        yield part(jpeg)
        while not await request.is_disconnected():
            await asyncio.sleep(1.0 / fps)
            try:
                newest, jpeg = await asyncio.to_thread(latest)
            except Exception:  # the camera stopped or was removed: end the stream
                return
            if newest != sequence:
                sequence = newest
                yield part(jpeg)
    finally:
        slots.give_back()
