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
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mainstream.errors import InvalidParameterError, SourceError

# ---------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame of one camera.

    `sequence` counts the frames the camera grabbed from its source (skipped and dropped frames
    leave gaps), so it never goes backwards while the camera object lives. `timestamp` is the
    capture time in seconds: wall-clock time (``time.time()``) for live sources, media time
    for files and synthetic sources (continuing to grow across loops of a file).
    The image is RGB ``uint8`` ``(height, width, 3)`` and read-only, because the same frame
    may be shared by the queue, the latest-frame slot and several consumers.
    """

    camera_id: str
    sequence: int
    timestamp: float
    image: np.ndarray
    decode_ms: float
    wall_time: float

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def to_bgr(self) -> np.ndarray:
        """The image in OpenCV's channel order (a copy)."""
        return np.ascontiguousarray(self.image[:, :, ::-1])


def encode_jpeg(image_rgb: np.ndarray, quality: int = 85) -> bytes:
    """JPEG bytes of an RGB image (for snapshots and ``latest.jpg``)."""
    import cv2

    if not 1 <= quality <= 100:
        raise InvalidParameterError("quality", quality, "an integer in [1, 100]")
    bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise SourceError(f"cannot encode a {image_rgb.shape} image as JPEG")
    return bytes(buffer.tobytes())


# ---------------------------------------------------------------------------------------------
# Source configs


class PermanentSourceError(SourceError):
    """Retrying cannot help: the file is missing, is not a video, or the URL is unusable."""


class _SourceConfigBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSourceConfig(_SourceConfigBase):
    """A video file decoded with FFmpeg; `loop` restarts it at the end."""

    kind: Literal["file"] = "file"
    path: Path
    loop: bool = False


class RtspSourceConfig(_SourceConfigBase):
    """An RTSP stream; TCP transport avoids the smeared frames UDP gives on lossy links."""

    kind: Literal["rtsp"] = "rtsp"
    url: str
    transport: Literal["tcp", "udp"] = "tcp"
    ffmpeg_options: dict[str, str] = Field(default_factory=dict)


class HttpSourceConfig(_SourceConfigBase):
    """An HTTP(S) stream, typically MJPEG (``multipart/x-mixed-replace``)."""

    kind: Literal["http"] = "http"
    url: str
    ffmpeg_options: dict[str, str] = Field(default_factory=dict)


class UsbSourceConfig(_SourceConfigBase):
    """A local camera through Video4Linux2: an index (``usb:0``) or a device path."""

    kind: Literal["usb"] = "usb"
    device: int | str


class SyntheticSourceConfig(_SourceConfigBase):
    """Generated frames of moving shapes: a camera that needs no hardware."""

    kind: Literal["synthetic"] = "synthetic"
    seed: int = 0
    fps: float = Field(default=10.0, gt=0, le=1000)
    width: int = Field(default=320, ge=8, le=7680)
    height: int = Field(default=240, ge=8, le=4320)
    shapes: int = Field(default=3, ge=0, le=64)
    frames: int | None = Field(default=None, ge=1, description="Stop after this many frames")


SourceConfig = Annotated[
    FileSourceConfig
    | RtspSourceConfig
    | HttpSourceConfig
    | UsbSourceConfig
    | SyntheticSourceConfig,
    Field(discriminator="kind"),
]

SUPPORTED_URLS = (
    "a file path or file:// URL, rtsp://, http(s)://, usb:N, /dev/videoN, or synthetic://"
)

_SIZE_PATTERN = re.compile(r"^(\d+)[xX](\d+)$")
_DEVICE_INDEX_PATTERN = re.compile(r"^\d+$")


def parse_source_url(
    url: str,
    *,
    loop: bool = False,
    rtsp_transport: Literal["tcp", "udp"] = "tcp",
    ffmpeg_options: dict[str, str] | None = None,
) -> SourceConfig:
    """The typed config of a camera URL; raises InvalidParameterError naming what is wrong.

    Nothing is opened here: a file that does not exist yet is only reported when opened.
    """
    text = url.strip() if isinstance(url, str) else url
    if not isinstance(text, str) or not text:
        raise InvalidParameterError("url", url, f"a non-empty camera URL: {SUPPORTED_URLS}")
    options = dict(ffmpeg_options or {})

    if text.startswith("/dev/"):
        return UsbSourceConfig(device=text)
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) or len(scheme) == 1:
        # No scheme (or a one-letter one, a Windows drive): a plain file path.
        return FileSourceConfig(path=Path(text), loop=loop)

    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise InvalidParameterError(
                "url", url, "a local file URL such as file:///videos/yard.mp4 (no host)"
            )
        if not parts.path:
            raise InvalidParameterError("url", url, "a file URL with a path")
        return FileSourceConfig(path=Path(unquote(parts.path)), loop=loop)
    if scheme in ("rtsp", "rtsps"):
        _require_host(url, text, "rtsp://HOST[:PORT]/PATH")
        return RtspSourceConfig(url=text, transport=rtsp_transport, ffmpeg_options=options)
    if scheme in ("http", "https"):
        _require_host(url, text, "http://HOST[:PORT]/PATH")
        return HttpSourceConfig(url=text, ffmpeg_options=options)
    if scheme in ("usb", "v4l2"):
        device = rest.removeprefix("//")
        if _DEVICE_INDEX_PATTERN.fullmatch(device):
            return UsbSourceConfig(device=int(device))
        if device.startswith("/dev/"):
            return UsbSourceConfig(device=device)
        raise InvalidParameterError(
            "url", url, "a camera index or device path, e.g. usb:0 or usb:/dev/video0"
        )
    if scheme == "synthetic":
        return _parse_synthetic(url, text)
    raise InvalidParameterError("url", url, f"a supported scheme ({SUPPORTED_URLS})")


