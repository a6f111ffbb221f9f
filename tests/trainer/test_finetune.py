from pathlib import Path

import numpy as np
import pytest

from mainstream.core.bases import (
    BaseConfig,
    calibrated_base,
    cut_output_shape,
    preprocess,
    split_model,
    weights_fingerprint,
)
from mainstream.core.errors import InvalidParameterError
from trainer.datasets import FrameDataset
from trainer.finetune import (
    FinetuneOptions,
    VariantSource,
    augment_images,
    build_candidate,
    finetune_candidates,
    image_variants,
    load_candidate,
    per_frame_quality,
    save_candidate,
    stem_features,
    stem_fingerprint,
    warm_start_from,
)
from trainer.selective_backprop import TrainingOptions

CONFIG = BaseConfig("mobilenet_v1", input_size=96, alpha=0.25)
CUTS = ["conv_pw_10_relu", "conv_pw_13_relu"]  # a trainable suffix, and the head only


def textured_or_flat(count: int, seed: int) -> FrameDataset:
    """Easy task: event frames are noisy texture, background frames one flat grey level."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 2).astype(np.int64)
    rng.shuffle(labels)
    images = rng.integers(40, 200, (count, 96, 96, 3)).astype(np.uint8)
    for index in np.flatnonzero(labels == 0):
        images[index] = rng.integers(40, 200)
    return FrameDataset(
        images=images,
        labels=labels,
        class_names=["background", "event"],
        order=np.arange(count),
        groups=np.zeros(count, dtype=np.int64),
        fps=10.0,
    )


@pytest.fixture(scope="module")
def base():
    """A random base whose BatchNorm statistics fit the data (a stand-in for a pretrained one)."""
    import keras

    keras.utils.set_random_seed(0)
    return calibrated_base(CONFIG, textured_or_flat(32, seed=9).images)


def options(cache: bool = True, epochs: int = 3, **training: object) -> FinetuneOptions:
    settings: dict = {"epochs": epochs, "batch_size": 16, "learning_rate": 0.003, **training}
    return FinetuneOptions(training=TrainingOptions(**settings), cache=cache, progress=False)


@pytest.fixture(scope="module")
def cached_run(base):
    stems_before = {cut: stem_fingerprint(base, cut) for cut in CUTS}
    train, held_out = textured_or_flat(96, seed=1), textured_or_flat(48, seed=2)
    result = finetune_candidates(base, CONFIG, CUTS, train, held_out, "event", options())
    return result, stems_before, held_out


# --- pure helpers -----------------------------------------------------------------------------


def test_per_frame_quality() -> None:
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    predicted = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 1])
    quality = per_frame_quality(predicted, labels, positive_index=1)
    assert quality.recall == pytest.approx(3 / 4)
    assert quality.false_positive_rate == pytest.approx(2 / 6)
    assert quality.accuracy == pytest.approx(7 / 10)
    assert (quality.positive_frames, quality.negative_frames) == (4, 6)
    with pytest.raises(InvalidParameterError, match="positive class"):
        per_frame_quality(np.zeros(3), np.zeros(3), positive_index=1)


def test_augmentation_keeps_shape_and_is_reproducible() -> None:
    images = textured_or_flat(4, seed=0).images
    once = augment_images(images, np.random.default_rng(3))
    again = augment_images(images, np.random.default_rng(3))
    assert once.shape == images.shape and once.dtype == np.uint8
    np.testing.assert_array_equal(once, again)
    assert not np.array_equal(once, images)
    variants = image_variants(images, copies=2, seed=0)
    assert variants.shape == (3, *images.shape)
    np.testing.assert_array_equal(variants[0], images)  # variant 0 is the original


def test_variant_source_draws_one_variant_per_example_and_epoch() -> None:
    variants = np.stack([np.full((50, 1), value) for value in range(3)])
    source = VariantSource(variants, seed=0)
    indices = np.arange(50)
    first = source.batch(indices, epoch=0).ravel()
    assert set(first) == {0, 1, 2}
    np.testing.assert_array_equal(first, source.batch(indices, epoch=0).ravel())
    assert not np.array_equal(first, source.batch(indices, epoch=1).ravel())
    # A batch of a few indices sees the same draw as the full pass.
    np.testing.assert_array_equal(source.batch(indices[[3, 7]], epoch=0).ravel(), first[[3, 7]])


# --- models -----------------------------------------------------------------------------------


def test_one_stem_pass_gives_every_cut(base) -> None:
    images = textured_or_flat(6, seed=3).images
    features = stem_features(base, ["input", *CUTS], images, CONFIG)
    assert set(features) == set(CUTS)  # "input" needs no stem
    for cut in CUTS:
        stem, _ = split_model(base, cut)
        assert stem is not None
        expected = np.asarray(stem(preprocess(CONFIG, images), training=False))
        np.testing.assert_allclose(features[cut], expected, rtol=1e-5, atol=1e-6)


def test_stem_pass_over_augmented_variants_matches_each_cut_stem(base) -> None:
    """The cache of (variants x frames) images holds, per cut, what that cut's own stem gives."""
    variants = image_variants(textured_or_flat(4, seed=8).images, copies=2, seed=0)
    cuts = ["conv_pw_1_relu", "conv_pw_7_relu", "conv_pw_13_relu"]
    features = stem_features(base, cuts, variants, CONFIG, batch_size=5)  # batches straddle
    for cut in cuts:
        stem, _ = split_model(base, cut)
        assert stem is not None
        assert features[cut].shape == (3, 4, *cut_output_shape(base, cut))
        for variant in range(3):
            expected = np.asarray(stem(preprocess(CONFIG, variants[variant]), training=False))
            np.testing.assert_allclose(features[cut][variant], expected, rtol=1e-5, atol=1e-5)


