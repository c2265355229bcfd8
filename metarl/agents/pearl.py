"""PEARL: off-policy meta-RL with a probabilistic context encoder (Rakelly et al. 2019).

A task is summarised by a latent z. A context encoder maps every context transition
c_n = (s, a, r[, s']) to a Gaussian factor N(mu_n, sigma_n^2); the posterior over z is their
product, in closed form (metarl.core.nn.product_of_gaussians), so it does not depend on the order
of the transitions; with no context it is the prior N(0, I). SAC (twin Q + target twin Q,
tanh-Gaussian policy, automatic or fixed entropy weight) acts and learns on [obs, z]. The
encoder is trained through the critic loss plus kl_weight * KL(q(z|c) || N(0, I)) (plus a reward
decoder's error with `reward_decoder_weight`; with `critic_trains_encoder: false` the critics
see z detached and the decoder and the KL alone train it); the policy loss sees z detached.

Data (metarl.core.buffers.ReplayAndContext, per training task, preallocated and RAM-checked): the
replay buffer (ring, `replay_capacity` transitions a task) feeds the SAC batches; the context
buffer holds the task's most recent prior- and posterior-z episodes and feeds the encoder; it
is cleared whenever the task is collected on again. With `context_source: replay` the encoder's
training contexts come from the replay buffer instead (the context buffer is then unread).

Training tasks: every training task, or with `train_tasks_per_class` k a fixed subset of k
goals of each env class (all of a smaller class), drawn once from the run's generator on the
first iteration and saved in checkpoints (`train_subset`); buffers exist for those tasks only.
`task_sampling` draws the tasks collected on each iteration and each gradient step's meta-batch
uniformly, or class_balanced (metarl.agents.base.draw_meta_batch: n // C of each of the C classes).

With `prior_actions: uniform` every episode with z ~ prior below (and an evaluation's adaptation
episodes, whose state comes from `initial_task_state`) acts uniformly at random instead: a probing
episode (LatentState["probe"]).

Collection schedule per iteration (the paper's, counted in episodes):
- once, before the first update: `num_initial_episodes` per kept training task, z ~ prior;
- `tasks_per_iteration` training tasks sampled; on each (their context cleared):
  `num_prior_episodes` with z ~ prior (replay + context), then `num_posterior_episodes` with
  z ~ posterior of the context (replay + context), then `num_extra_posterior_episodes` with
  z ~ posterior (replay only: the policy must learn to act on posterior samples, the encoder
  keeps prior-like contexts);
- then `grad_steps_per_iteration` gradient steps, each on `meta_batch` tasks, or with
  `utd_ratio` (and grad_steps_per_iteration null) round(utd_ratio x the env steps this
  iteration collected), at least 1.

Warm restart: a checkpoint without buffers (metarl bench park leaves them out to stay
committable) of an agent that has trained loads with `buffers` None; the next `train_iteration`
refills them as the initial collection does (`num_initial_episodes` per kept task, z ~ prior),
with the current policy, before any update. Not bit-exact with the run that kept its buffers.

Entropy: automatic α (`auto_entropy`, towards `target_entropy`, never below `alpha_min` when
that is > 0) or a fixed `alpha`; `reward_scale` multiplies rewards in the critic target.

MetaAgent protocol: the per-task state is {"z": [S, latent], "ctx": [S, N, F]}. Round 0 acts
with z ~ prior and an empty context; `adapt` appends the new episodes' transitions to the
context and samples z from the posterior of all of it, or, with `eval_context` "train_size"
(eval.pearl_context), of `embedding_batch_size` transitions drawn from it with replacement, as
training draws its contexts. Context transitions are (s, a, r), or (s, a, r, s') with
`use_next_obs_in_context`, each with Δr = r_t - r_{t-1} (the change of the reward since the
previous step of the episode, 0 at its first) appended with `use_reward_change_in_context`.
Rewards enter the context unscaled; `reward_scale` multiplies them in the critic target only.
Episodes are truncated, never terminal: the critic always bootstraps from the next observation.

Randomness: training draws from `rng` (tasks, minibatches, sampler seeds) and torch's global
CPU generator (z and action noise), both saved by the trainer's checkpoints;
`initial_task_state` / `adapt` (the evaluator's verbs) draw z from the caller's `rng`.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarl.agents.base import DISCOUNT, TASK_SAMPLING, AgentConfig, MetaAgent, SamplerLike, TaskSampling, draw_meta_batch
from metarl.core.buffers import ReplayAndContext, episode_transitions
from metarl.core.fields import Choice, finite, in_range, layer_sizes, nonnegative, one_of, positive
from metarl.core.nn import LatentActor, TanhGaussianPolicy, kl_to_prior, latent_act, mlp, product_of_gaussians
from metarl.core.types import EpisodeBatch, LatentState, Task, UpdateResult

MIN_VAR = 1e-7


class ContextAggregation(Choice):
    """How the context encoder turns a set of transitions into q(z | context) (`context_aggregation`)."""
    PRODUCT = "product"  # one Gaussian factor per transition, multiplied (the paper's encoder)
    MEAN = "mean"        # deep sets: per-transition features, their mean, then a network to (mu, var)


class PriorActions(Choice):
    """What acts in the episodes with z ~ prior (`prior_actions`)."""
    POLICY = "policy"    # the policy on z ~ prior: posterior sampling (the paper's)
    UNIFORM = "uniform"  # uniform random actions in [-1, 1]: a fixed probing episode


class ContextSource(Choice):
    """Which buffer training draws a task's context from (`context_source`)."""
    RECENT = "recent"  # the context buffer: the task's latest collection (the paper's)
    REPLAY = "replay"  # the task's whole replay buffer: every episode kept, the initial ones included


