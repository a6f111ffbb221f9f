"""The live view's overlay draws each app's score on a band and leaves the rest untouched."""

from __future__ import annotations

import numpy as np

from edge_runtime.overlay import ScoreLine, draw_scores


def test_scores_are_drawn_on_a_band_along_the_top() -> None:
    frame = np.full((240, 320, 3), 200, np.uint8)
    lines = [ScoreLine("buses", None, False), ScoreLine("trains", 0.934, True)]
    drawn = draw_scores(frame, lines)
    assert drawn.shape == frame.shape and drawn.dtype == np.uint8
    assert (frame == 200).all()  # the camera's frame is not drawn on
    changed_rows = np.flatnonzero((drawn != frame).any(axis=(1, 2)))
    assert changed_rows.min() == 0 and changed_rows.max() < 240 // 2  # a band at the top
    band = drawn[: changed_rows.max() + 1]
    assert band.mean() < frame.mean()  # darker, so the text reads on any scene
    assert (drawn[changed_rows.max() + 1 :] == 200).all()
    red_pixels = (band[:, :, 0] > 200) & (band[:, :, 2] < 120)
    assert red_pixels.any()  # the app inside an event stands out


def test_the_lines_say_what_each_app_thinks() -> None:
    assert ScoreLine("trains", 0.934, True).text() == "trains 0.93 EVENT"
    assert ScoreLine("buses", None, False).text() == "buses --"
    assert ScoreLine("cars", 0.1, False).text() == "cars 0.10"


def test_no_apps_no_band() -> None:
    frame = np.zeros((48, 64, 3), np.uint8)
    assert (draw_scores(frame, []) == frame).all()
    tiny = draw_scores(np.zeros((10, 16, 3), np.uint8), [ScoreLine("a", 0.5, False)] * 4)
    assert tiny.shape == (10, 16, 3)  # more lines than fit: drawn as far as they go
