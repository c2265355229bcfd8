"""Fault injection for tests: env factories whose worker process dies on purpose."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class DieAtStepFactory:
    """Wraps an env factory; the process running one of its envs SIGKILLs itself when that
    env reaches `at_step` steps. With `marker` set, only the first env to get there dies
    (the marker file records it); with marker=None, every time."""

    inner: Callable
    at_step: int
    marker: str | None = None

    def __call__(self):
        return _DieAtStep(self.inner(), self.at_step, self.marker)


class _DieAtStep:
    def __init__(self, env, at_step: int, marker: str | None):
        self.env, self.at_step, self.marker, self.steps = env, at_step, marker, 0

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, action):
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
