"""Agent registry: name -> agent class (each class carries its `Config` dataclass, an
`metarl.agents.base.AgentConfig`). The CLI hands `AGENTS` to `metarl.training.config.load(..., registry=AGENTS)`."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Union

import torch

from metarl.agents.base import AgentConfig, MetaAgent
from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.agents.pearl import PEARL, PEARLConfig
from metarl.agents.reptile import Reptile, ReptileConfig
from metarl.agents.rl2_ppo import RL2PPO, RL2PPOConfig

AnyAgentConfig = Union[MAMLTRPOConfig, RL2PPOConfig, PEARLConfig, ReptileConfig]
AGENTS: dict[str, type[MAMLTRPO] | type[RL2PPO] | type[PEARL] | type[Reptile]] = {
    "maml_trpo": MAMLTRPO, "rl2_ppo": RL2PPO, "pearl": PEARL, "reptile": Reptile}


def make(cfg: AgentConfig, obs_dim: int, act_dim: int, device: torch.device | str = "cpu",
         **facts: Any) -> MetaAgent[Any]:
    """Build the agent named by cfg.name. `facts` about the task distribution (n_train_tasks,
    horizon, ...) are passed on to the agents whose constructor declares them."""
    # checks that every agent is a MetaAgent (of its own task-state type)
    cls: Callable[..., MetaAgent[Any]] = AGENTS[cfg.name]
    params = inspect.signature(cls).parameters
    return cls(cfg, obs_dim, act_dim, device, **{k: v for k, v in facts.items() if k in params})
