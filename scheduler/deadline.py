"""A point in time by which a solver must answer, so that no solve can stall.

Every solver takes a time limit; deep inside the search only the deadline travels, and each
loop asks it before doing more work. Pure logic: no I/O.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

DEFAULT_TIME_LIMIT_S = 1.0
"""How long a solve may take unless told otherwise."""


@dataclass(frozen=True)
class Deadline:
    """`time.perf_counter()` seconds by which to stop; `math.inf` never expires."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.perf_counter() + seconds)

    @classmethod
    def never(cls) -> Deadline:
        return cls(math.inf)

    def expired(self) -> bool:
        return time.perf_counter() >= self.at

    def remaining(self) -> float:
        return max(0.0, self.at - time.perf_counter())

    def share(self, fraction: float) -> Deadline:
        """An earlier deadline: `fraction` of the time left, for one step of several."""
        if math.isinf(self.at):
            return self
        return Deadline(time.perf_counter() + fraction * self.remaining())
