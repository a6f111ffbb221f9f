"""What a training strategy decides, and the per-example loss record the selective ones share.

The training loop (:func:`trainer.selective_backprop.train_model`) asks the strategy, epoch by
epoch, how to treat each batch:

- ``"all"``: every example gets a forward and a backward pass (standard training);
- ``"score"``: every example gets a forward pass first, and :meth:`TrainingStrategy.select`
  decides from those losses which ones earn a backward pass (Selective-Backprop);
- ``"preselect"``: :meth:`TrainingStrategy.preselect` decides before any forward pass, from
  earlier losses; unchosen examples cost nothing (Stale Selective-Backprop);
- ``"interpolate"``: the strategy's `merge_mask` picks examples of each batch to merge
  pairwise into composite inputs, one pass for two examples (InterTrain).

Strategies are plain numpy: no TensorFlow here.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

EpochMode = Literal["all", "score", "preselect", "interpolate"]


class TrainingStrategy(Protocol):
    """One way of choosing which examples a training epoch spends its passes on."""

    name: str

    def mode(self, epoch: int) -> EpochMode: ...

    def select(
        self, indices: np.ndarray, losses: np.ndarray, scores: np.ndarray, labels: np.ndarray
    ) -> np.ndarray:
        """Boolean mask over `indices` after a forward pass ("score" epochs)."""
        ...

    def preselect(self, indices: np.ndarray) -> np.ndarray:
        """Boolean mask over `indices` before any forward pass ("preselect" epochs)."""
        ...

    def observe(
        self,
        indices: np.ndarray,
        losses: np.ndarray,
        epoch: int,
        correct: np.ndarray | None = None,
    ) -> None:
        """Losses measured for `indices` during `epoch` (by scoring or by a train step), and
        whether each was classified correctly (when the step knows it)."""
        ...


class AugmentingStrategy(TrainingStrategy, Protocol):
    """A strategy that also picks which stored variant of each example trains (0: original)."""

    def variants(self, indices: np.ndarray, epoch: int) -> np.ndarray: ...


class EveryExample:
    """Defaults of a strategy that chooses no examples: every one is forwarded and trained on,
    and losses are not kept. Strategies override what they choose."""

    def select(
        self, indices: np.ndarray, losses: np.ndarray, scores: np.ndarray, labels: np.ndarray
    ) -> np.ndarray:
        return np.ones(len(indices), dtype=bool)

    def preselect(self, indices: np.ndarray) -> np.ndarray:
        return np.ones(len(indices), dtype=bool)

    def observe(
        self,
        indices: np.ndarray,
        losses: np.ndarray,
        epoch: int,
        correct: np.ndarray | None = None,
    ) -> None:
        return None


class LastLosses:
    """The most recent loss of every example, and the epoch it was measured in (-1: never)."""

    def __init__(self, count: int) -> None:
        self.losses = np.zeros(count, dtype=np.float64)
        self.epochs = np.full(count, -1, dtype=np.int64)

    def record(self, indices: np.ndarray, losses: np.ndarray, epoch: int) -> None:
        self.losses[indices] = np.asarray(losses, dtype=np.float64).ravel()
        self.epochs[indices] = epoch

    def known(self) -> np.ndarray:
        return self.epochs >= 0


DEFAULT_BETA = 3.0
DEFAULT_HISTORY_SIZE = 1024
DEFAULT_SMOOTHING = 0.1  # the thesis's ε in its experiments (§4.2)


class StrategyParameters(Protocol):
    """The knobs a strategy reads (a `TrainingOptions` provides them)."""

    @property
    def beta(self) -> float: ...

    @property
    def history_size(self) -> int: ...

    @property
    def unselective_epochs(self) -> int: ...

    @property
    def smoothing(self) -> float: ...

    @property
    def augment_beta(self) -> float: ...

    @property
    def interpolation(self) -> str: ...


class InterpolatingStrategy(TrainingStrategy, Protocol):
    """A strategy that merges some examples of a batch into composites."""

    operator: str

    def merge_mask(self, indices: np.ndarray) -> np.ndarray: ...
