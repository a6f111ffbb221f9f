"""The M-Package archive (DESIGN §5): write it, read it, verify it.

A package is a zip archive with exactly this layout::

    manifest.json
    candidates/<cut_point>.keras     # the specialised suffix of one candidate
    base/<name>.h5                   # optional: the base weights

Packages are uploaded by users, so the reader trusts nothing: it checks the zip structure,
member names, sizes and compression ratios before reading a byte of data, validates the
manifest against its schema, checks that the archive holds exactly the files the manifest
lists, and verifies every sha256 while it extracts. Any failure raises :class:`PackageError`
and leaves nothing extracted. Models are loaded only in Keras safe mode (no pickled or
marshalled Python code), after their own `.keras` archive has passed the same kind of checks.

Keras is imported only inside the functions that load a model, so inspecting a package and
the `mainstream package inspect` command stay light.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mainstream.core.errors import InvalidParameterError, PackageError
from mainstream.core.manifest import (
    BASE_WEIGHTS_FILE_PATTERN,
    CANDIDATE_FILE_PATTERN,
    MANIFEST_NAME,
    PACKAGE_FORMAT,
    PACKAGE_FORMAT_VERSION,
    CandidateInfo,
    Manifest,
)

if TYPE_CHECKING:
    import keras

MiB = 1024 * 1024
_CHUNK = MiB
_INPUT_CUT = "input"  # the cut before the first layer; its candidate takes the base's input

# Folders the layout allows; an archive may carry explicit entries for them.
_LAYOUT_FOLDERS = ("candidates/", "base/")
# What a `.keras` file written by Keras 3 contains; anything else is refused before loading.
_KERAS_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5"})
_KERAS_REQUIRED_MEMBERS = frozenset({"config.json", "model.weights.h5"})


class PackageLimits(BaseModel):
    """Size limits that keep a hostile archive (zip bomb, huge member list) harmless."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_total_bytes: int = Field(default=512 * MiB, gt=0, description="sum of uncompressed sizes")
    max_member_bytes: int = Field(default=256 * MiB, gt=0, description="one uncompressed member")
    max_members: int = Field(default=64, gt=0, description="entries in the archive")
    max_ratio: float = Field(default=100.0, gt=1, description="uncompressed / compressed size")
    ratio_min_bytes: int = Field(
        default=MiB, ge=0, description="members smaller than this skip the ratio check"
    )
    max_manifest_bytes: int = Field(default=MiB, gt=0, description="size of manifest.json")


DEFAULT_LIMITS = PackageLimits()


# ---------------------------------------------------------------------------------------------
# Checksums and names


def sha256_file(path: Path | str) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def candidate_archive_name(cut_point: str) -> str:
    """The archive name of a candidate: `candidates/<cut_point>.keras`."""
    name = f"candidates/{cut_point}.keras"
    if not re.fullmatch(CANDIDATE_FILE_PATTERN, name):
        raise InvalidParameterError(
            "cut_point", cut_point, "a layer name of ASCII letters, digits, '_', '.' or '-'"
        )
    return name


def _unsafe_name_reason(name: str) -> str | None:
    """Why `name` may not appear in a package, or None when it is a plain relative path."""
    if not name:
        return "empty name"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "control character in the name"
    if "\\" in name:
        return "backslash in the name"
    if name.startswith("/"):
        return "absolute path"
    if ":" in name:  # drive letters (C:) and NTFS streams
        return "drive letter or colon in the name"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "parent-directory component '..'"
    if any(part in ("", ".") for part in parts):
        return "empty or '.' path component"
    return None


def _layout_kind(name: str) -> str | None:
    """Which part of the layout an archive name belongs to, or None when it belongs nowhere."""
    if name == MANIFEST_NAME:
        return "manifest"
    if re.fullmatch(CANDIDATE_FILE_PATTERN, name):
        return "candidate"
    if re.fullmatch(BASE_WEIGHTS_FILE_PATTERN, name):
        return "base"
    return None


