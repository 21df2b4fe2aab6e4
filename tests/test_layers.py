"""The house's floors: the command line on top, configuration at the bottom, imports only
downwards (in the spirit of import-linter), and no circles between the stages' packages."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "kbisect"

# Lower floors first. A package may import from its own floor and the floors below it.
FLOORS: list[set[str]] = [
    {"errors", "deadline", "processes", "progress", "closeable", "__init__"},
    {"config"},
    {"tree", "build", "lab", "jobs", "results"},
    {"bisect", "pipeline"},
    {"browser"},
    {"cli", "__main__"},
]


def _floor(package: str) -> int:
    for number, floor in enumerate(FLOORS):
        if package in floor:
            return number
    raise AssertionError(f"kbisect.{package} is on no floor: add it to FLOORS in {__file__}")


def _imports() -> list[tuple[str, str, int, str]]:
    """(importing package, file, line, imported package) for every kbisect import in src."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        package = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "kbisect" and len(parts) > 1:
                    found.append((package, str(rel), node.lineno, parts[1]))
    return found


def test_every_package_is_on_a_floor() -> None:
    for path in SRC.iterdir():
        if path.name.startswith(("_", ".")) and path.name not in ("__init__.py", "__main__.py"):
            continue
        if path.is_dir() or path.suffix == ".py":
            _floor(path.name.removesuffix(".py"))


def test_imports_only_go_down() -> None:
    upward = [
        f"{file}:{line}: kbisect.{importer} (floor {_floor(importer)}) imports kbisect.{imported} "
        f"(floor {_floor(imported)})"
        for importer, file, line, imported in _imports()
        if _floor(imported) > _floor(importer)
    ]
    assert upward == []


def test_no_circles_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for importer, _, _, imported in _imports():
        if importer != imported:
            graph.setdefault(importer, set()).add(imported)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(
        f"kbisect.{a} <-> kbisect.{b}" for a in graph for b in graph[a] if reaches(b, a, {b})
    )
    assert circles == []


def test_no_circles_between_modules() -> None:
    """Inside a package too: two modules that import each other are one module in two files."""
    modules: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        name = "kbisect." + ".".join(path.relative_to(SRC).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        deps = modules.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("kbisect")
            ):
                deps.add(node.module)  # and `from kbisect.pkg import module`:
                deps.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("kbisect"))
    pairs = sorted(
        f"{a} <-> {b}" for a, deps in modules.items() for b in deps
        if a < b and a in modules.get(b, set())
    )  # fmt: skip
    assert pairs == []


MODULE_LINES = 650  # "about 600": a module one can hold
FUNCTION_LINES = 80


def test_rooms_are_of_a_size_one_can_hold() -> None:
    too_big = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(SRC)
        if len(text.splitlines()) > MODULE_LINES:
            too_big.append(f"{rel}: {len(text.splitlines())} lines (split it by concern)")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > FUNCTION_LINES:
                    too_big.append(f"{rel}:{node.lineno}: {node.name} is {length} lines")
    assert too_big == []
