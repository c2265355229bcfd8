"""PEARL: off-policy meta-RL with a probabilistic context encoder (Rakelly et al. 2019).

A task is summarised by a latent z. A context encoder maps every context
transition c_n = (s, a, r[, s']) to a Gaussian factor N(mu_n, sigma_n^2); the
posterior over z is their product, in closed form:

    sigma^2 = 1 / sum_n 1/sigma_n^2,      mu = sigma^2 * sum_n mu_n / sigma_n^2

so it does not depend on the order of the transitions. With no context, z is
drawn from the prior N(0, I). SAC (twin Q + target twin Q, tanh-Gaussian policy,
automatic or fixed entropy weight) acts and learns on [obs, z]. The encoder is
trained through the critic loss plus kl_weight * KL(q(z|c) || N(0, I)); the
policy loss sees z detached.

Data (per training task, kept as preallocated numpy arrays [n_tasks, capacity, ...]):
- the replay buffer (ring, `replay_capacity` transitions a task) feeds the SAC batches;
- the context buffer holds the task's most recent prior- and posterior-z episodes
  and feeds the encoder; it is cleared whenever the task is collected on again.

Collection schedule per iteration (the paper's, counted in episodes):
- once, before the first update: `num_initial_episodes` per training task, z ~ prior;
- `tasks_per_iteration` training tasks sampled; on each (their context cleared):
  `num_prior_episodes` with z ~ prior (replay + context), then
  `num_posterior_episodes` with z ~ posterior of the context (replay + context), then
  `num_extra_posterior_episodes` with z ~ posterior (replay only: the policy must
  learn to act on posterior samples, the encoder keeps prior-like contexts);
- then `grad_steps_per_iteration` gradient steps, each on `meta_batch` tasks.

MetaAgent protocol: the per-task state is {"z": [S, latent], "ctx": [S, N, F]}.
Round 0 acts with z ~ prior and an empty context; `adapt` appends the new
episodes' transitions to the context and samples z from the posterior.
Rewards enter the context unscaled (in training and in `adapt` alike);
`reward_scale` multiplies them in the critic target only. Episodes are truncated,
never terminal: the critic always bootstraps from the next observation.

Randomness: training draws from `rng` (tasks, minibatches, sampler seeds) and torch's
global CPU generator (z and action noise), both saved by the trainer's checkpoints.
`initial_task_state` / `adapt` (the evaluator's verbs) use a generator of their own,
reseeded from `rng` after every iteration, so evaluating never shifts training.
"""
from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.base import SamplerLike
from metarl.buffers import GIB, TaskRingBuffers, add_episodes, check_ram, ram_note
from metarl.nn import TanhGaussianPolicy, mlp
from metarl.types import ConfigError, EpisodeBatch, Task

MIN_VAR = 1e-7


