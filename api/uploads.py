"""Receive an upload to a file while it streams in, enforcing the size limit as bytes arrive.

FastAPI's `UploadFile` spools the whole body before the route runs; a package upload is instead
parsed here chunk by chunk (multipart/form-data with a `file` field, or the raw archive as the
body), so an oversized upload is cut off without being stored. The rest of an oversized body
is read and discarded (up to a bound) so that the client receives the 413 answer cleanly; in
front of the application, :mod:`api.limits` refuses bodies that declare more than the limit
before they are read. A client that disconnects mid-upload gets (were it still there) a 400,
the log one line, and its staged file is removed.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from mainstream.core.errors import InvalidParameterError, MainstreamError
from mainstream.node.services import TooLargeError

logger = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file
MAX_DRAIN_BYTES = 64 * 1024 * 1024


class ClientDisconnectedError(MainstreamError):
    """The client went away before its upload was complete; nothing was stored."""

    http_status = 400


class _Sink:
    """Writes the file part to disk, counting bytes against the limit."""

    def __init__(self, path: Path, limit: int, field: str) -> None:
        self.path = path
        self.limit = limit
        self.field = field
        self.stream = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.written = 0
        self.too_large = False
        self.found = False
        self._writing = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}

    def write(self, data: bytes) -> None:
        if self.too_large:
            return
        self.written += len(data)
        if self.written > self.limit:
            self.too_large = True
            self.stream.truncate(0)
            return
        self.stream.write(data)

    def close(self) -> None:
        self.stream.close()

    # multipart callbacks

    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self._writing = name == self.field and not self.found
        if self._writing:
            self.found = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writing:
            self.write(data[start:end])

    def on_part_end(self) -> None:
        self._writing = False


async def receive_upload(
    request: Request, destination: Path, limit: int, field: str = "file"
) -> int:
    """Write the uploaded file to `destination`; return its size. TooLargeError past `limit`."""
    declared = request.headers.get("content-length")
    too_long_to_drain = limit + MULTIPART_OVERHEAD + MAX_DRAIN_BYTES
    if declared is not None and declared.isdigit() and int(declared) > too_long_to_drain:
        raise TooLargeError(f"the upload has {declared} bytes; this node accepts {limit}")
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    sink = _Sink(destination, limit, field)
    try:
        await _receive_into(request, sink, content_type, options, limit, field)
    except ClientDisconnect:
        sink.close()
        destination.unlink(missing_ok=True)
        logger.warning(
            "%s %s: 400 client disconnected after %d bytes of its upload; nothing stored",
            request.method,
            request.url.path,
            sink.written,
        )
        raise ClientDisconnectedError(
            "the client disconnected before the upload was complete"
        ) from None
    finally:
        sink.close()
    if sink.too_large:
        with contextlib.suppress(OSError):
            destination.unlink()
        raise TooLargeError(f"the upload is larger than {limit} bytes, the most this node accepts")
    return sink.written


async def _receive_into(
    request: Request,
    sink: _Sink,
    content_type: bytes,
    options: dict[bytes, bytes],
    limit: int,
    field: str,
) -> None:
    """Feed the body to `sink`: the `field` part of a multipart body, or the raw body."""
    if content_type == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise InvalidParameterError("content-type", "multipart", "a boundary parameter")
        parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": sink.on_part_begin,
                "on_header_field": sink.on_header_field,
                "on_header_value": sink.on_header_value,
                "on_header_end": sink.on_header_end,
                "on_headers_finished": sink.on_headers_finished,
                "on_part_data": sink.on_part_data,
                "on_part_end": sink.on_part_end,
            },
        )
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if sink.too_large and received > limit + MAX_DRAIN_BYTES:
                    break
                if not sink.too_large:
                    parser.write(chunk)
            if not sink.too_large:
                parser.finalize()
        except FormParserError as error:
            raise InvalidParameterError(
                "body", "multipart", f"a well-formed multipart/form-data body ({error})"
            ) from None
        if not sink.too_large and not sink.found:
            raise InvalidParameterError("file", None, f"a form field named {field!r}")
    else:
        async for chunk in request.stream():
            sink.write(chunk)
            if sink.too_large and sink.written > limit + MAX_DRAIN_BYTES:
                break
