"""Home Assistant discovery from a real `mainstream serve` through a real mosquitto: the
entities of a camera and of an app added over the API, the snapshot image of its event, and
the entity removed when the app is deleted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from edge_runtime.sinks.discovery import discovery_id
from tests.support.live_packages import MOVING_APP
from tests.support.mqtt import Broker, Subscriber, needs_mosquitto
from tests.support.nodes import Daemon, TinyPackages, create_token, free_port, node_config, upload

pytestmark = [pytest.mark.slow, needs_mosquitto]

NODE = "test-node"
BASE = f"mainstream/{NODE}"
NODE_ID = f"mainstream_{discovery_id(NODE)}"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    server = Broker(tmp_path)
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def daemon(tmp_path: Path, tiny_packages: TinyPackages, broker: Broker) -> Iterator[Daemon]:
    data = tmp_path / "data"
    tiny_packages.register_base(data)
    port = free_port()
    mqtt = {"enabled": True, "host": "127.0.0.1", "port": broker.port, "ha_discovery": True}
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(node_config(data, api={"port": port}, mqtt=mqtt)))
    server = Daemon(config=config, log=tmp_path / "serve.log", port=port)
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.kill()


def test_serve_announces_entities_to_home_assistant_and_removes_a_deleted_app(
    daemon: Daemon, broker: Broker, moving_package: Path
) -> None:
    admin = create_token(daemon.config, "admin")
    discovery = Subscriber(broker.port, "homeassistant/#")
    snapshots = Subscriber(broker.port, f"{BASE}/cameras/+/snapshot")
    daemon.start()
    client = httpx.Client(base_url=daemon.url, timeout=60)
    camera_topic = f"homeassistant/camera/{NODE_ID}/synthetic/config"
    camera = json.loads(discovery.wait_on(camera_topic, 1)[0].payload)
    assert camera["topic"] == f"{BASE}/cameras/synthetic/snapshot"
    assert camera["availability_topic"] == f"{BASE}/available"
    assert camera["device"]["identifiers"] == [f"{NODE_ID}_synthetic"]

    assert upload(client, admin, moving_package.read_bytes()).status_code == 201
    app = {"name": MOVING_APP, "threshold": 0.0, "quiet_time_s": 120}  # fires on every frame
    assert client.post("/api/apps", json=app, headers=admin).status_code == 201
    sensor_topic = f"homeassistant/binary_sensor/{NODE_ID}/{discovery_id(MOVING_APP)}/config"
    sensor = json.loads(discovery.wait_on(sensor_topic, 1, timeout=60)[0].payload)
    assert (sensor["name"], sensor["state_topic"]) == (MOVING_APP, f"{BASE}/{MOVING_APP}/state")
    assert (sensor["payload_on"], sensor["payload_off"]) == ("ON", "OFF")
    assert sensor["device"] == camera["device"]  # the app's sensor sits on its camera
    image = snapshots.wait_on(f"{BASE}/cameras/synthetic/snapshot", 1, timeout=60)[0]
    assert image.payload[:2] == b"\xff\xd8"

    assert client.delete(f"/api/apps/{MOVING_APP}", headers=admin).status_code == 204
    removed = discovery.wait_on(sensor_topic, 2, timeout=30)
    assert removed[-1].payload == b""
    assert daemon.stop()
    client.close()
    discovery.close()
    snapshots.close()