def _expected_files(manifest: Manifest) -> dict[str, str]:
    """Archive name -> sha256 of every file the manifest refers to (manifest.json excluded)."""
    expected = {candidate.file: candidate.sha256 for candidate in manifest.candidates}
    if manifest.base_weights is not None:
        base_file = manifest.base_weights["file"]
        if base_file in expected:
            raise PackageError(f"base_weights.file {base_file!r} is also a candidate file")
        expected[base_file] = manifest.base_weights["sha256"]
    return expected


def _check_checksums_section(manifest: Manifest, expected: Mapping[str, str]) -> None:
    """The optional `checksums` section must agree exactly with the candidates and base."""
    if not manifest.checksums:
        return
    for name in sorted(set(manifest.checksums) - set(expected)):
        raise PackageError(
            f"manifest checksums list {name!r}, which no candidate or base_weights refers to"
        )
    for name, digest in sorted(expected.items()):
        listed = manifest.checksums.get(name)
        if listed is None:
            raise PackageError(f"manifest checksums do not list {name!r}")
        if listed != digest:
            raise PackageError(
                f"manifest is inconsistent: checksums[{name!r}] = {listed} but the "
                f"candidate/base entry says {digest}"
            )


# ---------------------------------------------------------------------------------------------
# Writing


def write_package(
    out_path: Path | str,
    manifest: Manifest,
    files: Mapping[str, Path | str],
    limits: PackageLimits = DEFAULT_LIMITS,
) -> Path:
    """Write an M-Package to `out_path` atomically and return its path.

    `files` maps archive names ("candidates/conv_pw_5_relu.keras", "base/weights.h5") to
    local files. It must hold exactly the files the manifest names, each with the sha256 the
    manifest records (compute it with :func:`sha256_file`). The manifest is written with a
    `checksums` section covering every file. Nothing is left at `out_path` (nor a temp file
    beside it) when anything fails, including KeyboardInterrupt.
    """
    out_path = Path(out_path)
    expected = _expected_files(manifest)
    for name in files:
        reason = _unsafe_name_reason(name)
        if reason is not None:
            raise PackageError(f"unsafe archive name {name!r}: {reason}")
        if _layout_kind(name) in (None, "manifest"):
            raise PackageError(
                f"archive name {name!r} is not in the package layout "
                "(candidates/<name>.keras or base/<name>.h5)"
            )
        if name not in expected:
            raise PackageError(f"file {name!r} is given but the manifest does not refer to it")
    for name in expected:
        if name not in files:
            raise PackageError(f"the manifest refers to {name!r} but no local file was given")

    sizes: dict[str, int] = {}
    for name, digest in expected.items():
        local = Path(files[name])
        if not local.is_file():
            raise PackageError(f"local file {str(local)!r} for {name!r} does not exist")
        sizes[name] = local.stat().st_size
        actual = sha256_file(local)
        if actual != digest:
            raise PackageError(
                f"{name!r}: the manifest says sha256 {digest} but {str(local)!r} has {actual}"
            )
    _check_checksums_section(manifest, expected)
    final = manifest.model_copy(update={"checksums": dict(sorted(expected.items()))})
    manifest_bytes = final.model_dump_json(indent=2).encode("utf-8")
    # A package this writer produces must be one the reader accepts (e.g. no infinite floats,
    # which JSON cannot carry).
    parse_manifest(manifest_bytes)
    _check_write_limits(sizes, len(manifest_bytes), limits)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(
        prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent
    )
    temp_path = Path(temp_name)
    try:
        with os.fdopen(descriptor, "w+b") as stream:
            os.fchmod(stream.fileno(), 0o644)  # mkstemp's 0600 would hide the package from others
            _write_zip(stream, manifest_bytes, files, expected, final.created_at)
            stream.flush()
            stream.seek(0)
            with open_zip_archive(stream, "the written package") as written:
                checked_zip_members(written, limits, "the written package")  # e.g. ratio limits
            os.fsync(stream.fileno())
        os.replace(temp_path, out_path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(out_path.parent)
    return out_path


def _check_write_limits(
    sizes: Mapping[str, int], manifest_size: int, limits: PackageLimits
) -> None:
    if manifest_size > limits.max_manifest_bytes:
        raise PackageError(
            f"manifest.json would be {manifest_size} bytes, over the limit of "
            f"{limits.max_manifest_bytes}"
        )
    if len(sizes) + 1 > limits.max_members:
        raise PackageError(f"{len(sizes) + 1} members exceed the limit of {limits.max_members}")
    for name, size in sizes.items():
        if size > limits.max_member_bytes:
            raise PackageError(
                f"{name!r} is {size} bytes, over the per-member limit of {limits.max_member_bytes}"
            )
    total = sum(sizes.values()) + manifest_size
    if total > limits.max_total_bytes:
        raise PackageError(
            f"the package would hold {total} bytes, over the limit of {limits.max_total_bytes}"
        )


def _zip_timestamp(moment: datetime) -> tuple[int, int, int, int, int, int]:
    """Zip entry time from the manifest's creation time, so equal inputs give equal archives."""
    utc = moment.astimezone(timezone.utc) if moment.tzinfo else moment
    if utc.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second)


