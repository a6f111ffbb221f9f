"""An in-process broadcast of what happens on the node, for live views (the `/api/live` stream).

The hub is a runtime event listener and a camera state listener, like the sinks. Every
subscriber has its own bounded queue: a client that reads too slowly loses its oldest messages
(they are counted), and publishing never waits for anyone, so the runtime is never held up by a
browser tab.

    hub = LiveHub()
    subscription = hub.subscribe(wake=lambda: ...)   # `wake` is called after each new message
    for message in subscription.drain(): ...         # LiveMessage(kind, payload)
    subscription.close()

Payloads are the changes themselves (`EventChange`, `StateChange`); the API turns them into
JSON, so this module knows nothing of HTTP.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from edge_runtime.camera import StateChange
from edge_runtime.detector import EventChange

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 256

MessageKind = Literal["event", "camera"]


@dataclass(frozen=True)
class LiveMessage:
    kind: MessageKind
    payload: EventChange | StateChange


class LiveSubscription:
    """One subscriber's queue. Thread-safe; read it with `drain()` or `wait()`."""

    def __init__(self, hub: LiveHub, queue_size: int, wake: Callable[[], None] | None) -> None:
        self._hub = hub
        self._queue: deque[LiveMessage] = deque(maxlen=queue_size)
        self._condition = threading.Condition()
        self._wake = wake
        self._closed = False
        self.dropped = 0  # messages lost because this subscriber fell behind

    @property
    def closed(self) -> bool:
        with self._condition:
            return self._closed

    def put(self, message: LiveMessage) -> bool:
        """Queue a message; when the queue is full the oldest one goes (True). Never blocks."""
        with self._condition:
            if self._closed:
                return False
            dropped = len(self._queue) == self._queue.maxlen
            if dropped:
                self.dropped += 1
            self._queue.append(message)
            self._condition.notify_all()
        self._call_wake()
        return dropped

    def drain(self) -> list[LiveMessage]:
        """Every queued message, oldest first; the queue is empty afterwards."""
        with self._condition:
            messages = list(self._queue)
            self._queue.clear()
            return messages

    def wait(self, timeout_s: float) -> list[LiveMessage]:
        """Block until something is queued (or closed, or `timeout_s` passed), then drain."""
        with self._condition:
            self._condition.wait_for(lambda: bool(self._queue) or self._closed, timeout_s)
        return self.drain()

    def close(self) -> None:
        """Stop receiving; the consumer is woken so that it can notice."""
        with self._condition:
            if self._closed:
                return
            self._closed = True
            self._condition.notify_all()
        self._hub._forget(self)
        self._call_wake()

    def _call_wake(self) -> None:
        if self._wake is None:
            return
        try:
            self._wake()
        except Exception:  # e.g. the consumer's event loop is gone; it will not read again
            logger.debug("live: waking a subscriber failed", exc_info=True)


class LiveHub:
    """Fans event changes and camera state changes out to every subscriber."""

    name = "live"

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._subscriptions: list[LiveSubscription] = []
        self._closed = False
        self._published = 0
        self._dropped = 0

    def subscribe(
        self, wake: Callable[[], None] | None = None, queue_size: int | None = None
    ) -> LiveSubscription:
        """A new subscription; after `close()` of the hub it comes back already closed.

        `wake` is called (from the publishing thread) after each message is queued and when the
        subscription closes; it must return at once, e.g. `loop.call_soon_threadsafe(event.set)`.
        """
        subscription = LiveSubscription(self, queue_size or self.queue_size, wake)
        with self._lock:
            closed = self._closed
            if not closed:
                self._subscriptions.append(subscription)
        if closed:
            subscription.close()
        return subscription

    def publish(self, message: LiveMessage) -> None:
        with self._lock:
            if self._closed:
                return
            self._published += 1
            subscriptions = list(self._subscriptions)
        dropped = sum(subscription.put(message) for subscription in subscriptions)
        if dropped:
            with self._lock:
                self._dropped += dropped

    def __call__(self, change: EventChange) -> None:
        """Runtime event listener."""
        self.publish(LiveMessage("event", change))

    def on_camera_state(self, change: StateChange) -> None:
        """Camera state listener."""
        self.publish(LiveMessage("camera", change))

    def close(self) -> None:
        """End every subscription (live streams finish) and refuse new ones."""
        with self._lock:
            self._closed = True
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()

    def stats(self) -> dict[str, int | float | bool]:
        """subscribers (now), published (messages since start), dropped (oldest messages a
        slow subscriber lost, since start)."""
        with self._lock:
            return {
                "subscribers": len(self._subscriptions),
                "published": self._published,
                "dropped": self._dropped,
            }

    def _forget(self, subscription: LiveSubscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
