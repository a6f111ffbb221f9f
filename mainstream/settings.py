"""The one settings object. Values come from defaults, then a YAML file, then MAINSTREAM_* env vars."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """The user's data directory (XDG), e.g. ~/.local/share/mainstream."""
    xdg = os.environ.get("XDG_DATA_HOME")
    root = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return root / "mainstream"


class Settings(BaseSettings):
    """Root configuration of a Mainstream node."""

    model_config = SettingsConfigDict(
        env_prefix="MAINSTREAM_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(
        default_factory=default_data_dir, description="Where everything is stored"
    )

    @property
    def bases_dir(self) -> Path:
        """Registered base models: `<fingerprint>.weights.h5` plus `<fingerprint>.json`."""
        return self.data_dir / "bases"
