"""RL²-PPO: a recurrent policy that learns to adapt inside its hidden state.

A *trial* is `episodes_per_task` consecutive episodes on one task. The GRU sees
the observation plus the previous action, reward and episode-end flag; its
hidden state is carried across episode boundaries and reset only when a new
trial starts. The outer loop is PPO (clipped objective, GAE over the whole
trial with a value head or a linear feature baseline, optional advantage
normalisation, gradient clipping) with back-propagation through time in one of
two modes (`bptt`):

- "episode": chunks of `bptt_chunk` steps (0: one episode), shuffled into
  minibatches, each started from the hidden state of the pre-update pass and
  detached there. With one-episode chunks no gradient crosses an episode end, so
  nothing trains episode k to store what pays off in episode k+1.
- "trial": truncated BPTT over the trial in time order. Each minibatch is one
  window of `bptt_chunk` steps (0: the whole trial) for a group of tasks; a
  window repeats the last `bptt_overlap` steps of the previous one (their loss
  is counted once, in the earlier window), and its start state is carried from
  the previous window's pass with the current weights. Windows straddle the
  episode ends, so the loss of episode k+1 reaches back into episode k.

The baseline GAE subtracts (`baseline`): "value_head", the learned head on the GRU (its loss,
scaled by `value_coef`, trains the trunk too); "linear", a linear feature baseline fitted to each
task's trial in the batch (observation, its square, time in the episode; as garage's RL²), the GRU
then training on the policy loss alone (the value head is kept, untrained); or "linear_trial", as
metaworld-algorithms' RL², one linear fit per task over the whole trial as one sequence (features:
the GRU's input, its square and powers of the time in the trial). `target_kl` stops an update's
epochs after one whose KL estimate mean((r - 1) - log r) (r = new/old probability ratio, logged as
train/approx_kl_k3; train/approx_kl is the plain mean(log old - log new), which can be negative)
exceeds it.

The policy's standard deviation with the linear head (`std`): "param", one learned log-std per
action dimension (as garage's RL²), or "state", a linear head on the GRU output, per step (as
metaworld-algorithms' RL²), so the policy can explore in a trial's first episodes and act
precisely once it knows the task; it starts at init_log_std everywhere and is clamped to
STATE_LOG_STD_RANGE.

The policy head (`head`) is "linear" (an unbounded mean; std per `std`) or
"bounded": tanh on the mean and a per-step log-std squashed into
[log_std_min, log_std_max] (metaworld-algorithms: [-1, 1]), starting at init_log_std, which must
lie inside that band; the evaluation acts with the tanh'd mean. With the bounded head the learner scores the action
the env received (clipped to [-1, 1]) under the clipped Gaussian: a density
inside the box, the tail mass at a face of it.

Per-task state of the MetaAgent protocol: {"h": [S, H], "prev_a": [S, A],
"prev_r": [S, 1], "prev_d": [S, 1]}. `adapt` keeps it (the trial continues), so
the evaluator's round k is episode k of a trial.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from metarl.agents.base import (DISCOUNT, GAE_LAMBDA, INIT_LOG_STD, LAYER_SIZES, TASK_SAMPLING, Actor, AgentConfig,
                                MetaAgent, SamplerLike, TaskSampling, draw_meta_batch)
from metarl.core.fields import Choice, in_range, nonnegative, one_of, positive
from metarl.core.nn import gaussian_log_prob, mlp
from metarl.core.returns import LinearFeatureBaseline, discount_cumsum, gae
from metarl.core.types import EpisodeBatch, RecurrentState, Task, UpdateResult


class BPTT(Choice):
    """Back-propagation through time: per-episode chunks, or time-ordered windows over the trial."""
    EPISODE = "episode"
    TRIAL = "trial"


class Baseline(Choice):
    """What GAE subtracts: the learned value head, or a per-task linear fit (per episode or over the trial)."""
    VALUE_HEAD = "value_head"
    LINEAR = "linear"
    LINEAR_TRIAL = "linear_trial"


class Std(Choice):
    """The linear head's standard deviation: one parameter per action dimension, or per step."""
    PARAM = "param"
    STATE = "state"


class Head(Choice):
    """The policy head: unbounded linear mean, or tanh mean with a tanh-banded per-step log-std."""
    LINEAR = "linear"
    BOUNDED = "bounded"


