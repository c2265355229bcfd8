"""2-D point navigation (the MAML paper's toy task), in NumPy, for fast tests.

The agent starts at the origin; each task is a goal it does not observe, drawn
uniformly from [-0.5, 0.5]^2 ("square", the MAML paper's setting) or on the
upper half of the circle of radius 0.5 ("semicircle", a one-parameter family as
in PEARL's point-robot tasks). Actions in [-1, 1]^2 move the
point by 0.1 * action; the reward is minus the distance to the goal ("dense"),
or 1 within GOAL_RADIUS (0.2) of it and 0 elsewhere ("sparse": a goal found in one
episode of a trial can be reached faster in the next only by remembering it), and
a step succeeds when the point is within 0.1 of the goal.
"""
from __future__ import annotations

import numpy as np

from metarl.core.types import Task

OBS_DIM = 2
ACT_DIM = 2
STEP_SIZE = 0.1
SUCCESS_RADIUS = 0.1
GOAL_RADIUS = 0.2  # the sparse reward's
REWARDS = ("dense", "sparse")


GOAL_SHAPES = ("square", "semicircle")


def make_tasks(n: int, seed: int, split: str, shape: str = "square") -> list[Task]:
    offset = {"train": 0, "test": 1_000_003}[split]
    rng = np.random.default_rng(seed + offset)
    if shape == "square":
        goals = rng.uniform(-0.5, 0.5, size=(n, 2))
    elif shape == "semicircle":
        angle = rng.uniform(0, np.pi, size=n)
        goals = 0.5 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    else:
        raise ValueError(f"unknown goal shape {shape!r}; allowed: {', '.join(GOAL_SHAPES)}")
    return [Task("point", i, goals[i].copy()) for i in range(n)]


class PointEnv:
    """One toy task slot: same interface as metarl.envs.metaworld.MetaWorldEnv."""

    obs_dim = OBS_DIM
    act_dim = ACT_DIM

    def __init__(self, max_episode_steps: int, reward: str = "dense"):
        if reward not in REWARDS:
            raise ValueError(f"unknown toy reward {reward!r}; allowed: {', '.join(REWARDS)}")
        self.max_episode_steps = max_episode_steps
        self.sparse = reward == "sparse"
        self.goal = np.zeros(2)
        self.pos = np.zeros(2)
        self.t = 0

    def set_task(self, task: Task) -> None:
        self.goal = np.asarray(task.payload, dtype=np.float64)

    def seed(self, seed: int) -> None:  # deterministic dynamics: nothing to seed
        pass

    def reset(self) -> np.ndarray:
        self.pos = np.zeros(2)
        self.t = 0
        return self.pos.copy()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        if self.t >= self.max_episode_steps:
            raise RuntimeError("step past the horizon without reset")
        self.t += 1
        self.pos = self.pos + STEP_SIZE * np.clip(action, -1.0, 1.0)
        dist = float(np.linalg.norm(self.pos - self.goal))
        reward = float(dist < GOAL_RADIUS) if self.sparse else -dist
        return self.pos.copy(), reward, dist < SUCCESS_RADIUS

    def sim_warnings(self) -> int:
        return 0

    def close(self) -> None:
        pass
