"""Fidelity benchmark: the scheduler's predicted event F1 against the F1 replay measures.

The product promises that the event F1 the scheduler predicts for a plan is what the apps
achieve. This bench checks it end to end on labelled synthetic video, with the demo's assets
(`mainstream.cli.demo_run`): a scene where object kinds cross, a small base pretrained on it and one
trained app per kind. For several budgets (fractions of No-Sharing at the camera rate: every
app running its whole network on every frame) the scheduler plans on this machine's measured
profile, and `edge_runtime.replay` runs a held-out video through the plan in video time and
measures recall, precision and F1 against the video's labels with the event model's own
definitions (DESIGN §2). The goal: |predicted F1 - measured F1| <= 0.05 for every app.

The assets are the demo's with a longer training video (`--train-s`, 480 s: the packages'
per-frame rates are measured on a quarter of it, and 45 s is too little for a 0.05 check); they
are built once into the data directory, keyed by their settings like the demo's. The held-out
video is longer than the demo's too (160-200 events per app in 2400 s), with its own seed,
cached beside them: at the tightest budgets apps run at 0.1-0.5 fps and a 2 s event gets 0 or 1
samples, so with about 90 events (1200 s) the replay's own sampling error is already about 0.05
in F1, the size of the goal. A cold run builds the assets first (about 6-9 minutes on 2 cores).

Run: `python bench/fidelity.py [--apps 4] [--held-out-s 2400] [--budgets 0.02,0.05,0.1,0.25,1]`.

Independent scenes (`--suite independent [--quick]`): the same packages (three apps; the fourth
object kind is never seen in training) are tested on scenes of another camera, rendered with
another configuration (`TEST_SCENE`: more noise and lighting drift, a tilted view, other object
colours, the unseen kind crossing as a distractor, each scene its own landscape), several
scenes with their own seeds. Each app and budget is planned four ways: on the raw ratios
(`counts only`: a package without evidence), on the Beta posteriors (the default), on the
posteriors after `calibrate_package` on a separate clip of the test scene, and on the
posteriors after an operator's 20 marks on events of the posterior plan, applied as the node
applies them (`scheduler.feedback`). Measured figures come from one stem pass per video (every
candidate of every app scored on every frame) and replay's definitions, so every (cut point,
fps, X) option is measured too: the hindsight-best schedule is the scheduler's own search and
cost model over those measured figures at the same budget. The table gives predicted F1, its
90 % interval and measured F1 per column; the summary the mean |predicted - measured|, the
interval's coverage and the hindsight ratio (chosen schedule's mean measured F1 over the best).
The goals (issue "Honest predictions"): mean |dF1| <= 0.05 with calibration and <= 0.10
without, >= 90 % coverage, ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import shlex
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

# Run as `python bench/fidelity.py`, this folder comes first on the import path and its
# siblings `scheduler.py` / `trainer.py` would hide the packages of the same name; measure the
# checkout this file belongs to.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [
    entry for entry in sys.path if Path(entry or ".").resolve() != _HERE
]

from edge_runtime.replay import (  # noqa: E402
    AppReplayFigures,
    ReplayRequest,
    negative_windows,
    read_labels,
    run_replay,
)
from mainstream.cli.demo_run import (  # noqa: E402
    APP_OF_KIND,
    DEFAULT_QUIET_TIME_S,
    DemoAssets,
    DemoConfig,
    DemoOptions,
    Steps,
    assets_dir,
    default_demo_dir,
    derived_budget,
    prepare_assets,
    scene_video_config,
)
from mainstream.core.errors import MainstreamError  # noqa: E402
from scheduler.event_model import f1_from  # noqa: E402
from scheduler.options import Option  # noqa: E402
from scheduler.planner import make_plan  # noqa: E402
from scheduler.problem import (  # noqa: E402
    DEFAULT_FPS_OPTIONS,
    AppPlan,
    AppSpec,
    Problem,
    Profile,
)
from trainer.synth import SynthConfig  # noqa: E402

GOAL = 0.05
DEFAULT_BUDGETS = "0.02,0.05,0.1,0.25,1"
# The demo's held-out video uses seed + 1; this one is another stretch of the same scene.
HELD_OUT_SEED_OFFSET = 2
# The demo trains on 180 s: its validation quarter (45 s, ~3 events per app) measures the
# per-frame false-positive rates too roughly for a 0.05 F1 check, and the car app is not learnt.
TRAIN_DURATION_S = 480.0
# An app whose every cut point fires on fewer event frames than this did not learn its kind.
WORKING_RECALL = 0.5


def held_out_video(assets: DemoAssets, duration_s: float, progress: bool) -> tuple[Path, Path]:
    """A held-out video of the demo's scene, `duration_s` long (rendered once, then cached)."""
    from trainer.synth import generate_video

    config = assets.config
    seed = config.seed + HELD_OUT_SEED_OFFSET
    folder = assets.held_out_video.parent / "fidelity"
    video = folder / f"held_out_{duration_s:g}s_seed{seed}.avi"
    labels = video.with_suffix(".csv")
    if not (video.is_file() and labels.is_file()):
        generate_video(
            video, labels, scene_video_config(config, duration_s, seed), show_progress=progress
        )
    return video, labels


def measured_profile(assets: DemoAssets, engine: str, folder: Path) -> Path:
    """This machine's cost profile over the packages' cut points, written to `folder`."""
    from edge_runtime.deployer import BaseProvider
    from edge_runtime.replay import load_or_measure_profile
    from mainstream.core.package import read_package

    request = ReplayRequest(
        video=assets.held_out_video,
        packages=list(assets.packages.values()),
        events_out=folder / "unused.jsonl",
        engine=engine,  # type: ignore[arg-type]
    )
    with ExitStack() as stack:
        packages = [stack.enter_context(read_package(path)) for path in request.packages]
        base_config, base_model = BaseProvider(assets.bases_dir).get(
            packages[0].manifest, packages[0].root
        )
        profile = load_or_measure_profile(request, base_config, base_model, packages, print)
    path = folder / "profile.json"
    path.write_text(profile.model_dump_json(indent=2), encoding="utf-8")
    return path


