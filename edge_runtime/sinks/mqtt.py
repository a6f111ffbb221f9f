"""Publishes events, app states and camera states to an MQTT broker, Frigate style.

Topics, under `<prefix>/<node>` (prefix `mainstream` by default):

    events                   every event change: {"type", "node", "before", "after"} (see payload.py)
    <app>/state              "ON" while any camera has an open event of the app, else "OFF" (retained)
    cameras/<camera>/status  the camera's state: starting, streaming, reconnecting, ... (retained)
    cameras/<camera>/snapshot  the best JPEG of the camera's latest event (retained; with
                             `publish_snapshots` or `ha_discovery`)
    available                "online" / "offline" (retained; the broker's last will says "offline")
    events/<id>/review       an operator's mark on the event: "true", "false" or "clear"

Commands the node takes (see `subscribe`), Frigate style:

    events/<id>/review/set   mark the event: "true", "false" or "clear"

With `ha_discovery`, Home Assistant's discovery configs (discovery.py) go out, retained, when the
node's apps and cameras change (`on_inventory`); a deleted app's or camera's config and a
deleted app's state are cleared with an empty retained message.

Every message is published with QoS 1 by one publisher thread, one at a time and in the order the
changes happened. While the broker is unreachable, messages wait in a bounded queue (the oldest
is dropped and counted when it is full) and go out, in order, once paho has reconnected. After
each (re)connect the node announces "online" and re-publishes the retained states it had
delivered, so a broker restarted without persistence shows the current states again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_runtime.detector import EventChange, Transition
from edge_runtime.sinks.discovery import discovery_configs
from edge_runtime.sinks.payload import EventMessageBuilder, encode_message
from edge_runtime.sinks.settings import MqttSettings

if TYPE_CHECKING:
    from edge_runtime.camera import StateChange

logger = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
STATE_ON = b"ON"
STATE_OFF = b"OFF"
QOS = 1

MessageHandler = Callable[[str, bytes], None]
SnapshotReader = Callable[[str], bytes | None]
"""The stored snapshot (JPEG) of an event, by id; None when it has none."""


def topic_level(name: str) -> str:
    """`name` made safe as one topic level: '/', '+', '#' and NUL would change the topic's shape."""
    return "".join("_" if char in "/+#\0" else char for char in name) or "_"


@dataclass(frozen=True)
class MqttTopics:
    prefix: str
    node: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{topic_level(self.node)}"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def available(self) -> str:
        return f"{self.base}/available"

    def app_state(self, app: str) -> str:
        return f"{self.base}/{topic_level(app)}/state"

    def camera_status(self, camera: str) -> str:
        return f"{self.base}/cameras/{topic_level(camera)}/status"

    def camera_snapshot(self, camera: str) -> str:
        return f"{self.base}/cameras/{topic_level(camera)}/snapshot"

    def event_review(self, event_id: str) -> str:
        return f"{self.base}/events/{topic_level(event_id)}/review"

    def under_node(self, suffix: str) -> str:
        return f"{self.base}/{suffix.lstrip('/')}"


@dataclass(frozen=True)
class _Message:
    topic: str
    payload: bytes
    retain: bool
    load: Callable[[], bytes | None] | None = None  # read at publish time, off the caller's thread


