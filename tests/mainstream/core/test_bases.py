"""The base-model zoo: configs, cut points, splitting, preprocessing, fingerprints, registry."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import deque
from pathlib import Path

import keras
import numpy as np
import pytest

from mainstream.core.bases import (
    INPUT_CUT,
    BaseConfig,
    base_info,
    build_base,
    copy_registered_base,
    cut_output_shape,
    default_cut_points,
    discover_cut_points,
    frozen_layer_count,
    list_registered_bases,
    load_registered_base,
    preprocess,
    preprocessing_name,
    resolve_fingerprint,
    save_base,
    save_weights_atomically,
    split_model,
    spread_cut_points,
    weights_fingerprint,
)
from mainstream.core.errors import InvalidParameterError, ModelError, NotFoundError

TINY = BaseConfig("mobilenet_v1", input_size=96, alpha=0.25)


@pytest.fixture(scope="module")
def mobilenet() -> keras.Model:
    return build_base(TINY)


def random_frames(config: BaseConfig, count: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (count, config.input_size, config.input_size, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def separates_input_from_output(model: keras.Model, removed: str) -> bool:
    """Brute force: is the output unreachable from the input once `removed` is taken out?"""
    children: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        for node in layer._inbound_nodes[:1]:
            for tensor in node.input_tensors:
                children[tensor._keras_history.operation.name].append(layer.name)
    start, goal = model.layers[0].name, model.layers[-1].name
    if removed in (start, goal):
        return True
    seen, queue = {start}, deque([start])
    while queue:
        for child in children[queue.popleft()]:
            if child != removed and child not in seen:
                seen.add(child)
                queue.append(child)
    return goal not in seen


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "vgg16"}, "name"),
        ({"name": "mobilenet_v1", "input_size": 16}, "input_size"),
        ({"name": "inception_v3", "input_size": 64}, "input_size"),
        ({"name": "mobilenet_v1", "input_size": 96.0}, "input_size"),
        ({"name": "mobilenet_v1", "alpha": 0.35}, "alpha"),
        ({"name": "mobilenet_v2", "alpha": 0.25}, "alpha"),
        ({"name": "resnet50", "alpha": 0.5}, "alpha"),
        ({"name": "resnet50", "weights": ""}, "weights"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        BaseConfig(**kwargs)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_config_messages_say_what_is_allowed() -> None:
    with pytest.raises(InvalidParameterError, match="at least 75 pixels for inception_v3"):
        BaseConfig("inception_v3", input_size=74)
    with pytest.raises(InvalidParameterError, match=r"0\.35, 0\.5, 0\.75, 1\.0, 1\.3, 1\.4"):
        BaseConfig("mobilenet_v2", alpha=0.3)
    assert BaseConfig("inception_v3", input_size=75).input_shape == (75, 75, 3)


def test_module_imports_without_tensorflow() -> None:
    code = (
        "import sys, mainstream.core.bases, mainstream.cli.train, trainer.pretrain\n"
        "heavy = {'tensorflow', 'keras', 'cv2'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    config = BaseConfig("mobilenet_v1", input_size=96, alpha=0.25, weights=str(tmp_path / "x.h5"))
    with pytest.raises(ModelError, match="does not exist"):
        build_base(config)


# --- preprocessing ---------------------------------------------------------------------------


def test_mobilenet_preprocessing_scales_to_minus_one_one() -> None:
    frames = random_frames(TINY, count=3)
    frames[0, 0, 0] = (0, 128, 255)
    scaled = preprocess(TINY, frames)
    assert scaled.dtype == np.float32
    assert scaled.shape == frames.shape
    assert scaled.min() >= -1.0 and scaled.max() <= 1.0
    np.testing.assert_allclose(scaled[0, 0, 0], [-1.0, 128 / 127.5 - 1, 1.0], rtol=0, atol=1e-7)
    expected = keras.applications.mobilenet.preprocess_input(frames.astype(np.float32))
    np.testing.assert_allclose(scaled, expected, rtol=0, atol=1e-6)
    assert preprocessing_name(TINY) == preprocessing_name(BaseConfig("inception_v3"))


def test_resnet_preprocessing_matches_keras_caffe_mode() -> None:
    config = BaseConfig("resnet50", input_size=32)
    frames = random_frames(config, count=2)
    frames[0, 0, 0] = (255, 0, 0)  # pure red: the last BGR channel
    scaled = preprocess(config, frames)
    expected = keras.applications.resnet50.preprocess_input(frames.astype(np.float32))
    np.testing.assert_allclose(scaled, expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(scaled[0, 0, 0], [-103.939, -116.779, 255 - 123.68], atol=1e-4)
    assert preprocessing_name(config) != preprocessing_name(TINY)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((1, 96, 96, 3), dtype=np.float32),
        np.zeros((96, 96, 3), dtype=np.uint8),
        np.zeros((1, 64, 64, 3), dtype=np.uint8),
        np.zeros((1, 96, 96, 1), dtype=np.uint8),
    ],
)
def test_preprocess_rejects_wrong_dtype_or_shape(images: np.ndarray) -> None:
    with pytest.raises(InvalidParameterError, match="images"):
        preprocess(TINY, images)


# --- cut points --------------------------------------------------------------------------------


def test_mobilenet_cut_points_are_every_layer_in_order(mobilenet: keras.Model) -> None:
    cuts = discover_cut_points(mobilenet)
    assert cuts[0] == INPUT_CUT
    assert cuts[-1] == "conv_pw_13_relu" == mobilenet.layers[-1].name
    assert cuts[1:] == [layer.name for layer in mobilenet.layers[1:]]  # MobileNet is a chain
    curated = default_cut_points(TINY, mobilenet)
    assert curated == [INPUT_CUT, *(f"conv_pw_{block}_relu" for block in range(1, 14))]
    assert set(curated) <= set(cuts)


def test_frozen_layer_count_and_cut_shapes(mobilenet: keras.Model) -> None:
    assert frozen_layer_count(mobilenet, INPUT_CUT) == 0
    assert frozen_layer_count(mobilenet, "conv1") == 1
    assert frozen_layer_count(mobilenet, "conv_pw_13_relu") == len(mobilenet.layers) - 1
    counts = [frozen_layer_count(mobilenet, cut) for cut in default_cut_points(TINY, mobilenet)]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert cut_output_shape(mobilenet, INPUT_CUT) == (96, 96, 3)
    assert cut_output_shape(mobilenet, "conv_pw_1_relu") == (48, 48, 16)
    assert cut_output_shape(mobilenet, "conv_pw_13_relu") == (3, 3, 256)


def test_spread_cut_points(mobilenet: keras.Model) -> None:
    curated = default_cut_points(TINY, mobilenet)
    assert spread_cut_points(TINY, mobilenet, 1) == ["conv_pw_13_relu"]
    assert spread_cut_points(TINY, mobilenet, 2) == [INPUT_CUT, "conv_pw_13_relu"]
    five = spread_cut_points(TINY, mobilenet, 5)
    assert len(five) == 5 and five[0] == INPUT_CUT and five[-1] == curated[-1]
    assert five == [cut for cut in curated if cut in five]  # a subsequence, in depth order
    assert spread_cut_points(TINY, mobilenet, 99) == curated
    with pytest.raises(InvalidParameterError, match="count"):
        spread_cut_points(TINY, mobilenet, 0)


def test_unknown_cut_point_is_rejected(mobilenet: keras.Model) -> None:
    with pytest.raises(ModelError, match="'mixed3' is not a layer"):
        split_model(mobilenet, "mixed3")


# --- splitting ---------------------------------------------------------------------------------


def test_stem_plus_suffix_reproduces_mobilenet_exactly(mobilenet: keras.Model) -> None:
    inputs = preprocess(TINY, random_frames(TINY, count=3))
    expected = mobilenet(inputs, training=False).numpy()
    for cut in [INPUT_CUT, "conv1_bn", "conv_pw_3_relu", "conv_pw_8_relu", "conv_pw_13_relu"]:
        stem, suffix = split_model(mobilenet, cut)
        assert (stem is None) == (cut == INPUT_CUT)
        middle = inputs if stem is None else stem(inputs, training=False)
        assert tuple(suffix.input.shape[1:]) == cut_output_shape(mobilenet, cut)
        assert tuple(middle.shape[1:]) == cut_output_shape(mobilenet, cut)
        np.testing.assert_array_equal(suffix(middle, training=False).numpy(), expected)


def test_suffix_structure_at_the_ends(mobilenet: keras.Model) -> None:
    _, whole = split_model(mobilenet, INPUT_CUT)
    assert len(whole.layers) == len(mobilenet.layers)
    stem, identity = split_model(mobilenet, "conv_pw_13_relu")
    assert stem is not None and len(stem.layers) == len(mobilenet.layers)
    assert identity.weights == [] and identity.input is identity.output
    # The trainer appends its head to `suffix.output`; that works for every cut.
    for suffix in (whole, identity):
        pooled = keras.layers.GlobalAveragePooling2D()(suffix.output)
        scores = keras.layers.Dense(2, activation="softmax")(pooled)
        classifier = keras.Model(suffix.input, scores)
        batch = np.zeros((1, *suffix.input.shape[1:]), dtype=np.float32)
        assert classifier(batch).shape == (1, 2)


def test_suffix_reuses_the_base_layers(mobilenet: keras.Model) -> None:
    _, suffix = split_model(mobilenet, "conv_pw_12_relu")
    base_layers = {id(layer) for layer in mobilenet.layers}
    suffix_layers = [layer for layer in suffix.layers if layer.weights]
    assert suffix_layers and all(id(layer) in base_layers for layer in suffix_layers)
    assert {layer.name for layer in suffix_layers} == {
        "conv_dw_13",
        "conv_dw_13_bn",
        "conv_pw_13",
        "conv_pw_13_bn",
    }


# --- fingerprints ----------------------------------------------------------------------------


def test_fingerprint_is_stable_and_tracks_every_weight(mobilenet: keras.Model) -> None:
    fingerprint = weights_fingerprint(mobilenet)
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0
    assert weights_fingerprint(mobilenet) == fingerprint

    twin = build_base(TINY)
    assert weights_fingerprint(twin) != fingerprint  # another random init
    twin.set_weights(mobilenet.get_weights())
    assert weights_fingerprint(twin) == fingerprint

    moving_mean = twin.get_layer("conv_pw_7_bn").moving_mean
    changed = moving_mean.numpy()
    changed[3] = np.nextafter(changed[3], np.float32(np.inf))  # the smallest possible change
    moving_mean.assign(changed)
    assert weights_fingerprint(twin) != fingerprint

    info = base_info(TINY, mobilenet)
    assert info.weights_fingerprint == fingerprint
    assert (info.name, info.input_shape, info.alpha, info.weights_source) == (
        "mobilenet_v1",
        (96, 96, 3),
        0.25,
        "none",
    )


# --- registry --------------------------------------------------------------------------------


def test_save_and_load_registered_base(mobilenet: keras.Model, tmp_path: Path) -> None:
    bases_dir = tmp_path / "bases"
    info = save_base(mobilenet, TINY, bases_dir, provenance={"note": "round trip"})
    fingerprint = info.weights_fingerprint
    assert fingerprint == weights_fingerprint(mobilenet)
    assert sorted(path.name for path in bases_dir.iterdir()) == [
        f"{fingerprint}.json",
        f"{fingerprint}.weights.h5",
    ]
    record = json.loads((bases_dir / f"{fingerprint}.json").read_text())
    assert record["config"]["alpha"] == 0.25 and record["provenance"] == {"note": "round trip"}
    assert list_registered_bases(bases_dir) == [info]
    assert save_base(mobilenet, TINY, bases_dir) == info  # registering twice is harmless

    config, loaded = load_registered_base(fingerprint, bases_dir)
    assert (config.name, config.input_size, config.alpha) == ("mobilenet_v1", 96, 0.25)
    assert weights_fingerprint(loaded) == fingerprint
    inputs = preprocess(TINY, random_frames(TINY))
    np.testing.assert_array_equal(loaded(inputs).numpy(), mobilenet(inputs).numpy())
    assert weights_fingerprint(build_base(config)) == fingerprint  # config points at the file


def test_registry_errors(mobilenet: keras.Model, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="fingerprint"):
        load_registered_base("not-a-fingerprint", tmp_path)
    with pytest.raises(NotFoundError):
        load_registered_base("0" * 64, tmp_path)

    info = save_base(mobilenet, TINY, tmp_path)
    fingerprint = info.weights_fingerprint
    # Overwrite the registered weights with another model's: same shapes, other values.
    other = build_base(TINY)
    save_weights_atomically(other, tmp_path / f"{fingerprint}.weights.h5")
    with pytest.raises(ModelError, match="corrupt or was modified"):
        load_registered_base(fingerprint, tmp_path)
    (tmp_path / f"{fingerprint}.weights.h5").unlink()
    with pytest.raises(NotFoundError, match="missing"):
        load_registered_base(fingerprint, tmp_path)


def test_a_unique_fingerprint_prefix_names_a_registered_base(
    mobilenet: keras.Model, tmp_path: Path
) -> None:
    fingerprint = save_base(mobilenet, TINY, tmp_path).weights_fingerprint
    assert resolve_fingerprint(fingerprint[:8], tmp_path) == fingerprint
    assert resolve_fingerprint(fingerprint[:12], tmp_path) == fingerprint
    assert resolve_fingerprint(fingerprint, tmp_path) == fingerprint
    with pytest.raises(InvalidParameterError, match="8 to 64"):
        resolve_fingerprint(fingerprint[:7], tmp_path)
    other = "0" * 64 if not fingerprint.startswith("0") else "f" * 64
    with pytest.raises(NotFoundError, match=f"starting with {other[:10]}"):
        resolve_fingerprint(other[:10], tmp_path)
    # A second base sharing the first 8 digits: the 8-digit prefix is now ambiguous.
    twin = fingerprint[:8] + ("0" if fingerprint[8] != "0" else "1") * 56
    record = (tmp_path / f"{fingerprint}.json").read_text()
    (tmp_path / f"{twin}.json").write_text(record)
    with pytest.raises(InvalidParameterError, match="exactly one base"):
        resolve_fingerprint(fingerprint[:8], tmp_path)
    assert resolve_fingerprint(fingerprint[:12], tmp_path) == fingerprint


def test_copying_a_registered_base_keeps_it_loadable(
    mobilenet: keras.Model, tmp_path: Path
) -> None:
    fingerprint = save_base(mobilenet, TINY, tmp_path / "a").weights_fingerprint
    assert copy_registered_base(fingerprint, tmp_path / "a", tmp_path / "b") is True
    assert copy_registered_base(fingerprint, tmp_path / "a", tmp_path / "b") is False
    assert [info.weights_fingerprint for info in list_registered_bases(tmp_path / "b")] == [
        fingerprint
    ]
    _, loaded = load_registered_base(fingerprint, tmp_path / "b")
    assert weights_fingerprint(loaded) == fingerprint


def test_weights_file_under_any_name_and_mismatch(mobilenet: keras.Model, tmp_path: Path) -> None:
    plain = tmp_path / "weights.h5"  # the name used inside M-Packages
    save_weights_atomically(mobilenet, plain)
    assert [path.name for path in tmp_path.iterdir()] == ["weights.h5"]  # no temporary left
    config = BaseConfig("mobilenet_v1", input_size=96, alpha=0.25, weights=str(plain))
    loaded = build_base(config)
    assert weights_fingerprint(loaded) == weights_fingerprint(mobilenet)
    assert base_info(config, loaded).weights_source == "file:weights.h5"
    wider = BaseConfig("mobilenet_v1", input_size=96, alpha=0.5, weights=str(plain))
    with pytest.raises(ModelError, match=r"does not fit base mobilenet_v1 .*alpha=0\.5"):
        build_base(wider)


# --- other families --------------------------------------------------------------------------

FAMILIES = {
    "mobilenet_v2": (
        BaseConfig("mobilenet_v2", input_size=32, alpha=0.35),
        ["block_1_project_BN", "block_2_add", "block_3_project_BN", "block_4_add", "out_relu"],
        ["block_4_project_BN", "block_2_expand_relu"],  # bypassed by the residual skip
    ),
    "inception_v3": (
        BaseConfig("inception_v3", input_size=75),
        [f"mixed{index}" for index in range(11)],
        ["mixed9_0", "mixed9_1", "conv2d_12"],  # concatenations / convs inside branches
    ),
    "resnet50": (
        BaseConfig("resnet50", input_size=32),
        ["conv2_block1_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"],
        ["conv2_block1_1_relu", "conv3_block2_3_bn", "conv2_block1_0_bn"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cut_points_of_residual_and_branching_bases(family: str) -> None:
    config, expected_cuts, inside_cuts = FAMILIES[family]
    model = build_base(config)
    cuts = discover_cut_points(model)
    curated = default_cut_points(config, model)
    # Names must not depend on what was built before in the process (InceptionV3 leaves most
    # layers unnamed and Keras numbers them with a process-wide counter).
    names = [layer.name for layer in model.layers[1:]]
    assert [layer.name for layer in build_base(config).layers[1:]] == names
    assert cuts[0] == curated[0] == INPUT_CUT
    assert cuts[-1] == curated[-1] == model.layers[-1].name
    assert set(expected_cuts) <= set(curated) <= set(cuts)
    assert curated == [cut for cut in cuts if cut in curated]  # same (depth) order

    # Every layer is classified right, checked by brute-force reachability.
    for layer in model.layers[1:]:
        assert (layer.name in cuts) == separates_input_from_output(model, layer.name), layer.name

    for inside in inside_cuts:
        with pytest.raises(ModelError, match="inside a branch or residual block") as caught:
            split_model(model, inside)
        nearby = [
            word.strip().strip("'") for word in str(caught.value).split(":")[-1].split(" and ")
        ]
        assert all(name in cuts for name in nearby), caught.value

    inputs = preprocess(config, random_frames(config, count=2))
    expected = model(inputs, training=False).numpy()
    for cut in spread_cut_points(config, model, 4):
        stem, suffix = split_model(model, cut)
        middle = inputs if stem is None else stem(inputs, training=False)
        np.testing.assert_allclose(suffix(middle, training=False).numpy(), expected, atol=1e-5)
