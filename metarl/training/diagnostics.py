"""Where held-out episodes end relative to the hidden goal of an ML1 reach-style task: the evaluation
protocol of `metarl.training.evaluation.evaluate` (the same episodes, the same generator draws), plus
the hand's distance to the goal at each episode's last step. Used by benchmarks/goal_distance.py and
benchmarks/pearl_inference.py, which load their checkpoint with `load_ml1`."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from metarl.core.types import ConfigError, EpisodeBatch, Task
from metarl.training.evaluation import evaluate
from metarl.training.sampler import Sampler

if TYPE_CHECKING:
    from metarl.agents.base import MetaAgent
    from metarl.envs import Benchmark


def load_ml1(checkpoint_path: str, seed: int, agent: str | None = None
             ) -> tuple[Path, Benchmark, Sampler, MetaAgent[Any]]:
    """The ML1 checkpoint at `checkpoint_path` (a file or a run dir) built on the CPU for a diagnostic:
    (the checkpoint file, benchmark, sampler, agent with the checkpoint's weights), torch seeded with
    `seed` and held to one thread. ConfigError when the run is not ML1 (or not of agent `agent`)."""
    import torch

    from metarl.agents import AGENTS
    from metarl.training import checkpoint, config
    from metarl.training.build import build

    ckpt, payload = checkpoint.resolve(checkpoint_path, registry=AGENTS)
    cfg = config.from_dict(payload["config"], registry=AGENTS)
    if cfg.env.benchmark != "ML1":
        raise ConfigError(f"needs an ML1 run, got env.benchmark={cfg.env.benchmark!r}")
    if agent is not None and cfg.agent.name != agent:
        raise ConfigError(f"needs an ML1 {agent} run, got agent.name={cfg.agent.name!r}")
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    bench, sampler, built = build(cfg, torch.device("cpu"))
    built.load_state_dict(payload["agent"])
    return ckpt, bench, sampler, built


def goal_of(task: Task) -> np.ndarray:
    data = pickle.loads(task.payload.data)
    if "rand_vec" not in data:
        raise ConfigError(f"task {task.label} has no rand_vec: not a Meta-World goal task")
    return np.asarray(data["rand_vec"], dtype=np.float64)[-3:]


def measure(agent: MetaAgent[Any], sampler: Sampler, tasks: Sequence[Task], rounds: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`metarl.training.evaluation.evaluate` with one episode per round, plus where each episode ends:
    success [N, rounds + 1] (any step within the success radius), the hand's distance to the
    goal at the episode's last step [N, rounds + 1] and the episode return [N, rounds + 1]."""
    goals = np.stack([goal_of(t) for t in tasks])
    final = np.zeros((len(tasks), rounds + 1))

    def record(rows: slice, k: int, batch: EpisodeBatch) -> None:
        final[rows, k] = np.linalg.norm(batch.next_obs[:, 0, -1, :3] - goals[rows], axis=-1)

    curve = evaluate(agent, sampler, tasks, rounds, 1, rng, on_batch=record)
    return curve.success == 1.0, final, curve.returns
