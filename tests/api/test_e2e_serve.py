"""A real `mainstream serve` process on a loopback port: auth, uploads, live re-planning,
rejected packages, events, and a restart that keeps every piece of state."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.nodes import (
    Daemon,
    TinyPackages,
    bad_packages,
    create_token,
    free_port,
    mainstream,
    node_config,
    upload,
    wait_for,
)

pytestmark = pytest.mark.slow

UPLOAD_LIMIT = 4 * 1024 * 1024


@pytest.fixture
def daemon(tmp_path: Path, tiny_packages: TinyPackages) -> Iterator[Daemon]:
    data = tmp_path / "data"
    tiny_packages.register_base(data)
    port = free_port()
    config = tmp_path / "node.yaml"
    settings = node_config(data, api={"host": "127.0.0.1", "port": port})
    settings["api"]["max_upload_bytes"] = UPLOAD_LIMIT
    config.write_text(yaml.safe_dump(settings))
    checked = mainstream("config", "validate", str(config))
    assert checked.returncode == 0 and checked.stdout.startswith("OK"), checked.stderr
    server = Daemon(config=config, log=tmp_path / "serve.log", port=port)
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.kill()


def stored_state(client: httpx.Client, headers: dict[str, str], data: Path) -> dict[str, Any]:
    return {
        "packages": client.get("/api/packages", headers=headers).json(),
        "blobs": sorted(path.name for path in (data / "blobs").glob("*")),
        "bases": sorted(path.name for path in (data / "bases").glob("*")),
    }


def test_serve_end_to_end(
    daemon: Daemon,
    tiny_packages: TinyPackages,
    tmp_path: Path,
) -> None:
    admin = create_token(daemon.config, "admin")
    viewer = create_token(daemon.config, "viewer")
    data = tmp_path / "data"
    daemon.start()
    client = httpx.Client(base_url=daemon.url, timeout=60)

    # -- auth ---------------------------------------------------------------------------------
    assert client.get("/api/apps").status_code == 401
    assert client.get("/api/apps", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/apps", headers=viewer).status_code == 200
    assert upload(client, viewer, tiny_packages.trains.read_bytes()).status_code == 403
    assert client.post("/api/apps", json={"name": "x"}, headers=viewer).status_code == 403

    # -- a good package, then bad ones that must change nothing -------------------------------
    good = upload(client, admin, tiny_packages.trains.read_bytes())
    assert good.status_code == 201, good.text
    assert good.json()["package"]["version"] == 1
    before = stored_state(client, viewer, data)
    for name, (path, reason) in bad_packages(tiny_packages, tmp_path / "bad").items():
        answer = upload(client, admin, path.read_bytes())
        assert answer.status_code == 400, (name, answer.text)
        assert re.search(reason, answer.json()["detail"]), name
    too_large = upload(client, admin, b"\0" * (UPLOAD_LIMIT + 1024))
    assert too_large.status_code == 413
    assert stored_state(client, viewer, data) == before
    assert list((data / "tmp").iterdir()) == []

    # -- registering an app re-plans the running node -----------------------------------------
    empty = client.get("/api/schedule", headers=viewer).json()
    assert empty["status"] == "empty"
    created = client.post(
        "/api/apps",
        json={"name": "trains", "threshold": 0.0, "quiet_time_s": 120},
        headers=admin,
        timeout=180,
    )
    assert created.status_code == 201, created.text
    planned = client.get("/api/schedule", headers=viewer).json()
    assert planned["status"] == "ok" and planned["id"] != empty["id"]
    assert [app["name"] for app in planned["plan"]["apps"]] == ["trains"]
    assert client.get("/api/health/ready").status_code == 200

    # -- dry runs answer without deploying ----------------------------------------------------
    dry = client.post("/api/schedule/dry-run", json={"remove_apps": ["trains"]}, headers=viewer)
    assert dry.status_code == 200 and dry.json()["status"] == "empty"
    tight = client.post("/api/schedule/dry-run", json={"budget": 1e-6}, headers=viewer)
    assert tight.status_code == 422 and tight.json()["error"] == "InfeasibleError"
    assert client.get("/api/schedule", headers=viewer).json()["id"] == planned["id"]

    # -- events (threshold 0: every analysed frame fires) -------------------------------------
    assert wait_for(
        lambda: bool(client.get("/api/events", headers=viewer).json()["items"]), timeout=60
    ), daemon.log_tail()
    opened = client.get("/api/events", headers=viewer).json()["items"]
    assert opened[0]["app"] == "trains" and opened[0]["open"] is True

    # -- SIGTERM shuts down cleanly; a restart finds everything -------------------------------
    assert daemon.stop(), daemon.log_tail()
    daemon.start()
    assert client.get("/api/apps", headers=viewer).json()[0]["app"]["name"] == "trains"
    assert client.get("/api/packages", headers=viewer).json() == before["packages"]
    assert client.get("/api/schedule", headers=viewer).json()["id"] == planned["id"]
    closed = client.get(f"/api/events/{opened[0]['id']}", headers=viewer).json()
    assert closed["open"] is False and closed["end_time"] is not None
    assert client.get("/api/health/ready").status_code == 200
    assert daemon.stop(), daemon.log_tail()
