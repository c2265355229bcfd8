"""The MetaAgent protocol: one sampler and one evaluator serve every algorithm.

Adaptation is "act on a new task, then update a per-task state from what was
seen", repeated:

    state = agent.initial_task_state(n_tasks)
    episodes, state = sampler.sample(agent, tasks, state, n_episodes, rng)
    state = agent.adapt(state, episodes)

The per-task state is opaque to everyone but the agent (MAML: adapted
parameters; RL2: hidden state; PEARL: context and posterior), but it must be a
pytree of tensors with a leading task dimension so that a vector env can slice it
across its worker processes.

Two optional verbs:
- `actor()` returns what the sampler's workers act with (picklable, on the CPU,
  with `act` and, if needed, `observe`); default: the agent itself.
- `observe(task_state, action, reward, done)` is called after every env step
  (RL2 feeds the previous action, reward and episode end back to its GRU).
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
from torch import Tensor

from metarl.types import EpisodeBatch, Task

TaskState = Any


class SamplerLike(Protocol):
    horizon: int  # steps per episode

    def sample(self, agent: "MetaAgent", tasks: Sequence[Task], task_state: TaskState,
               n_episodes: int, rng: np.random.Generator,
               deterministic: bool = False) -> tuple[EpisodeBatch, TaskState]: ...


class MetaAgent(Protocol):
    meta_batch: int   # task slots the sampler needs
    act_dim: int      # size of the exploration noise the sampler draws per step

    def initial_task_state(self, n_tasks: int) -> TaskState: ...

    def act(self, obs: Tensor, task_state: TaskState, *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, TaskState]:
        """obs [S, D] -> actions [S, A]; `noise` is standard normal [S, A] (None: deterministic)."""

    def adapt(self, task_state: TaskState, episodes: EpisodeBatch) -> TaskState: ...

    def train_iteration(self, sampler: SamplerLike, tasks: Sequence[Task],
                        rng: np.random.Generator) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