def test_candidate_is_a_copy_of_the_suffix_with_a_new_head(base) -> None:
    import keras

    candidate = build_candidate(base, "conv_pw_10_relu", class_count=3)
    assert tuple(candidate.input_shape[1:]) == cut_output_shape(base, "conv_pw_10_relu")
    assert tuple(candidate.output_shape) == (None, 3)
    suffix_layers = {layer.name for layer in candidate.layers}
    assert {"conv_pw_11", "conv_pw_13_relu", "head_pool", "head_scores"} <= suffix_layers
    assert "conv_pw_10" not in suffix_layers  # frozen: stays in the shared stem
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in candidate.layers)
    # Its layers are copies: changing them leaves the base alone.
    before = weights_fingerprint(base)
    layer = candidate.get_layer("conv_pw_11")
    layer.set_weights([weights + 1.0 for weights in layer.get_weights()])
    assert weights_fingerprint(base) == before
    # The deepest cut specialises the head only.
    head_only = build_candidate(base, "conv_pw_13_relu", class_count=2)
    assert [layer.name for layer in head_only.layers if layer.weights] == ["head_scores"]


# --- training ---------------------------------------------------------------------------------


def test_frozen_part_of_every_candidate_is_the_base(cached_run, base) -> None:
    result, stems_before, _ = cached_run
    assert [candidate.cut_point for candidate in result.candidates] == CUTS
    for candidate in result.candidates:
        assert candidate.stem_fingerprint == stems_before[candidate.cut_point]
        assert candidate.stem_fingerprint == stem_fingerprint(base, candidate.cut_point)
    # The trainable part did change.
    trained = result.candidates[0].model.get_layer("conv_pw_11").get_weights()[0]
    original = base.get_layer("conv_pw_11").get_weights()[0]
    assert not np.array_equal(trained, original)


def test_cached_training_learns(cached_run) -> None:
    result, _, _ = cached_run
    assert result.mode == "cached" and result.stem_seconds > 0
    for candidate in result.candidates:
        assert candidate.quality.accuracy >= 0.75, candidate.cut_point
        assert candidate.counters.optimizer_steps == 3 * 96 // 16
        assert candidate.frozen_layers > 0


def test_saved_candidate_loads_safely_and_scores_like_the_trained_model(
    cached_run, base, tmp_path: Path
) -> None:
    result, _, held_out = cached_run
    images = preprocess(CONFIG, held_out.images[:8])
    for candidate in result.candidates:
        path = save_candidate(candidate.model, tmp_path / f"{candidate.cut_point}.keras")
        loaded = load_candidate(path)
        stem, _ = split_model(base, candidate.cut_point)
        assert stem is not None
        features = np.asarray(stem(images, training=False))
        np.testing.assert_allclose(
            np.asarray(loaded(features, training=False)),
            np.asarray(candidate.model(features, training=False)),
            rtol=1e-5,
            atol=1e-6,
        )
        # And the stored held-out predictions are what stem + candidate give on images.
        predicted = np.asarray(loaded(features, training=False)).argmax(axis=1)
        np.testing.assert_array_equal(predicted, candidate.held_out_predictions[:8])


@pytest.mark.slow
def test_naive_training_matches_cached_and_keeps_the_stem(cached_run, base) -> None:
    cached, stems_before, held_out = cached_run
    train = textured_or_flat(96, seed=1)
    naive = finetune_candidates(base, CONFIG, CUTS, train, held_out, "event", options(cache=False))
    assert naive.mode == "naive" and naive.stem_seconds == 0
    for slow, fast in zip(naive.candidates, cached.candidates, strict=True):
        # The naive model trains a frozen COPY of the stem; its weights must be untouched.
        assert slow.stem_fingerprint == stems_before[slow.cut_point]
        assert slow.quality.accuracy >= 0.75
        assert abs(slow.quality.accuracy - fast.quality.accuracy) <= 0.03


@pytest.mark.slow
def test_input_candidate_trains_on_images_next_to_cached_ones(base) -> None:
    """By name, "input" (nothing frozen) still works in cached mode: it trains on the images."""
    train, held_out = textured_or_flat(48, seed=10), textured_or_flat(24, seed=11)
    result = finetune_candidates(
        base, CONFIG, ["conv_pw_13_relu", "input"], train, held_out, "event", options(epochs=1)
    )
    assert [c.cut_point for c in result.candidates] == ["input", "conv_pw_13_relu"]
    full, head_only = result.candidates
    assert full.frozen_layers == 0
    assert tuple(full.model.input_shape[1:]) == (96, 96, 3)
    assert full.counters.examples_backpropagated == 48
    assert full.cpu_seconds > head_only.cpu_seconds > 0
    assert result.stem_cpu_seconds > 0 and result.cpu_seconds >= full.cpu_seconds


