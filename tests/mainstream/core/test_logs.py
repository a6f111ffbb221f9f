"""JSON log lines: the fixed fields, `extra=` fields and tracebacks, one object per line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from mainstream.core.logs import UVICORN_LOGGERS, JsonFormatter, RedactSecrets, configure_logging


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("", *UVICORN_LOGGERS)]
    saved = [(list(lg.handlers), list(lg.filters), lg.level, lg.propagate) for lg in loggers]
    yield
    for configured, (handlers, filters, level, propagate) in zip(loggers, saved, strict=True):
        configured.handlers[:] = handlers
        configured.filters[:] = filters
        configured.setLevel(level)
        configured.propagate = propagate


def test_json_lines_carry_fields_extras_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logs.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info("camera %s is %s", "door", "streaming", extra={"camera": "door", "fps": 9.5})
        try:
            raise ValueError("bad frame\nsecond line")
        except ValueError:
            logger.exception("frame failed", extra={"when": object()})
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # a multi-line traceback stays inside one JSON line
    info, error = (json.loads(line) for line in lines)
    assert info["message"] == "camera door is streaming"
    assert (info["level"], info["logger"], info["camera"], info["fps"]) == (
        "INFO",
        "tests.logs.json",
        "door",
        9.5,
    )
    assert info["time"].endswith("Z") and "T" in info["time"]
    assert "args" not in info and "msg" not in info
    assert error["level"] == "ERROR" and "ValueError: bad frame" in error["exception"]
    assert error["when"].startswith("<object object")  # not JSON: written as str()


def test_configure_logging_routes_every_logger_through_one_handler(
    restore_root_logger: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("warning", "json")
    logging.getLogger("uvicorn.error").warning("shutting down")
    logging.getLogger("edge_runtime.camera").info("not shown at level warning")
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["shutting down"]


TOKEN = "mst_Zq3-x_9aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789ab"


def test_secrets_are_redacted_from_messages_arguments_extras_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("tests.logs.redact")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        # uvicorn's access line: the path is an argument; the status code stays a number.
        logger.info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/api/live?token={TOKEN}", "1.1", 200
        )
        logger.info("sent %(header)s", {"header": "Authorization: Bearer s3cr3t-value"})
        logger.info(f"created {TOKEN} for x", extra={"url": "/api/live?x=1&ticket=t1ck3t"})
        logger.info("settings token %s", "token=from-settings&next=1")
        try:
            raise ValueError(f"refused {TOKEN}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    for secret in (TOKEN[4:], "s3cr3t-value", "t1ck3t", "from-settings"):
        assert secret not in output
    lines = [json.loads(line) for line in output.splitlines()]
    assert lines[0]["message"] == '127.0.0.1:5 - "GET /api/live?token=*** HTTP/1.1" 200'
    assert lines[1]["message"] == "sent Authorization: Bearer ***"
    assert lines[2]["message"] == "created mst_*** for x"
    assert lines[2]["url"] == "/api/live?x=1&ticket=***"
    assert lines[3]["message"] == "settings token token=***&next=1"
    assert "ValueError: refused mst_***" in lines[4]["exception"]


def test_configure_logging_redacts_uvicorn_access_lines(
    restore_root_logger: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "text")
    for name in ("", *UVICORN_LOGGERS):
        assert any(isinstance(f, RedactSecrets) for f in logging.getLogger(name).filters), name
    configure_logging("info", "text")  # configured twice: still one filter each
    assert sum(isinstance(f, RedactSecrets) for f in logging.getLogger().filters) == 1
    access = logging.getLogger("uvicorn.access")
    access.info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/api/live?token={TOKEN}", "1.1", 200
    )
    logging.getLogger("api").warning("header Authorization: Bearer %s", TOKEN)
    err = capsys.readouterr().err
    assert TOKEN[4:] not in err
    assert '"GET /api/live?token=*** HTTP/1.1" 200' in err
    assert "header Authorization: Bearer ***" in err
