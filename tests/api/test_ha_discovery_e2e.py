"""A real `mainstream serve` with a real mosquitto: an app declared in the config file runs as
soon as its package is uploaded and the API may not remove it; Home Assistant discovery
announces the camera and the apps (checked field by field in tests/edge_runtime/
test_mqtt_sink.py), the snapshot image of an event, and removes an app deleted over the API."""

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
def daemon(tmp_path: Path, tiny_packages: TinyPackages, broker: Broker) -> Iterator[Daemon]:
    data = tmp_path / "data"
    tiny_packages.register_base(data)
    port = free_port()
    mqtt = {"enabled": True, "host": "127.0.0.1", "port": broker.port, "ha_discovery": True}
    declared = [{"name": MOVING_APP, "threshold": 0.0, "quiet_time_s": 120}]  # every frame fires
    config = tmp_path / "node.yaml"
    settings = node_config(data, api={"port": port}, mqtt=mqtt, apps=declared)
    config.write_text(yaml.safe_dump(settings))
    server = Daemon(config=config, log=tmp_path / "serve.log", port=port)
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.kill()


def test_serve_runs_declared_apps_and_announces_them_to_home_assistant(
    daemon: Daemon, broker: Broker, moving_package: Path
) -> None:
    admin = create_token(daemon.config, "admin")
    discovery = Subscriber(broker.port, "homeassistant/#")
    snapshots = Subscriber(broker.port, f"{BASE}/cameras/+/snapshot")
    daemon.start()
    assert f"app {MOVING_APP} in the config file is not run: no package" in daemon.log_tail()
    client = httpx.Client(base_url=daemon.url, timeout=60)
    camera_topic = f"homeassistant/camera/{NODE_ID}/synthetic/config"
    camera = json.loads(discovery.wait_on(camera_topic, 1)[0].payload)
    assert camera["topic"] == f"{BASE}/cameras/synthetic/snapshot"
    assert camera["availability_topic"] == f"{BASE}/available"
    assert camera["device"]["identifiers"] == [f"{NODE_ID}_synthetic"]

    # The declared app waited for its package: uploaded, it runs with the file's values.
    assert upload(client, admin, moving_package.read_bytes()).status_code == 201
    declared = client.get(f"/api/apps/{MOVING_APP}", headers=admin).json()
    assert declared["declared"] and declared["app"]["threshold"] == 0.0
    refused = client.delete(f"/api/apps/{MOVING_APP}", headers=admin)
    assert refused.status_code == 409 and "config file" in refused.json()["detail"]
    sensor_topic = f"homeassistant/binary_sensor/{NODE_ID}/{discovery_id(MOVING_APP)}/config"
    sensor = json.loads(discovery.wait_on(sensor_topic, 1, timeout=60)[0].payload)
    assert (sensor["name"], sensor["state_topic"]) == (MOVING_APP, f"{BASE}/{MOVING_APP}/state")
    assert (sensor["payload_on"], sensor["payload_off"]) == ("ON", "OFF")
    assert sensor["device"] == camera["device"]  # the app's sensor sits on its camera
    image = snapshots.wait_on(f"{BASE}/cameras/synthetic/snapshot", 1, timeout=60)[0]
    assert image.payload[:2] == b"\xff\xd8"

    # An app of the API's own, beside it: announced, and removed when deleted.
    extra = {"name": "moving-too", "package": MOVING_APP}
    created = client.post("/api/apps", json=extra, headers=admin)
    assert created.status_code == 201 and not created.json()["declared"]
    extra_topic = f"homeassistant/binary_sensor/{NODE_ID}/moving-too/config"
    assert json.loads(discovery.wait_on(extra_topic, 1, timeout=30)[0].payload)["name"] == (
        "moving-too"
    )
    assert client.delete("/api/apps/moving-too", headers=admin).status_code == 204
    assert discovery.wait_on(extra_topic, 2, timeout=30)[-1].payload == b""
    assert discovery.on(sensor_topic)[-1].payload != b""  # the declared app stays
    assert daemon.stop()
    client.close()
    discovery.close()
    snapshots.close()
