"""Training strategies by name: which examples each epoch spends forward and backward passes on.

One module per strategy; :data:`STRATEGY_NAMES` lists them and :func:`make_strategy` builds one.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from mainstream.core.errors import InvalidParameterError
from trainer.strategies.base import StrategyParameters, TrainingStrategy
from trainer.strategies.intertrain import InterTrain
from trainer.strategies.selective_augment import SelectiveAugment
from trainer.strategies.selective_backprop import (
    PercentileSelectiveBackprop,
    ThesisSelectiveBackprop,
)
from trainer.strategies.stale_selective_backprop import StaleSelectiveBackprop
from trainer.strategies.standard import StandardStrategy


@dataclass(frozen=True)
class TrainingSet:
    """What a strategy may need to know of the training set."""

    examples: int
    variants: int = 1  # stored variants per example (1: the originals only)
    transforms: int = 0  # transformations the augmented variants cycle through


StrategyFactory = Callable[[StrategyParameters, np.random.Generator, TrainingSet], TrainingStrategy]

_FACTORIES: dict[str, StrategyFactory] = {
    "standard": lambda parameters, rng, data: StandardStrategy(),
    "selective-backprop": lambda parameters, rng, data: PercentileSelectiveBackprop(
        parameters, rng
    ),
    "selective-backprop-thesis": lambda parameters, rng, data: ThesisSelectiveBackprop(
        parameters, rng
    ),
    "stale-selective-backprop": lambda parameters, rng, data: StaleSelectiveBackprop(
        parameters, rng, data.examples
    ),
    "selective-augment": lambda parameters, rng, data: SelectiveAugment(
        parameters, rng, data.examples, data.variants, data.transforms
    ),
    "intertrain": lambda parameters, rng, data: InterTrain(
        data.examples, parameters.interpolation, rng
    ),
}

StrategyName = Literal[
    "standard",
    "selective-backprop",
    "selective-backprop-thesis",
    "stale-selective-backprop",
    "selective-augment",
    "intertrain",
]
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)


def make_strategy(
    name: str, parameters: StrategyParameters, rng: np.random.Generator, data: TrainingSet
) -> TrainingStrategy:
    """The strategy called `name`, for the training set `data`."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise InvalidParameterError("strategy", name, f"one of {list(STRATEGY_NAMES)}")
    return factory(parameters, rng, data)


# Knobs (TrainRequest field names) that only one family of strategies reads.
_KNOB_STRATEGIES: dict[str, tuple[str, ...]] = {
    "selective_backprop_beta": ("selective-backprop", "stale-selective-backprop"),
    "selective_backprop_history": ("selective-backprop",),
    "selective_backprop_smoothing": ("selective-backprop-thesis",),
    "interpolation": ("intertrain",),
}


def check_combination(
    strategy: str, epochs: int, fields_set: Set[str], augment_copies: int | None = None
) -> None:
    """Refuse settings that cannot do what they say, with one line each.

    A selective strategy trains its first epoch on every example (the loss record needs one),
    so with one epoch it is standard training under another name; a knob of another strategy
    would be silently ignored.
    """
    if strategy != "standard" and epochs < 2:
        raise ValueError(
            f"strategy {strategy!r} needs epochs >= 2: its first epoch trains on every example"
        )
    if strategy == "selective-augment" and augment_copies is not None and augment_copies < 1:
        raise ValueError(
            "strategy 'selective-augment' needs augmented variants to choose from: "
            "augment_copies >= 1"
        )
    for knob, users in _KNOB_STRATEGIES.items():
        if knob in fields_set and strategy not in users:
            raise ValueError(f"{knob} applies to {' or '.join(users)} only, not {strategy!r}")