def describe_packages(assets: DemoAssets) -> tuple[list[str], list[str]]:
    """One line per app (event statistics, per-frame quality by cut point), a line saying
    which apps learnt their object kind, and the apps that did not."""
    from mainstream.core.package import read_package

    lines = []
    failed = []
    for app, path in assets.packages.items():
        with read_package(path) as package:
            manifest = package.manifest
        stats = manifest.event_stats
        qualities = ", ".join(
            f"{c.cut_point} a={c.recall:.2f} q={c.false_positive_rate:.3f}"
            for c in manifest.candidates
        )
        lines.append(
            f"  {app:<7} length {stats.event_length_s:.2f} s, frequency "
            f"{stats.event_frequency:.3f}, c {stats.correlation:.2f} | {qualities}"
        )
        if max(c.recall for c in manifest.candidates) < WORKING_RECALL:
            failed.append(app)
    working = [app for app in assets.packages if app not in failed]
    lines.append(
        f"  {len(working)} of {len(assets.packages)} apps learnt their kind: {', '.join(working)}"
        + (
            f"; not learnt (per-frame recall < {WORKING_RECALL:g} at every cut point): "
            f"{', '.join(failed)}"
            if failed
            else ""
        )
    )
    return lines, failed


def label_counts(labels: Path, assets: DemoAssets) -> dict[str, int]:
    intervals = read_labels(labels)
    return {
        app: sum(interval.label == kind for interval in intervals)
        for app, kind in assets.positive_class.items()
    }


def number(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.2f}"


def table(
    results: list[tuple[float, float, list[AppReplayFigures] | str]], not_learnt: list[str]
) -> list[str]:
    """The fidelity table: one row per (budget, app), then the gap summary of each budget.

    Apps that never fire agree trivially (F1 0 predicted and measured); the summary leaves
    them out so they do not flatter the mean.
    """
    header = (
        f"{'budget':>6} {'ms/s':>7} {'app':<7} {'cut point':<16} {'fps':>4} {'X':>2} "
        f"{'events':>6} {'alarms':>6} | {'pred R':>6} {'P':>5} {'F1':>5} | "
        f"{'meas R':>6} {'P':>5} {'F1':>5} | {'|dF1|':>5}"
    )
    lines = [header, "-" * len(header)]
    summaries = []
    for share, budget, outcome in results:
        if isinstance(outcome, str):
            lines.append(f"{share:>6g} {budget:>7.1f} {outcome}")
            summaries.append(f"budget {share:g}: {outcome}")
            continue
        gaps = []
        for app in outcome:
            gap = None if app.measured_f1 is None else abs(app.predicted_f1 - app.measured_f1)
            if gap is not None and app.app not in not_learnt:
                gaps.append(gap)
            lines.append(
                f"{share:>6g} {budget:>7.1f} {app.app:<7} {app.cut_point:<16} "
                f"{app.planned_fps:>4g} {app.x_vote:>2} {app.labelled_events or 0:>6} "
                f"{app.false_alarms if app.false_alarms is not None else '-':>6} | "
                f"{app.predicted_recall:6.2f} {app.predicted_precision:5.2f} "
                f"{app.predicted_f1:5.2f} | {number(app.measured_recall):>6} "
                f"{number(app.measured_precision)} {number(app.measured_f1)} | {number(gap)}"
            )
        if gaps:
            held = "holds" if max(gaps) <= GOAL else "FAILS"
            summaries.append(
                f"budget {share:g} ({budget:.1f} ms/s): mean |dF1| {statistics.mean(gaps):.3f}, "
                f"max {max(gaps):.3f} over {len(gaps)} apps; goal <= {GOAL:g} {held}"
            )
    if not_learnt:
        summaries.append(f"(left out of the summary, not learnt: {', '.join(not_learnt)})")
    return [*lines, "", *summaries]


# ---------------------------------------------------------------------------------------------
# Independent scenes: train on one renderer configuration, test on another


@dataclass(frozen=True)
class SuiteSize:
    """How much test footage the independent suite renders."""

    scenes: int  # test scenes, each its own landscape, seed and calibration clip
    test_s: float  # test video per scene
    calibration_s: float  # calibration clip per scene


SUITE_SIZES = {
    # About 15 labelled events per app and scene: a few minutes once the assets are built.
    "quick": SuiteSize(scenes=2, test_s=150.0, calibration_s=90.0),
    # About 50 labelled events per app and scene (each kind covers a fifth of the time with
    # 2 s events: one event per 10 s).
    "default": SuiteSize(scenes=3, test_s=500.0, calibration_s=120.0),
}
# The test camera: what differs from the training scene (noise 0.04, drift 0.1, no tilt, the
# kinds' usual colours, no object kind the apps were not trained beside). Kinds the apps do not
# watch cross as distractors, on top of the apps' own kinds (whose share of the time stays).
TEST_SCENE: dict[str, Any] = {
    "noise": 0.07,
    "drift": 0.25,
    "view_offset": 0.04,
    "color_jitter": 0.3,
    "distractor_frequency": 0.12,
}
TEST_SEED = 100  # scene i: events seed TEST_SEED + i, landscape seed TEST_SCENE_SEED + i
TEST_SCENE_SEED = 1000
CALIBRATION_SEED_OFFSET = 50  # the calibration clip: same landscape, other objects and noise
FEEDBACK_MARKS = 20
SCORE_CHUNK_FRAMES = 1500  # frames per stem pass (bounds the memory of the features)
COLUMNS = ("counts", "posterior", "calibrated", "feedback")
COLUMN_TITLES = {
    "counts": "counts only",
    "posterior": "posterior",
    "calibrated": "+ calibration clip",
    "feedback": f"+ {FEEDBACK_MARKS} feedback marks",
    "oracle": "(test video's own counts and c)",
}
HINDSIGHT_GOAL = 0.95
BOOTSTRAP_RESAMPLES = 400
Z_90 = 1.645  # the normal quantile of a two-sided 90 % interval


