"""From-scratch baseline: how many steps does meta-learning save?

Trains stable-baselines3 SAC from scratch, one agent per goal, on a few goals of each held-out
ML10 class (the goals the meta-learners are tested on: ML10(seed=0) test tasks, the first N of
each class), and scores it after each step budget in `--steps` with the Meta-World protocol's
evaluation episodes: 3 episodes of 500 steps that end on success, mean action (SAC's
deterministic policy), an episode succeeds if any step does; mean per goal, then per class,
then over classes. 5,000 steps = the 10 adaptation episodes the meta-learners get.

    python benchmarks/scratch_baseline.py [--goals-per-class 2] [--steps 5000 100000] [--seed 0]

Needs the `baselines` extra: pip install -c constraints.txt -e '.[baselines]'.

Writes benchmarks/results/scratch_baseline.{json,md}; `metarl bench report` adds the table to
results/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HORIZON = 500


def make_env(task, cls):
    """One Meta-World goal as a gymnasium env (goal hidden, as in ML10), episodes of HORIZON steps."""
    import gymnasium as gym

    env = cls()
    env.set_task(task.payload)
    return gym.wrappers.TimeLimit(env, HORIZON)


def evaluate(model, env, episodes: int = 3) -> float:
    """Fraction of `episodes` deterministic episodes that succeed (each ends at its first success)."""
    wins = 0
    for _ in range(episodes):
        obs, _ = env.reset()
        for _ in range(HORIZON):
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            if info.get("success", 0) > 0:
                wins += 1
                break
            if terminated or truncated:
                break
    return wins / episodes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--goals-per-class", type=int, default=2)
    p.add_argument("--steps", type=int, nargs="+", default=[5000])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    if args.goals_per_class < 1 or any(s < 1 for s in args.steps):
        print("scratch_baseline: error: --goals-per-class and --steps must be >= 1", file=sys.stderr)
        return 2
    try:
        from stable_baselines3 import SAC
    except ImportError:
        print("scratch_baseline: error: needs stable-baselines3: pip install -c constraints.txt -e '.[baselines]'",
              file=sys.stderr)
        return 2
    import torch

    import metaworld
    from metarl.envs import make_benchmark
    from metarl.training.evaluation import select_tasks

    torch.set_num_threads(1)
    bench = make_benchmark("ML10", seed=0, max_episode_steps=HORIZON)
    classes = dict(metaworld.ML10(seed=0).test_classes)
    tasks = select_tasks(bench.test_tasks, args.goals_per_class)
    budgets = sorted(set(args.steps))
    rows = []
    t0 = time.time()
    for i, task in enumerate(tasks):
        env = make_env(task, classes[task.name])
        eval_env = make_env(task, classes[task.name])
        model = SAC("MlpPolicy", env, seed=args.seed + i, verbose=0, device="cpu")
        done = 0
        for b in budgets:
            t1 = time.time()
            model.learn(total_timesteps=b - done, reset_num_timesteps=False)
            done = b
            s = evaluate(model, eval_env)
            rows.append({"task": task.name, "task_index": task.index, "steps": b, "success": s,
                         "seconds": time.time() - t1})
            print(f"{task.label}: {b:,} steps -> {s:.0%} ({time.time() - t1:.0f} s)", flush=True)
        env.close()
        eval_env.close()
    per_budget = {}
    for b in budgets:
        by_class: dict[str, list[float]] = {}
        for r in rows:
            if r["steps"] == b:
                by_class.setdefault(r["task"], []).append(r["success"])
        per_budget[str(b)] = {"success": float(np.mean([np.mean(v) for v in by_class.values()])),
                              "per_class": {k: float(np.mean(v)) for k, v in by_class.items()}}
    from metarl.app.bench.run import machine  # the machine string every result file carries
    from metarl.training.run import git_commit
    result = {"benchmark": "ML10", "split": "test", "algorithm": "SAC (stable-baselines3 defaults), one per goal",
              "goals_per_class": args.goals_per_class, "horizon": HORIZON, "evaluation_episodes": 3,
              "deterministic": True, "seed": args.seed, "budgets": budgets, "per_budget": per_budget, "rows": rows,
              "wall_seconds": time.time() - t0, "machine": machine(),
              "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
              "git_commit": git_commit()}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scratch_baseline.json").write_text(json.dumps(result, indent=2) + "\n")
    classes_order = list(per_budget[str(budgets[0])]["per_class"])
    md = ["# scratch_baseline", "",
          f"SAC from scratch (stable-baselines3 defaults), one agent per goal, on {args.goals_per_class} goals of "
          f"each held-out ML10 class; success in 3 deterministic evaluation episodes (500 steps, ending on "
          f"success) after each budget of env steps. The meta-learners adapt with 5,000 steps (10 episodes).", "",
          "| env steps | mean over classes | " + " | ".join(classes_order) + " |",
          "|---|---|" + "---|" * len(classes_order)]
    for b in budgets:
        pb = per_budget[str(b)]
        md.append(f"| {b:,} | {100 * pb['success']:.1f}% | "
                  + " | ".join(f"{100 * pb['per_class'][c]:.0f}%" for c in classes_order) + " |")
    md += ["", f"{result['wall_seconds'] / 60:.1f} min on {result['machine']}. Command: `{result['command']}` "
               f"at commit `{result['git_commit']}`.", ""]
    (out / "scratch_baseline.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
