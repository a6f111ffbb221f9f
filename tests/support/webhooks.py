"""A real HTTP webhook receiver on loopback that records and verifies requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_valid: bool
    status: int
    at: float

    def json(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """An HTTP server that checks signatures on its own and answers with scripted statuses.

    A request with a bad signature gets 401; otherwise the next status of `statuses`, then
    `default_status` once they are used up.
    """

    def __init__(
        self,
        secret: str,
        statuses: list[int] | None = None,
        *,
        default_status: int = 200,
        delay_s: float = 0.0,
    ) -> None:
        self.secret = secret.encode()
        self.statuses = list(statuses or [])
        self.default_status = default_status
        self.delay_s = delay_s
        self.requests: list[Request] = []
        self.condition = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.answer(self, body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def signature_ok(self, headers: dict[str, str], body: bytes) -> bool:
        timestamp = headers.get("X-Mainstream-Timestamp", "")
        material = timestamp.encode() + b"." + body
        expected = "sha256=" + hmac.new(self.secret, material, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, headers.get("X-Mainstream-Signature", ""))

    def answer(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        time.sleep(self.delay_s)
        headers = dict(handler.headers.items())
        valid = self.signature_ok(headers, body)
        with self.condition:
            status = 401 if not valid else (self.statuses.pop(0) if self.statuses else None)
            status = status or self.default_status
            self.requests.append(Request(handler.path, headers, body, valid, status, time.time()))
            self.condition.notify_all()
        handler.send_response(status)
        if status == 429:
            handler.send_header("Retry-After", "0")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        with self.condition:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{len(self.requests)} of {count} requests arrived"
                self.condition.wait(remaining)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
