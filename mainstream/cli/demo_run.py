"""`mainstream demo`: the whole product on one machine, from nothing, in one command.

The demo builds everything it needs from synthetic data, then runs a real node:

1. a labelled synthetic scene: a training video and a separate held-out video of the same
   camera, where N object kinds cross (one app per kind: "is a train in view?" ...);
2. a small base network pretrained on synthetic object images, another camera's street and
   the scene's frames (random frozen layers would make every shared stem meaningless, and
   ImageNet weights may not be downloadable);
3. one M-Package per app, fine-tuned at several freeze depths;
4. the cost profile of this machine, and a budget relative to it: a share of what No-Sharing
   needs at the rate the events need (`demo_budget`), so that the choice matters on any
   machine;
5. the daemon: the node and its REST API under uvicorn, with the packages, the camera (the
   held-out video, looping at its native rate) and the apps registered through the same
   services the API uses, so the plan is made exactly as on a real node.

Events are printed as they end. At the end (a duration, or Ctrl-C) the node shuts down and the
held-out video is replayed in video time through the plan and through both baselines
(No-Sharing, Max-Sharing); the summary sets each one's predicted event F1 against the F1
measured on the video's labels, says by how much the plan wins on measured F1 and flags apps
measured far below their prediction.

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
from edge_runtime.deployer import DeployedApp, problem_for, profile_key
from edge_runtime.detector import Transition
from edge_runtime.replay import ReplayRequest, run_replay
from mainstream.core.bases import BaseConfig, copy_registered_base, list_registered_bases, save_base
from mainstream.core.errors import InvalidParameterError, MainstreamError
from mainstream.node.node import Node
from mainstream.node.services import AppCreate, AppUpdate, CameraCreate, Services
from mainstream.node.settings import ApiSettings, RuntimeSettings, Settings, default_data_dir
from scheduler.planner import make_plan
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
# The budget: this share of No-Sharing's cost at the rate that analyses FRAMES_PER_EVENT frames
# of a typical event (see needed_fps).
DEFAULT_BUDGET_SHARE = 0.5
BUDGET_SHARES: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
FRAMES_PER_EVENT = 2.0
# A measured event F1 this far below the predicted one is flagged in the summary.
FAR_BELOW = 0.15
ASSETS_FILE = "assets.json"
# Part of the cache key: raise it when the way assets are built changes, so old caches go unused.
ASSETS_VERSION = 3

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
    other_camera_duration_s: float = Field(
        default=60.0, gt=0, description="Per kind: another camera's video the base pretrains on"
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
            train_duration_s=60.0,
            held_out_duration_s=30.0,
            images_per_class=10,
            scene_frame_step=6,
            other_camera_duration_s=12.0,
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
    # Of the cost of every app running its whole network at the rate its events need; None:
    # the one of BUDGET_SHARES where the plan's predicted lead is largest (demo_budget).
    budget_share: float | None = None
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


def other_camera_config(config: DemoConfig, kind: str) -> SynthConfig:
    """A short video of another camera (its own landscape, tilt and colours) where only `kind`
    crosses: the pretraining set's pictures of that kind in a street scene."""

    return SynthConfig(
        duration_s=config.other_camera_duration_s,
        fps=config.fps,
        width=config.width,
        height=config.height,
        kinds=[kind],
        event_length_s=config.event_length_s,
        event_frequency=0.5,
        noise=config.noise,
        view_offset=0.05,
        color_jitter=0.3,
        scene_seed=config.seed + 1000,
        seed=config.seed + 1000 + config.kinds.index(kind),
    )


def pretrain_demo_base(
    config: DemoConfig, folder: Path, scene: dict[str, Path], progress: bool
) -> tuple[Path, str, str]:
    """Pretrain and register the base body; returns (bases dir, fingerprint, a short note).

    The pretraining set plays ImageNet's part: many classes, among them the object kinds
    (drawn alone on random textures, and crossing the street of *another* camera, as ImageNet
    holds photos of buses and cars from elsewhere), plus frames of the demo camera's training
    video labelled only "event" (some object in view) or "background", so the frozen layers
    know the camera's look without having learnt any app's question on it. Without the other
    camera's street frames the base knows the kinds only as large icons: deep cut points then
    miss the small cars of the scene, and sharing them is no option.
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
    other_dir = folder / "other-camera"
    for kind in config.kinds:
        video, labels = other_dir / f"{kind}.avi", other_dir / f"{kind}.csv"
        generate_video(video, labels, other_camera_config(config, kind), show_progress=progress)
        export_video_frames(
            video,
            labels,
            images_dir,
            positive_label=kind,
            frame_step=config.scene_frame_step,
            image_size=config.input_size,
            clip_name=f"other-{kind}",
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


def profile_machine(node_dir: Path, port: int, assets: DemoAssets) -> tuple[Profile, list[Any]]:
    """Register the packages on the node and measure the base's cost profile on this machine;
    returns the profile and the registered packages' manifests.

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
        return node.profiles.profile(profile_key(manifests[0]), manifests, root), manifests
    finally:
        node.stop()


