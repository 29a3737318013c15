"""Architecture rules of the package, checked on the source with ``ast`` (nothing is imported).

* No import loops between the package's modules (imports inside functions included).
* Layers: ``simulation`` does not import the tracking, estimation, training, pipeline or
  napari code; ``tracking`` does not import estimation, training, pipeline or napari code;
  ``estimation`` does not import training or napari code; ``accel`` (the torch spot path) does not
  import simulation, training, pipeline, io or napari code; only ``_napari`` imports Qt,
  napari or magicgui; ``io``, ``acquisition`` and ``tracking`` do not import torch.
* No function takes more than 8 parameters (positional and keyword-only, not counting
  ``self``/``cls``, ``*args`` or ``**kwargs``), except the public entry points listed in
  :data:`LONG_SIGNATURES_ALLOWED`.
* No ``.py`` file of ``src/`` or ``benchmarks/`` is longer than 800 lines, except the
  model definitions (:data:`LONG_FILES_ALLOWED`).

The rules and their reasons are described in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = "napari_spt_diffusion"
PACKAGE_DIR = SRC / PACKAGE

MAX_PARAMETERS = 8
MAX_LINES = 800

#: ``"module:qualified.name"`` of public entry points that may take more than
#: MAX_PARAMETERS parameters because they take a settings object next to them. Keep it short.
LONG_SIGNATURES_ALLOWED: frozenset[str] = frozenset()

#: Files (relative to the repository) allowed beyond MAX_LINES: the network definitions.
LONG_FILES_ALLOWED: frozenset[str] = frozenset(
    {
        f"src/{PACKAGE}/training/models.py",
        f"src/{PACKAGE}/estimation/models.py",  # until it has moved to training/
    }
)

#: Top-level names of the GUI toolkits (only ``_napari`` may import them).
GUI_MODULES = frozenset({"napari", "magicgui", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "vispy"})

#: ``(importer prefix, forbidden import prefixes)``: a module whose name starts with the first
#: (as a dotted prefix) must not import any module starting with one of the second.
LAYER_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        f"{PACKAGE}.simulation",
        (f"{PACKAGE}.tracking", f"{PACKAGE}.estimation", f"{PACKAGE}.training", f"{PACKAGE}.pipeline",
         f"{PACKAGE}._napari"),
    ),
    (
        f"{PACKAGE}.tracking",
        (f"{PACKAGE}.estimation", f"{PACKAGE}.training", f"{PACKAGE}.pipeline", f"{PACKAGE}._napari", "torch"),
    ),
    (f"{PACKAGE}.estimation", (f"{PACKAGE}.training", f"{PACKAGE}._napari")),
    (
        f"{PACKAGE}.accel",
        (f"{PACKAGE}.simulation", f"{PACKAGE}.training", f"{PACKAGE}.pipeline", f"{PACKAGE}._napari", f"{PACKAGE}.io"),
    ),
    (f"{PACKAGE}.io", ("torch",)),
    (f"{PACKAGE}.acquisition", ("torch",)),
)


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class Module:
    """One ``.py`` file of the package."""

    name: str  # dotted, e.g. napari_spt_diffusion.estimation.classical
    path: Path
    is_package: bool  # an __init__.py


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


@cache
def package_modules() -> dict[str, Module]:
    """Every module of the package by dotted name."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        name, is_package = _module_name(path)
        out[name] = Module(name, path, is_package)
    return out


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, in functions too, but not under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        branch = child.orelse if isinstance(child, ast.If) and _is_type_checking(child.test) else [child]
        for statement in branch:
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                yield statement
            else:
                yield from _import_nodes(statement)


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The absolute dotted name a ``from ... import`` refers to."""
    if node.level == 0:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(module: Module) -> set[str]:
    """Absolute dotted names imported by a module (for ``from a import b``: ``a.b`` and ``a``)."""
    names: set[str] = set()
    for node in _import_nodes(_tree(module.path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        else:
            target = _absolute(module, node)
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
    return {n for n in names if n}


def _resolve(name: str, modules: dict[str, Module]) -> str | None:
    """The package module a dotted name belongs to (longest existing prefix), or None if outside."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in modules:
            return candidate
    return None


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """Module -> package modules it imports (a package's ``__init__`` counts when entered from outside)."""
    modules = package_modules()
    graph = {}
    for name, module in modules.items():
        own = set(_ancestors(name))
        targets: set[str] = set()
        for imported in imported_names(module):
            target = _resolve(imported, modules)
            if target is None or target == name:
                continue
            targets.add(target)
            # importing a.b.c runs a/__init__ and a/b/__init__ first, unless already running (own ancestors)
            targets.update(a for a in _ancestors(target) if a in modules and a not in own and a != name)
        graph[name] = frozenset(targets - own)
    return graph


