"""Live views: the multipart framing and the bound on open views."""

from __future__ import annotations

import pytest

from api.live_views import BOUNDARY, MEDIA_TYPE, LiveViewSlots, part
from mainstream.core.errors import BusyError


def test_a_part_is_one_jpeg_with_its_length() -> None:
    jpeg = b"\xff\xd8 image \xff\xd9"
    framed = part(jpeg)
    head, body = framed.split(b"\r\n\r\n", 1)
    assert head.splitlines() == [
        f"--{BOUNDARY}".encode(),
        b"Content-Type: image/jpeg",
        f"Content-Length: {len(jpeg)}".encode(),
    ]
    assert body == jpeg + b"\r\n"
    assert MEDIA_TYPE.endswith(f"; boundary={BOUNDARY}")


def test_views_beyond_the_limit_are_refused_until_one_closes() -> None:
    slots = LiveViewSlots(2)
    slots.take()
    slots.take()
    with pytest.raises(BusyError, match=r"api\.max_live_views") as refused:
        slots.take()
    assert refused.value.http_status == 429
    slots.give_back()
    slots.take()
    assert slots.open == 2
    for _ in range(3):
        slots.give_back()
    assert slots.open == 0  # never below zero
