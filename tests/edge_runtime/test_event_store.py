import sqlite3
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.detector import EventRecord
from edge_runtime.event_store import (
    ROW_BYTES_ESTIMATE,
    AppUsage,
    DetectionContext,
    EventQuery,
    EventReview,
    EventStore,
    ReviewCounts,
    ReviewedEvent,
    StoredClip,
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
        assert reader.execute("PRAGMA user_version").fetchone() == (2,)
        columns = [row[1] for row in reader.execute("PRAGMA table_info(events)")]
        tables = {row[0] for row in reader.execute("SELECT name FROM sqlite_master")}
    assert columns[-2:] == ["last_time", "ended_by"]
    assert "event_clips" in tables and "event_clips_follow_events" in tables  # version 2
    assert again.save_clip(StoredClip("ended", "video/webm", 3, 0.6, b"webm"))
    assert again.get("ended") == replace(ended, has_clip=True)
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


# ---------------------------------------------------------------------------------------------
# Retention: usage, what is past retention, deleting closed events


def closed(event_id: str, app: str, start: float, end: float) -> EventRecord:
    return replace(make_event(event_id, app, start), end_time=end)


def test_usage_counts_events_bytes_and_open_ones_per_app(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    empty = store.usage()
    assert (empty.apps, empty.oldest_start_time, empty.events, empty.bytes) == ({}, None, 0, 0)
    store.save(closed("a", "trains", 5.0, 6.0), b"x" * 1000)
    store.save(make_event("b", "trains", 9.0))
    store.save(closed("c", "buses", 2.0, 3.0))
    usage = store.usage()
    assert usage.apps == {
        "buses": AppUsage(events=1, bytes=ROW_BYTES_ESTIMATE, open=0),
        "trains": AppUsage(events=2, bytes=1000 + 2 * ROW_BYTES_ESTIMATE, open=1),
    }
    assert (usage.events, usage.oldest_start_time) == (3, 2.0)
    assert usage.file_bytes >= (tmp_path / "events.db").stat().st_size > 0


def test_open_and_marked_events_are_never_prunable_nor_deleted_however_old(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    store = EventStore(path)
    store.save(make_event("open-since-long", "trains", 1.0), b"j" * 5000)
    store.save(closed("marked", "trains", 2.0, 3.0), b"j" * 5000)
    store.save(closed("stale", "trains", 4.0, 5.0), b"j" * 5000)
    store.save(closed("new", "trains", 50.0, 51.0), b"j" * 10)
    assert store.review(EventReview("marked", False, "a cat", 60.0, "test"))
    store.save_context(DetectionContext("stale", 1, "conv_pw_11_relu", 2.0, 1, "ab" * 32, 0.5))
    doomed = store.prunable(ended_before=10.0, max_bytes_per_app=1)
    assert doomed == ["stale", "new"]  # everything closed is over 1 byte, oldest first
    everything = ["open-since-long", "marked", *doomed, "never-stored"]
    assert store.delete_closed(everything) == 2  # asked to, it still spares open and marked
    assert [event.id for event in store.query(EventQuery())] == ["open-since-long", "marked"]
    assert store.snapshot("open-since-long") == store.snapshot("marked") == b"j" * 5000
    assert store.context("stale") is None  # the detection context went with its event
    store.close()
    with sqlite3.connect(path) as reader:  # gone from the file, rows and snapshots together
        assert reader.execute("SELECT id FROM events ORDER BY id").fetchall() == [
            ("marked",),
            ("open-since-long",),
        ]
        assert reader.execute("SELECT COUNT(*) FROM event_contexts").fetchone() == (0,)


def test_prunable_by_age_and_by_size_per_app(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    for index in range(6):  # trains: 6 closed events, 1000-byte snapshots, t = 0, 10, ..., 50
        store.save(closed(f"t{index}", "trains", 10.0 * index, 10.0 * index + 5), b"s" * 1000)
    store.save(closed("b0", "buses", 0.0, 1.0), b"s" * 1000)  # other apps are capped alone
    assert store.prunable(ended_before=None, max_bytes_per_app=None) == []
    assert store.prunable(ended_before=25.0, max_bytes_per_app=None) == ["b0", "t0", "t1"]
    per_event = 1000 + ROW_BYTES_ESTIMATE
    # room for the newest two trains events: the older four go, buses' one event stays
    assert store.prunable(ended_before=None, max_bytes_per_app=2 * per_event) == [
        "t0",
        "t1",
        "t2",
        "t3",
    ]
    both = store.prunable(ended_before=5.0, max_bytes_per_app=5 * per_event)
    assert both == ["b0", "t0"]


@settings(max_examples=40, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["trains", "buses"]),
            st.integers(0, 100),  # start
            st.one_of(st.none(), st.integers(0, 20)),  # duration; None: still open
            st.integers(0, 3000),  # snapshot bytes
        ),
        max_size=25,
    ),
    ended_before=st.one_of(st.none(), st.integers(0, 130)),
    cap=st.one_of(st.none(), st.integers(1, 8000)),
)
def test_prunable_matches_its_definition(
    events: list[tuple[str, int, int | None, int]], ended_before: int | None, cap: int | None
) -> None:
    """Closed, and ended before the cutoff or beyond the newest `cap` bytes of its app."""
    store = EventStore(":memory:")
    records = []
    for index, (app, start, duration, size) in enumerate(events):
        end = None if duration is None else float(start + duration)
        record = replace(make_event(f"e{index:02d}", app, float(start)), end_time=end)
        store.save(record, b"s" * size if size else None)
        records.append((record, size + ROW_BYTES_ESTIMATE))
    newest_first = sorted(records, key=lambda item: (item[0].start_time, item[0].id), reverse=True)
    expected = []
    for record, _ in records:
        newer = sum(
            size
            for other, size in newest_first
            if other.app == record.app
            and (other.start_time, other.id) >= (record.start_time, record.id)
        )
        too_old = ended_before is not None and record.end_time is not None
        too_old = too_old and record.end_time < ended_before  # type: ignore[operator]
        too_big = cap is not None and newer > cap
        if record.end_time is not None and (too_old or too_big):
            expected.append(record)
    expected.sort(key=lambda record: (record.start_time, record.id))
    assert store.prunable(ended_before=ended_before, max_bytes_per_app=cap) == [
        record.id for record in expected
    ]


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


# ---------------------------------------------------------------------------------------------
# Clips


def test_a_clip_is_stored_whole_counted_for_retention_and_deleted_with_its_event(
    tmp_path: Path,
) -> None:
    store = EventStore(tmp_path / "events.db")
    store.save(replace(make_event("a"), end_time=2.0), b"jpeg")
    assert store.get("a") is not None and not store.get("a").has_clip  # type: ignore[union-attr]
    assert store.clip("a") is None
    assert store.usage().apps["trains"] == AppUsage(events=1, bytes=4 + ROW_BYTES_ESTIMATE, open=0)
    assert not store.save_clip(StoredClip("never-stored", "video/webm", 1, 0.2, b"x"))
    clip = StoredClip("a", "video/webm", 10, 2.0, b"\x1aE\xdf\xa3" + b"v" * 996)
    assert store.save_clip(clip)
    assert store.clip("a") == clip
    assert store.get("a").has_clip  # type: ignore[union-attr]
    assert [event.has_clip for event in store.query(EventQuery())] == [True]
    usage = store.usage().apps["trains"]
    assert (usage.bytes, usage.clips, usage.clip_bytes) == (4 + 1000 + ROW_BYTES_ESTIMATE, 1, 1000)
    # A byte cap below the event's size with its clip makes it prunable; the clip goes with it.
    assert store.prunable(ended_before=None, max_bytes_per_app=1000) == ["a"]
    assert store.delete_closed(["a"]) == 1
    assert store.clip("a") is None
    with sqlite3.connect(tmp_path / "events.db") as reader:
        assert reader.execute("SELECT COUNT(*) FROM event_clips").fetchone() == (0,)
