"""The dependency direction of docs/design.md ("Layers"), checked on every import statement.

    agents -> metarl.{types, nn, returns, optim, buffers, machine}
    envs   -> metarl.types
    only metarl.{trainer, cli, cli_eval, evaluation, sampler, metaworld_adapter, video} import envs or agents
    (metarl.config receives the agent registry from its caller: it imports no agent code)

plus what keeps that free of circles: the part of metarl that agents and envs import stays
below them (it imports nothing else from metarl, nor envs or agents). Every import counts:
module level, inside functions and under `if TYPE_CHECKING:` (a type-only import is still a
dependency of the code that uses the type). Exceptions are listed in EXCEPTIONS with a reason.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("metarl", "envs", "agents")

# what agents may import: shared math and data (buffers: PEARL's per-task replay and context arrays)
# (fields: the declarative config-field constraints every config section, agents' included, uses)
CORE = {"metarl.types", "metarl.nn", "metarl.returns", "metarl.optim", "metarl.machine", "metarl.buffers",
        "metarl.fields"}
ENVS_MAY_IMPORT = {"metarl.types"}
MAY_IMPORT_ENVS_AGENTS = {"metarl.trainer", "metarl.cli", "metarl.cli_eval", "metarl.evaluation", "metarl.sampler",
                          "metarl.video",
                          "metarl.metaworld_adapter"}

# (importer, imported) -> why it is allowed. Keep each one justified; the test below fails on
# an exception that no import needs any more.
EXCEPTIONS = {
    ("envs.vector", "metarl.rollout"):
        "the episode loop runs where the envs are: every backend runs a sample call's units (whole "
        "episodes or trials) with metarl.rollout.run_unit next to its env, one message per unit instead "
        "of one per step (docs/design.md, 'Work units'). metarl.rollout imports only metarl.types, "
        "so it sits in the layer below envs (checked with CORE below).",
    ("envs.procpool", "metarl.rollout"):
        "worker processes run metarl.rollout.run_unit on their env (see envs.vector).",
    ("envs.raypool", "metarl.rollout"):
        "Ray actors run metarl.rollout.run_unit on their env, the same loop as the worker processes.",
}
LOWER = CORE | {imported for (_, imported) in EXCEPTIONS if imported.startswith("metarl.")}


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
    if (importer, imported) in EXCEPTIONS or imported == importer:
        return None
    top, imported_top = importer.split(".")[0], imported.split(".")[0]
    if importer in LOWER and imported not in LOWER:
        return f"{importer} is imported by agents/envs, so it may import only {sorted(LOWER)}"
    if top == "agents" and imported_top != "agents" and imported not in CORE:
        return f"agents may import only agents.* and {sorted(CORE)}"
    if top == "envs" and imported_top != "envs" and imported not in ENVS_MAY_IMPORT:
        return f"envs may import only envs.* and {sorted(ENVS_MAY_IMPORT)}"
    if top == "metarl" and imported_top in ("envs", "agents") and importer not in MAY_IMPORT_ENVS_AGENTS:
        return f"only {sorted(MAY_IMPORT_ENVS_AGENTS)} may import envs or agents"
    return None


def all_imports() -> list[tuple[str, str, str]]:
    """(importer, imported, file:line) over metarl/, envs/ and agents/."""
    return [(module_name(path), imported, f"{path.relative_to(ROOT)}:{line}")
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            for imported, line in imports_of(path)]


def test_imports_follow_the_dependency_direction():
    found = all_imports()
    assert len(found) > 30  # the parse saw the code base
    bad = [f"{where}: {importer} imports {imported}: {why}" for importer, imported, where in found
           if (why := violation(importer, imported)) is not None]
    assert not bad, "\n".join(bad)


def test_every_exception_is_still_needed():
    pairs = {(importer, imported) for importer, imported, _ in all_imports()}
    stale = [pair for pair in EXCEPTIONS if pair not in pairs]
    assert not stale, f"remove these from EXCEPTIONS, nothing imports that way any more: {stale}"


@pytest.mark.parametrize("importer, imported", [
    ("agents.maml_trpo", "metarl.sampler"),      # an agent reaching into the sampler
    ("agents.pearl", "metarl.checkpoint"),       # ... or the checkpoint module
    ("agents.rl2_ppo", "metarl.logging"),        # ... or the logger
    ("agents.base", "envs.vector"),
    ("envs.vector", "metarl.sampler"),
    ("envs.toy", "agents.base"),
    ("metarl.logging", "envs"),
    ("metarl.checkpoint", "agents.pearl"),
    ("metarl.rollout", "metarl.sampler"),        # the layer under agents/envs importing upwards
    ("metarl.config", "agents"),                 # config receives the agent registry (config.load(registry=))
    ("metarl.config", "agents.base"),
    ("metarl.checkpoint", "agents"),
    ("metarl.fields", "metarl.config"),
    ("metarl.types", "envs.benchmarks"),
])
def test_the_rules_refuse_imports_against_the_direction(importer, imported):
    assert violation(importer, imported) is not None


def test_imports_are_found_wherever_they_are_written(tmp_path, monkeypatch):
    """Function-level, TYPE_CHECKING, relative and `from package import module` forms."""
    pkg = tmp_path / "agents"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text("")
    (tmp_path / "metarl").mkdir()
    (tmp_path / "metarl" / "sampler.py").write_text("")
    (pkg / "mod.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "if TYPE_CHECKING:\n    from metarl.sampler import Sampler\n"
        "def f():\n    from metarl import sampler\n"
        "from . import x\n"
        "from .x import y\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert sorted(imports_of(pkg / "mod.py"), key=lambda x: x[1]) == [("metarl.sampler", 4), ("metarl.sampler", 6), ("agents.x", 7),
                                          ("agents.x", 8)]


def test_config_does_not_import_agents():
    """The config module is handed the agent registry (config.load(..., registry=agents.AGENTS));
    no import of agents in it, at any level."""
    imported = [name for name, _ in imports_of(ROOT / "metarl" / "config.py")]
    assert imported and not [n for n in imported if n.split(".")[0] == "agents"], imported
