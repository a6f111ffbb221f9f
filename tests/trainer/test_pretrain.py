"""Pretraining a base on an image folder, through the library and the `mainstream base` CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from mainstream.cli.main import cli
from mainstream.core.bases import (
    BaseConfig,
    build_base,
    list_registered_bases,
    load_registered_base,
    weights_fingerprint,
)
from mainstream.core.errors import InvalidParameterError
from trainer.pretrain import ImageFolder, load_image_folder, split_train_validation

SHAPES = ("circle", "square", "triangle")


def write_shape_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """One subfolder per shape: a coloured shape of random size and place on a noisy ground."""
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        (root / shape).mkdir(parents=True)
        for index in range(per_class):
            image = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)
            colour = tuple(int(value) for value in rng.integers(80, 256, 3))
            x, y = (int(value) for value in rng.integers(20, 44, 2))
            radius = int(rng.integers(8, 18))
            if shape == "circle":
                cv2.circle(image, (x, y), radius, colour, -1)
            elif shape == "square":
                cv2.rectangle(image, (x - radius, y - radius), (x + radius, y + radius), colour, -1)
            else:
                corners = np.array(
                    [[x, y - radius], [x - radius, y + radius], [x + radius, y + radius]]
                )
                cv2.fillPoly(image, [corners.astype(np.int32)], colour)
            assert cv2.imwrite(str(root / shape / f"{index:03d}.png"), image)
    return root


@pytest.fixture(scope="module")
def shape_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shape_folder(tmp_path_factory.mktemp("shapes"), per_class=30)


def test_load_image_folder(shape_folder: Path) -> None:
    folder = load_image_folder(shape_folder, 96, show_progress=False)
    assert folder.classes == SHAPES
    assert folder.images.shape == (90, 96, 96, 3) and folder.images.dtype == np.uint8
    assert folder.class_counts() == dict.fromkeys(SHAPES, 30)
    # Backgrounds are dark noise; every image has a bright shape somewhere.
    assert (folder.images.reshape(90, -1).max(axis=1) >= 80).all()


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    cv2.imwrite(str(tmp_path / "only" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InvalidParameterError, match="at least 2 class subfolders"):
        load_image_folder(tmp_path, 32, show_progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidParameterError, match="empty have none"):
        load_image_folder(tmp_path, 32, show_progress=False)
    (tmp_path / "empty" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(InvalidParameterError, match=r"broken\.png"):
        load_image_folder(tmp_path, 32, show_progress=False)


def test_split_is_stratified_and_disjoint() -> None:
    labels = np.repeat(np.arange(3), [20, 10, 1])
    images = np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1).repeat(3, axis=3)
    folder = ImageFolder(images, labels, ("a", "b", "c"))
    train, validation = split_train_validation(folder, 0.2, np.random.default_rng(0))
    assert validation is not None
    assert validation.class_counts() == {"a": 4, "b": 2, "c": 0}  # a single image stays in train
    assert train.class_counts() == {"a": 16, "b": 8, "c": 1}
    assert not set(train.images[:, 0, 0, 0]) & set(validation.images[:, 0, 0, 0])
    assert split_train_validation(folder, 0.0, np.random.default_rng(0))[1] is None
    with pytest.raises(InvalidParameterError, match="validation_fraction"):
        split_train_validation(folder, 1.0, np.random.default_rng(0))


@pytest.mark.slow
def test_pretrain_cli_registers_a_trained_base(shape_folder: Path, tmp_path: Path) -> None:
    bases_dir = tmp_path / "bases"
    exported = tmp_path / "export" / "weights.h5"
    arguments = [
        "base",
        "pretrain",
        "--data",
        str(shape_folder),
        "--base",
        "mobilenet_v1",
        "--alpha",
        "0.25",
        "--input-size",
        "96",
        "--epochs",
        "1",
        "--seed",
        "3",
        "--bases-dir",
        str(bases_dir),
        "-o",
        str(exported),
    ]
    result = CliRunner().invoke(cli, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    fingerprint = result.stdout.strip().splitlines()[-1]
    assert len(fingerprint) == 64

    [info] = list_registered_bases(bases_dir)
    assert info.weights_fingerprint == fingerprint
    assert (info.name, info.input_shape, info.alpha) == ("mobilenet_v1", (96, 96, 3), 0.25)
    assert info.weights_source == f"pretrained:{shape_folder.name}"
    assert sorted(path.name for path in bases_dir.iterdir()) == [
        f"{fingerprint}.json",
        f"{fingerprint}.weights.h5",
    ]

    # The same seed gives the same random initialisation; training must have moved away from it.
    keras.utils.set_random_seed(3)
    untrained = build_base(BaseConfig("mobilenet_v1", input_size=96, alpha=0.25))
    assert weights_fingerprint(untrained) != fingerprint

    config, loaded = load_registered_base(fingerprint, bases_dir)
    assert weights_fingerprint(loaded) == fingerprint
    exported_config = BaseConfig("mobilenet_v1", input_size=96, alpha=0.25, weights=str(exported))
    assert weights_fingerprint(build_base(exported_config)) == fingerprint
    assert config.weights.endswith(f"{fingerprint}.weights.h5")


def test_pretrain_cli_rejects_bad_arguments(shape_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    too_small = ["base", "pretrain", "--data", str(shape_folder), "--base", "inception_v3"]
    result = runner.invoke(cli, [*too_small, "--input-size", "64", "--bases-dir", str(tmp_path)])
    assert isinstance(result.exception, InvalidParameterError)
    assert "input_size" in str(result.exception)
    result = runner.invoke(cli, ["base", "pretrain", "--data", str(shape_folder), "--base", "vgg"])
    assert result.exit_code == 2 and "vgg" in result.output
    assert list(tmp_path.iterdir()) == []


def test_pretraining_with_stale_selective_backprop_skips_passes(shape_folder: Path) -> None:
    from trainer.pretrain import pretrain_base

    full = load_image_folder(shape_folder, 64, show_progress=False)
    keep = np.arange(0, len(full.labels), 3)  # 30 images: the graph tracing is the cost
    folder = ImageFolder(full.images[keep], full.labels[keep], full.classes)
    config = BaseConfig("mobilenet_v1", input_size=64, alpha=0.25)
    _body, report = pretrain_base(
        config,
        folder,
        epochs=2,
        batch_size=8,
        strategy="stale-selective-backprop",
        seed=1,
        validation_fraction=0,
    )
    assert report.training is not None
    first, second = report.training["epochs"]
    assert first["forward_passes"] == first["backward_passes"] == report.train_images
    # The second epoch forwards only the examples it chose from the first epoch's losses.
    assert 0 < second["selection_rate"] < 1
    assert report.training["examples_forwarded"] == report.training["examples_selected"]
    assert report.training["examples_forwarded"] < 2 * report.train_images
    assert report.as_provenance(shape_folder)["training"]["strategy"] == (
        "stale-selective-backprop"
    )
    assert 0 <= report.train_accuracy <= 1
