"""Agent registry: name -> agent class (each class carries its `Config` dataclass)."""
from __future__ import annotations

from agents.maml_trpo import MAMLTRPO

AGENTS: dict[str, type] = {"maml_trpo": MAMLTRPO}


def make(cfg, obs_dim: int, act_dim: int, device="cpu"):
    return AGENTS[cfg.name](cfg, obs_dim, act_dim, device)
