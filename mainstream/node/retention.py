"""Retention: a background task deletes events (with their snapshots and clips) past
`retention.*`.

An event's snapshot lives in its own row, and triggers delete its clip and detection context
with it (edge_runtime/event_store.py), so one SQLite transaction removes them all: a crash leaves all
or none, and nothing can dangle. Only closed, unmarked events are pruned: an event still open,
or one an operator marked (the evidence feedback plans with), is kept however old, and counts
towards its app's size. Deletion goes in batches of `retention.batch_size` events, each its
own short transaction, and the scan for what to delete reads on a connection of its own, so
the runtime's writes never wait long.
Freed pages of the database file are reused by new events; the file does not shrink.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_runtime.event_store import EventStore, StoreUsage
from mainstream.node.settings import RetentionSettings

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400.0
MB = 1_000_000


@dataclass(frozen=True)
class PruneResult:
    """One pruning pass: when it ran, what it deleted, what is left."""

    at: float
    deleted: int
    seconds: float
    usage: StoreUsage


class RetentionKeeper:
    """Prunes the event store on a thread of its own every `interval_s`, and once at start."""

    def __init__(
        self,
        store: EventStore,
        settings: RetentionSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()  # one pass at a time; guards the figures below
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: PruneResult | None = None
        self._deleted_total = 0
        self._passes = 0
        self._last_error: str | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the task; a batch in progress finishes first (it is one short transaction)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.prune()
            except Exception as error:  # a damaged file must not end the task
                logger.exception("pruning events failed")
                with self._lock:
                    self._last_error = str(error)
            if self._stop.wait(self.settings.interval_s):
                return

    def prune(self) -> PruneResult:
        """Delete the closed events past retention now, oldest first, in batches."""
        with self._lock:
            started = time.monotonic()
            now = self._clock()
            days, max_mb = self.settings.days, self.settings.max_mb_per_app
            doomed = self.store.prunable(
                ended_before=None if days is None else now - days * SECONDS_PER_DAY,
                max_bytes_per_app=None if max_mb is None else int(max_mb * MB),
            )
            deleted = 0
            size = self.settings.batch_size
            for first in range(0, len(doomed), size):
                if self._stop.is_set() and first:
                    break  # shutting down: the rest waits for the next start
                deleted += self.store.delete_closed(doomed[first : first + size])
            result = PruneResult(
                at=now,
                deleted=deleted,
                seconds=time.monotonic() - started,
                usage=self.store.usage(),
            )
            self._last = result
            self._deleted_total += deleted
            self._passes += 1
            self._last_error = None
        if deleted:
            logger.info(
                "retention: deleted %d event(s) in %.2f s; %d kept",
                deleted,
                result.seconds,
                result.usage.events,
            )
        return result

    def stats(self) -> dict[str, Any]:
        """The settings in force and the figures of the last pass (JSON-ready, for /api/stats).

        Figures come from the last pass rather than a fresh scan: /api/stats is read every
        2 s by each open dashboard, and a scan of a large store is not free.
        """
        with self._lock:
            last, deleted_total, passes, error = (
                self._last,
                self._deleted_total,
                self._passes,
                self._last_error,
            )
        usage = last.usage if last else None
        return {
            "days": self.settings.days,
            "max_mb_per_app": self.settings.max_mb_per_app,
            "interval_s": self.settings.interval_s,
            "events_kept": usage.events if usage else None,
            "bytes": usage.bytes if usage else None,
            "file_bytes": usage.file_bytes if usage else None,
            "oldest_start_time": usage.oldest_start_time if usage else None,
            "apps": {
                name: {
                    "events": app.events,
                    "bytes": app.bytes,
                    "open": app.open,
                    "clips": app.clips,
                    "clip_bytes": app.clip_bytes,
                }
                for name, app in (usage.apps.items() if usage else ())
            },
            "last_prune_at": last.at if last else None,
            "last_prune_seconds": last.seconds if last else None,
            "last_pruned": last.deleted if last else None,
            "pruned_total": deleted_total,
            "passes": passes,
            "last_error": error,
        }
