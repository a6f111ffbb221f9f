"""Labelled frames in memory for training: image folders, labelled videos, and a time-aware split.

Frames of a video are not independent examples: neighbouring frames are near-duplicates. A
random frame-level split puts the twin of almost every validation frame in the training set,
and the held-out accuracy (hence the recall and false-positive rate the scheduler relies on)
comes out far too optimistic. Every dataset here therefore carries each frame's time position
(`order`) and its clip (`groups`), and :func:`split_by_time` holds out whole clips or whole
contiguous stretches of time, never scattered frames.

Label CSV (written by :mod:`trainer.synth`, read here): header `start_frame,end_frame,label`,
one row per event, 0-based camera frames, BOTH ends INCLUSIVE. A two-column CSV (no label) is
accepted; its events are labelled "event". Blank lines and lines starting with `#` are skipped.

OpenCV is imported lazily, inside the functions that decode images or video.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from mainstream.core.errors import InvalidParameterError, SourceError
from trainer.event_stats import EventInterval, compact_fires

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
NEGATIVE_CLASS = "background"
CSV_HEADER = ("start_frame", "end_frame", "label")
# `<clip>_<index>.<ext>`, e.g. `cam2_000123.png`: frame 123 of clip "cam2".
CLIP_FILE_PATTERN = re.compile(r"^(?P<clip>.+)_(?P<index>\d+)$")
# Without clip names, each class's sorted files are cut into blocks of this many neighbours.
DEFAULT_BLOCK_SIZE = 16

Dataset = TypeVar("Dataset", bound="FrameDataset")


@dataclass
class FrameDataset:
    """Labelled frames: images (N, H, W, 3) uint8 RGB with their class and time position.

    `order` ranks frames in time (for a video: the camera frame index); `groups` names the clip
    or contiguous time block a frame belongs to. The loaders return frames sorted by
    (group, order), and :meth:`subset` with sorted indices keeps them so.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    order: np.ndarray
    groups: np.ndarray
    fps: float | None

    def __post_init__(self) -> None:
        count = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise InvalidParameterError(
                "images", f"{self.images.dtype} {self.images.shape}", "uint8 (N, H, W, 3)"
            )
        for name in ("labels", "order", "groups"):
            if len(getattr(self, name)) != count:
                raise InvalidParameterError(
                    name, f"length {len(getattr(self, name))}", f"one entry per image ({count})"
                )
        if count and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise InvalidParameterError(
                "labels",
                f"{self.labels.min()}..{self.labels.max()}",
                f"class indices in 0..{len(self.class_names) - 1}",
            )

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts, strict=True)}

    def subset(self: Dataset, indices: np.ndarray) -> Dataset:
        """The frames at `indices` (kept in the given order), with everything else unchanged."""
        indices = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            images=self.images[indices],
            labels=self.labels[indices],
            order=self.order[indices],
            groups=self.groups[indices],
        )

    def summary(self) -> dict[str, object]:
        """A JSON-friendly description, e.g. for the package's training provenance."""
        return {
            "frames": len(self),
            "image_shape": list(self.images.shape[1:]),
            "classes": self.class_counts(),
            "clips": len(np.unique(self.groups)),
            "fps": self.fps,
        }


@dataclass
class LabelledVideo(FrameDataset):
    """A video's frames for binary classification: class_names = [negative, positive].

    `intervals` are the positive events (camera frames, inclusive ends) whose frames are all in
    this dataset; `total_frames` is the video's frame count; `order` holds camera frame indices.
    """

    intervals: list[EventInterval] = field(default_factory=list)
    total_frames: int = 0

    def subset(self, indices: np.ndarray) -> LabelledVideo:
        """A subset; keeps the events none of whose loaded frames were dropped."""
        kept = super().subset(indices)
        dropped = np.ones(len(self), dtype=bool)
        dropped[np.asarray(indices, dtype=np.int64)] = False
        dropped_frames = self.order[dropped]
        kept.intervals = [
            interval
            for interval in self.intervals
            if _any_inside(kept.order, interval) and not _any_inside(dropped_frames, interval)
        ]
        return kept

    def event_fires(self, fired: np.ndarray) -> tuple[np.ndarray, list[EventInterval], float]:
        """Arguments for :func:`trainer.event_stats.estimate_correlation` from a model's
        per-frame decisions on these frames: (fires, events, camera_fps).

        `fired[i]` is the decision on frame i of this dataset. With a frame step k the sampled
        frames play the camera's part (rate fps / k), see :func:`compact_fires`.
        """
        fired = np.asarray(fired, dtype=bool)
        if fired.shape != (len(self),):
            raise InvalidParameterError(
                "fired", f"shape {fired.shape}", f"one decision per frame ({len(self)},)"
            )
        if self.fps is None:
            raise InvalidParameterError("fps", None, "the video's frame rate")
        time_sorted = np.argsort(self.order, kind="stable")
        fires, events, step = compact_fires(
            self.order[time_sorted], fired[time_sorted], self.intervals
        )
        return fires, events, self.fps / step


