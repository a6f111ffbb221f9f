"""The node's feedback loop in isolation: reading MQTT verdicts, and when marks re-plan."""

from __future__ import annotations

import pytest

from mainstream.core.errors import InvalidParameterError
from mainstream.node.feedback import AppFeedback, FeedbackConfig, parse_verdict


@pytest.mark.parametrize(
    ("payload", "verdict"),
    [("true", True), (" TRUE\n", True), ("on", True), ("false", False), ("0", False),
     ("clear", None), ("", None)],
)  # fmt: skip
def test_mqtt_payloads_read_as_verdicts(payload: str, verdict: bool | None) -> None:
    assert parse_verdict(payload) is verdict


def test_an_unknown_payload_is_refused_by_name() -> None:
    with pytest.raises(InvalidParameterError, match="true, false or clear"):
        parse_verdict("maybe")


def feedback(**fields: object) -> AppFeedback:
    values: dict[str, object] = {
        "app": "trains",
        "camera": "door",
        "counted_true": 3,
        "counted_false": 6,
        "in_force": True,
        "planned_f1": 0.81,
        "adjusted_f1": 0.61,
    }
    return AppFeedback(**(values | fields))  # type: ignore[arg-type]


def test_a_plan_is_changed_only_when_the_predicted_f1_moves_enough() -> None:
    config = FeedbackConfig(min_reviews=5, replan_delta=0.02)
    assert feedback().replan_reason(config) == (
        "feedback: 6 of 9 reviewed events false (trains on door; predicted F1 0.81 -> 0.61)"
    )
    assert feedback(adjusted_f1=0.80).replan_reason(config) is None
    assert feedback(planned_f1=None).replan_reason(config) is None
    # Marks taken back below the minimum: the plan goes back to the package's figures.
    back = feedback(in_force=False, counted_true=3, counted_false=1).replan_reason(config)
    assert back is not None and "fewer than 5: the package's figures again" in back
