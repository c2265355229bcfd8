"""Task distributions: Meta-World ML1 / ML10 / ML45 and the toy point tasks."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from metarl.core.types import ConfigError, Task, TaskEnv

BENCHMARKS = ("ML1", "ML10", "ML45", "toy")


@dataclass(frozen=True)
class EnvFactory:
    """Picklable recipe for one task slot (sent to sampler workers)."""

    kind: str  # "metaworld" | "toy"
    max_episode_steps: int
    classes: tuple[tuple[str, type], ...] = ()
    fast_path: bool = True  # metarl.envs.fastpath: bit-identical replacements of Meta-World hot spots
    reset_cache: bool = True  # metarl.envs.resetcache, with the fast path: replayed resets (off for rendering)
    toy_reward: str = "dense"  # toy: dense | sparse (metarl.envs.toy)

    def __call__(self) -> TaskEnv:
        if self.kind == "metaworld":
            from metarl.envs import fastpath
            if self.fast_path:
                fastpath.enable()
            else:
                fastpath.disable()
        if self.kind == "toy":
            from metarl.envs.toy import PointEnv
            return PointEnv(self.max_episode_steps, self.toy_reward)
        from metarl.envs.metaworld import MetaWorldEnv
        return MetaWorldEnv(dict(self.classes), self.max_episode_steps,
                            reset_cache=self.fast_path and self.reset_cache)


@dataclass(frozen=True)
class Benchmark:
    name: str
    env_name: str | None
    seed: int
    train_tasks: list[Task]
    test_tasks: list[Task]
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    env_factory: Callable[[], TaskEnv]

    def tasks(self, split: str) -> list[Task]:
        if split not in ("train", "test"):
            raise ConfigError(f"split: unknown split {split!r}; allowed: train, test")
        return self.train_tasks if split == "train" else self.test_tasks


def ml1_env_names() -> list[str]:
    import metaworld
    return list(metaworld.ML1.ENV_NAMES)


@functools.lru_cache(maxsize=8)
def _metaworld_benchmark(name: str, env_name: str | None, seed: int) -> Any:  # metaworld.ML1/ML10/ML45
    import metaworld
    if name == "ML1":
        return metaworld.ML1(env_name, seed=seed)
    return {"ML10": metaworld.ML10, "ML45": metaworld.ML45}[name](seed=seed)


def make_benchmark(name: str, env_name: str | None = None, seed: int = 0,
                   max_episode_steps: int | None = None, toy_tasks: int = 40,
                   toy_goals: str = "square", fast_path: bool = True, toy_reward: str = "dense") -> Benchmark:
    """Build a task distribution once per process (ML10 takes ~7 s, ML45 ~24 s).

    ML1 needs `env_name` (e.g. "reach-v3"); its train and test splits hold
    different goals of that env. ML10 / ML45 use Meta-World's official class
    splits. "toy" is the 2-D point-goal distribution.
    """
    if name not in BENCHMARKS:
        raise ConfigError(f"env.benchmark: unknown benchmark {name!r}; allowed: {', '.join(BENCHMARKS)}")
    if name == "toy":
        from metarl.envs import toy
        if toy_goals not in toy.GOAL_SHAPES:
            raise ConfigError(f"env.toy_goals: unknown goal shape {toy_goals!r}; allowed: {', '.join(toy.GOAL_SHAPES)}")
        if toy_reward not in toy.REWARDS:
            raise ConfigError(f"env.toy_reward: unknown toy reward {toy_reward!r}; allowed: {', '.join(toy.REWARDS)}")
        horizon = max_episode_steps or 20
        return Benchmark("toy", None, seed, toy.make_tasks(toy_tasks, seed, "train", toy_goals),
                         toy.make_tasks(toy_tasks, seed, "test", toy_goals), toy.OBS_DIM, toy.ACT_DIM,
                         horizon, EnvFactory("toy", horizon, toy_reward=toy_reward))
    from metarl.envs.metaworld import META_WORLD_MAX_STEPS, MetaWorldEnv
    if name == "ML1":
        allowed = ml1_env_names()
        if env_name not in allowed:
            raise ConfigError(f"env.env_name: unknown {name} env {env_name!r}; allowed: {', '.join(allowed)}")
    elif env_name is not None:
        raise ConfigError(f"env.env_name: must be null for {name} (it fixes its own classes), got {env_name!r}")
    horizon = max_episode_steps or META_WORLD_MAX_STEPS
    if not 1 <= horizon <= META_WORLD_MAX_STEPS:
        raise ConfigError(f"env.max_episode_steps: must be in [1, {META_WORLD_MAX_STEPS}], got {horizon}")
    mw = _metaworld_benchmark(name, env_name, seed)
    classes = tuple(mw.train_classes.items()) + tuple(
        (k, v) for k, v in mw.test_classes.items() if k not in mw.train_classes)

    def to_tasks(raw: Iterable[Any]) -> list[Task]:  # metaworld Task namedtuples
        count: dict[str, int] = {}
        out = []
        for t in raw:
            i = count.get(t.env_name, 0)
            count[t.env_name] = i + 1
            out.append(Task(t.env_name, i, t))
        return out

    return Benchmark(name, env_name, seed, to_tasks(mw.train_tasks), to_tasks(mw.test_tasks),
                     MetaWorldEnv.obs_dim, MetaWorldEnv.act_dim, horizon,
                     EnvFactory("metaworld", horizon, classes, fast_path))