def _any_inside(frames: np.ndarray, interval: EventInterval) -> bool:
    return bool(np.any((frames >= interval.start_frame) & (frames <= interval.end_frame)))


# --- image folders ---------------------------------------------------------------------------


def load_image_folder(
    path: Path | str,
    image_size: int | tuple[int, int],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    show_progress: bool = True,
) -> FrameDataset:
    """Read `path/<class>/<image>` into memory, resized to `image_size` ((height, width) or square).

    Time order: when every file is named `<clip>_<index>.<ext>` (as :func:`export_video_frames`
    writes), frames are grouped by clip and ordered by index across all classes. Otherwise
    sorted file names are taken as time order within a class, and each class's files are cut
    into groups of `block_size` neighbours (burst shots and frame dumps stay together).

    An unreadable image is an error naming the file (a silently smaller dataset would skew the
    measured recall and false-positive rate without anyone noticing).
    """
    import cv2  # OpenCV loads only when frames are decoded or drawn

    root = Path(path)
    height, width = _size(image_size)
    if block_size < 1:
        raise InvalidParameterError("block_size", block_size, "an integer >= 1")
    if not root.is_dir():
        raise InvalidParameterError("path", str(root), "a folder with one subfolder per class")
    class_files = {
        folder.name: sorted(
            file
            for file in folder.iterdir()
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES
        )
        for folder in sorted(root.iterdir())
        if folder.is_dir() and not folder.name.startswith(".")
    }
    empty = [name for name, files in class_files.items() if not files]
    if len(class_files) < 2 or empty:
        raise InvalidParameterError(
            "path",
            str(root),
            "at least 2 class subfolders, each with images"
            + (f"; {', '.join(empty)} ha{'s' if len(empty) == 1 else 've'} none" if empty else ""),
        )
    class_names = list(class_files)
    files = [file for name in class_names for file in class_files[name]]
    labels = np.repeat(np.arange(len(class_names)), [len(class_files[n]) for n in class_names])
    matches = [CLIP_FILE_PATTERN.match(file.stem) for file in files]

    if all(matches):
        clips = [match.group("clip") for match in matches if match]
        clip_ids = {clip: number for number, clip in enumerate(sorted(set(clips)))}
        groups = np.array([clip_ids[clip] for clip in clips], dtype=np.int64)
        order = np.array([int(match.group("index")) for match in matches if match], dtype=np.int64)
    else:
        # Time rank of a file: its place among all file names (ties broken by class).
        by_name = sorted(range(len(files)), key=lambda i: (files[i].name, labels[i]))
        order = np.empty(len(files), dtype=np.int64)
        order[by_name] = np.arange(len(files))
        # One group per block of `block_size` neighbouring files of the same class.
        position_in_class = np.concatenate([np.arange(len(class_files[n])) for n in class_names])
        blocks_before = np.cumsum(
            [0, *(math.ceil(len(class_files[name]) / block_size) for name in class_names)]
        )
        groups = blocks_before[labels] + position_in_class // block_size

    images = np.empty((len(files), height, width, 3), dtype=np.uint8)
    for index, file in enumerate(
        tqdm(files, desc="reading images", unit="img", disable=not show_progress)
    ):
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InvalidParameterError("image", str(file), "a readable image file")
        images[index] = _to_rgb(bgr, height, width)
    dataset = FrameDataset(images, labels, class_names, order, groups, fps=None)
    return dataset.subset(np.lexsort((order, groups)))


