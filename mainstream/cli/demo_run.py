"""`mainstream demo`: the whole product on one machine, from nothing, in one command.

The demo builds everything it needs from synthetic data, then runs a real node:

1. a labelled synthetic scene: a training video and a separate held-out video of the same
   camera, where N object kinds cross (one app per kind: "is a train in view?" ...);
2. a small base network pretrained on synthetic object images and the scene's frames (random
   frozen layers would make every shared stem meaningless, and ImageNet weights may not be
   downloadable);
3. one M-Package per app, fine-tuned at several freeze depths;
4. the cost profile of this machine, and a compute budget derived from it;
5. the daemon: the node and its REST API under uvicorn, with the packages, the camera (the
   held-out video, looping at its native rate) and the apps registered through the same
   services the API uses, so the plan is made exactly as on a real node.

Events are printed as they end. At the end (a duration, or Ctrl-C) the node shuts down and the
held-out video is replayed through the same plan in video time; the summary sets each app's
predicted event F1 against the F1 measured on the video's labels, next to the No-Sharing and
Max-Sharing baselines' predictions.

Steps 1-3 are cached under the data directory, keyed by the settings that shape them, so a
second run starts serving within seconds. The node's own state (registry, events) is reset at
every run. TensorFlow, OpenCV and uvicorn are imported only when a step needs them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from edge_runtime.camera_policy import CameraPolicy
from edge_runtime.deployer import profile_key
from edge_runtime.detector import Transition
from edge_runtime.replay import ReplayRequest, run_replay
from mainstream.core.bases import BaseConfig, copy_registered_base, list_registered_bases, save_base
from mainstream.core.errors import InvalidParameterError, MainstreamError
from mainstream.node.node import Node
from mainstream.node.services import AppCreate, AppUpdate, CameraCreate, Services
from mainstream.node.settings import ApiSettings, RuntimeSettings, Settings, default_data_dir
from trainer.datasets import export_video_frames
from trainer.pipeline import BaseRequest, TrainRequest, train_package
from trainer.pretrain import load_image_folder, pretrain_base
from trainer.synth import SynthConfig, generate_image_dataset, generate_video

if TYPE_CHECKING:
    from edge_runtime.detector import EventChange
    from edge_runtime.replay import AppReplayFigures
    from mainstream.node.node import Node
    from mainstream.node.services import Services
    from scheduler.problem import Plan, Profile
    from trainer.synth import SynthConfig

logger = logging.getLogger(__name__)

DEMO_CAMERA = "demo-cam"
DEMO_TOKEN_NAME = "demo-admin"
DEFAULT_QUIET_TIME_S = 1.0
ASSETS_FILE = "assets.json"
# Part of the cache key: raise it when the way assets are built changes, so old caches go unused.
ASSETS_VERSION = 2

# Object kinds of the scene, in the order `--apps N` takes them (largest on screen first: at
# 96 px a person is a few pixels wide), and the app watching each.
APP_OF_KIND: dict[str, str] = {"train": "trains", "bus": "buses", "car": "cars", "person": "people"}
# Classes the base is pretrained on besides the object kinds, drawn as single images.
PRETRAIN_EXTRA_CLASSES: tuple[str, ...] = ("background", "circle", "square", "triangle", "ring")

Echo = Callable[[str], None]


def default_demo_dir() -> Path:
    """Where the demo keeps its assets and node state: `<user data dir>/demo`."""
    return default_data_dir() / "demo"


# ---------------------------------------------------------------------------------------------
# Settings


class DemoConfig(BaseModel):
    """Everything that shapes the demo's assets; its hash names the cache folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    apps: int = Field(default=3, ge=1, le=len(APP_OF_KIND))
    fps: float = Field(default=10.0, gt=0)
    width: int = 160
    height: int = 120
    train_duration_s: float = Field(default=180.0, gt=0)
    held_out_duration_s: float = Field(default=120.0, gt=0)
    event_length_s: float = 2.0
    event_frequency: float = Field(
        default=0.6, gt=0, lt=0.9, description="Time covered by objects of all kinds together"
    )
    noise: float = 0.04
    input_size: int = 96
    alpha: float = 0.25
    images_per_class: int = 48
    scene_frame_step: int = Field(
        default=4, ge=1, description="Pretraining also sees every N-th training-video frame"
    )
    pretrain_epochs: int = 6
    freeze_points: int = 3
    app_epochs: int = 4
    frame_step: int = Field(
        default=2, ge=1, description="Apps train on every N-th frame: neighbours look alike"
    )
    seed: int = 0

    @classmethod
    def preset(cls, apps: int = 3, fast: bool = False) -> DemoConfig:
        """The default demo, or tiny settings (`fast`) for tests: short videos, few epochs."""
        if not fast:
            return cls(apps=apps)
        return cls(
            apps=apps,
            train_duration_s=90.0,
            held_out_duration_s=40.0,
            images_per_class=24,
            scene_frame_step=6,
            pretrain_epochs=2,
            app_epochs=2,
            frame_step=3,
        )

    @property
    def kinds(self) -> list[str]:
        return list(APP_OF_KIND)[: self.apps]

    def key(self) -> str:
        """A short hash of the settings: equal settings reuse the same cached assets."""
        text = f"{ASSETS_VERSION}:{self.model_dump_json()}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class DemoOptions:
    """How one run goes; none of this changes the cached assets."""

    config: DemoConfig = field(default_factory=DemoConfig)
    data_dir: Path = field(default_factory=default_demo_dir)
    duration_s: float | None = None  # None: until Ctrl-C
    port: int | None = None  # None: a free port
    budget_ms_per_s: float | None = None  # None: derived from the measured profile
    budget_share: float = 0.5  # of the cost of every app running its whole network at F
    fresh: bool = False
    progress: bool = True
    summary_json: Path | None = None
    # Also register the demo's base here (the default base registry of `base list`/`train`).
    shared_bases_dir: Path | None = None


