"""Demand-driven decoding: a camera decodes only the frames analysis (or a viewer) needs, and
the frames it hands on are exactly those a DAG planned for the camera rate would analyse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edge_runtime.camera as camera_module
from edge_runtime.camera import Camera, CameraConfig
from edge_runtime.rate import RateAccumulator
from edge_runtime.source_types import FileSourceConfig, FrameSource
from edge_runtime.sources import VideoFileSource, iter_frames, open_source
from tests.edge_runtime.servers import write_test_video

cv2 = pytest.importorskip("cv2")

FRAMES = 40
CAMERA_FPS = 10.0


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("demand")
    return {
        suffix: write_test_video(folder / f"clip.{suffix}", FRAMES, CAMERA_FPS)
        for suffix in ("avi", "mp4")
    }


class RetrieveCounter:
    """Counts the frames a camera asks its real source to decode."""

    def __init__(self) -> None:
        self.retrieved: list[int] = []

    def open(self, *args: Any, **kwargs: Any) -> FrameSource:
        source = open_source(*args, **kwargs)
        real_grab, real_retrieve = source.grab, source.retrieve
        grabbed = [-1]

        def grab() -> float | None:
            grabbed[0] += 1
            return real_grab()

        def retrieve() -> np.ndarray:
            self.retrieved.append(grabbed[0])
            return real_retrieve()

        source.grab = grab  # type: ignore[method-assign]
        source.retrieve = retrieve  # type: ignore[method-assign]
        return source


def kept(rate: float, parent: float, count: int) -> list[int]:
    selector = RateAccumulator(rate, parent)
    return [index for index in range(count) if selector.offer()]


@pytest.mark.parametrize(("suffix", "lazy"), [("avi", True), ("mp4", False)])
def test_frames_analysis_does_not_use_are_not_decoded(
    videos: dict[str, Path], suffix: str, lazy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = videos[suffix]
    with open_source(FileSourceConfig(path=path)) as source:
        reference = list(iter_frames(source))
    counter = RetrieveCounter()
    monkeypatch.setattr(camera_module, "open_source", counter.open)
    camera = Camera(CameraConfig(id="c", url=str(path), paced=False, queue_size=100))
    camera.set_analysis_rate(2.5, CAMERA_FPS)
    camera.start()
    frames = list(camera.frames())

    expected = kept(2.5, CAMERA_FPS, FRAMES)
    assert expected == list(range(0, FRAMES, 4))
    assert [frame.sequence for frame in frames] == expected
    assert counter.retrieved == expected  # nothing else was converted or decoded
    for frame in frames:  # the right frames: same pixels and media time as a full read
        assert frame.timestamp == reference[frame.sequence].timestamp
        assert np.array_equal(frame.image, reference[frame.sequence].image)
    stats = camera.stats()
    assert stats.analysis_fps == 2.5
    assert stats.frames_decoded == FRAMES and stats.frames_delivered == len(expected)
    assert stats.frames_not_needed == FRAMES - len(expected)
    # FFmpeg decodes mp4v inside grab(); Motion-JPEG is read raw and decoded only on retrieve.
    assert stats.frames_not_decoded == (FRAMES - len(expected) if lazy else 0)


def test_a_viewer_gets_every_frame_while_analysis_gets_its_own(videos: dict[str, Path]) -> None:
    camera = Camera(CameraConfig(id="c", url=str(videos["avi"]), paced=False, queue_size=100))
    camera.set_analysis_rate(5.0, CAMERA_FPS)
    assert camera.latest_frame() is None  # asking makes the camera decode every frame
    camera.start()
    frames = list(camera.frames())
    assert [frame.sequence for frame in frames] == list(range(0, FRAMES, 2))
    latest = camera.latest_frame()
    assert latest is not None and latest.sequence == FRAMES - 1
    stats = camera.stats()
    assert stats.frames_not_needed == FRAMES // 2 and stats.frames_not_decoded == 0


def test_the_frame_listener_gets_frames_at_its_own_rate(videos: dict[str, Path]) -> None:
    heard: list[int] = []
    camera = Camera(CameraConfig(id="c", url=str(videos["avi"]), paced=False, queue_size=100))
    camera.set_analysis_rate(2.5, CAMERA_FPS)
    camera.set_frame_listener(lambda frame: heard.append(frame.sequence), fps=5.0)
    camera.start()
    assert [frame.sequence for frame in camera.frames()] == list(range(0, FRAMES, 4))
    assert heard == list(range(0, FRAMES, 2))  # the clip rate, analysed frames among them
    stats = camera.stats()
    assert stats.frames_not_needed == FRAMES - FRAMES // 4
    assert stats.frames_not_decoded == FRAMES // 2


def test_without_an_analysis_rate_every_frame_is_queued(videos: dict[str, Path]) -> None:
    camera = Camera(CameraConfig(id="c", url=str(videos["avi"]), paced=False, queue_size=100))
    camera.set_analysis_rate(2.0, CAMERA_FPS)
    camera.set_analysis_rate(None)
    camera.start()
    assert [frame.sequence for frame in camera.frames()] == list(range(FRAMES))
    stats = camera.stats()
    assert stats.analysis_fps is None and stats.frames_not_needed == 0


def test_motion_jpeg_is_decoded_on_retrieve_close_to_ffmpeg(videos: dict[str, Path]) -> None:
    with VideoFileSource(FileSourceConfig(path=videos["avi"])) as lazy:
        assert lazy.decodes_on_retrieve
        lazy.grab()
        image = lazy.retrieve()
    capture = cv2.VideoCapture(str(videos["avi"]), cv2.CAP_FFMPEG)
    ok, bgr = capture.read()
    capture.release()
    assert ok
    # Two JPEG decoders (libjpeg vs FFmpeg) round and upsample chroma differently.
    difference = np.abs(image.astype(int) - bgr[:, :, ::-1].astype(int))
    assert image.shape == bgr.shape and difference.mean() < 2.0
    with VideoFileSource(FileSourceConfig(path=videos["mp4"])) as eager:
        assert not eager.decodes_on_retrieve


class BrightnessHead:
    """A two-class head on the image itself, in numpy: the frame selection is what these tests
    check, so no stem runs and no framework loads."""

    input_shape = (None, 96, 96, 3)
    output_shape = (None, 2)

    @staticmethod
    def run(batch: np.ndarray) -> np.ndarray:
        bright = batch.mean(axis=(1, 2, 3)) / 255.0
        return np.stack([1.0 - bright, bright], axis=1)


def analysed(rates: dict[str, float], dag_fps: float, frames: list[int]) -> list[tuple[str, int]]:
    """(app, frame) for every frame each app analyses when a DAG built for `dag_fps` is fed
    `frames` (camera frame numbers)."""
    from edge_runtime.dag import INPUT_CUT, HeadSpec, build_camera_dag, segment_model

    heads = [
        HeadSpec(app, INPUT_CUT, fps, 1, BrightnessHead(), "base") for app, fps in rates.items()
    ]
    dag = build_camera_dag(
        "cam",
        dag_fps,
        heads,
        None,
        "base",
        (INPUT_CUT,),
        segment_model,
        lambda _base, _cut: (96, 96, 3),
        lambda model: model.run,
        lambda batch: batch.astype(np.float32),
        warm_up=False,
    )
    image = np.zeros((96, 96, 3), np.uint8)
    return [(score.app, index) for index in frames for score in dag.process(image, index, 0.0)]


def test_dag_for_the_analysis_rate_on_selected_frames_analyses_the_same_frames() -> None:
    """A DAG built for rate r fed the frames the camera selects for r of F analyses, per app,
    the frames a DAG built for F analyses when fed every frame."""
    rates = {"a": 4.0, "b": 2.5, "c": 1.0}
    everything = analysed(rates, CAMERA_FPS, list(range(FRAMES)))
    thinned = analysed(rates, 4.0, kept(4.0, CAMERA_FPS, FRAMES))
    assert thinned == everything
    assert {app: sum(1 for a, _ in thinned if a == app) for app in rates} == {
        "a": 16,
        "b": 10,
        "c": 4,
    }


@settings(max_examples=30, deadline=None)
@given(
    camera_fps=st.sampled_from([5.0, 10.0, 12.5, 15.0, 30.0]),
    fractions=st.lists(
        st.sampled_from([0.03, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.7, 1.0]), min_size=1, max_size=4
    ),
)
def test_camera_selection_keeps_every_app_on_its_frames_for_any_rates(
    camera_fps: float, fractions: list[float]
) -> None:
    rates = {f"app{index}": camera_fps * fraction for index, fraction in enumerate(fractions)}
    top = max(rates.values())
    frames = 90
    everything = analysed(rates, camera_fps, list(range(frames)))
    assert analysed(rates, top, kept(top, camera_fps, frames)) == everything