def export_video_frames(
    video_path: Path | str,
    labels_csv: Path | str,
    out_dir: Path | str,
    positive_label: str | None = None,
    *,
    frame_step: int = 1,
    image_size: int | tuple[int, int] | None = None,
    clip_name: str | None = None,
    show_progress: bool = True,
) -> dict[str, int]:
    """Write a labelled video's frames into an image folder: `out_dir/<class>/<clip>_<frame>.png`.

    The names follow the clip convention of :func:`load_image_folder`, so time order and clips
    survive the round trip. Several videos can be exported into the same folder (distinct
    `clip_name`s, default: the video's file stem). Returns the number of frames per class.
    """
    import cv2  # OpenCV loads only when frames are decoded or drawn

    video = load_labelled_video(
        video_path,
        labels_csv,
        image_size,
        positive_label,
        frame_step=frame_step,
        show_progress=show_progress,
    )
    clip = clip_name or re.sub(r"[^A-Za-z0-9.-]+", "-", Path(video_path).stem)
    out = Path(out_dir)
    for name in video.class_names:
        (out / name).mkdir(parents=True, exist_ok=True)
    for image, label, frame in zip(video.images, video.labels, video.order, strict=True):
        target = out / video.class_names[int(label)] / f"{clip}_{int(frame):06d}.png"
        if not cv2.imwrite(str(target), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise SourceError(f"OpenCV cannot write {target}")
    return video.class_counts()


# --- labelled video --------------------------------------------------------------------------


def read_event_csv(path: Path | str) -> list[EventInterval]:
    """Parse a label CSV (`start_frame,end_frame[,label]`, inclusive ends); errors name the row."""
    path = Path(path)
    if not path.is_file():
        raise InvalidParameterError("labels_csv", str(path), "an existing CSV file")
    text = path.read_text(encoding="utf-8-sig")
    intervals = []
    for row_number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if row_number == 1 and cells[0].lower() == CSV_HEADER[0]:
            continue
        where = f"{path.name} row {row_number}"
        if len(cells) not in (2, 3):
            raise InvalidParameterError(where, ",".join(cells), "start_frame,end_frame[,label]")
        try:
            start, end = int(cells[0]), int(cells[1])
        except ValueError:
            raise InvalidParameterError(
                where, ",".join(cells), "integer start_frame and end_frame"
            ) from None
        label = cells[2] if len(cells) == 3 and cells[2] else "event"
        if not 0 <= start <= end:
            raise InvalidParameterError(
                where, ",".join(cells), "0 <= start_frame <= end_frame (end is inclusive)"
            )
        intervals.append(EventInterval(start, end, label))
    return intervals


def write_event_csv(path: Path | str, intervals: Sequence[EventInterval]) -> None:
    """Write a label CSV atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(CSV_HEADER)
            for interval in sorted(intervals, key=lambda iv: (iv.start_frame, iv.end_frame)):
                writer.writerow([interval.start_frame, interval.end_frame, interval.label])
        os.replace(temp_name, path)
    finally:
        Path(temp_name).unlink(missing_ok=True)


def load_labelled_video(
    video_path: Path | str,
    labels_csv: Path | str,
    image_size: int | tuple[int, int] | None,
    positive_label: str | None = None,
    frame_step: int = 1,
    *,
    fps: float | None = None,
    show_progress: bool = True,
) -> LabelledVideo:
    """Decode a video with its label CSV into a binary dataset: [background, positive].

    A frame is positive when it lies inside an event with label `positive_label` (every event
    when None; the positive class is then named after the single label, or "event"). Frames of
    other labels are negatives. Every `frame_step`-th frame is kept; `image_size` None keeps
    the native size. `fps` overrides the rate the container reports.
    """
    import cv2  # OpenCV loads only when frames are decoded or drawn

    if isinstance(frame_step, bool) or not isinstance(frame_step, int) or frame_step < 1:
        raise InvalidParameterError("frame_step", frame_step, "an integer >= 1")
    size = None if image_size is None else _size(image_size)
    video_path = Path(video_path)
    if not video_path.is_file():
        raise SourceError(f"video {video_path} does not exist")
    all_intervals = read_event_csv(labels_csv)
    labels_found = sorted({interval.label for interval in all_intervals})
    if positive_label is None:
        positives = all_intervals
        positive_name = labels_found[0] if len(labels_found) == 1 else "event"
    else:
        if all_intervals and positive_label not in labels_found:
            raise InvalidParameterError(
                "positive_label", positive_label, f"one of the labels in the CSV {labels_found}"
            )
        positives = [interval for interval in all_intervals if interval.label == positive_label]
        positive_name = positive_label
    if positive_name == NEGATIVE_CLASS:
        raise InvalidParameterError("positive_label", positive_name, f"not {NEGATIVE_CLASS!r}")

    capture = cv2.VideoCapture(str(video_path))
    try:
        if not capture.isOpened():
            raise SourceError(f"OpenCV cannot open video {video_path}")
        reported_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        camera_fps = fps if fps is not None else reported_fps
        if not (math.isfinite(camera_fps) and camera_fps > 0):
            raise SourceError(
                f"video {video_path} reports no frame rate ({reported_fps}); pass fps explicitly"
            )
        expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        images, frames = [], []
        progress = tqdm(
            total=expected or None, desc="decoding", unit="frame", disable=not show_progress
        )
        frame_index = 0
        with progress:
            while True:
                if frame_index % frame_step == 0:
                    ok, bgr = capture.read()
                    if not ok:
                        break
                    height, width = size if size else bgr.shape[:2]
                    images.append(_to_rgb(bgr, height, width))
                    frames.append(frame_index)
                elif not capture.grab():
                    break
                frame_index += 1
                progress.update(1)
    finally:
        capture.release()
    total_frames = frame_index
    if total_frames == 0:
        raise SourceError(f"no frame of {video_path} could be decoded")
    for row, interval in enumerate(all_intervals, start=1):
        if interval.end_frame >= total_frames:
            raise InvalidParameterError(
                f"{Path(labels_csv).name} event {row}",
                f"{interval.start_frame}..{interval.end_frame}",
                f"frames inside the video (0..{total_frames - 1})",
            )

    order = np.array(frames, dtype=np.int64)
    positive = np.zeros(total_frames, dtype=bool)
    for interval in positives:
        positive[interval.start_frame : interval.end_frame + 1] = True
    return LabelledVideo(
        images=np.stack(images),
        labels=positive[order].astype(np.int64),
        class_names=[NEGATIVE_CLASS, positive_name],
        order=order,
        groups=np.zeros(len(order), dtype=np.int64),
        fps=camera_fps,
        intervals=sorted(positives, key=lambda iv: iv.start_frame),
        total_frames=total_frames,
    )


def _size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        height = width = image_size
    elif isinstance(image_size, tuple | list) and len(image_size) == 2:
        height, width = int(image_size[0]), int(image_size[1])
    else:
        raise InvalidParameterError("image_size", image_size, "an int or (height, width)")
    if height < 1 or width < 1:
        raise InvalidParameterError("image_size", image_size, "positive sizes")
    return height, width


def _to_rgb(bgr: np.ndarray, height: int, width: int) -> np.ndarray:
    """BGR from OpenCV to RGB, resized (area interpolation) when the size differs."""
    import cv2  # OpenCV loads only when frames are decoded or drawn

    if bgr.shape[:2] != (height, width):
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


# --- time-aware split ------------------------------------------------------------------------


def split_by_time(
    dataset: Dataset, validation_fraction: float = 0.25, blocks: int = 4
) -> tuple[Dataset, Dataset]:
    """Hold out whole clips or whole stretches of time, never scattered frames.

    Units of the split: the clips (`groups`) when there are at least `blocks` of them and every
    class appears in at least two; otherwise each clip is cut into `blocks` contiguous time
    blocks, never inside a run of frames whose label is not the clip's most common one (an
    event), so events stay whole on one side.

    Validation takes the units whose per-class counts come closest to `validation_fraction` of
    every class, with every class on both sides when possible (see
    :func:`_choose_validation_units`). The realised fraction therefore moves in steps of whole
    units: more `blocks` means finer steps but more boundaries where neighbours straddle.
    """
    if not (0.0 < validation_fraction < 1.0):
        raise InvalidParameterError("validation_fraction", validation_fraction, "0 < value < 1")
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 2:
        raise InvalidParameterError("blocks", blocks, "an integer >= 2")
    units = _split_units(dataset, blocks)
    if len(units) < 2:
        raise InvalidParameterError(
            "dataset", f"{len(dataset)} frames", "enough frames for 2 time blocks"
        )
    chosen = _choose_validation_units(
        dataset.labels, len(dataset.class_names), units, validation_fraction
    )
    validation_mask = np.zeros(len(dataset), dtype=bool)
    for unit in chosen:
        validation_mask[units[unit]] = True
    train_indices = np.flatnonzero(~validation_mask)
    validation_indices = np.flatnonzero(validation_mask)
    return dataset.subset(train_indices), dataset.subset(validation_indices)


def time_folds(dataset: Dataset, folds: int) -> list[tuple[Dataset, Dataset]]:
    """K-fold cross-validation over time: (training, held-out) pairs, each frame held out once.

    The units are those of :func:`split_by_time` with `blocks = folds` (whole clips, or
    contiguous time blocks of each clip whose cuts never fall inside an event); fold k holds
    out the k-th contiguous run of units in time order. A fold whose held-out or training part
    lacks a class is left out: it could measure neither recall nor false-positive rate.
    Raises when fewer than 2 folds remain.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise InvalidParameterError("folds", folds, "an integer >= 2")
    units = _split_units(dataset, folds)
    if len(units) < folds:
        raise InvalidParameterError(
            "folds", folds, f"at most {len(units)} (the time blocks this data can be cut into)"
        )
    present = np.unique(dataset.labels)
    pairs = []
    for fold in range(folds):
        chosen = units[round(fold * len(units) / folds) : round((fold + 1) * len(units) / folds)]
        held_out = np.zeros(len(dataset), dtype=bool)
        held_out[np.concatenate(chosen)] = True
        if set(np.unique(dataset.labels[held_out])) != set(present) or set(
            np.unique(dataset.labels[~held_out])
        ) != set(present):
            continue
        pairs.append(
            (dataset.subset(np.flatnonzero(~held_out)), dataset.subset(np.flatnonzero(held_out)))
        )
    if len(pairs) < 2:
        raise InvalidParameterError(
            "folds",
            folds,
            f"fewer folds: only {len(pairs)} of {folds} time blocks hold every class",
        )
    return pairs


