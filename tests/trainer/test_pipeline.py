import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mainstream.cli.main import main
from mainstream.core.bases import (
    BaseConfig,
    build_base,
    save_base,
    save_weights_atomically,
    weights_fingerprint,
)
from mainstream.core.errors import InvalidParameterError
from mainstream.core.package import read_package, verify_package
from trainer.pipeline import BaseRequest, TrainRequest, default_freeze_points, train_package
from trainer.synth import SynthConfig, generate_image_dataset, generate_video

CONFIG = BaseConfig("mobilenet_v1", input_size=96, alpha=0.25)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="module")
def base_model(workspace: Path):
    """A random base with BatchNorm statistics fitted to noise (a stand-in for a pretrained one)."""
    import keras

    from mainstream.core.bases import calibrated_base

    keras.utils.set_random_seed(0)
    noise = np.random.default_rng(0).integers(0, 256, (32, 96, 96, 3)).astype(np.uint8)
    return calibrated_base(CONFIG, noise)


@pytest.fixture(scope="module")
def base_weights(workspace: Path, base_model) -> Path:
    path = workspace / "base.weights.h5"
    save_weights_atomically(base_model, path)
    return path


@pytest.fixture(scope="module")
def video(workspace: Path):
    config = SynthConfig(duration_s=16, fps=10, event_length_s=1.5, event_frequency=0.35, seed=3)
    return generate_video(
        workspace / "trains.avi", workspace / "trains.csv", config, show_progress=False
    )


@pytest.fixture(scope="module")
def image_folder(workspace: Path) -> Path:
    folder = workspace / "shapes"
    generate_image_dataset(folder, ["background", "circle"], 24, 96, seed=0, show_progress=False)
    return folder


# --- requests (no training) -------------------------------------------------------------------


def test_freeze_points_accept_a_count_or_names(tmp_path: Path) -> None:
    common = {"data": tmp_path, "positive_class": "car", "output": tmp_path / "a.mpkg"}
    assert TrainRequest.model_validate({**common, "freeze_points": "3"}).freeze_points == 3
    names = TrainRequest.model_validate({**common, "freeze_points": "input, conv_pw_6_relu"})
    assert names.freeze_points == ["input", "conv_pw_6_relu"]
    for bad in (0, "", "a,a"):
        with pytest.raises(ValueError, match="freeze_points"):
            TrainRequest.model_validate({**common, "freeze_points": bad})
    with pytest.raises(ValueError, match="app_name"):
        TrainRequest.model_validate({**common, "app_name": "../evil"})
    with pytest.raises(ValueError, match="strategy"):
        TrainRequest.model_validate({**common, "strategy": "fast"})


def test_image_folder_needs_event_statistics(image_folder: Path, tmp_path: Path) -> None:
    request = TrainRequest(
        data=image_folder, positive_class="circle", output=tmp_path / "a.mpkg", progress=False
    )
    with pytest.raises(InvalidParameterError, match="--event-length, --event-frequency"):
        train_package(request)
    assert not (tmp_path / "a.mpkg").exists()


def test_video_needs_its_labels(workspace: Path, video, tmp_path: Path) -> None:
    request = TrainRequest(
        data=Path(video.video_path),
        labels=tmp_path / "missing.csv",
        positive_class="train",
        output=tmp_path / "a.mpkg",
    )
    with pytest.raises(InvalidParameterError, match="label CSV"):
        train_package(request)


