"""Training jobs: train an app's package away from the API process, then register it.

Calibration jobs share the list, the queue and the runner: they measure every candidate of an
app's package on footage of its camera (:mod:`trainer.calibrate`), register the result as the
package's next version and move the app to it, which re-plans the node on the new counts. They
are inference over a clip, so they always run in a child process of the node, also when
training goes to a remote worker.

A job runs :mod:`trainer.job` in a child process of this machine (mode "local") or on a
remote trainer worker (mode "remote", `mainstream trainer worker` on a GPU machine, see
:mod:`api.trainer_worker`). TensorFlow is never imported here: the child verifies the package it
wrote (every model loaded in Keras safe mode, bundled base weights checked and registered),
so the node stores it with the checks that need no model (archive, schema, checksums).

Each job lives in `<jobs_dir>/<id>/`: `job.json` (the record, rewritten atomically on every
change), `job.log` (the trainer's output) and `out/` (the runner's status file and package).
Jobs beyond `max_concurrent_jobs` wait in a queue. Records survive a restart; a job that was
queued or running when the process stopped is marked failed, with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from mainstream.core.errors import (
    ConflictError,
    InvalidParameterError,
    MainstreamError,
    NotFoundError,
    PackageError,
)
from mainstream.core.package import inspect_package, sha256_file
from mainstream.node.registry import AUTO_QUIET_TIME, QuietTime, XVote
from mainstream.node.services import AppCreate, AppUpdate
from trainer.datasets import read_event_csv
from trainer.job import (
    LOG_FILE,
    PACKAGE_FILE,
    PARENT_PID_VARIABLE,
    CalibrationFootage,
    CalibrationJobSpec,
    JobProgress,
    RunnerInput,
    TrainingJobSpec,
    read_runner_status,
    write_json_atomically,
)

if TYPE_CHECKING:
    import httpx

    from mainstream.node.services import Services
    from mainstream.node.settings import Settings

logger = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["training", "calibration"]
FINISHED_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
JOB_FILE = "job.json"
RUNNER_FILE = "runner.json"
OUT_DIR = "out"
ARCHIVE_SPEC = "job.json"
ARCHIVE_DATASET = "dataset/"
ARCHIVE_BASES = "bases/"
TERMINATE_GRACE_S = 5.0
MAX_LOG_CHUNK = 1024 * 1024
WORKER_UNREACHABLE_S = 60.0
CALIBRATED_PACKAGE = "calibrate-input.mpkg"  # in the job's folder: the package measured


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------------------------------
# Requests and records


class DeployOptions(BaseModel):
    """Create an app from the package once it is registered (fields as in POST /api/apps)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = Field(default=None, description="App name [default: the package's app]")
    camera: str | None = None
    weight: float = Field(default=1.0, gt=0)
    x_vote: XVote = 1
    threshold: float = Field(default=0.5, ge=0, le=1)
    quiet_time_s: QuietTime = AUTO_QUIET_TIME
    enabled: bool = True


class TrainingJobRequest(TrainingJobSpec):
    """`POST /api/training-jobs`: the training spec, and whether to deploy the result."""

    deploy: DeployOptions | None = Field(
        default=None, description="Also create an app from the new package (true: defaults)"
    )
    force: bool = Field(
        default=False,
        description="Register the package even if a candidate is no better than the majority class",
    )

    @field_validator("deploy", mode="before")
    @classmethod
    def _deploy_flag(cls, value: Any) -> Any:
        if value is True:
            return {}
        if value is False:
            return None
        return value

    def spec(self) -> TrainingJobSpec:
        return TrainingJobSpec.model_validate(self.model_dump(exclude={"deploy", "force"}))


class CalibrationRequest(CalibrationFootage):
    """`POST /api/apps/{name}/calibrations`: footage of the app's camera to measure its
    package on; the result becomes the package's next version and the app moves to it."""

    threshold: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Score from which a frame counts as a fire [default: the app's threshold]",
    )


class PackageRef(BaseModel):
    app: str
    version: int
    sha256: str
    created: bool = True


