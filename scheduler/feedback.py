"""Operator feedback: what marked events say about an app's precision and per-frame FPR.

An operator marks reported events true or false. Those marks are Bernoulli draws of the app's
event-level precision, so the estimate is a Beta posterior whose prior is centred on the
precision the package's figures predict for the same events, with a small pseudo-count
(`prior_strength`, 4 by default): the prediction is what the node believed before anyone
looked, but it may be badly wrong on a scene the training never saw (per-frame FPR 0 measured
on a few hundred frames), so a handful of marks must be able to overrule it, while one or two
marks must not swing the estimate to 0 or 1.

The scheduler needs a per-frame false-positive rate, not an event precision. Event precision
falls monotonically as the per-frame FPR grows (every other figure fixed), so the FPR that
makes the event model produce the posterior precision is found by bisection. Marked events may
have been reported under different options (cut point, rate, vote) as the plan changed; each
is judged under its own option, and one shift `delta` is solved for, added to every candidate's
FPR: false fires the training footage did not show (a distractor kind, lighting) hit every cut
point alike, and unlike a factor, a shift can move an FPR of 0, the case feedback most needs
to correct.

Pure logic: no I/O, no framework imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from scipy.stats import beta as beta_distribution

from mainstream.core.errors import InvalidParameterError
from scheduler.event_model import EventParams, EventQuality, event_quality
from scheduler.planner import planned_params
from scheduler.problem import AppSpec

DEFAULT_PRIOR_STRENGTH = 4.0
PRIOR_EDGE = 0.02  # the prior's centre is kept inside [PRIOR_EDGE, 1 - PRIOR_EDGE]
BISECTION_STEPS = 60


@dataclass(frozen=True)
class PrecisionPosterior:
    """Beta(alpha, beta) belief about an app's event-level precision."""

    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def interval(self, level: float = 0.9) -> tuple[float, float]:
        """The central credible interval holding `level` of the belief."""
        if not 0.0 < level < 1.0:
            raise InvalidParameterError("level", level, "0 < level < 1")
        tail = (1.0 - level) / 2.0
        low, high = beta_distribution.ppf([tail, 1.0 - tail], self.alpha, self.beta)
        return float(low), float(high)


def precision_posterior(
    predicted: float,
    true_marks: int,
    false_marks: int,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
) -> PrecisionPosterior:
    """The Beta posterior on precision after `true_marks` real and `false_marks` false events.

    The prior is Beta(s * p, s * (1 - p)) with p the predicted precision (kept a little inside
    (0, 1) so that the prior stays proper when the package predicts exactly 1) and s the
    prior strength, worth s marks.
    """
    if not 0.0 <= predicted <= 1.0:
        raise InvalidParameterError("predicted", predicted, "a precision in [0, 1]")
    if true_marks < 0 or false_marks < 0:
        raise InvalidParameterError("marks", (true_marks, false_marks), "counts >= 0")
    if not prior_strength > 0:
        raise InvalidParameterError("prior_strength", prior_strength, "a number > 0")
    centre = min(1.0 - PRIOR_EDGE, max(PRIOR_EDGE, predicted))
    return PrecisionPosterior(
        alpha=prior_strength * centre + true_marks,
        beta=prior_strength * (1.0 - centre) + false_marks,
    )


@dataclass(frozen=True)
class MarkedOption:
    """Marked events reported under one option, and the model's figures for that option
    (with the package's own per-frame FPR)."""

    params: EventParams
    events: int


def shifted(params: EventParams, shift: float) -> EventParams:
    """The option with its per-frame FPR moved by `shift`, kept within [0, 1]."""
    rate = min(1.0, max(0.0, params.false_positive_rate + shift))
    return replace(params, false_positive_rate=rate)


def mean_precision(options: Sequence[MarkedOption], shift: float = 0.0) -> float:
    """Event precision the model predicts over the marked events, each under its option."""
    total = sum(option.events for option in options)
    if total <= 0:
        raise InvalidParameterError("options", len(options), "at least one marked event")
    return (
        sum(
            option.events * event_quality(shifted(option.params, shift)).precision
            for option in options
        )
        / total
    )


def implied_shift(target_precision: float, options: Sequence[MarkedOption]) -> float:
    """The shift of every per-frame FPR that makes the model's precision over the marked
    events equal `target_precision`.

    Precision does not grow as the FPR grows, so bisection finds it. When the target lies
    beyond what any FPR in [0, 1] can give, the nearest end is returned: the smallest shift
    (every FPR 0) for a target above the model's best precision, the largest (every FPR 1)
    for one below its worst.
    """
    if not 0.0 <= target_precision <= 1.0:
        raise InvalidParameterError("target_precision", target_precision, "a precision in [0, 1]")
    low = -max(option.params.false_positive_rate for option in options)
    high = 1.0 - min(option.params.false_positive_rate for option in options)
    if mean_precision(options, low) <= target_precision:
        return low
    if mean_precision(options, high) >= target_precision:
        return high
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2.0
        if mean_precision(options, middle) > target_precision:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def false_positive_rate_for(target_precision: float, params: EventParams) -> float:
    """The per-frame FPR at which the event model gives `target_precision` for this option
    (its own FPR is ignored); 0 or 1 when no FPR reaches the target."""
    shift = implied_shift(target_precision, [MarkedOption(params, 1)])
    return shifted(params, shift).false_positive_rate


def option_params(
    app: AppSpec,
    camera_fps: float,
    cut_point: str,
    fps: float,
    x_vote: int,
    confidence: float | None = None,
) -> EventParams | None:
    """The event model's inputs for one option of an app, with the per-frame figures the
    scheduler plans on under `confidence` (None: no candidate at that cut)."""
    candidate = next((c for c in app.candidates if c.cut_point == cut_point), None)
    if candidate is None or not 0 < fps <= camera_fps * (1 + 1e-9):
        return None
    return planned_params(camera_fps, app, candidate, fps, x_vote, confidence)


def quality_with_shift(params: EventParams, shift: float) -> EventQuality:
    """Event recall, precision and F1 of an option with its per-frame FPR shifted."""
    return event_quality(shifted(params, shift))


def with_shift(app: AppSpec, shift: float) -> AppSpec:
    """The app with every candidate's planned per-frame FPR shifted (kept within [0, 1]); the
    shift applies to whatever the scheduler plans on (the posterior or the given ratio)."""
    candidates = [
        candidate.model_copy(update={"false_positive_shift": shift}) for candidate in app.candidates
    ]
    return app.model_copy(update={"candidates": candidates})