@dataclass(frozen=True)
class RL2PPOConfig(AgentConfig):
    name: str = "rl2_ppo"
    """The agent's registry name."""
    episodes_per_task: int = field(default=10, metadata=positive())
    """Episodes per trial (the hidden state carries across them)."""
    hidden_size: int = field(default=256, metadata=positive())
    """GRU units."""
    head_hidden: tuple[int, ...] = field(default=(), metadata=LAYER_SIZES)
    """Optional MLP between the GRU and the heads."""
    init_log_std: float = field(default=0.0, metadata=INIT_LOG_STD)
    """The policy's initial log standard deviation (inside the band with head=bounded)."""
    lr: float = field(default=5e-4, metadata=positive())
    """Adam step size."""
    clip: float = field(default=0.2, metadata=positive())
    """PPO's clip range of the probability ratio."""
    epochs: int = field(default=10, metadata=positive())
    """PPO epochs over each batch."""
    minibatches: int = field(default=4, metadata=positive())
    """Minibatches of trial chunks per epoch."""
    target_kl: float | None = field(default=None, metadata=positive(nullable=True))
    """Stop the epochs after one whose mean KL (train/approx_kl_k3) exceeds this; null: never."""
    bptt: BPTT = field(default=BPTT.EPISODE, metadata=one_of(BPTT))
    """Back-propagation through time: episode (shuffled chunks) or trial (time-ordered windows); module doc."""
    bptt_chunk: int = field(default=0, metadata=nonnegative(note="(0: one episode, or the whole trial with bptt=trial)"))
    """Steps per BPTT chunk or window."""
    bptt_overlap: int = field(default=0, metadata=nonnegative())
    """bptt=trial: steps each window repeats of the previous one."""
    discount: float = field(default=0.99, metadata=DISCOUNT)
    """γ of the returns (over the whole trial)."""
    gae_lambda: float = field(default=0.95, metadata=GAE_LAMBDA)
    """λ of GAE."""
    entropy_coef: float = field(default=5e-3, metadata=nonnegative())
    """Weight of the entropy bonus."""
    value_coef: float = field(default=0.5, metadata=nonnegative())
    """Weight of the value head's loss (baseline value_head)."""
    baseline: Baseline = field(default=Baseline.VALUE_HEAD, metadata=one_of(Baseline))
    """What GAE subtracts: value_head, linear (per episode, as garage) or linear_trial (as metaworld-algorithms)."""
    normalize_advantages: bool = True
    """Centre and scale the batch's advantages (False: raw GAE, as the references)."""
    max_grad_norm: float = field(default=1.0, metadata=positive())
    """Gradient-norm clip."""
    reward_input_scale: float = 1.0
    """Scale of the previous reward fed to the GRU."""
    std: Std = field(default=Std.PARAM, metadata=one_of(Std))
    """head=linear: one learned log-std per action dimension (param) or a head on the GRU output (state)."""
    head: Head = field(default=Head.LINEAR, metadata=one_of(Head))
    """linear: unbounded mean; bounded: tanh mean, per-step log-std squashed into [log_std_min, log_std_max]."""
    log_std_min: float = field(default=-1.0, metadata=in_range(-10, 10))
    """head=bounded: lower end of the log-std band."""
    log_std_max: float = field(default=1.0, metadata=in_range(-10, 10))
    """head=bounded: upper end of the log-std band."""
    encoder_hidden: tuple[int, ...] = field(default=(), metadata=LAYER_SIZES)
    """Optional tanh MLP before the GRU."""
    adam_eps: float = field(default=1e-8, metadata=positive())
    """Adam's epsilon."""
    task_sampling: TaskSampling = field(default=TaskSampling.UNIFORM, metadata=TASK_SAMPLING)
    """Meta-batch draw: uniform over all training tasks, or class_balanced (base.draw_meta_batch)."""

    def validate(self) -> None:
        super().validate()
        if self.bptt == "trial" and self.bptt_chunk and self.bptt_overlap >= self.bptt_chunk:
            raise self.refuse("bptt_overlap", f"must be < agent.bptt_chunk ({self.bptt_chunk}), got {self.bptt_overlap}")
        if self.bptt == "episode" and self.bptt_overlap:
            raise self.refuse("bptt_overlap", f"must be 0 with agent.bptt=episode, got {self.bptt_overlap}")
        if self.head == "bounded":
            if not self.log_std_min < self.log_std_max:
                raise self.refuse("log_std_min", f"must be < agent.log_std_max ({self.log_std_max}), "
                                                 f"got {self.log_std_min}")
            if not self.log_std_min < self.init_log_std < self.log_std_max:
                raise self.refuse("init_log_std", f"must lie inside (log_std_min, log_std_max) = ({self.log_std_min}, "
                                                  f"{self.log_std_max}) with head=bounded, got {self.init_log_std}")


