"""A real trainer worker on a loopback port and a node in trainer mode "remote": the job trains
on the worker and its package lands in the node's registry. The worker refuses a wrong token,
unsafe archives and oversized uploads."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from api.trainer_worker import extract_job_archive
from mainstream.core.errors import PackageError
from tests.support.nodes import Daemon, free_port, node_config, wait_for
from tests.support.training import (
    ADMIN,
    ADMIN_TOKEN,
    TINY_REQUEST,
    TINY_SPEC,
    loads_tensorflow,
    make_shapes_dataset,
    wait_for_job,
)

pytestmark = pytest.mark.slow

WORKER_TOKEN = "worker-secret-for-tests"
UPLOAD_LIMIT_MB = 2


@dataclass
class Worker:
    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    tmp_path = tmp_path_factory.mktemp("trainer-worker")
    port = free_port()
    log = tmp_path / "worker.log"
    with open(log, "wb") as stream:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mainstream.cli.main",
                "trainer",
                "worker",
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(tmp_path / "worker"),
                "--max-upload-mb",
                str(UPLOAD_LIMIT_MB),
            ],
            stdout=stream,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MAINSTREAM_TRAINER__WORKER_TOKEN": WORKER_TOKEN},
        )
    server = Worker(url=f"http://127.0.0.1:{port}", log=log, process=process)

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the worker exited early:\n{server.log_text()}")
        try:
            return httpx.get(f"{server.url}/health", timeout=1).status_code == 401
        except httpx.HTTPError:
            return False

    assert wait_for(listening, timeout=60, poll=0.25), server.log_text()
    yield server
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def job_archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_worker_refuses_wrong_tokens_and_unsafe_uploads(worker: Worker) -> None:
    good = {"Authorization": f"Bearer {WORKER_TOKEN}"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": WORKER_TOKEN}):
        assert httpx.get(f"{worker.url}/jobs", headers=headers).status_code == 401
        assert httpx.post(f"{worker.url}/jobs", content=b"x", headers=headers).status_code == 401
    jobs_dir = worker.log.parent / "worker" / "worker" / "jobs"
    jobs_before = httpx.get(f"{worker.url}/jobs", headers=good).json()
    folders_before = sorted(jobs_dir.iterdir())

    spec = json.dumps(TINY_SPEC).encode()
    slip = job_archive({"job.json": spec, "dataset/../../evil.sh": b"rm -rf /"})
    answer = httpx.post(f"{worker.url}/jobs", content=slip, headers=good)
    assert answer.status_code == 400 and "unsafe member name" in answer.text, answer.text
    stray = job_archive({"job.json": spec, "elsewhere/file": b"x"})
    assert httpx.post(f"{worker.url}/jobs", content=stray, headers=good).status_code == 400
    bad_spec = job_archive({"job.json": json.dumps({**TINY_SPEC, "dataset": "../x"}).encode()})
    assert httpx.post(f"{worker.url}/jobs", content=bad_spec, headers=good).status_code == 422
    huge = b"\0" * (UPLOAD_LIMIT_MB * 1024 * 1024 + 1)
    assert httpx.post(f"{worker.url}/jobs", content=huge, headers=good).status_code == 413
    # Nothing is left behind by the refused uploads.
    assert httpx.get(f"{worker.url}/jobs", headers=good).json() == jobs_before
    assert sorted(jobs_dir.iterdir()) == folders_before


def test_remote_job_runs_on_the_worker(
    worker: Worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    make_shapes_dataset(data / "datasets" / "shapes")
    monkeypatch.setenv("MAINSTREAM_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("MAINSTREAM_TRAINER__WORKER_TOKEN", WORKER_TOKEN)
    port = free_port()
    settings = node_config(
        data, api={"host": "127.0.0.1", "port": port}, default_camera=None, cameras=[]
    )
    settings["trainer"] = {"mode": "remote", "worker_url": worker.url}
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(settings))
    daemon = Daemon(config=config, log=tmp_path / "serve.log", port=port)
    daemon.start()
    try:
        client = httpx.Client(base_url=daemon.url, timeout=60)
        submitted = client.post("/api/training-jobs", json=TINY_REQUEST, headers=ADMIN)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        done, _ = wait_for_job(client, job_id, {"succeeded", "failed", "cancelled"})
        assert done["state"] == "succeeded", (done, daemon.log_tail(), worker.log_text()[-3000:])
        assert done["mode"] == "remote" and done["worker_job"]
        packages = client.get("/api/packages", headers=ADMIN).json()
        assert [(item["app"], item["version"]) for item in packages] == [("shapes", 1)]
        assert packages[0]["sha256"] == done["package"]["sha256"]
        # The trainer's log came back from the worker.
        log = client.get(f"/api/training-jobs/{job_id}/log", headers=ADMIN).text
        assert "training on" in log
        # The worker ran it (its job record), and forgot it once the node had the package.
        assert done["worker_job"] in worker.log_text()
        listed = httpx.get(
            f"{worker.url}/jobs", headers={"Authorization": f"Bearer {WORKER_TOKEN}"}
        ).json()
        assert listed == []
        assert "TensorFlow sees" in worker.log_text()
        assert daemon.process is not None and not loads_tensorflow(daemon.process.pid)
        assert daemon.stop(), daemon.log_tail()
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def _lying_job_archive(member: str, size: int, declared: int) -> bytes:
    """A job archive whose central directory understates one member's size."""
    data = bytearray(job_archive({"job.json": json.dumps(TINY_SPEC).encode(), member: bytes(size)}))
    central = data.rfind(b"PK\x01\x02")  # the last entry: `member`
    data[central + 24 : central + 28] = declared.to_bytes(4, "little")
    return bytes(data)


def test_job_archives_are_extracted_by_the_bytes_actually_written(tmp_path: Path) -> None:
    """Sizes that lie, and zip bombs, are refused while streaming, not after."""
    archive = tmp_path / "lying.zip"
    archive.write_bytes(_lying_job_archive("dataset/frames.bin", 5 * 1024 * 1024, declared=100))
    with pytest.raises(PackageError, match=r"dataset/frames\.bin"):
        extract_job_archive(archive, tmp_path / "lying", max_bytes=1024 * 1024)
    written = sum(f.stat().st_size for f in (tmp_path / "lying").rglob("*") if f.is_file())
    assert written <= 100  # never more than the member declared

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as writer:
        writer.writestr("job.json", json.dumps(TINY_SPEC))
        writer.writestr("dataset/x", bytes(20 << 20))
    assert bomb.stat().st_size < 1024 * 1024  # 20 MiB of zeros deflate about 1000x
    with pytest.raises(PackageError, match=r"'dataset/x' expands \d+x"):  # within every size
        extract_job_archive(bomb, tmp_path / "bomb", max_bytes=64 << 20)
    written = sum(f.stat().st_size for f in (tmp_path / "bomb").rglob("*") if f.is_file())
    assert written < 20 << 20
