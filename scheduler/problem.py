"""The scheduler's boundary types: the problem it reads and the plan it writes (DESIGN §3-4).

These pydantic models cross process boundaries (JSON/YAML files, the REST API, the runtime);
the search works on plain tables built from them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mainstream.core.manifest import (
    CandidateInfo,
    FrameEvidence,
    Manifest,
    design_effect,
    frame_evidence,
)
from scheduler.estimates import (
    CREDIBLE_LEVEL,
    THIN_EVENTS,
    THIN_NEGATIVE_FRAMES,
    RateEstimate,
    given_rate,
    planning_rates,
    rate_estimate,
)

DEFAULT_FPS_OPTIONS: tuple[float, ...] = (0.1, 0.2, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
DEFAULT_CAMERA = "camera0"
X_VOTE_CHOICES: tuple[int, ...] = (1, 2, 3, 4, 5)

Objective = Literal["mean_f1", "min_f1"]


class CutPoint(BaseModel):
    """A place the base network can be split; `cumulative_cost` is the cost from the input."""

    model_config = ConfigDict(extra="forbid")

    name: str
    cumulative_cost: float = Field(ge=0)
    split_overhead: float | None = Field(
        default=None,
        ge=0,
        description="per analysed frame, for a branch that starts here; None: the profile's",
    )


class Profile(BaseModel):
    """Measured (or given) cost of one base model on one machine (DESIGN §3)."""

    model_config = ConfigDict(extra="allow")

    base_model: str
    cost_unit: str = "ms"
    cut_points: list[CutPoint]
    total_cost: float = Field(gt=0)
    decode_cost: float = Field(default=0.0, ge=0, description="per analysed camera frame")
    split_overhead: float = Field(default=0.0, ge=0, description="per branch per analysed frame")

    @model_validator(mode="after")
    def _ordered(self) -> Profile:
        if not self.cut_points:
            raise ValueError("profile.cut_points must not be empty")
        names = [cut.name for cut in self.cut_points]
        if len(set(names)) != len(names):
            raise ValueError(f"profile.cut_points has duplicate names: {names}")
        costs = [cut.cumulative_cost for cut in self.cut_points]
        if costs[0] != 0.0:
            raise ValueError("profile.cut_points[0] must be the input with cumulative_cost 0")
        if any(b < a for a, b in itertools.pairwise(costs)):
            raise ValueError("profile.cut_points must be ordered by non-decreasing cumulative_cost")
        if costs[-1] > self.total_cost:
            raise ValueError("profile.total_cost must be >= every cut point's cumulative_cost")
        return self

    def split_overhead_at(self, stem_depth: int) -> float:
        """What a branch starting at cut `stem_depth` pays per analysed frame for the split.

        Engines that keep tensors in their own layout pay a conversion at each end of a branch,
        so the overhead grows with the tensor at the cut; a profiler that measured it per cut
        says so on the cut point, else the profile's single figure holds for every cut.
        """
        measured = self.cut_points[stem_depth].split_overhead
        return self.split_overhead if measured is None else measured

    def index_of(self, cut_point: str) -> int:
        for index, cut in enumerate(self.cut_points):
            if cut.name == cut_point:
                return index
        raise KeyError(cut_point)


class Candidate(BaseModel):
    """One model of an app: the cut point it specialises from and its per-frame quality.

    `recall` and `false_positive_rate` are the measured ratios. With `evidence` (the held-out
    counts behind them) the scheduler plans on their Beta posteriors instead
    (:mod:`scheduler.estimates`): the posterior means, or pessimistic quantiles under a
    problem's `confidence`; without it, on the ratios as given, with no interval.
    """

    model_config = ConfigDict(extra="allow")

    cut_point: str
    recall: float = Field(ge=0, le=1)
    false_positive_rate: float = Field(ge=0, le=1)
    evidence: FrameEvidence | None = None
    false_positive_shift: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="added to the planned FP rate: what operators' marks on the app's events "
        "imply (0: none)",
    )

    @classmethod
    def from_manifest(cls, manifest: Manifest, info: CandidateInfo) -> Candidate:
        """A package's candidate, with the counts behind its figures when it has them."""
        return cls(
            cut_point=info.cut_point,
            recall=info.recall,
            false_positive_rate=info.false_positive_rate,
            evidence=frame_evidence(manifest, info),
        )

    def estimates(self, level: float = CREDIBLE_LEVEL) -> tuple[RateEstimate, RateEstimate] | None:
        """Posteriors of the per-frame recall and FP rate; None without evidence."""
        if self.evidence is None:
            return None
        counts = self.evidence
        # A rate with no frames behind it (a calibration clip without events, over a package
        # without held-out counts) is the measured ratio, not the prior's 0.5.
        # Runs of fires on consecutive frames count as fewer independent frames.
        return (
            rate_estimate(
                counts.positive_fires,
                counts.positive_frames,
                level,
                design_effect(counts.positive_frame_correlation or 0.0),
            )
            if counts.positive_frames
            else given_rate(self.recall, level),
            rate_estimate(
                counts.negative_fires,
                counts.negative_frames,
                level,
                design_effect(counts.negative_frame_correlation or 0.0),
            )
            if counts.negative_frames
            else given_rate(self.false_positive_rate, level),
        )

    def planned_rates(self, confidence: float | None) -> tuple[float, float]:
        """The per-frame recall and FP rate the scheduler plans this candidate on."""
        estimates = self.estimates()
        if estimates is None:
            recall, false_positive_rate = self.recall, self.false_positive_rate
        else:
            recall, false_positive_rate = planning_rates(*estimates, confidence)
        return recall, self._shifted(false_positive_rate)

    def _shifted(self, false_positive_rate: float) -> float:
        return min(1.0, max(0.0, false_positive_rate + self.false_positive_shift))

    def rate_bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(recall low, high), (FP rate low, high): the 90 % intervals, or the ratios twice."""
        estimates = self.estimates()
        if estimates is None:
            fpr = self._shifted(self.false_positive_rate)
            return (self.recall, self.recall), (fpr, fpr)
        recall, false_positive_rate = estimates
        return (recall.low, recall.high), (
            self._shifted(false_positive_rate.low),
            self._shifted(false_positive_rate.high),
        )

    def thin_evidence(self) -> str | None:
        """Why the held-out evidence behind the figures is thin, or None.

        Thin: fewer than `THIN_EVENTS` held-out events (or an unknown number) or fewer than
        `THIN_NEGATIVE_FRAMES` negative frames. None also without evidence (nothing to weigh).
        """
        counts = self.evidence
        if counts is None:
            return None  # nothing to weigh: the figures are taken as given
        reasons = []
        if counts.events is None:
            reasons.append("number of held-out events unknown")
        elif counts.events < THIN_EVENTS:
            reasons.append(f"{counts.events} held-out events (< {THIN_EVENTS})")
        if counts.negative_frames < THIN_NEGATIVE_FRAMES:
            reasons.append(f"{counts.negative_frames} negative frames (< {THIN_NEGATIVE_FRAMES:,})")
        return "; ".join(reasons) or None


class AppSpec(BaseModel):
    """An app as the scheduler sees it: event statistics plus its model candidates."""

    model_config = ConfigDict(extra="allow")

    name: str
    camera: str = DEFAULT_CAMERA
    base_model: str | None = None
    event_length_s: float = Field(gt=0)
    event_frequency: float = Field(gt=0, lt=1)
    correlation: float = Field(
        ge=0, le=1, description="lag-1 correlation of the fires on consecutive camera frames"
    )
    correlation_interval: tuple[float, float] | None = Field(
        default=None, description="credible interval of the correlation; None: taken as exact"
    )
    x_vote: int | Literal["auto"] = 1
    weight: float = Field(default=1.0, gt=0)
    min_fps: float | None = Field(
        default=None, gt=0, description="No analysis rate below this for the app (None: any)"
    )
    max_fps: float | None = Field(
        default=None, gt=0, description="No analysis rate above this for the app (None: any)"
    )
    candidates: list[Candidate] = Field(min_length=1)

    def allowed_rates(self, fps_options: Sequence[float]) -> list[float]:
        """The rates among `fps_options` within the app's [min_fps, max_fps]."""
        low = self.min_fps if self.min_fps is not None else 0.0
        high = self.max_fps if self.max_fps is not None else math.inf
        return [float(fps) for fps in fps_options if low <= fps <= high]

    def describe_fps_range(self) -> str:
        low = "any" if self.min_fps is None else f"{self.min_fps:g}"
        high = "any" if self.max_fps is None else f"{self.max_fps:g}"
        return f"[{low}, {high}] fps"

    @classmethod
    def from_manifest(
        cls,
        manifest: Manifest,
        *,
        overrides: Mapping[str, float] | None = None,
        **fields: Any,
    ) -> AppSpec:
        """A package's app: its event statistics (with `overrides` on top), the correlation's
        interval unless the correlation is overridden, and its candidates with their counts.
        `fields` sets the rest (name, camera, x_vote, ...); the name defaults to the app's."""
        given = dict(overrides or {})
        stats = manifest.event_stats.model_dump() | given
        evidence = manifest.event_stats.correlation_evidence
        interval = (
            evidence.interval if evidence is not None and "correlation" not in given else None
        )
        return cls(
            **({"name": manifest.app.name} | fields),
            event_length_s=stats["event_length_s"],
            event_frequency=stats["event_frequency"],
            correlation=stats["correlation"],
            correlation_interval=interval,
            candidates=[Candidate.from_manifest(manifest, info) for info in manifest.candidates],
        )

    @field_validator("correlation_interval")
    @classmethod
    def _interval_in_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0.0 <= value[0] <= value[1] <= 1.0:
            raise ValueError(f"correlation_interval {list(value)} must be [low, high] in [0, 1]")
        return value

    @field_validator("x_vote")
    @classmethod
    def _positive_vote(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("x_vote must be >= 1 or 'auto'")
        return value

    @model_validator(mode="after")
    def _ordered_fps_range(self) -> AppSpec:
        if self.min_fps is not None and self.max_fps is not None and self.min_fps > self.max_fps:
            raise ValueError(
                f"app {self.name!r}: min_fps {self.min_fps:g} is above max_fps {self.max_fps:g}"
            )
        return self


class Problem(BaseModel):
    """A scheduling problem: apps, their candidates, the machine's profile(s) and the budget."""

    model_config = ConfigDict(extra="forbid")

    camera_fps: float = Field(default=10.0, gt=0)
    budget: float = Field(gt=0)
    objective: Objective = "mean_f1"
    confidence: float | None = Field(
        default=None,
        ge=0.5,
        lt=1,
        description="None: plan on the posterior means of the per-frame figures; e.g. 0.9: on "
        "pessimistic quantiles (recall's 10 % quantile, the FP rate's 90 % quantile)",
    )
    fps_options: list[float] = Field(default_factory=lambda: list(DEFAULT_FPS_OPTIONS))
    profile: Profile | None = None
    profiles: list[Profile] | None = None
    apps: list[AppSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Problem:
        if (self.profile is None) == (self.profiles is None):
            raise ValueError("give exactly one of 'profile' or 'profiles'")
        fps = sorted(set(self.fps_options))
        if not fps or fps[0] <= 0 or fps[-1] > self.camera_fps:
            raise ValueError(
                f"fps_options must lie in (0, camera_fps={self.camera_fps}]: {self.fps_options}"
            )
        self.fps_options = fps
        names = [app.name for app in self.apps]
        if len(set(names)) != len(names):
            raise ValueError(f"app names must be unique: {names}")
        by_base = {profile.base_model: profile for profile in self.all_profiles()}
        for app in self.apps:
            if not app.allowed_rates(fps):
                raise ValueError(
                    f"app {app.name!r}: no frame rate in its range {app.describe_fps_range()}; "
                    f"the planner chooses among {', '.join(f'{f:g}' for f in fps)} fps"
                )
            if app.base_model is None:
                if len(by_base) != 1:
                    raise ValueError(
                        f"app {app.name!r} must name its base_model (several profiles given)"
                    )
                app.base_model = next(iter(by_base))
            if app.base_model not in by_base:
                raise ValueError(f"app {app.name!r}: no profile for base_model {app.base_model!r}")
            cut_names = {cut.name for cut in by_base[app.base_model].cut_points}
            for candidate in app.candidates:
                if candidate.cut_point not in cut_names:
                    raise ValueError(
                        f"app {app.name!r}: candidate cut_point {candidate.cut_point!r} is not in the "
                        f"{app.base_model} profile ({sorted(cut_names)})"
                    )
        return self

    def all_profiles(self) -> list[Profile]:
        if self.profiles is not None:
            return list(self.profiles)
        assert self.profile is not None
        return [self.profile]

    def profile_for(self, base_model: str) -> Profile:
        for profile in self.all_profiles():
            if profile.base_model == base_model:
                return profile
        raise KeyError(base_model)


class AppPlan(BaseModel):
    """The option chosen for one app and what the model predicts for it."""

    name: str
    camera: str = DEFAULT_CAMERA
    base_model: str = ""
    cut_point: str
    fps: float
    x_vote: int
    recall: float
    precision: float
    f1: float
    cost: float
    f1_interval: tuple[float, float] | None = Field(
        default=None,
        description="90 % credible interval of the predicted F1 (see planner.f1_interval); "
        "None: the app's figures have no held-out counts",
    )
    evidence_warning: str | None = Field(
        default=None, description="why the held-out evidence behind the figures is thin"
    )


_UPPER_BOUND = (
    "a proven upper bound on the best value any schedule of the problem reaches (the "
    "objective's units); equal to `value` when proven optimal. None: not computed (a given "
    "schedule, or a plan stored before bounds existed)"
)
_OPTIMALITY_GAP = (
    "relative gap (upper_bound - value) / upper_bound, in [0, 1]: 0.0 means proven optimal "
    "(within 1e-9), 0.001 that no schedule is more than 0.1 % better. None: not computed"
)


class BaselinePlan(BaseModel):
    """A baseline planned like the plan itself; infeasible ones have value 0 and gap 0."""

    value: float
    total_cost: float = 0.0
    apps: list[AppPlan] = Field(default_factory=list)
    feasible: bool = True
    upper_bound: float | None = Field(default=None, description=_UPPER_BOUND)
    optimality_gap: float | None = Field(default=None, ge=0, le=1, description=_OPTIMALITY_GAP)


class Plan(BaseModel):
    """The scheduler's answer (DESIGN §4).

    Every solver stops at its time limit, so a plan says how good it is proven to be:
    `upper_bound` bounds the best value any schedule could reach and `optimality_gap` is
    the relative distance to it, `(upper_bound - value) / upper_bound` (0.0: proven optimal).
    A relative gap reads the same whatever the number of apps or the objective's scale.
    """

    objective: Objective
    value: float
    budget: float
    total_cost: float
    confidence: float | None = Field(
        default=None, description="the problem's: None planned on posterior means"
    )
    solver: str
    solve_time_s: float
    apps: list[AppPlan]
    baselines: dict[str, BaselinePlan] = Field(default_factory=dict)
    upper_bound: float | None = Field(default=None, description=_UPPER_BOUND)
    optimality_gap: float | None = Field(default=None, ge=0, le=1, description=_OPTIMALITY_GAP)
