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

import csv
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from edge_runtime.deployer import (
    BaseProvider,
    DeployedApp,
    build_deployments,
    problem_for,
    profile_key,
)
from edge_runtime.detector import EventDetector, Transition
from edge_runtime.engines import EngineName, Precision
from edge_runtime.profiler import measure_profile
from edge_runtime.runtime import CameraDeployment
from mainstream.core.bases import discover_cut_points
from mainstream.core.errors import MainstreamError, ModelError, SourceError
from mainstream.core.package import read_package
from scheduler.event_model import f1_from
from scheduler.planner import make_plan
from scheduler.problem import Plan, Profile

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
    predicted_f1_interval: tuple[float, float] | None = None  # 90 %; None: figures as given
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
    import cv2  # OpenCV loads only when frames are decoded or drawn

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
    import cv2  # OpenCV loads only when frames are decoded or drawn

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"cannot open video {path}")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    capture.release()
    if fps <= 0:
        raise SourceError(f"video {path} reports no frame rate")
    return fps, frames


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
    precision: Precision = "f32"  # OpenVINO's compute precision (the Keras engine is f32)
    x_vote: int | str = 1
    quiet_time_s: float | Literal["auto"] = "auto"  # auto: the event model's window
    threshold: float = 0.5
    bases_dir: Path | None = None
    show_progress: bool = True  # a progress bar over the video's frames (on stderr)


def run_replay(
    request: ReplayRequest, progress: Callable[[str], None] | None = None
) -> ReplaySummary:
    """Plan (or take a plan), build the DAG, run the video through it and measure."""

    say = progress or (lambda message: None)
    if (request.budget is None) == (request.plan is None):
        raise MainstreamError("give exactly one of --budget or --plan")
    camera_fps, _ = video_properties(request.video)
    with ExitStack() as stack:
        packages = {}
        for path in request.packages:
            package = stack.enter_context(read_package(path))
            name = package.manifest.app.name
            if name in packages:
                raise MainstreamError(f"two packages are for the same app: {name!r}")
            packages[name] = package
        apps = {
            name: DeployedApp(
                name=name,
                camera=REPLAY_CAMERA,
                manifest=package.manifest,
                x_vote=request.x_vote,  # type: ignore[arg-type]
                threshold=request.threshold,
                quiet_time_s=request.quiet_time_s,
            )
            for name, package in packages.items()
        }
        if len({app.manifest.base_model.weights_fingerprint for app in apps.values()}) != 1:
            raise ModelError(
                "replay runs one base model per video: the packages were trained on different bases"
            )
        bases = BaseProvider(request.bases_dir)
        first = next(iter(packages.values()))
        base_config, base_model = bases.get(first.manifest, first.root)

        if request.plan is not None:
            plan = Plan.model_validate_json(request.plan.read_text(encoding="utf-8"))
        else:
            assert request.budget is not None  # checked above
            profile = load_or_measure_profile(
                request, base_config, base_model, list(packages.values()), say
            )
            problem = problem_for(
                list(apps.values()), [profile], request.budget, {REPLAY_CAMERA: camera_fps}
            )
            say("planning")
            plan = make_plan(problem)
        say("building the DAG")
        (deployment,) = build_deployments(
            plan,
            apps,
            packages,
            bases,
            {REPLAY_CAMERA: camera_fps},
            request.engine,
            precision=request.precision,
        )
        return _run(request, plan, deployment, camera_fps, base_config.input_size, packages, say)


def _run(
    request: ReplayRequest,
    plan: Plan,
    deployment: CameraDeployment,
    camera_fps: float,
    size: int,
    packages: dict[str, Any],
    say: Callable[[str], None],
) -> ReplaySummary:

    planned = {app.name: app for app in plan.apps}
    detectors = {
        name: EventDetector(name, REPLAY_CAMERA, deployment.detectors[name]) for name in planned
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
            disable=not request.show_progress,
        ):
            timestamp = index / camera_fps
            for score in deployment.dag.process(image, index, timestamp):
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
            predicted_f1_interval=app.f1_interval,
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


def load_or_measure_profile(
    request: ReplayRequest,
    config: Any,
    base_model: Any,
    packages: Sequence[Any],
    say: Callable[[str], None],
) -> Profile:
    """A stored profile (re-keyed to this base), or a fresh measurement over the cuts in use."""

    key = profile_key(packages[0].manifest)
    if request.profile is not None:
        profile = Profile.model_validate_json(request.profile.read_text(encoding="utf-8"))
        return profile.model_copy(update={"base_model": key})

    order = discover_cut_points(base_model)
    wanted = {c.cut_point for package in packages for c in package.manifest.candidates} | {"input"}
    cuts = [cut for cut in order if cut in wanted]
    say(f"measuring the cost profile of {len(cuts)} cut points")
    profile = measure_profile(
        config,
        request.engine,
        cut_points=cuts,
        base_model=base_model,
        repeats=7,
        precision=request.precision,
    )
    return profile.model_copy(update={"base_model": key})
