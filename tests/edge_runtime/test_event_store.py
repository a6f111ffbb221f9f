import sqlite3
from dataclasses import replace
from pathlib import Path

from edge_runtime.detector import EventRecord
from edge_runtime.event_store import (
    DetectionContext,
    EventQuery,
    EventReview,
    EventStore,
    ReviewCounts,
    ReviewedEvent,
)


def make_event(event_id: str, app: str = "trains", start: float = 1.0) -> EventRecord:
    return EventRecord(event_id, app, "cam0", start, None, 0.7, 3, 1, 1)


def test_save_update_and_query(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    store.save(make_event("a"), b"\xff\xd8jpeg")
    store.save(make_event("b", app="people", start=5.0))
    store.save(replace(make_event("a"), end_time=4.0, peak_score=0.9, frames_analysed=4))
    assert store.count() == 2
    event = store.get("a")
    assert event is not None and event.end_time == 4.0 and event.peak_score == 0.9
    assert store.snapshot("a") == b"\xff\xd8jpeg"  # kept when an update carries none
    assert [e.id for e in store.query(EventQuery(app="people"))] == ["b"]
    assert [e.id for e in store.query(EventQuery(since=2.0))] == ["b"]
    assert [e.id for e in store.query(EventQuery(limit=1, offset=1))] == ["b"]
    assert store.get("missing") is None


def test_a_started_event_survives_an_abrupt_close(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = EventStore(path)
    store.save(make_event("started"))
    # Another process reads it straight away, without the writer closing cleanly.
    with sqlite3.connect(path) as reader:
        assert reader.execute("SELECT id FROM events").fetchall() == [("started",)]
    assert EventStore(path).get("started") is not None


OLD_SCHEMA = """
CREATE TABLE events (
    id TEXT PRIMARY KEY, app TEXT NOT NULL, camera TEXT NOT NULL, start_time REAL NOT NULL,
    end_time REAL, peak_score REAL NOT NULL, peak_frame INTEGER NOT NULL,
    frames_analysed INTEGER NOT NULL, frames_fired INTEGER NOT NULL, snapshot BLOB
);
INSERT INTO events VALUES ('ended', 'trains', 'cam0', 1.0, 3.0, 0.8, 2, 5, 5, x'ffd8');
INSERT INTO events VALUES ('left-open', 'trains', 'cam0', 7.0, NULL, 0.6, 9, 2, 2, NULL);
"""


def test_an_old_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as old:
        old.executescript(OLD_SCHEMA)
    store = EventStore(path)
    ended = store.get("ended")
    assert ended is not None and (ended.end_time, ended.ended_by) == (3.0, "quiet")
    assert ended.last_time is None and store.snapshot("ended") == b"\xff\xd8"
    left_open = store.get("left-open")
    assert left_open is not None and left_open.end_time is None and left_open.ended_by is None
    store.close()
    again = EventStore(path)  # opening it again changes nothing
    assert again.count() == 2
    with sqlite3.connect(path) as reader:
        assert reader.execute("PRAGMA user_version").fetchone() == (1,)
        columns = [row[1] for row in reader.execute("PRAGMA table_info(events)")]
    assert columns[-2:] == ["last_time", "ended_by"]
    # Without a stored frame time, an event left open ends where it started.
    [closed] = again.close_open("restart")
    assert (closed.id, closed.end_time, closed.ended_by) == ("left-open", 7.0, "restart")


def test_events_left_open_close_at_their_last_stored_frame(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    store.save(replace(make_event("open", start=10.0), last_time=10.0), b"\xff\xd8")
    store.save(replace(make_event("open", start=10.0), last_time=14.5, frames_analysed=6))
    store.save(replace(make_event("done"), end_time=2.0, last_time=2.0, ended_by="stopped"))
    closed = store.close_open("restart")
    assert [(e.id, e.end_time, e.ended_by, e.frames_analysed) for e in closed] == [
        ("open", 14.5, "restart", 6)
    ]
    assert store.get("open") == closed[0]
    assert store.snapshot("open") == b"\xff\xd8"
    done = store.get("done")
    assert done is not None and (done.end_time, done.ended_by) == (2.0, "stopped")
    assert store.close_open("restart") == []


def context(event_id: str, cut_point: str = "conv_pw_11_relu", x_vote: int = 1) -> DetectionContext:
    return DetectionContext(event_id, 3, cut_point, 0.5, x_vote, "ab" * 32, 0.5)


def test_marks_are_stored_replaced_cleared_and_kept_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = EventStore(path)
    for name, app in (("a", "trains"), ("b", "trains"), ("c", "trains"), ("d", "people")):
        store.save(make_event(name, app=app))
    store.save_context(context("a"))
    store.save_context(context("a", cut_point="conv_pw_13_relu"))  # the first context stays
    assert store.review(EventReview("a", True, "a train", 10.0, "ops"))
    assert store.review(EventReview("a", False, "a bus after all", 11.0, "ops"))  # replaces
    assert store.review(EventReview("b", False, "", 12.0, "mqtt"))
    assert store.review(EventReview("c", True, "", 13.0, "ops"))
    assert not store.review(EventReview("missing", True, "", 14.0, "ops"))
    assert store.clear_review("c") and not store.clear_review("c")
    store.close()

    again = EventStore(path)
    assert again.reviews(["a", "b", "c", "missing"]) == {
        "a": EventReview("a", False, "a bus after all", 11.0, "ops"),
        "b": EventReview("b", False, "", 12.0, "mqtt"),
    }
    assert again.review_counts() == [
        ReviewCounts("people", "cam0", 0, 0, 1),
        ReviewCounts("trains", "cam0", 0, 2, 1),
    ]
    assert again.reviewed("trains", "cam0") == [
        ReviewedEvent("a", False, context("a")),
        ReviewedEvent("b", False, None),  # no context recorded: detected before it was kept
    ]
    assert again.context("a") == context("a")


def test_deleting_an_event_deletes_its_mark_and_context(tmp_path: Path) -> None:
    """However events are pruned, their marks and contexts go with them (a trigger)."""
    path = tmp_path / "events.db"
    store = EventStore(path)
    store.save(make_event("gone"))
    store.save_context(context("gone"))
    store.review(EventReview("gone", True, "", 1.0, "ops"))
    with sqlite3.connect(path) as other:
        other.execute("DELETE FROM events WHERE id = 'gone'")
    assert store.reviews(["gone"]) == {} and store.context("gone") is None
    assert store.review_counts() == []


def test_an_old_file_gains_the_review_tables(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as old:
        old.executescript(OLD_SCHEMA)
    store = EventStore(path)
    assert store.review(EventReview("ended", True, "", 1.0, "ops"))
    assert store.review_counts() == [ReviewCounts("trains", "cam0", 1, 0, 1)]
