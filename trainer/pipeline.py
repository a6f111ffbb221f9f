"""From labelled data to an M-Package: the whole M-Trainer job.

`train_package(request)` loads the data (an image folder, or a video with its label CSV),
splits it by time, builds the shared base, fine-tunes one candidate per freeze depth
(:mod:`trainer.finetune`), measures the app's event statistics and writes the package
atomically (:func:`mainstream.core.package.write_package`): an interrupted job leaves nothing at the
output path.

TensorFlow is imported only when a job runs; importing this module (for `TrainRequest`) is
cheap.
"""

from __future__ import annotations

import logging
import math
import platform
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mainstream import __version__
from mainstream.core.bases import (
    INPUT_CUT,
    BaseConfig,
    base_info,
    build_base,
    cut_output_shape,
    default_cut_points,
    load_registered_base,
    looks_like_fingerprint,
    registered_base_record,
    resolve_fingerprint,
    save_weights_atomically,
)
from mainstream.core.errors import InvalidParameterError
from mainstream.core.manifest import (
    WEAK_CANDIDATE_ADVICE,
    AppInfo,
    BaseModelInfo,
    CandidateInfo,
    EventStats,
    FrameEvidence,
    Manifest,
    TrainingInfo,
    TrainingRecord,
    weak_candidates,
)
from mainstream.core.package import candidate_archive_name, sha256_file, write_package
from trainer.datasets import (
    LabelledVideo,
    load_image_folder,
    load_labelled_video,
    read_event_csv,
    split_by_time,
    time_folds,
)
from trainer.event_stats import (
    CorrelationEstimate,
    EventInterval,
    class_frame_correlations,
    estimate_correlation,
    event_statistics,
)
from trainer.finetune import FinetuneOptions, HeldOutQuality, finetune_candidates, save_candidate
from trainer.selective_backprop import (
    DEFAULT_BETA,
    DEFAULT_HISTORY_SIZE,
    DEFAULT_SMOOTHING,
    TrainingOptions,
)
from trainer.strategies import StrategyName, check_combination

if TYPE_CHECKING:
    import keras

    from mainstream.core.bases import BaseConfig
    from trainer.datasets import FrameDataset, LabelledVideo
    from trainer.finetune import FinetuneResult, TrainedCandidate

logger = logging.getLogger(__name__)

