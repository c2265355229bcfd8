"""Bit-exactness check for refactors: the same toy runs at two commits must give the same numbers.

For one git commit (or the working tree), train every toy preset (configs/toy_*.yaml of that
checkout) for a few iterations and record, per preset, a SHA-256 of

  - params:   the last checkpoint's agent state (every tensor's dtype, shape and bytes; every
              number and string), keys in sorted order;
  - progress: progress.csv without its wall-time columns (time/*);
  - eval:     eval.csv (the final evaluation on held-out toy tasks);
  - config:   the run config the checkpoint stores (canonical JSON, without run.out_dir) and
              its training hash.

A commit is checked out with `git worktree add --detach` under /tmp and run with this
interpreter, with cwd and PYTHONPATH set to that checkout (the script checks that `metarl` is
imported from there). Compare two revisions on one machine:

    python benchmarks/bitexact.py --compare HEAD~1 HEAD     # exit 1 on any difference
    python benchmarks/bitexact.py HEAD                       # hashes of one revision
    python benchmarks/bitexact.py WORKTREE                   # the working tree as it is
    python benchmarks/bitexact.py --compare HEAD WORKTREE --presets toy_maml_trpo --set agent.first_order=true

Each run takes a few seconds; results go to --out (default /tmp/metarl-bitexact/<rev>.json).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WORKTREE = "WORKTREE"  # the working tree as it is, uncommitted changes included
# env steps per preset: a few iterations each (a preset not listed trains 1/5 of its budget)
BUDGETS = {"toy_maml_trpo": 12_000, "toy_reptile": 6_000, "toy_rl2_ppo": 1_200, "toy_pearl": 2_800}
# what the training process runs: refuse to go on if `metarl` is not the checkout's own; the CLI is
# metarl.app.cli since the layered tree (metarl.cli before it), so revisions on both sides compare
BOOT = ("import importlib, sys, os, metarl\n"
        "root = os.path.realpath(sys.argv[1])\n"
        "if not os.path.realpath(metarl.__file__).startswith(root + os.sep):\n"
        "    sys.exit(f'bitexact: metarl imported from {metarl.__file__}, not from {root}')\n"
        "cli = 'metarl.app.cli' if os.path.isdir(os.path.join(root, 'metarl', 'app')) else 'metarl.cli'\n"
        "sys.exit(importlib.import_module(cli).main(sys.argv[2:]))\n")


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def canonical(x: Any, h: "hashlib._Hash") -> None:
    """Feed `x` (a checkpoint's nested dicts, lists, tensors, arrays, numbers, strings) to `h`
    in an order and encoding that depend only on its contents."""
    import numpy as np
    import torch

    if isinstance(x, dict):
        h.update(b"{")
        for k in sorted(x, key=str):
            h.update(repr(k).encode() + b":")
            canonical(x[k], h)
        h.update(b"}")
    elif isinstance(x, (list, tuple)):
        h.update(b"[" if isinstance(x, list) else b"(")
        for v in x:
            canonical(v, h)
        h.update(b"]")
    elif isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(x, np.ndarray):
        a = np.ascontiguousarray(x)
        h.update(f"A{a.dtype}{a.shape}".encode() + a.tobytes())
    elif isinstance(x, float):
        h.update(b"f" + x.hex().encode())
    else:  # int, bool, str, None
        h.update(f"{type(x).__name__}:{x!r}".encode())
    h.update(b";")


def csv_hash(path: Path, drop_prefix: str | None = None) -> str:
    """SHA-256 of a CSV file, without the columns whose name starts with `drop_prefix`."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    keep = [i for i, name in enumerate(rows[0]) if drop_prefix is None or not name.startswith(drop_prefix)]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    for row in rows:
        w.writerow([row[i] for i in keep])
    return hashlib.sha256(out.getvalue().encode()).hexdigest()


def run_hashes(run_dir: Path) -> dict[str, Any]:
    import torch

    ckpts = sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))
    payload = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    params, config = hashlib.sha256(), hashlib.sha256()
    canonical(payload["agent"], params)
    saved = json.loads(json.dumps(payload["config"]))
    saved.get("run", {}).pop("out_dir", None)  # a temporary directory
    config.update(json.dumps(saved, sort_keys=True).encode())
    return {"checkpoint": ckpts[-1].name, "params": params.hexdigest(),
            "progress": csv_hash(run_dir / "progress.csv", "time/"), "eval": csv_hash(run_dir / "eval.csv"),
            "config": config.hexdigest(), "config_hash": payload.get("config_hash")}


