"""One training job as a separate process: the spec, the runner, and its status file.

The node (and a remote trainer worker) never trains in its own process: it writes a
:class:`RunnerInput` to a JSON file and starts ::

    python -m trainer.job JOB.json OUT_DIR

The runner resolves the dataset inside the datasets folder (a path that leaves it is refused),
runs :func:`trainer.pipeline.train_package` (or, for a calibration job,
:func:`trainer.calibrate.calibrate_package` on a stored package), and keeps ``OUT_DIR/status.json`` up to date (each
write is atomic, so a reader never sees half a file): phase, progress fraction, and at the end
the outcome. The package is written atomically to ``OUT_DIR/package.mpkg``. Logs (and progress
bars) go to standard error, which the parent sends to the job's log file.

SIGTERM cancels the job; the runner also stops by itself when the process that started it
goes away, so a crashed node leaves no orphaned training behind.

Importing this module is cheap (no TensorFlow): the API uses :class:`TrainingJobSpec`.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tqdm import tqdm

from mainstream.core.bases import (
    BaseConfig,
    build_base,
    looks_like_fingerprint,
    resolve_fingerprint,
    save_base,
    weights_fingerprint,
)
from mainstream.core.errors import InvalidParameterError, MainstreamError, PackageError
from mainstream.core.package import read_package, sha256_file, verify_package
from trainer.calibrate import calibrate_package
from trainer.pipeline import (
    BaseRequest,
    TrainRequest,
    _describe_device,
    _explicit_event_stats,
    _labels_path,
    checked_app_name,
    train_package,
)
from trainer.strategies import StrategyName

logger = logging.getLogger(__name__)

STATUS_FILE = "status.json"
PACKAGE_FILE = "package.mpkg"
LOG_FILE = "job.log"
EXIT_CANCELLED = 143
PARENT_PID_VARIABLE = "MAINSTREAM_JOB_PARENT_PID"

# Share of the whole job each phase starts at; training fills the space up to "writing".
_PHASE_START = {
    "starting": 0.0,
    "loading": 0.05,
    "training": 0.1,
    "calibrating": 0.1,
    "writing": 0.9,
    "verifying": 0.95,
    "done": 1.0,
}


# ---------------------------------------------------------------------------------------------
# The spec (what an API client sends)


def confined_relative_path(field: str, value: str) -> str:
    """`value` as a plain relative path (no absolute path, no '..'); raises otherwise."""
    text = value.strip()
    if not text:
        raise InvalidParameterError(field, value, "a path relative to the datasets folder")
    if "\\" in text or "\0" in text:
        raise InvalidParameterError(field, value, "a path with '/' separators only")
    path = PurePosixPath(text)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", text):
        raise InvalidParameterError(field, value, "a path relative to the datasets folder")
    if ".." in path.parts:
        raise InvalidParameterError(field, value, "a path inside the datasets folder (no '..')")
    if not path.parts or len(text) > 1024:
        raise InvalidParameterError(field, value, "the path of a file or folder in the datasets")
    return str(path)


class TrainingJobSpec(BaseModel):
    """A training job: which dataset (inside the datasets folder) and how to train.

    The fields are those of :class:`trainer.pipeline.TrainRequest`, except that the data is a
    path relative to the datasets folder and the output is chosen by the job.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str = Field(
        description="Image folder or video file, relative to the datasets folder",
        examples=["videos/trains.avi"],
    )
    labels: str | None = Field(
        default=None,
        description="Label CSV of the video, relative to the datasets folder "
        "[default: the video's name + .csv]",
    )
    positive_class: str = Field(min_length=1, description="The class whose frames are events")
    app_name: str | None = Field(
        default=None, description="App name of the package [default: the dataset's name]"
    )
    base: BaseRequest = Field(default_factory=BaseRequest)
    freeze_points: int | list[str] = 3
    epochs: int = Field(default=2, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    strategy: StrategyName = "standard"
    selective_backprop_beta: float | None = Field(default=None, ge=0)
    selective_backprop_history: int | None = Field(default=None, ge=1)
    selective_backprop_smoothing: float | None = Field(default=None, ge=0, lt=1)
    interpolation: Literal["linavg", "randpatch"] | None = None
    warm_start: bool = False
    patience: int | None = Field(default=None, ge=1)
    cache: bool = True
    augment_copies: int = Field(default=0, ge=0)
    seed: int = 0
    validation_fraction: float = Field(default=0.25, gt=0, lt=1)
    frame_step: int = Field(default=1, ge=1)
    event_length_s: float | None = Field(default=None, gt=0)
    event_frequency: float | None = Field(default=None, gt=0, lt=1)
    correlation: float | None = Field(default=None, ge=0, le=1)
    camera_fps: float | None = Field(default=None, gt=0)
    mixed_precision: bool = False
    bundle_base_weights: bool | None = None

    @field_validator("dataset")
    @classmethod
    def _dataset_relative(cls, value: str) -> str:
        return confined_relative_path("dataset", value)

    @field_validator("labels")
    @classmethod
    def _labels_relative(cls, value: str | None) -> str | None:
        return None if value is None else confined_relative_path("labels", value)

    @field_validator("app_name")
    @classmethod
    def _app_name_valid(cls, value: str | None) -> str | None:
        return checked_app_name(value)

    @field_validator("base")
    @classmethod
    def _weights_not_a_path(cls, value: BaseRequest) -> BaseRequest:
        # A job may not read an arbitrary file of the machine it runs on.
        if value.weights not in ("none", "imagenet") and not looks_like_fingerprint(value.weights):
            raise ValueError(
                f"base.weights {value.weights!r} must be 'none', 'imagenet' or the fingerprint "
                "of a registered base (64 hex digits, or a unique prefix of 8 or more)"
            )
        return value

    @property
    def registered_base(self) -> str | None:
        """The fingerprint of the registered base the job starts from, if any."""
        return self.base.weights if looks_like_fingerprint(self.base.weights) else None

    def with_full_fingerprint(self, bases_dir: Path | None) -> TrainingJobSpec:
        """This spec with a fingerprint prefix replaced by the whole fingerprint it names
        in `bases_dir` (a job that runs elsewhere must not depend on what a prefix means here)."""
        prefix = self.registered_base
        if prefix is None or bases_dir is None:
            return self
        fingerprint = resolve_fingerprint(prefix, bases_dir)
        return self.model_copy(
            update={"base": self.base.model_copy(update={"weights": fingerprint})}
        )

    def resolved_app_name(self) -> str:
        if self.app_name:
            return self.app_name
        stem = PurePosixPath(self.dataset).name.split(".")[0]
        return re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("_.-")[:128] or "app"

    def data_paths(self, datasets_dir: Path) -> tuple[Path, Path | None]:
        """The dataset (and label CSV) inside `datasets_dir`; raises when missing or outside."""
        data = resolve_inside(datasets_dir, "dataset", self.dataset)
        if not data.exists() or data == datasets_dir.resolve():
            raise InvalidParameterError(
                "dataset", self.dataset, f"an image folder or video file in {datasets_dir}"
            )
        labels = None
        if self.labels is not None:
            labels = resolve_inside(datasets_dir, "labels", self.labels)
        elif data.is_file():
            labels = resolve_inside(
                datasets_dir, "labels", str(PurePosixPath(self.dataset).with_suffix(".csv"))
            )
        return data, labels

    def train_request(
        self, datasets_dir: Path, output: Path, bases_dir: Path | None, progress: bool = True
    ) -> TrainRequest:
        """The pipeline's request; raises InvalidParameterError for any bad field."""

        data, labels = self.data_paths(datasets_dir)
        fields = self.model_dump(
            exclude={"dataset", "labels", "app_name"},
            exclude_none=True,
        )
        try:
            return TrainRequest(
                **fields,
                data=data,
                labels=labels,
                app_name=self.resolved_app_name(),
                output=output,
                bases_dir=bases_dir,
                progress=progress,
            )
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "spec"
            raise InvalidParameterError(field, first.get("input"), first["msg"]) from error

    def check(self, datasets_dir: Path, bases_dir: Path | None) -> None:
        """Everything that can be checked before the job starts (no TensorFlow needed)."""

        request = self.train_request(datasets_dir, datasets_dir / "unused.mpkg", bases_dir)
        _labels_path(request)
        _explicit_event_stats(request)
        fingerprint = self.registered_base
        if (
            fingerprint is not None
            and bases_dir is not None
            and not (bases_dir / f"{fingerprint}.json").is_file()
        ):
            raise InvalidParameterError(
                "base.weights", fingerprint, "the fingerprint of a base registered on this node"
            )


def resolve_inside(root: Path, field: str, relative: str) -> Path:
    """`root / relative` with symbolic links resolved; refused when it leaves `root`."""
    clean = confined_relative_path(field, relative)
    try:
        base = root.resolve()
        target = (base / clean).resolve()
    except OSError as error:  # a name too long, a loop of links...
        raise InvalidParameterError(field, relative, f"a usable path ({error})") from error
    if not target.is_relative_to(base):
        raise InvalidParameterError(
            field, relative, f"a path inside {root} (links may not leave it)"
        )
    return target


# ---------------------------------------------------------------------------------------------
# Calibration jobs: a stored package measured on footage of the deployment camera

NO_LABELS_ADVICE = (
    "give labels (a label CSV of the video, relative to the datasets folder) for labelled "
    "footage, or no_events: true for footage without labels (every frame counts as a "
    "negative: its fire rate is an upper bound on the FP rate)"
)


class CalibrationFootage(BaseModel):
    """Footage of the deployment camera inside the datasets folder, with its labels or none."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    video: str = Field(
        description="Video from the camera the app watches, relative to the datasets folder",
        examples=["cameras/door-day.avi"],
    )
    labels: str | None = Field(
        default=None,
        description="Its label CSV (start_frame,end_frame[,label]), relative to the datasets "
        "folder; required unless no_events",
    )
    no_events: bool = Field(
        default=False,
        description="Footage without labels: every frame counts as a negative, so the fire "
        "rate measured bounds the false-positive rate from above",
    )
    fps: float | None = Field(
        default=None, gt=0, description="The footage's frame rate, if its container is wrong"
    )

    @field_validator("video")
    @classmethod
    def _video_relative(cls, value: str) -> str:
        return confined_relative_path("video", value)

    @field_validator("labels")
    @classmethod
    def _labels_relative(cls, value: str | None) -> str | None:
        return None if value is None else confined_relative_path("labels", value)

    @model_validator(mode="after")
    def _labels_or_no_events(self) -> CalibrationFootage:
        # Silence about labels must not turn a clip with events into "every frame negative".
        if (self.labels is None) != self.no_events:
            raise ValueError(NO_LABELS_ADVICE)
        return self

    def footage_paths(self, datasets_dir: Path) -> tuple[Path, Path | None]:
        """The video (and label CSV) inside `datasets_dir`; raises when missing or outside."""
        video = resolve_inside(datasets_dir, "video", self.video)
        if not video.is_file():
            raise InvalidParameterError("video", self.video, f"a video file in {datasets_dir}")
        if self.labels is None:
            return video, None
        labels = resolve_inside(datasets_dir, "labels", self.labels)
        if not labels.is_file():
            raise InvalidParameterError("labels", self.labels, f"a label CSV in {datasets_dir}")
        return video, labels


class CalibrationJobSpec(CalibrationFootage):
    """A calibration job as the node recorded it: the footage, the package it measures (the
    app's version when the job was submitted) and the threshold the app fires from."""

    app: str = Field(description="The app whose package is calibrated")
    package_app: str
    package_version: int = Field(ge=1)
    package_sha256: str
    video_sha256: str = Field(description="The footage's sha256 when the job was submitted")
    threshold: float = Field(gt=0, lt=1, description="Score from which a frame counts as a fire")


# ---------------------------------------------------------------------------------------------
# What the parent hands the runner, and what the runner reports


class RunnerInput(BaseModel):
    """The file `python -m trainer.job` reads: a training spec, or a calibration spec and the
    package it measures."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    spec: TrainingJobSpec | None = None
    calibration: CalibrationJobSpec | None = None
    package: Path | None = Field(default=None, description="The package a calibration measures")
    datasets_dir: Path
    bases_dir: Path | None = Field(
        default=None, description="Registered bases (for spec.base.weights = a fingerprint)"
    )
    verify: bool = Field(
        default=True,
        description="Load every model of a trained package once written (a calibrated one "
        "keeps the models of the package it measured)",
    )
    register_bases_dir: Path | None = Field(
        default=None,
        description="Save the package's bundled base here after checking its fingerprint, so "
        "that registering the package needs no TensorFlow",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> RunnerInput:
        if (self.spec is None) == (self.calibration is None):
            raise ValueError("a runner input holds a training spec or a calibration, not both")
        if self.calibration is not None and self.package is None:
            raise ValueError("a calibration needs the package it measures")
        return self


class JobProgress(BaseModel):
    phase: str = "queued"
    fraction: float = Field(default=0.0, ge=0, le=1)
    detail: str = ""


class RunnerStatus(BaseModel):
    """`OUT_DIR/status.json`."""

    state: Literal["running", "succeeded", "failed", "cancelled"] = "running"
    progress: JobProgress = Field(default_factory=JobProgress)
    error: str | None = None
    device: str | None = None
    package_sha256: str | None = None
    app_name: str | None = None
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    updated_at: float = Field(default_factory=time.time)


def write_json_atomically(path: Path, document: str) -> None:
    """Write a temp file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(document)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_runner_status(out_dir: Path) -> RunnerStatus | None:
    path = out_dir / STATUS_FILE
    try:
        return RunnerStatus.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class StatusReporter:
    """Keeps `status.json` current; safe to call from the progress thread and the main one."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / STATUS_FILE
        self.status = RunnerStatus(progress=JobProgress(phase="starting"))
        self.cut_points: list[str] = []
        self._lock = threading.Lock()
        self.write()

    def write(self) -> None:
        self.status.updated_at = time.time()
        write_json_atomically(self.path, self.status.model_dump_json(indent=2))

    def phase(self, phase: str, detail: str = "") -> None:
        with self._lock:
            fraction = max(self.status.progress.fraction, _PHASE_START.get(phase, 0.0))
            self.status.progress = JobProgress(phase=phase, fraction=fraction, detail=detail)
            self.write()

    def bar(self, description: str, done: float, total: float | None) -> None:
        """Progress of a tqdm bar; a "training <cut>" bar moves the job's fraction."""
        with self._lock:
            progress = self.status.progress
            share = done / total if total else 0.0
            detail = f"{description}: {done:g}/{total:g}" if total else f"{description}: {done:g}"
            fraction = progress.fraction
            cut = description.removeprefix("training ")
            if progress.phase == "training" and cut in self.cut_points:
                index = self.cut_points.index(cut)
                span = _PHASE_START["writing"] - _PHASE_START["training"]
                within = (index + min(share, 1.0)) / len(self.cut_points)
                fraction = max(fraction, _PHASE_START["training"] + span * within)
            if detail == progress.detail and fraction == progress.fraction:
                return
            self.status.progress = progress.model_copy(
                update={"fraction": round(fraction, 4), "detail": detail}
            )
            self.write()

    def finish(self, state: Literal["succeeded", "failed", "cancelled"], **fields: Any) -> None:
        with self._lock:
            self.status = self.status.model_copy(update={"state": state, **fields})
            if state == "succeeded":
                self.status.progress = JobProgress(phase="done", fraction=1.0)
            self.write()


class _PipelineEvents(logging.Handler):
    """Turns the pipeline's log records into phases (records carry their arguments)."""

    def __init__(self, reporter: StatusReporter) -> None:
        super().__init__(level=logging.INFO)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        message, args = record.msg, record.args
        if not isinstance(args, tuple):
            return
        if message == "training on %s" and args:
            self.reporter.status.device = str(args[0])
            self.reporter.phase("loading", f"building the base and reading data on {args[0]}")
        elif message.endswith("cut points %s") and len(args) == 3:
            self.reporter.cut_points = [name.strip() for name in str(args[2]).split(",")]
            self.reporter.phase("training", f"{args[0]} training frames, {args[1]} held out")
        elif message.startswith("wrote %s"):
            self.reporter.phase("writing")


def _watch_progress_bars(reporter: StatusReporter, stop: threading.Event) -> None:
    """Report the live tqdm bars once a second (tqdm keeps every open bar in `_instances`)."""

    while not stop.wait(1.0):
        for bar in list(getattr(tqdm, "_instances", ())):
            if not getattr(bar, "disable", True):
                reporter.bar(str(bar.desc or "working"), float(bar.n), bar.total)


class JobCancelled(BaseException):
    """Raised in the runner when it receives SIGTERM (or its parent went away)."""


def _watch_parent(parent: int, stop: threading.Event) -> None:
    while True:
        if os.getppid() != parent:
            logger.error("the process that started this job went away; stopping")
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if stop.wait(1.0):
            return


# ---------------------------------------------------------------------------------------------
# Verifying the result (in this process, which has TensorFlow loaded anyway)


def verify_trained_package(path: Path, register_bases_dir: Path | None) -> str:
    """Check the package as a node does on upload; returns its sha256.

    Every model is loaded in Keras safe mode. With `register_bases_dir`, bundled base weights
    whose fingerprint is not registered there are checked against the manifest's fingerprint
    and saved as a registered base (what :class:`mainstream.node.services.Services` does itself
    when it must), so that the node can store the package without loading any model.
    """

    report = verify_package(path, load_models=True)
    manifest = report.manifest
    info = manifest.base_model
    fingerprint = info.weights_fingerprint
    if (
        register_bases_dir is not None
        and manifest.base_weights is not None
        and not (register_bases_dir / f"{fingerprint}.json").is_file()
    ):
        with read_package(path) as package:
            weights = package.base_weights_path
            assert weights is not None
            height = info.input_shape[0]
            config = BaseConfig(
                name=info.name, input_size=height, alpha=info.alpha or 1.0, weights=str(weights)
            )
            model = build_base(config)
            actual = weights_fingerprint(model)
            if actual != fingerprint:
                raise PackageError(
                    f"the bundled base weights have fingerprint {actual[:12]}… but the manifest "
                    f"says {fingerprint[:12]}…"
                )
            save_base(
                model,
                config,
                register_bases_dir,
                weights_source=info.weights_source,
                provenance={"bundled_in_package": manifest.app.name},
            )
    return report.archive_sha256


# ---------------------------------------------------------------------------------------------
# The runner


def run_job(job_file: Path, out_dir: Path) -> int:
    """Run the job described in `job_file`; returns the process exit status."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reporter = StatusReporter(out_dir)
    stop = threading.Event()

    def cancel(signum: int, frame: object) -> None:
        raise JobCancelled()

    signal.signal(signal.SIGTERM, cancel)
    # The parent names itself: it may have died before this process got here.
    parent = int(os.environ.get(PARENT_PID_VARIABLE, "0")) or os.getppid()
    threading.Thread(target=_watch_parent, args=(parent, stop), daemon=True).start()
    events = _PipelineEvents(reporter)
    logging.getLogger("trainer.pipeline").addHandler(events)
    try:
        job = RunnerInput.model_validate_json(job_file.read_text(encoding="utf-8"))
        if job.calibration is not None:
            _calibrate(job, job.calibration, out_dir, reporter)
            return 0
        assert job.spec is not None  # the input holds one kind
        request = job.spec.train_request(
            job.datasets_dir, out_dir / PACKAGE_FILE, job.bases_dir, progress=True
        )
        reporter.phase("loading", "starting TensorFlow")
        threading.Thread(target=_watch_progress_bars, args=(reporter, stop), daemon=True).start()

        result = train_package(request)
        sha256 = None
        if job.verify:
            reporter.phase("verifying", "loading every model of the package")
            sha256 = verify_trained_package(result.package_path, job.register_bases_dir)
        reporter.finish(
            "succeeded",
            device=result.device,
            package_sha256=sha256,
            app_name=result.manifest.app.name,
            candidates=[candidate.model_dump() for candidate in result.candidates],
        )
        logger.info("job finished on %s in %.1f s", result.device, result.wall_time_s)
        return 0
    except JobCancelled:
        logger.error("job cancelled")
        reporter.finish("cancelled", error="cancelled")
        return EXIT_CANCELLED
    except MainstreamError as error:
        logger.error("job failed: %s", error)
        reporter.finish("failed", error=str(error))
        return 2
    except Exception as error:
        logger.exception("job failed")
        reporter.finish("failed", error=f"{type(error).__name__}: {error}")
        return 1
    finally:
        stop.set()
        logging.getLogger("trainer.pipeline").removeHandler(events)


def _calibrate(
    job: RunnerInput, spec: CalibrationJobSpec, out_dir: Path, reporter: StatusReporter
) -> None:
    """Measure every candidate of `job.package` on the footage and write the package again."""
    assert job.package is not None  # checked when the input was read
    video, labels = spec.footage_paths(job.datasets_dir)
    reporter.phase("loading", "starting TensorFlow")
    import tensorflow as tf  # TensorFlow loads only when a model is built or run

    device = _describe_device(tf)
    reporter.status.device = device
    started = time.perf_counter()
    reporter.phase("calibrating", f"every candidate of {spec.package_app} on {video.name}")
    result = calibrate_package(
        job.package,
        video,
        labels,
        out_dir / PACKAGE_FILE,
        bases_dir=job.bases_dir,
        threshold=spec.threshold,
        fps=spec.fps,
    )
    # The models are the bytes of the package measured, which the node loaded when it stored
    # it; the node checks that they are unchanged (training_jobs.check_same_models), so none
    # is loaded again here.
    reporter.finish(
        "succeeded",
        device=device,
        package_sha256=sha256_file(result.output),
        app_name=result.app,
        candidates=[
            {
                "cut_point": row.cut_point,
                "clip": row.clip.model_dump(),
                "before": row.before.model_dump() if row.before is not None else None,
                "after": row.after.model_dump(),
            }
            for row in result.candidates
        ],
    )
    logger.info(
        "calibrated %s on %s (%d frames, %d events) on %s in %.1f s",
        result.app,
        result.clip,
        result.frames,
        result.events,
        device,
        time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer.job JOB.json OUT_DIR`, or `--verify PACKAGE BASES_DIR` (prints sha256)."""
    arguments = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if len(arguments) == 3 and arguments[0] == "--verify":
        try:
            print(verify_trained_package(Path(arguments[1]), Path(arguments[2])))
        except MainstreamError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    if len(arguments) != 2:
        print(
            "usage: python -m trainer.job JOB.json OUT_DIR\n"
            "       python -m trainer.job --verify PACKAGE BASES_DIR",
            file=sys.stderr,
        )
        return 2
    return run_job(Path(arguments[0]), Path(arguments[1]))


if __name__ == "__main__":
    sys.exit(main())
