"""api/limits.py: body caps and the body idle timeout, on a tiny ASGI app driven by hand.

The app under the middleware reads its whole body and echoes its length, so each test sees
exactly what the middleware let through, what it answered, and what the app was told.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from api.limits import DRAIN_BYTES, BodyLimit, RequestLimits, node_request_limits
from mainstream.node.settings import ApiSettings

Message = dict[str, Any]


@dataclass
class EchoApp:
    """Reads the body to its end (or a disconnect), then answers its length."""

    calls: int = 0
    disconnected: bool = False
    read_before_answer: bool = True

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        self.calls += 1
        size = 0
        while self.read_before_answer:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


@dataclass
class Client:
    """Feeds body chunks (None: stall forever) and records what is sent back."""

    chunks: list[bytes | None]
    sent: list[Message] = field(default_factory=list)
    pulled: int = 0

    async def receive(self) -> Message:
        if self.pulled >= len(self.chunks):
            await asyncio.Event().wait()  # nothing more: a client that keeps the line open
        chunk = self.chunks[self.pulled]
        self.pulled += 1
        if chunk is None:
            await asyncio.Event().wait()
        more = self.pulled < len(self.chunks)
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0].get("headers", []))

    def json(self) -> dict[str, Any]:
        return dict(json.loads(b"".join(m.get("body", b"") for m in self.sent[1:])))


def call(
    middleware: RequestLimits,
    chunks: list[bytes | None],
    *,
    path: str = "/api/apps",
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Client:
    client = Client(chunks)
    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    asyncio.run(asyncio.wait_for(middleware(scope, client.receive, client.send), timeout=5))
    return client


def limits(app: EchoApp, idle_timeout_s: float | None = None) -> RequestLimits:
    return RequestLimits(
        app,
        default=BodyLimit(100),
        routes={("POST", "/upload"): BodyLimit(1000, "uploads: 1000 bytes at most")},
        idle_timeout_s=idle_timeout_s,
    )


def length(size: int) -> list[tuple[bytes, bytes]]:
    return [(b"content-length", str(size).encode())]


CHUNKED = [(b"transfer-encoding", b"chunked")]


def test_a_declared_length_over_the_cap_is_refused_without_reading_or_calling_the_app() -> None:
    app = EchoApp()
    client = call(limits(app), [b"x" * 10], headers=length(200 * 1024 * 1024))
    assert client.status == 413
    assert client.pulled == 0  # not one byte of the body was asked for
    assert app.calls == 0
    assert client.headers[b"connection"] == b"close"
    assert client.json()["error"] == "TooLargeError"


def test_each_route_has_its_own_cap() -> None:
    app = EchoApp()
    upload = call(limits(app), [b"x" * 900], path="/upload", headers=length(900))
    assert upload.status == 200 and upload.sent[1]["body"] == b"900"
    json_route = call(limits(app), [b"x" * 900], path="/api/apps", headers=length(900))
    assert json_route.status == 413
    too_big_upload = call(limits(app), [b"x" * 1001], path="/upload", headers=length(1001))
    assert too_big_upload.status == 413
    assert too_big_upload.json()["detail"] == "uploads: 1000 bytes at most"
    small = call(limits(app), [b"{}"], headers=length(2))
    assert small.status == 200 and small.sent[1]["body"] == b"2"


def test_a_chunked_body_is_counted_and_cut_off_once_over_the_cap() -> None:
    app = EchoApp()
    chunks: list[bytes | None] = [b"x" * 60, b"x" * 60, b"x" * 60, b"x" * 60]
    client = call(limits(app), chunks, headers=CHUNKED)
    assert client.status == 413
    assert client.pulled == 2  # refused at the chunk that passed 100 bytes, not at the end
    assert app.disconnected  # the app was told the client went away
    assert len(client.sent) == 2  # the app's own answer was dropped
    assert client.headers[b"connection"] == b"close"


def test_a_body_that_lies_about_its_length_is_still_counted() -> None:
    app = EchoApp()
    client = call(limits(app), [b"x" * 80, b"x" * 80], headers=length(10))
    assert client.status == 413 and app.disconnected


def test_a_stalled_body_gets_408() -> None:
    app = EchoApp()
    client = call(limits(app, idle_timeout_s=0.2), [b"x" * 10, None], headers=CHUNKED)
    assert client.status == 408
    assert client.json()["error"] == "RequestTimeout"
    assert app.disconnected
    assert client.headers[b"connection"] == b"close"


def test_the_idle_timeout_ends_with_the_body() -> None:
    """After the body, receive waits for a disconnect (streamed answers do): no timeout then."""

    async def waits_for_disconnect(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the (empty) body
        await asyncio.wait_for(receive(), timeout=0.5)  # the middleware must not answer 408

    middleware = RequestLimits(waits_for_disconnect, default=BodyLimit(100), idle_timeout_s=0.05)
    client = Client([b""])
    scope = {"type": "http", "method": "GET", "path": "/api/live", "headers": []}
    with pytest.raises(asyncio.TimeoutError):  # the app's own wait ran out: nobody answered
        asyncio.run(middleware(scope, client.receive, client.send))
    assert client.sent == []


def test_an_answer_before_the_body_was_read_drains_a_small_body_or_closes() -> None:
    """A small rest is read and dropped first, so that a client still sending gets the answer
    (not a connection reset); a large one is not read at all: the connection closes."""
    early = EchoApp(read_before_answer=False)
    drained = call(limits(early), [b"x" * 25, b"x" * 25], headers=length(50))
    assert drained.status == 200 and b"connection" not in drained.headers
    huge = DRAIN_BYTES + 1
    refused = call(
        RequestLimits(early, default=BodyLimit(2 * huge)), [b"x" * 50], headers=length(huge)
    )
    assert refused.status == 200 and refused.headers[b"connection"] == b"close"
    reads = EchoApp()
    kept = call(limits(reads), [b"x" * 50], headers=length(50))
    assert b"connection" not in kept.headers
    no_body = call(limits(early), [b""], method="GET")
    assert b"connection" not in no_body.headers  # GETs keep their connection alive


def test_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = RequestLimits(app, default=BodyLimit(1))
    asyncio.run(middleware({"type": "lifespan"}, Client([]).receive, Client([]).send))
    assert seen == ["lifespan"]


def test_the_node_caps_come_from_the_api_settings() -> None:
    settings = ApiSettings(max_upload_bytes=5000, max_json_bytes=300, body_timeout_s=7)
    middleware = RequestLimits(EchoApp(), **node_request_limits(settings))
    assert middleware.idle_timeout_s == 7
    assert middleware.limit_for("GET", "/api/apps").max_bytes == 300
    upload = middleware.limit_for("POST", "/api/packages/")
    assert 5000 < upload.max_bytes < 5000 + 1024 * 1024  # room for the multipart envelope
    assert "api.max_upload_bytes" in upload.message()
    assert middleware.limit_for("POST", "/api/packages/pull").max_bytes == 300


def test_a_body_without_a_bearer_token_is_refused_unread_where_bodies_need_one() -> None:
    app = EchoApp()
    guarded = RequestLimits(app, default=BodyLimit(10_000), bodies_need_bearer=True)
    refused = call(guarded, [b"x" * 50], headers=length(50))
    assert refused.status == 401 and refused.pulled == 0 and app.calls == 0
    assert refused.headers[b"www-authenticate"] == b"Bearer"
    chunked = call(guarded, [b"x" * 50], headers=CHUNKED)
    assert chunked.status == 401 and chunked.pulled == 0
    bearer = [(b"authorization", b"Bearer mst_anything"), *length(50)]
    assert call(guarded, [b"x" * 50], headers=bearer).status == 200  # the route checks it
    assert call(guarded, [b""], method="GET").status == 200  # no body: the route decides