BASE_WEIGHTS_ARCHIVE_NAME = "base/weights.h5"
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class BaseRequest(BaseModel):
    """Which shared base to fine-tune from.

    `weights`: "none" (random init), "imagenet", the path of a weights file, or the
    fingerprint of a base registered with `mainstream base pretrain` (all 64 hex digits or a
    unique prefix of 8 or more); a registered base brings its own name, alpha and input size.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "mobilenet_v1"
    weights: str = "none"
    alpha: float = 1.0
    input_size: int = Field(default=224, ge=32)


def checked_app_name(value: str | None) -> str | None:
    """`value` if it is a valid app name (or None), else a ValueError saying what is allowed."""
    if value is not None and not _APP_NAME.match(value):
        raise ValueError(
            f"app_name {value!r} must start with a letter or digit and use only letters, "
            "digits, '_', '.' and '-'"
        )
    return value


class TrainRequest(BaseModel):
    """Everything one training job needs (CLI flags, a YAML config, or an API body)."""

    model_config = ConfigDict(extra="forbid")

    data: Path = Field(description="Image folder (one subfolder per class) or a video file")
    labels: Path | None = Field(
        default=None, description="Label CSV of the video [default: the video's name + .csv]"
    )
    positive_class: str = Field(min_length=1, description="The class whose frames are events")
    app_name: str | None = Field(
        default=None, description="App name in the manifest [default: the output file's stem]"
    )
    base: BaseRequest = Field(default_factory=BaseRequest)
    freeze_points: int | list[str] = Field(
        default=3,
        description="N spread-out frozen cut points (see default_freeze_points), or a list of "
        'cut-point names ("input" = nothing frozen)',
    )
    epochs: int = Field(default=2, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    strategy: StrategyName = Field(
        default="standard", description="Which examples each epoch trains on (trainer/strategies)"
    )
    selective_backprop_beta: float = Field(default=DEFAULT_BETA, ge=0)
    selective_backprop_history: int = Field(default=DEFAULT_HISTORY_SIZE, ge=1)
    selective_backprop_smoothing: float = Field(
        default=DEFAULT_SMOOTHING, ge=0, lt=1, description="Thesis SB's epsilon (Eq. 8)"
    )
    interpolation: Literal["linavg", "randpatch"] = Field(
        default="linavg", description="InterTrain's operator: pixel average or side-by-side halves"
    )
    warm_start: bool = Field(
        default=False, description="Start each candidate from the next deeper one's layers"
    )
    patience: int | None = Field(
        default=None, ge=1, description="Stop after N epochs without held-out improvement"
    )
    cache: bool = Field(default=True, description="Train on cached stem features")
    augment_copies: int = Field(default=0, ge=0, description="Augmented copies per frame")
    seed: int = 0
    validation_fraction: float = Field(default=0.25, gt=0, lt=1)
    folds: int = Field(
        default=1,
        ge=1,
        le=10,
        description="1: one held-out split by time (validation_fraction); K >= 2: K-fold "
        "cross-validation over time blocks for the per-frame figures, then the candidates "
        "trained on every frame (K + 1 trainings)",
    )
    frame_step: int = Field(default=1, ge=1, description="Use every N-th frame of a video")
    event_length_s: float | None = Field(default=None, gt=0)
    event_frequency: float | None = Field(default=None, gt=0, lt=1)
    correlation: float | None = Field(default=None, ge=0, le=1)
    camera_fps: float | None = Field(default=None, gt=0)
    mixed_precision: bool = False
    bundle_base_weights: bool | None = Field(
        default=None, description="Put the base weights in the package [default: unless imagenet]"
    )
    bases_dir: Path | None = Field(
        default=None,
        description="Registry of pretrained bases (needed when weights name a registered base)",
    )
    output: Path
    progress: bool = True

    @field_validator("freeze_points", mode="before")
    @classmethod
    def _parse_freeze_points(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                return int(text)
            return [name.strip() for name in text.split(",") if name.strip()]
        return value

    @field_validator("freeze_points")
    @classmethod
    def _freeze_points_valid(cls, value: int | list[str]) -> int | list[str]:
        if isinstance(value, int) and value < 1:
            raise ValueError("freeze_points must be >= 1 or a list of cut-point names")
        if isinstance(value, list):
            if not value:
                raise ValueError("freeze_points is an empty list")
            if len(set(value)) != len(value):
                raise ValueError(f"freeze_points repeats a cut point: {value}")
        return value

    @field_validator("app_name")
    @classmethod
    def _app_name_valid(cls, value: str | None) -> str | None:
        return checked_app_name(value)

    @model_validator(mode="after")
    def _combination_makes_sense(self) -> TrainRequest:
        check_combination(self.strategy, self.epochs, self.model_fields_set, self.augment_copies)
        return self

    @model_validator(mode="after")
    def _output_is_a_file(self) -> TrainRequest:
        if self.output.exists() and self.output.is_dir():
            raise ValueError(f"output {str(self.output)!r} is a folder; give a file name")
        return self

    def training_options(self) -> Any:
        """The training-loop options (a `TrainingOptions`)."""

        return TrainingOptions(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            strategy=self.strategy,
            beta=self.selective_backprop_beta,
            history_size=self.selective_backprop_history,
            smoothing=self.selective_backprop_smoothing,
            interpolation=self.interpolation,
            seed=self.seed,
            patience=self.patience,
        )


class CandidateSummary(BaseModel):
    cut_point: str
    frozen_layers: int
    recall: float
    false_positive_rate: float
    accuracy: float
    optimizer_steps: int
    examples_backpropagated: int
    wall_time_s: float


class TrainResult(BaseModel):
    """What a finished job produced."""

    package_path: Path
    manifest: Manifest
    candidates: list[CandidateSummary]
    correlation_candidate: str | None
    device: str
    stem_seconds: float
    wall_time_s: float


# ---------------------------------------------------------------------------------------------
# The job


def train_package(request: TrainRequest) -> TrainResult:
    """Run one training job end to end and write the M-Package to `request.output`."""
    # Problems with the request are reported before anything slow is imported or run.
    labels_path = _labels_path(request)
    explicit_stats = _explicit_event_stats(request)
    _check_positive_class(request, labels_path)

    import tensorflow as tf  # TensorFlow loads only when a model is built or run

    started = time.perf_counter()
    device = _describe_device(tf)
    logger.info("training on %s", device)

    with _precision_policy(request.mixed_precision), _quiet_retracing_warnings():
        config, base, base_description = _load_base(request)
        dataset = _load_data(request, config, labels_path)  # the class was checked above
        splits = (
            time_folds(dataset, request.folds)
            if request.folds > 1
            else [split_by_time(dataset, request.validation_fraction)]
        )
        cut_points = (
            default_freeze_points(config, base, request.freeze_points)
            if isinstance(request.freeze_points, int)
            else list(request.freeze_points)
        )
        options = FinetuneOptions(
            training=request.training_options(),
            cache=request.cache,
            augment_copies=request.augment_copies,
            progress=request.progress,
            warm_start=request.warm_start,
        )
        held_out = []
        for number, (train, validation) in enumerate(splits, start=1):
            logger.info(
                "%s%d training and %d held-out frames; cut points %s",
                f"fold {number} of {len(splits)}: " if len(splits) > 1 else "",
                len(train),
                len(validation),
                ", ".join(cut_points),
            )
            held_out.append(
                HeldOutFold(
                    validation,
                    finetune_candidates(
                        base, config, cut_points, train, validation, request.positive_class, options
                    ),
                    train.summary(),
                )
            )
        result = held_out[0].result
        if len(held_out) > 1:
            logger.info("final candidates: trained on all %d frames", len(dataset))
            # The held-out frames of the last fold are only there to satisfy the trainer's
            # checks: every figure of the package comes from the folds.
            result = finetune_candidates(
                base, config, cut_points, dataset, splits[-1][1], request.positive_class, options
            )
            for index, candidate in enumerate(result.candidates):
                candidate.quality = pooled_quality(
                    [fold.result.candidates[index].quality for fold in held_out]
                )
        chosen: str | None = None
        if isinstance(dataset, LabelledVideo):
            event_stats, chosen = _measured_event_stats(request, dataset, held_out, result)
        elif explicit_stats is not None:
            event_stats = explicit_stats
        else:  # unreachable: _explicit_event_stats raises for image folders without stats
            raise InvalidParameterError("event_stats", None, "measured or given statistics")

        with tempfile.TemporaryDirectory(prefix="mainstream-train-") as folder:
            files, candidate_infos = _save_candidates(
                result,
                Path(folder),
                base,
                _held_out_events(held_out),
                _split_description(request, len(held_out)),
                _frame_correlations(dataset, held_out, request, event_stats),
            )
            base_weights = None
            if _bundle_base(request, config):
                weights_path = Path(folder) / "base.weights.h5"
                save_weights_atomically(base, weights_path)
                files[BASE_WEIGHTS_ARCHIVE_NAME] = weights_path
                base_weights = {
                    "file": BASE_WEIGHTS_ARCHIVE_NAME,
                    "sha256": sha256_file(weights_path),
                }
            wall_time = time.perf_counter() - started
            manifest = Manifest(
                app=AppInfo(
                    name=_app_name(request),
                    classes=list(dataset.class_names),
                    positive_class=request.positive_class,
                ),
                base_model=base_description,
                event_stats=event_stats,
                candidates=candidate_infos,
                training=_training_info(request, dataset, held_out, result, wall_time, device),
                base_weights=base_weights,
            )
            package_path = write_package(request.output, manifest, files)
    logger.info("wrote %s in %.1f s", package_path, time.perf_counter() - started)
    _warn_about_weak_candidates(manifest)
    return TrainResult(
        package_path=package_path,
        manifest=manifest,
        candidates=[_candidate_summary(candidate) for candidate in result.candidates],
        correlation_candidate=chosen,
        device=device,
        stem_seconds=_stem_seconds(held_out, result),
        wall_time_s=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class HeldOutFold:
    """One held-out part of the data and the candidates trained without it."""

    validation: FrameDataset
    result: FinetuneResult
    train_summary: dict[str, object]


def _stem_seconds(held_out: list[HeldOutFold], final: FinetuneResult) -> float:
    """Time spent computing stem features: the final training's, plus every fold's."""
    if len(held_out) == 1:
        return final.stem_seconds
    return final.stem_seconds + sum(fold.result.stem_seconds for fold in held_out)


def pooled_quality(qualities: list[HeldOutQuality]) -> HeldOutQuality:
    """One candidate's per-frame figures over several held-out parts: the counts add up."""
    positives = sum(quality.positive_frames for quality in qualities)
    negatives = sum(quality.negative_frames for quality in qualities)
    positive_fires = sum(quality.positive_fires for quality in qualities)
    negative_fires = sum(quality.negative_fires for quality in qualities)
    correct = sum(
        quality.accuracy * (quality.positive_frames + quality.negative_frames)
        for quality in qualities
    )
    return HeldOutQuality(
        recall=positive_fires / positives,
        false_positive_rate=negative_fires / negatives,
        accuracy=correct / (positives + negatives),
        positive_frames=positives,
        negative_frames=negatives,
        positive_fires=positive_fires,
        negative_fires=negative_fires,
    )


