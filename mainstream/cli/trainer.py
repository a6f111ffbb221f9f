"""`mainstream trainer worker` (run training jobs for nodes) and `mainstream jobs ...` (submit
and follow a node's training jobs over its API).

    MAINSTREAM_TRAINER__WORKER_TOKEN=secret mainstream trainer worker --listen 0.0.0.0:8781
    mainstream jobs submit --dataset videos/trains.avi --positive-class train --wait
    mainstream jobs calibrate trains --video cameras/door.avi --labels cameras/door.csv --wait
    mainstream jobs list | show ID | log ID [--follow] | cancel ID

`jobs` commands talk to `--server` (MAINSTREAM_SERVER) with `--token` (MAINSTREAM_TOKEN).
Nothing heavy is imported: the client never needs TensorFlow.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import httpx
import yaml

from mainstream.core.errors import (
    AuthError,
    ConflictError,
    InvalidParameterError,
    MainstreamError,
    NotFoundError,
)
from mainstream.core.yaml_files import describe_yaml_error
from mainstream.node.settings import default_data_dir
from trainer.strategies import STRATEGY_NAMES

DEFAULT_SERVER = "http://127.0.0.1:8780"
DEFAULT_WORKER_PORT = 8781
FINISHED = ("succeeded", "failed", "cancelled")


# ---------------------------------------------------------------------------------------------
# `mainstream trainer worker`


def _parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
    return host.strip("[]"), int(port)


@click.group("trainer")
def trainer() -> None:
    """Run training jobs for nodes on this machine (a GPU machine, typically)."""


@trainer.command("worker")
@click.option(
    "--listen",
    default=f"127.0.0.1:{DEFAULT_WORKER_PORT}",
    show_default=True,
    help="Address and port to listen on (0.0.0.0:8781 to accept nodes on the network).",
)
@click.option(
    "--token",
    envvar="MAINSTREAM_TRAINER__WORKER_TOKEN",
    default=None,
    help="Bearer token nodes must send [env MAINSTREAM_TRAINER__WORKER_TOKEN].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="MAINSTREAM_DATA_DIR",
    default=None,
    help="Data folder; jobs and their datasets go to <data-dir>/worker "
    "[env MAINSTREAM_DATA_DIR; default: the user's data folder].",
)
@click.option("--max-concurrent-jobs", type=click.IntRange(1, 16), default=1, show_default=True)
@click.option(
    "--max-upload-mb",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="Largest job archive (dataset) accepted.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def worker(
    listen: str,
    token: str | None,
    data_dir: Path | None,
    max_concurrent_jobs: int,
    max_upload_mb: int,
    log_level: str,
) -> None:
    """Serve training jobs to nodes whose trainer mode is "remote" (until Ctrl-C)."""

    from api.trainer_worker import WorkerConfig, serve_worker  # FastAPI loads only to serve

    host, port = _parse_listen(listen)
    if not token:
        raise click.UsageError("give --token or set MAINSTREAM_TRAINER__WORKER_TOKEN")
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    folder = (data_dir if data_dir is not None else default_data_dir()) / "worker"
    config = WorkerConfig(
        data_dir=folder,
        token=token,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
        max_concurrent_jobs=max_concurrent_jobs,
    )
    click.echo(f"trainer worker: jobs in {folder}, listening on http://{host}:{port}", err=True)
    serve_worker(config, host, port, log_level)


# ---------------------------------------------------------------------------------------------
# `mainstream jobs`: a small HTTP client of /api/training-jobs


class JobsClient:
    """The node's training-job endpoints; errors become Mainstream errors with the node's text."""

    def __init__(self, server: str, token: str | None, timeout_s: float = 60.0) -> None:

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server.rstrip("/")
        self._client = httpx.Client(base_url=self.server, headers=headers, timeout=timeout_s)

    def _call(
        self, method: str, path: str, *, under: str = "/api/training-jobs", **kwargs: Any
    ) -> Any:

        try:
            answer = self._client.request(method, f"{under}{path}", **kwargs)
        except httpx.HTTPError as error:
            raise MainstreamError(f"cannot reach {self.server}: {error}") from error
        if answer.status_code >= 400:
            try:
                detail = answer.json().get("detail", answer.text)
            except ValueError:
                detail = answer.text
            error_class = {401: AuthError, 404: NotFoundError, 409: ConflictError}.get(
                answer.status_code, MainstreamError
            )
            raise error_class(f"HTTP {answer.status_code}: {detail}")
        return answer

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "", json=body).json()
        return result

    def calibrate(self, app: str, body: dict[str, Any]) -> dict[str, Any]:
        """Submit a calibration job of `app` (POST /api/apps/{app}/calibrations)."""
        path = f"/{quote(app, safe='')}/calibrations"
        result: dict[str, Any] = self._call("POST", path, under="/api/apps", json=body).json()
        return result

    def list(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "").json()
        return result

    def get(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/{job_id}").json()
        return result

    def log(self, job_id: str, offset: int = 0) -> tuple[bytes, int]:
        answer = self._call("GET", f"/{job_id}/log", params={"offset": offset})
        return answer.content, int(
            answer.headers.get("X-Next-Offset", offset + len(answer.content))
        )

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", f"/{job_id}").json()
        return result


_server_option = click.option(
    "--server",
    envvar="MAINSTREAM_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    help="The node's API [env MAINSTREAM_SERVER].",
)
_token_option = click.option(
    "--token", envvar="MAINSTREAM_TOKEN", default=None, help="API token [env MAINSTREAM_TOKEN]."
)


def _summary(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    package = job.get("package")
    outcome = f"  package {package['app']} v{package['version']}" if package else ""
    error = f"  error: {job['error']}" if job.get("error") and job["state"] != "cancelled" else ""
    if job.get("deploy_error"):
        error += f"  not deployed: {job['deploy_error']}"
    calibration = job.get("calibration")
    if calibration is not None:
        what = f"calibrate {calibration['app']} on {calibration['video']}"
    else:
        what = job["spec"]["dataset"]
    return (
        f"{job['id']}  {job['state']:<9} {job['mode']:<6} "
        f"{100 * float(progress.get('fraction', 0)):5.1f}% {progress.get('phase', ''):<11} "
        f"{what}{outcome}{error}"
    )


@click.group("jobs")
def jobs() -> None:
    """Training and calibration jobs of a node: submit, list, show, follow the log, cancel."""


@jobs.command("list")
@_server_option
@_token_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_jobs(server: str, token: str | None, as_json: bool) -> None:
    """Every job, newest first."""
    items = JobsClient(server, token).list()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("no training jobs", err=True)
    for job in items:
        click.echo(_summary(job))


@jobs.command("show")
@_server_option
@_token_option
@click.argument("job_id")
def show_job(server: str, token: str | None, job_id: str) -> None:
    """One job as JSON."""
    click.echo(json.dumps(JobsClient(server, token).get(job_id), indent=2))


@jobs.command("log")
@_server_option
@_token_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job finishes.")
@click.argument("job_id")
def job_log(server: str, token: str | None, follow: bool, job_id: str) -> None:
    """The job's log (the trainer's output)."""
    client = JobsClient(server, token)
    offset = 0
    while True:
        chunk, offset = client.log(job_id, offset)
        if chunk:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            continue
        if not follow or client.get(job_id)["state"] in FINISHED:
            return
        time.sleep(1.0)


@jobs.command("cancel")
@_server_option
@_token_option
@click.argument("job_id")
def cancel_job(server: str, token: str | None, job_id: str) -> None:
    """Cancel a queued or running job."""
    click.echo(_summary(JobsClient(server, token).cancel(job_id)))


@jobs.command("submit")
@_server_option
@_token_option
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML/JSON file with the job's fields (see POST /api/training-jobs); flags override it.",
)
@click.option("--dataset", help="Image folder or video, relative to the node's datasets folder.")
@click.option("--labels", help="Label CSV of the video, relative to the datasets folder.")
@click.option("--positive-class", help="The class whose frames are events.")
@click.option("--app-name", help="App name of the package [default: the dataset's name].")
@click.option("--base", "base_name", help="Base architecture (mobilenet_v1, ...).")
@click.option("--weights", help="none, imagenet, or a registered base's fingerprint.")
@click.option("--alpha", type=float, help="Width multiplier of MobileNets.")
@click.option("--input-size", type=int, help="Square input size in pixels.")
@click.option("--freeze-points", help="N or comma-separated cut-point names.")
@click.option("--epochs", type=int)
@click.option("--seed", type=int)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGY_NAMES),
    help="Which examples each epoch trains on (README: training strategies).",
)
@click.option("--warm-start/--no-warm-start", default=None, help="Warm-start shallower cuts.")
@click.option("--patience", type=int, help="Stop after N epochs without held-out improvement.")
@click.option("--event-length", type=float, help="Event length in seconds.")
@click.option("--event-frequency", type=float, help="Fraction of time covered by events.")
@click.option("--correlation", type=float, help="Inter-frame correlation.")
@click.option("--camera-fps", type=float, help="Camera frame rate.")
@click.option("--deploy", is_flag=True, help="Create the app once the package is registered.")
@click.option("--force", is_flag=True, help="Register the package even if a candidate is weak.")
@click.option("--wait", is_flag=True, help="Follow the job until it finishes.")
def submit_job(
    server: str,
    token: str | None,
    spec_file: Path | None,
    deploy: bool,
    force: bool,
    wait: bool,
    **flags: Any,
) -> None:
    """Submit a training job; prints its id (with --wait, follows it and fails if it fails).

    A package whose candidates are no better than the majority class is not registered (the
    job fails and says why) unless `--force`.
    """
    body = _submit_body(spec_file, flags, deploy)
    if force:
        body["force"] = True
    client = JobsClient(server, token)
    job = client.submit(body)
    click.echo(job["id"])
    if wait:
        _follow(client, job)


@jobs.command("calibrate")
@_server_option
@_token_option
@click.argument("app")
@click.option(
    "--video",
    required=True,
    help="Footage of the app's camera, relative to the node's datasets folder.",
)
@click.option("--labels", help="Its label CSV, relative to the datasets folder; see --no-events.")
@click.option(
    "--no-events",
    is_flag=True,
    help="Footage without labels: every frame counts as a negative, so the fire rate measured "
    "bounds the false-positive rate from above.",
)
@click.option("--threshold", type=float, help="Fire from this score [default: the app's].")
@click.option("--fps", type=float, help="The footage's frame rate, if its container is wrong.")
@click.option("--wait", is_flag=True, help="Follow the job until it finishes.")
def calibrate_job(
    server: str,
    token: str | None,
    app: str,
    video: str,
    labels: str | None,
    no_events: bool,
    threshold: float | None,
    fps: float | None,
    wait: bool,
) -> None:
    """Calibrate APP's package on footage of its camera, as a job of the node; prints its id.

    Every candidate is measured on the clip; the node registers the result as the package's
    next version and moves APP to it, so the plan uses the clip's counts (the local form is
    `mainstream calibrate PKG`).
    """
    if (labels is None) == (not no_events):
        raise click.UsageError(
            "give --labels for labelled footage, or --no-events for footage without labels "
            "(every frame counts as a negative: its fire rate is an upper bound on the FP rate)"
        )
    body: dict[str, Any] = {"video": video, "labels": labels, "no_events": no_events}
    body |= {
        name: value for name, value in (("threshold", threshold), ("fps", fps)) if value is not None
    }
    client = JobsClient(server, token)
    job = client.calibrate(app, body)
    click.echo(job["id"])
    if wait:
        _follow(client, job)


def _follow(client: JobsClient, job: dict[str, Any]) -> None:
    """Print the job's summary as it changes; fails unless the job succeeds."""
    last = ""
    while job["state"] not in FINISHED:
        time.sleep(1.0)
        job = client.get(job["id"])
        line = _summary(job)
        if line != last:
            click.echo(line, err=True)
            last = line
    if job["state"] != "succeeded":
        raise MainstreamError(f"job {job['id']} {job['state']}: {job.get('error')}")


