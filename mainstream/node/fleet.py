"""Pulling packages from a fleet's shared registry (a daemon run with `--role registry`).

A node asked to run a package it does not hold fetches it from the shared registry named by
`registry_url`: first the package record (version number, sha256, size), then the archive,
streamed to a staging file under the node's upload limit. The archive must be the one the
record names (same sha256); the caller then stores it exactly like an upload, with the same
complete validation, so a tampered archive is rejected whole and nothing is stored.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from mainstream.core.errors import ConflictError, MainstreamError, NotFoundError, PackageError
from mainstream.node.registry import PackageRecord
from mainstream.node.settings import Settings

CHUNK_BYTES = 1024 * 1024
TIMEOUT_S = 30.0  # per connection attempt and per read, not for the whole download


class RegistryUnavailableError(MainstreamError):
    """The shared registry cannot be reached, refuses this node, or answers nonsense."""

    http_status = 502
    expose_message = True  # names the registry and what went wrong; holds no secret


class PackageTooLargeError(MainstreamError):
    """The shared registry's archive is larger than this node accepts (`api.max_upload_bytes`)."""

    http_status = 413
    exit_code = 2


class _Missing(Exception):
    """The shared registry answered 404."""


class RegistryClient:
    """Reads packages from a shared registry with a (viewer) bearer token."""

    def __init__(self, url: str, token: str | None, timeout: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryClient:
        if settings.registry_url is None:
            raise ConflictError(
                "this node has no shared registry to pull from; set registry_url "
                "(MAINSTREAM_REGISTRY_URL)"
            )
        token = settings.registry_token
        return cls(settings.registry_url, token.get_secret_value() if token else None)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def package(self, app: str, version: int | Literal["latest"]) -> PackageRecord:
        """The shared registry's record of one package version (`latest` resolved there)."""
        path = f"/api/packages/{quote(app, safe='')}/{version}"
        try:
            answer = self._client.get(path)
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error
        if answer.status_code == 404:
            raise NotFoundError(
                f"no package for app {app!r} version {version}, neither on this node nor in the "
                f"shared registry at {self.url}"
            )
        self._check(answer, f"package {app} version {version}")
        try:
            return PackageRecord.model_validate_json(answer.content)
        except ValidationError as error:
            raise RegistryUnavailableError(
                f"the shared registry at {self.url} answered package {app} version {version} "
                "with something that is not a package record"
            ) from error

    def download(self, record: PackageRecord, destination: Path, limit: int) -> int:
        """Stream the archive of `record` to `destination`; return its size in bytes.

        Refused before anything is written when the record is larger than `limit`, and cut off
        when more bytes arrive than that. The archive must hash to `record.sha256`.
        """
        what = f"package {record.app} version {record.version}"
        if record.size_bytes > limit:
            raise PackageTooLargeError(
                f"{what} in the shared registry has {record.size_bytes} bytes; this node "
                f"accepts {limit} at most (api.max_upload_bytes)"
            )
        path = f"/api/packages/{quote(record.app, safe='')}/{record.version}/archive"
        try:
            size, sha256 = self._stream_to(path, destination, limit, f"the archive of {what}")
        except _Missing:
            raise RegistryUnavailableError(
                f"the shared registry at {self.url} lists {what} but has no archive for it"
            ) from None
        if sha256 != record.sha256:
            raise PackageError(
                f"the archive of {what} sent by the shared registry has sha256 "
                f"{sha256[:12]}…, but the registry lists {record.sha256[:12]}…; "
                "it was corrupted or tampered with, and nothing was stored"
            )
        return size

    def download_base_weights(self, fingerprint: str, destination: Path, limit: int) -> int:
        """Stream the weights of the base with this fingerprint to `destination`.

        The caller checks that the weights really have the fingerprint before using them.
        """
        path = f"/api/bases/{quote(fingerprint, safe='')}/weights"
        what = f"the weights of base {fingerprint[:12]}…"
        try:
            size, _ = self._stream_to(path, destination, limit, what)
        except _Missing:
            raise NotFoundError(
                f"{what} are neither on this node, nor bundled in the package, nor in the shared "
                f"registry at {self.url}; register the base first (mainstream base ...)"
            ) from None
        return size

    def _stream_to(self, path: str, destination: Path, limit: int, what: str) -> tuple[int, str]:
        """GET `path` into `destination` under `limit` bytes; its size and sha256."""
        digest = hashlib.sha256()
        size = 0
        try:
            with (
                self._client.stream("GET", path) as answer,
                open(destination, "wb") as writer,
            ):
                if answer.status_code == 404:
                    raise _Missing(what)
                self._check(answer, what)
                for chunk in answer.iter_bytes(CHUNK_BYTES):
                    size += len(chunk)
                    if size > limit:
                        raise PackageTooLargeError(
                            f"{what} sent by the shared registry: more than {limit} bytes, "
                            "the most this node accepts (api.max_upload_bytes)"
                        )
                    digest.update(chunk)
                    writer.write(chunk)
        except httpx.HTTPError as error:
            raise self._unreachable(error) from error
        return size, digest.hexdigest()

    def _check(self, answer: httpx.Response, what: str) -> None:
        if answer.status_code in (401, 403):
            raise RegistryUnavailableError(
                f"the shared registry at {self.url} refused this node's token "
                f"({answer.status_code}); check MAINSTREAM_REGISTRY_TOKEN"
            )
        if answer.status_code != 200:
            raise RegistryUnavailableError(
                f"the shared registry at {self.url} answered {answer.status_code} for {what}"
            )

    def _unreachable(self, error: httpx.HTTPError) -> RegistryUnavailableError:
        return RegistryUnavailableError(
            f"the shared registry at {self.url} cannot be reached: {type(error).__name__}: {error}"
        )