def _warn_about_weak_candidates(manifest: Manifest) -> None:
    """Say which candidates cannot detect events: the package is written, but a node refuses
    it unless forced, and a user must not learn that only from an F1 of 0 in replay."""
    weak = weak_candidates(manifest)
    for candidate in weak:
        logger.warning("weak candidate %s: %s", candidate.cut_point, candidate.reason)
    if weak:
        logger.warning(
            "%d of %d candidate(s) are no better than the majority class; %s",
            len(weak),
            len(manifest.candidates),
            WEAK_CANDIDATE_ADVICE,
        )


def default_freeze_points(config: BaseConfig, base: keras.Model, count: int) -> list[str]:
    """`count` cut points spread evenly over the base's curated block boundaries, all FROZEN.

    The spread runs from the first block boundary (only the first block frozen: close to full
    fine-tuning, little to share) to the last layer (only the head specialised: everything
    shared), so the package still spans the paper's range from "almost no sharing" to
    "max sharing". The fully unfrozen candidate ("input") is left out of the default because
    it shares nothing at run time, runs only a little slower than the first-block candidate,
    and is the one candidate whose training cannot use the cached stem features (it costs as
    much as in naive training and would bound the whole package's training time). It is
    still available by name: `--freeze-points input,conv_pw_13_relu`.
    """

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidParameterError("freeze_points", count, "an integer >= 1")
    frozen = [cut for cut in default_cut_points(config, base) if cut != INPUT_CUT]
    if count >= len(frozen):
        return frozen
    if count == 1:
        return frozen[-1:]
    picks = np.linspace(0, len(frozen) - 1, count).round().astype(int)
    return [frozen[index] for index in sorted(set(picks.tolist()))]


