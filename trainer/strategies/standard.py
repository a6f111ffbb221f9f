"""Standard mini-batch training: every example, every epoch, forward and backward."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.strategies.base import EpochMode, EveryExample


@dataclass
class StandardStrategy(EveryExample):
    name: str = "standard"

    def mode(self, epoch: int) -> EpochMode:
        return "all"
