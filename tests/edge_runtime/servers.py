"""Real video servers on loopback for the camera tests: HTTP MJPEG and RTSP.

Both can be killed mid-stream and restarted on the same port, to exercise reconnects.
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

RTSP_SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def make_test_image(index: int, width: int, height: int) -> np.ndarray:
    """A BGR frame: the left band's brightness encodes `index`, the bottom-right corner is
    pure blue (to check channel order), and a white bar moves across."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 1] = np.linspace(0, 120, width, dtype=np.uint8)[None, :]
    bar = 16 + (index * 4) % (width - 48)
    image[:, bar : bar + 8] = (255, 255, 255)
    image[:, :16] = index_brightness(index)
    image[-16:, -16:] = (255, 0, 0)
    return image


def index_brightness(index: int) -> int:
    return (index * 10) % 250


class MjpegServer:
    """A ``multipart/x-mixed-replace`` JPEG stream, as IP cameras serve on ``/video.mjpg``.

    `stall()` keeps connections open but stops sending (a hung camera); `kill()` closes the
    listening socket and every open connection at once (a camera that lost power). With
    `frames_per_connection` each connection ends after that many frames (a flapping camera);
    `connections` counts the connections served.
    """

    BOUNDARY = "mjpegframe"

    def __init__(
        self,
        port: int = 0,
        fps: float = 25.0,
        size: tuple[int, int] = (160, 120),
        frames_per_connection: int | None = None,
    ):
        self.port = port
        self.fps = fps
        self.size = size
        self.frames_per_connection = frames_per_connection
        self.frames_sent = 0
        self.connections = 0
        self._stalled = threading.Event()
        self._killed = threading.Event()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def start(self) -> MjpegServer:
        server = self
        killed = threading.Event()
        self._killed = killed

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/video.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header(
                    "Content-Type", f"multipart/x-mixed-replace; boundary={server.BOUNDARY}"
                )
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                with server._lock:
                    server._connections.add(self.connection)
                    server.connections += 1
                try:
                    server._stream(self, killed)
                finally:
                    with server._lock:
                        server._connections.discard(self.connection)

            def log_message(self, format: str, *args: object) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def _stream(self, handler: BaseHTTPRequestHandler, killed: threading.Event) -> None:
        width, height = self.size
        interval = 1.0 / self.fps
        next_due = time.monotonic()
        sent = 0
        while not killed.is_set():
            if self.frames_per_connection is not None and sent >= self.frames_per_connection:
                return
            if self._stalled.is_set():
                time.sleep(0.02)
                next_due = time.monotonic()
                continue
            ok, jpeg = cv2.imencode(".jpg", make_test_image(self.frames_sent, width, height))
            assert ok
            data = jpeg.tobytes()
            part = (
                (
                    f"--{self.BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n"
                ).encode()
                + data
                + b"\r\n"
            )
            try:
                handler.wfile.write(part)
                handler.wfile.flush()
            except OSError:
                return
            self.frames_sent += 1
            sent += 1
            next_due += interval
            time.sleep(max(0.0, next_due - time.monotonic()))

    def stall(self) -> None:
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    def kill(self) -> None:
        """Stop listening and cut every open connection."""
        self._killed.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(2)

    def restart(self) -> MjpegServer:
        """Serve again on the same port."""
        self.kill()
        self._stalled.clear()
        return self.start()

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


def rtsp_server_unavailable_reason() -> str | None:
    """None when the RTSP test server can run here, else what is missing."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (the RTSP test server needs Debian's python3-gi)"
    result = subprocess.run(
        [SYSTEM_PYTHON, str(RTSP_SERVER_SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        return (result.stdout + result.stderr).strip() or f"exit status {result.returncode}"
    return None


class RtspServer:
    """Debian's gst-rtsp-server in a separate process, serving H.264 over RTSP on loopback."""

    def __init__(self, port: int = 0, fps: int = 10, size: tuple[int, int] = (320, 240)):
        self.port = port
        self.fps = fps
        self.size = size
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/stream"

    def start(self, timeout_s: float = 10.0) -> RtspServer:
        command = [
            SYSTEM_PYTHON,
            str(RTSP_SERVER_SCRIPT),
            f"--port={self.port}",
            f"--fps={self.fps}",
            f"--width={self.size[0]}",
            f"--height={self.size[1]}",
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self._process = process
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        line = process.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            self.kill()
            raise RuntimeError(f"RTSP test server did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)
        if process is not None and process.stdout is not None:
            process.stdout.close()

    def restart(self) -> RtspServer:
        self.kill()
        return self.start()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


def write_test_video(
    path: Path, frames: int, fps: float = 20.0, size: tuple[int, int] = (160, 120)
) -> Path:
    """Encode `frames` test images into `path` (MJPG for .avi, mp4v for .mp4)."""
    fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} to {path}")
    for index in range(frames):
        writer.write(make_test_image(index, *size))
    writer.release()
    return path
