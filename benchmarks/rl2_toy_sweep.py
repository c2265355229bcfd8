"""Within-trial margins of RL²-PPO on the sparse-reward toy, per configuration and seed.

    python benchmarks/rl2_toy_sweep.py CONFIG SEEDS [--iterations 150]
    python benchmarks/rl2_toy_sweep.py ref_vh 0,1,2,3

Trains `tests/test_rl2.py::train_rl2_sparse` (semicircle goals, reward 1 within 0.2 of the goal, trials
of two 20-step episodes) single-threaded and prints one line per seed: `within` = the trial's second
episode's return minus its first on 40 held-out goals with mean actions (more: more remembered from
episode 1), `meta` = the same minus its value before training. The configurations (CONFIGS) are the
rows of benchmarks/results/rl2_toy_sparse_sweep.txt.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

EPISODE = dict(bptt="episode", bptt_chunk=0, bptt_overlap=0)


def configs() -> dict[str, dict]:
    from test_rl2 import TOY_MEMORY, TOY_REFERENCE
    return {"old": {}, "old_trial": dict(bptt="trial", bptt_chunk=25, bptt_overlap=10, minibatches=1),
            "ref": TOY_REFERENCE, "ref_episode": {**TOY_REFERENCE, **EPISODE, "minibatches": 4},
            "ref_vh": TOY_MEMORY, "ref_vh_episode": {**TOY_MEMORY, **EPISODE, "minibatches": 2}}


def main(argv=None) -> int:
    import torch

    from test_rl2 import train_rl2_sparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", choices=sorted(configs()))
    p.add_argument("seeds", help="comma-separated, e.g. 0,1,2")
    p.add_argument("--iterations", type=int, default=150)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.time()
        r = train_rl2_sparse(seed, args.iterations, **configs()[args.config])
        print(args.config, seed, {k: round(float(v), 2) for k, v in r.items()}, f"{time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