class TrainingJob(BaseModel):
    """A job's record, as `job.json` holds it and the API shows it."""

    id: str
    kind: JobKind = "training"
    state: JobState = "queued"
    mode: Literal["local", "remote"] = "local"
    spec: TrainingJobSpec | None = Field(default=None, description="A training job's spec")
    calibration: CalibrationJobSpec | None = Field(
        default=None, description="A calibration job's footage and package"
    )
    deploy: DeployOptions | None = None
    force: bool = Field(default=False, description="Register even a weak package")
    submitted_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: JobProgress = Field(default_factory=JobProgress)
    error: str | None = None
    device: str | None = None
    worker_job: str | None = Field(default=None, description="The job's id on the worker")
    package_sha256: str | None = None
    package: PackageRef | None = Field(default=None, description="The registered package")
    app: str | None = Field(
        default=None, description="The app created from it (calibration: moved to it)"
    )
    deploy_error: str | None = None
    candidates: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def training_spec(self) -> TrainingJobSpec:
        if self.spec is None:
            raise ConflictError(f"job {self.id} is a {self.kind} job, not a training job")
        return self.spec


class JobFailed(MainstreamError):
    """A job could not be carried out; the message is shown as the job's error."""


@dataclass
class _Control:
    """What the API thread and a job's thread share about a running job."""

    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str = "cancelled"
    thread: threading.Thread | None = None
    process: subprocess.Popen[bytes] | None = None


@dataclass(frozen=True)
class RemoteWorker:
    url: str
    token: SecretStr | None
    timeout_s: float = 60.0

    def client(self) -> httpx.Client:

        headers = {}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        return httpx.Client(base_url=self.url.rstrip("/"), headers=headers, timeout=self.timeout_s)


# Called with the finished job and its verified package; returns the updated record.
SuccessHook = Callable[[TrainingJob, Path], TrainingJob]
# Checks a calibration request for an app before any work; returns the job's spec and the
# stored package it measures.
CalibrationSource = Callable[[str, CalibrationRequest], tuple[CalibrationJobSpec, Path]]


# ---------------------------------------------------------------------------------------------
# The service


