"""Training strategies by name: which examples each epoch spends forward and backward passes on.

One module per strategy; :data:`STRATEGY_NAMES` lists them and :func:`make_strategy` builds one.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import Literal, get_args

import numpy as np

from mainstream.core.errors import InvalidParameterError
from trainer.strategies.base import StrategyParameters, TrainingStrategy
from trainer.strategies.selective_backprop import (
    PercentileSelectiveBackprop,
    ThesisSelectiveBackprop,
)
from trainer.strategies.stale_selective_backprop import StaleSelectiveBackprop
from trainer.strategies.standard import StandardStrategy

StrategyFactory = Callable[[StrategyParameters, np.random.Generator, int], TrainingStrategy]

_FACTORIES: dict[str, StrategyFactory] = {
    "standard": lambda parameters, rng, count: StandardStrategy(),
    "selective-backprop": lambda parameters, rng, count: PercentileSelectiveBackprop(
        parameters, rng
    ),
    "selective-backprop-thesis": lambda parameters, rng, count: ThesisSelectiveBackprop(
        parameters, rng
    ),
    "stale-selective-backprop": lambda parameters, rng, count: StaleSelectiveBackprop(
        parameters, rng, count
    ),
}

StrategyName = Literal[
    "standard", "selective-backprop", "selective-backprop-thesis", "stale-selective-backprop"
]
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)


def make_strategy(
    name: str, parameters: StrategyParameters, rng: np.random.Generator, example_count: int
) -> TrainingStrategy:
    """The strategy called `name`, for a training set of `example_count` examples."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise InvalidParameterError("strategy", name, f"one of {list(STRATEGY_NAMES)}")
    return factory(parameters, rng, example_count)


# Knobs (TrainRequest field names) that only one family of strategies reads.
_KNOB_STRATEGIES: dict[str, tuple[str, ...]] = {
    "selective_backprop_beta": ("selective-backprop", "stale-selective-backprop"),
    "selective_backprop_history": ("selective-backprop",),
    "selective_backprop_smoothing": ("selective-backprop-thesis",),
}


def check_combination(strategy: str, epochs: int, fields_set: Set[str]) -> None:
    """Refuse settings that cannot do what they say, with one line each.

    A selective strategy trains its first epoch on every example (the loss record needs one),
    so with one epoch it is standard training under another name; a knob of another strategy
    would be silently ignored.
    """
    if strategy != "standard" and epochs < 2:
        raise ValueError(
            f"strategy {strategy!r} needs epochs >= 2: its first epoch trains on every example"
        )
    for knob, users in _KNOB_STRATEGIES.items():
        if knob in fields_set and strategy not in users:
            raise ValueError(f"{knob} applies to {' or '.join(users)} only, not {strategy!r}")
