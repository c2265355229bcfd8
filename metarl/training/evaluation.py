"""Meta-test protocols on held-out tasks.

- curve (`evaluate`): K adaptation rounds -> AdaptationCurve[task, round], for TensorBoard and
  quick looks;
- metaworld (`metaworld_evaluate`): the Meta-World+ protocol, for every number compared with a
  paper -> ProtocolResult (every episode, per goal; mean per goal, per class, over classes),
  and the figure metaworld 3.1.1's own function would compute from the same episodes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from metarl.core.fields import Section, int_in, one_of
from metarl.training.config import EVALUATION_STATES, MAX_ADAPTATION_STEPS, EvalSection
from metarl.training.sampler import episode_lengths
from metarl.core.types import AdaptationCurve, EpisodeBatch, StateT, Task

if TYPE_CHECKING:
    from metarl.agents.base import MetaAgent
    from metarl.training.sampler import Sampler


def select_tasks(tasks: Sequence[Task], per_class: int) -> list[Task]:
    """The first `per_class` tasks of each env class (all of them when per_class == 0)."""
    if per_class <= 0:
        return list(tasks)
    seen: dict[str, int] = {}
    out = []
    for t in tasks:
        if seen.get(t.name, 0) < per_class:
            seen[t.name] = seen.get(t.name, 0) + 1
            out.append(t)
    return out


def evaluate(agent: MetaAgent[StateT], sampler: Sampler, tasks: Sequence[Task], rounds: int, episodes_per_round: int,
             rng: np.random.Generator, deterministic: bool = False,
             on_progress: Callable[[int], None] | None = None,
             on_batch: Callable[[slice, int, EpisodeBatch], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> AdaptationCurve:
    """Round 0 acts with the agent's initial per-task state; after each round the
    agent adapts on that round's episodes. Tasks run in chunks of the sampler's slots; every
    random number (slot seeds, noise, the agent's own draws in initial_task_state / adapt) comes from `rng`.
    `on_batch(rows, k, batch)` sees each round's episodes (`rows`: their tasks' positions in `tasks`).
    `should_stop` is asked before each chunk: when it says yes, the curve holds the tasks done so far
    (the first ones of `tasks`, possibly none)."""
    tasks = list(tasks)
    success = np.zeros((len(tasks), rounds + 1))
    returns = np.zeros((len(tasks), rounds + 1))
    for start in range(0, len(tasks), sampler.n_slots):
        if should_stop is not None and should_stop():
            return AdaptationCurve(tasks[:start], success[:start], returns[:start])
        chunk = tasks[start:start + sampler.n_slots]
        state = agent.initial_task_state(len(chunk), rng)
        for k in range(rounds + 1):
            batch, state = sampler.sample(agent, chunk, state, episodes_per_round, rng, deterministic)
            rows = slice(start, start + len(chunk))
            success[rows, k] = batch.episode_success().mean(axis=1)
            returns[rows, k] = batch.episode_returns().mean(axis=1)
            if on_batch is not None:
                on_batch(rows, k, batch)
            if on_progress is not None:
                on_progress(batch.env_steps)
            if k < rounds:
                state = agent.adapt(state, batch, rng)
    return AdaptationCurve(tasks, success, returns)


# ---- the Meta-World protocol ------------------------------------------------------------------
@dataclass(frozen=True)
class MetaworldProtocol(Section):
    """The Meta-World+ meta-test protocol (`metaworld.evaluation.metalearning_evaluation`'s
    defaults): per held-out goal, `adaptation_episodes` episodes that do not end on success,
    one adaptation step (repeated `adaptation_steps` times, each on fresh episodes), then
    `evaluation_episodes` episodes that end on success. Actions are sampled in the adaptation
    episodes by default (mean actions there make MAML's policy gradient zero) and in the
    evaluation episodes too, so that this protocol and the periodic curve evaluations estimate
    the same quantity; `evaluation_deterministic` switches the latter to mean actions.

    `evaluation_state` says where each evaluation episode starts for an agent whose per-task
    state changes while it acts (RL²'s hidden state and previous action / reward / done inputs):
    - "continue" (default): the evaluation episodes go on from where the previous one left the
      state, so for RL² they are episodes 11-13 of one trial (the issue's protocol);
    - "restart": every evaluation episode starts from the state `adapt` returned, as
      metaworld-algorithms and garage evaluate RL² (with mean actions the evaluation episodes of
      a goal are then identical, resets depending only on the goal as Meta-World's and the toy
      tasks' do). It runs one `sample` call per evaluation episode, each drawing
      its own slot seeds from `rng`, so for agents whose state never changes while acting (MAML,
      Reptile, PEARL) it estimates the same success as "continue" but with other random numbers
      (other exploration noise and env seeds), not the same episodes."""

    adaptation_episodes: int = field(default=10, metadata=EvalSection.constraint("episodes_per_round"))
    """Episodes per goal in each adaptation step (they never end on success)."""
    adaptation_steps: int = field(default=1, metadata=int_in(0, MAX_ADAPTATION_STEPS))
    """Adaptation steps, each on fresh episodes."""
    evaluation_episodes: int = field(default=3, metadata=EvalSection.constraint("episodes_per_round"))
    """Episodes per goal after adaptation; they end on success."""
    adaptation_deterministic: bool = False
    """Mean actions in the adaptation episodes."""
    evaluation_deterministic: bool = False
    """Mean actions in the evaluation episodes."""
    evaluation_state: str = field(default="continue", metadata=one_of(*EVALUATION_STATES, what="value"))
    """Where each evaluation episode starts: continue or restart (above)."""

    @classmethod
    def label(cls, name: str) -> str:
        """`metarl eval`'s flag of field `name` (--adaptation-episodes)."""
        return f"--{name.replace('_', '-')}"


@dataclass
class ProtocolResult:
    """Every episode of a Meta-World-protocol evaluation, per goal.

    adapt_success / adapt_returns [n_tasks, adaptation_steps, adaptation_episodes]
    success / returns / lengths    [n_tasks, evaluation_episodes]: the evaluation episodes
    (`lengths`: steps until the first success, else the horizon)."""

    tasks: list[Task]
    adapt_success: np.ndarray
    adapt_returns: np.ndarray
    success: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray
    horizon: int
    protocol: MetaworldProtocol

    def per_goal(self) -> np.ndarray:
        return self.success.mean(axis=1)

    def by_class(self) -> dict[str, dict[str, float]]:
        """Class -> mean over its goals of: success (evaluation episodes), return, and the
        success of the (last) adaptation episodes, i.e. before that adaptation step."""
        names = np.array([t.name for t in self.tasks])
        out = {}
        for name in dict.fromkeys(names.tolist()):
            m = names == name
            out[name] = {"success": float(self.success[m].mean()), "return": float(self.returns[m].mean()),
                         "success_pre_adaptation": float(self.adapt_success[m, -1].mean())
                         if self.adapt_success.shape[1] else float("nan"),
                         "goals": int(m.sum())}
        return out

    def success_mean(self) -> float:
        """Mean per goal, then per class, then over classes."""
        return float(np.mean([c["success"] for c in self.by_class().values()]))

    def pre_adaptation_mean(self) -> float:
        vals = [c["success_pre_adaptation"] for c in self.by_class().values()]
        return float(np.mean(vals))

    def pooled_success(self, pool_size: int) -> float:
        """The figure metaworld 3.1.1's `metalearning_evaluation` computes from these very
        episodes: the goals of a class are evaluated `pool_size` at a time (one env each,
        in lock-step, episodes ending on success); per class, only the first
        `evaluation_episodes` episodes to *finish* among those envs count (ties broken by env
        order). Mean over classes per group, then over groups."""
        return pooled_success(self.tasks, self.success, self.lengths, pool_size)

    def to_dict(self, pool_size: int) -> dict[str, Any]:
        return {
            "protocol": "metaworld", **dataclasses.asdict(self.protocol), "horizon": self.horizon,
            "n_goals": len(self.tasks), "success": self.success_mean(),
            "success_pre_adaptation": self.pre_adaptation_mean(),
            "success_metaworld_pooled": self.pooled_success(pool_size), "pool_size": pool_size,
            "return": float(np.mean([c["return"] for c in self.by_class().values()])),
            "per_class": self.by_class(),
        }

    def as_curve(self) -> AdaptationCurve:
        """Round 0 = the (last step's) adaptation episodes, round 1 = the evaluation episodes."""
        pre_s = self.adapt_success[:, -1].mean(axis=1) if self.adapt_success.shape[1] else self.success.mean(axis=1)
        pre_r = self.adapt_returns[:, -1].mean(axis=1) if self.adapt_success.shape[1] else self.returns.mean(axis=1)
        return AdaptationCurve(self.tasks, np.stack([pre_s, self.success.mean(axis=1)], axis=1),
                               np.stack([pre_r, self.returns.mean(axis=1)], axis=1))

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for i, t in enumerate(self.tasks):
            for a in range(self.adapt_success.shape[1]):
                for e in range(self.adapt_success.shape[2]):
                    out.append({"task": t.name, "task_index": t.index, "phase": f"adapt{a}", "episode": e,
                                "success": float(self.adapt_success[i, a, e]),
                                "return": float(self.adapt_returns[i, a, e]), "length": self.horizon})
            for e in range(self.success.shape[1]):
                out.append({"task": t.name, "task_index": t.index, "phase": "eval", "episode": e,
                            "success": float(self.success[i, e]), "return": float(self.returns[i, e]),
                            "length": int(self.lengths[i, e])})
        return out


def pooled_success(tasks: Sequence[Task], success: np.ndarray, lengths: np.ndarray, pool_size: int) -> float:
    """See `ProtocolResult.pooled_success`. success, lengths: [n_tasks, E] evaluation episodes."""
    n_eval = success.shape[1]
    names = [t.name for t in tasks]
    classes = list(dict.fromkeys(names))
    idx_by_class = {c: [i for i, n in enumerate(names) if n == c] for c in classes}
    n_groups = max(-(-len(v) // pool_size) for v in idx_by_class.values())
    per_group = []
    for g in range(n_groups):
        rates = []
        for c in classes:
            group = idx_by_class[c][g * pool_size:(g + 1) * pool_size]
            if not group:
                continue
            finished = []  # (finishing step, env order, success)
            for order, i in enumerate(group):
                t = np.cumsum(lengths[i])
                finished += [(int(t[e]), order, float(success[i, e])) for e in range(n_eval)]
            finished.sort(key=lambda x: (x[0], x[1]))
            rates.append(sum(s for _, _, s in finished[:n_eval]) / n_eval)
        per_group.append(np.mean(rates))
    return float(np.mean(per_group))


def metaworld_evaluate(agent: MetaAgent[StateT], sampler: Sampler, tasks: Sequence[Task], rng: np.random.Generator,
                       protocol: MetaworldProtocol = MetaworldProtocol(),
                       on_progress: Callable[[int], None] | None = None,
                       should_stop: Callable[[], bool] | None = None) -> ProtocolResult:
    """Run the Meta-World protocol on `tasks` in chunks of the sampler's slots. All randomness
    comes from `rng` (slot seeds and exploration noise, drawn per sample call; the agent's own
    draws in initial_task_state / adapt). Per chunk the sample calls are: one per adaptation
    step, then one for all evaluation episodes ("continue") or one per evaluation episode, each
    from the post-adaptation state ("restart"). `should_stop` is asked before each chunk: when it
    says yes, the result holds the goals done so far (the first ones of `tasks`, possibly none)."""
    tasks = list(tasks)
    p = protocol
    n = len(tasks)
    a_succ = np.zeros((n, p.adaptation_steps, p.adaptation_episodes))
    a_ret = np.zeros_like(a_succ)
    succ = np.zeros((n, p.evaluation_episodes))
    ret = np.zeros_like(succ)
    lengths = np.zeros((n, p.evaluation_episodes), np.int64)
    for start in range(0, n, sampler.n_slots):
        if should_stop is not None and should_stop():
            return ProtocolResult(tasks[:start], a_succ[:start], a_ret[:start], succ[:start], ret[:start],
                                  lengths[:start], sampler.horizon, p)
        chunk = tasks[start:start + sampler.n_slots]
        rows = slice(start, start + len(chunk))
        state = agent.initial_task_state(len(chunk), rng)
        for a in range(p.adaptation_steps):
            batch, state = sampler.sample(agent, chunk, state, p.adaptation_episodes, rng,
                                          p.adaptation_deterministic)
            a_succ[rows, a] = batch.episode_success()
            a_ret[rows, a] = batch.episode_returns()
            if on_progress is not None:
                on_progress(batch.env_steps)
            state = agent.adapt(state, batch, rng)
        if p.evaluation_state == "continue":
            batch, state = sampler.sample(agent, chunk, state, p.evaluation_episodes, rng,
                                          p.evaluation_deterministic, end_on_success=True)
            succ[rows] = batch.episode_success()
            ret[rows] = batch.episode_returns()
            lengths[rows] = episode_lengths(batch.successes, True)
            if on_progress is not None:
                on_progress(int(lengths[rows].sum()))
        else:  # "restart": every evaluation episode from the post-adaptation state `state`
            for e in range(p.evaluation_episodes):
                batch, _ = sampler.sample(agent, chunk, state, 1, rng, p.evaluation_deterministic,
                                          end_on_success=True)
                succ[rows, e] = batch.episode_success()[:, 0]
                ret[rows, e] = batch.episode_returns()[:, 0]
                lengths[rows, e] = episode_lengths(batch.successes, True)[:, 0]
                if on_progress is not None:
                    on_progress(int(lengths[rows, e].sum()))
    return ProtocolResult(tasks, a_succ, a_ret, succ, ret, lengths, sampler.horizon, p)


def sample_calls(protocol: MetaworldProtocol) -> int:
    """`Sampler.sample` calls `metaworld_evaluate` makes per chunk (each draws one slot seed per task from `rng`)."""
    return protocol.adaptation_steps + (protocol.evaluation_episodes if protocol.evaluation_state == "restart" else 1)


def official_pool_size(n_test_classes: int, meta_batch_size: int = 20) -> int:
    """Envs per class in metaworld's own ML test vector env (`meta_batch_size // classes`)."""
    return max(1, meta_batch_size // max(1, n_test_classes))