def test_selective_backprop_on_cached_features(base) -> None:
    train, held_out = textured_or_flat(128, seed=4), textured_or_flat(48, seed=5)
    result = finetune_candidates(
        base,
        CONFIG,
        ["conv_pw_13_relu"],
        train,
        held_out,
        "event",
        options(epochs=4, strategy="selective-backprop"),
    )
    counters = result.candidates[0].counters
    assert counters.epochs[0].examples_selected == 128
    assert counters.examples_scored == 4 * 128
    assert counters.examples_selected < counters.examples_scored
    assert counters.examples_backpropagated == counters.examples_selected
    assert result.candidates[0].quality.accuracy >= 0.75


def test_augmented_copies_are_cached_too(base) -> None:
    train, held_out = textured_or_flat(48, seed=6), textured_or_flat(32, seed=7)
    result = finetune_candidates(
        base,
        CONFIG,
        ["conv_pw_13_relu"],
        train,
        held_out,
        "event",
        FinetuneOptions(
            training=TrainingOptions(epochs=1, batch_size=16, learning_rate=0.003),
            augment_copies=2,
            progress=False,
        ),
    )
    assert result.candidates[0].counters.examples_scored == 48  # one variant per frame


def test_bad_requests_are_refused(base) -> None:
    data = textured_or_flat(16, seed=0)
    with pytest.raises(InvalidParameterError, match="positive_class"):
        finetune_candidates(base, CONFIG, CUTS, data, data, "bus", options())
    with pytest.raises(InvalidParameterError, match="freeze_points"):
        finetune_candidates(base, CONFIG, ["conv_pw_13_relu"] * 2, data, data, "event", options())
    from mainstream.core.errors import ModelError

    with pytest.raises(ModelError, match="no_such_layer"):
        finetune_candidates(base, CONFIG, ["no_such_layer"], data, data, "event", options())


def test_warm_start_copies_the_deeper_candidates_layers(base) -> None:
    deep = build_candidate(base, "conv_pw_12_relu", 2, seed=1)
    for layer in deep.layers:
        layer.set_weights([np.full(w.shape, 0.5, dtype=w.dtype) for w in layer.get_weights()])
    shallow = build_candidate(base, "conv_pw_10_relu", 2, seed=2)
    copied = warm_start_from(shallow, deep)
    deep_names = {layer.name for layer in deep.layers if layer.weights}
    assert set(copied) == deep_names and "head_scores" in copied
    for layer in shallow.layers:
        expected = 0.5 if layer.name in deep_names else None
        if expected is not None:
            assert all(np.all(w == 0.5) for w in layer.get_weights())
    # Layers between the two cuts keep the base's weights.
    between = shallow.get_layer("conv_pw_11")
    assert not np.all(between.get_weights()[0] == 0.5)


def test_warm_started_package_with_early_stop_records_it(base) -> None:
    train, held_out = textured_or_flat(64, seed=6), textured_or_flat(32, seed=7)
    warm = FinetuneOptions(
        training=TrainingOptions(epochs=4, batch_size=16, learning_rate=0.003, patience=1),
        progress=False,
        warm_start=True,
    )
    result = finetune_candidates(base, CONFIG, CUTS, train, held_out, "event", warm)
    shallow, deep = result.candidates  # network order, although the deep one trained first
    assert (shallow.cut_point, deep.cut_point) == tuple(CUTS)
    assert shallow.counters.warm_started_from == "conv_pw_13_relu"
    assert deep.counters.warm_started_from is None
    for counters in (shallow.counters, deep.counters):
        assert counters.best_epoch is not None
        accuracies = [epoch.held_out_accuracy for epoch in counters.epochs]
        assert None not in accuracies and len(accuracies) <= 4
        if counters.stopped_after_epoch is not None:
            assert len(accuracies) < 4


def test_selective_augment_on_cached_variants_one_per_transformation(base) -> None:
    train, held_out = textured_or_flat(48, seed=8), textured_or_flat(24, seed=9)
    sa = FinetuneOptions(
        training=TrainingOptions(
            epochs=2, batch_size=16, learning_rate=0.003, strategy="selective-augment"
        ),
        augment_copies=1,
        progress=False,
    )
    result = finetune_candidates(base, CONFIG, CUTS[-1:], train, held_out, "event", sa)
    epochs = result.candidates[0].counters.epochs
    assert epochs[0].examples_augmented == 0 and 0 < epochs[1].examples_augmented < 48
    variants = image_variants(train.images[:4], 1, seed=0, by_transform=True)
    assert variants.shape[0] == 4  # the original, then flip, crop, brightness
    assert np.array_equal(variants[1], train.images[:4, :, ::-1])
