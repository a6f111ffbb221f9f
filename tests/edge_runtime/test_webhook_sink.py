"""Webhook sink against a real HTTP receiver on loopback: signatures, retries, dead letters."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge_runtime.detector import DetectorConfig, EventChange, EventDetector
from edge_runtime.sinks import EventSink, build_sinks, dead_letter_path
from edge_runtime.sinks.payload import event_json
from edge_runtime.sinks.settings import WebhookSettings, WebhookTarget
from edge_runtime.sinks.webhook import (
    DeadLetter,
    DeadLetterFile,
    WebhookSink,
    backoff_delay,
    read_dead_letters,
    redact_url,
    rotated_dead_letter_paths,
    verify_signature,
)
from tests.support.webhooks import Receiver

SECRET = "correct horse battery staple"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(SECRET)
    yield server
    server.close()


def webhook_settings(*targets: WebhookTarget | str, **overrides: object) -> WebhookSettings:
    values: dict[str, object] = {
        "targets": [
            target if isinstance(target, WebhookTarget) else WebhookTarget(url=target)
            for target in targets
        ],
        "secret": SECRET,
        "timeout_s": 2.0,
        "max_attempts": 4,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
    }
    return WebhookSettings.model_validate(values | overrides)


def event_changes(app: str, camera: str = "door", start: float = 1000.0) -> list[EventChange]:
    """One real event from the detector: new, two better peaks (updates), end."""
    detector = EventDetector(app, camera, DetectorConfig(threshold=0.5, x_vote=2, quiet_time_s=1))
    changes: list[EventChange] = []
    for index, score in enumerate([0.9, 0.7, 0.8, 0.95, 0.2]):
        changes += detector.observe(start + index * 0.1, index, score)
    return changes + detector.flush()


def test_signed_event_messages_arrive_in_order(receiver: Receiver, tmp_path: Path) -> None:
    sink = WebhookSink(webhook_settings(receiver.url), "edge-1", tmp_path / "dead.jsonl").start()
    assert isinstance(sink, EventSink)
    changes = event_changes("person")
    for change in changes:
        sink(change)
    requests = receiver.wait_for(len(changes))
    assert sink.wait_until_delivered(5)

    assert all(request.signature_valid and request.status == 200 for request in requests)
    assert [r.headers["X-Mainstream-Event"] for r in requests] == ["new", "update", "update", "end"]
    assert len({r.headers["X-Mainstream-Delivery"] for r in requests}) == len(requests)
    messages = [request.json() for request in requests]
    for message, change in zip(messages, changes, strict=True):
        assert message["type"] == change.transition.value and message["node"] == "edge-1"
        assert message["after"] == event_json(change.event)
    assert messages[0]["before"] is None
    assert [m["before"] for m in messages[1:]] == [m["after"] for m in messages[:-1]]
    assert messages[-1]["after"]["end_time"] is not None

    first = requests[0]
    timestamp = first.headers["X-Mainstream-Timestamp"]
    signature = first.headers["X-Mainstream-Signature"]
    assert abs(int(timestamp) - time.time()) < 60
    assert verify_signature(SECRET, first.body, timestamp, signature)
    assert not verify_signature("wrong secret", first.body, timestamp, signature)
    assert not verify_signature(SECRET, first.body + b" ", timestamp, signature)
    assert not verify_signature(SECRET, first.body, str(int(timestamp) + 1), signature)
    assert not verify_signature(SECRET, first.body, timestamp, signature, now=int(timestamp) + 3600)
    sink.close()
    assert sink.stats() == {
        "delivered": 4,
        "retries": 0,
        "dead_lettered": 0,
        "dropped": 0,
        "queued": 0,
    }
    assert not (tmp_path / "dead.jsonl").exists()


def test_a_wrong_secret_is_rejected_and_dead_lettered(tmp_path: Path) -> None:
    strict = Receiver("the receiver's own secret")
    try:
        dead = tmp_path / "dead.jsonl"
        sink = WebhookSink(webhook_settings(strict.url), "edge-1", dead).start()
        change = event_changes("person")[0]
        sink(change)
        assert sink.wait_until_delivered(5)
        sink.close()
    finally:
        strict.close()
    assert [(r.signature_valid, r.status) for r in strict.requests] == [(False, 401)]
    [letter] = read_dead_letters(dead)
    assert (letter.reason, letter.attempts, letter.error) == ("rejected", 1, "HTTP 401")
    assert letter.event_id == change.event.id and letter.event_type == "new"
    assert letter.message["after"] == event_json(change.event)
    assert sink.stats()["dead_lettered"] == 1 and sink.stats()["retries"] == 0


def test_server_errors_are_retried_with_backoff_until_accepted(tmp_path: Path) -> None:
    flaky = Receiver(SECRET, statuses=[500, 503, 429])
    try:
        sink = WebhookSink(webhook_settings(flaky.url), "edge-1", tmp_path / "dead.jsonl")
        sink.start()
        sink(event_changes("person")[0])
        requests = flaky.wait_for(4)
        assert sink.wait_until_delivered(5)
        sink.close()
    finally:
        flaky.close()
    assert [request.status for request in requests] == [500, 503, 429, 200]
    assert all(request.signature_valid for request in requests)
    assert len({request.headers["X-Mainstream-Delivery"] for request in requests}) == 1
    gaps = [later.at - earlier.at for earlier, later in pairwise(requests)]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09  # 0.05 s, then doubled
    assert sink.stats()["delivered"] == 1 and sink.stats()["retries"] == 3
    assert read_dead_letters(tmp_path / "dead.jsonl") == []


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_dead_letter_is_written_after_the_last_retry(tmp_path: Path) -> None:
    broken = Receiver(SECRET, default_status=500)
    nobody = f"http://user:pw@127.0.0.1:{unused_port()}/hook"
    dead = tmp_path / "data" / "webhooks" / "dead-letter.jsonl"
    try:
        sinks = build_sinks(
            node="edge-1",
            data_dir=tmp_path / "data",
            webhooks=webhook_settings(broken.url, nobody, max_attempts=3),
        )
        assert dead_letter_path(tmp_path / "data") == dead
        change = event_changes("person")[0]
        sinks(change)
        assert broken.wait_for(3)
        [sink] = sinks.sinks
        assert isinstance(sink, WebhookSink) and sink.wait_until_delivered(5)
        sinks.close()
    finally:
        broken.close()
    assert len(broken.requests) == 3  # no fourth try
    letters = {letter.url: letter for letter in read_dead_letters(dead)}
    assert set(letters) == {broken.url, redact_url(nobody)}
    assert "pw" not in redact_url(nobody)
    server_error, refused = letters[broken.url], letters[redact_url(nobody)]
    assert (server_error.reason, server_error.attempts, server_error.error) == (
        "retries_exhausted",
        3,
        "HTTP 500",
    )
    assert (refused.reason, refused.attempts) == ("retries_exhausted", 3)
    assert refused.error.startswith("ConnectError")
    for letter in letters.values():
        assert letter.message["after"]["id"] == change.event.id
    assert sinks.stats()["webhook_dead_lettered"] == 2
    assert sinks.stats()["webhook_retries"] == 4


def test_targets_per_app_and_per_transition(tmp_path: Path) -> None:
    people, everything, edges = Receiver(SECRET), Receiver(SECRET), Receiver(SECRET)
    try:
        settings = webhook_settings(
            WebhookTarget(url=people.url, apps=["person"]),
            WebhookTarget(url=everything.url),
            WebhookTarget(url=edges.url, transitions=["new", "end"]),
        )
        sink = WebhookSink(settings, "edge-1", tmp_path / "dead.jsonl").start()
        person, car = event_changes("person"), event_changes("car", start=1000.05)
        sequence = [person[0], car[0], person[1], car[1], car[2], person[2], car[3], person[3]]
        for change in sequence:
            sink(change)
        people.wait_for(4)
        everything.wait_for(8)
        edges.wait_for(4)
        assert sink.wait_until_delivered(5)
        sink.close()
    finally:
        for receiver in (people, everything, edges):
            receiver.close()

    def received(server: Receiver) -> list[tuple[str, str]]:
        return [(r.json()["type"], r.json()["after"]["id"]) for r in server.requests]

    def expected(changes: list[EventChange]) -> list[tuple[str, str]]:
        return [(change.transition.value, change.event.id) for change in changes]

    assert received(people) == expected([c for c in sequence if c.event.app == "person"])
    assert received(everything) == expected(sequence)
    assert received(edges) == expected(
        [c for c in sequence if c.transition.value in ("new", "end")]
    )


def test_nothing_is_lost_silently_when_the_queue_overflows(tmp_path: Path) -> None:
    slow = Receiver(SECRET, delay_s=0.3)
    dead = tmp_path / "dead.jsonl"
    try:
        sink = WebhookSink(webhook_settings(slow.url, queue_size=2), "edge-1", dead).start()
        changes = [event_changes("person", start=1000.0 + index)[0] for index in range(6)]
        for change in changes:
            sink(change)
        sink.close(timeout_s=0.5)  # not enough for everything still queued
    finally:
        slow.close()
    delivered = [request.json()["after"]["id"] for request in slow.requests]
    letters = read_dead_letters(dead)
    stats = sink.stats()
    assert stats["delivered"] == len(delivered) >= 1
    assert stats["dead_lettered"] == len(letters)
    assert stats["dropped"] >= 3  # one in flight, two waiting: the rest pushed out
    assert sorted(delivered + [letter.event_id for letter in letters]) == sorted(
        change.event.id for change in changes
    )
    order = [change.event.id for change in changes]
    assert delivered == sorted(delivered, key=order.index)
    assert {letter.reason for letter in letters} <= {"queue_full", "shutdown"}
    assert sum(letter.reason == "queue_full" for letter in letters) == stats["dropped"]


def test_backoff_and_settings_checks() -> None:
    assert [backoff_delay(attempt, 1.0, 5.0) for attempt in range(1, 6)] == [1, 2, 4, 5, 5]
    with pytest.raises(ValidationError, match="url"):
        WebhookTarget(url="ftp://example.org/hook")
    with pytest.raises(ValidationError, match="transitions"):
        WebhookTarget(url="http://example.org/hook", transitions=["started"])


def _letter(number: int) -> DeadLetter:
    return DeadLetter(
        failed_at=float(number),
        delivery_id=f"d{number}",
        url="http://receiver.invalid/hook",
        event_type="end",
        event_id=f"e{number}",
        reason="retries_exhausted",
        attempts=5,
        error="connection refused",
        message={"padding": "x" * 900},
    )


def test_the_dead_letter_file_rotates_and_keeps_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    dead_letters = DeadLetterFile(path, max_bytes=4096, keep=2)
    for number in range(40):  # about 40 KB of records: ten times the cap
        dead_letters.append(_letter(number))
    files = [path, *rotated_dead_letter_paths(path)]
    assert [p.name for p in files] == ["dead.jsonl", "dead.jsonl.1", "dead.jsonl.2"]
    assert all(p.stat().st_size <= 4096 for p in files)
    kept = read_dead_letters(path, rotated=True)
    numbers = [int(letter.event_id[1:]) for letter in kept]
    assert numbers == list(range(40 - len(numbers), 40))  # the newest, in order, none lost between
    assert len(numbers) >= 6  # three files of three records each, at most
    assert read_dead_letters(path) == kept[-len(read_dead_letters(path)) :]
