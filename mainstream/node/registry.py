"""The node's registry: bases, packages, cameras, apps, plans, profiles and API tokens in SQLite.

One database file (WAL mode, foreign keys on) holds the records; package archives live beside
it in a content-addressed blob store (`blobs/<sha256>.mpkg`) and base weights in the bases
folder (`bases/<fingerprint>.weights.h5`, written by :mod:`mainstream.core.bases`). Events have their
own database (:class:`edge_runtime.event_store.EventStore`).

Every change goes through :meth:`Registry.transaction`: the statements of one change commit
together or not at all. The schema is created by numbered migrations recorded in
`schema_migrations`, so a later version of Mainstream can migrate a node's data in place.

Records cross the API boundary, so they are pydantic models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_runtime.camera import CameraConfig
from mainstream.core.errors import (
    ConflictError,
    InvalidParameterError,
    MainstreamError,
    NotFoundError,
)
from mainstream.core.manifest import BaseModelInfo, Manifest
from scheduler.problem import Plan, Problem, Profile

Role = Literal["admin", "viewer"]
ROLES: tuple[str, ...] = ("admin", "viewer")
PlanStatus = Literal["ok", "empty", "infeasible", "error"]
XVote = int | Literal["auto"]
QuietTime = Annotated[float, Field(ge=0)] | Literal["auto"]
AUTO_QUIET_TIME: Literal["auto"] = "auto"

# Each migration is a list of statements run in one transaction; append, never edit.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "initial schema",
        (
            """
            CREATE TABLE bases (
                fingerprint TEXT PRIMARY KEY CHECK (length(fingerprint) = 64),
                name TEXT NOT NULL,
                info_json TEXT NOT NULL,
                weights_file TEXT NOT NULL,
                registered_at TEXT NOT NULL
            )
            """,
            """
            CREATE TABLE packages (
                sha256 TEXT PRIMARY KEY CHECK (length(sha256) = 64),
                app TEXT NOT NULL,
                version INTEGER NOT NULL CHECK (version >= 1),
                base_fingerprint TEXT NOT NULL REFERENCES bases (fingerprint),
                manifest_json TEXT NOT NULL,
                size_bytes INTEGER NOT NULL CHECK (size_bytes > 0),
                uploaded_at TEXT NOT NULL,
                UNIQUE (app, version)
            )
            """,
            """
            CREATE TABLE package_latest (
                app TEXT PRIMARY KEY,
                version INTEGER NOT NULL,
                FOREIGN KEY (app, version) REFERENCES packages (app, version) ON DELETE CASCADE
            )
            """,
            """
            CREATE TABLE package_versions (
                app TEXT PRIMARY KEY,
                last_version INTEGER NOT NULL
            )
            """,
            """
            CREATE TABLE cameras (
                id TEXT PRIMARY KEY,
                config_json TEXT NOT NULL,
                enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )
            """,
            """
            CREATE TABLE apps (
                name TEXT PRIMARY KEY,
                package_sha256 TEXT NOT NULL REFERENCES packages (sha256),
                camera TEXT NOT NULL REFERENCES cameras (id),
                event_overrides_json TEXT NOT NULL,
                weight REAL NOT NULL CHECK (weight > 0),
                x_vote TEXT NOT NULL,
                threshold REAL NOT NULL CHECK (threshold BETWEEN 0 AND 1),
                quiet_time_s REAL NOT NULL CHECK (quiet_time_s >= 0),
                enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )
            """,
            "CREATE INDEX apps_by_package ON apps (package_sha256)",
            "CREATE INDEX apps_by_camera ON apps (camera)",
            """
            CREATE TABLE plans (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                created_at TEXT NOT NULL,
                reason TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('ok', 'empty', 'infeasible', 'error')),
                message TEXT NOT NULL,
                budget REAL,
                plan_json TEXT,
                problem_json TEXT
            )
            """,
            """
            CREATE TABLE profiles (
                key TEXT NOT NULL,
                engine TEXT NOT NULL,
                profile_json TEXT NOT NULL,
                measured_at TEXT NOT NULL,
                PRIMARY KEY (key, engine)
            )
            """,
            """
            CREATE TABLE tokens (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
                token_sha256 TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL,
                last_used_at TEXT
            )
            """,
        ),
    ),
    (
        2,
        "quiet time derived from the event model",
        (
            # 1: the app's quiet time follows its event length and planned rate (quiet_time_s
            # is then 0); 0: the stored seconds, as every app had before this migration.
            "ALTER TABLE apps ADD COLUMN quiet_time_auto INTEGER NOT NULL DEFAULT 0 "
            "CHECK (quiet_time_auto IN (0, 1))",
        ),
    ),
    (
        3,
        "per-app frame-rate limits",
        (
            # NULL: no limit on that side (every app before this migration).
            "ALTER TABLE apps ADD COLUMN min_fps REAL CHECK (min_fps IS NULL OR min_fps > 0)",
            "ALTER TABLE apps ADD COLUMN max_fps REAL CHECK (max_fps IS NULL OR max_fps > 0)",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1][0]
_LAST_USED_RESOLUTION_S = 60.0  # don't write last_used_at on every request


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def hash_token(secret: str) -> str:
    """Tokens are stored as sha256 only: a leaked database gives no usable token."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Records