# ---------------------------------------------------------------------------------------------
# Steps


def _describe_device(tf: Any) -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"GPU ({', '.join(gpu.name for gpu in gpus)})"
    return f"CPU ({platform.processor() or platform.machine()})"


@contextmanager
def _precision_policy(mixed: bool) -> Iterator[None]:
    """float16 compute with float32 weights for the job, then the previous policy again."""
    import keras  # TensorFlow loads only when a model is built or run

    if not mixed:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


class _RetracingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextmanager
def _quiet_retracing_warnings() -> Iterator[None]:
    """Hide TensorFlow's retracing warning during a job.

    Every candidate is a different model with its own compiled steps, so TensorFlow sees
    "retracing" that is expected and harmless; the warning would only alarm users.
    """
    tf_logger = logging.getLogger("tensorflow")
    retracing_filter = _RetracingFilter()
    tf_logger.addFilter(retracing_filter)
    try:
        yield
    finally:
        tf_logger.removeFilter(retracing_filter)


def _load_base(request: TrainRequest) -> tuple[BaseConfig, keras.Model, BaseModelInfo]:
    """Build (or load the registered) base; returns its config, model and manifest entry."""
    import keras  # TensorFlow loads only when a model is built or run

    wanted = request.base
    if looks_like_fingerprint(wanted.weights) and not Path(wanted.weights).exists():
        bases_dir = request.bases_dir
        if bases_dir is None:
            raise InvalidParameterError(
                "bases_dir", None, "the folder of registered bases, for a fingerprint in weights"
            )
        fingerprint = resolve_fingerprint(wanted.weights, bases_dir)
        config, model = load_registered_base(fingerprint, bases_dir)
        for field in sorted(wanted.model_fields_set - {"weights"}):
            asked, registered = getattr(wanted, field), getattr(config, field)
            if float(asked) != float(registered) if field == "alpha" else asked != registered:
                raise InvalidParameterError(
                    f"base.{field}",
                    asked,
                    f"{registered!r}, the value of registered base {fingerprint[:12]}",
                )
        record = registered_base_record(fingerprint, bases_dir)
        return config, model, record.info
    config = BaseConfig(
        name=wanted.name, input_size=wanted.input_size, alpha=wanted.alpha, weights=wanted.weights
    )
    if wanted.weights == "none":
        keras.utils.set_random_seed(request.seed)  # the same request builds the same base
        logger.warning(
            "base %s has random weights and untrained BatchNorm statistics: its features "
            "carry little information and the candidates will be weak. Pretrain a base first "
            "(`mainstream base pretrain`) or use ImageNet weights.",
            wanted.name,
        )
    model = build_base(config)
    return config, model, base_info(config, model)


