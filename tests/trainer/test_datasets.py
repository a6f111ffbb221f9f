from pathlib import Path

import numpy as np
import pytest

from mainstream.core.errors import InvalidParameterError, SourceError
from trainer.datasets import (
    FrameDataset,
    LabelledVideo,
    export_video_frames,
    load_image_folder,
    load_labelled_video,
    read_event_csv,
    split_by_time,
    write_event_csv,
)
from trainer.event_stats import EventInterval
from trainer.synth import SynthConfig, generate_image_dataset, generate_video


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """30 s at 10 fps: trains are the events, cars cross too (as distractors)."""
    folder = tmp_path_factory.mktemp("video")
    config = SynthConfig(
        duration_s=30,
        kinds=["train"],
        event_frequency=0.3,
        distractor_kinds=["car"],
        distractor_frequency=0.15,
        seed=21,
    )
    generate_video(folder / "v.avi", folder / "v.csv", config, show_progress=False)
    return folder / "v.avi", folder / "v.csv"


def expected_labels(intervals: list[EventInterval], frames: np.ndarray, label: str) -> np.ndarray:
    return np.array(
        [
            any(iv.start_frame <= f <= iv.end_frame and iv.label == label for iv in intervals)
            for f in frames
        ],
        dtype=np.int64,
    )


# --- labelled video ------------------------------------------------------------------------------


def test_labelled_video_labels_every_frame_from_the_csv(video: tuple[Path, Path]) -> None:
    path, labels = video
    data = load_labelled_video(path, labels, 48, "train", show_progress=False)
    assert isinstance(data, LabelledVideo)
    assert data.images.shape == (300, 48, 48, 3) and data.images.dtype == np.uint8
    assert data.class_names == ["background", "train"]
    assert data.total_frames == 300 and data.fps == pytest.approx(10.0)
    assert np.array_equal(data.order, np.arange(300))
    intervals = read_event_csv(labels)
    # Car frames are negatives: only trains are positive.
    assert np.array_equal(data.labels, expected_labels(intervals, data.order, "train"))
    assert {iv.label for iv in data.intervals} == {"train"}
    assert len(data.intervals) == sum(iv.label == "train" for iv in intervals)
    assert 0 < data.labels.mean() < 0.5


def test_frames_are_rgb_and_resized(video: tuple[Path, Path]) -> None:
    import cv2

    path, labels = video
    data = load_labelled_video(path, labels, (30, 40), "train", show_progress=False)
    assert data.images.shape[1:] == (30, 40, 3)
    capture = cv2.VideoCapture(str(path))
    _, first = capture.read()
    capture.release()
    expected = cv2.cvtColor(
        cv2.resize(first, (40, 30), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
    )
    assert np.array_equal(data.images[0], expected)
    native = load_labelled_video(path, labels, None, "train", frame_step=50, show_progress=False)
    assert native.images.shape == (6, 120, 160, 3)


def test_frame_step_keeps_every_nth_frame(video: tuple[Path, Path]) -> None:
    path, labels = video
    data = load_labelled_video(path, labels, 32, "train", frame_step=4, show_progress=False)
    assert np.array_equal(data.order, np.arange(0, 300, 4))
    assert data.total_frames == 300
    assert np.array_equal(data.labels, expected_labels(read_event_csv(labels), data.order, "train"))


def test_without_a_positive_label_every_event_is_positive(video: tuple[Path, Path]) -> None:
    path, labels = video
    data = load_labelled_video(path, labels, 32, frame_step=3, show_progress=False)
    assert data.class_names == ["background", "event"]
    covered = expected_labels(
        [EventInterval(iv.start_frame, iv.end_frame) for iv in read_event_csv(labels)],
        data.order,
        "event",
    )
    assert np.array_equal(data.labels, covered)


def test_unknown_positive_label_is_an_error(video: tuple[Path, Path]) -> None:
    path, labels = video
    with pytest.raises(InvalidParameterError, match="positive_label"):
        load_labelled_video(path, labels, 32, "plane", show_progress=False)


def test_missing_or_undecodable_video_is_a_source_error(
    tmp_path: Path, video: tuple[Path, Path]
) -> None:
    _, labels = video
    with pytest.raises(SourceError, match="does not exist"):
        load_labelled_video(tmp_path / "none.avi", labels, 32)
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError, match=r"garbage\.avi"):
        load_labelled_video(garbage, labels, 32, show_progress=False)


