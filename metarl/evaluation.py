"""Meta-test protocol: K adaptation rounds on held-out tasks -> AdaptationCurve[task, round]."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from metarl.types import AdaptationCurve, EpisodeBatch, Task


def select_tasks(tasks: Sequence[Task], per_class: int) -> list[Task]:
    """The first `per_class` tasks of each env class (all of them when per_class == 0)."""
    if per_class <= 0:
        return list(tasks)
    seen: dict[str, int] = {}
    out = []
    for t in tasks:
        if seen.get(t.name, 0) < per_class:
            seen[t.name] = seen.get(t.name, 0) + 1
            out.append(t)
    return out


def evaluate(agent, sampler, tasks: Sequence[Task], rounds: int, episodes_per_round: int,
             rng: np.random.Generator, deterministic: bool = False,
             on_progress: Callable[[int], None] | None = None,
             on_batch: Callable[[slice, int, EpisodeBatch], None] | None = None) -> AdaptationCurve:
    """Round 0 acts with the agent's initial per-task state; after each round the
    agent adapts on that round's episodes. Tasks run in chunks of the sampler's slots.
    `on_batch(rows, k, batch)` sees each round's episodes (`rows`: their tasks' positions in `tasks`)."""
    tasks = list(tasks)
    success = np.zeros((len(tasks), rounds + 1))
    returns = np.zeros((len(tasks), rounds + 1))
    for start in range(0, len(tasks), sampler.n_slots):
        chunk = tasks[start:start + sampler.n_slots]
        state = agent.initial_task_state(len(chunk))
        for k in range(rounds + 1):
            batch, state = sampler.sample(agent, chunk, state, episodes_per_round, rng, deterministic)
            rows = slice(start, start + len(chunk))
            success[rows, k] = batch.episode_success().mean(axis=1)
            returns[rows, k] = batch.episode_returns().mean(axis=1)
            if on_batch is not None:
                on_batch(rows, k, batch)
            if on_progress is not None:
                on_progress(batch.env_steps)
            if k < rounds:
                state = agent.adapt(state, batch)
    return AdaptationCurve(tasks, success, returns)
