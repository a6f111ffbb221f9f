"""Standard mini-batch training: every example, every epoch, forward and backward."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.strategies.base import EpochMode


@dataclass
class StandardStrategy:
    name: str = "standard"

    def mode(self, epoch: int) -> EpochMode:
        return "all"

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
