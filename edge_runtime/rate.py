"""Deterministic frame selection (DESIGN §6).

Every node of the DAG (a base segment or an app head) analyses a fraction of the frames its
parent analyses. A node at rate `f` under a parent at rate `g >= f` keeps a frame whenever its
accumulator of `f / g` crosses an integer, so over any window it keeps `f / g` of the parent's
frames, spread evenly. Because selection is nested, the frames an app analyses are always a
subset of the frames its stem computes, and a segment runs exactly at the highest rate of the
apps below it: the runtime does the work the cost model charges for, no more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mainstream.core.errors import InvalidParameterError


@dataclass
class RateAccumulator:
    """Keeps `rate / parent_rate` of the frames offered to it, evenly spaced and deterministic."""

    rate: float
    parent_rate: float
    _credit: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if not (self.parent_rate > 0):
            raise InvalidParameterError("parent_rate", self.parent_rate, "a rate > 0")
        if not (0 < self.rate <= self.parent_rate * (1 + 1e-9)):
            raise InvalidParameterError(
                "rate", self.rate, f"0 < rate <= parent rate ({self.parent_rate})"
            )
        # Start one step short of a full credit so the first offered frame is kept: a newly
        # planned app starts analysing at once instead of waiting a whole stride.
        self._credit = 1.0 - self.fraction

    @property
    def fraction(self) -> float:
        return min(1.0, self.rate / self.parent_rate)

    def offer(self) -> bool:
        """Offer one frame of the parent; True when this node should analyse it."""
        self._credit += self.fraction
        if self._credit >= 1.0 - 1e-9:
            self._credit -= 1.0
            return True
        return False