@pytest.mark.parametrize(
    ("text", "row"),
    [
        ("start_frame,end_frame,label\n1,5,train\n7,x,train\n", "row 3"),
        ("start_frame,end_frame,label\n9,5,train\n", "row 2"),
        ("start_frame,end_frame,label\n1,5,train\n\n-1,5,train\n", "row 4"),
        ("1,5,train,extra\n", "row 1"),
    ],
)
def test_malformed_csv_names_the_row(tmp_path: Path, text: str, row: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(InvalidParameterError, match=row):
        read_event_csv(path)


def test_event_past_the_end_of_the_video_is_an_error(
    tmp_path: Path, video: tuple[Path, Path]
) -> None:
    path, _ = video
    labels = tmp_path / "late.csv"
    write_event_csv(labels, [EventInterval(10, 20, "train"), EventInterval(290, 300, "train")])
    with pytest.raises(InvalidParameterError, match="event 2"):
        load_labelled_video(path, labels, 32, show_progress=False)


def test_csv_round_trip_and_two_column_form(tmp_path: Path) -> None:
    intervals = [EventInterval(30, 40, "car"), EventInterval(2, 9, "train")]
    write_event_csv(tmp_path / "a.csv", intervals)
    assert read_event_csv(tmp_path / "a.csv") == sorted(intervals, key=lambda iv: iv.start_frame)
    (tmp_path / "b.csv").write_text("# two columns\n3,8\n")
    assert read_event_csv(tmp_path / "b.csv") == [EventInterval(3, 8, "event")]


# --- split_by_time -------------------------------------------------------------------------------


def runs(values: np.ndarray) -> int:
    """Number of contiguous runs in a sorted array of frame indices."""
    return 1 + int(np.sum(np.diff(values) > 1)) if len(values) else 0


def test_video_split_holds_out_whole_stretches_of_time(video: tuple[Path, Path]) -> None:
    path, labels = video
    data = load_labelled_video(path, labels, 24, "train", show_progress=False)
    train, validation = split_by_time(data, validation_fraction=0.25, blocks=4)
    assert len(train) + len(validation) == len(data)
    assert not set(train.order.tolist()) & set(validation.order.tolist())
    assert runs(np.sort(validation.order)) == 1, "validation is one contiguous block"
    assert len(validation) / len(data) == pytest.approx(0.25, abs=0.1)
    assert set(validation.labels.tolist()) == {0, 1} == set(train.labels.tolist())
    # No event is cut in two: each lies wholly on one side, and each side lists its own.
    assert len(train.intervals) + len(validation.intervals) == len(data.intervals)
    for interval in validation.intervals:
        frames = np.arange(interval.start_frame, interval.end_frame + 1)
        assert set(frames.tolist()) <= set(validation.order.tolist())
    assert isinstance(validation, LabelledVideo) and validation.total_frames == 300


def test_held_out_fires_feed_the_correlation_estimate(video: tuple[Path, Path]) -> None:
    from trainer.event_stats import estimate_correlation

    path, labels = video
    data = load_labelled_video(path, labels, 16, "train", frame_step=2, show_progress=False)
    _, validation = split_by_time(data, 0.5, blocks=2)
    # A detector that fires on positive frames except every third one.
    fired = (validation.labels == 1) & (validation.order % 3 != 0)
    fires, events, camera_fps = validation.event_fires(fired)
    assert camera_fps == pytest.approx(5.0)
    assert len(events) == len(validation.intervals) >= 1
    assert fires.sum() == fired.sum()
    estimate = estimate_correlation(fires, events, camera_fps)
    assert estimate.per_frame_recall == pytest.approx(2 / 3, abs=0.1)
    assert estimate.event_count == len(events)


def test_more_blocks_give_several_stretches(video: tuple[Path, Path]) -> None:
    path, labels = video
    data = load_labelled_video(path, labels, 16, "train", frame_step=2, show_progress=False)
    train, validation = split_by_time(data, validation_fraction=0.25, blocks=8)
    assert 1 <= runs(np.sort(validation.order) // 2) <= 2
    assert len(validation) / len(data) == pytest.approx(0.25, abs=0.1)
    assert validation.labels.sum() > 0 and train.labels.sum() > 0


def test_clips_go_to_validation_whole() -> None:
    rng = np.random.default_rng(0)
    clips, per_clip = 8, 20
    labels = np.tile(np.r_[np.zeros(12, int), np.ones(8, int)], clips)
    dataset = FrameDataset(
        images=rng.integers(0, 255, (clips * per_clip, 8, 8, 3), dtype=np.uint8),
        labels=labels,
        class_names=["no", "yes"],
        order=np.tile(np.arange(per_clip), clips),
        groups=np.repeat(np.arange(clips), per_clip),
        fps=None,
    )
    train, validation = split_by_time(dataset, validation_fraction=0.25)
    assert not set(train.groups.tolist()) & set(validation.groups.tolist())
    assert len(set(validation.groups.tolist())) == 2
    assert set(validation.labels.tolist()) == {0, 1}


def test_validation_gets_both_classes_even_when_events_are_rare() -> None:
    # One event near the start of a single long clip: the block holding it must be held out
    # for validation to see the positive class... unless training would then lack it.
    labels = np.zeros(200, dtype=np.int64)
    labels[20:30] = 1
    labels[150:160] = 1
    dataset = FrameDataset(
        images=np.zeros((200, 4, 4, 3), dtype=np.uint8),
        labels=labels,
        class_names=["no", "yes"],
        order=np.arange(200),
        groups=np.zeros(200, dtype=np.int64),
        fps=10.0,
    )
    train, validation = split_by_time(dataset, 0.25, blocks=4)
    assert validation.labels.sum() == 10 and train.labels.sum() == 10


def test_split_rejects_bad_arguments() -> None:
    dataset = FrameDataset(
        images=np.zeros((1, 4, 4, 3), dtype=np.uint8),
        labels=np.zeros(1, dtype=np.int64),
        class_names=["a", "b"],
        order=np.zeros(1, dtype=np.int64),
        groups=np.zeros(1, dtype=np.int64),
        fps=None,
    )
    with pytest.raises(InvalidParameterError, match="validation_fraction"):
        split_by_time(dataset, 1.0)
    with pytest.raises(InvalidParameterError, match="blocks"):
        split_by_time(dataset, 0.25, blocks=1)
    with pytest.raises(InvalidParameterError, match="dataset"):
        split_by_time(dataset, 0.25)


# --- image folders -------------------------------------------------------------------------------


def test_image_folder_without_clip_names_is_split_in_blocks_per_class(tmp_path: Path) -> None:
    generate_image_dataset(tmp_path / "d", 5, 40, 32, seed=3, show_progress=False)
    data = load_image_folder(tmp_path / "d", 24, block_size=10, show_progress=False)
    assert data.images.shape == (200, 24, 24, 3)
    assert data.class_names == sorted(data.class_names)
    assert set(data.class_counts().values()) == {40}
    # 4 blocks of 10 neighbouring files per class, each block one class.
    assert len(np.unique(data.groups)) == 20
    for group in np.unique(data.groups):
        assert len(set(data.labels[data.groups == group].tolist())) == 1
    train, validation = split_by_time(data, 0.25)
    assert all(count == 10 for count in validation.class_counts().values())
    assert not set(train.groups.tolist()) & set(validation.groups.tolist())


def test_class_named_prefixes_do_not_send_whole_classes_to_validation(tmp_path: Path) -> None:
    # `car/car_000.png`, `bus/bus_000.png`...: read as one clip per class, so every class must
    # still be cut in time rather than held out whole.
    generate_image_dataset(tmp_path / "d", 6, 12, 16, show_progress=False)
    for folder in (tmp_path / "d").iterdir():
        for file in folder.iterdir():
            file.rename(folder / f"{folder.name}_{file.name}")
    data = load_image_folder(tmp_path / "d", 16, show_progress=False)
    assert len(np.unique(data.groups)) == 6
    train, validation = split_by_time(data, 0.25)
    assert all(count == 3 for count in validation.class_counts().values())
    assert all(count == 9 for count in train.class_counts().values())


def test_exported_video_frames_keep_clip_and_time_order(
    tmp_path: Path, video: tuple[Path, Path]
) -> None:
    path, labels = video
    counts = export_video_frames(path, labels, tmp_path / "frames", "train", frame_step=5,
                                 image_size=32, show_progress=False)  # fmt: skip
    assert sum(counts.values()) == 60
    assert (tmp_path / "frames" / "train" / "v_000000.png").exists() or (
        tmp_path / "frames" / "background" / "v_000000.png"
    ).exists()
    folder = load_image_folder(tmp_path / "frames", 32, show_progress=False)
    direct = load_labelled_video(path, labels, 32, "train", frame_step=5, show_progress=False)
    assert folder.class_names == direct.class_names
    assert np.array_equal(folder.order, direct.order)
    assert np.array_equal(folder.labels, direct.labels)
    assert len(np.unique(folder.groups)) == 1


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    generate_image_dataset(tmp_path / "d", 2, 3, 32, show_progress=False)
    broken = tmp_path / "d" / "car" / "00001.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(InvalidParameterError, match=r"00001\.png"):
        load_image_folder(tmp_path / "d", 32, show_progress=False)


def test_image_folder_needs_two_classes(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    generate_image_dataset(tmp_path / "x", 2, 1, 32, show_progress=False)
    (tmp_path / "x" / "car" / "00000.png").rename(tmp_path / "only" / "a.png")
    with pytest.raises(InvalidParameterError, match="car"):
        load_image_folder(tmp_path / "x", 32, show_progress=False)
