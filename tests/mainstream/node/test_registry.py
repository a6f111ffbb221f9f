"""The registry database: migrations, versions and `latest`, references, atomic changes, tokens."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_runtime.camera import CameraConfig
from mainstream.core.errors import ConflictError, InvalidParameterError, NotFoundError
from mainstream.core.manifest import (
    AppInfo,
    BaseModelInfo,
    CandidateInfo,
    EventStats,
    Manifest,
)
from mainstream.node.registry import (
    SCHEMA_VERSION,
    AppRecord,
    Registry,
    RegistryError,
    hash_token,
)
from scheduler.problem import CutPoint, Profile

FINGERPRINT = "cd" * 32


def manifest(app: str = "trains", recall: float = 0.9) -> Manifest:
    return Manifest(
        app=AppInfo(name=app, classes=["background", app], positive_class=app),
        base_model=BaseModelInfo(
            name="mobilenet_v1",
            input_shape=(96, 96, 3),
            preprocessing="scale_-1_1",
            weights_fingerprint=FINGERPRINT,
        ),
        event_stats=EventStats(
            event_length_s=2.0, event_frequency=0.1, correlation=0.5, camera_fps=10
        ),
        candidates=[
            CandidateInfo(
                cut_point="conv_pw_5_relu",
                frozen_layers=30,
                recall=recall,
                false_positive_rate=0.05,
                accuracy=0.9,
                file="candidates/conv_pw_5_relu.keras",
                sha256="ef" * 32,
            )
        ],
    )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    registry = Registry(tmp_path / "registry.db", tmp_path / "blobs")
    yield registry
    registry.close()


def store_package(registry: Registry, tmp_path: Path, app: str, content: bytes) -> str:
    """Put a blob in the store and record it (the registry does not look inside blobs)."""
    import hashlib

    sha = hashlib.sha256(content).hexdigest()
    source = tmp_path / f"{sha}.upload"
    source.write_bytes(content)
    registry.blobs.put(source, sha)
    with registry.transaction() as transaction:
        transaction.add_base(manifest().base_model, f"{FINGERPRINT}.weights.h5")
        transaction.add_package(manifest(app, recall=0.5 + len(content) / 1000), sha, len(content))
    return sha


def add_camera(registry: Registry, camera_id: str = "cam0") -> None:
    with registry.transaction() as transaction:
        transaction.add_camera(CameraConfig(id=camera_id, url="synthetic://?fps=10"))


def app_record(name: str, sha: str, camera: str = "cam0") -> AppRecord:
    return AppRecord(name=name, package_sha256=sha, camera=camera, x_vote="auto", weight=2.0)


def test_a_new_registry_is_migrated_once_and_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    with Registry(path, tmp_path / "blobs") as registry:
        assert registry.schema_version() == SCHEMA_VERSION
    with Registry(path, tmp_path / "blobs") as registry:  # reopening runs nothing again
        assert registry.schema_version() == SCHEMA_VERSION
    connection = sqlite3.connect(path)
    rows = connection.execute("SELECT version, name FROM schema_migrations").fetchall()
    assert rows == [
        (1, "initial schema"),
        (2, "quiet time derived from the event model"),
        (3, "per-app frame-rate limits"),
    ]
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"bases", "packages", "package_latest", "apps", "cameras", "plans", "tokens"} <= tables
    assert connection.execute("PRAGMA foreign_key_list(apps)").fetchall()
    connection.close()


def test_quiet_times_are_stored_as_seconds_or_auto_and_old_apps_keep_their_seconds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "registry.db"
    with Registry(path, tmp_path / "blobs") as registry:
        sha = store_package(registry, tmp_path, "trains", b"one")
        add_camera(registry)
        with registry.transaction() as transaction:
            transaction.add_app(app_record("auto-app", sha))
            transaction.add_app(app_record("fixed", sha).model_copy(update={"quiet_time_s": 3.5}))
        assert registry.get_app("auto-app").quiet_time_s == "auto"  # the default
        assert registry.get_app("fixed").quiet_time_s == 3.5
        with registry.transaction() as transaction:
            changed = registry.get_app("fixed").model_copy(update={"quiet_time_s": "auto"})
            transaction.update_app(changed)
        assert registry.get_app("fixed").quiet_time_s == "auto"
    # An app stored before the column existed (schema 1) keeps the seconds it had.
    connection = sqlite3.connect(path)
    connection.execute("UPDATE apps SET quiet_time_auto = 0, quiet_time_s = 2.0")
    connection.commit()
    connection.close()
    with Registry(path, tmp_path / "blobs") as registry:
        assert registry.get_app("auto-app").quiet_time_s == 2.0


def test_frame_rate_limits_are_stored_and_apps_from_before_have_none(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    with Registry(path, tmp_path / "blobs") as registry:
        sha = store_package(registry, tmp_path, "trains", b"one")
        add_camera(registry)
        with registry.transaction() as transaction:
            transaction.add_app(app_record("limited", sha).model_copy(update={"min_fps": 0.5}))
            transaction.add_app(app_record("free", sha))
        assert (registry.get_app("limited").min_fps, registry.get_app("limited").max_fps) == (
            0.5,
            None,
        )
        with registry.transaction() as transaction:
            changed = registry.get_app("limited").model_copy(update={"max_fps": 2.0})
            transaction.update_app(changed)
        assert registry.get_app("limited").max_fps == 2.0
    # A registry of schema 2 gains the columns, every app without limits.
    connection = sqlite3.connect(path)
    connection.executescript(
        "ALTER TABLE apps DROP COLUMN min_fps; ALTER TABLE apps DROP COLUMN max_fps; "
        "DELETE FROM schema_migrations WHERE version = 3;"
    )
    connection.close()
    with Registry(path, tmp_path / "blobs") as registry:
        assert registry.schema_version() == SCHEMA_VERSION
        assert [(a.min_fps, a.max_fps) for a in registry.list_apps()] == [(None, None)] * 2


def test_a_registry_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    Registry(path, tmp_path / "blobs").close()
    connection = sqlite3.connect(path)
    connection.execute(
        "INSERT INTO schema_migrations VALUES (?, 'from the future', '2100-01-01')",
        (SCHEMA_VERSION + 1,),
    )
    connection.commit()
    connection.close()
    with pytest.raises(RegistryError, match="newer than this version"):
        Registry(path, tmp_path / "blobs")


def test_versions_count_per_app_and_latest_follows_the_newest(
    registry: Registry, tmp_path: Path
) -> None:
    first = store_package(registry, tmp_path, "trains", b"one")
    second = store_package(registry, tmp_path, "trains", b"two!")
    store_package(registry, tmp_path, "buses", b"three")
    assert [(p.app, p.version, p.latest) for p in registry.list_packages()] == [
        ("buses", 1, True),
        ("trains", 1, False),
        ("trains", 2, True),
    ]
    assert registry.get_package("trains", "latest").sha256 == second
    assert registry.blobs.path(first).read_bytes() == b"one"

    with registry.transaction() as transaction:
        transaction.delete_package("trains", 2)
    assert registry.get_package("trains", "latest").sha256 == first
    with registry.transaction() as transaction:
        transaction.delete_package("trains", 1)
    with pytest.raises(NotFoundError, match="no package for app 'trains'"):
        registry.get_package("trains", "latest")
    # version numbers are never reused: a number names one archive for good
    store_package(registry, tmp_path, "trains", b"four")
    assert registry.get_package("trains", "latest").version == 3


def test_a_package_in_use_cannot_be_deleted_and_nothing_changes(
    registry: Registry, tmp_path: Path
) -> None:
    sha = store_package(registry, tmp_path, "trains", b"one")
    add_camera(registry)
    with registry.transaction() as transaction:
        transaction.add_app(app_record("trains", sha))
    with pytest.raises(ConflictError, match="used by app"), registry.transaction() as transaction:
        transaction.delete_package("trains", 1)
    assert registry.get_package("trains", 1).sha256 == sha
    with pytest.raises(ConflictError, match="used by app"), registry.transaction() as transaction:
        transaction.delete_camera("cam0")
    assert registry.has_camera("cam0")


def test_a_failed_transaction_changes_nothing(registry: Registry, tmp_path: Path) -> None:
    sha = store_package(registry, tmp_path, "trains", b"one")
    with (
        pytest.raises(NotFoundError, match="no camera 'missing'"),
        registry.transaction() as transaction,
    ):
        transaction.add_camera(CameraConfig(id="cam0", url="synthetic://"))
        transaction.record_plan("app added", "empty")
        transaction.add_app(app_record("trains", sha, camera="missing"))
    assert registry.list_cameras() == []
    assert registry.current_plan() is None
    assert registry.list_apps() == []


def test_apps_round_trip_with_their_package_version(registry: Registry, tmp_path: Path) -> None:
    sha = store_package(registry, tmp_path, "trains", b"one")
    add_camera(registry)
    record = app_record("trains", sha).model_copy(
        update={"event_overrides": {"event_frequency": 0.2}, "threshold": 0.7}
    )
    with registry.transaction() as transaction:
        stored = transaction.add_app(record)
    assert (stored.package_app, stored.package_version, stored.x_vote) == ("trains", 1, "auto")
    assert stored.event_overrides == {"event_frequency": 0.2}
    with (
        pytest.raises(ConflictError, match="already exists"),
        registry.transaction() as transaction,
    ):
        transaction.add_app(record)

    with registry.transaction() as transaction:
        transaction.update_app(stored.model_copy(update={"x_vote": 3, "enabled": False}))
    changed = registry.get_app("trains")
    assert (changed.x_vote, changed.enabled, changed.threshold) == (3, False, 0.7)
    assert changed.created_at == stored.created_at
    assert registry.list_apps(enabled_only=True) == []
    with registry.transaction() as transaction:
        transaction.delete_app("trains")
    with pytest.raises(NotFoundError):
        registry.get_app("trains")


def test_packages_need_their_base_and_their_blob(registry: Registry, tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"data")
    sha = "0" * 64
    with (
        pytest.raises(RegistryError, match="not in the blob store"),
        registry.transaction() as transaction,
    ):
        transaction.add_package(manifest(), sha, 4)
    registry.blobs.put(source, sha)
    with (
        pytest.raises(NotFoundError, match="base cdcdcdcdcdcd"),
        registry.transaction() as transaction,
    ):
        transaction.add_package(manifest(), sha, 4)
    assert registry.list_packages() == []


def test_plans_keep_their_history(registry: Registry) -> None:
    with registry.transaction() as transaction:
        first = transaction.record_plan("node started", "empty", "no apps", budget=100.0)
        second = transaction.record_plan("app added", "infeasible", "too slow", budget=1.0)
    current = registry.current_plan()
    assert current is not None and current.id == second > first
    assert (current.status, current.message, current.budget) == ("infeasible", "too slow", 1.0)
    assert [plan.id for plan in registry.plan_history()] == [second, first]


def test_profiles_are_stored_per_base_and_engine(registry: Registry) -> None:
    profile = Profile(
        base_model="mobilenet_v1@cdcdcdcdcdcd",
        cut_points=[CutPoint(name="input", cumulative_cost=0.0)],
        total_cost=3.0,
        engine="keras",
    )
    with registry.transaction() as transaction:
        transaction.save_profile(profile.base_model, "keras", profile)
    stored = registry.get_profile(profile.base_model, "keras")
    assert stored is not None and stored.total_cost == 3.0
    assert (stored.model_extra or {})["engine"] == "keras"
    assert registry.get_profile(profile.base_model, "openvino") is None


def test_tokens_are_stored_hashed_and_record_their_use(registry: Registry) -> None:
    secret = "mst_a-secret-value"
    with registry.transaction() as transaction:
        created = transaction.add_token("laptop", "viewer", secret)
    assert created.last_used_at is None
    text = Path(registry.path).read_bytes() + Path(f"{registry.path}-wal").read_bytes()
    assert secret.encode() not in text
    assert hash_token(secret).encode() in text

    found = registry.token_for_secret(secret)
    assert found is not None and (found.name, found.role) == ("laptop", "viewer")
    assert registry.list_tokens()[0].last_used_at is not None
    assert registry.token_for_secret("mst_wrong") is None

    with pytest.raises(InvalidParameterError, match="role"), registry.transaction() as transaction:
        transaction.add_token("x", "root", "s")  # type: ignore[arg-type]
    with registry.transaction() as transaction:
        transaction.delete_token(created.id)
    assert registry.token_for_secret(secret) is None


def test_the_blob_store_keeps_one_copy_per_content(registry: Registry, tmp_path: Path) -> None:
    source = tmp_path / "archive"
    source.write_bytes(b"content")
    sha = "1" * 64
    assert registry.blobs.put(source, sha) is True
    assert registry.blobs.put(source, sha) is False
    assert registry.blobs.names() == {sha}
    assert not list(registry.blobs.root.glob(".*"))  # no temp files left behind
    with pytest.raises(InvalidParameterError, match="sha256"):
        registry.blobs.path("../escape")