_FLAG_FIELDS = {
    "dataset": "dataset",
    "labels": "labels",
    "positive_class": "positive_class",
    "app_name": "app_name",
    "freeze_points": "freeze_points",
    "epochs": "epochs",
    "seed": "seed",
    "strategy": "strategy",
    "warm_start": "warm_start",
    "patience": "patience",
    "event_length": "event_length_s",
    "event_frequency": "event_frequency",
    "correlation": "correlation",
    "camera_fps": "camera_fps",
}
_BASE_FIELDS = {
    "base_name": "name",
    "weights": "weights",
    "alpha": "alpha",
    "input_size": "input_size",
}


def _submit_body(spec_file: Path | None, flags: dict[str, Any], deploy: bool) -> dict[str, Any]:

    body: dict[str, Any] = {}
    if spec_file is not None:
        try:
            loaded = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise InvalidParameterError(
                "spec", str(spec_file), f"valid YAML ({describe_yaml_error(error, spec_file.name)})"
            ) from error
        if not isinstance(loaded, dict):
            raise InvalidParameterError("spec", str(spec_file), "a mapping of job fields")
        body = loaded
    base = dict(body.get("base") or {})
    for flag, name in _BASE_FIELDS.items():
        if flags.get(flag) is not None:
            base[name] = flags[flag]
    if base:
        body["base"] = base
    for flag, name in _FLAG_FIELDS.items():
        if flags.get(flag) is not None:
            body[name] = flags[flag]
    if deploy:
        body["deploy"] = True
    for required, flag in (("dataset", "--dataset"), ("positive_class", "--positive-class")):
        if not body.get(required):
            raise click.UsageError(f"missing {flag} (or `{required}:` in the spec file)")
    return body
