"""Offline replay: run the whole runtime on a recorded video, in video time, as fast as possible.

Replay is how a user checks the product's promise before deploying: the event F1 the scheduler
predicts for a plan should be close to what the runtime measures on labelled video. Measured
figures use the event model's own definitions (DESIGN §2), so the two are comparable:
- recall: the share of labelled events in which the app's analysed frames contain a run of
  `x_vote` consecutive fires;
- false alarms: the time outside events is cut into windows of the mean event length; a window
  with such a run is a false alarm; precision = detected events / (detected + false alarms).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.dag import CameraDag, HeadSpec, build_camera_dag, segment_model
from edge_runtime.detector import DetectorConfig, EventDetector, Transition
from edge_runtime.engines import EngineName, compile_model
from mainstream.errors import MainstreamError, ModelError, SourceError
from mainstream.manifest import Manifest
from scheduler.event_model import f1_from
from scheduler.problem import DEFAULT_FPS_OPTIONS, AppSpec, Candidate, Plan, Problem, Profile

REPLAY_CAMERA = "replay"


@dataclass(frozen=True)
class LabelledInterval:
    start_frame: int
    end_frame: int  # inclusive
    label: str


@dataclass
class AppReplayFigures:
    app: str
    cut_point: str
    planned_fps: float
    analysed_fps: float
    x_vote: int
    events: int
    predicted_recall: float
    predicted_precision: float
    predicted_f1: float
    measured_recall: float | None = None
    measured_precision: float | None = None
    measured_f1: float | None = None
    labelled_events: int | None = None
    false_alarms: int | None = None


@dataclass
class ReplaySummary:
    video: str
    frames: int
    video_seconds: float
    wall_seconds: float
    camera_fps: float
    plan: dict[str, Any]
    apps: list[AppReplayFigures] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_labels(path: Path) -> list[LabelledInterval]:
    """CSV of `start_frame,end_frame,label` (end inclusive, header optional)."""
    import csv

    intervals: list[LabelledInterval] = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row_number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].strip().startswith("#"):
                continue
            if row_number == 1 and not row[0].strip().lstrip("-").isdigit():
                continue  # header
            try:
                start, end, label = int(row[0]), int(row[1]), row[2].strip()
            except (IndexError, ValueError) as error:
                raise SourceError(
                    f"{path}: row {row_number} is not 'start_frame,end_frame,label': {row}"
                ) from error
            if end < start:
                raise SourceError(f"{path}: row {row_number} ends before it starts: {row}")
            intervals.append(LabelledInterval(start, end, label))
    return intervals


def iterate_video(path: Path, size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a video file frame by frame as RGB at the model's input size."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"cannot open video {path}")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(
                cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
            )
            yield index, rgb
            index += 1
    finally:
        capture.release()


def video_properties(path: Path) -> tuple[float, int]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"cannot open video {path}")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    capture.release()
    if fps <= 0:
        raise SourceError(f"video {path} reports no frame rate")
    return fps, frames


def profile_key(manifest: Manifest) -> str:
    """Apps share a stem only when the base weights are identical: key profiles by fingerprint."""
    return f"{manifest.base_model.name}@{manifest.base_model.weights_fingerprint[:12]}"


def app_spec(manifest: Manifest, camera: str, x_vote: int | str) -> AppSpec:
    stats = manifest.event_stats
    return AppSpec(
        name=manifest.app.name,
        camera=camera,
        base_model=profile_key(manifest),
        event_length_s=stats.event_length_s,
        event_frequency=stats.event_frequency,
        correlation=stats.correlation,
        x_vote=x_vote,
        candidates=[
            Candidate(
                cut_point=c.cut_point, recall=c.recall, false_positive_rate=c.false_positive_rate
            )
            for c in manifest.candidates
        ],
    )


def window_detections(
    fired_frames: Sequence[tuple[int, bool]], start: int, end: int, x_vote: int
) -> bool:
    """Did the analysed frames inside [start, end] contain `x_vote` consecutive fires?"""
    run = 0
    for frame_index, fired in fired_frames:
        if frame_index < start:
            continue
        if frame_index > end:
            break
        run = run + 1 if fired else 0
        if run >= x_vote:
            return True
    return False


def negative_windows(
    intervals: Sequence[LabelledInterval], total_frames: int, window: int
) -> list[tuple[int, int]]:
    """Cut the time outside labelled events into windows of `window` frames."""
    covered = np.zeros(total_frames, dtype=bool)
    for interval in intervals:
        covered[max(0, interval.start_frame) : min(total_frames, interval.end_frame + 1)] = True
    windows: list[tuple[int, int]] = []
    start: int | None = None
    for index in range(total_frames + 1):
        free = index < total_frames and not covered[index]
        if free and start is None:
            start = index
        if start is not None and (not free or index - start == window):
            if index - start == window:
                windows.append((start, index - 1))
            start = index if free else None
    return windows


def measure_event_quality(
    fired_frames: Sequence[tuple[int, bool]],
    intervals: Sequence[LabelledInterval],
    total_frames: int,
    x_vote: int,
) -> tuple[float, float, float, int]:
    """(recall, precision, F1, false alarms) measured with the event model's definitions."""
    if not intervals:
        raise MainstreamError("no labelled events for this app: cannot measure event recall")
    detected = sum(
        window_detections(fired_frames, i.start_frame, i.end_frame, x_vote) for i in intervals
    )
    mean_length = max(
        1, round(float(np.mean([i.end_frame - i.start_frame + 1 for i in intervals])))
    )
    false_alarms = sum(
        window_detections(fired_frames, start, end, x_vote)
        for start, end in negative_windows(intervals, total_frames, mean_length)
    )
    recall = detected / len(intervals)
    precision = detected / (detected + false_alarms) if detected + false_alarms else 1.0
    return recall, precision, f1_from(recall, precision), false_alarms


