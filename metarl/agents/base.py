"""The MetaAgent contract: one sampler, one evaluator and one trainer serve every algorithm.

Adaptation is "act on a new task, then update a per-task state from what was seen", repeated:

    state = agent.initial_task_state(n_tasks, rng)
    episodes, state = sampler.sample(agent, tasks, state, n_episodes, rng)
    state = agent.adapt(state, episodes, rng)

The per-task state is read only by its agent (MAML, Reptile: adapted parameters, `PerTaskParams`;
RL²: hidden state and the previous action, reward and done, `RecurrentState`; PEARL: context and a
sample of z, `LatentState`; all in metarl.core.types), but it is a mapping of tensors with a
leading task dimension so that a vector env can slice it across its worker processes. The
contract is generic in it: `MetaAgent[StateT]`, `Actor[StateT]`.

Randomness: every random number of the protocol comes from the caller's
`numpy.random.Generator` (`rng`): the sampler's slot seeds and exploration noise, the tasks and
minibatches of `train_iteration`, and whatever `initial_task_state` / `adapt` draw (PEARL's z).
No agent keeps a generator of its own, so the trainer's checkpoint (which stores `rng` and
torch's global generator) is all a bit-exact resume needs, and an evaluation, which draws from
a generator of its own, never shifts training. NumPy rather than torch.Generator because the
trainer, the sampler and the evaluators already thread NumPy generators; an agent that wants
torch numbers draws `rng.standard_normal(...)` and converts.

Everything an agent must offer is declared on `MetaAgent` below; the optional verbs have their
defaults right there, so an agent class that subclasses `MetaAgent` gets them and no caller
probes with `hasattr`:
- `actor()`: what the sampler's workers act with (picklable, on the CPU); default: the agent.
- `observe(task_state, action, reward, done)` (from `metarl.core.types.Actor`): called after every
  env step; default: the state unchanged. RL² feeds its GRU the previous action, reward and
  episode end.
- `episodes_independent` (from `Actor`): True when acting never changes the task state, so the
  sampler may run each episode as its own unit; default False (one unit per task's trial).
- `bind(task_state)` (from `Actor`): one slot's acting function, built once per episode, for
  actors with `episodes_independent`; default None (the loop calls `act`).
- `notes()`: one-line messages since the last call, which the trainer shows with its progress
  output (agents never print); default: none.
- `DISPLAY_NAME`, `label(fields)`, `ROLLOUTS_ARE_THETA`, `POSTERIOR_CONTEXT`: how a benchmark report
  (`metarl bench report`) names a run of the agent from its result file's `agent:` section and reads
  its logs; defaults: the registry name, False, False.
- `RELEASE_KEYS`: the `state_dict()` keys acting and adapting need (metarl bench release);
  default: all of them.

`train_iteration` returns an `UpdateResult`: the values the trainer acts on as typed fields
(`rejected`, `success_rate`) and the rest as `scalars` for the logs.

Agent configs extend `AgentConfig`: a frozen dataclass whose fields state their constraint
declaratively (`metarl.core.fields`), checked in one `__post_init__`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol, Sequence, TypeVar

import numpy as np
from torch import Tensor

from metarl.core.fields import AgentConfig, Choice, in_range, layer_sizes, one_of
from metarl.core.types import (Actor, EpisodeBatch, LatentState, PerTaskParams, RecurrentState, StateT, Task, TaskState,
                               UpdateResult)

__all__ = ["Actor", "AgentConfig", "MetaAgent", "SamplerLike", "TaskState", "StateT", "PerTaskParams", "RecurrentState",
           "LatentState", "UpdateResult",
           "DISCOUNT", "GAE_LAMBDA", "INIT_LOG_STD", "LAYER_SIZES", "TASK_SAMPLING", "TaskSampling",
           "draw_meta_batch"]

# constraints several agents' fields share
DISCOUNT = in_range(0, 1, lo_open=True)
GAE_LAMBDA = in_range(0, 1)
LAYER_SIZES = layer_sizes()
# a Gaussian policy's initial log-std: e^2 = 7.4 already spans the action box [-1, 1] three times
INIT_LOG_STD = in_range(-20, 2, note="(a standard deviation of e^-20 to e^2)")


class TaskSampling(Choice):
    """How an agent that samples a meta-batch draws its tasks (`task_sampling` field, draw_meta_batch)."""
    UNIFORM = "uniform"
    CLASS_BALANCED = "class_balanced"


TASK_SAMPLING = one_of(TaskSampling, what="task sampling")


def draw_meta_batch(tasks: Sequence[Task], n: int, rng: np.random.Generator, how: str = "uniform") -> list[Task]:
    """`n` tasks for one meta-batch. "uniform": drawn uniformly from all of `tasks` (with replacement
    only when there are fewer than `n`). "class_balanced": n // C from each of the C env classes (as
    the reference implementations' ML10 batches: 2 goals x 10 classes), the n % C left over from
    distinct classes drawn at random, without replacement inside a class while it has enough goals;
    the result is grouped by class, in the order the classes first appear in `tasks`."""
    if how == "uniform":
        idx = rng.choice(len(tasks), size=n, replace=len(tasks) < n)
        return [tasks[i] for i in idx]
    by_class: dict[str, list[Task]] = {}
    for task in tasks:
        by_class.setdefault(task.name, []).append(task)
    names = list(by_class)
    per, left = divmod(n, len(names))
    extra = set(rng.choice(len(names), size=left, replace=False).tolist()) if left else set()
    out: list[Task] = []
    for j, name in enumerate(names):
        pool, k = by_class[name], per + (j in extra)
        out += [pool[i] for i in rng.choice(len(pool), size=k, replace=len(pool) < k)]
    return out


S = TypeVar("S", bound=TaskState)


class SamplerLike(Protocol):
    """What an agent may ask of the sampler (metarl.training.sampler.Sampler)."""

    horizon: int  # steps per episode

    @property
    def n_slots(self) -> int:
        """Task slots one `sample` call can run."""
        ...

    def sample(self, agent: "MetaAgent[S]", tasks: Sequence[Task], task_state: S,
               n_episodes: int, rng: np.random.Generator,
               deterministic: bool = False) -> tuple[EpisodeBatch, S]: ...


class MetaAgent(Actor[StateT], Protocol[StateT]):
    """An agent class subclasses this with its task-state type (`class RL2PPO(MetaAgent[RecurrentState])`)
    to inherit the defaults; mypy checks every registered class against it (agents.make) and that
    the state each verb returns is the one the next takes."""

    meta_batch: int   # task slots the sampler needs
    act_dim: int      # size of the exploration noise the sampler draws per step
    RELEASE_KEYS: ClassVar[tuple[str, ...] | None] = None  # None: the whole state_dict
    # how a benchmark report (metarl bench report) names and reads this agent's results
    DISPLAY_NAME: ClassVar[str] = ""  # "": the registry name
    ROLLOUTS_ARE_THETA: ClassVar[bool] = False  # progress.csv's rollout/success_rate: θ's own episodes
    POSTERIOR_CONTEXT: ClassVar[bool] = False  # eval.pearl_context applies to its evaluations

    @classmethod
    def label(cls, fields: Mapping[str, Any]) -> str:
        """A results table's name for a run of this agent, from its config's `agent:` section as a
        result file recorded it (`fields`; a key an older file lacks ran with the field's default)."""
        return cls.DISPLAY_NAME or str(fields.get("name", ""))

    def initial_task_state(self, n_tasks: int, rng: np.random.Generator) -> StateT:
        """The per-task state before the agent has seen anything of the tasks."""
        ...

    def act(self, obs: Tensor, task_state: StateT, *, deterministic: bool,
            noise: Tensor | None = None) -> tuple[Tensor, StateT]:
        """obs [S, D] -> actions [S, A]; `noise` is standard normal [S, A] (None: deterministic)."""
        ...

    def adapt(self, task_state: StateT, episodes: EpisodeBatch, rng: np.random.Generator) -> StateT:
        """One adaptation step from the episodes ([S, M, T, ...]) each task has just seen."""
        ...

    def train_iteration(self, sampler: SamplerLike, tasks: Sequence[Task],
                        rng: np.random.Generator) -> UpdateResult:
        """Collect with the sampler, update, report. Every random draw comes from `rng` (or
        torch's global generator, which the trainer's checkpoints store)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-exact resume needs: tensors, numbers, strings, lists, dicts."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # ---- optional verbs: the defaults ------------------------------------------------
    def actor(self) -> Actor[StateT]:
        """What the sampler's workers act with: picklable, on the CPU, with `act` (and
        `observe`). Default: the agent itself."""
        return self

    def notes(self) -> list[str]:
        """One-line messages for the person running it, gathered since the last call (PEARL: its
        buffers' memory, a warm restart). The trainer shows them with its progress output; an
        agent never prints. Default: none."""
        return []
