"""The shared base-model zoo: build, preprocess, fingerprint, cut and register base CNNs.

Every app is fine-tuned from one *base*: the convolutional body of a keras.applications
network (no classifier head). Layers up to a *cut point* stay frozen and are shared between
apps as the *stem*; the layers after it (the *suffix*) plus a head are specialised per app.

A cut point is the name of a layer whose single output tensor alone separates the input from
the output: every path through the network passes through it, so the stem can hand exactly one
tensor to the suffix. `"input"` names the model input (nothing frozen); the body's last layer
(whole body frozen, only the head trained = Max-Sharing) is always the deepest cut point.

Apps may share a stem only when their bases have the same `weights_fingerprint`.

TensorFlow/Keras are imported inside the functions that need them, so that importing this
module (for `BaseConfig`, `preprocess` or the registry metadata) stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mainstream.core.errors import InvalidParameterError, ModelError, NotFoundError
from mainstream.core.manifest import BaseModelInfo, Manifest

if TYPE_CHECKING:
    import keras

INPUT_CUT = "input"
"""The cut point before the first layer: nothing frozen, the whole body is specialised."""

WEIGHTS_NONE = "none"
WEIGHTS_IMAGENET = "imagenet"

# How each family scales pixels (the keras.applications convention of the family).
PREPROCESS_SCALE_MINUS1_1 = "scale_-1_1"  # x / 127.5 - 1, RGB ("tf" mode)
PREPROCESS_CAFFE_BGR = "caffe_bgr_mean"  # RGB -> BGR, minus the ImageNet mean ("caffe" mode)

_CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


@dataclass(frozen=True)
class _Family:
    """What differs between the supported architectures."""

    keras_constructor: str
    min_input_size: int
    allowed_alphas: tuple[float, ...]
    preprocessing: str
    block_boundary_pattern: str  # curated cut points: layer names matching this regex
    has_unnamed_layers: bool = False  # keras.applications leaves most layer names to Keras


_FAMILIES: dict[str, _Family] = {
    "mobilenet_v1": _Family(
        keras_constructor="MobileNet",
        min_input_size=32,
        allowed_alphas=(0.25, 0.5, 0.75, 1.0),
        preprocessing=PREPROCESS_SCALE_MINUS1_1,
        block_boundary_pattern=r"conv_pw_\d+_relu",
    ),
    "mobilenet_v2": _Family(
        keras_constructor="MobileNetV2",
        min_input_size=32,
        allowed_alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        preprocessing=PREPROCESS_SCALE_MINUS1_1,
        # A block ends at its residual add, or at its projection when it has no residual
        # (only those projections are cut points; the others are bypassed by a skip).
        block_boundary_pattern=r"block_\d+_add|block_\d+_project_BN|expanded_conv_project_BN",
    ),
    "inception_v3": _Family(
        keras_constructor="InceptionV3",
        min_input_size=75,
        allowed_alphas=(1.0,),
        preprocessing=PREPROCESS_SCALE_MINUS1_1,
        block_boundary_pattern=r"mixed\d+",
        has_unnamed_layers=True,
    ),
    "resnet50": _Family(
        keras_constructor="ResNet50",
        min_input_size=32,
        allowed_alphas=(1.0,),
        preprocessing=PREPROCESS_CAFFE_BGR,
        block_boundary_pattern=r"pool1_pool|conv\d_block\d+_out",
    ),
}

BASE_NAMES: tuple[str, ...] = tuple(_FAMILIES)
"""The supported base architectures."""


@dataclass(frozen=True)
class BaseConfig:
    """Which base to build: architecture, input size, width multiplier and initial weights.

    `weights` is "none" (random init), "imagenet" (downloaded by Keras) or the path of a
    local weights file (`.weights.h5` written by `save_base`, or a keras.applications `.h5`).
    """

    name: str  # "mobilenet_v1" | "mobilenet_v2" | "inception_v3" | "resnet50"
    input_size: int = 224
    alpha: float = 1.0
    weights: str = WEIGHTS_NONE

    def __post_init__(self) -> None:
        if self.name not in _FAMILIES:
            raise InvalidParameterError("name", self.name, f"one of {', '.join(BASE_NAMES)}")
        family = _FAMILIES[self.name]
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int):
            raise InvalidParameterError("input_size", self.input_size, "an integer")
        if self.input_size < family.min_input_size:
            raise InvalidParameterError(
                "input_size",
                self.input_size,
                f"at least {family.min_input_size} pixels for {self.name}",
            )
        if float(self.alpha) not in family.allowed_alphas:
            allowed = ", ".join(str(alpha) for alpha in family.allowed_alphas)
            raise InvalidParameterError("alpha", self.alpha, f"one of {allowed} for {self.name}")
        if not isinstance(self.weights, str) or not self.weights.strip():
            raise InvalidParameterError(
                "weights", self.weights, "'none', 'imagenet' or the path of a weights file"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.input_size, self.input_size, 3)


# ---------------------------------------------------------------------------------------------
# Building


def build_base(config: BaseConfig) -> keras.Model:
    """Build the convolutional body of `config` (keras.applications, include_top=False)."""
    import keras  # TensorFlow loads only when a model is built or run

    family = _FAMILIES[config.name]
    constructor = getattr(keras.applications, family.keras_constructor)
    kwargs: dict[str, Any] = {"include_top": False, "input_shape": config.input_shape}
    if family.allowed_alphas != (1.0,):
        kwargs["alpha"] = float(config.alpha)

    if config.weights == WEIGHTS_IMAGENET:
        try:
            model = constructor(weights="imagenet", **kwargs)
        except Exception as error:
            raise ModelError(
                f"could not load ImageNet weights for {config.name} "
                f"(input_size={config.input_size}, alpha={config.alpha}): {_first_line(error)}. "
                "Keras downloads them on first use; offline, put the file in ~/.keras/models "
                "or pass the path of a local weights file instead of 'imagenet'"
            ) from error
    else:
        model = constructor(weights=None, **kwargs)
    if family.has_unnamed_layers:
        _canonicalise_auto_names(model)

    if config.weights not in (WEIGHTS_NONE, WEIGHTS_IMAGENET):
        _load_weights_file(model, Path(config.weights), config)
    return model


def _load_weights_file(model: keras.Model, path: Path, config: BaseConfig) -> None:
    if not path.is_file():
        raise ModelError(
            f"weights file {str(path)!r} for base {config.name} does not exist (weights are "
            "none, imagenet, a weights file, or a registered base's fingerprint of 8 or more "
            "hex digits)"
        )
    try:
        with _keras_weights_path(path) as loadable, warnings.catch_warnings():
            # Keras 3.1x warns once per layer-less container of a functional model on load.
            warnings.filterwarnings("ignore", message="Skipping nested container")
            model.load_weights(str(loadable))
    except Exception as error:
        raise ModelError(
            f"weights file {str(path)!r} does not fit base {config.name} "
            f"(input_size={config.input_size}, alpha={config.alpha}): {_first_line(error)}"
        ) from error


def _first_line(error: BaseException, limit: int = 300) -> str:
    """Keras errors can embed whole weight tensors; keep the part a person reads."""
    text = str(error).strip()
    line = text.splitlines()[0].rstrip(":") if text else type(error).__name__
    return line if len(line) <= limit else line[:limit] + "..."


@contextlib.contextmanager
def _keras_weights_path(path: Path) -> Iterator[Path]:
    """A path Keras reads in the right format.

    Keras picks the reader from the file name: only `*.weights.h5` is read as the current
    weights format, other `.h5` names as legacy keras.applications files. A current-format file
    stored under another name (e.g. `base/weights.h5` in an M-Package) is linked under a proper
    name in a temporary folder.
    """
    name = path.name
    if name.endswith((".weights.h5", ".keras")) or not name.endswith((".h5", ".hdf5")):
        yield path
        return
    import h5py  # HDF5 loads only to read a weights file

    with h5py.File(path, "r") as handle:
        legacy = "layer_names" in handle.attrs or "model_weights" in handle
    if legacy:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mainstream-weights-") as folder:
        link = Path(folder) / "base.weights.h5"
        link.symlink_to(path.resolve())
        yield link


_AUTO_NAME = re.compile(r"^(?P<kind>[a-z][a-z0-9_]*?)(?:_(?P<number>\d+))?$")


def _canonicalise_auto_names(model: keras.Model) -> None:
    """Give automatically named layers the names they get in a fresh process.

    InceptionV3 leaves most layers unnamed, so Keras numbers them with a process-wide counter
    (`conv2d_94` when another model was built first). Renumbering each kind in creation order
    makes cut-point names the same in the trainer, the profiler and every runtime.
    """
    import keras  # TensorFlow loads only when a model is built or run

    kinds: dict[str, list[tuple[int, keras.layers.Layer]]] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or layer.name.startswith("mixed"):
            continue
        match = _AUTO_NAME.match(layer.name)
        expected_kind = _snake_case(type(layer).__name__)
        if match is None or match["kind"] != expected_kind:
            continue
        kinds.setdefault(expected_kind, []).append((int(match["number"] or 0), layer))
    for kind, numbered in kinds.items():
        for position, (_, layer) in enumerate(sorted(numbered, key=lambda item: item[0])):
            layer.name = kind if position == 0 else f"{kind}_{position}"


def _snake_case(class_name: str) -> str:
    snake = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", snake).lower()


# ---------------------------------------------------------------------------------------------
# Preprocessing


def preprocessing_name(config: BaseConfig) -> str:
    """The name of the pixel scaling `preprocess` applies for this base (stored in manifests)."""
    return _FAMILIES[config.name].preprocessing


def preprocess(config: BaseConfig, images: np.ndarray) -> np.ndarray:
    """uint8 RGB frames (N, size, size, 3) -> float32 input of the base.

    The same numpy code runs in the trainer and the runtime, so both feed identical tensors.
    It matches keras.applications' `preprocess_input` of each family.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        dtype = getattr(images, "dtype", type(images).__name__)
        raise InvalidParameterError("images", f"array of {dtype}", "a uint8 numpy array")
    expected = (config.input_size, config.input_size, 3)
    if images.ndim != 4 or images.shape[1:] != expected:
        raise InvalidParameterError(
            "images", f"shape {images.shape}", f"shape (N, {', '.join(map(str, expected))})"
        )
    pixels = images.astype(np.float32)
    if preprocessing_name(config) == PREPROCESS_CAFFE_BGR:
        return pixels[..., ::-1] - _CAFFE_BGR_MEAN
    return pixels / np.float32(127.5) - np.float32(1.0)


