"""Inference engines: run a Keras (sub)model on batches of frames, compiled once.

Both engines take the same Keras model and give a callable `batch -> numpy array`:
- `keras`: a `tf.function` with a fixed input signature (a plain Keras call pays ~70 ms of
  Python overhead per call on a small CPU; the compiled function does not). Always present.
- `openvino`: the model exported as a TF SavedModel, converted by OpenVINO and compiled for the
  CPU. The precision is always asked for explicitly: left unset, OpenVINO picks bf16 on CPUs
  with AMX/avx512_bf16 and the scores move by up to 0.15. In f32 outputs match Keras within
  `OPENVINO_TOLERANCE`; bf16 and f16 are faster where the hardware has them, at a cost that
  `bench/runtime.py` measures.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from mainstream.core.errors import ModelError

EngineName = Literal["keras", "openvino"]
ENGINE_NAMES: tuple[str, ...] = ("keras", "openvino")
Precision = Literal["f32", "bf16", "f16"]
PRECISIONS: tuple[str, ...] = ("f32", "bf16", "f16")
# fp32 OpenVINO vs Keras: same maths, different kernels and summation order.
OPENVINO_TOLERANCE = {"rtol": 1e-3, "atol": 1e-4}


class CompiledModel(Protocol):
    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class EngineOptions:
    """Threading and precision for one engine. Defaults suit a 2-core edge box."""

    intra_op_threads: int = 1
    inter_op_threads: int = 2
    precision: Precision = "f32"


def effective_precision(engine: str, precision: str) -> str:
    """The precision a model really runs in: the Keras engine always computes in f32."""
    return precision if engine == "openvino" else "f32"


def configure_tensorflow_threads(options: EngineOptions) -> None:
    """Set TF's thread pools; only possible before TF runs its first op, so failures are ignored."""
    import tensorflow as tf  # TensorFlow loads only when a model is built or run

    try:
        tf.config.threading.set_intra_op_parallelism_threads(options.intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(options.inter_op_threads)
    except RuntimeError:
        pass


def compile_model(
    model: Any, engine: EngineName = "keras", options: EngineOptions | None = None
) -> CompiledModel:
    """Compile a Keras model for repeated batched inference on this machine."""
    options = options or EngineOptions()
    if engine == "keras":
        return _compile_keras(model)
    if engine == "openvino":
        return _compile_openvino(model, options)
    raise ModelError(
        f"unknown inference engine {engine!r}: choose one of {', '.join(ENGINE_NAMES)}"
    )


def _compile_keras(model: Any) -> CompiledModel:
    import tensorflow as tf  # TensorFlow loads only when a model is built or run

    signature = [tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)]
    function = tf.function(lambda batch: model(batch, training=False), input_signature=signature)

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(function(tf.convert_to_tensor(batch, tf.float32)))

    return run


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _compile_openvino(model: Any, options: EngineOptions) -> CompiledModel:
    try:
        import openvino as ov  # OpenVINO loads only for its engine
    except ImportError as error:
        raise ModelError(
            "the openvino engine needs the 'openvino' package (pip install openvino)"
        ) from error

    if options.precision not in PRECISIONS:
        raise ModelError(
            f"unknown OpenVINO precision {options.precision!r}: choose one of {', '.join(PRECISIONS)}"
        )
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": max(1, options.intra_op_threads * options.inter_op_threads),
        "INFERENCE_PRECISION_HINT": options.precision,
    }
    with tempfile.TemporaryDirectory(prefix="mainstream-ov-") as export_dir:
        saved_model = os.path.join(export_dir, "model")
        model.export(saved_model, format="tf_saved_model", verbose=False)
        converted = ov.convert_model(saved_model)
    converted.reshape([-1, *model.input_shape[1:]])
    compiled = ov.Core().compile_model(converted, "CPU", config)
    request = compiled.create_infer_request()

    def run(batch: np.ndarray) -> np.ndarray:
        outputs = request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
        return np.asarray(outputs[compiled.output(0)])

    return run
