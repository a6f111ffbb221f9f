"""The node's cost profiles (DESIGN §3): stored per base and engine, measured when missing.

A profile is measured on this machine with the node's engine and precision the first time a
base is planned, and again when a plan needs a cut point it does not cover or when it was
measured elsewhere (another machine, engine or precision).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from edge_runtime.deployer import BaseProvider, DeployedApp, profile_key
from edge_runtime.engines import EngineName, Precision
from edge_runtime.profiler import measure_profile, profile_matches_machine
from mainstream.core.bases import discover_cut_points
from mainstream.core.errors import ModelError
from mainstream.core.manifest import Manifest
from mainstream.core.package import Package
from mainstream.node.registry import Registry
from scheduler.problem import Profile

logger = logging.getLogger(__name__)


class ProfileStore:
    """Cost profiles of the bases this node plans on, for one engine and precision."""

    def __init__(
        self,
        registry: Registry,
        bases: BaseProvider,
        engine: EngineName,
        precision: Precision,
        repeats: int,
        frames_in_flight: int = 1,
    ) -> None:
        self.registry = registry
        self.bases = bases
        self.engine = engine
        self.precision = precision
        self.repeats = repeats
        self.frames_in_flight = frames_in_flight

    def for_apps(
        self, apps: Sequence[DeployedApp], packages: Mapping[str, Package]
    ) -> list[Profile]:
        """One profile per base the apps run on, covering every candidate of theirs."""
        by_key: dict[str, list[DeployedApp]] = {}
        for app in apps:
            by_key.setdefault(profile_key(app.manifest), []).append(app)
        return [
            self.profile(key, [app.manifest for app in members], packages[members[0].name].root)
            for key, members in by_key.items()
        ]

    def profile(self, key: str, manifests: Sequence[Manifest], package_root: Path) -> Profile:
        """The stored cost profile of a base, measured now if missing, stale or too coarse.

        A profile covers "input" and every candidate cut point of the apps planned on the
        base; a new cut point means measuring again (the cut points already known included).
        """
        needed = {"input"} | {c.cut_point for m in manifests for c in m.candidates}
        stored = self.registry.get_profile(key, self.engine)
        if stored is not None and not profile_matches_machine(
            stored, self.engine, self.precision, self.frames_in_flight
        ):
            logger.info(
                "the stored profile of %s was measured on another machine, engine, "
                "precision or frames in flight; measuring again",
                key,
            )
            stored = None
        known = {cut.name for cut in stored.cut_points} if stored is not None else set()
        if stored is not None and needed <= known:
            return stored

        config, base_model = self.bases.get(manifests[0], package_root)
        order = discover_cut_points(base_model)
        unknown = sorted(needed - set(order))
        if unknown:
            raise ModelError(f"cut point(s) {', '.join(unknown)} are not cut points of base {key}")
        cuts = [cut for cut in order if cut in needed | known]
        logger.info("measuring the cost profile of %s at %d cut points", key, len(cuts))
        measured = measure_profile(
            config,
            self.engine,
            cut_points=cuts,
            base_model=base_model,
            repeats=self.repeats,
            precision=self.precision,
            frames_in_flight=self.frames_in_flight,
        ).model_copy(update={"base_model": key})
        self.save({key: measured})
        return measured

    def stored(self, keys: Iterable[str]) -> dict[str, Profile | None]:
        """The stored profiles of these bases (None: none yet)."""
        return {key: self.registry.get_profile(key, self.engine) for key in keys}

    def save(self, profiles: Mapping[str, Profile]) -> None:
        with self.registry.transaction() as transaction:
            for key, profile in profiles.items():
                transaction.save_profile(key, self.engine, profile)
