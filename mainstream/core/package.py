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
import math
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mainstream.core.bases import BaseConfig, architecture_cut_points
from mainstream.core.errors import InvalidParameterError, ModelError, PackageError
from mainstream.core.manifest import (
    BASE_WEIGHTS_FILE_PATTERN,
    CANDIDATE_FILE_PATTERN,
    MANIFEST_NAME,
    PACKAGE_FORMAT,
    READABLE_FORMAT_VERSIONS,
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
    """Size limits that keep a hostile archive (zip bomb, huge member list, huge model) harmless.

    Sizes are checked twice: against what the archive declares before anything is read, and
    against the bytes actually decompressed while extracting (an archive can lie).

    `max_parameters` bounds what a candidate's Keras config may declare, estimated from the
    config before Keras builds anything (Keras allocates every weight when it builds a layer,
    whatever the weights file holds). The largest supported base body, ResNet50, has 23.6 M
    parameters (InceptionV3 21.8 M, MobileNet 3.2 M, MobileNetV2 alpha 1.4 4.4 M), and the
    largest real candidate is that whole body plus a small head (the `input` cut); 50 M leaves
    twice that, and is 200 MB of float32 weights, so loading a candidate stays well under 1 GB.
    `max_activation_elements` bounds any one tensor of a candidate for one frame (64 Mi
    elements: 256 MiB of float32; a MobileNetV2 alpha 1.4 at 1024 px peaks near 38 M), so the
    test input verification runs cannot exhaust memory either.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_total_bytes: int = Field(default=512 * MiB, gt=0, description="sum of uncompressed sizes")
    max_member_bytes: int = Field(default=256 * MiB, gt=0, description="one uncompressed member")
    max_members: int = Field(default=64, gt=0, description="entries in the archive")
    max_ratio: float = Field(default=100.0, gt=1, description="uncompressed / compressed size")
    ratio_min_bytes: int = Field(
        default=MiB, ge=0, description="members smaller than this skip the ratio check"
    )
    max_manifest_bytes: int = Field(default=MiB, gt=0, description="size of manifest.json")
    max_parameters: int = Field(
        default=50_000_000,
        gt=0,
        description="parameters a candidate's config may declare (estimated before building)",
    )
    max_activation_elements: int = Field(
        default=64 * MiB, gt=0, description="elements of any one tensor of a candidate per frame"
    )


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
    if version not in READABLE_FORMAT_VERSIONS or isinstance(version, bool):
        readable = " and ".join(str(known) for known in READABLE_FORMAT_VERSIONS)
        raise PackageError(
            f"{MANIFEST_NAME} has format_version {version!r}; this version of Mainstream reads "
            f"format_version {readable}"
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


class ByteBudget:
    """Bytes an extraction may still write, counted on the bytes actually decompressed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def take(self, count: int, what: str) -> None:
        if count > self.left:
            raise PackageError(
                f"{what} holds more than {self.limit} bytes once decompressed "
                "(limit max_total_bytes): refusing a likely zip bomb"
            )
        self.left -= count


_LOCAL_HEADER = b"PK\x03\x04"
_LOCAL_HEADER_SIZE = 30
_RAW_CHUNK = 64 * 1024


def _member_data_start(raw: IO[bytes], archive_bytes: int, info: zipfile.ZipInfo, what: str) -> int:
    """Where a member's compressed data starts; its local header must agree with the directory."""
    label = f"{what} member {info.filename!r}"
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER_SIZE)
    if len(header) != _LOCAL_HEADER_SIZE or header[:4] != _LOCAL_HEADER:
        raise PackageError(f"{label} is corrupt: no local file header where the directory says")
    name_length = int.from_bytes(header[26:28], "little")
    extra_length = int.from_bytes(header[28:30], "little")
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    if raw.read(name_length).decode(encoding, errors="replace") != info.orig_filename:
        raise PackageError(f"{label} is corrupt: its local header names another file")
    start = info.header_offset + _LOCAL_HEADER_SIZE + name_length + extra_length
    if start + info.compress_size > archive_bytes:
        raise PackageError(f"{label} is corrupt: its data runs past the end of the archive")
    return start


