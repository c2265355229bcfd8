"""The per-task-parameter policy that MAML-TRPO (with its first-order and Meta-SGD variants) and
Reptile share: a Gaussian MLP whose per-task state is one full set of its parameters per task.

- `initial_task_state(n)`: the meta-parameters θ, stacked n times (no randomness);
- `act`: slot i acts with its own parameters (`GaussianMLPPolicy.batched`), mean + exp(log_std)·noise;
- `actor()`: what the sampler's workers act with: the same MLP in NumPy over the per-slot
  parameters (`metarl.core.nn.BatchedGaussianActor`), or a torch CPU copy (`TorchParamsActor`) where
  an activation has no NumPy version. Either holds no per-task weights: those are the task state;
- `task_data(episodes)`: per task, (obs [M*T, D], actions [M*T, A], advantages [M*T]);
- `inner_loop(params, data)`: `cfg.inner_steps` vanilla policy-gradient steps
  θ' = θ − α ∇L(θ), L = −mean(log π(a|s) · A), with α = `step_size(name)` (a learned tensor
  for Meta-SGD); `create_graph=True` keeps the graph for a second-order outer gradient;
- `adapt`: those steps from each task's current parameters on its new episodes. The same
  function is training's inner loop and meta-test adaptation, so the two cannot drift apart.

What stays in each agent is its outer update (MAML: TRPO through the inner step; Reptile: a
step toward the mean adapted parameters) and its checkpoints.
"""
from __future__ import annotations

import copy
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from metarl.agents.base import MetaAgent
from metarl.core.nn import BatchedGaussianActor, GaussianMLPPolicy, Params, call, gaussian_log_prob
from metarl.core.returns import task_advantages
from metarl.core.types import Actor, EpisodeBatch

TaskData = tuple[Tensor, Tensor, Tensor]  # obs [N, D], actions [N, A], advantages [N] of one task


class PerTaskParamsConfig(Protocol):
    """The config fields the shared policy reads (MAMLTRPOConfig and ReptileConfig have them)."""

    @property
    def meta_batch(self) -> int: ...
    @property
    def hidden_sizes(self) -> tuple[int, ...]: ...
    @property
    def init_log_std(self) -> float: ...
    @property
    def inner_lr(self) -> float: ...
    @property
    def inner_steps(self) -> int: ...
    @property
    def discount(self) -> float: ...
    @property
    def gae_lambda(self) -> float: ...
    @property
    def normalize_advantages(self) -> bool: ...


def act_with_params(policy: GaussianMLPPolicy, obs: Tensor, task_state: Params, deterministic: bool,
                    noise: Tensor | None) -> Tensor:
    """Slot i's action with parameters task_state[.][i]: the mean, or mean + exp(log_std) * noise
    (`noise` standard normal [S, A]; None: drawn from torch's generator)."""
    dev = next(iter(task_state.values())).device
    dtype = next(policy.parameters()).dtype
    mean, log_std = policy.batched(task_state, obs.to(dev, dtype).unsqueeze(1))
    mean, log_std = mean.squeeze(1), log_std.squeeze(1)
    if deterministic:
        return mean
    if noise is None:
        noise = torch.randn_like(mean)
    return mean + torch.exp(log_std) * noise.to(mean)


class TorchParamsActor(Actor[Params]):
    """The sampler's actor where BatchedGaussianActor has no NumPy version of an activation: a
    CPU copy of the policy's structure, acting with the per-slot parameters of the task state."""

    episodes_independent = True  # acting never changes the per-task parameters

    def __init__(self, policy: GaussianMLPPolicy):
        self.policy = copy.deepcopy(policy).cpu()

    def act(self, obs: Tensor, task_state: Params, *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, Params]:
        return act_with_params(self.policy, obs, task_state, deterministic, noise), task_state


