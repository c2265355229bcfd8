"""Per-task transition buffers for off-policy agents (PEARL's replay and context buffers).

One ring buffer per task, all tasks in preallocated NumPy arrays [n_tasks, capacity, ...], so
the memory a run needs is known before anything is allocated: `bytes_needed` sizes them and
`check_ram` refuses, with one line naming the config field, what the machine cannot hold.
`state()` / `load()` turn a buffer into tensors for weights-only checkpoints and back.

Besides the EpisodeBatch fields (FIELDS) each transition keeps `prev_rewards`, the reward of the
previous step of its episode (its own reward at the episode's first step; see `previous_rewards`),
so a context can hold the change of the reward along the move a transition made. Checkpoints
written before that field existed load with prev_rewards = rewards (no change).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from metarl.core.machine import available_ram_bytes
from metarl.core.types import ConfigError, EpisodeBatch

GIB = 1024 ** 3
FIELDS = ("obs", "actions", "rewards", "next_obs")   # an EpisodeBatch's transition fields
BUFFER_FIELDS = FIELDS + ("prev_rewards",)           # what a buffer keeps per transition


def previous_rewards(rewards: np.ndarray) -> np.ndarray:
    """rewards [..., T] of whole episodes -> the reward of each step's previous step [..., T]; at
    the first step (no previous one) the step's own reward, so r_t - r_{t-1} is 0 there."""
    out = np.empty_like(rewards)
    out[..., 0] = rewards[..., 0]
    out[..., 1:] = rewards[..., :-1]
    return out