def stream_zip_member(
    raw: IO[bytes],
    info: zipfile.ZipInfo,
    sink: IO[bytes] | None,
    limits: PackageLimits,
    budget: ByteBudget | None = None,
    what: str = "package",
) -> str:
    """Decompress one member of the zip archive in `raw` into `sink`; return its sha256.

    The data is decompressed here, not by :mod:`zipfile`, so that every limit is counted on the
    bytes actually produced, before they are written: the member may not yield more than its
    declared size, nor expand more than `limits.max_ratio` times the compressed bytes actually
    consumed (beyond `limits.ratio_min_bytes`), nor take the `budget` (shared by the members of
    one extraction) below zero. The compressed stream must end exactly at its declared size and
    the data must have the declared length and CRC-32. `sink` None only checks. The caller
    removes whatever reached `sink` when this raises PackageError.
    """
    label = f"{what} member {info.filename!r}"
    archive_bytes = os.fstat(raw.fileno()).st_size
    start = _member_data_start(raw, archive_bytes, info, what)
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise PackageError(f"{label} is corrupt: stored, but its two sizes differ")
    decompressor = (
        zlib.decompressobj(-zlib.MAX_WBITS) if info.compress_type == zipfile.ZIP_DEFLATED else None
    )
    digest = hashlib.sha256()
    crc = 0
    written = 0
    fed = 0  # compressed bytes read from the archive
    left = info.compress_size
    raw.seek(start)
    try:
        while True:
            if decompressor is not None and decompressor.unconsumed_tail:
                data = decompressor.unconsumed_tail
            elif left > 0:
                data = raw.read(min(_RAW_CHUNK, left))
                if not data:
                    raise PackageError(f"{label} is corrupt: the archive ends inside its data")
                left -= len(data)
                fed += len(data)
            elif decompressor is not None and not decompressor.eof:
                data = b""  # all input is in: what zlib still holds back comes out now
            else:
                break
            if decompressor is None:
                chunk, consumed = data, fed
            else:
                chunk = decompressor.decompress(data, _CHUNK)
                consumed = fed - len(decompressor.unconsumed_tail)
                if not data and not chunk:
                    break  # the stream is cut short; reported below
            if written + len(chunk) > info.file_size:
                raise PackageError(
                    f"{label} is corrupt: longer than the {info.file_size} bytes it declares "
                    "(damaged data, or a zip bomb)"
                )
            if written + len(chunk) > limits.ratio_min_bytes + limits.max_ratio * consumed:
                raise PackageError(
                    f"{label} expands over {limits.max_ratio:.0f}x its compressed bytes: "
                    "refusing a likely zip bomb"
                )
            if budget is not None:
                budget.take(len(chunk), what)
            written += len(chunk)
            crc = zlib.crc32(chunk, crc)
            digest.update(chunk)
            if sink is not None:
                sink.write(chunk)
            if decompressor is not None and decompressor.eof:
                break
    except zlib.error as error:
        raise PackageError(f"{label} is corrupt: {error}") from error
    if decompressor is not None and (not decompressor.eof or left > 0 or decompressor.unused_data):
        raise PackageError(
            f"{label} is corrupt: its compressed data does not end where the archive says"
        )
    if written != info.file_size:
        raise PackageError(
            f"{label} is corrupt: {written} bytes, not the {info.file_size} declared"
        )
    if crc != info.CRC:
        raise PackageError(f"{label} is corrupt: Bad CRC-32")
    return digest.hexdigest()


def _extract_member(
    raw: IO[bytes],
    info: zipfile.ZipInfo,
    target: Path,
    digest_expected: str,
    limits: PackageLimits,
    budget: ByteBudget,
) -> None:
    """Stream one member to `target` under the byte budget, hashing as it goes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "xb") as sink:
        digest = stream_zip_member(raw, info, sink, limits, budget)
    if digest != digest_expected:
        raise PackageError(
            f"checksum mismatch for {info.filename!r}: the manifest says {digest_expected}, "
            f"the archive holds {digest}; the package is corrupt or was tampered with"
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
                budget = ByteBudget(limits.max_total_bytes)
                budget.take(len(listing.manifest_bytes), str(path))
                for name in sorted(expected):
                    _extract_member(
                        stream, members[name], staging / name, expected[name], limits, budget
                    )
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


@dataclass(frozen=True)
class ModelFigures:
    """What a candidate's Keras config declares, worked out before Keras builds anything."""

    input_shape: tuple[int, ...]  # no batch axis
    parameters: int  # an upper bound of the weights Keras would allocate
    largest_activation: int  # elements of the largest tensor, per frame


