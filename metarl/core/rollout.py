"""The episode loop shared by every TaskVectorEnv backend, and the work units it runs.

A `sample` call is cut into **units** (`plan_units`): one whole episode of one task slot when
the actor declares `episodes_independent` (MAML, Reptile: the task state -- adapted
parameters -- does not change while acting, so any (task, episode) pair stands alone), else
one whole trial of a slot (RL2's hidden state and PEARL's posterior carry across the
episodes of a task). Every backend -- in-process, worker processes, Ray actors -- runs a unit
with `run_unit` on one env, alone, and the backends hand units to whichever worker is free.

Each unit carries its randomness: the env is seeded from the slot's seed (a derived seed for
an episode unit past the first) and its exploration noise is its slice of the slot's stream
(`slot_noise`), and its policy calls have batch size 1. So a unit's numbers do not depend on
which worker, process or machine ran it, nor on what that worker ran before: the batch is bit
identical whatever the backend, the number of workers or the order in which they finish.

After every step, an actor that overrides `observe(task_state, action, reward, done)` folds
what happened into its per-task state (RL2 feeds the previous action, reward and episode-end
flag back into its recurrent policy).
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Generic, Sequence

import numpy as np
import torch
from torch.utils import _pytree as pytree

from metarl.core.types import Actor, StateT, Task, TaskEnv, TaskState

NOISE_STREAM = 7  # the noise stream of a slot seed s is default_rng([s, NOISE_STREAM])


@dataclass
class Rollout:
    obs: np.ndarray        # [S, M, T, D]
    actions: np.ndarray    # [S, M, T, A]
    rewards: np.ndarray    # [S, M, T]
    next_obs: np.ndarray   # [S, M, T, D]
    successes: np.ndarray  # [S, M, T]
    sim_warnings: np.ndarray  # [S, M] episodes discarded (and re-collected) for MuJoCo warnings


@dataclass(frozen=True)
class Job(Generic[StateT]):
    """What all units of one sample call share: sent once per worker per call."""

    actor: Actor[StateT]
    task_state: StateT  # every slot's state at the start of the call, on the CPU
    horizon: int
    act_dim: int
    deterministic: bool
    end_on_success: bool = False
    max_recollect: int = 3


@dataclass(frozen=True)
class Unit:
    """Episodes `first_episode .. first_episode + n_episodes - 1` of slot `slot`."""

    index: int            # position in the call's list of units
    slot: int
    task: Task
    seed: int             # the slot's seed
    first_episode: int
    n_episodes: int
    total_episodes: int   # episodes of the slot in the call

    def env_seed(self) -> int:
        """The slot's seed for its first episode; a seed derived from it for a later episode unit."""
        if self.first_episode == 0:
            return self.seed
        return int(np.random.SeedSequence([self.seed, self.first_episode]).generate_state(1)[0] % (2**31 - 1))


@dataclass
class UnitResult:
    index: int
    data: tuple[np.ndarray, ...]  # obs, actions, rewards, next_obs, successes: [n_episodes, T, ...]
    sim_warnings: np.ndarray      # [n_episodes]
    # the slot's task state after the unit (leading dim 1); None for an actor whose episodes are
    # independent (its state never changes): not sent back, the call's input state is the answer
    state: TaskState | None
    seconds: float                # time the worker spent on it
    worker: str                   # host:pid that ran it


def slot_noise(seeds: Sequence[int] | np.ndarray, n_episodes: int, horizon: int, act_dim: int) -> np.ndarray:
    """[S, M, T, A] standard-normal exploration noise, one independent stream per slot seed."""
    return np.stack([np.random.default_rng([int(s), NOISE_STREAM]).standard_normal((n_episodes, horizon, act_dim))
                     for s in seeds]).astype(np.float32)


def unit_noise(unit: Unit, horizon: int, act_dim: int) -> np.ndarray:
    """[n_episodes, T, A]: the unit's episodes' slice of its slot's noise stream (a Generator
    fills arrays in order, so a prefix of the stream is the stream's prefix)."""
    end = unit.first_episode + unit.n_episodes
    stream = np.random.default_rng([int(unit.seed), NOISE_STREAM]).standard_normal((end, horizon, act_dim))
    return stream[unit.first_episode:].astype(np.float32)


def take_slots(state: StateT, idx: np.ndarray | Sequence[int]) -> StateT:
    """The per-task state of slots `idx` (a pytree of tensors with a leading slot dimension)."""
    index = torch.as_tensor(np.asarray(idx, np.int64))
    return pytree.tree_map(lambda x: x[index] if torch.is_tensor(x) else x, state)


def plan_units(tasks: Sequence[Task], seeds: Sequence[int], n_episodes: int,
               episodes_independent: bool) -> list[Unit]:
    units: list[Unit] = []
    for slot, (task, seed) in enumerate(zip(tasks, seeds)):
        parts = [(m, 1) for m in range(n_episodes)] if episodes_independent else [(0, n_episodes)]
        for first, n in parts:
            units.append(Unit(len(units), slot, task, int(seed), first, n, n_episodes))
    return units


