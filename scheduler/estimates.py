"""Per-frame figures as estimates with uncertainty, from the counts behind them (DESIGN §2, §5).

A candidate's per-frame recall and false-positive rate are proportions counted on held-out
frames; 0 false positives in 200 negative frames is not a rate of 0. Each is estimated by a
Beta posterior with the **Jeffreys prior Beta(1/2, 1/2)**:
- it is the reference (non-informative) prior for a binomial proportion, invariant under
  re-parametrisation, so it adds no opinion of ours about how good a detector is;
- its equal-tailed intervals have close to nominal frequentist coverage even for small counts
  and for counts of 0 or n (Brown, Cai and DasGupta, "Interval estimation for a binomial
  proportion", 2001, recommend it), where the uniform prior Beta(1, 1) pulls small samples
  harder towards 1/2;
- 0 fires in n frames gives the posterior mean 0.5 / (n + 1), never 0, and an upper 95 %
  limit near 1.9 / n (the "rule of three" gives 3 / n).
The scheduler plans on the posterior mean unless asked for a pessimistic quantile
(`planning.confidence`).

Held-out frames are not independent draws: a detector that fires on one frame of a passing car
tends to fire on the next one too, so its fires come in runs. A run of k fires says little more
than one fire does. The posterior therefore counts **effective frames**: the counts divided by
the *design effect* (1 + rho) / (1 - rho), the variance inflation of the mean of a two-state
Markov chain whose consecutive states have correlation rho (:func:`mainstream.core.manifest.design_effect`). With rho 0
this is the plain Jeffreys posterior; with rho 0.8, nine frames count as one.

The inter-frame correlation c of the detector's fires is the lag-1 correlation of a two-state
Markov chain at the camera rate. With a = P(fire | miss) and b = P(miss | fire), c = 1 - a - b;
a and b are counted from the transitions between consecutive frames and each gets a Jeffreys
posterior, so c's posterior comes with them. Its mean and interval are computed on a fixed
grid of posterior quantiles (deterministic, no random numbers). The event model needs c >= 0,
so negative draws (alternating fires, which a detector does not produce) count as 0.

Pure logic: numpy and scipy, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta as beta_distribution

from mainstream.core.errors import InvalidParameterError

JEFFREYS_PRIOR: tuple[float, float] = (0.5, 0.5)
CREDIBLE_LEVEL = 0.9
"""Width of every interval reported: a 90 % equal-tailed credible interval."""

THIN_EVENTS = 10
"""Fewer held-out events than this and the event-level figures rest on too few events."""
THIN_NEGATIVE_FRAMES = 1000
"""Fewer held-out negative frames than this and a false-positive rate near 0 is a guess."""

_GRID_POINTS = 200  # quantiles per transition probability: 40,000 grid points for c


@dataclass(frozen=True)
class RateEstimate:
    """A proportion estimated from `successes` of `trials`: its Beta posterior, summarised."""

    successes: int
    trials: int
    mean: float
    low: float
    high: float
    level: float
    given: bool = False  # a ratio taken as given (nothing was counted): no spread
    design_effect: float = 1.0  # frames that count as one independent frame

    @property
    def counted(self) -> float | None:
        """The plain ratio, None without trials."""
        return self.successes / self.trials if self.trials else None

    @property
    def effective_trials(self) -> float:
        """The trials as independent frames: `trials / design_effect`."""
        return self.trials / self.design_effect

    def quantile(self, probability: float) -> float:
        """The posterior's quantile (0 below the lowest count, 1 above the highest)."""
        if self.given:
            return self.mean
        if not (0.0 <= probability <= 1.0):
            raise InvalidParameterError("probability", probability, "a probability in [0, 1]")
        alpha, beta = _posterior(self.successes, self.trials, self.design_effect)
        return float(beta_distribution.ppf(probability, alpha, beta))


def given_rate(ratio: float, level: float = CREDIBLE_LEVEL) -> RateEstimate:
    """A ratio no frames were counted for (e.g. a recall no calibration clip could measure),
    taken as it is."""
    return RateEstimate(0, 0, ratio, ratio, ratio, level, given=True)


def rate_estimate(
    successes: int, trials: int, level: float = CREDIBLE_LEVEL, design_effect: float = 1.0
) -> RateEstimate:
    """The Jeffreys posterior of `successes` out of `trials`, with its `level` interval.

    `design_effect` (>= 1) divides both counts first: `trials` correlated frames hold
    `trials / design_effect` independent frames' worth of evidence (module docstring).
    As Brown, Cai and DasGupta advise, the interval's lower end is 0 when nothing was counted
    and its upper end 1 when everything was; the mean is never 0 nor 1.
    """
    _check_counts(successes, trials)
    _check_level(level)
    if not (math.isfinite(design_effect) and design_effect >= 1.0):
        raise InvalidParameterError("design_effect", design_effect, "a finite number >= 1")
    alpha, beta = _posterior(successes, trials, design_effect)
    tail = (1.0 - level) / 2.0
    return RateEstimate(
        successes=successes,
        trials=trials,
        mean=alpha / (alpha + beta),
        low=0.0 if successes == 0 else float(beta_distribution.ppf(tail, alpha, beta)),
        high=1.0 if successes == trials else float(beta_distribution.ppf(1.0 - tail, alpha, beta)),
        level=level,
        design_effect=design_effect,
    )