@dataclass
class ReplayRequest:
    video: Path
    packages: list[Path]
    events_out: Path
    budget: float | None = None
    plan: Path | None = None
    labels: Path | None = None
    profile: Path | None = None
    engine: EngineName = "keras"
    x_vote: int | str = 1
    quiet_time_s: float = 1.0
    threshold: float = 0.5
    bases_dir: Path | None = None


def run_replay(
    request: ReplayRequest, progress: Callable[[str], None] | None = None
) -> ReplaySummary:
    """Plan (or take a plan), build the DAG, run the video through it and measure."""
    from mainstream.package import read_package
    from scheduler.planner import make_plan

    from mainstream.bases import cut_output_shape, preprocess

    say = progress or (lambda message: None)
    if (request.budget is None) == (request.plan is None):
        raise MainstreamError("give exactly one of --budget or --plan")
    camera_fps, _ = video_properties(request.video)
    with ExitStack() as stack:
        packages = [stack.enter_context(read_package(path)) for path in request.packages]
        names = [package.manifest.app.name for package in packages]
        if len(set(names)) != len(names):
            raise MainstreamError(f"two packages are for the same app: {names}")
        fingerprints = {package.manifest.base_model.weights_fingerprint for package in packages}
        if len(fingerprints) != 1:
            raise ModelError(
                "replay runs one base model per video: the packages were trained on different bases"
            )
        first = packages[0].manifest
        base_config, base_model = load_base_for(packages[0], request.bases_dir)
        size = base_config.input_size

        if request.plan is not None:
            plan = Plan.model_validate_json(request.plan.read_text(encoding="utf-8"))
        else:
            profile = load_or_measure_profile(request, base_config, base_model, packages, say)
            problem = Problem(
                camera_fps=camera_fps,
                budget=float(request.budget),  # type: ignore[arg-type]
                fps_options=[f for f in DEFAULT_FPS_OPTIONS if f <= camera_fps] or [camera_fps],
                profiles=[profile],
                apps=[
                    app_spec(package.manifest, REPLAY_CAMERA, request.x_vote)
                    for package in packages
                ],
            )
            say("planning")
            plan = make_plan(problem)

        by_app = {package.manifest.app.name: package for package in packages}
        heads = []
        for planned in plan.apps:
            if planned.name not in by_app:
                raise MainstreamError(
                    f"the plan names app {planned.name!r} but no package for it was given"
                )
            manifest = by_app[planned.name].manifest
            heads.append(
                HeadSpec(
                    app=planned.name,
                    cut_point=planned.cut_point,
                    fps=min(planned.fps, camera_fps),
                    positive_index=manifest.app.classes.index(manifest.app.positive_class),
                    model=by_app[planned.name].load_candidate(planned.cut_point),
                    base_fingerprint=manifest.base_model.weights_fingerprint,
                )
            )
        from mainstream.bases import discover_cut_points

        say("building the DAG")
        dag = build_camera_dag(
            camera=REPLAY_CAMERA,
            camera_fps=camera_fps,
            heads=heads,
            base_model=base_model,
            base_fingerprint=first.base_model.weights_fingerprint,
            cut_points_in_order=discover_cut_points(base_model),
            segment_model=segment_model,
            cut_shape=cut_output_shape,
            compile_fn=lambda model: compile_model(model, request.engine),
            preprocess=lambda batch: preprocess(base_config, batch),
        )
        return _run(request, plan, dag, camera_fps, size, by_app, say)