def _write_zip(
    stream: IO[bytes],
    manifest_bytes: bytes,
    files: Mapping[str, Path | str],
    expected: Mapping[str, str],
    created_at: datetime,
) -> None:
    timestamp = _zip_timestamp(created_at)
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(_regular_entry(MANIFEST_NAME, timestamp), manifest_bytes)
        for name in sorted(expected):
            # Hash again while copying: a file that changes after it was checked is caught.
            digest = hashlib.sha256()
            with (
                open(files[name], "rb") as source,
                archive.open(_regular_entry(name, timestamp), "w") as target,
            ):
                for chunk in iter(lambda: source.read(_CHUNK), b""):
                    digest.update(chunk)
                    target.write(chunk)
            if digest.hexdigest() != expected[name]:
                raise PackageError(f"{str(files[name])!r} changed while it was being packaged")


def _regular_entry(name: str, timestamp: tuple[int, int, int, int, int, int]) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=timestamp)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.create_system = 3  # unix, so that the mode above is meaningful
    return info


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; some filesystems cannot open a directory, which is fine."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# ---------------------------------------------------------------------------------------------
# Reading: structure and manifest


def open_zip_archive(stream: IO[bytes], what: str) -> zipfile.ZipFile:
    """Open a zip archive for the safe reader below; `what` names it in errors.

    Shared with every other archive Mainstream accepts (the trainer worker's job archives)."""
    try:
        return zipfile.ZipFile(stream, "r")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as error:
        raise PackageError(f"{what} is not a zip archive (or it is truncated): {error}") from error


def checked_zip_members(
    archive: zipfile.ZipFile, limits: PackageLimits, what: str
) -> dict[str, zipfile.ZipInfo]:
    """Names, kinds and sizes of every entry; returns the regular files by name.

    Only the central directory is read here: nothing is decompressed yet.
    """
    entries = archive.infolist()
    if len(entries) > limits.max_members:
        raise PackageError(
            f"{what} has {len(entries)} entries, over the limit of {limits.max_members}"
        )
    members: dict[str, zipfile.ZipInfo] = {}
    seen: set[str] = set()
    total = 0
    for info in entries:
        name = info.filename
        reason = _unsafe_name_reason(name)
        if reason is not None:
            raise PackageError(f"{what} has an unsafe member name {name!r}: {reason}")
        folded = name.rstrip("/").casefold()
        if folded in seen:
            raise PackageError(f"{what} has the member name {name!r} more than once")
        seen.add(folded)
        if info.flag_bits & 0x1:
            raise PackageError(f"{what} member {name!r} is encrypted")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise PackageError(f"{what} member {name!r} is a symbolic link")
        if info.is_dir():  # checked against the layout by the caller
            if stat.S_IFMT(mode) and not stat.S_ISDIR(mode):
                raise PackageError(f"{what} member {name!r} is not a regular directory")
            continue
        if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
            raise PackageError(f"{what} member {name!r} is not a regular file")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise PackageError(
                f"{what} member {name!r} uses compression method {info.compress_type}; "
                "only stored and deflated members are accepted"
            )
        if info.file_size > limits.max_member_bytes:
            raise PackageError(
                f"{what} member {name!r} is {info.file_size} bytes uncompressed, over the "
                f"per-member limit of {limits.max_member_bytes}"
            )
        if info.file_size >= limits.ratio_min_bytes:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise PackageError(
                    f"{what} member {name!r} expands {ratio:.0f}x (over {limits.max_ratio:.0f}x): "
                    "refusing a likely zip bomb"
                )
        total += info.file_size
        if total > limits.max_total_bytes:
            raise PackageError(
                f"{what} holds more than {limits.max_total_bytes} bytes uncompressed "
                "(limit max_total_bytes)"
            )
        members[name] = info
    return members