def _labels_path(request: TrainRequest) -> Path | None:
    """The video's label CSV (None for an image folder); errors for missing files."""
    data = request.data
    if data.is_dir():
        if request.labels is not None:
            raise InvalidParameterError(
                "labels", str(request.labels), "no label CSV with an image folder"
            )
        return None
    if not data.is_file():
        raise InvalidParameterError("data", str(data), "an existing image folder or video file")
    labels = request.labels or data.with_suffix(".csv")
    if not labels.is_file():
        raise InvalidParameterError(
            "labels", str(labels), "the label CSV of the video (start_frame,end_frame,label)"
        )
    return labels


def _check_positive_class(request: TrainRequest, labels: Path | None) -> None:
    """A class the data does not have is refused before TensorFlow loads (seconds)."""
    if labels is None:
        found = sorted(folder.name for folder in request.data.iterdir() if folder.is_dir())
        where = "the class folders"
    else:
        found = sorted({interval.label for interval in read_event_csv(labels)})
        where = "the labels in the CSV"
        if not found:
            return  # a video without events: the loader says so
    if request.positive_class not in found:
        raise InvalidParameterError(
            "positive_class", request.positive_class, f"one of {where} {found}"
        )


def _load_data(request: TrainRequest, config: BaseConfig, labels: Path | None) -> FrameDataset:
    """An image folder, or a labelled video (binary: background / positive class)."""

    if labels is None:
        return load_image_folder(request.data, config.input_size, show_progress=request.progress)
    return load_labelled_video(
        request.data,
        labels,
        config.input_size,
        positive_label=request.positive_class,
        frame_step=request.frame_step,
        fps=request.camera_fps,
        show_progress=request.progress,
    )


