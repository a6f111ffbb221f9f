"""Pretrain a base body from scratch on an image folder, so that its frozen layers carry features.

Offline there are no ImageNet weights, and a randomly initialised base makes every frozen
candidate meaningless. This trains the body with a temporary classification head (global
pooling + softmax) on any folder with one subfolder per class, then throws the head away: only
the body is registered (see `mainstream.core.bases.save_base`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from mainstream.core.bases import BaseConfig, build_base, preprocess, weights_fingerprint
from mainstream.core.errors import InvalidParameterError
from trainer.selective_backprop import TrainingOptions, train_model

if TYPE_CHECKING:
    import keras

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})

# Runs of at most this many training steps skip graph compilation (see `pretrain_base`).
_EAGER_STEP_LIMIT = 8
_TRAINING_BATCH_NORM_MOMENTUM = 0.9


@dataclass(frozen=True)
class ImageFolder:
    """Labelled images decoded to uint8 RGB at the base's input size."""

    images: np.ndarray  # (N, size, size, 3) uint8 RGB
    labels: np.ndarray  # (N,) int64 index into `classes`
    classes: tuple[str, ...]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(count) for name, count in zip(self.classes, counts, strict=True)}


@dataclass(frozen=True)
class PretrainReport:
    """What pretraining did; stored as the registered base's provenance."""

    initial_fingerprint: str
    fingerprint: str
    classes: tuple[str, ...]
    train_images: int
    validation_images: int
    epochs: int
    train_accuracy: float
    validation_accuracy: float | None
    wall_time_s: float
    training: dict[str, Any] | None = None  # strategy counters (custom loop only)

    def as_provenance(self, data_dir: Path | str) -> dict[str, Any]:
        return {
            "trained_on": str(Path(data_dir).name),
            "classes": list(self.classes),
            "train_images": self.train_images,
            "validation_images": self.validation_images,
            "epochs": self.epochs,
            "train_accuracy": round(self.train_accuracy, 4),
            "validation_accuracy": (
                None if self.validation_accuracy is None else round(self.validation_accuracy, 4)
            ),
            "wall_time_s": round(self.wall_time_s, 1),
            **({"training": self.training} if self.training is not None else {}),
        }


def load_image_folder(
    data_dir: Path | str, input_size: int, *, show_progress: bool = True
) -> ImageFolder:
    """Read `data_dir/<class>/<image>` into memory, resized to `input_size` square pixels."""
    import cv2  # OpenCV loads only when frames are decoded or drawn

    root = Path(data_dir)
    if not root.is_dir():
        raise InvalidParameterError("data", str(root), "a folder with one subfolder per class")
    class_files = {
        folder.name: sorted(
            path
            for path in folder.iterdir()
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        )
        for folder in sorted(root.iterdir())
        if folder.is_dir() and not folder.name.startswith(".")
    }
    empty = [name for name, files in class_files.items() if not files]
    if empty:
        raise InvalidParameterError(
            "data", str(root), f"images in every class folder; {', '.join(empty)} have none"
        )
    if len(class_files) < 2:
        raise InvalidParameterError(
            "data", str(root), f"at least 2 class subfolders with images, found {len(class_files)}"
        )

    classes = tuple(class_files)
    paths = [(path, label) for label, name in enumerate(classes) for path in class_files[name]]
    images = np.empty((len(paths), input_size, input_size, 3), dtype=np.uint8)
    labels = np.empty(len(paths), dtype=np.int64)
    for index, (path, label) in enumerate(
        tqdm(paths, desc="reading images", unit="img", disable=not show_progress)
    ):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InvalidParameterError("data", str(path), "a readable image file")
        resized = cv2.resize(bgr, (input_size, input_size), interpolation=cv2.INTER_AREA)
        images[index] = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        labels[index] = label
    return ImageFolder(images=images, labels=labels, classes=classes)


