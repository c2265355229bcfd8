"""The MetaAgent protocol: one sampler and one evaluator serve every algorithm.

Adaptation is "act on a new task, then update a per-task state from what was
seen", repeated:

    state = agent.initial_task_state(n_tasks)
    episodes, state = sampler.sample(agent, tasks, state, n_episodes, rng)
    state = agent.adapt(state, episodes)

The per-task state is opaque to everyone but the agent (MAML: adapted
parameters; RL2: hidden state; PEARL: context and posterior).
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
from torch import Tensor

from metarl.types import EpisodeBatch, Task

TaskState = Any


class SamplerLike(Protocol):
    def sample(self, agent: "MetaAgent", tasks: Sequence[Task], task_state: TaskState,
               n_episodes: int, rng: np.random.Generator,
               deterministic: bool = False) -> tuple[EpisodeBatch, TaskState]: ...


class MetaAgent(Protocol):
    meta_batch: int

    def initial_task_state(self, n_tasks: int) -> TaskState: ...

    def act(self, obs: Tensor, task_state: TaskState, *, deterministic: bool) -> tuple[Tensor, TaskState]: ...

    def adapt(self, task_state: TaskState, episodes: EpisodeBatch) -> TaskState: ...

    def train_iteration(self, sampler: SamplerLike, tasks: Sequence[Task],
                        rng: np.random.Generator) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
