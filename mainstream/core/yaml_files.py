"""YAML syntax errors as one line that names the file, the line and the column.

PyYAML's own message spans several lines and, for text already read into memory, names the
source `<unicode string>`; users need `node.yaml, line 3, column 2: expected ',' or ']'`.
"""

from __future__ import annotations

import yaml


def describe_yaml_error(error: yaml.YAMLError, source: str) -> str:
    """`source, line L, column C: problem (while parsing ...)`, 1-based like editors."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
    return f"{where}: {problem}" + (f" ({context})" if context else "")