def _check_package_layout(archive: zipfile.ZipFile, members: Mapping[str, zipfile.ZipInfo]) -> None:
    for info in archive.infolist():
        if info.is_dir() and info.filename not in _LAYOUT_FOLDERS:
            raise PackageError(
                f"package has a folder {info.filename!r} outside the layout "
                "(only candidates/ and base/)"
            )
    for name in members:
        if _layout_kind(name) is None:
            raise PackageError(
                f"package member {name!r} is outside the layout (manifest.json, "
                "candidates/<name>.keras, base/<name>.h5)"
            )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, what: str) -> bytes:
    """A member's bytes, never more than `limit` however the entry lies about its size."""
    try:
        with archive.open(info) as member:
            data = member.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError) as error:
        raise PackageError(f"{what} member {info.filename!r} is corrupt: {error}") from error
    if len(data) > limit:
        raise PackageError(f"{what} member {info.filename!r} is larger than {limit} bytes")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _parse_json(data: bytes, what: str) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys (which readers resolve differently)."""
    try:
        return json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise PackageError(f"{what} is not valid JSON: {error}") from error


def _field_path(location: tuple[int | str, ...]) -> str:
    """('candidates', 0, 'recall') -> 'candidates[0].recall'."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "manifest"


def _format_validation_error(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        detail = item["msg"]
        if item["type"] not in ("missing", "model_type", "value_error"):
            shown = repr(item.get("input"))
            detail += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        problems.append(f"{_field_path(item['loc'])}: {detail}")
    return "; ".join(problems)


def parse_manifest(data: bytes) -> Manifest:
    """Validate manifest.json bytes against the schema; every problem names its field."""
    document = _parse_json(data, MANIFEST_NAME)
    if not isinstance(document, dict):
        raise PackageError(f"{MANIFEST_NAME} must hold a JSON object")
    if "format" not in document:
        raise PackageError(f"{MANIFEST_NAME} has no 'format' field: this is not an M-Package")
    if document["format"] != PACKAGE_FORMAT:
        raise PackageError(
            f"{MANIFEST_NAME} has format {document['format']!r}, expected {PACKAGE_FORMAT!r}: "
            "this is not an M-Package"
        )
    version = document.get("format_version")
    if version != PACKAGE_FORMAT_VERSION or isinstance(version, bool):
        raise PackageError(
            f"{MANIFEST_NAME} has format_version {version!r}; this version of Mainstream reads "
            f"format_version {PACKAGE_FORMAT_VERSION} only"
        )
    try:
        return Manifest.model_validate(document)
    except ValidationError as error:
        raise PackageError(
            f"{MANIFEST_NAME} does not follow the schema: {_format_validation_error(error)}"
        ) from error


@dataclass(frozen=True)
class PackageListing:
    """What a package says about itself, checked for structure but not yet for checksums."""

    path: Path
    manifest: Manifest
    member_sizes: dict[str, int]  # archive name -> uncompressed bytes (manifest.json included)
    archive_bytes: int
    manifest_bytes: bytes = field(repr=False, default=b"")


def _check_archive_size(stream: IO[bytes], path: Path, limits: PackageLimits) -> int:
    size = os.fstat(stream.fileno()).st_size
    # Compressed data never needs much more room than the uncompressed limit.
    allowed = limits.max_total_bytes + limits.max_manifest_bytes
    if size > allowed:
        raise PackageError(f"{str(path)!r} is {size} bytes, over the limit of {allowed}")
    return size


def _listing_from(
    archive: zipfile.ZipFile, path: Path, archive_bytes: int, limits: PackageLimits
) -> tuple[PackageListing, dict[str, zipfile.ZipInfo], dict[str, str]]:
    """Every check short of reading the data of the listed files."""
    members = checked_zip_members(archive, limits, "package")
    _check_package_layout(archive, members)
    if MANIFEST_NAME not in members:
        raise PackageError(f"package has no {MANIFEST_NAME}")
    manifest_bytes = _read_member(
        archive, members[MANIFEST_NAME], limits.max_manifest_bytes, "package"
    )
    manifest = parse_manifest(manifest_bytes)
    expected = _expected_files(manifest)
    _check_checksums_section(manifest, expected)
    present = set(members) - {MANIFEST_NAME}
    for name in sorted(set(expected) - present):
        raise PackageError(f"the manifest lists {name!r} but the archive does not contain it")
    for name in sorted(present - set(expected)):
        raise PackageError(f"archive member {name!r} is not listed in the manifest")
    listing = PackageListing(
        path=path,
        manifest=manifest,
        member_sizes={name: info.file_size for name, info in members.items()},
        archive_bytes=archive_bytes,
        manifest_bytes=manifest_bytes,
    )
    return listing, members, expected


def inspect_package(path: Path | str, limits: PackageLimits = DEFAULT_LIMITS) -> PackageListing:
    """Structure, layout and manifest checks without extracting (checksums are not verified)."""
    path = Path(path)
    with _open_package_file(path) as stream:
        archive_bytes = _check_archive_size(stream, path, limits)
        with open_zip_archive(stream, str(path)) as archive:
            listing, _, _ = _listing_from(archive, path, archive_bytes, limits)
    return listing


@contextlib.contextmanager
def _open_package_file(path: Path) -> Iterator[IO[bytes]]:
    if not path.is_file():
        raise PackageError(f"{str(path)!r} is not a file")
    with contextlib.ExitStack() as stack:
        try:
            stream = stack.enter_context(open(path, "rb"))
        except OSError as error:
            raise PackageError(f"cannot open {str(path)!r}: {error}") from error
        yield stream


# ---------------------------------------------------------------------------------------------
# Reading: extraction


@dataclass
class Package:
    """An extracted, verified package. Use as a context manager to remove a temp extraction."""

    manifest: Manifest
    root: Path
    path: Path
    archive_sha256: str
    owns_root: bool = field(default=False, repr=False)

    def candidate(self, cut_point: str) -> CandidateInfo:
        for candidate in self.manifest.candidates:
            if candidate.cut_point == cut_point:
                return candidate
        known = ", ".join(candidate.cut_point for candidate in self.manifest.candidates)
        raise PackageError(
            f"package of app {self.manifest.app.name!r} has no candidate at cut point "
            f"{cut_point!r} (it has: {known})"
        )

    def candidate_path(self, cut_point: str) -> Path:
        return self.root / self.candidate(cut_point).file

    @property
    def base_weights_path(self) -> Path | None:
        if self.manifest.base_weights is None:
            return None
        return self.root / self.manifest.base_weights["file"]

    def load_candidate(self, cut_point: str, limits: PackageLimits = DEFAULT_LIMITS) -> keras.Model:
        """The candidate's suffix model, loaded in Keras safe mode without compiling."""
        return load_keras_safely(self.candidate_path(cut_point), limits)

    def cleanup(self) -> None:
        """Remove the extraction directory when read_package created it as a temp dir."""
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.owns_root = False

    def __enter__(self) -> Package:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()


def _archive_sha256(stream: IO[bytes]) -> str:
    stream.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


def _prepare_destination(extract_to: Path) -> None:
    if extract_to.is_symlink() or (extract_to.exists() and not extract_to.is_dir()):
        raise InvalidParameterError("extract_to", str(extract_to), "a missing or empty directory")
    if extract_to.is_dir() and any(extract_to.iterdir()):
        raise InvalidParameterError("extract_to", str(extract_to), "a missing or empty directory")


def _extract_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, digest_expected: str
) -> None:
    """Stream one member to `target`, counting bytes and hashing as it goes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    try:
        with archive.open(info) as source, open(target, "xb") as sink:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                written += len(chunk)
                if written > info.file_size:
                    raise PackageError(f"member {info.filename!r} is longer than it declares")
                digest.update(chunk)
                sink.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError) as error:
        raise PackageError(f"package member {info.filename!r} is corrupt: {error}") from error
    if digest.hexdigest() != digest_expected:
        raise PackageError(
            f"checksum mismatch for {info.filename!r}: the manifest says {digest_expected}, "
            f"the archive holds {digest.hexdigest()}; the package is corrupt or was tampered with"
        )


def read_package(
    path: Path | str,
    extract_to: Path | str | None = None,
    limits: PackageLimits = DEFAULT_LIMITS,
) -> Package:
    """Check a package completely and extract it; raise PackageError and extract nothing if bad.

    With `extract_to` (a missing or empty directory) the files stay there; without it they go
    to a temp directory that :meth:`Package.cleanup` (or leaving the `with` block) removes.
    """
    path = Path(path)
    destination = Path(extract_to) if extract_to is not None else None
    if destination is not None:
        _prepare_destination(destination)
    with _open_package_file(path) as stream:
        archive_bytes = _check_archive_size(stream, path, limits)
        archive_sha256 = _archive_sha256(stream)
        with open_zip_archive(stream, str(path)) as archive:
            listing, members, expected = _listing_from(archive, path, archive_bytes, limits)
            if destination is None:
                staging = Path(tempfile.mkdtemp(prefix="mpkg-"))
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                staging = Path(
                    tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent)
                )
            try:
                for name in sorted(expected):
                    _extract_member(archive, members[name], staging / name, expected[name])
                (staging / MANIFEST_NAME).write_bytes(listing.manifest_bytes)
                if destination is not None:
                    if destination.is_dir():
                        destination.rmdir()  # checked empty above
                    os.replace(staging, destination)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    root = destination if destination is not None else staging
    return Package(
        manifest=listing.manifest,
        root=root,
        path=path,
        archive_sha256=archive_sha256,
        owns_root=destination is None,
    )


# ---------------------------------------------------------------------------------------------
# Loading models safely


def _check_keras_archive(path: Path, limits: PackageLimits) -> None:
    """A `.keras` file is itself a zip: check it like a package before Keras opens it."""
    what = f"model {path.name!r}"
    with open(path, "rb") as stream, open_zip_archive(stream, what) as archive:
        members = checked_zip_members(archive, limits, what)
        unexpected = sorted(set(members) - _KERAS_MEMBERS) + [
            info.filename for info in archive.infolist() if info.is_dir()
        ]
        if unexpected:
            raise PackageError(
                f"{what} contains unexpected members {unexpected}; a Keras 3 model file holds "
                f"only {sorted(_KERAS_MEMBERS)}"
            )
        missing = sorted(_KERAS_REQUIRED_MEMBERS - set(members))
        if missing:
            raise PackageError(f"{what} lacks {missing}")
        config = _parse_json(
            _read_member(archive, members["config.json"], limits.max_manifest_bytes, what),
            f"{what} config.json",
        )
    foreign = sorted(_foreign_modules(config))
    if foreign:
        raise PackageError(
            f"{what} refers to code outside Keras (modules {foreign}); only built-in Keras "
            "layers can be loaded"
        )


def _foreign_modules(node: Any) -> set[str]:
    """Modules named in a Keras config that are neither Keras nor Python builtins."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            module = item.get("module")
            if isinstance(module, str) and not (
                module in ("keras", "builtins") or module.startswith("keras.")
            ):
                found.add(module)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_keras_safely(path: Path | str, limits: PackageLimits = DEFAULT_LIMITS) -> keras.Model:
    """Load a `.keras` model in safe mode: no Lambda bytecode, no foreign modules, no pickle."""
    path = Path(path)
    _check_keras_archive(path, limits)
    import keras  # TensorFlow loads only when a model is built or run

    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:
        raise PackageError(
            f"model {path.name!r} cannot be loaded in Keras safe mode: {_first_line(error)}"
        ) from error


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True)
class CandidateCheck:
    """What verification found out about one candidate."""

    cut_point: str
    file: str
    size_bytes: int
    input_shape: tuple[int | None, ...] | None = None  # no batch axis; None when not loaded
    parameters: int | None = None


