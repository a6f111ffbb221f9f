"""What an app is asked to be: a package on a camera, with its scheduling and event settings.

One model for the API (`POST /api/apps`), the CLI and the config file's `apps:` list, so the
three accept the same fields with the same limits.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mainstream.core.manifest import MAX_EVENT_LENGTH_S
from mainstream.node.registry import AUTO_QUIET_TIME, QuietTime, XVote

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
# The event model's work grows with vote X times the frames in an event window; beyond these
# the scheduler would spend minutes (or all memory) on one request, so the API refuses them.
MAX_X_VOTE = 100
MAX_WEIGHT = 1e6  # beyond it the weighted objective loses all precision
MAX_ROW_NUMBER = 2**63 - 1  # SQLite's largest INTEGER: ids, versions and offsets beyond it fail
MAX_FPS_LIMIT = 1000.0  # above any camera's rate; a larger limit is a typo
PackageVersion = Annotated[int, Field(ge=1, le=MAX_ROW_NUMBER)] | Literal["latest"]


class EventOverrides(BaseModel):
    """Event statistics that replace the package's measured ones for this deployment."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    event_length_s: float | None = Field(default=None, gt=0, le=MAX_EVENT_LENGTH_S)
    event_frequency: float | None = Field(default=None, gt=0, lt=1)
    correlation: float | None = Field(default=None, ge=0, le=1)

    def values(self) -> dict[str, float]:
        return {key: value for key, value in self.model_dump().items() if value is not None}


class AppCreate(BaseModel):
    """Deploy a registered package as an app on a camera."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=NAME_PATTERN, description="Unique app name on this node")
    package: str | None = Field(
        default=None, description="App name of the package to run; default: `name`"
    )
    version: PackageVersion = Field(default="latest", description="Package version")
    camera: str | None = Field(
        default=None, description="Camera id; default: the node's default camera"
    )
    event_overrides: EventOverrides = Field(default_factory=EventOverrides)
    weight: float = Field(
        default=1.0, gt=0, le=MAX_WEIGHT, description="Weight of the app's F1 in the plan"
    )
    x_vote: XVote = Field(default=1, description="Consecutive fires that open an event, or auto")
    threshold: float = Field(default=0.5, ge=0, le=1, description="Score that counts as a fire")
    quiet_time_s: QuietTime = Field(
        default=AUTO_QUIET_TIME,
        description="Seconds without a fire that end an event; auto: the app's event length "
        "(at least 1.5 analysis intervals), so that events are counted as the event model "
        "counts them",
    )
    enabled: bool = True
    min_fps: float | None = Field(
        default=None,
        gt=0,
        le=MAX_FPS_LIMIT,
        description="Lowest analysis rate the planner may give the app (null: no limit)",
    )
    max_fps: float | None = Field(
        default=None,
        gt=0,
        le=MAX_FPS_LIMIT,
        description="Highest analysis rate the planner may give the app (null: no limit)",
    )

    @field_validator("x_vote")
    @classmethod
    def _positive_vote(cls, value: XVote) -> XVote:
        return positive_vote(value)

    @model_validator(mode="after")
    def _ordered_fps_range(self) -> AppCreate:
        check_fps_range(self.min_fps, self.max_fps)
        return self


def check_fps_range(min_fps: float | None, max_fps: float | None) -> None:
    if min_fps is not None and max_fps is not None and min_fps > max_fps:
        raise ValueError(f"min_fps {min_fps:g} is above max_fps {max_fps:g}")


def positive_vote(value: XVote) -> XVote:
    if isinstance(value, int) and not 1 <= value <= MAX_X_VOTE:
        raise ValueError(f"x_vote must be 1 to {MAX_X_VOTE} or 'auto'")
    return value