def planning_rates(
    recall: RateEstimate, false_positive_rate: RateEstimate, confidence: float | None
) -> tuple[float, float]:
    """The per-frame recall and FP rate a plan is made on.

    None: the posterior means. A confidence such as 0.9: the pessimistic quantiles, recall's
    lower 10 % quantile and the FP rate's upper 90 % quantile, so that with that posterior
    probability each true figure is at least as good as the one planned on.
    """
    if confidence is None:
        return recall.mean, false_positive_rate.mean
    _check_level(confidence)
    return recall.quantile(1.0 - confidence), false_positive_rate.quantile(confidence)


@dataclass(frozen=True)
class TransitionCounts:
    """Consecutive-frame pairs of a detector's fires, by (previous, next) outcome."""

    fire_fire: int = 0
    fire_miss: int = 0
    miss_fire: int = 0
    miss_miss: int = 0

    def __post_init__(self) -> None:
        for name in ("fire_fire", "fire_miss", "miss_fire", "miss_miss"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidParameterError(name, value, "a count >= 0")

    @property
    def after_fire(self) -> int:
        return self.fire_fire + self.fire_miss

    @property
    def after_miss(self) -> int:
        return self.miss_fire + self.miss_miss

    @property
    def identifiable(self) -> bool:
        """Both kinds of frame were followed by another: the data say something about c."""
        return self.after_fire > 0 and self.after_miss > 0

    def __add__(self, other: TransitionCounts) -> TransitionCounts:
        return TransitionCounts(
            self.fire_fire + other.fire_fire,
            self.fire_miss + other.fire_miss,
            self.miss_fire + other.miss_fire,
            self.miss_miss + other.miss_miss,
        )


def frame_correlation(counts: TransitionCounts) -> float | None:
    """The lag-1 correlation 1 - P(fire | miss) - P(miss | fire) of counted transitions,
    clipped to [0, 1]; None when the counts do not determine it (no fire, or no miss)."""
    if not counts.identifiable:
        return None
    lag = 1.0 - counts.miss_fire / counts.after_miss - counts.fire_miss / counts.after_fire
    return min(1.0, max(0.0, lag))


def transition_counts(fires: np.ndarray) -> TransitionCounts:
    """The transitions between consecutive entries of one run of frames (one event, say)."""
    fired = np.asarray(fires, dtype=bool)
    before, after = fired[:-1], fired[1:]
    return TransitionCounts(
        fire_fire=int(np.count_nonzero(before & after)),
        fire_miss=int(np.count_nonzero(before & ~after)),
        miss_fire=int(np.count_nonzero(~before & after)),
        miss_miss=int(np.count_nonzero(~before & ~after)),
    )


@dataclass(frozen=True)
class CorrelationPosterior:
    """The camera-rate correlation c: posterior mean and `level` interval."""

    mean: float
    low: float
    high: float
    level: float
    identifiable: bool
    # The point estimate 1 - a - b from the counted ratios (clipped to [0, 1]); None when
    # not identifiable.
    counted: float | None


def correlation_posterior(
    counts: TransitionCounts, frame_gap: int = 1, level: float = CREDIBLE_LEVEL
) -> CorrelationPosterior:
    """Posterior of the camera-rate c from transitions between frames `frame_gap` apart.

    Frames k camera frames apart have correlation c**k (the two-state chain's second
    eigenvalue to the k-th power), so the estimate of the lag-k correlation is turned into
    the camera-rate one by its k-th root; the interval's ends turn the same way.
    """
    if isinstance(frame_gap, bool) or not isinstance(frame_gap, int) or frame_gap < 1:
        raise InvalidParameterError("frame_gap", frame_gap, "an integer >= 1")
    _check_level(level)
    grid = (np.arange(_GRID_POINTS) + 0.5) / _GRID_POINTS
    fire_after_miss = beta_distribution.ppf(grid, *_posterior(counts.miss_fire, counts.after_miss))
    miss_after_fire = beta_distribution.ppf(grid, *_posterior(counts.fire_miss, counts.after_fire))
    lagged = np.clip(1.0 - fire_after_miss[:, np.newaxis] - miss_after_fire[np.newaxis, :], 0, 1)
    camera_rate = lagged.ravel() ** (1.0 / frame_gap)
    tail = (1.0 - level) / 2.0
    lag = frame_correlation(counts)
    counted = None if lag is None else float(lag ** (1.0 / frame_gap))
    return CorrelationPosterior(
        mean=float(camera_rate.mean()),
        low=float(np.quantile(camera_rate, tail)),
        high=float(np.quantile(camera_rate, 1.0 - tail)),
        level=level,
        identifiable=counts.identifiable,
        counted=counted,
    )


def _posterior(successes: int, trials: int, design_effect: float = 1.0) -> tuple[float, float]:
    return (
        JEFFREYS_PRIOR[0] + successes / design_effect,
        JEFFREYS_PRIOR[1] + (trials - successes) / design_effect,
    )


def _check_counts(successes: int, trials: int) -> None:
    for name, value in (("successes", successes), ("trials", trials)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise InvalidParameterError(name, value, "a count >= 0")
    if successes > trials:
        raise InvalidParameterError("successes", successes, f"at most trials ({trials})")


def _check_level(level: float) -> None:
    if not (isinstance(level, int | float) and math.isfinite(level) and 0.5 <= level < 1.0):
        raise InvalidParameterError("level", level, "a probability in [0.5, 1)")
