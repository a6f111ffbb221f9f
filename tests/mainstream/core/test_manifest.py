"""The manifest's figures: weak candidates, and the held-out counts behind the figures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mainstream.core.manifest import (
    AppInfo,
    BaseModelInfo,
    CandidateInfo,
    CorrelationEvidence,
    EventStats,
    FrameEvidence,
    Manifest,
    TrainingInfo,
    frame_evidence,
    pooled_frame_correlation,
    weak_candidates,
)
from scheduler.problem import AppSpec

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


# --- format version 2: the counts behind the figures ----------------------------------------


def test_stored_counts_win_and_a_version_1_package_gets_derived_ones() -> None:
    manifest = manifest_of(
        [(0.9, 0.05, 0.93), (0.5, 0.0, 0.9)], held_out={"nothing": 200, "train": 100}
    )
    derived = frame_evidence(manifest, manifest.candidates[0])
    assert derived == FrameEvidence(
        positive_frames=100,
        positive_fires=90,
        negative_frames=200,
        negative_fires=10,
        derived=True,
    )
    stored = FrameEvidence(
        positive_frames=80, positive_fires=40, negative_frames=300, negative_fires=0, events=9
    )
    manifest.candidates[1].evidence = stored
    assert frame_evidence(manifest, manifest.candidates[1]) is stored
    # Without class counts there is nothing to derive from.
    assert frame_evidence(manifest_of([(0.9, 0.05, 0.93)]), manifest.candidates[0]) is None


def test_counts_cannot_claim_more_fires_than_frames() -> None:
    with pytest.raises(ValidationError, match="negative_fires 5 > negative_frames 4"):
        FrameEvidence(positive_frames=1, positive_fires=1, negative_frames=4, negative_fires=5)


def test_the_scheduler_sees_the_counts_and_the_correlation_interval() -> None:
    manifest = manifest_of([(0.9, 0.05, 0.93)], held_out={"nothing": 200, "train": 100})
    manifest.event_stats.correlation_evidence = CorrelationEvidence(
        interval=(0.4, 0.6),
        level=0.9,
        source="event frames",
        identifiable=True,
        fire_fire=50,
        fire_miss=5,
        miss_fire=5,
        miss_miss=5,
        events=12,
    )
    spec = AppSpec.from_manifest(manifest, camera="door")
    assert (spec.name, spec.camera, spec.correlation_interval) == ("trains", "door", (0.4, 0.6))
    assert spec.candidates[0].evidence is not None
    assert spec.candidates[0].planned_rates(None) == (90.5 / 101, 10.5 / 201)
    # An overridden correlation is taken as given: its measured interval no longer applies.
    overridden = AppSpec.from_manifest(manifest, overrides={"correlation": 0.2})
    assert (overridden.correlation, overridden.correlation_interval) == (0.2, None)


@given(
    parts=st.lists(
        st.tuples(st.integers(1, 10_000), st.none() | st.floats(0.0, 0.95)), min_size=1, max_size=5
    )
)
def test_pooled_frame_correlation_keeps_each_parts_effective_frames(
    parts: list[tuple[int, float | None]],
) -> None:
    pooled = pooled_frame_correlation(parts)
    if all(rho is None for _, rho in parts):
        assert pooled is None
        return
    assert pooled is not None and 0.0 <= pooled <= max(rho or 0.0 for _, rho in parts) + 1e-9
    effective = sum(n * (1 - (rho or 0.0)) / (1 + (rho or 0.0)) for n, rho in parts)
    total = sum(n for n, _ in parts)
    assert total * (1 - pooled) / (1 + pooled) == pytest.approx(effective)
