"""Memory sizing: what an idle node, a base model, an app head and a camera each cost in RAM.

Every measurement runs in a fresh Python process, so one figure never inherits another's
caches, allocator arenas or imported libraries. A child process takes a memory reading after
its imports ("before"), does one thing (load a model, start cameras ...), takes a second reading
("after") and prints both as JSON; this script collects them into one table.

- RSS: resident memory of the process (/proc/self/smaps_rollup).
- anon: the anonymous part of RSS (heap, tensors, frames): memory only this process can use.
  The rest of RSS is mapped library code, shared with any other process that loads it.
  USS/PSS are left out on purpose: they change with whatever else runs (another TensorFlow
  process makes TF's library pages shared), anon does not.
- peak: the highest RSS of the process (VmHWM), e.g. during OpenVINO's model conversion.
- delta: "after" minus "before" in the same process, so import costs cancel; for the import
  rows, the difference to the row above.

Run: `python bench/memory.py` (about 4-5 minutes on 2 cores). `--only models,heads` and
`--engines keras` run a subset; the head DAGs are built as the node builds them, `--no-fuse`
builds each head as its own model (`runtime.fuse_heads` off).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as `python bench/memory.py`, this folder comes first on the import path and its sibling
# `scheduler.py` / `trainer.py` would hide the packages of the same name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

MIB = 1024 * 1024
BASES = ((0.25, 96), (0.25, 128), (1.0, 224))  # MobileNet v1 (alpha, input size)
HEAD_BASE = (1.0, 224)
SHALLOW_CUT = "conv_pw_3_relu"  # the app re-runs blocks 4-13: nearly all the weights
DEEP_CUT = "conv_pw_12_relu"  # the app re-runs block 13 only
HEAD_COUNTS = {"keras": (1, 4), "openvino": (1, 2)}  # OpenVINO exports each head: slow
HEAD_FRAMES = 5  # frames through the DAG before reading, so buffers reach their steady size
CAMERA_COUNTS = (1, 2, 4)
CAMERA_SIZES = ("640x480", "1280x720")
FILE_CAMERA_SIZE = (1280, 720)
FILE_CAMERA_COUNTS = (1, 2)
STREAM_SECONDS = (2.0, 12.0)  # at least, at most: until every queue is full
SECTIONS = ("idle", "models", "heads", "cameras")


# ---------------------------------------------------------------------------------------------
# Readings (used inside the child processes)


@dataclass(frozen=True)
class Reading:
    rss_mib: float
    anon_mib: float
    peak_mib: float


def read_memory() -> Reading:
    """This process's memory now, from /proc (Linux only)."""
    rollup: dict[str, int] = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            rollup[parts[0].rstrip(":")] = int(parts[1]) * 1024
    peak = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return Reading(
        rss_mib=rollup.get("Rss", 0) / MIB,
        anon_mib=rollup.get("Anonymous", 0) / MIB,
        peak_mib=peak / MIB,
    )


def settled_reading() -> Reading:
    """A reading after Python has freed what it can (temporaries of the step just done)."""
    gc.collect()
    time.sleep(0.2)
    return read_memory()


def import_node() -> None:
    """What the daemon imports before any model or camera: the API app and the node."""
    import api.app  # noqa: F401
    import mainstream.node.node  # noqa: F401


def import_tensorflow() -> None:
    import keras  # noqa: F401
    import tensorflow  # noqa: F401


# ---------------------------------------------------------------------------------------------
# Child steps: each returns (before, after, extra facts) and runs in its own process


def step_python() -> tuple[Reading, Reading, dict[str, Any]]:
    import numpy  # noqa: F401

    reading = settled_reading()
    return reading, reading, {}


def step_node() -> tuple[Reading, Reading, dict[str, Any]]:
    import numpy  # noqa: F401

    before = settled_reading()
    import_node()
    return before, settled_reading(), {"tensorflow_imported": "tensorflow" in sys.modules}


def step_tensorflow() -> tuple[Reading, Reading, dict[str, Any]]:
    import_node()
    before = settled_reading()
    import_tensorflow()
    return before, settled_reading(), {}


def step_openvino() -> tuple[Reading, Reading, dict[str, Any]]:
    import_node()
    import_tensorflow()
    before = settled_reading()
    import openvino

    openvino.Core()  # loads the CPU plugin's shared libraries, as compiling a model does
    return before, settled_reading(), {}


