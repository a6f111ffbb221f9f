import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import percentileofscore

from mainstream.core.errors import InvalidParameterError
from trainer.selective_backprop import (
    ArraySource,
    ExampleSelector,
    LossHistory,
    TrainingOptions,
    loss_percentile,
    selection_probability,
    train_model,
)

# --- the selection rule (pure) ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    history=st.lists(
        st.sampled_from([0.0, 0.1, 0.5, 0.5, 1.0, 2.0, 3.5]) | st.floats(0, 10), min_size=1
    ),
    pick=st.integers(min_value=0),
)
def test_percentile_is_scipys_rank_percentile(history: list[float], pick: int) -> None:
    loss = history[pick % len(history)]
    expected = percentileofscore(history, loss, kind="rank") / 100
    assert loss_percentile(loss, history) == pytest.approx(expected, abs=1e-12)


def test_selection_probability_is_percentile_to_the_beta() -> None:
    assert selection_probability(1.0) == 1.0
    assert selection_probability(0.5) == pytest.approx(0.125)  # default beta = 3
    assert selection_probability(0.5, beta=1) == pytest.approx(0.5)
    assert selection_probability(0.9, beta=2) == pytest.approx(0.81)
    assert selection_probability(0.0) == 0.0
    assert selection_probability(0.3, beta=0) == 1.0  # beta 0: no selectivity at all
    with pytest.raises(InvalidParameterError, match="percentile"):
        selection_probability(1.5)
    with pytest.raises(InvalidParameterError, match="beta"):
        selection_probability(0.5, beta=-1)


def test_history_keeps_only_the_last_losses() -> None:
    history = LossHistory(capacity=4)
    for loss in [100.0, 1.0, 2.0, 3.0, 4.0]:
        history.add(loss)
    assert len(history) == 4
    # 100 has been forgotten, so 4 is now the largest loss seen (0.8 if 100 were kept).
    assert history.percentile(4.0) == 1.0
    assert history.percentile(3.0) == pytest.approx(0.75)
    assert history.percentile(0.5) == 0.0
    with pytest.raises(InvalidParameterError, match="history_size"):
        LossHistory(capacity=0)


def test_largest_loss_so_far_is_always_selected() -> None:
    selector = ExampleSelector(beta=3, history_size=1024, rng=np.random.default_rng(0))
    increasing = np.arange(1.0, 200.0)
    assert selector.select(increasing).all()


def test_selection_rate_follows_percentile_cubed() -> None:
    rng = np.random.default_rng(1)
    selector = ExampleSelector(beta=3, history_size=1024, rng=rng)
    selector.record(rng.uniform(0, 1, 1024))  # a full history of uniform losses
    losses = rng.uniform(0, 1, 20_000)
    chosen = selector.select(losses)
    # Losses near the q-quantile of U(0, 1) are kept with probability about q^3.
    for low, high in [(0.2, 0.3), (0.5, 0.6), (0.85, 0.95)]:
        band = (losses > low) & (losses < high)
        expected = np.mean(((low + high) / 2) ** 3)
        assert chosen[band].mean() == pytest.approx(expected, abs=0.04)
    # Overall: E[U^3] = 1/4 of the examples get a backward pass.
    assert chosen.mean() == pytest.approx(0.25, abs=0.02)


def test_options_are_checked() -> None:
    with pytest.raises(InvalidParameterError, match="strategy"):
        TrainingOptions(strategy="sometimes")
    with pytest.raises(InvalidParameterError, match="epochs"):
        TrainingOptions(epochs=0)
    with pytest.raises(InvalidParameterError, match="learning_rate"):
        TrainingOptions(learning_rate=0)


# --- the training loop ------------------------------------------------------------------------