def _check_keras_archive(
    path: Path, limits: PackageLimits, input_shape: tuple[int, ...] | None = None
) -> ModelFigures:
    """A `.keras` file is itself a zip: check it like a package before Keras opens it.

    Every member is decompressed once under the same limits (so that Keras, which may extract
    the weights to disk, never meets a bomb); the config may use only the allowed layers and
    objects, must be consistent with itself, and its parameters and tensors must fit `limits`.
    With `input_shape`, the model must take exactly that tensor (the one at its cut point).
    """
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
        budget = ByteBudget(limits.max_total_bytes)
        for info in members.values():
            stream_zip_member(stream, info, None, limits, budget, what)
        config = _parse_json(
            _read_member(archive, members["config.json"], limits.max_manifest_bytes, what),
            f"{what} config.json",
        )
    _check_allowed_objects(config, what)
    figures = _model_figures(config, limits, what)
    if input_shape is not None and figures.input_shape != tuple(input_shape):
        raise PackageError(
            f"{what} takes input shape {figures.input_shape}, but the tensor at its cut point "
            f"has shape {tuple(input_shape)}"
        )
    return figures


# The Keras layers a candidate may use, and nothing else: exactly the layers of the supported
# bases' bodies as keras.applications builds them (mobilenet_v1, mobilenet_v2, inception_v3,
# resnet50: InputLayer to MaxPooling2D below) and of the heads the trainer adds
# (GlobalAveragePooling2D, Dropout, Dense: trainer/finetune.py, trainer/pretrain.py), plus two
# weightless element-wise layers the project's own test heads use (Rescaling, UnitNormalization).
# Lambda (code) stays out, and Keras safe mode refuses it too.
ALLOWED_LAYERS = frozenset(
    {
        "InputLayer",
        "Conv2D",
        "DepthwiseConv2D",
        "BatchNormalization",
        "ReLU",
        "Activation",
        "ZeroPadding2D",
        "Add",
        "Concatenate",
        "MaxPooling2D",
        "AveragePooling2D",
        "GlobalAveragePooling2D",
        "Dropout",
        "Dense",
        "Rescaling",
        "UnitNormalization",
    }
)
_LAYER_MODULE = "keras.layers"
# The model itself: what `keras.Model(inputs, outputs)` saves.
_MODEL_OBJECT = ("keras.src.models.functional", "Functional")
# Objects a layer's config may hold besides plain values: dtype policies, and the standard
# initializers, regularizers and constraints of its weights (data, not code).
_ALLOWED_OBJECTS: dict[str, frozenset[str]] = {
    "keras": frozenset({"DTypePolicy", "FloatDTypePolicy"}),
    "keras.initializers": frozenset(
        {
            "Constant",
            "GlorotNormal",
            "GlorotUniform",
            "HeNormal",
            "HeUniform",
            "Identity",
            "LecunNormal",
            "LecunUniform",
            "Ones",
            "Orthogonal",
            "RandomNormal",
            "RandomUniform",
            "TruncatedNormal",
            "VarianceScaling",
            "Zeros",
        }
    ),
    "keras.regularizers": frozenset({"L1", "L2", "L1L2", "OrthogonalRegularizer"}),
    "keras.constraints": frozenset({"MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"}),
}
_TENSOR_CLASS = "__keras_tensor__"


def _is_object(node: Any) -> bool:
    return isinstance(node, dict) and ("class_name" in node or "module" in node)


def _object_label(node: dict[str, Any]) -> str:
    return f"{node.get('module')}.{node.get('class_name')}"


def _check_allowed_objects(config: Any, what: str) -> None:
    """Refuse every class a config names that is not on Mainstream's own allow-list.

    Keras resolves any `module` + `class_name` it is given (safe mode only blocks a few known
    tricks); here only a functional model of the allowed layers, their keras tensors and the
    allowed plain objects pass, each where it belongs.
    """
    if not isinstance(config, dict) or (config.get("module"), config.get("class_name")) != (
        _MODEL_OBJECT
    ):
        shown = _object_label(config) if isinstance(config, dict) else type(config).__name__
        raise PackageError(
            f"{what} holds a {shown}, not a functional Keras model (keras.Model(inputs, outputs))"
        )
    _check_registered_name(config, what)
    body = config.get("config")
    if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
        raise PackageError(f"{what} config.json has no list of layers")
    layers = body["layers"]
    for key, value in body.items():
        if key != "layers":
            _check_plain_objects(value, what)
    for key, value in config.items():
        if key not in ("module", "class_name", "registered_name", "config"):
            _check_plain_objects(value, what)
    for layer in layers:
        if not isinstance(layer, dict):
            raise PackageError(f"{what} config.json has a layer that is not an object")
        module, class_name = layer.get("module"), layer.get("class_name")
        if module != _LAYER_MODULE or class_name not in ALLOWED_LAYERS:
            raise PackageError(
                f"{what} uses layer {layer.get('name')!r} of class {module}.{class_name}, which "
                f"Mainstream does not load (allowed: {', '.join(sorted(ALLOWED_LAYERS))} from "
                f"{_LAYER_MODULE})"
            )
        _check_registered_name(layer, what)
        for key, value in layer.items():
            if key == "inbound_nodes":
                _check_plain_objects(value, what, tensors=True)
            elif key not in ("module", "class_name", "registered_name"):
                _check_plain_objects(value, what)