def _explicit_event_stats(request: TrainRequest) -> EventStats | None:
    """Event statistics given on the command line; all four are required for image folders.

    None for a video: its statistics are measured (explicit values override them later).
    """
    given = {
        "event_length_s": request.event_length_s,
        "event_frequency": request.event_frequency,
        "correlation": request.correlation,
        "camera_fps": request.camera_fps,
    }
    if not request.data.is_dir():
        return None
    missing = [name for name, value in given.items() if value is None]
    if missing:
        flags = ", ".join("--" + name.replace("_s", "").replace("_", "-") for name in missing)
        raise InvalidParameterError(
            missing[0],
            None,
            f"a value: an image folder has no timing, so give the event statistics ({flags})",
        )
    return EventStats(
        event_length_s=float(given["event_length_s"]),  # type: ignore[arg-type]
        event_frequency=float(given["event_frequency"]),  # type: ignore[arg-type]
        correlation=float(given["correlation"]),  # type: ignore[arg-type]
        camera_fps=float(given["camera_fps"]),  # type: ignore[arg-type]
        how_measured="given explicitly (image folder: no timing to measure)",
    )


def choose_correlation_candidate(candidates: list[TrainedCandidate]) -> TrainedCandidate:
    """The candidate whose fires measure the correlation: the most accurate (deepest on ties)."""
    return max(enumerate(candidates), key=lambda item: (item[1].quality.accuracy, item[0]))[1]


def _measured_event_stats(
    request: TrainRequest,
    video: LabelledVideo,
    held_out: list[HeldOutFold],
    result: FinetuneResult,
) -> tuple[EventStats, str | None]:
    """Event length and frequency from the labels; correlation from held-out fires.

    Values given explicitly in the request replace the measured ones (and say so).
    """

    if not video.intervals:
        raise InvalidParameterError(
            "labels", str(request.labels or request.data), f"a {request.positive_class!r} event"
        )
    assert video.fps is not None
    statistics = event_statistics(video.intervals, video.total_frames, video.fps)
    notes = [
        f"event length and frequency from {statistics.event_count} labelled events over "
        f"{video.total_frames} frames at {video.fps:g} fps"
    ]
    chosen: str | None = None
    evidence = None
    if request.correlation is not None:
        correlation = request.correlation
        notes.append("correlation given explicitly")
    else:
        candidate = choose_correlation_candidate(result.candidates)
        chosen = candidate.cut_point
        index = result.candidates.index(candidate)
        estimate = _held_out_correlation(
            video,
            [(fold.validation, fold.result.candidates[index]) for fold in held_out],
            request.frame_step,
            request.positive_class,
        )
        correlation, evidence = estimate.correlation, estimate.evidence()
        notes.append(
            f"camera-rate correlation from the held-out fires of candidate {chosen!r}: "
            f"{estimate.method}"
        )
    stats = statistics.to_manifest(correlation, "; ".join(notes), evidence)
    overrides = {
        name: value
        for name, value in (
            ("event_length_s", request.event_length_s),
            ("event_frequency", request.event_frequency),
        )
        if value is not None
    }
    if overrides:
        stats = stats.model_copy(update=overrides)
        stats.how_measured += "; given explicitly: " + ", ".join(sorted(overrides))
    return EventStats.model_validate(stats.model_dump()), chosen


def _held_out_correlation(
    video: LabelledVideo,
    held_out: list[tuple[FrameDataset, TrainedCandidate]],
    frame_step: int,
    positive_class: str,
) -> CorrelationEstimate:
    """The camera-rate c from one candidate's fires on the held-out frames of every fold.

    With `frame_step` > 1 only every step-th camera frame was decoded: the transitions are
    then those of frames `step` apart (correlation c**step), turned into the camera-rate c.
    """
    assert video.fps is not None
    fires, evaluated, intervals = _held_out_fires(video, held_out, frame_step, positive_class)
    if not intervals:
        frames = sum(len(validation) for validation, _ in held_out)
        raise InvalidParameterError(
            "validation_fraction",
            f"{frames} held-out frames without a whole event",
            "a split that holds out at least one whole event (more data, a larger fraction), "
            "or give --correlation",
        )
    return estimate_correlation(
        fires, intervals, video.fps / frame_step, evaluated=evaluated, frame_gap=frame_step
    )