class TrainingJobs:
    """Submit, list, inspect, follow and cancel training jobs.

    `datasets_dir`: where dataset references are resolved; None means each job brings its own
    dataset in `<job>/dataset` (the worker). `worker`: run jobs there instead of locally.
    `on_success`: registers the package (the node); without it the package stays in the job's
    folder (the worker serves it). `calibration_source`: checks calibration requests against
    the node's apps and packages; without it (the worker) calibration jobs are refused.
    """

    def __init__(
        self,
        jobs_dir: Path,
        *,
        datasets_dir: Path | None,
        bases_dir: Path | None,
        max_concurrent_jobs: int = 1,
        worker: RemoteWorker | None = None,
        on_success: SuccessHook | None = None,
        calibration_source: CalibrationSource | None = None,
        verify_in_runner: bool = True,
        python: str = sys.executable,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.jobs_dir = jobs_dir
        self.datasets_dir = datasets_dir
        self.bases_dir = bases_dir
        self.max_concurrent_jobs = max_concurrent_jobs
        self.worker = worker
        self.on_success = on_success
        self.calibration_source = calibration_source
        self.verify_in_runner = verify_in_runner
        self.python = python
        self.poll_interval_s = poll_interval_s
        self._lock = threading.RLock()
        self._jobs: dict[str, TrainingJob] = {}
        self._controls: dict[str, _Control] = {}
        self._closed = False
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._load()

    @classmethod
    def for_node(cls, services: Services) -> TrainingJobs:
        """The node's jobs, set up from `settings.trainer`; successes are registered."""
        settings = services.settings
        trainer = settings.trainer
        worker = None
        if trainer.mode == "remote":
            assert trainer.worker_url is not None  # the settings check this
            worker = RemoteWorker(trainer.worker_url, trainer.worker_token)
        return cls(
            settings.data_dir / "jobs",
            datasets_dir=datasets_dir(settings),
            bases_dir=settings.bases_dir,
            max_concurrent_jobs=trainer.max_concurrent_jobs,
            worker=worker,
            on_success=lambda job, package: register_package(services, job, package),
            calibration_source=lambda app, request: calibration_source(
                services, datasets_dir(settings), app, request
            ),
        )

    # -- state on disk -------------------------------------------------------------------------

    def _job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def _save(self, job: TrainingJob) -> None:
        write_json_atomically(self._job_dir(job.id) / JOB_FILE, job.model_dump_json(indent=2))

    def _load(self) -> None:
        for folder in sorted(self.jobs_dir.iterdir()):
            record = folder / JOB_FILE
            if not record.is_file():
                continue
            try:
                job = TrainingJob.model_validate_json(record.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                logger.warning("ignoring unreadable training job record %s: %s", record, error)
                continue
            if not job.finished:
                was = "running" if job.state == "running" else "waiting in the queue"
                job = job.model_copy(
                    update={
                        "state": "failed",
                        "finished_at": utc_now(),
                        "error": f"interrupted: the service stopped while the job was {was}; "
                        "submit it again",
                    }
                )
                self._save(job)
            self._jobs[job.id] = job

    def _update(self, job_id: str, **changes: Any) -> TrainingJob:
        with self._lock:
            current = self._jobs[job_id]
            progress = changes.get("progress")
            if progress is not None and progress.fraction < current.progress.fraction:
                # Phases may restart their own count; the job's fraction never goes back.
                changes["progress"] = progress.model_copy(
                    update={"fraction": current.progress.fraction}
                )
            job = current.model_copy(update=changes)
            self._jobs[job_id] = job
            self._save(job)
            return job

    # -- operations ----------------------------------------------------------------------------

    def submit(self, request: TrainingJobSpec, deploy: DeployOptions | None = None) -> TrainingJob:
        """Check the request, record the job and start it when a slot is free."""
        force = False
        if isinstance(request, TrainingJobRequest):
            deploy = request.deploy if deploy is None else deploy
            force = request.force
            spec = request.spec()
        else:
            spec = request
        spec = spec.with_full_fingerprint(self.bases_dir)
        if self.datasets_dir is not None:
            spec.check(self.datasets_dir, self.bases_dir)
        job_id = f"{utc_now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        job = TrainingJob(
            id=job_id,
            mode="remote" if self.worker is not None else "local",
            spec=spec,
            deploy=deploy,
            force=force,
        )
        with self._lock:
            if self._closed:
                raise ConflictError("the training service is shutting down")
            self._job_dir(job_id).mkdir(parents=True)
            self._jobs[job_id] = job
            self._save(job)
        logger.info("training job %s queued (%s, %s)", job_id, job.mode, spec.dataset)
        self._start_queued()
        return job

    def calibrate(self, app: str, request: CalibrationRequest) -> TrainingJob:
        """Check a calibration of `app`'s package, then record the job and start it when a
        slot is free (it always runs here: calibration is inference over a clip)."""
        if self.calibration_source is None:
            raise ConflictError("calibration jobs run on a node, not on a trainer worker")
        spec, package = self.calibration_source(app, request)
        job_id, folder = self.new_job_dir()
        try:
            # The job measures the version it was submitted for, even if that goes meanwhile.
            shutil.copyfile(package, folder / CALIBRATED_PACKAGE)
            with self._lock:
                self._refuse_duplicate_calibration(spec)
                if self._closed:
                    raise ConflictError("the training service is shutting down")
                job = TrainingJob(id=job_id, kind="calibration", calibration=spec)
                self._jobs[job_id] = job
                self._save(job)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        logger.info(
            "calibration job %s queued (%s v%d on %s)",
            job_id,
            spec.package_app,
            spec.package_version,
            spec.video,
        )
        self._start_queued()
        return job

    def _refuse_duplicate_calibration(self, spec: CalibrationJobSpec) -> None:
        """A clip already being measured on the same package would count twice."""
        for other in self._jobs.values():
            running = other.calibration
            if (
                not other.finished
                and running is not None
                and running.package_sha256 == spec.package_sha256
                and running.video_sha256 == spec.video_sha256
            ):
                raise ConflictError(
                    f"job {other.id} is already calibrating package {spec.package_app} "
                    f"v{spec.package_version} on {PurePosixPath(spec.video).name}"
                )

    def submit_prepared(self, job_id: str, spec: TrainingJobSpec) -> TrainingJob:
        """Record a job whose folder (`<jobs_dir>/<job_id>/dataset`) is already filled in."""
        job = TrainingJob(id=job_id, spec=spec)
        with self._lock:
            if self._closed:
                raise ConflictError("the training service is shutting down")
            self._jobs[job_id] = job
            self._save(job)
        self._start_queued()
        return job

    def new_job_dir(self) -> tuple[str, Path]:
        job_id = f"{utc_now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        folder = self._job_dir(job_id)
        folder.mkdir(parents=True)
        return job_id, folder

    def list_jobs(self) -> list[TrainingJob]:
        """Newest first."""
        with self._lock:
            jobs = list(self._jobs.values())
        return sorted(jobs, key=lambda job: (job.submitted_at, job.id), reverse=True)

    def get(self, job_id: str) -> TrainingJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no training job {job_id!r}")
        return job

    def log(self, job_id: str, offset: int = 0, limit: int = MAX_LOG_CHUNK) -> bytes:
        """The job's log from byte `offset` (at most `limit` bytes)."""
        self.get(job_id)
        if offset < 0:
            raise InvalidParameterError("offset", offset, ">= 0")
        path = self._job_dir(job_id) / LOG_FILE
        if not path.is_file():
            return b""
        with open(path, "rb") as stream:
            stream.seek(offset)
            return stream.read(limit)

    def package_path(self, job_id: str) -> Path:
        """The package a finished job wrote (while it is kept in the job's folder)."""
        job = self.get(job_id)
        path = self._job_dir(job_id) / OUT_DIR / PACKAGE_FILE
        if job.state != "succeeded" or not path.is_file():
            raise NotFoundError(f"training job {job_id!r} has no package ({job.state})")
        return path

    def cancel(self, job_id: str, reason: str = "cancelled") -> TrainingJob:
        """Cancel a queued or running job; a finished job cannot be cancelled (409)."""
        with self._lock:
            job = self.get(job_id)
            if job.finished:
                raise ConflictError(f"training job {job_id!r} already {job.state}")
            control = self._controls.get(job_id)
            if control is None:  # still queued
                job = self._update(job_id, state="cancelled", finished_at=utc_now(), error=reason)
                logger.info("training job %s cancelled while queued", job_id)
                return job
            control.reason = reason
            control.cancel.set()
            process = control.process
        if process is not None:
            _terminate(process)
        if control.thread is not None:
            control.thread.join(timeout=TERMINATE_GRACE_S * 3)
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        """Forget a finished job and remove its folder."""
        with self._lock:
            job = self.get(job_id)
            if not job.finished:
                raise ConflictError(f"training job {job_id!r} is {job.state}; cancel it first")
            del self._jobs[job_id]
        shutil.rmtree(self._job_dir(job_id), ignore_errors=True)

    def close(self) -> None:
        """Cancel running jobs (their records say so) and stop starting new ones."""
        with self._lock:
            self._closed = True
            running = [job_id for job_id in self._controls]
        for job_id in running:
            with contextlib.suppress(MainstreamError):
                self.cancel(job_id, "cancelled: the service stopped")

    # -- running -------------------------------------------------------------------------------

    def _start_queued(self) -> None:
        with self._lock:
            if self._closed:
                return
            waiting = sorted(
                (job for job in self._jobs.values() if job.state == "queued"),
                key=lambda job: (job.submitted_at, job.id),
            )
            for job in waiting:
                if len(self._controls) >= self.max_concurrent_jobs:
                    return
                control = _Control()
                self._controls[job.id] = control
                self._update(job.id, state="running", started_at=utc_now())
                control.thread = threading.Thread(
                    target=self._run, args=(job.id, control), name=f"training-{job.id}", daemon=True
                )
                control.thread.start()

    def _run(self, job_id: str, control: _Control) -> None:
        try:
            if self.worker is not None and self.get(job_id).kind == "training":
                package = self._run_remote(job_id, control, self.worker)
            else:
                package = self._run_local(job_id, control)
            if control.cancel.is_set():
                raise _Cancelled()
            self._update(job_id, progress=JobProgress(phase="registering", fraction=0.99))
            job = self.get(job_id)
            if self.on_success is not None:
                job = self.on_success(job, package)
            self._update(
                job_id,
                **{
                    name: getattr(job, name)
                    for name in ("package", "app", "deploy_error", "package_sha256")
                },
                state="succeeded",
                finished_at=utc_now(),
                progress=JobProgress(phase="done", fraction=1.0),
            )
            logger.info("training job %s succeeded", job_id)
        except _Cancelled:
            self._update(job_id, state="cancelled", finished_at=utc_now(), error=control.reason)
            logger.info("training job %s cancelled", job_id)
        except MainstreamError as error:
            self._update(job_id, state="failed", finished_at=utc_now(), error=str(error))
            logger.warning("training job %s failed: %s", job_id, error)
        except Exception as error:
            logger.exception("training job %s failed", job_id)
            self._update(
                job_id,
                state="failed",
                finished_at=utc_now(),
                error=f"{type(error).__name__}: {error}",
            )
        finally:
            (self._job_dir(job_id) / CALIBRATED_PACKAGE).unlink(missing_ok=True)
            with self._lock:
                self._controls.pop(job_id, None)
            self._start_queued()

    def _spawn(self, control: _Control, arguments: list[str], log_path: Path) -> int:
        """Run `python -m trainer.job ...` in its own process group; returns its exit status."""
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [self.python, "-m", "trainer.job", *arguments],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    "TQDM_MININTERVAL": "2",
                    PARENT_PID_VARIABLE: str(os.getpid()),
                },
            )
        with self._lock:
            control.process = process
        if control.cancel.is_set():
            _terminate(process)
        return process.wait()

    def _run_local(self, job_id: str, control: _Control) -> Path:
        job = self.get(job_id)
        folder = self._job_dir(job_id)
        out_dir = folder / OUT_DIR
        # Without a shared datasets folder (the worker) each job brings its data and bases.
        datasets = self.datasets_dir if self.datasets_dir is not None else folder / "dataset"
        calibrated = folder / CALIBRATED_PACKAGE if job.calibration is not None else None
        runner = RunnerInput(
            spec=job.spec,
            calibration=job.calibration,
            package=calibrated,
            datasets_dir=datasets,
            bases_dir=self.bases_dir if self.datasets_dir is not None else folder / "bases",
            verify=self.verify_in_runner,
            register_bases_dir=self.bases_dir if self.verify_in_runner else None,
        )
        write_json_atomically(folder / RUNNER_FILE, runner.model_dump_json(indent=2))
        outcome: dict[str, int] = {}
        waiter = threading.Thread(
            target=lambda: outcome.setdefault(
                "rc",
                self._spawn(control, [str(folder / RUNNER_FILE), str(out_dir)], folder / LOG_FILE),
            ),
            daemon=True,
        )
        waiter.start()
        while waiter.is_alive():
            waiter.join(self.poll_interval_s)
            self._follow_runner(job_id, out_dir)
        status = read_runner_status(out_dir)
        if control.cancel.is_set():
            raise _Cancelled()
        if status is None or status.state != "succeeded" or outcome.get("rc") != 0:
            reason = status.error if status is not None and status.error else None
            raise JobFailed(
                reason or f"the trainer process exited with status {outcome.get('rc')}; see the log"
            )
        if calibrated is not None:
            check_same_models(calibrated, out_dir / PACKAGE_FILE)
        self._update(
            job_id,
            device=status.device,
            package_sha256=status.package_sha256,
            candidates=status.candidates,
        )
        return out_dir / PACKAGE_FILE

    def _follow_runner(self, job_id: str, out_dir: Path) -> None:
        status = read_runner_status(out_dir)
        if status is None:
            return
        job = self.get(job_id)
        progress = _before_registering(status.progress)
        if progress != job.progress or status.device != job.device:
            self._update(job_id, progress=progress, device=status.device)

    # -- remote --------------------------------------------------------------------------------

    def _run_remote(self, job_id: str, control: _Control, worker: RemoteWorker) -> Path:

        job = self.get(job_id)
        folder = self._job_dir(job_id)
        log_path = folder / LOG_FILE
        archive = folder / "upload.zip"
        assert self.datasets_dir is not None
        self._update(job_id, progress=JobProgress(phase="uploading", detail=worker.url))
        write_job_archive(archive, job.training_spec(), self.datasets_dir, self.bases_dir)
        with worker.client() as client:
            try:
                with open(archive, "rb") as stream:
                    answer = client.post(
                        "/jobs",
                        content=stream,
                        headers={"Content-Type": "application/zip"},
                        timeout=None,
                    )
            except httpx.HTTPError as error:
                raise JobFailed(
                    f"the trainer worker {worker.url} is unreachable: {error}"
                ) from error
            finally:
                archive.unlink(missing_ok=True)
            remote = _worker_answer(answer, worker, "submit the job").json()
            remote_id = str(remote["id"])
            self._update(job_id, worker_job=remote_id)
            logger.info("training job %s runs on %s as %s", job_id, worker.url, remote_id)
            remote = self._follow_remote(job_id, control, client, worker, remote_id, log_path)
            if remote.state != "succeeded":
                raise JobFailed(f"the job failed on the trainer worker: {remote.error}")
            self._update(
                job_id,
                device=remote.device,
                candidates=remote.candidates,
                progress=JobProgress(phase="downloading", fraction=0.92),
            )
            package = folder / OUT_DIR / PACKAGE_FILE
            _download(client, worker, f"/jobs/{remote_id}/package", package)
            with contextlib.suppress(httpx.HTTPError):
                client.delete(f"/jobs/{remote_id}", params={"purge": "true"})
        # The worker's machine is not trusted to have checked the package: load every model
        # here, in a child process, before the node stores it.
        self._update(job_id, progress=JobProgress(phase="verifying", fraction=0.95))
        verify_log = folder / LOG_FILE
        arguments = ["--verify", str(package), str(self.bases_dir or folder / "bases")]
        rc = self._spawn(control, arguments, verify_log)
        if control.cancel.is_set():
            raise _Cancelled()
        if rc != 0:
            raise JobFailed("the package from the trainer worker failed verification; see the log")

        self._update(job_id, package_sha256=sha256_file(package))
        return package

    def _follow_remote(
        self,
        job_id: str,
        control: _Control,
        client: httpx.Client,
        worker: RemoteWorker,
        remote_id: str,
        log_path: Path,
    ) -> TrainingJob:

        log_offset = 0
        last_contact = time.monotonic()
        cancel_sent = False
        while True:
            if control.cancel.is_set() and not cancel_sent:
                with contextlib.suppress(httpx.HTTPError):
                    client.delete(f"/jobs/{remote_id}")
                cancel_sent = True
            try:
                answer = client.get(f"/jobs/{remote_id}")
                remote = TrainingJob.model_validate_json(
                    _worker_answer(answer, worker, "read the job").content
                )
                chunk = client.get(f"/jobs/{remote_id}/log", params={"offset": log_offset})
                if chunk.status_code == 200 and chunk.content:
                    with open(log_path, "ab") as log:
                        log.write(chunk.content)
                    log_offset += len(chunk.content)
                last_contact = time.monotonic()
            except httpx.HTTPError as error:
                if time.monotonic() - last_contact > WORKER_UNREACHABLE_S:
                    raise JobFailed(
                        f"lost contact with the trainer worker {worker.url}: {error}"
                    ) from error
                time.sleep(self.poll_interval_s)
                continue
            if remote.finished:
                if control.cancel.is_set():
                    raise _Cancelled()
                return remote
            job = self.get(job_id)
            progress = _before_registering(remote.progress)
            if progress != job.progress or remote.device != job.device:
                self._update(job_id, progress=progress, device=remote.device)
            if cancel_sent:  # waiting for the worker to confirm
                time.sleep(self.poll_interval_s)
            else:
                control.cancel.wait(self.poll_interval_s)