def _split_units(dataset: FrameDataset, blocks: int) -> list[np.ndarray]:
    """Index arrays of the candidate units (whole clips, or contiguous blocks of one clip)."""
    time_sorted = np.lexsort((dataset.order, dataset.groups))
    clip_starts = np.flatnonzero(np.diff(dataset.groups[time_sorted])) + 1
    clips = np.split(time_sorted, clip_starts)
    # For each class, the number of clips it appears in.
    clip_class_pairs = np.unique(np.stack([dataset.groups, dataset.labels]), axis=1)
    clips_per_class = np.bincount(clip_class_pairs[1])
    if len(clips) >= blocks and clips_per_class[clips_per_class > 0].min() >= 2:
        return clips
    units = []
    for clip in clips:
        labels = dataset.labels[clip]
        # Runs of a clip's rarer labels are its events; its most common label is background.
        majority = int(np.bincount(labels).argmax())
        cuts = [
            _safe_cut(labels, round(k * len(clip) / blocks), majority) for k in range(1, blocks)
        ]
        bounds = [0, *sorted(set(cuts)), len(clip)]
        units += [clip[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    return units


def _safe_cut(labels: np.ndarray, cut: int, majority: int) -> int:
    """Move a cut out of a run of non-majority frames (an event) to that run's nearer end."""
    if cut <= 0 or cut >= len(labels) or labels[cut] == majority or labels[cut] != labels[cut - 1]:
        return cut
    start = cut
    while start > 0 and labels[start - 1] == labels[cut]:
        start -= 1
    end = cut
    while end < len(labels) and labels[end] == labels[cut]:
        end += 1
    return start if cut - start <= end - cut else end


def _choose_validation_units(
    labels: np.ndarray, class_count: int, units: list[np.ndarray], fraction: float
) -> list[int]:
    """The units whose per-class frame counts come closest to `fraction` of each class.

    Subsets that leave a class out of training or out of validation lose to any that does
    not. Up to 12 units every subset is tried (ties go to later units: validating on the most
    recent data is the natural default); beyond that, units are added greedily while they
    bring the counts closer to the target.
    """
    counts = np.array([np.bincount(labels[unit], minlength=class_count) for unit in units])
    total = counts.sum(axis=0)
    present = total > 0
    target = fraction * total

    def badness(validation: np.ndarray) -> tuple[int, float]:
        training = total - validation
        missing = int(np.sum(present & (validation == 0)) + np.sum(present & (training == 0)))
        return missing, float(np.abs(validation - target).sum())

    if len(units) <= 12:
        subsets = [
            chosen
            for size in range(1, len(units))
            for chosen in itertools.combinations(reversed(range(len(units))), size)
        ]
        return list(min(subsets, key=lambda chosen: badness(counts[list(chosen)].sum(axis=0))))
    validation = np.zeros(class_count)
    available = np.ones(len(units), dtype=bool)
    chosen: list[int] = []
    current = float(np.abs(validation - target).sum())
    while available.sum() > 1:
        after = validation + counts
        distance = np.abs(after - target).sum(axis=1)
        starves_training = (present & (total - after <= 0)).any(axis=1)
        distance[~available | starves_training] = np.inf
        unit = len(units) - 1 - int(np.argmin(distance[::-1]))
        if not distance[unit] < current:
            break
        chosen.append(unit)
        available[unit] = False
        validation = after[unit]
        current = float(distance[unit])
    return chosen or [len(units) - 1]
