"""`/api/training-jobs`: train an app's package as a job (here in a child process, or on the
configured trainer worker), follow its progress and log, cancel it.

`POST /api/apps/{name}/calibrations` submits a calibration job into the same list: the app's
package measured on footage of its camera, registered as the next version, the app moved to it.

The job service starts with the application and cancels running jobs when it stops.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from api.deps import Admin, Viewer
from mainstream.node.training_jobs import (
    CalibrationRequest,
    TrainingJob,
    TrainingJobRequest,
    TrainingJobs,
)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    jobs = TrainingJobs.for_node(app.state.services)
    app.state.training_jobs = jobs
    try:
        yield
    finally:
        await run_in_threadpool(jobs.close)


router = APIRouter(prefix="/api/training-jobs", tags=["training"], lifespan=_lifespan)
# Under /api/apps (a runtime route: the app must run here); the jobs are those above.
calibrations = APIRouter(prefix="/api/apps", tags=["training"])


# Guards the creation of the service for an application whose lifespan did not run.
_creating = threading.Lock()


def _training_jobs(request: Request) -> TrainingJobs:
    state = request.app.state
    with _creating:
        jobs: TrainingJobs | None = getattr(state, "training_jobs", None)
        if jobs is None:
            jobs = state.training_jobs = TrainingJobs.for_node(state.services)
    return jobs


JobsDep = Annotated[TrainingJobs, Depends(_training_jobs)]


@router.post(
    "", response_model=TrainingJob, status_code=status.HTTP_202_ACCEPTED, dependencies=[Admin]
)
def submit_training_job(request: TrainingJobRequest, jobs: JobsDep) -> TrainingJob:
    """Queue a job; on success its package is registered (and the app created if `deploy`)."""
    return jobs.submit(request)


@router.get("", response_model=list[TrainingJob], dependencies=[Viewer])
def list_training_jobs(jobs: JobsDep) -> list[TrainingJob]:
    """Every job, newest first."""
    return jobs.list_jobs()


@router.get("/{job_id}", response_model=TrainingJob, dependencies=[Viewer])
def get_training_job(job_id: str, jobs: JobsDep) -> TrainingJob:
    return jobs.get(job_id)


@router.get("/{job_id}/log", dependencies=[Viewer])
def training_job_log(job_id: str, jobs: JobsDep, offset: int = Query(default=0, ge=0)) -> Response:
    """The job's log from byte `offset` (header `X-Next-Offset` says where to continue)."""
    chunk = jobs.log(job_id, offset)
    return Response(
        chunk,
        media_type="text/plain; charset=utf-8",
        headers={"X-Next-Offset": str(offset + len(chunk))},
    )


@router.delete("/{job_id}", response_model=TrainingJob, dependencies=[Admin])
def cancel_training_job(job_id: str, jobs: JobsDep) -> TrainingJob:
    """Cancel a queued or running job (409 when it already finished)."""
    return jobs.cancel(job_id)


@calibrations.post(
    "/{name}/calibrations",
    response_model=TrainingJob,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Admin],
)
def submit_calibration_job(name: str, request: CalibrationRequest, jobs: JobsDep) -> TrainingJob:
    """Queue a calibration of the app's package on footage of its camera (a video in the
    datasets folder, with labels or `no_events`); on success the calibrated package is the
    package's next version and the app runs it. Follow it under /api/training-jobs/{id}."""
    return jobs.calibrate(name, request)
