"""MAML-TRPO: meta-learn an initialisation that one policy-gradient step adapts to a task.

Per iteration: sample `meta_batch` training tasks; on each, collect episodes with
the meta-policy θ (pre-adaptation), take `inner_steps` vanilla policy-gradient
steps θ'_i = θ - α ∇L_i(θ), collect episodes with θ'_i (post-adaptation), then
update θ with TRPO on the post-adaptation surrogate
    L(θ) = mean_i mean_t [π_θ'_i(θ)(a|s) / π_θ'_i,old(a|s)] · A_i
differentiating through the inner step (second order, create_graph=True),
subject to mean_i KL(π_θ'_i,old || π_θ'_i(θ)) ≤ max_kl.

The per-task state of the MetaAgent protocol is the stack of per-task parameters; that policy
(acting, the inner loop, `adapt`) is shared with Reptile in metarl/agents/per_task_params.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from metarl.agents.base import (DISCOUNT, GAE_LAMBDA, INIT_LOG_STD, LAYER_SIZES, TASK_SAMPLING, AgentConfig,
                                SamplerLike, TaskSampling, draw_meta_batch)
from metarl.agents.per_task_params import PerTaskParamsAgent, TaskData
from metarl.core.nn import Params, call, flat, gaussian_kl, gaussian_log_prob, unflat_like
from metarl.core.optim import backtracking_line_search, conjugate_gradient
from metarl.core.fields import Choice, in_range, nonnegative, one_of, positive
from metarl.core.types import ConfigError, EpisodeBatch, Task, UpdateResult


class LearnInnerLR(Choice):
    """Meta-SGD's learned inner step sizes: none, one scalar, or one per policy weight."""
    NONE = "none"
    SCALAR = "scalar"
    PER_PARAMETER = "per_parameter"


LEARN_INNER_LR = LearnInnerLR.values()


@dataclass(frozen=True)
class MAMLTRPOConfig(AgentConfig):
    name: str = "maml_trpo"
    """The agent's registry name."""
    episodes_per_task: int = field(default=10, metadata=positive())
    """Episodes per task before and again after adaptation, each iteration."""
    hidden_sizes: tuple[int, ...] = field(default=(100, 100), metadata=LAYER_SIZES)
    """Hidden layers of the Gaussian MLP policy."""
    init_log_std: float = field(default=0.0, metadata=INIT_LOG_STD)
    """The policy's initial log standard deviation."""
    inner_lr: float = field(default=0.1, metadata=nonnegative())
    """α: step size of each inner policy-gradient step (Meta-SGD: its initial value)."""
    inner_steps: int = field(default=1, metadata=positive())
    """Inner policy-gradient steps per task, in training and at meta-test."""
    max_kl: float = field(default=0.01, metadata=positive())
    """TRPO's trust region: the largest mean KL of an outer step."""
    cg_iters: int = field(default=10, metadata=positive())
    """Conjugate-gradient iterations of the outer step."""
    cg_damping: float = field(default=1e-5, metadata=nonnegative())
    """Damping added to the Fisher-vector products."""
    line_search_steps: int = field(default=15, metadata=positive())
    """Backtracking line-search steps before the outer step is rejected."""
    backtrack_ratio: float = field(default=0.8, metadata=in_range(0, 1, lo_open=True, hi_open=True))
    """Factor the step shrinks by at each line-search step."""
    discount: float = field(default=0.99, metadata=DISCOUNT)
    """γ of the returns."""
    gae_lambda: float = field(default=1.0, metadata=GAE_LAMBDA)
    """λ of GAE (1: Monte-Carlo returns minus the baseline)."""
    normalize_advantages: bool = True
    """Centre and scale each task's advantages."""
    fvp_subsample: float = field(default=1.0, metadata=in_range(0, 1, lo_open=True))
    """Fraction of the samples (pre- and post-adaptation) used for Fisher-vector products."""
    first_order: bool = False
    """First-order MAML: the outer gradient takes the inner steps' Jacobian as the identity."""
    learn_inner_lr: LearnInnerLR = field(default=LearnInnerLR.NONE, metadata=one_of(LearnInnerLR))
    """Meta-SGD: none, scalar (one learned step size) or per_parameter (one per weight), from inner_lr."""
    task_sampling: TaskSampling = field(default=TaskSampling.UNIFORM, metadata=TASK_SAMPLING)
    """Meta-batch draw: uniform over all training tasks, or class_balanced (base.draw_meta_batch)."""


