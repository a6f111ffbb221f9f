"""The shared-stem DAG executor (DESIGN §6).

One DAG per (camera, base model). The base network is cut at every cut point some app uses;
the pieces between consecutive cuts are *segments*, chained from the input. An app's head (its
specialised suffix from the package) hangs off the segment that ends at its cut point. Each node
selects frames with a nested rate accumulator, so a segment runs on a frame only when some app
below it wants that frame, and at exactly the highest rate among those apps.

Frames of several cameras can be analysed together (:func:`process_together`): a segment that
several cameras' DAGs run on the same base, between the same cut points, runs once on the
batch of their frames instead of once per camera.

The heads that hang off one segment can also be compiled into one fused model (`fuse_heads`):
on a frame that every one of them analyses, one call runs them all, which saves the per-call
overhead and lets the engine run the heads in parallel. The last segment of the chain can
likewise be compiled together with its heads (`fuse_segment`), so that a frame every app
analyses goes from the previous cut to all scores in one call. On other frames each due head
runs alone, so every app still analyses exactly the frames its rate selects.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from edge_runtime.engines import CompiledModel
from edge_runtime.rate import RateAccumulator
from mainstream.core.bases import split_model
from mainstream.core.errors import ModelError

INPUT_CUT = "input"


@dataclass(frozen=True)
class HeadSpec:
    """What the DAG needs to know about one planned app."""

    app: str
    cut_point: str
    fps: float
    positive_index: int
    model: Any  # keras.Model: input = tensor at the cut, output = class scores
    base_fingerprint: str


@dataclass
class NodeTiming:
    """Measured wall time of one node, for the profiler and re-planning (frames in flight on
    several threads add to it at once)."""

    calls: int = 0
    frames: int = 0
    total_ms: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, elapsed_ms: float, frames: int) -> None:
        with self._lock:
            self.calls += 1
            self.frames += frames
            self.total_ms += elapsed_ms

    @property
    def ms_per_frame(self) -> float:
        return self.total_ms / self.frames if self.frames else 0.0


@dataclass
class HeadNode:
    spec: HeadSpec
    run: CompiledModel
    selector: RateAccumulator
    timing: NodeTiming = field(default_factory=NodeTiming)


@dataclass
class SegmentNode:
    """Base layers from `start_cut` to `end_cut`; `run` is None for the input pseudo-segment."""

    start_cut: str
    end_cut: str
    rate: float
    run: CompiledModel | None
    selector: RateAccumulator
    heads: list[HeadNode] = field(default_factory=list)
    child: SegmentNode | None = None
    timing: NodeTiming = field(default_factory=NodeTiming)
    # All of `heads` in one call: their scores side by side, `fused_widths` columns each.
    fused_heads: CompiledModel | None = None
    fused_widths: tuple[int, ...] = ()
    fused_calls: int = 0
    # The segment and all of `heads` in one call (the last segment only: its output is the
    # heads' scores side by side). `fused_shares`: how its time is split between the segment
    # and each head, in proportion to their own calls' times measured at warm-up.
    fused_segment: CompiledModel | None = None
    fused_shares: tuple[float, ...] = ()
    fused_segment_calls: int = 0

    @property
    def name(self) -> str:
        return f"{self.start_cut}->{self.end_cut}"


@dataclass(frozen=True)
class AppScore:
    app: str
    frame_index: int
    timestamp: float
    score: float


class CameraDag:
    """Runs one camera's frames through the shared segments and the apps' heads.

    `base_fingerprint` names the base weights; DAGs of the same base may batch their segments
    (empty: never batched with another DAG).
    """

    def __init__(
        self,
        camera: str,
        camera_fps: float,
        root: SegmentNode,
        preprocess: Callable[[np.ndarray], np.ndarray],
        base_fingerprint: str = "",
    ) -> None:
        self.camera = camera
        self.camera_fps = camera_fps
        self.root = root
        self.preprocess = preprocess
        self.base_fingerprint = base_fingerprint
        self.frames_seen = 0

    def segments(self) -> list[SegmentNode]:
        return _chain(self.root)

    def heads(self) -> list[HeadNode]:
        return [head for segment in self.segments() for head in segment.heads]

    def process(self, image: np.ndarray, frame_index: int, timestamp: float) -> list[AppScore]:
        """Analyse one camera frame (uint8 RGB); returns a score for each app that analysed it."""
        return process_together([DagFrame(self, image, frame_index, timestamp)])[0]


@dataclass(frozen=True)
class DagFrame:
    """One camera frame offered to its camera's DAG."""

    dag: CameraDag
    image: np.ndarray  # uint8 RGB at the base's input size
    frame_index: int
    timestamp: float


