"""Durable event storage in SQLite (WAL): an event is committed before anyone hears of it.

The runtime writes each transition here first and publishes afterwards, so a crash can lose a
publication but never an event that was already reported as started. An event a crash left
open is closed by :meth:`EventStore.close_open` when the node starts again.

The schema's version is SQLite's `user_version`; :func:`_migrate` brings an older file up to
date in one transaction when the store opens it (version 1 added `last_time` and `ended_by`,
version 2 the `event_clips` table: each event's short video, written after the event, in a row
of its own so that the event's frequent updates never rewrite it; deleting an event deletes its
clip).

Operator reviews (an event marked true or false) and the detection context of each event (the
option and model that reported it) live in tables of their own, created by
:func:`_add_review_tables` whatever the version: a file without them gains them, and an
older Mainstream that opens the file ignores them. Deleting an event deletes both.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from edge_runtime.detector import ENDED_QUIET, EventRecord

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
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
    snapshot BLOB,
    last_time REAL,
    ended_by TEXT
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (start_time);
CREATE INDEX IF NOT EXISTS events_by_app ON events (app, start_time);
CREATE INDEX IF NOT EXISTS events_by_camera ON events (camera, start_time);
"""
CLIP_STATEMENTS = (
    """
    CREATE TABLE IF NOT EXISTS event_clips (
        event_id TEXT PRIMARY KEY,
        content_type TEXT NOT NULL,
        frames INTEGER NOT NULL,
        duration_s REAL NOT NULL,
        data BLOB NOT NULL
    )
    """,
    """
    CREATE TRIGGER IF NOT EXISTS event_clips_follow_events AFTER DELETE ON events
    BEGIN
        DELETE FROM event_clips WHERE event_id = old.id;
    END
    """,
)


# What an event weighs for retention: its snapshot and clip plus an estimate for the rest of
# its row.
ROW_BYTES_ESTIMATE = 128
_CLIP_BYTES = "COALESCE((SELECT LENGTH(data) FROM event_clips WHERE event_id = events.id), 0)"
_EVENT_BYTES = f"(COALESCE(LENGTH(snapshot), 0) + {_CLIP_BYTES} + {ROW_BYTES_ESTIMATE})"


@dataclass(frozen=True)
class AppUsage:
    """What one app's events take in the store."""

    events: int
    bytes: int  # snapshots and clips plus ROW_BYTES_ESTIMATE per event
    open: int  # events still open (never pruned)
    clips: int = 0  # events with a stored clip
    clip_bytes: int = 0  # of `bytes`, what the clips take


@dataclass(frozen=True)
class StoreUsage:
    """What the event store holds, per app, and its size on disk."""

    apps: dict[str, AppUsage]
    oldest_start_time: float | None
    file_bytes: int

    @property
    def events(self) -> int:
        return sum(app.events for app in self.apps.values())

    @property
    def bytes(self) -> int:
        return sum(app.bytes for app in self.apps.values())


@dataclass(frozen=True)
class StoredClip:
    """An event's video clip as stored: complete, or not there at all."""

    event_id: str
    content_type: str  # e.g. video/webm
    frames: int
    duration_s: float
    data: bytes


@dataclass(frozen=True)
class EventReview:
    """An operator's mark on an event: a real event (`verdict` True) or a false alarm."""

    event_id: str
    verdict: bool
    note: str
    reviewed_at: float  # seconds since the epoch
    reviewed_by: str  # the token's name, or the channel (e.g. "mqtt")


@dataclass(frozen=True)
class DetectionContext:
    """How an event was detected: the app's option in the plan and the model it ran.

    Feedback counts a mark towards an app's estimate only when the event came from the app's
    current package and threshold, and attributes it to the option that reported it.
    """

    event_id: str
    plan_id: int | None
    cut_point: str
    fps: float
    x_vote: int
    package_sha256: str
    threshold: float