def _check_registered_name(node: dict[str, Any], what: str) -> None:
    # A registered name looks up custom objects; built-in layers have none (the model: itself).
    if node.get("registered_name") not in (None, node.get("class_name")):
        raise PackageError(
            f"{what} names the registered object {node.get('registered_name')!r} for "
            f"{_object_label(node)}; only built-in Keras objects are loaded"
        )


def _check_plain_objects(node: Any, what: str, tensors: bool = False) -> None:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if _is_object(item):
                module, class_name = item.get("module"), item.get("class_name")
                allowed = (tensors and module is None and class_name == _TENSOR_CLASS) or (
                    isinstance(module, str) and class_name in _ALLOWED_OBJECTS.get(module, ())
                )
                if not allowed:
                    raise PackageError(
                        f"{what} refers to {_object_label(item)}, which Mainstream does not load "
                        "(only built-in layers, initializers, regularizers, constraints and dtype "
                        "policies)"
                    )
                _check_registered_name(item, what)
            stack.extend(item.values())


def _model_figures(config: dict[str, Any], limits: PackageLimits, what: str) -> ModelFigures:
    """Input shape, parameters and largest tensor of a functional model, from its config alone.

    Shapes are propagated from the input through every layer (all of them from the allow-list,
    channels-last), and every shape the config declares (a layer's `build_config`, the tensors
    of its inbound node) must be the propagated one: Keras builds a layer with the declared
    shape, so a lie there could otherwise make it allocate anything.
    """
    body = config["config"]
    layers = {}
    for layer in body["layers"]:
        name = layer.get("name")
        if not isinstance(name, str) or name in layers:
            raise PackageError(f"{what} has a layer without a unique name ({name!r})")
        layers[name] = layer
    inputs = _layer_refs(body.get("input_layers"), what, "input_layers")
    outputs = _layer_refs(body.get("output_layers"), what, "output_layers")
    if len(inputs) != 1 or len(outputs) != 1:
        raise PackageError(
            f"{what} has {len(inputs)} inputs and {len(outputs)} outputs; a candidate has "
            "exactly one of each"
        )
    sources = {name: _inbound_sources(layer, layers, what) for name, layer in layers.items()}
    waiting = {name: len(set(names)) for name, names in sources.items()}
    users: dict[str, list[str]] = {name: [] for name in layers}
    for name, names in sources.items():
        for source in set(names):
            users[source].append(name)
    ready = [name for name, count in waiting.items() if count == 0]
    shapes: dict[str, tuple[int, ...]] = {}
    parameters = 0
    largest = 0
    while ready:  # in topological order (Kahn), whatever order the config lists them in
        name = ready.pop()
        layer = layers[name]
        label = f"{what} layer {name!r} ({layer['class_name']})"
        shape, count = _layer_figures(layer, [shapes[source] for source in sources[name]], label)
        shapes[name] = shape
        parameters += count
        if parameters > limits.max_parameters:
            raise PackageError(
                f"{what} declares more than {limits.max_parameters:,} parameters (at "
                f"{label}, which alone holds {count:,}); refusing a model this large "
                "(limit max_parameters)"
            )
        elements = math.prod(shape)
        if elements > limits.max_activation_elements:
            raise PackageError(
                f"{what} makes a tensor of shape {shape} at {label}, over the limit of "
                f"{limits.max_activation_elements:,} elements (max_activation_elements)"
            )
        largest = max(largest, elements)
        for user in users[name]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    if len(shapes) != len(layers):
        stuck = sorted(set(layers) - set(shapes))[:5]
        raise PackageError(f"{what} has layers in a cycle, never computed: {stuck}")
    (input_name,) = inputs
    (output_name,) = outputs
    if input_name not in layers or layers[input_name]["class_name"] != "InputLayer":
        raise PackageError(f"{what} has an input that is not one of its input layers")
    if output_name not in layers:
        raise PackageError(f"{what} has an output that is not one of its layers")
    top_build = config.get("build_config")
    declared = top_build.get("input_shape") if isinstance(top_build, dict) else None
    if declared is not None and _as_shape(declared) != (None, *shapes[input_name]):
        raise PackageError(f"{what} declares a model input shape {declared} it does not have")
    return ModelFigures(shapes[input_name], parameters, largest)


