"""Video sources: camera URLs, their typed configs, and readers that decode frames.

A camera URL names where frames come from:

- a video file: ``/videos/yard.mp4``, ``videos/yard.avi`` or ``file:///videos/yard.mp4``
- an RTSP stream: ``rtsp://user:pass@10.0.0.5:554/stream1`` (TCP transport unless told otherwise)
- an HTTP MJPEG stream: ``http://10.0.0.6/mjpg/video.mjpg`` (``https://`` too)
- a USB/V4L2 camera: ``usb:0``, ``usb:/dev/video2`` or ``/dev/video2``
- generated frames: ``synthetic://?seed=0&fps=10&size=320x240&shapes=3&frames=100``

:func:`parse_source_url` turns a URL into one of the pydantic source configs below and
:func:`open_source` opens it as a :class:`FrameSource`. Readers are used from one thread each
(the camera's decode thread); OpenCV is imported only when a source is opened.

Frames are handed on as **RGB** ``uint8`` arrays of shape ``(height, width, 3)``: that is what
the models take. Use :meth:`Frame.to_bgr` or :func:`encode_jpeg` to go back to OpenCV's BGR.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_runtime.source_types import (
    FileSourceConfig,
    Frame,
    FrameSource,
    HttpSourceConfig,
    PermanentSourceError,
    RtspSourceConfig,
    SourceConfig,
    SyntheticSourceConfig,
    UsbSourceConfig,
    redact_url,
)
from edge_runtime.synthetic_source import SyntheticSource
from mainstream.core.errors import InvalidParameterError, SourceError

# ---------------------------------------------------------------------------------------------
# Frames


def open_source(
    config: SourceConfig, *, open_timeout_s: float = 10.0, read_timeout_s: float = 20.0
) -> FrameSource:
    """Open a source. Raises PermanentSourceError when retrying cannot help, SourceError when
    a later attempt may succeed (network down, device unplugged)."""
    if open_timeout_s <= 0:
        raise InvalidParameterError("open_timeout_s", open_timeout_s, "seconds > 0")
    if read_timeout_s <= 0:
        raise InvalidParameterError("read_timeout_s", read_timeout_s, "seconds > 0")
    if isinstance(config, SyntheticSourceConfig):
        return SyntheticSource(config)
    if isinstance(config, FileSourceConfig):
        return VideoFileSource(config, open_timeout_s=open_timeout_s)
    if isinstance(config, UsbSourceConfig):
        return UsbSource(config, read_timeout_s=read_timeout_s)
    return NetworkStreamSource(config, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s)


def iter_frames(
    source: FrameSource, *, camera_id: str = "source", paced: bool = False
) -> Iterator[Frame]:
    """Every frame of a source, in order; `paced` replays media-timed sources in real time.

    For offline work (tests, benchmarks, labelling). Cameras use their own decode thread.
    """
    pacer = Pacer() if paced and source.media_clock else None
    sequence = 0
    while True:
        started = time.perf_counter()
        timestamp = source.grab()
        if timestamp is None:
            return
        grab_ms = (time.perf_counter() - started) * 1000.0
        if pacer is not None:
            delay = pacer.delay_for(timestamp, time.monotonic())
            if delay > 0:
                time.sleep(delay)
        started = time.perf_counter()
        image = source.retrieve()
        decode_ms = grab_ms + (time.perf_counter() - started) * 1000.0
        image.flags.writeable = False
        yield Frame(camera_id, sequence, timestamp, image, decode_ms, time.time())
        sequence += 1


class Pacer:
    """Releases media-timed frames at their native pace, as a live camera would.

    The first frame anchors media time to the monotonic clock; each later frame is due when as
    much real time has passed as media time. When the reader falls more than `max_lag_s`
    behind (slow decoding, a pause), the anchor moves instead of bursting to catch up.
    """

    def __init__(self, max_lag_s: float = 1.0) -> None:
        if max_lag_s <= 0:
            raise InvalidParameterError("max_lag_s", max_lag_s, "seconds > 0")
        self.max_lag_s = max_lag_s
        self._anchor: tuple[float, float] | None = None  # (media time, monotonic time)

    def reset(self) -> None:
        self._anchor = None

    def delay_for(self, media_time: float, now: float) -> float:
        """Seconds to wait before releasing the frame stamped `media_time`, at clock `now`."""
        if self._anchor is None:
            self._anchor = (media_time, now)
            return 0.0
        anchor_media, anchor_clock = self._anchor
        due = anchor_clock + (media_time - anchor_media)
        if due - now < -self.max_lag_s or media_time < anchor_media:
            self._anchor = (media_time, now)
            return 0.0
        return max(0.0, due - now)


# ---------------------------------------------------------------------------------------------
# OpenCV readers

_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# OpenCV reads FFmpeg demuxer options (rtsp_transport...) from this environment variable at
# the moment a capture opens, so per-source options mean setting it around each open. The
# environment is process-wide, hence this one lock serialising FFmpeg opens.
_FFMPEG_OPEN_LOCK = threading.Lock()


def _format_ffmpeg_options(options: dict[str, str]) -> str:
    return "|".join(f"{key};{value}" for key, value in options.items())


def _parse_ffmpeg_options(text: str | None) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in (text or "").split("|"):
        key, sep, value = item.partition(";")
        if key and sep:
            options[key] = value
    return options


def _open_ffmpeg_capture(
    target: str, options: dict[str, str], open_timeout_s: float, read_timeout_s: float
) -> Any:
    """A cv2.VideoCapture on the FFmpeg backend with timeouts and per-open demuxer options."""
    import cv2  # OpenCV loads only when frames are decoded or drawn

    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        max(1, round(open_timeout_s * 1000)),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        max(1, round(read_timeout_s * 1000)),
    ]
    with _FFMPEG_OPEN_LOCK:
        previous = os.environ.get(_FFMPEG_OPTIONS_ENV)
        merged = {**_parse_ffmpeg_options(previous), **options}
        if merged:
            os.environ[_FFMPEG_OPTIONS_ENV] = _format_ffmpeg_options(merged)
        try:
            return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        finally:
            if previous is None:
                os.environ.pop(_FFMPEG_OPTIONS_ENV, None)
            else:
                os.environ[_FFMPEG_OPTIONS_ENV] = previous


_INTRA_ONLY_JPEG_CODECS = frozenset({"MJPG", "mjpg", "JPEG", "jpeg", "AVRn", "AVDJ", "dmb1"})


def _fourcc_text(code: float) -> str:
    value = int(code) if math.isfinite(code) else 0
    return "".join(chr((value >> shift) & 0xFF) for shift in (0, 8, 16, 24))


class _OpenCvSource(FrameSource):
    """Shared grab/retrieve/close over a cv2.VideoCapture.

    FFmpeg decodes in ``grab()``; skipping ``retrieve()`` saves only the colour conversion. In
    Motion-JPEG every frame is a JPEG image that needs no other frame, so such a file or stream
    (HTTP cameras) is read in raw mode (``CAP_PROP_FORMAT = -1``): ``grab()`` only reads the packet and
    ``retrieve()`` decodes it with ``cv2.imdecode``, so frames nobody needs are never decoded.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._capture: Any = None  # a cv2.VideoCapture; cv2 has no type information
        self._raw_jpeg = False  # raw mode: grab() reads a JPEG packet, retrieve() decodes it

    @property
    def decodes_on_retrieve(self) -> bool:
        return self._raw_jpeg

    @property
    def _cap(self) -> Any:
        if self._capture is None:
            raise SourceError(f"{self.name} is closed")
        return self._capture

    @property
    def nominal_fps(self) -> float | None:
        import cv2  # OpenCV loads only when frames are decoded or drawn

        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        return fps if math.isfinite(fps) and 0 < fps <= 1000 else None

    def retrieve(self) -> np.ndarray:
        import cv2  # OpenCV loads only when frames are decoded or drawn

        if self._raw_jpeg:
            ok, packet = self._cap.retrieve()
            rgb = (
                cv2.imdecode(packet.reshape(-1), cv2.IMREAD_COLOR_RGB)
                if ok and packet is not None
                else None
            )
            if rgb is None or rgb.size == 0:
                raise SourceError(f"cannot decode the grabbed JPEG frame of {self.name}")
            return np.asarray(rgb)
        ok, bgr = self._cap.retrieve()
        if not ok or bgr is None or bgr.size == 0:
            raise SourceError(f"cannot decode the grabbed frame of {self.name}")
        if bgr.ndim == 2:
            return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB))
        return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def close(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()


class VideoFileSource(_OpenCvSource):
    """A video file; timestamps are media time and keep growing when the file loops."""

    media_clock = True

    def __init__(self, config: FileSourceConfig, *, open_timeout_s: float = 10.0) -> None:
        super().__init__(str(config.path))
        self.config = config
        self._open_timeout_s = open_timeout_s
        self._loop_offset = 0.0  # media time at which the current pass of the file started
        self._last_timestamp: float | None = None
        self._grabbed_in_pass = 0
        self._pass_start = 0.0
        self._open()

    def _open(self) -> None:
        path = self.config.path
        if not path.exists():
            raise PermanentSourceError(f"video file not found: {path}")
        if not path.is_file():
            raise PermanentSourceError(f"not a regular file: {path}")
        capture = self._open_capture(raw_jpeg=self._raw_jpeg)
        probe = "raw" if self._raw_jpeg else _probe_raw_jpeg(capture)
        if probe in ("decodes", "fails"):
            capture.release()  # the probe read a frame: start again from the first one
            capture = self._open_capture(raw_jpeg=probe == "decodes")
            self._raw_jpeg = probe == "decodes"
        self._capture = capture
        self._grabbed_in_pass = 0

    def _open_capture(self, *, raw_jpeg: bool) -> Any:
        import cv2  # OpenCV loads only when frames are decoded or drawn

        path = self.config.path
        capture = _open_ffmpeg_capture(str(path), {}, self._open_timeout_s, self._open_timeout_s)
        if not capture.isOpened():
            raise PermanentSourceError(f"cannot decode {path}: not a video FFmpeg can read")
        if raw_jpeg and not capture.set(cv2.CAP_PROP_FORMAT, -1):
            capture.release()
            raise PermanentSourceError(f"cannot read {path} in raw mode any more")
        return capture

    def _frame_interval(self) -> float:
        fps = self.nominal_fps
        return 1.0 / fps if fps else 1.0 / 25.0

    def grab(self) -> float | None:
        import cv2  # OpenCV loads only when frames are decoded or drawn

        if not self._cap.grab():
            if not self.config.loop:
                return None
            if self._grabbed_in_pass == 0:
                raise PermanentSourceError(f"{self.name} has no decodable frames to loop")
            interval = self._frame_interval()
            self.close()
            self._open()
            end = self._last_timestamp if self._last_timestamp is not None else 0.0
            self._loop_offset = end + interval
            if not self._cap.grab():
                raise PermanentSourceError(f"{self.name} has no decodable frames to loop")
        position_s = float(self._cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
        if self._grabbed_in_pass == 0:
            self._pass_start = position_s  # media time starts at 0 on each pass
        timestamp = self._loop_offset + position_s - self._pass_start
        last = self._last_timestamp
        if not math.isfinite(timestamp) or (last is not None and timestamp <= last):
            # A container without usable timestamps: step by the nominal frame interval.
            timestamp = self._loop_offset if last is None else last + self._frame_interval()
        self._last_timestamp = timestamp
        self._grabbed_in_pass += 1
        return timestamp


def _probe_raw_jpeg(capture: Any) -> Literal["not-jpeg", "decodes", "fails"]:
    """Whether `capture` (freshly opened, FFmpeg) holds Motion-JPEG that ``cv2.imdecode``
    reads. "not-jpeg": another codec, the capture is untouched. Otherwise the capture was
    switched to raw mode and read one frame: "decodes" when that JPEG decoded, "fails" when
    it did not (the caller opens the source again as usual)."""
    import cv2  # OpenCV loads only when frames are decoded or drawn

    if _fourcc_text(float(capture.get(cv2.CAP_PROP_FOURCC))) not in _INTRA_ONLY_JPEG_CODECS:
        return "not-jpeg"
    if not capture.set(cv2.CAP_PROP_FORMAT, -1) or not capture.grab():
        return "fails"
    ok, packet = capture.retrieve()
    if not ok or packet is None or packet.size == 0:
        return "fails"
    # Some MJPEG writers leave out the Huffman tables FFmpeg supplies by default; then keep
    # FFmpeg decoding.
    image = cv2.imdecode(packet.reshape(-1), cv2.IMREAD_COLOR_RGB)
    return "decodes" if image is not None and image.size > 0 else "fails"


class NetworkStreamSource(_OpenCvSource):
    """An RTSP or HTTP stream through FFmpeg, with open and read timeouts.

    A read that times out leaves FFmpeg's demuxer unusable, so any failed read is reported as
    a broken stream and the caller reconnects.
    """

    def __init__(
        self,
        config: RtspSourceConfig | HttpSourceConfig,
        *,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 20.0,
    ) -> None:
        super().__init__(redact_url(config.url))
        self.config = config
        options = dict(config.ffmpeg_options)
        if isinstance(config, RtspSourceConfig):
            options = {"rtsp_transport": config.transport, **options}

        def connect() -> Any:
            capture = _open_ffmpeg_capture(config.url, options, open_timeout_s, read_timeout_s)
            if not capture.isOpened():
                raise SourceError(
                    f"cannot open {self.name}: unreachable, refused, not a video stream, "
                    f"or no answer within {open_timeout_s:g} s"
                )
            return capture

        capture = connect()
        # A Motion-JPEG stream (most HTTP cameras) is read raw and decoded on demand; the
        # probe costs the stream's first frame. When it fails, connect again as usual.
        probe = _probe_raw_jpeg(capture)
        if probe == "fails":
            capture.release()
            capture = connect()
        self._raw_jpeg = probe == "decodes"
        self._capture = capture

    def grab(self) -> float | None:
        if not self._cap.grab():
            raise SourceError(f"{self.name} stopped sending frames (closed or timed out)")
        return time.time()


class UsbSource(_OpenCvSource):
    """A local V4L2 camera. An unplugged device is a retryable error: it may come back."""

    def __init__(self, config: UsbSourceConfig, *, read_timeout_s: float = 20.0) -> None:
        import cv2  # OpenCV loads only when frames are decoded or drawn

        super().__init__(f"usb:{config.device}")
        self.config = config
        device = config.device
        if isinstance(device, str) and not Path(device).exists():
            raise SourceError(f"camera device {device} does not exist (unplugged?)")
        backend = cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY
        capture = cv2.VideoCapture(device, backend)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open camera {self.name} (missing, busy or no permission)")
        capture.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, round(read_timeout_s * 1000)))
        self._capture = capture

    def grab(self) -> float | None:
        if not self._cap.grab():
            raise SourceError(f"camera {self.name} returned no frame")
        return time.time()