class MeanPoolEncoder(nn.Module):
    """A set encoder that is not a product of Gaussians: phi embeds each transition (the
    encoder_hidden layers, ReLU), the embeddings are averaged over the set, and rho maps the
    average to the posterior's mean and variance. Invariant to the order of the transitions; an
    average of features can express what no single Gaussian factor can (a goal on a sphere
    around the hand, intersected over transitions)."""

    def __init__(self, ctx_dim: int, hidden: Sequence[int], latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.phi = nn.Sequential(mlp([ctx_dim, *hidden]), nn.ReLU())
        self.rho = mlp([hidden[-1], hidden[-1], 2 * latent_dim], activation=nn.ReLU)

    def forward(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """ctx [..., N, F] -> mu, var [..., L]; no transitions (N = 0) give the prior N(0, I)."""
        if ctx.shape[-2] == 0:
            shape = ctx.shape[:-2] + (self.latent_dim,)
            return ctx.new_zeros(shape), ctx.new_ones(shape)
        mu, raw = self.rho(self.phi(ctx).mean(-2)).chunk(2, -1)
        return mu, F.softplus(raw).clamp_min(MIN_VAR)


@dataclass(frozen=True)
class PEARLConfig(AgentConfig):
    name: str = "pearl"
    """The agent's registry name."""
    meta_batch: int = field(default=16, metadata=positive())
    """Tasks per gradient step; also the sampler's slots."""
    latent_dim: int = field(default=7, metadata=positive())
    """Size of the task latent z."""
    hidden_sizes: tuple[int, ...] = field(default=(300, 300, 300), metadata=layer_sizes(nonempty=True))
    """Hidden layers of the policy and the Q networks."""
    encoder_hidden: tuple[int, ...] = field(default=(200, 200, 200), metadata=layer_sizes(nonempty=True))
    """Hidden layers of the context encoder."""
    batch_size: int = field(default=256, metadata=positive())
    """SAC transitions per task per gradient step."""
    embedding_batch_size: int = field(default=100, metadata=positive())
    """Context transitions per task per gradient step."""
    lr: float = field(default=3e-4, metadata=positive(finite=True))
    """Adam step size of every network (the encoder's: encoder_lr where given)."""
    encoder_lr: float | None = field(default=None, metadata=positive(finite=True, nullable=True))
    """Adam step size of the context encoder; null: lr. A larger one makes the posterior move faster
    than the critics that read it."""
    kl_weight: float = field(default=0.1, metadata=nonnegative(finite=True))
    """Weight of KL(q(z | context) || prior) in the encoder's loss."""
    reward_scale: float = field(default=10.0, metadata=positive(finite=True))
    """Rewards are multiplied by this in the SAC targets."""
    discount: float = field(default=0.99, metadata=DISCOUNT)
    """γ of the Q targets."""
    tau: float = field(default=0.005, metadata=in_range(0, 1, lo_open=True))
    """Target-network Polyak rate."""
    auto_entropy: bool = True
    """Tune the entropy weight α toward target_entropy."""
    alpha: float = field(default=1.0, metadata=positive(finite=True))
    """The fixed entropy weight, or the initial one with auto_entropy."""
    alpha_min: float = field(default=0.0, metadata=nonnegative(finite=True))
    """auto_entropy: a floor on α (0: none)."""
    target_entropy: float | None = field(default=None, metadata=finite(nullable=True, note="(-act_dim)"))
    """The entropy auto_entropy aims at; null: -act_dim."""
    num_initial_episodes: int = field(default=10, metadata=positive())
    """Episodes per kept training task, z ~ prior, collected once before training."""
    tasks_per_iteration: int = field(default=5, metadata=positive())
    """Tasks collected on per iteration."""
    num_prior_episodes: int = field(default=2, metadata=nonnegative())
    """Per task and iteration, z ~ prior: into replay and context."""
    num_posterior_episodes: int = field(default=0, metadata=nonnegative())
    """Per task and iteration, z ~ posterior: into replay and context."""
    num_extra_posterior_episodes: int = field(default=2, metadata=nonnegative())
    """Per task and iteration, z ~ posterior: into replay only."""
    grad_steps_per_iteration: int | None = field(default=1000, metadata=positive(nullable=True))
    """Gradient steps per iteration; null: utd_ratio sets them."""
    utd_ratio: float | None = field(default=None, metadata=positive(finite=True, nullable=True))
    """Gradient steps per env step collected in an iteration (with grad_steps_per_iteration: null)."""
    replay_capacity: int = field(default=100_000, metadata=positive())
    """Transitions kept per task (a ring buffer)."""
    use_next_obs_in_context: bool = False
    """Context transitions are (s, a, r, s') instead of (s, a, r)."""
    use_reward_change_in_context: bool = False
    """Context transitions also hold Δr = r_t - r_{t-1}, the change of the reward since the previous
    step of the episode (0 at its first step). A reward that tells only a distance cannot tell on
    which side of the hand the goal lies; with s and s' (use_next_obs_in_context), Δr tells whether
    the move the transition made went towards it."""
    train_tasks_per_class: int = field(default=0, metadata=nonnegative())
    """Training goals kept per class, drawn once (0: all)."""
    task_sampling: TaskSampling = field(default=TaskSampling.UNIFORM, metadata=TASK_SAMPLING)
    """How iteration tasks and meta-batches are drawn: uniform or class_balanced."""
    context_aggregation: ContextAggregation = field(default=ContextAggregation.PRODUCT,
                                                    metadata=one_of(ContextAggregation, what="context aggregation"))
    """q(z | context) as the product of per-transition Gaussian factors (product, the paper's), or
    from the mean of per-transition features (mean: MeanPoolEncoder)."""
    prior_actions: PriorActions = field(default=PriorActions.POLICY,
                                        metadata=one_of(PriorActions, what="prior actions"))
    """What acts in every episode with z ~ prior: the initial collection, num_prior_episodes, the
    warm restart's refill and an evaluation's adaptation episodes. policy (the paper's): the policy
    on z ~ prior. uniform: uniform random actions in [-1, 1], a fixed probing episode whose hand
    wanders in every direction, so that its rewards tell where the goal lies on each axis (a policy
    that stays on the goal box's middle plane yields rewards symmetric about it); the context
    buffer then holds probing episodes (with num_posterior_episodes 0, only those), as an
    evaluation's context does, and "before adaptation" is a random policy's success."""
    context_source: ContextSource = field(default=ContextSource.RECENT,
                                          metadata=one_of(ContextSource, what="context source"))
    """Where training draws each task's context from, for the updates and for the posterior
    episodes: the context buffer, refilled at each collection (recent, the paper's), or the task's
    replay buffer (replay), whose older episodes reach where the current policy no longer goes."""
    reward_decoder_weight: float = field(default=0.0, metadata=nonnegative(finite=True))
    """Weight of a reward-prediction loss that also trains the encoder: a decoder predicts each
    replay transition's reward from (s, a, z) with z from its task's posterior (0: none; the encoder
    learns from the critic's loss and the KL alone, as in the references)."""
    critic_trains_encoder: bool = True
    """The critics' Bellman error trains the encoder through z (the paper's). false: the critics read
    z detached, and the encoder learns from the reward decoder's error and the KL alone (as VariBAD
    trains its encoder), so z is trained to tell the reward, not to lower a noisy Bellman error;
    needs reward_decoder_weight > 0."""

    def validate(self) -> None:
        super().validate()
        if self.num_prior_episodes + self.num_posterior_episodes < 1:
            raise self.refuse("num_prior_episodes", "num_prior_episodes + num_posterior_episodes must be >= 1 (the "
                              f"context buffer of a sampled task needs episodes), got {self.num_prior_episodes} + "
                              f"{self.num_posterior_episodes}")
        if self.tasks_per_iteration > self.meta_batch:
            raise self.refuse("tasks_per_iteration", f"must be <= agent.meta_batch ({self.meta_batch}, the "
                              f"sampler's task slots), got {self.tasks_per_iteration}")
        if (self.grad_steps_per_iteration is None) == (self.utd_ratio is None):
            raise self.refuse("utd_ratio", "give the gradient steps of an iteration one way: agent.utd_ratio (with "
                              "agent.grad_steps_per_iteration: null) or agent.grad_steps_per_iteration (with "
                              f"agent.utd_ratio: null), got utd_ratio {self.utd_ratio} and grad_steps_per_iteration "
                              f"{self.grad_steps_per_iteration}")
        if self.alpha_min > 0 and not self.auto_entropy:
            raise self.refuse("alpha_min", f"is a floor for the automatic entropy weight (agent.auto_entropy: true); "
                              f"with a fixed one, set agent.alpha, got alpha_min {self.alpha_min}")
        if not self.critic_trains_encoder and self.reward_decoder_weight == 0:
            raise self.refuse("critic_trains_encoder", "false needs agent.reward_decoder_weight > 0 (else the "
                              "encoder learns from the KL alone and z tells nothing), got reward_decoder_weight 0")
        if self.alpha < self.alpha_min:
            raise self.refuse("alpha_min", f"must be <= agent.alpha (the initial entropy weight, {self.alpha}), "
                              f"got {self.alpha_min}")

    @property
    def episodes_per_task(self) -> int:
        """Episodes collected per sampled task per iteration."""
        return self.num_prior_episodes + self.num_posterior_episodes + self.num_extra_posterior_episodes


# where the posterior of an evaluation comes from (eval.pearl_context): every transition of the
# context so far, or embedding_batch_size of them drawn from it, as in training
EVAL_CONTEXTS = ("all", "train_size")


def buffer_task_count(cfg: PEARLConfig, tasks: Sequence[Task]) -> int:
    """Training tasks PEARL keeps buffers for: all of `tasks`, or train_tasks_per_class of each class."""
    if not cfg.train_tasks_per_class:
        return len(tasks)
    counts = Counter(t.name for t in tasks)
    return sum(min(cfg.train_tasks_per_class, c) for c in counts.values())


def draw_train_subset(tasks: Sequence[Task], per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Positions in `tasks` of `per_class` goals of each class (all of a smaller class), drawn
    without replacement, classes in the order they first appear; sorted."""
    by_class: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        by_class.setdefault(t.name, []).append(i)
    out = [pool[j] for pool in by_class.values()
           for j in rng.choice(len(pool), size=min(per_class, len(pool)), replace=False)]
    return np.sort(np.asarray(out, np.int64))


# ---- the agent -----------------------------------------------------------------------------
class PEARL(MetaAgent[LatentState]):
    Config = PEARLConfig

    def __init__(self, cfg: PEARLConfig, obs_dim: int, act_dim: int, device: torch.device | str = "cpu",
                 n_train_tasks: int | None = None, horizon: int | None = None,
                 train_tasks: Sequence[Task] | None = None, eval_context: str = "all"):
        """`n_train_tasks` (or `train_tasks`, which train_tasks_per_class needs to count per class)
        and `horizon`, when given, size the buffers now (checked against available RAM); otherwise
        they are sized on the first `train_iteration`. `eval_context` (eval.pearl_context, one of
        EVAL_CONTEXTS): what `adapt` computes the posterior from."""
        if eval_context not in EVAL_CONTEXTS:
            raise ValueError(f"eval_context: unknown value {eval_context!r}; allowed: {', '.join(EVAL_CONTEXTS)}")
        self.cfg = cfg
        self.eval_context = eval_context
        self.meta_batch = cfg.meta_batch
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.device = torch.device(device)
        self.latent_dim = cfg.latent_dim
        self.ctx_dim = (obs_dim + act_dim + 1 + (obs_dim if cfg.use_next_obs_in_context else 0)
                        + (1 if cfg.use_reward_change_in_context else 0))
        self.target_entropy = float(cfg.target_entropy if cfg.target_entropy is not None else -act_dim)

        latent, hidden = cfg.latent_dim, cfg.hidden_sizes
        self.encoder: nn.Module = (
            mlp([self.ctx_dim, *cfg.encoder_hidden, 2 * latent], activation=nn.ReLU)
            if cfg.context_aggregation == ContextAggregation.PRODUCT
            else MeanPoolEncoder(self.ctx_dim, cfg.encoder_hidden, latent)).to(self.device)
        self.policy = TanhGaussianPolicy(obs_dim + latent, act_dim, hidden).to(self.device)
        self.q1 = mlp([obs_dim + latent + act_dim, *hidden, 1], activation=nn.ReLU).to(self.device)
        self.q2 = mlp([obs_dim + latent + act_dim, *hidden, 1], activation=nn.ReLU).to(self.device)
        self.q1_target = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_target = copy.deepcopy(self.q2).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.alpha), device=self.device, requires_grad=cfg.auto_entropy)
        # reward_decoder_weight > 0: r̂(s, a, z), whose error trains the encoder beside the critic's
        self.decoder = mlp([obs_dim + act_dim + latent, *cfg.encoder_hidden, 1], activation=nn.ReLU).to(self.device) \
            if cfg.reward_decoder_weight > 0 else None
        self.nets = self._NETS + (("decoder",) if self.decoder is not None else ())
        self.update_metrics = self.UPDATE_METRICS + (("reward_loss",) if self.decoder is not None else ())

        self.critic_params = [*self.encoder.parameters(), *self.q1.parameters(), *self.q2.parameters()]
        if self.decoder is not None:
            self.critic_params += list(self.decoder.parameters())
        self.policy_params = list(self.policy.parameters())
        self.target_params: list[Tensor] = [*self.q1_target.parameters(), *self.q2_target.parameters()]
        self.source_params: list[Tensor] = [*self.q1.parameters(), *self.q2.parameters()]
        self.optimizers = {
            "encoder": torch.optim.Adam(self.encoder.parameters(),
                                        lr=cfg.lr if cfg.encoder_lr is None else cfg.encoder_lr),
            "q": torch.optim.Adam(self.source_params, lr=cfg.lr),
            "policy": torch.optim.Adam(self.policy_params, lr=cfg.lr),
        }
        if self.decoder is not None:
            self.optimizers["decoder"] = torch.optim.Adam(self.decoder.parameters(), lr=cfg.lr)
        if cfg.auto_entropy:
            self.optimizers["alpha"] = torch.optim.Adam([self.log_alpha], lr=cfg.lr)

        self._notes: list[str] = []  # for the person running it, drained by notes() (the trainer shows them)
        self.buffers: ReplayAndContext | None = None  # sized by n_train_tasks and horizon (RAM-checked)
        self.collected_initial = False
        self.iterations = 0
        # train_tasks_per_class: positions of the kept goals in the training task list (drawn on the
        # first iteration, saved in checkpoints); None: every training task
        self.train_subset: np.ndarray | None = None
        self._tasks: list[Task] = []  # the kept training tasks, in buffer order (set each iteration)
        if train_tasks is not None:
            n_train_tasks = buffer_task_count(cfg, train_tasks)
        elif cfg.train_tasks_per_class:
            n_train_tasks = None  # not countable without the tasks' classes: sized on the first iteration
        if n_train_tasks is not None and horizon is not None:
            self._allocate(n_train_tasks, horizon)
        else:  # one task is a lower bound: refuse the absurd at once
            per_task = ReplayAndContext.check_fits(1, cfg.replay_capacity, self.context_capacity(horizon or 1),
                                                   obs_dim, act_dim)
            self._notes.append(f"pearl: buffers need {per_task / 2**20:,.1f} MiB per training task (replay "
                               f"{cfg.replay_capacity:,} transitions); allocated on the first iteration")

    # ---- buffers ----------------------------------------------------------------------
    def _buffers(self) -> ReplayAndContext:
        if self.buffers is None:
            raise RuntimeError("PEARL buffers are not allocated yet (no training iteration or state loaded)")
        return self.buffers

    def context_capacity(self, horizon: int) -> int:
        """Transitions the context buffer of one task must hold: its largest between-clear fill."""
        cfg = self.cfg
        return horizon * max(cfg.num_initial_episodes, cfg.num_prior_episodes + cfg.num_posterior_episodes)

    def _allocate(self, n_tasks: int, horizon: int) -> None:
        self.buffers = ReplayAndContext.allocate(n_tasks, horizon, self.cfg.replay_capacity,
                                                 self.context_capacity(horizon), self.obs_dim, self.act_dim)
        self._notes.append(f"pearl: {self.buffers.summary}")

    def notes(self) -> list[str]:
        """The buffer sizes and warm restarts since the last call, one line each."""
        out, self._notes = self._notes, []
        return out

    # ---- context and posterior --------------------------------------------------------
    def _context_buffer(self):
        """The buffer training contexts come from (agent.context_source)."""
        buffers = self._buffers()
        return buffers.replay if self.cfg.context_source == ContextSource.REPLAY else buffers.context

    def _ctx_features(self, data: dict[str, np.ndarray]) -> Tensor:
        """Context transitions [..., F] from transition fields [..., *] (rewards unscaled):
        s, a, r[, s'][, Δr = rewards - prev_rewards]."""
        parts = [data["obs"], data["actions"], data["rewards"][..., None]]
        parts += [data["next_obs"]] if self.cfg.use_next_obs_in_context else []
        if self.cfg.use_reward_change_in_context:
            parts.append((data["rewards"] - data["prev_rewards"])[..., None])
        return torch.from_numpy(np.concatenate(parts, -1).astype(np.float32, copy=False)).to(self.device)

    def factors(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """Per-transition Gaussian factors (context_aggregation product): ctx [..., N, F] -> mu, var [..., N, L]."""
        mu, raw = self.encoder(ctx).chunk(2, -1)
        return mu, F.softplus(raw).clamp_min(MIN_VAR)

    def posterior(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | context) for ctx [S, N, F]: mean and variance [S, L] (the prior when N = 0)."""
        if self.cfg.context_aggregation == ContextAggregation.PRODUCT:
            return product_of_gaussians(*self.factors(ctx))
        return self.encoder(ctx)

    def _randn(self, *shape: int, rng: np.random.Generator | None = None) -> Tensor:
        """Standard normal on the device: from `rng` (the protocol's verbs), else from torch's
        global CPU generator (training; the trainer's checkpoints save it)."""
        if rng is None:
            return torch.randn(*shape).to(self.device)
        return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)).to(self.device)

    def _sample_z(self, mu: Tensor, var: Tensor, rng: np.random.Generator | None = None) -> Tensor:
        return mu + var.sqrt() * self._randn(*mu.shape, rng=rng)

    def _prior_state(self, n_tasks: int, rng: np.random.Generator | None = None) -> LatentState:
        """z ~ prior, empty context; with prior_actions uniform every slot probes (acts uniformly)."""
        state: LatentState = {"z": self._randn(n_tasks, self.latent_dim, rng=rng),
                              "ctx": torch.zeros(n_tasks, 0, self.ctx_dim, device=self.device)}
        if self.cfg.prior_actions == PriorActions.UNIFORM:
            state["probe"] = torch.ones(n_tasks, dtype=torch.bool, device=self.device)
        return state

    def _posterior_state(self, positions: np.ndarray, rng: np.random.Generator) -> LatentState:
        """Task state for collection: z from the posterior of a context sampled from the
        tasks' buffers that agent.context_source names (the prior where they are empty)."""
        context = self._context_buffer()
        if int(context.size[positions].min()) == 0:
            return self._prior_state(len(positions))
        ctx = self._ctx_features(context.sample(positions, self.cfg.embedding_batch_size, rng))
        with torch.no_grad():
            z = self._sample_z(*self.posterior(ctx))
        return {"z": z, "ctx": ctx}

    # ---- MetaAgent protocol -----------------------------------------------------------
    def initial_task_state(self, n_tasks: int, rng: np.random.Generator) -> LatentState:
        """z ~ the prior N(0, I) (drawn from `rng`), empty context (probing with prior_actions uniform)."""
        return self._prior_state(n_tasks, rng)

    def act(self, obs: Tensor, task_state: LatentState, *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, LatentState]:
        """tanh-Gaussian action on [obs, z]; `noise` [S, A] standard normal; deterministic: tanh(mean);
        uniform random actions in probing slots (metarl.core.nn.latent_act)."""
        with torch.no_grad():
            action = latent_act(self.policy, obs, task_state, deterministic, noise)
        return action.to(task_state["z"].device), task_state

    def actor(self) -> LatentActor:
        """The policy alone (a CPU copy), so the replay buffers never travel to worker processes."""
        return LatentActor(self.policy if self.device.type == "cpu" else copy.deepcopy(self.policy).cpu())

    def adapt(self, task_state: LatentState, episodes: EpisodeBatch,
              rng: np.random.Generator) -> LatentState:
        """Append the episodes' transitions to each task's context; z ~ the new posterior (from `rng`)."""
        s = episodes.rewards.shape[0]
        new = self._ctx_features(episode_transitions(episodes))
        ctx = torch.cat([task_state["ctx"].to(self.device), new], 1)
        used = ctx
        if self.eval_context == "train_size":  # embedding_batch_size transitions, drawn as in training
            idx = torch.from_numpy(rng.integers(0, ctx.shape[1], size=(s, self.cfg.embedding_batch_size)))
            used = ctx[torch.arange(s, device=ctx.device)[:, None], idx.to(ctx.device)]
        with torch.no_grad():
            z = self._sample_z(*self.posterior(used), rng)
        return {"z": z, "ctx": ctx}

    # ---- one iteration ----------------------------------------------------------------
    def _collect(self, sampler: SamplerLike, tasks: Sequence[Task], positions: np.ndarray, rng: np.random.Generator
                 ) -> tuple[list[EpisodeBatch], list[EpisodeBatch]]:
        cfg = self.cfg
        sel = [tasks[int(i)] for i in positions]
        buffers = self._buffers()
        for p in positions:
            buffers.context.clear(int(p))
        prior, post = [], []
        if cfg.num_prior_episodes:
            batch, _ = sampler.sample(self, sel, self._prior_state(len(sel)), cfg.num_prior_episodes, rng)
            buffers.add(positions, batch, to_context=True)
            prior.append(batch)
        for k in range(cfg.num_posterior_episodes + cfg.num_extra_posterior_episodes):
            batch, _ = sampler.sample(self, sel, self._posterior_state(positions, rng), 1, rng)
            buffers.add(positions, batch, to_context=k < cfg.num_posterior_episodes)
            post.append(batch)
        return prior, post

    def _draw_positions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Buffer positions of `n` kept tasks drawn class_balanced (metarl.agents.base.draw_meta_batch)."""
        index = {id(t): i for i, t in enumerate(self._tasks)}
        return np.array([index[id(t)] for t in draw_meta_batch(self._tasks, n, rng, "class_balanced")], np.int64)

    def _initial_collection(self, sampler: SamplerLike, rng: np.random.Generator) -> int:
        """`num_initial_episodes` on every kept task with z ~ prior (replay + context); its env steps."""
        buffers, n_tasks, steps = self._buffers(), len(self._tasks), 0
        for start in range(0, n_tasks, sampler.n_slots):
            positions = np.arange(start, min(start + sampler.n_slots, n_tasks))
            batch, _ = sampler.sample(self, [self._tasks[int(i)] for i in positions],
                                      self._prior_state(len(positions)), self.cfg.num_initial_episodes, rng)
            buffers.add(positions, batch, to_context=True)
            steps += batch.env_steps
        return steps

    def train_iteration(self, sampler: SamplerLike, tasks: Sequence[Task],
                        rng: np.random.Generator) -> UpdateResult:
        cfg = self.cfg
        if cfg.train_tasks_per_class and self.train_subset is None:  # once, before anything is collected
            self.train_subset = draw_train_subset(tasks, cfg.train_tasks_per_class, rng)
        if self.train_subset is not None and (len(self.train_subset) == 0 or int(self.train_subset.max()) >= len(tasks)):
            raise ValueError(f"PEARL's kept training tasks (positions up to {int(self.train_subset.max(initial=-1))}) "
                             f"do not fit the {len(tasks)} training tasks given")
        self._tasks = list(tasks) if self.train_subset is None else [tasks[int(i)] for i in self.train_subset]
        n_tasks = len(self._tasks)
        warm_restart = False
        if self.buffers is None:
            self._allocate(n_tasks, int(sampler.horizon))
            # trained before, buffers not in the checkpoint it was loaded from (metarl bench park):
            # a warm restart refills them with the current policy before any update
            warm_restart = self.collected_initial
        buffers = self._buffers()
        if buffers.n_tasks != n_tasks:
            raise ValueError(f"PEARL buffers were sized for {buffers.n_tasks} training tasks, got {n_tasks}")
        if not self.collected_initial or warm_restart:
            steps = self._initial_collection(sampler, rng)
            self.collected_initial = True
            if warm_restart:
                self._notes.append(f"pearl: warm restart: the checkpoint held no replay buffers; refilled them "
                                   f"with {cfg.num_initial_episodes} episode(s) of the current policy (z ~ prior) on "
                                   f"each of {n_tasks} training tasks ({steps:,} env steps) before updating")
        k = min(cfg.tasks_per_iteration, n_tasks)
        if cfg.task_sampling == "uniform":
            positions = np.sort(rng.choice(n_tasks, size=k, replace=False))
        else:  # class-stratified; a task drawn twice (a class with fewer goals than its share) collects once
            positions = np.unique(self._draw_positions(k, rng))
        prior, post = self._collect(sampler, self._tasks, positions, rng)
        grad_steps = cfg.grad_steps_per_iteration
        if grad_steps is None:  # utd_ratio: in proportion to this iteration's collection
            assert cfg.utd_ratio is not None  # validate(): exactly one of the two is set
            grad_steps = max(1, round(cfg.utd_ratio * sum(b.env_steps for b in prior + post)))

        total: Tensor | None = None   # metric sums stay on the device: one transfer per iteration
        rejected = 0
        for _ in range(grad_steps):
            step_metrics = self._update(rng)
            if step_metrics is None:
                rejected += 1
                continue
            total = step_metrics if total is None else total + step_metrics
        accepted = max(grad_steps - rejected, 1)
        sums = {} if total is None else dict(zip(self.update_metrics, total.tolist()))
        self.iterations += 1

        def stats(batches: list[EpisodeBatch]) -> tuple[float, float]:
            returns = np.concatenate([b.episode_returns().ravel() for b in batches])
            success = np.concatenate([b.episode_success().ravel() for b in batches])
            return float(returns.mean()), float(success.mean())

        main_return, main_success = stats(post or prior)
        scalars = {"rollout/return_mean": main_return}
        if prior:
            scalars["rollout/return_mean_prior"], scalars["rollout/success_rate_prior"] = stats(prior)
        scalars.update({f"train/{k}": v / accepted for k, v in sums.items()})
        scalars["buffer/transitions"] = float(buffers.replay.size.sum())
        return UpdateResult(rejected=rejected, success_rate=main_success, scalars=scalars)

    UPDATE_METRICS = ("qf_loss", "policy_loss", "kl", "alpha", "q_mean", "z_std", "entropy")

    def _update(self, rng: np.random.Generator) -> Tensor | None:
        """One SAC + encoder gradient step on `meta_batch` tasks: the step's metrics as one
        tensor (order update_metrics, left on the device), or None (nothing changed) when a
        loss or gradient is not finite."""
        cfg = self.cfg
        replay = self._buffers().replay
        if cfg.task_sampling == "uniform":
            tasks = rng.choice(replay.n_tasks, size=cfg.meta_batch, replace=replay.n_tasks < cfg.meta_batch)
        else:
            tasks = self._draw_positions(cfg.meta_batch, rng)
        ctx_data = self._context_buffer().sample(tasks, cfg.embedding_batch_size, rng)
        sac_data = replay.sample(tasks, cfg.batch_size, rng)
        ctx = self._ctx_features(ctx_data)
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
        z_critic = z_per_sample if cfg.critic_trains_encoder else z_detached
        q_input = torch.cat([obs, z_critic, actions], -1)
        q1, q2 = self.q1(q_input).squeeze(-1), self.q2(q_input).squeeze(-1)
        qf_loss = F.mse_loss(q1, q_target) + F.mse_loss(q2, q_target)
        critic_loss = qf_loss + cfg.kl_weight * kl.sum()  # KL summed over the meta-batch, as in the paper's code
        extra: list[Tensor] = []
        if self.decoder is not None:  # reward prediction from (s, a, z): its error reaches the encoder through z
            r_hat = self.decoder(torch.cat([obs, actions, z_per_sample], -1)).squeeze(-1)
            reward_loss = F.mse_loss(r_hat, rewards)
            critic_loss = critic_loss + cfg.reward_decoder_weight * reward_loss
            extra.append(reward_loss)

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
        if cfg.auto_entropy and cfg.alpha_min > 0:  # the floor: α never goes below alpha_min
            with torch.no_grad():
                self.log_alpha.clamp_(min=math.log(cfg.alpha_min))
        with torch.no_grad():
            torch._foreach_lerp_(self.target_params, self.source_params, cfg.tau)
        return torch.stack([qf_loss, policy_loss, kl.mean(), alpha, q1.mean(), var.sqrt().mean(),
                            -new_logp.mean(), *extra]).detach()

    # ---- checkpoints ------------------------------------------------------------------
    _NETS = ("encoder", "policy", "q1", "q2", "q1_target", "q2_target")  # self.nets adds "decoder" where there is one

    def state_dict(self) -> dict[str, Any]:
        """Networks, target networks, optimizers, log_alpha, counters and the buffers. Buffer
        entries are tensors that may share memory with the live arrays: serialise the state
        before training further."""
        out: dict[str, Any] = {k: {n: v.detach().cpu().clone() for n, v in getattr(self, k).state_dict().items()}
                               for k in self.nets}
        out["log_alpha"] = self.log_alpha.detach().cpu().clone()
        out["optimizers"] = {k: copy.deepcopy(o.state_dict()) for k, o in self.optimizers.items()}
        out["collected_initial"] = self.collected_initial
        out["iterations"] = self.iterations
        out["train_subset"] = None if self.train_subset is None else torch.from_numpy(self.train_subset.copy())
        out["buffers"] = None if self.buffers is None else self.buffers.state()
        return out

    # what acting and adapting need (metarl bench release): no critics, optimizers or buffers
    RELEASE_KEYS = ("encoder", "policy", "log_alpha", "collected_initial", "iterations")
    DISPLAY_NAME = "PEARL"
    POSTERIOR_CONTEXT = True  # eval.pearl_context: the evaluation's posterior from all the context or a training-size draw

    @classmethod
    def label(cls, fields: Mapping[str, Any]) -> str:
        """The settings PEARL's ablations vary, so that rows of one benchmark tell apart: training
        goals, episodes per collected goal and iteration (prior + posterior + extra posterior),
        gradient steps, the entropy regime, the context size and fields, and the KL weight where it is
        not the default. A key an older result lacks ran with PEARLConfig's default; no fields at all:
        the name alone."""
        if not fields:
            return cls.DISPLAY_NAME
        d = {f.name: f.default for f in dataclasses.fields(PEARLConfig)}
        get = lambda k: fields.get(k, d[k])  # noqa: E731
        goals = "all goals" if not get("train_tasks_per_class") else f"{get('train_tasks_per_class')} goals/class"
        eps = f"{get('num_prior_episodes')}+{get('num_posterior_episodes')}+{get('num_extra_posterior_episodes')} episodes"
        steps = f"UTD {get('utd_ratio'):g}" if get("grad_steps_per_iteration") is None \
            else f"{get('grad_steps_per_iteration')} updates/iteration"
        if get("auto_entropy"):
            alpha = "auto α" + (f" ≥ {get('alpha_min'):g}" if get("alpha_min") else "")
        else:
            alpha = f"α {get('alpha'):g}"
        if get("reward_scale") != 1:
            alpha += f", reward ×{get('reward_scale'):g}"
        if get("use_reward_change_in_context"):
            fields_ = " (s, a, r, Δr, s')" if get("use_next_obs_in_context") else " (s, a, r, Δr)"
        else:
            fields_ = "" if get("use_next_obs_in_context") else " (s, a, r)"
        ctx = f"context {get('embedding_batch_size')}{fields_}"
        if get("kl_weight") != d["kl_weight"]:
            ctx += f", KL ×{get('kl_weight'):g}"
        if get("context_aggregation") == ContextAggregation.MEAN:
            ctx += ", mean-pooled encoder"
        if get("context_source") == ContextSource.REPLAY:
            ctx += " from replay"
        if get("reward_decoder_weight"):
            ctx += f", reward decoder ×{get('reward_decoder_weight'):g}"
        if not get("critic_trains_encoder"):
            ctx += ", critic does not train the encoder"
        if get("encoder_lr") is not None and get("encoder_lr") != get("lr"):
            ctx += f", encoder lr {get('encoder_lr'):g}"
        if get("prior_actions") == PriorActions.UNIFORM:
            eps += " (prior ones uniform random)"
        return f"{cls.DISPLAY_NAME} ({goals}, {eps}, {steps}, {alpha}, {ctx})"

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A released policy (`policy_only`) holds only RELEASE_KEYS: the critics keep their
        initial weights and the buffers stay empty; it can be evaluated, not trained on."""
        policy_only = bool(state.get("policy_only"))
        for k in self.nets:
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
        subset = state.get("train_subset")  # absent before train_tasks_per_class existed: every task
        self.train_subset = None if subset is None else np.asarray(subset.cpu().numpy(), np.int64).copy()
        # (checkpoints before issue 16 also hold "protocol_seed", the seed of a generator PEARL
        # no longer keeps: z in initial_task_state / adapt comes from the caller's rng)
        buf = state.get("buffers")
        if buf is None:
            self.buffers = None
            return
        if self.buffers is None or (self.buffers.n_tasks, self.buffers.horizon) != (buf["n_tasks"], buf["horizon"]):
            self._allocate(int(buf["n_tasks"]), int(buf["horizon"]))
        self._buffers().load(buf)
