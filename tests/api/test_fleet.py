"""A fleet on loopback: a real `mainstream serve --role registry` and a real edge node that
pulls the packages of its apps from it.

The registry is uploaded to like any node; the edge node is asked for an app by package name
and version only, pulls the archive, validates it like an upload, plans and deploys. A registry
that serves a tampered archive gets it refused whole, and the registry role answers the routes
that need a runtime with 409.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mainstream.core.errors import ConflictError, NotFoundError
from mainstream.node.fleet import PackageTooLargeError, RegistryClient, RegistryUnavailableError
from tests.support.nodes import (
    TinyPackages,
    bad_packages,
    free_port,
    mainstream,
    node_config,
    wait_for,
)

pytestmark = pytest.mark.slow

ADMIN = "fleet-admin-token"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
UPLOAD_LIMIT = 8 * 1024 * 1024


@dataclass
class Daemon:
    """One `mainstream serve` process (with extra CLI arguments and environment)."""

    name: str
    data: Path
    config: Path
    log: Path
    port: int
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=ADMIN_HEADERS, timeout=180)

    def start(self) -> None:
        command = [sys.executable, "-m", "mainstream.cli.main", "serve", "--config"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*command, str(self.config), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MAINSTREAM_ADMIN_TOKEN": ADMIN, **self.env},
            )

    def wait_live(self) -> None:
        def live() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                return httpx.get(f"{self.url}/api/health/live", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(live, timeout=90, poll=0.25), self.log_tail()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@dataclass
class Fleet:
    registry: Daemon
    node: Daemon
    viewer_token: str  # the registry's viewer token the node pulls with


def _daemon(folder: Path, name: str, **config: Any) -> Daemon:
    data = folder / name / "data"
    port = free_port()
    settings = node_config(data, api={"host": "127.0.0.1", "port": port}, **config)
    settings["api"]["max_upload_bytes"] = UPLOAD_LIMIT
    settings["node_name"] = name
    path = folder / name / "config.yaml"
    data.mkdir(parents=True)
    path.write_text(yaml.safe_dump(settings))
    return Daemon(name=name, data=data, config=path, log=folder / name / "serve.log", port=port)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("fleet")
    registry = _daemon(folder, "registry")
    registry.args = ["--role", "registry"]
    created = mainstream("token", "create", "--role", "viewer", "--config", str(registry.config))
    assert created.returncode == 0, created.stderr
    viewer = created.stdout.strip()
    node = _daemon(folder, "edge-01", runtime={"profile_repeats": 1})
    node.env = {"MAINSTREAM_REGISTRY_URL": registry.url, "MAINSTREAM_REGISTRY_TOKEN": viewer}
    try:
        registry.start()
        node.start()  # both start at once: they import the same libraries
        registry.wait_live()
        node.wait_live()
        yield Fleet(registry=registry, node=node, viewer_token=viewer)
    finally:
        node.stop()
        registry.stop()


def upload(client: httpx.Client, path: Path) -> dict[str, Any]:
    answer = client.post("/api/packages", files={"file": (path.name, path.read_bytes())})
    assert answer.status_code in (200, 201), answer.text
    result: dict[str, Any] = answer.json()["package"]
    return result


def node_state(client: httpx.Client, data: Path) -> dict[str, Any]:
    """What a refused pull must leave as it was."""
    return {
        "packages": client.get("/api/packages").json(),
        "apps": [view["app"] for view in client.get("/api/apps").json()],
        "schedule_id": client.get("/api/schedule").json().get("id"),
        "blobs": sorted(path.name for path in (data / "blobs").glob("*")),
        "bases": sorted(path.name for path in (data / "bases").glob("*")),
        "staged": sorted(path.name for path in (data / "tmp").glob("*")),
    }


def test_registry_role_serves_packages_only(fleet: Fleet) -> None:
    with fleet.registry.client() as registry:
        ready = registry.get("/api/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["role"] == "registry"
        assert ready.json()["checks"]["registry"] == "ok"
        for path in (
            "/api/apps",
            "/api/cameras",
            "/api/cameras/synthetic/latest.jpg",
            "/api/schedule",
            "/api/events",
            "/api/live",
        ):
            answer = registry.get(path)
            assert answer.status_code == 409, (path, answer.text)
            assert "shared registry" in answer.json()["detail"], path
        refused = registry.post("/api/apps", json={"name": "trains"})
        assert refused.status_code == 409
        assert registry.get("/api/packages").status_code == 200
        assert registry.get("/api/stats").json()["role"] == "registry"
        document = registry.get("/openapi.json").json()
        assert "/api/packages/{app}/{version}/archive" in document["paths"]
        assert not [path for path in document["paths"] if path.startswith("/api/apps")]
        assert "409" in document["info"]["description"]
    # no camera was registered nor started on the registry
    with sqlite3.connect(fleet.registry.data / "registry.db") as database:
        assert database.execute("SELECT COUNT(*) FROM cameras").fetchone()[0] == 0


def test_node_pulls_package_from_registry_and_deploys_it(
    fleet: Fleet, tiny_packages: TinyPackages
) -> None:
    with fleet.registry.client() as registry, fleet.node.client() as node:
        upload(registry, tiny_packages.trains)
        second = upload(registry, tiny_packages.trains_v2)
        assert second["version"] == 2
        archive = registry.get("/api/packages/trains/2/archive")
        assert archive.status_code == 200
        assert archive.content == tiny_packages.trains_v2.read_bytes()
        assert archive.headers["x-mainstream-sha256"] == second["sha256"]
        assert httpx.get(f"{fleet.registry.url}/api/packages/trains/2/archive").status_code == 401

        assert node.get("/api/packages").json() == []
        created = node.post("/api/apps", json={"name": "trains", "version": 2})
        assert created.status_code == 201, created.text + fleet.node.log_tail()
        app = created.json()["app"]
        assert (app["package_app"], app["package_version"]) == ("trains", 2)
        assert app["package_sha256"] == second["sha256"]
        # the pulled package keeps the registry's version number
        held = node.get("/api/packages").json()
        assert [(p["app"], p["version"], p["sha256"]) for p in held] == [
            ("trains", 2, second["sha256"])
        ]
        schedule = node.get("/api/schedule").json()
        assert schedule["status"] == "ok"
        assert [planned["name"] for planned in schedule["plan"]["apps"]] == ["trains"]
        assert node.get("/api/health/ready").status_code == 200
        assert list((fleet.node.data / "tmp").glob("*")) == []

        # packages can also be pulled ahead of time; pulling one already held changes nothing
        ahead = node.post("/api/packages/pull", json={"app": "trains", "version": 1})
        assert ahead.status_code == 201, ahead.text
        assert ahead.json()["package"]["version"] == 1
        again = node.post("/api/packages/pull", json={"app": "trains", "version": 1})
        assert again.status_code == 200 and again.json()["created"] is False
        latest = node.get("/api/packages/trains/latest").json()
        assert (latest["version"], latest["sha256"]) == (2, second["sha256"])


def test_node_refuses_a_tampered_archive_whole(
    fleet: Fleet, tiny_packages: TinyPackages, tmp_path: Path
) -> None:
    tampered, reason = bad_packages(tiny_packages, tmp_path / "bad")["wrong checksum"]
    with fleet.registry.client() as registry, fleet.node.client() as node:
        trains = upload(registry, tiny_packages.trains)
        buses = upload(registry, tiny_packages.buses)
        before = node_state(node, fleet.node.data)

        # 1. the archive served is not the one the registry lists (its blob was overwritten)
        blob = fleet.registry.data / "blobs" / f"{buses['sha256']}.mpkg"
        blob.write_bytes(tampered.read_bytes())
        refused = node.post("/api/apps", json={"name": "buses"})
        assert refused.status_code == 400, refused.text
        assert "tampered" in refused.json()["detail"]
        assert node_state(node, fleet.node.data) == before

        # 2. registry record and archive agree, but the archive's content fails validation
        #    exactly as the same archive fails as an upload
        content = tampered.read_bytes()
        sha256 = hashlib.sha256(content).hexdigest()
        (fleet.registry.data / "blobs" / f"{sha256}.mpkg").write_bytes(content)
        with sqlite3.connect(fleet.registry.data / "registry.db") as database:
            manifest, fingerprint = database.execute(
                "SELECT manifest_json, base_fingerprint FROM packages WHERE sha256 = ?",
                (trains["sha256"],),
            ).fetchone()
            database.execute(
                "INSERT INTO packages (sha256, app, version, base_fingerprint, manifest_json, "
                "size_bytes, uploaded_at) VALUES (?, 'trains', 9, ?, ?, ?, ?)",
                (sha256, fingerprint, manifest, len(content), trains["uploaded_at"]),
            )
        assert registry.get("/api/packages/trains/9").json()["sha256"] == sha256
        refused = node.post(
            "/api/apps", json={"name": "trains-9", "package": "trains", "version": 9}
        )
        assert refused.status_code == 400, refused.text
        assert reason in refused.json()["detail"]
        as_upload = node.post("/api/packages", files={"file": ("t.mpkg", content)})
        assert as_upload.status_code == 400
        assert as_upload.json()["detail"] == refused.json()["detail"]
        assert node_state(node, fleet.node.data) == before

        # 3. a version the registry does not have either
        missing = node.post("/api/apps", json={"name": "trams", "package": "trams"})
        assert missing.status_code == 404
        assert "shared registry" in missing.json()["detail"]
        assert node_state(node, fleet.node.data) == before


def test_registry_client_errors(fleet: Fleet, tiny_packages: TinyPackages, tmp_path: Path) -> None:
    with fleet.registry.client() as registry:
        upload(registry, tiny_packages.trains)
    with (
        RegistryClient(fleet.registry.url, "not-a-token") as stranger,
        pytest.raises(RegistryUnavailableError, match="refused this node's token"),
    ):
        stranger.package("trains", "latest")
    with RegistryClient(fleet.registry.url, fleet.viewer_token) as client:
        with pytest.raises(NotFoundError, match="shared registry"):
            client.package("no-such-app", 1)
        record = client.package("trains", 1)
        target = tmp_path / "pulled.mpkg"
        with pytest.raises(PackageTooLargeError, match="max_upload_bytes"):
            client.download(record, target, limit=record.size_bytes - 1)
        assert not target.exists()
        assert client.download(record, target, limit=record.size_bytes) == record.size_bytes
        assert hashlib.sha256(target.read_bytes()).hexdigest() == record.sha256
    with (
        RegistryClient(f"http://127.0.0.1:{free_port()}", None, timeout=2) as nowhere,
        pytest.raises(RegistryUnavailableError, match="cannot be reached"),
    ):
        nowhere.package("trains", 1)


def _without_bundled_base(tiny: TinyPackages, folder: Path, app: str) -> Path:
    """The `trains` package renamed to `app`, without its bundled base weights."""
    import zipfile

    from mainstream.core.package import inspect_package, write_package

    manifest = inspect_package(tiny.trains).manifest
    manifest = manifest.model_copy(
        update={
            "app": manifest.app.model_copy(update={"name": app}),
            "base_weights": None,
            "checksums": {},
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    with zipfile.ZipFile(tiny.trains) as archive:
        for candidate in manifest.candidates:
            local = folder / Path(candidate.file).name
            local.write_bytes(archive.read(candidate.file))
            files[candidate.file] = local
    return write_package(folder / f"{app}.mpkg", manifest, files)


def test_node_pulls_the_base_a_package_does_not_bundle(
    fleet: Fleet, tiny_packages: TinyPackages, tmp_path: Path
) -> None:
    """In process: a node with no base asks for an app whose package relies on the registry's
    base; the base comes from the shared registry and is checked against its fingerprint."""
    from pydantic import SecretStr

    from mainstream.node.node import Node
    from mainstream.node.services import Services
    from mainstream.node.settings import Settings

    unbundled = _without_bundled_base(tiny_packages, tmp_path / "unbundled", "trams")
    with fleet.registry.client() as registry:
        upload(registry, tiny_packages.trains)  # the registry learns the base from it
        listed = upload(registry, unbundled)
        assert registry.get("/api/bases").json()[0]["fingerprint"] == tiny_packages.fingerprint
    data = tmp_path / "node"
    settings = Settings(
        **node_config(data, default_camera=None),
        registry_url=fleet.registry.url,
        registry_token=SecretStr(fleet.viewer_token),
    )
    node = Node(settings)
    try:
        result = Services(node).packages.pull("trams", "latest")
        assert result.created and result.package.version == listed["version"]
        assert result.package.sha256 == listed["sha256"]
        base = node.registry.get_base(tiny_packages.fingerprint)
        assert base is not None
        record = yaml.safe_load((data / "bases" / f"{base.fingerprint}.json").read_text())
        assert record["provenance"] == {"pulled_from": fleet.registry.url}
        assert list((data / "tmp").glob("*")) == []
    finally:
        node.stop()

    alone = Node(Settings(**node_config(tmp_path / "alone", default_camera=None)))
    try:
        with pytest.raises(ConflictError, match="registry_url"):
            Services(alone).packages.pull("trams", "latest")
    finally:
        alone.stop()


def test_pulled_versions_keep_the_shared_registrys_numbers(
    tiny_packages: TinyPackages, tmp_path: Path
) -> None:
    """`add_package(version=...)`: a number names one archive; `latest` is the highest held."""
    from mainstream.core.package import inspect_package, sha256_file
    from mainstream.node.registry import Registry

    def stored(registry: Registry, path: Path) -> tuple[Any, str]:
        sha256 = sha256_file(path)
        registry.blobs.put(path, sha256)
        return inspect_package(path).manifest, sha256

    with Registry(tmp_path / "registry.db", tmp_path / "blobs") as registry:
        first, first_sha = stored(registry, tiny_packages.trains)
        second, second_sha = stored(registry, tiny_packages.trains_v2)
        with registry.transaction() as transaction:
            transaction.add_base(first.base_model, "weights.h5")
            assert transaction.add_package(second, second_sha, 10, version=5).version == 5
            older = transaction.add_package(first, first_sha, 10, version=3)
        assert (older.version, older.latest) == (3, False)
        assert registry.get_package("trains", "latest").sha256 == second_sha
        with (
            pytest.raises(ConflictError, match="already stored here with another archive"),
            registry.transaction() as transaction,
        ):
            transaction.add_package(first, first_sha, 10, version=5)
        assert registry.get_package("trains", 5).sha256 == second_sha
        # an upload (no version given) continues after the highest number seen
        with registry.transaction() as transaction:
            transaction.delete_package("trains", 3)
            assert transaction.add_package(first, first_sha, 10).version == 6


def _fleet_file(path: Path, fleet: Fleet) -> Path:
    """One camera with one app for the edge node, and a second node without an API that the
    plan leaves empty (an app costs 50 ms/s at 5 fps: the other node's 20 cannot hold it)."""
    profile = {
        "base_model": "mobilenet_v1",
        "cut_points": [
            {"name": "input", "cumulative_cost": 0.0},
            {"name": "conv_pw_11_relu", "cumulative_cost": 8.0},
            {"name": "conv_pw_13_relu", "cumulative_cost": 9.5},
        ],
        "total_cost": 10.0,
    }
    app = {
        "name": "fleet-trains",
        "package": "trains",
        "event_length_s": 1.0,
        "event_frequency": 0.2,
        "correlation": 0.3,
        "candidates": [
            {"cut_point": "conv_pw_11_relu", "recall": 0.9, "false_positive_rate": 0.05},
            {"cut_point": "conv_pw_13_relu", "recall": 0.85, "false_positive_rate": 0.08},
        ],
    }
    document = {
        "camera_fps": 10,
        "fps_options": [5, 10],
        "nodes": [
            {"name": "edge-01", "url": fleet.node.url, "budget": 60, "profile": profile},
            {"name": "edge-small", "budget": 20, "profile": profile},
        ],
        "cameras": [
            {"name": "fleet-door", "url": "synthetic://?fps=10&size=160x120", "apps": [app]}
        ],
    }
    path.write_text(yaml.safe_dump(document))
    return path


def _running(daemon: Daemon) -> tuple[set[str], dict[str, str]]:
    """The fleet file's cameras and apps on a node (other tests' things left out)."""
    with daemon.client() as client:
        cameras = {view["camera"]["id"] for view in client.get("/api/cameras").json()}
        apps = {
            view["app"]["name"]: view["app"]["camera"] for view in client.get("/api/apps").json()
        }
    return {c for c in cameras if c.startswith("fleet-")}, {
        name: camera for name, camera in apps.items() if name.startswith("fleet-")
    }


def test_fleet_apply_gives_a_node_its_cameras_through_its_api(
    fleet: Fleet, tiny_packages: TinyPackages, tmp_path: Path
) -> None:
    """`mainstream fleet apply --registry`: the shared registry computes the plan, whose
    camera and app reach the node by its REST API (it pulls the package from the registry
    and plans); a second apply changes nothing. (Moves between nodes:
    tests/mainstream/node/test_fleet_apply.py.)"""
    from click.testing import CliRunner

    from mainstream.cli.main import cli

    with fleet.registry.client() as registry:
        upload(registry, tiny_packages.trains)
    runner = CliRunner()
    path = _fleet_file(tmp_path / "fleet.yaml", fleet)
    # The shared registry computes the plan; the CLI sends it to the node's API.
    command = ["fleet", "apply", str(path), "--token", ADMIN, "--registry", fleet.registry.url]
    applied = runner.invoke(cli, [*command, "--json"])
    assert applied.exit_code == 0, applied.output + fleet.node.log_tail()
    answer = json.loads(applied.output)
    assert answer["applied"] and answer["actions"] == [
        "edge-01: add camera fleet-door (synthetic://?fps=10&size=160x120, 10 fps)",
        "edge-01: add app fleet-trains (package trains, camera fleet-door)",
    ]
    assert _running(fleet.node) == ({"fleet-door"}, {"fleet-trains": "fleet-door"})
    with fleet.node.client() as client:
        schedule = client.get("/api/schedule").json()
    assert schedule["status"] == "ok", schedule
    assert "fleet-trains" in {app["name"] for app in schedule["plan"]["apps"]}

    again = runner.invoke(cli, ["fleet", "apply", str(path), "--token", ADMIN, "--dry-run"])
    assert again.exit_code == 0, again.output
    assert "nothing to change" in again.output