def _layer_refs(value: Any, what: str, field_name: str) -> list[str]:
    """[name, node, tensor] or a list of those -> the layer names."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(ref, list) and len(ref) == 3 and isinstance(ref[0], str) and ref[1:] == [0, 0]
        for ref in value
    ):
        raise PackageError(f"{what} has malformed {field_name}: {str(value)[:80]}")
    return [ref[0] for ref in value]


def _inbound_sources(layer: dict[str, Any], layers: Mapping[str, Any], what: str) -> list[str]:
    """The layers whose outputs `layer` is called on (each layer is called once)."""
    nodes = layer.get("inbound_nodes")
    label = f"{what} layer {layer.get('name')!r}"
    if layer["class_name"] == "InputLayer":
        if nodes:
            raise PackageError(f"{label} is an input layer with inbound nodes")
        return []
    if not isinstance(nodes, list) or len(nodes) != 1 or not isinstance(nodes[0], dict):
        raise PackageError(f"{label} must be called exactly once (it has {nodes!r:.60})")
    node = nodes[0]
    args, kwargs = node.get("args"), node.get("kwargs", {})
    if not isinstance(args, list) or len(args) != 1 or not isinstance(kwargs, dict):
        raise PackageError(f"{label} is called with other arguments than its input tensor(s)")
    if _contains_tensor(kwargs):
        raise PackageError(f"{label} is passed tensors as keyword arguments")
    tensors = args[0] if isinstance(args[0], list) else [args[0]]
    sources = []
    for tensor in tensors:
        history = tensor.get("config", {}).get("keras_history") if _is_tensor(tensor) else None
        if (
            not isinstance(history, list)
            or len(history) != 3
            or history[0] not in layers
            or history[1:] != [0, 0]
        ):
            raise PackageError(f"{label} is called on something that is not a layer's output")
        sources.append(history[0])
    if not sources:
        raise PackageError(f"{label} is called on no tensor")
    return sources


def _is_tensor(node: Any) -> bool:
    return isinstance(node, dict) and node.get("class_name") == _TENSOR_CLASS


def _contains_tensor(node: Any) -> bool:
    stack = [node]
    while stack:
        item = stack.pop()
        if _is_tensor(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _as_shape(value: Any) -> tuple[int | None, ...] | None:
    if not isinstance(value, list) or not all(
        item is None or (isinstance(item, int) and not isinstance(item, bool)) for item in value
    ):
        return None
    return tuple(value)


def _layer_figures(
    layer: dict[str, Any], input_shapes: list[tuple[int, ...]], label: str
) -> tuple[tuple[int, ...], int]:
    """(output shape, parameter count) of one allowed layer, with its declared shapes checked."""
    config = layer.get("config")
    if not isinstance(config, dict):
        raise PackageError(f"{label} has no config")
    class_name = layer["class_name"]
    if class_name == "InputLayer":
        batch_shape = _as_shape(config.get("batch_shape"))
        if (
            batch_shape is None
            or len(batch_shape) < 2
            or batch_shape[0] is not None
            or not all(isinstance(size, int) and size > 0 for size in batch_shape[1:])
        ):
            raise PackageError(
                f"{label} must declare a batch_shape [null, d1, d2, ...] with every size known, "
                f"not {config.get('batch_shape')!r:.60}"
            )
        return tuple(size for size in batch_shape[1:] if size is not None), 0

    node = layer["inbound_nodes"][0]
    for shape, tensor in zip(
        input_shapes,
        node["args"][0] if isinstance(node["args"][0], list) else node["args"],
        strict=True,
    ):
        declared = _as_shape(tensor.get("config", {}).get("shape"))
        if declared != (None, *shape):
            raise PackageError(
                f"{label} declares an input of shape {tensor.get('config', {}).get('shape')!r:.60} "
                f"but receives {(None, *shape)}"
            )
    build = layer.get("build_config")
    if build is not None:
        declared_build = build.get("input_shape") if isinstance(build, dict) else build
        expected: Any = (
            [[None, *shape] for shape in input_shapes]
            if isinstance(node["args"][0], list)
            else [None, *input_shapes[0]]
        )
        if declared_build != expected:
            raise PackageError(
                f"{label} declares a build input shape {declared_build!r:.80} but receives "
                f"{expected}"
            )
    if config.get("data_format") not in (None, "channels_last"):
        raise PackageError(f"{label} is not channels-last")
    activation = config.get("activation")
    if activation is not None and not isinstance(activation, str):
        raise PackageError(f"{label} has an activation that is not a built-in name")
    try:
        return _FIGURES[class_name](config, input_shapes)
    except (_ShapeError, KeyError, TypeError, ValueError, ZeroDivisionError) as error:
        raise PackageError(f"{label} has a config that does not fit its input: {error}") from error


class _ShapeError(ValueError):
    pass


def _int(value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _ShapeError(f"{value!r} is not an integer >= {minimum}")
    return value


def _pair(value: Any, minimum: int = 1) -> tuple[int, int]:
    if isinstance(value, list) and len(value) == 2:
        return _int(value[0], minimum), _int(value[1], minimum)
    size = _int(value, minimum)
    return size, size


def _image(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise _ShapeError(f"expects an image tensor (height, width, channels), gets {shape}")
    return shape[0], shape[1], shape[2]


def _sliding(size: int, window: int, stride: int, dilation: int, padding: Any) -> int:
    if padding == "same":
        return -(-size // stride)
    if padding == "valid":
        span = (window - 1) * dilation + 1
        if size < span:
            raise _ShapeError(f"a window of {span} does not fit in {size}")
        return (size - span) // stride + 1
    raise _ShapeError(f"padding {padding!r} is neither 'same' nor 'valid'")


def _spatial(
    config: dict[str, Any], shape: tuple[int, ...], window_key: str, stride_key: str
) -> tuple[int, int, int, int, int]:
    """Output height and width of a sliding window, the window and the input channels."""
    height, width, channels = _image(shape)
    window = _pair(config[window_key])
    strides = _pair(config[stride_key] if config.get(stride_key) is not None else window)
    dilation = _pair(config.get("dilation_rate", 1))
    padding = config.get("padding", "valid")
    out_height = _sliding(height, window[0], strides[0], dilation[0], padding)
    out_width = _sliding(width, window[1], strides[1], dilation[1], padding)
    return out_height, out_width, window[0] * window[1], channels, 0


def _bias(config: dict[str, Any], size: int) -> int:
    return size if config.get("use_bias", True) else 0


def _conv2d(config: dict[str, Any], shapes: list[tuple[int, ...]]) -> tuple[tuple[int, ...], int]:
    (shape,) = shapes
    height, width, window, channels, _ = _spatial(config, shape, "kernel_size", "strides")
    filters, groups = _int(config["filters"]), _int(config.get("groups", 1))
    if channels % groups or filters % groups:
        raise _ShapeError(
            f"{groups} groups do not divide {channels} channels and {filters} filters"
        )
    return (height, width, filters), window * (channels // groups) * filters + _bias(
        config, filters
    )


def _depthwise_conv2d(
    config: dict[str, Any], shapes: list[tuple[int, ...]]
) -> tuple[tuple[int, ...], int]:
    (shape,) = shapes
    height, width, window, channels, _ = _spatial(config, shape, "kernel_size", "strides")
    outputs = channels * _int(config.get("depth_multiplier", 1))
    return (height, width, outputs), window * outputs + _bias(config, outputs)


def _pooling2d(
    config: dict[str, Any], shapes: list[tuple[int, ...]]
) -> tuple[tuple[int, ...], int]:
    (shape,) = shapes
    height, width, _, channels, _ = _spatial(config, shape, "pool_size", "strides")
    return (height, width, channels), 0


def _zero_padding2d(
    config: dict[str, Any], shapes: list[tuple[int, ...]]
) -> tuple[tuple[int, ...], int]:
    (shape,) = shapes
    height, width, channels = _image(shape)
    padding = config["padding"]
    if isinstance(padding, list) and all(isinstance(side, list) for side in padding):
        if len(padding) != 2:
            raise _ShapeError(f"padding {padding!r} is not ((top, bottom), (left, right))")
        (top, bottom), (left, right) = (_pair(side, 0) for side in padding)
    else:
        vertical, horizontal = _pair(padding, 0)
        top, bottom, left, right = vertical, vertical, horizontal, horizontal
    return (height + top + bottom, width + left + right, channels), 0


def _global_pooling2d(
    config: dict[str, Any], shapes: list[tuple[int, ...]]
) -> tuple[tuple[int, ...], int]:
    (shape,) = shapes
    _, _, channels = _image(shape)
    return ((1, 1, channels) if config.get("keepdims") else (channels,)), 0


def _batch_normalization(
    config: dict[str, Any], shapes: list[tuple[int, ...]]
) -> tuple[tuple[int, ...], int]:
    (shape,) = shapes
    axes = config.get("axis", -1)
    axes = axes if isinstance(axes, list) else [axes]
    rank = len(shape) + 1  # with the batch axis
    size = 1
    for axis in axes:
        axis = _int(axis, -rank)
        if axis >= rank or axis % rank == 0:
            raise _ShapeError("normalises over the batch axis")
        size *= shape[axis % rank - 1]
    # moving mean and variance, gamma (scale) and beta (center); renormalisation: a bound.
    per_channel = (
        2 + (config.get("scale", True) is not False) + (config.get("center", True) is not False)
    )
    return shape, size * (per_channel + (4 if config.get("renorm") else 0))


def _dense(config: dict[str, Any], shapes: list[tuple[int, ...]]) -> tuple[tuple[int, ...], int]:
    (shape,) = shapes
    if not shape:
        raise _ShapeError("a dense layer needs at least one axis")
    if config.get("quantization_config") is not None:
        raise _ShapeError("quantized layers are not loaded")
    units = _int(config["units"])
    parameters = shape[-1] * units + _bias(config, units)
    if config.get("lora_rank") is not None:
        parameters += (shape[-1] + units) * _int(config["lora_rank"])
    return (*shape[:-1], units), parameters


def _add(config: dict[str, Any], shapes: list[tuple[int, ...]]) -> tuple[tuple[int, ...], int]:
    if len(shapes) < 2 or any(shape != shapes[0] for shape in shapes):
        raise _ShapeError(f"adds tensors of shapes {shapes}; they must be two or more of one shape")
    return shapes[0], 0


def _concatenate(
    config: dict[str, Any], shapes: list[tuple[int, ...]]
) -> tuple[tuple[int, ...], int]:
    rank = len(shapes[0]) + 1
    axis = _int(config.get("axis", -1), -rank)
    if (
        len(shapes) < 2
        or axis >= rank
        or axis % rank == 0
        or any(len(shape) + 1 != rank for shape in shapes)
    ):
        raise _ShapeError(f"cannot concatenate shapes {shapes} along axis {axis}")
    index = axis % rank - 1
    rest = [shape[:index] + shape[index + 1 :] for shape in shapes]
    if any(other != rest[0] for other in rest):
        raise _ShapeError(f"shapes {shapes} differ off the concatenation axis")
    joined = sum(shape[index] for shape in shapes)
    return (*shapes[0][:index], joined, *shapes[0][index + 1 :]), 0


def _same_shape(
    config: dict[str, Any], shapes: list[tuple[int, ...]]
) -> tuple[tuple[int, ...], int]:
    (shape,) = shapes
    return shape, 0


_Figures = Callable[[dict[str, Any], list[tuple[int, ...]]], tuple[tuple[int, ...], int]]
_FIGURES: dict[str, _Figures] = {
    "Conv2D": _conv2d,
    "DepthwiseConv2D": _depthwise_conv2d,
    "BatchNormalization": _batch_normalization,
    "ReLU": _same_shape,
    "Activation": _same_shape,
    "ZeroPadding2D": _zero_padding2d,
    "Add": _add,
    "Concatenate": _concatenate,
    "MaxPooling2D": _pooling2d,
    "AveragePooling2D": _pooling2d,
    "GlobalAveragePooling2D": _global_pooling2d,
    "Dropout": _same_shape,
    "Dense": _dense,
    "Rescaling": _same_shape,
    "UnitNormalization": _same_shape,
}
assert set(_FIGURES) == ALLOWED_LAYERS - {"InputLayer"}


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_keras_file(
    path: Path | str,
    limits: PackageLimits = DEFAULT_LIMITS,
    input_shape: tuple[int, ...] | None = None,
) -> ModelFigures:
    """Every check :func:`load_keras_safely` makes before Keras sees the file (no TensorFlow).

    The archive's members (sizes, CRCs, real expansion), its config's classes (only the allowed
    layers and objects), its self-consistency, and its size (parameters and tensors within
    `limits`); with `input_shape`, the model must take that tensor. Raises PackageError.
    """
    return _check_keras_archive(Path(path), limits, input_shape)


def load_keras_safely(
    path: Path | str,
    limits: PackageLimits = DEFAULT_LIMITS,
    input_shape: tuple[int, ...] | None = None,
) -> keras.Model:
    """Load a `.keras` model in safe mode, once :func:`check_keras_file` passed: no Lambda
    bytecode, no class outside the allow-list, no pickle, nothing larger than `limits`."""
    path = Path(path)
    _check_keras_archive(path, limits, input_shape)
    return _load_checked_keras_file(path)


def _load_checked_keras_file(path: Path) -> keras.Model:
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
    model: keras.Model,
    candidate: CandidateInfo,
    manifest: Manifest,
    cut_shape: tuple[int, ...] | None = None,
) -> tuple[int | None, ...]:
    """Check a loaded suffix against the manifest; return its input shape (no batch axis).

    The suffix must take one tensor (the one at the cut: `cut_shape`, the shape the base gives
    it, when known, else the base's input for the `input` cut or `candidate.input_shape` when
    recorded) and give one score per class.
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
    declared: tuple[int | None, ...] | None = cut_shape or candidate.input_shape
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


