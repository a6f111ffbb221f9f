"""Fine-tune one app's candidates: one specialised model per freeze depth (cut point).

For a cut point, everything up to the cut stays frozen (it is the shared stem, bit-identical to
the base) and the rest of the base plus a new head (global average pooling + dense softmax over
the app's classes) is trained. The saved candidate is that *suffix*: a model whose input is the
tensor at the cut and whose output is the class scores, so a runtime that already computes the
stem hands it its features.

Two ways to train, same result:

- cached (default): run the frozen stem once over the data — a single multi-output pass
  yields the features at every chosen cut — and train each suffix on the cached features.
  With augmentation, a few augmented copies of every image are cached as well, and each epoch
  draws one copy per image. (The "input" candidate has no frozen stem: it trains on images.)
- naive: train the full model (frozen stem + suffix) on images, every epoch through the whole
  network. Kept for the benchmark and as a reference.

What caching saves is the frozen stem's forward pass, per candidate and epoch. It cannot save a
candidate's own forward and backward passes through its trainable suffix, so the gain of one
candidate is about (stem forward + suffix forward + suffix backward) / (suffix forward + suffix
backward): large for deep cuts (the head-only candidate is nearly all stem), close to 1 for a
cut after the first block, and exactly 1 for "input". That is why the default candidate set
(:func:`trainer.pipeline.default_freeze_points`) holds frozen depths only; `bench/trainer.py`
measures the gains.

BatchNorm layers always run in inference mode (see :mod:`trainer.selective_backprop`): the
frozen stem keeps exactly the base's weights and statistics, which is checked by fingerprint
after training.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from mainstream.core.bases import (
    INPUT_CUT,
    BaseConfig,
    cut_output_shape,
    frozen_layer_count,
    preprocess,
    split_model,
    weights_fingerprint,
)
from mainstream.core.errors import InvalidParameterError, ModelError
from trainer.selective_backprop import TrainingCounters, TrainingOptions, train_model

if TYPE_CHECKING:
    import keras

    from trainer.datasets import FrameDataset

HEAD_POOL_NAME = "head_pool"
HEAD_SCORES_NAME = "head_scores"


@dataclass(frozen=True)
class FinetuneOptions:
    """How to train the candidates of one app."""

    training: TrainingOptions = field(default_factory=TrainingOptions)
    cache: bool = True
    augment_copies: int = 0
    inference_batch_size: int = 64
    progress: bool = True

    def __post_init__(self) -> None:
        if self.augment_copies < 0:
            raise InvalidParameterError("augment_copies", self.augment_copies, "an integer >= 0")
        if self.inference_batch_size < 1:
            raise InvalidParameterError(
                "inference_batch_size", self.inference_batch_size, "an integer >= 1"
            )


@dataclass(frozen=True)
class HeldOutQuality:
    """Per-frame quality of a candidate on the held-out frames."""

    recall: float  # P(predicted positive | positive frame)
    false_positive_rate: float  # P(predicted positive | negative frame)
    accuracy: float  # P(predicted class == true class), over all classes
    positive_frames: int
    negative_frames: int
    positive_fires: int = 0  # positive frames it fired on: recall * positive_frames
    negative_fires: int = 0  # negative frames it fired on: FP rate * negative_frames


@dataclass
class TrainedCandidate:
    """One fine-tuned candidate, ready to be saved into an M-Package."""

    cut_point: str
    frozen_layers: int
    model: keras.Model  # tensor at the cut -> class scores
    quality: HeldOutQuality
    held_out_predictions: np.ndarray  # predicted class index per held-out frame
    stem_fingerprint: str  # weights of the frozen part it was trained against
    counters: TrainingCounters
    wall_time_s: float
    cpu_seconds: float = 0.0  # CPU time of the process (all threads) for this candidate


@dataclass
class FinetuneResult:
    candidates: list[TrainedCandidate]
    mode: str  # "cached" or "naive"
    stem_seconds: float  # computing the cached features (0 in naive mode)
    wall_time_s: float
    stem_cpu_seconds: float = 0.0
    cpu_seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Pure helpers


def per_frame_quality(
    predicted: np.ndarray, labels: np.ndarray, positive_index: int
) -> HeldOutQuality:
    """Recall and false-positive rate of the positive class, and accuracy, per frame."""
    predicted = np.asarray(predicted)
    labels = np.asarray(labels)
    if predicted.shape != labels.shape or labels.ndim != 1:
        raise InvalidParameterError(
            "predicted", f"shape {predicted.shape}", f"the shape of labels {labels.shape}"
        )
    positive = labels == positive_index
    fires = predicted == positive_index
    positives = int(positive.sum())
    negatives = int((~positive).sum())
    if positives == 0:
        raise InvalidParameterError(
            "held-out frames",
            f"{len(labels)} frames without the positive class",
            "some frames of the positive class (more data or a larger validation fraction)",
        )
    if negatives == 0:
        raise InvalidParameterError(
            "held-out frames",
            f"{len(labels)} frames all of the positive class",
            "some frames without the positive class",
        )
    return HeldOutQuality(
        recall=float(fires[positive].mean()),
        false_positive_rate=float(fires[~positive].mean()),
        accuracy=float((predicted == labels).mean()),
        positive_frames=positives,
        negative_frames=negatives,
        positive_fires=int(fires[positive].sum()),
        negative_fires=int(fires[~positive].sum()),
    )


def augment_images(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random augmentation per image: horizontal flip, crop (85-100 %) and brightness."""
    import cv2  # OpenCV loads only when frames are decoded or drawn

    augmented = np.empty_like(images)
    height, width = images.shape[1:3]
    for index, image in enumerate(images):
        if rng.random() < 0.5:
            image = image[:, ::-1]
        scale = rng.uniform(0.85, 1.0)
        crop_height, crop_width = max(1, round(height * scale)), max(1, round(width * scale))
        top = int(rng.integers(0, height - crop_height + 1))
        left = int(rng.integers(0, width - crop_width + 1))
        crop = np.ascontiguousarray(image[top : top + crop_height, left : left + crop_width])
        resized = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
        shift = rng.uniform(-0.15, 0.15) * 255.0
        augmented[index] = np.clip(resized.astype(np.float32) + shift, 0, 255).astype(np.uint8)
    return augmented