# What one frame runs: the segments its rate selectors chose, each with the heads due on it.
FrameWork = list[tuple[SegmentNode, list[HeadNode]]]


def process_together(frames: Sequence[DagFrame]) -> list[list[AppScore]]:
    """Analyse one frame of each of several DAGs; the scores of each frame, in order.

    Every DAG selects frames exactly as it would alone. The DAGs walk their chains in step; at
    each step the segments due on the same base between the same cut points (and with the same
    tensor shape) run once on the stacked tensors of their frames, and the results are split
    back. Heads are per app and run per frame. A batched call's time is shared evenly among
    the frames in it.
    """
    return run_selected(frames, select_together(frames))


def select_together(frames: Sequence[DagFrame]) -> list[FrameWork]:
    """Decide, in frame order, what each frame runs (the rate selectors' state moves here).

    Split from :func:`run_selected` so that a runtime with several frames in flight can take
    the decisions in the cameras' frame order and run the frames at the same time.
    """
    work: list[FrameWork] = []
    for item in frames:
        item.dag.frames_seen += 1
        steps: FrameWork = []
        segment: SegmentNode | None = item.dag.root
        while segment is not None and segment.selector.offer():
            steps.append((segment, [head for head in segment.heads if head.selector.offer()]))
            segment = segment.child
        work.append(steps)
    return work


def run_selected(frames: Sequence[DagFrame], work: Sequence[FrameWork]) -> list[list[AppScore]]:
    """Run what :func:`select_together` chose; safe to call from several threads at once
    when the compiled models are (each OpenVINO call takes its own infer request)."""
    scores: list[list[AppScore]] = [[] for _ in frames]
    active: list[tuple[int, int, np.ndarray | None]] = [
        (position, 0, None) for position in range(len(frames)) if work[position]
    ]
    while active:
        groups: dict[tuple[object, ...], list[tuple[int, int, np.ndarray | None]]] = {}
        for position, depth, tensor in active:
            segment, _ = work[position][depth]
            dag = frames[position].dag
            shape = frames[position].image.shape if tensor is None else tensor.shape[1:]
            owner: object = dag.base_fingerprint or id(dag)
            key = (owner, segment.start_cut, segment.end_cut, tuple(shape))
            groups.setdefault(key, []).append((position, depth, tensor))
        active = []
        for members in groups.values():
            position, depth, tensor = members[0]
            segment, due = work[position][depth]
            everything_due = len(due) == len(segment.heads)
            if len(members) == 1 and segment.fused_segment is not None and everything_due:
                assert tensor is not None  # the input node is never fused
                _record(scores[position], frames[position], _run_fused_segment(segment, tensor))
                continue
            outputs = _run_batched([(p, work[p][d][0], t) for p, d, t in members], frames)
            for (position, depth, _), output in zip(members, outputs, strict=True):
                segment, due = work[position][depth]
                _record(scores[position], frames[position], _run_heads(segment, due, output))
                if depth + 1 < len(work[position]):
                    active.append((position, depth + 1, output))
    return scores


def _record(
    scores: list[AppScore], item: DagFrame, results: list[tuple[HeadNode, np.ndarray]]
) -> None:
    for head, probabilities in results:
        score = float(probabilities[0, head.spec.positive_index])
        scores.append(AppScore(head.spec.app, item.frame_index, item.timestamp, score))


def _split_scores(
    heads: list[HeadNode], widths: Sequence[int], combined: np.ndarray
) -> list[tuple[HeadNode, np.ndarray]]:
    """The fused output cut back into each head's class scores."""
    results = []
    offset = 0
    for head, width in zip(heads, widths, strict=True):
        results.append((head, combined[:, offset : offset + width]))
        offset += width
    return results


def _run_fused_segment(
    segment: SegmentNode, tensor: np.ndarray
) -> list[tuple[HeadNode, np.ndarray]]:
    """The segment and every head in one call; its time shared as `fused_shares` says."""
    assert segment.fused_segment is not None
    started = time.perf_counter()
    combined = segment.fused_segment(tensor)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    segment.fused_segment_calls += 1
    nodes = [segment.timing, *(head.timing for head in segment.heads)]
    for timing, share in zip(nodes, segment.fused_shares, strict=True):
        timing.add(elapsed_ms * share, 1)
    return _split_scores(segment.heads, segment.fused_widths, combined)


