"""Training-job helpers: a tiny dataset and spec, and ways to follow a job and its processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.nodes import Daemon, wait_for

ADMIN_TOKEN = "test-admin-token-for-training-jobs"


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# A tiny job: MobileNet alpha 0.25 at 96 px, random weights, one cut point, one epoch.
TINY_SPEC: dict[str, Any] = {
    "dataset": "shapes",
    "positive_class": "circle",
    "base": {"name": "mobilenet_v1", "weights": "none", "alpha": 0.25, "input_size": 96},
    "freeze_points": ["conv_pw_13_relu"],
    "epochs": 1,
    "batch_size": 8,
    "event_length_s": 2.0,
    "event_frequency": 0.2,
    "correlation": 0.5,
    "camera_fps": 10,
}


# One epoch on a random base trains a useless detector: the job machinery is what is tested,
# so registration is forced (a weak package is otherwise refused, tests/mainstream/test_services).
TINY_REQUEST: dict[str, Any] = {**TINY_SPEC, "force": True}


def make_shapes_dataset(folder: Path) -> None:
    from trainer.synth import generate_image_dataset

    generate_image_dataset(
        folder,
        classes=["circle", "square"],
        images_per_class=12,
        image_size=96,
        show_progress=False,
    )


def make_labelled_clip(folder: Path, label: str, name: str = "street") -> tuple[Path, Path]:
    """8 s of a street where trains pass (80 frames at 10 fps), its events labelled `label`:
    `folder/<name>.avi` and `folder/<name>.csv`."""
    from trainer.datasets import read_event_csv, write_event_csv
    from trainer.event_stats import EventInterval
    from trainer.synth import SynthConfig, generate_video

    folder.mkdir(parents=True, exist_ok=True)
    config = SynthConfig(duration_s=8, fps=10, event_length_s=1.5, event_frequency=0.35, seed=5)
    raw = folder / f".{name}.raw.csv"
    generate_video(folder / f"{name}.avi", raw, config, show_progress=False)
    intervals = [
        EventInterval(interval.start_frame, interval.end_frame, label)
        for interval in read_event_csv(raw)
    ]
    raw.unlink()
    write_event_csv(folder / f"{name}.csv", intervals)
    return folder / f"{name}.avi", folder / f"{name}.csv"


def wait_for_job(
    client: httpx.Client, job_id: str, until: set[str], timeout: float = 240
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll a job until its state is in `until`; returns it and every progress seen."""
    seen: list[dict[str, Any]] = []

    def reached() -> bool:
        job = client.get(f"/api/training-jobs/{job_id}", headers=ADMIN).json()
        if not seen or seen[-1] != job["progress"]:
            seen.append(job["progress"])
        state[0] = job
        return bool(job["state"] in until)

    state: list[dict[str, Any]] = [{}]
    assert wait_for(reached, timeout=timeout, poll=0.3), state[0]
    return state[0], seen


def processes_mentioning(text: str) -> list[int]:
    """Process ids whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(int(entry.name))
    return found


def loads_tensorflow(pid: int) -> bool:
    """Whether TensorFlow's native library is mapped into process `pid`."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "tensorflow" in maps or "_pywrap_tensorflow" in maps


def mainstream_client(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """The `mainstream` CLI pointed at `daemon` with the admin token (from the environment)."""
    return subprocess.run(
        [sys.executable, "-m", "mainstream.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MAINSTREAM_SERVER": daemon.url, "MAINSTREAM_TOKEN": ADMIN_TOKEN},
        check=False,
    )
