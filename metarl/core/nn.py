"""Policies as plain modules, usable with per-task parameter sets via torch.func."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metarl.core.types import Actor, LatentState, PerTaskParams

Params = PerTaskParams  # parameter name -> tensor (stacked per task: [S, *shape])


def mlp(sizes: Sequence[int], activation: Callable[[], nn.Module] = nn.Tanh, out_gain: float = 1.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        last = i == len(sizes) - 2
        nn.init.orthogonal_(lin.weight, gain=out_gain if last else math.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if not last:
            layers.append(activation())
    return nn.Sequential(*layers)


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian with an MLP mean and a learned, state-independent log-std."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], init_log_std: float = 0.0):
        super().__init__()
        self.mean = mlp([obs_dim, *hidden, act_dim], out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        return self.mean(obs), self.log_std.expand(obs.shape[:-1] + self.log_std.shape)

    def batched(self, stacked: Params, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Slot i's observations [S, N, D] through slot i's parameters (leading dim S) for
        every slot at once: the same numbers as `batched_call`, ~8x faster for small MLPs."""
        mean = batched_mlp(self.mean, stacked, "mean", obs)
        log_std = stacked["log_std"].unsqueeze(1).expand(mean.shape)
        return mean, log_std


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


_NUMPY_ACTIVATIONS = {nn.Tanh: np.tanh, nn.ReLU: _relu}


class BatchedGaussianActor(Actor[Params]):
    """The sampler's actor for a GaussianMLPPolicy whose per-slot parameters are the task
    state (MAML): the batched MLP in NumPy. For the sampler's small batches one step costs
    about half of the torch path, and it evicts less of the envs' data from the caches
    (benchmarks/results/2026-12-06-history.md); its actions equal `GaussianMLPPolicy.batched`'s within float rounding.
    It holds no weights, so it is cheap to send to the sampler's workers."""

    # act never changes the task state: the sampler may run each episode as its own unit
    episodes_independent = True

    def __init__(self, policy: GaussianMLPPolicy):
        self.layers: list = []
        for i, layer in enumerate(policy.mean):
            if isinstance(layer, nn.Linear):
                self.layers.append(f"mean.{i}")
            elif type(layer) in _NUMPY_ACTIVATIONS:
                self.layers.append(_NUMPY_ACTIVATIONS[type(layer)])
            else:
                raise TypeError(f"BatchedGaussianActor: no NumPy version of {type(layer).__name__}")

    def act(self, obs: Tensor, task_state: Params, *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, Params]:
        """obs [S, D] (CPU) -> actions [S, A]: mean + exp(log_std) * noise, slot i with task_state[.][i]."""
        p = {k: v.detach().numpy() for k, v in task_state.items()}
        h = obs.detach().to(task_state["log_std"].dtype).numpy()[:, None, :]
        for layer in self.layers:
            if isinstance(layer, str):
                h = np.matmul(h, p[layer + ".weight"].transpose(0, 2, 1)) + p[layer + ".bias"][:, None, :]
            else:
                h = layer(h)
        mean = h[:, 0]
        if not deterministic:
            eps = torch.randn(mean.shape, dtype=task_state["log_std"].dtype) if noise is None else noise
            mean = mean + np.exp(p["log_std"]) * eps.to(task_state["log_std"].dtype).numpy()
        return torch.from_numpy(np.ascontiguousarray(mean)), task_state

    def bind(self, task_state: Params) -> Callable[[np.ndarray, np.ndarray | None], np.ndarray]:
        """One slot's acting function (`task_state` with leading dimension 1), its weights laid
        out once: obs [D] -> mean + exp(log_std) * noise [A] (noise None: the mean). The same
        arithmetic as `act` on 1-D rows, equal within float rounding; the sampler's episode loop
        uses it for every step of a unit (a third of `act`'s cost per call for one slot)."""
        p = {k: v.detach()[0].numpy() for k, v in task_state.items()}
        dtype = p["log_std"].dtype
        plan = [(np.ascontiguousarray(p[layer + ".weight"].T), p[layer + ".bias"]) if isinstance(layer, str)
                else layer for layer in self.layers]
        std = np.exp(p["log_std"])

        def step(obs: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
            h = obs.astype(dtype, copy=False)
            for layer in plan:
                h = h @ layer[0] + layer[1] if isinstance(layer, tuple) else layer(h)
            return h if noise is None else h + std * noise.astype(dtype, copy=False)
        return step


LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def squashed_log_prob(u: Tensor, eps: Tensor, log_std: Tensor) -> Tensor:
    """log pi(tanh(u)) for u = mean + std * eps: Gaussian log-density minus log|d tanh/du|."""
    gauss = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    return gauss - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)


