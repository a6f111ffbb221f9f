"""Option tables: every way an app could run, with its predicted event quality and branch cost.

An option is one (candidate cut point, analysis rate, vote X) for one app. Its quality comes
from the event model (DESIGN §2); its branch cost from the cost model (DESIGN §3). The search
never looks at an option that another option of the same app beats on every count
(`prune_dominated`), so the tables it sees are small.

Pure logic: no I/O, no framework imports.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Literal, NamedTuple

import numpy as np

from scheduler.cost_model import branch_cost_per_frame, camera_decode_cost
from scheduler.event_model import (
    miss_probability_grid,
    sample_correlation,
    samples_per_window,
    validate_stream,
)
from scheduler.problem import X_VOTE_CHOICES, AppSpec, Candidate, Problem, Profile

Sharing = Literal["shared", "no_sharing", "max_sharing"]
"""How an app may use the shared stem:
- `shared`: any candidate, the stem is shared (Mainstream);
- `no_sharing`: only the app's most accurate candidate, run end to end, nothing shared;
- `max_sharing`: only the candidate at the deepest cut point (only the head is specialised).
"""


class Option(NamedTuple):
    """One way to run one app, with what the models predict for it."""

    cut_index: int  # position of the candidate's cut point in the profile
    cut_point: str
    stem_depth: int  # cut index the app's branch starts from when costing (0: nothing shared)
    fps: float
    x_vote: int
    recall: float
    precision: float
    f1: float
    branch_cost: float  # per second: fps * (total_cost - C(stem_depth) + split overhead)


@dataclass(frozen=True)
class AppOptions:
    """All options of one app, and which of them survive dominance pruning.

    The options are kept as columns (`columns[f][i]`: field f of `Option._fields` of option
    i): hundreds of apps have tens of thousands of options, and the search reads columns;
    `options` builds the Option tuples when asked.
    """

    name: str
    camera: str
    base_model: str
    weight: float
    columns: tuple[tuple[Any, ...], ...]
    kept: tuple[int, ...]  # indices into `options`, the non-dominated ones

    @cached_property
    def options(self) -> tuple[Option, ...]:
        return tuple(map(Option._make, zip(*self.columns, strict=True)))

    def option(self, index: int) -> Option:
        return Option._make(column[index] for column in self.columns)

    def column(self, field: str) -> np.ndarray:
        """One field of every option, as an array."""
        return np.array(self.columns[Option._fields.index(field)])

    def kept_options(self) -> list[Option]:
        return [self.option(index) for index in self.kept]

    def with_options(self, options: list[Option], kept: tuple[int, ...]) -> AppOptions:
        """The same app with other options (e.g. re-scored) and the ones of them kept."""
        columns = tuple(zip(*options, strict=True)) if options else ((),) * len(Option._fields)
        return replace(self, columns=columns, kept=kept)


def candidate_accuracy(candidate: Candidate, event_frequency: float) -> float:
    """Per-frame accuracy of a candidate: its `accuracy` field when given, else derived.

    Without the field, accuracy on frames drawn like the app's stream is
    `phi * recall + (1 - phi) * (1 - false_positive_rate)` with `phi` the event frequency.
    """
    extra = candidate.model_extra or {}
    given = extra.get("accuracy")
    if isinstance(given, int | float) and not isinstance(given, bool):
        return float(given)
    return event_frequency * candidate.recall + (1.0 - event_frequency) * (
        1.0 - candidate.false_positive_rate
    )


def most_accurate_candidate(app: AppSpec) -> Candidate:
    """The candidate No-Sharing runs. Ties go to the earlier candidate in the app's list."""
    return max(
        app.candidates,
        key=lambda candidate: candidate_accuracy(candidate, app.event_frequency),
    )


def deepest_candidate(app: AppSpec, profile: Profile) -> Candidate:
    """The candidate Max-Sharing runs: the one at the deepest cut point the app has."""
    return max(app.candidates, key=lambda candidate: profile.index_of(candidate.cut_point))


def x_vote_choices(app: AppSpec) -> tuple[int, ...]:
    return X_VOTE_CHOICES if app.x_vote == "auto" else (int(app.x_vote),)


