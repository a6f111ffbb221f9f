"""A real `mainstream serve` killed with SIGKILL while an event is open: on the next start the
node closes that event at its last stored frame (`ended_by` "restart") and publishes its "end"
to a real mosquitto broker, which the crash had kept from going out.

Before the crash, operators mark events true or false over REST, the CLI and an MQTT command
(Frigate style); the app's precision estimate and the plan follow, with the counts in the
plan's reason, and the restart after the crash loses none of it."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.detector import EventRecord
from edge_runtime.event_store import DetectionContext, EventStore
from tests.support.mqtt import Broker, Subscriber, needs_mosquitto
from tests.support.nodes import (
    Daemon,
    TinyPackages,
    cli_token,
    free_port,
    mainstream,
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
def daemon(tmp_path: Path, tiny_packages: TinyPackages, broker: Broker) -> Iterator[Daemon]:
    data = tmp_path / "data"
    tiny_packages.register_base(data)
    port = free_port()
    settings = node_config(
        data,
        api={"host": "127.0.0.1", "port": port},
        # Stored updates move the last frame on; only operators' marks change the plan here.
        runtime={"event_update_every_frames": 2, "replan": False},
        mqtt={"enabled": True, "host": "127.0.0.1", "port": broker.port},
        feedback={"min_reviews": 5, "replan_delta": 0.02},
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
    admin_secret = cli_token(daemon.config, "admin")
    admin = {"Authorization": f"Bearer {admin_secret}"}
    viewer = {"Authorization": f"Bearer {cli_token(daemon.config, 'viewer')}"}
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

    # -- operators mark it and 8 more events: the estimate falls and the plan follows ---------
    marks = mark_events(client, daemon, broker, watcher, events_db, event_id, admin_secret, viewer)
    marked_plan = trains_plan(client, viewer)
    marked_feedback = feedback_of(client, viewer)

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

    # -- the marks, their counts, the estimate and the plan they made all survived ------------
    assert trains_plan(client, viewer) == marked_plan  # the same plan, not planned again
    restarted = feedback_of(client, viewer)
    for key in ("true", "false", "precision", "false_positive_rate", "adjusted_f1", "in_force"):
        assert restarted[key] == marked_feedback[key], key
    stored = client.get("/api/events", params={"limit": 1000}, headers=viewer).json()["items"]
    reviews = {item["id"]: item["review"] for item in stored}
    assert {i: reviews[i]["verdict"] == "true" for i in marks} == marks
    assert reviews[event_id]["note"] == "checked on video"

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
    assert ends.pop(event_id) == "restart"
    assert {ends.pop(i) for i in marks if i != event_id} == {"quiet"}  # stored closed
    assert set(ends.values()) == {"stopped"}
    watcher.close()


# ---------------------------------------------------------------------------------------------
# Operator feedback

SEEDED = 8  # events added beside the real one, detected as it was


def seed_events(events_db: Path, real_event: str) -> list[str]:
    """Closed events of the same app, stored as the node stores them, with the detection
    context the node recorded for the real one (the option and model that reported it)."""
    with sqlite3.connect(f"file:{events_db}?mode=ro", uri=True) as reader:
        row = reader.execute(
            "SELECT plan_id, cut_point, fps, x_vote, package_sha256, threshold "
            "FROM event_contexts WHERE event_id = ?",
            (real_event,),
        ).fetchone()
    assert row is not None, "the node stored no detection context for its event"
    store = EventStore(events_db)
    ids = [f"seeded-{index}" for index in range(SEEDED)]
    for index, event_id in enumerate(ids):
        start = 1.0 + 10 * index
        store.save(EventRecord(event_id, "trains", "synthetic", start, start + 3, 0.9, 1, 6, 6))
        store.save_context(DetectionContext(event_id, *row))
    store.close()
    return ids


def feedback_of(client: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    stats = client.get("/api/stats", headers=headers).json()
    [app] = [app for app in stats["apps"].values() if app["app"] == "trains"]
    return dict(app["feedback"])


def trains_plan(client: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    schedule = client.get("/api/schedule", headers=headers).json()
    [app] = [app for app in schedule["plan"]["apps"] if app["name"] == "trains"]
    return {"id": schedule["id"], "reason": schedule["reason"], **app}


def mark_events(
    client: httpx.Client,
    daemon: Daemon,
    broker: Broker,
    watcher: Subscriber,
    events_db: Path,
    real_event: str,
    admin_secret: str,
    viewer: dict[str, str],
) -> dict[str, bool]:
    """Mark 3 of 9 events true and 6 false over REST, the CLI and MQTT; check the counts,
    the estimate and the plan at each step. Returns the marks by event id."""
    admin = {"Authorization": f"Bearer {admin_secret}"}
    before = trains_plan(client, admin)
    ids = [real_event, *seed_events(events_db, real_event)]
    verdicts = [True, True, True, False, False, False, False, False, False]

    # Viewers may not mark; a bad verdict or an unknown event is refused.
    url = f"/api/events/{ids[0]}/review"
    assert client.put(url, json={"verdict": "true"}, headers=viewer).status_code == 403
    assert client.put(url, json={"verdict": "maybe"}, headers=admin).status_code == 422
    missing = client.put("/api/events/nope/review", json={"verdict": "true"}, headers=admin)
    assert missing.status_code == 404
    for event_id, verdict in zip(ids[:4], verdicts[:4], strict=True):
        body = {"verdict": "true" if verdict else "false", "note": "checked on video"}
        answer = client.put(f"/api/events/{event_id}/review", json=body, headers=admin)
        assert answer.status_code == 200, answer.text
        assert answer.json()["replanned"] is None  # fewer than min_reviews marks
    # A mark is replaced, not added, and can be taken back.
    answer = client.put(f"/api/events/{ids[3]}/review", json={"verdict": "true"}, headers=admin)
    assert answer.json()["event"]["review"]["verdict"] == "true"
    cleared = client.delete(f"/api/events/{ids[3]}/review", headers=admin)
    assert cleared.status_code == 200 and cleared.json()["event"]["review"] is None
    assert client.put(f"/api/events/{ids[3]}/review", json={"verdict": "false"}, headers=admin)
    feedback = feedback_of(client, admin)
    assert (feedback["true"], feedback["false"], feedback["unreviewed"]) == (3, 1, 5)
    assert not feedback["in_force"] and trains_plan(client, admin)["id"] == before["id"]
    assert feedback["predicted_precision"] == pytest.approx(before["precision"])

    # The fifth mark through the CLI: enough marks, and F1 moves enough to re-plan at once.
    marked = mainstream(
        "events", "review", ids[4], "--false", "--json",
        "--server", daemon.url, "--token", admin_secret,
    )  # fmt: skip
    assert marked.returncode == 0, marked.stderr
    answer = json.loads(marked.stdout)
    assert answer["feedback"]["in_force"]
    assert answer["replanned"].startswith("feedback: 2 of 5 reviewed events false")

    # The sixth as an MQTT command; the node announces every mark on `.../review`.
    commander = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    commander.connect("127.0.0.1", broker.port)
    commander.loop_start()
    commander.publish(f"{BASE}/events/{ids[5]}/review/set", b"false", qos=1).wait_for_publish(5)
    assert wait_for(
        lambda: client.get(f"/api/events/{ids[5]}", headers=admin).json()["review"] is not None,
        timeout=15,
    ), daemon.log_tail()
    commander.loop_stop()
    commander.disconnect()
    stored = client.get(f"/api/events/{ids[5]}", headers=admin).json()["review"]
    assert (stored["verdict"], stored["reviewed_by"]) == ("false", "mqtt")
    announced = f"{BASE}/events/{ids[5]}/review"
    watcher.wait_for(lambda _: bool(watcher.on(announced)))
    assert watcher.on(announced)[0].text == "false"

    # The rest over REST: 6 of 9 false.
    for event_id in ids[6:]:
        body = {"verdict": "false"}
        assert client.put(f"/api/events/{event_id}/review", json=body, headers=admin).is_success
    feedback = feedback_of(client, admin)
    assert (feedback["true"], feedback["false"], feedback["unreviewed"]) == (3, 6, 0)
    expected = (4 * before["precision"] + 3) / (4 + 9)  # a Beta prior worth 4 marks
    assert feedback["precision"] == pytest.approx(expected)
    assert feedback["false_positive_rate"] > 0.04  # the package said 0.04 at this cut point
    after = trains_plan(client, admin)
    assert after["reason"].startswith("feedback: 6 of 9 reviewed events false (trains on synthetic")
    assert after["precision"] < before["precision"] - 0.1
    assert after["f1"] == pytest.approx(feedback["adjusted_f1"])
    history = client.get("/api/schedule/history", headers=admin).json()
    reasons = [plan["reason"] for plan in history if plan["reason"].startswith("feedback")]
    assert len(reasons) >= 2 and reasons[-1].startswith("feedback: 2 of 5")

    # Exported with `events list --json`, counted in the metrics.
    listed = mainstream("events", "list", "--json", "--server", daemon.url, "--token", admin_secret)
    assert listed.returncode == 0, listed.stderr
    exported = {item["id"]: item["review"] for item in json.loads(listed.stdout)["items"]}
    assert [exported[event_id]["verdict"] == "true" for event_id in ids] == verdicts
    metrics = client.get("/metrics", headers=admin).text
    assert 'mainstream_app_reviews{app="trains",camera="synthetic",verdict="false"} 6.0' in metrics
    return dict(zip(ids, verdicts, strict=True))
