"""Delivers event changes to HTTP receivers as signed JSON POSTs, with retries and a dead letter.

Each configured target has its own bounded queue and worker thread, so a slow or dead receiver
delays only its own deliveries, and each receiver gets its events in order.

Request (body: the event message of payload.py, compact UTF-8 JSON)::

    POST <url>
    Content-Type: application/json
    X-Mainstream-Event: new | update | end
    X-Mainstream-Delivery: <id, the same on every retry: receivers can drop repeats>
    X-Mainstream-Timestamp: <unix seconds when this attempt was signed>
    X-Mainstream-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

Receivers recompute the HMAC over the timestamp, a dot and the raw body bytes, compare in constant
time (see :func:`verify_signature`) and reject timestamps far from their clock, which stops
replays of captured requests. Without a configured secret no signature header is sent.

Retries: connection errors, timeouts, 408, 429 and 5xx are retried after
`backoff_initial_s * 2**(attempt-1)` seconds (capped at `backoff_max_s`; a numeric Retry-After
of a 429/503 wins when shorter than the cap), up to `max_attempts` tries. Other 4xx answers are
final. A delivery that is not accepted in the end, that is pushed out of a full queue, or that is
still pending at shutdown is appended as one JSON line to the dead-letter file (see
:class:`DeadLetter`), where an operator can inspect and replay it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from edge_runtime.detector import EventChange
from edge_runtime.sinks.payload import EventMessageBuilder, encode_message
from edge_runtime.sinks.settings import WebhookSettings, WebhookTarget

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Mainstream-Signature"
TIMESTAMP_HEADER = "X-Mainstream-Timestamp"
EVENT_HEADER = "X-Mainstream-Event"
DELIVERY_HEADER = "X-Mainstream-Delivery"
SIGNATURE_SCHEME = "sha256"
RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


def signed_material(timestamp: str, body: bytes) -> bytes:
    return timestamp.encode("ascii") + b"." + body


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The value of the signature header for one request."""
    digest = hmac.new(
        secret.encode("utf-8"), signed_material(timestamp, body), hashlib.sha256
    ).hexdigest()
    return f"{SIGNATURE_SCHEME}={digest}"


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver does: True when the signature matches and the timestamp is recent."""
    if not timestamp or not signature:
        return False
    try:
        signed_at = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - signed_at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def backoff_delay(attempt: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait after failed try number `attempt` (1-based): doubling, capped."""
    return float(min(max_s, initial_s * 2 ** (attempt - 1)))