def build_app_options(problem: Problem, app: AppSpec, sharing: Sharing = "shared") -> AppOptions:
    """Every (candidate, rate, X) of one app with quality and branch cost, plus the pruned set."""
    assert app.base_model is not None  # Problem validation fills it in
    profile = problem.profile_for(app.base_model)
    if sharing == "no_sharing":
        candidates = [most_accurate_candidate(app)]
    elif sharing == "max_sharing":
        candidates = [deepest_candidate(app, profile)]
    else:
        candidates = list(app.candidates)

    rates = app.allowed_rates(problem.fps_options)  # within the app's own fps limits
    votes = x_vote_choices(app)
    shared = sharing != "no_sharing"
    quality = _QualityTable(problem.camera_fps, app, rates)

    planned = [candidate.planned_rates(problem.confidence) for candidate in candidates]
    recalls = [recall for recall, _ in planned]
    false_positive_rates = [false_positive_rate for _, false_positive_rate in planned]
    by_vote = {
        x_vote: [
            part.tolist() for part in quality.at_every_rate(recalls, false_positive_rates, x_vote)
        ]
        for x_vote in votes
    }
    columns: list[list[Any]] = [[] for _ in Option._fields]
    cut_index, cut_point, stem_depth, fps, x_vote, recall, precision, f1, branch_cost = columns
    for index, candidate in enumerate(candidates):
        cut = profile.index_of(candidate.cut_point)
        depth = 0 if sharing == "no_sharing" else cut
        per_frame = branch_cost_per_frame(profile, depth, shared)
        costs = [rate * per_frame for rate in rates]  # = cost_model.branch_cost at each rate
        for vote in votes:
            cut_index.extend([cut] * len(rates))
            cut_point.extend([candidate.cut_point] * len(rates))
            stem_depth.extend([depth] * len(rates))
            fps.extend(rates)
            x_vote.extend([vote] * len(rates))
            for column, values in zip((recall, precision, f1), by_vote[vote], strict=True):
                column.extend(values[index])
            branch_cost.extend(costs)
    rate_index = np.tile(np.arange(len(rates)), len(fps) // len(rates))
    return AppOptions(
        name=app.name,
        camera=app.camera,
        base_model=app.base_model,
        weight=app.weight,
        columns=tuple(tuple(column) for column in columns),
        kept=prune_dominated(np.array(stem_depth), rate_index, np.array(f1)),
    )


class _QualityTable:
    """Event quality of one app at every rate, for many (recall, FP rate) pairs at once.

    The same arithmetic as `event_model.event_quality` (the tests check they agree to the
    last bit), done on numpy arrays over (rate, fire probability): the window counts, the
    sample correlation of each rate (the camera-rate correlation to the stride) and the miss
    recursion (`miss_probability_grid`) come from the event model itself.
    """

    def __init__(self, camera_fps: float, app: AppSpec, rates: list[float]) -> None:
        validate_stream(camera_fps, app.event_length_s, app.event_frequency, app.correlation)
        windows = [samples_per_window(app.event_length_s, camera_fps, fps) for fps in rates]
        whole = np.array([window[0][0] for window in windows])
        self.first_share = np.array([window[0][1] for window in windows])[:, None]
        self.second_share = np.array(
            [window[1][1] if len(window) > 1 else 0.0 for window in windows]
        )[:, None]
        self.samples = whole + 1
        self.correlations = np.array(
            [sample_correlation(app.correlation, camera_fps, fps) for fps in rates]
        )
        self.event_frequency = app.event_frequency

    def detection(self, fire_probabilities: np.ndarray, x_vote: int) -> np.ndarray:
        """(rates, probabilities): E_r[1 - miss(r)] (event_model.expected_detection)."""
        grid = miss_probability_grid(
            fire_probabilities, self.correlations, x_vote, int(self.samples.max())
        )
        rows = np.arange(len(self.samples))
        miss_whole = grid[self.samples - 1, rows]
        miss_next = grid[self.samples, rows]
        detected = self.first_share * (1.0 - miss_whole) + self.second_share * (1.0 - miss_next)
        return np.minimum(1.0, np.maximum(0.0, detected))

    def at_every_rate(
        self, recalls: list[float], false_positive_rates: list[float], x_vote: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Event recall, precision and F1, (candidates, rates) each (event_model.event_quality)."""
        detected = self.detection(np.array([*recalls, *false_positive_rates]), x_vote).T
        event_recall, false_alarm = detected[: len(recalls)], detected[len(recalls) :]
        phi = self.event_frequency
        denominator = phi * event_recall + (1.0 - phi) * false_alarm
        has_alarms = denominator > 0.0
        precision = np.where(
            has_alarms, phi * event_recall / np.where(has_alarms, denominator, 1.0), 1.0
        )
        positive = (event_recall > 0.0) & (precision > 0.0)
        total = np.where(positive, event_recall + precision, 1.0)
        f1 = np.where(positive, 2.0 * event_recall * precision / total, 0.0)
        return event_recall, precision, f1


def build_option_tables(problem: Problem, sharing: Sharing = "shared") -> list[AppOptions]:
    """Option tables of every app of the problem, in the problem's app order."""
    return [build_app_options(problem, app, sharing) for app in problem.apps]


def prune_dominated(depth: np.ndarray, rate_index: np.ndarray, f1: np.ndarray) -> tuple[int, ...]:
    """Indices of the options no other option of the same app beats.

    Option A beats B when A is at least as deep (`stem_depth`), runs at most as fast and has at
    least B's F1: swapping B for A never raises the schedule's cost, because A's branch saves
    at least as much as the deeper stem A may need (DESIGN §3; the split overhead and decode
    cost grow with the rate only). Among equal options the first (smallest X) is kept.
    `rate_index` orders the rates; the arrays have one entry per option.
    """
    depths, depth_pos = np.unique(depth, return_inverse=True)
    num_rates = int(rate_index.max()) + 1
    cell = depth_pos * num_rates + rate_index
    # The best option of each (depth, rate) cell: highest F1, then the earliest.
    order = np.lexsort((np.arange(len(f1)), -f1, cell))
    cells, first = np.unique(cell[order], return_index=True)
    which = order[first]
    flat_best = np.full(len(depths) * num_rates, -np.inf)
    flat_best[cells] = f1[which]
    best = flat_best.reshape(len(depths), num_rates)

    # cover[d, r] = best F1 at any (depth >= d, rate <= r); an option survives only if it
    # beats every other option in that quadrant.
    cover = np.maximum.accumulate(best[::-1], axis=0)[::-1]
    cover = np.maximum.accumulate(cover, axis=1)
    beaten = np.full(best.shape, -np.inf)
    beaten[:-1, :] = cover[1:, :]
    beaten[:, 1:] = np.maximum(beaten[:, 1:], cover[:, :-1])
    survivors = np.nonzero((best > beaten).ravel())[0]
    chosen = np.full(len(depths) * num_rates, -1)
    chosen[cells] = which
    kept: list[int] = np.sort(chosen[survivors]).tolist()
    return tuple(kept)


@dataclass(frozen=True)
class StemSegment:
    """A piece of shared work: decoding a camera, or the base between two used cut points.

    Base segments cover the cut points `(first_cut, last_cut]` of one (camera, base model);
    a decode segment has `base_model` None. It runs at the highest rate of the apps below it.
    """

    camera: str
    base_model: str | None
    first_cut: int
    last_cut: int
    cost_per_frame: float
    parent: int  # index of the segment it follows, -1 for a camera's decode segment


@dataclass(frozen=True)
class SearchSpace:
    """The problem as the search sees it: arrays over each app's kept options.

    Stem segments form a forest: each camera's decode segment is a root and each (camera,
    base model) hangs a chain of base segments under it, one per stretch between cut points
    that some kept option uses. An option needs its own segment and all segments above it to
    run at least at its rate.
    """

    budget: float
    tables: list[AppOptions]
    segments: list[StemSegment]
    segment_of: list[np.ndarray]  # per app, per kept option: the deepest segment it needs
    rate: list[np.ndarray]
    f1: list[np.ndarray]
    score: list[np.ndarray]  # weight * f1 / total weight: what the option adds to mean_f1
    cost: list[np.ndarray]  # branch cost
    option_index: list[np.ndarray]  # position in tables[app].options

    @property
    def num_apps(self) -> int:
        return len(self.tables)

    def option(self, app: int, position: int) -> Option:
        return self.tables[app].option(int(self.option_index[app][position]))


def build_search_space(problem: Problem, tables: list[AppOptions]) -> SearchSpace:
    """Turn option tables into the arrays the search works on (kept options only)."""
    total_weight = sum(table.weight for table in tables)
    segments: list[StemSegment] = []
    root_of: dict[str, int] = {}
    for table in tables:
        if table.camera not in root_of:
            root_of[table.camera] = len(segments)
            segments.append(
                StemSegment(
                    camera=table.camera,
                    base_model=None,
                    first_cut=0,
                    last_cut=0,
                    cost_per_frame=camera_decode_cost(problem, table.camera),
                    parent=-1,
                )
            )

    # Per (camera, base): the used depths, and the segment that ends at each of them.
    segment_at: dict[tuple[str, str, int], int] = {}
    depths_of: dict[tuple[str, str], set[int]] = {}
    kept_depths = [table.column("stem_depth")[list(table.kept)].tolist() for table in tables]
    for table, depths in zip(tables, kept_depths, strict=True):
        depths_of.setdefault((table.camera, table.base_model), set()).update(depths)
    for (camera, base_model), depths in depths_of.items():
        cumulative = [cut.cumulative_cost for cut in problem.profile_for(base_model).cut_points]
        previous_depth, previous_segment = 0, root_of[camera]
        segment_at[(camera, base_model, 0)] = previous_segment
        for depth in sorted(depths - {0}):
            segment_at[(camera, base_model, depth)] = len(segments)
            segments.append(
                StemSegment(
                    camera=camera,
                    base_model=base_model,
                    first_cut=previous_depth,
                    last_cut=depth,
                    cost_per_frame=cumulative[depth] - cumulative[previous_depth],
                    parent=previous_segment,
                )
            )
            previous_depth, previous_segment = depth, len(segments) - 1

    segment_of, rate, f1, score, cost, option_index = [], [], [], [], [], []
    for table, depths in zip(tables, kept_depths, strict=True):
        kept = np.array(table.kept, dtype=np.int64)
        segment_of.append(
            np.array(
                [segment_at[(table.camera, table.base_model, depth)] for depth in depths],
                dtype=np.int64,
            )
        )
        rate.append(table.column("fps")[kept])
        f1.append(table.column("f1")[kept])
        score.append(table.column("f1")[kept] * (table.weight / total_weight))
        cost.append(table.column("branch_cost")[kept])
        option_index.append(kept)
    return SearchSpace(
        budget=problem.budget,
        tables=tables,
        segments=segments,
        segment_of=segment_of,
        rate=rate,
        f1=f1,
        score=score,
        cost=cost,
        option_index=option_index,
    )