def test_scene_config(
    config: DemoConfig, index: int, duration_s: float, calibration: bool
) -> SynthConfig:
    """Scene `index` of the test camera: its test video, or (calibration) a separate clip."""
    from trainer.synth import OBJECT_KINDS

    seed = TEST_SEED + index + (CALIBRATION_SEED_OFFSET if calibration else 0)
    distractors = [kind for kind in OBJECT_KINDS if kind not in config.kinds]
    values = {
        **scene_video_config(config, duration_s, seed).model_dump(),
        **TEST_SCENE,
        "scene_seed": TEST_SCENE_SEED + index,
        "distractor_kinds": distractors,
    }
    if not distractors:
        values["distractor_frequency"] = 0.0
    return SynthConfig.model_validate(values)


def rendered(folder: Path, name: str, synth: SynthConfig, progress: bool) -> tuple[Path, Path]:
    """A video of `synth` under `folder`, keyed by its settings (rendered once, then cached)."""
    from trainer.synth import generate_video

    key = hashlib.sha256(synth.model_dump_json().encode()).hexdigest()[:10]
    video = folder / f"{name}-{key}.avi"
    labels = video.with_suffix(".csv")
    if not (video.is_file() and labels.is_file()):
        generate_video(video, labels, synth, show_progress=progress)
    return video, labels


def calibrated_packages(
    assets: DemoAssets, clip: Path, clip_labels: Path, folder: Path
) -> dict[str, Path]:
    """Every app's package calibrated on `clip` (`mainstream calibrate`), cached by clip."""
    from trainer.calibrate import calibrate_package

    out: dict[str, Path] = {}
    for app, package in assets.packages.items():
        target = folder / f"{app}-calibrated-{clip.stem}.mpkg"
        if not target.is_file():
            calibrate_package(package, clip, clip_labels, target, bases_dir=assets.bases_dir)
        out[app] = target
    return out


def score_pass(
    video: Path, packages: dict[str, Path], bases_dir: Path, threshold: float, progress: bool
) -> dict[tuple[str, str], np.ndarray]:
    """Whether every candidate of every app fires on every frame of `video`.

    One pass of the base per chunk of frames gives the features at every cut point in use
    (`trainer.finetune.stem_features`, as calibration computes them); every head then runs
    on them. Frames are decoded as replay decodes them.
    """
    from edge_runtime.deployer import BaseProvider
    from edge_runtime.replay import iterate_video
    from mainstream.core.bases import INPUT_CUT, preprocess
    from mainstream.core.package import read_package
    from trainer.finetune import make_predictor, stem_features

    with ExitStack() as stack:
        opened = {app: stack.enter_context(read_package(path)) for app, path in packages.items()}
        first = next(iter(opened.values()))
        config, base = BaseProvider(bases_dir).get(first.manifest, first.root)
        heads = {}
        for app, package in opened.items():
            manifest = package.manifest
            positive = manifest.app.classes.index(manifest.app.positive_class)
            for candidate in manifest.candidates:
                model = package.load_candidate(candidate.cut_point)
                heads[(app, candidate.cut_point)] = (make_predictor(model), positive)
        cuts = sorted({cut for _, cut in heads})
        parts: dict[tuple[str, str], list[np.ndarray]] = {key: [] for key in heads}
        frames = iterate_video(video, config.input_size)
        while chunk := [image for _, image in itertools.islice(frames, SCORE_CHUNK_FRAMES)]:
            images = np.stack(chunk)
            features = stem_features(base, cuts, images, config, progress=progress)
            for key, (predict, positive) in heads.items():
                inputs = preprocess(config, images) if key[1] == INPUT_CUT else features[key[1]]
                parts[key].append(predict(inputs)[:, positive] >= threshold)
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


@dataclass(frozen=True)
class AppWindows:
    """One app's windows on one video, as replay measures them (DESIGN §2): its labelled
    events, and the time outside them cut into windows of their mean length."""

    events: list[tuple[int, int]]
    negatives: list[tuple[int, int]]


def app_windows(labels: Path, kind: str, frames: int) -> AppWindows:
    own = [interval for interval in read_labels(labels) if interval.label == kind]
    if not own:
        raise MainstreamError(f"{labels.name}: no labelled event of {kind!r}")
    mean_length = max(1, round(float(np.mean([i.end_frame - i.start_frame + 1 for i in own]))))
    return AppWindows(
        events=[(i.start_frame, i.end_frame) for i in own],
        negatives=negative_windows(own, frames, mean_length),
    )


def analysed_frames(frames: int, camera_fps: float, fps: float) -> np.ndarray:
    """The frames a rate accumulator at `fps` under the camera keeps (edge_runtime.rate).

    The runtime nests each app's selector under its stem segment's rate, which keeps the
    rate and the even spacing but can shift which frames; here every option is selected
    straight from the camera, so that all options are measured alike.
    """
    fraction = min(1.0, fps / camera_fps)
    steps = np.floor(np.arange(frames) * fraction + 1e-9)
    keep = np.ones(frames, dtype=bool)
    keep[1:] = steps[1:] > steps[:-1]
    return np.nonzero(keep)[0]


def window_hits(
    analysed: np.ndarray, fired: np.ndarray, windows: list[tuple[int, int]], x_vote: int
) -> np.ndarray:
    """Per window: did its analysed frames hold `x_vote` consecutive fires
    (replay.window_detections, on arrays)?"""
    positions = np.arange(len(fired))
    last_miss = np.maximum.accumulate(np.where(fired, -1, positions))
    run = np.where(fired, positions - last_miss, 0)
    bounds = np.array(windows, dtype=np.int64).reshape(-1, 2)
    lows = np.searchsorted(analysed, bounds[:, 0], side="left")
    highs = np.searchsorted(analysed, bounds[:, 1], side="right")
    hits = np.zeros(len(bounds), dtype=bool)
    for index, (low, high) in enumerate(zip(lows, highs, strict=True)):
        if high - low >= x_vote:
            inside = np.minimum(run[low:high], np.arange(1, high - low + 1))
            hits[index] = bool(inside.max() >= x_vote)
    return hits


