"""The scheduler stays pure, and `mainstream schedule` never loads TensorFlow, Keras or OpenCV."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.problem import Plan

REPO = Path(__file__).resolve().parents[2]
SCHEDULER_DIR = REPO / "scheduler"
EXAMPLE_PROBLEM = REPO / "examples" / "problem.json"

FORBIDDEN_IN_SCHEDULER = frozenset(
    {
        "trainer",
        "edge_runtime",
        "api",
        "tensorflow",
        "keras",
        "cv2",
        "fastapi",
        "starlette",
        "uvicorn",
    }
)
HEAVY_MODULES = ("tensorflow", "keras", "cv2")


def imported_roots(source: str) -> set[str]:
    """Top-level package names a module imports (anywhere in it, including inside functions)."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_the_scanner_sees_every_kind_of_import() -> None:
    source = (
        "import os\n"
        "from keras import layers\n"
        "def f():\n"
        "    import tensorflow as tf\n"
        "    from edge_runtime.dag import Dag\n"
        "    importlib.import_module('cv2')\n"
        "    return __import__('fastapi.routing')\n"
        "from . import sibling\n"
    )
    assert imported_roots(source) == {"os", "keras", "tensorflow", "edge_runtime", "cv2", "fastapi"}


def scheduler_modules() -> list[Path]:
    return sorted(SCHEDULER_DIR.rglob("*.py"))


def test_the_scheduler_package_has_modules() -> None:
    names = {path.name for path in scheduler_modules()}
    assert {"event_model.py", "problem.py", "report.py", "sweep.py"} <= names


@pytest.mark.parametrize("path", scheduler_modules(), ids=lambda path: path.name)
def test_scheduler_module_imports_no_framework_or_adapter(path: Path) -> None:
    forbidden = imported_roots(path.read_text(encoding="utf-8")) & FORBIDDEN_IN_SCHEDULER
    assert not forbidden, f"{path.relative_to(REPO)} imports {sorted(forbidden)}"


_PROBE = """
import json, sys
{preload}
from mainstream.cli.main import main
main(json.loads(sys.argv[1]))
loaded = sorted(name for name in sys.modules if name.split(".")[0] in {heavy!r})
sys.stderr.write("\\nLOADED=" + json.dumps(loaded) + "\\n")
"""


@pytest.mark.parametrize(
    "extra_args",
    [[], ["--report", "{tmp}/plan.html"]],
    ids=["json", "json-and-report"],
)
def test_schedule_dry_run_never_loads_tensorflow_keras_or_opencv(
    extra_args: list[str], tmp_path: Path
) -> None:
    args = ["schedule", "dry-run", str(EXAMPLE_PROBLEM), "--json"]
    args += [arg.format(tmp=tmp_path) for arg in extra_args]
    completed = run_probe(args)
    assert completed.returncode == 0, completed.stderr
    # The command really ran: stdout is the plan and nothing else.
    plan = Plan.model_validate_json(completed.stdout)
    assert plan.apps
    assert loaded_heavy_modules(completed) == []


def test_the_probe_notices_a_heavy_module() -> None:
    args = ["schedule", "dry-run", str(EXAMPLE_PROBLEM), "--json"]
    completed = run_probe(args, preload="import cv2")
    assert completed.returncode == 0, completed.stderr
    assert "cv2" in loaded_heavy_modules(completed)


def run_probe(args: list[str], preload: str = "") -> subprocess.CompletedProcess[str]:
    """Run the CLI's `main` in a fresh interpreter and report the heavy modules it loaded."""
    probe = _PROBE.format(preload=preload, heavy=set(HEAVY_MODULES))
    return subprocess.run(
        [sys.executable, "-c", probe, json.dumps(args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def loaded_heavy_modules(completed: subprocess.CompletedProcess[str]) -> list[str]:
    marker = [line for line in completed.stderr.splitlines() if line.startswith("LOADED=")]
    assert marker, completed.stderr
    loaded: list[str] = json.loads(marker[-1].removeprefix("LOADED="))
    return loaded