def _before_registering(progress: JobProgress) -> JobProgress:
    """The trainer's progress; it cannot reach 1 before the node has stored the package."""
    return progress.model_copy(update={"fraction": min(progress.fraction, 0.95)})


class _Cancelled(Exception):
    pass


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the child's process group, SIGKILL after a grace period."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _worker_answer(answer: httpx.Response, worker: RemoteWorker, what: str) -> httpx.Response:
    if answer.status_code in (401, 403):
        raise JobFailed(
            f"the trainer worker {worker.url} refused the token (HTTP {answer.status_code}); "
            "check MAINSTREAM_TRAINER__WORKER_TOKEN"
        )
    if answer.status_code >= 400:
        detail = answer.text[:500]
        raise JobFailed(
            f"the trainer worker could not {what} (HTTP {answer.status_code}): {detail}"
        )
    return answer


def _download(client: httpx.Client, worker: RemoteWorker, url: str, target: Path) -> None:
    """Stream to a temp file beside `target`, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with client.stream("GET", url, timeout=None) as answer:
            if answer.status_code >= 400:
                answer.read()
                _worker_answer(answer, worker, "send the package")
            with open(partial, "wb") as sink:
                for chunk in answer.iter_bytes():
                    sink.write(chunk)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The archive a job travels in to a worker


def _dataset_files(spec: TrainingJobSpec, datasets_dir: Path) -> Iterator[tuple[Path, str]]:
    """(file, archive name) of every file the job reads, all inside `datasets_dir`."""
    data, labels = spec.data_paths(datasets_dir)
    root = datasets_dir.resolve()
    if data.is_dir():
        for path in sorted(data.rglob("*")):
            if path.is_file() and not path.is_symlink():
                resolved = path.resolve()
                if resolved.is_relative_to(root):
                    yield resolved, ARCHIVE_DATASET + resolved.relative_to(root).as_posix()
    else:
        yield data, ARCHIVE_DATASET + spec.dataset
        if labels is not None and labels.is_file():
            label_name = spec.labels or str(Path(spec.dataset).with_suffix(".csv"))
            yield labels, ARCHIVE_DATASET + Path(label_name).as_posix()


def write_job_archive(
    target: Path, spec: TrainingJobSpec, datasets_dir: Path, bases_dir: Path | None
) -> None:
    """A zip with `job.json` (the spec), `dataset/...` and, for a registered base, `bases/...`."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(ARCHIVE_SPEC, spec.model_dump_json(indent=2))
        for path, name in _dataset_files(spec, datasets_dir):
            archive.write(path, name)
        fingerprint = spec.registered_base
        if fingerprint is not None and bases_dir is not None:
            for suffix in (".weights.h5", ".json"):
                archive.write(
                    bases_dir / f"{fingerprint}{suffix}", f"{ARCHIVE_BASES}{fingerprint}{suffix}"
                )


