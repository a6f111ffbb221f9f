"""Durable event storage in SQLite (WAL): an event is committed before anyone hears of it.

The runtime writes each transition here first and publishes afterwards, so a crash can lose a
publication but never an event that was already reported as started.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.detector import EventRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    camera TEXT NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    peak_score REAL NOT NULL,
    peak_frame INTEGER NOT NULL,
    frames_analysed INTEGER NOT NULL,
    frames_fired INTEGER NOT NULL,
    snapshot BLOB
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (start_time);
CREATE INDEX IF NOT EXISTS events_by_app ON events (app, start_time);
CREATE INDEX IF NOT EXISTS events_by_camera ON events (camera, start_time);
"""


@dataclass(frozen=True)
class EventQuery:
    app: str | None = None
    camera: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    offset: int = 0


class EventStore:
    """Thread-safe event table; one connection guarded by a lock (writes are small and rare)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def save(self, event: EventRecord, snapshot_jpeg: bytes | None = None) -> None:
        """Insert or update an event; a new snapshot replaces the old one, None keeps it."""
        with self._transaction() as connection:
            connection.execute(
                """
                INSERT INTO events (id, app, camera, start_time, end_time, peak_score, peak_frame,
                                    frames_analysed, frames_fired, snapshot)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET
                    end_time = excluded.end_time,
                    peak_score = excluded.peak_score,
                    peak_frame = excluded.peak_frame,
                    frames_analysed = excluded.frames_analysed,
                    frames_fired = excluded.frames_fired,
                    snapshot = COALESCE(excluded.snapshot, events.snapshot)
                """,
                (
                    event.id,
                    event.app,
                    event.camera,
                    event.start_time,
                    event.end_time,
                    event.peak_score,
                    event.peak_frame,
                    event.frames_analysed,
                    event.frames_fired,
                    snapshot_jpeg,
                ),
            )

    def get(self, event_id: str) -> EventRecord | None:
        with self._lock:
            row = self._connection.execute(
                f"SELECT {_COLUMNS} FROM events WHERE id = ?", (event_id,)
            ).fetchone()
        return _record(row) if row else None

    def snapshot(self, event_id: str) -> bytes | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT snapshot FROM events WHERE id = ?", (event_id,)
            ).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def query(self, query: EventQuery) -> list[EventRecord]:
        clauses: list[str] = []
        arguments: list[object] = []
        for column, value, operator in (
            ("app", query.app, "="),
            ("camera", query.camera, "="),
            ("start_time", query.since, ">="),
            ("start_time", query.until, "<"),
        ):
            if value is not None:
                clauses.append(f"{column} {operator} ?")
                arguments.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._connection.execute(
                f"SELECT {_COLUMNS} FROM events {where} ORDER BY start_time, id LIMIT ? OFFSET ?",
                (*arguments, query.limit, query.offset),
            ).fetchall()
        return [_record(row) for row in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM events").fetchone()[0])


_COLUMNS = (
    "id, app, camera, start_time, end_time, peak_score, peak_frame, frames_analysed, frames_fired"
)


def _record(row: tuple[object, ...]) -> EventRecord:
    return EventRecord(
        id=str(row[0]),
        app=str(row[1]),
        camera=str(row[2]),
        start_time=float(row[3]),  # type: ignore[arg-type]
        end_time=None if row[4] is None else float(row[4]),  # type: ignore[arg-type]
        peak_score=float(row[5]),  # type: ignore[arg-type]
        peak_frame=int(row[6]),  # type: ignore[call-overload]
        frames_analysed=int(row[7]),  # type: ignore[call-overload]
        frames_fired=int(row[8]),  # type: ignore[call-overload]
    )
