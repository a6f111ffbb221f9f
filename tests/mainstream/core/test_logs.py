"""JSON log lines: the fixed fields, `extra=` fields and tracebacks, one object per line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from mainstream.core.logs import JsonFormatter, configure_logging


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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
