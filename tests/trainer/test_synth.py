import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mainstream.cli.main import main
from mainstream.core.errors import InvalidParameterError
from trainer.datasets import read_event_csv
from trainer.synth import (
    IMAGE_CLASSES,
    SynthConfig,
    SynthSummary,
    generate_image_dataset,
    generate_video,
    plan_events,
)


def run_cli(arguments: list[str]) -> int:
    """Run the `mainstream` CLI in-process; return its exit status."""
    try:
        main(arguments)
    except SystemExit as exit_info:
        return int(exit_info.code or 0)
    return 0


def read_frames(path: Path) -> tuple[np.ndarray, float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return np.stack(frames), fps


@pytest.fixture(scope="module")
def train_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, SynthSummary]:
    folder = tmp_path_factory.mktemp("synth")
    config = SynthConfig(
        duration_s=30, kinds=["train"], event_frequency=0.3, noise=0.01, drift=0.0, seed=11
    )
    summary = generate_video(folder / "t.avi", folder / "t.csv", config, show_progress=False)
    return folder / "t.avi", folder / "t.csv", summary


def test_video_reads_back_with_the_requested_shape(
    train_video: tuple[Path, Path, SynthSummary],
) -> None:
    video, _, summary = train_video
    frames, fps = read_frames(video)
    assert frames.shape == (300, 120, 160, 3)
    assert fps == pytest.approx(10.0)
    assert summary.total_frames == 300
    assert not list(video.parent.glob(".*")), "temporary files were left behind"


def test_labels_are_sorted_disjoint_and_match_the_summary(
    train_video: tuple[Path, Path, SynthSummary],
) -> None:
    _, labels, summary = train_video
    assert labels.read_text().splitlines()[0] == "start_frame,end_frame,label"
    intervals = read_event_csv(labels)
    assert len(intervals) == summary.event_count >= 3
    assert all(interval.label == "train" for interval in intervals)
    for before, after in itertools.pairwise(intervals):
        assert after.start_frame > before.end_frame + 1, "events touch or overlap"
    covered = sum(interval.frame_count for interval in intervals)
    assert covered / 300 == pytest.approx(summary.realised_event_frequency)
    assert summary.realised_event_frequency == pytest.approx(0.3, abs=0.02)
    assert summary.mean_event_length_s == pytest.approx(2.0, rel=0.25)


def test_labelled_frames_show_the_object_and_the_others_do_not(
    train_video: tuple[Path, Path, SynthSummary],
) -> None:
    # Inclusive ends: the first and last labelled frames show part of the train, the frames
    # just outside show the empty scene.
    video, labels, _ = train_video
    frames, _ = read_frames(video)
    intervals = read_event_csv(labels)
    inside = np.zeros(len(frames), dtype=bool)
    for interval in intervals:
        inside[interval.start_frame : interval.end_frame + 1] = True
    empty_scene = np.median(frames[~inside], axis=0)

    def changed_fraction(index: int) -> float:
        difference = np.abs(frames[index].astype(float) - empty_scene).max(axis=2)
        # Rows below the sky: the clouds drift, the ground does not.
        return float((difference[45:] > 60).mean())

    for interval in intervals:
        for index in (interval.start_frame, interval.end_frame):
            assert changed_fraction(index) > 0.02
        for index in (interval.start_frame - 1, interval.end_frame + 1):
            if 0 <= index < len(frames):
                assert changed_fraction(index) < 0.005


def test_every_kind_is_drawn(tmp_path: Path) -> None:
    config = SynthConfig(
        duration_s=20,
        kinds=["bus", "person"],
        distractor_kinds=["car"],
        distractor_frequency=0.2,
        event_frequency=0.4,
        event_length_s=1.5,
        noise=0.0,
        drift=0.0,
        seed=2,
    )
    summary = generate_video(tmp_path / "k.mp4", tmp_path / "k.csv", config, show_progress=False)
    frames, _ = read_frames(tmp_path / "k.mp4")
    assert len(frames) == summary.total_frames == 200
    intervals = read_event_csv(tmp_path / "k.csv")
    assert {interval.label for interval in intervals} == {"bus", "person", "car"}
    assert summary.distractor_count == sum(1 for iv in intervals if iv.label == "car")
    assert summary.event_count == len(intervals) - summary.distractor_count
    inside = np.zeros(len(frames), dtype=bool)
    for interval in intervals:
        inside[interval.start_frame : interval.end_frame + 1] = True
    empty_scene = np.median(frames[~inside], axis=0)
    for interval in intervals:
        middle = (interval.start_frame + interval.end_frame) // 2
        difference = np.abs(frames[middle].astype(float) - empty_scene).max(axis=2)
        assert (difference[45:] > 60).sum() > 20, interval


