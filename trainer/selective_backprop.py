"""The training loop: mini-batches whose examples a named strategy chooses.

The loop does the passes; the strategy (:mod:`trainer.strategies`) decides, epoch by epoch,
whether every example trains (standard), whether each is scored by a forward pass and then
selected for a backward pass (Selective-Backprop, released or thesis form), or whether examples
are chosen before any forward pass from last epoch's losses (Stale Selective-Backprop). Chosen
examples are queued until a full fixed-size batch is ready, which then makes one optimizer step.
The counters record forward and backward passes and selection rates per epoch.

The loop works on any :class:`ExampleSource` (cached stem features or raw images), so the same
code trains a candidate on cached features, the naive full model of the benchmark, and a base
from scratch. The selection logic is re-exported here from :mod:`trainer.strategies`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from mainstream.core.errors import InvalidParameterError
from trainer.strategies import STRATEGY_NAMES, StrategyName, TrainingSet, make_strategy
from trainer.strategies.base import DEFAULT_BETA, DEFAULT_HISTORY_SIZE, DEFAULT_SMOOTHING
from trainer.strategies.intertrain import interpolate
from trainer.strategies.selective_backprop import (
    ExampleSelector,
    LossHistory,
    loss_percentile,
    selection_probability,
)

if TYPE_CHECKING:
    import keras

Strategy = StrategyName
STRATEGIES: tuple[str, ...] = STRATEGY_NAMES

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_SMOOTHING",
    "ExampleSelector",
    "LossHistory",
    "loss_percentile",
    "selection_probability",
]


@dataclass(frozen=True)
class TrainingOptions:
    """How to train one model: the strategy and its knobs, and when to stop.

    `patience`: stop when held-out accuracy (the loop's `evaluate`) has not improved for this
    many epochs, and keep the best epoch's weights (None: train every epoch).
    `batch_norm_training`: run BatchNorm in training mode (a body trained from scratch);
    otherwise it uses stored statistics (fine-tuning on top of a frozen stem).
    """

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-3
    strategy: str = "standard"
    beta: float = DEFAULT_BETA
    history_size: int = DEFAULT_HISTORY_SIZE
    smoothing: float = DEFAULT_SMOOTHING
    augment_beta: float = 1.0  # Selective-Augment: P(augment) = loss percentile^augment_beta
    interpolation: str = "linavg"  # InterTrain's operator: "linavg" or "randpatch"
    unselective_epochs: int = 1
    seed: int = 0
    patience: int | None = None
    batch_norm_training: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InvalidParameterError("epochs", self.epochs, "an integer >= 1")
        if self.batch_size < 1:
            raise InvalidParameterError("batch_size", self.batch_size, "an integer >= 1")
        if not self.learning_rate > 0:
            raise InvalidParameterError("learning_rate", self.learning_rate, "a number > 0")
        if self.strategy not in STRATEGIES:
            raise InvalidParameterError("strategy", self.strategy, f"one of {list(STRATEGIES)}")
        if self.beta < 0:
            raise InvalidParameterError("beta", self.beta, "beta >= 0")
        if self.history_size < 1:
            raise InvalidParameterError("history_size", self.history_size, "an integer >= 1")
        if self.interpolation not in ("linavg", "randpatch"):
            raise InvalidParameterError(
                "interpolation", self.interpolation, "one of ['linavg', 'randpatch']"
            )
        if self.augment_beta < 0:
            raise InvalidParameterError("augment_beta", self.augment_beta, "a number >= 0")
        if not 0 <= self.smoothing < 1:
            raise InvalidParameterError("smoothing", self.smoothing, "0 <= epsilon < 1")
        if self.unselective_epochs < 0:
            raise InvalidParameterError(
                "unselective_epochs", self.unselective_epochs, "an integer >= 0"
            )
        if self.patience is not None and self.patience < 1:
            raise InvalidParameterError("patience", self.patience, "an integer >= 1 or none")


@dataclass
class EpochCounters:
    """One epoch: examples scored and selected, passes of one example, optimizer steps."""

    epoch: int
    examples_scored: int = 0
    examples_selected: int = 0
    optimizer_steps: int = 0
    examples_forwarded: int = 0
    examples_backpropagated: int = 0
    examples_augmented: int = 0  # trained on an augmented variant chosen by the strategy
    examples_interpolated: int = 0  # merged into composites (two per composite input)
    held_out_accuracy: float | None = None

    @property
    def selection_rate(self) -> float:
        """Share of the epoch's examples chosen for a backward pass."""
        return self.examples_selected / self.examples_scored if self.examples_scored else 0.0


@dataclass
class Checkpoint:
    """Validation accuracy after some amount of training (time excludes the evaluation)."""

    optimizer_steps: int
    examples_backpropagated: int
    examples_forwarded: int
    train_seconds: float
    validation_accuracy: float
    train_cpu_seconds: float = 0.0  # CPU time of the process (all threads); robust to load


@dataclass
class TrainingCounters:
    """What a training run cost.

    examples_scored: examples considered for a backward pass (for standard training, every
    example of every epoch; for Stale-SB, also the ones skipped without any pass).
    examples_selected: examples chosen for a backward pass. optimizer_steps: one per batch.
    examples_backpropagated: examples that actually went through a backward pass.
    examples_forwarded: every forward pass of one example (scoring plus train steps).
    """

    strategy: str = "standard"
    examples_scored: int = 0
    examples_selected: int = 0
    optimizer_steps: int = 0
    examples_backpropagated: int = 0
    examples_forwarded: int = 0
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0
    epochs: list[EpochCounters] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    stopped_after_epoch: int | None = None  # early stop on a held-out plateau
    best_epoch: int | None = None  # the epoch whose weights were kept
    warm_started_from: str | None = None  # cut point whose trained layers seeded this model

    def as_dict(self) -> dict[str, Any]:
        """The manifest's `TrainingRecord` fields (plain JSON values)."""
        return {
            "strategy": self.strategy,
            "examples_scored": self.examples_scored,
            "examples_selected": self.examples_selected,
            "optimizer_steps": self.optimizer_steps,
            "examples_backpropagated": self.examples_backpropagated,
            "examples_forwarded": self.examples_forwarded,
            "train_seconds": round(self.train_seconds, 3),
            "epochs": [
                {
                    "epoch": epoch.epoch,
                    "forward_passes": epoch.examples_forwarded,
                    "backward_passes": epoch.examples_backpropagated,
                    "selection_rate": round(epoch.selection_rate, 4),
                    "augmented": epoch.examples_augmented,
                    "interpolated": epoch.examples_interpolated,
                    "held_out_accuracy": epoch.held_out_accuracy,
                }
                for epoch in self.epochs
            ],
            "warm_started_from": self.warm_started_from,
            "stopped_after_epoch": self.stopped_after_epoch,
            "best_epoch": self.best_epoch,
        }


class ExampleSource(Protocol):
    """Training inputs by index. `epoch` lets a source vary augmentation from epoch to epoch."""

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray, epoch: int) -> np.ndarray: ...