# ---------------------------------------------------------------------------------------------
# Identity


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 (hex) over every weight of `model`: equal weights <=> equal fingerprint.

    Weights are hashed in the model's own order with their short name (`kernel`, `gamma`...),
    dtype, shape and little-endian bytes. Layer names are left out on purpose: Keras numbers
    unnamed layers per process, which must not change the identity of the weights.
    """
    digest = hashlib.sha256()
    digest.update(b"mainstream.weights.v1\n")
    for index, variable in enumerate(model.weights):
        values = np.asarray(variable)
        values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
        short_name = variable.name.rsplit("/", 1)[-1]
        header = f"{index}|{short_name}|{values.dtype.str}|{values.shape}\n"
        digest.update(header.encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def base_info(config: BaseConfig, model: keras.Model) -> BaseModelInfo:
    """The manifest's description of this base (DESIGN §5)."""
    family = _FAMILIES[config.name]
    return BaseModelInfo(
        name=config.name,
        input_shape=config.input_shape,
        preprocessing=preprocessing_name(config),
        weights_fingerprint=weights_fingerprint(model),
        alpha=float(config.alpha) if family.allowed_alphas != (1.0,) else None,
        weights_source=_weights_source(config.weights),
    )


def _weights_source(weights: str) -> str:
    """Where the weights came from, without leaking local directory names into packages."""
    if weights in (WEIGHTS_NONE, WEIGHTS_IMAGENET):
        return weights
    return f"file:{Path(weights).name}"


