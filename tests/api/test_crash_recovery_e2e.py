"""A real `mainstream serve` killed with SIGKILL while an event is open: on the next start the
node closes that event at its last stored frame (`ended_by` "restart") and publishes its "end"
to a real mosquitto broker, which the crash had kept from going out."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.mqtt import Broker, Subscriber, needs_mosquitto
from tests.support.nodes import (
    Daemon,
    TinyPackages,
    create_token,
    free_port,
    node_config,
    upload,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    needs_mosquitto,
]

BASE = "mainstream/test-node"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    server = Broker(folder)
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def daemon(tmp_path: Path, tiny_packages: TinyPackages, broker: Broker) -> Iterator[Daemon]:
    data = tmp_path / "data"
    tiny_packages.register_base(data)
    port = free_port()
    settings = node_config(
        data,
        api={"host": "127.0.0.1", "port": port},
        runtime={"event_update_every_frames": 2},  # stored updates move the last frame on
        mqtt={"enabled": True, "host": "127.0.0.1", "port": broker.port},
    )
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(settings))
    server = Daemon(config=config, log=tmp_path / "serve.log", port=port)
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.kill()


def stored_row(events_db: Path, event_id: str) -> dict[str, Any]:
    """The event's row as the daemon's SQLite file has it (read-only, beside the daemon)."""
    with sqlite3.connect(f"file:{events_db}?mode=ro", uri=True) as reader:
        reader.row_factory = sqlite3.Row
        row = reader.execute(
            "SELECT start_time, end_time, last_time, ended_by FROM events WHERE id = ?",
            (event_id,),
        ).fetchone()
    assert row is not None, event_id
    return dict(row)


def event_messages(watcher: Subscriber, event_id: str) -> list[dict[str, Any]]:
    messages = [m.json() for m in watcher.on(f"{BASE}/events") if not m.dup]
    return [m for m in messages if m["after"]["id"] == event_id]


def test_an_event_left_open_by_sigkill_is_closed_and_its_end_published_on_restart(
    daemon: Daemon, broker: Broker, tiny_packages: TinyPackages, tmp_path: Path
) -> None:
    admin = create_token(daemon.config, "admin")
    viewer = create_token(daemon.config, "viewer")
    watcher = Subscriber(broker.port, f"{BASE}/#")
    events_db = tmp_path / "data" / "events.db"
    daemon.start()
    client = httpx.Client(base_url=daemon.url, timeout=120)

    # -- threshold 0: every analysed frame fires; an event opens and is updated ---------------
    assert upload(client, admin, tiny_packages.trains.read_bytes()).status_code == 201
    app = {"name": "trains", "threshold": 0.0, "quiet_time_s": 120}
    assert client.post("/api/apps", json=app, headers=admin).status_code == 201

    def updated_event() -> str | None:
        for message in watcher.on(f"{BASE}/events"):
            body = message.json()
            if body["type"] == "update" and body["after"]["frames_analysed"] >= 3:
                return str(body["after"]["id"])
        return None

    assert wait_for(lambda: updated_event() is not None, timeout=60), daemon.log_tail()
    event_id = updated_event()
    assert event_id is not None

    # -- SIGKILL: no clean shutdown, the event stays open in the store ------------------------
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(timeout=10)
    left = stored_row(events_db, event_id)
    assert left["end_time"] is None and left["ended_by"] is None
    assert left["last_time"] > left["start_time"]  # the last stored update's frame
    assert [m["type"] for m in event_messages(watcher, event_id)][-1] != "end"

    # -- restart: the event is closed at its last stored frame, and its end goes out ----------
    daemon.start()
    assert wait_for(
        lambda: any(m["type"] == "end" for m in event_messages(watcher, event_id)), timeout=30
    ), (event_messages(watcher, event_id), daemon.log_tail())
    end = event_messages(watcher, event_id)[-1]
    assert end["type"] == "end" and end["after"]["ended_by"] == "restart"
    assert end["after"]["end_time"] == left["last_time"] and not end["after"]["active"]
    assert end["before"]["active"] and end["before"]["ended_by"] is None
    closed = client.get(f"/api/events/{event_id}", headers=viewer).json()
    assert closed["open"] is False and closed["end_time"] == left["last_time"]
    assert closed["ended_by"] == "restart"
    assert stored_row(events_db, event_id) == {
        **left,
        "end_time": left["last_time"],
        "ended_by": "restart",
    }
    assert "left open by the last run" in daemon.log_tail()

    # -- the redeployed app opens a new event; a clean stop ends it normally ------------------
    assert wait_for(
        lambda: any(
            e["id"] != event_id and e["open"]
            for e in client.get("/api/events", headers=viewer).json()["items"]
        ),
        timeout=60,
    ), daemon.log_tail()
    assert daemon.stop(), daemon.log_tail()
    with sqlite3.connect(f"file:{events_db}?mode=ro", uri=True) as reader:  # the daemon is down
        ends = dict(reader.execute("SELECT id, ended_by FROM events").fetchall())
    assert ends.pop(event_id) == "restart" and set(ends.values()) == {"stopped"}
    watcher.close()