@dataclass(frozen=True)
class VerificationReport:
    """A package that passed every check; verification raises PackageError otherwise."""

    path: Path
    archive_sha256: str
    archive_bytes: int
    manifest: Manifest
    candidates: list[CandidateCheck]
    models_loaded: bool

    def summary(self) -> str:
        app = self.manifest.app
        loaded = "loaded in Keras safe mode" if self.models_loaded else "models not loaded"
        cuts = ", ".join(check.cut_point for check in self.candidates)
        return (
            f"OK {self.path.name}: app {app.name!r} ({len(app.classes)} classes), "
            f"{len(self.candidates)} candidate(s) [{cuts}] {loaded}, base "
            f"{self.manifest.base_model.name} {self.manifest.base_model.weights_fingerprint[:12]}, "
            f"sha256 {self.archive_sha256[:12]}"
        )


def _shape_matches(actual: tuple[int | None, ...], declared: tuple[int | None, ...]) -> bool:
    if len(actual) != len(declared):
        return False
    return all(a is None or d is None or a == d for a, d in zip(actual, declared, strict=True))


def check_candidate_model(
    model: keras.Model, candidate: CandidateInfo, manifest: Manifest
) -> tuple[int | None, ...]:
    """Check a loaded suffix against the manifest; return its input shape (no batch axis).

    The suffix must take one tensor (the one at the cut: the base's input for the `input`
    cut, `candidate.input_shape` when recorded) and give one score per class.
    """
    label = f"candidate {candidate.cut_point!r} ({candidate.file})"
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise PackageError(
            f"{label} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "a suffix has exactly one of each"
        )
    input_shape = tuple(model.inputs[0].shape[1:])
    output_shape = tuple(model.outputs[0].shape[1:])
    classes = len(manifest.app.classes)
    if output_shape != (classes,):
        raise PackageError(
            f"{label} outputs shape {output_shape}, expected ({classes},): one score per class"
        )
    declared: tuple[int | None, ...] | None = candidate.input_shape
    if declared is None and candidate.cut_point == _INPUT_CUT:
        declared = tuple(manifest.base_model.input_shape)
    if declared is not None and not _shape_matches(input_shape, declared):
        raise PackageError(
            f"{label} takes input shape {input_shape}, but the manifest implies {declared}"
        )
    concrete = declared if declared is not None else input_shape
    if all(size is not None for size in concrete):
        probe = np.zeros((1, *concrete), dtype="float32")
        try:
            scores = np.asarray(model(probe, training=False))
        except Exception as error:
            raise PackageError(f"{label} fails on a test input: {_first_line(error)}") from error
        if scores.shape != (1, classes) or not np.all(np.isfinite(scores)):
            raise PackageError(f"{label} gives non-finite or misshapen scores {scores.shape}")
    return input_shape


