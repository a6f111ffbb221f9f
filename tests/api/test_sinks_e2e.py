"""A real `mainstream serve` process publishing to a real mosquitto broker and a webhook
receiver on loopback: event messages (the event's clip announced after its end), retained app
and camera states, signed and retried webhook deliveries, no lost event across a broker
restart, and the last will on SIGKILL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.live_packages import (
    MOVING_APP,
)
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
from tests.support.webhooks import Receiver

pytestmark = [
    pytest.mark.slow,
    needs_mosquitto,
]

NODE = "test-node"
SECRET = "webhook signing secret"
BASE = f"mainstream/{NODE}"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    server = Broker(folder, persistent=True)  # keeps the watcher's session across a restart
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(SECRET, statuses=[500])  # the first delivery fails and must be retried
    yield server
    server.close()


@pytest.fixture
def daemon(
    tmp_path: Path,
    tiny_packages: TinyPackages,
    broker: Broker,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Daemon]:
    data = tmp_path / "data"
    tiny_packages.register_base(data)
    port = free_port()
    settings = node_config(
        data,
        api={"host": "127.0.0.1", "port": port},
        runtime={"event_update_every_frames": 2},  # updates whatever the scores do
        clips={"pre_s": 1.0, "post_s": 0.5},  # the clip is announced soon after the end
        mqtt={
            "enabled": True,
            "host": "127.0.0.1",
            "port": broker.port,
            "keepalive_s": 5,
            "reconnect_min_delay_s": 1,
            "reconnect_max_delay_s": 1,
        },
        webhooks={
            "targets": [{"url": receiver.url}],
            "backoff_initial_s": 0.2,
            "backoff_max_s": 0.5,
        },
    )
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("MAINSTREAM_WEBHOOKS__SECRET", SECRET)  # the daemon inherits it
    server = Daemon(config=config, log=tmp_path / "serve.log", port=port)
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.kill()


def texts(watcher: Subscriber, topic: str) -> list[str]:
    """What the node published on `topic` while the watcher listened: without the retained
    copies a broker hands out on each (re)subscription, and without redeliveries."""
    return [m.text for m in watcher.on(topic) if not m.retain and not m.dup]


def event_messages(watcher: Subscriber) -> list[dict[str, Any]]:
    """Event messages without the broker's redeliveries after its restart (flagged DUP)."""
    seen: set[bytes] = set()
    messages = []
    for message in watcher.on(f"{BASE}/events"):
        if message.payload in seen:
            assert message.dup, f"published twice: {message.text}"
            continue
        seen.add(message.payload)
        messages.append(message.json())
    return messages


def has_event(watcher: Subscriber, kind: str, app: str) -> bool:
    return any(m["type"] == kind and m["after"]["app"] == app for m in event_messages(watcher))


def has_clip(watcher: Subscriber, event_id: str) -> bool:
    return any(m["after"]["id"] == event_id and m["after"]["clip"] for m in event_messages(watcher))