def image_variants(images: np.ndarray, copies: int, seed: int) -> np.ndarray:
    """(1 + copies, N, H, W, 3): the originals, then `copies` augmented copies of each image."""
    rng = np.random.default_rng([seed, 7919])
    variants = [images, *(augment_images(images, rng) for _ in range(copies))]
    return np.stack(variants)


@dataclass
class VariantSource:
    """Training inputs with several stored variants per example (original + augmented copies).

    Each epoch draws one variant per example; `transform` turns the stored arrays into model
    inputs (preprocessing for images, nothing for cached features).
    """

    variants: np.ndarray  # (V, N, ...)
    seed: int
    transform: Callable[[np.ndarray], np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.variants.shape[1])

    def batch(self, indices: np.ndarray, epoch: int) -> np.ndarray:
        variant_count = self.variants.shape[0]
        if variant_count == 1:
            chosen = self.variants[0, indices]
        else:
            picks = np.random.default_rng([self.seed, epoch]).integers(
                variant_count, size=len(self)
            )
            chosen = self.variants[picks[indices], indices]
        return self.transform(chosen) if self.transform is not None else chosen


# ---------------------------------------------------------------------------------------------
# Models


def check_cut_points(base: keras.Model, cut_points: Sequence[str]) -> list[str]:
    """The cut points in network order; a clear error for an unknown or repeated one."""

    if not cut_points:
        raise InvalidParameterError("freeze_points", list(cut_points), "at least one cut point")
    if len(set(cut_points)) != len(cut_points):
        raise InvalidParameterError("freeze_points", list(cut_points), "distinct cut points")
    depth = {cut: frozen_layer_count(base, cut) for cut in cut_points}
    return sorted(cut_points, key=lambda cut: depth[cut])


