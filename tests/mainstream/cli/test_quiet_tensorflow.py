"""TensorFlow's start-up banner is dropped; anything else written while importing is kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from mainstream.cli.main import needs_tensorflow
from mainstream.cli.quiet_tensorflow import is_startup_note


def test_only_model_commands_import_tensorflow() -> None:
    assert needs_tensorflow(["train", "--video", "v.mp4"])
    assert needs_tensorflow(["package", "verify", "--strict", "a.mpkg"])
    assert not needs_tensorflow(["package", "list"])
    assert not needs_tensorflow(["serve"])  # loads TensorFlow only when a model arrives
    assert not needs_tensorflow(["train", "--help"])
    assert not needs_tensorflow(["events", "list"])
    assert not needs_tensorflow(["schedule", "dry-run", "p.json"])
    assert not needs_tensorflow([])


def test_the_known_notes_are_recognised() -> None:
    assert is_startup_note(
        "I0000 00:00:1796315272.754580   20971 port.cc:153] oneDNN custom operations are on."
    )
    assert not is_startup_note("ImportError: libcudart.so.12: cannot open shared object file")


def test_a_noisy_import_keeps_what_matters(tmp_path: Path) -> None:
    (tmp_path / "noisy_module.py").write_text(
        textwrap.dedent(
            """
            import os
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called\\n")
            os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\\n")
            os.write(2, b"something the user must see\\n")
            """
        )
    )
    script = (
        "from mainstream.cli.quiet_tensorflow import import_tensorflow_quietly\n"
        "import_tensorflow_quietly('noisy_module')\n"
        "import sys; print('imported', 'noisy_module' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": f"{tmp_path}:{Path.cwd()}", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported True"
    assert result.stderr == "something the user must see\n"


def test_a_model_command_starts_without_the_banner(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mainstream.cli.main", "package", "inspect", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "oneDNN" not in result.stderr and "absl::InitializeLog" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
