"""The shared-stem DAG gives the same scores as each app's full model, at the planned rates."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_runtime.dag import (
    HeadSpec,
    build_camera_dag,
    fused_heads_model,
    fused_segment_model,
    segment_model,
)
from edge_runtime.engines import compile_model
from mainstream.core.errors import ModelError

keras = pytest.importorskip("keras")
bases = pytest.importorskip("mainstream.core.bases")

CONFIG = bases.BaseConfig("mobilenet_v1", input_size=96, alpha=0.25)


def calibrated_base(images: np.ndarray) -> Any:
    return bases.calibrated_base(CONFIG, images)


def head_at(base: Any, cut_point: str, seed: int) -> Any:
    return bases.untrained_head(base, cut_point, seed, kernel_stddev=1.0)


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    images = np.random.default_rng(0).integers(0, 255, (40, 96, 96, 3), dtype=np.uint8)
    base = calibrated_base(images)
    cuts = bases.default_cut_points(CONFIG, base)
    fingerprint = bases.weights_fingerprint(base)
    plan = [
        ("no_sharing", cuts[0], 10.0),
        ("middle", cuts[4], 5.0),
        ("deep", cuts[8], 2.0),
        ("max_sharing", cuts[-1], 1.0),
    ]
    heads = [
        HeadSpec(app, cut, fps, 1, head_at(base, cut, seed), fingerprint)
        for seed, (app, cut, fps) in enumerate(plan)
    ]
    return {
        "images": images,
        "base": base,
        "cuts": cuts,
        "fingerprint": fingerprint,
        "heads": heads,
    }


def build(
    setup: dict[str, Any],
    heads: list[HeadSpec] | None = None,
    fuse: bool = False,
    fuse_segment: bool = False,
) -> Any:
    return build_camera_dag(
        camera="cam0",
        camera_fps=10.0,
        heads=heads if heads is not None else setup["heads"],
        base_model=setup["base"],
        base_fingerprint=setup["fingerprint"],
        cut_points_in_order=setup["cuts"],
        segment_model=segment_model,
        cut_shape=bases.cut_output_shape,
        compile_fn=lambda model: compile_model(model, "keras"),
        preprocess=lambda batch: bases.preprocess(CONFIG, batch),
        fuse_heads=fused_heads_model if fuse else None,
        fuse_segment=fused_segment_model if fuse_segment else None,
    )


def full_model_score(setup: dict[str, Any], head: HeadSpec, image: np.ndarray) -> float:
    """Run the app alone: base stem up to its cut, then its head, no sharing."""
    inputs = bases.preprocess(CONFIG, image[np.newaxis])
    stem, _ = bases.split_model(setup["base"], head.cut_point)
    features = inputs if stem is None else stem(inputs, training=False)
    return float(np.asarray(head.model(features, training=False))[0, 1])


def test_shared_execution_equals_separate_models(setup: dict[str, Any]) -> None:
    dag = build(setup)
    images = setup["images"][:12]
    scores = [
        score
        for index, image in enumerate(images)
        for score in dag.process(image, index, index / 10)
    ]
    heads = {head.app: head for head in setup["heads"]}
    distinct = {round(score.score, 3) for score in scores}
    assert len(distinct) > 4, "scores should vary across frames and apps"
    for score in scores:
        expected = full_model_score(setup, heads[score.app], setup["images"][score.frame_index])
        assert score.score == pytest.approx(expected, abs=1e-5)


def test_each_node_runs_at_the_rate_the_cost_model_charges(setup: dict[str, Any]) -> None:
    dag = build(setup)
    frames = len(setup["images"])
    for index, image in enumerate(setup["images"]):
        dag.process(image, index, index / 10)
    analysed = {head.spec.app: head.timing.frames for head in dag.heads()}
    assert analysed == {"no_sharing": 40, "middle": 20, "deep": 8, "max_sharing": 4}
    # Segments: the highest rate among the apps at or below them (DESIGN §3).
    rates = [(segment.end_cut, segment.timing.frames) for segment in dag.segments()]
    cuts = setup["cuts"]
    assert rates == [("input", frames), (cuts[4], 20), (cuts[8], 8), (cuts[-1], 4)]


def test_app_frames_are_a_subset_of_its_stem_frames(setup: dict[str, Any]) -> None:
    dag = build(setup)
    seen: dict[str, set[int]] = {}
    for index, image in enumerate(setup["images"]):
        for score in dag.process(image, index, index / 10):
            seen.setdefault(score.app, set()).add(score.frame_index)
    assert seen["max_sharing"] <= seen["deep"] <= seen["middle"] <= seen["no_sharing"]


def test_fused_heads_give_each_app_its_own_scores_at_its_own_rate(
    setup: dict[str, Any],
) -> None:
    """Three apps on one cut point: fused on the frames all of them analyse, alone otherwise."""
    cut, fingerprint = setup["cuts"][6], setup["fingerprint"]
    heads = [
        HeadSpec(f"app{seed}", cut, fps, 1, head_at(setup["base"], cut, 10 + seed), fingerprint)
        for seed, fps in enumerate((10.0, 5.0, 2.0))
    ]
    fused, separate = build(setup, heads, fuse=True), build(setup, heads)
    (node,) = [segment for segment in fused.segments() if segment.heads]
    assert node.fused_widths == (2, 2, 2)
    frames = setup["images"][:20]
    fused_scores = [s for i, image in enumerate(frames) for s in fused.process(image, i, i / 10)]
    separate_scores = [
        s for i, image in enumerate(frames) for s in separate.process(image, i, i / 10)
    ]
    assert [(s.app, s.frame_index) for s in fused_scores] == [
        (s.app, s.frame_index) for s in separate_scores
    ]
    for mine, theirs in zip(fused_scores, separate_scores, strict=True):
        assert mine.score == pytest.approx(theirs.score, abs=1e-5)
    assert len({round(s.score, 4) for s in fused_scores if s.frame_index == 0}) == 3
    # Only the frames that all three analyse go through the fused call.
    apps_per_frame: dict[int, int] = {}
    for score in separate_scores:
        apps_per_frame[score.frame_index] = apps_per_frame.get(score.frame_index, 0) + 1
    shared_frames = sum(count == 3 for count in apps_per_frame.values())
    assert shared_frames > 0
    assert node.fused_calls == shared_frames
    assert {head.spec.app: head.timing.frames for head in fused.heads()} == {
        "app0": 20,
        "app1": 10,
        "app2": 4,
    }


def test_heads_with_the_same_name_can_be_fused(setup: dict[str, Any]) -> None:
    """Packages name a candidate after its cut point, so apps on one cut share that name."""
    cut = setup["cuts"][6]
    models = []
    for seed in (21, 22):
        head = head_at(setup["base"], cut, seed)
        features = keras.Input(shape=head.input_shape[1:])
        models.append(keras.Model(features, head(features), name="candidate_conv_pw_7_relu"))
    fused = fused_heads_model(models)
    tensor = np.random.default_rng(3).normal(size=(2, *models[0].input_shape[1:]))
    expected = np.concatenate([np.asarray(model(tensor)) for model in models], axis=-1)
    assert np.asarray(fused(tensor)) == pytest.approx(expected, abs=1e-6)


def test_a_lone_head_is_not_fused(setup: dict[str, Any]) -> None:
    dag = build(setup, fuse=True)
    assert all(segment.fused_heads is None for segment in dag.segments())


def scores_of(dag: Any, frames: np.ndarray) -> list[Any]:
    return [s for i, image in enumerate(frames) for s in dag.process(image, i, i / 10)]


def test_the_last_segment_runs_with_its_heads_in_one_call(setup: dict[str, Any]) -> None:
    """Four apps at four cut points: the deepest segment and its app are one model, used on
    every frame that app analyses; the shallower nodes run as before."""
    fused, separate = build(setup, fuse=True, fuse_segment=True), build(setup)
    frames = setup["images"]
    fused_scores, separate_scores = scores_of(fused, frames), scores_of(separate, frames)
    assert [(s.app, s.frame_index) for s in fused_scores] == [
        (s.app, s.frame_index) for s in separate_scores
    ]
    for mine, theirs in zip(fused_scores, separate_scores, strict=True):
        assert mine.score == pytest.approx(theirs.score, abs=1e-5)
    *shallower, last = fused.segments()
    assert last.end_cut == setup["cuts"][-1]
    assert last.fused_segment_calls == 4  # max_sharing at 1 of 10 fps, 40 frames
    assert all(segment.fused_segment is None for segment in shallower)
    # The timings still count every node at its own rate, and the fused call's time is
    # shared between the segment and its head.
    assert [segment.timing.frames for segment in fused.segments()][-1] == 4
    assert {head.spec.app: head.timing.frames for head in fused.heads()} == {
        "no_sharing": 40,
        "middle": 20,
        "deep": 8,
        "max_sharing": 4,
    }
    assert sum(last.fused_shares) == pytest.approx(1.0)
    assert all(share > 0 for share in last.fused_shares)


def test_a_fused_segment_runs_only_when_every_head_is_due(setup: dict[str, Any]) -> None:
    """Three apps at 10, 5 and 2 fps after one segment: the fused model on the frames all three
    analyse, the segment and the due heads alone on the others."""
    cut, fingerprint = setup["cuts"][6], setup["fingerprint"]
    heads = [
        HeadSpec(f"app{seed}", cut, fps, 1, head_at(setup["base"], cut, 10 + seed), fingerprint)
        for seed, fps in enumerate((10.0, 5.0, 2.0))
    ]
    fused, separate = build(setup, heads, fuse=True, fuse_segment=True), build(setup, heads)
    frames = setup["images"][:20]
    fused_scores, separate_scores = scores_of(fused, frames), scores_of(separate, frames)
    for mine, theirs in zip(fused_scores, separate_scores, strict=True):
        assert (mine.app, mine.frame_index) == (theirs.app, theirs.frame_index)
        assert mine.score == pytest.approx(theirs.score, abs=1e-5)
    (_, node) = fused.segments()
    assert node.fused_segment_calls == 2  # frames 0 and 10 (2 fps: 0, 5, 10, 15; 5 fps: even)
    assert node.fused_calls == 0  # the heads alone never all run without the segment
    assert node.timing.frames == 20


def test_a_lone_app_runs_as_one_model(setup: dict[str, Any]) -> None:
    cut, fingerprint = setup["cuts"][3], setup["fingerprint"]
    head = HeadSpec("alone", cut, 10.0, 1, head_at(setup["base"], cut, 30), fingerprint)
    dag = build(setup, [head], fuse=True, fuse_segment=True)
    frames = setup["images"][:6]
    for score in scores_of(dag, frames):
        expected = full_model_score(setup, head, frames[score.frame_index])
        assert score.score == pytest.approx(expected, abs=1e-5)
    assert dag.segments()[-1].fused_segment_calls == 6


def test_mismatched_fingerprint_is_a_clear_error(setup: dict[str, Any]) -> None:
    head = setup["heads"][1]
    foreign = HeadSpec(head.app, head.cut_point, head.fps, 1, head.model, "0" * 64)
    with pytest.raises(ModelError, match="cannot be shared"):
        build(setup, [foreign])


def test_mismatched_shape_is_a_clear_error(setup: dict[str, Any]) -> None:
    wrong_cut = setup["cuts"][2]
    head = setup["heads"][1]  # built for cuts[4]
    misplaced = HeadSpec(head.app, wrong_cut, head.fps, 1, head.model, setup["fingerprint"])
    with pytest.raises(ModelError, match="expects input"):
        build(setup, [misplaced])