def build_candidate(
    base: keras.Model, cut_point: str, class_count: int, seed: int = 0
) -> keras.Model:
    """The trainable suffix after `cut_point` (a copy of the base's layers) plus a new head.

    Input: the tensor at the cut. Output: softmax scores over `class_count` classes. The suffix
    layers are copies, so training the candidate never touches the base.
    """
    import keras  # TensorFlow loads only when a model is built or run

    if class_count < 2:
        raise InvalidParameterError("classes", class_count, "at least 2 classes")
    _, suffix = split_model(base, cut_point)
    cut_input = keras.Input(
        shape=cut_output_shape(base, cut_point), dtype="float32", name=suffix.input.name
    )
    if suffix.input is suffix.output:  # the deepest cut: only the head is specialised
        features = cut_input
    else:
        copy = keras.models.clone_model(suffix, input_tensors=cut_input)
        copy.set_weights(suffix.get_weights())
        features = copy.output
    keras.utils.set_random_seed(seed)  # the same head init in cached and naive mode
    pooled = keras.layers.GlobalAveragePooling2D(name=HEAD_POOL_NAME)(features)
    scores = keras.layers.Dense(
        class_count, activation="softmax", dtype="float32", name=HEAD_SCORES_NAME
    )(pooled)
    safe_name = "".join(char if char.isalnum() else "_" for char in cut_point)
    return keras.Model(cut_input, scores, name=f"candidate_{safe_name}")


def frozen_stem(base: keras.Model, cut_point: str) -> keras.Model | None:
    """The base's frozen part up to `cut_point` (shares the base's weights); None for "input"."""

    stem, _ = split_model(base, cut_point)
    return stem


def stem_fingerprint(base: keras.Model, cut_point: str) -> str:
    """Fingerprint of the frozen weights up to `cut_point` (of nothing for "input")."""

    stem = frozen_stem(base, cut_point)
    return weights_fingerprint(stem) if stem is not None else weights_fingerprint(_empty_model())


def _empty_model() -> keras.Model:
    import keras  # TensorFlow loads only when a model is built or run

    inputs = keras.Input(shape=(1,))
    return keras.Model(inputs, inputs)


