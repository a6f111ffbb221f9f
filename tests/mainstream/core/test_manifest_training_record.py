"""The optional per-candidate training record: old packages' counters still load."""

from mainstream.core.manifest import CandidateInfo, TrainingRecord

CANDIDATE = {
    "cut_point": "conv_pw_13_relu",
    "frozen_layers": 80,
    "recall": 0.9,
    "false_positive_rate": 0.1,
    "accuracy": 0.9,
    "file": "candidates/conv_pw_13_relu.keras",
    "sha256": "0" * 64,
}


def test_candidates_without_a_record_or_with_the_old_counters_load() -> None:
    assert CandidateInfo.model_validate(CANDIDATE).training is None
    old = {
        "strategy": "selective-backprop",
        "examples_scored": 10,
        "examples_selected": 5,
        "optimizer_steps": 1,
        "examples_backpropagated": 5,
        "examples_forwarded": 15,
        "train_seconds": 0.5,
    }
    record = CandidateInfo.model_validate({**CANDIDATE, "training": old}).training
    assert isinstance(record, TrainingRecord)
    assert record.examples_forwarded == 15 and record.epochs == []


def test_a_record_round_trips_with_its_epochs() -> None:
    record = {
        "strategy": "stale-selective-backprop",
        "epochs": [{"epoch": 0, "forward_passes": 8, "backward_passes": 8, "selection_rate": 1}],
        "warm_started_from": "conv_pw_13_relu",
    }
    candidate = CandidateInfo.model_validate({**CANDIDATE, "training": record})
    again = CandidateInfo.model_validate_json(candidate.model_dump_json())
    assert again.training is not None and again.training.epochs[0].forward_passes == 8
    assert again.training.warm_started_from == "conv_pw_13_relu"