def predicted_lead(
    profile: Profile, manifests: Sequence[Any], camera_fps: float, budget: float
) -> float | None:
    """The plan's predicted mean F1 minus the better baseline's at `budget`, for the demo's
    apps as the node will register them (None: nothing fits). Planning only: nothing runs."""
    apps = [
        DeployedApp(name=manifest.app.name, camera=DEMO_CAMERA, manifest=manifest)
        for manifest in manifests
    ]
    try:
        plan = make_plan(problem_for(apps, [profile], budget, {DEMO_CAMERA: camera_fps}))
    except MainstreamError:
        return None
    baselines = [baseline.value for baseline in plan.baselines.values() if baseline.feasible]
    return plan.value - max(baselines, default=0.0)


def derived_budget(profile: Profile, apps: int, rate_fps: float, share: float) -> float:
    """A budget that forces choices: `share` of every app running its whole network at
    `rate_fps` (what No-Sharing costs at that rate)."""
    if not 0 < share <= 4:
        raise InvalidParameterError("budget_share", share, "a number in (0, 4]")
    return round(share * apps * profile.total_cost * rate_fps, 2)


def needed_fps(event_length_s: float, camera_fps: float) -> float:
    """The rate at which an app analyses FRAMES_PER_EVENT frames of a typical event.

    Analysing more often adds little: an event is caught once a frame of it fires. The demo's
    budget is a share of No-Sharing at this rate, so No-Sharing must analyse fewer frames than
    the events need, and what sharing saves buys frames back; a budget stated against the
    camera's full rate would let No-Sharing run every app as often as it needs on any machine,
    and there would be nothing to win.
    """
    return min(camera_fps, FRAMES_PER_EVENT / event_length_s)


def demo_budget(
    options: DemoOptions, profile: Profile, manifests: Sequence[Any] = ()
) -> tuple[float, str]:
    """The run's budget in ms/s and how it was chosen, in words (also as a share of a core).

    Unless a budget or a share is given, the share of No-Sharing's cost (at the rate the
    events need) is the one among BUDGET_SHARES where the plan's *predicted* lead over the
    better baseline is largest: where the choice of cut points matters most on this machine's
    profile. The lead is then measured, on the held-out video, not assumed.
    """
    config = options.config
    if options.budget_ms_per_s is not None:
        budget = options.budget_ms_per_s
        return budget, f"{budget:g} ms/s as given, {budget / 10:.2g} % of one core"
    rate = needed_fps(config.event_length_s, config.fps)
    how = ""
    share = options.budget_share
    if share is None:
        leads = {
            candidate: predicted_lead(
                profile,
                manifests,
                config.fps,
                derived_budget(profile, config.apps, rate, candidate),
            )
            for candidate in BUDGET_SHARES
        }
        known = {candidate: lead for candidate, lead in leads.items() if lead is not None}
        share = max(
            known or {DEFAULT_BUDGET_SHARE: 0.0},
            key=lambda candidate: (
                round(known.get(candidate, 0.0), 3),
                -abs(candidate - DEFAULT_BUDGET_SHARE),
            ),
        )
        how = (
            f"; of {', '.join(f'{candidate:g}' for candidate in BUDGET_SHARES)}, the share "
            f"where the plan's predicted lead over both baselines is largest"
        )
    budget = derived_budget(profile, config.apps, rate, share)
    basis = (
        f"{budget:g} ms/s = {share:g} x what No-Sharing needs to run the {config.apps} apps' "
        f"whole networks at {rate:g} fps ({FRAMES_PER_EVENT:g} frames of a "
        f"{config.event_length_s:g} s event; {profile.total_cost:.2f} ms per frame and app on "
        f"this machine){how}"
    )
    return budget, f"{basis}; {budget / 10:.2g} % of one core"


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
    frames_fired: int = 0
    frames_analysed: int = 0


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
            frames_fired=event.frames_fired,
            frames_analysed=event.frames_analysed,
        )
        with self._lock:
            self.events.append(seen)
        started = datetime.fromtimestamp(seen.start_time).strftime("%H:%M:%S")
        self.echo(
            f"{started}  {seen.app:<8} {seen.camera}  peak {seen.peak_score:.2f}  "
            f"{seen.frames_fired} of {seen.frames_analysed} analysed frames fired, first to "
            f"last {seen.end_time - seen.start_time:.1f} s apart"
        )

    def snapshot(self) -> list[SeenEvent]:
        with self._lock:
            return list(self.events)


