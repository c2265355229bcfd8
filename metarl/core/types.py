"""Typed data that crosses module boundaries: Task, EpisodeBatch, AdaptationCurve.

Shapes use S = task slots (tasks sampled together), M = episodes per task,
T = steps per episode (fixed: Meta-World and the toy tasks never terminate
early, they are truncated at the horizon), D = observation size, A = action size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, TypedDict, TypeVar, Union

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

# ---- per-task states ------------------------------------------------------------------
# An agent's per-task state is read only by the agent, but everyone else handles it: the sampler
# moves it to the CPU, the backends slice it per task slot (metarl.core.rollout.take_slots) and
# put the slots back together, evaluation threads it through rounds. Each is a mapping of tensors
# with a leading task (slot) dimension S, so torch's pytree utilities walk it; TypedDicts (plain
# dicts at runtime) name the keys and let mypy check what flows between sampler, evaluation and agent.

PerTaskParams = dict[str, "Tensor"]
"""MAML-TRPO, Reptile (metarl/agents/per_task_params.py): parameter name -> [S, *shape], one full
set of the policy's parameters per task."""


class RecurrentState(TypedDict):
    """RL²-PPO (metarl/agents/rl2_ppo.py): the trial so far, carried across episode ends."""

    h: Tensor       # [S, H] GRU hidden state
    prev_a: Tensor  # [S, A] the previous action (zeros at the start of a trial)
    prev_r: Tensor  # [S, 1] the previous reward, scaled by agent.reward_input_scale
    prev_d: Tensor  # [S, 1] 1.0 right after an episode ended


class _LatentRequired(TypedDict):
    z: Tensor    # [S, L] the latent the policy is conditioned on
    ctx: Tensor  # [S, N, F] context transitions (N = 0 before the task was seen)


class LatentState(_LatentRequired, total=False):
    """PEARL (metarl/agents/pearl.py): the task's context so far and a sample of z from its posterior."""

    probe: Tensor  # [S] bool, only with agent.prior_actions uniform: the slot acts uniformly at random


# every agent's state is one of these; a new agent with another kind of state adds it here
TaskState = Union[PerTaskParams, RecurrentState, LatentState]
# the state type of one agent (`MetaAgent[StateT]`, `Actor[StateT]`): what its verbs take and return
StateT = TypeVar("StateT", bound=TaskState)


class ConfigError(ValueError):
    """Bad user input. The message names the field and what is allowed."""


class StorageError(RuntimeError):
    """A run's file could not be written because of where it lives (a full or read-only disk, a
    directory without write permission), not because of the input: one line naming the file, where
    the run stopped and how to go on (`metarl train` exits with code 1)."""


class TaskEnv(Protocol):
    """One task slot (metarl.envs.metaworld.MetaWorldEnv, metarl.envs.toy.PointEnv): what TaskVectorEnv and
    metarl.core.rollout step."""

    def set_task(self, task: "Task") -> None: ...

    def seed(self, seed: int) -> None: ...

    def reset(self) -> np.ndarray: ...

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """-> next obs [D], reward, success at this step."""
        ...

    def sim_warnings(self) -> int: ...

    def close(self) -> None: ...


class Actor(Protocol[StateT]):
    """What acts in an episode loop: an agent, or the CPU copy it ships to sampler workers, over
    task states of type StateT. Subclass it (`class MyActor(Actor[RecurrentState])`) to inherit
    the defaults of the optional members: `observe`, `episodes_independent` and `bind`
    (metarl.core.rollout uses them without probing)."""

    # True when acting never changes the task state (MAML, Reptile: the per-task parameters):
    # the sampler may then run each episode of a task as its own unit, on any worker, and no
    # state travels back. Default False: a task's episodes run in order, as one trial (RL², PEARL).
    episodes_independent: ClassVar[bool] = False

    def act(self, obs: "Tensor", task_state: StateT, *, deterministic: bool,
            noise: "Tensor | None" = None) -> "tuple[Tensor, StateT]":
        """obs [S, D] -> actions [S, A]; `noise` is standard normal [S, A] (None: deterministic)."""
        ...

    def observe(self, task_state: StateT, action: "Tensor", reward: "Tensor",
                done: "bool | np.ndarray") -> StateT:
        """Called after every env step with the actions [S, A] and rewards [S] of that step;
        `done` is one flag for all slots, or one per slot when evaluation episodes end on
        success. Default: the state unchanged (only RL² folds these into its state)."""
        return task_state

    def bind(self, task_state: StateT) -> "Callable[[np.ndarray, np.ndarray | None], np.ndarray] | None":
        """An optional fast path for actors with `episodes_independent` and no `observe`: one
        slot's acting function (`task_state` with leading dimension 1), obs [D] and standard-normal
        noise [A] (None: the mean) -> action [A], built once per episode. Default None: the
        episode loop calls `act` at every step."""
        return None