class MAMLTRPO(PerTaskParamsAgent):
    """The per-task parameters, `act`, `actor`, `adapt` and the inner loop are the shared policy's
    (metarl/agents/per_task_params.py); this class adds Meta-SGD's step sizes and the TRPO outer step."""

    Config = MAMLTRPOConfig
    cfg: MAMLTRPOConfig

    def __init__(self, cfg: MAMLTRPOConfig, obs_dim: int, act_dim: int, device: torch.device | str = "cpu"):
        super().__init__(cfg, obs_dim, act_dim, device)
        self.first_order = cfg.first_order
        # Meta-SGD: learned inner step sizes (meta-parameters next to the policy's)
        self.inner_lrs: dict[str, Tensor] = {}
        if cfg.learn_inner_lr == "scalar":
            self.inner_lrs = {"*": torch.tensor(cfg.inner_lr, device=self.device, requires_grad=True)}
        elif cfg.learn_inner_lr == "per_parameter":
            self.inner_lrs = {n: torch.full_like(p, cfg.inner_lr).requires_grad_(True)
                              for n, p in self.policy.named_parameters()}

    def meta_parameters(self) -> list[Tensor]:
        """What the outer (TRPO) step updates: the policy's weights, then any learned step sizes."""
        return list(self.policy.parameters()) + list(self.inner_lrs.values())

    def step_size(self, name: str) -> float | Tensor:
        if not self.inner_lrs:
            return self.cfg.inner_lr
        return self.inner_lrs["*"] if "*" in self.inner_lrs else self.inner_lrs[name]

    # ---- the meta-objective ---------------------------------------------------------
    def adapted_params(self, params: Params, pre: list[TaskData], create_graph: bool) -> list[Params]:
        return [self.inner_loop(params, d, create_graph) for d in pre]

    def surrogate_and_kl(self, adapted: list[Params], post: list, old: list[tuple[Tensor, Tensor]]
                         ) -> tuple[Tensor, Tensor]:
        """Mean over tasks of the post-adaptation surrogate loss and of KL(old || new)."""
        losses, kls = [], []
        for p, (obs, act, adv), (m_old, s_old) in zip(adapted, post, old):
            mean, log_std = call(self.policy, p, obs)
            ratio = torch.exp(gaussian_log_prob(mean, log_std, act) - gaussian_log_prob(m_old, s_old, act))
            losses.append(-(ratio * adv).mean())
            kls.append(gaussian_kl(m_old, s_old, mean, log_std).mean())
        return torch.stack(losses).mean(), torch.stack(kls).mean()

    def meta_objective(self, pre: list, post: list, old: list) -> Tensor:
        return self.surrogate_and_kl(self.adapted_params(self.params, pre, True), post, old)[0]

    # ---- one meta-iteration ---------------------------------------------------------
    def train_iteration(self, sampler: SamplerLike, tasks: Sequence[Task],
                        rng: np.random.Generator) -> UpdateResult:
        batch_tasks = draw_meta_batch(tasks, self.meta_batch, rng, self.cfg.task_sampling)
        state = self.initial_task_state(len(batch_tasks), rng)
        pre_batch, _ = sampler.sample(self, batch_tasks, state, self.cfg.episodes_per_task, rng)
        t0 = time.perf_counter()
        adapted_state = self.adapt(state, pre_batch, rng)
        adapt_s = time.perf_counter() - t0
        post_batch, _ = sampler.sample(self, batch_tasks, adapted_state, self.cfg.episodes_per_task, rng)
        t0 = time.perf_counter()
        result = self.update(pre_batch, post_batch, adapted_state)
        result.success_rate = float(post_batch.episode_success().mean())
        result.scalars = {
            "rollout/return_mean_pre": float(pre_batch.episode_returns().mean()),
            "rollout/success_rate_pre": float(pre_batch.episode_success().mean()),
            "rollout/return_mean": float(post_batch.episode_returns().mean()),
            **result.scalars, "time/inner_adapt_s": adapt_s, "time/trpo_s": time.perf_counter() - t0}
        return result

    def update(self, pre_batch: EpisodeBatch, post_batch: EpisodeBatch, adapted_state: Params) -> UpdateResult:
        """The TRPO step on the post-adaptation surrogate (through the inner step); a non-finite
        loss or gradient is rejected and leaves the parameters as they were."""
        cfg = self.cfg
        pre, post = self.task_data(pre_batch), self.task_data(post_batch)
        with torch.no_grad():
            old = [call(self.policy, {k: v[i].to(self.device) for k, v in adapted_state.items()}, d[0])
                   for i, d in enumerate(post)]
        params = self.meta_parameters()
        adapted = self.adapted_params(self.params, pre, create_graph=True)
        loss, kl = self.surrogate_and_kl(adapted, post, old)
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        g = flat(grads).detach()
        if cfg.fvp_subsample < 1.0:
            # Fisher-vector products on an evenly strided subset of the samples, pre- and
            # post-adaptation: the inner step inside the KL's graph uses the subset too
            stride = max(1, round(1.0 / cfg.fvp_subsample))
            pre_sub = [(o[::stride], a[::stride], v[::stride]) for o, a, v in pre]
            kl = self.surrogate_and_kl(self.adapted_params(self.params, pre_sub, create_graph=True),
                                       [tuple(x[::stride] for x in d) for d in post],
                                       [tuple(x[::stride] for x in o) for o in old])[1]
        kl_grad = flat(torch.autograd.grad(kl, params, create_graph=True))

        def fvp(v: Tensor) -> Tensor:
            hv = torch.autograd.grad(kl_grad @ v, params, retain_graph=True)
            return flat(hv).detach() + cfg.cg_damping * v

        metrics = {"train/loss_before": float(loss.detach()), "train/grad_norm": float(g.norm())}
        if not torch.isfinite(g).all() or not torch.isfinite(loss):
            metrics.update({"train/line_search_accepted": 0.0, "train/line_search_steps": 0.0,
                            "train/loss_after": float(loss.detach()), "train/kl": 0.0})
            return UpdateResult(rejected=1, scalars=metrics)
        direction = conjugate_gradient(fvp, -g, cfg.cg_iters)
        shs = float(direction @ fvp(direction))
        step = direction * np.sqrt(2 * cfg.max_kl / max(shs, 1e-12))
        del kl_grad, adapted
        x0 = [p.detach().clone() for p in params]

        def apply(delta: Tensor) -> None:
            with torch.no_grad():
                for p, p0, d in zip(params, x0, unflat_like(delta, params)):
                    p.copy_(p0 + d)

        def evaluate() -> tuple[float, float]:
            with torch.enable_grad():
                new_adapted = self.adapted_params(self.params, pre, create_graph=False)
            with torch.no_grad():
                l, k = self.surrogate_and_kl([{n: v.detach() for n, v in a.items()} for a in new_adapted],
                                             post, old)
            return float(l), float(k)

        ok, k, loss_after, kl_after = backtracking_line_search(
            step, apply, evaluate, float(loss.detach()), cfg.max_kl, cfg.line_search_steps, cfg.backtrack_ratio)
        metrics.update({"train/line_search_accepted": float(ok), "train/line_search_steps": float(k),
                        "train/loss_after": loss_after, "train/kl": kl_after,
                        "train/policy_std": float(self.policy.log_std.detach().exp().mean())})
        if self.inner_lrs:
            lrs = torch.cat([v.detach().reshape(-1) for v in self.inner_lrs.values()])
            metrics.update({"train/inner_lr_mean": float(lrs.mean()), "train/inner_lr_min": float(lrs.min()),
                            "train/inner_lr_max": float(lrs.max())})
        # rejected: non-finite updates only; a line search that finds no improvement is normal
        return UpdateResult(rejected=0, scalars=metrics)

    # ---- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"policy": {k: v.detach().cpu().clone() for k, v in self.policy.state_dict().items()}}
        if self.inner_lrs:
            out["inner_lr"] = {k: v.detach().cpu().clone() for k, v in self.inner_lrs.items()}
        return out

    RELEASE_KEYS = ("policy", "inner_lr")  # what acting and adapting need (metarl bench release)
    DISPLAY_NAME = "MAML-TRPO"

    @classmethod
    def label(cls, fields: Mapping[str, Any]) -> str:
        """First-order MAML (agent.first_order) and Meta-SGD (agent.learn_inner_lr) by their names."""
        if fields.get("first_order"):
            return "first-order MAML"
        if fields.get("learn_inner_lr", "none") not in (None, "none"):
            return "Meta-SGD, " + str(fields["learn_inner_lr"]).replace("_", "-") + " α"
        return cls.DISPLAY_NAME

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        if set(state.get("inner_lr", {})) != set(self.inner_lrs):
            raise ConfigError(f"checkpoint: learned inner step sizes {sorted(state.get('inner_lr', {}))} do not match "
                              f"agent.learn_inner_lr={self.cfg.learn_inner_lr!r}")
        with torch.no_grad():
            for k, v in state.get("inner_lr", {}).items():
                self.inner_lrs[k].copy_(v)
