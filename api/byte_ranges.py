"""HTTP byte ranges (RFC 9110 §14) over content held in memory: one range per request.

Browsers ask a `<video>` for `Range: bytes=0-` and seek with later ranges; a server that
answers 206 lets them show the duration and jump without loading the whole file first.
"""

from __future__ import annotations

import re

from fastapi import Response

_SINGLE_RANGE = re.compile(r"^\s*bytes=(\d*)-(\d*)\s*$")


def byte_range_response(data: bytes, media_type: str, range_header: str | None) -> Response:
    """200 with everything, 206 with the range asked for, or 416 when it lies outside the data.

    A header that is not one `bytes=` range (several ranges, another unit) is ignored, as the
    RFC allows: the whole content comes back.
    """
    size = len(data)
    headers = {"Accept-Ranges": "bytes"}
    match = _SINGLE_RANGE.match(range_header or "")
    if match is None or match.group(1) == match.group(2) == "":
        return Response(data, media_type=media_type, headers=headers)
    first_text, last_text = match.groups()
    if first_text == "":  # the last N bytes
        first, last = max(0, size - int(last_text)), size - 1
    else:
        first = int(first_text)
        last = size - 1 if last_text == "" else min(int(last_text), size - 1)
    if first >= size or first > last:
        headers["Content-Range"] = f"bytes */{size}"
        return Response(status_code=416, headers=headers)
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return Response(data[first : last + 1], status_code=206, media_type=media_type, headers=headers)
