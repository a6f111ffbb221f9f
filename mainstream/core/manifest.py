"""The M-Package manifest (DESIGN §5): what a package says about its app and its candidates.

These models are the contract between the trainer (writer), the registry and the runtime
(readers). Reading and writing the archive itself lives in :mod:`mainstream.core.package`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PACKAGE_FORMAT: Literal["mainstream.mpackage"] = "mainstream.mpackage"
PACKAGE_FORMAT_VERSION: Literal[2] = 2
"""The version the trainer writes. Version 2 adds the held-out counts behind every
per-frame figure (`CandidateInfo.evidence`) and the correlation's evidence."""
READABLE_FORMAT_VERSIONS: tuple[int, ...] = (1, 2)

MANIFEST_NAME = "manifest.json"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
# Archive names allowed by the layout (DESIGN §5): plain ASCII names, no sub-folders, so a
# name can never climb out of the extraction directory or collide with another on disk.
CANDIDATE_FILE_PATTERN = r"^candidates/[A-Za-z0-9][A-Za-z0-9_.-]{0,199}\.keras$"
BASE_WEIGHTS_FILE_PATTERN = r"^base/[A-Za-z0-9][A-Za-z0-9_.-]{0,199}\.h5$"
# A cut point is "input" or the name of a layer of the base: the same characters as the file
# name it gives its candidate. Whether the base really has that cut point is checked when the
# package's models are verified (mainstream.core.package.verify_package).
CUT_POINT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"


class AppInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    classes: list[str] = Field(min_length=2)
    positive_class: str

    @model_validator(mode="after")
    def _positive_is_a_class(self) -> AppInfo:
        if self.positive_class not in self.classes:
            raise ValueError(
                f"positive_class {self.positive_class!r} is not in classes {self.classes}"
            )
        return self


class BaseModelInfo(BaseModel):
    """Identity of the shared base: apps share a stem only when `weights_fingerprint` matches."""

    model_config = ConfigDict(extra="allow")

    name: str
    input_shape: tuple[int, int, int]
    preprocessing: str
    weights_fingerprint: str = Field(pattern=SHA256_PATTERN)
    alpha: float | None = None
    weights_source: str = "none"


MAX_EVENT_LENGTH_S = 3600.0
"""The longest mean event an app may declare (one hour)."""


class CorrelationEvidence(BaseModel):
    """How the camera-rate correlation was estimated (format version 2)."""

    model_config = ConfigDict(extra="allow")

    interval: tuple[float, float] = Field(description="credible interval of c, at `level`")
    level: float = Field(gt=0, lt=1)
    source: str = Field(
        description="'event frames', 'negative frames' (events did not determine c) or "
        "'fallback' (nothing did: c is a stated default, the interval [0, 1])"
    )
    identifiable: bool
    frame_gap: int = Field(default=1, ge=1, description="camera frames between counted frames")
    fire_fire: int = Field(ge=0)
    fire_miss: int = Field(ge=0)
    miss_fire: int = Field(ge=0)
    miss_miss: int = Field(ge=0)
    events: int = Field(ge=0, description="held-out events whose frames were used")

    @model_validator(mode="after")
    def _ordered_interval(self) -> CorrelationEvidence:
        low, high = self.interval
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"correlation interval {list(self.interval)} is not within [0, 1]")
        return self


class EventStats(BaseModel):
    """The app's event statistics, as the scheduler's event model needs them (DESIGN §2).

    `correlation` is the lag-1 correlation of the detector's fires on consecutive camera
    frames; the event model raises it to the stride for slower analysis rates.
    """

    model_config = ConfigDict(extra="allow")

    # Bounds keep the event model's work (samples per event window) reasonable.
    event_length_s: float = Field(gt=0, le=MAX_EVENT_LENGTH_S)
    min_event_length_s: float | None = Field(default=None, ge=0, le=MAX_EVENT_LENGTH_S)
    event_frequency: float = Field(gt=0, lt=1)
    correlation: float = Field(ge=0, le=1)
    camera_fps: float = Field(gt=0, le=1000)
    how_measured: str = ""
    correlation_evidence: CorrelationEvidence | None = Field(
        default=None, description="format version 2; None: given explicitly or unknown"
    )


MAX_FRAME_CORRELATION = 0.95
"""Frame correlations are capped here when they weigh evidence (39 frames count as one): at
rho -> 1 a run never ends and the frames say nothing about the rate."""


