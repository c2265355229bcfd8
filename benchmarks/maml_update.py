"""Seconds per MAML-TRPO outer update on one batch: second order vs first order (agent.first_order)
vs Meta-SGD (agent.learn_inner_lr), each from the same initial weights on the same episodes.

    python benchmarks/maml_update.py [--episodes 2] [--repeats 3] [--threads 1]

Samples one pre- and one post-adaptation batch of ML10 training tasks (meta-batch 20,
500-step episodes, the real MAML policy), then times `agent.update` for each variant, the
variants interleaved `--repeats` times; writes benchmarks/results/maml_update.json. Pause other
jobs (SIGSTOP) while it runs: timings on a busy machine are not results.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = {"second_order": {}, "first_order": {"first_order": True},
            "meta_sgd_per_parameter": {"learn_inner_lr": "per_parameter"}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=2, help="episodes per task in the batch (the preset uses 10)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "maml_update.json"))
    args = p.parse_args(argv)
    import torch

    from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
    from metarl.envs import TaskVectorEnv, make_benchmark
    from metarl.training.run import git_commit
    from metarl.training.sampler import Sampler

    torch.set_num_threads(args.threads)
    bench = make_benchmark("ML10", seed=0, max_episode_steps=500)
    torch.manual_seed(0)
    base = MAMLTRPO(MAMLTRPOConfig(meta_batch=20, episodes_per_task=args.episodes, fvp_subsample=0.2),
                    bench.obs_dim, bench.act_dim)
    sampler = Sampler(TaskVectorEnv(bench.env_factory, 20, min(2, os.cpu_count() or 1)), 500)
    rng = np.random.default_rng(0)
    tasks = [bench.train_tasks[i] for i in rng.choice(len(bench.train_tasks), 20, replace=False)]
    state = base.initial_task_state(20)
    pre, _ = sampler.sample(base, tasks, state, args.episodes, rng)
    adapted = base.adapt(state, pre)
    post, _ = sampler.sample(base, tasks, adapted, args.episodes, rng)
    sampler.vec_env.close()
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    accepted: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(args.repeats):
        for name, over in VARIANTS.items():
            agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=20, episodes_per_task=args.episodes, fvp_subsample=0.2, **over),
                             bench.obs_dim, bench.act_dim)
            agent.policy.load_state_dict(copy.deepcopy(base.policy.state_dict()))
            t0 = time.perf_counter()
            m = agent.update(pre, post, adapted)
            times[name].append(time.perf_counter() - t0)
            accepted[name].append(m.scalars["train/line_search_accepted"])
    from metarl.app.bench.run import machine  # the machine string every result file carries
    second = float(np.median(times["second_order"]))
    result = {"batch_env_steps": 2 * 20 * args.episodes * 500, "episodes_per_task": args.episodes,
              "threads": args.threads, "repeats": args.repeats,
              "seconds_median": {k: float(np.median(v)) for k, v in times.items()},
              "seconds_all": times, "ratio_to_second_order": {k: float(np.median(v)) / second for k, v in times.items()},
              "line_search_accepted": accepted, "machine": machine(),
              "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
              "git_commit": git_commit()}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds_median", "ratio_to_second_order")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