# ---------------------------------------------------------------------------------------------
# Step lines


class Steps:
    """Numbered step lines with elapsed times: `[2/7] pretraining the base ... done (31.2 s)`."""

    def __init__(self, total: int, echo: Echo) -> None:
        self.total = total
        self.echo = echo
        self.number = 0
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Callable[[str], None]]:
        """Announce a step; the yielded function adds a note to its closing line."""
        self.number += 1
        notes: list[str] = []
        self.echo(f"[{self.number}/{self.total}] {title} ...")
        begun = time.perf_counter()
        yield notes.append
        spent = time.perf_counter() - begun
        detail = f": {'; '.join(notes)}" if notes else ""
        self.echo(f"      done in {spent:.1f} s{detail}")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


# ---------------------------------------------------------------------------------------------
# Assets: scene, base, packages (cached)


class DemoAssets(BaseModel):
    """The files the demo built; written last, so its presence means the cache is complete."""

    config: DemoConfig
    train_video: Path
    train_labels: Path
    held_out_video: Path
    held_out_labels: Path
    bases_dir: Path
    base_fingerprint: str
    packages: dict[str, Path]  # app name -> .mpkg
    positive_class: dict[str, str]  # app name -> object kind


def assets_dir(data_dir: Path, config: DemoConfig) -> Path:
    return data_dir / "assets" / config.key()


def load_cached_assets(folder: Path) -> DemoAssets | None:
    """The assets recorded in `folder`, if the record is there and every file still exists."""
    record = folder / ASSETS_FILE
    if not record.is_file():
        return None
    try:
        assets = DemoAssets.model_validate_json(record.read_text(encoding="utf-8"))
    except ValueError:
        return None
    files = [assets.train_video, assets.held_out_video, *assets.packages.values()]
    return assets if all(path.is_file() for path in files) else None


def scene_video_config(config: DemoConfig, duration_s: float, seed: int) -> SynthConfig:
    """One video of the demo's scene: same camera and object kinds, its own length and seed."""

    return SynthConfig(
        duration_s=duration_s,
        fps=config.fps,
        width=config.width,
        height=config.height,
        kinds=config.kinds,
        event_length_s=config.event_length_s,
        event_frequency=config.event_frequency,
        noise=config.noise,
        seed=seed,
    )


def build_scene(config: DemoConfig, folder: Path, progress: bool) -> dict[str, Path]:
    """The training and held-out videos with their label CSVs (skipped when already there)."""

    paths: dict[str, Path] = {}
    for name, duration, seed in (
        ("train", config.train_duration_s, config.seed),
        ("held_out", config.held_out_duration_s, config.seed + 1),
    ):
        video, labels = folder / f"{name}.avi", folder / f"{name}.csv"
        if not (video.is_file() and labels.is_file()):
            generate_video(
                video,
                labels,
                scene_video_config(config, duration, seed),
                show_progress=progress,
            )
        paths[f"{name}_video"], paths[f"{name}_labels"] = video, labels
    return paths


