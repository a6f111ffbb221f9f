"""InterTrain selective interpolation: merge pairs of amenable samples into one composite input.

What the seed excerpt says [seed]: an epoch processes fewer inputs when a share f of samples is
merged pairwise (ideal speed-up 1 / (1 - f/2), at most 2x). Operators: RandPatch (constituents
in spatially separate regions of one input) and LinAvg (pixel-wise weighted average).
Amenability of a sample not interpolated in epoch E is judged from its loss in epoch E:
thresholds L_mid < L_incorr split the loss distribution into three regions. Region 1
(loss < L_mid; > 95 % of correct samples, < 10 % of incorrect ones) is interpolated; region 2
(correct outliers and incorrect samples between the thresholds) is not; a region-3 sample
(loss > L_incorr) whose loss increased over k = 1 consecutive epochs is interpolated for the
next epoch and then brought back.

The excerpt leaves open, so these are this module's choices:

- L_incorr = mean loss of the misclassified samples; L_mid = midpoint of the correct and the
  misclassified samples' mean losses. With no misclassified sample, L_mid = the largest
  correct loss (everything correct is region 1) and L_incorr = +inf. The paper's diagnostic
  (share of correct samples under L_mid, share of incorrect ones) is kept per epoch.
- Continuing interpolation: a region-1 sample stays interpolated for `STAY_EPOCHS` (2)
  epochs, then trains alone for one epoch so that its loss (and region) is measured again; a
  sample's loss is only taken from standalone passes, since a constituent's loss on a
  composite is not comparable.
- Constituent losses: a composite trains against both labels, weighted by each constituent's
  share (0.5 for LinAvg; the patch's share of columns for RandPatch), as mixup does. The
  paper's interference reduction (pooling each constituent's region separately, weighting
  by earlier loss) is not implemented.
- RandPatch splits the width at its middle column (aligned to the feature grid on cached
  features): constituent A on the left, B on the right. Pairs are drawn at random within a
  batch; an odd one out trains alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.strategies.base import EpochMode, EveryExample, LastLosses

STAY_EPOCHS = 2
OPERATORS: tuple[str, ...] = ("linavg", "randpatch")


@dataclass(frozen=True)
class Thresholds:
    """L_mid and L_incorr of one epoch, and the paper's diagnostic of L_mid."""

    mid: float
    incorrect: float
    correct_under_mid: float  # share of correct samples with loss < L_mid (paper: > 95 %)
    incorrect_under_mid: float  # share of misclassified ones (paper: < 10 %)


def loss_thresholds(losses: np.ndarray, correct: np.ndarray) -> Thresholds:
    """L_mid and L_incorr from one epoch's standalone losses and correctness."""
    losses = np.asarray(losses, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if not correct.any():
        return Thresholds(-np.inf, float(losses.mean()), 0.0, 0.0)
    if correct.all():
        return Thresholds(float(losses.max()) + 1e-12, np.inf, 1.0, 0.0)
    correct_mean = float(losses[correct].mean())
    incorrect_mean = float(losses[~correct].mean())
    mid = (correct_mean + incorrect_mean) / 2
    return Thresholds(
        mid=mid,
        incorrect=incorrect_mean,
        correct_under_mid=float(np.mean(losses[correct] < mid)),
        incorrect_under_mid=float(np.mean(losses[~correct] < mid)),
    )


def amenable(
    losses: np.ndarray,
    previous_losses: np.ndarray,
    thresholds: Thresholds,
) -> tuple[np.ndarray, np.ndarray]:
    """(region 1, region 3 with rising loss): the samples to interpolate next epoch."""
    losses = np.asarray(losses, dtype=np.float64)
    region1 = losses < thresholds.mid
    rising = np.asarray(previous_losses, dtype=np.float64) < losses  # k = 1 epoch
    region3 = (losses > thresholds.incorrect) & rising
    return region1, region3


def interpolate(
    first: np.ndarray, second: np.ndarray, operator: str
) -> tuple[np.ndarray, np.ndarray]:
    """Composites of `first[i]` and `second[i]`, and the first constituent's weight."""
    if operator == "linavg":
        return 0.5 * first + 0.5 * second, np.full(len(first), 0.5, dtype=np.float32)
    width = first.shape[2]
    split = width // 2
    composite = np.array(second, copy=True)
    composite[:, :, :split] = first[:, :, :split]
    return composite, np.full(len(first), split / width, dtype=np.float32)


class InterTrain(EveryExample):
    name = "intertrain"

    def __init__(self, example_count: int, operator: str, rng: np.random.Generator) -> None:
        if operator not in OPERATORS:
            raise ValueError(f"interpolation operator {operator!r}: one of {list(OPERATORS)}")
        self.operator = operator
        self.last = LastLosses(example_count)
        self.previous = np.full(example_count, np.inf)  # the loss before the last one
        self.correct = np.zeros(example_count, dtype=bool)
        self.streak = np.zeros(example_count, dtype=np.int64)  # epochs interpolated in a row
        self.planned = np.zeros(example_count, dtype=bool)
        self.thresholds: list[Thresholds] = []
        self._rng = rng
        self._epoch = -1

    def mode(self, epoch: int) -> EpochMode:
        if epoch == 0:
            return "all"
        if epoch != self._epoch:
            self._epoch = epoch
            self._plan()
        return "interpolate"

    def _plan(self) -> None:
        known = self.last.known()
        thresholds = loss_thresholds(self.last.losses[known], self.correct[known])
        self.thresholds.append(thresholds)
        region1, region3 = amenable(self.last.losses, self.previous, thresholds)
        continuing = self.planned & (self.streak < STAY_EPOCHS)
        fresh = known & ~self.planned & (region1 | region3)
        # Region-3 samples interpolate once and come back; region-1 ones stay a while.
        from_region3 = fresh & region3 & ~region1
        plan = continuing | fresh
        self.streak = np.where(plan, self.streak + 1, 0)
        self.streak[from_region3] = STAY_EPOCHS  # back to standalone after this epoch
        self.planned = plan

    def merge_mask(self, indices: np.ndarray) -> np.ndarray:
        """The samples of this batch to merge into composites this epoch."""
        return self.planned[indices]

    def observe(
        self,
        indices: np.ndarray,
        losses: np.ndarray,
        epoch: int,
        correct: np.ndarray | None = None,
    ) -> None:
        """Standalone losses only (composites are not observed)."""
        known = self.last.known()[indices]
        self.previous[indices] = np.where(known, self.last.losses[indices], np.inf)
        self.last.record(indices, losses, epoch)
        if correct is not None:
            self.correct[indices] = correct
