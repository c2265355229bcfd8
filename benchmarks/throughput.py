"""Sampling throughput on ML10 train tasks (meta-batch 20), metarl against its peers.

    python benchmarks/throughput.py [--repeats 3] [--steps-per-env 500]

Measures, in one process and one run, env steps per second of:
  limit              one upstream Meta-World env stepped in a tight loop (random actions), times
                     the number of cores
  limit_fast_path    the same with the fast path (metarl/envs/fastpath.py: bit-identical replacements
                     of Meta-World hot spots, on by default)
  limit_concurrent_fast_path  one such tight loop in each of `cores` processes at the same time,
                     summed: what the cores give when all of them step at once (shared caches
                     and memory bandwidth), the ceiling for any multi-process sampler
  metarl             TaskVectorEnv (one worker per core) driven by the Sampler with the real
                     MAML-TRPO policy network, default settings (fast path on, replayed resets:
                     metarl/envs/resetcache.py), measured after 3 warm-up calls, as in training where
                     every task has been reset before
  metarl_iteration   the same sampler on the call an ML10 MAML-TRPO iteration makes: 10 episodes
                     per task (200 one-episode units, 100k steps) instead of 1 (20 units); the
                     20-unit call loses more to its start and to the last units' tail
  metarl_upstream_env  the same as metarl with `env.fast_path: false` (upstream Meta-World code)
  metaworld_async    gym.make_vec("Meta-World/ML10-train", vector_strategy="async")
  metaworld_sync     the same with vector_strategy="sync"
  sb3_subproc        stable-baselines3 SubprocVecEnv over the same 20 tasks (the `baselines` extra)
Every vectorized variant acts with the same policy network (batched over the 20 envs) and
runs whole episodes of `steps-per-env` steps. Reports the median of the repeats and writes
benchmarks/results/throughput.{json,md}.
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
META_BATCH = 20


def _policy(obs_dim=39, act_dim=4):
    from metarl.core.nn import GaussianMLPPolicy
    torch.manual_seed(0)
    return GaussianMLPPolicy(obs_dim, act_dim, (100, 100))


def _act(policy, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        mean, log_std = policy(torch.as_tensor(obs, dtype=torch.float32))
        return (mean + log_std.exp() * torch.randn_like(mean)).clamp(-1, 1).numpy()


def _tasks(bench):
    """Two goals of each of the 10 ML10 train classes."""
    seen: dict[str, int] = {}
    out = []
    for t in bench.train_tasks:
        if seen.get(t.name, 0) < META_BATCH // 10:
            seen[t.name] = seen.get(t.name, 0) + 1
            out.append(t)
    return out


def measure_limit(env, tasks, steps: int) -> float:
    """Only env.step is timed (set_task and reset are not)."""
    rng = np.random.default_rng(0)
    n, elapsed = 0, 0.0
    for task in tasks[::2]:  # one goal per class, `steps` steps each
        env.set_task(task)
        env.reset()
        actions = rng.uniform(-1, 1, (steps, 4))
        t0 = time.perf_counter()
        for a in actions:
            env.step(a)
        elapsed += time.perf_counter() - t0
        n += steps
    return n / elapsed * os.cpu_count()


def _concurrent_worker(barrier, queue, steps: int) -> None:
    torch.set_num_threads(1)
    from metarl.envs import make_benchmark
    bench = make_benchmark("ML10", seed=0, max_episode_steps=steps)
    tasks = _tasks(bench)
    env = dataclasses.replace(bench.env_factory, fast_path=True)()
    measure_limit(env, tasks, 2)  # warm-up: builds one env per class
    barrier.wait()
    queue.put(measure_limit(env, tasks, steps) / os.cpu_count())  # this process's steps/s


def measure_limit_concurrent(steps: int) -> float:
    """The fast-path tight loop in one process per core, all at once: summed steps/s."""
    import multiprocessing as mp
    ctx = mp.get_context("forkserver")
    n = os.cpu_count() or 1
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_concurrent_worker, args=(barrier, queue, steps)) for _ in range(n)]
    for p in procs:
        p.start()
    total = sum(queue.get(timeout=600) for _ in procs)
    for p in procs:
        p.join()
    return total


def measure_metarl(vec, sampler, agent, tasks, rng, episodes: int = 1) -> float:
    t0 = time.perf_counter()
    batch, _ = sampler.sample(agent, tasks, agent.initial_task_state(len(tasks)), episodes, rng)
    return batch.env_steps / (time.perf_counter() - t0)


def _gym_loop(envs, policy, steps: int) -> float:
    envs.call("sample_tasks")  # metaworld's vector envs assert on reset() before a task is drawn
    obs, _ = envs.reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        obs, *_ = envs.step(_act(policy, obs))
    return steps * META_BATCH / (time.perf_counter() - t0)


def _sb3_env_fn(cls, task):
    def make():
        import gymnasium as gym

        class OneTask(gym.Wrapper):
            def reset(self, **kw):
                return self.env.reset()

        env = cls()
        env.set_task(task.payload)
        return OneTask(env)
    return make


def _sb3_loop(venv, policy, steps: int) -> float:
    obs = venv.reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        obs, *_ = venv.step(_act(policy, obs))
    return steps * META_BATCH / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps-per-env", type=int, default=500)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "throughput"))
    p.add_argument("--skip", nargs="*", default=[], help="variants to skip (metaworld_async, sb3_subproc, ...)")
    args = p.parse_args(argv)
    if "sb3_subproc" not in args.skip:
        try:
            from stable_baselines3.common.vec_env import SubprocVecEnv
        except ImportError:
            print("throughput: error: the sb3_subproc variant needs stable-baselines3: "
                  "pip install -c constraints.txt -e '.[baselines]' (or --skip sb3_subproc)", file=sys.stderr)
            return 2
    torch.set_num_threads(1)

    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World/* vector envs)

    from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
    from metarl.envs import TaskVectorEnv, fastpath, make_benchmark
    from metarl.training.run import git_commit
    from metarl.training.sampler import Sampler

    bench = make_benchmark("ML10", seed=0, max_episode_steps=args.steps_per_env)
    tasks = _tasks(bench)
    policy = _policy()
    results: dict[str, list[float]] = {}

    def run(name, fn):
        if name in args.skip:
            return
        vals = [fn() for _ in range(args.repeats)]
        results[name] = vals
        print(f"{name:18s} {statistics.median(vals):8.0f} steps/s  ({', '.join(f'{v:.0f}' for v in vals)})",
              flush=True)

    # the fast path patches classes process-wide: each limit variant builds its env from a
    # factory that switches it on or off, and steps only while that holds
    for name, fast in (("limit", False), ("limit_fast_path", True)):
        if name in args.skip:
            continue
        env = dataclasses.replace(bench.env_factory, fast_path=fast)()
        measure_limit(env, tasks, 2)  # warm-up: builds one env per class
        run(name, lambda: measure_limit(env, tasks, args.steps_per_env))
    fastpath.disable()  # upstream again in this process (the peers below step in it)
    run("limit_concurrent_fast_path", lambda: measure_limit_concurrent(args.steps_per_env))

    agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=META_BATCH), bench.obs_dim, bench.act_dim)
    agent.policy.load_state_dict(policy.state_dict())
    for name, factory in (("metarl", bench.env_factory),
                          ("metarl_upstream_env", dataclasses.replace(bench.env_factory, fast_path=False))):
        if name in args.skip:
            continue
        with TaskVectorEnv(factory, META_BATCH, args.workers) as vec:
            sampler = Sampler(vec, args.steps_per_env)
            rng = np.random.default_rng(0)
            for _ in range(3):  # warm-up: build the envs, and a first (full) reset of each task in each worker
                sampler.sample(agent, tasks, agent.initial_task_state(META_BATCH), 1, rng)
            run(name, lambda: measure_metarl(vec, sampler, agent, tasks, rng))
            if name == "metarl":
                run("metarl_iteration", lambda: measure_metarl(vec, sampler, agent, tasks, rng, 10))

    for strategy in ("async", "sync"):
        name = f"metaworld_{strategy}"
        if name in args.skip:
            continue
        envs = gym.make_vec("Meta-World/ML10-train", vector_strategy=strategy, seed=0, meta_batch_size=META_BATCH)
        try:
            _gym_loop(envs, policy, 10)
            run(name, lambda: _gym_loop(envs, policy, args.steps_per_env))
        finally:
            envs.close()

    if "sb3_subproc" not in args.skip:
        classes = dict(bench.env_factory.classes)
        venv = SubprocVecEnv([_sb3_env_fn(classes[t.name], t) for t in tasks], start_method="forkserver")
        try:
            _sb3_loop(venv, policy, 10)
            run("sb3_subproc", lambda: _sb3_loop(venv, policy, args.steps_per_env))
        finally:
            venv.close()

    med = {k: statistics.median(v) for k, v in results.items()}
    out = {
        "cores": os.cpu_count(), "workers": args.workers, "meta_batch": META_BATCH,
        "steps_per_env": args.steps_per_env, "repeats": args.repeats,
        "limit_steps_per_s": med.get("limit"), "metarl_steps_per_s": med.get("metarl"),
        "metaworld_async_steps_per_s": med.get("metaworld_async"),
        "metaworld_sync_steps_per_s": med.get("metaworld_sync"),
        "limit_fast_path_steps_per_s": med.get("limit_fast_path"),
        "limit_concurrent_fast_path_steps_per_s": med.get("limit_concurrent_fast_path"),
        "metarl_upstream_env_steps_per_s": med.get("metarl_upstream_env"),
        "sb3_subproc_steps_per_s": med.get("sb3_subproc"),
        "metarl_iteration_steps_per_s": med.get("metarl_iteration"),
        "all_repeats": results,
        "git_commit": git_commit(),
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "load_average_at_end": os.getloadavg(),
    }
    if med.get("metarl") and med.get("limit"):
        out["metarl_over_limit"] = med["metarl"] / med["limit"]
    if med.get("metarl") and med.get("limit_fast_path"):
        out["metarl_over_limit_fast_path"] = med["metarl"] / med["limit_fast_path"]
    if med.get("metarl") and med.get("limit_concurrent_fast_path"):
        out["metarl_over_limit_concurrent_fast_path"] = med["metarl"] / med["limit_concurrent_fast_path"]
    for k in ("limit_fast_path", "limit_concurrent_fast_path"):
        if med.get("metarl_iteration") and med.get(k):
            out[f"metarl_iteration_over_{k}"] = med["metarl_iteration"] / med[k]
    if med.get("metarl_upstream_env") and med.get("limit"):
        out["metarl_upstream_env_over_limit"] = med["metarl_upstream_env"] / med["limit"]
    if med.get("metarl") and med.get("metaworld_async"):
        out["metarl_over_metaworld_async"] = med["metarl"] / med["metaworld_async"]
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    rows = "\n".join(f"| {k} | {v:,.0f} |" for k, v in med.items())
    path.with_suffix(".md").write_text(
        f"# Sampling throughput, ML10 train tasks, meta-batch {META_BATCH}, {os.cpu_count()} cores\n\n"
        f"Median of {args.repeats} repeats, episodes of {args.steps_per_env} steps, same policy network "
        f"for every vectorized variant.\n\n| variant | env steps/s |\n|---|---|\n{rows}\n\n"
        f"metarl / limit = {out.get('metarl_over_limit', float('nan')):.2f}; metarl / metaworld async = "
        f"{out.get('metarl_over_metaworld_async', float('nan')):.2f}; metarl / limit_fast_path (the "
        f"sampler's own efficiency, same env code) = {out.get('metarl_over_limit_fast_path', float('nan')):.2f}; metarl / limit_concurrent_fast_path (against "
        f"what the cores give stepping all at once) = {out.get('metarl_over_limit_concurrent_fast_path', float('nan')):.2f}; "
        f"metarl_upstream_env / limit = {out.get('metarl_upstream_env_over_limit', float('nan')):.2f}; "
        f"metarl_iteration (an ML10 MAML-TRPO iteration's call, 10 episodes a task) / limit_fast_path = "
        f"{out.get('metarl_iteration_over_limit_fast_path', float('nan')):.2f}, / limit_concurrent_fast_path = "
        f"{out.get('metarl_iteration_over_limit_concurrent_fast_path', float('nan')):.2f}. "
        f"The fast path is on by default and changes no number (tests/test_fastpath.py). Load average at the end: "
        f"{out['load_average_at_end'][0]:.2f}.\n\nCommand: `{out['command']}` at {out['git_commit']}.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