def test_a_class_the_data_lacks_is_refused_before_tensorflow_loads(
    workspace: Path, video, image_folder: Path, tmp_path: Path
) -> None:
    """Checked in a fresh interpreter: the refusal must come without importing TensorFlow."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mainstream.core.errors import InvalidParameterError\n"
        "from trainer.pipeline import TrainRequest, train_package\n"
        "data, positive, event_stats = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == 'yes'\n"
        "extra = dict(event_length_s=1.0, event_frequency=0.2, correlation=0.5, camera_fps=10.0)\n"
        "request = TrainRequest(data=data, positive_class=positive, output=Path(sys.argv[4]),\n"
        "                       progress=False, **(extra if event_stats else {}))\n"
        "try:\n"
        "    train_package(request)\n"
        "except InvalidParameterError as error:\n"
        "    print(error)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    for data, folders in ((Path(video.video_path), "no"), (image_folder, "yes")):
        completed = subprocess.run(
            [sys.executable, "-c", script, str(data), "dragon", folders, str(tmp_path / "a.mpkg")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        message, tensorflow_loaded = completed.stdout.strip().splitlines()
        assert "dragon" in message and "one of" in message, completed.stderr
        assert ("'train'" in message) if folders == "no" else ("'circle'" in message)
        assert tensorflow_loaded == "False"
    assert not (tmp_path / "a.mpkg").exists()


def test_cli_reports_bad_values_with_the_field_name(
    workspace: Path, video, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train",
                "--data",
                video.video_path,
                "--positive-class",
                "train",
                "--epochs",
                "0",
                "-o",
                str(tmp_path / "a.mpkg"),
            ]
        )
    assert exit_info.value.code == 2
    assert "epochs" in capsys.readouterr().err


# --- whole jobs -------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_trains_a_video_into_a_verified_package(
    workspace: Path,
    video,
    base_model,
    base_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_file = workspace / "train.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "base": {"name": "mobilenet_v1", "alpha": 0.25, "input_size": 96},
                "epochs": 5,  # overridden by the flag below
                "batch_size": 16,
                "learning_rate": 0.003,
            }
        )
    )
    output = workspace / "trains.mpkg"
    main(
        [
            "train",
            "--config",
            str(config_file),
            "--data",
            video.video_path,
            "--positive-class",
            "train",
            "--weights",
            str(base_weights),
            "--freeze-points",
            "conv_pw_10_relu,conv_pw_13_relu",
            "--epochs",
            "1",
            "--quiet",
            "-o",
            str(output),
        ]
    )
    assert capsys.readouterr().out.strip() == str(output)

    report = verify_package(output)
    manifest = report.manifest
    assert manifest.app.name == "trains"
    assert manifest.app.classes == ["background", "train"]
    assert [c.cut_point for c in manifest.candidates] == ["conv_pw_10_relu", "conv_pw_13_relu"]
    assert manifest.base_model.weights_fingerprint == weights_fingerprint(base_model)
    assert manifest.base_weights is not None  # bundled: no node can rebuild this base itself
    stats = manifest.event_stats
    assert stats.event_length_s == pytest.approx(video.mean_event_length_s)
    assert stats.event_frequency == pytest.approx(video.realised_event_frequency)
    assert stats.camera_fps == 10
    assert 0 <= stats.correlation <= 1
    assert "held-out fires of candidate" in stats.how_measured
    assert manifest.training.epochs == 1
    assert manifest.training.strategy == "standard"
    assert manifest.training.dataset["held_out"]["frames"] > 0  # type: ignore[index]
    assert {"tensorflow", "keras", "numpy"} <= set(manifest.training.library_versions)
    for candidate in manifest.candidates:
        held_out = candidate.model_extra["held_out_frames"]  # type: ignore[index]
        assert held_out == manifest.training.dataset["held_out"]["frames"]  # type: ignore[index]

    # Format 2: the counts behind every figure, and the correlation's evidence.
    assert manifest.format_version == 2
    classes = manifest.training.dataset["held_out"]["classes"]  # type: ignore[index]
    for candidate in manifest.candidates:
        counts = candidate.evidence
        assert counts is not None and not counts.derived
        assert (counts.positive_frames, counts.negative_frames) == (
            classes["train"],
            classes["background"],
        )
        assert counts.positive_fires / counts.positive_frames == candidate.recall
        assert counts.negative_fires / counts.negative_frames == candidate.false_positive_rate
        assert counts.events is not None and counts.events >= 1
        assert counts.split == "by time, validation fraction 0.25"
        # How much the frames are worth: their fires' run structure, measured or the app's c.
        for rho in (counts.positive_frame_correlation, counts.negative_frame_correlation):
            assert rho is not None and 0.0 <= rho <= 1.0
    evidence = stats.correlation_evidence
    assert evidence is not None and evidence.events == manifest.candidates[0].evidence.events
    assert evidence.interval[0] <= stats.correlation <= evidence.interval[1]
    assert "camera-rate correlation" in stats.how_measured

    # The packaged base weights rebuild exactly the base the candidates were trained on.
    with read_package(output) as package:
        rebuilt = build_base(
            BaseConfig("mobilenet_v1", 96, 0.25, weights=str(package.root / "base/weights.h5"))
        )
    assert weights_fingerprint(rebuilt) == manifest.base_model.weights_fingerprint


def test_registered_base_image_folder_and_selective_backprop(
    workspace: Path, image_folder: Path, base_model
) -> None:
    bases_dir = workspace / "bases"
    info = save_base(base_model, CONFIG, bases_dir, weights_source="pretrained:noise")
    common = {
        "data": image_folder,
        "positive_class": "circle",
        "base": {"weights": info.weights_fingerprint},
        "bases_dir": bases_dir,
        "freeze_points": 1,  # the deepest cut point only
        "epochs": 2,
        "batch_size": 8,
        "learning_rate": 0.003,
        "strategy": "selective-backprop",
        "event_length_s": 2.0,
        "event_frequency": 0.2,
        "correlation": 0.3,
        "camera_fps": 15,
        "bundle_base_weights": False,
        "progress": False,
    }
    result = train_package(TrainRequest.model_validate({**common, "output": workspace / "c.mpkg"}))
    manifest = verify_package(result.package_path).manifest
    assert manifest.base_model.weights_fingerprint == info.weights_fingerprint
    assert manifest.base_model.weights_source == "pretrained:noise"
    assert manifest.base_weights is None
    assert [c.cut_point for c in manifest.candidates] == ["conv_pw_13_relu"]
    assert manifest.event_stats.correlation == 0.3
    assert manifest.event_stats.correlation_evidence is None
    assert "given explicitly" in manifest.event_stats.how_measured
    counts = manifest.candidates[0].evidence
    assert counts is not None and counts.events is None  # an image folder has no events
    assert manifest.training.strategy == "selective-backprop"
    counters = manifest.candidates[0].training
    assert counters is not None and counters.strategy == "selective-backprop"
    assert counters.examples_selected < counters.examples_scored
    assert counters.epochs[0].selection_rate == 1.0

    # A registered base brings its own architecture: asking for another one is an error.
    clash = {**common, "base": {"weights": info.weights_fingerprint, "alpha": 0.5}}
    with pytest.raises(InvalidParameterError, match=r"base\.alpha"):
        train_package(TrainRequest.model_validate({**clash, "output": workspace / "d.mpkg"}))


def test_interrupted_job_leaves_no_package(
    workspace: Path, image_folder: Path, base_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.pipeline

    saved = []
    real_save = trainer.pipeline.save_candidate

    def save_then_interrupt(model, path):
        saved.append(real_save(model, path))
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.pipeline, "save_candidate", save_then_interrupt)
    output = workspace / "interrupted" / "app.mpkg"
    request = TrainRequest(
        data=image_folder,
        positive_class="circle",
        base=BaseRequest(weights=str(base_weights), alpha=0.25, input_size=96),
        freeze_points=["conv_pw_13_relu"],
        epochs=1,
        event_length_s=2.0,
        event_frequency=0.2,
        correlation=0.3,
        camera_fps=15,
        output=output,
        progress=False,
    )
    with pytest.raises(KeyboardInterrupt):
        train_package(request)
    scratch_folder = saved[0].parent.parent
    assert scratch_folder.name.startswith("mainstream-train-")
    assert not scratch_folder.exists()
    assert not output.exists()
    assert not output.parent.exists() or not any(output.parent.iterdir())


def test_default_freeze_points_are_spread_frozen_depths(base_model) -> None:
    frozen = [f"conv_pw_{block}_relu" for block in range(1, 14)]
    assert default_freeze_points(CONFIG, base_model, 1) == ["conv_pw_13_relu"]
    assert default_freeze_points(CONFIG, base_model, 3) == [
        "conv_pw_1_relu",
        "conv_pw_7_relu",
        "conv_pw_13_relu",
    ]
    five = default_freeze_points(CONFIG, base_model, 5)
    assert five == [
        "conv_pw_1_relu",
        "conv_pw_4_relu",
        "conv_pw_7_relu",
        "conv_pw_10_relu",
        "conv_pw_13_relu",
    ]
    assert default_freeze_points(CONFIG, base_model, 99) == frozen  # never "input"
    with pytest.raises(InvalidParameterError, match="freeze_points"):
        default_freeze_points(CONFIG, base_model, 0)


@pytest.mark.slow
def test_cli_default_spread_cut_points_are_frozen(
    workspace: Path, video, base_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented example: 3 spread-out frozen cut points, first block to head only."""
    output = workspace / "spread.mpkg"
    main(
        [
            "train",
            "--data",
            video.video_path,
            "--positive-class",
            "train",
            "--base",
            "mobilenet_v1",
            "--weights",
            str(base_weights),
            "--alpha",
            "0.25",
            "--input-size",
            "96",
            "--freeze-points",
            "3",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--quiet",
            "--json",
            "-o",
            str(output),
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert [c["cut_point"] for c in result["candidates"]] == [
        "conv_pw_1_relu",
        "conv_pw_7_relu",
        "conv_pw_13_relu",
    ]
    manifest = verify_package(output).manifest
    assert all(candidate.frozen_layers > 0 for candidate in manifest.candidates)
    assert manifest.candidates[0].input_shape == (48, 48, 16)
    assert manifest.event_stats.how_measured


def test_folds_measure_every_frame_once_and_train_the_final_candidates_on_all(
    workspace: Path, video, base_weights: Path
) -> None:
    common = {
        "data": Path(video.video_path),
        "positive_class": "train",
        "base": {
            "name": "mobilenet_v1",
            "alpha": 0.25,
            "input_size": 96,
            "weights": str(base_weights),
        },
        "freeze_points": ["conv_pw_13_relu"],
        "epochs": 1,
        "batch_size": 16,
        "progress": False,
    }
    single = train_package(
        TrainRequest.model_validate({**common, "output": workspace / "one.mpkg"})
    )
    folded = train_package(
        TrainRequest.model_validate({**common, "folds": 2, "output": workspace / "folds.mpkg"})
    )
    manifest = verify_package(folded.package_path).manifest
    (counts,) = [candidate.evidence for candidate in manifest.candidates]
    assert counts is not None
    # Every frame of the video is held out by exactly one fold (both hold both classes).
    frames = manifest.training.dataset["all"]
    assert counts.positive_frames + counts.negative_frames == frames["frames"]  # type: ignore[index]
    assert manifest.training.dataset["folds"] == 2
    assert counts.split.startswith("2-fold cross-validation over time blocks")
    assert counts.events == video.event_count  # no event is split by a fold's edge
    single_counts = single.manifest.candidates[0].evidence
    assert single_counts is not None and counts.negative_frames > single_counts.negative_frames
    assert manifest.event_stats.correlation_evidence is not None
    assert manifest.event_stats.correlation_evidence.events == counts.events
    # K + 1 trainings: the cost is about (K + 1) times one, less the fixed part of a job.
    print(
        f"training wall time: 1 split {single.wall_time_s:.1f} s, 2 folds {folded.wall_time_s:.1f} s"
    )
    assert folded.wall_time_s > single.wall_time_s


def test_folds_need_blocks_with_every_class(video, tmp_path: Path) -> None:
    from trainer.datasets import load_labelled_video, time_folds

    data = load_labelled_video(
        video.video_path, video.labels_path, 16, "train", show_progress=False
    )
    pairs = time_folds(data, 4)
    held = np.concatenate([np.sort(validation.order) for _, validation in pairs])
    assert len(np.unique(held)) == len(held)  # no frame is held out twice
    for train, validation in pairs:
        assert not set(train.order.tolist()) & set(validation.order.tolist())
    with pytest.raises(InvalidParameterError, match="folds"):
        time_folds(data, 1)