def easy_features(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """4x4x8 "feature maps" whose mean over channel 0 says the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count).astype(np.int32)
    features = rng.normal(0, 1, (count, 4, 4, 8)).astype(np.float32)
    features[..., 0] += np.where(labels == 1, 1.5, -1.5)[:, None, None]
    return features, labels


def head_model(seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(4, 4, 8))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    scores = keras.layers.Dense(2, activation="softmax")(pooled)
    return keras.Model(inputs, scores)


def accuracy(model, features: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(model(features)).argmax(axis=1) == labels).mean())


def test_standard_training_counts_every_example() -> None:
    features, labels = easy_features(100, seed=0)
    model = head_model()
    options = TrainingOptions(epochs=3, batch_size=16, learning_rate=0.05)
    counters = train_model(model, ArraySource(features), labels, options)
    assert counters.optimizer_steps == 3 * math.ceil(100 / 16)
    assert counters.examples_scored == counters.examples_selected == 300
    assert counters.examples_backpropagated == 300
    assert [epoch.examples_selected for epoch in counters.epochs] == [100, 100, 100]
    test_features, test_labels = easy_features(200, seed=1)
    assert accuracy(model, test_features, test_labels) > 0.9


def test_selective_backprop_filters_after_the_first_epoch() -> None:
    features, labels = easy_features(256, seed=0)
    model = head_model()
    options = TrainingOptions(
        epochs=4, batch_size=16, learning_rate=0.05, strategy="selective-backprop"
    )
    counters = train_model(model, ArraySource(features), labels, options)
    first, *later = counters.epochs
    assert first.examples_scored == first.examples_selected == 256  # unselective first epoch
    assert first.optimizer_steps == 256 // 16
    for epoch in later:
        assert epoch.examples_scored == 256
        assert 0 < epoch.examples_selected < epoch.examples_scored
    selected = sum(epoch.examples_selected for epoch in counters.epochs)
    assert counters.examples_selected == selected
    # Every selected example gets exactly one backward pass, in batches of 16 (one last
    # smaller batch may flush the queue).
    assert counters.examples_backpropagated == selected
    assert counters.optimizer_steps == math.ceil(selected / 16)
    assert counters.optimizer_steps < 4 * 256 // 16
    # Scoring passes come on top of the train steps' own forward passes.
    assert counters.examples_forwarded == 3 * 256 + selected
    test_features, test_labels = easy_features(200, seed=1)
    assert accuracy(model, test_features, test_labels) > 0.9


def test_checkpoints_track_accuracy_without_counting_evaluation_time() -> None:
    features, labels = easy_features(64, seed=0)
    model = head_model()
    calls = []

    def evaluate() -> float:
        calls.append(1)
        return accuracy(model, features, labels)

    options = TrainingOptions(epochs=2, batch_size=16, learning_rate=0.05)
    counters = train_model(
        model, ArraySource(features), labels, options, evaluate=evaluate, evaluate_every_steps=2
    )
    # Every 2 steps (4 steps per epoch) plus once per epoch.
    assert len(calls) == 4 + 2
    steps = [checkpoint.optimizer_steps for checkpoint in counters.checkpoints]
    assert steps == sorted(steps) and steps[-1] == 8
    assert all(0 <= c.validation_accuracy <= 1 for c in counters.checkpoints)
    assert counters.checkpoints[-1].train_seconds <= counters.train_seconds + 1e-9
    cpu = [checkpoint.train_cpu_seconds for checkpoint in counters.checkpoints]
    assert cpu == sorted(cpu) and 0 < cpu[-1] <= counters.train_cpu_seconds + 1e-9


def test_selective_backprop_without_warm_up_filters_from_the_first_epoch() -> None:
    features, labels = easy_features(256, seed=0)
    options = TrainingOptions(
        epochs=2,
        batch_size=16,
        learning_rate=0.05,
        strategy="selective-backprop",
        unselective_epochs=0,
    )
    counters = train_model(head_model(), ArraySource(features), labels, options)
    for epoch in counters.epochs:
        assert epoch.examples_scored == 256
        assert epoch.examples_selected < epoch.examples_scored
    # Every example was scored by a separate forward pass before its backward pass.
    assert counters.examples_forwarded == 2 * 256 + counters.examples_backpropagated


def test_labels_must_match_the_examples() -> None:
    features, labels = easy_features(10, seed=0)
    with pytest.raises(InvalidParameterError, match="labels"):
        train_model(head_model(), ArraySource(features), labels[:5], TrainingOptions())
