"""What the node's services take and give: request models, answers, limits and their errors.

The API and the CLI call the same services, so these typed inputs and outputs belong to the
service layer; the API adds only what is HTTP-specific.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_runtime.camera import CameraConfig
from edge_runtime.detector import EventRecord
from edge_runtime.event_store import EventReview
from edge_runtime.sinks.payload import clip_path
from mainstream.core.errors import (
    MainstreamError,
)
from mainstream.node.app_spec import (
    MAX_FPS_LIMIT,
    MAX_WEIGHT,
    AppCreate,
    EventOverrides,
    PackageVersion,
    positive_vote,
)
from mainstream.node.app_spec import MAX_ROW_NUMBER as MAX_ROW_NUMBER  # re-exported
from mainstream.node.registry import (
    AppRecord,
    CameraRecord,
    PackageRecord,
    QuietTime,
    Role,
    XVote,
)
from scheduler.problem import AppPlan, Objective, Plan

if TYPE_CHECKING:
    pass
TOKEN_PREFIX = "mst_"
MAX_EVENT_PAGE = 1000


class TooLargeError(MainstreamError):
    """An upload is larger than the node accepts."""

    http_status = 413
    exit_code = 2


class InvalidRequestError(MainstreamError, ValueError):
    """A request body does not validate; `problems` name each bad field by its path."""

    http_status = 422
    exit_code = 2

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"invalid {what}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# Requests


class AppUpdate(BaseModel):
    """Change an app; fields left out keep their values."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    package: str | None = None
    version: PackageVersion | None = None
    camera: str | None = None
    event_overrides: EventOverrides | None = None
    weight: float | None = Field(default=None, gt=0, le=MAX_WEIGHT)
    x_vote: XVote | None = None
    threshold: float | None = Field(default=None, ge=0, le=1)
    quiet_time_s: QuietTime | None = None
    enabled: bool | None = None
    min_fps: float | None = Field(
        default=None, gt=0, le=MAX_FPS_LIMIT, description="null given explicitly: no limit"
    )
    max_fps: float | None = Field(
        default=None, gt=0, le=MAX_FPS_LIMIT, description="null given explicitly: no limit"
    )

    @field_validator("x_vote")
    @classmethod
    def _positive_vote(cls, value: XVote | None) -> XVote | None:
        return None if value is None else positive_vote(value)


class CameraCreate(CameraConfig):
    """A camera to register: its config plus whether it runs."""

    model_config = ConfigDict(allow_inf_nan=False)

    enabled: bool = True

    def camera_config(self) -> CameraConfig:
        return CameraConfig(**self.model_dump(exclude={"enabled"}))


class ReviewRequest(BaseModel):
    """An operator's mark on an event: a real event ("true") or a false alarm ("false")."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["true", "false"]
    note: str = Field(default="", max_length=1000, description="Why, for the record")

    @property
    def is_true(self) -> bool:
        return self.verdict == "true"


class DryRunRequest(BaseModel):
    """Plan the node with some apps added or removed, or another budget, deploying nothing."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    add_apps: list[AppCreate] = Field(default_factory=list)
    remove_apps: list[str] = Field(default_factory=list)
    budget: float | None = Field(default=None, gt=0, description="ms per second")
    objective: Objective | None = None


# ---------------------------------------------------------------------------------------------
# Answers


class UploadResult(BaseModel):
    package: PackageRecord
    created: bool


class PackageSummary(BaseModel):
    """A package without its whole manifest (for listings)."""

    app: str
    version: int
    sha256: str
    latest: bool
    size_bytes: int
    uploaded_at: datetime
    base_model: str
    base_fingerprint: str
    classes: list[str]
    positive_class: str
    cut_points: list[str]

    @classmethod
    def of(cls, record: PackageRecord) -> PackageSummary:
        manifest = record.manifest
        return cls(
            app=record.app,
            version=record.version,
            sha256=record.sha256,
            latest=record.latest,
            size_bytes=record.size_bytes,
            uploaded_at=record.uploaded_at,
            base_model=manifest.base_model.name,
            base_fingerprint=record.base_fingerprint,
            classes=manifest.app.classes,
            positive_class=manifest.app.positive_class,
            cut_points=[candidate.cut_point for candidate in manifest.candidates],
        )


