import sqlite3
from dataclasses import replace
from pathlib import Path

from edge_runtime.detector import EventRecord
from edge_runtime.event_store import EventQuery, EventStore


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
