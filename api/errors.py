"""The one place where errors become HTTP responses.

Every error Mainstream raises on purpose carries its HTTP status (`http_status` in
:mod:`mainstream.core.errors`). Client errors (4xx) say what was wrong; server errors (5xx) say
only that something failed and give an id to find the details in the node's log, unless the
error class declares its message safe to show (`expose_message = True`, e.g. "no frame yet").
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from mainstream.core.errors import AuthError, MainstreamError
from mainstream.node.settings import validation_problems

logger = logging.getLogger(__name__)


def error_body(error: str, detail: str, **extra: object) -> dict[str, object]:
    return {"error": error, "detail": detail, **extra}


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
    extra: dict[str, object] = {}
    problems = getattr(exc, "problems", None)
    if isinstance(problems, list):
        extra["problems"] = problems
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
    return JSONResponse(
        error_body(type(exc).__name__, str(exc), **extra), status_code=status, headers=headers
    )


def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for item in exc.errors():
        location = ".".join(str(part) for part in item.get("loc", ()))
        problems.append(f"{location}: {item.get('msg', 'invalid')}")
    return JSONResponse(
        error_body("InvalidRequest", "; ".join(problems), problems=problems), status_code=422
    )


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    problems = validation_problems(exc)
    return JSONResponse(
        error_body("InvalidRequest", "; ".join(problems), problems=problems), status_code=422
    )


def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return _server_error(request, 500, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MainstreamError, _mainstream_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
