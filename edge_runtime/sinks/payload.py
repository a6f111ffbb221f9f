"""The event message every sink sends, in the style of Frigate's `events` topic.

    {"type": "new" | "update" | "end", "node": "<node>", "before": <record or null>,
     "after": <record>}

`after` is the event as it is now, `before` as it was in the previous message about the same
event (null for "new"). A record carries the fields of :class:`EventRecord` (`ended_by`: why it
ended, null while active; not `last_time`), `active` (no end time yet), `snapshot`, the URL
path of the event's best JPEG on the node's API, and `clip`, the URL of the event's short video
(WebM) or null until it is stored: the clip is written after the event's end, and an "update"
message announces it.

An event that a crash left open is ended when the node starts again: its "end" has `ended_by`
"restart", and `before` is the event as it was last stored (the node forgot what it sent).
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from edge_runtime.detector import ENDED_RESTART, EventChange, EventRecord, Transition

SNAPSHOT_PATH = "/api/events/{event_id}/snapshot.jpg"
CLIP_PATH = "/api/events/{event_id}/clip.webm"


def snapshot_path(event_id: str) -> str:
    return SNAPSHOT_PATH.format(event_id=event_id)


def clip_path(event_id: str) -> str:
    return CLIP_PATH.format(event_id=event_id)


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity; a score that is not a number is sent as null."""
    return value if math.isfinite(value) else None


def event_json(event: EventRecord, *, base_url: str = "") -> dict[str, Any]:
    """One event record as a JSON-ready dict; `base_url` turns the snapshot path into a URL."""
    return {
        "id": event.id,
        "app": event.app,
        "camera": event.camera,
        "start_time": event.start_time,
        "end_time": event.end_time,
        "active": event.end_time is None,
        "peak_score": _finite(event.peak_score),
        "peak_frame": event.peak_frame,
        "frames_analysed": event.frames_analysed,
        "frames_fired": event.frames_fired,
        "ended_by": event.ended_by,
        "snapshot": base_url.rstrip("/") + snapshot_path(event.id),
        "clip": base_url.rstrip("/") + clip_path(event.id) if event.has_clip else None,
    }


def encode_message(message: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the exact bytes that are published and signed."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")


class EventMessageBuilder:
    """Turns event changes into messages, remembering each recent event's last record for `before`.

    Thread-safe: the runtime calls sinks from every camera's worker thread. At most
    `max_open_events` records are remembered (the oldest is forgotten first), so an event whose
    end never arrives cannot make the memory grow.
    """

    def __init__(self, node: str, *, base_url: str = "", max_open_events: int = 4096) -> None:
        self.node = node
        self.base_url = base_url
        self.max_open_events = max_open_events
        self._last: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def build(self, change: EventChange) -> dict[str, Any]:
        after = event_json(change.event, base_url=self.base_url)
        with self._lock:
            before = self._last.pop(change.event.id, None)
            # An ended event is remembered too: its clip is announced after its end.
            self._last[change.event.id] = after
            while len(self._last) > self.max_open_events:
                self._last.popitem(last=False)
        if change.transition is Transition.NEW:
            before = None
        elif before is None and change.event.ended_by == ENDED_RESTART:
            # Closed at start-up: what was last stored is what the last message said.
            opened = replace(change.event, end_time=None, ended_by=None)
            before = event_json(opened, base_url=self.base_url)
        return {
            "type": change.transition.value,
            "node": self.node,
            "before": before,
            "after": after,
        }
