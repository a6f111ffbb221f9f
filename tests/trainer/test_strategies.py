"""Each strategy does what it claims: selection probabilities, passes, early stopping."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mainstream.core.errors import InvalidParameterError
from tests.trainer.test_selective_backprop import accuracy, easy_features, head_model
from trainer.finetune import VariantSource
from trainer.selective_backprop import ArraySource, TrainingOptions, train_model
from trainer.strategies import STRATEGY_NAMES, TrainingSet, check_combination, make_strategy
from trainer.strategies.intertrain import InterTrain, amenable, interpolate, loss_thresholds
from trainer.strategies.selective_augment import MAX_RATE, SelectiveAugment
from trainer.strategies.selective_backprop import (
    ExampleSelector,
    ThesisSelectiveBackprop,
    clamped_probability,
    euclidean_loss,
)
from trainer.strategies.stale_selective_backprop import stale_probabilities


def binomial_bounds(probability: float, trials: int) -> tuple[float, float]:
    """A 5-sigma band around the expected selection rate (fixed seeds: never flaky)."""
    sigma = np.sqrt(probability * (1 - probability) / trials)
    return probability - 5 * sigma, probability + 5 * sigma


# --- the thesis formulation (§4.1, Eqs. 7-8) ------------------------------------------------


def test_thesis_examples_uniform_ninety_percent_and_confident_four_point_four() -> None:
    uniform = np.full((1, 10), 0.1)
    confident = np.full((1, 10), 0.2 / 9)
    confident[0, 3] = 0.8
    assert clamped_probability(euclidean_loss(uniform, np.array([0])))[0] == pytest.approx(0.9)
    # 4.4 % needs epsilon below it; with the thesis's experimental epsilon = 0.1 it is 10 %.
    confident_loss = euclidean_loss(confident, np.array([3]))
    assert clamped_probability(confident_loss, 0.01)[0] == pytest.approx(0.0444, abs=1e-4)
    assert clamped_probability(confident_loss, 0.1)[0] == 0.1
    # Confident and right falls to the floor epsilon; confident and wrong is always chosen.
    assert clamped_probability(euclidean_loss(np.eye(10)[[3]], np.array([3])))[0] == 0.1
    assert clamped_probability(euclidean_loss(np.eye(10)[[3]], np.array([4])))[0] == 1.0


@settings(max_examples=100, deadline=None)
@given(
    logits=arrays(np.float64, (5, 4), elements=st.floats(-20, 20)),
    labels=arrays(np.int64, 5, elements=st.integers(0, 3)),
    smoothing=st.floats(0, 0.99),
)
def test_euclidean_loss_is_bounded_and_probability_clamped(logits, labels, smoothing) -> None:
    scores = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores /= scores.sum(axis=1, keepdims=True)
    loss = euclidean_loss(scores, labels)
    assert np.all((loss >= 0) & (loss <= 2 + 1e-9))
    probability = clamped_probability(loss, smoothing)
    assert np.all((probability >= smoothing) & (probability <= 1))


@pytest.mark.parametrize(
    ("confidence", "smoothing", "expected"),
    [(0.1, 0.1, 0.9), (0.8, 0.01, 0.0444), (0.8, 0.1, 0.1), (0.99, 0.1, 0.1)],
)
def test_thesis_selection_rates_match_the_stated_probabilities(
    confidence, smoothing, expected
) -> None:
    trials = 20_000
    options = TrainingOptions(strategy="selective-backprop-thesis", smoothing=smoothing)
    strategy = ThesisSelectiveBackprop(options, np.random.default_rng(7))
    scores = np.full((trials, 10), (1 - confidence) / 9)
    scores[:, 0] = confidence
    chosen = strategy.select(np.arange(trials), np.zeros(trials), scores, np.zeros(trials, int))
    low, high = binomial_bounds(expected, trials)
    assert low <= chosen.mean() <= high


# --- the released formulation: percentile^beta ---------------------------------------------


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_percentile_selection_rate_is_percentile_to_the_beta(beta) -> None:
    """Uniform losses rank at about their own value, so P(selected | loss) ~ loss^beta."""
    rng = np.random.default_rng(5)
    selector = ExampleSelector(beta=beta, history_size=1024, rng=np.random.default_rng(3))
    selector.record(rng.uniform(size=1024))
    losses = rng.uniform(size=20_000)
    chosen = selector.select(losses)
    for low_edge in (0.2, 0.5, 0.8):
        in_bin = (losses >= low_edge) & (losses < low_edge + 0.1)
        expected = float(np.mean(losses[in_bin] ** beta))
        low, high = binomial_bounds(expected, int(in_bin.sum()))
        # The ranking is against 1,024 samples, not the exact distribution: 2 points of slack.
        assert low - 0.02 <= chosen[in_bin].mean() <= high + 0.02
    assert chosen.mean() == pytest.approx(1 / (beta + 1), abs=0.02)


# --- Stale Selective-Backprop ---------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(losses=arrays(np.float64, st.integers(1, 50), elements=st.floats(0, 10)))
def test_stale_probabilities_grow_with_the_loss(losses) -> None:
    probabilities = stale_probabilities(losses, beta=2.0)
    order = np.argsort(losses, kind="stable")
    assert np.all(np.diff(probabilities[order]) >= -1e-12)
    if np.count_nonzero(losses == losses.max()) == 1:
        assert probabilities[np.argmax(losses)] == pytest.approx(1.0)


def test_stale_sb_skips_forward_passes_that_sb_spends() -> None:
    features, labels = easy_features(256, seed=0)
    runs = {}
    for name in ("selective-backprop", "stale-selective-backprop"):
        options = TrainingOptions(epochs=4, batch_size=16, learning_rate=0.05, strategy=name)
        model = head_model()
        runs[name] = (train_model(model, ArraySource(features), labels, options), model)
    sb, stale = runs["selective-backprop"][0], runs["stale-selective-backprop"][0]
    # Only the chosen examples are forwarded, once, by their own train step.
    assert stale.examples_forwarded == stale.examples_backpropagated == stale.examples_selected
    assert all(0 < epoch.selection_rate < 1 for epoch in stale.epochs[1:])
    assert sb.examples_forwarded == 3 * 256 + sb.examples_selected
    # Per selected example, SB pays a scoring pass on top of the train step; Stale-SB does not.
    assert stale.examples_forwarded / stale.examples_selected < (
        sb.examples_forwarded / sb.examples_selected
    )
    assert stale.examples_forwarded < sb.examples_forwarded
    test_features, test_labels = easy_features(200, seed=1)
    assert accuracy(runs["stale-selective-backprop"][1], test_features, test_labels) > 0.9


def test_every_strategy_trains_and_counts_per_epoch() -> None:
    features, labels = easy_features(64, seed=0)
    variants = np.stack([features, features[:, ::-1], features + 0.1, features * 0.9])
    source = VariantSource(variants, seed=0, transform_count=3)
    for name in STRATEGY_NAMES:
        options = TrainingOptions(epochs=2, batch_size=16, learning_rate=0.05, strategy=name)
        counters = train_model(head_model(), source, labels, options)
        assert counters.strategy == name
        assert [epoch.epoch for epoch in counters.epochs] == [0, 1]
        merged = sum(epoch.examples_interpolated for epoch in counters.epochs)
        assert counters.examples_backpropagated == counters.examples_selected - merged // 2
        assert sum(e.examples_forwarded for e in counters.epochs) == counters.examples_forwarded


def test_unknown_strategy_is_one_clear_line() -> None:
    with pytest.raises(InvalidParameterError, match="strategy") as error:
        make_strategy("sb", TrainingOptions(), np.random.default_rng(0), TrainingSet(10))
    assert "\n" not in str(error.value)


def test_early_stop_on_a_plateau_keeps_the_best_epoch() -> None:
    features, labels = easy_features(64, seed=0)
    scores = iter([0.5, 0.7, 0.6, 0.6, 0.9, 0.9])
    options = TrainingOptions(epochs=6, batch_size=16, learning_rate=0.05, patience=2)
    counters = train_model(
        head_model(), ArraySource(features), labels, options, evaluate=lambda: next(scores)
    )
    assert counters.stopped_after_epoch == 3
    assert counters.best_epoch == 1
    assert len(counters.epochs) == 4


@pytest.mark.parametrize(
    ("strategy", "epochs", "knobs", "message"),
    [
        ("stale-selective-backprop", 1, set(), "needs epochs >= 2"),
        ("standard", 3, {"selective_backprop_beta"}, "applies to"),
        ("selective-backprop", 3, {"selective_backprop_smoothing"}, "applies to"),
    ],
)
def test_combinations_that_make_no_sense_are_refused(strategy, epochs, knobs, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        check_combination(strategy, epochs, knobs)
    assert "\n" not in str(error.value)
    check_combination("selective-backprop-thesis", 2, {"selective_backprop_smoothing"})


def test_a_train_request_refuses_a_strategy_with_one_epoch(tmp_path) -> None:
    from pydantic import ValidationError

    from trainer.pipeline import TrainRequest

    fields = {"data": tmp_path, "positive_class": "event", "output": tmp_path / "a.mpkg"}
    with pytest.raises(ValidationError, match="needs epochs >= 2"):
        TrainRequest(**fields, strategy="selective-backprop", epochs=1)
    assert TrainRequest(**fields, strategy="stale-selective-backprop").epochs == 2


# --- Selective-Augment ------------------------------------------------------------------------


def selective_augment(count: int = 1000, transforms: int = 3, seed: int = 0) -> SelectiveAugment:
    options = TrainingOptions(strategy="selective-augment")
    return SelectiveAugment(options, np.random.default_rng(seed), count, 1 + transforms, transforms)


def test_selective_augment_augments_hard_examples_more_often() -> None:
    strategy = selective_augment()
    indices = np.arange(1000)
    hard = indices % 2 == 1
    strategy.observe(indices, np.where(hard, 2.0, 0.1) + indices * 1e-6, epoch=0)
    assert strategy.mode(0) == "all" and not strategy.variants(indices, 0).any()  # warm-up
    strategy.mode(1)
    augmented = np.zeros(1000)
    for _ in range(200):
        augmented += strategy.variants(indices, 1) > 0
    rate = augmented / 200
    flagged = np.zeros(1000, dtype=bool)
    flagged[strategy.flagged_for_review] = True
    assert flagged.sum() == 20 and hard[flagged].all()  # the top 2 % of losses
    assert rate[flagged].max() == 0  # held back for review, not augmented
    # Rate = loss percentile (beta 1), capped: easy ones ~ 0.25 on average, hard ones ~ 0.75.
    assert rate[~hard].mean() == pytest.approx(0.25, abs=0.03)
    assert rate[hard & ~flagged].mean() == pytest.approx(0.74, abs=0.04)
    assert rate.max() <= MAX_RATE + 0.1


def test_selective_augment_prefers_the_transformation_with_higher_loss() -> None:
    strategy = selective_augment(count=300)
    indices = np.arange(300)
    strategy.observe(indices, np.linspace(0.1, 2, 300), epoch=0)
    strategy.mode(1)
    for _ in range(30):
        variants = strategy.variants(indices, 1)
        # Arm 1 ("crop" in the pipeline) makes the loss high; the others leave it low.
        losses = np.where(variants == 2, 3.0, 0.2)
        strategy.observe(indices, losses, epoch=1)
    uses = strategy.arm_uses / strategy.arm_uses.sum()
    assert int(np.argmax(strategy.arm_scores)) == 1
    assert uses[1] > 0.7  # exploration keeps the others in play
    assert uses[0] > 0 and uses[2] > 0


def test_selective_augment_needs_variants() -> None:
    with pytest.raises(InvalidParameterError, match="augment"):
        SelectiveAugment(TrainingOptions(), np.random.default_rng(0), 10, 1, 0)
    with pytest.raises(ValueError, match="augment_copies >= 1"):
        check_combination("selective-augment", 3, set(), augment_copies=0)


def test_selective_augment_counts_augmented_samples_per_epoch() -> None:
    features, labels = easy_features(64, seed=0)
    variants = np.stack([features, features[:, ::-1], features + 0.1, features * 0.9])
    source = VariantSource(variants, seed=0, transform_count=3)
    options = TrainingOptions(
        epochs=3, batch_size=16, learning_rate=0.05, strategy="selective-augment"
    )
    counters = train_model(head_model(), source, labels, options)
    first, *later = counters.epochs
    assert first.examples_augmented == 0
    assert all(0 < epoch.examples_augmented < 64 for epoch in later)
    assert counters.examples_backpropagated == 3 * 64  # every example, every epoch
    assert counters.as_dict()["epochs"][1]["augmented"] == later[0].examples_augmented


# --- InterTrain -------------------------------------------------------------------------------


def test_intertrain_thresholds_split_the_loss_distribution() -> None:
    losses = np.array([0.05, 0.1, 0.2, 0.9, 1.5, 2.5, 3.0])
    correct = np.array([True, True, True, True, False, False, False])
    thresholds = loss_thresholds(losses, correct)
    assert thresholds.incorrect == pytest.approx(np.mean([1.5, 2.5, 3.0]))  # L_incorr
    assert thresholds.mid == pytest.approx((np.mean(losses[:4]) + thresholds.incorrect) / 2)
    assert thresholds.correct_under_mid == 1.0 and thresholds.incorrect_under_mid == 0.0
    previous = np.array([0.1, 0.1, 0.1, 0.5, 1.0, 3.0, 2.0])
    region1, region3 = amenable(losses, previous, thresholds)
    # Region 1: low loss; region 2 (1.5, between the thresholds) is left alone; region 3
    # (above L_incorr) only when its loss rose over the last epoch (k = 1): 3.0, not 2.5.
    assert region1.tolist() == [True, True, True, True, False, False, False]
    assert region3.tolist() == [False, False, False, False, False, False, True]


def test_intertrain_moves_samples_between_regions_as_the_paper_says() -> None:
    strategy = InterTrain(6, "linavg", np.random.default_rng(0))
    everyone = np.arange(6)
    correct = np.array([True, True, True, False, False, False])
    strategy.observe(everyone, np.array([0.1, 0.1, 0.2, 1.6, 2.0, 4.0]), 0, correct)
    assert strategy.mode(0) == "all"
    strategy.observe(everyone, np.array([0.1, 0.1, 0.2, 1.6, 2.0, 5.0]), 0, correct)
    assert strategy.mode(1) == "interpolate"
    # Low-loss samples merge; the rising region-3 sample (4.0 -> 5.0) merges for one epoch.
    assert strategy.merge_mask(everyone).tolist() == [True, True, True, False, False, True]
    # Region 2 (1.6 and 2.0: between L_mid and L_incorr) trains alone.
    # Epoch 1: sample 3 trains alone (its loss is measured); the others are interpolated.
    strategy.observe(np.array([3, 4]), np.array([1.6, 1.9]), 1, np.array([False, False]))
    strategy.mode(2)
    # Region 1 stays for a second epoch; the region-3 sample is brought back.
    assert strategy.merge_mask(everyone).tolist() == [True, True, True, False, False, False]
    strategy.observe(np.array([3, 4, 5]), np.array([1.6, 1.9, 5.0]), 2, np.array([0, 0, 0]) > 0)
    strategy.mode(3)
    # After two epochs interpolated, region-1 samples train alone once to be measured again.
    assert strategy.merge_mask(everyone)[:3].tolist() == [False, False, False]
    assert len(strategy.thresholds) == 3


def test_intertrain_operators() -> None:
    first, second = np.zeros((2, 4, 4, 1)), np.ones((2, 4, 4, 1))
    patched, share = interpolate(first, second, "randpatch")
    assert patched[:, :, :2].max() == 0 and patched[:, :, 2:].min() == 1 and share[0] == 0.5
    averaged, share = interpolate(first, second, "linavg")
    assert np.all(averaged == 0.5) and share[0] == 0.5


@pytest.mark.parametrize("operator", ["linavg", "randpatch"])
def test_intertrain_processes_fewer_inputs_and_still_learns(operator) -> None:
    features, labels = easy_features(256, seed=0)
    options = TrainingOptions(
        epochs=4, batch_size=16, learning_rate=0.05, strategy="intertrain", interpolation=operator
    )
    model = head_model()
    counters = train_model(model, ArraySource(features), labels, options)
    first, *later = counters.epochs
    assert first.examples_interpolated == 0 and first.examples_forwarded == 256
    for epoch in later:
        # Each composite row carries two examples: rows = examples - interpolated / 2.
        assert epoch.examples_forwarded == 256 - epoch.examples_interpolated // 2
    assert any(epoch.examples_interpolated > 128 for epoch in later)
    test_features, test_labels = easy_features(200, seed=1)
    assert accuracy(model, test_features, test_labels) > 0.9


def test_a_training_job_carries_the_strategy_fields_to_the_pipeline(tmp_path) -> None:
    from mainstream.core.errors import InvalidParameterError as Invalid
    from trainer.job import TrainingJobSpec

    (tmp_path / "images" / "a").mkdir(parents=True)
    spec = TrainingJobSpec(
        dataset="images",
        positive_class="a",
        strategy="intertrain",
        interpolation="randpatch",
        warm_start=True,
        patience=2,
    )
    request = spec.train_request(tmp_path, tmp_path / "out.mpkg", None, progress=False)
    assert (request.strategy, request.interpolation) == ("intertrain", "randpatch")
    assert request.warm_start and request.training_options().patience == 2
    assert TrainingJobSpec(dataset="images", positive_class="a").strategy == "standard"
    wrong = TrainingJobSpec(dataset="images", positive_class="a", interpolation="linavg")
    with pytest.raises(Invalid, match="interpolation applies to intertrain only"):
        wrong.train_request(tmp_path, tmp_path / "out.mpkg", None)