def verify_package(
    path: Path | str,
    load_models: bool = True,
    limits: PackageLimits = DEFAULT_LIMITS,
) -> VerificationReport:
    """Every check read_package makes, plus loading every candidate in Keras safe mode.

    Raises PackageError naming the first problem; a package either passes whole or not at all.
    """
    path = Path(path)
    with read_package(path, limits=limits) as package:
        manifest = package.manifest
        checks: list[CandidateCheck] = []
        for candidate in manifest.candidates:
            file_path = package.root / candidate.file
            size = file_path.stat().st_size
            if not load_models:
                checks.append(CandidateCheck(candidate.cut_point, candidate.file, size))
                continue
            model = load_keras_safely(file_path, limits)
            input_shape = check_candidate_model(model, candidate, manifest)
            checks.append(
                CandidateCheck(
                    cut_point=candidate.cut_point,
                    file=candidate.file,
                    size_bytes=size,
                    input_shape=input_shape,
                    parameters=int(model.count_params()),
                )
            )
        return VerificationReport(
            path=path,
            archive_sha256=package.archive_sha256,
            archive_bytes=path.stat().st_size,
            manifest=manifest,
            candidates=checks,
            models_loaded=load_models,
        )


def describe_size(size: float) -> str:
    """Human-readable byte count: 1.5 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


__all__ = [
    "DEFAULT_LIMITS",
    "CandidateCheck",
    "Package",
    "PackageLimits",
    "PackageListing",
    "VerificationReport",
    "candidate_archive_name",
    "check_candidate_model",
    "describe_size",
    "inspect_package",
    "load_keras_safely",
    "parse_manifest",
    "read_package",
    "sha256_file",
    "verify_package",
    "write_package",
]