def redact_url(url: str) -> str:
    """The URL without user name or password, for logs and the dead-letter file."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class DeadLetter:
    """One line of the dead-letter file (JSON), for a delivery that was given up.

    reason: "rejected" (a final 4xx), "retries_exhausted", "queue_full" or "shutdown".
    message: the event message that was to be sent, as JSON.
    """

    failed_at: float
    delivery_id: str
    url: str
    event_type: str
    event_id: str
    reason: str
    attempts: int
    error: str
    message: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(
            {
                "failed_at": self.failed_at,
                "delivery_id": self.delivery_id,
                "url": self.url,
                "event_type": self.event_type,
                "event_id": self.event_id,
                "reason": self.reason,
                "attempts": self.attempts,
                "error": self.error,
                "message": self.message,
            },
            separators=(",", ":"),
        )


def read_dead_letters(path: Path, *, rotated: bool = False) -> list[DeadLetter]:
    """Every record of a dead-letter file, oldest first; an unfinished last line (a crash
    mid-write) is skipped. With `rotated`, the rotated files (`<path>.1`, ...) come first."""
    paths = [*reversed(rotated_dead_letter_paths(path)), path] if rotated else [path]
    letters = []
    for one in paths:
        if not one.exists():
            continue
        for line in one.read_text(encoding="utf-8").splitlines():
            try:
                letters.append(DeadLetter(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                logger.warning("webhook: skipping an unreadable dead-letter line in %s", one)
    return letters


def rotated_dead_letter_paths(path: Path) -> list[Path]:
    """The rotated files that exist, newest first: `<path>.1`, `<path>.2`, ..."""
    found = []
    number = 1
    while (candidate := path.with_name(f"{path.name}.{number}")).exists():
        found.append(candidate)
        number += 1
    return found


class DeadLetterFile:
    """Append-only JSON-lines file; each record is written with one call and flushed to disk.

    So that a receiver that stays down cannot fill the disk, the file is rotated when the
    next record would take it past `max_bytes`: it becomes `<path>.1`, `.1` becomes `.2` and
    so on, and only `keep` rotated files are kept (the oldest records go first).
    """

    def __init__(self, path: Path, max_bytes: int = 16 * 1024 * 1024, keep: int = 3) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()

    def _rotate_if_full(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= self.max_bytes:
            return
        oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
        oldest.unlink(missing_ok=True)
        for number in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{number + 1}"))
        if self.keep > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        logger.warning(
            "webhook: the dead-letter file reached %d bytes; rotated (%d kept)",
            size,
            self.keep,
        )

    def append(self, letter: DeadLetter) -> None:
        line = (letter.to_json() + "\n").encode("utf-8")
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._rotate_if_full(len(line))
                with self.path.open("ab") as file:
                    file.write(line)
                    file.flush()
            except OSError:
                logger.exception("webhook: cannot write the dead-letter file %s", self.path)
                return
        logger.warning(
            "webhook: gave up %s event %s for %s (%s: %s); recorded in %s",
            letter.event_type,
            letter.event_id,
            letter.url,
            letter.reason,
            letter.error,
            self.path,
        )


@dataclass(frozen=True)
class _Delivery:
    id: str
    event_type: str
    event_id: str
    message: dict[str, Any]
    body: bytes


@dataclass
class _Outcome:
    delivered: bool
    retryable: bool
    error: str
    retry_after_s: float | None = None


class _TargetWorker:
    """The queue and thread of one target URL."""

    def __init__(
        self, target: WebhookTarget, settings: WebhookSettings, dead_letters: DeadLetterFile
    ) -> None:
        self.target = target
        self.settings = settings
        self.url = redact_url(target.url)
        self._dead_letters = dead_letters
        self._apps = set(target.apps)
        self._transitions = set(target.transitions)
        self._queue: deque[_Delivery] = deque()
        self._condition = threading.Condition()
        self._closing = False  # no new deliveries; finish the queue
        self._abort = threading.Event()  # the close deadline passed: stop waiting, give up
        self._busy = False
        self.delivered = 0
        self.retries = 0
        self.dead_lettered = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"webhook-{self.url}", daemon=True)

    def wants(self, change: EventChange) -> bool:
        return change.transition.value in self._transitions and (
            not self._apps or change.event.app in self._apps
        )

    def start(self) -> None:
        self._thread.start()

    def submit(self, delivery: _Delivery) -> None:
        pushed_out: _Delivery | None = None
        with self._condition:
            if self._closing:
                pushed_out = delivery
            else:
                if len(self._queue) >= self.settings.queue_size:
                    pushed_out = self._queue.popleft()
                self._queue.append(delivery)
                self._condition.notify_all()
            if pushed_out is not None:
                self.dropped += 1
        if pushed_out is not None:
            reason = "shutdown" if pushed_out is delivery else "queue_full"
            self._give_up(pushed_out, reason, attempts=0, error=reason.replace("_", " "))

    def pending(self) -> int:
        with self._condition:
            return len(self._queue) + int(self._busy)

    def begin_close(self) -> None:
        with self._condition:
            self._closing = True
            self._condition.notify_all()

    def finish_close(self, deadline: float) -> None:
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join(timeout=self.settings.timeout_s + 1)

    def dead_letter_remaining(self) -> None:
        """Give up every queued delivery (the sink closes without having been started)."""
        with self._condition:
            remaining = list(self._queue)
            self._queue.clear()
        for delivery in remaining:
            self._give_up(delivery, "shutdown", attempts=0, error="shutdown")

    def _run(self) -> None:
        with httpx.Client(timeout=self.settings.timeout_s) as client:
            while True:
                with self._condition:
                    while not self._queue and not self._closing:
                        self._condition.wait()
                    if not self._queue:
                        return
                    delivery = self._queue.popleft()
                    self._busy = True
                try:
                    if self._abort.is_set():
                        self._give_up(delivery, "shutdown", attempts=0, error="shutdown")
                    else:
                        self._deliver(client, delivery)
                except Exception as error:  # a bug here must not silently stop deliveries
                    logger.exception("webhook: delivery to %s failed unexpectedly", self.url)
                    self._give_up(delivery, "retries_exhausted", attempts=0, error=repr(error))
                finally:
                    with self._condition:
                        self._busy = False
                        self._condition.notify_all()

    def _deliver(self, client: httpx.Client, delivery: _Delivery) -> None:
        settings = self.settings
        attempt = 0
        outcome = _Outcome(False, True, "not tried")
        while attempt < settings.max_attempts:
            attempt += 1
            outcome = self._attempt(client, delivery)
            if outcome.delivered:
                with self._condition:
                    self.delivered += 1
                return
            if not outcome.retryable or attempt == settings.max_attempts:
                break
            delay = backoff_delay(attempt, settings.backoff_initial_s, settings.backoff_max_s)
            if outcome.retry_after_s is not None:
                delay = min(outcome.retry_after_s, settings.backoff_max_s)
            logger.info(
                "webhook: %s failed (%s); try %d of %d in %.1f s",
                self.url,
                outcome.error,
                attempt + 1,
                settings.max_attempts,
                delay,
            )
            with self._condition:
                self.retries += 1
            if self._abort.wait(delay):
                self._give_up(delivery, "shutdown", attempt, outcome.error)
                return
        reason = "retries_exhausted" if outcome.retryable else "rejected"
        self._give_up(delivery, reason, attempt, outcome.error)

    def _attempt(self, client: httpx.Client, delivery: _Delivery) -> _Outcome:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "mainstream-edge",
            EVENT_HEADER: delivery.event_type,
            DELIVERY_HEADER: delivery.id,
            TIMESTAMP_HEADER: timestamp,
        }
        if self.settings.secret is not None:
            headers[SIGNATURE_HEADER] = sign(
                self.settings.secret.get_secret_value(), timestamp, delivery.body
            )
        try:
            response = client.post(self.target.url, content=delivery.body, headers=headers)
        except httpx.HTTPError as error:
            return _Outcome(False, True, f"{type(error).__name__}: {error}")
        if 200 <= response.status_code < 300:
            return _Outcome(True, False, "")
        retryable = response.status_code in RETRYABLE_STATUSES
        return _Outcome(
            False,
            retryable,
            f"HTTP {response.status_code}",
            retry_after_s=_retry_after(response) if retryable else None,
        )

    def _give_up(self, delivery: _Delivery, reason: str, attempts: int, error: str) -> None:
        with self._condition:
            self.dead_lettered += 1
        self._dead_letters.append(
            DeadLetter(
                failed_at=time.time(),
                delivery_id=delivery.id,
                url=self.url,
                event_type=delivery.event_type,
                event_id=delivery.event_id,
                reason=reason,
                attempts=attempts,
                error=error,
                message=delivery.message,
            )
        )

    def counters(self) -> dict[str, int]:
        with self._condition:
            return {
                "delivered": self.delivered,
                "retries": self.retries,
                "dead_lettered": self.dead_lettered,
                "dropped": self.dropped,
                "queued": len(self._queue) + int(self._busy),
            }


def _retry_after(response: httpx.Response) -> float | None:
    """A Retry-After given in seconds; the HTTP-date form is ignored (backoff applies)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class WebhookSink:
    """An event listener for :class:`EdgeRuntime` that POSTs each change to the targets."""

    name = "webhook"

    def __init__(
        self,
        settings: WebhookSettings,
        node: str,
        dead_letter_path: Path,
        *,
        base_url: str = "",
    ) -> None:
        self.settings = settings
        self.dead_letter_path = dead_letter_path
        self._builder = EventMessageBuilder(node, base_url=base_url)
        dead_letters = DeadLetterFile(
            dead_letter_path,
            max_bytes=settings.dead_letter_max_bytes,
            keep=settings.dead_letter_keep,
        )
        self._workers = [
            _TargetWorker(target, settings, dead_letters) for target in settings.targets
        ]
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        if settings.targets and settings.secret is None:
            logger.warning("webhook: no secret configured; requests are sent unsigned")

    def start(self) -> WebhookSink:
        with self._lock:
            if self._started or self._closed:
                return self
            self._started = True
        for worker in self._workers:
            worker.start()
        return self

    def __call__(self, change: EventChange) -> None:
        workers = [worker for worker in self._workers if worker.wants(change)]
        if not workers:
            return
        with self._lock:  # building and queueing together keeps `before` in delivery order
            message = self._builder.build(change)
            body = encode_message(message)
            for worker in workers:
                worker.submit(
                    _Delivery(
                        id=uuid.uuid4().hex,
                        event_type=change.transition.value,
                        event_id=change.event.id,
                        message=message,
                        body=body,
                    )
                )

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish the queued deliveries for up to `timeout_s`; dead-letter whatever remains."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.begin_close()
        if not started:
            for worker in self._workers:
                worker.dead_letter_remaining()
            return
        for worker in self._workers:
            worker.finish_close(deadline)

    def stats(self) -> dict[str, int | float | bool]:
        """Sums over the targets: delivered, retries, dead_lettered, dropped (queue full or
        closed), queued (waiting or being tried now)."""
        totals: dict[str, int | float | bool] = {
            "delivered": 0,
            "retries": 0,
            "dead_lettered": 0,
            "dropped": 0,
            "queued": 0,
        }
        for worker in self._workers:
            for key, value in worker.counters().items():
                totals[key] = int(totals[key]) + value
        return totals

    def wait_until_delivered(self, timeout_s: float) -> bool:
        """True once no target has anything queued or in progress (for tests and shutdown)."""
        deadline = time.monotonic() + timeout_s
        while any(worker.pending() for worker in self._workers):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True