class FrameEvidence(BaseModel):
    """The held-out counts behind a candidate's per-frame recall and false-positive rate.

    Recall is `positive_fires / positive_frames`, the false-positive rate
    `negative_fires / negative_frames`; the counts, not the ratios, say how sure they are.
    """

    model_config = ConfigDict(extra="allow")

    positive_frames: int = Field(ge=0, description="held-out frames of the positive class")
    positive_fires: int = Field(ge=0, description="of them, the frames the candidate fired on")
    negative_frames: int = Field(ge=0, description="held-out frames of every other class")
    negative_fires: int = Field(ge=0, description="of them, the frames it fired on")
    events: int | None = Field(default=None, ge=0, description="held-out events; None: unknown")
    split: str = Field(default="", description="how the held-out frames were chosen")
    positive_frame_correlation: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="lag-1 correlation of the fires on consecutive positive frames (runs of "
        "fires count as less evidence than independent frames); None: not measured, frames "
        "taken as independent",
    )
    negative_frame_correlation: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="the same on consecutive negative frames (false fires come in runs too)",
    )
    derived: bool = Field(
        default=False,
        description="True: reconstructed from a version-1 package's ratios and class counts",
    )

    @model_validator(mode="after")
    def _fires_within_frames(self) -> FrameEvidence:
        if self.positive_fires > self.positive_frames:
            raise ValueError(
                f"positive_fires {self.positive_fires} > positive_frames {self.positive_frames}"
            )
        if self.negative_fires > self.negative_frames:
            raise ValueError(
                f"negative_fires {self.negative_fires} > negative_frames {self.negative_frames}"
            )
        return self


class CalibrationClip(BaseModel):
    """Counts measured by `mainstream calibrate` on labelled footage of the deployment camera.

    The models are not changed by calibration; only the figures the scheduler plans on are.
    """

    model_config = ConfigDict(extra="allow")

    clip: str = Field(min_length=1, max_length=255, description="the footage's file name")
    video_sha256: str = Field(pattern=SHA256_PATTERN)
    measured_at: datetime
    threshold: float = Field(gt=0, lt=1, description="score from which a frame counts as a fire")
    counts: FrameEvidence


class EpochTrainingRecord(BaseModel):
    """One epoch of a candidate's training: what the strategy chose and what it cost."""

    model_config = ConfigDict(extra="allow")

    epoch: int = Field(ge=0)
    forward_passes: int = Field(default=0, ge=0, description="Examples through a forward pass")
    backward_passes: int = Field(default=0, ge=0, description="Examples through a backward pass")
    selection_rate: float = Field(default=1.0, ge=0, le=1)
    augmented: int = Field(default=0, ge=0, description="Augmented samples used")
    interpolated: int = Field(default=0, ge=0, description="Samples merged into composites")
    held_out_accuracy: float | None = Field(default=None, ge=0, le=1)


class TrainingRecord(BaseModel):
    """How one candidate was trained: the strategy and its counters (whole run and per epoch).

    The first seven fields are the counters packages have always carried; the rest are optional.
    """

    model_config = ConfigDict(extra="allow")

    strategy: str = "standard"
    examples_scored: int = Field(default=0, ge=0)
    examples_selected: int = Field(default=0, ge=0)
    optimizer_steps: int = Field(default=0, ge=0)
    examples_backpropagated: int = Field(default=0, ge=0)
    examples_forwarded: int = Field(default=0, ge=0)
    train_seconds: float = Field(default=0.0, ge=0)
    epochs: list[EpochTrainingRecord] = Field(default_factory=list)
    warm_started_from: str | None = Field(
        default=None, description="Cut point whose trained layers initialised this candidate"
    )
    stopped_after_epoch: int | None = Field(default=None, ge=0)
    best_epoch: int | None = Field(default=None, ge=0)


class CandidateInfo(BaseModel):
    """One specialised model: the suffix after `cut_point`, and its held-out per-frame quality."""

    model_config = ConfigDict(extra="allow")

    cut_point: str = Field(pattern=CUT_POINT_PATTERN)
    frozen_layers: int = Field(ge=0)
    recall: float = Field(ge=0, le=1)
    false_positive_rate: float = Field(ge=0, le=1)
    accuracy: float = Field(ge=0, le=1)
    file: str = Field(pattern=CANDIDATE_FILE_PATTERN, description="candidates/<cut_point>.keras")
    sha256: str = Field(pattern=SHA256_PATTERN)
    input_shape: tuple[int | None, ...] | None = Field(
        default=None, description="Shape of the tensor at the cut (no batch axis), when known"
    )
    evidence: FrameEvidence | None = Field(
        default=None, description="format version 2: the held-out counts behind the figures"
    )
    calibrations: list[CalibrationClip] = Field(
        default_factory=list,
        max_length=1000,
        description="counts measured on the deployment camera; they replace the held-out "
        "counts of each rate they measure (recall: clips with events; FP rate: any clip)",
    )
    training: TrainingRecord | None = None


class TrainingInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    dataset: dict[str, object] = Field(default_factory=dict)
    epochs: int = Field(default=0, ge=0)
    strategy: str = "standard"
    wall_time_s: float = Field(default=0.0, ge=0)
    library_versions: dict[str, str] = Field(default_factory=dict)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: Literal["mainstream.mpackage"] = PACKAGE_FORMAT
    format_version: Literal[1, 2] = PACKAGE_FORMAT_VERSION
    app: AppInfo
    base_model: BaseModelInfo
    event_stats: EventStats
    candidates: list[CandidateInfo] = Field(min_length=1)
    training: TrainingInfo = Field(default_factory=TrainingInfo)
    base_weights: dict[str, str] | None = Field(
        default=None, description="{'file': 'base/weights.h5', 'sha256': ...} when bundled"
    )
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    checksums: dict[str, str] = Field(
        default_factory=dict,
        description="sha256 of every archive member but manifest.json; filled by the writer",
    )

    @model_validator(mode="after")
    def _unique_cuts(self) -> Manifest:
        cuts = [candidate.cut_point for candidate in self.candidates]
        if len(set(cuts)) != len(cuts):
            raise ValueError(f"duplicate candidate cut points: {cuts}")
        files = [candidate.file.casefold() for candidate in self.candidates]
        if len(set(files)) != len(files):
            raise ValueError(f"two candidates share one file: {files}")
        return self

    @model_validator(mode="after")
    def _well_formed_base_weights(self) -> Manifest:
        if self.base_weights is None:
            return self
        if set(self.base_weights) != {"file", "sha256"}:
            raise ValueError(
                f"base_weights must have exactly the keys 'file' and 'sha256', "
                f"got {sorted(self.base_weights)}"
            )
        if not re.fullmatch(BASE_WEIGHTS_FILE_PATTERN, self.base_weights["file"]):
            raise ValueError(
                f"base_weights.file {self.base_weights['file']!r} is not base/<name>.h5"
            )
        if not re.fullmatch(SHA256_PATTERN, self.base_weights["sha256"]):
            raise ValueError("base_weights.sha256 is not 64 lowercase hex digits")
        return self

    @model_validator(mode="after")
    def _well_formed_checksums(self) -> Manifest:
        for name, digest in self.checksums.items():
            if not re.fullmatch(SHA256_PATTERN, digest):
                raise ValueError(f"checksums[{name!r}] is not 64 lowercase hex digits")
        return self


@dataclass(frozen=True)
class WeakCandidate:
    """A candidate whose held-out figures show it cannot detect the app's events."""

    cut_point: str
    reason: str


def weak_candidates(manifest: Manifest) -> list[WeakCandidate]:
    """The candidates no better than always answering the majority class.

    A base with random features trains heads that answer "negative" on every frame: their
    accuracy equals the negative share and looks fine, but recall is 0 and every event is
    missed. Flagged: recall 0; recall no higher than the false-positive rate (no better than
    a constant or random answer); or accuracy no higher than the majority class's share of
    the held-out frames, when the package records the held-out class counts.
    """
    majority = _held_out_majority_share(manifest.training)
    weak = []
    for candidate in manifest.candidates:
        if candidate.recall <= 0.0:
            reason = "recall 0: it never fires on an event frame"
        elif candidate.recall <= candidate.false_positive_rate:
            reason = (
                f"recall {candidate.recall:.3f} <= false-positive rate "
                f"{candidate.false_positive_rate:.3f}: no better than chance"
            )
        elif majority is not None and candidate.accuracy <= majority:
            reason = (
                f"accuracy {candidate.accuracy:.3f} <= {majority:.3f}, the majority class's "
                "share of the held-out frames"
            )
        else:
            continue
        weak.append(WeakCandidate(candidate.cut_point, reason))
    return weak


def frame_evidence(manifest: Manifest, candidate: CandidateInfo) -> FrameEvidence | None:
    """The counts behind a candidate's figures: stored (version 2) or derived, or None.

    A version-1 package stores only ratios, but the trainer recorded the held-out class
    counts (`training.dataset.held_out.classes`), so the frame counts are known and the fires
    are the ratios times them (marked `derived`; the number of held-out events is unknown).
    None when the package says neither.
    """
    trained = _trained_evidence(manifest, candidate)
    if not candidate.calibrations:
        return trained
    return calibrated_evidence(candidate.calibrations, trained)


