"""Multi-camera batching benchmark: frames of 1, 2, 4 cameras on one base, batched or one by one.

Every camera runs the same plan on the same base (two apps: one at a middle cut, one at the
last cut, both at the camera rate), so every segment is shared by all cameras. Per tick each
camera offers one frame; "one by one" runs each camera's DAG on its frame in turn, "batched"
runs them together (`process_together`: each shared segment once on a batch of k frames). The
table gives the median wall time per tick divided by the number of cameras (ms per frame).
Run: `python bench/batching.py [--input-size 128 --alpha 0.25 --ticks 30]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Run as `python bench/batching.py`, this folder comes first on the import path and its sibling
# `scheduler.py` / `trainer.py` would hide the packages of the same name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

from edge_runtime.dag import (  # noqa: E402
    CameraDag,
    DagFrame,
    HeadSpec,
    build_camera_dag,
    process_together,
    segment_model,
)
from edge_runtime.engines import compile_model  # noqa: E402

CAMERA_COUNTS = (1, 2, 4)


def build_dags(config: Any, base: Any, cameras: int) -> list[CameraDag]:
    from mainstream.core.bases import (
        cut_output_shape,
        default_cut_points,
        discover_cut_points,
        preprocess,
        untrained_head,
        weights_fingerprint,
    )

    fingerprint = weights_fingerprint(base)
    cuts = default_cut_points(config, base)
    middle, last = cuts[len(cuts) // 2], cuts[-1]
    heads = [
        HeadSpec("middle", middle, 10.0, 1, untrained_head(base, middle, 0), fingerprint),
        HeadSpec("last", last, 10.0, 1, untrained_head(base, last, 1), fingerprint),
    ]
    return [
        build_camera_dag(
            f"cam{index}",
            10.0,
            heads,
            base,
            fingerprint,
            discover_cut_points(base),
            segment_model,
            cut_output_shape,
            lambda model: compile_model(model, "keras"),
            lambda batch: preprocess(config, batch),
        )
        for index in range(cameras)
    ]


def ms_per_frame(dags: list[CameraDag], images: np.ndarray, ticks: int) -> tuple[float, float]:
    """Median ms per frame one by one and batched; the two alternate tick by tick so that a
    busy neighbour slows both alike (every app runs at the camera rate: every tick is due)."""
    samples: dict[bool, list[float]] = {False: [], True: []}
    for tick in range(2 * (ticks + 3)):  # the first ticks of each compile and warm up
        batched = tick % 2 == 1
        frames = [
            DagFrame(dag, images[(tick + offset) % len(images)], tick, tick / 10)
            for offset, dag in enumerate(dags)
        ]
        started = time.perf_counter()
        if batched:
            process_together(frames)
        else:
            for frame in frames:
                frame.dag.process(frame.image, frame.frame_index, frame.timestamp)
        if tick >= 6:
            samples[batched].append((time.perf_counter() - started) * 1000.0 / len(dags))
    return statistics.median(samples[False]), statistics.median(samples[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--ticks", type=int, default=30)
    args = parser.parse_args()

    from mainstream.core.bases import BaseConfig, build_base

    config = BaseConfig("mobilenet_v1", input_size=args.input_size, alpha=args.alpha)
    base = build_base(config)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, args.input_size, args.input_size, 3), dtype=np.uint8)

    print(
        f"mobilenet_v1 alpha {args.alpha} {args.input_size} px, 2 apps per camera, keras engine, "
        f"median of {args.ticks} ticks"
    )
    print(f"{'cameras':>7} {'one by one ms/frame':>20} {'batched ms/frame':>17} {'speed-up':>9}")
    for cameras in CAMERA_COUNTS:
        separate, together = ms_per_frame(build_dags(config, base, cameras), images, args.ticks)
        print(f"{cameras:>7} {separate:>20.2f} {together:>17.2f} {separate / together:>8.2f}x")


if __name__ == "__main__":
    main()
