"""Reptile for RL (Nichol et al. 2018): meta-learn an initialisation by moving it toward the
parameters that a few policy-gradient steps reach on each task.

Per iteration: sample `meta_batch` training tasks; on each, collect `episodes_per_task`
episodes with the meta-policy θ; from θ take `inner_steps` (k) vanilla policy-gradient steps on
those episodes, θ'_i = θ - α ∇L_i(·) repeated k times (no importance weights: the steps reuse
the batch, as Reptile's inner SGD reuses a task's data); then θ ← θ + ε · mean_i(θ'_i − θ).
No second derivatives and no trust region: one sample call and k·meta_batch gradients per
iteration.

Adaptation at meta-test is the same k inner steps on the adaptation episodes, so the evaluator
(`adapt`) and training adapt alike. The per-task state is the stack of per-task parameters, as
for MAML-TRPO, and the sampler's workers act with the same NumPy MLP.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from agents.base import DISCOUNT, GAE_LAMBDA, LAYER_SIZES, TASK_SAMPLING, AgentConfig, MetaAgent, SamplerLike, draw_meta_batch
from metarl.nn import BatchedGaussianActor, GaussianMLPPolicy, Params, call, gaussian_log_prob
from metarl.fields import in_range, positive
from metarl.returns import task_advantages
from metarl.types import EpisodeBatch, Task, UpdateResult


@dataclass(frozen=True)
class ReptileConfig(AgentConfig):
    name: str = "reptile"
    episodes_per_task: int = field(default=10, metadata=positive())
    hidden_sizes: tuple[int, ...] = field(default=(100, 100), metadata=LAYER_SIZES)
    init_log_std: float = 0.0
    inner_lr: float = field(default=0.1, metadata=positive())   # α: step size of each inner policy-gradient step
    inner_steps: int = field(default=3, metadata=positive())    # k: inner steps per task, in training and at meta-test
    # ε: fraction of the way from θ to the mean adapted parameters (above 1 would step past it)
    outer_lr: float = field(default=1.0, metadata=in_range(0, 1, lo_open=True))
    discount: float = field(default=0.99, metadata=DISCOUNT)
    gae_lambda: float = field(default=1.0, metadata=GAE_LAMBDA)
    normalize_advantages: bool = True
    # meta-batch draw: uniform over all training tasks, or class_balanced (agents.base.draw_meta_batch)
    task_sampling: str = field(default="uniform", metadata=TASK_SAMPLING)


class Reptile(MetaAgent):
    Config = ReptileConfig
    RELEASE_KEYS = ("policy",)  # what acting and adapting need (benchmarks/release.py)

    def __init__(self, cfg: ReptileConfig, obs_dim: int, act_dim: int, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.meta_batch = cfg.meta_batch
        self.act_dim = act_dim
        self.device = torch.device(device)
        self.policy = GaussianMLPPolicy(obs_dim, act_dim, cfg.hidden_sizes, cfg.init_log_std).to(self.device)
        self.names = [n for n, _ in self.policy.named_parameters()]

    # ---- MetaAgent protocol ---------------------------------------------------------
    def initial_task_state(self, n_tasks: int, rng: np.random.Generator | None = None) -> Params:
        """θ for every task (no randomness: `rng` is not used)."""
        return {k: v.detach().unsqueeze(0).expand(n_tasks, *v.shape) for k, v in self.policy.named_parameters()}

    def act(self, obs: Tensor, task_state: Params, *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, Params]:
        dev = next(iter(task_state.values())).device
        mean, log_std = self.policy.batched(task_state, obs.to(dev).unsqueeze(1))
        mean, log_std = mean.squeeze(1), log_std.squeeze(1)
        if deterministic:
            return mean, task_state
        eps = torch.randn_like(mean) if noise is None else noise.to(mean)
        return mean + torch.exp(log_std) * eps, task_state

    def actor(self) -> BatchedGaussianActor:
        return BatchedGaussianActor(self.policy)

    def adapt(self, task_state: Params, episodes: EpisodeBatch, rng: np.random.Generator | None = None) -> Params:
        """k inner policy-gradient steps per task, from each task's current parameters
        (deterministic: `rng` is not used)."""
        out: list[Params] = []
        for i in range(episodes.n_tasks):
            obs, act, adv = self._task_data(episodes, i)
            p = {k: v[i].detach().to(self.device).clone() for k, v in task_state.items()}
            for _ in range(self.cfg.inner_steps):
                p = {k: v.requires_grad_(True) for k, v in p.items()}
                with torch.enable_grad():
                    mean, log_std = call(self.policy, p, obs)
                    loss = -(gaussian_log_prob(mean, log_std, act) * adv).mean()
                    grads = torch.autograd.grad(loss, list(p.values()))
                p = {k: (v - self.cfg.inner_lr * g).detach() for (k, v), g in zip(p.items(), grads)}
            out.append(p)
        return {k: torch.stack([o[k] for o in out]) for k in self.names}

    def _task_data(self, episodes: EpisodeBatch, i: int) -> tuple[Tensor, Tensor, Tensor]:
        adv = task_advantages(episodes.obs[i], episodes.rewards[i], self.cfg.discount, self.cfg.gae_lambda,
                              self.cfg.normalize_advantages)
        dtype = next(self.policy.parameters()).dtype

        def t(x: np.ndarray) -> Tensor:
            return torch.as_tensor(x, dtype=dtype, device=self.device)
        return (t(episodes.obs[i].reshape(-1, episodes.obs.shape[-1])),
                t(episodes.actions[i].reshape(-1, episodes.actions.shape[-1])), t(adv.reshape(-1)))

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
