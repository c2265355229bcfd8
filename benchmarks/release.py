"""Release a run's final policy: benchmarks/checkpoints/<name>.pt (policy only: no optimizer
state, no critics, no replay buffers) and a line in benchmarks/checkpoints/MANIFEST.

    python benchmarks/release.py RUN_DIR_OR_CHECKPOINT NAME      # e.g. ... ml10_maml_trpo_s1

The file loads with torch.load(weights_only=True) (checked after writing) and evaluates like any
checkpoint: `metarl eval benchmarks/checkpoints/NAME.pt --protocol metaworld`. MANIFEST lines:
`<sha256>  <file>  <bytes> bytes  <env steps> env steps  <agent> <benchmark>`; verify with
`cd benchmarks/checkpoints && awk '{print $1"  "$2}' MANIFEST | sha256sum -c`.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "benchmarks" / "checkpoints"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def release(source: str, name: str, dest: Path = DEST) -> Path:
    import torch

    from metarl import agents
    from metarl.agents import AGENTS
    from metarl.training import checkpoint, config
    from metarl.app.cli import _git_commit
    from metarl.core.types import ConfigError

    if not _NAME.match(name) or name.endswith(".pt"):
        raise ConfigError(f"NAME: {name!r} must be letters, digits, '_', '-', '.' (no path, no .pt)")
    path, payload = checkpoint.resolve(source, registry=AGENTS)
    cfg = config.from_dict(payload["config"], registry=AGENTS)
    state = payload["agent"]
    keys = agents.AGENTS[cfg.agent.name].RELEASE_KEYS or tuple(state)  # what acting and adapting need (None: all)
    if state.get("policy_only"):
        raise ConfigError(f"SOURCE: {path} is already a released policy")
    light = {k: state[k] for k in keys if k in state}
    light["policy_only"] = True
    out = {k: payload[k] for k in ("config", "config_hash", "agent_name", "counters") if k in payload}
    out.update({"agent": light, "release": {"name": name, "source": str(path), "git_commit": _git_commit() or ""}})
    target = dest / f"{name}.pt"
    checkpoint.write(target, out)
    torch.load(target, map_location="cpu", weights_only=True)  # loads without running code
    _update_manifest(dest, target, out, cfg)
    return target


def _update_manifest(dest: Path, target: Path, payload: dict, cfg) -> None:
    from metarl.training.checkpoint import MANIFEST, sha256

    manifest = dest / MANIFEST
    lines = [ln for ln in (manifest.read_text().splitlines() if manifest.exists() else [])
             if ln.strip() and ln.split()[1] != target.name]
    steps = int(payload.get("counters", {}).get("env_steps", 0))
    bench = cfg.env.benchmark + (f"/{cfg.env.env_name}" if cfg.env.env_name else "")
    lines.append(f"{sha256(target)}  {target.name}  {target.stat().st_size} bytes  {steps} env steps  "
                 f"{cfg.agent.name} {bench}")
    tmp = manifest.with_name(".MANIFEST.tmp")
    tmp.write_text("\n".join(sorted(lines, key=lambda ln: ln.split()[1])) + "\n")
    tmp.replace(manifest)


def main(argv=None) -> int:
    from metarl.core.types import ConfigError

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="run dir (its newest checkpoint) or checkpoint file")
    p.add_argument("name", help="released file stem, e.g. ml10_maml_trpo_s1")
    p.add_argument("--dest", default=str(DEST))
    args = p.parse_args(argv)
    try:
        target = release(args.source, args.name, Path(args.dest))
    except ConfigError as e:
        print(f"release: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KiB) and {target.parent / 'MANIFEST'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
