"""Weak candidates: the held-out figures of a candidate that cannot detect events."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mainstream.core.manifest import (
    AppInfo,
    BaseModelInfo,
    CandidateInfo,
    EventStats,
    Manifest,
    TrainingInfo,
    weak_candidates,
)

SHA = "cd" * 32


def manifest_of(
    figures: list[tuple[float, float, float]], held_out: dict | None = None
) -> Manifest:
    """One candidate per (recall, FPR, accuracy); `held_out` class counts if given."""
    cuts = ["input", "conv_pw_3_relu", "conv_pw_7_relu", "conv_pw_13_relu"]
    return Manifest(
        app=AppInfo(name="trains", classes=["nothing", "train"], positive_class="train"),
        base_model=BaseModelInfo(
            name="mobilenet_v1",
            input_shape=(96, 96, 3),
            preprocessing="scale_-1_1",
            weights_fingerprint="ab" * 32,
        ),
        event_stats=EventStats(
            event_length_s=2, event_frequency=0.1, correlation=0.5, camera_fps=10
        ),
        candidates=[
            CandidateInfo(
                cut_point=cut,
                frozen_layers=index,
                recall=recall,
                false_positive_rate=fpr,
                accuracy=accuracy,
                file=f"candidates/{cut}.keras",
                sha256=SHA,
            )
            for index, (cut, (recall, fpr, accuracy)) in enumerate(zip(cuts, figures, strict=False))
        ],
        training=TrainingInfo(
            dataset={} if held_out is None else {"held_out": {"classes": held_out}}
        ),
    )


def test_a_majority_class_answer_is_weak_and_a_real_detector_is_not() -> None:
    manifest = manifest_of([(0.0, 0.0, 0.69), (0.9, 0.05, 0.93), (0.3, 0.3, 0.6)])
    weak = {candidate.cut_point: candidate.reason for candidate in weak_candidates(manifest)}
    assert set(weak) == {"input", "conv_pw_7_relu"}
    assert weak["input"].startswith("recall 0")
    assert "no better than chance" in weak["conv_pw_7_relu"]


def test_accuracy_is_compared_with_the_held_out_majority_share_when_known() -> None:
    figures = [(0.2, 0.05, 0.74), (0.5, 0.02, 0.85)]
    # 75 % of the held-out frames are negative: 0.74 is worse than always answering "nothing".
    weak = weak_candidates(manifest_of(figures, held_out={"nothing": 300, "train": 100}))
    assert [(candidate.cut_point, "majority class" in candidate.reason) for candidate in weak] == [
        ("input", True)
    ]
    assert weak_candidates(manifest_of(figures)) == []  # without the counts: not judged


@given(
    recall=st.floats(0, 1),
    fpr=st.floats(0, 1),
    accuracy=st.floats(0, 1),
)
def test_weak_exactly_when_recall_is_zero_or_no_better_than_the_fpr(
    recall: float, fpr: float, accuracy: float
) -> None:
    weak = weak_candidates(manifest_of([(recall, fpr, accuracy)]))
    assert bool(weak) == (recall <= 0.0 or recall <= fpr)
