"""Sizes checked against this machine's cores and memory before anything is allocated or spawned.

The estimates are deliberately simple and come from measurements on this project's code
(peak RSS, `/usr/bin/time -f %M`, one training iteration, in-process sampling):

- MAML-TRPO holds about 26 x 4 bytes per sampled step per unit of (obs_dim + act_dim +
  sum(hidden_sizes)) for its meta-gradient and Fisher-vector graphs: toy, hidden (32, 32):
  0.96 GB at meta_batch 500 and 5.96 GB at 4000 (1.43 MB per task, 7.1 KB per step);
  hidden (128, 128), meta_batch 500: 3.09 GB (the formula says 3.0 GB).
- RL2-PPO: toy, meta_batch 2000: 0.46 GB, about 15 x 4 bytes per step and unit.
- PEARL moves the sampled episodes into its replay buffers, which it sizes and checks itself.
- Every sampler worker process costs about 150 MiB before its first env (Python, torch,
  MuJoCo); every Meta-World env instance about 20 MiB more (ML10 workers with 10 slots
  reached 2.4 GB once each slot had built an env of every class).

A configuration whose estimate exceeds the RAM available now is refused; more worker
processes than cores only get a warning, more than MAX_WORKERS_PER_CORE per core are refused.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from metarl.machine import available_ram_bytes, cpu_cores  # noqa: F401 (re-exported; tests patch them here)
from metarl.types import ConfigError

if TYPE_CHECKING:
    from metarl.config import EvalSection, RunConfig

GIB = 2 ** 30
MIB = 2 ** 20
WORKER_BYTES = 150 * MIB
ENV_BYTES = {"metaworld": 20 * MIB, "toy": 4096}
LEARNER_FLOATS_PER_STEP_UNIT = {"maml_trpo": 26, "rl2_ppo": 15}
MAX_WORKERS_PER_CORE = 4
MAX_THREADS_PER_CORE = 4  # run.torch_threads: oversubscribed OpenMP threads stall (README, "Commands")

_warned: set[str] = set()


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"metarl: warning: {message}", file=sys.stderr)


def _hidden_units(agent_cfg: Any) -> int:
    total = 0
    for field in ("hidden_sizes", "encoder_hidden"):
        total += sum(int(h) for h in (getattr(agent_cfg, field, None) or ()))
    total += int(getattr(agent_cfg, "hidden_size", 0) or 0)
    return total


def episodes_per_task(agent_cfg: Any, eval_cfg: EvalSection) -> int:
    """Episodes a task slot holds in one sampler call: the agent's per-task batch or an
    evaluation round, whichever is larger."""
    train = getattr(agent_cfg, "episodes_per_task", None)
    if train is None:  # PEARL: its collection phases
        train = max([int(getattr(agent_cfg, f, 0) or 0) for f in
                     ("num_initial_episodes", "num_prior_episodes", "num_posterior_episodes",
                      "num_extra_posterior_episodes")] + [1])
    return max(int(train), int(eval_cfg.episodes_per_round))


def estimate_bytes(n_slots: int, n_workers: int, episodes: int, horizon: int, obs_dim: int, act_dim: int,
                   env_kind: str, agent_name: str, hidden_units: int) -> dict[str, int]:
    """The estimate's parts in bytes: worker processes, env instances, one sampled batch
    (obs, next obs, actions, noise, rewards, successes) and the learner's graphs over it."""
    steps = n_slots * episodes * horizon
    per_step = 4 * (2 * obs_dim + 2 * act_dim + 1) + 1
    learner = LEARNER_FLOATS_PER_STEP_UNIT.get(agent_name, 0) * 4 * (obs_dim + act_dim + hidden_units)
    return {"workers": n_workers * WORKER_BYTES, "envs": n_slots * ENV_BYTES.get(env_kind, 0),
            "batch": steps * per_step, "learner": steps * learner}


def check(cfg: RunConfig, bench: Any) -> None:
    """Refuse agent.meta_batch / env.n_workers that cannot fit this machine; warn about more
    worker processes than cores. Called before any env is built or worker spawned."""
    slots = int(cfg.agent.meta_batch)
    workers = int(cfg.env.n_workers)  # independent of the task slots: workers take units as they free up
    cores = cpu_cores()
    if workers > MAX_WORKERS_PER_CORE * cores:
        raise ConfigError(f"env.n_workers: {cfg.env.n_workers} worker processes on {cores} "
                          f"core{'s' if cores != 1 else ''}; allowed: "
                          f"0..{MAX_WORKERS_PER_CORE * cores} (up to {cores} without oversubscribing)")
    kind = getattr(bench.env_factory, "kind", "metaworld")
    episodes = episodes_per_task(cfg.agent, cfg.eval)
    parts = estimate_bytes(slots, workers, episodes, bench.max_episode_steps, bench.obs_dim, bench.act_dim,
                           kind, cfg.agent.name, _hidden_units(cfg.agent))
    need = sum(parts.values())
    avail = available_ram_bytes()
    if avail is not None and need > avail:
        field = "env.n_workers" if parts["workers"] > need / 2 else "agent.meta_batch"
        raise ConfigError(
            f"{field}: {slots} task slots x {episodes} episodes x {bench.max_episode_steps} steps with "
            f"{workers} worker process{'es' if workers != 1 else ''} need about {need / GIB:,.1f} GiB "
            f"(batch {(parts['batch'] + parts['learner']) / GIB:,.1f}, envs {parts['envs'] / GIB:,.1f}, "
            f"workers {parts['workers'] / GIB:,.1f}) but {avail / GIB:,.1f} GiB of RAM is available; "
            f"lower agent.meta_batch, the episodes per task or env.n_workers")
    if workers > cores:
        warn_once(f"env.n_workers={cfg.env.n_workers} starts {workers} worker processes on {cores} "
                  f"core{'s' if cores != 1 else ''}; they will share cores (no faster than {cores})")


def check_threads(cfg: RunConfig) -> None:
    """run.torch_threads against this machine: more than MAX_THREADS_PER_CORE per core is refused,
    more than one per core warned about. Called by `metarl train` before anything is written (not
    by eval, which does not use the field)."""
    threads, cores = int(cfg.run.torch_threads), cpu_cores()
    if threads > MAX_THREADS_PER_CORE * cores:
        raise ConfigError(f"run.torch_threads: {threads} learner threads on {cores} core{'s' if cores != 1 else ''}; "
                          f"allowed: 0..{MAX_THREADS_PER_CORE * cores} (0: torch's default; up to {cores} without "
                          f"oversubscribing)")
    if threads > cores:
        warn_once(f"run.torch_threads={threads} on {cores} core{'s' if cores != 1 else ''}; the threads will "
                  f"share cores (no faster than {cores})")