@dataclass
class UpdateResult:
    """What `MetaAgent.train_iteration` returns. The trainer acts on the typed fields; the
    `scalars` ("<group>/<name>" -> value) only go to the logs."""

    rejected: int = 0                  # updates refused as non-finite (parameters kept) this iteration
    success_rate: float = float("nan")  # success of the iteration's (post-adaptation) training episodes
    scalars: dict[str, float] = field(default_factory=dict)

    def log_scalars(self) -> dict[str, float]:
        """Everything to log: the scalars plus the typed fields under their log names."""
        return {"rollout/success_rate": self.success_rate, **self.scalars,
                "train/rejected_updates": float(self.rejected)}


@dataclass(frozen=True)
class Task:
    """One task of a distribution.

    `name` is the environment class (``"reach-v3"``, ``"point"``); `index` is
    the task's position in its split; `payload` is what the env needs to become
    this task (a metaworld ``Task`` namedtuple, or a goal array for the toy).
    """

    name: str
    index: int
    payload: Any

    @property
    def label(self) -> str:
        return f"{self.name}/{self.index}"


@dataclass
class EpisodeBatch:
    """Episodes grouped by task slot.

    obs       [S, M, T, D] float32  observation before each action
    actions   [S, M, T, A] float32  action sampled by the policy (before clipping)
    rewards   [S, M, T]    float32
    next_obs  [S, M, T, D] float32  observation after each action
    successes [S, M, T]    bool     info["success"] at each step
    tasks     list of S Task
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    successes: np.ndarray
    tasks: list[Task]
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        return self.obs.shape[0]

    @property
    def n_episodes(self) -> int:
        return self.obs.shape[1]

    @property
    def horizon(self) -> int:
        return self.obs.shape[2]

    @property
    def env_steps(self) -> int:
        return int(np.prod(self.rewards.shape))

    def episode_returns(self) -> np.ndarray:
        """[S, M] undiscounted return of each episode."""
        return self.rewards.sum(axis=-1)

    def episode_success(self) -> np.ndarray:
        """[S, M] 1.0 where any step of the episode succeeded."""
        return np.asarray(self.successes.any(axis=-1), dtype=np.float64)

    def select_episodes(self, idx: slice | np.ndarray) -> "EpisodeBatch":
        return EpisodeBatch(
            self.obs[:, idx], self.actions[:, idx], self.rewards[:, idx],
            self.next_obs[:, idx], self.successes[:, idx], list(self.tasks),
            {k: v[:, idx] for k, v in self.extras.items()},
        )

    def select_tasks(self, idx: np.ndarray | list[int]) -> "EpisodeBatch":
        idx = np.asarray(idx)
        return EpisodeBatch(
            self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx],
            self.successes[idx], [self.tasks[i] for i in idx],
            {k: v[idx] for k, v in self.extras.items()},
        )


@dataclass
class AdaptationCurve:
    """Success and return on each held-out task after k = 0..K adaptation rounds.

    success[task, k] is the fraction of round-k episodes that succeeded and
    returns[task, k] their mean undiscounted return; round 0 is before the
    agent has seen anything of the task.
    """

    tasks: list[Task]
    success: np.ndarray  # [n_tasks, K+1]
    returns: np.ndarray  # [n_tasks, K+1]

    @property
    def rounds(self) -> int:
        return self.success.shape[1] - 1

    def success_by_round(self) -> list[float]:
        return [float(x) for x in self.success.mean(axis=0)]

    def return_by_round(self) -> list[float]:
        return [float(x) for x in self.returns.mean(axis=0)]

    def by_class(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Env class -> (success by round, return by round), averaged over its goals."""
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        names = np.array([t.name for t in self.tasks])
        for name in dict.fromkeys(names):
            m = names == name
            out[str(name)] = (self.success[m].mean(axis=0), self.returns[m].mean(axis=0))
        return out

    def scalars(self, prefix: str = "eval") -> dict[str, float]:
        out: dict[str, float] = {}
        for k, (s, r) in enumerate(zip(self.success_by_round(), self.return_by_round())):
            out[f"{prefix}/success@{k}"] = s
            out[f"{prefix}/return@{k}"] = r
        for name, (cs, cr) in self.by_class().items():
            for k in range(len(cs)):
                out[f"{prefix}/{name}/success@{k}"] = float(cs[k])
                out[f"{prefix}/{name}/return@{k}"] = float(cr[k])
        return out

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"task": t.name, "task_index": t.index, "round": k,
             "success": float(self.success[i, k]), "return": float(self.returns[i, k])}
            for i, t in enumerate(self.tasks) for k in range(self.rounds + 1)
        ]
