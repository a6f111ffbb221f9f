"""MQTT sink against a real mosquitto broker: topics, payloads, retained states, last will,
broker restarts and the bounded offline queue."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.camera import CameraConfig, CameraManager, CameraState, CameraStateMachine
from edge_runtime.detector import DetectorConfig, EventChange, EventDetector, Transition
from edge_runtime.sinks import EventSink, SinkFanOut
from edge_runtime.sinks.discovery import discovery_id
from edge_runtime.sinks.mqtt import MqttSink
from edge_runtime.sinks.payload import event_json
from edge_runtime.sinks.settings import MqttSettings
from mainstream import __version__
from tests.support.mqtt import Broker, Received, Subscriber, needs_mosquitto

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = needs_mosquitto


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[Broker]:
    server = Broker(tmp_path, persistent=True)
    server.start()
    yield server
    server.stop(kill=True)


def first_deliveries(messages: list[Received]) -> list[Received]:
    """Messages without the broker's redeliveries (a subscriber's unacknowledged messages are
    sent again after a broker restart, flagged DUP); a repeat without the flag would mean the
    sink itself published twice."""
    seen: set[bytes] = set()
    first: list[Received] = []
    for message in messages:
        if message.payload in seen:
            assert message.dup, f"published twice: {message.payload!r}"
            continue
        seen.add(message.payload)
        first.append(message)
    return first


def settings(port: int, **overrides: object) -> MqttSettings:
    values: dict[str, object] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": port,
        "keepalive_s": 5,
        "reconnect_min_delay_s": 1,
        "reconnect_max_delay_s": 1,
    }
    return MqttSettings.model_validate(values | overrides)


def event_changes(app: str, camera: str, start: float = 1000.0) -> list[EventChange]:
    """One real event from the detector: new, two better peaks (updates), end."""
    detector = EventDetector(app, camera, DetectorConfig(threshold=0.5, x_vote=2, quiet_time_s=1))
    changes: list[EventChange] = []
    for index, score in enumerate([0.9, 0.7, 0.8, 0.95, 0.2]):
        changes += detector.observe(start + index * 0.1, index, score)
    changes += detector.flush()
    assert [change.transition.value for change in changes] == ["new", "update", "update", "end"]
    return changes


def test_events_app_state_and_camera_status(broker: Broker) -> None:
    node = "edge-1"
    watcher = Subscriber(broker.port, f"mainstream/{node}/#")
    sink = MqttSink(settings(broker.port), node).start()
    assert isinstance(sink, EventSink)
    watcher.wait_on(f"mainstream/{node}/available", 1)
    assert watcher.on(f"mainstream/{node}/available")[0].text == "online"

    # A real camera reports its states through the sink.
    cameras = CameraManager(on_state_change=SinkFanOut([sink]).on_camera_state)
    cameras.add(CameraConfig(id="door", url="synthetic://?fps=10&size=64x48"))
    status_topic = f"mainstream/{node}/cameras/door/status"
    watcher.wait_for(lambda ms: any(m.topic == status_topic and m.text == "streaming" for m in ms))
    cameras.stop_all()
    statuses = [message.text for message in watcher.wait_on(status_topic, 3)]
    assert statuses == ["starting", "streaming", "stopped"]

    # Two overlapping events of one app on two cameras: ON once, OFF when both have ended.
    door, yard = event_changes("person", "door"), event_changes("person", "yard", start=1000.05)
    sequence = [door[0], yard[0], door[1], door[2], door[3], yard[1], yard[2], yard[3]]
    for change in sequence:
        sink(change)
    events_topic = f"mainstream/{node}/events"
    events = [message.json() for message in watcher.wait_on(events_topic, len(sequence))]
    assert [(e["type"], e["after"]["id"]) for e in events] == [
        (c.transition.value, c.event.id) for c in sequence
    ]
    for message, change in zip(events, sequence, strict=True):
        assert message["node"] == node
        assert message["after"] == event_json(change.event)
        assert message["after"]["snapshot"] == f"/api/events/{change.event.id}/snapshot.jpg"
    assert events[0]["before"] is None
    assert events[2]["before"] == events[0]["after"]  # door's first update follows door's new
    assert events[4]["after"]["end_time"] is not None and not events[4]["after"]["active"]
    assert events[4]["before"] == events[3]["after"]

    state_topic = f"mainstream/{node}/person/state"
    watcher.wait_on(state_topic, 2)
    assert sink.wait_until_delivered(5)
    assert [message.text for message in watcher.on(state_topic)] == ["ON", "OFF"]
    assert sink.stats() == {
        "published": 1 + 3 + len(sequence) + 2,  # online, camera statuses, events, states
        "queued": 0,
        "dropped": 0,
        "connected": True,
        "connections": 1,
    }

    # A newcomer gets the retained topics only.
    newcomer = Subscriber(broker.port, f"mainstream/{node}/#")
    retained = newcomer.wait_for(lambda ms: len(ms) >= 3)
    assert {(m.topic, m.text, m.retain) for m in retained} == {
        (f"mainstream/{node}/available", "online", True),
        (state_topic, "OFF", True),
        (status_topic, "stopped", True),
    }

    sink.close()
    assert watcher.wait_on(f"mainstream/{node}/available", 2)[-1].text == "offline"
    assert not sink.connected
    watcher.close()
    newcomer.close()


def test_a_stored_clip_is_announced_after_the_end_even_without_updates(broker: Broker) -> None:
    node = "edge-1"
    watcher = Subscriber(broker.port, f"mainstream/{node}/events")
    sink = MqttSink(settings(broker.port, publish_updates=False), node, base_url="http://n:8780")
    sink.start()
    new, *_, end = event_changes("person", "door")
    with_clip = replace(end.event, has_clip=True)
    for change in (new, end, EventChange(Transition.UPDATE, with_clip, clip_stored=True)):
        sink(change)
    new_message, end_message, clip_message = (
        message.json() for message in watcher.wait_on(f"mainstream/{node}/events", 3)
    )
    assert new_message["after"]["clip"] is None and end_message["after"]["clip"] is None
    assert clip_message["type"] == "update" and not clip_message["after"]["active"]
    assert clip_message["after"]["clip"] == f"http://n:8780/api/events/{end.event.id}/clip.webm"
    assert clip_message["before"] == end_message["after"]  # the end, as last sent
    sink.close()
    watcher.close()


SINK_PROCESS = """
import sys, time
from edge_runtime.sinks.discovery import discovery_id
from edge_runtime.sinks.mqtt import MqttSink
from edge_runtime.sinks.settings import MqttSettings
MqttSink(MqttSettings(enabled=True, host="127.0.0.1", port=int(sys.argv[1])), "doomed").start()
time.sleep(60)
"""


def test_last_will_announces_offline_when_the_process_dies(broker: Broker) -> None:
    availability = "mainstream/doomed/available"
    watcher = Subscriber(broker.port, availability)
    process = subprocess.Popen(
        [sys.executable, "-c", SINK_PROCESS, str(broker.port)], cwd=REPO_ROOT
    )
    try:
        watcher.wait_on(availability, 1, timeout=20)
        assert watcher.on(availability)[0].text == "online"
    finally:
        process.kill()  # SIGKILL: no chance to say goodbye
        process.wait(timeout=10)
    messages = watcher.wait_on(availability, 2)
    assert [message.text for message in messages] == ["online", "offline"]
    watcher.close()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_broker_restart_loses_no_event_and_keeps_order(persistent_broker: Broker) -> None:
    node = "edge-2"
    events_topic = f"mainstream/{node}/events"
    watcher = Subscriber(persistent_broker.port, events_topic, client_id="durable-watcher")
    sink = MqttSink(settings(persistent_broker.port), node).start()
    commands: list[tuple[str, bytes]] = []
    sink.subscribe("commands/#", lambda topic, payload: commands.append((topic, payload)))

    before = event_changes("person", "door")
    for change in before:
        sink(change)
    watcher.wait_on(events_topic, len(before))
    assert sink.wait_until_delivered(5)

    persistent_broker.stop()
    wait_until(lambda: not sink.connected)
    during = [
        change
        for index, app in enumerate(["person", "car", "person"])
        for change in event_changes(app, "door", start=2000.0 + index)
    ]
    for change in during:
        sink(change)
    assert sink.stats()["queued"] == len(during) + 6  # each event also turns its app ON and OFF
    persistent_broker.start()

    expected = [(c.transition.value, c.event.id) for c in before + during]
    watcher.wait_for(
        lambda ms: (
            len(first_deliveries([m for m in ms if m.topic == events_topic])) >= len(expected)
        ),
        timeout=15,
    )
    messages = first_deliveries(watcher.on(events_topic))
    assert [(m.json()["type"], m.json()["after"]["id"]) for m in messages] == expected
    assert sink.wait_until_delivered(10)
    stats = sink.stats()
    assert stats["dropped"] == 0 and stats["connections"] == 2 and stats["connected"]

    # The sink subscribed again after reconnecting.
    publisher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    publisher.connect("127.0.0.1", persistent_broker.port)
    publisher.loop_start()
    publisher.publish(f"mainstream/{node}/commands/snapshot", b"door", qos=1).wait_for_publish(5)
    wait_until(lambda: commands == [(f"mainstream/{node}/commands/snapshot", b"door")])
    publisher.disconnect()
    publisher.loop_stop()
    sink.close()
    watcher.close()


def test_retained_states_come_back_after_a_broker_lost_them(broker: Broker) -> None:
    node = "edge-3"
    sink = MqttSink(settings(broker.port), node).start()
    sink(event_changes("person", "door")[0])  # a new event: person is ON
    machine = CameraStateMachine("door")
    sink.on_camera_state(machine.transition(CameraState.STARTING))
    sink.on_camera_state(machine.transition(CameraState.STREAMING))
    assert sink.wait_until_delivered(5)

    broker.stop(kill=True)  # not persistent: every retained message is gone
    wait_until(lambda: not sink.connected)
    broker.start()
    wait_until(lambda: sink.stats()["connections"] == 2)
    assert sink.wait_until_delivered(5)

    newcomer = Subscriber(broker.port, f"mainstream/{node}/#")
    retained = newcomer.wait_for(lambda ms: len(ms) >= 3)
    assert {(m.topic, m.text, m.retain) for m in retained} == {
        (f"mainstream/{node}/available", "online", True),
        (f"mainstream/{node}/person/state", "ON", True),
        (f"mainstream/{node}/cameras/door/status", "streaming", True),
    }
    sink.close()
    newcomer.close()


def test_full_offline_queue_drops_the_oldest_and_delivers_the_rest(
    persistent_broker: Broker,
) -> None:
    node = "edge-4"
    events_topic = f"mainstream/{node}/events"
    # Register a durable session, then take the broker down before the sink ever connects.
    Subscriber(persistent_broker.port, events_topic, client_id="late-watcher").close()
    persistent_broker.stop()

    sink = MqttSink(
        settings(persistent_broker.port, queue_size=4, publish_updates=False), node
    ).start()
    first, second = event_changes("person", "door"), event_changes("person", "door", 2000.0)
    for change in first + second:
        sink(change)  # without updates: new, ON, end, OFF per event
    assert sink.stats()["dropped"] == 4 and sink.stats()["queued"] == 4
    assert not sink.connected

    persistent_broker.start()
    watcher = Subscriber(persistent_broker.port, events_topic, client_id="late-watcher")
    messages = watcher.wait_on(events_topic, 2, timeout=15)
    assert [(m.json()["type"], m.json()["after"]["id"]) for m in messages] == [
        ("new", second[0].event.id),
        ("end", second[-1].event.id),
    ]
    assert sink.wait_until_delivered(5)
    assert sink.stats()["dropped"] == 4
    sink.close()
    watcher.close()


def test_close_without_a_broker_counts_what_it_could_not_deliver() -> None:
    sink = MqttSink(settings(free_port()), "edge-5").start()
    for change in event_changes("person", "door"):
        sink(change)
    started = time.monotonic()
    sink.close(timeout_s=0.3)
    assert time.monotonic() - started < 3
    assert sink.stats()["dropped"] == 6 and sink.stats()["queued"] == 0
    sink(event_changes("car", "door")[0])  # after close: refused, counted
    assert sink.stats()["dropped"] == 8


# ---------------------------------------------------------------------------------------------
# Home Assistant MQTT discovery


def test_home_assistant_discovery_announces_removes_and_serves_snapshots(broker: Broker) -> None:
    """Configs checked field by field as Home Assistant reads them, the snapshot image, the
    availability the entities follow, and the removal of a deleted app's entity."""
    node = "edge.1"  # a dot: ids must drop it and stay unique
    node_id = f"mainstream_{discovery_id(node)}"
    assert node_id.startswith("mainstream_edge_1_") and len(node_id) == len("mainstream_") + 13
    jpeg = b"\xff\xd8\xff\xe0 a jpeg \xff\xd9"
    stored = {}  # event id -> snapshot, as the event store holds them
    watcher = Subscriber(broker.port, "homeassistant/#")
    states = Subscriber(broker.port, f"mainstream/{node}/#")
    sink = MqttSink(settings(broker.port, ha_discovery=True), node, snapshots=stored.get).start()
    sink.on_inventory({"trains": "door", "buses": "yard"}, ["door", "yard", "gate"])

    trains = f"homeassistant/binary_sensor/{node_id}/trains/config"
    buses = f"homeassistant/binary_sensor/{node_id}/buses/config"
    cameras = {c: f"homeassistant/camera/{node_id}/{c}/config" for c in ("door", "yard", "gate")}
    watcher.wait_for(lambda ms: {m.topic for m in ms} >= {trains, buses, *cameras.values()})
    by_topic = {m.topic: m for m in watcher.messages}
    assert len(by_topic) == 5
    base = f"mainstream/{node}"
    availability = {
        "availability_topic": f"{base}/available",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    origin = {"name": "Mainstream", "sw_version": __version__}

    def device(camera: str) -> dict[str, object]:
        return {
            "identifiers": [f"{node_id}_{camera}"],
            "name": f"Mainstream {camera}",
            "manufacturer": "Mainstream",
            "model": f"camera on node {node}",
            "sw_version": __version__,
        }

    assert by_topic[trains].json() == {
        "name": "trains",
        "unique_id": f"{node_id}_trains",
        "device_class": "occupancy",
        "state_topic": f"{base}/trains/state",
        "payload_on": "ON",
        "payload_off": "OFF",
        **availability,
        "device": device("door"),
        "origin": origin,
    }
    assert by_topic[buses].json()["device"] == device("yard")
    for camera, topic in cameras.items():
        assert by_topic[topic].json() == {
            "name": "Event snapshot",
            "unique_id": f"{node_id}_{camera}_snapshot",
            "topic": f"{base}/cameras/{camera}/snapshot",
            **availability,
            "device": device(camera),
            "origin": origin,
        }
    # What the entities read: availability online, a known state (OFF) per app.
    states.wait_for(
        lambda ms: (
            {(m.topic, m.text) for m in ms}
            >= {(f"{base}/available", "online"), (f"{base}/trains/state", "OFF")}
        )
    )

    # An event on the door camera: ON, and its best snapshot on the camera's image topic.
    changes = event_changes("trains", "door")
    stored[changes[0].event.id] = jpeg
    for change in changes:
        sink(change)
    snapshot_topic = f"{base}/cameras/door/snapshot"
    snapshots = states.wait_on(snapshot_topic, 1)
    assert snapshots[0].payload == jpeg
    assert [m.text for m in states.wait_on(f"{base}/trains/state", 3)] == ["OFF", "ON", "OFF"]

    # The same inventory again sends nothing; deleting buses (and the gate camera) clears them.
    assert sink.wait_until_delivered(5)
    published = sink.stats()["published"]
    sink.on_inventory({"trains": "door", "buses": "yard"}, ["door", "yard", "gate"])
    assert sink.wait_until_delivered(5) and sink.stats()["published"] == published
    sink.on_inventory({"trains": "door"}, ["door", "yard"])
    watcher.wait_for(lambda ms: any(m.topic == buses and m.payload == b"" for m in ms))
    watcher.wait_for(lambda ms: any(m.topic == cameras["gate"] and m.payload == b"" for m in ms))
    states.wait_for(lambda ms: any(m.topic == f"{base}/buses/state" and not m.payload for m in ms))
    assert sink.wait_until_delivered(5)

    # What Home Assistant finds when it (re)subscribes: the live entities only.
    newcomer = Subscriber(broker.port, "homeassistant/#")
    retained = newcomer.wait_for(lambda ms: len(ms) >= 3)
    time.sleep(0.3)  # nothing else may follow
    assert {m.topic for m in newcomer.messages} == {trains, cameras["door"], cameras["yard"]}
    assert all(m.retain and m.payload == by_topic[m.topic].payload for m in retained)
    late = Subscriber(broker.port, snapshot_topic)
    image = late.wait_on(snapshot_topic, 1)[0]
    assert image.payload == jpeg and image.retain

    sink.close()  # the entities become unavailable
    assert states.wait_on(f"{base}/available", 2)[-1].text == "offline"
    for subscriber in (watcher, states, newcomer, late):
        subscriber.close()


def test_discovery_is_off_by_default_and_snapshots_need_asking(broker: Broker) -> None:
    watcher = Subscriber(broker.port, "#")
    sink = MqttSink(settings(broker.port), "edge-2", snapshots=lambda _: b"jpeg").start()
    sink.on_inventory({"trains": "door"}, ["door"])
    for change in event_changes("trains", "door"):
        sink(change)
    assert sink.wait_until_delivered(5)
    sink.close()
    watcher.wait_on("mainstream/edge-2/available", 2)  # online ... offline: all has arrived
    topics = {m.topic for m in watcher.messages}
    assert not any(t.startswith("homeassistant/") or t.endswith("/snapshot") for t in topics)
    assert "mainstream/edge-2/events" in topics
    watcher.close()