@dataclass(frozen=True)
class Measured:
    """Replay's figures for one option on one video."""

    recall: float
    precision: float
    f1: float
    detected: int
    false_alarms: int
    event_hits: np.ndarray  # per labelled event: detected
    window_hits: np.ndarray  # per negative window: a false alarm

    def sampling_sd(self, resamples: int = BOOTSTRAP_RESAMPLES) -> float:
        """The measured F1's own sampling error: its standard deviation over bootstrap
        resamples of the labelled events and the negative windows (fixed seed)."""
        rng = np.random.default_rng(0)
        events, windows = self.event_hits, self.window_hits
        detected = events[rng.integers(0, len(events), (resamples, len(events)))].sum(axis=1)
        alarms = (
            windows[rng.integers(0, len(windows), (resamples, len(windows)))].sum(axis=1)
            if len(windows)
            else np.zeros(resamples)
        )
        recall = detected / len(events)
        reported = detected + alarms
        precision = np.where(reported > 0, detected / np.maximum(reported, 1), 1.0)
        total = recall + precision
        f1 = np.where(detected > 0, 2 * recall * precision / np.where(total > 0, total, 1), 0.0)
        return float(f1.std())


def measure_option(
    fires: np.ndarray, windows: AppWindows, camera_fps: float, fps: float, x_vote: int
) -> Measured:
    analysed = analysed_frames(len(fires), camera_fps, fps)
    fired = fires[analysed]
    event_hits = window_hits(analysed, fired, windows.events, x_vote)
    negative_hits = window_hits(analysed, fired, windows.negatives, x_vote)
    detected, false_alarms = int(event_hits.sum()), int(negative_hits.sum())
    recall = detected / len(windows.events)
    precision = detected / (detected + false_alarms) if detected + false_alarms else 1.0
    return Measured(
        recall,
        precision,
        f1_from(recall, precision),
        detected,
        false_alarms,
        event_hits,
        negative_hits,
    )


@dataclass
class SceneData:
    """One test scene: its fires, windows, and the packages before and after calibration."""

    index: int
    video: Path
    frames: int
    fires: dict[tuple[str, str], np.ndarray]
    windows: dict[str, AppWindows]
    specs: dict[str, dict[str, AppSpec]]  # column -> app -> spec (feedback: made per plan)
    measured: dict[tuple[str, str, float, int], Measured] = field(default_factory=dict)

    def measure(self, app: str, cut: str, fps: float, x_vote: int, camera_fps: float) -> Measured:
        key = (app, cut, fps, x_vote)
        if key not in self.measured:
            self.measured[key] = measure_option(
                self.fires[(app, cut)], self.windows[app], camera_fps, fps, x_vote
            )
        return self.measured[key]


def app_specs(packages: dict[str, Path], x_vote: int | str) -> dict[str, AppSpec]:
    """The apps as a node plans them from these packages (`DeployedApp.app_spec`)."""
    from edge_runtime.deployer import DeployedApp
    from edge_runtime.replay import REPLAY_CAMERA
    from mainstream.core.package import read_package

    specs = {}
    for app, path in packages.items():
        with read_package(path) as package:
            manifest = package.manifest
        specs[app] = DeployedApp(
            name=app,
            camera=REPLAY_CAMERA,
            manifest=manifest,
            x_vote=x_vote,  # type: ignore[arg-type]
        ).app_spec()
    return specs


def counts_only(spec: AppSpec) -> AppSpec:
    """The app as a package without evidence describes it: the ratios, taken as exact."""
    candidates = [c.model_copy(update={"evidence": None}) for c in spec.candidates]
    return spec.model_copy(update={"candidates": candidates, "correlation_interval": None})


def feedback_spec(
    spec: AppSpec, planned: AppPlan, camera_fps: float, true_marks: int, false_marks: int
) -> AppSpec:
    """The app after an operator's marks on events reported under `planned`, as the node
    corrects it (mainstream.node.feedback): a precision posterior centred on the predicted
    precision, the FPR shift that gives its mean, applied to every candidate."""
    from mainstream.node.feedback import FeedbackConfig
    from scheduler.feedback import (
        MarkedOption,
        implied_shift,
        mean_precision,
        option_params,
        precision_posterior,
        with_shift,
    )

    feedback = FeedbackConfig()  # the node's defaults
    params = option_params(spec, camera_fps, planned.cut_point, planned.fps, planned.x_vote)
    if params is None or true_marks + false_marks < feedback.min_reviews:
        return spec  # too few marks: the node keeps the package's figures
    options = [MarkedOption(params, true_marks + false_marks)]
    posterior = precision_posterior(
        mean_precision(options), true_marks, false_marks, feedback.prior_strength
    )
    return with_shift(spec, implied_shift(posterior.mean, options))


def sample_marks(measured: Measured, rng: np.random.Generator) -> tuple[int, int]:
    """An operator's verdicts on up to FEEDBACK_MARKS reported events drawn at random:
    (true, false) against the labels."""
    reported = np.array([True] * measured.detected + [False] * measured.false_alarms)
    if not len(reported):
        return 0, 0
    chosen = rng.choice(reported, size=min(FEEDBACK_MARKS, len(reported)), replace=False)
    return int(chosen.sum()), int((~chosen).sum())


def scene_problem(
    profile: Profile, budget: float, camera_fps: float, specs: list[AppSpec]
) -> Problem:
    """The node's problem (`deployer.problem_for`) for these apps."""
    return Problem(
        camera_fps=camera_fps,
        budget=budget,
        fps_options=[fps for fps in DEFAULT_FPS_OPTIONS if fps <= camera_fps] or [camera_fps],
        profiles=[profile],
        apps=specs,
    )