def save_candidate(model: keras.Model, path: Path) -> Path:
    """Save a candidate as a `.keras` file (it is never compiled: no optimizer state)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    return path


def load_candidate(path: Path) -> keras.Model:
    """Load a saved candidate in Keras safe mode (no arbitrary code)."""
    import keras  # TensorFlow loads only when a model is built or run

    return keras.models.load_model(str(path), compile=False, safe_mode=True)


def make_predictor(model: keras.Model, batch_size: int = 64) -> Callable[..., np.ndarray]:
    """A compiled `predict(inputs, progress=False) -> class scores` for `model`.

    `inputs` is an array or anything with `len()` and `batch(indices, epoch)` (a
    `VariantSource`). The function is traced once and reused, so calling it after every epoch
    stays cheap.
    """
    import tensorflow as tf  # TensorFlow loads only when a model is built or run

    spec = tf.TensorSpec(shape=(None, *model.input_shape[1:]), dtype=tf.float32)

    @tf.function(input_signature=[spec])
    def forward(batch: tf.Tensor) -> tf.Tensor:
        return model(batch, training=False)

    def predict(inputs: Any, progress: bool = False) -> np.ndarray:
        count = len(inputs)
        outputs = []
        for start in tqdm(
            range(0, count, batch_size), desc="predicting", leave=False, disable=not progress
        ):
            indices = np.arange(start, min(count, start + batch_size))
            batch = inputs.batch(indices, 0) if hasattr(inputs, "batch") else inputs[indices]
            outputs.append(np.asarray(forward(np.asarray(batch, dtype=np.float32))))
        if not outputs:
            return np.empty((0, int(model.output_shape[-1])), dtype=np.float32)
        return np.concatenate(outputs)

    return predict


def stem_features(
    base: keras.Model,
    cut_points: Sequence[str],
    images: np.ndarray,
    config: BaseConfig,
    batch_size: int = 64,
    progress: bool = False,
    description: str = "stem features",
) -> dict[str, np.ndarray]:
    """Features at every cut point in `cut_points` from ONE pass of the frozen base.

    `images` is uint8 (..., H, W, 3) with any leading dimensions (e.g. variants x frames). The
    pass runs only up to the deepest requested cut. "input" is not computed here: its
    "features" are the preprocessed images themselves.
    """
    import keras  # TensorFlow loads only when a model is built or run
    import tensorflow as tf  # TensorFlow loads only when a model is built or run

    cuts = [cut for cut in cut_points if cut != INPUT_CUT]
    if not cuts:
        return {}
    stems = [frozen_stem(base, cut) for cut in cuts]
    outputs = [stem.output for stem in stems if stem is not None]
    multi_stem = keras.Model(base.inputs[0], outputs, name="cached_stems")
    spec = tf.TensorSpec(shape=(None, *config.input_shape), dtype=tf.float32)

    @tf.function(input_signature=[spec])
    def forward(batch: tf.Tensor) -> list[tf.Tensor]:
        result = multi_stem(batch, training=False)
        return list(result) if isinstance(result, list | tuple) else [result]

    leading = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:])
    chunks: list[list[np.ndarray]] = [[] for _ in cuts]
    for start in tqdm(
        range(0, len(flat), batch_size),
        desc=description,
        unit="batch",
        leave=False,
        disable=not progress,
    ):
        batch = preprocess(config, flat[start : start + batch_size])
        for chunk, feature in zip(chunks, forward(batch), strict=True):
            chunk.append(np.asarray(feature, dtype=np.float32))
    return {
        cut: np.concatenate(chunk).reshape(*leading, *chunk[0].shape[1:])
        for cut, chunk in zip(cuts, chunks, strict=True)
    }


def naive_model(base: keras.Model, cut_point: str, candidate: keras.Model) -> keras.Model:
    """Image -> copy of the frozen stem -> candidate: the whole network, trained end to end.

    The stem is a frozen copy, so the check after training (its fingerprint still equals the
    base's) proves the naive loop left the frozen layers untouched.
    """
    import keras  # TensorFlow loads only when a model is built or run

    image = keras.Input(shape=base.input_shape[1:], dtype="float32", name="image")
    stem = frozen_stem(base, cut_point)
    if stem is None:
        return keras.Model(image, candidate(image), name=f"naive_{candidate.name}")
    stem_copy = keras.models.clone_model(stem)
    stem_copy.set_weights(stem.get_weights())
    stem_copy.trainable = False
    return keras.Model(image, candidate(stem_copy(image)), name=f"naive_{candidate.name}")


# ---------------------------------------------------------------------------------------------
# Training


def finetune_candidates(
    base: keras.Model,
    config: BaseConfig,
    cut_points: Sequence[str],
    train: FrameDataset,
    validation: FrameDataset,
    positive_class: str,
    options: FinetuneOptions | None = None,
    evaluate_during_training: bool = False,
    evaluate_every_steps: int | None = None,
) -> FinetuneResult:
    """Train one candidate per cut point and measure each on the held-out frames.

    Candidates come back in network order (shallowest cut first). `evaluate_during_training`
    records held-out accuracy after every epoch (and every `evaluate_every_steps` optimizer
    steps) in each candidate's `counters.checkpoints` (used by the benchmark).
    """

    options = options or FinetuneOptions()
    class_names = list(train.class_names)
    if list(validation.class_names) != class_names:
        raise InvalidParameterError(
            "validation classes",
            list(validation.class_names),
            f"the training classes {class_names}",
        )
    if positive_class not in class_names:
        raise InvalidParameterError("positive_class", positive_class, f"one of {class_names}")
    if len(train.labels) == 0 or len(validation.labels) == 0:
        raise InvalidParameterError(
            "data",
            f"{len(train.labels)} training and {len(validation.labels)} held-out frames",
            "frames in both splits",
        )
    positive_index = class_names.index(positive_class)
    for split, labels in (("training", train.labels), ("held-out", validation.labels)):
        if not (labels == positive_index).any() or (labels == positive_index).all():
            raise InvalidParameterError(
                f"{split} frames",
                f"{len(labels)} frames, {int((labels == positive_index).sum())} of {positive_class!r}",
                "frames of the positive class and frames without it",
            )
    ordered_cuts = check_cut_points(base, cut_points)
    base_fingerprint = weights_fingerprint(base)
    started, cpu_started = time.perf_counter(), time.process_time()
    seed = options.training.seed

    def preprocessed(images: np.ndarray) -> np.ndarray:
        return preprocess(config, images)

    train_variants = image_variants(train.images, options.augment_copies, seed)
    held_out_images = VariantSource(validation.images[np.newaxis], seed, preprocessed)
    train_images = VariantSource(train_variants, seed, preprocessed)
    train_features: dict[str, np.ndarray] = {}
    held_out_features: dict[str, np.ndarray] = {}
    stem_started, stem_cpu_started = time.perf_counter(), time.process_time()
    if options.cache:
        # One pass over the training variants and the held-out frames together.
        flat_train = train_variants.reshape(-1, *train_variants.shape[2:])
        features = stem_features(
            base,
            ordered_cuts,
            np.concatenate([flat_train, validation.images]),
            config,
            options.inference_batch_size,
            options.progress,
        )
        for cut, values in features.items():
            train_features[cut] = values[: len(flat_train)].reshape(
                *train_variants.shape[:2], *values.shape[1:]
            )
            held_out_features[cut] = values[len(flat_train) :]
    stem_seconds = time.perf_counter() - stem_started if options.cache else 0.0
    stem_cpu_seconds = time.process_time() - stem_cpu_started if options.cache else 0.0

    candidates = []
    for index, cut in enumerate(ordered_cuts):
        if cut in train_features:
            inputs: _CandidateInputs = _CandidateInputs(
                train=VariantSource(train_features[cut], seed),
                held_out=held_out_features[cut],
                naive=False,
            )
        else:  # naive mode, or the "input" cut whose features are the images themselves
            inputs = _CandidateInputs(train=train_images, held_out=held_out_images, naive=True)
        candidates.append(
            _train_candidate(
                base,
                cut,
                inputs,
                train.labels,
                validation.labels,
                positive_index,
                len(class_names),
                options,
                seed + index,
                evaluate_during_training,
                evaluate_every_steps,
            )
        )
    if weights_fingerprint(base) != base_fingerprint:
        raise ModelError("the base's weights changed during fine-tuning")
    return FinetuneResult(
        candidates=candidates,
        mode="cached" if options.cache else "naive",
        stem_seconds=stem_seconds,
        wall_time_s=time.perf_counter() - started,
        stem_cpu_seconds=stem_cpu_seconds,
        cpu_seconds=time.process_time() - cpu_started,
    )


@dataclass
class _CandidateInputs:
    train: VariantSource
    held_out: Any  # an array of features, or a VariantSource of images
    naive: bool  # True: images go through a frozen copy of the stem


def _train_candidate(
    base: keras.Model,
    cut: str,
    inputs: _CandidateInputs,
    train_labels: np.ndarray,
    held_out_labels: np.ndarray,
    positive_index: int,
    class_count: int,
    options: FinetuneOptions,
    seed: int,
    evaluate_during_training: bool,
    evaluate_every_steps: int | None,
) -> TrainedCandidate:

    started, cpu_started = time.perf_counter(), time.process_time()
    candidate = build_candidate(base, cut, class_count, seed=seed)
    expected_stem = stem_fingerprint(base, cut)
    model = naive_model(base, cut, candidate) if inputs.naive else candidate
    predict = make_predictor(model, options.inference_batch_size)

    def held_out_accuracy() -> float:
        return float((predict(inputs.held_out).argmax(axis=1) == held_out_labels).mean())

    counters = train_model(
        model,
        inputs.train,
        train_labels,
        options.training,
        evaluate=held_out_accuracy if evaluate_during_training else None,
        evaluate_every_steps=evaluate_every_steps,
        progress=options.progress,
        description=f"training {cut}",
    )
    # The frozen part the candidate was trained against must still be the base's.
    if inputs.naive:
        stem_copies = [layer for layer in model.layers if layer is not candidate and layer.weights]
        trained_stem = weights_fingerprint(stem_copies[0] if stem_copies else _empty_model())
    else:
        trained_stem = stem_fingerprint(base, cut)
    if trained_stem != expected_stem:
        raise ModelError(
            f"the frozen layers up to {cut!r} changed during training; the candidate would "
            "not fit the shared stem"
        )
    predictions = predict(inputs.held_out, options.progress).argmax(axis=1)
    return TrainedCandidate(
        cut_point=cut,
        frozen_layers=frozen_layer_count(base, cut),
        model=candidate,
        quality=per_frame_quality(predictions, held_out_labels, positive_index),
        held_out_predictions=predictions,
        stem_fingerprint=trained_stem,
        counters=counters,
        wall_time_s=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
    )
