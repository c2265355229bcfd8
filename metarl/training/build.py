"""What a run is made of: the config's benchmark (checked against the machine), the agent and the
sampler, built the same way for training, evaluation and videos."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from metarl import agents
from metarl.envs import TaskVectorEnv, make_benchmark
from metarl.training import resources
from metarl.training.config import RunConfig
from metarl.training.sampler import Sampler
from metarl.core.types import ConfigError

if TYPE_CHECKING:
    from metarl.agents.base import MetaAgent
    from metarl.envs.suites import Benchmark


def task_seed(cfg: RunConfig) -> int:
    """The seed the benchmark's goals are drawn with: env.task_seed, else the run's seed."""
    return cfg.run.seed if cfg.env.task_seed is None else cfg.env.task_seed


def benchmark_for(cfg: RunConfig, names: dict[str, str] | None = None) -> Benchmark:
    """The config's task distribution, checked against the agent's meta-batch and the machine
    (`names`: flags that set a size instead of its config field, for resources.check's message)."""
    resources.check_tasks(cfg)  # env.toy_tasks, before its goals are drawn
    bench = make_benchmark(cfg.env.benchmark, cfg.env.env_name, task_seed(cfg),
                           cfg.env.max_episode_steps, cfg.env.toy_tasks, cfg.env.toy_goals,
                           cfg.env.fast_path, cfg.env.toy_reward)
    if cfg.agent.meta_batch > len(bench.train_tasks):
        raise ConfigError(f"agent.meta_batch: {cfg.agent.meta_batch} exceeds the {len(bench.train_tasks)} training "
                          f"tasks of {bench.name}; allowed: 1..{len(bench.train_tasks)}")
    resources.check(cfg, bench, names)  # memory and cores, before any env is built or worker started
    return bench


def build(cfg: RunConfig, device: torch.device, bench: Benchmark | None = None
          ) -> tuple[Benchmark, Sampler, MetaAgent[Any]]:
    """Benchmark, sampler and agent for a config (used by train and eval); `bench`: the
    config's benchmark_for, when the caller has built it already."""
    bench = bench if bench is not None else benchmark_for(cfg)
    agent = agents.make(cfg.agent, bench.obs_dim, bench.act_dim, device, n_train_tasks=len(bench.train_tasks),
                        train_tasks=bench.train_tasks, horizon=bench.max_episode_steps,
                        eval_context=cfg.eval.pearl_context)
    vec = TaskVectorEnv(bench.env_factory, agent.meta_batch, cfg.env.n_workers, backend=cfg.env.backend,
                        ray_address=cfg.env.ray_address)
    return bench, Sampler(vec, bench.max_episode_steps), agent


def needs_warm_restart(payload: dict[str, Any]) -> bool:
    """Whether resuming this checkpoint is a warm restart: PEARL's, saved without its replay buffers
    (metarl bench park) after training began. The agent refills them with its current policy
    before it updates again (metarl/agents/pearl.py): the run goes on, not bit-exactly."""
    agent = payload.get("agent")
    return (isinstance(agent, dict) and "buffers" in agent and agent["buffers"] is None
            and bool(agent.get("collected_initial")))