def test_events_states_webhooks_broker_restart_and_last_will(
    daemon: Daemon, broker: Broker, receiver: Receiver, moving_package: Path
) -> None:
    admin = create_token(daemon.config, "admin")
    viewer = create_token(daemon.config, "viewer")
    watcher = Subscriber(broker.port, f"{BASE}/#", client_id="durable-watcher")
    daemon.start()
    client = httpx.Client(base_url=daemon.url, timeout=60)

    # -- availability and camera status (retained) --------------------------------------------
    status_topic = f"{BASE}/cameras/synthetic/status"
    watcher.wait_for(lambda _: "streaming" in texts(watcher, status_topic), timeout=30)
    assert texts(watcher, f"{BASE}/available") == ["online"]
    assert texts(watcher, status_topic)[:2] == ["starting", "streaming"]

    # -- an app with threshold 0 fires on every analysed frame: new, then updates --------------
    assert upload(client, admin, moving_package.read_bytes()).status_code == 201
    app = {"name": MOVING_APP, "threshold": 0.0, "quiet_time_s": 120}
    created = client.post("/api/apps", json=app, headers=admin)
    assert created.status_code == 201, created.text
    watcher.wait_for(lambda _: has_event(watcher, "new", MOVING_APP), timeout=60)
    watcher.wait_for(lambda _: has_event(watcher, "update", MOVING_APP), timeout=30)
    state_topic = f"{BASE}/{MOVING_APP}/state"
    assert texts(watcher, state_topic) == ["ON"]

    # -- removing the app ends its event: end, state OFF; then its clip is announced -----------
    assert client.delete(f"/api/apps/{MOVING_APP}", headers=admin).status_code == 204
    watcher.wait_for(lambda _: has_event(watcher, "end", MOVING_APP), timeout=30)
    watcher.wait_for(lambda _: texts(watcher, state_topic) == ["ON", "OFF"])
    first_id = event_messages(watcher)[0]["after"]["id"]
    watcher.wait_for(lambda _: has_clip(watcher, first_id), timeout=30)

    messages = event_messages(watcher)
    assert [m["after"]["id"] for m in messages] == [first_id] * len(messages)
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "new" and kinds[-2:] == ["end", "update"]
    assert set(kinds[1:-2]) == {"update"}
    assert messages[0]["before"] is None and messages[0]["node"] == NODE
    for previous, current in pairwise(messages):
        assert current["before"] == previous["after"]
    assert all(m["after"]["clip"] is None for m in messages[:-1])
    clip_url = f"{daemon.url}/api/events/{first_id}/clip.webm"
    assert messages[-1]["after"] == messages[-2]["after"] | {"clip": clip_url}
    clip = httpx.get(clip_url, headers=viewer)
    assert clip.headers["content-type"] == "video/webm" and clip.content[:4] == b"\x1aE\xdf\xa3"
    stored = client.get(f"/api/events/{first_id}", headers=viewer).json()
    assert stored["clip"] == f"/api/events/{first_id}/clip.webm"
    end = messages[-2]["after"]
    assert (end["app"], end["camera"], end["active"]) == (MOVING_APP, "synthetic", False)
    assert end["start_time"] == stored["start_time"] and end["end_time"] == stored["end_time"]
    assert end["peak_score"] == stored["peak_score"]
    assert end["frames_analysed"] == stored["frames_analysed"]
    snapshot_url = f"{daemon.url}/api/events/{first_id}/snapshot.jpg"
    assert end["snapshot"] == snapshot_url
    assert httpx.get(snapshot_url, headers=viewer).content[:2] == b"\xff\xd8"

    # -- the same messages reached the webhook, signed, the first one after a retry ------------
    def delivered() -> list[Any]:
        return [request for request in receiver.requests if request.status == 200]

    assert wait_for(lambda: len(delivered()) == len(messages), timeout=20), receiver.requests
    assert all(request.signature_valid for request in receiver.requests)
    failed, retried = receiver.requests[0], receiver.requests[1]
    assert failed.status == 500 and retried.status == 200
    delivery = "X-Mainstream-Delivery"
    assert failed.headers[delivery] == retried.headers[delivery] and failed.body == retried.body
    assert [request.json() for request in delivered()] == messages
    assert [request.headers["X-Mainstream-Event"] for request in delivered()] == kinds

    # -- broker down: the node keeps working and queues; after the restart nothing is lost -----
    broker.stop()
    assert wait_for(lambda: not mqtt_stats(client, viewer)["connected"], timeout=20)
    again = client.post("/api/apps", json=app, headers=admin)
    assert again.status_code == 201, again.text
    assert wait_for(lambda: len(stored_events(client, viewer)) == 2, timeout=60)
    time.sleep(1.0)  # a few updates while the broker is away
    assert client.delete(f"/api/apps/{MOVING_APP}", headers=admin).status_code == 204
    assert wait_for(lambda: all(not e["open"] for e in stored_events(client, viewer)), timeout=30)
    assert mqtt_stats(client, viewer)["queued"] >= 2  # new and end (plus updates, states)
    broker.start()
    second_id = next(e["id"] for e in stored_events(client, viewer) if e["id"] != first_id)
    watcher.wait_for(
        lambda _: any(
            m["type"] == "end" and m["after"]["id"] == second_id for m in event_messages(watcher)
        ),
        timeout=30,
    )
    after_restart = [m for m in event_messages(watcher) if m["after"]["id"] == second_id]
    assert after_restart[0]["type"] == "new" and "end" in [m["type"] for m in after_restart]
    watcher.wait_for(lambda _: texts(watcher, state_topic)[-2:] == ["ON", "OFF"])
    stored = {event["id"]: event for event in stored_events(client, viewer)}
    assert {m["after"]["id"] for m in event_messages(watcher)} == set(stored)
    stats = mqtt_stats(client, viewer)
    assert stats["dropped"] == 0 and stats["connections"] == 2 and stats["connected"]
    metrics = client.get("/metrics", headers=viewer).text
    assert 'mainstream_sink_connections_total{sink="mqtt"} 2.0' in metrics
    assert 'mainstream_sink_delivered_total{sink="webhook"}' in metrics

    # -- SIGKILL: the broker announces the node offline (last will) ----------------------------
    assert daemon.process is not None
    daemon.process.kill()
    daemon.process.wait(timeout=10)
    watcher.wait_for(lambda _: texts(watcher, f"{BASE}/available")[-1:] == ["offline"], timeout=20)
    availability = texts(watcher, f"{BASE}/available")  # the broker's shutdown may add a will
    assert availability[0] == "online" and availability[-2:] == ["online", "offline"]
    watcher.close()


def stored_events(client: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get("/api/events", headers=headers).json()["items"]
    return items


def mqtt_stats(client: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    sinks: dict[str, dict[str, Any]] = client.get("/api/stats", headers=headers).json()["sinks"]
    return sinks["mqtt"]