def base_cut_shapes(manifest: Manifest) -> dict[str, tuple[int, ...]]:
    """The shape at each candidate's cut point in the package's base (architecture only).

    Every cut point must be a real cut point of the base the manifest names (built without
    weights), and a recorded `input_shape` must be the shape the base gives it; a package
    whose cut points its base does not have would fail only when deployed.
    """
    info = manifest.base_model
    height, width, channels = info.input_shape
    if height != width or channels != 3:
        raise PackageError(
            f"base_model.input_shape {info.input_shape} is not a square colour image (size, "
            "size, 3)"
        )
    try:
        config = BaseConfig(name=info.name, input_size=height, alpha=info.alpha or 1.0)
        shapes = architecture_cut_points(config)
    except (InvalidParameterError, ModelError) as error:
        raise PackageError(f"the package's base model cannot be built: {error}") from error
    described = f"{info.name} (input {height}, alpha {config.alpha})"
    found = {}
    for candidate in manifest.candidates:
        shape = shapes.get(candidate.cut_point)
        if shape is None:
            names = list(shapes)
            shown = ", ".join([*names[:4], "...", *names[-2:]] if len(names) > 6 else names)
            raise PackageError(
                f"candidate cut point {candidate.cut_point!r} is not a cut point of the base "
                f"{described}; its cut points are {shown}"
            )
        if candidate.input_shape is not None and tuple(candidate.input_shape) != shape:
            raise PackageError(
                f"candidate {candidate.cut_point!r} declares input_shape "
                f"{tuple(candidate.input_shape)}, but the base {described} has shape {shape} "
                "at that cut point"
            )
        found[candidate.cut_point] = shape
    return found


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_base_weights_file(path: Path) -> None:
    """Bundled base weights must at least be an HDF5 file (their fingerprint is checked where
    the base is built: the node's upload, the deployer)."""
    with open(path, "rb") as stream:
        if stream.read(len(_HDF5_SIGNATURE)) != _HDF5_SIGNATURE:
            raise PackageError(f"bundled base weights {path.name!r} are not an HDF5 weights file")