class BaseRecord(BaseModel):
    fingerprint: str
    name: str
    info: BaseModelInfo
    weights_file: str
    registered_at: datetime


class PackageRecord(BaseModel):
    app: str
    version: int
    sha256: str
    base_fingerprint: str
    size_bytes: int
    uploaded_at: datetime
    latest: bool
    manifest: Manifest


class CameraRecord(BaseModel):
    id: str
    config: CameraConfig
    enabled: bool
    created_at: datetime
    updated_at: datetime


class AppRecord(BaseModel):
    """An app deployed on this node: which package, which camera, how it is scheduled."""

    model_config = ConfigDict(extra="forbid")

    name: str
    package_sha256: str
    package_app: str = ""  # filled from the package when read
    package_version: int = 0
    camera: str
    event_overrides: dict[str, float] = Field(default_factory=dict)
    weight: float = Field(default=1.0, gt=0)
    x_vote: XVote = 1
    threshold: float = Field(default=0.5, ge=0, le=1)
    quiet_time_s: QuietTime = Field(default=AUTO_QUIET_TIME)
    enabled: bool = True
    min_fps: float | None = Field(default=None, gt=0)  # the planner's rates for it: none below
    max_fps: float | None = Field(default=None, gt=0)  # ... and none above
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)


class PlanRecord(BaseModel):
    id: int
    created_at: datetime
    reason: str
    status: PlanStatus
    message: str
    budget: float | None
    plan: Plan | None
    problem: Problem | None


class TokenRecord(BaseModel):
    id: int
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None


# ---------------------------------------------------------------------------------------------
# Blob store


