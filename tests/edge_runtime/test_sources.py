"""Sources: URL parsing, and real decoding of files, MJPEG over HTTP, RTSP and synthetic frames."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.source_types import (
    FileSourceConfig,
    Frame,
    HttpSourceConfig,
    PermanentSourceError,
    RtspSourceConfig,
    SyntheticSourceConfig,
    UsbSourceConfig,
    encode_jpeg,
    parse_source_url,
    redact_url,
)
from edge_runtime.sources import Pacer, iter_frames, open_source
from edge_runtime.synthetic_source import SyntheticScene
from mainstream.core.errors import InvalidParameterError, SourceError
from tests.edge_runtime.servers import (
    MjpegServer,
    RtspServer,
    index_brightness,
    rtsp_server_unavailable_reason,
    write_test_video,
)

FPS = 20.0
FRAMES = 12
# Short probing so an RTSP open takes well under a second instead of ~3 s.
FAST_PROBE = {"analyzeduration": "500000", "probesize": "65536"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {
        "avi": write_test_video(folder / "clip.avi", FRAMES, FPS),
        "mp4": write_test_video(folder / "clip.mp4", FRAMES, FPS),
    }


# -- URL parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/videos/yard.mp4", FileSourceConfig(path=Path("/videos/yard.mp4"))),
        ("clips/yard.avi", FileSourceConfig(path=Path("clips/yard.avi"))),
        ("file:///videos/my%20yard.mp4", FileSourceConfig(path=Path("/videos/my yard.mp4"))),
        ("rtsp://u:p@10.0.0.5:554/s1", RtspSourceConfig(url="rtsp://u:p@10.0.0.5:554/s1")),
        ("rtsps://cam.local/live", RtspSourceConfig(url="rtsps://cam.local/live")),
        ("http://10.0.0.6/video.mjpg", HttpSourceConfig(url="http://10.0.0.6/video.mjpg")),
        ("https://cam.local/mjpg", HttpSourceConfig(url="https://cam.local/mjpg")),
        ("usb:0", UsbSourceConfig(device=0)),
        ("USB:2", UsbSourceConfig(device=2)),
        ("usb:/dev/video1", UsbSourceConfig(device="/dev/video1")),
        ("/dev/video3", UsbSourceConfig(device="/dev/video3")),
        ("synthetic://", SyntheticSourceConfig()),
        (
            "synthetic://?seed=7&fps=15&size=64x48&shapes=2&frames=5",
            SyntheticSourceConfig(seed=7, fps=15, width=64, height=48, shapes=2, frames=5),
        ),
    ],
)
def test_parse_source_url_gives_typed_configs(url: str, expected: object) -> None:
    assert parse_source_url(url) == expected


def test_parse_source_url_carries_camera_options() -> None:
    assert parse_source_url("a.mp4", loop=True) == FileSourceConfig(path=Path("a.mp4"), loop=True)
    rtsp = parse_source_url("rtsp://h/s", rtsp_transport="udp", ffmpeg_options={"probesize": "1"})
    assert isinstance(rtsp, RtspSourceConfig)
    assert rtsp.transport == "udp" and rtsp.ffmpeg_options == {"probesize": "1"}
    assert parse_source_url("rtsp://h/s").transport == "tcp"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        ("ftp://server/video.mp4", "supported scheme"),
        ("rtsp:///stream", "with a host"),
        ("http://", "with a host"),
        ("http://host:99999/x", "valid URL"),
        ("usb:front", "camera index or device path"),
        ("file://otherhost/video.mp4", "no host"),
        ("synthetic://?colour=red", "not ['colour']"),
        ("synthetic://?size=big", "WIDTHxHEIGHT"),
        ("synthetic://?fps=0", "valid synthetic parameters"),
        ("synthetic://?frames=-3", "valid synthetic parameters"),
    ],
)
def test_parse_source_url_rejects_bad_urls_naming_them(url: str, message: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        parse_source_url(url)
    assert caught.value.field == "url"
    assert message in str(caught.value)


def test_redact_url_hides_passwords_only() -> None:
    assert redact_url("rtsp://admin:secret@10.0.0.5:554/s") == "rtsp://admin:***@10.0.0.5:554/s"
    assert redact_url("http://10.0.0.6/video.mjpg") == "http://10.0.0.6/video.mjpg"
    assert "secret" not in redact_url("rtsp://admin:secret@[fe80::1]/s")


# -- video files -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["avi", "mp4"])
def test_video_file_frames_read_back_in_order_as_rgb(videos: dict[str, Path], kind: str) -> None:
    with open_source(FileSourceConfig(path=videos[kind])) as source:
        assert source.media_clock
        assert source.nominal_fps == pytest.approx(FPS)
        frames = list(iter_frames(source, camera_id="yard"))
    assert len(frames) == FRAMES
    assert [frame.sequence for frame in frames] == list(range(FRAMES))
    assert [frame.timestamp for frame in frames] == pytest.approx(
        [index / FPS for index in range(FRAMES)]
    )
    for index, frame in enumerate(frames):
        assert frame.camera_id == "yard"
        assert frame.image.shape == (120, 160, 3) and frame.image.dtype == np.uint8
        assert not frame.image.flags.writeable
        assert abs(int(frame.image[60, 4, 0]) - index_brightness(index)) <= 8
        red, green, blue = (int(v) for v in frame.image[-8, -8])
        assert blue > 200 and red < 60 and green < 60, "frames must be RGB"


def test_video_file_loops_with_growing_media_time(videos: dict[str, Path]) -> None:
    with open_source(FileSourceConfig(path=videos["avi"], loop=True)) as source:
        frames = []
        for frame in iter_frames(source):
            frames.append(frame)
            if len(frames) == 2 * FRAMES + 3:
                break
    assert len(frames) == 2 * FRAMES + 3
    timestamps = [frame.timestamp for frame in frames]
    assert timestamps == pytest.approx([index / FPS for index in range(len(frames))])
    for index, frame in enumerate(frames):
        assert abs(int(frame.image[60, 4, 0]) - index_brightness(index % FRAMES)) <= 8


def test_video_file_paced_plays_at_native_fps_unpaced_runs_ahead(
    videos: dict[str, Path],
) -> None:
    config = FileSourceConfig(path=videos["avi"])
    with open_source(config) as source:
        started = time.monotonic()
        assert len(list(iter_frames(source, paced=True))) == FRAMES
        paced_s = time.monotonic() - started
    with open_source(config) as source:
        started = time.monotonic()
        assert len(list(iter_frames(source, paced=False))) == FRAMES
        unpaced_s = time.monotonic() - started
    native_s = (FRAMES - 1) / FPS  # 0.55 s between the first and the last frame
    assert native_s * 0.9 <= paced_s <= native_s + 0.5
    assert unpaced_s < native_s / 2


def test_pacer_schedules_media_time_on_the_clock() -> None:
    pacer = Pacer(max_lag_s=1.0)
    assert pacer.delay_for(10.0, now=100.0) == 0.0  # first frame anchors
    assert pacer.delay_for(10.5, now=100.1) == pytest.approx(0.4)
    assert pacer.delay_for(11.0, now=101.2) == 0.0  # late: released at once
    assert pacer.delay_for(20.0, now=101.3) == pytest.approx(8.7)  # a jump forward waits
    assert pacer.delay_for(12.0, now=112.0) == 0.0  # more than 1 s late: re-anchors...
    assert pacer.delay_for(12.5, now=112.0) == pytest.approx(0.5)  # ...and paces from there
    with pytest.raises(InvalidParameterError):
        Pacer(max_lag_s=0)


def test_missing_and_corrupt_files_are_permanent_errors(tmp_path: Path) -> None:
    with pytest.raises(PermanentSourceError, match="not found"):
        open_source(FileSourceConfig(path=tmp_path / "absent.mp4"))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"definitely not a video" * 100)
    with pytest.raises(PermanentSourceError, match="cannot decode"):
        open_source(FileSourceConfig(path=garbage))


def test_ffmpeg_options_do_not_leak_into_the_environment(
    videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "fflags;nobuffer")
    with MjpegServer() as server:
        config = parse_source_url(server.url, ffmpeg_options={"probesize": "32768"})
        with open_source(config, open_timeout_s=5, read_timeout_s=5) as source:
            assert source.grab() is not None
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "fflags;nobuffer"
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    with open_source(FileSourceConfig(path=videos["mp4"])) as source:
        assert source.grab() is not None
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ


# -- network streams ---------------------------------------------------------------------------


def test_http_mjpeg_stream_frames_arrive_and_a_dead_server_is_an_error() -> None:
    with MjpegServer(fps=30) as server:
        config = parse_source_url(server.url)
        with open_source(config, open_timeout_s=5, read_timeout_s=2) as source:
            assert not source.media_clock
            assert source.decodes_on_retrieve  # read raw: a JPEG is decoded only on retrieve
            images = []
            for _ in range(5):
                timestamp = source.grab()
                assert timestamp is not None and abs(timestamp - time.time()) < 2
                images.append(source.retrieve())
            assert all(image.shape == (120, 160, 3) for image in images)
            assert int(images[-1][-8, -8, 2]) > 200  # blue corner lands in the B of RGB
            server.kill()
            started = time.monotonic()
            with pytest.raises(SourceError, match="stopped sending frames"):
                for _ in range(100):  # frames already buffered may still come out
                    source.grab()
            assert time.monotonic() - started < 2.5


def test_http_stream_that_refuses_is_a_retryable_error() -> None:
    with MjpegServer() as server:
        port = server.port
    with pytest.raises(SourceError, match="cannot open") as caught:
        open_source(parse_source_url(f"http://127.0.0.1:{port}/video.mjpg"), open_timeout_s=2)
    assert not isinstance(caught.value, PermanentSourceError)


@pytest.fixture(scope="module")
def rtsp_available() -> None:
    reason = rtsp_server_unavailable_reason()
    if reason is not None:
        pytest.skip(f"RTSP test server cannot run: {reason}")


@pytest.mark.usefixtures("rtsp_available")
def test_rtsp_stream_over_tcp_decodes_h264_frames() -> None:
    # The test server accepts TCP interleaved transport only, so this also shows that the
    # per-camera transport reaches FFmpeg: the same URL over UDP is refused.
    with RtspServer(fps=10, size=(320, 240)) as server:
        config = parse_source_url(server.url, ffmpeg_options=FAST_PROBE)
        assert isinstance(config, RtspSourceConfig) and config.transport == "tcp"
        with open_source(config, open_timeout_s=5, read_timeout_s=3) as source:
            images = []
            for _ in range(5):
                assert source.grab() is not None
                images.append(source.retrieve())
        over_udp = parse_source_url(server.url, rtsp_transport="udp", ffmpeg_options=FAST_PROBE)
        with pytest.raises(SourceError, match="cannot open"):
            open_source(over_udp, open_timeout_s=3)
    assert all(image.shape == (240, 320, 3) and image.dtype == np.uint8 for image in images)
    assert any(image.std() > 10 for image in images)  # the test pattern, not a blank frame


def test_rtsp_server_that_is_down_is_a_retryable_error() -> None:
    with pytest.raises(SourceError, match="cannot open") as caught:
        open_source(parse_source_url("rtsp://127.0.0.1:9/stream"), open_timeout_s=2)
    assert not isinstance(caught.value, PermanentSourceError)


# -- USB / V4L2 --------------------------------------------------------------------------------


def test_missing_usb_device_is_a_retryable_error() -> None:
    with pytest.raises(SourceError, match="does not exist") as caught:
        open_source(parse_source_url("/dev/video987"))
    assert not isinstance(caught.value, PermanentSourceError)


def test_usb_camera_delivers_frames_when_one_is_attached() -> None:
    devices = sorted(Path("/dev").glob("video[0-9]*"))
    if not devices:
        pytest.skip("no V4L2 device (/dev/video*) attached to this machine")
    try:
        source = open_source(parse_source_url(str(devices[0])), read_timeout_s=5)
    except SourceError as error:
        pytest.skip(f"{devices[0]} exists but is not a capture device: {error}")
    with source:
        assert source.grab() is not None
        image = source.retrieve()
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


# -- synthetic ---------------------------------------------------------------------------------


def test_synthetic_source_is_deterministic_and_moves() -> None:
    config = parse_source_url("synthetic://?seed=3&fps=10&size=96x64&shapes=4&frames=6")
    with open_source(config) as first, open_source(config) as second:
        a = list(iter_frames(first))
        b = list(iter_frames(second))
    assert len(a) == 6
    assert [frame.timestamp for frame in a] == pytest.approx([i / 10 for i in range(6)])
    assert all(frame.image.shape == (64, 96, 3) for frame in a)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].image, a[5].image)
    other = SyntheticScene(SyntheticSourceConfig(seed=4, width=96, height=64, shapes=4))
    assert not np.array_equal(other.render(0), a[0].image)


def test_synthetic_source_paces_at_its_fps() -> None:
    with open_source(parse_source_url("synthetic://?fps=40&size=32x32&frames=9")) as source:
        started = time.monotonic()
        assert len(list(iter_frames(source, paced=True))) == 9
        elapsed = time.monotonic() - started
    assert 0.18 <= elapsed <= 0.6  # 8 intervals of 25 ms


# -- frames ------------------------------------------------------------------------------------


def test_encode_jpeg_round_trips_rgb() -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :30] = (255, 0, 0)  # red in RGB
    frame = Frame("cam", 0, 0.0, image, 1.0, time.time())
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(frame.image, 95), np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == (40, 60, 3)
    assert np.abs(decoded.astype(int) - frame.to_bgr().astype(int)).mean() < 8
    assert decoded[20, 10, 2] > 200 and decoded[20, 10, 0] < 50  # red is red in BGR too
    with pytest.raises(InvalidParameterError):
        encode_jpeg(image, 0)
