"""Event sinks: where event changes go after they are stored (MQTT, webhooks).

A sink is an :class:`EdgeRuntime` listener: the runtime calls it with each committed
:class:`EventChange`. Calls must return at once; sinks do their network I/O on their own threads.
Sinks that also report camera states have `on_camera_state(StateChange)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from edge_runtime.detector import EventChange
from edge_runtime.sinks.mqtt import MqttSink, SnapshotReader
from edge_runtime.sinks.settings import MqttSettings, WebhookSettings, WebhookTarget
from edge_runtime.sinks.webhook import WebhookSink

if TYPE_CHECKING:
    from edge_runtime.camera import StateChange

logger = logging.getLogger(__name__)

__all__ = [
    "EventSink",
    "MqttSettings",
    "SinkFanOut",
    "WebhookSettings",
    "WebhookTarget",
    "build_sinks",
]

SinkStats = dict[str, int | float | bool]


@runtime_checkable
class EventSink(Protocol):
    name: str

    def __call__(self, change: EventChange) -> None:
        """Take one committed event change; must not block on the network."""

    def close(self) -> None:
        """Deliver what can still be delivered within the sink's own time limit, then stop."""

    def stats(self) -> SinkStats:
        """Counters for metrics, e.g. {"published": 12, "dropped": 0, "connected": True}."""


class SinkFanOut:
    """Several sinks as one listener: a failing sink never stops the others."""

    name = "sinks"

    def __init__(self, sinks: Iterable[EventSink] = ()) -> None:
        self.sinks = list(sinks)

    def __call__(self, change: EventChange) -> None:
        for sink in self.sinks:
            try:
                sink(change)
            except Exception:
                logger.exception("sink %s failed on event %s", sink.name, change.event.id)

    def on_camera_state(self, change: StateChange) -> None:
        """A camera state listener that forwards to every sink that reports camera states."""
        for sink in self.sinks:
            listener = getattr(sink, "on_camera_state", None)
            if listener is None:
                continue
            try:
                listener(change)
            except Exception:
                logger.exception("sink %s failed on camera %s", sink.name, change.camera_id)

    def on_inventory(self, apps: Mapping[str, str], cameras: Iterable[str]) -> None:
        """The node's apps (name -> camera) and cameras, to every sink that announces them."""
        camera_ids = list(cameras)
        for sink in self.sinks:
            listener = getattr(sink, "on_inventory", None)
            if listener is None:
                continue
            try:
                listener(apps, camera_ids)
            except Exception:
                logger.exception("sink %s failed to announce the apps and cameras", sink.name)

    def on_review(self, event_id: str, verdict: bool | None) -> None:
        """Tell the sinks that announce marks (MQTT) that an event was marked or cleared."""
        for sink in self.sinks:
            listener = getattr(sink, "on_review", None)
            if listener is None:
                continue
            try:
                listener(event_id, verdict)
            except Exception:
                logger.exception("sink %s failed on the review of event %s", sink.name, event_id)

    def subscribe(self, suffix: str, handler: Callable[[str, bytes], None]) -> list[str]:
        """Take commands on `suffix` from every sink that has a command channel (MQTT)."""
        topics = []
        for sink in self.sinks:
            subscribe = getattr(sink, "subscribe", None)
            if subscribe is not None:
                topics.append(subscribe(suffix, handler))
        return topics

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                logger.exception("sink %s failed to close", sink.name)

    def stats(self) -> SinkStats:
        """Every sink's counters, keyed `<sink name>_<counter>`."""
        return {
            f"{sink.name}_{key}": value
            for sink in self.sinks
            for key, value in sink.stats().items()
        }


def dead_letter_path(data_dir: Path) -> Path:
    """Where webhook deliveries that were given up are recorded (JSON lines)."""
    return data_dir / "webhooks" / "dead-letter.jsonl"


def build_sinks(
    *,
    node: str,
    data_dir: Path,
    mqtt: MqttSettings | None = None,
    webhooks: WebhookSettings | None = None,
    base_url: str = "",
    snapshots: SnapshotReader | None = None,
) -> SinkFanOut:
    """The sinks the settings enable, started; MQTT and HTTP clients load only when used.

    `snapshots` reads an event's stored JPEG, for the MQTT snapshot topics."""
    sinks: list[EventSink] = []
    if mqtt is not None and mqtt.enabled:
        sinks.append(MqttSink(mqtt, node, base_url=base_url, snapshots=snapshots).start())
    if webhooks is not None and webhooks.targets:
        sinks.append(
            WebhookSink(webhooks, node, dead_letter_path(data_dir), base_url=base_url).start()
        )
    return SinkFanOut(sinks)