@dataclass(frozen=True)
class PEARLConfig:
    name: str = "pearl"
    meta_batch: int = 16                      # tasks per gradient step; also the sampler's task slots
    latent_dim: int = 7
    hidden_sizes: tuple[int, ...] = (300, 300, 300)   # policy and Q networks
    encoder_hidden: tuple[int, ...] = (200, 200, 200)
    batch_size: int = 256                     # SAC transitions per task per gradient step
    embedding_batch_size: int = 100           # context transitions per task per gradient step
    lr: float = 3e-4
    kl_weight: float = 0.1
    reward_scale: float = 10.0
    discount: float = 0.99
    tau: float = 0.005                        # target-network Polyak rate
    auto_entropy: bool = True                 # tune the entropy weight to target_entropy
    alpha: float = 1.0                        # the fixed entropy weight, or the initial one with auto_entropy
    target_entropy: float | None = None       # None: -act_dim
    num_initial_episodes: int = 10            # per training task, z ~ prior, before the first update
    tasks_per_iteration: int = 5              # training tasks collected on per iteration (<= meta_batch)
    num_prior_episodes: int = 2               # per sampled task, z ~ prior, into replay and context
    num_posterior_episodes: int = 0           # per sampled task, z ~ posterior, into replay and context
    num_extra_posterior_episodes: int = 2     # per sampled task, z ~ posterior, into replay only
    grad_steps_per_iteration: int = 1000
    replay_capacity: int = 100_000            # transitions kept per training task (ring buffer)
    use_next_obs_in_context: bool = False

    def __post_init__(self):
        if self.name != "pearl":
            raise ConfigError(f"agent.name: must be 'pearl' for PEARLConfig, got {self.name!r}")
        for n in ("meta_batch", "latent_dim", "batch_size", "embedding_batch_size", "num_initial_episodes",
                  "tasks_per_iteration", "grad_steps_per_iteration", "replay_capacity"):
            v = getattr(self, n)
            if not v > 0:
                raise ConfigError(f"agent.{n}: must be > 0, got {v}")
        for n in ("num_prior_episodes", "num_posterior_episodes", "num_extra_posterior_episodes"):
            v = getattr(self, n)
            if v < 0:
                raise ConfigError(f"agent.{n}: must be >= 0, got {v}")
        if self.num_prior_episodes + self.num_posterior_episodes < 1:
            raise ConfigError("agent.num_prior_episodes: num_prior_episodes + num_posterior_episodes must be >= 1 "
                              "(the context buffer of a sampled task needs episodes), got "
                              f"{self.num_prior_episodes} + {self.num_posterior_episodes}")
        if self.tasks_per_iteration > self.meta_batch:
            raise ConfigError(f"agent.tasks_per_iteration: must be <= agent.meta_batch ({self.meta_batch}, "
                              f"the sampler's task slots), got {self.tasks_per_iteration}")
        for n in ("hidden_sizes", "encoder_hidden"):
            sizes = getattr(self, n)
            if not sizes or not all(h > 0 for h in sizes):
                raise ConfigError(f"agent.{n}: must be a non-empty list of layer sizes > 0, got {list(sizes)}")
        for n in ("lr", "reward_scale", "alpha"):
            v = getattr(self, n)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"agent.{n}: must be a finite number > 0, got {v}")
        if not (self.kl_weight >= 0 and math.isfinite(self.kl_weight)):
            raise ConfigError(f"agent.kl_weight: must be a finite number >= 0, got {self.kl_weight}")
        if not 0.0 < self.discount <= 1.0:
            raise ConfigError(f"agent.discount: must be in (0, 1], got {self.discount}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"agent.tau: must be in (0, 1], got {self.tau}")
        if self.target_entropy is not None and not math.isfinite(self.target_entropy):
            raise ConfigError(f"agent.target_entropy: must be a finite number or null (-act_dim), "
                              f"got {self.target_entropy}")

    @property
    def episodes_per_task(self) -> int:
        """Episodes collected per sampled task per iteration."""
        return self.num_prior_episodes + self.num_posterior_episodes + self.num_extra_posterior_episodes


# ---- math ----------------------------------------------------------------------------------
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


class PEARLActor:
    """What sampler workers act with: the z-conditioned policy (a CPU copy) and nothing
    else, so the replay buffers never travel to worker processes."""

    def __init__(self, policy: TanhGaussianPolicy):
        self.policy = policy
        self.act_dim = policy.act_dim

    def act(self, obs: Tensor, task_state: dict[str, Tensor], *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        return self.policy.act(obs, task_state["z"], deterministic, noise), task_state


# ---- the agent -----------------------------------------------------------------------------
class PEARL:
    Config = PEARLConfig

    def __init__(self, cfg: PEARLConfig, obs_dim: int, act_dim: int, device: torch.device | str = "cpu",
                 n_train_tasks: int | None = None, horizon: int | None = None):
        """`n_train_tasks` and `horizon`, when given, size the buffers now (checked against
        available RAM); otherwise they are sized on the first `train_iteration`."""
        self.cfg = cfg
        self.meta_batch = cfg.meta_batch
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.device = torch.device(device)
        self.latent_dim = cfg.latent_dim
        self.ctx_dim = obs_dim + act_dim + 1 + (obs_dim if cfg.use_next_obs_in_context else 0)
        self.target_entropy = float(cfg.target_entropy if cfg.target_entropy is not None else -act_dim)

        latent, hidden = cfg.latent_dim, cfg.hidden_sizes
        self.encoder = mlp([self.ctx_dim, *cfg.encoder_hidden, 2 * latent], activation=nn.ReLU).to(self.device)
        self.policy = TanhGaussianPolicy(obs_dim + latent, act_dim, hidden).to(self.device)
        self.q1 = mlp([obs_dim + latent + act_dim, *hidden, 1], activation=nn.ReLU).to(self.device)
        self.q2 = mlp([obs_dim + latent + act_dim, *hidden, 1], activation=nn.ReLU).to(self.device)
        self.q1_target = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_target = copy.deepcopy(self.q2).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.alpha), device=self.device, requires_grad=cfg.auto_entropy)

        self.critic_params = [*self.encoder.parameters(), *self.q1.parameters(), *self.q2.parameters()]
        self.policy_params = list(self.policy.parameters())
        self.target_params: list[Tensor] = [*self.q1_target.parameters(), *self.q2_target.parameters()]
        self.source_params: list[Tensor] = [*self.q1.parameters(), *self.q2.parameters()]
        self.optimizers = {
            "encoder": torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr),
            "q": torch.optim.Adam(self.source_params, lr=cfg.lr),
            "policy": torch.optim.Adam(self.policy_params, lr=cfg.lr),
        }
        if cfg.auto_entropy:
            self.optimizers["alpha"] = torch.optim.Adam([self.log_alpha], lr=cfg.lr)

        self.replay: TaskRingBuffers | None = None
        self.context: TaskRingBuffers | None = None
        self.horizon: int | None = None
        self.collected_initial = False
        self.iterations = 0
        self._reseed_protocol(0)
        per_task = self.buffer_bytes(1, horizon or 1)
        if n_train_tasks is not None and horizon is not None:
            self._allocate(n_train_tasks, horizon)
        else:
            self._check_ram(per_task, 1)  # one task is a lower bound: refuse the absurd at once
            print(f"pearl: buffers need {per_task / 2**20:,.1f} MiB per training task (replay "
                  f"{cfg.replay_capacity:,} transitions); allocated on the first iteration", file=sys.stderr)

    # ---- buffers ----------------------------------------------------------------------
    def _buffers(self) -> tuple[TaskRingBuffers, TaskRingBuffers]:
        """(replay, context): allocated together, at construction when the number of training
        tasks and the horizon are known, else by the first iteration or a loaded state."""
        if self.replay is None or self.context is None:
            raise RuntimeError("PEARL buffers are not allocated yet (no training iteration or state loaded)")
        return self.replay, self.context

    def context_capacity(self, horizon: int) -> int:
        """Transitions the context buffer of one task must hold: its largest between-clear fill."""
        c = self.cfg
        return horizon * max(c.num_initial_episodes, c.num_prior_episodes + c.num_posterior_episodes)

    def buffer_bytes(self, n_tasks: int, horizon: int) -> int:
        return (TaskRingBuffers.bytes_needed(n_tasks, self.cfg.replay_capacity, self.obs_dim, self.act_dim)
                + TaskRingBuffers.bytes_needed(n_tasks, self.context_capacity(horizon), self.obs_dim,
                                               self.act_dim))

    def memory_bytes(self) -> int | None:
        """Bytes held by the replay and context buffers (None before they are sized)."""
        if self.replay is None or self.context is None:
            return None
        return self.replay.nbytes + self.context.nbytes

    def _check_ram(self, need: int, n_tasks: int) -> None:
        check_ram(need, "agent.replay_capacity", f"lower agent.replay_capacity (now {self.cfg.replay_capacity:,} "
                  f"transitions per task, {n_tasks} training task{'s' if n_tasks != 1 else ''})")

    def _allocate(self, n_tasks: int, horizon: int) -> None:
        need = self.buffer_bytes(n_tasks, horizon)
        self._check_ram(need, n_tasks)
        self.replay = TaskRingBuffers(n_tasks, self.cfg.replay_capacity, self.obs_dim, self.act_dim)
        self.context = TaskRingBuffers(n_tasks, self.context_capacity(horizon), self.obs_dim, self.act_dim)
        self.horizon = horizon
        print(f"pearl: replay + context buffers for {n_tasks} training tasks: {need / GIB:,.3f} GiB "
              f"({self.cfg.replay_capacity:,} + {self.context.capacity:,} transitions per task{ram_note()})",
              file=sys.stderr)

    def _add(self, positions: np.ndarray, batch: EpisodeBatch, to_context: bool) -> None:
        replay, context = self._buffers()
        add_episodes([replay, context] if to_context else [replay], positions, batch)

    # ---- context and posterior --------------------------------------------------------
    def _ctx_features(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                      next_obs: np.ndarray) -> Tensor:
        """Context transitions [..., F] from numpy fields (rewards unscaled)."""
        parts = [obs, actions, rewards[..., None]] + ([next_obs] if self.cfg.use_next_obs_in_context else [])
        return torch.from_numpy(np.concatenate(parts, -1).astype(np.float32, copy=False)).to(self.device)

    def factors(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """Per-transition Gaussian factors: ctx [..., N, F] -> mu, var [..., N, L]."""
        mu, raw = self.encoder(ctx).chunk(2, -1)
        return mu, F.softplus(raw).clamp_min(MIN_VAR)

    def posterior(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | context) for ctx [S, N, F]: mean and variance [S, L]."""
        if ctx.shape[-2] == 0:
            return product_of_gaussians(ctx.new_zeros(ctx.shape[:-1] + (self.latent_dim,)),
                                        ctx.new_ones(ctx.shape[:-1] + (self.latent_dim,)))
        return product_of_gaussians(*self.factors(ctx))

    def _randn(self, *shape: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal drawn on the CPU (torch's global generator, which checkpoints save,
        unless `generator` is given), then moved to the device."""
        return torch.randn(*shape, generator=generator).to(self.device)

    def _sample_z(self, mu: Tensor, var: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return mu + var.sqrt() * self._randn(*mu.shape, generator=generator)

    def _prior_state(self, n_tasks: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return {"z": self._randn(n_tasks, self.latent_dim, generator=generator),
                "ctx": torch.zeros(n_tasks, 0, self.ctx_dim, device=self.device)}

    def _reseed_protocol(self, seed: int) -> None:
        self.protocol_seed = int(seed)
        self._protocol_gen = torch.Generator().manual_seed(self.protocol_seed)

    def _posterior_state(self, positions: np.ndarray, rng: np.random.Generator) -> dict[str, Tensor]:
        """Task state for collection: z from the posterior of a context sampled from the
        tasks' context buffers (the prior where they are empty)."""
        context = self._buffers()[1]
        if int(context.size[positions].min()) == 0:
            return self._prior_state(len(positions))
        d = context.sample(positions, self.cfg.embedding_batch_size, rng)
        ctx = self._ctx_features(d["obs"], d["actions"], d["rewards"], d["next_obs"])
        with torch.no_grad():
            z = self._sample_z(*self.posterior(ctx))
        return {"z": z, "ctx": ctx}

    # ---- MetaAgent protocol -----------------------------------------------------------
    # initial_task_state and adapt (the evaluator's verbs) draw z from a generator of their
    # own, reseeded from `rng` after every training iteration: evaluating never perturbs
    # training randomness, so a run that skipped an evaluation (or resumed) trains identically.
    def initial_task_state(self, n_tasks: int) -> dict[str, Tensor]:
        """z ~ the prior N(0, I), empty context."""
        return self._prior_state(n_tasks, self._protocol_gen)

    def act(self, obs: Tensor, task_state: dict[str, Tensor], *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """tanh-Gaussian action on [obs, z]; `noise` [S, A] standard normal; deterministic: tanh(mean)."""
        dev = task_state["z"].device
        with torch.no_grad():
            a = self.policy.act(obs, task_state["z"].to(self.device), deterministic, noise)
        return a.to(dev), task_state

    def actor(self) -> PEARLActor:
        if self.device.type == "cpu":
            return PEARLActor(self.policy)
        return PEARLActor(copy.deepcopy(self.policy).cpu())

    def adapt(self, task_state: dict[str, Tensor], episodes: EpisodeBatch) -> dict[str, Tensor]:
        """Append the episodes' transitions to each task's context; z ~ the new posterior."""
        s, m, t = episodes.rewards.shape
        new = self._ctx_features(episodes.obs.reshape(s, m * t, -1), episodes.actions.reshape(s, m * t, -1),
                                 episodes.rewards.reshape(s, m * t), episodes.next_obs.reshape(s, m * t, -1))
        ctx = torch.cat([task_state["ctx"].to(self.device), new], 1)
        with torch.no_grad():
            z = self._sample_z(*self.posterior(ctx), generator=self._protocol_gen)
        return {"z": z, "ctx": ctx}

    # ---- one iteration ----------------------------------------------------------------
    def _collect(self, sampler: SamplerLike, tasks: Sequence[Task], positions: np.ndarray, rng: np.random.Generator
                 ) -> tuple[list[EpisodeBatch], list[EpisodeBatch]]:
        c = self.cfg
        sel = [tasks[int(i)] for i in positions]
        context = self._buffers()[1]
        for p in positions:
            context.clear(int(p))
        prior, post = [], []
        if c.num_prior_episodes:
            batch, _ = sampler.sample(self, sel, self._prior_state(len(sel)), c.num_prior_episodes, rng)
            self._add(positions, batch, to_context=True)
            prior.append(batch)
        for k in range(c.num_posterior_episodes + c.num_extra_posterior_episodes):
            batch, _ = sampler.sample(self, sel, self._posterior_state(positions, rng), 1, rng)
            self._add(positions, batch, to_context=k < c.num_posterior_episodes)
            post.append(batch)
        return prior, post

    def train_iteration(self, sampler: SamplerLike, tasks: Sequence[Task],
                        rng: np.random.Generator) -> dict[str, float]:
        c = self.cfg
        n = len(tasks)
        if self.replay is None:
            self._allocate(n, int(sampler.horizon))
        elif self.replay.n_tasks != n:
            raise ValueError(f"PEARL buffers were sized for {self.replay.n_tasks} training tasks, got {n}")
        replay = self._buffers()[0]
        slots = int(getattr(sampler, "n_slots", self.meta_batch))
        if not self.collected_initial:
            for start in range(0, n, slots):
                pos = np.arange(start, min(start + slots, n))
                batch, _ = sampler.sample(self, [tasks[int(i)] for i in pos], self._prior_state(len(pos)),
                                          c.num_initial_episodes, rng)
                self._add(pos, batch, to_context=True)
            self.collected_initial = True
        positions = np.sort(rng.choice(n, size=min(c.tasks_per_iteration, n), replace=False))
        prior, post = self._collect(sampler, tasks, positions, rng)

        total: Tensor | None = None   # metric sums stay on the device: one transfer per iteration
        rejected = 0
        for _ in range(c.grad_steps_per_iteration):
            m = self._update(rng)
            if m is None:
                rejected += 1
                continue
            total = m if total is None else total + m
        ok = max(c.grad_steps_per_iteration - rejected, 1)
        sums = {} if total is None else dict(zip(self.UPDATE_METRICS, total.tolist()))
        self.iterations += 1
        self._reseed_protocol(int(rng.integers(0, 2**63 - 1)))

        def stats(batches: list[EpisodeBatch]) -> tuple[float, float]:
            ret = np.concatenate([b.episode_returns().ravel() for b in batches])
            suc = np.concatenate([b.episode_success().ravel() for b in batches])
            return float(ret.mean()), float(suc.mean())

        main = post or prior
        metrics = {"rollout/return_mean": stats(main)[0], "rollout/success_rate": stats(main)[1]}
        if prior:
            metrics["rollout/return_mean_prior"], metrics["rollout/success_rate_prior"] = stats(prior)
        metrics.update({f"train/{k}": v / ok for k, v in sums.items()})
        metrics["train/rejected_updates"] = float(rejected)
        metrics["buffer/transitions"] = float(replay.size.sum())
        return metrics

    UPDATE_METRICS = ("qf_loss", "policy_loss", "kl", "alpha", "q_mean", "z_std", "entropy")

    def _update(self, rng: np.random.Generator) -> Tensor | None:
        """One SAC + encoder gradient step on `meta_batch` tasks: the step's metrics as one
        tensor (order UPDATE_METRICS, left on the device), or None (nothing changed) when a
        loss or gradient is not finite."""
        cfg = self.cfg
        replay, context = self._buffers()
        tasks = rng.choice(replay.n_tasks, size=cfg.meta_batch, replace=replay.n_tasks < cfg.meta_batch)
        ctx_data = context.sample(tasks, cfg.embedding_batch_size, rng)
        sac_data = replay.sample(tasks, cfg.batch_size, rng)
        ctx = self._ctx_features(ctx_data["obs"], ctx_data["actions"], ctx_data["rewards"], ctx_data["next_obs"])
        obs, actions, next_obs, rewards = (torch.from_numpy(sac_data[k]).to(self.device)
                                           for k in ("obs", "actions", "next_obs", "rewards"))
        n_tasks, per_task = len(tasks), cfg.batch_size

        # the posterior over z of each task's context; its KL to the prior regularises the encoder
        mu, var = self.posterior(ctx)
        z = mu + var.sqrt() * self._randn(n_tasks, self.latent_dim)
        kl = kl_to_prior(mu, var)                                    # [n_tasks]
        z_per_sample = z[:, None, :].expand(n_tasks, per_task, self.latent_dim)
        z_detached = z_per_sample.detach()                           # the policy loss does not train the encoder
        alpha = self.log_alpha.detach().exp()

        # critic: soft Bellman target from the target critics; the encoder learns through this loss
        with torch.no_grad():
            next_action, next_logp = self.policy.sample(torch.cat([next_obs, z_detached], -1),
                                                        self._randn(n_tasks, per_task, self.act_dim))
            next_input = torch.cat([next_obs, z_detached, next_action], -1)
            q_next = torch.min(self.q1_target(next_input), self.q2_target(next_input)).squeeze(-1)
            q_target = cfg.reward_scale * rewards + cfg.discount * (q_next - alpha * next_logp)
        q_input = torch.cat([obs, z_per_sample, actions], -1)
        q1, q2 = self.q1(q_input).squeeze(-1), self.q2(q_input).squeeze(-1)
        qf_loss = F.mse_loss(q1, q_target) + F.mse_loss(q2, q_target)
        critic_loss = qf_loss + cfg.kl_weight * kl.sum()  # KL summed over the meta-batch, as in the paper's code

        # policy: maximise the twin-Q minimum plus entropy, on z detached
        new_action, new_logp = self.policy.sample(torch.cat([obs, z_detached], -1),
                                                  self._randn(n_tasks, per_task, self.act_dim))
        new_input = torch.cat([obs, z_detached, new_action], -1)
        q_new = torch.min(self.q1(new_input), self.q2(new_input)).squeeze(-1)
        policy_loss = (alpha * new_logp - q_new).mean()

        losses = [critic_loss, policy_loss]
        grads = [*torch.autograd.grad(critic_loss, self.critic_params),
                 *torch.autograd.grad(policy_loss, self.policy_params)]
        if cfg.auto_entropy:
            alpha_loss = -(self.log_alpha * (new_logp.detach() + self.target_entropy)).mean()
            losses.append(alpha_loss)
            grads.extend(torch.autograd.grad(alpha_loss, [self.log_alpha]))
        # one host sync per step: every loss and gradient finite, else skip the step
        if not bool(torch.stack([torch.isfinite(t).all() for t in (*losses, *grads)]).all()):
            return None
        params = self.critic_params + self.policy_params + ([self.log_alpha] if cfg.auto_entropy else [])
        for param, grad in zip(params, grads):
            param.grad = grad
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(self.target_params, self.source_params, cfg.tau)
        return torch.stack([qf_loss, policy_loss, kl.mean(), alpha, q1.mean(), var.sqrt().mean(),
                            -new_logp.mean()]).detach()

    # ---- checkpoints ------------------------------------------------------------------
    _NETS = ("encoder", "policy", "q1", "q2", "q1_target", "q2_target")

    def state_dict(self) -> dict[str, Any]:
        """Networks, target networks, optimizers, log_alpha, counters and the buffers. Buffer
        entries are tensors that may share memory with the live arrays: serialise the state
        before training further."""
        out: dict[str, Any] = {k: {n: v.detach().cpu().clone() for n, v in getattr(self, k).state_dict().items()}
                               for k in self._NETS}
        out["log_alpha"] = self.log_alpha.detach().cpu().clone()
        out["optimizers"] = {k: copy.deepcopy(o.state_dict()) for k, o in self.optimizers.items()}
        out["collected_initial"] = self.collected_initial
        out["iterations"] = self.iterations
        out["protocol_seed"] = self.protocol_seed
        out["buffers"] = None
        if self.replay is not None:
            replay, context = self._buffers()
            out["buffers"] = {"n_tasks": replay.n_tasks, "horizon": self.horizon,
                              "replay": replay.state(), "context": context.state()}
        return out

    # what acting and adapting need (benchmarks/release.py): no critics, optimizers or buffers
    RELEASE_KEYS = ("encoder", "policy", "log_alpha", "collected_initial", "iterations", "protocol_seed")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A released policy (`policy_only`) holds only RELEASE_KEYS: the critics keep their
        initial weights and the buffers stay empty; it can be evaluated, not trained on."""
        policy_only = bool(state.get("policy_only"))
        for k in self._NETS:
            if policy_only and k not in state:
                continue
            getattr(self, k).load_state_dict(state[k])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for k, o in self.optimizers.items():
            if not policy_only:
                o.load_state_dict(state["optimizers"][k])
        self.collected_initial = bool(state["collected_initial"])
        self.iterations = int(state["iterations"])
        self._reseed_protocol(state["protocol_seed"])
        buf = state.get("buffers")
        if buf is None:
            self.replay = self.context = None
            self.horizon = None
            return
        if self.replay is None or self.replay.n_tasks != buf["n_tasks"] or self.horizon != buf["horizon"]:
            self._allocate(int(buf["n_tasks"]), int(buf["horizon"]))
        replay, context = self._buffers()
        replay.load(buf["replay"])
        context.load(buf["context"])
