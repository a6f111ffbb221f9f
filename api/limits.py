"""Limits that apply before a route does any work: body size and body pace.

:class:`RequestLimits` is a pure ASGI middleware in front of the application, so it runs before
FastAPI reads a body, parses JSON or resolves the bearer token:

* every route has a body cap: the upload routes the upload limit (plus room for the multipart
  envelope), every other route a small JSON cap. A request whose `Content-Length` is over the
  cap is answered 413 without reading a byte of its body and without calling the application;
  a body without a length (chunked) is counted as it streams through `receive` and cut off
  with 413 as soon as it passes the cap;
* a client that sends a body slower than one part per `idle_timeout_s` is answered 408;
* with `bodies_need_bearer` (the node's API), a request with a body but no bearer token is
  answered 401 without reading the body (every such route needs one; the route checks it).

When a limit cuts a body off, the middleware answers itself and tells the application that
the client went away (`http.disconnect`); whatever the application then tries to send is
dropped. When the application answers before reading the body (401, 403), a rest of at most
DRAIN_BYTES is read and dropped first, so that a client still sending gets the answer rather
than a connection reset; a larger rest is not read: the answer carries `Connection: close`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from api.uploads import MULTIPART_OVERHEAD
from mainstream.node.settings import ApiSettings

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a route's body may have, and how to name that limit in a 413 answer."""

    max_bytes: int
    described: str = ""

    def message(self) -> str:
        return (
            self.described or f"this route accepts request bodies of at most {self.max_bytes} bytes"
        )


