"""The node's default engine: resolved once at start-up, reported with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.nodes import node_config

ROOT = Path(__file__).resolve().parents[3]

# A box without OpenVINO: `import openvino` fails (a None entry in sys.modules makes the import
# raise ImportError, as on a machine where the package is missing).
WITHOUT_OPENVINO = """
import json, sys
sys.modules["openvino"] = None
from mainstream.node.node import Node
from mainstream.node.services.health import HealthService
from mainstream.node.settings import Settings

node = Node(Settings(**json.loads(sys.argv[1])))
stats = HealthService(node).stats()
print(json.dumps({
    "engine": node.engine.name,
    "profiles": node.profiles.engine,
    "stats": [stats["engine"], stats["precision"], stats["engine_reason"]],
}))
"""


def test_a_node_on_a_box_without_openvino_runs_keras(tmp_path: Path) -> None:
    config = node_config(tmp_path, runtime={"engine": "auto"}, default_camera=None)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_OPENVINO, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    reported = json.loads(result.stdout.strip().splitlines()[-1])
    assert reported["engine"] == "keras" and reported["profiles"] == "keras"
    assert reported["stats"][:2] == ["keras", "f32"]
    assert reported["stats"][2].startswith("auto: keras f32 (")