def pretrain_demo_base(
    config: DemoConfig, folder: Path, scene: dict[str, Path], progress: bool
) -> tuple[Path, str, str]:
    """Pretrain and register the base body; returns (bases dir, fingerprint, a short note).

    The pretraining set plays ImageNet's part: many classes, among them the object kinds
    (drawn alone on random textures), plus frames of the training scene labelled only "event"
    (some object in view) or "background", so the frozen layers know the camera's look
    without having learnt any app's question.
    """

    bases_dir = folder / "bases"
    registered = list_registered_bases(bases_dir) if bases_dir.is_dir() else []
    if registered:
        return bases_dir, registered[0].weights_fingerprint, "already registered"
    images_dir = folder / "images"
    if images_dir.exists():  # an interrupted earlier run; the scene frames may be partial
        shutil.rmtree(images_dir)
    generate_image_dataset(
        images_dir,
        [*config.kinds, *PRETRAIN_EXTRA_CLASSES],
        config.images_per_class,
        config.input_size,
        config.seed,
        show_progress=progress,
    )
    export_video_frames(
        scene["train_video"],
        scene["train_labels"],
        images_dir,
        frame_step=config.scene_frame_step,
        image_size=config.input_size,
        show_progress=progress,
    )
    base_config = BaseConfig("mobilenet_v1", input_size=config.input_size, alpha=config.alpha)
    images = load_image_folder(images_dir, config.input_size, show_progress=progress)
    body, report = pretrain_base(
        base_config,
        images,
        epochs=config.pretrain_epochs,
        seed=config.seed,
        verbose=1 if progress else 0,
    )
    info = save_base(
        body,
        base_config,
        bases_dir,
        weights_source="pretrained:demo-shapes",
        provenance=report.as_provenance(images_dir),
    )
    accuracy = report.validation_accuracy
    note = f"{len(images.labels)} images, {len(images.classes)} classes" + (
        f", validation accuracy {accuracy:.2f}" if accuracy is not None else ""
    )
    return bases_dir, info.weights_fingerprint, note


def train_demo_app(
    config: DemoConfig,
    kind: str,
    scene: dict[str, Path],
    bases_dir: Path,
    fingerprint: str,
    output: Path,
    progress: bool,
) -> str:
    """Train one app's package (skipped when it exists); returns a one-line summary."""

    if output.is_file():
        return f"{output.name} already built"
    result = train_package(
        TrainRequest(
            data=scene["train_video"],
            labels=scene["train_labels"],
            positive_class=kind,
            app_name=APP_OF_KIND[kind],
            base=BaseRequest(weights=fingerprint),
            bases_dir=bases_dir,
            freeze_points=config.freeze_points,
            epochs=config.app_epochs,
            frame_step=config.frame_step,
            seed=config.seed,
            output=output,
            progress=progress,
        )
    )
    accuracies = ", ".join(
        f"{candidate.cut_point} {candidate.accuracy:.2f}" for candidate in result.candidates
    )
    return f"{APP_OF_KIND[kind]}: accuracy by cut point {accuracies}"


def prepare_assets(options: DemoOptions, steps: Steps) -> DemoAssets:
    """Build (or reuse) the scene, the base and the packages; three steps."""
    config = options.config
    folder = assets_dir(options.data_dir, config)
    if options.fresh and folder.exists():
        shutil.rmtree(folder)
    cached = load_cached_assets(folder)
    if cached is not None:
        for title in ("synthetic scene", "pretrained base", "app packages"):
            with steps.step(f"{title}: cached") as note:
                note(str(folder))
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    with steps.step(
        f"generating the scene: {len(config.kinds)} object kinds, "
        f"{config.train_duration_s:g} s training + {config.held_out_duration_s:g} s held-out video"
    ) as note:
        scene = build_scene(config, folder, options.progress)
        note(str(scene["held_out_video"]))
    with steps.step(
        f"pretraining the base (MobileNet α {config.alpha:g}, {config.input_size} px)"
    ) as note:
        bases_dir, fingerprint, summary = pretrain_demo_base(
            config, folder, scene, options.progress
        )
        note(f"{summary}; fingerprint {fingerprint[:12]}")
    packages: dict[str, Path] = {}
    with steps.step(f"training {len(config.kinds)} apps at {config.freeze_points} cut points"):
        for kind in config.kinds:
            output = folder / "packages" / f"{APP_OF_KIND[kind]}.mpkg"
            steps.echo(
                "      "
                + train_demo_app(
                    config, kind, scene, bases_dir, fingerprint, output, options.progress
                )
            )
            packages[APP_OF_KIND[kind]] = output
    assets = DemoAssets(
        config=config,
        train_video=scene["train_video"],
        train_labels=scene["train_labels"],
        held_out_video=scene["held_out_video"],
        held_out_labels=scene["held_out_labels"],
        bases_dir=bases_dir,
        base_fingerprint=fingerprint,
        packages=packages,
        positive_class={APP_OF_KIND[kind]: kind for kind in config.kinds},
    )
    _write_atomically(folder / ASSETS_FILE, assets.model_dump_json(indent=2))
    return assets