# ---------------------------------------------------------------------------------------------
# Measuring against the labels

SCHEMES: tuple[tuple[str, str], ...] = (
    ("plan", "Mainstream"),
    ("no_sharing", "No-Sharing"),
    ("max_sharing", "Max-Sharing"),
)
"""The schedules the demo measures: the plan and the two baselines (key, label)."""


def scheme_plans(plan: Plan) -> dict[str, Plan]:
    """The plan and each feasible baseline as a Plan of its own, which replay can run."""
    plans = {"plan": plan}
    for name, baseline in plan.baselines.items():
        if baseline.feasible and baseline.apps:
            plans[name] = plan.model_copy(
                update={
                    "value": baseline.value,
                    "total_cost": baseline.total_cost,
                    "apps": baseline.apps,
                    "baselines": {},
                    "upper_bound": baseline.upper_bound,
                    "optimality_gap": baseline.optimality_gap,
                }
            )
    return plans


def replay_figures(
    assets: DemoAssets,
    plan: Plan,
    engine: str,
    folder: Path,
    progress: bool = True,
    precision: str = "f32",
) -> dict[str, AppReplayFigures]:
    """Run the held-out video once through `plan`, in video time, against its labels.

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


class SchemeFigures(BaseModel):
    """One app under one schedule (the plan or a baseline): what it ran, predicted, measured."""

    cut_point: str
    fps: float
    x_vote: int
    predicted_f1: float
    measured_f1: float | None
    measured_recall: float | None
    measured_precision: float | None
    false_alarms: int | None


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
    no_sharing_f1: float | None  # predicted
    max_sharing_f1: float | None  # predicted
    no_sharing_measured_f1: float | None
    max_sharing_measured_f1: float | None
    schemes: dict[str, SchemeFigures] = Field(
        default_factory=dict, description="'plan', 'no_sharing', 'max_sharing' (when feasible)"
    )


class SchemeTotals(BaseModel):
    """One schedule's mean event F1 over the apps, predicted and measured, and its cost."""

    label: str
    feasible: bool
    cost_ms_per_s: float
    predicted_f1: float | None
    measured_f1: float | None


