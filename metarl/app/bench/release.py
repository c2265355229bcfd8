"""`metarl bench release SOURCE NAME`: a run's final policy as benchmarks/checkpoints/<NAME>.pt (policy
only: no optimizer state, no critics, no replay buffers) and a line in benchmarks/checkpoints/MANIFEST.

The file loads with torch.load(weights_only=True) (checked after writing) and evaluates like any
checkpoint: `metarl eval benchmarks/checkpoints/NAME.pt --protocol metaworld`. MANIFEST lines:
`<sha256>  <file>  <bytes> bytes  <env steps> env steps  <agent> <benchmark>`; verify with
`cd benchmarks/checkpoints && awk '{print $1"  "$2}' MANIFEST | sha256sum -c`. What the policy needs
is the agent class's RELEASE_KEYS (metarl/agents).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from metarl.app.bench.paths import CHECKPOINTS
from metarl.core.types import ConfigError

__all__ = ["release", "CHECKPOINTS"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def release(source: str | Path, name: str, dest: Path = CHECKPOINTS) -> Path:
    """Write `dest`/`name`.pt from `source` (a run dir: its newest checkpoint; or a checkpoint file)
    and its MANIFEST line; the file written. ConfigError (one line) for a bad name or source."""
    import torch

    from metarl.agents import AGENTS
    from metarl.training import checkpoint, config
    from metarl.training.run import git_commit

    if not _NAME.match(name) or name.endswith(".pt"):
        raise ConfigError(f"NAME: {name!r} must be letters, digits, '_', '-', '.' (no path, no .pt)")
    path, payload = checkpoint.resolve(str(source), registry=AGENTS)
    cfg = config.from_dict(payload["config"], registry=AGENTS)
    state = payload["agent"]
    if state.get("policy_only"):
        raise ConfigError(f"SOURCE: {path} is already a released policy")
    keys = AGENTS[cfg.agent.name].RELEASE_KEYS or tuple(state)  # what acting and adapting need (None: all)
    light: dict[str, Any] = {k: state[k] for k in keys if k in state}
    light["policy_only"] = True
    out: dict[str, Any] = {k: payload[k] for k in ("config", "config_hash", "agent_name", "counters") if k in payload}
    out.update({"agent": light, "release": {"name": name, "source": str(path), "git_commit": git_commit() or ""}})
    target = dest / f"{name}.pt"
    checkpoint.write(target, out)
    torch.load(target, map_location="cpu", weights_only=True)  # loads without running code
    bench = cfg.env.benchmark + (f"/{cfg.env.env_name}" if cfg.env.env_name else "")
    _update_manifest(dest, target, int(out.get("counters", {}).get("env_steps", 0)), f"{cfg.agent.name} {bench}")
    return target


def _update_manifest(dest: Path, target: Path, env_steps: int, what: str) -> None:
    from metarl.training.checkpoint import MANIFEST, sha256

    manifest = dest / MANIFEST
    lines = [ln for ln in (manifest.read_text().splitlines() if manifest.exists() else [])
             if ln.strip() and ln.split()[1] != target.name]
    lines.append(f"{sha256(target)}  {target.name}  {target.stat().st_size} bytes  {env_steps} env steps  {what}")
    tmp = manifest.with_name(".MANIFEST.tmp")
    tmp.write_text("\n".join(sorted(lines, key=lambda ln: ln.split()[1])) + "\n")
    tmp.replace(manifest)
