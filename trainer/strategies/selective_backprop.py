"""Selective-Backprop in its two named formulations.

- ``selective-backprop`` (the released code and the later paper): rank each loss among the last
  ``history_size`` (R = 1024) cross-entropy losses seen and backpropagate with probability
  ``percentile ** beta``.
- ``selective-backprop-thesis`` (thesis §4.1, Eqs. 7-8): importance is the Euclidean loss
  ``Le = sum_c (a_c - b_c)**2`` of the softmax output against the one-hot target (in [0, 2]);
  ``P = max(min(Le, 1), epsilon)``. Look-once: no loss history, the current network decides.

Both forward every example (that is the cost they cannot avoid), draft the chosen ones into
fixed-size batches and never reweight losses. The first `unselective_epochs` epochs train on
everything.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from mainstream.core.errors import InvalidParameterError
from trainer.strategies.base import (
    DEFAULT_BETA,
    DEFAULT_HISTORY_SIZE,
    DEFAULT_SMOOTHING,
    EpochMode,
    EveryExample,
    StrategyParameters,
)


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


def euclidean_loss(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Thesis Eq. 7: sum over classes of (softmax - one-hot)^2, per example, in [0, 2]."""
    scores = np.asarray(scores, dtype=np.float64)
    one_hot = np.zeros_like(scores)
    one_hot[np.arange(len(scores)), np.asarray(labels, dtype=np.int64)] = 1.0
    return np.sum((scores - one_hot) ** 2, axis=1)


def clamped_probability(euclidean: np.ndarray, smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """Thesis Eq. 8: P = max(min(Le, 1), epsilon)."""
    if not 0.0 <= smoothing < 1.0:
        raise InvalidParameterError("smoothing", smoothing, "0 <= epsilon < 1")
    return np.maximum(np.minimum(np.asarray(euclidean, dtype=np.float64), 1.0), smoothing)


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
    """Decides, example by example, which ones get a backward pass (percentile form)."""

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


class PercentileSelectiveBackprop(EveryExample):
    """The released form: P = (percentile among the last R losses)^beta."""

    name = "selective-backprop"

    def __init__(self, parameters: StrategyParameters, rng: np.random.Generator) -> None:
        self.unselective_epochs = parameters.unselective_epochs
        self.selector = ExampleSelector(parameters.beta, parameters.history_size, rng)

    def mode(self, epoch: int) -> EpochMode:
        return "all" if epoch < self.unselective_epochs else "score"

    def select(
        self, indices: np.ndarray, losses: np.ndarray, scores: np.ndarray, labels: np.ndarray
    ) -> np.ndarray:
        return self.selector.select(losses)

    def observe(
        self,
        indices: np.ndarray,
        losses: np.ndarray,
        epoch: int,
        correct: np.ndarray | None = None,
    ) -> None:
        if self.mode(epoch) == "all":
            self.selector.record(losses)


class ThesisSelectiveBackprop(EveryExample):
    """Thesis §4.1: P = max(min(Le, 1), epsilon) from the Euclidean loss, look-once."""

    name = "selective-backprop-thesis"

    def __init__(self, parameters: StrategyParameters, rng: np.random.Generator) -> None:
        if not 0.0 <= parameters.smoothing < 1.0:
            raise InvalidParameterError("smoothing", parameters.smoothing, "0 <= epsilon < 1")
        self.unselective_epochs = parameters.unselective_epochs
        self.smoothing = parameters.smoothing
        self._rng = rng

    def mode(self, epoch: int) -> EpochMode:
        return "all" if epoch < self.unselective_epochs else "score"

    def probabilities(self, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return clamped_probability(euclidean_loss(scores, labels), self.smoothing)

    def select(
        self, indices: np.ndarray, losses: np.ndarray, scores: np.ndarray, labels: np.ndarray
    ) -> np.ndarray:
        probabilities = self.probabilities(scores, labels)
        return self._rng.random(len(probabilities)) < probabilities

    def observe(
        self,
        indices: np.ndarray,
        losses: np.ndarray,
        epoch: int,
        correct: np.ndarray | None = None,
    ) -> None:
        return None  # look-once: nothing is remembered
