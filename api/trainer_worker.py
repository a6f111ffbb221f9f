"""The trainer worker: runs a node's training jobs on another machine (typically one with a GPU).

    MAINSTREAM_TRAINER__WORKER_TOKEN=secret mainstream trainer worker --listen 0.0.0.0:8781

A node in trainer mode "remote" sends each job as one zip archive (`job.json`, the spec;
`dataset/...`, the files it reads; `bases/...`, a registered base it starts from), follows its
status and log, and downloads the package. Every request needs `Authorization: Bearer <token>`.
Archives are checked like packages before anything is extracted (member names, links, sizes,
compression ratios; see :mod:`mainstream.core.package`), and uploads are cut off at a size limit.

Jobs run with the same runner as on a node (:mod:`trainer.job`, one child process each), so
the worker process itself stays small; it checks once at start whether TensorFlow sees a GPU.

Endpoints: `GET /health`, `POST /jobs` (the archive as the body), `GET /jobs`,
`GET /jobs/{id}`, `GET /jobs/{id}/log?offset=N`, `GET /jobs/{id}/package`,
`DELETE /jobs/{id}` (cancel; `?purge=true` on a finished job removes it).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError

from api.errors import redact_paths
from api.limits import BodyLimit, RequestLimits
from mainstream.core.errors import AuthError, InvalidParameterError, MainstreamError, PackageError
from mainstream.core.package import (
    ByteBudget,
    PackageLimits,
    checked_zip_members,
    open_zip_archive,
    stream_zip_member,
)
from mainstream.node.training_jobs import (
    ARCHIVE_BASES,
    ARCHIVE_DATASET,
    ARCHIVE_SPEC,
    TrainingJob,
    TrainingJobs,
)
from trainer.job import TrainingJobSpec

logger = logging.getLogger(__name__)

GiB = 1024**3
_GPU_PROBE = (
    "import tensorflow as tf; "
    "print(', '.join(d.name for d in tf.config.list_physical_devices('GPU')) or 'none')"
)


class TooLargeUpload(MainstreamError):
    http_status = 413


@dataclass
class WorkerConfig:
    data_dir: Path
    token: str
    max_upload_bytes: int = 4 * GiB
    body_timeout_s: float = 30.0  # longest wait for the next part of a request body (408)
    max_concurrent_jobs: int = 1
    probe_gpu: bool = True
    devices: dict[str, str] = field(default_factory=dict)


def archive_limits(max_bytes: int) -> PackageLimits:
    """Limits for a job archive: many members (image folders), sizes bounded by the upload."""
    return PackageLimits(
        max_total_bytes=max(max_bytes * 4, 1),
        max_member_bytes=max_bytes * 4,
        max_members=200_000,
    )


def extract_job_archive(archive_path: Path, folder: Path, max_bytes: int) -> TrainingJobSpec:
    """Check the archive, extract `dataset/` and `bases/` into `folder`; returns the spec.

    Members are decompressed by the package reader's streaming extractor, so every limit is
    counted on the bytes actually written (a central directory that lies about sizes, or a
    zip bomb, is refused before it fills the disk)."""
    limits = archive_limits(max_bytes)
    what = "the job archive"
    with open(archive_path, "rb") as stream, open_zip_archive(stream, what) as archive:
        members = checked_zip_members(archive, limits, what)
        if ARCHIVE_SPEC not in members:
            raise PackageError(f"the job archive has no {ARCHIVE_SPEC}")
        try:
            spec = TrainingJobSpec.model_validate_json(archive.read(members[ARCHIVE_SPEC]))
        except ValidationError as error:
            raise InvalidParameterError(ARCHIVE_SPEC, "the job spec", str(error)) from error
        budget = ByteBudget(limits.max_total_bytes)
        for name, info in members.items():
            if name == ARCHIVE_SPEC:
                continue
            if not name.startswith((ARCHIVE_DATASET, ARCHIVE_BASES)):
                raise PackageError(f"the job archive has an unexpected member {name!r}")
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as sink:
                stream_zip_member(stream, info, sink, limits, budget, what)
    return spec


async def _receive(request: Request, target: Path, limit: int) -> int:
    """Stream the body to `target`; TooLargeUpload (and nothing kept) past `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLargeUpload(f"the upload has {declared} bytes; this worker accepts {limit}")
    written = 0
    with open(target, "wb") as sink:
        async for chunk in request.stream():
            written += len(chunk)
            if written > limit:
                break
            sink.write(chunk)
    if written > limit:
        target.unlink(missing_ok=True)
        raise TooLargeUpload(
            f"the upload is larger than {limit} bytes, the most this worker accepts"
        )
    return written


def _probe_gpu(config: WorkerConfig) -> None:
    """Ask TensorFlow (in a child process, like the jobs) which GPUs it sees, and log it."""
    try:
        answer = subprocess.run(
            [sys.executable, "-c", _GPU_PROBE],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        config.devices["gpu"] = f"unknown ({error})"
        logger.warning("could not ask TensorFlow for GPUs: %s", error)
        return
    lines = answer.stdout.strip().splitlines()
    gpus = lines[-1] if answer.returncode == 0 and lines else "unknown"
    config.devices["gpu"] = gpus
    if gpus == "none":
        logger.warning("TensorFlow sees no GPU: jobs will train on the CPU")
    elif gpus == "unknown":
        logger.warning("TensorFlow could not be started: %s", answer.stderr.strip()[-500:])
    else:
        logger.info("TensorFlow sees GPU(s): %s", gpus)


def _jobs_of(request: Request) -> TrainingJobs:
    jobs: TrainingJobs = request.app.state.jobs
    return jobs


Jobs = Annotated[TrainingJobs, Depends(_jobs_of)]


def create_worker_app(config: WorkerConfig) -> FastAPI:
    """The worker's HTTP API over a :class:`TrainingJobs` that keeps jobs in `data_dir/jobs`."""
    if not config.token:
        raise InvalidParameterError(
            "token", "", "a bearer token (--token or MAINSTREAM_TRAINER__WORKER_TOKEN)"
        )
    expected = hashlib.sha256(config.token.encode()).digest()

    def authorised(request: Request) -> None:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        offered = hashlib.sha256(secret.strip().encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(offered, expected):
            raise AuthError("this trainer worker needs its bearer token")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        jobs = TrainingJobs(
            config.data_dir / "jobs",
            datasets_dir=None,
            bases_dir=None,
            max_concurrent_jobs=config.max_concurrent_jobs,
            verify_in_runner=False,
        )
        app.state.jobs = jobs
        if config.probe_gpu:
            threading.Thread(target=_probe_gpu, args=(config,), daemon=True).start()
        try:
            yield
        finally:
            jobs.close()

    app = FastAPI(title="Mainstream trainer worker", lifespan=lifespan)
    # Before the token check and any body is read: only POST /jobs takes a body of any size.
    app.add_middleware(
        RequestLimits,
        default=BodyLimit(64 * 1024),
        routes={
            ("POST", "/jobs"): BodyLimit(
                config.max_upload_bytes,
                f"the upload is larger than {config.max_upload_bytes} bytes, the most this "
                "worker accepts",
            )
        },
        idle_timeout_s=config.body_timeout_s,
        bodies_need_bearer=True,
    )
    auth = [Depends(authorised)]

    @app.exception_handler(MainstreamError)
    async def _error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MainstreamError)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
        return JSONResponse(
            {"error": type(exc).__name__, "detail": redact_paths(str(exc), [config.data_dir])},
            status_code=exc.http_status,
            headers=headers,
        )

    @app.get("/health", dependencies=auth)
    def health(jobs: Jobs) -> dict[str, Any]:
        running = sum(1 for job in jobs.list_jobs() if job.state == "running")
        return {"status": "ok", "devices": config.devices, "running_jobs": running}

    @app.post("/jobs", status_code=status.HTTP_201_CREATED, dependencies=auth)
    async def submit(request: Request, jobs: Jobs) -> TrainingJob:
        job_id, folder = jobs.new_job_dir()
        upload = folder / "upload.zip"
        try:
            await _receive(request, upload, config.max_upload_bytes)
            spec = extract_job_archive(upload, folder, config.max_upload_bytes)
            spec.check(folder / ARCHIVE_DATASET.rstrip("/"), folder / ARCHIVE_BASES.rstrip("/"))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            upload.unlink(missing_ok=True)
        job = jobs.submit_prepared(job_id, spec)
        logger.info("job %s accepted (%s)", job_id, spec.dataset)
        return job

    @app.get("/jobs", dependencies=auth)
    def list_jobs(jobs: Jobs) -> list[TrainingJob]:
        return jobs.list_jobs()

    @app.get("/jobs/{job_id}", dependencies=auth)
    def get_job(job_id: str, jobs: Jobs) -> TrainingJob:
        return jobs.get(job_id)

    @app.get("/jobs/{job_id}/log", dependencies=auth)
    def job_log(job_id: str, jobs: Jobs, offset: int = 0) -> Response:
        return Response(jobs.log(job_id, offset), media_type="text/plain; charset=utf-8")

    @app.get("/jobs/{job_id}/package", dependencies=auth)
    def job_package(job_id: str, jobs: Jobs) -> FileResponse:
        return FileResponse(
            jobs.package_path(job_id),
            media_type="application/zip",
            filename=f"{job_id}.mpkg",
        )

    @app.delete("/jobs/{job_id}", dependencies=auth)
    def cancel_job(job_id: str, jobs: Jobs, purge: bool = False) -> Response:
        job = jobs.get(job_id)
        if purge and job.finished:
            jobs.delete(job_id)
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        job = jobs.cancel(job_id)
        return Response(job.model_dump_json(), media_type="application/json")

    return app


def serve_worker(config: WorkerConfig, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn  # the web server loads only to serve

    logger.info("trainer worker: jobs in %s, listening on %s:%d", config.data_dir, host, port)
    uvicorn.run(create_worker_app(config), host=host, port=port, log_level=log_level)