class TanhGaussianPolicy(nn.Module):
    """pi(a | x) = tanh(N(mean, std^2)), mean and log-std (clamped to [LOG_STD_MIN, LOG_STD_MAX])
    from one ReLU MLP: SAC's policy (PEARL acts with it on [obs, z])."""

    def __init__(self, in_dim: int, act_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.act_dim = act_dim
        self.net = mlp([in_dim, *hidden, 2 * act_dim], activation=nn.ReLU, out_gain=0.01)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.net(x).chunk(2, -1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterised action and its log-probability, from standard-normal `eps`."""
        mean, log_std = self(x)
        u = mean + log_std.exp() * eps
        return torch.tanh(u), squashed_log_prob(u, eps, log_std)

    def act(self, obs: Tensor, z: Tensor, deterministic: bool, noise: Tensor | None) -> Tensor:
        """Action for [obs, z] (float32, on the policy's device): tanh(mean) when deterministic,
        else tanh(mean + std * noise) with standard-normal `noise` [S, A]."""
        dev = next(self.parameters()).device
        mean, log_std = self(torch.cat([obs.to(dev, torch.float32), z.to(dev, torch.float32)], -1))
        if deterministic:
            return torch.tanh(mean)
        if noise is None:
            noise = torch.randn(mean.shape).to(dev)
        return torch.tanh(mean + log_std.exp() * noise.to(dev, mean.dtype))


class LatentActor(Actor[LatentState]):
    """What sampler workers act with for a policy conditioned on a per-task latent (PEARL): the
    TanhGaussianPolicy on [obs, task_state["z"]] and nothing else."""

    def __init__(self, policy: TanhGaussianPolicy):
        self.policy = policy
        self.act_dim = policy.act_dim

    def act(self, obs: Tensor, task_state: LatentState, *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, LatentState]:
        return latent_act(self.policy, obs, task_state, deterministic, noise), task_state


def uniform_actions(shape: torch.Size | tuple[int, ...], noise: Tensor | None, device: torch.device) -> Tensor:
    """Actions uniform on [-1, 1]: erf(noise / sqrt 2) = 2 Phi(noise) - 1 of standard-normal `noise`
    [S, A] (so the sampler's noise streams drive them), or torch.rand where there is none."""
    if noise is None:
        return torch.rand(shape).to(device) * 2.0 - 1.0
    return torch.erf(noise.to(device, torch.float32) * (1.0 / math.sqrt(2.0)))


def latent_act(policy: TanhGaussianPolicy, obs: Tensor, task_state: LatentState, deterministic: bool,
               noise: Tensor | None) -> Tensor:
    """PEARL's action for each slot: the policy on [obs, z], or uniform random actions
    (`uniform_actions`) in the slots whose task_state["probe"] is true (a probing episode)."""
    probe = task_state.get("probe")
    if probe is not None and bool(probe.all()):
        dev = next(policy.parameters()).device
        return uniform_actions((obs.shape[0], policy.act_dim), noise, dev)
    action = policy.act(obs, task_state["z"], deterministic, noise)
    if probe is not None and bool(probe.any()):
        action = torch.where(probe.to(action.device)[:, None],
                             uniform_actions(action.shape, noise, action.device), action)
    return action


def product_of_gaussians(mu: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """Product of N diagonal Gaussian factors over dim -2: mu, var [..., N, L] -> [..., L].

    No factors (N = 0) gives the prior N(0, I)."""
    if mu.shape[-2] == 0:
        shape = mu.shape[:-2] + mu.shape[-1:]
        return mu.new_zeros(shape), mu.new_ones(shape)
    prec = 1.0 / var
    post_var = 1.0 / prec.sum(-2)
    return post_var * (mu * prec).sum(-2), post_var


def kl_to_prior(mu: Tensor, var: Tensor) -> Tensor:
    """KL(N(mu, var) || N(0, I)), summed over the last dim."""
    return 0.5 * (var + mu.pow(2) - 1.0 - torch.log(var)).sum(-1)


def gaussian_log_prob(mean: Tensor, log_std: Tensor, act: Tensor) -> Tensor:
    z = (act - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the last dim."""
    var_p, var_q = torch.exp(2 * log_std_p), torch.exp(2 * log_std_q)
    return (log_std_q - log_std_p + (var_p + (mean_p - mean_q).pow(2)) / (2 * var_q) - 0.5).sum(-1)


def call(module: nn.Module, params: Params, *args: Any) -> Any:
    return functional_call(module, params, args)


def batched_call(module: nn.Module, stacked: Params, *args: Any) -> Any:
    """Forward slot i's inputs through slot i's parameters, for every slot at once.

    `stacked` holds each parameter with a leading slot dimension; args have the
    same leading dimension.
    """
    return vmap(lambda p, *a: functional_call(module, p, a))(stacked, *args)


def batched_mlp(seq: nn.Sequential, stacked: Params, prefix: str, x: Tensor) -> Tensor:
    """An nn.Sequential of Linear layers and parameter-free activations, evaluated with
    per-slot weights `stacked[f"{prefix}.{i}.weight"]` [S, out, in] by batched matmuls."""
    h = x
    for i, layer in enumerate(seq):
        if isinstance(layer, nn.Linear):
            w, b = stacked[f"{prefix}.{i}.weight"], stacked[f"{prefix}.{i}.bias"]
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        else:
            h = layer(h)
    return h


def flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat_like(vec: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        out.append(vec[i:i + t.numel()].view_as(t))
        i += t.numel()
    return out