def share_base(assets: DemoAssets, bases_dir: Path, echo: Echo) -> None:
    """Register the demo's pretrained base where `base list` and `train` look by default, so
    a user can train an app of their own on it right after the demo."""

    fingerprint = assets.base_fingerprint
    if copy_registered_base(fingerprint, assets.bases_dir, bases_dir):
        echo(f"      base {fingerprint[:12]} registered in {bases_dir}")
    echo(f"      train your own app on it: mainstream train --weights {fingerprint[:12]} ...")


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------
# The node


def node_settings(data_dir: Path, port: int, budget_ms_per_s: float | None) -> Any:
    """Settings of the demo's node: its own folder, localhost only, no default camera; its
    camera plays the held-out video from the demo's assets (next to the node's folder)."""

    return Settings(
        camera_policy=CameraPolicy(file_dirs=[data_dir.parent / "assets"]),
        data_dir=data_dir,
        node_name="demo",
        default_camera=None,
        cameras=[],
        api=ApiSettings(host="127.0.0.1", port=port),
        runtime=RuntimeSettings(budget_ms_per_s=budget_ms_per_s),
    )


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def register_packages(services: Services, assets: DemoAssets) -> None:
    """Upload every package through the node's services (verified like an API upload).

    Forced: the demo shows the whole product even when a tiny (`--fast`) training leaves a
    candidate weak; training has already said which, and the plan's predicted F1 shows it.
    """
    for path in assets.packages.values():
        services.packages.upload(path, force=True)


def profile_machine(node_dir: Path, port: int, assets: DemoAssets) -> Profile:
    """Register the packages on the node and measure the base's cost profile on this machine.

    A node that is never started does this: the profile and the packages stay in its registry
    for the serving node, which then plans with a budget derived from the profile.
    """

    node = Node(node_settings(node_dir, port, None))
    try:
        services = Services(node)
        register_packages(services, assets)
        records = [node.registry.get_package(app, "latest") for app in assets.packages]
        manifests = [record.manifest for record in records]
        root = node.packages.open(records[0]).root
        return node.profiles.profile(profile_key(manifests[0]), manifests, root)
    finally:
        node.stop()


def derived_budget(profile: Profile, apps: int, camera_fps: float, share: float) -> float:
    """A budget that forces choices: `share` of every app running its whole network at F.

    With share < 1 the apps cannot all run their own network at the camera rate (what
    No-Sharing would like), so sharing the stem and lowering rates matter.
    """
    if not 0 < share <= 4:
        raise InvalidParameterError("budget_share", share, "a number in (0, 4]")
    return round(share * apps * profile.total_cost * camera_fps, 1)