def hindsight_plan(
    problem: Problem, scene: SceneData, camera_fps: float
) -> dict[str, tuple[Option, Measured]]:
    """The schedule with the best measured mean F1 at the problem's budget: the scheduler's
    own search and cost model over every (cut, fps, X) option, scored by replay's figures."""
    from scheduler.options import build_option_tables, build_search_space, prune_dominated
    from scheduler.solvers import solve

    tables = []
    for table in build_option_tables(problem):
        options = []
        for option in table.options:
            measured = scene.measure(
                table.name, option.cut_point, option.fps, option.x_vote, camera_fps
            )
            options.append(
                option._replace(
                    recall=measured.recall, precision=measured.precision, f1=measured.f1
                )
            )
        rate_index = np.array([problem.fps_options.index(o.fps) for o in options])
        kept = prune_dominated(
            np.array([o.stem_depth for o in options]),
            rate_index,
            np.array([o.f1 for o in options]),
        )
        tables.append(table.with_options(options, kept))
    space = build_search_space(problem, tables)
    solution = solve(space, problem.objective, "auto", 30.0)
    if solution is None:
        raise MainstreamError("no schedule fits the budget")
    chosen = {}
    for app, position in enumerate(solution.choice):
        option = space.option(app, position)
        name = tables[app].name
        chosen[name] = (
            option,
            scene.measure(name, option.cut_point, option.fps, option.x_vote, camera_fps),
        )
    return chosen


@dataclass(frozen=True)
class Cell:
    """One app under one column: the plan's prediction and replay's measurement."""

    cut_point: str
    fps: float
    x_vote: int
    predicted: float
    interval: tuple[float, float] | None
    measured: float
    measured_sd: float  # the measurement's own sampling error (bootstrap)
    note: str = ""

    @property
    def gap(self) -> float:
        return abs(self.predicted - self.measured)

    @property
    def inside(self) -> bool | None:
        if self.interval is None:
            return None
        low, high = self.interval
        return low - 1e-9 <= self.measured <= high + 1e-9

    @property
    def inside_allowing_sampling(self) -> bool | None:
        """Inside the interval widened by the measurement's own 90 % sampling error: what a
        perfect prediction of the expected F1 would reach on this many events."""
        if self.interval is None:
            return None
        low, high = self.interval
        margin = Z_90 * self.measured_sd + 1e-9
        return low - margin <= self.measured <= high + margin

    @property
    def option(self) -> str:
        return f"{short_cut(self.cut_point)} {self.fps:g}/{self.x_vote}"


@dataclass
class Row:
    scene: int
    share: float
    budget: float
    app: str
    cells: dict[str, Cell]
    hindsight: float  # the app's measured F1 in the hindsight-best schedule
    hindsight_option: str


def short_cut(cut_point: str) -> str:
    """`conv_pw_7_relu` -> `pw7`, for narrow tables."""
    parts = cut_point.split("_")
    if len(parts) >= 3 and parts[0] == "conv" and parts[2].isdigit():
        return f"{parts[1]}{parts[2]}"
    return cut_point[:8]


def plan_cells(
    problem: Problem, scene: SceneData, camera_fps: float
) -> tuple[dict[str, AppPlan], dict[str, Cell]]:
    plan = make_plan(problem, with_baselines=False)
    planned = {app.name: app for app in plan.apps}
    cells = {}
    for name, app in planned.items():
        measured = scene.measure(name, app.cut_point, app.fps, app.x_vote, camera_fps)
        cells[name] = Cell(
            cut_point=app.cut_point,
            fps=app.fps,
            x_vote=app.x_vote,
            predicted=app.f1,
            interval=app.f1_interval,
            measured=measured.f1,
            measured_sd=measured.sampling_sd(),
        )
    return planned, cells


def scene_rows(
    scene: SceneData, profile: Profile, shares: list[float], apps: int, camera_fps: float
) -> list[Row | str]:
    """Every budget of one scene: the four columns' plans and the hindsight-best schedule."""
    rows: list[Row | str] = []
    for share in shares:
        budget = derived_budget(profile, apps, camera_fps, share)
        problems = {
            column: scene_problem(profile, budget, camera_fps, list(scene.specs[column].values()))
            for column in ("counts", "posterior", "calibrated", "oracle")
        }
        try:
            best = hindsight_plan(problems["posterior"], scene, camera_fps)
            results = {
                column: plan_cells(problem, scene, camera_fps)
                for column, problem in problems.items()
            }
            posterior_plan, _ = results["posterior"]
            rng = np.random.default_rng([scene.index, round(share * 1000)])
            marked = {}
            specs = []
            for name, spec in scene.specs["posterior"].items():
                app = posterior_plan[name]
                true_marks, false_marks = sample_marks(
                    scene.measure(name, app.cut_point, app.fps, app.x_vote, camera_fps), rng
                )
                marked[name] = f"{true_marks}/{true_marks + false_marks}"
                specs.append(feedback_spec(spec, app, camera_fps, true_marks, false_marks))
            results["feedback"] = plan_cells(
                scene_problem(profile, budget, camera_fps, specs), scene, camera_fps
            )
        except MainstreamError as error:
            rows.append(f"scene {scene.index} budget {share:g}: no plan: {error}")
            continue
        for name in scene.specs["posterior"]:
            option, measured = best[name]
            cells = {column: results[column][1][name] for column in (*COLUMNS, "oracle")}
            cells["feedback"] = replace(cells["feedback"], note=marked[name])
            rows.append(
                Row(
                    scene=scene.index,
                    share=share,
                    budget=budget,
                    app=name,
                    cells=cells,
                    hindsight=measured.f1,
                    hindsight_option=(
                        f"{short_cut(option.cut_point)} {option.fps:g}/{option.x_vote}"
                    ),
                )
            )
    return rows


