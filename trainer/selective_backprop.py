"""Training loops: standard mini-batch training and Selective-Backprop.

Selective-Backprop (released form) spends backward passes only on the examples the network
still gets wrong. Every candidate example goes through a cheap forward pass; its loss is ranked
against the last ``history_size`` losses seen, and the example is kept for a backward pass with
probability ``P = percentile ** beta``. Kept examples are queued until a full fixed-size batch
is ready, which then makes one optimizer step. The first epoch keeps everything, so the loss
history reflects a network that has seen the data once before it starts filtering.

The loop works on any :class:`ExampleSource` (cached stem features or raw images), so the same
code trains a candidate on cached features and the naive full model of the benchmark.

The selection logic (:func:`selection_probability`, :class:`LossHistory`,
:class:`ExampleSelector`) is plain numpy; TensorFlow is imported only inside the loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from tqdm.auto import tqdm

from mainstream.core.errors import InvalidParameterError

if TYPE_CHECKING:
    import keras

Strategy = Literal["standard", "selective-backprop"]
STRATEGIES: tuple[str, ...] = ("standard", "selective-backprop")

DEFAULT_BETA = 3.0
DEFAULT_HISTORY_SIZE = 1024


def loss_percentile(loss: float, history: Sequence[float] | np.ndarray) -> float:
    """Where `loss` ranks among `history`, in [0, 1] (ties count half, like scipy's "rank").

    `history` is expected to already contain `loss`, so the largest loss seen ranks 1.0.
    """
    values = np.asarray(history, dtype=np.float64)
    if values.size == 0:
        return 1.0
    below = int(np.count_nonzero(values < loss))
    at_or_below = int(np.count_nonzero(values <= loss))
    # scipy.stats.percentileofscore(kind="rank"): the mean rank of the values equal to `loss`.
    tied = 1 if at_or_below > below else 0
    return (below + at_or_below + tied) / (2 * values.size)


def selection_probability(percentile: float, beta: float = DEFAULT_BETA) -> float:
    """P(backward pass) for an example whose loss sits at `percentile` (0..1): percentile^beta."""
    if not 0.0 <= percentile <= 1.0:
        raise InvalidParameterError("percentile", percentile, "a value in [0, 1]")
    if beta < 0:
        raise InvalidParameterError("beta", beta, "beta >= 0")
    return float(percentile**beta)


class LossHistory:
    """The last `capacity` losses seen, to rank new losses against (R = 1024 by default)."""

    def __init__(self, capacity: int = DEFAULT_HISTORY_SIZE) -> None:
        if capacity < 1:
            raise InvalidParameterError("history_size", capacity, "an integer >= 1")
        self._losses: deque[float] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._losses)

    def add(self, loss: float) -> None:
        self._losses.append(float(loss))

    def percentile(self, loss: float) -> float:
        return loss_percentile(loss, np.fromiter(self._losses, dtype=np.float64))


class ExampleSelector:
    """Decides, example by example, which ones get a backward pass (Selective-Backprop)."""

    def __init__(
        self,
        beta: float = DEFAULT_BETA,
        history_size: int = DEFAULT_HISTORY_SIZE,
        rng: np.random.Generator | None = None,
    ) -> None:
        if beta < 0:
            raise InvalidParameterError("beta", beta, "beta >= 0")
        self.beta = beta
        self.history = LossHistory(history_size)
        self._rng = rng if rng is not None else np.random.default_rng(0)

    def record(self, losses: np.ndarray) -> None:
        """Add losses measured without selection (the unselective first epoch)."""
        for loss in np.asarray(losses, dtype=np.float64).ravel():
            self.history.add(float(loss))

    def probabilities(self, losses: np.ndarray) -> np.ndarray:
        """Record each loss in turn and return its selection probability."""
        result = np.empty(len(losses), dtype=np.float64)
        for index, loss in enumerate(np.asarray(losses, dtype=np.float64).ravel()):
            self.history.add(float(loss))
            result[index] = selection_probability(self.history.percentile(float(loss)), self.beta)
        return result

    def select(self, losses: np.ndarray) -> np.ndarray:
        """Boolean mask of the examples chosen for the backward pass."""
        probabilities = self.probabilities(losses)
        return self._rng.random(len(probabilities)) < probabilities


@dataclass(frozen=True)
class TrainingOptions:
    """How to train one model: plain mini-batches or Selective-Backprop."""

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-3
    strategy: str = "standard"
    beta: float = DEFAULT_BETA
    history_size: int = DEFAULT_HISTORY_SIZE
    unselective_epochs: int = 1
    seed: int = 0

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
        if self.unselective_epochs < 0:
            raise InvalidParameterError(
                "unselective_epochs", self.unselective_epochs, "an integer >= 0"
            )


@dataclass
class EpochCounters:
    epoch: int
    examples_scored: int = 0
    examples_selected: int = 0
    optimizer_steps: int = 0


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

    examples_scored: examples whose loss was measured (a forward pass; for standard training
    the forward pass of the train step itself). examples_selected: examples chosen for a
    backward pass. optimizer_steps: backward passes, one per batch.
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

    def as_dict(self) -> dict[str, object]:
        return {
            "strategy": self.strategy,
            "examples_scored": self.examples_scored,
            "examples_selected": self.examples_selected,
            "optimizer_steps": self.optimizer_steps,
            "examples_backpropagated": self.examples_backpropagated,
            "examples_forwarded": self.examples_forwarded,
            "train_seconds": round(self.train_seconds, 3),
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
    train: Callable[[Any, Any], Any]
    score: Callable[[Any, Any], Any]


def _build_steps(model: keras.Model, learning_rate: float) -> _TrainingSteps:
    """Compile the forward-only scoring step and the train step for `model`.

    Both run the model with ``training=False``: BatchNorm layers use their stored statistics
    everywhere, so the frozen part stays bit-identical to the base and the trainable part
    behaves the same during training as at inference (moving statistics would not settle on
    the small datasets an app is specialised on).
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

    @tf.function(input_signature=[input_spec, label_spec])
    def train_step(inputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            scores = model(inputs, training=False)
            losses = per_example_loss(labels, tf.cast(scores, tf.float32))
            scaled = optimizer.scale_loss(tf.reduce_mean(losses))
        gradients = tape.gradient(scaled, trainable)
        optimizer.apply(gradients, trainable)
        return losses

    @tf.function(input_signature=[input_spec, label_spec])
    def score_step(inputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        scores = model(inputs, training=False)
        return per_example_loss(labels, tf.cast(scores, tf.float32))

    return _TrainingSteps(train=train_step, score=score_step)


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
    spent evaluating is not counted as training time.
    """

    labels = np.asarray(labels, dtype=np.int32)
    if len(labels) != len(source):
        raise InvalidParameterError(
            "labels", f"{len(labels)} labels", f"one label per example ({len(source)})"
        )
    if len(labels) == 0:
        raise InvalidParameterError("training set", "empty", "at least one example")
    steps = _build_steps(model, options.learning_rate)
    rng = np.random.default_rng(options.seed)
    selector = ExampleSelector(options.beta, options.history_size, rng)
    counters = TrainingCounters(strategy=options.strategy)
    pending_inputs: list[np.ndarray] = []
    pending_labels: list[np.ndarray] = []
    clock = _TrainingClock()

    def checkpoint() -> None:
        if evaluate is None:
            return
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

    def run_train_step(inputs: np.ndarray, batch_labels: np.ndarray) -> np.ndarray:
        losses = steps.train(inputs.astype(np.float32, copy=False), batch_labels).numpy()
        counters.optimizer_steps += 1
        counters.examples_backpropagated += len(batch_labels)
        counters.examples_forwarded += len(batch_labels)
        if evaluate_every_steps and counters.optimizer_steps % evaluate_every_steps == 0:
            checkpoint()
        return np.asarray(losses)

    count = len(labels)
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
            selective = (
                options.strategy == "selective-backprop" and epoch >= options.unselective_epochs
            )
            for start in range(0, count, batch_size):
                indices = order[start : start + batch_size]
                inputs = source.batch(indices, epoch)
                batch_labels = labels[indices]
                if not selective:
                    steps_before = counters.optimizer_steps
                    losses = run_train_step(inputs, batch_labels)
                    selector.record(losses)
                    epoch_counters.optimizer_steps += counters.optimizer_steps - steps_before
                    epoch_counters.examples_scored += len(indices)
                    epoch_counters.examples_selected += len(indices)
                else:
                    losses = np.asarray(
                        steps.score(inputs.astype(np.float32, copy=False), batch_labels).numpy()
                    )
                    counters.examples_forwarded += len(indices)
                    chosen = selector.select(losses)
                    epoch_counters.examples_scored += len(indices)
                    epoch_counters.examples_selected += int(chosen.sum())
                    if chosen.any():
                        pending_inputs.append(inputs[chosen])
                        pending_labels.append(batch_labels[chosen])
                    while sum(len(part) for part in pending_labels) >= batch_size:
                        batch_inputs, batch_targets = _take_batch(
                            pending_inputs, pending_labels, batch_size
                        )
                        run_train_step(batch_inputs, batch_targets)
                        epoch_counters.optimizer_steps += 1
                bar.update(len(indices))
            counters.epochs.append(epoch_counters)
            counters.examples_scored += epoch_counters.examples_scored
            counters.examples_selected += epoch_counters.examples_selected
            checkpoint()
        if pending_labels:
            # Selected examples left over at the very end still earn their backward pass.
            run_train_step(np.concatenate(pending_inputs), np.concatenate(pending_labels))
            counters.epochs[-1].optimizer_steps += 1
            checkpoint()
    finally:
        bar.close()
        clock.pause()
    counters.train_seconds = clock.elapsed()
    counters.train_cpu_seconds = clock.cpu_elapsed()
    return counters


def _take_batch(
    pending_inputs: list[np.ndarray], pending_labels: list[np.ndarray], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pop the first `batch_size` queued examples (the queue keeps the rest in order)."""
    inputs = np.concatenate(pending_inputs)
    labels = np.concatenate(pending_labels)
    pending_inputs.clear()
    pending_labels.clear()
    if len(labels) > batch_size:
        pending_inputs.append(inputs[batch_size:])
        pending_labels.append(labels[batch_size:])
    return inputs[:batch_size], labels[:batch_size]


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
