"""Reptile for RL (Nichol et al. 2018): meta-learn an initialisation by moving it toward the
parameters that a few policy-gradient steps reach on each task.

Per iteration: sample `meta_batch` training tasks; on each, collect `episodes_per_task`
episodes with the meta-policy θ; from θ take `inner_steps` (k) vanilla policy-gradient steps on
those episodes, θ'_i = θ - α ∇L_i(·) repeated k times (no importance weights: the steps reuse
the batch, as Reptile's inner SGD reuses a task's data); then θ ← θ + ε · mean_i(θ'_i − θ).
No second derivatives and no trust region: one sample call and k·meta_batch gradients per
iteration.

Adaptation at meta-test is the same k inner steps on the adaptation episodes, so the evaluator
(`adapt`) and training adapt alike. The per-task state is the stack of per-task parameters, and
acting, the inner steps and `adapt` are the policy it shares with MAML-TRPO
(metarl/agents/per_task_params.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from metarl.agents.base import (DISCOUNT, GAE_LAMBDA, INIT_LOG_STD, LAYER_SIZES, TASK_SAMPLING, AgentConfig,
                                SamplerLike, TaskSampling, draw_meta_batch)
from metarl.agents.per_task_params import PerTaskParamsAgent
from metarl.core.fields import in_range, positive
from metarl.core.types import Task, UpdateResult


@dataclass(frozen=True)
class ReptileConfig(AgentConfig):
    name: str = "reptile"
    """The agent's registry name."""
    episodes_per_task: int = field(default=10, metadata=positive())
    """Episodes per task each iteration, collected with θ."""
    hidden_sizes: tuple[int, ...] = field(default=(100, 100), metadata=LAYER_SIZES)
    """Hidden layers of the Gaussian MLP policy."""
    init_log_std: float = field(default=0.0, metadata=INIT_LOG_STD)
    """The policy's initial log standard deviation."""
    inner_lr: float = field(default=0.1, metadata=positive())
    """α: step size of each inner policy-gradient step."""
    inner_steps: int = field(default=3, metadata=positive())
    """k: inner steps per task, in training and at meta-test."""
    outer_lr: float = field(default=1.0, metadata=in_range(0, 1, lo_open=True))
    """ε: fraction of the way from θ to the mean adapted parameters (above 1 would step past it)."""
    discount: float = field(default=0.99, metadata=DISCOUNT)
    """γ of the returns."""
    gae_lambda: float = field(default=1.0, metadata=GAE_LAMBDA)
    """λ of GAE (1: Monte-Carlo returns minus the baseline)."""
    normalize_advantages: bool = True
    """Centre and scale each task's advantages."""
    task_sampling: TaskSampling = field(default=TaskSampling.UNIFORM, metadata=TASK_SAMPLING)
    """Meta-batch draw: uniform over all training tasks, or class_balanced (base.draw_meta_batch)."""


class Reptile(PerTaskParamsAgent):
    """The per-task parameters, `act`, `actor`, `adapt` (k inner steps) are the shared policy's
    (metarl/agents/per_task_params.py); this class adds the outer step toward the adapted parameters."""

    Config = ReptileConfig
    cfg: ReptileConfig
    RELEASE_KEYS = ("policy",)  # what acting and adapting need (metarl bench release)
    DISPLAY_NAME = "Reptile"
    ROLLOUTS_ARE_THETA = True  # no inner step before its training episodes: their success is θ's

    def train_iteration(self, sampler: SamplerLike, tasks: Sequence[Task],
                        rng: np.random.Generator) -> UpdateResult:
        batch_tasks = draw_meta_batch(tasks, self.meta_batch, rng, self.cfg.task_sampling)
        state = self.initial_task_state(self.meta_batch, rng)
        batch, _ = sampler.sample(self, batch_tasks, state, self.cfg.episodes_per_task, rng)
        adapted = self.adapt(state, batch, rng)
        result = UpdateResult(success_rate=float(batch.episode_success().mean()),
                              scalars={"rollout/return_mean": float(batch.episode_returns().mean())})
        if not all(bool(torch.isfinite(v).all()) for v in adapted.values()):
            result.rejected = 1  # θ kept
            return result
        with torch.no_grad():
            sq = 0.0
            for k, p in self.policy.named_parameters():
                step = self.cfg.outer_lr * (adapted[k].to(p).mean(dim=0) - p)
                sq += float(step.pow(2).sum())
                p.add_(step)
        result.scalars.update({"train/outer_step_norm": sq ** 0.5,
                               "train/policy_std": float(self.policy.log_std.detach().exp().mean())})
        return result

    # ---- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"policy": {k: v.detach().cpu().clone() for k, v in self.policy.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