class ReviewCounts(NamedTuple):
    """Marks on one app's events on one camera."""

    app: str
    camera: str
    true: int
    false: int
    unreviewed: int


class ReviewedEvent(NamedTuple):
    """One mark with the context its event was detected in (None: not recorded)."""

    event_id: str
    verdict: bool
    context: DetectionContext | None


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
        _migrate(self._connection)
        _add_review_tables(self._connection)

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
                                    frames_analysed, frames_fired, snapshot, last_time, ended_by)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET
                    end_time = excluded.end_time,
                    peak_score = excluded.peak_score,
                    peak_frame = excluded.peak_frame,
                    frames_analysed = excluded.frames_analysed,
                    frames_fired = excluded.frames_fired,
                    snapshot = COALESCE(excluded.snapshot, events.snapshot),
                    last_time = COALESCE(excluded.last_time, events.last_time),
                    ended_by = excluded.ended_by
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
                    event.last_time,
                    _ended_by(event),
                ),
            )

    def close_open(self, ended_by: str) -> list[EventRecord]:
        """Close every event still open, as a crash leaves them, and return them closed.

        An event ends at the last frame the store heard of (`last_time`, else its start), as
        the detector would have ended it; `ended_by` says why. Call before anything analyses
        frames: an event that is open in a running detector would be closed too.
        """
        with self._transaction() as connection:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM events WHERE end_time IS NULL ORDER BY start_time, id"
            ).fetchall()
            connection.execute(
                "UPDATE events SET end_time = COALESCE(last_time, start_time), ended_by = ? "
                "WHERE end_time IS NULL",
                (ended_by,),
            )
        closed = []
        for event in map(_record, rows):
            end_time = event.start_time if event.last_time is None else event.last_time
            closed.append(replace(event, end_time=end_time, ended_by=ended_by))
        return closed

    # -- retention: what is stored, and pruning closed events ----------------------------------

    def usage(self) -> StoreUsage:
        """Events and bytes kept per app, the oldest event, and the file's size on disk.

        Read on a connection of its own where the store is a file (WAL readers do not wait for
        the writer), so that a scan of a large table never holds up the runtime's writes.
        """
        with self._reader() as connection:
            rows = connection.execute(
                f"SELECT app, COUNT(*), SUM({_EVENT_BYTES}), MIN(start_time), "
                f"SUM(end_time IS NULL), SUM({_CLIP_BYTES} > 0), SUM({_CLIP_BYTES}) "
                "FROM events GROUP BY app ORDER BY app"
            ).fetchall()
        apps = {
            str(app): AppUsage(
                events=int(count),
                bytes=int(size or 0),
                open=int(still_open),
                clips=int(clips or 0),
                clip_bytes=int(clip_bytes or 0),
            )
            for app, count, size, _, still_open, clips, clip_bytes in rows
        }
        oldest = min((float(row[3]) for row in rows), default=None)
        return StoreUsage(apps=apps, oldest_start_time=oldest, file_bytes=self._file_bytes())

    def prunable(self, *, ended_before: float | None, max_bytes_per_app: int | None) -> list[str]:
        """Ids of closed events past retention, oldest first: ended before `ended_before`, or
        beyond the newest `max_bytes_per_app` of their app. Open events and events an operator
        marked (the evidence the plan's feedback rests on) are never among them; they still
        count towards their app's bytes."""
        conditions, arguments = [], []
        if ended_before is not None:
            conditions.append("end_time < ?")
            arguments.append(ended_before)
        if max_bytes_per_app is not None:
            conditions.append("newer_bytes > ?")
            arguments.append(max_bytes_per_app)
        if not conditions:
            return []
        with self._reader() as connection:
            rows = connection.execute(
                f"""
                WITH sized AS (
                    SELECT id, start_time, end_time, SUM({_EVENT_BYTES}) OVER (
                        PARTITION BY app ORDER BY start_time DESC, id DESC
                        ROWS UNBOUNDED PRECEDING
                    ) AS newer_bytes
                    FROM events
                )
                SELECT id FROM sized
                WHERE end_time IS NOT NULL AND ({" OR ".join(conditions)})
                    AND NOT EXISTS (SELECT 1 FROM event_reviews WHERE event_id = sized.id)
                ORDER BY start_time, id
                """,
                arguments,
            ).fetchall()
        return [str(row[0]) for row in rows]

    def delete_closed(self, event_ids: Sequence[str]) -> int:
        """Delete these events in one transaction, with their snapshots (in the row), their
        clips and detection contexts (triggers); an event that is open, marked by an operator meanwhile,
        or never stored is left alone. Returns how many were deleted."""
        if not event_ids:
            return 0
        marks = ", ".join("?" for _ in event_ids)
        with self._transaction() as connection:
            cursor = connection.execute(
                f"DELETE FROM events WHERE end_time IS NOT NULL AND id IN ({marks}) "
                "AND NOT EXISTS (SELECT 1 FROM event_reviews WHERE event_id = events.id)",
                tuple(event_ids),
            )
        return int(cursor.rowcount)

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection of its own for a file, else the shared one under the lock."""
        if str(self.path) == ":memory:":
            with self._lock:
                yield self._connection
            return
        connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            yield connection
        finally:
            connection.close()

    def _file_bytes(self) -> int:
        """The database and its write-ahead log on disk (freed pages are reused, not returned)."""
        if str(self.path) == ":memory:":
            return 0
        files = (self.path, self.path.with_name(self.path.name + "-wal"))
        return sum(path.stat().st_size for path in files if path.exists())

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

    def save_clip(self, clip: StoredClip) -> bool:
        """Store an event's finished clip in one transaction (a crash leaves the whole clip or
        none), replacing an earlier one; False when the event is gone (pruned meanwhile)."""
        with self._transaction() as connection:
            if (
                connection.execute("SELECT 1 FROM events WHERE id = ?", (clip.event_id,)).fetchone()
                is None
            ):
                return False
            connection.execute(
                "INSERT OR REPLACE INTO event_clips (event_id, content_type, frames, duration_s, "
                "data) VALUES (?, ?, ?, ?, ?)",
                (clip.event_id, clip.content_type, clip.frames, clip.duration_s, clip.data),
            )
        return True

    def clip(self, event_id: str) -> StoredClip | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT event_id, content_type, frames, duration_s, data FROM event_clips "
                "WHERE event_id = ?",
                (event_id,),
            ).fetchone()
        if row is None:
            return None
        return StoredClip(str(row[0]), str(row[1]), int(row[2]), float(row[3]), bytes(row[4]))

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

    # -- reviews and detection contexts ----------------------------------------------------------

    def save_context(self, context: DetectionContext) -> None:
        """Record how an event was detected; the first record of an event is kept."""
        with self._transaction() as connection:
            connection.execute(
                "INSERT OR IGNORE INTO event_contexts (event_id, plan_id, cut_point, fps, "
                "x_vote, package_sha256, threshold) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    context.event_id,
                    context.plan_id,
                    context.cut_point,
                    context.fps,
                    context.x_vote,
                    context.package_sha256,
                    context.threshold,
                ),
            )

    def context(self, event_id: str) -> DetectionContext | None:
        with self._lock:
            row = self._connection.execute(
                f"SELECT {_CONTEXT_COLUMNS} FROM event_contexts WHERE event_id = ?", (event_id,)
            ).fetchone()
        return _context(row) if row else None

    def review(self, review: EventReview) -> bool:
        """Store a mark, replacing the event's earlier one; False when there is no such event."""
        with self._transaction() as connection:
            if (
                connection.execute(
                    "SELECT 1 FROM events WHERE id = ?", (review.event_id,)
                ).fetchone()
                is None
            ):
                return False
            connection.execute(
                """
                INSERT INTO event_reviews (event_id, verdict, note, reviewed_at, reviewed_by)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(event_id) DO UPDATE SET
                    verdict = excluded.verdict,
                    note = excluded.note,
                    reviewed_at = excluded.reviewed_at,
                    reviewed_by = excluded.reviewed_by
                """,
                (
                    review.event_id,
                    int(review.verdict),
                    review.note,
                    review.reviewed_at,
                    review.reviewed_by,
                ),
            )
        return True

    def clear_review(self, event_id: str) -> bool:
        """Remove an event's mark; False when it had none."""
        with self._transaction() as connection:
            cursor = connection.execute("DELETE FROM event_reviews WHERE event_id = ?", (event_id,))
        return cursor.rowcount > 0

    def reviews(self, event_ids: Sequence[str]) -> dict[str, EventReview]:
        """The marks of these events (those without one are left out)."""
        found: dict[str, EventReview] = {}
        ids = list(dict.fromkeys(event_ids))
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            with self._lock:
                rows = self._connection.execute(
                    f"SELECT {_REVIEW_COLUMNS} FROM event_reviews WHERE event_id IN ({marks})",
                    chunk,
                ).fetchall()
            found.update((str(row[0]), _review(row)) for row in rows)
        return found

    def review_counts(self) -> list[ReviewCounts]:
        """Marked true, marked false and unmarked events per app and camera."""
        with self._lock:
            rows = self._connection.execute(
                """
                SELECT e.app, e.camera,
                       COALESCE(SUM(r.verdict = 1), 0), COALESCE(SUM(r.verdict = 0), 0),
                       COALESCE(SUM(r.event_id IS NULL), 0)
                FROM events e LEFT JOIN event_reviews r ON r.event_id = e.id
                GROUP BY e.app, e.camera ORDER BY e.app, e.camera
                """
            ).fetchall()
        return [ReviewCounts(str(a), str(c), int(t), int(f), int(u)) for a, c, t, f, u in rows]

    def reviewed(self, app: str, camera: str) -> list[ReviewedEvent]:
        """Every mark on the app's events on the camera, with each event's detection context."""
        with self._lock:
            rows = self._connection.execute(
                f"""
                SELECT r.event_id, r.verdict, {_CONTEXT_COLUMNS_OF_C}
                FROM event_reviews r JOIN events e ON e.id = r.event_id
                LEFT JOIN event_contexts c ON c.event_id = r.event_id
                WHERE e.app = ? AND e.camera = ? ORDER BY e.start_time, e.id
                """,
                (app, camera),
            ).fetchall()
        return [
            ReviewedEvent(str(row[0]), bool(row[1]), _context(row[2:]) if row[2] else None)
            for row in rows
        ]


