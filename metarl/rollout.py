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
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils import _pytree as pytree

from metarl.types import Actor, TaskEnv, TaskState


@dataclass
class Rollout:
    obs: np.ndarray        # [S, M, T, D]
    actions: np.ndarray    # [S, M, T, A]
    rewards: np.ndarray    # [S, M, T]
    next_obs: np.ndarray   # [S, M, T, D]
    successes: np.ndarray  # [S, M, T]
    sim_warnings: np.ndarray  # [S, M] episodes discarded (and re-collected) for MuJoCo warnings


def slot_noise(seeds: Sequence[int] | np.ndarray, n_episodes: int, horizon: int, act_dim: int) -> np.ndarray:
    """[S, M, T, A] standard-normal exploration noise, one independent stream per slot seed."""
    return np.stack([np.random.default_rng([int(s), 7]).standard_normal((n_episodes, horizon, act_dim))
                     for s in seeds]).astype(np.float32)


def _episode(envs: list[TaskEnv], actor: Actor, task_state: TaskState, horizon: int, noise: np.ndarray | None,
             end_on_success: bool = False) -> tuple[tuple[np.ndarray, ...], np.ndarray, TaskState]:
    """One episode on every env: obs, actions, rewards, next_obs, successes [S, T, ...],
    MuJoCo warnings raised during it [S], and the task state after it.

    With `end_on_success` a slot's episode ends at its first successful step (the step is
    recorded, the episode-end flag goes to `observe` for that slot): its env is not stepped
    again, its later steps stay zero in the buffers and its task state is frozen until every
    slot has ended; the next episode starts for all slots together."""
    s = len(envs)
    observe = getattr(actor, "observe", None)
    obs = np.stack([env.reset() for env in envs])
    w0 = np.array([env.sim_warnings() for env in envs])
    obs_buf = np.zeros((s, horizon, obs.shape[-1]), np.float32)
    next_buf = np.zeros_like(obs_buf)
    act_buf: np.ndarray | None = None
    rew = np.zeros((s, horizon), np.float32)
    suc = np.zeros((s, horizon), bool)
    live = np.ones(s, bool)
    for k in range(horizon):
        eps = None if noise is None else torch.from_numpy(np.ascontiguousarray(noise[:, k]))
        before = task_state
        with torch.no_grad():
            action_t, task_state = actor.act(torch.as_tensor(obs, dtype=torch.float32), task_state,
                                             deterministic=noise is None, noise=eps)
        action = action_t.cpu().numpy()
        if act_buf is None:
            act_buf = np.zeros((s, horizon, action.shape[-1]), np.float32)
        bad = ~np.isfinite(action).all(axis=1) & live
        if bad.any():
            raise FloatingPointError(f"non-finite actions for slots {np.flatnonzero(bad).tolist()}")
        if live.all():
            obs_buf[:, k] = obs
            act_buf[:, k] = action
            out = [env.step(a) for env, a in zip(envs, action)]
            obs = np.stack([o[0] for o in out])
            next_buf[:, k] = obs
            rew[:, k] = [o[1] for o in out]
            suc[:, k] = [o[2] for o in out]
        else:
            idx = np.flatnonzero(live)
            obs_buf[idx, k] = obs[idx]
            act_buf[idx, k] = action[idx]
            for i in idx:
                o, r, sc = envs[i].step(action[i])[:3]
                obs[i], rew[i, k], suc[i, k] = o, r, sc
            next_buf[idx, k] = obs[idx]
        if observe is not None:
            done: bool | np.ndarray = k == horizon - 1  # [S] flags when episodes end on success
            if end_on_success:
                done = np.where(live & suc[:, k], True, done)
            with torch.no_grad():
                task_state = observe(task_state, torch.from_numpy(action), torch.from_numpy(rew[:, k]), done)
        if end_on_success:
            if not live.all():
                task_state = _keep(before, task_state, live)
            live &= ~suc[:, k]
            if not live.any():
                break
    warn = np.array([env.sim_warnings() for env in envs]) - w0
    assert act_buf is not None  # horizon >= 1
    return (obs_buf, act_buf, rew, next_buf, suc), warn, task_state


def _keep(old: TaskState, new: TaskState, live: np.ndarray) -> TaskState:
    """`new` for the live slots, `old` for the others (a pytree with a leading slot dimension)."""
    mask = torch.as_tensor(live)

    def pick(o: Any, n: Any) -> Any:
        if not torch.is_tensor(n):
            return n
        m = mask.reshape(-1, *([1] * (n.dim() - 1)))
        return torch.where(m, n, o)
    return pytree.tree_map(pick, old, new)


def take_slots(state: TaskState, idx: np.ndarray) -> TaskState:
    """The per-task state of slots `idx` (a pytree of tensors with a leading slot dimension)."""
    return pytree.tree_map(lambda x: x[torch.as_tensor(idx)] if torch.is_tensor(x) else x, state)


def _put(state: TaskState, idx: np.ndarray, part: TaskState) -> TaskState:
    def put(full: Any, p: Any) -> Any:
        if not torch.is_tensor(full):
            return full
        out = full.clone()
        out[torch.as_tensor(idx)] = p
        return out
    return pytree.tree_map(put, state, part)


def run_episodes(envs: list[TaskEnv], actor: Actor, task_state: TaskState, n_episodes: int, horizon: int,
                 noise: np.ndarray | None, max_recollect: int = 3,
                 end_on_success: bool = False) -> tuple[Rollout, TaskState]:
    """An episode during which MuJoCo raised a warning (the simulation went unstable) is
    discarded and collected again on that slot, from the task state it started with and with
    the slot's noise shifted in time, up to `max_recollect` times; `sim_warnings` counts the
    discarded episodes. `end_on_success`: see `_episode`."""
    s = len(envs)
    fields: list[list[np.ndarray]] = [[] for _ in range(5)]
    discarded = np.zeros((s, n_episodes), np.int64)
    for m in range(n_episodes):
        start_state = task_state
        ep_noise = None if noise is None else noise[:, m]
        data, warn, task_state = _episode(envs, actor, task_state, horizon, ep_noise, end_on_success)
        for r in range(1, max_recollect + 1):
            bad = np.flatnonzero(warn > 0)
            if bad.size == 0:
                break
            discarded[bad, m] += 1
            sub_noise = None if noise is None else np.roll(noise[bad, m], r, axis=1)
            sub, sub_warn, sub_state = _episode([envs[i] for i in bad], actor, take_slots(start_state, bad),
                                                horizon, sub_noise, end_on_success)
            for full, part in zip(data, sub):
                full[bad] = part
            warn = warn.copy()
            warn[bad] = sub_warn
            task_state = _put(task_state, bad, sub_state)
        for f, d in zip(fields, data):
            f.append(d)
    obs, act, rew, nxt, suc = (np.stack(f, axis=1) for f in fields)
    return Rollout(obs, act, rew, nxt, suc, discarded), task_state