def _cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _starts_with(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# ------------------------------------------------------------------------------ tests
def test_the_parser_sees_the_package():
    graph = import_graph()
    assert f"{PACKAGE}.pipeline" in graph
    # a relative import inside a function is seen and resolved (the CLI imports lazily)
    assert any(_starts_with(t, f"{PACKAGE}.pipeline") for t in graph[f"{PACKAGE}.cli"])


def test_no_import_loops():
    cycles = _cycles(import_graph())
    graph = import_graph()
    described = []
    for component in cycles:
        members = set(component)
        edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in members]
        described.append("  " + "; ".join(edges))
    assert not cycles, "import loops between modules:\n" + "\n".join(described)


def _layer_violation(importer: str, target: str) -> str | None:
    """Why module ``importer`` may not import ``target`` (dotted names), or None."""
    for layer, forbidden in LAYER_RULES:
        if _starts_with(importer, layer):
            for prefix in forbidden:
                if _starts_with(target, prefix):
                    return f"{layer} must not import {prefix}"
    if target.split(".")[0] in GUI_MODULES and not _starts_with(importer, f"{PACKAGE}._napari"):
        return f"only {PACKAGE}._napari may import GUI toolkits"
    return None


def test_layers():
    violations = []
    for name, module in package_modules().items():
        flagged = {}
        for target in imported_names(module):
            reason = _layer_violation(name, target)
            if reason:
                flagged[target] = reason
        for target, reason in sorted(flagged.items()):
            if not any(a in flagged for a in _ancestors(target)):  # ``from a import b``: report a only
                violations.append(f"{_relative(module.path)} imports {target} ({reason})")
    assert not violations, "layering violations:\n  " + "\n  ".join(violations)


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """``(qualified name, node)`` of every function and method, nested ones included."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qualname = f"{prefix}{child.name}"
                yield qualname, child
                yield from walk(child, f"{qualname}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Positional and keyword-only parameters, without ``self``/``cls``, ``*args`` and ``**kwargs``."""
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return len([n for n in names if n not in ("self", "cls")])


def test_parameter_count_counts_what_it_should():
    tree = ast.parse("class A:\n    def f(self, a, /, b, *args, c, d=1, **kw): ...\n")
    (_, node), = _functions(tree)
    assert parameter_count(node) == 4


def test_no_function_takes_more_than_8_parameters():
    offenders = []
    for name, module in package_modules().items():
        for qualname, node in _functions(_tree(module.path)):
            n = parameter_count(node)
            if n > MAX_PARAMETERS and f"{name}:{qualname}" not in LONG_SIGNATURES_ALLOWED:
                offenders.append(f"{_relative(module.path)}:{node.lineno} {qualname} ({n} parameters)")
    assert not offenders, (
        f"functions with more than {MAX_PARAMETERS} parameters (group them in a small dataclass):\n  "
        + "\n  ".join(offenders)
    )


@pytest.mark.parametrize("folder", ["src", "benchmarks"])
def test_no_file_is_longer_than_800_lines(folder):
    too_long = []
    for path in sorted((REPO / folder).rglob("*.py")):
        if _relative(path) in LONG_FILES_ALLOWED:
            continue
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            too_long.append(f"{_relative(path)} ({n} lines)")
    assert not too_long, f"files longer than {MAX_LINES} lines (split them by job):\n  " + "\n  ".join(too_long)