def checkout(rev: str, tmp: Path) -> tuple[Path, str]:
    """(source tree, commit label) for `rev`: the repo itself for WORKTREE, else a detached worktree."""
    if rev == WORKTREE:
        return REPO, f"{git('rev-parse', '--short', 'HEAD')}+worktree"
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    tree = tmp / f"tree-{sha[:12]}"
    if not tree.exists():
        git("worktree", "add", "--detach", "--quiet", str(tree), sha)
    return tree, sha[:12]


def measure(rev: str, presets: list[str] | None, tmp: Path, overrides: list[str] = []) -> dict[str, Any]:
    tree, label = checkout(rev, tmp)
    names = presets or sorted(p.stem for p in (tree / "configs").glob("toy_*.yaml"))
    env = {**os.environ, "PYTHONPATH": str(tree), "MUJOCO_GL": "disable"}
    out: dict[str, Any] = {"rev": rev, "commit": label, "presets": {}}
    for name in names:
        preset = tree / "configs" / f"{name}.yaml"
        if not preset.is_file():
            out["presets"][name] = {"error": "no such preset at this revision"}
            continue
        budget = BUDGETS.get(name)
        if budget is None:
            import yaml
            budget = max(1, int(yaml.safe_load(preset.read_text())["run"]["env_steps"]) // 5)
        runs = tmp / "runs"  # one path for every revision: the configs compare equal
        shutil.rmtree(runs / name, ignore_errors=True)
        cmd = [sys.executable, "-c", BOOT, str(tree), "train", str(preset), "--device", "cpu",
               "--set", f"run.env_steps={budget}", "--set", f"run.out_dir={runs}", "--set", f"run.name={name}",
               "--set", "run.progress=false", "--set", "run.torch_threads=1"]
        cmd += [a for kv in overrides for a in ("--set", kv)]
        print(f"bitexact: {label} {name} ({budget} env steps)", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            out["presets"][name] = {"error": f"exit {done.returncode}: " + " | ".join(tail)}
            continue
        out["presets"][name] = run_hashes(runs / name)
    return out


FIELDS = ("params", "progress", "eval", "config")


def table(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, bool]:
    lines = [f"| preset | {' | '.join(FIELDS)} | {a['commit']} params | {b['commit']} params |",
             "|---" * (len(FIELDS) + 3) + "|"]
    same = True
    for name in sorted({*a["presets"], *b["presets"]}):
        x, y = a["presets"].get(name, {"error": "missing"}), b["presets"].get(name, {"error": "missing"})
        if "error" in x or "error" in y:
            same = False
            lines.append(f"| {name} | {x.get('error', 'ok')} / {y.get('error', 'ok')} |")
            continue
        marks = []
        for f in FIELDS:
            marks.append("same" if x[f] == y[f] else "DIFFERENT")
            same &= x[f] == y[f]
        lines.append(f"| {name} | {' | '.join(marks)} | {x['params'][:16]} | {y['params'][:16]} |")
    return "\n".join(lines), same


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rev", nargs="?", default=WORKTREE, help=f"a git revision, or {WORKTREE} (default)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="measure two revisions and compare them")
    p.add_argument("--presets", nargs="*", help="preset names (default: every configs/toy_*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every preset, e.g. agent.first_order=true (repeatable)")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "metarl-bitexact",
                   help="where the hashes (<commit>.json) and the runs go")
    p.add_argument("--keep", action="store_true", help="keep the temporary worktrees")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bitexact-", dir=args.out))
    revs = args.compare or [args.rev]
    results = []
    try:
        for rev in revs:
            r = measure(rev, args.presets, tmp, args.overrides)
            (args.out / f"{r['commit']}.json").write_text(json.dumps(r, indent=1) + "\n")
            results.append(r)
    finally:
        if not args.keep:
            for tree in tmp.glob("tree-*"):
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)
    if len(results) == 1:
        print(json.dumps(results[0], indent=1))
        return 1 if any("error" in v for v in results[0]["presets"].values()) else 0
    text, same = table(*results)
    print(text)
    print("bit-identical" if same else "DIFFERENT: see the table")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