_COLUMNS = (
    "id, app, camera, start_time, end_time, peak_score, peak_frame, frames_analysed, "
    "frames_fired, last_time, ended_by, "
    "EXISTS (SELECT 1 FROM event_clips WHERE event_clips.event_id = events.id)"
)

# Columns each schema version added to the events table, with their SQL types.
_ADDED_COLUMNS: dict[int, tuple[tuple[str, str], ...]] = {
    1: (("last_time", "REAL"), ("ended_by", "TEXT")),
}
# Tables (and their triggers) each schema version added; every statement is IF NOT EXISTS.
_ADDED_TABLES: dict[int, tuple[str, ...]] = {2: CLIP_STATEMENTS}


def _migrate(connection: sqlite3.Connection) -> None:
    """Create the schema, or bring an older one up to `SCHEMA_VERSION`, in one transaction.

    Only columns are added (nullable, so existing rows stay valid); a column that is already
    there is left alone, so an interrupted or repeated migration is harmless. A file from a
    newer version is used as it is: its extra columns are ignored.
    """
    connection.execute("BEGIN IMMEDIATE")  # one process migrates; others wait, then see it
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        existing = {row[1] for row in connection.execute("PRAGMA table_info(events)")}
        if not existing:  # a new file
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            for statements in _ADDED_TABLES.values():
                for statement in statements:
                    connection.execute(statement)
        else:
            for added in range(version + 1, SCHEMA_VERSION + 1):
                for column, sql_type in _ADDED_COLUMNS.get(added, ()):
                    if column not in existing:
                        connection.execute(f"ALTER TABLE events ADD COLUMN {column} {sql_type}")
                for statement in _ADDED_TABLES.get(added, ()):
                    connection.execute(statement)
            for statement in SCHEMA.split(";"):  # the indexes (IF NOT EXISTS)
                if statement.strip().startswith("CREATE INDEX"):
                    connection.execute(statement)
        if version < SCHEMA_VERSION:
            if existing:
                logger.info("events: schema %d migrated to %d", version, SCHEMA_VERSION)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            logger.warning(
                "events: the database has schema %d, newer than this version's %d",
                version,
                SCHEMA_VERSION,
            )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _ended_by(event: EventRecord) -> str | None:
    """Why a closed event ended; a closed record that does not say ended normally."""
    if event.end_time is None:
        return None
    return event.ended_by or ENDED_QUIET


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
        last_time=None if row[9] is None else float(row[9]),  # type: ignore[arg-type]
        ended_by=None if row[4] is None else str(row[10] or ENDED_QUIET),
        has_clip=bool(row[11]),
    )


