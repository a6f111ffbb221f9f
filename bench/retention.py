"""Retention: how long one pruning pass takes, and how long it makes the runtime's writes wait.

Fills an event store with closed events past retention (each with a snapshot), then prunes
them with the node's own `RetentionKeeper` while a second thread saves a new event every 10 ms,
as the runtime does, and times each of those saves. Prints one table row per size.

Run: `python bench/retention.py` (a few seconds); `--events 20000 --snapshot-kb 5`.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as `python bench/retention.py`, this folder comes first on the import path and
# bench/scheduler.py would hide the `scheduler` package; measure this checkout.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [
    entry for entry in sys.path if Path(entry or ".").resolve() != _HERE
]

from edge_runtime.detector import EventRecord  # noqa: E402
from edge_runtime.event_store import EventStore  # noqa: E402
from mainstream.node.retention import SECONDS_PER_DAY, RetentionKeeper  # noqa: E402
from mainstream.node.settings import RetentionSettings  # noqa: E402


def fill(path: Path, events: int, snapshot: bytes, ended: float) -> None:
    """`events` closed events that ended at `ended`, written in one transaction."""
    EventStore(path).close()  # the schema
    rows = [
        (f"old-{index}", f"app-{index % 2}", "cam0", ended - 5 + index * 1e-4, ended + index * 1e-4)
        for index in range(events)
    ]
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO events (id, app, camera, start_time, end_time, peak_score, peak_frame, "
            "frames_analysed, frames_fired, snapshot, ended_by) "
            "VALUES (?, ?, ?, ?, ?, 0.8, 1, 3, 2, ?, 'quiet')",
            [(*row, snapshot) for row in rows],
        )


def measure(events: int, snapshot_kb: int, batch_size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.db"
        now = time.time()
        fill(path, events, b"j" * (snapshot_kb * 1000), now - 40 * SECONDS_PER_DAY)
        size_mb = path.stat().st_size / 1e6
        store = EventStore(path)
        stop = threading.Event()
        waits: list[float] = []

        def writer() -> None:
            index = 0
            while not stop.is_set():
                began = time.monotonic()
                record = EventRecord(
                    f"live-{index}", "app-0", "cam0", time.time(), None, 0.9, 1, 1, 1
                )
                store.save(record, b"j" * (snapshot_kb * 1000))
                waits.append(time.monotonic() - began)
                index += 1
                time.sleep(0.01)

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(0.2)
        keeper = RetentionKeeper(store, RetentionSettings(days=30, batch_size=batch_size))
        result = keeper.prune()
        stop.set()
        thread.join()
        store.close()
    return {
        "events": events,
        "mb": size_mb,
        "pruned": result.deleted,
        "seconds": result.seconds,
        "saves": len(waits),
        "worst_save_ms": max(waits) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--snapshot-kb", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=RetentionSettings().batch_size)
    arguments = parser.parse_args()
    print("| events | store MB | pruned | prune s | saves meanwhile | slowest save ms |")
    print("|---|---|---|---|---|---|")
    for events in arguments.events:
        row = measure(events, arguments.snapshot_kb, arguments.batch_size)
        print(
            f"| {row['events']:,} | {row['mb']:.0f} | {row['pruned']:,} | {row['seconds']:.2f} "
            f"| {row['saves']} | {row['worst_save_ms']:.0f} |"
        )


if __name__ == "__main__":
    main()
