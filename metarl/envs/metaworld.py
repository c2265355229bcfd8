"""One Meta-World task slot: a cached env per class, set_task, seeding, horizon.

Traps handled here (metaworld 3.1.1, mujoco 3.3.0): `reset(seed=...)` ignores
the seed, so seeding goes through `env.seed`; stepping past the env's own
500-step limit raises, so the horizon is capped at that limit; a non-finite
action makes MuJoCo reset silently, so actions are checked before stepping and
the warning counters are read after.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from metarl.envs.resetcache import ResetCache
from metarl.core.types import Task

META_WORLD_MAX_STEPS = 500


class MetaWorldEnv:
    obs_dim = 39
    act_dim = 4

    def __init__(self, classes: dict[str, type], max_episode_steps: int, reset_cache: bool = False):
        if not 1 <= max_episode_steps <= META_WORLD_MAX_STEPS:
            raise ValueError(
                f"env.max_episode_steps must be in [1, {META_WORLD_MAX_STEPS}], got {max_episode_steps}")
        self.classes = classes
        self.max_episode_steps = max_episode_steps
        # metaworld's env classes (SawyerXYZEnv subclasses) carry no type information
        self._envs: dict[str, Any] = {}
        self.env: Any = None
        self._seed: int | None = None
        # metarl.envs.resetcache: later resets of a task restore what its first reset produced
        self.reset_cache = ResetCache() if reset_cache else None
        self._task_key: tuple[str, bytes] | None = None

    def set_task(self, task: Task) -> None:
        env = self._envs.get(task.name)
        if env is None:
            env = self.classes[task.name]()
            self._envs[task.name] = env
        env.set_task(task.payload)
        self.env = env
        self._task_key = (task.name, bytes(task.payload.data))
        if self._seed is not None:
            env.seed(self._seed)

    def seed(self, seed: int) -> None:
        self._seed = int(seed)
        if self.env is not None:
            self.env.seed(self._seed)

    def reset(self) -> np.ndarray:
        if self.reset_cache is not None and self._task_key is not None:
            obs, _ = self.reset_cache.reset(self.env, self._task_key)
        else:
            obs, _ = self.env.reset()
        return obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        if not np.all(np.isfinite(action)):
            raise FloatingPointError(f"non-finite action {action!r} refused before reaching MuJoCo")
        obs, reward, _terminated, _truncated, info = self.env.step(np.clip(action, -1.0, 1.0))
        return obs, float(reward), bool(info["success"] > 0)

    def sim_warnings(self) -> int:
        """Total MuJoCo warning count (instability, bad qacc, ...) of the current env."""
        return int(self.env.data.warning.number.sum())

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()