@dataclass
class ArraySource:
    """Inputs that are already computed (e.g. cached features): one array, no augmentation."""

    inputs: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)

    def batch(self, indices: np.ndarray, epoch: int) -> np.ndarray:
        return self.inputs[indices]


@dataclass
class _TrainingSteps:
    train: Callable[[Any, Any], Any]  # -> (per-example loss, correct)
    score: Callable[[Any, Any], Any]  # -> (per-example loss, class scores)
    mixed: Callable[[Any, Any, Any, Any], Any]  # composites -> (loss vs first label, correct)


def _build_steps(
    model: keras.Model, learning_rate: float, batch_norm_training: bool = False
) -> _TrainingSteps:
    """Compile the forward-only scoring step and the train step for `model`.

    Fine-tuning runs the model with ``training=False``: BatchNorm layers use their stored
    statistics everywhere, so the frozen part stays bit-identical to the base and the trainable
    part behaves the same during training as at inference (moving statistics would not settle
    on the small datasets an app is specialised on). A body trained from scratch needs batch
    statistics (`batch_norm_training`); its scoring pass stays in inference mode.
    """
    import keras  # TensorFlow loads only when a model is built or run
    import tensorflow as tf  # TensorFlow loads only when a model is built or run

    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    per_example_loss = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    input_spec = tf.TensorSpec(shape=(None, *model.input_shape[1:]), dtype=tf.float32)
    label_spec = tf.TensorSpec(shape=(None,), dtype=tf.int32)
    trainable = model.trainable_variables
    optimizer.build(trainable)

    def correct(labels: tf.Tensor, scores: tf.Tensor) -> tf.Tensor:
        return tf.equal(tf.argmax(scores, axis=1, output_type=tf.int32), labels)

    @tf.function(input_signature=[input_spec, label_spec])
    def train_step(inputs: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            scores = tf.cast(model(inputs, training=batch_norm_training), tf.float32)
            losses = per_example_loss(labels, scores)
            scaled = optimizer.scale_loss(tf.reduce_mean(losses))
        gradients = tape.gradient(scaled, trainable)
        optimizer.apply(gradients, trainable)
        return losses, correct(labels, scores)

    weight_spec = tf.TensorSpec(shape=(None,), dtype=tf.float32)

    @tf.function(input_signature=[input_spec, label_spec, label_spec, weight_spec])
    def mixed_step(
        inputs: tf.Tensor, first: tf.Tensor, second: tf.Tensor, weights: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Rows train against two labels, weighted (a standalone row has weight 1)."""
        with tf.GradientTape() as tape:
            scores = tf.cast(model(inputs, training=batch_norm_training), tf.float32)
            first_loss = per_example_loss(first, scores)
            losses = weights * first_loss + (1 - weights) * per_example_loss(second, scores)
            scaled = optimizer.scale_loss(tf.reduce_mean(losses))
        gradients = tape.gradient(scaled, trainable)
        optimizer.apply(gradients, trainable)
        return first_loss, correct(first, scores)

    @tf.function(input_signature=[input_spec, label_spec])
    def score_step(inputs: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        scores = tf.cast(model(inputs, training=False), tf.float32)
        return per_example_loss(labels, scores), scores

    return _TrainingSteps(train=train_step, score=score_step, mixed=mixed_step)


@dataclass
class _Queue:
    """Examples chosen for a backward pass, waiting for a full batch."""

    inputs: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    indices: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(part) for part in self.labels)

    def add(self, inputs: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
        if len(labels):
            self.inputs.append(inputs)
            self.labels.append(labels)
            self.indices.append(indices)

    def take(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pop the first `size` queued examples (the rest stay, in order)."""
        parts = [np.concatenate(part) for part in (self.inputs, self.labels, self.indices)]
        for part in (self.inputs, self.labels, self.indices):
            part.clear()
        if len(parts[1]) > size:
            self.add(parts[0][size:], parts[1][size:], parts[2][size:])
        return parts[0][:size], parts[1][:size], parts[2][:size]


def train_model(
    model: keras.Model,
    source: ExampleSource,
    labels: np.ndarray,
    options: TrainingOptions,
    *,
    evaluate: Callable[[], float] | None = None,
    evaluate_every_steps: int | None = None,
    progress: bool = False,
    description: str = "training",
) -> TrainingCounters:
    """Train `model` in place on `source`/`labels` with `options.strategy`; return the counters.

    With `evaluate`, validation accuracy is measured after every epoch (and every
    `evaluate_every_steps` optimizer steps) and stored in `counters.checkpoints`; the time
    spent evaluating is not counted as training time. With `options.patience` and `evaluate`,
    training stops on a plateau and the best epoch's weights are restored.
    """

    labels = np.asarray(labels, dtype=np.int32)
    if len(labels) != len(source):
        raise InvalidParameterError(
            "labels", f"{len(labels)} labels", f"one label per example ({len(source)})"
        )
    if len(labels) == 0:
        raise InvalidParameterError("training set", "empty", "at least one example")
    steps = _build_steps(model, options.learning_rate, options.batch_norm_training)
    rng = np.random.default_rng(options.seed)
    count = len(labels)
    data = TrainingSet(
        examples=count,
        variants=int(getattr(source, "variant_count", 1)),
        transforms=int(getattr(source, "transform_count", 0)),
    )
    strategy = make_strategy(options.strategy, options, rng, data)
    choose_variants = getattr(strategy, "variants", None)
    merge_mask = getattr(strategy, "merge_mask", None)
    variant_batch = getattr(source, "variant_batch", None)
    counters = TrainingCounters(strategy=options.strategy)
    queue = _Queue()
    clock = _TrainingClock()
    best: tuple[float, int, list[Any]] | None = None

    def checkpoint() -> float | None:
        if evaluate is None:
            return None
        clock.pause()
        accuracy = float(evaluate())
        clock.resume()
        counters.checkpoints.append(
            Checkpoint(
                optimizer_steps=counters.optimizer_steps,
                examples_backpropagated=counters.examples_backpropagated,
                examples_forwarded=counters.examples_forwarded,
                train_seconds=clock.elapsed(),
                validation_accuracy=accuracy,
                train_cpu_seconds=clock.cpu_elapsed(),
            )
        )
        return accuracy

    def run_train_step(
        inputs: np.ndarray, batch_labels: np.ndarray, epoch_counters: EpochCounters
    ) -> tuple[np.ndarray, np.ndarray]:
        losses, correct = steps.train(inputs.astype(np.float32, copy=False), batch_labels)
        count_step(len(batch_labels), epoch_counters)
        return np.asarray(losses), np.asarray(correct)

    def count_step(rows: int, epoch_counters: EpochCounters) -> None:
        counters.optimizer_steps += 1
        counters.examples_backpropagated += rows
        counters.examples_forwarded += rows
        epoch_counters.optimizer_steps += 1
        epoch_counters.examples_backpropagated += rows
        epoch_counters.examples_forwarded += rows
        if evaluate_every_steps and counters.optimizer_steps % evaluate_every_steps == 0:
            checkpoint()

    def run_interpolated_step(
        indices: np.ndarray, epoch: int, epoch_counters: EpochCounters
    ) -> None:
        """Merge the strategy's chosen examples pairwise; one row per pair, one per single."""
        merge = merge_mask(indices) if merge_mask is not None else np.zeros(len(indices), bool)
        chosen = rng.permutation(indices[merge])
        chosen = chosen[: len(chosen) - len(chosen) % 2]
        singles = indices[~np.isin(indices, chosen)]
        first, second = chosen[0::2], chosen[1::2]
        parts = [source.batch(singles, epoch)] if len(singles) else []
        weights = [np.ones(len(singles), dtype=np.float32)]
        if len(first):
            composite, share = interpolate(
                source.batch(first, epoch), source.batch(second, epoch), options.interpolation
            )
            parts.append(composite)
            weights.append(share)
        rows = np.concatenate(parts).astype(np.float32, copy=False)
        first_labels = np.concatenate([labels[singles], labels[first]])
        second_labels = np.concatenate([labels[singles], labels[second]])
        losses, correct = steps.mixed(rows, first_labels, second_labels, np.concatenate(weights))
        count_step(len(rows), epoch_counters)
        epoch_counters.examples_interpolated += len(chosen)
        # Only standalone rows tell an example's own loss.
        strategy.observe(
            singles, np.asarray(losses)[: len(singles)], epoch, np.asarray(correct)[: len(singles)]
        )

    def drain(epoch: int, epoch_counters: EpochCounters, minimum: int) -> None:
        while len(queue) >= max(minimum, 1):
            batch_inputs, batch_targets, batch_indices = queue.take(options.batch_size)
            losses, correct = run_train_step(batch_inputs, batch_targets, epoch_counters)
            strategy.observe(batch_indices, losses, epoch, correct)

    batch_size = options.batch_size
    bar = tqdm(
        total=options.epochs * count,
        desc=description,
        unit="ex",
        disable=not progress,
        leave=False,
    )
    clock.resume()
    try:
        for epoch in range(options.epochs):
            epoch_counters = EpochCounters(epoch=epoch)
            order = rng.permutation(count)
            mode = strategy.mode(epoch)
            for start in range(0, count, batch_size):
                indices = order[start : start + batch_size]
                batch_labels = labels[indices]
                epoch_counters.examples_scored += len(indices)
                if mode == "all":
                    if choose_variants is not None and variant_batch is not None:
                        variants = choose_variants(indices, epoch)
                        inputs = variant_batch(indices, variants)
                        epoch_counters.examples_augmented += int(np.count_nonzero(variants))
                    else:
                        inputs = source.batch(indices, epoch)
                    losses, correct = run_train_step(inputs, batch_labels, epoch_counters)
                    strategy.observe(indices, losses, epoch, correct)
                    epoch_counters.examples_selected += len(indices)
                elif mode == "interpolate":
                    run_interpolated_step(indices, epoch, epoch_counters)
                    epoch_counters.examples_selected += len(indices)
                elif mode == "score":
                    inputs = source.batch(indices, epoch)
                    scored_losses, scores = steps.score(
                        inputs.astype(np.float32, copy=False), batch_labels
                    )
                    losses, scores = np.asarray(scored_losses), np.asarray(scores)
                    counters.examples_forwarded += len(indices)
                    epoch_counters.examples_forwarded += len(indices)
                    strategy.observe(indices, losses, epoch)
                    chosen = strategy.select(indices, losses, scores, batch_labels)
                    epoch_counters.examples_selected += int(chosen.sum())
                    queue.add(inputs[chosen], batch_labels[chosen], indices[chosen])
                    drain(epoch, epoch_counters, batch_size)
                else:  # "preselect": unchosen examples cost no pass at all
                    chosen = strategy.preselect(indices)
                    epoch_counters.examples_selected += int(chosen.sum())
                    if chosen.any():
                        queue.add(
                            source.batch(indices[chosen], epoch),
                            batch_labels[chosen],
                            indices[chosen],
                        )
                    drain(epoch, epoch_counters, batch_size)
                bar.update(len(indices))
            counters.epochs.append(epoch_counters)
            counters.examples_scored += epoch_counters.examples_scored
            counters.examples_selected += epoch_counters.examples_selected
            accuracy = checkpoint()
            epoch_counters.held_out_accuracy = accuracy
            if accuracy is not None and options.patience is not None:
                if best is None or accuracy > best[0]:
                    best = (accuracy, epoch, model.get_weights())
                elif epoch - best[1] >= options.patience:
                    counters.stopped_after_epoch = epoch
                    break
        if len(queue):
            # Selected examples left over at the very end still earn their backward pass.
            drain(counters.epochs[-1].epoch, counters.epochs[-1], 1)
            last_accuracy = checkpoint()
            if best is not None and last_accuracy is not None and last_accuracy > best[0]:
                best = (last_accuracy, counters.epochs[-1].epoch, model.get_weights())
        if best is not None:
            model.set_weights(best[2])
            counters.best_epoch = best[1]
    finally:
        bar.close()
        clock.pause()
    counters.train_seconds = clock.elapsed()
    counters.train_cpu_seconds = clock.cpu_elapsed()
    return counters


class _TrainingClock:
    """A stopwatch that can be paused (validation time is not training time).

    It keeps wall time and the process's CPU time: on a shared machine, wall time depends on
    what else runs, CPU time much less.
    """

    def __init__(self) -> None:
        self._total = 0.0
        self._cpu_total = 0.0
        self._started: float | None = None
        self._cpu_started = 0.0

    def resume(self) -> None:
        if self._started is None:
            self._started = time.perf_counter()
            self._cpu_started = time.process_time()

    def pause(self) -> None:
        if self._started is not None:
            self._total += time.perf_counter() - self._started
            self._cpu_total += time.process_time() - self._cpu_started
            self._started = None

    def elapsed(self) -> float:
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self._total + running

    def cpu_elapsed(self) -> float:
        running = time.process_time() - self._cpu_started if self._started is not None else 0.0
        return self._cpu_total + running
