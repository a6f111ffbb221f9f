"""Both inference engines compute the same function as the Keras model."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.engines import (
    OPENVINO_TOLERANCE,
    EngineOptions,
    compile_model,
    effective_precision,
    openvino_available,
)
from mainstream.core.errors import ModelError

keras = pytest.importorskip("keras")
bases = pytest.importorskip("mainstream.core.bases")

CONFIG = bases.BaseConfig("mobilenet_v1", input_size=96, alpha=0.25)


@pytest.fixture(scope="module")
def stem_and_batch() -> tuple[object, np.ndarray]:
    images = np.random.default_rng(1).integers(0, 255, (4, 96, 96, 3), dtype=np.uint8)
    model = bases.build_base(CONFIG)
    for layer in model.layers:  # realistic activations: BatchNorm statistics from the data
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    batch = bases.preprocess(CONFIG, images)
    model(batch, training=True)
    stem, _ = bases.split_model(model, "conv_pw_5_relu")
    return stem, batch


def test_keras_engine_matches_a_direct_call(stem_and_batch: tuple[object, np.ndarray]) -> None:
    stem, batch = stem_and_batch
    expected = np.asarray(stem(batch, training=False))  # type: ignore[operator]
    compiled = compile_model(stem, "keras")
    np.testing.assert_allclose(compiled(batch), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(compiled(batch[:1]), expected[:1], rtol=1e-5, atol=1e-6)
    assert float(np.abs(expected).mean()) > 1e-3  # not a degenerate all-zero comparison


@pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")
def test_openvino_engine_matches_keras_within_tolerance(
    stem_and_batch: tuple[object, np.ndarray],
) -> None:
    stem, batch = stem_and_batch
    expected = np.asarray(stem(batch, training=False))  # type: ignore[operator]
    compiled = compile_model(stem, "openvino")
    np.testing.assert_allclose(compiled(batch), expected, **OPENVINO_TOLERANCE)
    np.testing.assert_allclose(compiled(batch[:1]), expected[:1], **OPENVINO_TOLERANCE)


@pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")
def test_openvino_runs_a_segment_fused_with_its_heads(
    stem_and_batch: tuple[object, np.ndarray],
) -> None:
    """The model the runtime builds for the last segment and its apps (same-named heads)."""
    from edge_runtime.dag import fused_segment_model

    stem, batch = stem_and_batch
    heads = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        features = keras.Input(shape=stem.output_shape[1:])  # type: ignore[attr-defined]
        pooled = keras.layers.GlobalAveragePooling2D()(features)
        scores = keras.layers.Dense(2, activation="softmax")(pooled)
        heads.append(keras.Model(features, scores, name="candidate_conv_pw_5_relu"))
    fused = fused_segment_model(stem, heads)
    features = stem(batch, training=False)  # type: ignore[operator]
    expected = np.concatenate([np.asarray(head(features)) for head in heads], axis=-1)
    assert expected.shape == (len(batch), 4)
    np.testing.assert_allclose(compile_model(fused, "keras")(batch), expected, atol=1e-5)
    np.testing.assert_allclose(
        compile_model(fused, "openvino")(batch), expected, **OPENVINO_TOLERANCE
    )


def test_unknown_engine_is_a_clear_error(stem_and_batch: tuple[object, np.ndarray]) -> None:
    with pytest.raises(ModelError, match="unknown inference engine"):
        compile_model(stem_and_batch[0], "tensorrt")  # type: ignore[arg-type]


@pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")
def test_openvino_precision_is_asked_for_explicitly(
    stem_and_batch: tuple[object, np.ndarray],
) -> None:
    """f32 (the default) matches Keras; bf16/f16 run (or fall back) and stay near it."""
    stem, batch = stem_and_batch
    expected = np.asarray(stem(batch, training=False))  # type: ignore[operator]
    for precision in ("bf16", "f16"):
        compiled = compile_model(stem, "openvino", EngineOptions(precision=precision))  # type: ignore[arg-type]
        error = np.abs(compiled(batch) - expected).max()
        assert error <= 0.1 * np.abs(expected).max(), (precision, error)
    with pytest.raises(ModelError, match="unknown OpenVINO precision"):
        compile_model(stem, "openvino", EngineOptions(precision="int4"))  # type: ignore[arg-type]


def test_a_profile_is_reused_only_for_its_engine_and_precision() -> None:
    from edge_runtime.profiler import machine_description, profile_matches_machine
    from scheduler.problem import CutPoint, Profile

    def profile(**extra: str) -> Profile:
        return Profile(
            base_model="b",
            cut_points=[CutPoint(name="input", cumulative_cost=0.0)],
            total_cost=1.0,
            machine=machine_description(),
            **extra,
        )

    measured = profile(engine="openvino", precision="f32")
    assert profile_matches_machine(measured, "openvino", "f32")
    assert not profile_matches_machine(measured, "openvino", "bf16")
    assert not profile_matches_machine(measured, "keras", "f32")
    # Measured before precision was recorded: OpenVINO may have chosen bf16 by itself.
    assert not profile_matches_machine(profile(engine="openvino"), "openvino", "f32")
    # The Keras engine always runs f32, whatever the OpenVINO setting says.
    keras_profile = profile(engine="keras", precision="f32")
    assert profile_matches_machine(keras_profile, "keras", "bf16")
    assert effective_precision("keras", "bf16") == "f32"


def test_auto_picks_openvino_on_x86_when_it_imports_else_keras() -> None:
    from edge_runtime.engines import resolve_engine

    chosen = resolve_engine("auto", "f32", has_openvino=True, machine="x86_64", cores=2)
    assert (chosen.name, chosen.precision, chosen.frames_in_flight) == ("openvino", "f32", 2)
    assert chosen.reason == "auto: openvino f32, 2 frames in flight"
    assert chosen.options().streams == 2
    one_core = resolve_engine("auto", "f32", has_openvino=True, machine="x86_64", cores=1)
    assert (one_core.frames_in_flight, one_core.reason) == (1, "auto: openvino f32")
    missing = resolve_engine("auto", "f32", has_openvino=False, machine="x86_64", cores=2)
    assert (missing.name, missing.precision, missing.frames_in_flight) == ("keras", "f32", 1)
    assert missing.reason == "auto: keras f32 (openvino is not installed)"
    arm = resolve_engine("auto", "bf16", has_openvino=True, machine="aarch64")
    assert (arm.name, arm.precision) == ("keras", "f32") and "aarch64" in arm.reason
    # A forced engine is taken as set, whatever the machine has.
    forced = resolve_engine("keras", "bf16", has_openvino=True, machine="x86_64")
    assert (forced.name, forced.precision, forced.reason) == ("keras", "f32", "set: keras f32")
    pinned = resolve_engine("openvino", "bf16", frames_in_flight=1)
    assert (pinned.name, pinned.precision, pinned.reason) == (
        "openvino",
        "bf16",
        "set: openvino bf16",
    )
    with pytest.raises(ModelError, match="unknown inference engine 'tpu'"):
        resolve_engine("tpu")


def test_auto_resolves_to_openvino_where_it_is_installed() -> None:
    """The real probe of this machine, not an argument."""
    import platform

    from edge_runtime.engines import X86_MACHINES, resolve_engine

    if not openvino_available() or platform.machine().lower() not in X86_MACHINES:
        pytest.skip("openvino is not installed on an x86 machine here")
    assert resolve_engine("auto").name == "openvino"
