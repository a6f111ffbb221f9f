"""The one place where errors become HTTP responses.

Every error Mainstream raises on purpose carries its HTTP status (`http_status` in
:mod:`mainstream.core.errors`). Client errors (4xx) say what was wrong; server errors (5xx) say
only that something failed and give an id to find the details in the node's log, unless the
error class declares its message safe to show (`expose_message = True`, e.g. "no frame yet").

Messages are written for people at the node (the CLI shows them too) and may name files; an
HTTP answer names only a file's name, never where it lies on the server (:func:`redact_paths`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from mainstream.core.errors import AuthError, MainstreamError
from mainstream.node.settings import validation_problems

logger = logging.getLogger(__name__)


# An absolute path of two or more segments that does not continue a word, a number, a URL or
# another path ("ms/s", "http://host:1/api/x" and "a/b" are not matched).
_ABSOLUTE_PATH = re.compile(r"(?<![\w./~:-])(?:/[^\s'\"`,;:()\[\]{}<>|/]+){2,}/?")
# First segments of the API's own paths, which messages may name.
_URL_PATHS = frozenset({"api", "ui", "metrics", "docs", "redoc", "openapi.json", "jobs"})


def redact_paths(text: str, roots: Iterable[Path | str] = ()) -> str:
    """`text` with every server path replaced by its file name.

    Paths under `roots` (the data folder...) are found even when relative segments follow;
    other absolute paths by their shape. A bare root becomes "a folder of the node"."""
    known = sorted({str(root).rstrip("/") for root in roots if str(root).strip("/")}, key=len)
    for root in reversed(known):  # the longest first: a root inside another
        pattern = re.compile(
            re.escape(root) + r"(?=$|[/\s'\"`,;:()\[\]{}<>|])(?:/[^\s'\"`,;()\[\]{}<>|]*)?"
        )
        text = pattern.sub(partial(_under_root, root=root), text)
    return _ABSOLUTE_PATH.sub(_file_name_unless_url, text)


def _under_root(match: re.Match[str], *, root: str) -> str:
    path = match.group(0).rstrip("/")
    return "a folder of the node" if path == root else _file_name(match)


def _file_name(match: re.Match[str]) -> str:
    name = os.path.basename(match.group(0).rstrip("/"))
    return name or "a folder of the node"


def _file_name_unless_url(match: re.Match[str]) -> str:
    path = match.group(0)
    if path.split("/")[1] in _URL_PATHS:
        return path
    return _file_name(match)


def _private_roots(request: Request) -> list[Path | str]:
    """Folders of this server whose location an answer must not show."""
    roots: list[Path | str] = [tempfile.gettempdir(), Path.home()]
    settings = getattr(getattr(request.app.state, "node", None), "settings", None)
    if settings is not None:
        roots.append(settings.data_dir)
        if settings.trainer.datasets_dir is not None:
            roots.append(settings.trainer.datasets_dir)
    return roots


def error_body(error: str, detail: str, **extra: object) -> dict[str, object]:
    return {"error": error, "detail": detail, **extra}


def _client_error(
    request: Request,
    status: int,
    error: str,
    detail: str,
    problems: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A 4xx answer; server paths in the message are reduced to file names."""
    roots = _private_roots(request)
    extra: dict[str, object] = {}
    if problems is not None:
        extra["problems"] = [redact_paths(problem, roots) for problem in problems]
    return JSONResponse(
        error_body(error, redact_paths(detail, roots), **extra),
        status_code=status,
        headers=headers,
    )


def _server_error(request: Request, status: int, exc: BaseException) -> JSONResponse:
    error_id = uuid.uuid4().hex[:12]
    logger.error(
        "%s %s failed (error id %s)",
        request.method,
        request.url.path,
        error_id,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return JSONResponse(
        error_body(
            "internal_error",
            "the node could not complete the request; see its log for this error id",
            error_id=error_id,
        ),
        status_code=status,
    )


def _mainstream_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MainstreamError)
    status = exc.http_status
    if status >= 500 and not getattr(exc, "expose_message", False):
        return _server_error(request, status, exc)
    problems = getattr(exc, "problems", None)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
    return _client_error(
        request,
        status,
        type(exc).__name__,
        str(exc),
        problems=problems if isinstance(problems, list) else None,
        headers=headers,
    )


def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for item in exc.errors():
        location = ".".join(str(part) for part in item.get("loc", ()))
        problems.append(f"{location}: {item.get('msg', 'invalid')}")
    return _client_error(request, 422, "InvalidRequest", "; ".join(problems), problems)


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    problems = validation_problems(exc)
    return _client_error(request, 422, "InvalidRequest", "; ".join(problems), problems)


def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return _server_error(request, 500, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MainstreamError, _mainstream_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
