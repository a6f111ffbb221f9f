"""The node's packages, extracted once and kept, and their candidate models, loaded once.

A package is extracted into `<cache>/packages/<sha256>/` the first time an app needs it; the
models a plan uses are kept loaded while some plan in force uses them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mainstream.core.errors import NotFoundError
from mainstream.core.package import Package, read_package
from mainstream.node.registry import AppRecord, PackageRecord, Registry


class PackageCache:
    """Extracted packages by archive sha256, and loaded candidates by (sha256, cut point)."""

    def __init__(self, registry: Registry, cache_dir: Path) -> None:
        self.registry = registry
        self.cache_dir = cache_dir
        self._packages: dict[str, Package] = {}
        self._models: dict[tuple[str, str], Any] = {}

    def of_app(self, app: AppRecord) -> Package:
        """The extracted package an app runs."""
        record = self.registry.package_by_sha(app.package_sha256)
        if record is None:
            raise NotFoundError(f"app {app.name!r}: its package {app.package_sha256} is gone")
        return self.open(record)

    def open(self, record: PackageRecord) -> Package:
        """The package extracted into the cache (once per archive)."""
        if record.sha256 in self._packages:
            return self._packages[record.sha256]
        blob = self.registry.blobs.path(record.sha256)
        if not blob.is_file():
            raise NotFoundError(
                f"package {record.app} v{record.version}: archive {blob} is missing"
            )
        folder = self.cache_dir / "packages" / record.sha256
        if (folder / "manifest.json").is_file():
            package = Package(
                manifest=record.manifest, root=folder, path=blob, archive_sha256=record.sha256
            )
        else:
            if folder.exists():  # an interrupted extraction can only leave an empty folder
                folder.rmdir()
            package = read_package(blob, extract_to=folder)
        self._packages[record.sha256] = package
        return package

    def forget(self, sha256: str) -> None:
        """Drop the cached extraction of a deleted package."""
        self._packages.pop(sha256, None)
        shutil.rmtree(self.cache_dir / "packages" / sha256, ignore_errors=True)

    def loading_models(self, package: Package) -> LoadedPackage:
        """`package`, whose candidates load through this cache (what the deployer takes)."""
        return LoadedPackage(package, self._models)

    def keep_models(self, in_use: set[tuple[str, str]]) -> None:
        """Release the loaded models no plan in force uses any more."""
        for key in set(self._models) - in_use:
            del self._models[key]

    def clear(self) -> None:
        self._packages.clear()
        self._models.clear()


class LoadedPackage:
    """A package whose candidate models are loaded once and kept (in the cache's models)."""

    def __init__(self, package: Package, models: dict[tuple[str, str], Any]) -> None:
        self.package = package
        self.manifest = package.manifest
        self.root = package.root
        self._models = models

    def load_candidate(self, cut_point: str) -> Any:
        key = (self.package.archive_sha256, cut_point)
        if key not in self._models:
            self._models[key] = self.package.load_candidate(cut_point)
        return self._models[key]
