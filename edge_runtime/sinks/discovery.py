"""Home Assistant MQTT discovery: what the node announces, as retained config messages.

Each camera is a Home Assistant device (`Mainstream <camera>`), holding

    <discovery prefix>/binary_sensor/mainstream_<node>/<app>/config
        one per app on that camera: ON while the app sees an event (the app's state topic)
    <discovery prefix>/camera/mainstream_<node>/<camera>/config
        the best snapshot of the camera's latest event (its snapshot topic, a JPEG)

Both are available while the node's `available` topic says "online" (the MQTT last will says
"offline"). A deleted app or camera gets an empty retained config, which removes its entity.
Ids keep only letters, digits, `_` and `-`; a name that loses characters gets a short hash of
itself appended, so that `a.b` and `a_b` stay apart.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from mainstream import __version__

MANUFACTURER = "Mainstream"


class TopicNames(Protocol):
    """The node's own topics the entities read (MqttTopics)."""

    @property
    def available(self) -> str: ...

    def app_state(self, app: str) -> str: ...

    def camera_snapshot(self, camera: str) -> str: ...


def discovery_id(name: str) -> str:
    """`name` as a Home Assistant id: [A-Za-z0-9_-] only, with a hash when it had to change."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    if cleaned == name and name:
        return name
    return f"{cleaned}_{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def discovery_configs(
    *,
    prefix: str,
    node: str,
    topics: TopicNames,
    apps: Mapping[str, str],
    cameras: Iterable[str],
) -> dict[str, bytes]:
    """Config topic -> retained JSON payload for every app (name -> camera) and camera."""
    node_id = f"mainstream_{discovery_id(node)}"
    availability = {
        "availability_topic": topics.available,
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    origin = {"name": MANUFACTURER, "sw_version": __version__}

    def device(camera: str) -> dict[str, Any]:
        return {
            "identifiers": [f"{node_id}_{discovery_id(camera)}"],
            "name": f"{MANUFACTURER} {camera}",
            "manufacturer": MANUFACTURER,
            "model": f"camera on node {node}",
            "sw_version": __version__,
        }

    configs: dict[str, dict[str, Any]] = {}
    for app, camera in sorted(apps.items()):
        topic = f"{prefix}/binary_sensor/{node_id}/{discovery_id(app)}/config"
        configs[topic] = {
            "name": app,
            "unique_id": f"{node_id}_{discovery_id(app)}",
            "device_class": "occupancy",
            "state_topic": topics.app_state(app),
            "payload_on": "ON",
            "payload_off": "OFF",
            **availability,
            "device": device(camera),
            "origin": origin,
        }
    for camera in sorted(set(cameras) | set(apps.values())):
        topic = f"{prefix}/camera/{node_id}/{discovery_id(camera)}/config"
        configs[topic] = {
            "name": "Event snapshot",
            "unique_id": f"{node_id}_{discovery_id(camera)}_snapshot",
            "topic": topics.camera_snapshot(camera),
            **availability,
            "device": device(camera),
            "origin": origin,
        }
    return {
        topic: json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        for topic, config in configs.items()
    }
