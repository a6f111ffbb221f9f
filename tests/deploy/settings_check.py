"""Check that deployment files only use settings the node understands.

Config files shipped under deploy/ are loaded with the real `load_settings`, and every
`MAINSTREAM_*` variable they set must name a settings field. A few settings are used by the
deployment files before the root `Settings` holds them; they are listed in `PENDING_SETTINGS`,
checked against their own model where one exists (the MQTT section), and handed to `Settings`
as soon as it defines them, so the checks tighten by themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from edge_runtime.sinks.settings import MqttSettings
from mainstream.node.settings import ENV_PREFIX, Settings, load_settings

PENDING_SETTINGS: dict[str, type[BaseModel] | None] = {
    "mqtt": MqttSettings,
    "registry_url": None,  # where an edge node pulls packages from (the registry's URL)
    "registry_token": None,  # the viewer token it pulls them with (environment only)
}
"""Top-level settings the deployment files use ahead of `Settings`, with their model if any."""


def _is_defined(name: str) -> bool:
    return name in Settings.model_fields


def _is_pending(name: str) -> bool:
    return name in PENDING_SETTINGS and not _is_defined(name)


def without_pending(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` minus pending sections, each validated by its own model first."""
    kept = {}
    for key, value in config.items():
        if not _is_pending(key):
            kept[key] = value
            continue
        model = PENDING_SETTINGS[key]
        if model is not None:
            model.model_validate(value)
    return kept


def clear_settings_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove MAINSTREAM_* variables, so that only what a test sets reaches the settings."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def load_config_text(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str = "config.yaml"
) -> Settings:
    """Load a YAML config the way `mainstream serve --config` does (environment cleared)."""
    config = yaml.safe_load(text) or {}
    assert isinstance(config, dict), f"{name}: a config file holds a mapping"
    clear_settings_environment(monkeypatch)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(without_pending(config)), encoding="utf-8")
    return load_settings(path)


def load_environment(environment: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Load settings from exactly `environment`; pending sections go through their own model."""
    clear_settings_environment(monkeypatch)
    pending: dict[str, dict[str, str]] = {}
    for name, value in environment.items():
        top, *rest = setting_path(name)
        if _is_pending(top):
            if rest:
                pending.setdefault(top, {})[rest[0]] = value
        else:
            monkeypatch.setenv(name, value)
    without_pending(pending)
    return load_settings()


def setting_path(variable: str) -> list[str]:
    """`MAINSTREAM_API__PORT` -> ["api", "port"]."""
    assert variable.startswith(ENV_PREFIX), variable
    return variable[len(ENV_PREFIX) :].lower().split("__")


def unknown_setting(variable: str) -> str | None:
    """Why `variable` names no setting, or None when it does."""
    top, *rest = setting_path(variable)
    if _is_pending(top):
        pending_model = PENDING_SETTINGS[top]
        if pending_model is None:
            return None
        model: Any = pending_model
    elif _is_defined(top):
        model = Settings
        rest = [top, *rest]
    else:
        return f"{variable}: no setting '{top}'"
    for depth, part in enumerate(rest):
        fields = model.model_fields
        if part not in fields:
            return f"{variable}: no field '{part}' in {model.__name__}"
        annotation = fields[part].annotation
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if depth < len(rest) - 1 and not nested:
            return f"{variable}: '{part}' has no nested fields"
        model = annotation
    return None