def _held_out_fires(
    video: LabelledVideo,
    held_out: list[tuple[FrameDataset, TrainedCandidate]],
    frame_step: int,
    positive_class: str,
) -> tuple[np.ndarray, np.ndarray, list[EventInterval]]:
    """One candidate's fires on the held-out frames of every fold, in time order: (fires,
    evaluated, event intervals), on a grid of every `frame_step`-th camera frame. Held-out
    parts never share a frame, so their fires fill one grid."""
    positive_index = list(video.class_names).index(positive_class)
    grid_length = math.ceil(video.total_frames / frame_step)
    fires = np.zeros(grid_length, dtype=bool)
    evaluated = np.zeros(grid_length, dtype=bool)
    intervals = []
    for validation, candidate in held_out:
        assert isinstance(validation, LabelledVideo)
        positions = validation.order // frame_step
        fires[positions] = candidate.held_out_predictions == positive_index
        evaluated[positions] = True
        for interval in validation.intervals:
            first = math.ceil(interval.start_frame / frame_step)
            last = interval.end_frame // frame_step
            if last >= first:
                intervals.append(EventInterval(first, last, interval.label))
    return fires, evaluated, intervals


def _frame_correlations(
    dataset: FrameDataset,
    held_out: list[HeldOutFold],
    request: TrainRequest,
    event_stats: EventStats,
) -> list[tuple[float | None, float | None]]:
    """Per candidate, the lag-1 correlation of its held-out fires on consecutive positive and
    on consecutive negative frames (how much its counts are worth, :mod:`scheduler.estimates`).

    Where a candidate's fires do not determine one (it never fired on the negative frames,
    say) the app's camera-rate correlation stands in: a detector's false fires come in runs as
    its true ones do. Image folders have no time order: (None, None), frames independent.
    """
    if not isinstance(dataset, LabelledVideo):
        return [(None, None)] * len(held_out[0].result.candidates)
    fallback = event_stats.correlation**request.frame_step
    correlations: list[tuple[float | None, float | None]] = []
    for index in range(len(held_out[0].result.candidates)):
        fires, evaluated, intervals = _held_out_fires(
            dataset,
            [(fold.validation, fold.result.candidates[index]) for fold in held_out],
            request.frame_step,
            request.positive_class,
        )
        positive, negative = class_frame_correlations(fires, intervals, evaluated)
        correlations.append(
            (
                fallback if positive is None else positive,
                fallback if negative is None else negative,
            )
        )
    return correlations


def _held_out_events(held_out: list[HeldOutFold]) -> int | None:
    """Whole positive events among the held-out frames (None for an image folder)."""
    videos = [fold.validation for fold in held_out if isinstance(fold.validation, LabelledVideo)]
    if len(videos) != len(held_out):
        return None
    return sum(len(video.intervals) for video in videos)


def _split_description(request: TrainRequest, usable_folds: int) -> str:
    if request.folds == 1:
        return f"by time, validation fraction {request.validation_fraction:g}"
    return (
        f"{request.folds}-fold cross-validation over time blocks (events kept whole; "
        f"{usable_folds} folds hold every class), final candidates trained on every frame"
    )


def _save_candidates(
    result: FinetuneResult,
    folder: Path,
    base: keras.Model,
    held_out_events: int | None,
    split: str,
    frame_correlations: list[tuple[float | None, float | None]],
) -> tuple[dict[str, Path], list[CandidateInfo]]:
    files: dict[str, Path] = {}
    infos = []
    for candidate, (positive_correlation, negative_correlation) in zip(
        result.candidates, frame_correlations, strict=True
    ):
        archive_name = candidate_archive_name(candidate.cut_point)
        local = save_candidate(candidate.model, folder / archive_name)
        files[archive_name] = local
        infos.append(
            CandidateInfo(
                cut_point=candidate.cut_point,
                frozen_layers=candidate.frozen_layers,
                recall=candidate.quality.recall,
                false_positive_rate=candidate.quality.false_positive_rate,
                accuracy=candidate.quality.accuracy,
                file=archive_name,
                sha256=sha256_file(local),
                input_shape=cut_output_shape(base, candidate.cut_point),
                held_out_frames=candidate.quality.positive_frames
                + candidate.quality.negative_frames,
                training=TrainingRecord.model_validate(candidate.counters.as_dict()),
                evidence=FrameEvidence(
                    positive_frames=candidate.quality.positive_frames,
                    positive_fires=candidate.quality.positive_fires,
                    negative_frames=candidate.quality.negative_frames,
                    negative_fires=candidate.quality.negative_fires,
                    events=held_out_events,
                    split=split,
                    positive_frame_correlation=positive_correlation,
                    negative_frame_correlation=negative_correlation,
                ),
            )
        )
    return files, infos