def _require_host(url: str, text: str, example: str) -> None:
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as error:  # e.g. a bad port or an unbalanced IPv6 bracket
        raise InvalidParameterError("url", url, f"a valid URL like {example} ({error})") from None
    if not host:
        raise InvalidParameterError("url", url, f"a URL with a host, like {example}")


def _parse_synthetic(url: str, text: str) -> SyntheticSourceConfig:
    parts = urlsplit(text)
    query = parse_qs(parts.query, keep_blank_values=True)
    known = {"seed", "fps", "size", "shapes", "frames"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise InvalidParameterError(
            "url", url, f"synthetic parameters among {sorted(known)}, not {unknown}"
        )
    values: dict[str, object] = {key: items[-1] for key, items in query.items()}
    if "size" in values:
        match = _SIZE_PATTERN.fullmatch(str(values.pop("size")))
        if not match:
            raise InvalidParameterError("url", url, "size=WIDTHxHEIGHT, e.g. size=320x240")
        values["width"], values["height"] = int(match.group(1)), int(match.group(2))
    try:
        return SyntheticSourceConfig.model_validate(values)
    except ValueError as error:
        raise InvalidParameterError("url", url, f"valid synthetic parameters ({error})") from None


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def describe_source(config: SourceConfig) -> str:
    """A short, password-free name of the source for messages."""
    if isinstance(config, FileSourceConfig):
        return str(config.path)
    if isinstance(config, RtspSourceConfig | HttpSourceConfig):
        return redact_url(config.url)
    if isinstance(config, UsbSourceConfig):
        return f"usb:{config.device}"
    return f"synthetic://?seed={config.seed}&fps={config.fps:g}&size={config.width}x{config.height}"


# ---------------------------------------------------------------------------------------------
# Readers


class FrameSource(ABC):
    """One open connection to a video source, read by a single thread.

    Reading is split like OpenCV's grab/retrieve so a caller can skip a frame without paying
    for its colour conversion: :meth:`grab` advances and returns the frame's timestamp,
    :meth:`retrieve` returns the grabbed frame as RGB.
    """

    #: True when timestamps are media time (files, synthetic): such sources can be replayed
    #: at their native pace or as fast as possible. Live sources stamp wall-clock time.
    media_clock: bool = False

    @property
    def nominal_fps(self) -> float | None:
        """The frame rate the source announces, when it announces one."""
        return None

    @abstractmethod
    def grab(self) -> float | None:
        """Advance to the next frame and return its timestamp (s); None at the end of a
        finite source. Raises SourceError when the source broke or timed out."""

    @abstractmethod
    def retrieve(self) -> np.ndarray:
        """The grabbed frame as an RGB ``uint8`` array ``(height, width, 3)``."""

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release the connection; safe to call twice."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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
        from edge_runtime.synthetic_source import SyntheticSource

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
    import cv2

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


class _OpenCvSource(FrameSource):
    """Shared grab/retrieve/close over a cv2.VideoCapture."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._capture: Any = None  # a cv2.VideoCapture; cv2 has no type information

    @property
    def _cap(self) -> Any:
        if self._capture is None:
            raise SourceError(f"{self.name} is closed")
        return self._capture

    @property
    def nominal_fps(self) -> float | None:
        import cv2

        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        return fps if math.isfinite(fps) and 0 < fps <= 1000 else None

    def retrieve(self) -> np.ndarray:
        import cv2

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
        capture = _open_ffmpeg_capture(str(path), {}, self._open_timeout_s, self._open_timeout_s)
        if not capture.isOpened():
            raise PermanentSourceError(f"cannot decode {path}: not a video FFmpeg can read")
        self._capture = capture
        self._grabbed_in_pass = 0

    def _frame_interval(self) -> float:
        fps = self.nominal_fps
        return 1.0 / fps if fps else 1.0 / 25.0

    def grab(self) -> float | None:
        import cv2

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
        capture = _open_ffmpeg_capture(config.url, options, open_timeout_s, read_timeout_s)
        if not capture.isOpened():
            raise SourceError(
                f"cannot open {self.name}: unreachable, refused, not a video stream, "
                f"or no answer within {open_timeout_s:g} s"
            )
        self._capture = capture

    def grab(self) -> float | None:
        if not self._cap.grab():
            raise SourceError(f"{self.name} stopped sending frames (closed or timed out)")
        return time.time()


class UsbSource(_OpenCvSource):
    """A local V4L2 camera. An unplugged device is a retryable error: it may come back."""

    def __init__(self, config: UsbSourceConfig, *, read_timeout_s: float = 20.0) -> None:
        import cv2

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
