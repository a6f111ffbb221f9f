"""Selective-Augment (thesis §5, proposed work): augment the examples the network struggles with.

What the thesis proposes [seed]: augment challenging examples, scored online by a cheap measure
starting from relative loss, at a rate that follows that score (self-paced); prefer the
transformations that recently incurred higher training loss, chosen online (no search ahead of
training); tell mislabelled examples apart from hard ones instead of augmenting them.

The thesis gives no formulas. The choices below are this module's own:

- Score and rate: an example's augmentation probability is the percentile of its most recent
  training loss among all examples' most recent losses (ties at their mean rank), to the power
  `beta` (1 by default: on average half the examples are augmented). Unseen examples are not
  augmented; the first `unselective_epochs` epochs use originals only, to measure losses.
  The rate is capped at 0.8, so every example's own loss (measured on its original only: a
  variant's loss says how hard the transformation is) keeps being refreshed.
- Transformations as bandit arms: each stored variant belongs to one transformation (variant
  v >= 1 is arm (v - 1) mod T; the pipeline stores one variant per transformation per copy). An
  arm's score is the exponential moving average (weight 0.3) of the training losses its
  variants produced; the arm with the highest score is chosen, except with probability 0.2 a
  random arm (exploration). Unscored arms count as +inf, so each is tried first.
- Mislabel guard: examples in the top `review_fraction` (2 %) of last losses are neither
  augmented nor dropped: they train on the original and are counted as flagged for review.
- Lightweight: the variants are computed (and, on cached features, passed through the frozen
  stem) once before training; choosing one costs an index lookup. Every example still gets
  one forward and one backward pass per epoch, so Selective-Augment changes what is learned
  per pass, not the number of passes.
"""

from __future__ import annotations

import numpy as np

from mainstream.core.errors import InvalidParameterError
from trainer.strategies.base import EpochMode, EveryExample, LastLosses, StrategyParameters
from trainer.strategies.stale_selective_backprop import stale_probabilities

ARM_SMOOTHING = 0.3
EXPLORATION = 0.2
REVIEW_FRACTION = 0.02
MAX_RATE = 0.8


class SelectiveAugment(EveryExample):
    name = "selective-augment"

    def __init__(
        self,
        parameters: StrategyParameters,
        rng: np.random.Generator,
        example_count: int,
        variant_count: int,
        transform_count: int,
    ) -> None:
        if variant_count < 2 or transform_count < 1:
            raise InvalidParameterError(
                "strategy",
                self.name,
                "augmented variants of the training examples (augment copies >= 1)",
            )
        self.unselective_epochs = max(1, parameters.unselective_epochs)
        self.beta = parameters.augment_beta
        self.variant_count = variant_count
        self.transform_count = transform_count
        self.last = LastLosses(example_count)
        self.arm_scores = np.full(transform_count, np.inf)
        self.arm_uses = np.zeros(transform_count, dtype=np.int64)
        self._rng = rng
        self._probabilities = np.zeros(example_count)
        self._flagged = np.zeros(example_count, dtype=bool)
        self._epoch = -1
        self._chosen: dict[int, int] = {}  # example index -> variant of its latest train step

    def mode(self, epoch: int) -> EpochMode:
        if epoch >= self.unselective_epochs and epoch != self._epoch:
            self._epoch = epoch
            known = self.last.known()
            probabilities = np.minimum(stale_probabilities(self.last.losses, self.beta), MAX_RATE)
            probabilities[~known] = 0.0
            self._flagged = np.zeros_like(known)
            flagged = max(0, int(np.floor(REVIEW_FRACTION * int(known.sum()))))
            if flagged:
                order = np.argsort(np.where(known, self.last.losses, -np.inf))
                self._flagged[order[-flagged:]] = True
            probabilities[self._flagged] = 0.0
            self._probabilities = probabilities
        return "all"

    @property
    def flagged_for_review(self) -> np.ndarray:
        """Indices of the examples held back as possibly mislabelled in the current epoch."""
        return np.flatnonzero(self._flagged)

    def augment_probabilities(self, indices: np.ndarray) -> np.ndarray:
        return self._probabilities[indices]

    def choose_arm(self) -> int:
        untried = np.flatnonzero(~np.isfinite(self.arm_scores))
        if untried.size:
            return int(untried[0])
        if self._rng.random() < EXPLORATION:
            return int(self._rng.integers(self.transform_count))
        return int(np.argmax(self.arm_scores))

    def variants(self, indices: np.ndarray, epoch: int) -> np.ndarray:
        """Variant per example (0 = the original) for this epoch's train step."""
        chosen = np.zeros(len(indices), dtype=np.int64)
        if epoch < self.unselective_epochs:
            return chosen
        augment = self._rng.random(len(indices)) < self.augment_probabilities(indices)
        copies = (self.variant_count - 1) // self.transform_count
        for position in np.flatnonzero(augment):
            arm = self.choose_arm()
            copy = int(self._rng.integers(max(copies, 1)))
            chosen[position] = min(1 + copy * self.transform_count + arm, self.variant_count - 1)
        self._chosen = {int(i): int(v) for i, v in zip(indices, chosen, strict=True)}
        return chosen

    def observe(
        self,
        indices: np.ndarray,
        losses: np.ndarray,
        epoch: int,
        correct: np.ndarray | None = None,
    ) -> None:
        losses = np.asarray(losses, dtype=np.float64).ravel()
        variants = np.array([self._chosen.get(int(index), 0) for index in indices])
        original = variants == 0
        # The example's own score follows its loss on the original only: an augmented
        # variant's loss says how hard the transformation is, not the example.
        self.last.record(indices[original], losses[original], epoch)
        for variant, loss in zip(variants[~original], losses[~original], strict=True):
            arm = (int(variant) - 1) % self.transform_count
            previous = self.arm_scores[arm]
            self.arm_scores[arm] = (
                loss
                if not np.isfinite(previous)
                else (1 - ARM_SMOOTHING) * previous + ARM_SMOOTHING * loss
            )
            self.arm_uses[arm] += 1
