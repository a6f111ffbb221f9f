"""Inference engines: run a Keras (sub)model on batches of frames, compiled once.

Both engines take the same Keras model and give a callable `batch -> numpy array`:
- `keras`: a `tf.function` with a fixed input signature (a plain Keras call pays ~70 ms of
  Python overhead per call on a small CPU; the compiled function does not). Always present.
- `openvino`: the model exported as a TF SavedModel, converted by OpenVINO and compiled for the
  CPU. The precision is always asked for explicitly: left unset, OpenVINO picks bf16 on CPUs
  with AMX/avx512_bf16 and the scores move by up to 0.15. In f32 outputs match Keras within
  `OPENVINO_TOLERANCE`; bf16 and f16 are faster where the hardware has them, at a cost that
  `bench/runtime.py` measures.

`auto` (the node's default) picks the fastest engine that is correct on the machine, once at
start-up: OpenVINO on x86 when it imports (in the configured precision, f32 unless asked
otherwise), Keras everywhere else (:func:`resolve_engine`).
"""

from __future__ import annotations

import os
import platform
import queue
import tempfile
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from mainstream.core.errors import ModelError

EngineName = Literal["keras", "openvino"]
ENGINE_NAMES: tuple[str, ...] = ("keras", "openvino")
EngineChoice = Literal["auto", "keras", "openvino"]
ENGINE_CHOICES: tuple[str, ...] = ("auto", *ENGINE_NAMES)
# Machines where OpenVINO's CPU plugin in f32 is the measured fastest correct path.
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686"})
Precision = Literal["f32", "bf16", "f16"]
PRECISIONS: tuple[str, ...] = ("f32", "bf16", "f16")
# fp32 OpenVINO vs Keras: same maths, different kernels and summation order.
OPENVINO_TOLERANCE = {"rtol": 1e-3, "atol": 1e-4}


class CompiledModel(Protocol):
    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class EngineOptions:
    """Threading and precision for one engine. Defaults suit a 2-core edge box.

    `streams` (OpenVINO): requests that run at once, each on its share of the threads (the
    THROUGHPUT mode); callers keep that many frames in flight to use it. 1: one request on
    every thread (LATENCY).
    """

    intra_op_threads: int = 1
    inter_op_threads: int = 2
    precision: Precision = "f32"
    streams: int = 1


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


@dataclass(frozen=True)
class ResolvedEngine:
    """The engine a node runs, the precision it computes in, how many frames it keeps in
    flight (OpenVINO: one stream and infer request each), and why it was chosen."""

    name: EngineName
    precision: str
    reason: str
    frames_in_flight: int = 1

    def options(self, **threads: int) -> EngineOptions:
        """The compile options of this choice (`threads`: EngineOptions' thread counts)."""
        precision: Precision = "f32"
        if self.precision in PRECISIONS:
            precision = self.precision  # type: ignore[assignment]
        return EngineOptions(precision=precision, streams=self.frames_in_flight, **threads)


def resolve_engine(
    choice: str,
    precision: str = "f32",
    has_openvino: bool | None = None,
    machine: str | None = None,
    frames_in_flight: int | None = None,
    cores: int | None = None,
) -> ResolvedEngine:
    """Turn the configured engine (`auto`, `keras`, `openvino`) into the one to run.

    `auto`: OpenVINO on x86 when it imports (on a 2-core AVX-512 box it runs MobileNet
    2.4-3.4x faster than Keras, same scores in f32), Keras otherwise. `has_openvino`,
    `machine` and `cores` default to probing this machine. `frames_in_flight` None: with
    OpenVINO one per core up to 2 (two streams keep two cores busy), with Keras 1.
    """
    if choice not in ENGINE_CHOICES:
        raise ModelError(
            f"unknown inference engine {choice!r}: choose one of {', '.join(ENGINE_CHOICES)}"
        )
    name: EngineName
    if choice != "auto":
        name = "openvino" if choice == "openvino" else "keras"
        why = "set:"
    else:
        why = "auto:"
        arch = (machine if machine is not None else platform.machine()).lower()
        installed = arch in X86_MACHINES and (
            openvino_available() if has_openvino is None else has_openvino
        )
        name = "openvino" if installed else "keras"
    effective = effective_precision(name, precision)
    if frames_in_flight is None:
        available = cores if cores is not None else (os.cpu_count() or 1)
        frames_in_flight = max(1, min(2, available)) if name == "openvino" else 1
    reason = f"{why} {name} {effective}"
    if frames_in_flight > 1:
        reason += f", {frames_in_flight} frames in flight"
    if why == "auto:" and name == "keras":
        reason += (
            " (openvino is not installed)"
            if arch in X86_MACHINES
            else f" (OpenVINO is used on x86 only, this is {arch})"
        )
    return ResolvedEngine(name, effective, reason, frames_in_flight)


def openvino_compiled(
    model: Any, options: EngineOptions, hint: Literal["LATENCY", "THROUGHPUT"] | None = None
) -> Any:
    """The Keras model converted by OpenVINO and compiled for the CPU (an ov.CompiledModel).

    `hint` THROUGHPUT splits the same threads into streams that run several requests at once
    (`options.streams` of them when above 1, else OpenVINO's choice); None: THROUGHPUT when
    `options.streams` > 1, else LATENCY.
    """
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
    hint = hint or ("THROUGHPUT" if options.streams > 1 else "LATENCY")
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": max(1, options.intra_op_threads * options.inter_op_threads),
        "INFERENCE_PRECISION_HINT": options.precision,
        "PERFORMANCE_HINT": hint,
    }
    if hint == "THROUGHPUT" and options.streams > 1:
        config["NUM_STREAMS"] = options.streams
    with tempfile.TemporaryDirectory(prefix="mainstream-ov-") as export_dir:
        saved_model = os.path.join(export_dir, "model")
        model.export(saved_model, format="tf_saved_model", verbose=False)
        converted = ov.convert_model(saved_model)
    converted.reshape([-1, *model.input_shape[1:]])
    return ov.Core().compile_model(converted, "CPU", config)


def _compile_openvino(model: Any, options: EngineOptions) -> CompiledModel:
    compiled = openvino_compiled(model, options)
    output = compiled.output(0)
    # One infer request per stream; a call takes a free one, so threads may call at once.
    requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for _ in range(max(1, options.streams)):
        requests.put(compiled.create_infer_request())

    def run(batch: np.ndarray) -> np.ndarray:
        request = requests.get()
        try:
            outputs = request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
            return np.asarray(
                outputs[output]
            )  # infer() copies its outputs out (share_outputs=False)
        finally:
            requests.put(request)

    return run