def cell_text(cell: Cell) -> str:
    interval = (
        f"[{cell.interval[0]:.2f},{cell.interval[1]:.2f}]"
        if cell.interval is not None
        else f"{'-':^11}"
    )
    inside = {None: " ", True: "y", False: "n"}[cell.inside]
    return f"{cell.option:<11} {cell.predicted:4.2f} {interval} {cell.measured:4.2f} {inside}"


def independent_table(rows: list[Row | str]) -> list[str]:
    """One row per (scene, budget, app): each column's predicted F1 [90 % interval],
    measured F1 and whether it lies inside; then the hindsight-best schedule's F1 for the app."""
    width = len(cell_text(Cell("", 1, 1, 0.0, (0.0, 0.0), 0.0, 0.0)))
    titles = " | ".join(f"{COLUMN_TITLES[column]:<{width}}" for column in COLUMNS)
    header = f"{'scene':>5} {'budget':>6} {'app':<7} | {titles} | hindsight"
    plans = " | ".join(f"{'cut fps/X   pred [90% int.]  meas in':<{width}}" for _ in COLUMNS)
    lines = [header, f"{'':>5} {'':>6} {'':<7} | {plans} | F1 option", "-" * len(header)]
    for row in rows:
        if isinstance(row, str):
            lines.append(row)
            continue
        cells = " | ".join(cell_text(row.cells[column]) for column in COLUMNS)
        lines.append(
            f"{row.scene:>5} {row.share:>6g} {row.app:<7} | {cells} | "
            f"{row.hindsight:4.2f} {row.hindsight_option}"
        )
    return lines


def independent_summary(rows: list[Row | str]) -> list[str]:
    """Per column: mean |predicted - measured|, coverage of the 90 % interval, and the
    hindsight ratio (chosen schedule's mean measured F1 over the best schedule's, per scene
    and budget), against the issue's goals."""
    done = [row for row in rows if isinstance(row, Row)]
    if not done:
        return ["no budget had a plan"]
    sds = [row.cells["posterior"].measured_sd for row in done]
    lines = [
        f"measured F1's own sampling error (bootstrap over events and windows): median sd "
        f"{statistics.median(sds):.3f}, max {max(sds):.3f}"
    ]
    groups: dict[tuple[int, float], list[Row]] = {}
    for row in done:
        groups.setdefault((row.scene, row.share), []).append(row)
    for column in (*COLUMNS, "oracle"):
        cells = [row.cells[column] for row in done]
        gaps = [cell.gap for cell in cells]
        inside = [cell.inside for cell in cells if cell.inside is not None]
        allowing = [
            cell.inside_allowing_sampling
            for cell in cells
            if cell.inside_allowing_sampling is not None
        ]
        ratios = []
        for group in groups.values():
            best = statistics.mean(row.hindsight for row in group)
            chosen = statistics.mean(row.cells[column].measured for row in group)
            ratios.append(chosen / best if best > 0 else 1.0)
        goal = 0.05 if column in ("calibrated", "oracle") else 0.10
        coverage = (
            f"{sum(inside) / len(inside):4.0%} of {len(inside)} ({sum(allowing) / len(allowing):.0%} "
            "allowing for sampling)"
            if inside
            else "n/a (no interval)"
        )
        lines.append(
            f"{COLUMN_TITLES[column]:<31} mean |dF1| {statistics.mean(gaps):.3f} "
            f"(max {max(gaps):.3f}; goal <= {goal:.2f} {'holds' if statistics.mean(gaps) <= goal else 'FAILS'}) | "
            f"90% coverage {coverage} (goal >= 90%) | hindsight ratio mean "
            f"{statistics.mean(ratios):.3f}, min {min(ratios):.3f}, "
            f"{sum(r >= HINDSIGHT_GOAL for r in ratios)}/{len(ratios)} >= {HINDSIGHT_GOAL:g}"
        )
    return lines


def oracle_specs(
    specs: dict[str, AppSpec],
    fires: dict[tuple[str, str], np.ndarray],
    windows: dict[str, AppWindows],
) -> dict[str, AppSpec]:
    """A diagnostic: the apps with the test video's own per-frame counts and correlation, as
    a perfect calibration (counts and c) would give them. What is left of the gap then is the
    event model's and the measurement's."""
    from mainstream.core.manifest import FrameEvidence
    from scheduler.estimates import correlation_posterior
    from trainer.event_stats import EventInterval, event_transitions, negative_transitions

    oracle = {}
    for app, spec in specs.items():
        intervals = [EventInterval(start, end, app) for start, end in windows[app].events]
        candidates, best = [], None
        for candidate in spec.candidates:
            fired = fires[(app, candidate.cut_point)]
            positive = np.zeros(len(fired), dtype=bool)
            for start, end in windows[app].events:
                positive[start : end + 1] = True
            counts = FrameEvidence(
                positive_frames=int(positive.sum()),
                positive_fires=int(fired[positive].sum()),
                negative_frames=int((~positive).sum()),
                negative_fires=int(fired[~positive].sum()),
                events=len(intervals),
                split="the test video itself",
            )
            candidates.append(
                candidate.model_copy(
                    update={
                        "recall": counts.positive_fires / counts.positive_frames,
                        "false_positive_rate": counts.negative_fires / counts.negative_frames,
                        "evidence": counts,
                    }
                )
            )
            accuracy = fired[positive].sum() + (~fired[~positive]).sum()
            if best is None or accuracy >= best[0]:
                best = (accuracy, fired)
        assert best is not None
        transitions = event_transitions(best[1], intervals)
        if not transitions.identifiable:  # as the trainer falls back
            transitions = negative_transitions(best[1], intervals, None)
        correlation = correlation_posterior(transitions)
        oracle[app] = spec.model_copy(
            update={
                "candidates": candidates,
                "correlation": correlation.mean,
                "correlation_interval": (correlation.low, correlation.high),
            }
        )
    return oracle