# ---------------------------------------------------------------------------------------------
# Cut points


@dataclass(frozen=True)
class _LayerGraph:
    """The layers of a single-input, single-output model in topological order."""

    order: tuple[str, ...]  # order[0] is the input layer
    children: Mapping[str, tuple[str, ...]]
    nodes: Mapping[str, Any]  # layer name -> the keras Node of its (only) call in this model

    @property
    def input_layer(self) -> str:
        return self.order[0]

    def position(self, layer_name: str) -> int:
        return self.order.index(layer_name)


def _layer_graph(model: keras.Model) -> _LayerGraph:
    """Walk back from the model output; each layer must be called exactly once."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; cut points need exactly one of each"
        )
    nodes: dict[str, Any] = {}
    parents: dict[str, list[str]] = {}
    pending = [model.outputs[0]]
    while pending:
        tensor = pending.pop()
        history = tensor._keras_history
        layer = history.operation
        node = layer._inbound_nodes[history.node_index]
        if layer.name in nodes:
            if nodes[layer.name] is not node:
                raise ModelError(
                    f"layer {layer.name!r} is called more than once in {model.name!r}; "
                    "shared layers cannot be cut"
                )
            continue
        if len(node.output_tensors) != 1:
            raise ModelError(f"layer {layer.name!r} has several outputs; it cannot be cut")
        nodes[layer.name] = node
        inputs = list(node.input_tensors)
        parents[layer.name] = [t._keras_history.operation.name for t in inputs]
        pending.extend(inputs)

    roots = [name for name, names in parents.items() if not names]
    if len(roots) != 1:
        raise ModelError(f"model {model.name!r} has {len(roots)} graph roots; expected one input")

    # Kahn's algorithm; ties are broken by the model's own layer order so the result is stable.
    layer_rank = {layer.name: rank for rank, layer in enumerate(model.layers)}
    children: dict[str, list[str]] = {name: [] for name in nodes}
    remaining_parents = {name: len(set(names)) for name, names in parents.items()}
    for name, names in parents.items():
        for parent in set(names):
            children[parent].append(name)
    ready = sorted(roots, key=lambda name: layer_rank.get(name, 0))
    order: list[str] = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for child in children[name]:
            remaining_parents[child] -= 1
            if remaining_parents[child] == 0:
                ready.append(child)
        ready.sort(key=lambda candidate: layer_rank.get(candidate, 0))
    return _LayerGraph(
        order=tuple(order),
        children={name: tuple(names) for name, names in children.items()},
        nodes=nodes,
    )


def _separating_layers(graph: _LayerGraph) -> list[str]:
    """Layers whose output alone separates input from output, in topological order.

    In a topological order a layer separates the graph exactly when no edge jumps over it
    (from an earlier layer to a later one); every layer lies on an input-to-output path because
    the graph was collected by walking back from the output from a single root.
    """
    position = {name: index for index, name in enumerate(graph.order)}
    separating = []
    furthest_edge_end = 0
    for index, name in enumerate(graph.order):
        if furthest_edge_end <= index:
            separating.append(name)
        for child in graph.children[name]:
            furthest_edge_end = max(furthest_edge_end, position[child])
    return separating


def discover_cut_points(model: keras.Model) -> list[str]:
    """Every single-tensor cut point of `model`, from "input" to its last layer."""
    graph = _layer_graph(model)
    return [INPUT_CUT, *_separating_layers(graph)[1:]]


def _checked_cut(model: keras.Model, cut_point: str) -> tuple[_LayerGraph, str]:
    """The layer graph and the layer name of `cut_point`; a clear ModelError if it is invalid."""
    graph = _layer_graph(model)
    if cut_point == INPUT_CUT:
        return graph, graph.input_layer
    valid = [INPUT_CUT, *_separating_layers(graph)[1:]]
    if cut_point in valid:
        return graph, cut_point
    if cut_point not in graph.nodes:
        raise ModelError(
            f"cut point {cut_point!r} is not a layer of {model.name!r}; valid cut points "
            f"include {_summarise(valid)}"
        )
    position = graph.position(cut_point)
    positions = {name: graph.position(name) for name in valid[1:]}
    before = [name for name in valid[1:] if positions[name] < position]
    after = [name for name in valid[1:] if positions[name] > position]
    nearby = [*(before[-1:] or [INPUT_CUT]), *after[:1]]
    raise ModelError(
        f"cut point {cut_point!r} lies inside a branch or residual block of {model.name!r}: "
        f"other paths bypass it, so it cannot carry the whole state alone. Nearest valid cut "
        f"points: {' and '.join(repr(name) for name in nearby)}"
    )


def _summarise(names: list[str], limit: int = 8) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    head = ", ".join(names[: limit // 2])
    tail = ", ".join(names[-limit // 2 :])
    return f"{head}, ... ({len(names) - limit} more) ..., {tail}"


def default_cut_points(config: BaseConfig, model: keras.Model) -> list[str]:
    """Curated block boundaries of the family: "input", block outputs, the last layer."""
    pattern = re.compile(_FAMILIES[config.name].block_boundary_pattern)
    discovered = discover_cut_points(model)
    curated = [name for name in discovered[1:-1] if pattern.fullmatch(name)]
    return [INPUT_CUT, *curated, discovered[-1]]


def spread_cut_points(config: BaseConfig, model: keras.Model, count: int) -> list[str]:
    """`count` evenly spread curated cut points, always with the deepest (and "input" if count ≥ 2).

    Returns every curated cut point when `count` exceeds their number.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidParameterError("count", count, "an integer ≥ 1")
    curated = default_cut_points(config, model)
    if count >= len(curated):
        return curated
    if count == 1:
        return [curated[-1]]
    indices = np.linspace(0, len(curated) - 1, count).round().astype(int)
    return [curated[index] for index in sorted(set(indices.tolist()))]