def test_same_seed_same_video_other_seed_other_video(tmp_path: Path) -> None:
    config = SynthConfig(duration_s=8, seed=5)
    generate_video(tmp_path / "a.avi", tmp_path / "a.csv", config, show_progress=False)
    generate_video(tmp_path / "b.avi", tmp_path / "b.csv", config, show_progress=False)
    other = config.model_copy(update={"seed": 6})
    generate_video(tmp_path / "c.avi", tmp_path / "c.csv", other, show_progress=False)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert (tmp_path / "a.avi").read_bytes() == (tmp_path / "b.avi").read_bytes()
    assert (tmp_path / "a.avi").read_bytes() != (tmp_path / "c.avi").read_bytes()


def test_clips_of_one_camera_share_the_landscape_and_differ_in_their_objects(
    tmp_path: Path,
) -> None:
    """`scene_seed` fixes the landscape alone: two clips of one camera (other seeds) start on
    the same empty frame; another scene seed is another landscape."""
    empty = {"duration_s": 2, "event_frequency": 0.0, "noise": 0.0, "drift": 0.0}
    first_frames = []
    for name, seed, scene_seed in (("a", 1, 7), ("b", 2, 7), ("c", 1, 8)):
        config = SynthConfig(**empty, seed=seed, scene_seed=scene_seed)
        generate_video(
            tmp_path / f"{name}.avi", tmp_path / f"{name}.csv", config, show_progress=False
        )
        first_frames.append(read_frames(tmp_path / f"{name}.avi")[0][0].astype(int))
    same_camera, other_camera = first_frames[1], first_frames[2]
    assert np.abs(first_frames[0] - same_camera).max() <= 2
    assert np.abs(first_frames[0] - other_camera).mean() > 3
    with_objects = SynthConfig(duration_s=6, event_frequency=0.4, seed=1, scene_seed=7)
    other_objects = with_objects.model_copy(update={"seed": 2})
    generate_video(tmp_path / "d.avi", tmp_path / "d.csv", with_objects, show_progress=False)
    generate_video(tmp_path / "e.avi", tmp_path / "e.csv", other_objects, show_progress=False)
    assert (tmp_path / "d.csv").read_text() != (tmp_path / "e.csv").read_text()


@pytest.mark.parametrize("change", [{"view_offset": 0.08}, {"color_jitter": 0.5}])
def test_camera_tilt_and_colours_change_the_frames_not_the_events(
    tmp_path: Path, change: dict[str, float]
) -> None:
    config = SynthConfig(duration_s=6, event_frequency=0.5, noise=0.0, drift=0.0, seed=4)
    changed = config.model_copy(update=change)
    generate_video(tmp_path / "a.avi", tmp_path / "a.csv", config, show_progress=False)
    generate_video(tmp_path / "b.avi", tmp_path / "b.csv", changed, show_progress=False)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    frames, _ = read_frames(tmp_path / "a.avi")
    moved, _ = read_frames(tmp_path / "b.avi")
    intervals = read_event_csv(tmp_path / "a.csv")
    middle = (intervals[0].start_frame + intervals[0].end_frame) // 2
    difference = np.abs(frames[middle].astype(int) - moved[middle].astype(int)).max(axis=2)
    assert (difference > 40).sum() > 50


@pytest.mark.parametrize(
    ("duration_s", "frequency", "length_s"), [(60, 0.3, 2.0), (100, 0.1, 0.5), (20, 0.6, 3.0)]
)
def test_planned_events_cover_the_requested_fraction(
    duration_s: float, frequency: float, length_s: float
) -> None:
    config = SynthConfig(duration_s=duration_s, event_frequency=frequency, event_length_s=length_s)
    events = plan_events(config, np.random.default_rng(0))
    covered = sum(event.frame_count for event in events)
    assert covered / config.total_frames == pytest.approx(frequency, abs=0.01)
    assert np.mean([event.frame_count for event in events]) / config.fps == pytest.approx(
        length_s, rel=0.2
    )
    assert events[-1].end_frame < config.total_frames


def test_no_events_when_the_frequency_is_zero() -> None:
    config = SynthConfig(duration_s=10, event_frequency=0.0)
    assert plan_events(config, np.random.default_rng(0)) == []


