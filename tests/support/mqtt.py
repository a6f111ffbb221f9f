"""A real mosquitto broker on loopback and an MQTT subscriber that records what it receives."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.nodes import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """A mosquitto process on a loopback port that can be stopped and started again."""

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "mosquitto.log"
        self.config_path = directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if persistent else 'false'}",
            f"persistence_location {directory}/",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to 'mosquitto', who cannot write here
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config_path)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log_path.read_text()}")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM lets a persistent broker save its sessions; SIGKILL loses everything."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.process.wait(timeout=10)
        self.process = None


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    dup: bool = False  # the broker sends this message again (QoS 1 is at-least-once)

    @property
    def text(self) -> str:
        return self.payload.decode()

    def json(self) -> dict:
        return json.loads(self.payload)


class Subscriber:
    """A paho client that records what it receives; re-subscribes after reconnecting."""

    def __init__(self, port: int, topic: str, *, client_id: str | None = None) -> None:
        self.topic = topic
        self.messages: list[Received] = []
        self._condition = threading.Condition()
        self._subscribed = threading.Event()
        durable = client_id is not None  # a persistent session keeps messages while away
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            clean_session=not durable,
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(5), "the test subscriber could not subscribe"

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._condition:
            self.messages.append(
                Received(msg.topic, bytes(msg.payload), bool(msg.retain), bool(msg.dup))
            )
            self._condition.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._condition:
            return [message for message in self.messages if message.topic == topic]

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics = [(m.topic, m.payload) for m in self.messages]
                    raise AssertionError(f"timed out; received so far: {topics}")
                self._condition.wait(remaining)
            return list(self.messages)

    def wait_on(self, topic: str, count: int, timeout: float = 10.0) -> list[Received]:
        self.wait_for(lambda messages: sum(m.topic == topic for m in messages) >= count, timeout)
        return self.on(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# Tests that talk to a real broker skip where Debian's mosquitto is not installed.
needs_mosquitto = pytest.mark.skipif(
    not os.access(MOSQUITTO, os.X_OK),
    reason="the mosquitto broker is not installed (Debian package 'mosquitto')",
)
