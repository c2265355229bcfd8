"""The episode loop shared by every TaskVectorEnv backend.

`run_episodes` steps a list of task-slot envs for `n_episodes` consecutive
episodes of `horizon` steps, with one batched `actor.act` call per step. It
runs in the main process (in-process backend) or inside each worker on that
worker's slots (multiprocess backend): same code, same numbers.

After every step, an actor that defines `observe(task_state, action, reward, done)`
gets to fold what happened into its per-task state (RL2 feeds the previous
action, reward and episode-end flag back into its recurrent policy).

Exploration noise is an input (standard normal, [S, M, T, A], drawn per slot
from the slot's seed), so trajectories do not depend on how slots are grouped
into workers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Rollout:
    obs: np.ndarray        # [S, M, T, D]
    actions: np.ndarray    # [S, M, T, A]
    rewards: np.ndarray    # [S, M, T]
    next_obs: np.ndarray   # [S, M, T, D]
    successes: np.ndarray  # [S, M, T]
    sim_warnings: np.ndarray  # [S, M] MuJoCo warnings raised during each episode


def slot_noise(seeds, n_episodes: int, horizon: int, act_dim: int) -> np.ndarray:
    """[S, M, T, A] standard-normal exploration noise, one independent stream per slot seed."""
    return np.stack([np.random.default_rng([int(s), 7]).standard_normal((n_episodes, horizon, act_dim))
                     for s in seeds]).astype(np.float32)


def run_episodes(envs, actor, task_state, n_episodes: int, horizon: int,
                 noise: np.ndarray | None) -> tuple[Rollout, object]:
    s = len(envs)
    rew = np.zeros((s, n_episodes, horizon), np.float32)
    suc = np.zeros((s, n_episodes, horizon), bool)
    warn = np.zeros((s, n_episodes), np.int64)
    obs_buf = next_buf = act_buf = None
    observe = getattr(actor, "observe", None)
    for m in range(n_episodes):
        obs = np.stack([env.reset() for env in envs])
        w0 = np.array([env.sim_warnings() for env in envs])
        if obs_buf is None:
            obs_buf = np.zeros((s, n_episodes, horizon, obs.shape[-1]), np.float32)
            next_buf = np.zeros_like(obs_buf)
        for k in range(horizon):
            eps = None if noise is None else torch.from_numpy(noise[:, m, k])
            with torch.no_grad():
                action, task_state = actor.act(torch.as_tensor(obs, dtype=torch.float32), task_state,
                                               deterministic=noise is None, noise=eps)
            action = action.cpu().numpy()
            if act_buf is None:
                act_buf = np.zeros((s, n_episodes, horizon, action.shape[-1]), np.float32)
            bad = ~np.isfinite(action).all(axis=1)
            if bad.any():
                raise FloatingPointError(f"non-finite actions for slots {np.flatnonzero(bad).tolist()}")
            obs_buf[:, m, k] = obs
            act_buf[:, m, k] = action
            out = [env.step(a) for env, a in zip(envs, action)]
            obs = np.stack([o[0] for o in out])
            next_buf[:, m, k] = obs
            rew[:, m, k] = [o[1] for o in out]
            suc[:, m, k] = [o[2] for o in out]
            if observe is not None:
                with torch.no_grad():
                    task_state = observe(task_state, torch.from_numpy(action), torch.from_numpy(rew[:, m, k]),
                                         k == horizon - 1)
        warn[:, m] = np.array([env.sim_warnings() for env in envs]) - w0
    return Rollout(obs_buf, act_buf, rew, next_buf, suc, warn), task_state