def architecture_cut_points(config: BaseConfig) -> dict[str, tuple[int, ...]]:
    """Every cut point of the base's architecture and the shape of its tensor (no batch axis).

    Only the architecture matters: the base is built with random weights (`config.weights` is
    ignored), so no weights file is needed. What uploads are checked against; the answer is
    cached per (name, input size, alpha), as it never changes.
    """
    return dict(_architecture_cut_points(config.name, config.input_size, float(config.alpha)))


@functools.lru_cache(maxsize=16)
def _architecture_cut_points(
    name: str, input_size: int, alpha: float
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    model = build_base(BaseConfig(name, input_size=input_size, alpha=alpha))
    graph = _layer_graph(model)
    shapes = []
    for cut_point in [INPUT_CUT, *_separating_layers(graph)[1:]]:
        layer_name = graph.input_layer if cut_point == INPUT_CUT else cut_point
        shape = graph.nodes[layer_name].output_tensors[0].shape
        shapes.append((cut_point, tuple(int(size) for size in shape[1:])))
    return tuple(shapes)


def frozen_layer_count(model: keras.Model, cut_point: str) -> int:
    """How many layers (the input layer not counted) lie at or before `cut_point`."""
    graph, layer_name = _checked_cut(model, cut_point)
    return graph.position(layer_name)


def cut_output_shape(model: keras.Model, cut_point: str) -> tuple[int, ...]:
    """Shape of one sample of the tensor at `cut_point` (no batch dimension)."""
    graph, layer_name = _checked_cut(model, cut_point)
    shape = graph.nodes[layer_name].output_tensors[0].shape
    return tuple(int(size) for size in shape[1:])


def split_model(model: keras.Model, cut_point: str) -> tuple[keras.Model | None, keras.Model]:
    """Split the base at `cut_point` into (stem, suffix) with suffix(stem(x)) == model(x).

    - stem: `Model(model.input, tensor at the cut)`; None for cut "input".
    - suffix: a Model on a fresh Input of the cut tensor's shape that re-applies the layers
      after the cut; its output is the base's last tensor, so the trainer appends the head to
      `suffix.output`. For the last layer the suffix is an identity Model (input == output).

    Both reuse the base's layer objects, so they share its weights: training the suffix changes
    the base too. Build a fresh base (`build_base`) per candidate when that matters.
    """
    import keras  # TensorFlow loads only when a model is built or run

    graph, layer_name = _checked_cut(model, cut_point)
    cut_tensor = graph.nodes[layer_name].output_tensors[0]
    safe_name = re.sub(r"[^A-Za-z0-9_]", "_", cut_point)

    stem = None
    if cut_point != INPUT_CUT:
        stem = keras.Model(model.inputs[0], cut_tensor, name=f"{model.name}_stem_{safe_name}")

    suffix_input = keras.Input(
        shape=tuple(cut_tensor.shape[1:]), dtype=cut_tensor.dtype, name=f"cut_{safe_name}"
    )
    values: dict[int, Any] = {id(cut_tensor): suffix_input}
    for name in graph.order[graph.position(layer_name) + 1 :]:
        node = graph.nodes[name]
        args, kwargs = node.arguments.fill_in(values)
        output = node.operation(*args, **kwargs)
        values[id(node.output_tensors[0])] = output
    suffix_output = values[id(model.outputs[0])]
    suffix = keras.Model(suffix_input, suffix_output, name=f"{model.name}_suffix_{safe_name}")
    return stem, suffix


# ---------------------------------------------------------------------------------------------
# Registry on disk: <bases_dir>/<fingerprint>.weights.h5 + <fingerprint>.json

_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
MIN_FINGERPRINT_PREFIX = 8
_FINGERPRINT_PREFIX = re.compile(rf"^[0-9a-f]{{{MIN_FINGERPRINT_PREFIX},64}}$")


def looks_like_fingerprint(text: str) -> bool:
    """A whole fingerprint or a prefix of one (8 to 64 lowercase hex digits)."""
    return bool(_FINGERPRINT_PREFIX.match(text))


def resolve_fingerprint(prefix: str, bases_dir: Path | str) -> str:
    """The one registered base whose fingerprint starts with `prefix` (>= 8 hex digits).

    People copy the short form that `mainstream demo` and `base list` print; a prefix that
    matches no base or several is refused with the candidates named.
    """
    if not isinstance(prefix, str) or not looks_like_fingerprint(prefix):
        raise InvalidParameterError(
            "fingerprint", prefix, f"{MIN_FINGERPRINT_PREFIX} to 64 lowercase hex digits"
        )
    folder = Path(bases_dir)
    if _FINGERPRINT.match(prefix) and (folder / f"{prefix}.json").is_file():
        return prefix
    matches = sorted(
        path.stem
        for path in (folder.glob(f"{prefix}*.json") if folder.is_dir() else [])
        if _FINGERPRINT.match(path.stem)
    )
    if not matches:
        raise NotFoundError(
            f"no registered base has a fingerprint starting with {prefix} in {folder} "
            "(`mainstream base list --bases-dir DIR` shows what is there)"
        )
    if len(matches) > 1:
        shown = ", ".join(match[:16] for match in matches)
        raise InvalidParameterError(
            "fingerprint", prefix, f"a prefix of exactly one base; it starts {shown}"
        )
    return matches[0]


class RegisteredBase(BaseModel):
    """The `<fingerprint>.json` record next to a registered base's weights."""

    model_config = ConfigDict(extra="allow")

    format: str = "mainstream.base"
    format_version: int = 1
    config: dict[str, Any]
    info: BaseModelInfo
    weights_file: str
    registered_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    provenance: dict[str, Any] = Field(default_factory=dict)


def calibrate_batchnorm(model: keras.Model, images: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics to those of `images` (preprocessed inputs).

    A randomly initialised base stores mean 0 / variance 1, which does not match its actual
    activations: in inference mode the signal fades layer after layer and every frozen
    candidate sits at chance. Calibrating gives such a base usable statistics for tests and
    benchmarks (a new base, with a new fingerprint). Real bases are pretrained instead
    (`mainstream base pretrain`) or come with ImageNet weights.
    """
    import keras  # TensorFlow loads only when a model is built or run

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0  # the moving statistics become this batch's statistics
        model(np.asarray(images, dtype=np.float32), training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def calibrated_base(config: BaseConfig, images: np.ndarray) -> keras.Model:
    """A random-init base calibrated (:func:`calibrate_batchnorm`) on `images` (uint8 frames).

    What benchmarks and tests use where pretrained weights cannot be downloaded.
    """
    model = build_base(config)
    calibrate_batchnorm(model, preprocess(config, images))
    return model


def untrained_head(
    base: keras.Model, cut_point: str, seed: int, kernel_stddev: float | None = None
) -> keras.Model:
    """An untrained two-class app head on the base's suffix after `cut_point` (its own copy of
    the later layers), for benchmarks and tests; `kernel_stddev` spreads its scores.

    The copied layers are nudged (by 1 %, seeded) as fine-tuning would change them: heads of
    different apps must not be identical, or an engine could merge their work.
    """
    import keras  # TensorFlow loads only when a model is built or run

    keras.utils.set_random_seed(seed)
    copy = keras.models.clone_model(base)
    rng = np.random.default_rng([seed, 1009])
    copy.set_weights(
        [
            weights * (1.0 + 0.01 * rng.standard_normal(weights.shape)).astype(weights.dtype)
            for weights in base.get_weights()
        ]
    )
    _, suffix = split_model(copy, cut_point)
    pooled = keras.layers.GlobalAveragePooling2D()(suffix.output)
    initializer = (
        keras.initializers.RandomNormal(stddev=kernel_stddev)
        if kernel_stddev is not None
        else "glorot_uniform"
    )
    scores = keras.layers.Dense(2, activation="softmax", kernel_initializer=initializer)(pooled)
    return keras.Model(suffix.input, scores)


def save_base(
    model: keras.Model,
    config: BaseConfig,
    bases_dir: Path | str,
    *,
    weights_source: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> BaseModelInfo:
    """Register the base under its fingerprint; both files are written atomically.

    `weights_source` overrides what the record says about the origin of the weights (e.g.
    "pretrained:shapes"); `provenance` is free-form (dataset, epochs, accuracy...).
    An already registered fingerprint is left as it is.
    """
    bases_dir = Path(bases_dir)
    bases_dir.mkdir(parents=True, exist_ok=True)
    info = base_info(config, model)
    if weights_source is not None:
        info = info.model_copy(update={"weights_source": weights_source})
    fingerprint = info.weights_fingerprint
    weights_path = bases_dir / f"{fingerprint}.weights.h5"
    record_path = bases_dir / f"{fingerprint}.json"
    if weights_path.is_file() and record_path.is_file():
        return RegisteredBase.model_validate_json(record_path.read_text()).info

    save_weights_atomically(model, weights_path)
    record = RegisteredBase(
        config=asdict(config),
        info=info,
        weights_file=weights_path.name,
        provenance=dict(provenance or {}),
    )
    _write_text_atomically(record_path, record.model_dump_json(indent=2) + "\n")
    return info


def save_weights_atomically(model: keras.Model, path: Path | str) -> None:
    """`model.save_weights` to a temporary file in the same folder, then rename it into place.

    Any file name works (Keras itself insists on `*.weights.h5`); `build_base` reads it back.
    An interruption leaves no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(path, suffix=".tmp.weights.h5")
    try:
        model.save_weights(str(temporary))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = _temporary_sibling(path, suffix=".tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _temporary_sibling(path: Path, suffix: str) -> Path:
    """A hidden, unique name next to `path` (same file system, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}{suffix}")


def registered_base_record(fingerprint: str, bases_dir: Path | str) -> RegisteredBase:
    """The JSON record of a registered base (no TensorFlow needed)."""
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise InvalidParameterError("fingerprint", fingerprint, "64 lowercase hex digits")
    record_path = Path(bases_dir) / f"{fingerprint}.json"
    if not record_path.is_file():
        raise NotFoundError(f"no base with fingerprint {fingerprint} in {bases_dir}")
    try:
        return RegisteredBase.model_validate_json(record_path.read_text(encoding="utf-8"))
    except (ValidationError, UnicodeDecodeError) as error:
        raise ModelError(f"base record {str(record_path)!r} is corrupt: {error}") from error


def copy_registered_base(fingerprint: str, source_dir: Path | str, target_dir: Path | str) -> bool:
    """Register a base of `source_dir` in `target_dir` too (weights first, record last, each
    atomically, so a reader never sees a record without its weights); False if already there."""

    record = registered_base_record(fingerprint, source_dir)
    target = Path(target_dir)
    target_record = target / f"{fingerprint}.json"
    if target_record.is_file():
        return False
    target.mkdir(parents=True, exist_ok=True)
    weights = target / record.weights_file
    temporary = _temporary_sibling(weights, suffix=".tmp")
    try:
        shutil.copyfile(Path(source_dir) / record.weights_file, temporary)
        os.replace(temporary, weights)
    finally:
        temporary.unlink(missing_ok=True)
    _write_text_atomically(target_record, record.model_dump_json(indent=2) + "\n")
    return True


def list_registered_bases(bases_dir: Path | str) -> list[BaseModelInfo]:
    """The bases registered in `bases_dir`, sorted by name then fingerprint."""
    folder = Path(bases_dir)
    if not folder.is_dir():
        return []
    infos = []
    for record_path in folder.glob("*.json"):
        if _FINGERPRINT.match(record_path.stem):
            infos.append(registered_base_record(record_path.stem, folder).info)
    return sorted(infos, key=lambda info: (info.name, info.weights_fingerprint))


def load_registered_base(fingerprint: str, bases_dir: Path | str) -> tuple[BaseConfig, keras.Model]:
    """Rebuild a registered base and check that its weights still have `fingerprint`.

    The returned config's `weights` is the path of the registered weights file, so
    `build_base(config)` rebuilds the same base.
    """
    record = registered_base_record(fingerprint, bases_dir)
    weights_path = Path(bases_dir) / record.weights_file
    if not weights_path.is_file():
        raise NotFoundError(f"weights file {str(weights_path)!r} of base {fingerprint} is missing")
    stored = {key: record.config[key] for key in ("name", "input_size", "alpha")}
    try:
        config = BaseConfig(**stored, weights=str(weights_path))
    except TypeError as error:
        raise ModelError(f"base record of {fingerprint} has a bad config: {error}") from error
    model = build_base(config)
    actual = weights_fingerprint(model)
    if actual != fingerprint:
        raise ModelError(
            f"weights file {str(weights_path)!r} has fingerprint {actual}, expected "
            f"{fingerprint}: the file is corrupt or was modified"
        )
    return config, model


def load_package_base(
    manifest: Manifest, package_root: Path | None, bases_dir: Path | None
) -> tuple[BaseConfig, keras.Model]:
    """The base a package's candidates run on: the registered one with its fingerprint (in
    `bases_dir`), else the weights the package bundles, checked against the fingerprint."""
    fingerprint = manifest.base_model.weights_fingerprint
    info = manifest.base_model
    bundled = manifest.base_weights
    if bases_dir is not None and (bases_dir / f"{fingerprint}.json").exists():
        return load_registered_base(fingerprint, bases_dir)
    if bundled and package_root is not None:
        config = BaseConfig(
            name=info.name,
            input_size=info.input_shape[0],
            alpha=info.alpha or 1.0,
            weights=str(package_root / bundled["file"]),
        )
        model = build_base(config)
        if weights_fingerprint(model) != fingerprint:
            raise ModelError(
                "the package's bundled base weights do not match its weights_fingerprint"
            )
        return config, model
    raise NotFoundError(
        f"base {info.name} with fingerprint {fingerprint[:12]}… is not registered here "
        "and the package does not bundle its weights"
    )