def _run_heads(
    segment: SegmentNode, due: list[HeadNode], tensor: np.ndarray
) -> list[tuple[HeadNode, np.ndarray]]:
    """Each due head's class scores for one frame: one fused call when every head is due."""
    if segment.fused_heads is not None and len(due) == len(segment.heads) > 1:
        started = time.perf_counter()
        combined = segment.fused_heads(tensor)
        share_ms = (time.perf_counter() - started) * 1000.0 / len(due)
        segment.fused_calls += 1
        for head in due:
            head.timing.add(share_ms, 1)
        return _split_scores(due, segment.fused_widths, combined)
    results = []
    for head in due:
        started = time.perf_counter()
        probabilities = head.run(tensor)
        head.timing.add((time.perf_counter() - started) * 1000.0, 1)
        results.append((head, probabilities))
    return results


def _run_batched(
    members: list[tuple[int, SegmentNode, np.ndarray | None]], frames: Sequence[DagFrame]
) -> list[np.ndarray]:
    """Run one segment once on the frames of `members`; one (1, ...) tensor per member."""
    position, segment, _ = members[0]
    started = time.perf_counter()
    if segment.run is None:  # the input node: prepare the frames
        images = np.stack([frames[p].image for p, _, _ in members])
        batch = frames[position].dag.preprocess(images)
    else:
        inputs = [tensor for _, _, tensor in members]
        assert all(tensor is not None for tensor in inputs)
        stacked = inputs[0] if len(inputs) == 1 else np.concatenate(inputs)  # type: ignore[arg-type]
        batch = segment.run(stacked)  # type: ignore[arg-type]
    share_ms = (time.perf_counter() - started) * 1000.0 / len(members)
    for _, member, _ in members:
        member.timing.add(share_ms, 1)
    return [batch[index : index + 1] for index in range(len(members))]


def build_camera_dag(
    camera: str,
    camera_fps: float,
    heads: Sequence[HeadSpec],
    base_model: Any,
    base_fingerprint: str,
    cut_points_in_order: Sequence[str],
    segment_model: Callable[[Any, str, str], Any],
    cut_shape: Callable[[Any, str], tuple[int, ...]],
    compile_fn: Callable[[Any], CompiledModel],
    preprocess: Callable[[np.ndarray], np.ndarray],
    fuse_heads: Callable[[Sequence[Any]], Any] | None = None,
    fuse_segment: Callable[[Any, Sequence[Any]], Any | None] | None = None,
    warm_up: bool = True,
) -> CameraDag:
    """Build the DAG for one camera; checks fingerprints and tensor shapes before compiling.

    `segment_model(base, start_cut, end_cut)` returns the Keras model of the base between two
    cuts; `cut_shape(base, cut)` the tensor shape at a cut (without the batch axis).
    `fuse_heads(models)` (e.g. :func:`fused_heads_model`), when given, builds one model of the
    heads that share a cut point; it is compiled beside the heads' own. `fuse_segment(segment,
    heads)` (e.g. :func:`fused_segment_model`), when given, builds one model of the last
    segment and its heads (or returns None: not worth it). `warm_up` runs every compiled node once on a blank frame, so that no
    engine compiles or traces on a live frame, and times the parts of a fused segment.
    """
    if not heads:
        raise ModelError(f"camera {camera!r}: no apps to run")
    depth = {name: index for index, name in enumerate(cut_points_in_order)}
    for head in heads:
        if head.base_fingerprint != base_fingerprint:
            raise ModelError(
                f"app {head.app!r} was trained on base {head.base_fingerprint[:12]}… but camera "
                f"{camera!r} runs base {base_fingerprint[:12]}…: their stems cannot be shared"
            )
        if head.cut_point not in depth:
            raise ModelError(
                f"app {head.app!r}: cut point {head.cut_point!r} is not a cut point of the base"
            )
        expected = tuple(cut_shape(base_model, head.cut_point))
        actual = tuple(head.model.input_shape[1:])
        if expected != actual:
            raise ModelError(
                f"app {head.app!r}: its model expects input {actual} but the base gives {expected} at {head.cut_point!r}"
            )
        if not (0 < head.fps <= camera_fps):
            raise ModelError(f"app {head.app!r}: fps {head.fps} is outside (0, {camera_fps}]")

    used_cuts = sorted({head.cut_point for head in heads} | {INPUT_CUT}, key=lambda cut: depth[cut])

    def rate_at_or_below(cut: str) -> float:
        return max(head.fps for head in heads if depth[head.cut_point] >= depth[cut])

    root = SegmentNode(
        start_cut=INPUT_CUT,
        end_cut=INPUT_CUT,
        rate=rate_at_or_below(INPUT_CUT),
        run=None,
        selector=RateAccumulator(rate_at_or_below(INPUT_CUT), camera_fps),
    )
    previous = root
    last_segment_model = None
    for start, end in itertools.pairwise(used_cuts):
        rate = rate_at_or_below(end)
        last_segment_model = segment_model(base_model, start, end)
        node = SegmentNode(
            start_cut=start,
            end_cut=end,
            rate=rate,
            run=compile_fn(last_segment_model),
            selector=RateAccumulator(rate, previous.rate),
        )
        previous.child = node
        previous = node
    for segment in _chain(root):
        for head in heads:
            if head.cut_point == segment.end_cut:
                segment.heads.append(
                    HeadNode(
                        spec=head,
                        run=compile_fn(head.model),
                        selector=RateAccumulator(head.fps, segment.rate),
                    )
                )
        models = [head.spec.model for head in segment.heads]
        segment.fused_widths = tuple(int(model.output_shape[-1]) for model in models)
        if fuse_heads is not None and len(models) > 1:
            segment.fused_heads = compile_fn(fuse_heads(models))
    last = previous
    if fuse_segment is not None and last_segment_model is not None and last.heads:
        models = [head.spec.model for head in last.heads]
        fused_model = fuse_segment(last_segment_model, models)
        if fused_model is not None:
            last.fused_segment = compile_fn(fused_model)
            last.fused_shares = (1.0 / (1 + len(models)),) * (1 + len(models))
    if warm_up:
        blank = np.zeros((1, *base_model.input_shape[1:]), dtype=np.uint8)
        _warm_up(root, preprocess(blank))
    return CameraDag(camera, camera_fps, root, preprocess, base_fingerprint)


