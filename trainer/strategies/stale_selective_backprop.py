"""Stale Selective-Backprop: decide before the forward pass, from last epoch's losses.

Selective-Backprop must forward every example to learn its loss, so on a network whose forward
pass is a large share of a step it saves backward passes but not wall time. The later SB paper's
Stale-SB uses the loss an example had when it was last seen (an epoch ago) instead: the
selection probability is the percentile of that loss among all last-seen losses, to the power
beta, and an example that is not chosen costs no pass at all. Chosen examples get one forward
and backward pass (the train step), whose loss refreshes the record. Examples never seen yet
are always chosen. The first `unselective_epochs` epochs train on everything.
"""

from __future__ import annotations

import numpy as np

from trainer.strategies.base import EpochMode, LastLosses, StrategyParameters


def stale_probabilities(losses: np.ndarray, beta: float) -> np.ndarray:
    """percentile(loss among all `losses`)^beta, ties at their mean rank (vectorised)."""
    values = np.asarray(losses, dtype=np.float64)
    if values.size == 0:
        return values
    ordered = np.sort(values)
    below = np.searchsorted(ordered, values, side="left")
    at_or_below = np.searchsorted(ordered, values, side="right")
    percentile = (below + at_or_below + 1) / (2 * values.size)
    return np.clip(percentile, 0.0, 1.0) ** beta


class StaleSelectiveBackprop:
    name = "stale-selective-backprop"

    def __init__(
        self, parameters: StrategyParameters, rng: np.random.Generator, example_count: int
    ) -> None:
        self.unselective_epochs = max(1, parameters.unselective_epochs)
        self.beta = parameters.beta
        self.last = LastLosses(example_count)
        self._rng = rng
        self._epoch_probabilities: np.ndarray | None = None
        self._epoch = -1

    def mode(self, epoch: int) -> EpochMode:
        if epoch < self.unselective_epochs:
            return "all"
        if epoch != self._epoch:
            # One ranking per epoch, over the losses as they stood when the epoch began.
            self._epoch = epoch
            probabilities = stale_probabilities(self.last.losses, self.beta)
            probabilities[~self.last.known()] = 1.0
            self._epoch_probabilities = probabilities
        return "preselect"

    def probabilities(self, indices: np.ndarray) -> np.ndarray:
        if self._epoch_probabilities is None:
            return np.ones(len(indices), dtype=np.float64)
        return self._epoch_probabilities[indices]

    def select(
        self, indices: np.ndarray, losses: np.ndarray, scores: np.ndarray, labels: np.ndarray
    ) -> np.ndarray:
        return np.ones(len(indices), dtype=bool)

    def preselect(self, indices: np.ndarray) -> np.ndarray:
        return self._rng.random(len(indices)) < self.probabilities(indices)

    def observe(
        self,
        indices: np.ndarray,
        losses: np.ndarray,
        epoch: int,
        correct: np.ndarray | None = None,
    ) -> None:
        self.last.record(indices, losses, epoch)
