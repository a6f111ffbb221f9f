"""Request limits against a real `mainstream serve` (uvicorn), over raw sockets.

Each request announces a large body and sends only a few bytes of it: an answer that comes
back anyway proves the server decided without reading the body.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.nodes import Daemon, cli_token, free_port, node_config, wait_for

MiB = 1024 * 1024


@dataclass
class Served:
    daemon: Daemon
    admin: str
    data_dir: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("limits-node")
    config = folder / "node.yaml"
    port = free_port()
    settings = node_config(
        folder / "data",
        api={"host": "127.0.0.1", "port": port, "body_timeout_s": 1.0},
        default_camera=None,
    )
    config.write_text(yaml.safe_dump(settings))
    admin = cli_token(config, "admin")
    daemon = Daemon(config=config, log=folder / "serve.log", port=port)
    daemon.start()
    try:
        yield Served(daemon, admin, folder / "data")
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop()


def request_head(path: str, length: int, token: str | None = None) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/octet-stream",
        f"Content-Length: {length}",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_to(
    served: Served, head: bytes, body_part: bytes, timeout: float = 5.0
) -> tuple[int, bytes, float]:
    """Send the head and part of the body; the status, the answer and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", served.daemon.port), timeout=timeout) as sock:
        sock.sendall(head + body_part)
        received = b""
        while b"\r\n\r\n" not in received or not _complete(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else 0
    return status, received, time.monotonic() - started


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def test_an_upload_without_a_token_is_refused_before_its_body(served: Served) -> None:
    status, answer, seconds = answer_to(served, request_head("/api/packages", 200 * MiB), b"PK")
    assert status == 401, answer
    assert seconds < 3
    assert b"connection: close" in answer.lower()  # the rest is not read and discarded


def test_bodies_over_a_route_cap_are_refused_before_they_are_read(served: Served) -> None:
    upload = request_head("/api/packages", 2048 * MiB, served.admin)
    status, answer, seconds = answer_to(served, upload, b"PK")
    assert status == 413 and b"api.max_upload_bytes" in answer and seconds < 3
    for token in (None, served.admin):
        json_route = request_head("/api/schedule/dry-run", 200 * MiB, token)
        status, answer, seconds = answer_to(served, json_route, b"{")
        assert status == 413 and b"api.max_json_bytes" in answer and seconds < 3


def test_a_body_that_stalls_gets_408(served: Served) -> None:
    head = request_head("/api/schedule/dry-run", 100, served.admin)
    status, answer, seconds = answer_to(served, head, b'{"budget"', timeout=10)
    assert status == 408, answer
    assert 0.9 < seconds < 5  # api.body_timeout_s is 1 s


def test_a_client_that_disconnects_mid_upload_leaves_a_4xx_line_and_no_file(
    served: Served,
) -> None:
    log_before = served.daemon.log_tail()
    with socket.create_connection(("127.0.0.1", served.daemon.port), timeout=5) as sock:
        sock.sendall(request_head("/api/packages", 10 * MiB, served.admin) + b"PK" + b"x" * 65536)
        time.sleep(0.5)  # the upload is under way
    staging = served.data_dir / "tmp"

    def logged() -> bool:
        return "400 client disconnected" in served.daemon.log_tail()

    assert wait_for(logged, timeout=10), served.daemon.log_tail()
    new_lines = served.daemon.log_tail().replace(log_before, "")
    assert "Traceback" not in new_lines and " 500" not in new_lines
    assert wait_for(lambda: not staging.exists() or list(staging.iterdir()) == [], timeout=5)
