"""Labelled synthetic data: videos of objects crossing a scene, and image folders of object classes.

Real footage with event labels is scarce, so the trainer, its tests and the benchmarks use
scenes drawn here. A video is a static procedural landscape (sky with drifting clouds, a rail
track, a road, a pavement) that objects cross one at a time: each object is one event. The
event length, the fraction of time covered by events, sensor noise and slow lighting drift are
controlled, and the realised statistics are returned so that callers can check them against
what the event-statistics estimator measures. Another camera is another configuration: a tilted
view (`view_offset`), other object colours (`color_jitter`), other distractor kinds; clips of
one camera share a `scene_seed` (the landscape) and differ in their objects and noise.

Label CSV format (shared with :mod:`trainer.datasets`): a header `start_frame,end_frame,label`
then one row per object; frames are 0-based camera frames and BOTH ends are INCLUSIVE. A frame
is labelled with an object while at least a quarter of the object (or of the frame width, for
objects longer than the frame) is visible.

OpenCV is imported lazily; nothing here runs at import time.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tqdm import tqdm

from mainstream.core.errors import InvalidParameterError, SourceError
from trainer.datasets import write_event_csv
from trainer.event_stats import EventInterval

# Object kinds a video can contain; each is drawn by `_draw_object` in its own lane.
OBJECT_KINDS: tuple[str, ...] = ("train", "car", "bus", "person")

# Classes `generate_image_dataset` can draw, in the order an integer `classes` takes them.
IMAGE_CLASSES: tuple[str, ...] = (
    "train",
    "car",
    "bus",
    "person",
    "background",
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "stripes",
    "checker",
    "ellipse",
)

VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v"}
IMAGE_SUFFIX = ".png"


class SynthConfig(BaseModel):
    """Everything that defines one synthetic video (also loadable from YAML)."""

    model_config = ConfigDict(extra="forbid")

    duration_s: float = Field(default=60.0, gt=0, le=86_400, description="Video length")
    fps: float = Field(default=10.0, gt=0, le=240, description="Camera frame rate")
    width: int = Field(default=160, ge=32, le=4096)
    height: int = Field(default=120, ge=32, le=4096)
    kinds: list[str] = Field(
        default_factory=lambda: ["train"],
        min_length=1,
        description="Object kinds whose crossings are the events",
    )
    event_length_s: float = Field(default=2.0, gt=0, description="Mean time an object is visible")
    event_length_jitter: float = Field(
        default=0.25, ge=0, le=0.9, description="Lengths are uniform in mean * (1 ± jitter)"
    )
    event_frequency: float = Field(
        default=0.3, ge=0, lt=1, description="Fraction of time covered by events of `kinds`"
    )
    distractor_kinds: list[str] = Field(
        default_factory=list, description="Other objects that also cross (labelled too)"
    )
    distractor_frequency: float = Field(default=0.0, ge=0, lt=1)
    noise: float = Field(default=0.02, ge=0, le=0.5, description="Sensor noise std, of full scale")
    drift: float = Field(default=0.1, ge=0, le=0.9, description="Lighting drift amplitude")
    view_offset: float = Field(
        default=0.0,
        ge=-0.1,
        le=0.1,
        description="Camera tilt: the horizon and the track, road and pavement move down by "
        "this fraction of the height (negative: up)",
    )
    color_jitter: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Each object's colour moves by up to this fraction of half the range per "
        "channel (0: the kinds' usual colours)",
    )
    scene_seed: int | None = Field(
        default=None,
        description="Seed of the landscape (textures, clouds, lighting phases) alone; None: "
        "`seed`. Clips of one camera share it and differ in their objects and noise",
    )
    seed: int = 0

    @field_validator("kinds", "distractor_kinds")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        unknown = [kind for kind in kinds if kind not in OBJECT_KINDS]
        if unknown:
            # Read after "expected" in the CLI's message: "expected kinds from [...]".
            named = ", ".join(repr(kind) for kind in unknown)
            raise ValueError(f"kinds from {list(OBJECT_KINDS)} ({named}: no such kind)")
        return kinds

    @model_validator(mode="after")
    def _room_for_gaps(self) -> SynthConfig:
        both = sorted(set(self.kinds) & set(self.distractor_kinds))
        if both:
            raise ValueError(f"kinds {both} are listed both as events and as distractors")
        if self.distractor_frequency > 0 and not self.distractor_kinds:
            raise ValueError("distractor_frequency > 0 needs at least one distractor kind")
        if self.event_frequency + self.distractor_frequency > 0.9:
            raise ValueError(
                "event_frequency + distractor_frequency must leave at least 10% of the time "
                f"free of objects, got {self.event_frequency + self.distractor_frequency:g}"
            )
        if self.event_length_s * self.fps < 1:
            raise ValueError(
                f"event_length_s * fps = {self.event_length_s * self.fps:g} frames; need >= 1"
            )
        return self

    @property
    def total_frames(self) -> int:
        return max(1, round(self.duration_s * self.fps))


class SynthSummary(BaseModel):
    """What a generated video actually contains (realised, not requested, statistics)."""

    video_path: str
    labels_path: str
    total_frames: int
    fps: float
    width: int
    height: int
    event_count: int
    mean_event_length_s: float
    realised_event_frequency: float
    distractor_count: int
    counts_by_kind: dict[str, int]
    config: SynthConfig


def generate_video(
    video_path: Path | str,
    labels_path: Path | str,
    config: SynthConfig | None = None,
    *,
    show_progress: bool = True,
) -> SynthSummary:
    """Render a labelled video; write the video and its label CSV (each via temp + rename).

    The container follows the extension: `.avi` is written as MJPG (frame-exact, robust),
    `.mp4`/`.m4v`/`.mov` as mp4v. The written file is opened again and its frame count checked.
    """
    import cv2  # OpenCV loads only when frames are decoded or drawn

    config = config or SynthConfig()
    video_path, labels_path = Path(video_path), Path(labels_path)
    codec = VIDEO_CODECS.get(video_path.suffix.lower())
    if codec is None:
        raise InvalidParameterError(
            "video_path", str(video_path), f"a file ending in one of {sorted(VIDEO_CODECS)}"
        )
    rng = np.random.default_rng(config.seed)
    total_frames = config.total_frames
    events = plan_events(config, rng)
    landscape = rng if config.scene_seed is None else np.random.default_rng(config.scene_seed)
    scene = _Scene(config, landscape, rng)
    styles = [
        _object_style(
            event.label,
            config.width,
            config.height,
            rng,
            offset=config.view_offset,
            color_jitter=config.color_jitter,
        )
        for event in events
    ]
    # Object index per frame (-1: empty scene); events never overlap.
    active = np.full(total_frames, -1, dtype=np.int64)
    for index, event in enumerate(events):
        active[event.start_frame : event.end_frame + 1] = index

    video_path.parent.mkdir(parents=True, exist_ok=True)
    temp_video = _temp_sibling(video_path)
    try:
        writer = cv2.VideoWriter(
            str(temp_video),
            cv2.VideoWriter.fourcc(*codec),
            config.fps,
            (config.width, config.height),
        )
        if not writer.isOpened():
            raise SourceError(f"OpenCV cannot write {codec} video to {video_path}")
        try:
            for frame_index in tqdm(
                range(total_frames), desc="rendering", unit="frame", disable=not show_progress
            ):
                canvas = scene.background(frame_index)
                object_index = int(active[frame_index])
                if object_index >= 0:
                    event = events[object_index]
                    progress = (
                        (frame_index - event.start_frame) / (event.frame_count - 1)
                        if event.frame_count > 1
                        else 0.5
                    )
                    _draw_object(canvas, styles[object_index], progress, frame_index, config)
                rgb = scene.finish(canvas, frame_index)
                writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        written = _count_frames(temp_video)
        if written != total_frames:
            raise SourceError(
                f"wrote {total_frames} frames to {video_path} but OpenCV reads back {written}"
            )
        write_event_csv(labels_path, events)
        os.replace(temp_video, video_path)
    finally:
        temp_video.unlink(missing_ok=True)

    positives = [event for event in events if event.label in config.kinds]
    covered = sum(event.frame_count for event in positives)
    counts: dict[str, int] = {}
    for event in events:
        counts[event.label] = counts.get(event.label, 0) + 1
    return SynthSummary(
        video_path=str(video_path),
        labels_path=str(labels_path),
        total_frames=total_frames,
        fps=config.fps,
        width=config.width,
        height=config.height,
        event_count=len(positives),
        mean_event_length_s=(covered / len(positives) / config.fps) if positives else 0.0,
        realised_event_frequency=covered / total_frames,
        distractor_count=len(events) - len(positives),
        counts_by_kind=counts,
        config=config,
    )


def plan_events(config: SynthConfig, rng: np.random.Generator) -> list[EventInterval]:
    """Non-overlapping object crossings with the requested length and time coverage.

    The number of events is the target coverage (`frequency * total_frames`) over the mean
    length, rounded; lengths are drawn uniformly in mean * (1 ± jitter) and then scaled
    together so that they cover the target exactly. Short videos therefore keep the requested
    frequency at the cost of a mean length a little off (at most by the rounding of the count).
    The free time is shared out at random between the gaps, with at least `min_gap` frames
    between two objects so neighbouring events never merge.
    """
    total_frames = config.total_frames
    mean_frames = config.event_length_s * config.fps
    lengths: list[tuple[int, str]] = []
    for kinds, frequency in (
        (config.kinds, config.event_frequency),
        (config.distractor_kinds, config.distractor_frequency),
    ):
        target = round(frequency * total_frames)
        count = min(target, max(1, round(target / mean_frames))) if kinds else 0
        if count == 0:
            continue
        drawn = mean_frames * (1.0 + config.event_length_jitter * rng.uniform(-1, 1, count))
        scaled = drawn * (target / drawn.sum())
        whole = np.maximum(1, np.floor(scaled).astype(int))
        # Hand the frames lost to rounding to the events with the largest remainders.
        shortfall = target - int(whole.sum())
        if shortfall > 0:
            whole[np.argsort(whole - scaled)[:shortfall]] += 1
        lengths += [(int(length), str(rng.choice(kinds))) for length in whole]
    order = rng.permutation(len(lengths))
    lengths = [lengths[i] for i in order]

    min_gap = max(2, round(0.3 * config.fps))
    free = total_frames - sum(length for length, _ in lengths)
    spare = free - min_gap * max(0, len(lengths) - 1)
    if spare < 0:
        raise InvalidParameterError(
            "event_frequency",
            config.event_frequency,
            f"room for {len(lengths)} events of ~{config.event_length_s:g} s with "
            f"{min_gap}-frame gaps in {config.duration_s:g} s; lower the frequency or lengthen "
            "the video",
        )
    # Random share of the spare frames for each of the len+1 gaps (before, between, after).
    shares = rng.dirichlet(np.ones(len(lengths) + 1)) * spare
    gaps = np.floor(shares).astype(int)
    gaps[: spare - int(gaps.sum())] += 1
    events = []
    cursor = int(gaps[0])
    for index, (length, kind) in enumerate(lengths):
        events.append(EventInterval(cursor, cursor + length - 1, kind))
        cursor += length + min_gap + int(gaps[index + 1])
    return events


def generate_image_dataset(
    out_dir: Path | str,
    classes: int | Sequence[str] = 10,
    images_per_class: int = 50,
    image_size: int = 96,
    seed: int = 0,
    *,
    show_progress: bool = True,
) -> dict[str, int]:
    """Write `out_dir/<class>/<index>.png` images of synthetic object classes.

    `classes` is a count (the first N of :data:`IMAGE_CLASSES`) or a list of their names. Each
    image puts one object (random size, place, colour) on a random texture, for pretraining a
    base network on many classes. File names carry no clip prefix: the images are independent.
    Returns the number of images per class. The folder is built beside `out_dir` and renamed
    into place, so a failure never leaves a half-written dataset.
    """
    import cv2  # OpenCV loads only when frames are decoded or drawn

    names = _image_class_names(classes)
    if isinstance(images_per_class, bool) or images_per_class < 1:
        raise InvalidParameterError("images_per_class", images_per_class, "an integer >= 1")
    if isinstance(image_size, bool) or not 16 <= image_size <= 1024:
        raise InvalidParameterError("image_size", image_size, "an integer in 16..1024")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InvalidParameterError("out_dir", str(out_dir), "a new or empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        jobs = [(name, index) for name in names for index in range(images_per_class)]
        for name in names:
            (staging / name).mkdir()
        for name, index in tqdm(jobs, desc="drawing images", unit="img", disable=not show_progress):
            rgb = draw_class_image(name, image_size, rng)
            path = staging / name / f"{index:05d}{IMAGE_SUFFIX}"
            if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise SourceError(f"OpenCV cannot write {path}")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dict.fromkeys(names, images_per_class)


def draw_class_image(name: str, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 image of class `name` (see :data:`IMAGE_CLASSES`)."""

    if name not in IMAGE_CLASSES:
        raise InvalidParameterError("class", name, f"one of {list(IMAGE_CLASSES)}")
    size = image_size
    canvas = _random_texture(size, size, rng)
    if name != "background":
        scale = rng.uniform(0.35, 0.75)
        centre = rng.uniform(0.3, 0.7, size=2) * size
        color = tuple(float(v) for v in rng.uniform(20, 235, size=3))
        if name in OBJECT_KINDS:
            _draw_kind_icon(canvas, name, centre, scale * size, rng)
        else:
            _draw_shape(canvas, name, centre, scale * size / 2, color, rng)
    gain = rng.uniform(0.8, 1.2)
    noise = rng.normal(0.0, rng.uniform(0, 8), canvas.shape)
    return np.clip(canvas * gain + noise, 0, 255).astype(np.uint8)


