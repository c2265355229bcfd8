"""Where a default ML10 MAML-TRPO meta-iteration spends its time.

    python benchmarks/iteration.py [--device cpu|cuda] [--iterations 2]

Runs `--iterations` meta-iterations of configs/ml10_maml_trpo.yaml (the first one is a
warm-up and is not reported) and one small evaluation, and writes
benchmarks/results/iteration[_cuda].json with sample_s (pre- and post-adaptation
sampling), adapt_s (inner steps for the post-adaptation policies), update_s (the TRPO
outer step: meta-gradient, conjugate gradient, line search), eval_s and total_s.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", help="JSON path (default benchmarks/results/iteration[_cuda].json)")
    args = p.parse_args(argv)

    from metarl.agents import AGENTS
    from metarl.training import config
    from metarl.training.evaluation import evaluate, select_tasks
    from metarl.training.build import build

    cfg = config.load(ROOT / "configs" / "ml10_maml_trpo.yaml", args.set, device=args.device, registry=AGENTS)
    device = config.resolve_device(cfg.run.device)
    torch.set_num_threads(cfg.run.torch_threads or torch.get_num_threads())
    torch.manual_seed(0)
    bench, sampler, agent = build(cfg, device)
    rng = np.random.default_rng(0)
    rows = []
    try:
        for i in range(args.iterations):
            s0, t0 = sampler.sample_seconds, time.perf_counter()
            m = agent.train_iteration(sampler, bench.train_tasks, rng)
            rows.append({"sample_s": sampler.sample_seconds - s0, "adapt_s": m["time/inner_adapt_s"],
                         "update_s": m["time/trpo_s"], "iteration_s": time.perf_counter() - t0})
            print(f"iteration {i}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[-1].items()), flush=True)
        t0 = time.perf_counter()
        evaluate(agent, sampler, select_tasks(bench.test_tasks, 1), 1, cfg.eval.episodes_per_round, rng)
        eval_s = time.perf_counter() - t0
    finally:
        sampler.vec_env.close()
    last = rows[-1] if len(rows) == 1 else {k: float(np.mean([r[k] for r in rows[1:]])) for k in rows[0]}
    total = last["sample_s"] + last["adapt_s"] + last["update_s"] + eval_s
    out = {"device": str(device), "torch_threads": torch.get_num_threads(), "cores": os.cpu_count(),
           "env_steps_per_iteration": 2 * cfg.agent.meta_batch * cfg.agent.episodes_per_task
           * bench.max_episode_steps,
           "sample_s": last["sample_s"], "adapt_s": last["adapt_s"], "update_s": last["update_s"],
           "eval_s": eval_s, "total_s": total, "update_share": last["update_s"] / total,
           "iterations": rows, "load_average_at_end": os.getloadavg(),
           "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]])}
    path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / (
        "iteration_cuda.json" if device.type == "cuda" else "iteration.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "iterations"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
