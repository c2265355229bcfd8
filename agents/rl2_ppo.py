"""RL²-PPO: a recurrent policy that learns to adapt inside its hidden state.

A *trial* is `episodes_per_task` consecutive episodes on one task. The GRU sees
the observation plus the previous action, reward and episode-end flag; its
hidden state is carried across episode boundaries and reset only when a new
trial starts. The outer loop is PPO (clipped objective, GAE over the whole
trial with a value head or a linear feature baseline, advantage normalisation,
gradient clipping) with truncated back-propagation through time over chunks of
the trial: the hidden state at each chunk start comes from the rollout-time
forward pass.

Per-task state of the MetaAgent protocol: {"h": [S, H], "prev_a": [S, A],
"prev_r": [S, 1], "prev_d": [S, 1]}. `adapt` keeps it (the trial continues), so
the evaluator's round k is episode k of a trial.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from agents.base import DISCOUNT, GAE_LAMBDA, LAYER_SIZES, Actor, AgentConfig, MetaAgent, SamplerLike
from metarl.fields import nonnegative, one_of, positive
from metarl.nn import gaussian_log_prob, mlp
from metarl.returns import LinearFeatureBaseline, discount_cumsum, gae
from metarl.types import EpisodeBatch, Task, UpdateResult


@dataclass(frozen=True)
class RL2PPOConfig(AgentConfig):
    name: str = "rl2_ppo"
    episodes_per_task: int = field(default=10, metadata=positive())     # episodes per trial
    hidden_size: int = field(default=256, metadata=positive())          # GRU units
    head_hidden: tuple[int, ...] = field(default=(), metadata=LAYER_SIZES)  # optional MLP between GRU and heads
    init_log_std: float = 0.0
    lr: float = field(default=5e-4, metadata=positive())
    clip: float = field(default=0.2, metadata=positive())
    epochs: int = field(default=10, metadata=positive())
    minibatches: int = field(default=4, metadata=positive())            # minibatches of trial chunks per epoch
    # stop the update's epochs after one whose mean KL(old || new) exceeds this (None: never). The KL is
    # the nonnegative estimate mean((r - 1) - log r), r = new/old probability ratio, logged as
    # train/approx_kl_k3 (train/approx_kl is the plain mean(log old - log new), which can be negative)
    target_kl: float | None = field(default=None, metadata=positive(nullable=True))
    bptt_chunk: int = field(default=0, metadata=nonnegative(note="(0: one episode)"))  # steps per TBPTT chunk
    discount: float = field(default=0.99, metadata=DISCOUNT)
    gae_lambda: float = field(default=0.95, metadata=GAE_LAMBDA)
    entropy_coef: float = field(default=5e-3, metadata=nonnegative())
    value_coef: float = field(default=0.5, metadata=nonnegative())
    # what GAE subtracts: "value_head", the learned head on the GRU (its loss, scaled by value_coef,
    # trains the trunk too), or "linear", a linear feature baseline fitted to each task's trial in
    # the batch (observation, its square, time in the episode; as garage's RL²), and the GRU trains
    # on the policy loss alone (the value head is kept but not trained)
    baseline: str = field(default="value_head", metadata=one_of("value_head", "linear"))
    max_grad_norm: float = field(default=1.0, metadata=positive())
    reward_input_scale: float = 1.0  # scale of the previous reward fed to the GRU
    # the policy's standard deviation: "param", one learned log-std per action dimension (as garage's
    # RL²), or "state", a linear head on the GRU output, per step (as metaworld-algorithms' RL²), so the
    # policy can explore in a trial's first episodes and act precisely once it knows the task; it starts
    # at init_log_std everywhere and is clamped to STATE_LOG_STD_RANGE
    std: str = field(default="param", metadata=one_of("param", "state"))


# the state-dependent log-std's range, std in [0.0067, 7.4]: a tighter floor than the SAC policy's
# (metarl.nn.LOG_STD_MIN, -20), since PPO's probability ratios under a tiny std swing by orders of magnitude
STATE_LOG_STD_RANGE = (-5.0, 2.0)


def explained_variance(pred: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - pred) / Var(target): 1 for a perfect baseline, 0 for a constant one."""
    var = float(np.var(target))
    return float(1.0 - np.var(target - pred) / var) if var > 0 else 0.0


