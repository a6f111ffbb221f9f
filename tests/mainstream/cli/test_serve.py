"""`mainstream serve` as a newcomer meets it: what it prints first, and a busy port."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml

from edge_runtime.camera import CameraConfig
from mainstream.cli.daemon import NO_CAMERA_HINT, needs_a_camera
from mainstream.node.registry import Registry
from mainstream.node.settings import load_settings
from tests.support.nodes import Daemon, free_port, node_config


def write_config(folder: Path, port: int, *, camera: bool = True) -> Path:
    config = folder / "node.yaml"
    data = node_config(folder / "data", api={"port": port})
    if not camera:
        del data["default_camera"]  # as a newcomer's config: no camera at all
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    return config


def test_a_busy_port_is_a_one_line_error_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port)
        completed = subprocess.run(
            [sys.executable, "-m", "mainstream.cli.main", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert completed.returncode != 0
    errors = [line for line in completed.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, completed.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in errors[0] and "--port" in errors[0]
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "data").exists()  # no store opened, no camera, no broker


def test_first_run_says_where_the_dashboard_is_how_to_get_a_token_and_add_a_camera(
    tmp_path: Path,
) -> None:
    port = free_port()
    daemon = Daemon(write_config(tmp_path, port, camera=False), tmp_path / "serve.log", port)
    daemon.start()
    try:
        printed = daemon.log_tail()
    finally:
        assert daemon.stop()
    assert f"dashboard  http://127.0.0.1:{port}/ui/" in printed
    assert f"API docs   http://127.0.0.1:{port}/docs" in printed
    assert f"mainstream token create --role admin --config {daemon.config}" in printed
    assert f"  {NO_CAMERA_HINT}\n" in printed
    # Nothing was registered that nobody asked for: no camera decodes frames for no app.
    with Registry(tmp_path / "data" / "registry.db", tmp_path / "data" / "blobs") as registry:
        assert registry.list_cameras() == []
    assert "registered camera" not in printed


def test_the_camera_hint_is_only_for_a_node_without_any_camera(tmp_path: Path) -> None:
    with_camera = load_settings(write_config(tmp_path, free_port()), environment=False)
    without = with_camera.model_copy(update={"default_camera": None})
    registry_role = without.model_copy(update={"role": "registry"})
    with Registry(tmp_path / "registry.db", tmp_path / "blobs") as registry:
        assert needs_a_camera(without, registry)
        assert not needs_a_camera(with_camera, registry)
        assert not needs_a_camera(registry_role, registry)
        with registry.transaction() as transaction:  # added earlier through the API
            transaction.add_camera(CameraConfig(id="door", url="synthetic://?fps=5"))
        assert not needs_a_camera(without, registry)
