"""Sampling throughput against worker count, multiprocess and Ray backends, ML10 train tasks.

    python benchmarks/scaling.py [--workers 1 2 3 4] [--episodes 10] [--backends multiprocess ray]

`Sampler.sample` calls as MAML-TRPO makes them on ML10 (meta-batch 20: two goals of each of
the 10 train classes, `--episodes` 500-step episodes per task, the real MAML policy 2x100, fast
path on), per row the median of `--repeats` timed calls (its steps/s and balance), after a warm-up call (which also measures the classes' step costs that order
the units longest first), beside the single-env tight-loop limit (env.step only, random actions,
upstream and fast-path Meta-World code) times the cores. Balance efficiency = (sum of the workers'
busy time, from per-unit timings) / (workers x wall time of the call). Rows with more workers
than cores are marked `oversubscribed`. Writes benchmarks/results/scaling.{json,md,png}.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
META_BATCH = 20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--backends", nargs="+", default=["multiprocess", "ray"], choices=["multiprocess", "ray"])
    p.add_argument("--episodes", type=int, default=10, help="episodes per task (the ML10 preset: 10)")
    p.add_argument("--steps", type=int, default=500, help="episode length")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per row (the median is reported)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from metarl.training.run import git_commit

    from throughput import _tasks, measure_limit

    from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
    from metarl.envs import TaskVectorEnv, fastpath, make_benchmark
    from metarl.training.sampler import Sampler

    cores = os.cpu_count() or 1
    bench = make_benchmark("ML10", seed=0, max_episode_steps=args.steps)
    tasks = _tasks(bench)
    limits = {}
    for name, fast in (("limit", False), ("limit_fast_path", True)):
        env = dataclasses.replace(bench.env_factory, fast_path=fast)()
        measure_limit(env, tasks, 2)  # builds one env per class
        limits[name] = max(measure_limit(env, tasks, args.steps) for _ in range(2))  # x cores inside
        env.close()
        print(f"{name:16s} {limits[name]:8.0f} steps/s ({cores} cores)", flush=True)
    fastpath.disable()

    torch.manual_seed(0)
    agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=META_BATCH, hidden_sizes=(100, 100)), bench.obs_dim, bench.act_dim)
    rows = []
    for backend in args.backends:
        for workers in args.workers:
            with TaskVectorEnv(bench.env_factory, META_BATCH, workers, backend=backend) as vec:
                vec.prepare(tasks)
                sampler = Sampler(vec, args.steps)
                rng = np.random.default_rng(0)
                sampler.sample(agent, tasks, agent.initial_task_state(META_BATCH), args.episodes, rng)  # warm-up
                calls = []
                for _ in range(args.repeats):
                    steps0 = sampler.env_steps
                    t0 = time.perf_counter()
                    sampler.sample(agent, tasks, agent.initial_task_state(META_BATCH), args.episodes, rng)
                    wall = time.perf_counter() - t0
                    assert vec.last_call is not None
                    calls.append(((sampler.env_steps - steps0) / wall, vec.last_call))
                calls.sort(key=lambda c: c[0])
                rate, stats = calls[len(calls) // 2]  # the median call
                row = {"backend": backend, "workers": workers, "steps_per_s": rate,
                       "steps_per_s_calls": [c[0] for c in calls],
                       "balance_efficiency": stats.balance_efficiency, "oversubscribed": workers > cores,
                       "units": sum(stats.units_by_worker.values()),
                       "units_by_worker": sorted(stats.units_by_worker.values())}
            rows.append(row)
            print(f"{backend:12s} W={workers:2d} {row['steps_per_s']:8.0f} steps/s  balance "
                  f"{row['balance_efficiency']:.3f}{'  (more workers than cores)' if row['oversubscribed'] else ''}",
                  flush=True)

    out = {"cores": cores, "limit_steps_per_s": limits["limit"],
           "limit_fast_path_steps_per_s": limits["limit_fast_path"], "rows": rows, "repeats": args.repeats,
           "meta_batch": META_BATCH, "episodes_per_task": args.episodes, "steps_per_episode": args.steps,
           "policy": "MAML-TRPO GaussianMLPPolicy 2x100 (NumPy actor)", "fast_path": True,
           "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
           "git_commit": git_commit(), "load_average_at_end": os.getloadavg()}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    _write_md(path.with_suffix(".md"), out)
    _plot(path.with_suffix(".png"), out)
    return 0


def _write_md(path: Path, out: dict) -> None:
    cores, fast = out["cores"], out["limit_fast_path_steps_per_s"]
    lines = [f"# Sampling vs workers, ML10 train tasks, {cores} cores",
             "",
             f"Per row the median of {out.get('repeats', 1)} sample calls, each: meta-batch {out['meta_batch']} (2 goals x 10 classes), {out['episodes_per_task']} "
             f"episodes of {out['steps_per_episode']} steps per task = {out['meta_batch'] * out['episodes_per_task']} "
             f"one-episode units, real MAML policy, fast path on. Tight-loop limit (one env, env.step only) x "
             f"{cores} cores: {out['limit_steps_per_s']:,.0f} steps/s upstream, {fast:,.0f} with the fast path.",
             "",
             "| backend | workers | steps/s | / fast-path limit | balance efficiency | units per worker | note |",
             "|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        note = "more workers than cores" if r["oversubscribed"] else ""
        lines.append(f"| {r['backend']} | {r['workers']} | {r['steps_per_s']:,.0f} | {r['steps_per_s'] / fast:.2f} | "
                     f"{r['balance_efficiency']:.3f} | {', '.join(map(str, r['units_by_worker']))} | {note} |")
    lines += ["",
              "Balance efficiency = (sum over workers of the seconds spent in their units) / (workers x wall "
              "time of the call). With more workers than cores the workers share cores, so their busy "
              "time includes waiting for a core and the figure shows only how evenly the units were "
              "spread, not speed.",
              "",
              "No 16-core (GPU) machine was available in this session: `scaling_16core.json` was not "
              "produced, and no figure here is extrapolated to more cores.",
              "",
              f"Command: `{out['command']}` (run under runs/timed.sh: the training queue paused). "
              f"At commit {out['git_commit']}. Load average at the end: {out['load_average_at_end'][0]:.2f}.", ""]
    path.write_text("\n".join(lines))


def _plot(path: Path, out: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cores = out["cores"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    for backend, marker in (("multiprocess", "o"), ("ray", "s")):
        rs = [r for r in out["rows"] if r["backend"] == backend]
        if rs:
            ax.plot([r["workers"] for r in rs], [r["steps_per_s"] for r in rs], marker=marker, label=backend)
            bx.plot([r["workers"] for r in rs], [r["balance_efficiency"] for r in rs], marker=marker, label=backend)
    ws = sorted({r["workers"] for r in out["rows"]})
    per_core = out["limit_fast_path_steps_per_s"] / cores
    ax.plot(ws, [per_core * min(w, cores) for w in ws], "k--", label="tight loop (fast path) x min(workers, cores)")
    ax.plot(ws, [out["limit_steps_per_s"] / cores * min(w, cores) for w in ws], "k:",
            label="tight loop (upstream) x min(workers, cores)")
    for a in (ax, bx):
        a.axvspan(cores + 0.5, max(ws) + 0.5, color="0.9", zorder=0)
        a.set_xlabel(f"workers (shaded: more than the {cores} cores)")
        a.set_xticks(ws)
    ax.set_ylabel("env steps/s")
    ax.legend(fontsize=7)
    bx.set_ylabel("balance efficiency")
    bx.set_ylim(0, 1.05)
    bx.legend(fontsize=7)
    fig.suptitle(f"ML10 sampling, MAML policy, {cores} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