def _warm_up(root: SegmentNode, tensor: np.ndarray, timed_calls: int = 3) -> None:
    """Call every compiled node once (outside the timings): engines trace on the first call.

    A fused segment's time is later shared among its parts as their own calls take: each part
    is timed here (fastest of `timed_calls`).
    """
    for segment in _chain(root):
        segment_input = tensor
        if segment.run is not None:
            tensor = segment.run(tensor)
        for head in segment.heads:
            head.run(tensor)
        if segment.fused_heads is not None:
            segment.fused_heads(tensor)
        if segment.fused_segment is not None and segment.run is not None:
            segment.fused_segment(segment_input)
            parts = [partial(segment.run, segment_input)]
            parts += [partial(head.run, tensor) for head in segment.heads]
            times = [_fastest_ms(part, timed_calls) for part in parts]
            total = sum(times)
            if total > 0:
                segment.fused_shares = tuple(t / total for t in times)


def _fastest_ms(call: Callable[[], Any], repeats: int) -> float:
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        fastest = min(fastest, (time.perf_counter() - started) * 1000.0)
    return fastest


def _chain(root: SegmentNode) -> list[SegmentNode]:
    nodes: list[SegmentNode] = []
    node: SegmentNode | None = root
    while node is not None:
        nodes.append(node)
        node = node.child
    return nodes


def segment_model(base_model: Any, start_cut: str, end_cut: str) -> Any:
    """The part of the base between two cut points, as its own Keras model."""

    stem_to_end, _ = split_model(base_model, end_cut)
    if start_cut == INPUT_CUT:
        return stem_to_end
    _, between = split_model(stem_to_end, start_cut)
    return between


def fused_heads_model(models: Sequence[Any]) -> Any:
    """One Keras model running every head on the same cut tensor; their scores side by side.

    The heads keep their own weights (the fused model shares them, nothing is copied).
    """
    import keras  # TensorFlow loads only when a model is built or run

    cut_tensor = keras.Input(shape=tuple(models[0].input_shape[1:]), dtype="float32")
    scores = []
    for position, model in enumerate(models):
        # Candidates of one cut point share a name; a wrapper per head keeps the graph's
        # names unique.
        own_input = keras.Input(shape=tuple(model.input_shape[1:]), dtype="float32")
        wrapper = keras.Model(own_input, model(own_input), name=f"head_{position}")
        scores.append(keras.ops.cast(wrapper(cut_tensor), "float32"))
    combined = scores[0] if len(scores) == 1 else keras.layers.Concatenate(axis=-1)(scores)
    return keras.Model(cut_tensor, combined, name="fused_heads")


def fused_segment_model(segment: Any, heads: Sequence[Any]) -> Any:
    """One Keras model running a segment and then every head on its output; the heads' scores
    side by side (weights shared, as in :func:`fused_heads_model`)."""
    import keras  # TensorFlow loads only when a model is built or run

    start = keras.Input(shape=tuple(segment.input_shape[1:]), dtype="float32")
    return keras.Model(start, fused_heads_model(heads)(segment(start)), name="fused_segment")