class MqttSink:
    """An event listener for :class:`EdgeRuntime` and a state listener for cameras.

    Calls never block on the network: they put messages on a queue and return. Call `start()`
    once, `close()` at shutdown.
    """

    name = "mqtt"

    def __init__(
        self,
        settings: MqttSettings,
        node: str,
        *,
        base_url: str = "",
        snapshots: SnapshotReader | None = None,
    ) -> None:
        self.settings = settings
        self.node = node
        self.topics = MqttTopics(settings.topic_prefix, node)
        self._snapshots = snapshots if settings.snapshots_published else None
        self._discovery_sent: dict[str, bytes] = {}  # config topic -> payload, as last sent
        self._apps: set[str] = set()
        self._builder = EventMessageBuilder(node, base_url=base_url)
        self._condition = threading.Condition()
        self._queue: deque[_Message] = deque()
        self._open_events_by_app: dict[str, set[str]] = {}
        self._delivered_retained: dict[str, bytes] = {}  # re-published after each connect
        self._acknowledged: set[int] = set()  # message ids the broker has PUBACKed
        self._subscriptions: dict[str, MessageHandler] = {}
        self._connected = False
        self._announced = 0  # the connection (counted in _connections) last told "online"
        self._in_flight = 0
        self._started = False
        self._closed = False  # no new messages accepted
        self._stopping = False  # the publisher thread must leave
        self._published = 0
        self._dropped = 0
        self._connections = 0
        self._client = self._make_client(node)
        self._publisher = threading.Thread(
            target=self._publish_loop, name="mqtt-publisher", daemon=True
        )

    def _make_client(self, node: str) -> mqtt.Client:
        settings = self.settings
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id or f"mainstream-{node}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else None
            client.username_pw_set(settings.username, password)
        if settings.tls:
            client.tls_set(ca_certs=str(settings.ca_file) if settings.ca_file else None)
        client.will_set(self.topics.available, OFFLINE, qos=QOS, retain=True)
        client.reconnect_delay_set(settings.reconnect_min_delay_s, settings.reconnect_max_delay_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> MqttSink:
        """Connect in the background (retrying until the broker answers) and start publishing."""
        with self._condition:
            if self._started or self._closed:
                return self
            self._started = True
        logger.info(
            "mqtt: connecting to %s:%d as node %s",
            self.settings.host,
            self.settings.port,
            self.topics.node,
        )
        self._client.connect_async(
            self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s
        )
        self._client.loop_start()
        self._publisher.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (up to `timeout_s`), announce "offline", disconnect.

        Messages still undelivered at the deadline are counted as dropped.
        """
        with self._condition:
            if self._closed:
                return
            self._closed = True
            deadline = time.monotonic() + timeout_s
            while self._started and (self._queue or self._in_flight or self._announce_due()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(min(remaining, 0.1))
            self._stopping = True
            undelivered = len(self._queue) + self._in_flight
            self._queue.clear()
            self._dropped += undelivered
            connected = self._connected
            self._condition.notify_all()
        if undelivered:
            logger.warning("mqtt: closing with %d undelivered message(s)", undelivered)
        if not self._started:
            return
        self._publisher.join(timeout=5)
        if connected:
            info = self._client.publish(self.topics.available, OFFLINE, qos=QOS, retain=True)
            try:
                info.wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as error:
                logger.warning("mqtt: could not announce offline: %s", error)
        self._client.disconnect()
        self._client.loop_stop()

    # -- listeners -----------------------------------------------------------------------------

    def __call__(self, change: EventChange) -> None:
        """Runtime event listener: the event message, then the app state when it flips."""
        app = change.event.app
        with self._condition:  # building under the lock keeps `before` in queue order
            message = self._builder.build(change)
            if (
                change.transition is not Transition.UPDATE
                or self.settings.publish_updates
                or change.clip_stored  # the clip's URL is news whatever the setting
            ):
                self._enqueue(_Message(self.topics.events, encode_message(message), retain=False))
            open_events = self._open_events_by_app.setdefault(app, set())
            was_on = bool(open_events)
            if change.transition is Transition.NEW:
                open_events.add(change.event.id)
                if not was_on:
                    self._enqueue(_Message(self.topics.app_state(app), STATE_ON, retain=True))
            elif change.transition is Transition.END:
                open_events.discard(change.event.id)
                if not open_events:
                    self._enqueue(_Message(self.topics.app_state(app), STATE_OFF, retain=True))
            if change.peak_improved and self._snapshots is not None:
                reader, event_id = self._snapshots, change.event.id
                topic = self.topics.camera_snapshot(change.event.camera)
                self._enqueue(_Message(topic, b"", True, load=lambda: reader(event_id)))

    def on_inventory(self, apps: Mapping[str, str], cameras: Iterable[str]) -> None:
        """The node's apps (name -> camera) and cameras now: with `ha_discovery`, announce
        what is new or changed and clear what is gone (its config, and a gone app's state)."""
        if not self.settings.ha_discovery:
            return
        configs = discovery_configs(
            prefix=self.settings.ha_discovery_prefix,
            node=self.node,
            topics=self.topics,
            apps=apps,
            cameras=cameras,
        )
        with self._condition:
            for topic in sorted(self._discovery_sent.keys() - configs.keys()):
                self._enqueue(_Message(topic, b"", retain=True))
            for app in sorted(self._apps - set(apps)):
                self._open_events_by_app.pop(app, None)
                self._enqueue(_Message(self.topics.app_state(app), b"", retain=True))
            for topic, payload in configs.items():
                if self._discovery_sent.get(topic) != payload:
                    self._enqueue(_Message(topic, payload, retain=True))
            for app in sorted(set(apps) - self._apps):  # a known state, not "unknown"
                if not self._open_events_by_app.get(app):
                    self._enqueue(_Message(self.topics.app_state(app), STATE_OFF, retain=True))
            self._discovery_sent = configs
            self._apps = set(apps)

    def on_camera_state(self, change: StateChange) -> None:
        """Camera state listener: the retained status topic of that camera."""
        status = change.current.value.encode("utf-8")
        with self._condition:
            self._enqueue(_Message(self.topics.camera_status(change.camera_id), status, True))

    def publish_app_state(self, app: str, on: bool = False) -> None:
        """Set an app's retained state directly, e.g. "OFF" when it is deployed."""
        with self._condition:
            payload = STATE_ON if on else STATE_OFF
            self._enqueue(_Message(self.topics.app_state(app), payload, retain=True))

    def on_review(self, event_id: str, verdict: bool | None) -> None:
        """An operator marked an event (None: cleared the mark); not retained."""
        payload = b"clear" if verdict is None else (b"true" if verdict else b"false")
        with self._condition:
            self._enqueue(_Message(self.topics.event_review(event_id), payload, retain=False))

    def subscribe(self, suffix: str, handler: MessageHandler) -> str:
        """Call `handler(topic, payload)` for messages on `<prefix>/<node>/<suffix>`.

        The subscription is renewed after every reconnect. The handler runs on the network
        thread: it must return quickly.
        """
        topic = self.topics.under_node(suffix)

        def on_message(_client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
            try:
                handler(message.topic, bytes(message.payload))
            except Exception:
                logger.exception("mqtt: handler for %s failed", topic)

        with self._condition:
            self._subscriptions[topic] = handler
            connected = self._connected
        self._client.message_callback_add(topic, on_message)
        if connected:
            self._client.subscribe(topic, qos=QOS)
        return topic

    # -- state ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._condition:
            return self._connected

    def stats(self) -> dict[str, int | float | bool]:
        """Counters for metrics: published (acknowledged by the broker), queued (waiting now),
        dropped (lost to a full queue or to shutdown), connected, connections (successful)."""
        with self._condition:
            return {
                "published": self._published,
                "queued": len(self._queue) + self._in_flight,
                "dropped": self._dropped,
                "connected": self._connected,
                "connections": self._connections,
            }

    def wait_until_delivered(self, timeout_s: float) -> bool:
        """True once nothing is queued or awaiting the broker's acknowledgement."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while self._queue or self._in_flight or self._announce_due():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(min(remaining, 0.1))
            return True

    # -- internals -----------------------------------------------------------------------------

    def _announce_due(self) -> bool:
        """Whether the current connection has not yet heard "online" (lock held)."""
        return self._connected and self._announced < self._connections

    def _enqueue(self, message: _Message) -> None:
        """Add to the queue (lock held); a full queue loses its oldest message."""
        if self._closed:
            self._dropped += 1
            return
        if len(self._queue) >= self.settings.queue_size:
            self._queue.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 100 == 0:
                logger.warning(
                    "mqtt: queue full (%d messages), dropped %d so far",
                    self.settings.queue_size,
                    self._dropped,
                )
        self._queue.append(message)
        self._condition.notify_all()

    def _publish_loop(self) -> None:
        while True:
            with self._condition:
                while not self._stopping and not (
                    self._connected and (self._announce_due() or self._queue)
                ):
                    self._condition.wait()
                if self._stopping:
                    return
                connection = self._connections
                announcing = self._announce_due()
                if announcing:
                    batch = [_Message(self.topics.available, ONLINE, retain=True)]
                    batch += [
                        _Message(topic, payload, retain=True)
                        for topic, payload in self._delivered_retained.items()
                    ]
                else:
                    batch = [self._queue.popleft()]
                    self._in_flight = 1
            for message in batch:
                if not self._deliver(message):
                    return
            with self._condition:
                if announcing:
                    self._announced = connection
                self._in_flight = 0
                self._condition.notify_all()

    def _deliver(self, message: _Message) -> bool:
        """Publish one message and wait for the broker's PUBACK; False when told to stop.

        If the connection drops meanwhile, paho keeps the message and re-sends it after it has
        reconnected, so waiting for its acknowledgement is all there is to do.
        """
        if message.load is not None:
            loaded = message.load()
            if loaded is None:  # nothing to send (say, the event was pruned meanwhile)
                return True
            message = _Message(message.topic, loaded, message.retain)
        info = self._client.publish(message.topic, message.payload, qos=QOS, retain=message.retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            logger.error(
                "mqtt: cannot publish to %s: %s", message.topic, mqtt.error_string(info.rc)
            )
            with self._condition:
                self._dropped += 1
            return True
        with self._condition:
            while info.mid not in self._acknowledged:
                if self._stopping:
                    return False
                self._condition.wait(0.5)
            self._acknowledged.discard(info.mid)
            self._published += 1
            if message.retain and message.topic != self.topics.available:
                if message.payload:
                    self._delivered_retained[message.topic] = message.payload
                else:  # a cleared topic stays cleared
                    self._delivered_retained.pop(message.topic, None)
        return True

    # paho callbacks, on paho's network thread: keep them short and never raise.

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        if reason_code.is_failure:
            logger.warning("mqtt: broker refused the connection: %s", reason_code)
            return
        with self._condition:
            self._connected = True
            self._connections += 1
            topics = list(self._subscriptions)
            self._condition.notify_all()
        for topic in topics:
            client.subscribe(topic, qos=QOS)
        logger.info("mqtt: connected to %s:%d", self.settings.host, self.settings.port)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        with self._condition:
            was_connected = self._connected
            self._connected = False
            self._condition.notify_all()
        if was_connected and not self._stopping:
            logger.warning("mqtt: disconnected (%s); reconnecting", reason_code)

    def _on_publish(
        self, _client: mqtt.Client, _userdata: Any, mid: int, _reason_code: Any, _properties: Any
    ) -> None:
        with self._condition:
            self._acknowledged.add(mid)
            self._condition.notify_all()
