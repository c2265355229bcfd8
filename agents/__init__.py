"""Agent registry: name -> agent class (each class carries its `Config` dataclass)."""
from __future__ import annotations

from agents.maml_trpo import MAMLTRPO
from agents.pearl import PEARL
from agents.rl2_ppo import RL2PPO

AGENTS: dict[str, type] = {"maml_trpo": MAMLTRPO, "rl2_ppo": RL2PPO, "pearl": PEARL}


def make(cfg, obs_dim: int, act_dim: int, device="cpu"):
    return AGENTS[cfg.name](cfg, obs_dim, act_dim, device)
