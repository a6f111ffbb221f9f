"""The live view's overlay: each app's latest score drawn on the camera frame.

An operator watching a camera sees what the apps currently think of it: one line per app
("trains 0.93 EVENT"), on a dark band so it stays readable on any scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BAND_COLOUR = (16, 16, 16)  # RGB
TEXT_COLOUR = (235, 235, 235)
EVENT_COLOUR = (255, 92, 64)  # an app inside an event stands out


@dataclass(frozen=True)
class ScoreLine:
    """One app's state on a camera: its latest score (None before its first analysed frame)."""

    app: str
    score: float | None
    in_event: bool

    def text(self) -> str:
        score = "--" if self.score is None else f"{self.score:.2f}"
        return f"{self.app} {score}" + (" EVENT" if self.in_event else "")


def draw_scores(image_rgb: np.ndarray, lines: Sequence[ScoreLine]) -> np.ndarray:
    """A copy of the frame with one line per app on a band along its top edge."""
    import cv2  # OpenCV loads only when frames are decoded or drawn

    drawn = np.ascontiguousarray(image_rgb).copy()
    if not lines:
        return drawn
    height, width = drawn.shape[:2]
    scale = max(0.35, min(1.0, width / 960))
    line_height = max(12, int(26 * scale))
    band = min(height, line_height * len(lines) + line_height // 2)
    drawn[:band] = (drawn[:band] * 0.35 + np.array(BAND_COLOUR) * 0.65).astype(np.uint8)
    for row, line in enumerate(lines):
        baseline = line_height * (row + 1)
        if baseline > height:
            break
        colour = EVENT_COLOUR if line.in_event else TEXT_COLOUR
        cv2.putText(
            drawn,
            line.text(),
            (max(4, int(8 * scale)), baseline),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale * 0.7,
            colour,
            1,
            cv2.LINE_AA,
        )
    return drawn