def _error(status: int, error: str, detail: str) -> tuple[Message, Message]:
    body = json.dumps({"error": error, "detail": detail}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class RequestLimits:
    """ASGI middleware: per-route body caps and a body idle timeout (see the module doc).

    `routes` maps (method, path) to the limit of that route; every other request gets
    `default`. Paths are compared exactly, after the application's root path.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: BodyLimit,
        routes: Mapping[tuple[str, str], BodyLimit] | None = None,
        idle_timeout_s: float | None = None,
        bodies_need_bearer: bool = False,
    ) -> None:
        self.app = app
        self.bodies_need_bearer = bodies_need_bearer
        self.default = default
        self.routes = dict(routes or {})
        self.idle_timeout_s = idle_timeout_s

    def limit_for(self, method: str, path: str) -> BodyLimit:
        return self.routes.get((method.upper(), path.rstrip("/") or "/"), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit.max_bytes:
            _log_refusal(scope, 413, f"declared {declared} bytes; {limit.message()}")
            await self._answer(send, 413, "TooLargeError", limit.message())
            return
        expects_body = declared != 0 if declared is not None else _chunked(scope)
        if expects_body and self.bodies_need_bearer and not _has_bearer(scope):
            # Every route that takes a body needs a token: without one, nothing is read.
            _log_refusal(scope, 401, "a body without a bearer token")
            await self._answer(
                send,
                401,
                "AuthError",
                "this request needs a bearer token (Authorization: Bearer <token>)",
                authenticate=True,
            )
            return
        await _Exchange(self, scope, limit, receive, send, expects_body, declared).run()

    @staticmethod
    async def _answer(
        send: Send, status: int, error: str, detail: str, authenticate: bool = False
    ) -> None:
        start, body = _error(status, error, detail)
        if authenticate:
            start["headers"] = [*start["headers"], (b"www-authenticate", b"Bearer")]
        await send(start)
        await send(body)


class _Exchange:
    """One request under the limits: counts and times its body, filters what is sent."""

    def __init__(
        self,
        limits: RequestLimits,
        scope: Scope,
        limit: BodyLimit,
        receive: Receive,
        send: Send,
        expects_body: bool,
        declared: int | None = None,
    ) -> None:
        self.limits = limits
        self.declared = declared
        self.scope = scope
        self.limit = limit
        self._receive = receive
        self._send = send
        self.received = 0
        self.body_done = not expects_body
        self.response_started = False
        self.refused = False  # the middleware has answered; the application is cut off

    async def run(self) -> None:
        await self.limits.app(self.scope, self.receive, self.send)

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        if self.body_done or self.limits.idle_timeout_s is None:
            message: Message = await self._receive()
        else:
            try:
                message = await asyncio.wait_for(self._receive(), self.limits.idle_timeout_s)
            except asyncio.TimeoutError:
                return await self._refuse(
                    408,
                    "RequestTimeout",
                    f"the request body stalled for more than {self.limits.idle_timeout_s:g} s",
                )
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit.max_bytes:
                return await self._refuse(413, "TooLargeError", self.limit.message())
            if not message.get("more_body", False):
                self.body_done = True
        elif message["type"] == "http.disconnect":
            self.body_done = True
        return message

    async def _refuse(self, status: int, error: str, detail: str) -> Message:
        self.refused = True
        self.body_done = True
        _log_refusal(self.scope, status, f"after {self.received} bytes of body; {detail}")
        if not self.response_started:
            self.response_started = True
            await RequestLimits._answer(self._send, status, error, detail)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the middleware answered already
        if message["type"] == "http.response.start":
            self.response_started = True
            # An answer before the body was read (401, 403, ...): read the rest and drop it
            # first, as far as that is cheap, so that the client, which is still sending, gets
            # the answer rather than a connection reset; beyond that, close the connection.
            if not self.body_done and not await self._drain():
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await self._send(message)

    async def _drain(self) -> bool:
        """Read and discard the rest of the body, up to DRAIN_BYTES and DRAIN_SECONDS;
        True when the whole body was read."""
        if self.declared is not None and self.declared - self.received > DRAIN_BYTES:
            return False  # not worth reading: close at once
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        drained = 0
        while not self.body_done:
            left = deadline - loop.time()
            if left <= 0 or drained > DRAIN_BYTES:
                return False
            try:
                message = await asyncio.wait_for(self._receive(), left)
            except asyncio.TimeoutError:
                return False
            if message["type"] != "http.request":
                self.body_done = True  # the client went away
                return False
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.body_done = True
        return True


DRAIN_BYTES = 8 * 1024 * 1024
DRAIN_SECONDS = 5.0
"""How much of an unread body is read and dropped before an early answer (see `send`): a
declared rest larger than DRAIN_BYTES is not read at all."""


def _log_refusal(scope: Scope, status: int, why: str) -> None:
    logger.warning("%s %s: %d %s", scope.get("method"), scope.get("path"), status, why)


def _has_bearer(scope: Scope) -> bool:
    """Whether the request carries bearer credentials (checked later, by the routes)."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            return value[:7].lower() == b"bearer "
    return False


def _chunked(scope: Scope) -> bool:
    """Whether a body without a declared length follows (Transfer-Encoding)."""
    return any(name.lower() == b"transfer-encoding" for name, _ in scope.get("headers", []))


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None when absent (chunked). A malformed value counts as
    absent: the server refuses it, or the body is counted as it arrives."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else None
    return None


UPLOAD_ROUTES = (("POST", "/api/packages"),)
"""The node's routes that take an upload (`api.max_upload_bytes`); every other route takes
JSON at most `api.max_json_bytes`."""


def node_request_limits(api: ApiSettings) -> dict[str, Any]:
    """The keyword arguments of :class:`RequestLimits` for a node's API settings."""
    upload = BodyLimit(
        api.max_upload_bytes + MULTIPART_OVERHEAD,
        f"the upload is larger than {api.max_upload_bytes} bytes, the most this node accepts "
        "(api.max_upload_bytes)",
    )
    json_body = BodyLimit(
        api.max_json_bytes,
        f"the request body is larger than {api.max_json_bytes} bytes, the most this route "
        "accepts (api.max_json_bytes)",
    )
    return {
        "default": json_body,
        "routes": dict.fromkeys(UPLOAD_ROUTES, upload),
        "idle_timeout_s": api.body_timeout_s,
        "bodies_need_bearer": True,  # every route of the node that takes a body needs a token
    }
