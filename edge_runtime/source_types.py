"""What every video source shares: frames, camera URLs and their typed configs, and the
:class:`FrameSource` interface that readers implement.

Kept apart from the readers (:mod:`edge_runtime.sources`, :mod:`edge_runtime.synthetic_source`)
so that each reader depends on this module and the opener on the readers, never in a circle.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Annotated, Literal
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mainstream.core.errors import InvalidParameterError, SourceError


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
    import cv2  # OpenCV loads only when frames are decoded or drawn

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
    def decodes_on_retrieve(self) -> bool:
        """True when :meth:`grab` only reads the frame and :meth:`retrieve` decodes it, so a
        frame grabbed but never retrieved costs no decoding (e.g. MJPEG files). False when the
        backend decodes in :meth:`grab` and skipping :meth:`retrieve` saves only the colour
        conversion."""
        return False

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
