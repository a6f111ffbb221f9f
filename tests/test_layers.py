"""The import rules of the architecture (docs/architecture.md), checked on every module.

Each package sits on a layer and may import only from the layers below it (and from itself).
The check reads the source (AST), so it sees imports inside functions too, and it has no list
of exceptions: a new upward import fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("mainstream", "scheduler", "trainer", "edge_runtime", "api")

# (package prefix, layer). The longest matching prefix wins.
LAYERS: dict[str, int] = {
    "mainstream.core": 0,
    "mainstream": 0,  # the package itself holds only __version__ (from core)
    "scheduler": 1,
    "edge_runtime": 2,
    "trainer": 2,
    "mainstream.node": 3,
    "api": 4,
    "mainstream.cli": 5,
}
# Packages of one layer that must not import each other.
SIBLINGS_APART = {("edge_runtime", "trainer"), ("trainer", "edge_runtime")}
# Imports allowed inside a function only: libraries too heavy to load at import time.
HEAVY = ("tensorflow", "keras", "cv2", "openvino", "uvicorn", "fastapi", "starlette", "h5py")


def package_of(module: str) -> str:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return max(matches, key=len)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (for `from x import y`: x, or x.y when that is a module)
    names: tuple[str, ...]
    line: int
    in_function: bool
    type_only: bool  # under `if TYPE_CHECKING:`, so it never runs


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PROJECT:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_function: set[int] = set()
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(sub) for sub in ast.walk(node) if sub is not node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(sub) for sub in ast.walk(node) if sub is not node)
    for node in ast.walk(tree):
        where = (
            (node.lineno, id(node) in in_function, id(node) in type_only)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            else None
        )
        if isinstance(node, ast.Import) and where:
            for alias in node.names:
                yield Import(module, alias.name, (), *where)
        elif isinstance(node, ast.ImportFrom) and where and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                target = submodule if submodule in modules else node.module
                yield Import(module, target, (alias.name,), *where)


def project_imports() -> list[Import]:
    modules = project_modules()
    found = []
    for module, path in modules.items():
        found.extend(
            item
            for item in imports_of(module, path, modules)
            if item.target.split(".")[0] in PROJECT
        )
    return found


def where(item: Import) -> str:
    return f"{item.module}:{item.line} imports {item.target}"


def test_every_import_goes_down_the_layers() -> None:
    upward = []
    for item in project_imports():
        source, target = package_of(item.module), package_of(item.target)
        if source == target:
            continue
        if LAYERS[target] > LAYERS[source] or (source, target) in SIBLINGS_APART:
            upward.append(where(item))
    assert upward == [], "imports against the layer table:\n" + "\n".join(upward)


def test_no_private_name_is_imported_across_packages() -> None:
    private = [
        where(item) + f" ({name})"
        for item in project_imports()
        for name in item.names
        if name.startswith("_")
        and not name.startswith("__")
        and package_of(item.module) != package_of(item.target)
    ]
    assert private == [], "\n".join(private)


def test_no_import_cycle_between_files() -> None:
    graph: dict[str, set[str]] = {}
    for item in project_imports():
        if not item.in_function and not item.type_only:
            graph.setdefault(item.module, set()).add(item.target)
    cycles = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == [], "\n".join(cycles)


def test_project_imports_inside_functions_are_only_for_heavy_libraries() -> None:
    """A project import inside a function hides a tangle; only heavy libraries load lazily.

    A project module counts as heavy when it imports TensorFlow, Keras, OpenCV, OpenVINO or
    the web stack at its top level: the CLI and the API must not pay for those on start.
    """
    modules = project_modules()
    heavy_modules = {
        module
        for module, path in modules.items()
        for item in imports_of(module, path, modules)
        if not item.in_function and not item.type_only and item.target.split(".")[0] in HEAVY
    }
    lazy = [
        where(item)
        for item in project_imports()
        if item.in_function and not _loads_heavy(item.target, heavy_modules, modules)
    ]
    assert lazy == [], "\n".join(lazy)
    silent = [
        where(item)
        for item in project_imports()
        if item.in_function
        and "#" not in modules[item.module].read_text(encoding="utf-8").splitlines()[item.line - 1]
    ]
    assert silent == [], "a lazy import says why in a comment:\n" + "\n".join(silent)


def _loads_heavy(target: str, heavy: set[str], modules: dict[str, Path]) -> bool:
    """Whether importing `target` loads a heavy library (directly or through the project)."""
    seen: set[str] = set()
    pending = [target]
    while pending:
        module = pending.pop()
        if module in heavy:
            return True
        if module in seen or module not in modules:
            continue
        seen.add(module)
        pending.extend(
            item.target
            for item in imports_of(module, modules[module], modules)
            if not item.in_function and not item.type_only and item.target.split(".")[0] in PROJECT
        )
    return False


def test_only_heavy_libraries_load_lazily_and_each_says_why() -> None:
    """Inside a function, only TensorFlow, OpenCV, OpenVINO, HDF5 and the web stack may be
    imported (they cost seconds or hundreds of MB), each with a comment saying so."""
    modules = project_modules()
    found = []
    for module, path in modules.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for item in imports_of(module, path, modules):
            top = item.target.split(".")[0]
            if not item.in_function or top in PROJECT:
                continue
            if top not in HEAVY:
                found.append(where(item) + " (a light library: import it at the top)")
            elif "#" not in lines[item.line - 1] and "#" not in lines[item.line]:
                found.append(where(item) + " (say why it loads lazily)")
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    "arguments",
    [["--help"], ["schedule", "dry-run", "examples/problem.json", "--json"]],
)
def test_light_commands_load_no_tensorflow_or_opencv(arguments: list[str]) -> None:
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['mainstream', *{arguments!r}]\n"
        "try:\n"
        "    runpy.run_module('mainstream.cli.main', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras', 'cv2', 'openvino') if m in sys.modules)\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert "LOADED []" in result.stderr, result.stderr[-2000:]