class PerTaskParamsAgent(MetaAgent[Params]):
    """Base of the agents whose per-task state is the policy's parameters (see the module doc).
    A subclass sets `first_order` (no second derivatives through the inner steps) and may
    override `step_size` (Meta-SGD's learned step sizes)."""

    first_order: bool = False

    def __init__(self, cfg: PerTaskParamsConfig, obs_dim: int, act_dim: int, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.meta_batch = cfg.meta_batch
        self.act_dim = act_dim
        self.device = torch.device(device)
        self.policy = GaussianMLPPolicy(obs_dim, act_dim, cfg.hidden_sizes, cfg.init_log_std).to(self.device)
        self.names = [n for n, _ in self.policy.named_parameters()]

    # ---- parameters ------------------------------------------------------------------
    @property
    def params(self) -> Params:
        return dict(self.policy.named_parameters())

    @property
    def dtype(self) -> torch.dtype:
        return next(self.policy.parameters()).dtype

    def step_size(self, name: str) -> float | Tensor:
        """α of the inner step for parameter `name`: cfg.inner_lr unless a subclass learns it."""
        return self.cfg.inner_lr

    # ---- MetaAgent protocol ---------------------------------------------------------
    def initial_task_state(self, n_tasks: int, rng: np.random.Generator | None = None) -> Params:
        """The meta-parameters θ for every task (no randomness: `rng` is not used)."""
        return {k: v.detach().unsqueeze(0).expand(n_tasks, *v.shape) for k, v in self.params.items()}

    def act(self, obs: Tensor, task_state: Params, *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, Params]:
        """Slot i acts with parameters task_state[.][i]; `noise` is standard normal [S, A]."""
        return act_with_params(self.policy, obs, task_state, deterministic, noise), task_state

    def actor(self) -> Actor[Params]:
        """The policy's MLP in NumPy over the per-slot parameters (BatchedGaussianActor); an
        activation it lacks -> TorchParamsActor, a CPU copy of the policy."""
        try:
            return BatchedGaussianActor(self.policy)
        except TypeError:
            return TorchParamsActor(self.policy)

    def adapt(self, task_state: Params, episodes: EpisodeBatch, rng: np.random.Generator | None = None) -> Params:
        """One round of `inner_steps` policy-gradient steps per task, from each task's current
        parameters, on that task's new episodes (deterministic: `rng` is not used)."""
        out: list[Params] = []
        for i, d in enumerate(self.task_data(episodes)):
            p = {k: v[i].detach().to(self.device).clone().requires_grad_(True) for k, v in task_state.items()}
            with torch.enable_grad():
                p = self.inner_loop(p, d, create_graph=False)
            out.append({k: v.detach() for k, v in p.items()})
        return {k: torch.stack([o[k] for o in out]) for k in self.names}

    # ---- the inner loop -------------------------------------------------------------
    def task_data(self, episodes: EpisodeBatch) -> list[TaskData]:
        """Per task: (obs [M*T, D], actions [M*T, A], advantages [M*T]) as tensors of the policy's
        dtype on its device; advantages from metarl.core.returns.task_advantages."""
        def tensor(x: np.ndarray) -> Tensor:
            return torch.as_tensor(x, dtype=self.dtype, device=self.device)

        out = []
        for i in range(episodes.n_tasks):
            adv = task_advantages(episodes.obs[i], episodes.rewards[i], self.cfg.discount,
                                  self.cfg.gae_lambda, self.cfg.normalize_advantages)
            out.append((tensor(episodes.obs[i].reshape(-1, episodes.obs.shape[-1])),
                        tensor(episodes.actions[i].reshape(-1, episodes.actions.shape[-1])),
                        tensor(adv.reshape(-1))))
        return out

    def inner_loop(self, params: Params, data: TaskData, create_graph: bool = False) -> Params:
        """`cfg.inner_steps` policy-gradient steps from `params` (tensors that require grad) on one
        task's data. `create_graph`: keep the graph through the steps for an outer gradient
        (second order unless `first_order`: then the inner gradient is a constant to it)."""
        obs, act, adv = data
        for _ in range(self.cfg.inner_steps):
            mean, log_std = call(self.policy, params, obs)
            loss = -(gaussian_log_prob(mean, log_std, act) * adv).mean()
            grads = torch.autograd.grad(loss, list(params.values()), retain_graph=create_graph,
                                        create_graph=create_graph and not self.first_order)
            params = {k: v - self.step_size(k) * g for (k, v), g in zip(params.items(), grads)}
        return params