class TaskRingBuffers:
    """One ring buffer per task, all in preallocated arrays [n_tasks, capacity, ...]."""

    def __init__(self, n_tasks: int, capacity: int, obs_dim: int, act_dim: int):
        self.n_tasks, self.capacity = n_tasks, capacity
        self.arrays = {
            "obs": np.zeros((n_tasks, capacity, obs_dim), np.float32),
            "actions": np.zeros((n_tasks, capacity, act_dim), np.float32),
            "rewards": np.zeros((n_tasks, capacity), np.float32),
            "next_obs": np.zeros((n_tasks, capacity, obs_dim), np.float32),
            "prev_rewards": np.zeros((n_tasks, capacity), np.float32),
        }
        self.ptr = np.zeros(n_tasks, np.int64)
        self.size = np.zeros(n_tasks, np.int64)

    @staticmethod
    def bytes_needed(n_tasks: int, capacity: int, obs_dim: int, act_dim: int) -> int:
        return 4 * n_tasks * capacity * (2 * obs_dim + act_dim + 2) + 16 * n_tasks

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values()) + self.ptr.nbytes + self.size.nbytes

    def clear(self, task: int) -> None:
        self.ptr[task] = 0
        self.size[task] = 0

    def add(self, task: int, data: dict[str, np.ndarray]) -> None:
        """data[field] for each of BUFFER_FIELDS: [n, ...] transitions in order; the oldest are
        overwritten when full."""
        n = len(data["rewards"])
        c = self.capacity
        start = int(self.ptr[task])
        if n > c:  # only the newest `c` survive
            data = {k: v[n - c:] for k, v in data.items()}
            start, n = (start + n - c) % c, c
        pos = (start + np.arange(n)) % c
        for k in BUFFER_FIELDS:
            self.arrays[k][task, pos] = data[k]
        self.ptr[task] = (start + n) % c
        self.size[task] = min(int(self.size[task]) + n, c)

    def sample(self, tasks: np.ndarray, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """n transitions per task (uniform, with replacement): field -> [len(tasks), n, ...]."""
        idx = rng.integers(0, self.size[tasks][:, None], size=(len(tasks), n))
        return {k: a[tasks[:, None], idx] for k, a in self.arrays.items()}

    def state(self) -> dict[str, Any]:
        """Arrays up to the fullest task's size, as tensors sharing memory with the buffers
        where no copy is needed (serialise before adding more data)."""
        m = int(self.size.max()) if self.n_tasks else 0
        out = {k: torch.from_numpy(a if m == self.capacity else np.ascontiguousarray(a[:, :m]))
               for k, a in self.arrays.items()}
        out["ptr"] = torch.from_numpy(self.ptr.copy())
        out["size"] = torch.from_numpy(self.size.copy())
        return out

    def load(self, state: dict[str, Any]) -> None:
        """A `state()`; one without prev_rewards (written before the field existed) loads with
        prev_rewards = rewards."""
        m = state["obs"].shape[1]
        for k, a in self.arrays.items():
            a.fill(0)
            a[:, :m] = _numpy(state[k if k in state else "rewards"])
        self.ptr[:] = _numpy(state["ptr"])
        self.size[:] = _numpy(state["size"])


class ReplayAndContext:
    """An off-policy meta-learner's per-task data (PEARL): a replay buffer (ring of
    `replay_capacity` transitions a task) and a context buffer (the task's most recent
    episodes, `context_capacity` transitions, cleared when the task is collected on again),
    allocated together for `n_tasks` tasks with episodes of `horizon` steps."""

    def __init__(self, n_tasks: int, horizon: int, replay_capacity: int, context_capacity: int,
                 obs_dim: int, act_dim: int):
        self.n_tasks, self.horizon = n_tasks, horizon
        self.replay = TaskRingBuffers(n_tasks, replay_capacity, obs_dim, act_dim)
        self.context = TaskRingBuffers(n_tasks, context_capacity, obs_dim, act_dim)
        self.summary = ""  # `allocate`: what was taken, in one line for the agent's notes

    @staticmethod
    def bytes_needed(n_tasks: int, replay_capacity: int, context_capacity: int, obs_dim: int, act_dim: int) -> int:
        return (TaskRingBuffers.bytes_needed(n_tasks, replay_capacity, obs_dim, act_dim)
                + TaskRingBuffers.bytes_needed(n_tasks, context_capacity, obs_dim, act_dim))

    @classmethod
    def allocate(cls, n_tasks: int, horizon: int, replay_capacity: int, context_capacity: int, obs_dim: int,
                 act_dim: int, field: str = "agent.replay_capacity") -> "ReplayAndContext":
        """Check the RAM (refusal names `field`, the replay capacity's config field), allocate, and
        say in `summary` how much was taken."""
        need = cls.check_fits(n_tasks, replay_capacity, context_capacity, obs_dim, act_dim, field)
        out = cls(n_tasks, horizon, replay_capacity, context_capacity, obs_dim, act_dim)
        out.summary = (f"buffers: replay + context for {n_tasks} training tasks: {need / GIB:,.3f} GiB "
                       f"({replay_capacity:,} + {context_capacity:,} transitions per task{ram_note()})")
        return out

    @classmethod
    def check_fits(cls, n_tasks: int, replay_capacity: int, context_capacity: int, obs_dim: int, act_dim: int,
                   field: str = "agent.replay_capacity") -> int:
        """The bytes `n_tasks` tasks need; ConfigError naming `field` if the RAM cannot hold them."""
        need = cls.bytes_needed(n_tasks, replay_capacity, context_capacity, obs_dim, act_dim)
        check_ram(need, field, f"lower {field} (now {replay_capacity:,} transitions per task, {n_tasks} training "
                               f"task{'s' if n_tasks != 1 else ''})")
        return need

    @property
    def nbytes(self) -> int:
        return self.replay.nbytes + self.context.nbytes

    def add(self, positions: np.ndarray, batch: EpisodeBatch, to_context: bool) -> None:
        """Slot i's episodes to task positions[i]'s replay buffer (and context buffer)."""
        add_episodes([self.replay, self.context] if to_context else [self.replay], positions, batch)

    def state(self) -> dict[str, Any]:
        return {"n_tasks": self.n_tasks, "horizon": self.horizon,
                "replay": self.replay.state(), "context": self.context.state()}

    def load(self, state: dict[str, Any]) -> None:
        self.replay.load(state["replay"])
        self.context.load(state["context"])


def episode_transitions(batch: EpisodeBatch) -> dict[str, np.ndarray]:
    """Each slot's episodes of `batch` ([S, M, T, ...]) as one sequence of transitions in order:
    field -> [S, M * T, ...] for each of BUFFER_FIELDS (prev_rewards from `previous_rewards`)."""
    s, m, t = batch.rewards.shape
    fields = {k: np.asarray(getattr(batch, k)) for k in FIELDS}
    fields["prev_rewards"] = previous_rewards(fields["rewards"])
    return {k: v.reshape(s, m * t, *v.shape[3:]) for k, v in fields.items()}


def add_episodes(buffers: list[TaskRingBuffers], positions: np.ndarray, batch: EpisodeBatch) -> None:
    """Append slot i's episodes of `batch` ([S, M, T, ...], in order) to task positions[i] of each buffer."""
    flat = episode_transitions(batch)
    for i, p in enumerate(positions):
        data = {k: v[i] for k, v in flat.items()}
        for buf in buffers:
            buf.add(int(p), data)


def check_ram(need: int, field: str, advice: str) -> None:
    """ConfigError "<field>: buffers need X GiB but only Y GiB of RAM is available; <advice>"
    when `need` bytes exceed the RAM available now (nothing is checked where that is unknown)."""
    avail = available_ram_bytes()
    if avail is not None and need > avail:
        raise ConfigError(f"{field}: buffers need {need / GIB:,.2f} GiB but only {avail / GIB:,.2f} GiB of "
                          f"RAM is available; {advice}")


def ram_note() -> str:
    """"; X GiB of RAM available" for sizing messages, or "" where unknown."""
    avail = available_ram_bytes()
    return f"; {avail / GIB:,.1f} GiB of RAM available" if avail is not None else ""


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    return x.numpy() if torch.is_tensor(x) else np.asarray(x)
