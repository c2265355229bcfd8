"""Where held-out episodes end relative to the hidden goal of an ML1 reach-style task: the evaluation
protocol of `metarl.training.evaluation.evaluate` (the same episodes, the same generator draws), plus
the hand's distance to the goal at each episode's last step. Used by benchmarks/goal_distance.py."""
from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from metarl.core.types import ConfigError, EpisodeBatch, Task
from metarl.training.evaluation import evaluate
from metarl.training.sampler import Sampler

if TYPE_CHECKING:
    from metarl.agents.base import MetaAgent


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
