"""Trainer benchmark: stem-feature caching, and Selective-Backprop against standard training.

1. Caching. Builds the candidates of one app from a labelled synthetic video, once naive (every
   candidate trained end to end from the images, the frozen layers recomputed every epoch, as
   the original system did) and once on cached stem features (one multi-output pass of the
   frozen base gives the features at every cut; each candidate trains only its suffix). Same
   epochs, batch size, optimizer, data and seed in both modes. The candidates are the default
   `--freeze-points 5` set (five frozen depths) plus the fully unfrozen "input" candidate,
   which trains from the images in both modes; totals are given without and with it. Times
   are wall seconds and CPU seconds of the process: other work on a shared machine inflates
   wall time, CPU time much less, so the CPU ratio is the steadier figure. Held-out accuracy
   of each candidate is given in both modes (they should agree within 1 point).
2. Selective-Backprop. On cached features at one cut point, trains with the standard loop and
   with Selective-Backprop in a few settings (beta, warm-up epochs on every example) for
   several seeds; Selective-Backprop gets `--sb-epoch-factor` times the epochs, as it skips
   most backward passes. For each seed, the target is the standard run's final held-out
   accuracy; the table gives the backward passes (examples backpropagated), forward passes
   and training time each run needed to first reach it.

3. Package. Naive vs cached + warm start (deepest candidate first, each shallower one starting
   from the next deeper one's trained layers) + early stop on a held-out plateau + a strategy
   (`--package-strategy`), per candidate: wall time, epochs run, held-out accuracy.
4. Pretraining from scratch. A 10-class synthetic image set, each strategy against standard
   training: time to standard's final accuracy, final accuracy, passes; an accuracy-vs-time
   PNG (`--plot`).

The base is a random MobileNet whose BatchNorm statistics are fitted to the video (no
pretrained weights offline). Run: `python bench/trainer.py [--quick]` (or
`python -m bench.trainer`).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mainstream.core.bases import BaseConfig
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

    from mainstream.core.bases import BaseConfig, calibrated_base
    from trainer.datasets import load_labelled_video, split_by_time
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
    base = calibrated_base(config, train.images[np.linspace(0, len(train) - 1, 32).astype(int)])
    return Data(config, base, train, held_out)


def caching_benchmark(
    data: Data, epochs: int, batch_size: int, candidates: int, rounds: int = 2
) -> None:
    """Naive and cached builds of the same candidates, `rounds` times in alternating order.

    Each figure is the fastest of the rounds (the least disturbed by other work on the
    machine); the order alternates (naive first, then cached first) so that neither mode
    always runs on a warmer or quieter machine.
    """
    from trainer.finetune import FinetuneOptions, finetune_candidates
    from trainer.pipeline import default_freeze_points
    from trainer.selective_backprop import TrainingOptions

    frozen_cuts = default_freeze_points(data.config, data.base, candidates)
    cuts = ["input", *frozen_cuts]
    positive = data.train.class_names[1]
    # Warm up TensorFlow (thread pools, kernels) so that neither mode pays for it.
    for cache in (False, True):
        finetune_candidates(
            data.base,
            data.config,
            frozen_cuts[-1:],
            data.train,
            data.held_out,
            positive,
            FinetuneOptions(training=TrainingOptions(epochs=1), cache=cache, progress=False),
        )
    runs: dict[str, list[FinetuneResult]] = {"naive": [], "cached": []}
    for round_index in range(rounds):
        modes = ["naive", "cached"] if round_index % 2 == 0 else ["cached", "naive"]
        for mode in modes:
            options = FinetuneOptions(
                training=TrainingOptions(epochs=epochs, batch_size=batch_size, learning_rate=0.003),
                cache=mode == "cached",
                progress=False,
            )
            runs[mode].append(
                finetune_candidates(
                    data.base, data.config, cuts, data.train, data.held_out, positive, options
                )
            )

    def fastest(mode: str, index: int) -> tuple[float, float]:
        return (
            min(run.candidates[index].wall_time_s for run in runs[mode]),
            min(run.candidates[index].cpu_seconds for run in runs[mode]),
        )

    def total(mode: str, with_input: bool) -> tuple[float, float]:
        def one(run: FinetuneResult) -> tuple[float, float]:
            chosen = [c for c in run.candidates if with_input or c.cut_point != "input"]
            return (
                run.stem_seconds + sum(c.wall_time_s for c in chosen),
                run.stem_cpu_seconds + sum(c.cpu_seconds for c in chosen),
            )

        per_round = [one(run) for run in runs[mode]]
        return min(wall for wall, _ in per_round), min(cpu for _, cpu in per_round)

    print(
        f"\n1. Building the candidates: naive vs cached stem features ({len(data.train)} "
        f"training / {len(data.held_out)} held-out frames, {epochs} epochs, batch {batch_size}, "
        f"Adam 0.003, {data.config.name} alpha {data.config.alpha} {data.config.input_size}px; "
        f"fastest of {rounds} alternating rounds; wall s and CPU s of the process)"
    )
    print(
        f"{'cut point':<24} {'naive s':>8} {'cached s':>9} {'wall x':>7} {'naive cpu':>10} "
        f"{'cached cpu':>11} {'cpu x':>6} {'naive acc':>10} {'cached acc':>11} {'diff pts':>9}"
    )

    def row(label: str, slow: tuple[float, float], fast: tuple[float, float], tail: str) -> None:
        print(
            f"{label:<24} {slow[0]:>8.1f} {fast[0]:>9.1f} {slow[0] / fast[0]:>6.2f}x "
            f"{slow[1]:>10.1f} {fast[1]:>11.1f} {slow[1] / fast[1]:>5.2f}x {tail}"
        )

    differences = []
    naive, cached = runs["naive"][0], runs["cached"][0]
    for index, (slow, fast) in enumerate(zip(naive.candidates, cached.candidates, strict=True)):
        difference = 100 * (fast.quality.accuracy - slow.quality.accuracy)
        if slow.cut_point != "input":
            differences.append(difference)
        row(
            slow.cut_point,
            fastest("naive", index),
            fastest("cached", index),
            f"{slow.quality.accuracy:>10.3f} {fast.quality.accuracy:>11.3f} {difference:>+9.1f}",
        )
    print(
        f"{'stem pass (cached, once)':<24} {'':>8} "
        f"{min(run.stem_seconds for run in runs['cached']):>9.1f} {'':>7} {'':>10} "
        f"{min(run.stem_cpu_seconds for run in runs['cached']):>11.1f}"
    )
    row(
        f"TOTAL {len(frozen_cuts)} frozen (default)",
        total("naive", False),
        total("cached", False),
        f"{'':>10} {'':>11} {max(differences, key=abs):>+9.1f} (largest difference)",
    )
    row(f"TOTAL input + {len(frozen_cuts)} frozen", total("naive", True), total("cached", True), "")
    # Caching removes the frozen stem's work and nothing else: even a free stem pass leaves
    # each candidate's own suffix training, which bounds the package's speed-up.
    naive_wall = total("naive", False)[0]
    suffix_only = total("cached", False)[0] - min(run.stem_seconds for run in runs["cached"])
    print(
        f"upper bound of caching for these {len(frozen_cuts)} cut points (stem pass free, suffix "
        f"training only): {naive_wall / suffix_only:.2f}x"
    )
    accuracies = {
        (mode, run_index): [c.quality.accuracy for c in run.candidates]
        for mode, mode_runs in runs.items()
        for run_index, run in enumerate(mode_runs)
    }
    if len({tuple(values) for values in accuracies.values()}) > 1:
        print(f"note: held-out accuracies differ between rounds or modes: {accuracies}")


@dataclass
class Reached:
    """When a run first reached the target accuracy (None: never), and what it cost in all."""

    backward: int | None
    forward: int | None
    seconds: float | None
    cpu_seconds: float | None
    final_accuracy: float
    total_backward: int
    total_seconds: float


def first_reaching(counters: TrainingCounters, target: float) -> Reached:
    final = counters.checkpoints[-1].validation_accuracy
    for checkpoint in counters.checkpoints:
        if checkpoint.validation_accuracy >= target - 1e-9:
            return Reached(
                checkpoint.examples_backpropagated,
                checkpoint.examples_forwarded,
                checkpoint.train_seconds,
                checkpoint.train_cpu_seconds,
                final,
                counters.examples_backpropagated,
                counters.train_seconds,
            )
    return Reached(
        None, None, None, None, final, counters.examples_backpropagated, counters.train_seconds
    )


@dataclass(frozen=True)
class Setting:
    name: str
    strategy: str
    beta: float = 3.0
    unselective_epochs: int = 1


SETTINGS = (
    Setting("standard", "standard"),
    Setting("SB beta 3, warm-up 1", "selective-backprop", 3.0, 1),
    Setting("SB beta 3, no warm-up", "selective-backprop", 3.0, 0),
    Setting("SB beta 1, warm-up 1", "selective-backprop", 1.0, 1),
    Setting("SB thesis eps 0.1, wu 1", "selective-backprop-thesis", 3.0, 1),
    Setting("Stale-SB beta 3, wu 1", "stale-selective-backprop", 3.0, 1),
)

CANNOT_PAY = (
    "where a technique cannot pay: on cached features with a head-only (or short) suffix the "
    "forward pass is most of a step, so Selective-Backprop (a scoring forward pass per example) "
    "costs more wall time than it saves; Stale-SB skips that pass but a backward pass through "
    "a tiny head saves little either. They are meant for base pretraining from scratch and the "
    "shallow candidates, where backward passes through many trainable layers dominate."
)


def selective_backprop_benchmark(
    data: Data,
    cut: str,
    epochs: int,
    batch_size: int,
    seeds: int,
    epoch_factor: int = 3,
    evaluate_every_steps: int = 4,
) -> None:
    """Standard training for `epochs`; Selective-Backprop for `epoch_factor` times as many.

    Selective-Backprop skips most backward passes, so (as in the paper) it is given more
    epochs; what is compared is the work needed to reach the standard run's final accuracy.
    """
    from trainer.finetune import build_candidate, make_predictor, stem_features
    from trainer.selective_backprop import ArraySource, TrainingOptions, train_model

    # One stem pass for every run: the runs differ only in how the suffix is trained.
    both = np.concatenate([data.train.images, data.held_out.images])
    features = stem_features(data.base, [cut], both, data.config)[cut]
    train_features = ArraySource(features[: len(data.train)])
    held_out_features = features[len(data.train) :]
    class_count = len(data.train.class_names)
    print(
        f"\n2. Standard vs Selective-Backprop (history 1024) at {cut}, cached features, standard "
        f"{epochs} epochs, Selective-Backprop (SB) {epoch_factor * epochs} epochs, batch "
        f"{batch_size}, Adam 0.003; target = the standard run's final held-out "
        f"accuracy; evaluated every {evaluate_every_steps} optimizer steps; warm-up = epochs "
        "that backpropagate every example"
    )
    print(
        f"{'seed':>4} {'setting':<24} {'final acc':>9} {'target':>7} {'bwd to target':>14} "
        f"{'fwd to target':>14} {'s to target':>12} {'cpu s to tgt':>13} {'bwd total':>10}"
    )
    outcomes: dict[str, list[Reached]] = {setting.name: [] for setting in SETTINGS}
    for seed in range(seeds):
        results: dict[str, TrainingCounters] = {}
        for setting in SETTINGS:
            candidate = build_candidate(data.base, cut, class_count, seed=seed)
            predict = make_predictor(candidate)

            def accuracy(predict: Any = predict) -> float:
                scores = predict(held_out_features)
                return float((scores.argmax(axis=1) == data.held_out.labels).mean())

            results[setting.name] = train_model(
                candidate,
                train_features,
                data.train.labels,
                TrainingOptions(
                    epochs=epochs if setting.strategy == "standard" else epoch_factor * epochs,
                    batch_size=batch_size,
                    learning_rate=0.003,
                    strategy=setting.strategy,
                    beta=setting.beta,
                    unselective_epochs=setting.unselective_epochs,
                    seed=seed,
                ),
                evaluate=accuracy,
                evaluate_every_steps=evaluate_every_steps,
            )
        target = results["standard"].checkpoints[-1].validation_accuracy
        for name, counters in results.items():
            outcome = first_reaching(counters, target)
            outcomes[name].append(outcome)
            reached = outcome.backward is not None
            print(
                f"{seed:>4} {name:<24} {outcome.final_accuracy:>9.3f} {target:>7.3f} "
                f"{outcome.backward if reached else 'not reached':>14} "
                f"{outcome.forward if reached else '-':>14} "
                f"{f'{outcome.seconds:.2f}' if reached else '-':>12} "
                f"{f'{outcome.cpu_seconds:.2f}' if reached else '-':>13} "
                f"{outcome.total_backward:>10}"
            )
    print(CANNOT_PAY)
    print(
        "\nmeans over seeds (to-target figures over the seeds that reached the target; "
        "standard over the same seeds in brackets):"
    )
    for name, runs in outcomes.items():
        reached_seeds = [index for index, run in enumerate(runs) if run.backward is not None]
        line = (
            f"  {name:<24} final acc {np.mean([run.final_accuracy for run in runs]):.3f}, "
            f"backward in all {np.mean([run.total_backward for run in runs]):.0f}, "
            f"reached {len(reached_seeds)}/{len(runs)}"
        )
        if reached_seeds:
            standard = [outcomes["standard"][index] for index in reached_seeds]
            mine = [runs[index] for index in reached_seeds]

            def mean(values: list[Any]) -> float:
                return float(np.mean(values))

            line += (
                f"; to target: backward {mean([r.backward for r in mine]):.0f} "
                f"[{mean([r.backward for r in standard]):.0f}], forward "
                f"{mean([r.forward for r in mine]):.0f} [{mean([r.forward for r in standard]):.0f}]"
                f", cpu s {mean([r.cpu_seconds for r in mine]):.2f} "
                f"[{mean([r.cpu_seconds for r in standard]):.2f}], wall s "
                f"{mean([r.seconds for r in mine]):.2f} [{mean([r.seconds for r in standard]):.2f}]"
            )
        print(line)


def fast_package_benchmark(
    data: Data, epochs: int, batch_size: int, candidates: int, strategy: str, patience: int
) -> None:
    """Naive vs cached + warm start (deepest first) + early stop on a held-out plateau."""
    from trainer.finetune import FinetuneOptions, finetune_candidates
    from trainer.pipeline import default_freeze_points
    from trainer.selective_backprop import TrainingOptions

    cuts = default_freeze_points(data.config, data.base, candidates)
    positive = data.train.class_names[1]
    finetune_candidates(  # warm-up of TensorFlow, for neither run to pay for it
        data.base,
        data.config,
        cuts[-1:],
        data.train,
        data.held_out,
        positive,
        FinetuneOptions(training=TrainingOptions(epochs=1), progress=False),
    )

    def build(cache: bool, warm: bool, chosen: str, stop: int | None) -> FinetuneResult:
        training = TrainingOptions(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=0.003,
            strategy=chosen,
            patience=stop,
        )
        options = FinetuneOptions(training=training, cache=cache, progress=False, warm_start=warm)
        return finetune_candidates(
            data.base, data.config, cuts, data.train, data.held_out, positive, options
        )

    naive = build(False, False, "standard", None)
    fast = build(True, True, strategy, patience)
    print(
        f"\n3. Package: naive vs cached + warm start + early stop (patience {patience}) + "
        f"{strategy}; {len(cuts)} candidates, up to {epochs} epochs, batch {batch_size}"
    )
    print(
        f"{'cut point':<24} {'naive s':>8} {'fast s':>7} {'x':>6} {'epochs':>7} "
        f"{'naive acc':>10} {'fast acc':>9} {'diff pts':>9} {'warm from':<18}"
    )
    for slow, quick in zip(naive.candidates, fast.candidates, strict=True):
        difference = 100 * (quick.quality.accuracy - slow.quality.accuracy)
        print(
            f"{slow.cut_point:<24} {slow.wall_time_s:>8.1f} {quick.wall_time_s:>7.1f} "
            f"{slow.wall_time_s / quick.wall_time_s:>5.2f}x {len(quick.counters.epochs):>7} "
            f"{slow.quality.accuracy:>10.3f} {quick.quality.accuracy:>9.3f} {difference:>+9.1f} "
            f"{quick.counters.warm_started_from or '-':<18}"
        )
    naive_total = naive.stem_seconds + sum(c.wall_time_s for c in naive.candidates)
    fast_total = fast.stem_seconds + sum(c.wall_time_s for c in fast.candidates)
    print(
        f"{'TOTAL (stem pass incl.)':<24} {naive_total:>8.1f} {fast_total:>7.1f} "
        f"{naive_total / fast_total:>5.2f}x"
    )
    print(
        "note: early stopping watches the held-out frames that also report accuracy, so the "
        "fast package's held-out accuracy is optimistic by the choice of its best epoch."
    )
    print(CANNOT_PAY)


PRETRAIN_STRATEGIES = (
    "standard",
    "selective-backprop",
    "stale-selective-backprop",
    "intertrain",
)


def pretraining_benchmark(
    images_per_class: int,
    input_size: int,
    alpha: float,
    epochs: int,
    seeds: int,
    epoch_factor: float,
    plot_path: Path,
) -> None:
    """Base pretraining from scratch on 10 synthetic classes: time to standard's final accuracy.

    Standard trains `epochs` epochs; the other strategies get `epoch_factor` times as many (they
    skip or merge examples). Accuracy on a held-out fifth after every epoch (time excluded).
    """
    import keras

    from mainstream.core.bases import BaseConfig, build_base, preprocess
    from trainer.pretrain import FlippedImages, classifier_for_pretraining
    from trainer.selective_backprop import TrainingOptions, train_model
    from trainer.synth import IMAGE_CLASSES, draw_class_image

    rng = np.random.default_rng(11)
    names = list(IMAGE_CLASSES[:10])
    images = np.stack(
        [draw_class_image(name, input_size, rng) for name in names for _ in range(images_per_class)]
    )
    labels = np.repeat(np.arange(len(names)), images_per_class)
    order = rng.permutation(len(labels))
    cut = int(0.8 * len(labels))
    train_index, test_index = order[:cut], order[cut:]
    config = BaseConfig("mobilenet_v1", input_size=input_size, alpha=alpha)
    test_inputs = preprocess(config, images[test_index])
    print(
        f"\n4. Base pretraining from scratch: {len(names)} synthetic classes, {cut} training / "
        f"{len(test_index)} test images, {input_size}px, alpha {alpha}, batch 32, Adam 1e-3; "
        f"standard {epochs} epochs, others {epoch_factor:g}x; target = standard's final accuracy"
    )
    print(
        f"{'seed':>4} {'strategy':<26} {'final acc':>9} {'target':>7} {'s to target':>12} "
        f"{'speed-up':>9} {'fwd':>7} {'bwd':>7} {'merged':>7}"
    )
    curves: dict[str, list[tuple[float, float]]] = {}
    speedups: dict[str, list[float]] = {name: [] for name in PRETRAIN_STRATEGIES}
    finals: dict[str, list[float]] = {name: [] for name in PRETRAIN_STRATEGIES}
    for seed in range(seeds):
        results = {}
        for strategy in PRETRAIN_STRATEGIES:
            keras.utils.set_random_seed(seed)
            body = build_base(config)
            for layer in body.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = 0.9  # as pretrain_base: statistics follow a fast-moving body
            classifier = classifier_for_pretraining(body, len(names))

            def accuracy(classifier: Any = classifier) -> float:
                scores = classifier.predict(test_inputs, batch_size=128, verbose=0)
                return float(np.mean(scores.argmax(axis=1) == labels[test_index]))

            run_epochs = epochs if strategy == "standard" else round(epochs * epoch_factor)
            results[strategy] = train_model(
                classifier,
                FlippedImages(config, images[train_index], seed),
                labels[train_index],
                TrainingOptions(
                    epochs=run_epochs,
                    batch_size=32,
                    learning_rate=1e-3,
                    strategy=strategy,
                    seed=seed,
                    batch_norm_training=True,
                ),
                evaluate=accuracy,
            )
        target = results["standard"].checkpoints[-1].validation_accuracy
        # Standard's own time to its final accuracy (it may get there before its last epoch).
        standard_time = first_reaching(results["standard"], target).seconds or float("nan")
        for strategy, counters in results.items():
            reached = first_reaching(counters, target)
            speedup = standard_time / reached.seconds if reached.seconds else float("nan")
            speedups[strategy].append(speedup)
            finals[strategy].append(reached.final_accuracy)
            merged = sum(epoch.examples_interpolated for epoch in counters.epochs)
            print(
                f"{seed:>4} {strategy:<26} {reached.final_accuracy:>9.3f} {target:>7.3f} "
                f"{f'{reached.seconds:.1f}' if reached.seconds else 'not reached':>12} "
                f"{speedup:>8.2f}x {counters.examples_forwarded:>7} "
                f"{counters.examples_backpropagated:>7} {merged:>7}"
            )
            if seed == 0:
                curves[strategy] = [
                    (checkpoint.train_seconds, checkpoint.validation_accuracy)
                    for checkpoint in counters.checkpoints
                ]
    print("means over seeds (speed-up to standard's final accuracy; nan = not reached):")
    for strategy in PRETRAIN_STRATEGIES:
        print(
            f"  {strategy:<26} speed-up {np.nanmean(speedups[strategy]):.2f}x "
            f"(reached {int(np.sum(np.isfinite(speedups[strategy])))}/{seeds}), final acc "
            f"{np.mean(finals[strategy]):.3f} vs standard {np.mean(finals['standard']):.3f}"
        )
    write_accuracy_plot(curves, plot_path)
    print(f"accuracy vs training time (seed 0): {plot_path}")


def write_accuracy_plot(curves: dict[str, list[tuple[float, float]]], path: Path) -> None:
    """A small PNG line plot of accuracy against seconds (OpenCV; no plotting library needed)."""
    import cv2

    width, height, margin = 720, 440, 60
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    longest = max((t for curve in curves.values() for t, _ in curve), default=1.0) or 1.0
    colours = [(200, 60, 40), (40, 140, 40), (40, 60, 200), (160, 40, 160), (0, 140, 200)]

    def point(seconds: float, accuracy: float) -> tuple[int, int]:
        x = margin + int((width - 2 * margin) * seconds / longest)
        y = height - margin - int((height - 2 * margin) * accuracy)
        return x, y

    cv2.line(canvas, point(0, 0), point(longest, 0), (0, 0, 0), 1)
    cv2.line(canvas, point(0, 0), point(0, 1), (0, 0, 0), 1)
    for tick in (0.0, 0.5, 1.0):
        cv2.putText(canvas, f"{tick:.1f}", (10, point(0, tick)[1] + 5), 0, 0.4, (0, 0, 0), 1)
    cv2.putText(
        canvas, f"{longest:.0f} s", (width - margin - 30, height - 35), 0, 0.4, (0, 0, 0), 1
    )
    cv2.putText(canvas, "held-out accuracy vs training seconds", (margin, 30), 0, 0.5, (0, 0, 0))
    for index, (name, curve) in enumerate(curves.items()):
        colour = colours[index % len(colours)]
        points = [point(0, 0), *(point(t, a) for t, a in curve)]
        for start, end in itertools.pairwise(points):
            cv2.line(canvas, start, end, colour, 2)
        cv2.putText(canvas, name, (margin + 10, 55 + 18 * index), 0, 0.45, colour, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smaller run (smoke test).")
    parser.add_argument("--duration", type=float, default=48.0, help="Video seconds (10 fps).")
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=3, help="Epochs of the caching run.")
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="Naive/cached rounds (fastest).")
    parser.add_argument("--sb-cut", default="conv_pw_6_relu")
    parser.add_argument("--sb-epochs", type=int, default=8)
    parser.add_argument(
        "--sb-epoch-factor", type=int, default=3, help="Selective-Backprop epochs / standard's."
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--part", choices=["all", "caching", "sb", "package", "pretrain"], default="all"
    )
    parser.add_argument("--pretrain-per-class", type=int, default=500, help="Images per class.")
    parser.add_argument("--pretrain-size", type=int, default=64)
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--pretrain-epoch-factor", type=float, default=1.5)
    parser.add_argument(
        "--plot",
        type=Path,
        default=Path(tempfile.gettempdir()) / "mainstream-pretrain-accuracy.png",
        help="Where the pretraining accuracy-vs-time PNG goes.",
    )
    parser.add_argument("--package-strategy", default="standard", help="Fast package strategy.")
    parser.add_argument("--patience", type=int, default=1, help="Fast package early stop.")
    args = parser.parse_args()
    if args.quick:
        # Smaller defaults; flags given on the command line keep their values.
        given = {arg.split("=")[0] for arg in sys.argv[1:] if arg.startswith("--")}
        smaller = {
            "duration": 16.0,
            "epochs": 1,
            "sb_epochs": 2,
            "seeds": 1,
            "rounds": 1,
            "pretrain_per_class": 40,
            "pretrain_epochs": 2,
        }
        for name, value in smaller.items():
            if f"--{name.replace('_', '-')}" not in given:
                setattr(args, name, value)
    if args.part in ("all", "package") and args.package_strategy != "standard" and args.epochs < 2:
        parser.error(f"--package-strategy {args.package_strategy} needs --epochs >= 2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mainstream-bench-") as folder:
        data = prepare(args.duration, args.input_size, args.alpha, Path(folder))
    if args.part in ("all", "caching"):
        caching_benchmark(data, args.epochs, args.batch_size, args.candidates, args.rounds)
    if args.part in ("all", "sb"):
        selective_backprop_benchmark(
            data, args.sb_cut, args.sb_epochs, args.batch_size, args.seeds, args.sb_epoch_factor
        )
    if args.part in ("all", "package"):
        fast_package_benchmark(
            data,
            args.epochs,
            args.batch_size,
            args.candidates,
            args.package_strategy,
            args.patience,
        )
    if args.part in ("all", "pretrain"):
        pretraining_benchmark(
            args.pretrain_per_class,
            args.pretrain_size,
            args.alpha,
            args.pretrain_epochs,
            args.seeds,
            args.pretrain_epoch_factor,
            args.plot,
        )
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