# the state-dependent log-std's range, std in [0.0067, 7.4]: a tighter floor than the SAC policy's
# (metarl.core.nn.LOG_STD_MIN, -20), since PPO's probability ratios under a tiny std swing by orders of magnitude
STATE_LOG_STD_RANGE = (-5.0, 2.0)


def explained_variance(pred: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - pred) / Var(target): 1 for a perfect baseline, 0 for a constant one."""
    var = float(np.var(target))
    return float(1.0 - np.var(target - pred) / var) if var > 0 else 0.0


def clipped_gaussian_log_prob(mean: Tensor, log_std: Tensor, act: Tensor, lo: float = -1.0,
                              hi: float = 1.0) -> Tensor:
    """log-probability of the action the env receives, clip(act, lo, hi), under N(mean, std) clipped to
    [lo, hi] per dimension: the density inside, the tail mass P(a <= lo) or P(a >= hi) at a face
    (a mixed measure, the same for every policy, so PPO's ratios stay exact); summed over the last dim."""
    std = log_std.exp()
    a = act.clamp(lo, hi)
    inside = -0.5 * ((a - mean) / std).pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    upper = torch.special.log_ndtr((mean - hi) / std)
    lower = torch.special.log_ndtr((lo - mean) / std)
    return torch.where(act >= hi, upper, torch.where(act <= lo, lower, inside)).sum(-1)


class RecurrentGaussianPolicy(nn.Module):
    """[obs, prev action, prev reward, prev done] -> optional tanh MLP encoder -> GRU -> a Gaussian
    policy head and a value head. With head="linear" the log-std is one parameter per action dimension
    (`std="param"`) or a linear head on the GRU output (`std="state"`, parameters `std_head.*`); with
    head="bounded" the mean is tanh'd and the log-std head's output is tanh-squashed into `log_std_band`."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, head_hidden: Sequence[int], init_log_std: float,
                 std: str = "param", head: str = "linear", log_std_band: tuple[float, float] = (-1.0, 1.0),
                 encoder_hidden: Sequence[int] = ()):
        super().__init__()
        self.in_dim = obs_dim + act_dim + 2
        self.bounded = head == "bounded"
        self.band = log_std_band
        layers: list[nn.Module] = []
        size = self.in_dim
        for h in encoder_hidden:
            lin = nn.Linear(size, h)
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.Tanh()]
            size = h
        self.encoder = nn.Sequential(*layers)  # empty: the identity
        self.gru = nn.GRU(size, hidden, batch_first=True)
        self.pi = mlp([hidden, *head_hidden, act_dim], out_gain=0.01)
        self.v = mlp([hidden, *head_hidden, 1], out_gain=1.0)
        self.std_head: nn.Linear | None = None
        if std == "state" or self.bounded:
            self.std_head = nn.Linear(hidden, act_dim)
            nn.init.orthogonal_(self.std_head.weight, gain=0.01)
            if self.bounded:  # tanh(bias) puts the squashed log-std at init_log_std
                lo, hi = self.band
                init = math.atanh(2 * (float(init_log_std) - lo) / (hi - lo) - 1)
            else:
                init = float(init_log_std)
            nn.init.constant_(self.std_head.bias, init)
        else:
            self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def mean_of(self, out: Tensor) -> Tensor:
        """GRU output [..., H] -> the policy's mean [..., A] (the mode the evaluation acts with)."""
        m = self.pi(out)
        return torch.tanh(m) if self.bounded else m

    def log_std_of(self, out: Tensor) -> Tensor:
        """GRU output [..., H] -> the policy's log-std [..., A] at those steps."""
        if self.std_head is None:
            return self.log_std.expand(*out.shape[:-1], -1)
        raw = self.std_head(out)
        if self.bounded:
            lo, hi = self.band
            return lo + (hi - lo) * 0.5 * (torch.tanh(raw) + 1)
        return raw.clamp(*STATE_LOG_STD_RANGE)

    def log_prob(self, mean: Tensor, log_std: Tensor, act: Tensor) -> Tensor:
        """log-probability of the sampled actions: of the clipped action the env received with the
        bounded head, of the raw sample with the linear one (as before that head existed)."""
        if self.bounded:
            return clipped_gaussian_log_prob(mean, log_std, act)
        return gaussian_log_prob(mean, log_std, act)

    def forward(self, x: Tensor, h0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, L, F], h0 [B, H] -> mean [B, L, A], value [B, L], outputs [B, L, H]."""
        out, _ = self.gru(self.encoder(x), h0.unsqueeze(0).contiguous())
        return self.mean_of(out), self.v(out).squeeze(-1), out


class _Actor(Actor[RecurrentState]):
    """What the sampler acts with (picklable, CPU): policy network + RL² state handling."""

    def __init__(self, net: RecurrentGaussianPolicy, reward_scale: float):
        self.net = net
        self.reward_scale = reward_scale

    def act(self, obs: Tensor, state: RecurrentState, *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, RecurrentState]:
        h = state["h"]
        x = self.net.encoder(torch.cat([obs.to(h), state["prev_a"], state["prev_r"], state["prev_d"]], dim=-1))
        # one GRU step with the sequence GRU's weights, and the policy head only: 42 us a call for
        # one slot against 66 us through nn.GRU on a length-1 sequence plus the value head (the
        # learner recomputes everything over the trial with `net.forward`; tests/test_rl2.py
        # checks the sampled means against that pass)
        gru = self.net.gru
        h_new = torch.ops.aten.gru_cell(x, h, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
        mean = self.net.mean_of(h_new)
        new = RecurrentState(h=h_new, prev_a=state["prev_a"], prev_r=state["prev_r"], prev_d=state["prev_d"])
        if deterministic:
            return mean, new
        if noise is None:
            noise = torch.randn_like(mean)
        return mean + self.net.log_std_of(h_new).exp() * noise.to(mean), new

    def observe(self, state: RecurrentState, action: Tensor, reward: Tensor,
                done: bool | np.ndarray) -> RecurrentState:
        """`done`: one flag for all slots, or one per slot (episodes that end on success). The bounded
        head feeds back the clipped action the env received."""
        h = state["h"]
        if isinstance(done, (bool, np.bool_)):
            prev_d = torch.full_like(state["prev_d"], float(done))
        else:
            prev_d = torch.as_tensor(np.asarray(done, np.float32)).to(h).reshape(state["prev_d"].shape)
        a = action.to(h).clamp(-1.0, 1.0) if self.net.bounded else action.to(h)
        return RecurrentState(h=h, prev_a=a, prev_r=(reward.to(h) * self.reward_scale).unsqueeze(-1), prev_d=prev_d)


def trial_inputs(batch: EpisodeBatch, reward_scale: float, clip_actions: bool = False) -> np.ndarray:
    """[S, M*T, D+A+2]: each step's observation with the previous step's action (clipped to [-1, 1]
    with `clip_actions`, as the bounded head feeds it), reward and episode-end flag (zeros at the
    start of the trial), exactly what the actor saw."""
    s, m, t = batch.rewards.shape
    obs = batch.obs.reshape(s, m * t, -1)
    act = batch.actions.reshape(s, m * t, -1)
    if clip_actions:
        act = np.clip(act, -1.0, 1.0)
    rew = batch.rewards.reshape(s, m * t, 1) * reward_scale
    ends = np.zeros((s, m, t, 1), np.float32)
    ends[:, :, -1] = 1.0
    done = ends.reshape(s, m * t, 1)
    shift = lambda a: np.concatenate([np.zeros_like(a[:, :1]), a[:, :-1]], axis=1)  # noqa: E731
    return np.concatenate([obs, shift(act), shift(rew), shift(done)], axis=-1).astype(np.float32)


def trial_windows(length: int, chunk: int, overlap: int) -> list[tuple[int, int, int]]:
    """bptt=trial: (start, loss_start, end) of each time-ordered window over a trial of `length` steps.
    Window k covers [k*stride, k*stride + chunk), stride = chunk - overlap, cut at the trial's end; its
    loss covers the steps no earlier window scored (from loss_start), so every step is scored once,
    and the next window's start state is the hidden state after step start + stride - 1."""
    chunk = min(chunk or length, length)
    overlap = min(overlap, chunk - 1)
    stride = chunk - overlap
    out, a = [], 0
    while True:
        out.append((a, a + overlap if a else 0, min(a + chunk, length)))
        if a + chunk >= length:
            return out
        a += stride


class RL2PPO(MetaAgent[RecurrentState]):
    Config = RL2PPOConfig

    def __init__(self, cfg: RL2PPOConfig, obs_dim: int, act_dim: int, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.meta_batch = cfg.meta_batch
        self.act_dim = act_dim
        self.device = torch.device(device)
        self.net = RecurrentGaussianPolicy(obs_dim, act_dim, cfg.hidden_size, cfg.head_hidden, cfg.init_log_std,
                                           cfg.std, cfg.head, (cfg.log_std_min, cfg.log_std_max),
                                           cfg.encoder_hidden).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        # the value head predicts returns divided by a running scale of the returns, so the
        # value loss keeps the same size whatever the reward scale of the benchmark
        self.value_scale = torch.ones((), dtype=torch.float64)

    # ---- MetaAgent protocol ---------------------------------------------------------
    def initial_task_state(self, n_tasks: int, rng: np.random.Generator | None = None) -> RecurrentState:
        """Zeros: a new trial (no randomness: `rng` is not used)."""
        z = lambda *shape: torch.zeros(n_tasks, *shape, device=self.device)  # noqa: E731
        return {"h": z(self.cfg.hidden_size), "prev_a": z(self.act_dim), "prev_r": z(1), "prev_d": z(1)}

    def actor(self) -> _Actor:
        net = self.net if self.device.type == "cpu" else copy.deepcopy(self.net).cpu()
        return _Actor(net, self.cfg.reward_input_scale)

    def act(self, obs: Tensor, task_state: RecurrentState, *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, RecurrentState]:
        return _Actor(self.net, self.cfg.reward_input_scale).act(obs, task_state, deterministic=deterministic,
                                                                 noise=noise)

    def observe(self, task_state: RecurrentState, action: Tensor, reward: Tensor,
                done: bool | np.ndarray) -> RecurrentState:
        return _Actor(self.net, self.cfg.reward_input_scale).observe(task_state, action, reward, done)

    def adapt(self, task_state: RecurrentState, episodes: EpisodeBatch,
              rng: np.random.Generator | None = None) -> RecurrentState:
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
        batch_tasks = draw_meta_batch(tasks, self.meta_batch, rng, self.cfg.task_sampling)
        batch, _ = sampler.sample(self, batch_tasks, self.initial_task_state(self.meta_batch, rng),
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

    @staticmethod
    def linear_trial_baseline(x: np.ndarray, returns: np.ndarray) -> np.ndarray:
        """x [S, M*T, F] (the GRU's inputs), returns [S, M*T] -> values [S, M*T]: per task, a linear
        fit over the trial as one sequence, features x, x^2 and powers of the time in the trial."""
        return np.stack([LinearFeatureBaseline().fit(x[i][None], returns[i][None]).predict(x[i][None])[0]
                         for i in range(x.shape[0])])

    def _passes(self, x: Tensor, h_starts: Tensor, horizon: int,
                rng: np.random.Generator) -> Iterator[tuple[Callable[[Tensor], Tensor], Tensor, Tensor, Tensor, Tensor]]:
        """One epoch's minibatch forward passes over trials x [S, L, F], in the order the optimizer
        steps: yields (take, mean, log_std, value, weight), where take([S, L, ...]) -> the matching
        [B, l, ...] slice of any per-step tensor and weight [B, l] is 1 where the step's loss counts.
        The caller steps the optimizer between yields, so with bptt=trial each window's start state
        comes from the previous window's pass with the weights as they are then."""
        cfg = self.cfg
        s, length, _ = x.shape
        if cfg.bptt == "trial":
            windows = trial_windows(length, cfg.bptt_chunk, cfg.bptt_overlap)
            for group in np.array_split(rng.permutation(s), min(cfg.minibatches, s)):
                rows = torch.as_tensor(group, device=x.device)
                h = torch.zeros(len(group), cfg.hidden_size, device=x.device, dtype=x.dtype)
                for k, (a, lo, b) in enumerate(windows):
                    mean, value, out = self.net(x[rows, a:b], h)
                    if k + 1 < len(windows):
                        h = out[:, windows[k + 1][0] - a - 1].detach()
                    w = torch.zeros(len(group), b - a, device=x.device)
                    w[:, lo - a:] = 1.0

                    def take(t: Tensor, rows: Tensor = rows, a: int = a, b: int = b) -> Tensor:
                        return t[rows, a:b]
                    yield take, mean, self.net.log_std_of(out), value, w
            return
        chunk = self.chunk_len(horizon)
        n_chunks = math.ceil(length / chunk)
        pad = n_chunks * chunk - length

        def chunks(t: Tensor) -> Tensor:  # [S, L, ...] -> [S * n_chunks, chunk, ...]
            if pad:
                t = torch.cat([t, t.new_zeros(t.shape[0], pad, *t.shape[2:])], 1)
            return t.reshape(s * n_chunks, chunk, *t.shape[2:])

        valid = chunks(torch.ones(s, length, device=x.device))
        cx, ch0 = chunks(x), h_starts.reshape(s * n_chunks, -1)
        for part in np.array_split(rng.permutation(s * n_chunks), min(cfg.minibatches, s * n_chunks)):
            mb = torch.as_tensor(part, device=x.device)
            mean, value, out = self.net(cx[mb], ch0[mb])

            def take_c(t: Tensor, mb: Tensor = mb) -> Tensor:
                return chunks(t)[mb]
            yield take_c, mean, self.net.log_std_of(out), value, valid[mb]

    def update(self, batch: EpisodeBatch, rng: np.random.Generator) -> UpdateResult:
        """PPO epochs over the trials' chunks; a minibatch with a non-finite loss or gradient is skipped."""
        cfg = self.cfg
        s, m, t = batch.rewards.shape
        x_np = trial_inputs(batch, cfg.reward_input_scale, self.net.bounded)
        x = torch.as_tensor(x_np, device=self.device)
        act = torch.as_tensor(batch.actions.reshape(s, m * t, -1), device=self.device)
        with torch.no_grad():
            # bptt=trial: one pass over the whole trial (the windows' carried states reproduce it exactly
            # until the first optimizer step)
            mean, log_std_old, values_t, h_starts = self.forward_chunks(
                x, self.chunk_len(t) if cfg.bptt == "episode" else m * t)
            logp_old = self.net.log_prob(mean, log_std_old, act)
        rewards = batch.rewards.reshape(s, m * t).astype(np.float64)
        trial_returns = discount_cumsum(rewards, cfg.discount)
        trains_value = cfg.baseline == "value_head"
        if cfg.baseline == "linear":
            values = self.linear_baseline(batch.obs, trial_returns)
        elif cfg.baseline == "linear_trial":
            values = self.linear_trial_baseline(x_np, trial_returns)
        else:
            values = values_t.cpu().numpy().astype(np.float64) * float(self.value_scale)
        adv = gae(rewards, values, cfg.discount, cfg.gae_lambda)
        ret = adv + values
        baseline_ev = explained_variance(values, trial_returns)
        if trains_value:
            self.value_scale = 0.9 * self.value_scale + 0.1 * torch.tensor(max(float(ret.std()), 1e-3),
                                                                            dtype=torch.float64)
        returns = torch.as_tensor(ret / float(self.value_scale), dtype=torch.float32, device=self.device)
        if cfg.normalize_advantages:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        adv_t = torch.as_tensor(adv, dtype=torch.float32, device=self.device)

        sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "approx_kl_k3": 0.0,
                "clip_fraction": 0.0}
        rejected, steps, epochs_run = 0, 0, 0
        for _ in range(cfg.epochs):
            epoch_kl, epoch_steps = 0.0, 0
            for take, mean, log_std, value, w in self._passes(x, h_starts, t, rng):
                logp = self.net.log_prob(mean, log_std, take(act))
                old = take(logp_old)
                denom = w.sum()
                ratio = torch.exp(logp - old)
                a = take(adv_t)
                pi_loss = -(torch.min(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a) * w).sum() / denom
                v_loss = 0.5 * ((value - take(returns)).pow(2) * w).sum() / denom
                # per step, summed over action dimensions (the same at every step with std="param"); the
                # bounded head's too is the unclipped Gaussian's
                entropy = ((log_std.sum(-1) + self.act_dim * 0.5 * math.log(2 * math.pi * math.e)) * w).sum() / denom
                loss = pi_loss - cfg.entropy_coef * entropy
                if trains_value:
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
                    if trains_value:
                        sums["value_loss"] += float(v_loss)
                    sums["entropy"] += float(entropy)
                    sums["approx_kl"] += float(((old - logp) * w).sum() / denom)
                    kl = float((((ratio - 1) - (logp - old)) * w).sum() / denom)
                    sums["approx_kl_k3"] += kl
                    sums["clip_fraction"] += float((((ratio - 1).abs() > cfg.clip).float() * w).sum() / denom)
                epoch_kl, epoch_steps = epoch_kl + kl, epoch_steps + 1
            epochs_run += 1
            if cfg.target_kl is not None and epoch_steps and epoch_kl / epoch_steps > cfg.target_kl:
                break
        if not trains_value:
            del sums["value_loss"]  # the value head is not trained
        out = {f"train/{k}": v / max(steps, 1) for k, v in sums.items()}
        out.update({"train/epochs": float(epochs_run), "train/optimizer_steps": float(steps),
                    # a per-step std: the mean over the batch's steps, under the policy that sampled them
                    "train/policy_std": float(self.net.log_std.detach().exp().mean()) if self.net.std_head is None
                    else float(log_std_old.exp().mean()),
                    "train/value_scale": float(self.value_scale),
                    "train/baseline_explained_variance": baseline_ev})
        return UpdateResult(rejected=rejected, scalars=out)

    # ---- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
                "opt": copy.deepcopy(self.opt.state_dict()), "value_scale": self.value_scale.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A released policy (`policy_only`, metarl bench release) has no optimizer state."""
        self.net.load_state_dict(state["net"])
        if not state.get("policy_only"):
            self.opt.load_state_dict(state["opt"])
        self.value_scale = state["value_scale"].clone()

    RELEASE_KEYS = ("net", "value_scale")  # what acting and adapting need
    DISPLAY_NAME = "RL²-PPO"
    # the reference settings (configs/ml10_rl2_ppo.yaml, metaworld-algorithms'), with the words a label uses
    # for each one a run lacks (the ablations)
    REFERENCE_SETTINGS: ClassVar[dict[str, tuple[object, str]]] = {
        "bptt": ("trial", "the boundary gradient (per-episode BPTT)"),
        "head": ("bounded", "the bounded head"),
        "normalize_advantages": (False, "raw advantages"),
        "baseline": ("linear_trial", "the trial-time linear baseline"),
        "task_sampling": ("class_balanced", "class-balanced batches")}

    @classmethod
    def label(cls, fields: Mapping[str, Any]) -> str:
        """With any of the reference settings: "reference settings", naming those it lacks; else
        with its update schedule (minibatches x epochs: the ML10 preset took 40, then 320 for a while,
        then 40 again) and the options that differ from the defaults (agent.std, agent.baseline).
        A key an older result lacks ran with RL2PPOConfig's default."""
        defaults = {f.name: f.default for f in dataclasses.fields(RL2PPOConfig)}
        ref = cls.REFERENCE_SETTINGS
        if any(fields.get(k, defaults[k]) == v for k, (v, _) in ref.items()):
            missing = [words for k, (v, words) in ref.items() if fields.get(k, defaults[k]) != v]
            return f"{cls.DISPLAY_NAME}, reference settings" + (" without " + ", ".join(missing) if missing else "")
        if "minibatches" in fields and "epochs" in fields:
            steps = int(fields["minibatches"]) * int(fields["epochs"])
            extra = "".join([", state-dependent std" if fields.get("std", defaults["std"]) != "param" else "",
                             ", linear baseline" if fields.get("baseline", defaults["baseline"]) != "value_head" else ""])
            return f"{cls.DISPLAY_NAME}, {steps} PPO steps/iteration{extra}"
        return cls.DISPLAY_NAME