def _run(
    request: ReplayRequest,
    plan: Plan,
    dag: CameraDag,
    camera_fps: float,
    size: int,
    packages: dict[str, Any],
    say: Callable[[str], None],
) -> ReplaySummary:
    from tqdm import tqdm

    planned = {app.name: app for app in plan.apps}
    detectors = {
        name: EventDetector(
            name, REPLAY_CAMERA, DetectorConfig(request.threshold, app.x_vote, request.quiet_time_s)
        )
        for name, app in planned.items()
    }
    fired: dict[str, list[tuple[int, bool]]] = {name: [] for name in planned}
    events: dict[str, int] = dict.fromkeys(planned, 0)
    request.events_out.parent.mkdir(parents=True, exist_ok=True)
    temporary = request.events_out.with_name(request.events_out.name + ".partial")
    started = time.perf_counter()
    frames = 0
    _, frame_count = video_properties(request.video)
    with open(temporary, "w", encoding="utf-8") as sink:

        def emit(changes: list[Any]) -> None:
            for change in changes:
                if change.transition is Transition.END:
                    events[change.event.app] += 1
                    sink.write(json.dumps(asdict(change.event)) + "\n")

        for index, image in tqdm(
            iterate_video(request.video, size),
            total=frame_count or None,
            desc="replay",
            unit="frame",
            leave=False,
        ):
            timestamp = index / camera_fps
            for score in dag.process(image, index, timestamp):
                fired[score.app].append((index, score.score >= request.threshold))
                emit(detectors[score.app].observe(timestamp, index, score.score))
            frames = index + 1
        for detector in detectors.values():
            emit(detector.flush())
    temporary.replace(request.events_out)
    wall = time.perf_counter() - started
    video_seconds = frames / camera_fps

    intervals = read_labels(request.labels) if request.labels else None
    figures = []
    for name, app in planned.items():
        analysed = len(fired[name])
        item = AppReplayFigures(
            app=name,
            cut_point=app.cut_point,
            planned_fps=app.fps,
            analysed_fps=analysed / video_seconds if video_seconds else 0.0,
            x_vote=app.x_vote,
            events=events[name],
            predicted_recall=app.recall,
            predicted_precision=app.precision,
            predicted_f1=app.f1,
        )
        if intervals is not None:
            positive = packages[name].manifest.app.positive_class
            own = [i for i in intervals if i.label == positive]
            if own:
                recall, precision, f1, false_alarms = measure_event_quality(
                    fired[name], own, frames, app.x_vote
                )
                item.measured_recall, item.measured_precision, item.measured_f1 = (
                    recall,
                    precision,
                    f1,
                )
                item.labelled_events, item.false_alarms = len(own), false_alarms
        figures.append(item)
    return ReplaySummary(
        video=str(request.video),
        frames=frames,
        video_seconds=video_seconds,
        wall_seconds=wall,
        camera_fps=camera_fps,
        plan=plan.model_dump(mode="json"),
        apps=figures,
    )


def load_base_for(package: Any, bases_dir: Path | None) -> tuple[Any, Any]:
    """The base a package was trained on: bundled weights first, then the local base registry."""
    from mainstream.bases import BaseConfig, build_base, load_registered_base, weights_fingerprint
    from mainstream.settings import Settings

    info = package.manifest.base_model
    bundled = package.manifest.base_weights
    if bundled:
        config = BaseConfig(
            name=info.name,
            input_size=info.input_shape[0],
            alpha=info.alpha or 1.0,
            weights=str(package.root / bundled["file"]),
        )
        model = build_base(config)
        if weights_fingerprint(model) != info.weights_fingerprint:
            raise ModelError(
                "the package's bundled base weights do not match its weights_fingerprint"
            )
        return config, model
    directory = bases_dir or Settings().bases_dir
    return load_registered_base(info.weights_fingerprint, directory)


def load_or_measure_profile(
    request: ReplayRequest,
    config: Any,
    base_model: Any,
    packages: Sequence[Any],
    say: Callable[[str], None],
) -> Profile:
    """A stored profile (re-keyed to this base), or a fresh measurement over the cuts in use."""
    from mainstream.bases import discover_cut_points

    key = profile_key(packages[0].manifest)
    if request.profile is not None:
        profile = Profile.model_validate_json(request.profile.read_text(encoding="utf-8"))
        return profile.model_copy(update={"base_model": key})
    from edge_runtime.profiler import measure_profile

    order = discover_cut_points(base_model)
    wanted = {c.cut_point for package in packages for c in package.manifest.candidates} | {"input"}
    cuts = [cut for cut in order if cut in wanted]
    say(f"measuring the cost profile of {len(cuts)} cut points")
    profile = measure_profile(
        config, request.engine, cut_points=cuts, base_model=base_model, repeats=7
    )
    return profile.model_copy(update={"base_model": key})
