"""The layers of docs/design.md ("Layers"), checked on every import statement.

    metarl.core                   imports nothing else of ours
    metarl.agents, metarl.envs    import metarl.core and their own package (not each other)
    metarl.training               imports the layers below; of it only TOUCHES_AGENTS_ENVS import agents or envs
    metarl.app                    imports anything
    metarl (its __init__)         imports anything (lazily: the Python entry points of metarl/app/api.py)
    (metarl.training.config receives the agent registry from its caller: it imports no agent code)

and no import circles between our modules. Every import counts: module level, inside functions
and under `if TYPE_CHECKING:` (a type-only import is still a dependency of the code that uses
the type).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("metarl",)
# the layer of each subpackage: a module imports only its own subpackage and lower layers
LAYERS = {"metarl.core": 0, "metarl.agents": 1, "metarl.envs": 1, "metarl.training": 2, "metarl.app": 3}
# the modules of metarl.training that build or drive agents and envs
TOUCHES_AGENTS_ENVS = {"metarl.training.build", "metarl.training.diagnostics", "metarl.training.trainer", "metarl.training.evaluation", "metarl.training.sampler",
                       "metarl.training.video", "metarl.training.protocol", "metarl.training.run"}


def subpackage(name: str) -> str | None:
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and ".".join(parts[:2]) in LAYERS else None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported module of ours, line) for every import statement in `path`; `from a import b`
    names the module a.b when b is a module, else a."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((full if is_module(full) else base, node.lineno))
    return [(name, line) for name, line in out if name.split(".")[0] in PACKAGES]


def violation(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported`, or None."""
    if imported == importer or imported == "metarl":
        return None
    if importer == "metarl":  # the package's front door (metarl.train, metarl.evaluate): above every layer
        return None
    mine, theirs = subpackage(importer), subpackage(imported)
    if mine is None or theirs is None:
        return f"{importer if mine is None else imported} is in no layer: put it in one of {sorted(LAYERS)}"
    if mine == theirs:
        return None
    if LAYERS[theirs] >= LAYERS[mine]:
        return f"{mine} (layer {LAYERS[mine]}) may import only lower layers, not {theirs} (layer {LAYERS[theirs]})"
    if mine == "metarl.training" and theirs in ("metarl.agents", "metarl.envs") and importer not in TOUCHES_AGENTS_ENVS:
        return f"of metarl.training only {sorted(TOUCHES_AGENTS_ENVS)} may import agents or envs"
    return None


def all_imports() -> list[tuple[str, str, str]]:
    """(importer, imported, file:line) over metarl/."""
    return [(module_name(path), imported, f"{path.relative_to(ROOT)}:{line}")
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            for imported, line in imports_of(path)]


def test_imports_follow_the_dependency_direction():
    found = all_imports()
    assert len(found) > 30  # the parse saw the code base
    bad = [f"{where}: {importer} imports {imported}: {why}" for importer, imported, where in found
           if (why := violation(importer, imported)) is not None]
    assert not bad, "\n".join(bad)


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each is an import circle."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        if a != b:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    """Not even through imports inside functions: a circle hidden in a function is still one."""
    edges = {(importer, imported) for importer, imported, _ in all_imports() if imported != "metarl"}
    assert not cycles(edges), cycles(edges)


def test_the_circle_check_finds_circles():
    assert cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
    assert cycles({("a", "b"), ("b", "c")}) == []


@pytest.mark.parametrize("importer, imported", [
    ("metarl.agents.maml_trpo", "metarl.training.sampler"),      # an agent reaching into the sampler
    ("metarl.agents.pearl", "metarl.training.checkpoint"),       # ... or the checkpoint module
    ("metarl.agents.rl2_ppo", "metarl.training.runlog"),        # ... or the logger
    ("metarl.agents.base", "metarl.envs.vector"),
    ("metarl.envs.vector", "metarl.training.sampler"),
    ("metarl.envs.toy", "metarl.agents.base"),
    ("metarl.training.runlog", "metarl.envs"),
    ("metarl.agents.pearl", "metarl.envs.toy"),              # agents and envs do not import each other
    ("metarl.core.types", "metarl.agents.base"),
    ("metarl.training.sampler", "metarl.app.cli"),
    ("metarl.training.checkpoint", "metarl.agents.pearl"),
    ("metarl.core.rollout", "metarl.training.sampler"),        # the layer under agents/envs importing upwards
    ("metarl.training.config", "metarl.agents"),                 # config receives the agent registry (config.load(registry=))
    ("metarl.training.config", "metarl.agents.base"),
    ("metarl.training.checkpoint", "metarl.agents"),
    ("metarl.core.fields", "metarl.training.config"),
    ("metarl.core.types", "metarl.envs.suites"),
])
def test_the_rules_refuse_imports_against_the_direction(importer, imported):
    assert violation(importer, imported) is not None


def test_imports_are_found_wherever_they_are_written(tmp_path, monkeypatch):
    """Function-level, TYPE_CHECKING, relative and `from package import module` forms."""
    pkg = tmp_path / "metarl" / "agents"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text("")
    (tmp_path / "metarl" / "training").mkdir()
    (tmp_path / "metarl" / "training" / "sampler.py").write_text("")
    (pkg / "mod.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "if TYPE_CHECKING:\n    from metarl.training.sampler import Sampler\n"
        "def f():\n    from metarl.training import sampler\n"
        "from . import x\n"
        "from .x import y\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert sorted(imports_of(pkg / "mod.py"), key=lambda x: x[1]) == [("metarl.training.sampler", 4), ("metarl.training.sampler", 6), ("metarl.agents.x", 7), ("metarl.agents.x", 8)]


def test_config_does_not_import_agents():
    """The config module is handed the agent registry (config.load(..., registry=agents.AGENTS));
    no import of agents in it, at any level."""
    imported = [name for name, _ in imports_of(ROOT / "metarl" / "training" / "config.py")]
    assert imported and not [n for n in imported if n.startswith("metarl.agents")], imported
