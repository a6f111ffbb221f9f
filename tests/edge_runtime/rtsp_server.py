"""A loopback RTSP server serving a moving test pattern as H.264, for the camera tests.

Runs under the system Python with Debian's GStreamer bindings (python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base/good/ugly), not inside the project's
environment, so it imports nothing from the project.

    /usr/bin/python3 rtsp_server.py --check          # exit 0 if everything needed is there
    /usr/bin/python3 rtsp_server.py --port 0         # prints "READY <port>" once listening
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

REQUIRED_ELEMENTS = {
    "videotestsrc": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "rtph264pay": "gstreamer1.0-plugins-good",
}


def load_gstreamer() -> tuple[Any, Any, Any, Any]:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    Gst.init(None)
    return GLib, Gst, GstRtsp, GstRtspServer


def check() -> int:
    try:
        _, gst, _, _ = load_gstreamer()
    except (ImportError, ValueError) as error:
        print(
            f"GStreamer RTSP bindings unavailable ({error}): install python3-gi and "
            "gir1.2-gst-rtsp-server-1.0"
        )
        return 1
    missing = [
        f"{name} ({package})"
        for name, package in REQUIRED_ELEMENTS.items()
        if gst.ElementFactory.find(name) is None
    ]
    if missing:
        print("missing GStreamer elements: " + ", ".join(missing))
        return 1
    print("ok")
    return 0


def serve(port: int, path: str, fps: int, width: int, height: int) -> int:
    glib, _, rtsp_types, rtsp = load_gstreamer()
    server = rtsp.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = rtsp.RTSPMediaFactory()
    factory.set_launch(
        "( videotestsrc is-live=true pattern=ball "
        f"! video/x-raw,width={width},height={height},framerate={fps}/1 "
        "! videoconvert "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    # TCP only: a client that asks for UDP is refused, which shows the transport it used.
    factory.set_protocols(rtsp_types.RTSPLowerTrans.TCP)
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    print(f"READY {server.get_bound_port()}", flush=True)
    glib.MainLoop().run()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", default="/stream")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args()
    if args.check:
        return check()
    return serve(args.port, args.path, args.fps, args.width, args.height)


if __name__ == "__main__":
    sys.exit(main())
