"""The shared-stem DAG executor (DESIGN §6).

One DAG per (camera, base model). The base network is cut at every cut point some app uses;
the pieces between consecutive cuts are *segments*, chained from the input. An app's head (its
specialised suffix from the package) hangs off the segment that ends at its cut point. Each node
selects frames with a nested rate accumulator, so a segment runs on a frame only when some app
below it wants that frame, and at exactly the highest rate among those apps.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.engines import CompiledModel
from edge_runtime.rate import RateAccumulator
from mainstream.errors import ModelError

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
    """Measured wall time of one node, for the profiler and re-planning."""

    calls: int = 0
    frames: int = 0
    total_ms: float = 0.0

    def add(self, elapsed_ms: float, frames: int) -> None:
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
    """Runs one camera's frames through the shared segments and the apps' heads."""

    def __init__(
        self,
        camera: str,
        camera_fps: float,
        root: SegmentNode,
        preprocess: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        self.camera = camera
        self.camera_fps = camera_fps
        self.root = root
        self.preprocess = preprocess
        self.frames_seen = 0

    def segments(self) -> list[SegmentNode]:
        return _chain(self.root)

    def heads(self) -> list[HeadNode]:
        return [head for segment in self.segments() for head in segment.heads]

    def process(self, image: np.ndarray, frame_index: int, timestamp: float) -> list[AppScore]:
        """Analyse one camera frame (uint8 RGB); returns a score for each app that analysed it."""
        self.frames_seen += 1
        scores: list[AppScore] = []
        tensor: np.ndarray | None = None
        segment: SegmentNode | None = self.root
        while segment is not None and segment.selector.offer():
            started = time.perf_counter()
            if segment.run is None:
                tensor = self.preprocess(image[np.newaxis])
            else:
                assert tensor is not None
                tensor = segment.run(tensor)
            segment.timing.add((time.perf_counter() - started) * 1000.0, 1)
            for head in segment.heads:
                if head.selector.offer():
                    started = time.perf_counter()
                    probabilities = head.run(tensor)
                    head.timing.add((time.perf_counter() - started) * 1000.0, 1)
                    score = float(probabilities[0, head.spec.positive_index])
                    scores.append(AppScore(head.spec.app, frame_index, timestamp, score))
            segment = segment.child
        return scores


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
) -> CameraDag:
    """Build the DAG for one camera; checks fingerprints and tensor shapes before compiling.

    `segment_model(base, start_cut, end_cut)` returns the Keras model of the base between two
    cuts; `cut_shape(base, cut)` the tensor shape at a cut (without the batch axis).
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
    for start, end in itertools.pairwise(used_cuts):
        rate = rate_at_or_below(end)
        node = SegmentNode(
            start_cut=start,
            end_cut=end,
            rate=rate,
            run=compile_fn(segment_model(base_model, start, end)),
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
    return CameraDag(camera, camera_fps, root, preprocess)


def _chain(root: SegmentNode) -> list[SegmentNode]:
    nodes: list[SegmentNode] = []
    node: SegmentNode | None = root
    while node is not None:
        nodes.append(node)
        node = node.child
    return nodes


def segment_model(base_model: Any, start_cut: str, end_cut: str) -> Any:
    """The part of the base between two cut points, as its own Keras model."""
    from mainstream.bases import split_model

    stem_to_end, _ = split_model(base_model, end_cut)
    if start_cut == INPUT_CUT:
        return stem_to_end
    _, between = split_model(stem_to_end, start_cut)
    return between