class DemoServer:
    """The node's FastAPI app under uvicorn in a background thread; the app starts the node."""

    def __init__(self, node: Node, port: int) -> None:
        import uvicorn  # the web server loads only to serve

        from api.app import create_app  # FastAPI loads only to serve

        self.node = node
        self.app = create_app(node)
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                timeout_graceful_shutdown=5,
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="demo-api", daemon=True)

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def start(self, timeout_s: float = 60.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise MainstreamError(
                    f"the API server did not start on {self.url} (is the port in use?)"
                )
            if time.monotonic() > deadline:
                raise MainstreamError(f"the API server did not start within {timeout_s:g} s")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        """Shut the server down; its lifespan stops the node (runtime, cameras, event store)."""
        self.server.should_exit = True
        if self.thread.ident is None:  # never started
            return
        self.thread.join(timeout=30)
        if self.thread.is_alive():
            logger.warning("the API server did not stop within 30 s; stopping the node directly")
            self.node.stop()


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class SeenEvent:
    app: str
    camera: str
    start_time: float  # seconds since the epoch (the runtime stamps events with the wall clock)
    end_time: float
    peak_score: float


class EventPrinter:
    """A runtime listener: one line per finished event, and a record of every one."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo
        self.events: list[SeenEvent] = []
        self._lock = threading.Lock()

    def __call__(self, change: EventChange) -> None:

        if change.transition is not Transition.END:
            return
        event = change.event
        seen = SeenEvent(
            app=event.app,
            camera=event.camera,
            start_time=event.start_time,
            end_time=event.end_time if event.end_time is not None else event.start_time,
            peak_score=event.peak_score,
        )
        with self._lock:
            self.events.append(seen)
        started = datetime.fromtimestamp(seen.start_time).strftime("%H:%M:%S")
        self.echo(
            f"{started}  {seen.app:<8} {seen.camera}  peak {seen.peak_score:.2f}  "
            f"lasted {seen.end_time - seen.start_time:.1f} s"
        )

    def snapshot(self) -> list[SeenEvent]:
        with self._lock:
            return list(self.events)


# ---------------------------------------------------------------------------------------------
# Measuring against the labels


def replay_figures(
    assets: DemoAssets,
    plan: Plan,
    engine: str,
    folder: Path,
    progress: bool = True,
    precision: str = "f32",
) -> dict[str, AppReplayFigures]:
    """Run the held-out video once through the same plan, in video time, against its labels.

    The live node stamps events with the wall clock (as a dashboard wants), so its events
    cannot be lined up with the video's frames exactly; replay runs the same packages, DAG
    and detectors on the video's own frame numbers and measures recall and precision with the
    event model's definitions (DESIGN §2), which is what the predicted F1 promises.
    """

    folder.mkdir(parents=True, exist_ok=True)
    plan_path = folder / "plan.json"
    _write_atomically(plan_path, plan.model_dump_json(indent=2))
    request = ReplayRequest(
        video=assets.held_out_video,
        packages=list(assets.packages.values()),
        events_out=folder / "replay-events.jsonl",
        plan=plan_path,
        labels=assets.held_out_labels,
        engine=engine,  # type: ignore[arg-type]
        precision=precision,  # type: ignore[arg-type]
        quiet_time_s=DEFAULT_QUIET_TIME_S,
        bases_dir=assets.bases_dir,
        show_progress=progress,
    )
    return {figures.app: figures for figures in run_replay(request).apps}


# ---------------------------------------------------------------------------------------------
# Summary


class AppSummary(BaseModel):
    app: str
    cut_point: str
    fps: float
    live_events: int
    predicted_f1: float
    measured_f1: float | None
    measured_recall: float | None
    measured_precision: float | None
    labelled_events: int | None
    false_alarms: int | None
    no_sharing_f1: float | None
    max_sharing_f1: float | None


class DemoSummary(BaseModel):
    """What a demo run did and measured (also written as JSON with `--summary-json`)."""

    data_dir: Path
    url: str
    setup_seconds: float
    streamed_seconds: float
    camera_fps: float
    budget_ms_per_s: float
    plan_value: float
    no_sharing_value: float | None
    max_sharing_value: float | None
    events: int
    apps: list[AppSummary]

    def table(self) -> str:
        """The summary table, with a caption saying how the measured figures were obtained."""
        header = (
            f"{'app':<8} {'cut point':<18} {'fps':>5} {'events':>6} {'predicted F1':>12} "
            f"{'measured F1':>11} {'No-Sharing F1':>13} {'Max-Sharing F1':>14}"
        )
        lines = [header, "-" * len(header)]

        def number(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f}"

        for app in self.apps:
            lines.append(
                f"{app.app:<8} {app.cut_point:<18} {app.fps:>5g} {app.live_events:>6} "
                f"{app.predicted_f1:>12.2f} {number(app.measured_f1):>11} "
                f"{number(app.no_sharing_f1):>13} {number(app.max_sharing_f1):>14}"
            )
        lines.append(
            f"{'mean':<8} {'':<18} {'':>5} {self.events:>6} {self.plan_value:>12.2f} "
            f"{number(_mean([a.measured_f1 for a in self.apps])):>11} "
            f"{number(self.no_sharing_value):>13} {number(self.max_sharing_value):>14}"
        )
        lines += [
            "",
            f"events: live events in {self.streamed_seconds:.0f} s of streaming. Predicted F1: the "
            f"plan's event model at a budget of {self.budget_ms_per_s:g} ms/s; No-Sharing / "
            "Max-Sharing: the baselines' predictions at the same budget.",
            "Measured F1: a replay of the held-out video through the same plan, packages and "
            "detectors in video time, scored against the video's labels with the event model's "
            "definitions (live events carry wall-clock times, which do not line up exactly with "
            "the video's frames). n/a: the video has no labelled event of the app.",
        ]
        return "\n".join(lines)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


def summarise(
    options: DemoOptions,
    assets: DemoAssets,
    plan: Plan,
    events: Sequence[SeenEvent],
    replayed: dict[str, AppReplayFigures],
    streamed_seconds: float,
    setup_seconds: float,
    url: str,
) -> DemoSummary:
    baselines = {
        name: {app.name: app.f1 for app in baseline.apps}
        for name, baseline in plan.baselines.items()
    }

    def baseline_value(name: str) -> float | None:
        baseline = plan.baselines.get(name)
        return None if baseline is None or not baseline.feasible else baseline.value

    planned_apps = {planned.name: planned for planned in plan.apps}
    rows = []
    for name in assets.packages:  # the scene's order: trains, buses, cars, people
        planned = planned_apps[name]
        figures = replayed.get(name)
        rows.append(
            AppSummary(
                app=name,
                cut_point=planned.cut_point,
                fps=planned.fps,
                live_events=sum(event.app == name for event in events),
                predicted_f1=planned.f1,
                measured_f1=figures.measured_f1 if figures else None,
                measured_recall=figures.measured_recall if figures else None,
                measured_precision=figures.measured_precision if figures else None,
                labelled_events=figures.labelled_events if figures else None,
                false_alarms=figures.false_alarms if figures else None,
                no_sharing_f1=baselines.get("no_sharing", {}).get(name),
                max_sharing_f1=baselines.get("max_sharing", {}).get(name),
            )
        )
    return DemoSummary(
        data_dir=options.data_dir,
        url=url,
        setup_seconds=round(setup_seconds, 1),
        streamed_seconds=round(streamed_seconds, 1),
        camera_fps=assets.config.fps,
        budget_ms_per_s=plan.budget,
        plan_value=plan.value,
        no_sharing_value=baseline_value("no_sharing"),
        max_sharing_value=baseline_value("max_sharing"),
        events=len(events),
        apps=rows,
    )


def plan_table(plan: Plan, order: Sequence[str]) -> str:
    lines = [f"  {'app':<8} {'cut point':<18} {'fps':>5} {'X':>2} {'predicted F1':>12}"]
    for app in sorted(plan.apps, key=lambda planned: list(order).index(planned.name)):
        lines.append(
            f"  {app.name:<8} {app.cut_point:<18} {app.fps:>5g} {app.x_vote:>2} {app.f1:>12.2f}"
        )
    parts = [f"plan mean F1 {plan.value:.2f}"]
    for name, label in (("no_sharing", "No-Sharing"), ("max_sharing", "Max-Sharing")):
        baseline = plan.baselines.get(name)
        if baseline is not None:
            parts.append(
                f"{label} {baseline.value:.2f}" if baseline.feasible else f"{label} infeasible"
            )
    lines.append("  " + ", ".join(parts) + f" (cost {plan.total_cost:.1f} of {plan.budget:g} ms/s)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The whole run


def run_demo(options: DemoOptions, echo: Echo) -> DemoSummary:
    """Build or reuse the assets, serve them, stream the held-out video, measure, summarise."""

    config = options.config
    options.data_dir.mkdir(parents=True, exist_ok=True)
    echo(f"demo data directory: {options.data_dir}")
    steps = Steps(total=7, echo=echo)
    assets = prepare_assets(options, steps)
    if options.shared_bases_dir is not None:
        share_base(assets, options.shared_bases_dir, echo)

    node_dir = options.data_dir / "node"
    shutil.rmtree(node_dir, ignore_errors=True)  # every run starts from an empty node
    port = options.port or free_port()
    with steps.step("registering the packages; profiling this machine") as note:
        profile = profile_machine(node_dir, port, assets)
        budget = options.budget_ms_per_s or derived_budget(
            profile, config.apps, config.fps, options.budget_share
        )
        note(
            f"whole network {profile.total_cost:.2f} ms/frame at {len(profile.cut_points)} cut "
            f"points; budget {budget:g} ms/s"
        )

    node = Node(node_settings(node_dir, port, budget))
    server = DemoServer(node, port)
    printer = EventPrinter(echo)
    try:
        with steps.step(f"starting the daemon on 127.0.0.1:{port}"):
            server.start()
        _, token = server.services.tokens.create("admin", DEMO_TOKEN_NAME)
        with steps.step("registering the camera and the apps; planning") as note:
            plan = _register_and_plan(server.services, node, assets, printer)
            streaming_since = time.monotonic()
            note(f"{len(plan.apps)} apps on camera {DEMO_CAMERA}")
        setup_seconds = steps.elapsed()
        echo(plan_table(plan, list(assets.packages)))
        echo("")
        echo(f"set-up finished in {setup_seconds:.1f} s")
        echo(f"dashboard:   {server.url}/ui/")
        echo(f"API docs:    {server.url}/docs")
        echo(f"admin token: {token}")
        how_long = (
            f"for {options.duration_s:g} s" if options.duration_s is not None else "until Ctrl-C"
        )
        echo(f"streaming {assets.held_out_video.name} as camera {DEMO_CAMERA} {how_long}")
        echo("events as they end (start time, app, camera, peak score, duration):")
        try:
            _wait(options.duration_s, server)
        except KeyboardInterrupt:
            echo("stopping (Ctrl-C)")
        streamed_seconds = time.monotonic() - streaming_since
    finally:
        server.stop()  # the node closes open events, which the printer still records
        node.stop()  # no-op after a clean shutdown; closes the files if the server never ran

    with steps.step("measuring: replaying the held-out video through the plan"):
        runtime = node.settings.runtime
        replayed = replay_figures(
            assets,
            plan,
            node.engine.name,
            node_dir / "replay",
            options.progress,
            runtime.openvino_precision,
        )
    summary = summarise(
        options,
        assets,
        plan,
        printer.snapshot(),
        replayed,
        streamed_seconds,
        setup_seconds,
        server.url,
    )
    echo("")
    echo(summary.table())
    if options.summary_json is not None:
        _write_atomically(options.summary_json, summary.model_dump_json(indent=2))
    return summary


def _register_and_plan(
    services: Services, node: Node, assets: DemoAssets, printer: EventPrinter
) -> Plan:
    """The camera (disabled) and the apps, then the camera on: one plan, one DAG.

    The packages are in the registry already: the profiling step uploaded them.
    """

    services.cameras.create(
        CameraCreate(
            id=DEMO_CAMERA,
            url=str(assets.held_out_video),
            fps=assets.config.fps,
            loop=True,
            paced=True,
            enabled=False,
        )
    )
    for app in assets.packages:
        services.apps.create(
            AppCreate(name=app, camera=DEMO_CAMERA, quiet_time_s=DEFAULT_QUIET_TIME_S)
        )
    node.runtime.listeners.append(printer)
    services.cameras.update(DEMO_CAMERA, {"enabled": True})
    schedule = services.schedule.current()
    if schedule.plan is None:
        raise MainstreamError(f"the node could not plan the demo: {schedule.message}")
    # An app analysing a frame every 2 s would end its event between two fires with a 1 s
    # quiet time; the plan is unchanged by this (only the detectors are updated).
    for planned in schedule.plan.apps:
        quiet_time_s = quiet_time_for(planned.fps)
        if quiet_time_s != DEFAULT_QUIET_TIME_S:
            services.apps.update(planned.name, AppUpdate(quiet_time_s=quiet_time_s))
    return schedule.plan


def quiet_time_for(fps: float) -> float:
    """Seconds without a fire that end an event: 1 s, or 1.5 analysis intervals if longer."""
    return max(DEFAULT_QUIET_TIME_S, round(1.5 / fps, 1))


def _wait(duration_s: float | None, server: DemoServer) -> None:
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while deadline is None or time.monotonic() < deadline:
        if not server.alive():
            raise MainstreamError("the API server stopped unexpectedly")
        time.sleep(0.2 if deadline is None else min(0.2, max(0.0, deadline - time.monotonic())))
