"""Log output of the daemon: readable text for a terminal, or JSON lines for a log collector.

A JSON line holds `time` (ISO 8601, UTC), `level`, `logger` and `message`, any `extra={...}`
fields the call passed, and `exception` (the formatted traceback) when there is one:

    {"time": "2026-01-05T10:00:00.123Z", "level": "INFO", "logger": "edge_runtime.camera",
     "message": "camera door: starting -> streaming (opened)"}

Secrets never reach the output: :class:`RedactSecrets` replaces API tokens (`mst_...`), the
values of `token=` and `ticket=` query parameters and `Bearer ...` credentials with `***` in a
record's message, arguments, extra fields, traceback and stack, e.g. uvicorn's access line
`"GET /api/live?token=***"`. `configure_logging` installs it.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)))
_STANDARD_ATTRIBUTES = _RECORD_ATTRIBUTES | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy
}


REDACTED = "***"
# Any `token=`/`ticket=` value (`access_token=` too; a token from the settings need not start
# with `mst_`), bearer credentials (`Authorization: Bearer ...`) and our tokens (`mst_...`).
_SECRET = re.compile(
    r"(?P<key>(?i:token=|ticket=|\bbearer(?:\s+|%20)))[^\s&#\"',;]+|\bmst_[A-Za-z0-9_\-]+"
)
_PLAIN = (int, float, bool, type(None))  # arguments that cannot hold a secret (and %d needs)


def redact(text: str) -> str:
    """`text` with every secret replaced by `***`."""
    return _SECRET.sub(lambda found: (found["key"] or "mst_") + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Rewrites a record so that no secret in it is ever formatted; never drops a record.

    Install it on the loggers that create records and on the handlers that write them: a
    logger's filters see only the records logged on that very logger, a handler's see all
    that reach it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        elif not isinstance(record.msg, _PLAIN):
            record.msg = redact(str(record.msg))
        if isinstance(record.args, dict):
            record.args = {key: _redact_argument(value) for key, value in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_redact_argument(value) for value in record.args)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _redact_argument(value: object) -> object:
    """A `%` argument without secrets: a string (or an object whose str() holds a secret)
    becomes its redacted text; numbers and the like stay as they are."""
    if isinstance(value, _PLAIN):
        return value
    text = value if isinstance(value, str) else str(value)
    redacted = redact(text)
    return value if redacted == text else redacted


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values JSON cannot hold are written as their str()."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_text:  # formatted (and redacted) by RedactSecrets
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Send every logger's records (uvicorn's included) to stderr in one format, with secrets
    redacted (:class:`RedactSecrets` on the handler, the root and the uvicorn loggers)."""
    redact_secrets = RedactSecrets()
    handler = logging.StreamHandler()
    handler.addFilter(redact_secrets)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("", *UVICORN_LOGGERS):
        configured = logging.getLogger(name)
        for old in [f for f in configured.filters if isinstance(f, RedactSecrets)]:
            configured.removeFilter(old)
        configured.addFilter(redact_secrets)
        if name:
            configured.handlers.clear()
            configured.propagate = True