# ---------------------------------------------------------------------------------------------
# The node's side


def check_same_models(measured: Path, calibrated: Path) -> None:
    """A calibrated package must carry exactly the models of the package it measured, which
    the node loaded (Keras safe mode) when it stored that one; storing it then checks every
    member against these checksums, so no model needs loading again."""

    def models(path: Path) -> tuple[object, ...]:
        manifest = inspect_package(path).manifest
        candidates = sorted((c.cut_point, c.file, c.sha256) for c in manifest.candidates)
        fingerprint = manifest.base_model.weights_fingerprint
        return manifest.app.name, tuple(candidates), manifest.base_weights, fingerprint

    if models(calibrated) != models(measured):
        raise PackageError(
            "the calibrated package does not carry the models of the package it measured"
        )


def datasets_dir(settings: Settings) -> Path:
    return settings.trainer.datasets_dir or settings.data_dir / "datasets"


def calibration_source(
    services: Services, datasets: Path, app_name: str, request: CalibrationRequest
) -> tuple[CalibrationJobSpec, Path]:
    """Everything a calibration of `app_name` can be refused for, checked before any work
    (no TensorFlow): the app (404; 409 when the config file declares it), the footage and
    labels inside the datasets folder (422), and footage the package was calibrated with
    already (409: its frames would count twice). Returns the job's spec and the package."""
    app = services.registry.get_app(app_name)
    if services.apps.declared(app_name):
        raise ConflictError(
            f"app {app_name!r} is declared in the config file (apps:); calibrate its package "
            "with `mainstream calibrate` and set the new version there"
        )
    threshold = request.threshold if request.threshold is not None else app.threshold
    if not 0.0 < threshold < 1.0:
        raise InvalidParameterError(
            "threshold",
            threshold,
            f"a score in (0, 1) (app {app_name!r} fires from {app.threshold}; give a threshold)",
        )
    record, package = services.packages.archive(app.package_app, app.package_version)
    video, labels = request.footage_paths(datasets)
    positive = record.manifest.app.positive_class
    if labels is not None:
        found = sorted({interval.label for interval in read_event_csv(labels)})
        if found and positive not in found:
            raise InvalidParameterError(
                "labels", request.labels, f"events of the app's class {positive!r}, found {found}"
            )
    video_sha256 = sha256_file(video)
    if any(
        clip.video_sha256 == video_sha256
        for candidate in record.manifest.candidates
        for clip in candidate.calibrations
    ):
        raise ConflictError(
            f"package {record.app} v{record.version} (app {app_name!r}) was already calibrated "
            f"on {video.name}: its frames would count twice; calibrate on other footage"
        )
    spec = CalibrationJobSpec(
        **request.model_dump(exclude={"threshold"}),
        app=app_name,
        package_app=record.app,
        package_version=record.version,
        package_sha256=record.sha256,
        video_sha256=video_sha256,
        threshold=threshold,
    )
    return spec, package