class AppView(BaseModel):
    app: AppRecord
    planned: AppPlan | None = None
    runtime: dict[str, Any] | None = None
    declared: bool = Field(
        default=False,
        description="Declared in the node's config file: changed there, not over the API",
    )


class CameraView(BaseModel):
    camera: CameraRecord
    status: dict[str, Any] | None = None
    apps: list[str] = Field(default_factory=list)


class ScheduleView(BaseModel):
    status: Literal["ok", "empty", "infeasible", "error", "none"]
    id: int | None = None
    created_at: datetime | None = None
    reason: str = ""
    message: str = ""
    budget: float | None = None
    plan: Plan | None = None
    measured: dict[str, Any] | None = None


class DryRunResult(BaseModel):
    status: Literal["ok", "empty"]
    budget: float
    plan: Plan | None
    current_value: float | None = Field(description="Objective value of the plan in force")


class ReviewView(BaseModel):
    """An operator's mark as stored with the event."""

    verdict: Literal["true", "false"]
    note: str
    reviewed_at: float = Field(description="Seconds since the epoch")
    reviewed_by: str = Field(description="The token's name, or `mqtt`")

    @classmethod
    def of(cls, review: EventReview) -> ReviewView:
        return cls(
            verdict="true" if review.verdict else "false",
            note=review.note,
            reviewed_at=review.reviewed_at,
            reviewed_by=review.reviewed_by,
        )


class EventView(BaseModel):
    id: str
    app: str
    camera: str
    start_time: float
    end_time: float | None
    open: bool
    peak_score: float
    peak_frame: int
    frames_analysed: int
    frames_fired: int
    ended_by: str | None = Field(
        default=None,
        description="quiet (no fire for the quiet time), stopped (app, camera or node "
        "stopped) or restart (left open by a crash, closed when the node started again)",
    )
    review: ReviewView | None = Field(
        default=None, description="The operator's mark: a real event or a false alarm"
    )
    clip: str | None = Field(
        default=None,
        description="URL path of the event's video clip (WebM); null until it is stored "
        "(it is written after the event's end and post-roll) or when clips are off",
    )

    @classmethod
    def of(cls, event: EventRecord, review: EventReview | None = None) -> EventView:
        fields = dict(event.__dict__)
        has_clip = fields.pop("has_clip", False)
        return cls(
            open=event.end_time is None,
            review=None if review is None else ReviewView.of(review),
            clip=clip_path(event.id) if has_clip else None,
            **fields,
        )


class FeedbackView(BaseModel):
    """What the marks on an app's events say (see `mainstream.node.feedback.AppFeedback`)."""

    app: str
    camera: str
    true: int = Field(description="Events of the app on the camera marked true")
    false: int = Field(description="... marked false")
    unreviewed: int = Field(description="... not marked")
    counted_true: int = Field(description="Marks true that the estimate uses")
    counted_false: int = Field(description="Marks false that the estimate uses")
    in_force: bool = Field(description="Enough marks: plans use the estimate")
    predicted_precision: float | None = Field(
        description="Event precision the package's figures predict for the marked events"
    )
    precision: float | None = Field(description="Posterior mean of the event precision")
    precision_interval: tuple[float, float] | None = Field(description="90 % credible interval")
    fpr_shift: float | None = Field(description="Added to every candidate's per-frame FPR")
    false_positive_rate: float | None = Field(
        description="The per-frame FPR the marks imply at the cut point in force"
    )
    planned_f1: float | None = Field(description="Event F1 the plan in force predicts")
    adjusted_precision: float | None = Field(
        description="Event precision at the option in force with the estimate in force"
    )
    adjusted_f1: float | None = Field(description="Event F1 likewise")


class ReviewResult(BaseModel):
    """A mark stored or cleared, the app's estimate after it, and the re-plan it caused."""

    event: EventView
    feedback: FeedbackView | None
    replanned: str | None = Field(description="The new plan's reason, when the mark re-planned")


class EventPage(BaseModel):
    items: list[EventView]
    limit: int
    offset: int
    next_offset: int | None


@dataclass(frozen=True)
class Principal:
    """Who made a request: a token's name and role."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"