def step_base(alpha: float, size: int, engine: str) -> tuple[Reading, Reading, dict[str, Any]]:
    """One base built with random weights, compiled, and run once on one frame."""
    import numpy as np

    import_node()
    import_tensorflow()
    from edge_runtime.engines import compile_model
    from mainstream.core.bases import BaseConfig, build_base, preprocess

    if engine == "openvino":
        import openvino

        openvino.Core()  # its one-off library cost is a row of its own
    before = settled_reading()
    config = BaseConfig("mobilenet_v1", input_size=size, alpha=alpha)
    model = build_base(config)
    run = compile_model(model, engine)  # type: ignore[arg-type]
    frame = np.zeros((1, size, size, 3), dtype=np.uint8)
    run(preprocess(config, frame))
    after = settled_reading()
    return before, after, {"weights_mib": model.count_params() * 4 / MIB}


def step_write_heads(head_dir: str) -> tuple[Reading, Reading, dict[str, Any]]:
    """Write one head per cut to `head_dir`, as a package would hold them (suffix + classifier)."""
    import keras

    from mainstream.core.bases import BaseConfig, build_base, split_model

    reading = read_memory()
    base = build_base(BaseConfig("mobilenet_v1", input_size=HEAD_BASE[1], alpha=HEAD_BASE[0]))
    sizes = {}
    for cut in (SHALLOW_CUT, DEEP_CUT):
        _, suffix = split_model(base, cut)
        pooled = keras.layers.GlobalAveragePooling2D()(suffix.output)
        head = keras.Model(suffix.input, keras.layers.Dense(2, activation="softmax")(pooled))
        path = Path(head_dir) / f"{cut}.keras"
        head.save(path)
        sizes[cut] = head.count_params() * 4 / MIB
    return reading, reading, {"head_weights_mib": sizes}


def step_heads(
    head_dir: str, cut: str, count: int, engine: str, fuse: bool = True
) -> tuple[Reading, Reading, dict[str, Any]]:
    """A camera DAG with `count` heads at `cut`, loaded from files and run on one frame.

    "before" already holds the base model, so the delta is the shared stem segment plus the
    heads; the difference between two head counts is what the extra heads cost.
    """
    import numpy as np

    import_node()
    import_tensorflow()
    from edge_runtime.dag import HeadSpec
    from edge_runtime.deployer import camera_dag
    from mainstream.core.bases import BaseConfig, build_base, weights_fingerprint
    from mainstream.core.package import load_keras_safely

    config = BaseConfig("mobilenet_v1", input_size=HEAD_BASE[1], alpha=HEAD_BASE[0])
    base = build_base(config)
    fingerprint = weights_fingerprint(base)
    before = settled_reading()
    heads = [
        HeadSpec(
            f"app{index}",
            cut,
            10.0,
            1,
            load_keras_safely(Path(head_dir) / f"{cut}.keras"),
            fingerprint,
        )
        for index in range(count)
    ]
    # As the node builds it: with OpenVINO a fused last segment holds its own copy of weights.
    dag = camera_dag(
        "memory",
        10.0,
        heads,
        base,
        fingerprint,
        config,
        engine,  # type: ignore[arg-type]
        fuse_heads=fuse,
    )
    frame = np.zeros((config.input_size, config.input_size, 3), dtype=np.uint8)
    for index in range(HEAD_FRAMES):
        scores = dag.process(frame, index, index / 10.0)
    if len(scores) != count:
        raise RuntimeError(f"expected {count} app scores from the DAG, got {len(scores)}")
    return before, settled_reading(), {}


def step_cameras(urls: list[str]) -> tuple[Reading, Reading, dict[str, Any]]:
    """A CameraManager streaming `urls` for a few seconds with nobody reading the queues.

    With no consumer every queue fills up to its default size, which is what a node holds when
    inference falls behind: the worst case for camera memory.
    """
    import_node()
    from edge_runtime.camera import CameraConfig, CameraManager, CameraState

    before = settled_reading()
    with CameraManager() as manager:
        for index, url in enumerate(urls):
            manager.add(CameraConfig(id=f"cam{index}", url=url, loop=True))
        least, most = STREAM_SECONDS
        time.sleep(least)
        deadline = time.monotonic() + most - least
        stats = manager.stats()
        while time.monotonic() < deadline and any(
            stat.queue_depth < stat.queue_size for stat in stats.values()
        ):
            time.sleep(0.2)
            stats = manager.stats()
        after = settled_reading()
    not_streaming = {
        name: f"{stat.state.value}: {stat.last_error}"
        for name, stat in stats.items()
        if stat.state != CameraState.STREAMING
    }
    if not_streaming:
        raise RuntimeError(f"cameras did not stream: {not_streaming}")
    queue_depths = [stat.queue_depth for stat in stats.values()]
    return before, after, {"queue_depths": queue_depths, "queue_size": stats["cam0"].queue_size}


