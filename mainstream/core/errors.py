"""One exception hierarchy for the whole product.

Every error a user can cause derives from :class:`MainstreamError`; the API maps each class to
an HTTP status in one place and the CLI prints the message and exits non-zero.
"""

from __future__ import annotations


class MainstreamError(Exception):
    """Base class of every error Mainstream raises on purpose."""

    http_status = 500
    exit_code = 1


class InvalidParameterError(MainstreamError, ValueError):
    """A parameter lies outside its allowed range; the message names the field and the value."""

    http_status = 422
    exit_code = 2

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{field}={value!r} is invalid: expected {expected}")


class InfeasibleError(MainstreamError):
    """No schedule fits the compute budget."""

    http_status = 422
    exit_code = 3


class PackageError(MainstreamError):
    """An M-Package is corrupt, tampered with, or does not follow the format."""

    http_status = 400
    exit_code = 4


class WeakCandidatesError(PackageError):
    """A sound package whose candidates are no better than the majority class (refused by a
    node unless the upload is forced)."""

    http_status = 422
    exit_code = 8


class NotFoundError(MainstreamError):
    http_status = 404


class ConflictError(MainstreamError):
    http_status = 409


class AuthError(MainstreamError):
    http_status = 401


class ForbiddenError(MainstreamError):
    http_status = 403


class ModelError(MainstreamError):
    """A model cannot be built, cut or loaded as asked (bad cut point, shape mismatch...)."""

    http_status = 422
    exit_code = 5


class SourceError(MainstreamError):
    """A camera or video source cannot be opened or read."""

    http_status = 502
    exit_code = 6


class PolicyError(MainstreamError, ValueError):
    """The node's policy refuses what was asked (a camera URL, an FFmpeg option...); the
    message names the rule and the setting that would allow it."""

    http_status = 422
    exit_code = 9


class BusyError(MainstreamError):
    """Too many of something at once (live views...); the message names the setting."""

    http_status = 429