def verify_package(
    path: Path | str,
    load_models: bool = True,
    limits: PackageLimits = DEFAULT_LIMITS,
) -> VerificationReport:
    """Every check read_package makes, plus checks of every member's content.

    Without TensorFlow (always): bundled base weights are an HDF5 file, and every candidate's
    `.keras` file passes :func:`check_keras_file` (allowed layers only, sizes within
    `limits`). With `load_models`: every cut point is one of the base's (see
    :func:`base_cut_shapes`), and every candidate is loaded in Keras safe mode, takes the
    tensor at its cut and gives one score per class.

    Raises PackageError naming the first problem; a package either passes whole or not at all.
    """
    path = Path(path)
    with read_package(path, limits=limits) as package:
        manifest = package.manifest
        if package.base_weights_path is not None:
            _check_base_weights_file(package.base_weights_path)
        cut_shapes = base_cut_shapes(manifest) if load_models else {}
        checks: list[CandidateCheck] = []
        for candidate in manifest.candidates:
            file_path = package.root / candidate.file
            size = file_path.stat().st_size
            cut_shape = cut_shapes.get(candidate.cut_point)
            _check_keras_archive(file_path, limits, cut_shape)
            if not load_models:
                checks.append(CandidateCheck(candidate.cut_point, candidate.file, size))
                continue
            model = _load_checked_keras_file(file_path)
            input_shape = check_candidate_model(model, candidate, manifest, cut_shape)
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
    "ALLOWED_LAYERS",
    "DEFAULT_LIMITS",
    "CandidateCheck",
    "ModelFigures",
    "Package",
    "PackageLimits",
    "PackageListing",
    "VerificationReport",
    "base_cut_shapes",
    "candidate_archive_name",
    "check_candidate_model",
    "check_keras_file",
    "describe_size",
    "inspect_package",
    "load_keras_safely",
    "parse_manifest",
    "read_package",
    "sha256_file",
    "stream_zip_member",
    "verify_package",
    "write_package",
]
