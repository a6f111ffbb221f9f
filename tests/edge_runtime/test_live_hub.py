"""The live hub: every subscriber gets every change in order; a subscriber that never reads
loses its oldest messages and never holds up the publisher."""

from __future__ import annotations

import threading
import time

from edge_runtime.camera import CameraState, CameraStateMachine
from edge_runtime.detector import DetectorConfig, EventChange, EventDetector
from edge_runtime.live import LiveHub


def changes(count: int) -> list[EventChange]:
    """Real detector output: one event opening, then `count - 1` better peaks."""
    detector = EventDetector("person", "door", DetectorConfig(threshold=0.1, quiet_time_s=60))
    produced: list[EventChange] = []
    for index in range(count):
        produced += detector.observe(1000.0 + index, index, 0.2 + index / (count + 1))
    assert len(produced) == count
    return produced


def test_every_subscriber_gets_every_message_in_order() -> None:
    hub = LiveHub()
    first, second = hub.subscribe(), hub.subscribe()
    events = changes(5)
    for change in events[:3]:
        hub(change)
    machine = CameraStateMachine("door")
    state = machine.transition(CameraState.STARTING, "test")
    hub.on_camera_state(state)
    for change in events[3:]:
        hub(change)
    expected = [*events[:3], state, *events[3:]]
    for subscription in (first, second):
        assert [message.payload for message in subscription.drain()] == expected
        assert subscription.drain() == []
    kinds = [message.kind for message in hub.subscribe().drain()]
    assert kinds == []  # a newcomer sees only what comes after it
    assert hub.stats() == {"subscribers": 3, "published": 6, "dropped": 0}


def test_a_slow_subscriber_loses_the_oldest_and_never_blocks() -> None:
    hub = LiveHub(queue_size=4)
    stuck = hub.subscribe()  # never reads
    reader = hub.subscribe(queue_size=1000)
    events = changes(50)
    started = time.monotonic()
    for change in events:
        hub(change)
    assert time.monotonic() - started < 1.0
    assert [message.payload for message in stuck.drain()] == events[-4:]
    assert stuck.dropped == 46 and reader.dropped == 0
    assert [message.payload for message in reader.drain()] == events
    assert hub.stats()["dropped"] == 46


def test_wake_callback_wait_and_close() -> None:
    hub = LiveHub()
    woken = threading.Event()
    subscription = hub.subscribe(wake=woken.set)
    publisher = threading.Timer(0.1, hub, args=(changes(1)[0],))
    publisher.start()
    received = subscription.wait(timeout_s=5)
    assert woken.is_set() and [message.kind for message in received] == ["event"]

    woken.clear()
    threading.Timer(0.1, hub.close).start()
    assert subscription.wait(timeout_s=5) == []  # returns on close, not on the timeout
    assert woken.is_set() and subscription.closed
    assert hub.stats()["subscribers"] == 0
    late = hub.subscribe()
    assert late.closed  # after close the hub hands out closed subscriptions
    hub(changes(1)[0])
    assert late.drain() == []