def calibrated_evidence(
    clips: list[CalibrationClip], trained: FrameEvidence | None
) -> FrameEvidence:
    """The counts of the calibration clips summed; a rate no clip measured (recall, when no
    clip had events) keeps the trainer's held-out counts."""
    positive_frames = sum(clip.counts.positive_frames for clip in clips)
    negative_frames = sum(clip.counts.negative_frames for clip in clips)
    names = ", ".join(clip.clip for clip in clips)
    sources = [f"calibration on the deployment camera ({len(clips)} clip(s): {names})"]
    positives: tuple[int, int] = (
        positive_frames,
        sum(clip.counts.positive_fires for clip in clips),
    )
    positive_correlation = pooled_frame_correlation(
        [(clip.counts.positive_frames, clip.counts.positive_frame_correlation) for clip in clips]
    )
    events = [clip.counts.events for clip in clips]
    event_count = sum(e for e in events if e is not None) if None not in events else None
    if positive_frames == 0 and trained is not None:
        positives = (trained.positive_frames, trained.positive_fires)
        positive_correlation = trained.positive_frame_correlation
        event_count = trained.events
        sources.append(f"recall from the trainer's held-out frames ({trained.split})")
    negatives = (negative_frames, sum(clip.counts.negative_fires for clip in clips))
    negative_correlation = pooled_frame_correlation(
        [(clip.counts.negative_frames, clip.counts.negative_frame_correlation) for clip in clips]
    )
    if negative_frames == 0 and trained is not None:
        negatives = (trained.negative_frames, trained.negative_fires)
        negative_correlation = trained.negative_frame_correlation
        sources.append(f"FP rate from the trainer's held-out frames ({trained.split})")
    return FrameEvidence(
        positive_frames=positives[0],
        positive_fires=positives[1],
        negative_frames=negatives[0],
        negative_fires=negatives[1],
        events=event_count,
        split="; ".join(sources),
        positive_frame_correlation=positive_correlation,
        negative_frame_correlation=negative_correlation,
        derived=False,
    )


def pooled_frame_correlation(parts: list[tuple[int, float | None]]) -> float | None:
    """The frame correlation of several runs of frames counted together: the one whose design
    effect (1 + rho) / (1 - rho) turns the total frames into the sum of each part's effective
    frames. A part without a measured correlation counts as independent frames; None when no
    part measured one or there are no frames."""
    frames = sum(count for count, _ in parts)
    if frames == 0 or all(rho is None for _, rho in parts):
        return None
    effective = sum(count / design_effect(rho or 0.0) for count, rho in parts)
    effect = frames / effective
    return (effect - 1.0) / (effect + 1.0)


def design_effect(frame_correlation: float) -> float:
    """How many correlated frames count as one independent frame: (1 + rho) / (1 - rho).

    rho is the lag-1 correlation of a detector's fires on consecutive counted frames of one
    class (the variance inflation of the mean of a two-state Markov chain); negative rho
    (alternating fires) counts as 0, and rho is capped at `MAX_FRAME_CORRELATION`.
    """
    if not math.isfinite(frame_correlation):
        raise ValueError(f"frame correlation {frame_correlation} is not a finite number")
    rho = min(MAX_FRAME_CORRELATION, max(0.0, frame_correlation))
    return (1.0 + rho) / (1.0 - rho)


def _trained_evidence(manifest: Manifest, candidate: CandidateInfo) -> FrameEvidence | None:
    if candidate.evidence is not None:
        return candidate.evidence
    classes = _held_out_class_counts(manifest.training)
    if classes is None or manifest.app.positive_class not in classes:
        return None
    positives = classes[manifest.app.positive_class]
    negatives = sum(classes.values()) - positives
    split = manifest.training.dataset.get("split")
    try:
        return FrameEvidence(
            positive_frames=positives,
            positive_fires=round(candidate.recall * positives),
            negative_frames=negatives,
            negative_fires=round(candidate.false_positive_rate * negatives),
            split=split if isinstance(split, str) else "",
            derived=True,
        )
    except ValueError:
        return None


def _held_out_class_counts(training: TrainingInfo) -> dict[str, int] | None:
    held_out = training.dataset.get("held_out")
    classes = held_out.get("classes") if isinstance(held_out, dict) else None
    if not isinstance(classes, dict):
        return None
    counts = {
        str(name): count
        for name, count in classes.items()
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0
    }
    return counts if len(counts) == len(classes) else None


def _held_out_majority_share(training: TrainingInfo) -> float | None:
    counts = _held_out_class_counts(training)
    if counts is None or sum(counts.values()) == 0:
        return None
    return max(counts.values()) / sum(counts.values())


WEAK_CANDIDATE_ADVICE = (
    "train from a pretrained base (`mainstream base pretrain`, then `--weights FINGERPRINT`), "
    "with more epochs or more labelled events"
)
