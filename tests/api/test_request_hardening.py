"""What the API refuses at its boundary: non-finite numbers, oversized dry runs and bodies,
server paths in error answers, and uploads whose client goes away (a node without apps)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.errors import redact_paths
from mainstream.core.errors import NotFoundError
from mainstream.node.node import Node
from mainstream.node.services import create_token
from mainstream.node.settings import ConfigError, Settings, load_settings


@dataclass
class Api:
    client: TestClient
    app: FastAPI
    node: Node
    admin: dict[str, str]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    node = Node(
        Settings(
            data_dir=tmp_path / "data",
            node_name="test-node",
            scheduler={"max_dry_run_apps": 2},
            api={"max_json_bytes": 64 * 1024},
        )
    )
    app = create_app(node, manage_node=False)
    _, secret = create_token(node.registry, "admin")
    try:
        yield Api(TestClient(app), app, node, {"Authorization": f"Bearer {secret}"})
    finally:
        node.stop()


def post_json_text(api: Api, path: str, text: str) -> Any:
    return api.client.post(
        path, content=text.encode(), headers={**api.admin, "Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/schedule/dry-run", '{"budget": Infinity}'),
        ("/api/schedule/dry-run", '{"budget": NaN}'),
        ("/api/schedule/dry-run", '{"add_apps": [{"name": "a", "weight": Infinity}]}'),
        ("/api/apps", '{"name": "a", "quiet_time_s": Infinity}'),
        ("/api/apps", '{"name": "a", "event_overrides": {"event_length_s": NaN}}'),
    ],
)
def test_non_finite_numbers_are_refused(api: Api, path: str, body: str) -> None:
    answer = post_json_text(api, path, body)
    assert answer.status_code == 422, answer.text
    assert "finite number" in answer.json()["detail"]


def test_non_finite_times_are_refused(api: Api) -> None:
    for value in ("inf", "-Infinity", "nan"):
        answer = api.client.get(f"/api/events?since={value}", headers=api.admin)
        assert answer.status_code == 422, answer.text


def test_non_finite_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="finite number"):
        Settings(data_dir=tmp_path, runtime={"budget_ms_per_s": math.inf})
    config = tmp_path / "node.yaml"
    config.write_text("runtime:\n  budget_ms_per_s: .inf\nscheduler:\n  time_limit_s: .nan\n")
    with pytest.raises(ConfigError) as error:
        load_settings(config, environment=False)
    assert {problem.split(":")[0] for problem in error.value.problems} == {
        "runtime.budget_ms_per_s",
        "scheduler.time_limit_s",
    }


def test_a_dry_run_adds_a_limited_number_of_apps(api: Api) -> None:
    apps = [{"name": f"app-{n}"} for n in range(3)]
    answer = api.client.post("/api/schedule/dry-run", json={"add_apps": apps}, headers=api.admin)
    assert answer.status_code == 422
    assert "at most 2 apps per dry run (scheduler.max_dry_run_apps)" in answer.json()["detail"]
    assert api.node.scheduler.solves == 0


def test_bodies_over_the_json_cap_are_refused_before_the_token_is_checked(api: Api) -> None:
    big = b"[" + b"0," * 40_000 + b"0]"  # 80 kB of valid JSON, over the 64 KiB cap
    for headers in ({}, api.admin):
        answer = api.client.post(
            "/api/schedule/dry-run",
            content=big,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert answer.status_code == 413, answer.text
        assert "api.max_json_bytes" in answer.json()["detail"]
    small = api.client.post("/api/schedule/dry-run", json={}, headers={})
    assert small.status_code == 401  # under the cap, the token decides


def test_error_answers_do_not_show_server_paths(api: Api) -> None:
    data_dir = str(api.node.settings.data_dir)
    not_a_zip = api.client.post("/api/packages", content=b"plain text", headers=api.admin)
    assert not_a_zip.status_code == 400
    detail = not_a_zip.json()["detail"]
    assert "not a zip archive" in detail
    assert data_dir not in detail and "/tmp" not in detail and "/data" not in detail

    @api.app.get("/test-leaky-error")
    def leaky() -> None:
        raise NotFoundError(f"archive {data_dir}/blobs/abc.mpkg is missing in {data_dir}")

    leaked = api.client.get("/test-leaky-error").json()["detail"]
    assert leaked == "archive abc.mpkg is missing in a folder of the node"


def test_paths_are_reduced_to_file_names() -> None:
    roots = ["/srv/mainstream"]
    assert redact_paths("'/srv/mainstream/tmp/up.mpkg' is not a file", roots) == (
        "'up.mpkg' is not a file"
    )
    assert redact_paths("a path inside /srv/mainstream/datasets", roots) == (
        "a path inside datasets"
    )
    assert redact_paths("cannot open /opt/models/x.h5: gone") == "cannot open x.h5: gone"
    assert redact_paths("in /srv/mainstream", roots) == "in a folder of the node"
    assert redact_paths("in /srv/mainstreamer", roots) == "in mainstreamer"  # not the root
    for kept in (
        "POST /api/packages failed",
        "registry http://registry:8780/api/packages/trains/1 answered 404",
        "330 of 400 ms/s",
        "dataset 'cats/train' is missing",
        "/metrics is open",  # one segment: not a path of the server's
    ):
        assert redact_paths(kept, roots) == kept


def test_a_client_that_disconnects_mid_upload_gets_a_4xx_and_leaves_nothing(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Driven at the ASGI level: the body stops after one part and the client is gone."""
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"PK\x03\x04" + b"x" * 1000, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/packages",
        "raw_path": b"/api/packages",
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 8780),
        "client": ("127.0.0.1", 40000),
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", api.admin["Authorization"].encode()),
            (b"content-type", b"application/octet-stream"),
            (b"content-length", b"1000000"),
        ],
        "app": api.app,
    }
    with caplog.at_level(logging.INFO):
        asyncio.run(api.app(scope, receive, send))
    assert sent[0]["status"] == 400
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("400 client disconnected" in r.getMessage() for r in caplog.records)
    staging = api.node.settings.data_dir / "tmp"
    assert not staging.exists() or list(staging.iterdir()) == []
    assert api.node.registry.list_packages() == []
