"""Reading scheduler problems from JSON or YAML files (DESIGN §4).

The scheduler itself does no I/O; this adapter turns a file into a validated `Problem` and
turns every way a file can be wrong into one `ProblemFileError` whose message lists each bad
field by its path (``apps.1.event_frequency: ...``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mainstream.core.errors import MainstreamError, NotFoundError
from mainstream.core.yaml_files import describe_yaml_error
from scheduler.fleet import Fleet
from scheduler.problem import Objective, Problem

YAML_SUFFIXES = (".yaml", ".yml")
JSON_SUFFIXES = (".json",)


class ProblemFileError(MainstreamError, ValueError):
    """A problem file cannot be parsed or does not describe a valid problem."""

    http_status = 422
    exit_code = 2


def load_problem(
    path: Path | str,
    *,
    budget: float | None = None,
    objective: Objective | None = None,
    confidence: float | None = None,
) -> Problem:
    """Read and validate a problem file; `budget`/`objective`/`confidence` override the
    file's values."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"problem file not found: {path}")
    if not path.is_file():
        raise ProblemFileError(f"{path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ProblemFileError(f"cannot read problem file {path}: {error}") from error
    data = parse_problem_text(text, fmt=_format_of(path), source=str(path))
    return problem_from_data(
        data, budget=budget, objective=objective, confidence=confidence, source=str(path)
    )


def parse_problem_text(text: str, *, fmt: str, source: str = "<problem>") -> Any:
    """Parse JSON (`fmt="json"`) or YAML (`fmt="yaml"`) text; syntax errors name the line."""
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ProblemFileError(
                f"{source} is not valid JSON (line {error.lineno}, column {error.colno}): "
                f"{error.msg}"
            ) from error
    if fmt == "yaml":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ProblemFileError(
                f"not valid YAML: {describe_yaml_error(error, source)}"
            ) from error
    raise ProblemFileError(f"unknown problem format {fmt!r}: expected 'json' or 'yaml'")


def problem_from_data(
    data: Any,
    *,
    budget: float | None = None,
    objective: Objective | None = None,
    confidence: float | None = None,
    source: str = "<problem>",
) -> Problem:
    """Validate parsed data as a `Problem`, applying the overrides before validation."""
    if not isinstance(data, Mapping):
        raise ProblemFileError(
            f"{source} must hold a mapping with 'budget', 'profile' and 'apps' at the top level, "
            f"not {type(data).__name__}"
        )
    fields = dict(data)
    if budget is not None:
        fields["budget"] = budget
    if objective is not None:
        fields["objective"] = objective
    if confidence is not None:
        fields["confidence"] = confidence
    try:
        return Problem.model_validate(fields)
    except ValidationError as error:
        raise ProblemFileError(
            f"{source} is not a valid problem:\n{format_validation_errors(error)}"
        ) from error


def format_validation_errors(error: ValidationError) -> str:
    """One line per problem: ``  - apps.0.event_frequency: Input should be less than 1 (got 1.5)``."""
    lines = []
    for detail in error.errors(include_url=False):
        location = ".".join(str(part) for part in detail["loc"]) or "(top level)"
        message = detail["msg"]
        if detail["type"] not in ("missing", "value_error", "model_type", "dict_type"):
            message += f" (got {_short_repr(detail['input'])})"
        lines.append(f"  - {location}: {message}")
    return "\n".join(lines)


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        return "json"
    if suffix in YAML_SUFFIXES:
        return "yaml"
    raise ProblemFileError(
        f"{path}: unknown problem file type {suffix!r}; use .json, .yaml or .yml"
    )


def load_fleet(path: Path | str, *, objective: Objective | None = None) -> Fleet:
    """Read and validate a fleet file (FLEET.yaml, or .json); `objective` overrides the file's.

    Every error is one line naming the file and the key: ``fleet.yaml: nodes.1.budget: ...``.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"fleet file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ProblemFileError(f"cannot read fleet file {path}: {error}") from error
    data = parse_problem_text(text, fmt=_format_of(path), source=str(path))
    if not isinstance(data, Mapping):
        raise ProblemFileError(
            f"{path}: must hold a mapping with 'nodes' and 'cameras' at the top level, "
            f"not {type(data).__name__}"
        )
    fields = dict(data)
    if objective is not None:
        fields["objective"] = objective
    _read_profile_files(fields, path)
    try:
        return Fleet.model_validate(fields)
    except ValidationError as error:
        raise ProblemFileError(one_line_errors(error, str(path))) from error


def _read_profile_files(fields: dict[str, Any], path: Path) -> None:
    """Nodes may name the file `mainstream profile -o` wrote instead of giving the profile
    inline (`profile: edge-1.json`, or in `profiles:`), relative to the fleet file."""
    nodes = fields.get("nodes")
    if not isinstance(nodes, list):
        return
    for index, node in enumerate(nodes):
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("profile"), str):
            node["profile"] = _profile_file(path, node["profile"], f"nodes.{index}.profile")
        if isinstance(node.get("profiles"), list):
            node["profiles"] = [
                _profile_file(path, item, f"nodes.{index}.profiles.{number}")
                if isinstance(item, str)
                else item
                for number, item in enumerate(node["profiles"])
            ]


def _profile_file(fleet_path: Path, name: str, key: str) -> Any:
    profile_path = fleet_path.parent / name
    try:
        text = profile_path.read_text(encoding="utf-8")
    except OSError as error:
        raise ProblemFileError(
            f"{fleet_path}: {key}: cannot read profile file {name}: {error.strerror or error}"
        ) from error
    except UnicodeDecodeError as error:
        raise ProblemFileError(
            f"{fleet_path}: {key}: profile file {name} is not text: {error}"
        ) from error
    return parse_problem_text(text, fmt=_format_of(profile_path), source=str(profile_path))


def one_line_errors(error: ValidationError, source: str) -> str:
    """``SOURCE: key.path: message`` for each error, joined by '; ' on one line."""
    parts = []
    for detail in error.errors(include_url=False):
        location = ".".join(str(part) for part in detail["loc"]) or "(top level)"
        message = detail["msg"].replace("\n", " ").removeprefix("Value error, ")
        if detail["type"] not in ("missing", "value_error", "model_type", "dict_type"):
            message += f" (got {_short_repr(detail['input'])})"
        parts.append(f"{location}: {message}")
    return f"{source}: " + "; ".join(parts)