def split_train_validation(
    folder: ImageFolder, validation_fraction: float, rng: np.random.Generator
) -> tuple[ImageFolder, ImageFolder | None]:
    """A stratified random split; no validation set when the fraction is 0 or a class is tiny."""
    if not 0 <= validation_fraction < 1:
        raise InvalidParameterError("validation_fraction", validation_fraction, "0 ≤ value < 1")
    validation_indices = []
    for label in range(len(folder.classes)):
        members = rng.permutation(np.flatnonzero(folder.labels == label))
        take = math.floor(len(members) * validation_fraction)
        if take == 0 or take == len(members):
            continue
        validation_indices.extend(members[:take].tolist())
    if not validation_indices:
        return folder, None
    is_validation = np.zeros(len(folder.labels), dtype=bool)
    is_validation[validation_indices] = True

    def subset(mask: np.ndarray) -> ImageFolder:
        return ImageFolder(folder.images[mask], folder.labels[mask], folder.classes)

    return subset(~is_validation), subset(is_validation)


def _training_batches(
    config: BaseConfig,
    folder: ImageFolder,
    batch_size: int,
    rng: np.random.Generator,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless shuffled full batches with random horizontal flips."""
    while True:
        order = rng.permutation(len(folder.labels))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            indices = order[start : start + batch_size]
            batch = folder.images[indices]
            flip = rng.random(len(indices)) < 0.5
            batch[flip] = batch[flip, :, ::-1]
            yield preprocess(config, batch), folder.labels[indices]


def classifier_for_pretraining(body: keras.Model, class_count: int) -> keras.Model:
    """The body plus a temporary head: global average pooling, dropout, softmax."""
    import keras  # TensorFlow loads only when a model is built or run

    pooled = keras.layers.GlobalAveragePooling2D(name="pretrain_pool")(body.output)
    dropped = keras.layers.Dropout(0.2, name="pretrain_dropout")(pooled)
    scores = keras.layers.Dense(class_count, activation="softmax", name="pretrain_scores")(dropped)
    return keras.Model(body.input, scores, name=f"{body.name}_pretrain")


def pretrain_base(
    config: BaseConfig,
    folder: ImageFolder,
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    validation_fraction: float = 0.1,
    seed: int = 0,
    run_eagerly: bool | None = None,
    verbose: int | str = "auto",
    strategy: str = "standard",
) -> tuple[keras.Model, PretrainReport]:
    """Train the body of `config` on `folder`; returns the trained body (no head) and a report.

    The body starts from `config.weights` ("none" = from scratch). `run_eagerly=None` decides
    by run length: compiling the training graph costs as much as a few dozen small steps, so
    very short runs are faster eagerly.

    `strategy` other than "standard" trains with the strategy loop
    (:func:`trainer.selective_backprop.train_model`, BatchNorm in training mode) and records
    its counters in the report; from scratch, the backward pass through the whole body is the
    bulk of a step, which is where Selective-Backprop and Stale-SB can save time.
    """
    import keras  # TensorFlow loads only when a model is built or run

    if epochs < 1:
        raise InvalidParameterError("epochs", epochs, "an integer ≥ 1")
    if batch_size < 2:
        raise InvalidParameterError("batch_size", batch_size, "an integer ≥ 2")
    if not learning_rate > 0:
        raise InvalidParameterError("learning_rate", learning_rate, "a positive number")
    if strategy == "selective-augment":
        raise InvalidParameterError(
            "strategy",
            strategy,
            "a strategy without stored augmented variants (pretraining "
            "draws fresh flips every epoch)",
        )

    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    train, validation = split_train_validation(folder, validation_fraction, rng)
    batch_size = min(batch_size, len(train.labels))
    if batch_size < 2:
        raise InvalidParameterError("data", len(train.labels), "at least 2 training images")

    steps_per_epoch = len(train.labels) // batch_size
    if run_eagerly is None:
        run_eagerly = epochs * steps_per_epoch <= _EAGER_STEP_LIMIT

    body = build_base(config)
    initial_fingerprint = weights_fingerprint(body)
    classifier = classifier_for_pretraining(body, len(folder.classes))
    classifier.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,  # XLA compilation costs more than it saves on small CPU runs
        run_eagerly=run_eagerly,
    )
    validation_data = None
    if validation is not None:
        validation_data = (preprocess(config, validation.images), validation.labels)
    training: dict[str, Any] | None = None
    with _batch_norm_momentum(body, _TRAINING_BATCH_NORM_MOMENTUM):
        if strategy == "standard":
            history = classifier.fit(
                _training_batches(config, train, batch_size, rng),
                steps_per_epoch=steps_per_epoch,
                epochs=epochs,
                validation_data=validation_data,
                shuffle=False,  # the batches are shuffled already
                verbose=verbose,
            )
            train_accuracy = float(history.history["accuracy"][-1])
        else:
            training = _train_with_strategy(
                classifier, config, train, strategy, epochs, batch_size, learning_rate, seed
            )
    recalibrate_batch_norm(body, config, train.images, batch_size)
    if training is not None:
        sample = train.images[:1000]
        scores = classifier.predict(preprocess(config, sample), batch_size=batch_size, verbose=0)
        train_accuracy = float(np.mean(scores.argmax(axis=1) == train.labels[:1000]))

    validation_accuracy = None
    if validation_data is not None:
        scores = classifier.predict(validation_data[0], batch_size=batch_size, verbose=0)
        validation_accuracy = float(np.mean(scores.argmax(axis=1) == validation_data[1]))
    report = PretrainReport(
        initial_fingerprint=initial_fingerprint,
        fingerprint=weights_fingerprint(body),
        classes=folder.classes,
        train_images=len(train.labels),
        validation_images=0 if validation is None else len(validation.labels),
        epochs=epochs,
        train_accuracy=train_accuracy,
        validation_accuracy=validation_accuracy,
        wall_time_s=time.perf_counter() - started,
        training=training,
    )
    return body, report


@dataclass
class FlippedImages:
    """Training images, preprocessed, each flipped at random (a fresh draw every epoch)."""

    config: BaseConfig
    images: np.ndarray
    seed: int

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: np.ndarray, epoch: int) -> np.ndarray:
        flips = np.random.default_rng([self.seed, epoch]).random(len(self.images)) < 0.5
        batch = self.images[indices].copy()
        flip = flips[indices]
        batch[flip] = batch[flip, :, ::-1]
        return preprocess(self.config, batch)


def _train_with_strategy(
    classifier: keras.Model,
    config: BaseConfig,
    train: ImageFolder,
    strategy: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> dict[str, Any]:
    options = TrainingOptions(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        strategy=strategy,
        seed=seed,
        batch_norm_training=True,
    )
    counters = train_model(
        classifier, FlippedImages(config, train.images, seed), train.labels, options
    )
    return counters.as_dict()


def _batch_norm_layers(model: keras.Model) -> list[Any]:
    import keras  # TensorFlow loads only when a model is built or run

    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


@contextlib.contextmanager
def _batch_norm_momentum(model: keras.Model, momentum: float) -> Iterator[None]:
    """Let moving statistics follow a from-scratch body that changes fast; restore afterwards.

    keras.applications use momentum 0.99 (or 0.999), made for fine-tuning: in a short run from
    scratch the moving statistics lag so far behind that inference outputs are constant.
    """
    layers = _batch_norm_layers(model)
    original = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = momentum
    try:
        yield
    finally:
        for layer, value in zip(layers, original, strict=True):
            layer.momentum = value


def recalibrate_batch_norm(
    body: keras.Model,
    config: BaseConfig,
    images: np.ndarray,
    batch_size: int,
    max_batches: int = 50,
) -> None:
    """Set every BatchNorm's moving mean/variance to the average over training batches.

    Training ends with moving statistics that lag behind the last weights; the frozen stem runs
    in inference mode, so its statistics must describe the final weights. Only BatchNorm
    statistics change (the batch-k update with momentum k/(k+1) is a running average).
    """
    layers = _batch_norm_layers(body)
    if not layers or len(images) == 0:
        return
    # Full batches only: a tiny last batch would give a noisy variance.
    starts = list(range(0, max(len(images) - batch_size, 0) + 1, batch_size))[:max_batches]
    original = [layer.momentum for layer in layers]
    try:
        for batch_number, start in enumerate(starts):
            for layer in layers:
                layer.momentum = batch_number / (batch_number + 1)
            body(preprocess(config, images[start : start + batch_size]), training=True)
    finally:
        for layer, value in zip(layers, original, strict=True):
            layer.momentum = value
