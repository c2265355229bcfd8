"""Seconds per PEARL gradient step (SAC + encoder) on each device, same process.

    python benchmarks/pearl_update.py [--devices cpu cuda] [--steps 200] [--out FILE]

For each preset (configs/ml1_reach_pearl.yaml and ml10_pearl_cpu.yaml: 2x256 networks; and
configs/ml10_pearl.yaml: the paper's 3x300; each with its own batch and context sizes) it fills
the replay and context buffers of 50 tasks with random transitions, runs 20 warm-up steps and
then times `--steps` gradient steps, and writes seconds per step and the ratio to the CPU to
benchmarks/results/pearl_update[_cuda].json. No environment is stepped: this measures the
learner alone (what `time/update_s` in a PEARL run's progress.csv is made of; an iteration takes
its gradient steps, agent.grad_steps_per_iteration or agent.utd_ratio x its env steps, times this).
Results written before issue 27 timed the earlier ml1_reach_pearl.yaml (now ml1_reach_pearl_h150.yaml:
batch 128, context 100).
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

PRESETS = ("ml1_reach_pearl", "ml10_pearl_cpu", "ml10_pearl")
OBS_DIM, ACT_DIM, N_TASKS, HORIZON, FILL = 39, 4, 50, 150, 5_000


def time_steps(preset: str, device: str, steps: int) -> float:
    from metarl.agents.pearl import PEARL
    from metarl.agents import AGENTS
    from metarl.training import config

    # all 50 filled tasks kept (agent.train_tasks_per_class only changes which tasks a run keeps)
    cfg = config.load(ROOT / "configs" / f"{preset}.yaml", ["agent.replay_capacity=10000",
                                                           "agent.train_tasks_per_class=0"],
                      device=device, registry=AGENTS)
    torch.manual_seed(0)
    agent = PEARL(cfg.agent, OBS_DIM, ACT_DIM, device, n_train_tasks=N_TASKS, horizon=HORIZON)
    rng = np.random.default_rng(0)
    from metarl.core.types import Task
    agent._tasks = [Task(f"class{i % 10}", i, None) for i in range(N_TASKS)]  # for task_sampling: class_balanced
    buffers = agent.buffers
    assert buffers is not None
    for buf, n in ((buffers.replay, FILL), (buffers.context, buffers.context.capacity)):
        for t in range(N_TASKS):
            buf.add(t, {"obs": rng.standard_normal((n, OBS_DIM), np.float32),
                        "actions": rng.uniform(-1, 1, (n, ACT_DIM)).astype(np.float32),
                        "rewards": rng.uniform(0, 10, n).astype(np.float32),
                        "next_obs": rng.standard_normal((n, OBS_DIM), np.float32),
                        "prev_rewards": rng.uniform(0, 10, n).astype(np.float32)})
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(20):
        agent._update(rng)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        agent._update(rng)
    sync()
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out")
    args = p.parse_args(argv)
    devices = [d for d in args.devices if not (d.startswith("cuda") and not torch.cuda.is_available())]
    if devices != args.devices:
        print("pearl_update: no CUDA device, timing the CPU only", file=sys.stderr)
    out = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cores": os.cpu_count(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "steps": args.steps, "seconds_per_step": {}}
    for preset in PRESETS:
        row = {d: time_steps(preset, d, args.steps) for d in devices}
        if "cpu" in row:
            row.update({f"cpu_over_{d}": row["cpu"] / row[d] for d in devices if d != "cpu"})
        out["seconds_per_step"][preset] = row
        print(preset, json.dumps(row), flush=True)
    out["command"] = "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / (
        "pearl_update_cuda.json" if any(d.startswith("cuda") for d in devices) else "pearl_update.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
