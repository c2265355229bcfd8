"""Where the sampler's time goes on ML10, and what replayed resets (metarl/envs/resetcache.py) change.

    python benchmarks/sampler_efficiency.py [--rounds 5]

In one process and one run (fast path on everywhere):
  1. reset cost per ML10 train class: a full Meta-World reset against a replayed one, beside
     the cost of 500 env steps;
  2. one worker's efficiency: `run_units_here` (the episode loop every backend runs, real
     MAML policy, one-episode units of 20 tasks) against the single-env tight loop
     (env.step only) on the same core, with full and with replayed resets;
  3. where one worker's time goes (cProfile of the loop in 2. with replayed resets): shares of
     env.step, the policy call and the loop's own lines;
  4. the sampler with 2 worker processes (meta-batch 20, 2 episodes per task: 40 units), with
     and without replayed resets, interleaved call by call (`--rounds` pairs) after 3 warm-up
     calls each, and whether the two batches are identical.
Writes benchmarks/results/sampler_efficiency.{json,md}. Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def reset_costs(bench, tasks) -> dict[str, dict[str, float]]:
    out = {}
    envs = {c: dataclasses.replace(bench.env_factory, reset_cache=c)() for c in (False, True)}
    rng = np.random.default_rng(0)
    for task in tasks[::2]:  # one goal per class
        row = {}
        for cached, env in envs.items():
            env.set_task(task)
            env.reset()  # the replayed env keeps its snapshot here
            t0 = time.perf_counter()
            for _ in range(10):
                env.reset()
            row["replayed_reset_ms" if cached else "full_reset_ms"] = (time.perf_counter() - t0) / 10 * 1e3
        env = envs[False]
        env.reset()
        actions = rng.uniform(-1, 1, (500, 4))
        t0 = time.perf_counter()
        for a in actions:
            env.step(a)
        row["episode_500_steps_ms"] = (time.perf_counter() - t0) * 1e3
        out[task.name] = row
    return out


def worker_efficiency(bench, tasks, agent) -> dict[str, float]:
    from metarl.core.rollout import Job, plan_units, run_units_here
    from throughput import measure_limit

    actor = agent.actor()
    job = Job(actor, agent.initial_task_state(len(tasks)), 500, bench.act_dim, False)
    units = plan_units(tasks, list(range(len(tasks))), 1, True)
    out = {}
    limit_env = bench.env_factory()
    measure_limit(limit_env, tasks, 2)
    # one core's steps/s, median of 3 (a single measurement moves by several % on this VM)
    limit = statistics.median(measure_limit(limit_env, tasks, 500) for _ in range(3)) / (os.cpu_count() or 1)
    out["limit_per_core_steps_per_s"] = limit
    for cached in (False, True):
        env = dataclasses.replace(bench.env_factory, reset_cache=cached)()
        run_units_here(env, job, units)  # warm-up: build the envs (and the snapshots)
        rates = []
        for _ in range(3):
            t0 = time.perf_counter()
            run_units_here(env, job, units)
            rates.append(len(units) * 500 / (time.perf_counter() - t0))
        key = "replayed_resets" if cached else "full_resets"
        out[f"{key}_steps_per_s"] = statistics.median(rates)
        out[f"{key}_over_limit"] = statistics.median(rates) / limit
    return out


def profile_shares(bench, tasks, agent) -> dict[str, float]:
    """Shares of one worker's episode-loop time (cProfile, replayed resets, warmed up)."""
    import cProfile
    import pstats

    from metarl.core.rollout import Job, plan_units, run_units_here

    job = Job(agent.actor(), agent.initial_task_state(len(tasks)), 500, bench.act_dim, False)
    units = plan_units(tasks, list(range(len(tasks))), 1, True)
    env = bench.env_factory()
    run_units_here(env, job, units)
    prof = cProfile.Profile()
    prof.enable()
    run_units_here(env, job, units)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]

    def cum(file_end: str, func: str, own: bool = False) -> float:
        return sum(v[2] if own else v[3] for (f, _, fn), v in stats.items() if f.endswith(file_end) and fn == func)

    total = cum("metarl/core/rollout.py", "run_units_here")
    return {"profiled_s": total,
            "env_step_share": cum("metarl/envs/metaworld.py", "step") / total,
            "env_reset_share": cum("metarl/envs/metaworld.py", "reset") / total,
            "policy_share": cum("metarl/core/nn.py", "step") / total,
            "episode_loop_own_share": cum("metarl/core/rollout.py", "_episode", own=True) / total}


