"""Run a preset end to end (train + final meta-test) and write benchmarks/results/<preset>.{json,md,png}.

    python benchmarks/run_preset.py configs/ml1_reach_maml_trpo.yaml --seeds 1 2 3

Each seed trains in its own run dir under runs/bench/; the result files hold
the meta-test adaptation curve (mean over seeds, and each seed's) of the final
evaluation on the held-out tasks.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def main(argv=None) -> int:
    import torch

    from metarl import config
    from metarl.cli import _git_commit
    from metarl.logging import curve_figure
    from metarl.trainer import Trainer
    from metarl.types import ConfigError

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--runs", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--name", help="result file stem (default: the preset name)")
    args = p.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    git = _git_commit()
    per_seed, t_start = [], time.time()
    cfg = None
    for seed in args.seeds:
        try:
            cfg = config.load(args.config, args.set, seed=seed, device=args.device)
            cfg = config.from_dict({**cfg.to_dict(), "run": {
                **cfg.to_dict()["run"], "out_dir": args.runs,
                "name": f"{cfg.preset}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"}})
            device = config.resolve_device(cfg.run.device)
        except ConfigError as e:
            print(f"run_preset: error: {e}", file=sys.stderr)
            return 2
        run_dir = Path(cfg.run.out_dir) / cfg.run.name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        t0 = time.time()
        trainer = Trainer(cfg, run_dir, device)
        # SIGINT / SIGTERM: stop training, evaluate the policy as it is, write the result (marked)
        curve = trainer.run(final_eval_on_stop=True)
        per_seed.append({"seed": seed, "run_dir": os.path.relpath(run_dir, ROOT), "env_steps": trainer.env_steps,
                         "stopped_early": trainer.stopped_early,
                         "wall_seconds": time.time() - t0, "success_by_round": curve.success_by_round(),
                         "return_by_round": curve.return_by_round(), "n_tasks": len(curve.tasks)})
    name = args.name or cfg.preset
    succ = np.mean([r["success_by_round"] for r in per_seed], axis=0).tolist()
    ret = np.mean([r["return_by_round"] for r in per_seed], axis=0).tolist()
    result = {
        "preset": cfg.preset, "agent": cfg.agent.name, "benchmark": cfg.env.benchmark,
        "env_name": cfg.env.env_name, "seeds": list(args.seeds),
        "env_steps": int(np.mean([r["env_steps"] for r in per_seed])),
        "budget_env_steps": cfg.run.env_steps,
        "stopped_early": any(r["stopped_early"] for r in per_seed),
        "wall_seconds": time.time() - t_start, "machine": machine(), "device": args.device,
        "torch": torch.__version__, "command": command, "git_commit": git, "config": cfg.to_dict(),
        "meta_test": {"success_by_round": succ, "return_by_round": ret, "n_tasks": per_seed[0]["n_tasks"],
                      "rounds": len(succ) - 1, "episodes_per_round": cfg.eval.episodes_per_round,
                      "split": "test"},
        "per_seed": per_seed,
    }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    for r in per_seed:  # the training and evaluation curves behind the result
        suffix = "" if len(per_seed) == 1 else f".s{r['seed']}"
        for f in ("progress", "eval"):
            src = ROOT / r["run_dir"] / f"{f}.csv"
            if src.exists():
                shutil.copyfile(src, out / f"{name}{suffix}.{f}.csv")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    curves = {f"seed {r['seed']}": (r["success_by_round"], r["return_by_round"]) for r in per_seed}
    if len(per_seed) > 1:
        curves["mean"] = (succ, ret)
    curve_figure(curves, f"{name}: meta-test on held-out tasks").savefig(out / f"{name}.png", dpi=100)
    rows = "\n".join(f"| {k} | {100 * s:.1f}% | {r:.1f} |" for k, (s, r) in enumerate(zip(succ, ret)))
    (out / f"{name}.md").write_text(
        f"# {name}\n\n{cfg.agent.name} on {cfg.env.benchmark} {cfg.env.env_name or ''}, seeds {args.seeds}, "
        f"{result['env_steps']:,} training env steps, {result['wall_seconds'] / 60:.1f} min on {result['machine']}.\n\n"
        f"Meta-test on {result['meta_test']['n_tasks']} held-out tasks, "
        f"{cfg.eval.episodes_per_round} episodes per round (round 0 = before adaptation)"
        + (f". Stopped early at {result['env_steps']:,} of the preset's {cfg.run.env_steps:,} env steps"
           if result["stopped_early"] else "") + ":\n\n"
        f"| round k | success | return |\n|---|---|---|\n{rows}\n\nCommand: `{command}` at commit `{git}`\n")
    print(json.dumps(result["meta_test"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
