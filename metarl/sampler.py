"""Drive a TaskVectorEnv with agent.act and return an EpisodeBatch."""
from __future__ import annotations

from typing import Sequence

import time

import numpy as np
import torch

from metarl.types import EpisodeBatch, Task


class Sampler:
    """Runs `n_episodes` consecutive episodes on every task slot, all slots in
    lock-step, with one batched policy call per step."""

    def __init__(self, vec_env, horizon: int):
        self.vec_env = vec_env
        self.horizon = horizon
        self.env_steps = 0
        self.sim_warnings = 0
        self.sample_seconds = 0.0

    @property
    def n_slots(self) -> int:
        return self.vec_env.n_slots

    def sample(self, agent, tasks: Sequence[Task], task_state, n_episodes: int,
               rng: np.random.Generator, deterministic: bool = False):
        t0 = time.perf_counter()
        s, t = len(tasks), self.horizon
        if s > self.n_slots:
            raise ValueError(f"{s} tasks for {self.n_slots} sampler slots")
        seeds = rng.integers(0, 2**31 - 1, size=s)
        self.vec_env.set_tasks(list(tasks), seeds.tolist())
        obs_buf = next_buf = act_buf = None
        rew = np.zeros((s, n_episodes, t), np.float32)
        suc = np.zeros((s, n_episodes, t), bool)
        for m in range(n_episodes):
            obs = self.vec_env.reset()
            if obs_buf is None:
                obs_buf = np.zeros((s, n_episodes, t, obs.shape[-1]), np.float32)
                next_buf = np.zeros_like(obs_buf)
            for k in range(t):
                with torch.no_grad():
                    action, task_state = agent.act(torch.as_tensor(obs, dtype=torch.float32),
                                                   task_state, deterministic=deterministic)
                action = action.cpu().numpy()
                if act_buf is None:
                    act_buf = np.zeros((s, n_episodes, t, action.shape[-1]), np.float32)
                obs_buf[:, m, k] = obs
                act_buf[:, m, k] = action
                obs, r, success, warnings = self.vec_env.step(action)
                next_buf[:, m, k] = obs
                rew[:, m, k] = r
                suc[:, m, k] = success
            self.sim_warnings += int(warnings.sum())
        self.env_steps += s * n_episodes * t
        self.sample_seconds += time.perf_counter() - t0
        return EpisodeBatch(obs_buf, act_buf, rew, next_buf, suc, list(tasks)), task_state
