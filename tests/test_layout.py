"""The package layout is the pipeline: stage packages over a few ground modules, no import circle.

Imports are read with `ast`, lazy ones inside functions included, so a cycle that only shows
at run time is caught here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "instructgen"
GROUND = "ground"  # the modules at the root: contracts, files, errors, tokens
# A package may import only from packages of a lower rank (and from itself); equal ranks are
# sibling stages, which meet through files, never through each other's code.
RANKS = {
    GROUND: 0,
    "client": 1,
    "generate": 2,
    "curate": 3,
    "cc3m": 3,
    "scienceqa": 3,
    "review": 3,
    "train": 3,
    "eval": 4,
    "report": 5,
    "cli": 6,
}


def module_name(path: Path) -> str:
    parts = ["instructgen", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """The project modules that module `name` imports, anywhere in its body."""
    found: set[str] = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # a submodule by name
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported_modules(name) for name in MODULES}


def stage_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or MODULES[name].name == "__init__.py" else GROUND


def test_no_module_imports_one_that_imports_it_back():
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in path:
            cycle = path[path.index(name) :] + [name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        path.append(name)
        for other in sorted(GRAPH[name]):
            visit(other)
        path.pop()
        done.add(name)

    for name in MODULES:
        visit(name)


def test_packages_import_only_downward():
    upward = [
        f"{name} imports {other}"
        for name, imports in GRAPH.items()
        for other in imports
        if name != "instructgen"
        and stage_of(name) != stage_of(other)
        and RANKS[stage_of(other)] >= RANKS[stage_of(name)]
    ]
    assert upward == []


def test_every_package_is_a_known_stage():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages <= set(RANKS) - {GROUND}
    assert len(packages - {"cli"}) >= 7


def test_only_the_ground_modules_stay_at_the_root():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 6, root
    for name in root:
        imports = GRAPH[module_name(PACKAGE / name)]
        assert all(stage_of(m) == GROUND for m in imports), f"{name} imports a stage: {imports}"


def test_each_package_says_what_its_stage_does_and_where_to_start():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        first = doc.splitlines()[0] if doc else ""
        assert first, f"{init}: no docstring"
        if init.parent.name != "cli":
            named = [p.name for p in init.parent.glob("*.py") if f"`{p.name}`" in first]
            assert named, f"{init}: the first line names no module to read first: {first!r}"
