"""A real `mainstream serve` process and the `/api/live` stream's credentials: no token ever
reaches the log (uvicorn's access lines included), and a short-lived, single-use ticket opens
the stream without a token in the URL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.nodes import Daemon, cli_token, free_port, node_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    folder = tmp_path_factory.mktemp("live-auth")
    port = free_port()
    config = folder / "node.yaml"
    config.write_text(
        yaml.safe_dump(node_config(folder / "data", api={"host": "127.0.0.1", "port": port}))
    )
    server = Daemon(config=config, log=folder / "serve.log", port=port)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.stop()


def open_live(
    daemon: Daemon, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """Open `/api/live`, read its first chunk and hang up: (status code, first text)."""
    with (
        httpx.Client(base_url=daemon.url, timeout=10) as client,
        client.stream("GET", "/api/live", params=params, headers=headers) as response,
    ):
        return response.status_code, next(response.iter_text(), "")


def test_tokens_never_reach_the_log(daemon: Daemon) -> None:
    token = cli_token(daemon.config, "viewer")
    assert open_live(daemon, params={"token": token})[0] == 200
    assert open_live(daemon, headers={"Authorization": f"Bearer {token}"})[0] == 200
    wrong = token[:-4] + "nope"
    assert open_live(daemon, params={"token": wrong})[0] == 401
    log = Path(daemon.log).read_text()
    assert '"GET /api/live?token=*** HTTP/1.1" 200' in log  # the access line is still there
    assert '"GET /api/live?token=*** HTTP/1.1" 401' in log
    assert token[4:] not in log and wrong[4:] not in log


def test_a_ticket_opens_the_stream_once(daemon: Daemon) -> None:
    token = cli_token(daemon.config, "viewer")
    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        answer = client.post("/api/live/ticket", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        assert client.post("/api/live/ticket", params={"token": token}).status_code == 401
    ticket = answer.json()["ticket"]
    status, first = open_live(daemon, params={"ticket": ticket})
    assert status == 200 and first.startswith("retry:")
    assert open_live(daemon, params={"ticket": ticket})[0] == 401  # used up
    assert open_live(daemon, params={"token": token})[0] == 200  # older clients still work
    log = Path(daemon.log).read_text()
    assert '"GET /api/live?ticket=*** HTTP/1.1" 200' in log
    assert ticket not in log and token[4:] not in log