def frame_rates(scene: SceneData, labels: Path, kinds: dict[str, str]) -> list[str]:
    """Per app and cut point: the per-frame recall a and FP rate q each column plans on,
    beside those of the test video itself (what a perfect calibration would give)."""
    intervals = read_labels(labels)
    lines = []
    for app, kind in kinds.items():
        positive = np.zeros(scene.frames, dtype=bool)
        for interval in intervals:
            if interval.label == kind:
                positive[interval.start_frame : interval.end_frame + 1] = True
        parts = []
        for candidate in scene.specs["posterior"][app].candidates:
            cut = candidate.cut_point
            fires = scene.fires[(app, cut)]
            planned = {
                column: next(
                    c for c in scene.specs[column][app].candidates if c.cut_point == cut
                ).planned_rates(None)
                for column in ("posterior", "calibrated")
            }
            parts.append(
                f"{short_cut(cut)} a {planned['posterior'][0]:.2f}/"
                f"{planned['calibrated'][0]:.2f}/{fires[positive].mean():.2f} q "
                f"{planned['posterior'][1]:.3f}/{planned['calibrated'][1]:.3f}/"
                f"{fires[~positive].mean():.3f}"
            )
        lines.append(f"  scene {scene.index} {app:<7} " + ", ".join(parts))
    return lines


