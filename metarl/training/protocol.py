"""Any MetaAgent as a `metaworld.evaluation.MetaLearningAgent`, so metaworld's own
`metalearning_evaluation` can score our checkpoints (the cross-check of our protocol).

Exploration noise is drawn exactly as our sampler draws it (one seed per env and phase from
`rng`, then `rollout.slot_noise`'s per-seed stream), so with the same goals the official envs
see the same actions as `metarl.training.evaluation.metaworld_evaluate` and produce the same episodes
(tests/test_protocol.py). What the official API does not show the agent: the observation after
an episode's last step (the envs reset in the same step), so that step's `next_obs` is its
`obs`; and in the evaluation episodes no rewards at all, so an agent with `observe` (RL²) gets
reward 0 there and its official figure is not comparable.

Why reward 0 (metaworld 3.1.1, `metaworld/evaluation.py`): after the adaptation phase,
`metalearning_evaluation` calls `evaluation(agent, eval_envs, evaluation_episodes)`, whose loop
is `actions = agent.eval_action(obs)`, `obs, _, terminations, truncations, infos =
eval_envs.step(actions)`, `agent.reset(dones)`. The step's rewards are bound to `_` and dropped;
the per-episode returns it reads (`infos["final_info"]["episode"]["r"]`) stay inside the function;
`agent.step(Timestep(...))`, the only call that carries rewards, is made in the adaptation
episodes only; and the `Agent` protocol used there has just `eval_action(observations)` and
`reset(env_mask)`. Meta-World observations hold no reward either. So the official function
does not make the evaluation rewards available to the agent in any form; giving them to RL²
would take a channel around it (e.g. a wrapper on the envs passed in, read by the adapter), and
the figure would then no longer be what the official function lets an agent see.

`protocol.evaluation_state == "restart"` is honoured as `metaworld_evaluate` does it: an env's
task state goes back to the post-adaptation state at the start of each of its evaluation
episodes, and its e-th evaluation episode takes its noise from the e-th of `evaluation_episodes`
seed vectors drawn from `rng` when the evaluation begins (the e-th sample call's slot seeds); an
env that runs more episodes than that (the official loop runs until every class has enough)
goes on with the last stream.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Generic

import numpy as np
import torch
from torch.utils import _pytree as pytree

from metarl.training.evaluation import MetaworldProtocol
from metarl.core.types import EpisodeBatch, StateT, Task

if TYPE_CHECKING:
    from metaworld.evaluation import Timestep

    from metarl.agents.base import MetaAgent


class MetaworldAgentAdapter(Generic[StateT]):
    """Implements metaworld.evaluation.MetaLearningAgent (init, adapt_action, step, adapt,
    eval_action, reset) over `agent`'s verbs for `n_envs` envs stepped in lock-step."""

    def __init__(self, agent: MetaAgent[StateT], n_envs: int, horizon: int, rng: np.random.Generator,
                 protocol: MetaworldProtocol = MetaworldProtocol()):
        self.agent = agent
        self.actor = agent.actor()
        self._state: StateT | None = None  # init() sets it
        self.n = n_envs
        self.horizon = horizon
        self.rng = rng
        self.protocol = protocol

    @property
    def state(self) -> StateT:
        """The per-task state of the n envs (after `init`)."""
        if self._state is None:
            raise RuntimeError("MetaworldAgentAdapter: init() sets the task state before anything acts")
        return self._state

    @state.setter
    def state(self, value: StateT) -> None:
        self._state = value

    # -- noise, as metarl.core.rollout.slot_noise draws it: one stream per (env, phase) seed
    def _new_phase(self, deterministic: bool) -> None:
        seeds = self.rng.integers(0, 2**31 - 1, size=self.n)
        self._streams = None if deterministic else [np.random.default_rng([int(s), 7]) for s in seeds]
        self._episode_noise: list[np.ndarray | None] = [None] * self.n  # [T, A] per env, drawn at its episode start

    def _noise(self) -> torch.Tensor | None:
        if self._streams is None:
            return None
        rows = []
        for i in range(self.n):
            noise = self._episode_noise[i]
            if noise is None:
                noise = self._episode_noise[i] = self._streams[i].standard_normal(
                    (self.horizon, self.agent.act_dim)).astype(np.float32)
            rows.append(noise[self._t[i]])
        return torch.from_numpy(np.stack(rows))

    def _act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        with torch.no_grad():
            action, self.state = self.actor.act(torch.as_tensor(obs, dtype=torch.float32), self.state,
                                                deterministic=deterministic, noise=self._noise())
        return action.cpu().numpy()

    # -- MetaLearningAgent
    def init(self) -> None:
        """New goals: the agent's initial per-task state, the first adaptation phase."""
        self.state = self.agent.initial_task_state(self.n, self.rng)
        self._adaptations = 0
        self._begin_adaptation()
        if self.protocol.adaptation_steps == 0:
            self._in_eval, self._eval_started = True, False

    def _begin_adaptation(self) -> None:
        self._new_phase(self.protocol.adaptation_deterministic)
        self._t = np.zeros(self.n, np.int64)
        self._steps: list[tuple] = []  # (obs, action, reward) per step, all envs
        self._in_eval = False

    def adapt_action(self, observations: np.ndarray) -> tuple[np.ndarray, dict]:
        self._last_obs = np.asarray(observations, np.float32)
        self._last_action = self._act(observations, self.protocol.adaptation_deterministic)
        return self._last_action, {}

    def step(self, timestep: Timestep) -> None:
        reward = np.asarray(timestep.reward, np.float32)
        done = np.logical_or(timestep.terminated, timestep.truncated)
        self._steps.append((self._last_obs, self._last_action, reward))
        with torch.no_grad():
            self.state = self.actor.observe(self.state, torch.from_numpy(self._last_action),
                                            torch.from_numpy(reward), done)
        self._t += 1
        for i in np.flatnonzero(done):
            self._t[i] = 0
            self._episode_noise[i] = None

    def adapt(self) -> None:
        """One adaptation step on the episodes since init (or the previous adapt)."""
        t = self.horizon
        m = len(self._steps) // t
        obs = np.stack([s[0] for s in self._steps[:m * t]], axis=1).reshape(self.n, m, t, -1)
        act = np.stack([s[1] for s in self._steps[:m * t]], axis=1).reshape(self.n, m, t, -1)
        rew = np.stack([s[2] for s in self._steps[:m * t]], axis=1).reshape(self.n, m, t)
        nxt = np.concatenate([obs[:, :, 1:], obs[:, :, -1:]], axis=2)  # last step's: not shown to agents
        # the official API does not tell the agent which goals its envs hold: placeholder tasks
        batch = EpisodeBatch(obs, act, rew, nxt, np.zeros(rew.shape, bool),
                             [Task("unknown", i, None) for i in range(self.n)])
        self.state = self.agent.adapt(self.state, batch, self.rng)
        self._adaptations += 1
        if self._adaptations < self.protocol.adaptation_steps:
            self._begin_adaptation()
        else:
            self._in_eval = True
            self._eval_started = False

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        action = self._act(observations, self.protocol.evaluation_deterministic)
        self._prev_action = action
        self._t += 1
        return action

    def reset(self, env_mask: np.ndarray) -> None:
        """Called by the official evaluation before its first step (all envs) and after every
        step (the envs whose episode ended there)."""
        if not self._in_eval:
            return
        mask = np.asarray(env_mask, bool)
        restart = self.protocol.evaluation_state == "restart"
        if not self._eval_started:
            if restart:  # the slot seeds of metaworld_evaluate's E sample calls, drawn in the same order
                self._post_adaptation = self.state
                self._eval_seeds = np.stack([self.rng.integers(0, 2**31 - 1, size=self.n)
                                             for _ in range(self.protocol.evaluation_episodes)])
                self._eval_episode = np.zeros(self.n, np.int64)
                self._streams = None if self.protocol.evaluation_deterministic else \
                    [np.random.default_rng([int(s), 7]) for s in self._eval_seeds[0]]
                self._episode_noise = [None] * self.n
            else:
                self._new_phase(self.protocol.evaluation_deterministic)
            self._t = np.zeros(self.n, np.int64)
            self._eval_started = True
            return
        with torch.no_grad():  # the official API shows the agent no rewards here (module docstring)
            self.state = self.actor.observe(self.state, torch.from_numpy(self._prev_action),
                                            torch.zeros(self.n), mask)
        if restart and mask.any():  # the ended envs start their next episode from the post-adaptation state
            keep = torch.from_numpy(~mask)
            self.state = pytree.tree_map(
                lambda now, start: torch.where(keep.to(now.device).reshape(-1, *[1] * (now.dim() - 1)), now, start)
                if torch.is_tensor(now) else now, self.state, self._post_adaptation)
            self._eval_episode += mask
            for i in np.flatnonzero(mask):
                e = self._eval_episode[i]
                if self._streams is not None and e < self.protocol.evaluation_episodes:
                    self._streams[i] = np.random.default_rng([int(self._eval_seeds[e, i]), 7])
        for i in np.flatnonzero(mask):
            self._t[i] = 0
            self._episode_noise[i] = None
