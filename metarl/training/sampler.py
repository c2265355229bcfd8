"""Drive a TaskVectorEnv with the agent's actor and return an EpisodeBatch."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch.utils import _pytree as pytree

from metarl.core.rollout import Job, assemble, plan_units
from metarl.core.types import EpisodeBatch, StateT, Task

if TYPE_CHECKING:
    from metarl.agents.base import MetaAgent
    from metarl.envs.vector import TaskVectorEnv


def episode_lengths(successes: np.ndarray, end_on_success: bool) -> np.ndarray:
    """[..., T] success flags -> [...] steps each episode took: up to and including the first
    success when episodes end on success, else the horizon."""
    t = successes.shape[-1]
    if not end_on_success:
        return np.full(successes.shape[:-1], t, np.int64)
    first = np.argmax(successes, axis=-1)
    return np.where(successes.any(axis=-1), first + 1, t).astype(np.int64)


class Sampler:
    """Runs `n_episodes` episodes on every task: cut into units (metarl.core.rollout.plan_units) that
    the vector env hands to its workers as they free up. An actor whose `episodes_independent`
    is true (its act never changes the task state) gets one unit per episode, any other one
    unit per task (a trial)."""

    def __init__(self, vec_env: TaskVectorEnv, horizon: int):
        self.vec_env = vec_env
        self.horizon = horizon
        self.env_steps = 0
        self.sim_warnings = 0
        self.sample_seconds = 0.0

    @property
    def n_slots(self) -> int:
        return self.vec_env.n_slots

    def sample(self, agent: MetaAgent[StateT], tasks: Sequence[Task], task_state: StateT, n_episodes: int,
               rng: np.random.Generator, deterministic: bool = False,
               end_on_success: bool = False) -> tuple[EpisodeBatch, StateT]:
        """All randomness (slot seeds, exploration noise) comes from `rng`. With `end_on_success`
        an episode ends at its first successful step (its later steps are zeros in the batch;
        `env_steps` counts only the steps taken)."""
        t0 = time.perf_counter()
        s = len(tasks)
        if s > self.n_slots:
            raise ValueError(f"{s} tasks for {self.n_slots} sampler slots")
        seeds = rng.integers(0, 2**31 - 1, size=s)
        actor = agent.actor()
        # acting happens on the CPU (the actor is a CPU copy when the learner is on CUDA)
        task_state = pytree.tree_map(lambda x: x.cpu() if torch.is_tensor(x) else x, task_state)
        units = plan_units(tasks, seeds.tolist(), n_episodes, actor.episodes_independent)
        job = Job(actor, task_state, self.horizon, int(agent.act_dim), deterministic, end_on_success)
        ro, task_state = assemble(units, self.vec_env.run_units(job, units), task_state)
        self.env_steps += int(episode_lengths(ro.successes, end_on_success).sum())
        self.sim_warnings += int(ro.sim_warnings.sum())
        self.sample_seconds += time.perf_counter() - t0
        return EpisodeBatch(ro.obs, ro.actions, ro.rewards, ro.next_obs, ro.successes, list(tasks),
                            {"sim_warnings": ro.sim_warnings}), task_state
