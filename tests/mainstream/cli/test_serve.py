"""`mainstream serve` as a newcomer meets it: what it prints first, and a busy port."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.nodes import Daemon, free_port, node_config


def write_config(folder: Path, port: int) -> Path:
    config = folder / "node.yaml"
    data = node_config(folder / "data", api={"port": port})
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


def test_first_run_says_where_the_dashboard_is_and_how_to_get_a_token(tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(write_config(tmp_path, port), tmp_path / "serve.log", port)
    daemon.start()
    try:
        printed = daemon.log_tail()
    finally:
        assert daemon.stop()
    assert f"dashboard  http://127.0.0.1:{port}/ui/" in printed
    assert f"API docs   http://127.0.0.1:{port}/docs" in printed
    assert f"mainstream token create --role admin --config {daemon.config}" in printed
