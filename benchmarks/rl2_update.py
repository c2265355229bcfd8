"""Seconds per RL²-PPO update of the ML10 preset, per learner thread count, same process.

    python benchmarks/rl2_update.py [--threads 1 2] [--epochs N] [--out FILE]

Builds the agent of a preset (default configs/ml10_rl2_ppo.yaml) and times
`agent.update` on one synthetic batch of the preset's shape (20 tasks x 10 episodes x 500 steps,
39-dim observations, 4-dim actions; random values: the cost does not depend on them) for each
`torch.set_num_threads` value, after a one-epoch warm-up. No environment is stepped: this is the
learner alone, what `time/update_s` in the run's progress.csv is made of. In a run the sampler's
workers wait while the learner updates, so a second learner thread uses a core that would idle.
Writes benchmarks/results/rl2_update_<preset>.json. Time it on an idle machine
(pause other runs).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OBS_DIM, ACT_DIM = 39, 4


def synthetic_batch(s: int, m: int, t: int, rng: np.random.Generator):
    from metarl.core.types import EpisodeBatch, Task

    obs = rng.standard_normal((s, m, t, OBS_DIM)).astype(np.float32)
    return EpisodeBatch(obs=obs, actions=rng.standard_normal((s, m, t, ACT_DIM)).astype(np.float32),
                        rewards=rng.uniform(0, 10, (s, m, t)).astype(np.float32), next_obs=obs,
                        successes=np.zeros((s, m, t), bool),
                        tasks=[Task("synthetic", i, None) for i in range(s)])


def main(argv=None) -> int:
    from metarl.agents import AGENTS, make
    from metarl.training import config
    from metarl.training.run import git_commit
    from metarl.app.bench.run import machine

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=str(ROOT / "configs" / "ml10_rl2_ppo.yaml"))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=None, help="epochs per timed update (default: the preset's)")
    p.add_argument("--out", help="default: benchmarks/results/rl2_update_<preset>.json")
    args = p.parse_args(argv)
    cfg = config.load(args.preset, [], registry=AGENTS)
    agent_cfg = cfg.agent if args.epochs is None else dataclasses.replace(cfg.agent, epochs=args.epochs)
    batch = synthetic_batch(agent_cfg.meta_batch, agent_cfg.episodes_per_task, cfg.env.max_episode_steps,
                            np.random.default_rng(0))
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        agent = make(dataclasses.replace(agent_cfg, epochs=1), OBS_DIM, ACT_DIM, "cpu")
        agent.update(batch, np.random.default_rng(0))  # warm-up
        agent = make(agent_cfg, OBS_DIM, ACT_DIM, "cpu")
        t0 = time.perf_counter()
        steps = int(agent.update(batch, np.random.default_rng(0)).scalars["train/optimizer_steps"])
        sec = time.perf_counter() - t0
        rows.append({"torch_threads": threads, "update_s": round(sec, 2), "gradient_steps": steps})
        print(f"{threads} thread(s): {sec:.1f} s per update ({rows[-1]['gradient_steps']} gradient steps)")
    base = rows[0]["update_s"]
    for r in rows:
        r["speedup_vs_first"] = round(base / r["update_s"], 2)
    out = {"preset": Path(args.preset).stem, "batch": [agent_cfg.meta_batch, agent_cfg.episodes_per_task,
                                                        cfg.env.max_episode_steps],
           "rows": rows, "machine": machine(), "cores": os.cpu_count(), "torch": torch.__version__,
           "git_commit": git_commit(), "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]])}
    path = Path(args.out) if args.out else \
        ROOT / "benchmarks" / "results" / f"rl2_update_{Path(args.preset).stem}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