def sampler_ab(bench, tasks, agent, rounds: int) -> dict:
    from metarl.envs import TaskVectorEnv
    from metarl.training.sampler import Sampler

    vecs = {c: TaskVectorEnv(dataclasses.replace(bench.env_factory, reset_cache=c), len(tasks), 2)
            for c in (False, True)}
    try:
        rates: dict[bool, list[float]] = {False: [], True: []}
        balance: dict[bool, list[float]] = {False: [], True: []}
        identical = True
        for vec in vecs.values():
            for w in range(3):
                Sampler(vec, 500).sample(agent, tasks, agent.initial_task_state(len(tasks)), 2,
                                         np.random.default_rng(100 + w))
        for r in range(rounds):
            batches = {}
            for cached, vec in vecs.items():
                t0 = time.perf_counter()
                batch, _ = Sampler(vec, 500).sample(agent, tasks, agent.initial_task_state(len(tasks)), 2,
                                                    np.random.default_rng(r))
                rates[cached].append(batch.env_steps / (time.perf_counter() - t0))
                assert vec.last_call is not None
                balance[cached].append(vec.last_call.balance_efficiency)
                batches[cached] = batch
            identical &= all(np.array_equal(getattr(batches[False], f), getattr(batches[True], f))
                             for f in ("obs", "actions", "rewards", "successes"))
        return {"full_resets_steps_per_s": rates[False], "replayed_resets_steps_per_s": rates[True],
                "full_resets_median": statistics.median(rates[False]),
                "replayed_resets_median": statistics.median(rates[True]),
                "speedup": statistics.median(rates[True]) / statistics.median(rates[False]),
                "balance_efficiency_full": statistics.median(balance[False]),
                "balance_efficiency_replayed": statistics.median(balance[True]),
                "batches_identical": identical}
    finally:
        for vec in vecs.values():
            vec.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampler_efficiency"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
    from metarl.envs import make_benchmark
    from metarl.training.run import git_commit
    from throughput import _tasks

    bench = make_benchmark("ML10", seed=0)
    tasks = _tasks(bench)
    agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=len(tasks)), bench.obs_dim, bench.act_dim)
    resets = reset_costs(bench, tasks)
    print("resets done", flush=True)
    worker = worker_efficiency(bench, tasks, agent)
    print("worker done", flush=True)
    shares = profile_shares(bench, tasks, agent)
    ab = sampler_ab(bench, tasks, agent, args.rounds)
    out = {"cores": os.cpu_count(), "resets": resets, "worker": worker, "profile": shares, "sampler_2_workers": ab,
           "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
           "git_commit": git_commit(), "load_average_at_end": os.getloadavg()}
    path = Path(args.out)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    full = sum(r["full_reset_ms"] for r in resets.values())
    replay = sum(r["replayed_reset_ms"] for r in resets.values())
    episode = sum(r["episode_500_steps_ms"] for r in resets.values())
    rows = "\n".join(f"| {n} | {r['full_reset_ms']:.2f} | {r['replayed_reset_ms']:.3f} | {r['episode_500_steps_ms']:.1f} | "
                     f"{100 * r['full_reset_ms'] / r['episode_500_steps_ms']:.1f}% |" for n, r in resets.items())
    path.with_suffix(".md").write_text(
        f"# Sampler efficiency on ML10, {os.cpu_count()} cores\n\n"
        f"## Reset cost per class\n\n| class | full reset (ms) | replayed reset (ms) | 500 env steps (ms) | "
        f"full reset / episode |\n|---|---|---|---|---|\n{rows}\n\n"
        f"All ten classes: a full reset is {100 * full / episode:.1f}% of a 500-step episode's env time, "
        f"a replayed one {100 * replay / episode:.2f}%.\n\n"
        f"## One worker (in-process episode loop, 20 one-episode units, real MAML policy)\n\n"
        f"Against the single-env tight loop on one core ({worker['limit_per_core_steps_per_s']:,.0f} steps/s): "
        f"{worker['full_resets_over_limit']:.3f} with full resets, {worker['replayed_resets_over_limit']:.3f} "
        f"with replayed resets.\n\n"
        f"Where its time goes (cProfile, replayed resets): env.step {100 * shares['env_step_share']:.1f}%, reset "
        f"{100 * shares['env_reset_share']:.2f}%, policy {100 * shares['policy_share']:.1f}%, the episode loop's own "
        f"lines {100 * shares['episode_loop_own_share']:.1f}%.\n\n"
        f"## Sampler, 2 worker processes, 40 one-episode units per call\n\n"
        f"Median of {args.rounds} interleaved calls: {ab['full_resets_median']:,.0f} steps/s with full resets, "
        f"{ab['replayed_resets_median']:,.0f} with replayed resets ({ab['speedup']:.3f}x); balance efficiency "
        f"{ab['balance_efficiency_full']:.3f} / {ab['balance_efficiency_replayed']:.3f}; batches identical: "
        f"{ab['batches_identical']}.\n\nCommand: `{out['command']}` at {out['git_commit']}. Load average at the "
        f"end: {out['load_average_at_end'][0]:.2f}.\n")
    print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