def _image_class_names(classes: int | Sequence[str]) -> list[str]:
    if isinstance(classes, int) and not isinstance(classes, bool):
        if not 2 <= classes <= len(IMAGE_CLASSES):
            raise InvalidParameterError("classes", classes, f"2..{len(IMAGE_CLASSES)}")
        return list(IMAGE_CLASSES[:classes])
    names = list(classes)  # type: ignore[arg-type]
    unknown = [name for name in names if name not in IMAGE_CLASSES]
    if unknown or len(names) < 2 or len(set(names)) != len(names):
        raise InvalidParameterError(
            "classes", names, f"2 or more distinct names from {list(IMAGE_CLASSES)}"
        )
    return names


# --- scene rendering -------------------------------------------------------------------------


class _Scene:
    """The static landscape plus what changes slowly over time: clouds, lighting, noise.

    The landscape is drawn from `rng`, the sensor noise from `noise_rng`.
    """

    def __init__(
        self, config: SynthConfig, rng: np.random.Generator, noise_rng: np.random.Generator
    ) -> None:
        import cv2  # OpenCV loads only when frames are decoded or drawn

        self.config = config
        self.rng = noise_rng
        width, height = config.width, config.height
        self.horizon = int((0.35 + config.view_offset) * height)
        base = _random_texture(height, width, rng, palette=((70, 120, 60), (110, 150, 80)))
        # Road, rail track and pavement bands (rows as fractions of the height).
        lanes = _lanes(height, config.view_offset)
        top, bottom = lanes["road"]
        base[top:bottom] = 0.35 * base[top:bottom] + 0.65 * np.array([95, 95, 100])
        dash = max(4, width // 12)
        middle = (top + bottom) // 2
        for x in range(0, width, 2 * dash):
            cv2.line(base, (x, middle), (x + dash, middle), (220, 220, 200), 1)
        rail_top, rail_bottom = lanes["track"]
        base[rail_top:rail_bottom] = 0.5 * base[rail_top:rail_bottom] + 0.5 * np.array(
            [120, 105, 90]
        )
        for x in range(0, width, max(3, width // 32)):
            cv2.line(base, (x, rail_top), (x, rail_bottom - 1), (80, 60, 45), 1)
        for y in (rail_top + 1, rail_bottom - 2):
            cv2.line(base, (0, y), (width - 1, y), (170, 170, 175), 1)
        walk_top, walk_bottom = lanes["pavement"]
        base[walk_top:walk_bottom] = 0.4 * base[walk_top:walk_bottom] + 0.6 * np.array(
            [170, 165, 150]
        )
        self.ground = base
        # The sky is wider than the frame so clouds can drift across it.
        sky = _random_texture(
            self.horizon, 2 * width, rng, palette=((120, 170, 230), (200, 220, 245))
        )
        self.sky = sky
        self.cloud_speed = rng.uniform(0.2, 0.6) * width / 60.0  # pixels per second
        self.drift_phases = rng.uniform(0, 2 * math.pi, size=2)
        self.drift_periods_s = (rng.uniform(30, 60), rng.uniform(8, 15))

    def background(self, frame_index: int) -> np.ndarray:
        canvas = self.ground.copy()
        shift = int(self.cloud_speed * frame_index / self.config.fps) % self.sky.shape[1]
        rolled = np.roll(self.sky, -shift, axis=1)
        canvas[: self.horizon] = rolled[:, : self.config.width]
        return canvas

    def finish(self, canvas: np.ndarray, frame_index: int) -> np.ndarray:
        """Apply lighting drift and sensor noise; return RGB uint8."""
        seconds = frame_index / self.config.fps
        wave = 0.7 * math.sin(
            2 * math.pi * seconds / self.drift_periods_s[0] + self.drift_phases[0]
        )
        wave += 0.3 * math.sin(
            2 * math.pi * seconds / self.drift_periods_s[1] + self.drift_phases[1]
        )
        canvas *= np.float32(1.0 + self.config.drift * wave)
        if self.config.noise:
            noise = self.rng.standard_normal(canvas.shape, dtype=np.float32)
            noise *= np.float32(255.0 * self.config.noise)
            canvas += noise
        np.clip(canvas, 0, 255, out=canvas)
        return canvas.astype(np.uint8)


def _lanes(height: int, offset: float = 0.0) -> dict[str, tuple[int, int]]:
    """Rows (top, bottom) of the track, road and pavement bands, moved down by `offset` of
    the height (a tilted camera)."""

    def rows(top: float, bottom: float) -> tuple[int, int]:
        top, bottom = top + offset, min(1.0, bottom + offset)
        return int(top * height), max(int(top * height) + 2, int(bottom * height))

    return {"track": rows(0.50, 0.56), "road": rows(0.62, 0.84), "pavement": rows(0.86, 0.97)}


def _random_texture(
    height: int,
    width: int,
    rng: np.random.Generator,
    palette: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Smooth coloured noise: a blend of two colours by upsampled low-resolution noise."""
    import cv2  # OpenCV loads only when frames are decoded or drawn

    if palette is None:
        first = rng.uniform(0, 255, size=3)
        second = np.clip(first + rng.normal(0, 70, size=3), 0, 255)
    else:
        first, second = np.array(palette[0], float), np.array(palette[1], float)
    cells = int(rng.integers(3, 9))
    coarse = rng.random((cells, cells)).astype(np.float32)
    mix = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 0.06, (height, width)).astype(np.float32)
    mix = np.clip(mix + fine, 0, 1)[..., None]
    return (first * (1 - mix) + second * mix).astype(np.float32)


@dataclass(frozen=True)
class _ObjectStyle:
    """How one object looks and moves: its size in pixels, colour, lane and direction."""

    kind: str
    length: float
    body_height: float
    bottom: int
    color: tuple[float, float, float]
    direction: int  # +1: left to right, -1: right to left


def _object_style(
    kind: str,
    width: int,
    height: int,
    rng: np.random.Generator,
    offset: float = 0.0,
    color_jitter: float = 0.0,
) -> _ObjectStyle:
    lanes = _lanes(height, offset)
    direction = 1 if rng.random() < 0.5 else -1
    if kind == "train":
        length, body, bottom = rng.uniform(1.2, 2.5) * width, 0.24 * height, lanes["track"][1] - 1
        color = _rgb(rng.uniform(35, 70, size=3))
    elif kind == "bus":
        length, body, bottom = rng.uniform(0.38, 0.5) * width, 0.2 * height, lanes["road"][1] - 3
        color = (235.0, 190.0 + rng.uniform(-15, 15), 30.0)
    elif kind == "car":
        road_top, road_bottom = lanes["road"]
        length, body = rng.uniform(0.18, 0.26) * width, 0.1 * height
        bottom = road_top + int(0.6 * (road_bottom - road_top))
        palette = [(200, 30, 30), (30, 60, 190), (235, 235, 235), (30, 140, 60), (20, 20, 20)]
        color = _rgb(palette[int(rng.integers(len(palette)))])
    else:  # person
        length, body, bottom = max(4.0, 0.05 * width), 0.3 * height, lanes["pavement"][1] - 1
        color = _rgb(rng.uniform(40, 220, size=3))
    if color_jitter > 0:  # drawn only when asked, so the default scenes stay as they were
        moved = np.array(color) + rng.uniform(-1, 1, size=3) * color_jitter * 127.5
        color = _rgb(np.clip(moved, 0, 255))
    return _ObjectStyle(kind, float(length), float(body), int(bottom), color, direction)


def _rgb(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])


def _draw_object(
    canvas: np.ndarray, style: _ObjectStyle, progress: float, frame_index: int, config: SynthConfig
) -> None:
    """Draw the object at `progress` (0: just entered, 1: about to leave) of its crossing."""
    width = config.width
    length = style.length
    # At the first and last labelled frames a quarter of the object (or frame) is visible.
    visible = max(3.0, 0.25 * min(length, width))
    left_start, left_end = visible - length, width - visible
    if style.direction < 0:
        left_start, left_end = left_end, left_start
    left = left_start + progress * (left_end - left_start)
    _draw_kind(canvas, left, style, frame_index)


def _draw_kind(canvas: np.ndarray, left: float, style: _ObjectStyle, frame_index: int) -> None:
    import cv2  # OpenCV loads only when frames are decoded or drawn

    kind, length, body, bottom = style.kind, style.length, style.body_height, style.bottom
    color = style.color
    top = int(bottom - body)
    x0, x1 = int(left), int(left + length)
    if kind == "train":
        cv2.rectangle(canvas, (x0, top), (x1, bottom), color, -1)
        window_h = max(2, int(body * 0.3))
        window_w = max(2, int(body * 0.5))
        for x in range(x0 + window_w // 2, x1 - window_w, int(window_w * 1.8)):
            cv2.rectangle(
                canvas,
                (x, top + int(body * 0.2)),
                (x + window_w, top + int(body * 0.2) + window_h),
                (200, 210, 150),
                -1,
            )
        # Car couplings every ~1.2 body lengths of the train.
        for x in range(x0, x1, max(8, int(body * 4))):
            cv2.line(canvas, (x, top), (x, bottom), (15, 15, 15), 1)
    elif kind == "bus":
        cv2.rectangle(canvas, (x0, top), (x1, bottom), color, -1)
        window_h = max(2, int(body * 0.3))
        step = max(4, int(length / 6))
        for x in range(x0 + 2, x1 - step // 2, step):
            cv2.rectangle(
                canvas, (x, top + 2), (x + step - 3, top + 2 + window_h), (60, 80, 110), -1
            )
        radius = max(2, int(body * 0.18))
        for x in (x0 + int(length * 0.2), x1 - int(length * 0.2)):
            cv2.circle(canvas, (x, bottom), radius, (20, 20, 20), -1)
    elif kind == "car":
        cv2.rectangle(canvas, (x0, top + int(body * 0.35)), (x1, bottom), color, -1)
        cabin = (x0 + int(length * 0.25), top), (x1 - int(length * 0.25), top + int(body * 0.4))
        cv2.rectangle(canvas, cabin[0], cabin[1], (120, 150, 170), -1)
        radius = max(2, int(body * 0.25))
        for x in (x0 + int(length * 0.22), x1 - int(length * 0.22)):
            cv2.circle(canvas, (x, bottom), radius, (15, 15, 15), -1)
    else:  # person: head, body, legs that swing as it walks
        centre = int(left + length / 2)
        head = max(2, int(body * 0.12))
        cv2.circle(canvas, (centre, top + head), head, (230, 190, 160), -1)
        cv2.rectangle(canvas, (x0, top + 2 * head), (x1, top + int(body * 0.62)), color, -1)
        swing = int(length * 0.4 * math.sin(frame_index * 1.3))
        hip = top + int(body * 0.62)
        for offset in (swing, -swing):
            cv2.line(
                canvas,
                (centre, hip),
                (centre + offset, bottom),
                (40, 40, 60),
                max(1, int(length / 4)),
            )


def _draw_kind_icon(
    canvas: np.ndarray, kind: str, centre: np.ndarray, extent: float, rng: np.random.Generator
) -> None:
    """A video object kind drawn whole inside an image, for the image dataset."""
    aspect = {"train": 0.25, "bus": 0.45, "car": 0.45, "person": 3.0}[kind]
    if aspect < 1:
        length, body = extent, extent * aspect
    else:
        length, body = extent / aspect, extent
    size = canvas.shape[0]
    style = replace(
        _object_style(kind, size, size, rng),
        length=length,
        body_height=body,
        bottom=int(centre[1] + body / 2),
    )
    _draw_kind(canvas, float(centre[0] - length / 2), style, int(rng.integers(0, 100)))


def _draw_shape(
    canvas: np.ndarray,
    name: str,
    centre: np.ndarray,
    radius: float,
    color: tuple[float, ...],
    rng: np.random.Generator,
) -> None:
    import cv2  # OpenCV loads only when frames are decoded or drawn

    cx, cy, r = int(centre[0]), int(centre[1]), max(3, int(radius))
    angle = rng.uniform(0, 2 * math.pi)

    def polygon(corners: int, inner: float | None = None) -> np.ndarray:
        points = []
        steps = corners * (2 if inner else 1)
        for k in range(steps):
            rad = r if (inner is None or k % 2 == 0) else r * inner
            theta = angle + 2 * math.pi * k / steps
            points.append((cx + rad * math.cos(theta), cy + rad * math.sin(theta)))
        return np.array(points, dtype=np.int32)

    thickness = max(2, r // 4)
    drawers: dict[str, Callable[[], None]] = {
        "circle": lambda: cv2.circle(canvas, (cx, cy), r, color, -1),
        "square": lambda: cv2.fillPoly(canvas, [polygon(4)], color),
        "triangle": lambda: cv2.fillPoly(canvas, [polygon(3)], color),
        "star": lambda: cv2.fillPoly(canvas, [polygon(5, inner=0.4)], color),
        "ring": lambda: cv2.circle(canvas, (cx, cy), r, color, thickness),
        "ellipse": lambda: cv2.ellipse(
            canvas, (cx, cy), (r, max(2, r // 2)), math.degrees(angle), 0, 360, color, -1
        ),
    }
    if name in drawers:
        drawers[name]()
    elif name == "cross":
        for theta in (angle, angle + math.pi / 2):
            dx, dy = int(r * math.cos(theta)), int(r * math.sin(theta))
            cv2.line(canvas, (cx - dx, cy - dy), (cx + dx, cy + dy), color, thickness)
    elif name in ("stripes", "checker"):
        x0, y0, x1, y1 = cx - r, cy - r, cx + r, cy + r
        cell = max(2, r // 3)
        other = tuple(255.0 - v for v in color)
        for y in range(y0, y1, cell):
            for x in range(x0, x1, cell):
                column, row = (x - x0) // cell, (y - y0) // cell
                dark = column % 2 == 0 if name == "stripes" else (column + row) % 2 == 0
                cv2.rectangle(
                    canvas, (x, y), (x + cell - 1, y + cell - 1), color if dark else other, -1
                )


# --- files -----------------------------------------------------------------------------------


def _temp_sibling(path: Path) -> Path:
    """A fresh temp file beside `path` with the same extension (OpenCV picks the container by it)."""
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    return Path(name)


def _count_frames(path: Path) -> int:
    import cv2  # OpenCV loads only when frames are decoded or drawn

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return 0
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()
