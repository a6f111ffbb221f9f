"""M-Packages and base models: verified uploads, pulls from the shared registry, listings."""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mainstream.core.bases import (
    BaseConfig,
    build_base,
    registered_base_record,
    save_base,
    weights_fingerprint,
)
from mainstream.core.errors import (
    InvalidParameterError,
    ModelError,
    NotFoundError,
    PackageError,
    WeakCandidatesError,
)
from mainstream.core.manifest import (
    WEAK_CANDIDATE_ADVICE,
    BaseModelInfo,
    Manifest,
    weak_candidates,
)
from mainstream.core.package import read_package, verify_package
from mainstream.node.fleet import RegistryClient
from mainstream.node.node import Node
from mainstream.node.registry import (
    BaseRecord,
    PackageRecord,
)

if TYPE_CHECKING:
    import keras

from mainstream.node.services.base import NodeService
from mainstream.node.services.models import (
    PackageSummary,
    TooLargeError,
    UploadResult,
)

logger = logging.getLogger(__name__)


class PackageService(NodeService):
    """M-Packages and base models: verified uploads, pulls from the shared registry, listings."""

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        # Called with each newly stored package (say, to run the config file's apps that
        # waited for it); a failing listener is logged, the upload stands.
        self.stored_listeners: list[Callable[[PackageRecord], None]] = []

    def staging_dir(self) -> Path:
        """Where uploads are written before they are checked (same disk as the blob store)."""
        folder = self.settings.data_dir / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def upload(
        self,
        source: Path | bytes,
        *,
        version: int | None = None,
        expected_app: str | None = None,
        load_models: bool = True,
        force: bool = False,
    ) -> UploadResult:
        """Verify an M-Package completely, then store it as the next version of its app.

        Nothing is stored unless every check passes: archive and manifest checks, checksums,
        every model loaded in Keras safe mode, and a base the node knows or that the package
        bundles (bundled weights must have the fingerprint the manifest claims). A package
        pulled from the shared registry keeps the registry's `version` and must be of the
        `expected_app`. A package with a candidate no better than the majority class is
        refused unless `force` (it would be planned on figures that promise nothing).
        """
        if isinstance(source, bytes):
            with tempfile.NamedTemporaryFile(
                dir=self.staging_dir(), suffix=".mpkg", delete=False
            ) as handle:
                handle.write(source)
            path = Path(handle.name)
            try:
                return self.upload(
                    path,
                    version=version,
                    expected_app=expected_app,
                    load_models=load_models,
                    force=force,
                )
            finally:
                path.unlink(missing_ok=True)

        path = Path(source)
        if not path.is_file():
            raise PackageError(f"{str(path)!r} is not a file")
        size = path.stat().st_size
        limit = self.settings.api.max_upload_bytes
        if size > limit:
            raise TooLargeError(f"the package has {size} bytes; this node accepts {limit} at most")
        if size == 0:
            raise PackageError("the upload is empty")
        # load_models=False only for a package whose models this node's own trainer process
        # has just loaded (training jobs): the API process then needs no TensorFlow.
        report = verify_package(path, load_models=load_models)
        manifest, sha256 = report.manifest, report.archive_sha256
        if expected_app is not None and manifest.app.name != expected_app:
            raise PackageError(
                f"the archive is a package of app {manifest.app.name!r}, not of {expected_app!r}"
            )
        weak = weak_candidates(manifest)
        if weak and not force:
            listed = "; ".join(f"{candidate.cut_point}: {candidate.reason}" for candidate in weak)
            raise WeakCandidatesError(
                f"package of app {manifest.app.name!r} refused: {len(weak)} of "
                f"{len(manifest.candidates)} candidate(s) are no better than the majority class "
                f"({listed}); {WEAK_CANDIDATE_ADVICE}, or upload with force"
            )

        with self.node.changes():
            existing = self.registry.package_by_sha(sha256)
            if existing is not None:
                return UploadResult(package=existing, created=False)
            base, created_files = self._base_for(path, manifest, check_bundle=load_models)
            blob_created = self.registry.blobs.put(path, sha256)
            try:
                with self.registry.transaction() as transaction:
                    if base is not None:
                        transaction.add_base(*base)
                    record = transaction.add_package(manifest, sha256, size, version)
            except BaseException:
                if blob_created:
                    self.registry.blobs.delete(sha256)
                for created in created_files:
                    created.unlink(missing_ok=True)
                raise
        logger.info("stored package %s v%d (%s)", record.app, record.version, sha256[:12])
        for listener in self.stored_listeners:
            try:
                listener(record)
            except Exception:
                logger.exception("after storing package %s v%d", record.app, record.version)
        return UploadResult(package=record, created=True)

    def _base_for(
        self, path: Path, manifest: Manifest, check_bundle: bool = True
    ) -> tuple[tuple[BaseModelInfo, str] | None, list[Path]]:
        """The base row to record with the package (None: already recorded) and new files.

        Bundled base weights are checked against the manifest's fingerprint whether or not the
        base is registered here already: the stored package is served to other nodes, which
        may use them. `check_bundle` False only for this node's own trainer's packages (the
        trainer built the bundle from a registered base; the API process needs no TensorFlow).
        """

        info = manifest.base_model
        fingerprint = info.weights_fingerprint
        bases_dir = self.settings.bases_dir
        recorded = self.registry.get_base(fingerprint) is not None
        if recorded or (bases_dir / f"{fingerprint}.json").is_file():
            if manifest.base_weights is not None and check_bundle:
                self._check_bundled_base(path, manifest)
            if recorded:
                return None, []
            record = registered_base_record(fingerprint, bases_dir)
            return (record.info, record.weights_file), []
        if manifest.base_weights is None:
            raise PackageError(
                f"unknown base: {info.name} with weights fingerprint {fingerprint[:12]}… is not "
                "registered on this node and the package does not bundle its weights "
                "(base/weights.h5); register the base first or rebuild the package with the "
                "base weights included"
            )
        return self._register_bundled_base(path, manifest)

    def _register_bundled_base(
        self, path: Path, manifest: Manifest
    ) -> tuple[tuple[BaseModelInfo, str], list[Path]]:
        """Check the bundled base weights against the fingerprint, then save them as a base."""
        with read_package(path) as package:
            weights = package.base_weights_path
            assert weights is not None  # the caller checked manifest.base_weights
            return self._save_checked_base(
                weights,
                manifest.base_model,
                what="the bundled base weights",
                blame="the package is inconsistent or was tampered with",
                provenance={"bundled_in_package": manifest.app.name},
            )

    def _check_bundled_base(self, path: Path, manifest: Manifest) -> None:
        """The bundled base weights must have the fingerprint the manifest claims."""
        with read_package(path) as package:
            weights = package.base_weights_path
            assert weights is not None  # the caller checked manifest.base_weights
            _checked_base(
                weights,
                manifest.base_model,
                what="the bundled base weights",
                blame="the package is inconsistent or was tampered with",
            )

    def _save_checked_base(
        self,
        weights: Path,
        info: BaseModelInfo,
        what: str,
        blame: str,
        provenance: dict[str, str],
    ) -> tuple[tuple[BaseModelInfo, str], list[Path]]:
        """Save base weights as a registered base once they have the fingerprint `info` names.

        Returns the base row to record and the files created (to remove if the change fails).
        """

        bases_dir = self.settings.bases_dir
        fingerprint = info.weights_fingerprint
        targets = [bases_dir / f"{fingerprint}.weights.h5", bases_dir / f"{fingerprint}.json"]
        existed = {target for target in targets if target.exists()}
        config, model = _checked_base(weights, info, what, blame)
        saved = save_base(
            model, config, bases_dir, weights_source=info.weights_source, provenance=provenance
        )
        created = [target for target in targets if target not in existed]
        return (saved, targets[0].name), created

    def list_all(self, app: str | None = None) -> list[PackageSummary]:
        return [PackageSummary.of(record) for record in self.registry.list_packages(app)]

    def get(self, app: str, version: int | Literal["latest"]) -> PackageRecord:
        return self.registry.get_package(app, version)

    def delete(self, app: str, version: int | Literal["latest"]) -> None:
        with self.node.changes():
            record = self.registry.get_package(app, version)
            with self.registry.transaction() as transaction:
                transaction.delete_package(record.app, record.version)
            self.registry.blobs.delete(record.sha256)
            self.node.packages.forget(record.sha256)
        logger.info("deleted package %s v%d", record.app, record.version)

    def archive(self, app: str, version: int | Literal["latest"]) -> tuple[PackageRecord, Path]:
        """A stored package version and the path of its archive (what nodes pull)."""
        record = self.registry.get_package(app, version)
        blob = self.registry.blobs.path(record.sha256)
        if not blob.is_file():
            raise NotFoundError(f"package {record.app} v{record.version}: its archive is missing")
        return record, blob

    def pull(self, app: str, version: int | Literal["latest"]) -> UploadResult:
        """Fetch a package version from the fleet's shared registry (`registry_url`) and store it.

        The archive is streamed to the staging folder under `api.max_upload_bytes`, must hash to
        the sha256 the shared registry lists, and is then stored exactly like an upload (same
        validation), under the shared registry's version number. A base the node lacks and the
        package does not bundle is pulled too, and kept only if the package is stored.
        """

        staging = self.staging_dir() / f"pull-{uuid.uuid4().hex}.mpkg"
        base_files: list[Path] = []
        try:
            with RegistryClient.from_settings(self.settings) as client:
                listed = client.package(app, version)
                client.download(listed, staging, self.settings.api.max_upload_bytes)
                base_files = self._pull_base(client, listed.manifest)
            # The shared registry already accepted it (forced or not): same package, same answer.
            result = self.upload(
                staging, version=listed.version, expected_app=listed.app, force=True
            )
        except BaseException:
            for created in base_files:
                created.unlink(missing_ok=True)
            raise
        finally:
            staging.unlink(missing_ok=True)
        logger.info(
            "pulled package %s v%d (%s) from the shared registry",
            listed.app,
            listed.version,
            listed.sha256[:12],
        )
        return result

    def _pull_base(self, client: RegistryClient, manifest: Manifest) -> list[Path]:
        """Fetch the base of `manifest` when this node lacks it and the package does not bundle
        it; the weights must have the manifest's fingerprint. Returns the files created."""
        fingerprint = manifest.base_model.weights_fingerprint
        if (
            manifest.base_weights is not None
            or self.registry.get_base(fingerprint) is not None
            or (self.settings.bases_dir / f"{fingerprint}.json").is_file()
        ):
            return []
        staging = self.staging_dir() / f"base-{uuid.uuid4().hex}.weights.h5"
        try:
            client.download_base_weights(fingerprint, staging, self.settings.api.max_upload_bytes)
            _, created = self._save_checked_base(
                staging,
                manifest.base_model,
                what="the base weights sent by the shared registry",
                blame="they were corrupted or tampered with",
                provenance={"pulled_from": client.url},
            )
        finally:
            staging.unlink(missing_ok=True)
        logger.info("pulled base %s from the shared registry", fingerprint[:12])
        return created

    def list_bases(self) -> list[BaseRecord]:
        return self.registry.list_bases()

    def base_weights(self, fingerprint: str) -> tuple[BaseRecord, Path]:
        """A registered base and the path of its weights file (what nodes pull)."""
        record = self.registry.get_base(fingerprint)
        if record is None:
            raise NotFoundError(f"no base with weights fingerprint {fingerprint!r}")
        path = self.settings.bases_dir / record.weights_file
        if not path.is_file():
            raise NotFoundError(f"base {fingerprint[:12]}…: its weights file is missing")
        return record, path

    def ensure_local(self, app: str, version: int | Literal["latest"]) -> None:
        """Pull a package version this node does not hold, when a shared registry is set.

        `latest` means the newest version held here; only a node that holds no version of the
        app asks the shared registry for its latest.
        """
        if self.settings.registry_url is None:
            return
        try:
            self.registry.get_package(app, version)
        except NotFoundError:
            self.pull(app, version)


def _checked_base(
    weights: Path, info: BaseModelInfo, what: str, blame: str
) -> tuple[BaseConfig, keras.Model]:
    """The base `info` describes, built with `weights`, once they have its fingerprint."""
    height, width, _ = info.input_shape
    if height != width:
        raise PackageError(f"base input shape {info.input_shape} is not square")
    try:
        config = BaseConfig(
            name=info.name, input_size=height, alpha=info.alpha or 1.0, weights=str(weights)
        )
        model = build_base(config)
    except (InvalidParameterError, ModelError) as error:
        raise PackageError(f"{what} cannot be used: {error}") from error
    actual = weights_fingerprint(model)
    if actual != info.weights_fingerprint:
        raise PackageError(
            f"{what} have fingerprint {actual[:12]}… but the manifest says "
            f"{info.weights_fingerprint[:12]}…; {blame}"
        )
    return config, model
