"""A camera without hardware: coloured shapes bouncing over a gradient.

Frame `i` depends only on the seed, the size and ``i / fps``, so a run can be replayed
exactly. This is a smoke-test and demo source; labelled synthetic datasets for training are
generated elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.source_types import FrameSource, SyntheticSourceConfig
from mainstream.core.errors import SourceError


@dataclass(frozen=True)
class _Shape:
    is_circle: bool
    radius: int  # half the side for squares
    colour: tuple[int, int, int]
    start_x: float
    start_y: float
    speed_x: float  # pixels per second
    speed_y: float


def _bounce(start: float, speed: float, t: float, low: float, high: float) -> float:
    """Position on a segment after moving at `speed` for `t` s, reflecting at both ends."""
    span = high - low
    if span <= 0:
        return low
    travelled = (start - low + speed * t) % (2 * span)
    return low + (travelled if travelled <= span else 2 * span - travelled)


class SyntheticScene:
    """The deterministic scene behind a synthetic source."""

    def __init__(self, config: SyntheticSourceConfig) -> None:
        self.config = config
        rng = np.random.default_rng(config.seed)
        width, height = config.width, config.height
        rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
        top = rng.integers(0, 96, size=3).astype(np.float32)
        bottom = rng.integers(0, 96, size=3).astype(np.float32)
        background = top + (bottom - top) * rows
        self._background = np.broadcast_to(background, (height, width, 3)).astype(np.uint8)
        smallest = min(width, height)
        self._shapes = []
        for _ in range(config.shapes):
            radius = int(rng.integers(max(2, smallest // 16), max(3, smallest // 6)))
            self._shapes.append(
                _Shape(
                    is_circle=bool(rng.integers(0, 2)),
                    radius=radius,
                    colour=(
                        int(rng.integers(128, 256)),
                        int(rng.integers(128, 256)),
                        int(rng.integers(128, 256)),
                    ),
                    start_x=float(rng.uniform(radius, max(radius, width - radius))),
                    start_y=float(rng.uniform(radius, max(radius, height - radius))),
                    speed_x=float(rng.uniform(-0.5, 0.5) * width),
                    speed_y=float(rng.uniform(-0.5, 0.5) * height),
                )
            )

    def render(self, index: int) -> np.ndarray:
        """Frame `index` as an RGB uint8 array."""
        width, height = self.config.width, self.config.height
        t = index / self.config.fps
        image = self._background.copy()
        for shape in self._shapes:
            r = shape.radius
            cx = round(_bounce(shape.start_x, shape.speed_x, t, r, width - r))
            cy = round(_bounce(shape.start_y, shape.speed_y, t, r, height - r))
            top, bottom = max(0, cy - r), min(height, cy + r + 1)
            left, right = max(0, cx - r), min(width, cx + r + 1)
            patch = image[top:bottom, left:right]
            if shape.is_circle:
                ys, xs = np.ogrid[top:bottom, left:right]
                patch[(xs - cx) ** 2 + (ys - cy) ** 2 <= r * r] = shape.colour
            else:
                patch[:] = shape.colour
        return image


class SyntheticSource(FrameSource):
    """Serves :class:`SyntheticScene` frames; timestamps are media time ``index / fps``."""

    media_clock = True

    def __init__(self, config: SyntheticSourceConfig) -> None:
        self.config = config
        self._scene = SyntheticScene(config)
        self._next_index = 0
        self._grabbed: int | None = None

    @property
    def nominal_fps(self) -> float | None:
        return self.config.fps

    @property
    def decodes_on_retrieve(self) -> bool:
        return True  # frames are drawn in retrieve()

    def grab(self) -> float | None:
        if self.config.frames is not None and self._next_index >= self.config.frames:
            return None
        self._grabbed = self._next_index
        self._next_index += 1
        return self._grabbed / self.config.fps

    def retrieve(self) -> np.ndarray:
        if self._grabbed is None:
            raise SourceError("retrieve() called before grab()")
        return self._scene.render(self._grabbed)