def register_package(services: Services, job: TrainingJob, package: Path) -> TrainingJob:
    """Store the verified package (and create the app if asked, or move a calibrated app to
    it); returns the updated record."""

    if job.package_sha256 is None or sha256_file(package) != job.package_sha256:
        raise PackageError(
            f"the package of {job.kind} job {job.id} does not match the one its runner verified"
        )
    if job.calibration is not None:
        return _register_calibrated(services, job, job.calibration, package)
    result = services.packages.upload(package, load_models=False, force=job.force)
    record = result.package
    job = job.model_copy(
        update={
            "package": PackageRef(
                app=record.app, version=record.version, sha256=record.sha256, created=result.created
            )
        }
    )
    package.unlink(missing_ok=True)  # the registry keeps its own copy
    if job.deploy is not None:
        options = job.deploy
        try:
            view = services.apps.create(
                AppCreate(
                    name=options.name or record.app,
                    package=record.app,
                    version=record.version,
                    camera=options.camera,
                    weight=options.weight,
                    x_vote=options.x_vote,
                    threshold=options.threshold,
                    quiet_time_s=options.quiet_time_s,
                    enabled=options.enabled,
                )
            )
            job = job.model_copy(update={"app": view.app.name})
        except MainstreamError as error:
            job = job.model_copy(update={"deploy_error": str(error)})
    return job