class DemoSummary(BaseModel):
    """What a demo run did and measured (also written as JSON with `--summary-json`)."""

    data_dir: Path
    url: str
    setup_seconds: float
    streamed_seconds: float
    camera_fps: float
    budget_ms_per_s: float
    budget_basis: str = Field(description="how the budget was chosen, in words")
    plan_value: float
    no_sharing_value: float | None
    max_sharing_value: float | None
    measured_value: float | None = Field(description="the plan's mean measured event F1")
    margins: dict[str, float] = Field(
        default_factory=dict,
        description="per baseline: the plan's mean measured F1 minus the baseline's",
    )
    schemes: dict[str, SchemeTotals] = Field(default_factory=dict)
    flagged: list[str] = Field(
        default_factory=list,
        description=f"apps whose measured F1 is more than {FAR_BELOW} below the prediction",
    )
    events: int
    apps: list[AppSummary]

    def table(self) -> str:
        """The summary: per app the plan and both baselines, predicted and measured; the
        plan's margin over each baseline on measured F1; the apps measured far below."""
        labels = dict(SCHEMES)
        keys = [key for key, _ in SCHEMES]
        group = " ".join(f"{'-- ' + labels[key] + ' --':^19}" for key in keys)
        header = f"{'app':<8} {'cut point':<16} {'fps':>4} {'events':>6}  " + " ".join(
            f"{'predicted':>9} {'measured':>9}" for _ in keys
        )
        lines = [f"{'':<8} {'':<16} {'':>4} {'':>6}  {group}", header, "-" * len(header)]

        def number(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f}"

        for app in self.apps:
            cells = []
            for key in keys:
                figures = app.schemes.get(key)
                cells.append(
                    f"{number(figures.predicted_f1 if figures else None):>9} "
                    f"{number(figures.measured_f1 if figures else None):>9}"
                )
            cut = app.cut_point.removesuffix("_relu")
            lines.append(
                f"{app.app:<8} {cut:<16} {app.fps:>4g} {app.live_events:>6}  " + " ".join(cells)
            )
        totals = []
        for key in keys:
            scheme = self.schemes.get(key)
            totals.append(
                f"{number(scheme.predicted_f1 if scheme else None):>9} "
                f"{number(scheme.measured_f1 if scheme else None):>9}"
            )
        lines.append(f"{'mean':<8} {'':<16} {'':>4} {self.events:>6}  " + " ".join(totals))
        lines += ["", self.verdict()]
        lines += [f"  ! {flag}" for flag in self.flagged]
        lines += [f"  {line}" for line in self.schedules()]
        lines += [
            "",
            f"Budget: {self.budget_basis}. events: live events in {self.streamed_seconds:.0f} s "
            "of streaming (the plan's schedule).",
            "predicted: the event model's F1 for each schedule at this budget. measured: a "
            "replay of the held-out video through that schedule (same packages, DAG and "
            "detectors, in video time), scored against the video's labels with the event "
            "model's definitions. Cut point and fps: the plan's.",
        ]
        return "\n".join(lines)

    def schedules(self) -> list[str]:
        """What each schedule ran, per app (cut point @ rate, X) and at what predicted cost."""
        lines = []
        for key, label in SCHEMES:
            scheme = self.schemes.get(key)
            if scheme is None or not scheme.feasible:
                continue
            runs = ", ".join(
                f"{app.app} {figures.cut_point.removesuffix('_relu')} @ {figures.fps:g} fps"
                + (f" X={figures.x_vote}" if figures.x_vote > 1 else "")
                for app in self.apps
                if (figures := app.schemes.get(key)) is not None
            )
            lines.append(f"{label}: {runs} ({scheme.cost_ms_per_s:g} ms/s)")
        return lines

    def verdict(self) -> str:
        """One line: by how much the plan beats (or fails to beat) each baseline, measured."""
        if self.measured_value is None:
            return "No labelled events to measure on: the plan's win cannot be measured."
        parts = []
        for key, label in SCHEMES[1:]:
            scheme = self.schemes.get(key)
            if scheme is None or not scheme.feasible:
                parts.append(f"{label} does not fit the budget")
            elif key in self.margins:
                margin = self.margins[key]
                word = "beats" if margin > 0 else "does not beat"
                parts.append(
                    f"{word} {label} by {margin:+.2f} ({self.measured_value:.2f} vs "
                    f"{scheme.measured_f1:.2f})"
                )
        return f"Measured mean event F1: Mainstream {', '.join(parts)}."


