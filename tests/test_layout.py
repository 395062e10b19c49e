"""The package's layout rules, read from the source with ``ast`` (nothing is imported): no import
cycle among genie_core's modules (imports inside functions count, relative imports too; only
``if TYPE_CHECKING:`` blocks are left out, as they never run), genie_core never imports
genie_cli, imports point downwards between the rooms (``ROOMS``), and modules stay short enough
to read."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "genie_core"
MAX_LINES = 450
# Modules over the limit today, to be split when genie_core is regrouped, each with a ceiling it
# must not grow past meanwhile. Remove an entry once its module is split.
TO_SPLIT: dict[str, int] = {}
# The rooms of genie_core and the rooms each may import from (its own included). The top-level
# modules (config, errors, runtime, version, metrics) are the floor every room stands on; the
# package's own __init__ (lazy names for the public API) is exempt.
TOP = "top"
ROOMS = {
    TOP: {TOP},
    "io": {TOP, "io"},
    "models": {TOP, "io", "models"},
    "training": {TOP, "io", "models", "training"},
    "tasks": {TOP, "io", "models", "tasks"},
}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of genie_core (a package is its __init__)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every dotted name the module ``name`` (file ``path``) imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # ``from pkg import sub`` imports the submodule pkg.sub
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between genie_core modules, every import of each module)."""
    modules = _modules()
    edges, imports = {}, {}
    for name, path in modules.items():
        imports[name] = _imported(name, path, modules)
        edges[name] = {target for target in imports[name] if target in modules and target != name}
    return edges, imports


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a cycle
    through its members when one is found by walking the component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
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
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return [_cycle_in(c, edges) for c in components]


def _cycle_in(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One cycle a -> b -> ... -> a inside a strongly connected component (breadth-first)."""
    members, start = set(component), component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return component  # pragma: no cover - a component always holds a cycle


def test_no_import_cycle_in_genie_core() -> None:
    edges, _ = _graph()
    cycles = _cycles(edges)
    assert not cycles, "import cycles in genie_core:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_planted_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(edges) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_relative_and_function_level_imports_are_seen(tmp_path: Path) -> None:
    pkg = tmp_path / "genie_core" / "sub"
    pkg.mkdir(parents=True)
    mod = pkg / "m.py"
    mod.write_text("from . import other\nfrom ..top import x\n"
                   "def f():\n    import genie_cli.app\n    from .other import y\n"
                   "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from genie_core import hidden\n")
    modules = {"genie_core.sub.other": pkg / "other.py", "genie_core.top": tmp_path / "top.py"}
    assert _imported("genie_core.sub.m", mod, modules) == {
        "genie_core.sub.other", "genie_core.top", "genie_cli.app", "typing"}


def test_genie_core_never_imports_genie_cli() -> None:
    _, imports = _graph()
    bad = sorted(f"{name} imports {target}" for name, targets in imports.items() for target in targets
                 if target == "genie_cli" or target.startswith("genie_cli."))
    assert not bad, "\n".join(bad)


def test_modules_stay_short() -> None:
    long = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        name, lines = path.relative_to(ROOT).as_posix(), len(path.read_text().splitlines())
        if lines > TO_SPLIT.get(name, MAX_LINES):
            long.append(f"{name}: {lines} lines")
    assert not long, f"modules over {MAX_LINES} lines (or their TO_SPLIT ceiling):\n" + "\n".join(long)


def _room(module: str) -> str | None:
    """The room of a genie_core module (None for the package itself and for other packages)."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) == 1:
        return None
    return parts[1] if parts[1] in ROOMS else TOP


def _upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import from a room into one it may not import from, as "a imports b"."""
    bad = []
    for name, targets in sorted(edges.items()):
        room = _room(name)
        if room is None:
            continue
        for target in sorted(targets):
            other = _room(target)
            if other is not None and other not in ROOMS[room]:
                bad.append(f"{name} ({room}) imports {target} ({other})")
    return bad


def test_imports_point_downwards_between_rooms() -> None:
    edges, _ = _graph()
    assert all(_room(name) in ROOMS for name in edges if name != PACKAGE)
    bad = _upward(edges)
    assert not bad, "imports against the rooms' order:\n" + "\n".join(bad)


def test_room_checker_finds_upward_imports() -> None:
    edges = {"genie_core.io.video": {"genie_core.models.tokenizer", "genie_core.errors"},
             "genie_core.models.lam": {"genie_core.io.frames", "genie_core.training.optim"},
             "genie_core.tasks.env": {"genie_core.training.data", "genie_core.models.world"},
             "genie_core.training.train": {"genie_core.models.lam", "genie_core.tasks.worlds"},
             "genie_core.runtime": {"genie_core.io.atomic"},
             "genie_core": {"genie_core.tasks.env"}}
    assert _upward(edges) == [
        "genie_core.io.video (io) imports genie_core.models.tokenizer (models)",
        "genie_core.models.lam (models) imports genie_core.training.optim (training)",
        "genie_core.runtime (top) imports genie_core.io.atomic (io)",
        "genie_core.tasks.env (tasks) imports genie_core.training.data (training)",
        "genie_core.training.train (training) imports genie_core.tasks.worlds (tasks)"]


def test_every_package_is_installed() -> None:
    """pyproject.toml lists its packages by hand: every package folder of genie_core is there."""
    import re
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"([\w.]+)"', re.search(r"^packages = \[(.*?)\]", text, re.M | re.S).group(1)))
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / PACKAGE).rglob("__init__.py")}
    assert found - listed == set(), f"package folders missing from pyproject.toml: {sorted(found - listed)}"