def _episode(env: TaskEnv, actor: Actor[StateT], task_state: StateT, horizon: int, noise: np.ndarray | None,
             end_on_success: bool) -> tuple[tuple[np.ndarray, ...], int, StateT]:
    """One episode on one env: obs, actions, rewards, next_obs, successes [T, ...], the MuJoCo
    warnings raised during it and the task state after it. With `end_on_success` the episode
    ends at its first successful step (recorded, with the episode-end flag going to `observe`);
    its later steps stay zero.

    The action of step k comes from one of two functions chosen once per episode: an actor
    that never changes its state (`episodes_independent`, no `observe`) and offers `bind` lays
    out this slot's weights once and acts on NumPy rows; any other actor goes through
    `act` (and `observe`) on one-row tensors."""
    # the protocol's default `observe` keeps the state: no call per step
    observe = None if type(actor).observe is Actor.observe else actor.observe
    obs = env.reset()
    w0 = env.sim_warnings()
    obs_buf = np.zeros((horizon, obs.shape[-1]), np.float32)
    next_buf = np.zeros_like(obs_buf)
    act_buf: np.ndarray | None = None
    rew = np.zeros(horizon, np.float32)
    suc = np.zeros(horizon, bool)
    state = task_state
    bound = actor.bind(task_state) if observe is None and actor.episodes_independent else None
    if bound is not None:
        policy = bound

        def action_at(k: int) -> np.ndarray:
            return policy(obs_buf[k], None if noise is None else noise[k])
    else:
        eps_all = None if noise is None else torch.from_numpy(np.ascontiguousarray(noise))

        def action_at(k: int) -> np.ndarray:
            nonlocal state
            action_t, state = actor.act(torch.from_numpy(obs_buf[k:k + 1]), state, deterministic=noise is None,
                                        noise=None if eps_all is None else eps_all[k:k + 1])
            return action_t.cpu().numpy()[0]
    with torch.no_grad():
        for k in range(horizon):
            obs_buf[k] = obs
            action = action_at(k)
            if act_buf is None:
                act_buf = np.zeros((horizon, action.shape[-1]), np.float32)
            act_buf[k] = action
            if not np.isfinite(act_buf[k]).all():
                raise FloatingPointError(f"non-finite action {action!r} at step {k}")
            obs, r, success = env.step(act_buf[k])
            next_buf[k] = obs
            rew[k] = r
            suc[k] = success
            if observe is not None:
                done = k == horizon - 1 or (end_on_success and bool(success))
                state = observe(state, torch.from_numpy(act_buf[k:k + 1]), torch.from_numpy(rew[k:k + 1]), done)
            if end_on_success and success:
                break
    assert act_buf is not None  # horizon >= 1
    return (obs_buf, act_buf, rew, next_buf, suc), env.sim_warnings() - w0, state


def run_unit(env: TaskEnv, job: Job[Any], unit: Unit, worker: str | None = None) -> UnitResult:
    """Run one unit on `env`. An episode during which MuJoCo raised a warning (the simulation
    went unstable) is discarded and collected again from the task state it started with and
    with its noise shifted in time, up to `job.max_recollect` times; `sim_warnings` counts the
    discarded episodes."""
    t0 = time.perf_counter()
    env.seed(unit.env_seed())
    env.set_task(unit.task)
    noise = None if job.deterministic else unit_noise(unit, job.horizon, job.act_dim)
    state = take_slots(job.task_state, [unit.slot])
    episodes = []
    discarded = np.zeros(unit.n_episodes, np.int64)
    for m in range(unit.n_episodes):
        start = state
        ep_noise = None if noise is None else noise[m]
        data, warn, state = _episode(env, job.actor, start, job.horizon, ep_noise, job.end_on_success)
        for r in range(1, job.max_recollect + 1):
            if warn <= 0:
                break
            discarded[m] += 1
            shifted = None if ep_noise is None else np.roll(ep_noise, r, axis=0)
            data, warn, state = _episode(env, job.actor, start, job.horizon, shifted, job.end_on_success)
        episodes.append(data)
    fields = tuple(np.stack(f) for f in zip(*episodes))
    return UnitResult(unit.index, fields, discarded, None if job.actor.episodes_independent else state,
                      time.perf_counter() - t0,
                      worker or f"{socket.gethostname()}:{os.getpid()}")


def assemble(units: Sequence[Unit], results: Sequence[UnitResult], task_state: StateT) -> tuple[Rollout, StateT]:
    """The call's Rollout [S, M, T, ...] and every slot's task state after its last episode
    (`task_state`, the call's input, for slots whose results carry none: it did not change)."""
    n_slots = max(u.slot for u in units) + 1
    n_episodes = units[0].total_episodes
    by_index = {r.index: r for r in results}
    first = by_index[units[0].index]
    bufs = [np.zeros((n_slots, n_episodes, *a.shape[1:]), a.dtype) for a in first.data]
    warnings = np.zeros((n_slots, n_episodes), np.int64)
    last: dict[int, tuple[int, TaskState | None]] = {}
    for u in units:
        r = by_index[u.index]
        span = slice(u.first_episode, u.first_episode + u.n_episodes)
        for buf, part in zip(bufs, r.data):
            buf[u.slot, span] = part
        warnings[u.slot, span] = r.sim_warnings
        if u.slot not in last or last[u.slot][0] < u.first_episode:
            last[u.slot] = (u.first_episode, r.state)
    states = [last[s][1] if last[s][1] is not None else take_slots(task_state, [s]) for s in range(n_slots)]
    state = pytree.tree_map(lambda *xs: torch.cat(xs) if torch.is_tensor(xs[0]) else xs[0], states[0], *states[1:])
    obs, act, rew, nxt, suc = bufs
    return Rollout(obs, act, rew, nxt, suc, warnings), state


def run_units_here(env: TaskEnv, job: Job, units: Sequence[Unit]) -> list[UnitResult]:
    """The in-process backend: every unit on `env`, one after the other, with one torch thread
    (as in the workers: a kernel's rounding may depend on its thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [run_unit(env, job, u, "main") for u in units]
    finally:
        torch.set_num_threads(threads)