def _register_calibrated(
    services: Services, job: TrainingJob, spec: CalibrationJobSpec, package: Path
) -> TrainingJob:
    """Store the calibrated package as the next version and move the app to it (a re-plan on
    the clip's counts), unless the app changed package meanwhile."""
    # Calibration changes no figure the weak-candidate check reads, and the package it
    # measured was accepted here already: no check to repeat.
    result = services.packages.upload(package, load_models=False, force=True)
    record = result.package
    job = job.model_copy(
        update={
            "package": PackageRef(
                app=record.app, version=record.version, sha256=record.sha256, created=result.created
            )
        }
    )
    package.unlink(missing_ok=True)  # the registry keeps its own copy
    try:
        current = services.registry.get_app(spec.app)
        if current.package_sha256 != spec.package_sha256:
            raise ConflictError(
                f"app {spec.app!r} moved to package {current.package_app} "
                f"v{current.package_version} while the job ran; it stays there (move it with "
                f'PATCH /api/apps/{spec.app} {{"version": {record.version}}})'
            )
        services.apps.update(
            spec.app,
            AppUpdate(package=record.app, version=record.version),
            reason=f"app {spec.app} calibrated on {PurePosixPath(spec.video).name} "
            f"(package {record.app} v{record.version})",
        )
        job = job.model_copy(update={"app": spec.app})
    except MainstreamError as error:
        job = job.model_copy(update={"deploy_error": str(error)})
    return job