class BlobStore:
    """Package archives stored once under their sha256: `<root>/<sha256>.mpkg`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(char not in "0123456789abcdef" for char in sha256):
            raise InvalidParameterError("sha256", sha256, "64 lowercase hex digits")
        return self.root / f"{sha256}.mpkg"

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, source: Path, sha256: str) -> bool:
        """Copy `source` in under `sha256` (temp file, fsync, rename); False if already there."""
        target = self.path(sha256)
        if target.is_file():
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(source, "rb") as reader, open(temporary, "xb") as writer:
                shutil.copyfileobj(reader, writer, 1024 * 1024)
                writer.flush()
                os.fsync(writer.fileno())
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return True

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def names(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {path.stem for path in self.root.glob("*.mpkg")}


# ---------------------------------------------------------------------------------------------
# Registry


class RegistryError(MainstreamError):
    """The registry database cannot be used (written by a newer version, corrupt...)."""


class Registry:
    """Thread-safe access to the registry database; one connection guarded by a lock."""

    def __init__(self, path: Path | str, blobs_dir: Path | str) -> None:
        self.path = Path(path)
        self.blobs = BlobStore(Path(blobs_dir))
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._connection = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute("PRAGMA foreign_keys=ON")
        self._connection.execute("PRAGMA busy_timeout=10000")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- schema --------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._lock:
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            applied = self.schema_version()
            if applied > SCHEMA_VERSION:
                raise RegistryError(
                    f"registry {self.path} has schema version {applied}, newer than this "
                    f"version of Mainstream understands ({SCHEMA_VERSION}); upgrade Mainstream"
                )
            for version, name, statements in MIGRATIONS:
                if version <= applied:
                    continue
                with self._raw_transaction() as connection:
                    for statement in statements:
                        connection.execute(statement)
                    connection.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                        (version, name, utc_now().isoformat()),
                    )

    def schema_version(self) -> int:
        with self._lock:
            row = self._connection.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    # -- transactions --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _raw_transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """All changes made through the yielded object commit together, or none does."""
        with self._raw_transaction() as connection:
            yield Transaction(connection, self)

    def _read(self, sql: str, arguments: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connection.execute(sql, arguments).fetchall()

    # -- bases ---------------------------------------------------------------------------------

    def get_base(self, fingerprint: str) -> BaseRecord | None:
        rows = self._read(
            f"SELECT {_BASE_COLUMNS} FROM bases WHERE fingerprint = ?", (fingerprint,)
        )
        return _base(rows[0]) if rows else None

    def list_bases(self) -> list[BaseRecord]:
        return [
            _base(row) for row in self._read(f"SELECT {_BASE_COLUMNS} FROM bases ORDER BY name")
        ]

    # -- packages ------------------------------------------------------------------------------

    def list_packages(self, app: str | None = None) -> list[PackageRecord]:
        where, arguments = ("WHERE p.app = ?", (app,)) if app is not None else ("", ())
        rows = self._read(
            f"SELECT {_PACKAGE_COLUMNS} FROM packages p LEFT JOIN package_latest l "
            f"ON l.app = p.app AND l.version = p.version {where} ORDER BY p.app, p.version",
            arguments,
        )
        return [_package(row) for row in rows]

    def get_package(self, app: str, version: int | Literal["latest"]) -> PackageRecord:
        if version == "latest":
            rows = self._read(
                f"SELECT {_PACKAGE_COLUMNS} FROM package_latest l JOIN packages p "
                "ON l.app = p.app AND l.version = p.version WHERE l.app = ?",
                (app,),
            )
        else:
            rows = self._read(
                f"SELECT {_PACKAGE_COLUMNS} FROM packages p LEFT JOIN package_latest l "
                "ON l.app = p.app AND l.version = p.version WHERE p.app = ? AND p.version = ?",
                (app, version),
            )
        if not rows:
            raise NotFoundError(f"no package for app {app!r} version {version}")
        return _package(rows[0])

    def package_by_sha(self, sha256: str) -> PackageRecord | None:
        rows = self._read(
            f"SELECT {_PACKAGE_COLUMNS} FROM packages p LEFT JOIN package_latest l "
            "ON l.app = p.app AND l.version = p.version WHERE p.sha256 = ?",
            (sha256,),
        )
        return _package(rows[0]) if rows else None

    # -- cameras -------------------------------------------------------------------------------

    def list_cameras(self, enabled_only: bool = False) -> list[CameraRecord]:
        where = "WHERE enabled = 1" if enabled_only else ""
        rows = self._read(f"SELECT {_CAMERA_COLUMNS} FROM cameras {where} ORDER BY id")
        return [_camera(row) for row in rows]

    def get_camera(self, camera_id: str) -> CameraRecord:
        rows = self._read(f"SELECT {_CAMERA_COLUMNS} FROM cameras WHERE id = ?", (camera_id,))
        if not rows:
            raise NotFoundError(f"no camera {camera_id!r}")
        return _camera(rows[0])

    def has_camera(self, camera_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM cameras WHERE id = ?", (camera_id,)))

    # -- apps ----------------------------------------------------------------------------------

    def list_apps(self, enabled_only: bool = False) -> list[AppRecord]:
        where = "WHERE a.enabled = 1" if enabled_only else ""
        rows = self._read(f"SELECT {_APP_COLUMNS} FROM {_APP_JOIN} {where} ORDER BY a.name")
        return [_app(row) for row in rows]

    def get_app(self, name: str) -> AppRecord:
        rows = self._read(f"SELECT {_APP_COLUMNS} FROM {_APP_JOIN} WHERE a.name = ?", (name,))
        if not rows:
            raise NotFoundError(f"no app {name!r}")
        return _app(rows[0])

    def has_app(self, name: str) -> bool:
        return bool(self._read("SELECT 1 FROM apps WHERE name = ?", (name,)))

    # -- plans ---------------------------------------------------------------------------------

    def current_plan(self) -> PlanRecord | None:
        rows = self._read(f"SELECT {_PLAN_COLUMNS} FROM plans ORDER BY id DESC LIMIT 1")
        return _plan(rows[0]) if rows else None

    def plan_history(self, limit: int = 20, offset: int = 0) -> list[PlanRecord]:
        rows = self._read(
            f"SELECT {_PLAN_COLUMNS} FROM plans ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset)
        )
        return [_plan(row) for row in rows]

    # -- profiles ------------------------------------------------------------------------------

    def get_profile(self, key: str, engine: str) -> Profile | None:
        rows = self._read(
            "SELECT profile_json FROM profiles WHERE key = ? AND engine = ?", (key, engine)
        )
        return Profile.model_validate_json(rows[0][0]) if rows else None

    # -- tokens --------------------------------------------------------------------------------

    def list_tokens(self) -> list[TokenRecord]:
        return [
            _token(row) for row in self._read(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY id")
        ]

    def token_for_secret(self, secret: str) -> TokenRecord | None:
        """The token a bearer secret belongs to (its last use is recorded), or None."""
        rows = self._read(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_sha256 = ?", (hash_token(secret),)
        )
        if not rows:
            return None
        token = _token(rows[0])
        now = utc_now()
        last = token.last_used_at
        if last is None or (now - last).total_seconds() > _LAST_USED_RESOLUTION_S:
            with self.transaction() as transaction:
                transaction.touch_token(token.id, now)
            token = token.model_copy(update={"last_used_at": now})
        return token


class Transaction:
    """The changes of one registry transaction (see :meth:`Registry.transaction`)."""

    def __init__(self, connection: sqlite3.Connection, registry: Registry) -> None:
        self._connection = connection
        self.registry = registry

    def _execute(self, sql: str, arguments: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self._connection.execute(sql, arguments)

    # -- bases ---------------------------------------------------------------------------------

    def add_base(self, info: BaseModelInfo, weights_file: str) -> BaseRecord:
        """Record a base whose weights are in the bases folder; a known one is left as it is."""
        existing = self.registry.get_base(info.weights_fingerprint)
        if existing is not None:
            return existing
        now = utc_now()
        self._execute(
            "INSERT INTO bases (fingerprint, name, info_json, weights_file, registered_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (info.weights_fingerprint, info.name, info.model_dump_json(), weights_file, _iso(now)),
        )
        return BaseRecord(
            fingerprint=info.weights_fingerprint,
            name=info.name,
            info=info,
            weights_file=weights_file,
            registered_at=now,
        )

    # -- packages ------------------------------------------------------------------------------

    def add_package(
        self, manifest: Manifest, sha256: str, size_bytes: int, version: int | None = None
    ) -> PackageRecord:
        """Record an archive already in the blob store as the next version of its app.

        The new version becomes `latest`. The base must be recorded first. Versions count from 1
        per app and are never reused. A package pulled from a fleet's shared registry keeps the
        shared registry's number instead (`version`), so that a version names the same archive
        on every node; `latest` is then the highest version held.
        """
        if not self.registry.blobs.exists(sha256):
            raise RegistryError(f"package blob {sha256} is not in the blob store")
        fingerprint = manifest.base_model.weights_fingerprint
        if self.registry.get_base(fingerprint) is None:
            raise NotFoundError(f"base {fingerprint[:12]}… is not registered")
        app = manifest.app.name
        if version is None:
            # Version numbers are never reused, even after deletions: a number names one archive.
            self._execute(
                "INSERT INTO package_versions (app, last_version) VALUES (?, 1) "
                "ON CONFLICT (app) DO UPDATE SET last_version = last_version + 1",
                (app,),
            )
            row = self._execute(
                "SELECT last_version FROM package_versions WHERE app = ?", (app,)
            ).fetchone()
            version = int(row[0])
        else:
            if version < 1:
                raise InvalidParameterError("version", version, "a version number >= 1")
            taken = self._execute(
                "SELECT sha256 FROM packages WHERE app = ? AND version = ?", (app, version)
            ).fetchone()
            if taken is not None:
                raise ConflictError(
                    f"package {app} version {version} is already stored here with another "
                    f"archive ({taken[0][:12]}…, not {sha256[:12]}…)"
                )
            self._execute(
                "INSERT INTO package_versions (app, last_version) VALUES (?, ?) "
                "ON CONFLICT (app) DO UPDATE "
                "SET last_version = MAX(last_version, excluded.last_version)",
                (app, version),
            )
        now = utc_now()
        self._execute(
            "INSERT INTO packages (sha256, app, version, base_fingerprint, manifest_json, "
            "size_bytes, uploaded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sha256, app, version, fingerprint, manifest.model_dump_json(), size_bytes, _iso(now)),
        )
        newest = self._execute("SELECT MAX(version) FROM packages WHERE app = ?", (app,)).fetchone()
        self._execute(
            "INSERT INTO package_latest (app, version) VALUES (?, ?) "
            "ON CONFLICT (app) DO UPDATE SET version = excluded.version",
            (app, int(newest[0])),
        )
        return self.registry.get_package(app, version)

    def delete_package(self, app: str, version: int) -> PackageRecord:
        """Forget one version; refused while an app uses it. `latest` moves to the newest left.

        The blob is not deleted here (the transaction may still roll back): the caller deletes
        it after the commit.
        """
        record = self.registry.get_package(app, version)
        users = [
            row[0]
            for row in self._execute(
                "SELECT name FROM apps WHERE package_sha256 = ? ORDER BY name", (record.sha256,)
            )
        ]
        if users:
            raise ConflictError(
                f"package {app} version {version} is used by app(s) {', '.join(users)}; "
                "remove them or move them to another version first"
            )
        self._execute("DELETE FROM packages WHERE sha256 = ?", (record.sha256,))
        newest = self._execute("SELECT MAX(version) FROM packages WHERE app = ?", (app,)).fetchone()
        if newest[0] is not None:
            self._execute(
                "INSERT INTO package_latest (app, version) VALUES (?, ?) "
                "ON CONFLICT (app) DO UPDATE SET version = excluded.version",
                (app, int(newest[0])),
            )
        return record

    # -- cameras -------------------------------------------------------------------------------

    def add_camera(self, config: CameraConfig, enabled: bool = True) -> CameraRecord:
        if self.registry.has_camera(config.id):
            raise ConflictError(f"camera {config.id!r} already exists")
        now = _iso(utc_now())
        self._execute(
            "INSERT INTO cameras (id, config_json, enabled, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (config.id, config.model_dump_json(), int(enabled), now, now),
        )
        return self.registry.get_camera(config.id)

    def update_camera(self, config: CameraConfig, enabled: bool) -> CameraRecord:
        self.registry.get_camera(config.id)  # NotFoundError
        self._execute(
            "UPDATE cameras SET config_json = ?, enabled = ?, updated_at = ? WHERE id = ?",
            (config.model_dump_json(), int(enabled), _iso(utc_now()), config.id),
        )
        return self.registry.get_camera(config.id)

    def delete_camera(self, camera_id: str) -> None:
        self.registry.get_camera(camera_id)
        users = [
            row[0]
            for row in self._execute(
                "SELECT name FROM apps WHERE camera = ? ORDER BY name", (camera_id,)
            )
        ]
        if users:
            raise ConflictError(
                f"camera {camera_id!r} is used by app(s) {', '.join(users)}; remove them first"
            )
        self._execute("DELETE FROM cameras WHERE id = ?", (camera_id,))

    # -- apps ----------------------------------------------------------------------------------

    def add_app(self, app: AppRecord) -> AppRecord:
        if self.registry.has_app(app.name):
            raise ConflictError(f"app {app.name!r} already exists")
        self._check_app_references(app)
        now = _iso(utc_now())
        self._execute(
            f"INSERT INTO apps ({_APP_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*_app_values(app), now, now),
        )
        return self.registry.get_app(app.name)

    def update_app(self, app: AppRecord) -> AppRecord:
        self.registry.get_app(app.name)  # NotFoundError
        self._check_app_references(app)
        self._execute(
            "UPDATE apps SET package_sha256 = ?, camera = ?, event_overrides_json = ?, "
            "weight = ?, x_vote = ?, threshold = ?, quiet_time_s = ?, enabled = ?, "
            "quiet_time_auto = ?, min_fps = ?, max_fps = ?, updated_at = ? WHERE name = ?",
            (*_app_values(app)[1:], _iso(utc_now()), app.name),
        )
        return self.registry.get_app(app.name)

    def delete_app(self, name: str) -> None:
        self.registry.get_app(name)
        self._execute("DELETE FROM apps WHERE name = ?", (name,))

    def _check_app_references(self, app: AppRecord) -> None:
        if self.registry.package_by_sha(app.package_sha256) is None:
            raise NotFoundError(f"app {app.name!r}: no package with sha256 {app.package_sha256}")
        if not self.registry.has_camera(app.camera):
            raise NotFoundError(f"app {app.name!r}: no camera {app.camera!r}")

    # -- plans ---------------------------------------------------------------------------------

    def record_plan(
        self,
        reason: str,
        status: PlanStatus,
        message: str = "",
        budget: float | None = None,
        plan: Plan | None = None,
        problem: Problem | None = None,
    ) -> int:
        cursor = self._execute(
            "INSERT INTO plans (created_at, reason, status, message, budget, plan_json, "
            "problem_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                _iso(utc_now()),
                reason,
                status,
                message,
                budget,
                plan.model_dump_json() if plan is not None else None,
                problem.model_dump_json() if problem is not None else None,
            ),
        )
        return int(cursor.lastrowid or 0)

    # -- profiles ------------------------------------------------------------------------------

    def save_profile(self, key: str, engine: str, profile: Profile) -> None:
        self._execute(
            "INSERT INTO profiles (key, engine, profile_json, measured_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key, engine) DO UPDATE SET profile_json = excluded.profile_json, "
            "measured_at = excluded.measured_at",
            (key, engine, profile.model_dump_json(), _iso(utc_now())),
        )

    # -- tokens --------------------------------------------------------------------------------

    def add_token(self, name: str, role: Role, secret: str) -> TokenRecord:
        if role not in ROLES:
            raise InvalidParameterError("role", role, "'admin' or 'viewer'")
        if not name or len(name) > 128:
            raise InvalidParameterError("name", name, "1 to 128 characters")
        cursor = self._execute(
            "INSERT INTO tokens (name, role, token_sha256, created_at) VALUES (?, ?, ?, ?)",
            (name, role, hash_token(secret), _iso(utc_now())),
        )
        rows = self._execute(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = ?", (cursor.lastrowid,)
        ).fetchall()
        return _token(rows[0])

    def delete_token(self, token_id: int) -> None:
        if self._execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount == 0:
            raise NotFoundError(f"no token with id {token_id}")

    def touch_token(self, token_id: int, when: datetime) -> None:
        self._execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (_iso(when), token_id))


# ---------------------------------------------------------------------------------------------
# Row conversion


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _required_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


_BASE_COLUMNS = "fingerprint, name, info_json, weights_file, registered_at"


def _base(row: tuple[Any, ...]) -> BaseRecord:
    return BaseRecord(
        fingerprint=row[0],
        name=row[1],
        info=BaseModelInfo.model_validate_json(row[2]),
        weights_file=row[3],
        registered_at=_required_time(row[4]),
    )


_PACKAGE_COLUMNS = (
    "p.sha256, p.app, p.version, p.base_fingerprint, p.size_bytes, p.uploaded_at, "
    "l.version IS NOT NULL, p.manifest_json"
)


def _package(row: tuple[Any, ...]) -> PackageRecord:
    return PackageRecord(
        sha256=row[0],
        app=row[1],
        version=int(row[2]),
        base_fingerprint=row[3],
        size_bytes=int(row[4]),
        uploaded_at=_required_time(row[5]),
        latest=bool(row[6]),
        manifest=Manifest.model_validate_json(row[7]),
    )


_CAMERA_COLUMNS = "id, config_json, enabled, created_at, updated_at"


def _camera(row: tuple[Any, ...]) -> CameraRecord:
    return CameraRecord(
        id=row[0],
        config=CameraConfig.model_validate_json(row[1]),
        enabled=bool(row[2]),
        created_at=_required_time(row[3]),
        updated_at=_required_time(row[4]),
    )


_APP_FIELDS = (
    "name, package_sha256, camera, event_overrides_json, weight, x_vote, threshold, "
    "quiet_time_s, enabled, quiet_time_auto, min_fps, max_fps, created_at, updated_at"
)
_APP_COLUMNS = (
    "a.name, a.package_sha256, p.app, p.version, a.camera, a.event_overrides_json, a.weight, "
    "a.x_vote, a.threshold, a.quiet_time_s, a.enabled, a.quiet_time_auto, a.created_at, "
    "a.updated_at, a.min_fps, a.max_fps"
)
_APP_JOIN = "apps a JOIN packages p ON p.sha256 = a.package_sha256"


def _app_values(app: AppRecord) -> tuple[Any, ...]:
    return (
        app.name,
        app.package_sha256,
        app.camera,
        json.dumps(dict(sorted(app.event_overrides.items()))),
        app.weight,
        str(app.x_vote),
        app.threshold,
        0.0 if app.quiet_time_s == AUTO_QUIET_TIME else app.quiet_time_s,
        int(app.enabled),
        int(app.quiet_time_s == AUTO_QUIET_TIME),
        app.min_fps,
        app.max_fps,
    )


def _x_vote(text: str) -> XVote:
    return "auto" if text == "auto" else int(text)


def _app(row: tuple[Any, ...]) -> AppRecord:
    overrides: Mapping[str, float] = json.loads(row[5])
    return AppRecord(
        name=row[0],
        package_sha256=row[1],
        package_app=row[2],
        package_version=int(row[3]),
        camera=row[4],
        event_overrides=dict(overrides),
        weight=float(row[6]),
        x_vote=_x_vote(row[7]),
        threshold=float(row[8]),
        quiet_time_s=AUTO_QUIET_TIME if row[11] else float(row[9]),
        enabled=bool(row[10]),
        created_at=_required_time(row[12]),
        updated_at=_required_time(row[13]),
        min_fps=None if row[14] is None else float(row[14]),
        max_fps=None if row[15] is None else float(row[15]),
    )


_PLAN_COLUMNS = "id, created_at, reason, status, message, budget, plan_json, problem_json"


def _plan(row: tuple[Any, ...]) -> PlanRecord:
    return PlanRecord(
        id=int(row[0]),
        created_at=_required_time(row[1]),
        reason=row[2],
        status=row[3],
        message=row[4],
        budget=row[5],
        plan=Plan.model_validate_json(row[6]) if row[6] else None,
        problem=Problem.model_validate_json(row[7]) if row[7] else None,
    )


_TOKEN_COLUMNS = "id, name, role, created_at, last_used_at"


def _token(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(
        id=int(row[0]),
        name=row[1],
        role=row[2],
        created_at=_required_time(row[3]),
        last_used_at=_time(row[4]),
    )
