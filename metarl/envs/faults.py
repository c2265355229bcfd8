"""Fault injection for tests: env factories whose worker process dies, slows down or goes unstable on purpose."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from metarl.core.types import Actor, Task, TaskEnv


@dataclass(frozen=True)
class DieAtStepFactory:
    """Wraps an env factory; the process running one of its envs SIGKILLs itself when that
    env reaches `at_step` steps. With `marker` set, only the first env to get there dies
    (the marker file records it); with marker=None, every time."""

    inner: Callable[[], TaskEnv]
    at_step: int
    marker: str | None = None

    def __call__(self):
        return _DieAtStep(self.inner(), self.at_step, self.marker)


class _DieAtStep:
    def __init__(self, env: TaskEnv, at_step: int, marker: str | None):
        self.env, self.at_step, self.marker, self.steps = env, at_step, marker, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        self.steps += 1
        if self.steps == self.at_step:
            first = True
            if self.marker is not None:
                try:
                    os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    first = False
            if first:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.env.step(action)


@dataclass(frozen=True)
class UnstableEpisodeFactory:
    """Wraps an env factory; each env reports a MuJoCo warning during its `episode`-th
    episode (counting resets from 1) -- the first time only -- as if the simulation had
    gone unstable."""

    inner: Callable[[], TaskEnv]
    episode: int

    def __call__(self):
        return _Unstable(self.inner(), self.episode)


class _Unstable:
    def __init__(self, env: TaskEnv, episode: int):
        self.env, self.episode, self.resets, self.fired = env, episode, 0, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self) -> np.ndarray:
        self.resets += 1
        return self.env.reset()

    def sim_warnings(self) -> int:
        if self.resets == self.episode and not self.fired:
            self._armed = getattr(self, "_armed", 0) + 1
            if self._armed == 2:  # read at the end of the episode
                self.fired = True
                return self.env.sim_warnings() + 1
        return self.env.sim_warnings()


@dataclass(frozen=True)
class SlowSetTaskFactory:
    """Wraps an env factory; each env's `set_task` takes `delay_s` seconds longer, so a caller
    waits on its worker past the 0.2 s liveness poll."""

    inner: Callable[[], TaskEnv]
    delay_s: float

    def __call__(self):
        return _SlowSetTask(self.inner(), self.delay_s)


class _SlowSetTask:
    def __init__(self, env: TaskEnv, delay_s: float):
        self.env, self.delay_s = env, delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def set_task(self, task: Task) -> None:
        time.sleep(self.delay_s)
        self.env.set_task(task)


@dataclass(frozen=True)
class SlowWorkerFactory:
    """Wraps an env factory; the first process to build an env from it (the `marker` file
    records which) gets an env whose every step takes `delay_s` seconds longer: one slow worker."""

    inner: Callable[[], TaskEnv]
    delay_s: float
    marker: str

    def __call__(self):
        env = self.inner()
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return env
        return _SlowStep(env, self.delay_s)


class _SlowStep:
    def __init__(self, env: TaskEnv, delay_s: float):
        self.env, self.delay_s = env, delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        time.sleep(self.delay_s)
        return self.env.step(action)


class NaNActor(Actor):
    """An actor whose every action is NaN (acting must refuse it before MuJoCo sees it)."""

    def __init__(self, act_dim: int):
        self.act_dim = act_dim

    def act(self, obs: Any, task_state: Any, *, deterministic: bool, noise: Any = None) -> tuple[Any, Any]:
        import torch
        return torch.full((obs.shape[0], self.act_dim), float("nan")), task_state