def _bundle_base(request: TrainRequest, config: BaseConfig) -> bool:
    if request.bundle_base_weights is not None:
        return request.bundle_base_weights
    return request.base.weights != "imagenet"


def _app_name(request: TrainRequest) -> str:
    if request.app_name:
        return request.app_name
    stem = request.output.name.split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("_.-")
    return name or "app"


def _training_info(
    request: TrainRequest,
    dataset: FrameDataset,
    held_out: list[HeldOutFold],
    result: FinetuneResult,
    wall_time_s: float,
    device: str,
) -> TrainingInfo:
    if len(held_out) == 1:
        train_summary, held_out_summary = (
            held_out[0].train_summary,
            held_out[0].validation.summary(),
        )
    else:
        train_summary = dataset.summary()
        held_out_summary = _pooled_summary([fold.validation for fold in held_out])
    stem_seconds = _stem_seconds(held_out, result)
    return TrainingInfo(
        dataset={
            "source": request.data.name,
            "kind": "image folder" if request.data.is_dir() else "labelled video",
            "frame_step": request.frame_step,
            "all": dataset.summary(),
            "train": train_summary,
            "held_out": held_out_summary,
            "split": _split_description(request, len(held_out)),
            "folds": len(held_out),
        },
        epochs=request.epochs,
        strategy=request.strategy,
        wall_time_s=round(wall_time_s, 3),
        library_versions=library_versions(),
        device=device,
        batch_size=request.batch_size,
        learning_rate=request.learning_rate,
        seed=request.seed,
        cache=request.cache,
        augment_copies=request.augment_copies,
        mixed_precision=request.mixed_precision,
        stem_seconds=round(stem_seconds, 3),
        selective_backprop=(
            {"beta": request.selective_backprop_beta, "history": request.selective_backprop_history}
            if request.strategy in ("selective-backprop", "stale-selective-backprop")
            else {"smoothing": request.selective_backprop_smoothing}
            if request.strategy == "selective-backprop-thesis"
            else None
        ),
        interpolation=request.interpolation if request.strategy == "intertrain" else None,
        warm_start=request.warm_start,
        patience=request.patience,
    )


def _pooled_summary(parts: list[FrameDataset]) -> dict[str, object]:
    """The held-out frames of every fold, described like one dataset's summary."""
    classes: dict[str, int] = {}
    for part in parts:
        for name, count in part.class_counts().items():
            classes[name] = classes.get(name, 0) + count
    return {
        "frames": sum(len(part) for part in parts),
        "image_shape": list(parts[0].images.shape[1:]),
        "classes": classes,
        "clips": len(np.unique(np.concatenate([part.groups for part in parts]))),
        "fps": parts[0].fps,
    }


def library_versions() -> dict[str, str]:
    import keras  # TensorFlow loads only when a model is built or run
    import tensorflow as tf  # TensorFlow loads only when a model is built or run

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "mainstream": __version__,
    }


def _candidate_summary(candidate: TrainedCandidate) -> CandidateSummary:
    return CandidateSummary(
        cut_point=candidate.cut_point,
        frozen_layers=candidate.frozen_layers,
        recall=candidate.quality.recall,
        false_positive_rate=candidate.quality.false_positive_rate,
        accuracy=candidate.quality.accuracy,
        optimizer_steps=candidate.counters.optimizer_steps,
        examples_backpropagated=candidate.counters.examples_backpropagated,
        wall_time_s=candidate.wall_time_s,
    )