_IDS_PER_QUERY = 500  # below SQLite's limit on bound parameters
_REVIEW_COLUMNS = "event_id, verdict, note, reviewed_at, reviewed_by"
_CONTEXT_COLUMNS = "event_id, plan_id, cut_point, fps, x_vote, package_sha256, threshold"
_CONTEXT_COLUMNS_OF_C = ", ".join(f"c.{name}" for name in _CONTEXT_COLUMNS.split(", "))
REVIEW_STATEMENTS = (
    """
    CREATE TABLE IF NOT EXISTS event_reviews (
        event_id TEXT PRIMARY KEY,
        verdict INTEGER NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        reviewed_at REAL NOT NULL,
        reviewed_by TEXT NOT NULL DEFAULT ''
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS event_contexts (
        event_id TEXT PRIMARY KEY,
        plan_id INTEGER,
        cut_point TEXT NOT NULL,
        fps REAL NOT NULL,
        x_vote INTEGER NOT NULL,
        package_sha256 TEXT NOT NULL,
        threshold REAL NOT NULL
    )
    """,
    """
    CREATE TRIGGER IF NOT EXISTS event_reviews_follow_events AFTER DELETE ON events
    BEGIN
        DELETE FROM event_reviews WHERE event_id = old.id;
        DELETE FROM event_contexts WHERE event_id = old.id;
    END
    """,
)


def _add_review_tables(connection: sqlite3.Connection) -> None:
    """Create the review and detection-context tables when missing (one transaction).

    Independent of `user_version`: the tables are only ever added, so the step is safe to
    repeat, and a trigger removes an event's mark and context with the event, however the
    event is deleted.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in REVIEW_STATEMENTS:
            connection.execute(statement)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _review(row: tuple[object, ...]) -> EventReview:
    return EventReview(
        event_id=str(row[0]),
        verdict=bool(row[1]),
        note=str(row[2] or ""),
        reviewed_at=float(row[3]),  # type: ignore[arg-type]
        reviewed_by=str(row[4] or ""),
    )


def _context(row: Sequence[object]) -> DetectionContext:
    return DetectionContext(
        event_id=str(row[0]),
        plan_id=None if row[1] is None else int(row[1]),  # type: ignore[call-overload]
        cut_point=str(row[2]),
        fps=float(row[3]),  # type: ignore[arg-type]
        x_vote=int(row[4]),  # type: ignore[call-overload]
        package_sha256=str(row[5]),
        threshold=float(row[6]),  # type: ignore[arg-type]
    )
