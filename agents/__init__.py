"""Agent registry: name -> agent class (each class carries its `Config` dataclass)."""
from __future__ import annotations

import inspect

from agents.maml_trpo import MAMLTRPO
from agents.pearl import PEARL
from agents.rl2_ppo import RL2PPO

AGENTS: dict[str, type] = {"maml_trpo": MAMLTRPO, "rl2_ppo": RL2PPO, "pearl": PEARL}


def make(cfg, obs_dim: int, act_dim: int, device="cpu", **facts):
    """Build the agent named by cfg.name. `facts` about the task distribution (n_train_tasks,
    horizon, ...) are passed on to the agents whose constructor declares them."""
    cls = AGENTS[cfg.name]
    params = inspect.signature(cls.__init__).parameters
    return cls(cfg, obs_dim, act_dim, device, **{k: v for k, v in facts.items() if k in params})
