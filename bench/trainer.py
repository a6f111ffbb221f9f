"""Trainer benchmark: stem-feature caching, and Selective-Backprop against standard training.

1. Caching. Builds the candidates of one app (5 spread-out cut points, "input" to the deepest)
   from a labelled synthetic video, once naive (images through the whole network every epoch)
   and once on cached stem features. Reports wall time per candidate and in total, and the
   held-out accuracy of each candidate in both modes (they should agree within 1 point).
   The "input" candidate trains the whole network in both modes (there is no frozen stem to
   cache), so the table also gives the total over the candidates that do share a stem.
2. Selective-Backprop. On cached features at one cut point, trains with the standard loop and
   with Selective-Backprop (beta 3, history 1024) for several seeds. For each seed, the target
   is the standard run's final held-out accuracy; the table gives the backward passes
   (examples backpropagated) and training time each strategy needed to first reach it.

The base is a random MobileNet whose BatchNorm statistics are fitted to the video (no
pretrained weights offline). Run: `python bench/trainer.py [--quick]` (or
`python -m bench.trainer`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mainstream.bases import BaseConfig
    from trainer.finetune import FinetuneResult
    from trainer.selective_backprop import TrainingCounters

# Run as `python bench/trainer.py`, this file's folder comes first on the import path and its
# name would hide the `trainer` package; the project's modules are imported inside functions.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]


@dataclass
class Data:
    config: BaseConfig
    base: Any
    train: Any
    held_out: Any


def prepare(duration_s: float, input_size: int, alpha: float, folder: Path) -> Data:
    """A labelled synthetic video (trains among cars and buses), split by time, and a base."""
    import keras

    from mainstream.bases import BaseConfig, build_base, preprocess
    from trainer.datasets import load_labelled_video, split_by_time
    from trainer.finetune import calibrate_batchnorm
    from trainer.synth import SynthConfig, generate_video

    video_path, labels_path = folder / "bench.avi", folder / "bench.csv"
    # Trains are the events; cars and buses cross too, as look-alike negatives.
    synth = SynthConfig(
        duration_s=duration_s,
        fps=10,
        event_length_s=2.0,
        event_frequency=0.3,
        distractor_kinds=["car", "bus"],
        distractor_frequency=0.3,
        noise=0.05,
        seed=5,
    )
    generate_video(video_path, labels_path, synth, show_progress=False)
    video = load_labelled_video(
        video_path, labels_path, input_size, positive_label="train", show_progress=False
    )
    train, held_out = split_by_time(video, validation_fraction=0.25)
    config = BaseConfig("mobilenet_v1", input_size=input_size, alpha=alpha)
    keras.utils.set_random_seed(0)
    base = build_base(config)
    sample = train.images[np.linspace(0, len(train) - 1, 32).astype(int)]
    calibrate_batchnorm(base, preprocess(config, sample))
    return Data(config, base, train, held_out)


def caching_benchmark(data: Data, epochs: int, batch_size: int, candidates: int) -> None:
    from mainstream.bases import spread_cut_points
    from trainer.finetune import FinetuneOptions, finetune_candidates
    from trainer.selective_backprop import TrainingOptions

    cuts = spread_cut_points(data.config, data.base, candidates)
    # Warm up TensorFlow (thread pools, kernels) so that neither mode pays for it.
    finetune_candidates(
        data.base,
        data.config,
        cuts[-1:],
        data.train,
        data.held_out,
        data.train.class_names[1],
        FinetuneOptions(training=TrainingOptions(epochs=1), progress=False),
    )
    runs: dict[str, FinetuneResult] = {}
    for mode, cache in (("naive", False), ("cached", True)):
        options = FinetuneOptions(
            training=TrainingOptions(epochs=epochs, batch_size=batch_size, learning_rate=0.003),
            cache=cache,
            progress=False,
        )
        started = time.perf_counter()
        runs[mode] = finetune_candidates(
            data.base,
            data.config,
            cuts,
            data.train,
            data.held_out,
            data.train.class_names[1],
            options,
        )
        runs[mode].wall_time_s = time.perf_counter() - started

    naive, cached = runs["naive"], runs["cached"]
    print(
        f"\n1. Building a {len(cuts)}-candidate package: naive vs cached stem features "
        f"({len(data.train)} training / {len(data.held_out)} held-out frames, {epochs} epochs, "
        f"batch {batch_size}, {data.config.name} alpha {data.config.alpha} "
        f"{data.config.input_size}px)"
    )
    print(
        f"{'cut point':<18} {'naive s':>8} {'cached s':>9} {'speed-up':>9} "
        f"{'naive acc':>10} {'cached acc':>11} {'diff pts':>9}"
    )
    for slow, fast in zip(naive.candidates, cached.candidates, strict=True):
        difference = 100 * (fast.quality.accuracy - slow.quality.accuracy)
        print(
            f"{slow.cut_point:<18} {slow.wall_time_s:>8.1f} {fast.wall_time_s:>9.1f} "
            f"{slow.wall_time_s / fast.wall_time_s:>8.1f}x {slow.quality.accuracy:>10.3f} "
            f"{fast.quality.accuracy:>11.3f} {difference:>+9.1f}"
        )
    print(f"{'stem pass (cached)':<18} {'':>8} {cached.stem_seconds:>9.1f}")
    print(
        f"{'TOTAL':<18} {naive.wall_time_s:>8.1f} {cached.wall_time_s:>9.1f} "
        f"{naive.wall_time_s / cached.wall_time_s:>8.1f}x"
    )
    shared = [index for index, cut in enumerate(cuts) if cut != "input"]
    naive_shared = sum(naive.candidates[i].wall_time_s for i in shared)
    cached_shared = cached.stem_seconds + sum(cached.candidates[i].wall_time_s for i in shared)
    print(
        f"{'stem-sharing only':<18} {naive_shared:>8.1f} {cached_shared:>9.1f} "
        f"{naive_shared / cached_shared:>8.1f}x   (the {len(shared)} candidates with a frozen "
        "stem, stem pass included)"
    )


@dataclass
class Reached:
    backward: int | None
    seconds: float | None
    final_accuracy: float
    total_backward: int
    total_seconds: float


def first_reaching(counters: TrainingCounters, target: float) -> Reached:
    for checkpoint in counters.checkpoints:
        if checkpoint.validation_accuracy >= target - 1e-9:
            return Reached(
                checkpoint.examples_backpropagated,
                checkpoint.train_seconds,
                counters.checkpoints[-1].validation_accuracy,
                counters.examples_backpropagated,
                counters.train_seconds,
            )
    return Reached(
        None,
        None,
        counters.checkpoints[-1].validation_accuracy,
        counters.examples_backpropagated,
        counters.train_seconds,
    )


def selective_backprop_benchmark(
    data: Data, cut: str, epochs: int, batch_size: int, seeds: int, evaluate_every_steps: int = 4
) -> None:
    from trainer.finetune import FinetuneOptions, finetune_candidates
    from trainer.selective_backprop import TrainingOptions

    print(
        f"\n2. Standard vs Selective-Backprop (beta 3, R 1024) at {cut}, cached features, "
        f"{epochs} epochs, batch {batch_size}; target = the standard run's final held-out "
        "accuracy"
    )
    print(
        f"{'seed':>4} {'strategy':<19} {'final acc':>9} {'target':>7} {'backward to target':>19} "
        f"{'s to target':>12} {'backward total':>15} {'train s':>8}"
    )
    finals: dict[str, list[float]] = {"standard": [], "selective-backprop": []}
    totals: dict[str, list[int]] = {"standard": [], "selective-backprop": []}
    to_target: list[tuple[Reached, Reached]] = []
    for seed in range(seeds):
        results = {}
        for strategy in ("standard", "selective-backprop"):
            options = FinetuneOptions(
                training=TrainingOptions(
                    epochs=epochs,
                    batch_size=batch_size,
                    learning_rate=0.003,
                    strategy=strategy,
                    seed=seed,
                ),
                progress=False,
            )
            result = finetune_candidates(
                data.base,
                data.config,
                [cut],
                data.train,
                data.held_out,
                data.train.class_names[1],
                options,
                evaluate_during_training=True,
                evaluate_every_steps=evaluate_every_steps,
            )
            results[strategy] = result.candidates[0].counters
        target = results["standard"].checkpoints[-1].validation_accuracy
        reached = {name: first_reaching(c, target) for name, c in results.items()}
        for name, outcome in reached.items():
            backward = "not reached" if outcome.backward is None else str(outcome.backward)
            seconds = "-" if outcome.seconds is None else f"{outcome.seconds:.2f}"
            print(
                f"{seed:>4} {name:<19} {outcome.final_accuracy:>9.3f} {target:>7.3f} "
                f"{backward:>19} {seconds:>12} {outcome.total_backward:>15} "
                f"{outcome.total_seconds:>8.2f}"
            )
            finals[name].append(outcome.final_accuracy)
            totals[name].append(outcome.total_backward)
        if reached["selective-backprop"].backward is not None:
            to_target.append((reached["standard"], reached["selective-backprop"]))
    print(
        f"mean final accuracy: standard {np.mean(finals['standard']):.3f}, "
        f"selective-backprop {np.mean(finals['selective-backprop']):.3f}; backward passes in "
        f"all: {np.mean(totals['standard']):.0f} vs {np.mean(totals['selective-backprop']):.0f}"
    )
    if to_target:
        standard_backward = np.mean([pair[0].backward or 0 for pair in to_target])
        selective_backward = np.mean([pair[1].backward or 0 for pair in to_target])
        standard_seconds = np.mean([pair[0].seconds or 0.0 for pair in to_target])
        selective_seconds = np.mean([pair[1].seconds or 0.0 for pair in to_target])
        print(
            f"to reach the standard run's final accuracy ({len(to_target)}/{seeds} seeds "
            f"reached it): backward passes {standard_backward:.0f} (standard) vs "
            f"{selective_backward:.0f} (selective-backprop), training time "
            f"{standard_seconds:.2f} s vs {selective_seconds:.2f} s"
        )
    else:
        print(f"Selective-Backprop did not reach the standard accuracy in any of {seeds} seeds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smaller run (smoke test).")
    parser.add_argument("--duration", type=float, default=48.0, help="Video seconds (10 fps).")
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=3, help="Epochs of the caching run.")
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--sb-cut", default="conv_pw_6_relu")
    parser.add_argument("--sb-epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    if args.quick:
        args.duration, args.epochs, args.sb_epochs, args.seeds = 16.0, 1, 2, 1
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mainstream-bench-") as folder:
        data = prepare(args.duration, args.input_size, args.alpha, Path(folder))
    caching_benchmark(data, args.epochs, args.batch_size, args.candidates)
    selective_backprop_benchmark(data, args.sb_cut, args.sb_epochs, args.batch_size, args.seeds)
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