def write_video(path: str, width: int, height: int, frames: int = 60, fps: float = 10.0) -> None:
    """A short MPEG-4 clip of a moving gradient, for the file camera."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path!r} (no MPEG-4 encoder)")
    columns = np.arange(width, dtype=np.uint16)
    for index in range(frames):
        row = ((columns + index * 8) % 256).astype(np.uint8)
        image = np.broadcast_to(row[np.newaxis, :, np.newaxis], (height, width, 3))
        writer.write(np.ascontiguousarray(image))
    writer.release()


def run_child(arguments: list[str]) -> None:
    step, *rest = arguments
    if step == "python":
        result = step_python()
    elif step == "node":
        result = step_node()
    elif step == "tensorflow":
        result = step_tensorflow()
    elif step == "openvino":
        result = step_openvino()
    elif step == "base":
        result = step_base(float(rest[0]), int(rest[1]), rest[2])
    elif step == "write-heads":
        result = step_write_heads(rest[0])
    elif step == "heads":
        result = step_heads(rest[0], rest[1], int(rest[2]), rest[3], rest[4] == "fused")
    elif step == "cameras":
        result = step_cameras(rest)
    else:
        raise SystemExit(f"unknown step {step!r}")
    before, after, facts = result
    print(json.dumps({"before": before.__dict__, "after": after.__dict__, "facts": facts}))


# ---------------------------------------------------------------------------------------------
# Parent: run the steps, print the table


@dataclass(frozen=True)
class Measured:
    what: str
    before: Reading
    after: Reading
    facts: dict[str, Any]

    @property
    def delta_mib(self) -> float:
        return self.after.rss_mib - self.before.rss_mib


def measure(what: str, *step: str) -> Measured:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, __file__, "--child", *step],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"step {what!r} failed:\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    print(f"  measured {what} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return Measured(what, Reading(**result["before"]), Reading(**result["after"]), result["facts"])


def print_table(rows: list[tuple[str, Reading, float | None]]) -> None:
    width = max(len(what) for what, _, _ in rows)
    print(f"{'what':<{width}}  RSS MiB  anon MiB  peak MiB  delta MiB")
    for what, reading, delta in rows:
        delta_text = "" if delta is None else f"{delta:+9.1f}"
        print(
            f"{what:<{width}}  {reading.rss_mib:7.1f}  {reading.anon_mib:8.1f}  "
            f"{reading.peak_mib:8.1f}  {delta_text}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(SECTIONS), help="Sections to run")
    parser.add_argument("--engines", default="keras,openvino", help="Engines to measure")
    parser.add_argument(
        "--no-fuse",
        action="store_true",
        help="Build the head DAGs with runtime.fuse_heads off (each head its own model)",
    )
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        run_child(arguments.child)
        return

    from edge_runtime.engines import openvino_available

    sections = set(arguments.only.split(","))
    engines = [
        name
        for name in arguments.engines.split(",")
        if name == "keras" or (name == "openvino" and openvino_available())
    ]
    rows: list[tuple[str, Reading, float | None]] = []
    summary: list[str] = []
    started = time.perf_counter()

    if "idle" in sections:
        python = measure("python + numpy", "python")
        node = measure("idle node: api + mainstream.node.node, no TF", "node")
        tensorflow = measure("idle node + tensorflow/keras imported", "tensorflow")
        rows += [
            (python.what, python.after, None),
            (node.what, node.after, node.after.rss_mib - python.after.rss_mib),
            (tensorflow.what, tensorflow.after, tensorflow.after.rss_mib - node.after.rss_mib),
        ]
        if "openvino" in engines:
            openvino = measure("idle node + TF/Keras + openvino imported", "openvino")
            rows.append((openvino.what, openvino.after, openvino.delta_mib))
            summary.append(
                f"importing OpenVINO (CPU plugin loaded) adds ~{openvino.delta_mib:.0f} MiB"
            )
        if node.facts.get("tensorflow_imported"):
            summary.append("WARNING: importing api + mainstream.node.node imported TensorFlow")
        summary.append(
            f"idle node without TF: ~{node.after.rss_mib:.0f} MiB RSS "
            f"(+{node.after.rss_mib - python.after.rss_mib:.0f} over Python + numpy); "
            f"importing TF/Keras adds ~{tensorflow.after.rss_mib - node.after.rss_mib:.0f} MiB"
        )

    if "models" in sections:
        for alpha, size in BASES:
            for engine in engines:
                base = measure(
                    f"base MobileNet v1 a{alpha} {size}px, {engine}",
                    "base",
                    str(alpha),
                    str(size),
                    engine,
                )
                rows.append((base.what, base.after, base.delta_mib))
                summary.append(
                    f"MobileNet v1 a{alpha} {size}px compiled with {engine}: ~{base.delta_mib:.0f} MiB "
                    f"(weights {base.facts['weights_mib']:.1f} MiB fp32, peak process "
                    f"{base.after.peak_mib:.0f} MiB)"
                )

    if "heads" in sections:
        with tempfile.TemporaryDirectory(prefix="mainstream-memory-") as head_dir:
            written = measure("head files", "write-heads", head_dir)
            weights = written.facts["head_weights_mib"]
            alpha, size = HEAD_BASE
            for engine in engines:
                for cut, depth in ((SHALLOW_CUT, "shallow"), (DEEP_CUT, "deep")):
                    by_count: dict[int, Measured] = {}
                    for count in HEAD_COUNTS[engine]:
                        by_count[count] = measure(
                            f"DAG a{alpha} {size}px {engine}, {count} head(s) at {cut}",
                            "heads",
                            head_dir,
                            cut,
                            str(count),
                            engine,
                            "separate" if arguments.no_fuse else "fused",
                        )
                        rows.append(
                            (by_count[count].what, by_count[count].after, by_count[count].delta_mib)
                        )
                    low, high = HEAD_COUNTS[engine][0], HEAD_COUNTS[engine][-1]
                    per_head = (by_count[high].delta_mib - by_count[low].delta_mib) / (high - low)
                    summary.append(
                        f"each extra app head at a {depth} cut ({cut}, a{alpha} {size}px, {engine}): "
                        f"~{per_head:.1f} MiB (head weights {weights[cut]:.1f} MiB fp32)"
                    )

    if "cameras" in sections:
        for camera_size in CAMERA_SIZES:
            url = f"synthetic://?fps=10&size={camera_size}"
            by_count = {}
            for count in CAMERA_COUNTS:
                by_count[count] = measure(
                    f"{count} synthetic camera(s) {camera_size}, queue default",
                    "cameras",
                    *[url] * count,
                )
                rows.append(
                    (by_count[count].what, by_count[count].after, by_count[count].delta_mib)
                )
            low, high = CAMERA_COUNTS[0], CAMERA_COUNTS[-1]
            per_camera = (by_count[high].delta_mib - by_count[low].delta_mib) / (high - low)
            width, height = (int(side) for side in camera_size.split("x"))
            queue_size = by_count[low].facts["queue_size"]
            summary.append(
                f"each extra camera at {camera_size}: ~{per_camera:.1f} MiB "
                f"(a full queue of {queue_size} frames is {queue_size * width * height * 3 / MIB:.1f} MiB; "
                f"first camera incl. one-off costs: {by_count[low].delta_mib:.1f} MiB; "
                f"queue depths {by_count[high].facts['queue_depths']})"
            )
        with tempfile.TemporaryDirectory(prefix="mainstream-memory-") as video_dir:
            width, height = FILE_CAMERA_SIZE
            video = str(Path(video_dir) / "clip.mp4")
            write_video(video, width, height)
            by_count = {}
            for count in FILE_CAMERA_COUNTS:
                by_count[count] = measure(
                    f"{count} file camera(s) {width}x{height} mp4v, queue default",
                    "cameras",
                    *[video] * count,
                )
                rows.append(
                    (by_count[count].what, by_count[count].after, by_count[count].delta_mib)
                )
            low, high = FILE_CAMERA_COUNTS[0], FILE_CAMERA_COUNTS[-1]
            per_camera = (by_count[high].delta_mib - by_count[low].delta_mib) / (high - low)
            summary.append(
                f"each extra file camera decoding {width}x{height} MPEG-4: ~{per_camera:.1f} MiB "
                f"(first one incl. FFmpeg libraries: {by_count[low].delta_mib:.1f} MiB, "
                f"queue depths {by_count[high].facts['queue_depths']})"
            )

    print()
    print_table(rows)
    print()
    for line in summary:
        print(f"- {line}")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