@pytest.mark.parametrize(
    "values",
    [
        {"kinds": ["plane"]},
        {"event_frequency": 0.7, "distractor_kinds": ["car"], "distractor_frequency": 0.3},
        {"distractor_frequency": 0.1},
        {"kinds": ["car"], "distractor_kinds": ["car"], "distractor_frequency": 0.1},
        {"event_frequency": 1.0},
        {"width": 8},
        {"unknown_field": 1},
        {"event_length_s": 0.05},
    ],
)
def test_bad_configs_are_rejected(values: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SynthConfig.model_validate(values)


def test_crowded_timeline_is_rejected_and_nothing_is_written(tmp_path: Path) -> None:
    config = SynthConfig(duration_s=3, event_length_s=0.2, event_frequency=0.85, fps=10)
    with pytest.raises(InvalidParameterError, match="event_frequency"):
        generate_video(tmp_path / "x.avi", tmp_path / "x.csv", config, show_progress=False)
    with pytest.raises(InvalidParameterError, match="video_path"):
        generate_video(tmp_path / "x.gif", tmp_path / "x.csv", SynthConfig(duration_s=2))
    assert list(tmp_path.iterdir()) == []


def test_image_dataset_has_one_folder_per_class(tmp_path: Path) -> None:
    counts = generate_image_dataset(
        tmp_path / "images", classes=6, images_per_class=4, image_size=48, show_progress=False
    )
    assert list(counts) == list(IMAGE_CLASSES[:6])
    for name in IMAGE_CLASSES[:6]:
        files = sorted((tmp_path / "images" / name).iterdir())
        assert len(files) == 4
        image = cv2.imread(str(files[0]))
        assert image is not None and image.shape == (48, 48, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["images"], "staging folder left behind"


def test_image_classes_look_different(tmp_path: Path) -> None:
    # A class's images resemble each other more than another class's: the shapes are drawn.
    generate_image_dataset(
        tmp_path / "d",
        ["circle", "stripes"],
        images_per_class=30,
        image_size=32,
        seed=1,
        show_progress=False,
    )

    def edge_energy(name: str) -> float:
        values = []
        for file in (tmp_path / "d" / name).iterdir():
            gray = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
            assert gray is not None
            values.append(np.abs(np.diff(gray.astype(float), axis=1)).mean())
        return float(np.mean(values))

    assert edge_energy("stripes") > 1.5 * edge_energy("circle")


@pytest.mark.parametrize(
    ("classes", "field"), [(1, "classes"), (["circle", "plane"], "classes"), (99, "classes")]
)
def test_image_dataset_rejects_bad_classes(tmp_path: Path, classes: object, field: str) -> None:
    with pytest.raises(InvalidParameterError) as error:
        generate_image_dataset(tmp_path / "d", classes, 2, 32)  # type: ignore[arg-type]
    assert error.value.field == field


def test_image_dataset_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidParameterError, match="out_dir"):
        generate_image_dataset(tmp_path / "d", 2, 2, 32, show_progress=False)
    assert (tmp_path / "d" / "keep.txt").read_text() == "mine"


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_synth_video_writes_video_labels_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.avi"
    status = run_cli(
            [
                "synth", "video", "-o", str(output), "--duration", "12", "--fps", "5",
                "--size", "96x64", "--kinds", "train,car", "--event-length", "2.0",
                "--event-frequency", "0.3", "--noise", "0.02", "--drift", "0.1", "--seed", "3",
                "--json",
            ]
        )  # fmt: skip
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total_frames"] == 60 and summary["fps"] == 5.0
    assert summary["config"]["kinds"] == ["train", "car"] and summary["config"]["seed"] == 3
    assert (summary["width"], summary["height"]) == (96, 64)
    frames, fps = read_frames(output)
    assert frames.shape == (60, 64, 96, 3) and fps == pytest.approx(5.0)
    intervals = read_event_csv(tmp_path / "out.csv")
    assert len(intervals) == summary["event_count"]
    assert {interval.label for interval in intervals} <= {"train", "car"}


def test_cli_synth_video_reads_a_yaml_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "scene.yaml"
    config.write_text("duration_s: 6\nfps: 5\nkinds: [bus]\nevent_length_s: 1.0\nseed: 1\n")
    status = run_cli(["synth", "video", "-o", str(tmp_path / "v.avi"), "--config", str(config),
                      "--labels", str(tmp_path / "labels.csv"), "--fps", "10"])  # fmt: skip
    assert status == 0
    assert "60 frames at 10 fps" in capsys.readouterr().out
    assert {iv.label for iv in read_event_csv(tmp_path / "labels.csv")} == {"bus"}


def test_cli_synth_video_names_the_bad_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run_cli(["synth", "video", "-o", str(tmp_path / "v.avi"), "--kinds", "train,plane"])
    assert status == 2
    assert "plane" in capsys.readouterr().err
    assert not (tmp_path / "v.avi").exists()


def test_cli_synth_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = run_cli(["synth", "images", "-o", str(tmp_path / "d"), "--classes", "3",
                      "--per-class", "2", "--size", "32"])  # fmt: skip
    assert status == 0
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(IMAGE_CLASSES[:3])
    assert "wrote 6 images of 3 classes" in capsys.readouterr().out


def test_an_unknown_kind_reads_as_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "video", "--kinds", "dragon", "-o", str(tmp_path / "x.avi")])
    assert exit_info.value.code != 0
    message = capsys.readouterr().err.strip()
    assert message.endswith(
        "expected kinds from ['train', 'car', 'bus', 'person'] ('dragon': no such kind)"
    )
    assert "expected unknown" not in message and not (tmp_path / "x.avi").exists()