def run_independent(arguments: argparse.Namespace, x_vote: int | str, progress: bool) -> None:
    """The independent-scenes suite (see `--suite independent`)."""
    size = SUITE_SIZES["quick" if arguments.quick else "default"]
    size = SuiteSize(
        scenes=arguments.scenes or size.scenes,
        test_s=arguments.test_s or size.test_s,
        calibration_s=arguments.calibration_s or size.calibration_s,
    )
    config = DemoConfig.model_validate(
        {
            **DemoConfig.preset(apps=arguments.apps).model_dump(),
            "train_duration_s": arguments.train_s,
        }
    )
    probe = test_scene_config(config, 0, size.test_s, calibration=False)
    print(
        f"{config.apps} apps ({', '.join(APP_OF_KIND[kind] for kind in config.kinds)}) trained "
        f"on {config.train_duration_s:g} s of the demo scene (noise {config.noise:g}, drift 0.1, "
        f"seed {config.seed}); tested on {size.scenes} scenes of another camera: "
        + ", ".join(f"{key} {value:g}" for key, value in TEST_SCENE.items())
        + f", distractors {probe.distractor_kinds or 'none'}, landscape seeds "
        f"{TEST_SCENE_SEED}..{TEST_SCENE_SEED + size.scenes - 1}; {size.test_s:g} s test video "
        f"and {size.calibration_s:g} s calibration clip per scene; X {x_vote}; "
        "measured with one Keras stem pass per video"
    )
    shares = [float(share) for share in arguments.budgets.split(",")]
    steps = Steps(total=4 + size.scenes, echo=print)
    assets = prepare_assets(
        DemoOptions(
            config=config, data_dir=arguments.data_dir, fresh=arguments.fresh, progress=progress
        ),
        steps,
    )
    print("packages (per-frame recall a and false-positive rate q by cut point):")
    description, _ = describe_packages(assets)
    print("\n".join(description))
    folder = assets_dir(arguments.data_dir, config) / "fidelity" / "independent"
    folder.mkdir(parents=True, exist_ok=True)
    with steps.step("measuring this machine's cost profile") as note:
        profile_path = measured_profile(assets, arguments.engine, folder)
        profile = Profile.model_validate_json(profile_path.read_text(encoding="utf-8"))
        note(f"whole network {profile.total_cost:.2f} ms/frame")
    camera_fps = config.fps
    trained = app_specs(dict(assets.packages), x_vote)
    rows: list[Row | str] = []
    rates: list[str] = []
    events: dict[str, int] = dict.fromkeys(assets.packages, 0)
    for index in range(size.scenes):
        with steps.step(f"test scene {index}: render, calibrate, score, plan") as note:
            video, labels = rendered(
                folder,
                f"scene{index}-test",
                test_scene_config(config, index, size.test_s, calibration=False),
                progress,
            )
            clip, clip_labels = rendered(
                folder,
                f"scene{index}-calibration",
                test_scene_config(config, index, size.calibration_s, calibration=True),
                progress,
            )
            calibrated = calibrated_packages(assets, clip, clip_labels, folder)
            fires = score_pass(video, dict(assets.packages), assets.bases_dir, 0.5, progress)
            frames = len(next(iter(fires.values())))
            windows = {
                app: app_windows(labels, kind, frames)
                for app, kind in assets.positive_class.items()
            }
            for app, found in windows.items():
                events[app] += len(found.events)
            scene = SceneData(
                index=index,
                video=video,
                frames=frames,
                fires=fires,
                windows=windows,
                specs={
                    "counts": {app: counts_only(spec) for app, spec in trained.items()},
                    "posterior": trained,
                    "calibrated": app_specs(calibrated, x_vote),
                    "oracle": oracle_specs(trained, fires, windows),
                },
            )
            rows.extend(scene_rows(scene, profile, shares, config.apps, camera_fps))
            rates.extend(frame_rates(scene, labels, assets.positive_class))
            note(
                f"{video.name}, {frames} frames; labelled events "
                + ", ".join(f"{app} {len(w.events)}" for app, w in windows.items())
            )
    print("")
    print(
        "Independent scenes: predicted event F1 [90 % interval] vs measured (replay's "
        "definitions) per column; y/n: measured inside the interval; feedback marks "
        "true/marked are listed in the summary"
    )
    print("\n".join(independent_table(rows)))
    print("")
    print(
        "per-frame recall a and FP rate q as planned (trainer's posterior / after the "
        "calibration clip) and as the test video has them:"
    )
    print("\n".join(rates))
    print("test events per app: " + ", ".join(f"{app} {count}" for app, count in events.items()))
    marks = [
        f"s{row.scene}/{row.share:g}/{row.app} {row.cells['feedback'].note}"
        for row in rows
        if isinstance(row, Row)
    ]
    print("feedback marks (true/marked): " + ", ".join(marks))
    print("\n".join(independent_summary(rows)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--suite",
        default="demo",
        choices=("demo", "independent"),
        help="demo: replay a held-out video of the training scene (default); independent: "
        "test on scenes of another camera, four ways of estimating (see above)",
    )
    parser.add_argument(
        "--apps",
        type=int,
        default=None,
        choices=range(1, len(APP_OF_KIND) + 1),
        help=f"apps, one per object kind in the order {list(APP_OF_KIND.values())} (default 4; "
        "independent: 3, the fourth kind crossing the test scenes as an unseen distractor)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"independent: the quick size ({SUITE_SIZES['quick'].scenes} scenes of "
        f"{SUITE_SIZES['quick'].test_s:g} s) instead of {SUITE_SIZES['default'].scenes} of "
        f"{SUITE_SIZES['default'].test_s:g} s",
    )
    parser.add_argument("--scenes", type=int, default=None, help="independent: test scenes")
    parser.add_argument(
        "--test-s", type=float, default=None, help="independent: test video per scene (s)"
    )
    parser.add_argument(
        "--calibration-s",
        type=float,
        default=None,
        help="independent: calibration clip per scene (s)",
    )
    parser.add_argument(
        "--held-out-s", type=float, default=2400.0, help="held-out video length (default 2400)"
    )
    parser.add_argument(
        "--train-s",
        type=float,
        default=TRAIN_DURATION_S,
        help=f"training video length (default {TRAIN_DURATION_S:g}); the packages' per-frame "
        "rates and correlation are measured on a quarter of it",
    )
    parser.add_argument(
        "--budgets",
        default=DEFAULT_BUDGETS,
        help=f"fractions of No-Sharing at the camera rate (default {DEFAULT_BUDGETS})",
    )
    parser.add_argument(
        "--x-vote",
        default=None,
        help="consecutive fires per event, or auto (default 1; independent: auto)",
    )
    parser.add_argument("--engine", default="keras", choices=("keras", "openvino"))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_demo_dir(),
        help=f"asset cache, shared with `mainstream demo` (default {default_demo_dir()})",
    )
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached assets")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    arguments = parser.parse_args()
    independent = arguments.suite == "independent"
    if arguments.apps is None:
        arguments.apps = 3 if independent else 4
    vote = arguments.x_vote or ("auto" if independent else "1")
    x_vote: int | str = vote if vote == "auto" else int(vote)
    progress = not arguments.quiet

    started = time.perf_counter()
    print(f"command: {shlex.join(['python', *sys.argv])}")
    if independent:
        run_independent(arguments, x_vote, progress)
        print(f"\nwall time {time.perf_counter() - started:.0f} s")
        return
    shares = [float(share) for share in arguments.budgets.split(",")]
    config = DemoConfig.model_validate(
        {
            **DemoConfig.preset(apps=arguments.apps).model_dump(),
            "train_duration_s": arguments.train_s,
        }
    )
    print(
        f"{config.apps} apps ({', '.join(APP_OF_KIND[kind] for kind in config.kinds)}); "
        f"MobileNet v1 alpha {config.alpha:g} at {config.input_size} px; camera {config.fps:g} "
        f"fps; training video {config.train_duration_s:g} s; X {x_vote}; engine "
        f"{arguments.engine}; assets "
        f"{assets_dir(arguments.data_dir, config)}"
    )
    steps = Steps(total=5 + len(shares), echo=print)
    assets = prepare_assets(
        DemoOptions(
            config=config, data_dir=arguments.data_dir, fresh=arguments.fresh, progress=progress
        ),
        steps,
    )
    print("packages (per-frame recall a and false-positive rate q by cut point):")
    description, not_learnt = describe_packages(assets)
    print("\n".join(description))
    with steps.step(
        f"held-out video: {arguments.held_out_s:g} s, seed offset {HELD_OUT_SEED_OFFSET}"
    ) as note:
        video, labels = held_out_video(assets, arguments.held_out_s, progress)
        counts = label_counts(labels, assets)
        note(f"{video.name}; labelled events " + ", ".join(f"{a} {n}" for a, n in counts.items()))
    output = assets_dir(arguments.data_dir, config) / "fidelity" / "runs"
    output.mkdir(parents=True, exist_ok=True)
    with steps.step("measuring this machine's cost profile") as note:
        profile_path = measured_profile(assets, arguments.engine, output)
        profile = Profile.model_validate_json(profile_path.read_text(encoding="utf-8"))
        note(f"whole network {profile.total_cost:.2f} ms/frame")

    results: list[tuple[float, float, list[AppReplayFigures] | str]] = []
    for share in shares:
        budget = derived_budget(profile, config.apps, config.fps, share)
        with steps.step(f"replaying at budget {share:g} x No-Sharing = {budget:g} ms/s") as note:
            try:
                summary = run_replay(
                    ReplayRequest(
                        video=video,
                        packages=list(assets.packages.values()),
                        events_out=output / f"events-{share:g}.jsonl",
                        budget=budget,
                        profile=profile_path,
                        labels=labels,
                        engine=arguments.engine,
                        x_vote=x_vote,
                        quiet_time_s=DEFAULT_QUIET_TIME_S,
                        bases_dir=assets.bases_dir,
                        show_progress=progress,
                    )
                )
            except MainstreamError as error:
                results.append((share, budget, f"no plan: {error}"))
                note(str(error))
                continue
            order = list(assets.packages)
            results.append((share, budget, sorted(summary.apps, key=lambda a: order.index(a.app))))
            note(f"{summary.frames} frames in {summary.wall_seconds:.0f} s")

    print("")
    print(
        f"Fidelity: predicted (scheduler, DESIGN §2) vs measured (replay of {video.name}, "
        f"{arguments.held_out_s:g} s) event recall R, precision P and F1"
    )
    print("\n".join(table(results, not_learnt)))
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
