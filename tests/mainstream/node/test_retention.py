"""Retention over a real SQLite event store on disk: what is pruned, what survives (open
events), the figures /api/stats shows, and the background task."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from edge_runtime.detector import EventRecord
from edge_runtime.event_store import ROW_BYTES_ESTIMATE, EventQuery, EventStore
from mainstream.node.retention import SECONDS_PER_DAY, RetentionKeeper
from mainstream.node.settings import RetentionSettings
from tests.support.nodes import wait_for

NOW = 1_800_000_000.0
DAY = SECONDS_PER_DAY


def event(event_id: str, app: str, start: float, end: float | None) -> EventRecord:
    return EventRecord(event_id, app, "cam0", start, end, 0.8, 1, 3, 2)


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "events.db")


def ids(store: EventStore) -> list[str]:
    return [record.id for record in store.query(EventQuery(limit=1000))]


def test_old_events_go_with_their_snapshots_and_an_open_event_survives(
    store: EventStore,
) -> None:
    store.save(event("open", "trains", NOW - 40 * DAY, None), b"o" * 700)  # open for 40 days
    store.save(event("old", "trains", NOW - 3 * DAY, NOW - 3 * DAY + 5), b"x" * 1000)
    store.save(event("older", "buses", NOW - 9 * DAY, NOW - 9 * DAY + 5), b"y" * 1000)
    store.save(event("recent", "trains", NOW - 0.5 * DAY, NOW - 0.5 * DAY + 5), b"z" * 300)
    keeper = RetentionKeeper(store, RetentionSettings(days=1), clock=lambda: NOW)

    result = keeper.prune()

    assert result.deleted == 2 and ids(store) == ["open", "recent"]
    assert store.snapshot("open") == b"o" * 700 and store.snapshot("old") is None
    with sqlite3.connect(store.path) as reader:  # the file itself holds no trace of them
        assert reader.execute("SELECT COUNT(*) FROM events WHERE id = 'old'").fetchone() == (0,)
    stats = keeper.stats()
    assert stats["events_kept"] == 2 and stats["pruned_total"] == 2
    assert stats["last_pruned"] == 2 and stats["last_prune_at"] == NOW
    assert stats["bytes"] == 700 + 300 + 2 * ROW_BYTES_ESTIMATE
    assert stats["oldest_start_time"] == NOW - 40 * DAY
    assert stats["apps"] == {
        "trains": {"events": 2, "bytes": 1000 + 2 * 128, "open": 1, "clips": 0, "clip_bytes": 0}
    }
    assert stats["file_bytes"] > 0 and stats["days"] == 1 and stats["last_error"] is None
    assert keeper.prune().deleted == 0 and keeper.stats()["pruned_total"] == 2


def test_each_app_keeps_its_newest_events_up_to_its_size_cap_in_batches(
    store: EventStore,
) -> None:
    per_event = 1000 + ROW_BYTES_ESTIMATE
    for index in range(7):
        start = NOW - 100 + index
        store.save(event(f"t{index}", "trains", start, start + 1), b"s" * 1000)
    store.save(event("b0", "buses", NOW - 200, NOW - 199), b"s" * 1000)
    settings = RetentionSettings(days=None, max_mb_per_app=3 * per_event / 1e6, batch_size=2)
    result = RetentionKeeper(store, settings, clock=lambda: NOW).prune()
    assert result.deleted == 4  # in two transactions of two
    assert ids(store) == ["b0", "t4", "t5", "t6"]
    assert result.usage.apps["trains"].bytes == 3 * per_event


def test_the_background_task_prunes_at_start_and_then_every_interval(
    store: EventStore,
) -> None:
    clock = [NOW]
    keeper = RetentionKeeper(store, RetentionSettings(days=1, interval_s=1), clock=lambda: clock[0])
    store.save(event("old", "trains", NOW - 5 * DAY, NOW - 5 * DAY + 1))
    keeper.start()
    try:
        assert wait_for(lambda: keeper.stats()["passes"] >= 1, timeout=5)
        assert ids(store) == []
        store.save(event("later", "trains", NOW, NOW + 1))
        clock[0] = NOW + 2 * DAY
        assert wait_for(lambda: keeper.stats()["pruned_total"] == 2, timeout=5)
        assert ids(store) == []
    finally:
        keeper.stop()
    assert keeper.stats()["passes"] >= 2


def test_a_failing_pass_is_reported_and_the_task_keeps_running(store: EventStore) -> None:
    store.save(event("old", "trains", NOW - 5 * DAY, NOW - 5 * DAY + 1))
    keeper = RetentionKeeper(store, RetentionSettings(days=1, interval_s=1), clock=lambda: NOW)
    store.close()  # found by the scan, but the deletion fails
    keeper.start()
    try:
        assert wait_for(lambda: keeper.stats()["last_error"] is not None, timeout=5)
        assert keeper.stats()["passes"] == 0
        assert wait_for(lambda: "closed database" in str(keeper.stats()["last_error"]), 3)
    finally:
        began = time.monotonic()
        keeper.stop()
    assert time.monotonic() - began < 2  # stops between passes at once