def _mean(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


def summarise(
    options: DemoOptions,
    assets: DemoAssets,
    plans: dict[str, Plan],
    events: Sequence[SeenEvent],
    replayed: dict[str, dict[str, AppReplayFigures]],
    streamed_seconds: float,
    setup_seconds: float,
    url: str,
    budget_basis: str,
) -> DemoSummary:
    plan = plans["plan"]
    planned = {
        key: {app.name: app for app in scheme.apps} for key, scheme in plans.items()
    }  # scheme -> app -> AppPlan

    def figures_of(key: str, name: str) -> SchemeFigures | None:
        app = planned.get(key, {}).get(name)
        if app is None:
            return None
        measured = replayed.get(key, {}).get(name)
        return SchemeFigures(
            cut_point=app.cut_point,
            fps=app.fps,
            x_vote=app.x_vote,
            predicted_f1=app.f1,
            measured_f1=measured.measured_f1 if measured else None,
            measured_recall=measured.measured_recall if measured else None,
            measured_precision=measured.measured_precision if measured else None,
            false_alarms=measured.false_alarms if measured else None,
        )

    rows = []
    for name in assets.packages:  # the scene's order: trains, buses, cars, people
        schemes = {
            key: figures for key, _ in SCHEMES if (figures := figures_of(key, name)) is not None
        }
        own = schemes["plan"]
        measured = replayed.get("plan", {}).get(name)
        no_sharing, max_sharing = schemes.get("no_sharing"), schemes.get("max_sharing")
        rows.append(
            AppSummary(
                app=name,
                cut_point=own.cut_point,
                fps=own.fps,
                live_events=sum(event.app == name for event in events),
                predicted_f1=own.predicted_f1,
                measured_f1=own.measured_f1,
                measured_recall=own.measured_recall,
                measured_precision=own.measured_precision,
                labelled_events=measured.labelled_events if measured else None,
                false_alarms=own.false_alarms,
                no_sharing_f1=no_sharing.predicted_f1 if no_sharing else None,
                max_sharing_f1=max_sharing.predicted_f1 if max_sharing else None,
                no_sharing_measured_f1=no_sharing.measured_f1 if no_sharing else None,
                max_sharing_measured_f1=max_sharing.measured_f1 if max_sharing else None,
                schemes=schemes,
            )
        )

    totals: dict[str, SchemeTotals] = {}
    for key, label in SCHEMES:
        baseline = plan.baselines.get(key)
        if key != "plan" and (baseline is None or not baseline.feasible):
            totals[key] = SchemeTotals(
                label=label, feasible=False, cost_ms_per_s=0.0, predicted_f1=0.0, measured_f1=None
            )
            continue
        scheme = plans[key]
        totals[key] = SchemeTotals(
            label=label,
            feasible=True,
            cost_ms_per_s=round(scheme.total_cost, 2),
            predicted_f1=scheme.value,
            measured_f1=_mean([row.schemes[key].measured_f1 for row in rows]),
        )
    measured_value = totals["plan"].measured_f1
    margins = {
        key: round(measured_value - (scheme.measured_f1 or 0.0), 4)
        for key, scheme in totals.items()
        if key != "plan"
        and measured_value is not None
        and (scheme.measured_f1 is not None or not scheme.feasible)
    }
    flagged = [
        f"{row.app}: measured F1 {row.measured_f1:.2f} is far below its predicted "
        f"{row.predicted_f1:.2f} (recall {row.measured_recall or 0:.2f}, precision "
        f"{row.measured_precision or 0:.2f} over {row.labelled_events} labelled events)"
        for row in rows
        if row.measured_f1 is not None and row.predicted_f1 - row.measured_f1 > FAR_BELOW
    ]

    def baseline_value(name: str) -> float | None:
        baseline = plan.baselines.get(name)
        return None if baseline is None or not baseline.feasible else baseline.value

    return DemoSummary(
        data_dir=options.data_dir,
        url=url,
        setup_seconds=round(setup_seconds, 1),
        streamed_seconds=round(streamed_seconds, 1),
        camera_fps=assets.config.fps,
        budget_ms_per_s=plan.budget,
        budget_basis=budget_basis,
        plan_value=plan.value,
        no_sharing_value=baseline_value("no_sharing"),
        max_sharing_value=baseline_value("max_sharing"),
        measured_value=measured_value,
        margins=margins,
        schemes=totals,
        flagged=flagged,
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
    lines.append(
        "  predicted: "
        + ", ".join(parts)
        + f" (cost {plan.total_cost:.1f} of {plan.budget:g} ms/s)"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The whole run


def run_demo(options: DemoOptions, echo: Echo) -> DemoSummary:
    """Build or reuse the assets, serve them, stream the held-out video, measure, summarise."""

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
        profile, manifests = profile_machine(node_dir, port, assets)
        budget, budget_basis = demo_budget(options, profile, manifests)
        note(
            f"whole network {profile.total_cost:.2f} ms/frame at {len(profile.cut_points)} cut "
            f"points; budget {budget:g} ms/s"
        )
    echo(f"      budget: {budget_basis}")

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
        echo("events as they end (start time, app, camera, peak score, frames):")
        try:
            _wait(options.duration_s, server)
        except KeyboardInterrupt:
            echo("stopping (Ctrl-C)")
        streamed_seconds = time.monotonic() - streaming_since
    finally:
        server.stop()  # the node closes open events, which the printer still records
        node.stop()  # no-op after a clean shutdown; closes the files if the server never ran

    plans = scheme_plans(plan)
    with steps.step(
        "measuring: replaying the held-out video through the plan and the baselines"
    ) as note:
        runtime = node.settings.runtime
        replayed = {
            key: replay_figures(
                assets,
                scheme,
                node.engine.name,
                node_dir / "replay" / key,
                options.progress,
                runtime.openvino_precision,
            )
            for key, scheme in plans.items()
        }
        note(", ".join(label for key, label in SCHEMES if key in plans))
    summary = summarise(
        options,
        assets,
        plans,
        printer.snapshot(),
        replayed,
        streamed_seconds,
        setup_seconds,
        server.url,
        budget_basis,
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
