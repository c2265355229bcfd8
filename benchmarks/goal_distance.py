"""Where do a checkpoint's held-out episodes end, relative to the hidden goal?

Runs the adaptation protocol (round 0 = before adaptation, then K rounds) on every task of a split of an
ML1 reach-style benchmark and reports, per round: success, the hand's final distance to the goal
(median, for failed and for successful episodes), and how consistent success is per goal across rounds
1..K (a goal that fails every round points at wrong task inference, not at action noise).

    python benchmarks/goal_distance.py RUN_DIR_OR_CHECKPOINT [--split test] [--rounds 3] [--seed 0] [--out JSON]

The goal is the last 3 entries of the Meta-World task's `rand_vec` (reach, push, pick-place, ...) and the
hand position the first 3 entries of the observation.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from metarl.core.types import ConfigError
    from metarl.training.diagnostics import load_ml1, measure

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.rounds < 1:
        raise SystemExit(f"goal_distance: --rounds must be >= 1, got {args.rounds}")
    try:
        ckpt, bench, sampler, agent = load_ml1(args.checkpoint, args.seed)
    except ConfigError as e:
        raise SystemExit(f"goal_distance: {e}")
    tasks = bench.tasks(args.split)
    try:
        success, final, _ = measure(agent, sampler, tasks, args.rounds, np.random.default_rng(args.seed))
    finally:
        sampler.vec_env.close()
    k_max = args.rounds
    n = len(tasks)

    def med(x):
        return float(np.median(x)) if len(x) else None

    rows = []
    for k in range(k_max + 1):
        s, d = success[:, k], final[:, k]
        rows.append({"round": k, "success": float(s.mean()), "final_dist_failed_median": med(d[~s]),
                     "final_dist_succeeded_median": med(d[s])})
    wins = success[:, 1:].sum(1)
    consistency = {"goals": n, "every_round": int((wins == k_max).sum()), "no_round": int((wins == 0).sum()),
                   "some_rounds": int(((wins > 0) & (wins < k_max)).sum())}
    print(f"{ckpt} on {n} {args.split} goals")
    print("round  success  final distance to goal, median (failed / succeeded)")
    for r in rows:
        f = "-" if r["final_dist_failed_median"] is None else f"{r['final_dist_failed_median']:.3f}"
        g = "-" if r["final_dist_succeeded_median"] is None else f"{r['final_dist_succeeded_median']:.3f}"
        print(f"{r['round']:>5}  {r['success'] * 100:6.0f}%  {f} / {g} m")
    print(f"goals succeeded in all rounds 1..{k_max}: {consistency['every_round']}, in none: "
          f"{consistency['no_round']}, in some: {consistency['some_rounds']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"checkpoint": str(ckpt), "split": args.split, "seed": args.seed,
                                              "rounds": rows, "consistency": consistency}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