class RecurrentGaussianPolicy(nn.Module):
    """GRU trunk over [obs, prev action, prev reward, prev done] with a Gaussian policy head and a value
    head; the log-std is one parameter per action dimension (`std="param"`) or a linear head on the
    GRU output (`std="state"`, parameters `std_head.*`)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, head_hidden: Sequence[int], init_log_std: float,
                 std: str = "param"):
        super().__init__()
        self.in_dim = obs_dim + act_dim + 2
        self.gru = nn.GRU(self.in_dim, hidden, batch_first=True)
        self.pi = mlp([hidden, *head_hidden, act_dim], out_gain=0.01)
        self.v = mlp([hidden, *head_hidden, 1], out_gain=1.0)
        self.std_head: nn.Linear | None = None
        if std == "state":
            self.std_head = nn.Linear(hidden, act_dim)
            nn.init.orthogonal_(self.std_head.weight, gain=0.01)
            nn.init.constant_(self.std_head.bias, float(init_log_std))
        else:
            self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def log_std_of(self, out: Tensor) -> Tensor:
        """GRU output [..., H] -> the policy's log-std [..., A] at those steps."""
        if self.std_head is not None:
            return self.std_head(out).clamp(*STATE_LOG_STD_RANGE)
        return self.log_std.expand(*out.shape[:-1], -1)

    def forward(self, x: Tensor, h0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, L, F], h0 [B, H] -> mean [B, L, A], value [B, L], outputs [B, L, H]."""
        out, _ = self.gru(x, h0.unsqueeze(0).contiguous())
        return self.pi(out), self.v(out).squeeze(-1), out


class _Actor(Actor):
    """What the sampler acts with (picklable, CPU): policy network + RL² state handling."""

    def __init__(self, net: RecurrentGaussianPolicy, reward_scale: float):
        self.net = net
        self.reward_scale = reward_scale

    def act(self, obs: Tensor, state: dict[str, Tensor], *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        h = state["h"]
        x = torch.cat([obs.to(h), state["prev_a"], state["prev_r"], state["prev_d"]], dim=-1)
        # one GRU step with the sequence GRU's weights, and the policy head only: 42 us a call for
        # one slot against 66 us through nn.GRU on a length-1 sequence plus the value head (the
        # learner recomputes everything over the trial with `net.forward`; tests/test_rl2.py
        # checks the sampled means against that pass)
        gru = self.net.gru
        h_new = torch.ops.aten.gru_cell(x, h, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
        mean = self.net.pi(h_new)
        new = dict(state, h=h_new)
        if deterministic:
            return mean, new
        if noise is None:
            noise = torch.randn_like(mean)
        return mean + self.net.log_std_of(h_new).exp() * noise.to(mean), new

    def observe(self, state: dict[str, Tensor], action: Tensor, reward: Tensor,
                done: bool | np.ndarray) -> dict[str, Tensor]:
        """`done`: one flag for all slots, or one per slot (episodes that end on success)."""
        h = state["h"]
        if isinstance(done, (bool, np.bool_)):
            prev_d = torch.full_like(state["prev_d"], float(done))
        else:
            prev_d = torch.as_tensor(np.asarray(done, np.float32)).to(h).reshape(state["prev_d"].shape)
        return dict(state, prev_a=action.to(h), prev_r=(reward.to(h) * self.reward_scale).unsqueeze(-1),
                    prev_d=prev_d)


def trial_inputs(batch: EpisodeBatch, reward_scale: float) -> np.ndarray:
    """[S, M*T, D+A+2]: each step's observation with the previous step's action, reward and
    episode-end flag (zeros at the start of the trial), exactly what the actor saw."""
    s, m, t = batch.rewards.shape
    obs = batch.obs.reshape(s, m * t, -1)
    act = batch.actions.reshape(s, m * t, -1)
    rew = batch.rewards.reshape(s, m * t, 1) * reward_scale
    ends = np.zeros((s, m, t, 1), np.float32)
    ends[:, :, -1] = 1.0
    done = ends.reshape(s, m * t, 1)
    shift = lambda a: np.concatenate([np.zeros_like(a[:, :1]), a[:, :-1]], axis=1)  # noqa: E731
    return np.concatenate([obs, shift(act), shift(rew), shift(done)], axis=-1).astype(np.float32)


class RL2PPO(MetaAgent):
    Config = RL2PPOConfig

    def __init__(self, cfg: RL2PPOConfig, obs_dim: int, act_dim: int, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.meta_batch = cfg.meta_batch
        self.act_dim = act_dim
        self.device = torch.device(device)
        self.net = RecurrentGaussianPolicy(obs_dim, act_dim, cfg.hidden_size, cfg.head_hidden,
                                           cfg.init_log_std, cfg.std).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        # the value head predicts returns divided by a running scale of the returns, so the
        # value loss keeps the same size whatever the reward scale of the benchmark
        self.value_scale = torch.ones((), dtype=torch.float64)

    # ---- MetaAgent protocol ---------------------------------------------------------
    def initial_task_state(self, n_tasks: int, rng: np.random.Generator | None = None) -> dict[str, Tensor]:
        """Zeros: a new trial (no randomness: `rng` is not used)."""
        z = lambda *shape: torch.zeros(n_tasks, *shape, device=self.device)  # noqa: E731
        return {"h": z(self.cfg.hidden_size), "prev_a": z(self.act_dim), "prev_r": z(1), "prev_d": z(1)}

    def actor(self) -> _Actor:
        net = self.net if self.device.type == "cpu" else copy.deepcopy(self.net).cpu()
        return _Actor(net, self.cfg.reward_input_scale)

    def act(self, obs: Tensor, task_state: dict[str, Tensor], *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        return _Actor(self.net, self.cfg.reward_input_scale).act(obs, task_state, deterministic=deterministic,
                                                                 noise=noise)

    def observe(self, task_state: dict[str, Tensor], action: Tensor, reward: Tensor,
                done: bool | np.ndarray) -> dict[str, Tensor]:
        return _Actor(self.net, self.cfg.reward_input_scale).observe(task_state, action, reward, done)

    def adapt(self, task_state: dict[str, Tensor], episodes: EpisodeBatch,
              rng: np.random.Generator | None = None) -> dict[str, Tensor]:
        return task_state  # the trial goes on: what was seen already lives in the hidden state

    # ---- learner --------------------------------------------------------------------
    def chunk_len(self, horizon: int) -> int:
        return self.cfg.bptt_chunk or horizon

    def forward_chunks(self, x: Tensor, chunk: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Full-trial forward in chunks of `chunk` steps, carrying the hidden state (detached at chunk
        boundaries). x [B, L, F] -> mean, log-std [B, L, A], value [B, L], chunk-start hidden [B, n_chunks, H]."""
        b, length, _ = x.shape
        h = torch.zeros(b, self.cfg.hidden_size, device=x.device, dtype=x.dtype)
        means, log_stds, values, starts = [], [], [], []
        for a in range(0, length, chunk):
            starts.append(h)
            m, v, out = self.net(x[:, a:a + chunk], h)
            means.append(m)
            log_stds.append(self.net.log_std_of(out))
            values.append(v)
            h = out[:, -1].detach()
        return torch.cat(means, 1), torch.cat(log_stds, 1), torch.cat(values, 1), torch.stack(starts, 1)

    def train_iteration(self, sampler: SamplerLike, tasks: Sequence[Task],
                        rng: np.random.Generator) -> UpdateResult:
        idx = rng.choice(len(tasks), size=self.meta_batch, replace=len(tasks) < self.meta_batch)
        batch, _ = sampler.sample(self, [tasks[i] for i in idx], self.initial_task_state(self.meta_batch, rng),
                                  self.cfg.episodes_per_task, rng)
        result = self.update(batch, rng)
        result.success_rate = float(batch.episode_success().mean())
        result.scalars = {
            "rollout/return_mean": float(batch.episode_returns().mean()),
            "rollout/return_first_episode": float(batch.episode_returns()[:, 0].mean()),
            "rollout/return_last_episode": float(batch.episode_returns()[:, -1].mean()),
            "rollout/success_last_episode": float(batch.episode_success()[:, -1].mean()),
            **result.scalars}
        return result

    @staticmethod
    def linear_baseline(obs: np.ndarray, returns: np.ndarray) -> np.ndarray:
        """obs [S, M, T, D], returns [S, M*T] (discounted over the whole trial, across episode ends,
        as GAE does) -> values [S, M*T]: per task, a linear feature baseline fitted to its trial."""
        s, m, t = obs.shape[:3]
        returns = returns.reshape(s, m, t)
        return np.stack([LinearFeatureBaseline().fit(obs[i], returns[i]).predict(obs[i]).reshape(m * t)
                         for i in range(s)])

    def update(self, batch: EpisodeBatch, rng: np.random.Generator) -> UpdateResult:
        """PPO epochs over the trials' chunks; a minibatch with a non-finite loss or gradient is skipped."""
        cfg = self.cfg
        s, m, t = batch.rewards.shape
        chunk = self.chunk_len(t)
        x = torch.as_tensor(trial_inputs(batch, cfg.reward_input_scale), device=self.device)
        act = torch.as_tensor(batch.actions.reshape(s, m * t, -1), device=self.device)
        with torch.no_grad():
            mean, log_std_old, values_t, h_starts = self.forward_chunks(x, chunk)
            logp_old = gaussian_log_prob(mean, log_std_old, act)
        rewards = batch.rewards.reshape(s, m * t).astype(np.float64)
        trial_returns = discount_cumsum(rewards, cfg.discount)
        linear = cfg.baseline == "linear"
        if linear:
            values = self.linear_baseline(batch.obs, trial_returns)
        else:
            values = values_t.cpu().numpy().astype(np.float64) * float(self.value_scale)
        adv = gae(rewards, values, cfg.discount, cfg.gae_lambda)
        ret = adv + values
        baseline_ev = explained_variance(values, trial_returns)
        if not linear:
            self.value_scale = 0.9 * self.value_scale + 0.1 * torch.tensor(max(float(ret.std()), 1e-3),
                                                                            dtype=torch.float64)
        returns = torch.as_tensor(ret / float(self.value_scale), dtype=torch.float32, device=self.device)
        adv_t = torch.as_tensor((adv - adv.mean()) / (adv.std() + 1e-8), dtype=torch.float32, device=self.device)

        # split trials into chunks: [S * n_chunks, chunk, ...]
        n_chunks = math.ceil(m * t / chunk)
        pad = n_chunks * chunk - m * t

        def chunks(a: Tensor) -> Tensor:
            if pad:
                a = torch.cat([a, a.new_zeros(a.shape[0], pad, *a.shape[2:])], 1)
            return a.reshape(s * n_chunks, chunk, *a.shape[2:])

        valid = chunks(torch.ones(s, m * t, device=self.device))
        cx, cact, cadv, cret, clogp = map(chunks, (x, act, adv_t, returns, logp_old))
        ch0 = h_starts.reshape(s * n_chunks, -1)
        n = s * n_chunks
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "approx_kl_k3": 0.0,
                "clip_fraction": 0.0}
        rejected, steps, epochs_run = 0, 0, 0
        for _ in range(cfg.epochs):
            perm = rng.permutation(n)
            epoch_kl, epoch_steps = 0.0, 0
            for part in np.array_split(perm, min(cfg.minibatches, n)):
                mb = torch.as_tensor(part, device=self.device)
                mean, value, out = self.net(cx[mb], ch0[mb])
                log_std = self.net.log_std_of(out)
                logp = gaussian_log_prob(mean, log_std, cact[mb])
                w = valid[mb]
                denom = w.sum()
                ratio = torch.exp(logp - clogp[mb])
                a = cadv[mb]
                pi_loss = -(torch.min(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a) * w).sum() / denom
                v_loss = 0.5 * ((value - cret[mb]).pow(2) * w).sum() / denom
                # per step, summed over action dimensions (the same at every step with std="param")
                entropy = ((log_std.sum(-1) + self.act_dim * 0.5 * math.log(2 * math.pi * math.e)) * w).sum() / denom
                loss = pi_loss - cfg.entropy_coef * entropy
                if not linear:
                    loss = loss + cfg.value_coef * v_loss
                self.opt.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):
                    rejected += 1
                    continue
                loss.backward()
                norm = nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
                if not torch.isfinite(norm):
                    self.opt.zero_grad(set_to_none=True)
                    rejected += 1
                    continue
                self.opt.step()
                steps += 1
                with torch.no_grad():
                    sums["policy_loss"] += float(pi_loss)
                    if not linear:
                        sums["value_loss"] += float(v_loss)
                    sums["entropy"] += float(entropy)
                    sums["approx_kl"] += float(((clogp[mb] - logp) * w).sum() / denom)
                    kl = float((((ratio - 1) - (logp - clogp[mb])) * w).sum() / denom)
                    sums["approx_kl_k3"] += kl
                    sums["clip_fraction"] += float((((ratio - 1).abs() > cfg.clip).float() * w).sum() / denom)
                epoch_kl, epoch_steps = epoch_kl + kl, epoch_steps + 1
            epochs_run += 1
            if cfg.target_kl is not None and epoch_steps and epoch_kl / epoch_steps > cfg.target_kl:
                break
        if linear:
            del sums["value_loss"]  # the value head is not trained
        out = {f"train/{k}": v / max(steps, 1) for k, v in sums.items()}
        out.update({"train/epochs": float(epochs_run),
                    # std="state": the mean over the batch's steps, under the policy that sampled them
                    "train/policy_std": float(self.net.log_std.detach().exp().mean()) if cfg.std == "param"
                    else float(log_std_old.exp().mean()),
                    "train/value_scale": float(self.value_scale),
                    "train/baseline_explained_variance": baseline_ev})
        return UpdateResult(rejected=rejected, scalars=out)

    # ---- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
                "opt": copy.deepcopy(self.opt.state_dict()), "value_scale": self.value_scale.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A released policy (`policy_only`, benchmarks/release.py) has no optimizer state."""
        self.net.load_state_dict(state["net"])
        if not state.get("policy_only"):
            self.opt.load_state_dict(state["opt"])
        self.value_scale = state["value_scale"].clone()

    RELEASE_KEYS = ("net", "value_scale")  # what acting and adapting need
