"""The M-Package manifest (DESIGN §5): what a package says about its app and its candidates.

These models are the contract between the trainer (writer), the registry and the runtime
(readers). Reading and writing the archive itself lives in :mod:`mainstream.core.package`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PACKAGE_FORMAT: Literal["mainstream.mpackage"] = "mainstream.mpackage"
PACKAGE_FORMAT_VERSION: Literal[1] = 1

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


class EventStats(BaseModel):
    """The app's event statistics, as the scheduler's event model needs them (DESIGN §2)."""

    model_config = ConfigDict(extra="allow")

    # Bounds keep the event model's work (samples per event window) reasonable.
    event_length_s: float = Field(gt=0, le=MAX_EVENT_LENGTH_S)
    min_event_length_s: float | None = Field(default=None, ge=0, le=MAX_EVENT_LENGTH_S)
    event_frequency: float = Field(gt=0, lt=1)
    correlation: float = Field(ge=0, le=1)
    camera_fps: float = Field(gt=0, le=1000)
    how_measured: str = ""


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
    format_version: Literal[1] = PACKAGE_FORMAT_VERSION
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


def _held_out_majority_share(training: TrainingInfo) -> float | None:
    held_out = training.dataset.get("held_out")
    classes = held_out.get("classes") if isinstance(held_out, dict) else None
    if not isinstance(classes, dict):
        return None
    counts = [count for count in classes.values() if isinstance(count, int) and count >= 0]
    if len(counts) != len(classes) or sum(counts) == 0:
        return None
    return max(counts) / sum(counts)


WEAK_CANDIDATE_ADVICE = (
    "train from a pretrained base (`mainstream base pretrain`, then `--weights FINGERPRINT`), "
    "with more epochs or more labelled events"
)
