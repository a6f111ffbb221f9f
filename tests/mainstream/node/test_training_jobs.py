"""Training jobs through a real `mainstream serve` process: a local job trains in a child
process and its package is registered; queued and running jobs can be cancelled; dataset paths
cannot leave the datasets folder; a restart keeps the records (an interrupted job is failed);
and the API process never loads TensorFlow."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.nodes import Daemon, free_port, node_config, wait_for
from tests.support.training import (
    ADMIN,
    ADMIN_TOKEN,
    TINY_REQUEST,
    TINY_SPEC,
    loads_tensorflow,
    mainstream_client,
    make_shapes_dataset,
    processes_mentioning,
    wait_for_job,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Daemon, Path]]:
    data = tmp_path / "data"
    make_shapes_dataset(data / "datasets" / "shapes")
    outside = tmp_path / "outside"
    make_shapes_dataset(outside)
    (data / "datasets" / "escape").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("MAINSTREAM_ADMIN_TOKEN", ADMIN_TOKEN)
    port = free_port()
    config = tmp_path / "node.yaml"
    settings = node_config(
        data, api={"host": "127.0.0.1", "port": port}, default_camera=None, cameras=[]
    )
    settings["trainer"] = {"mode": "local", "max_concurrent_jobs": 1}
    config.write_text(yaml.safe_dump(settings))
    daemon = Daemon(config=config, log=tmp_path / "serve.log", port=port)
    yield daemon, data
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.process.kill()
        daemon.process.wait()


def test_training_jobs_through_the_api(node: tuple[Daemon, Path]) -> None:
    daemon, data = node
    daemon.start()
    client = httpx.Client(base_url=daemon.url, timeout=60)
    jobs_dir = data / "jobs"

    # -- refused before anything runs ---------------------------------------------------------
    assert client.post("/api/training-jobs", json=TINY_SPEC).status_code == 401
    for bad in ("../outside", "/etc", "shapes/../../outside", "escape", "missing"):
        answer = client.post(
            "/api/training-jobs", json={**TINY_SPEC, "dataset": bad}, headers=ADMIN
        )
        assert answer.status_code == 422, (bad, answer.text)
        assert "dataset" in answer.text, answer.text
    weights_file = {**TINY_SPEC, "base": {**TINY_SPEC["base"], "weights": "/etc/passwd"}}
    assert client.post("/api/training-jobs", json=weights_file, headers=ADMIN).status_code == 422
    no_stats = {key: value for key, value in TINY_SPEC.items() if key != "camera_fps"}
    answer = client.post("/api/training-jobs", json=no_stats, headers=ADMIN)
    assert answer.status_code == 422 and "camera" in answer.text
    assert client.get("/api/training-jobs", headers=ADMIN).json() == []

    # -- a local job trains in a child process and registers its package ----------------------
    submitted = client.post("/api/training-jobs", json=TINY_REQUEST, headers=ADMIN)
    assert submitted.status_code == 202, submitted.text
    first = submitted.json()["id"]
    done, progress = wait_for_job(client, first, {"succeeded", "failed", "cancelled"})
    assert done["state"] == "succeeded", (done, daemon.log_tail())
    phases = [item["phase"] for item in progress]
    assert "training" in phases or "verifying" in phases, phases
    fractions = [item["fraction"] for item in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert done["device"].startswith(("CPU", "GPU"))
    assert done["package"]["app"] == "shapes" and done["package"]["version"] == 1
    packages = client.get("/api/packages", headers=ADMIN).json()
    assert [(item["app"], item["version"]) for item in packages] == [("shapes", 1)]
    assert packages[0]["sha256"] == done["package"]["sha256"] == done["package_sha256"]
    log = client.get(f"/api/training-jobs/{first}/log", headers=ADMIN)
    assert "training on CPU" in log.text or "training on GPU" in log.text
    assert "no better than the majority class" in log.text  # the weak package, registered forced
    assert int(log.headers["X-Next-Offset"]) == len(log.content)
    assert not (jobs_dir / first / "out" / "package.mpkg").exists()  # the registry has it

    # -- a queued job and a running job are cancelled -----------------------------------------
    spec_file = data / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(TINY_REQUEST))
    submitted_by_cli = mainstream_client(daemon, "jobs", "submit", "--spec", str(spec_file))
    assert submitted_by_cli.returncode == 0, submitted_by_cli.stderr
    running = submitted_by_cli.stdout.strip()
    queued = client.post("/api/training-jobs", json=TINY_REQUEST, headers=ADMIN).json()["id"]
    assert client.get(f"/api/training-jobs/{queued}", headers=ADMIN).json()["state"] == "queued"
    cancelled = client.delete(f"/api/training-jobs/{queued}", headers=ADMIN)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    wait_for_job(client, running, {"running"})
    assert wait_for(lambda: bool(processes_mentioning(str(jobs_dir / running))), timeout=30)
    cancelled_by_cli = mainstream_client(daemon, "jobs", "cancel", running)
    assert cancelled_by_cli.returncode == 0, cancelled_by_cli.stderr
    assert "cancelled" in cancelled_by_cli.stdout
    assert client.get(f"/api/training-jobs/{running}", headers=ADMIN).json()["state"] == "cancelled"
    assert wait_for(lambda: not processes_mentioning(str(jobs_dir / running)), timeout=15)
    assert client.delete(f"/api/training-jobs/{running}", headers=ADMIN).status_code == 409
    assert len(client.get("/api/packages", headers=ADMIN).json()) == 1

    # -- the API process never loaded TensorFlow ----------------------------------------------
    assert daemon.process is not None
    assert not loads_tensorflow(daemon.process.pid)

    # -- the CLI client -----------------------------------------------------------------------
    listed = mainstream_client(daemon, "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 3 and first in lines[-1] and "succeeded" in lines[-1]

    # -- a node killed during a job: the job stops, and after a restart it reads failed -------
    interrupted = client.post("/api/training-jobs", json=TINY_REQUEST, headers=ADMIN).json()["id"]
    wait_for_job(client, interrupted, {"running"})
    assert wait_for(lambda: bool(processes_mentioning(str(jobs_dir / interrupted))), timeout=30)
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()
    assert wait_for(lambda: not processes_mentioning(str(jobs_dir / interrupted)), timeout=30)
    daemon.start()
    jobs = {job["id"]: job for job in client.get("/api/training-jobs", headers=ADMIN).json()}
    assert set(jobs) == {first, running, queued, interrupted}
    assert jobs[first]["state"] == "succeeded"
    assert jobs[running]["state"] == jobs[queued]["state"] == "cancelled"
    assert jobs[interrupted]["state"] == "failed"
    assert "interrupted" in jobs[interrupted]["error"]
    assert daemon.stop(), daemon.log_tail()
