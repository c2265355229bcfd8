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

import dataclasses
import sys
from typing import TYPE_CHECKING, Any

from metarl.core.machine import available_ram_bytes, cpu_cores  # noqa: F401 (re-exported; tests patch them here)
from metarl.core.types import ConfigError

if TYPE_CHECKING:
    from metarl.training.config import EvalSection, RunConfig

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


HIDDEN_FIELDS = ("hidden_sizes", "encoder_hidden", "head_hidden", "hidden_size")
TOY_TASK_BYTES = 800  # one toy goal in each split: a Task, its goal array (measured: ~270 bytes a split)
PARAM_COPIES = 8      # weights, gradients, two Adam moments, PEARL's target nets, the actor's copy, slack
PEARL_FLOATS_PER_SAMPLE_UNIT = 40  # SAC's graphs over a sampled transition (encoder, policy, two Qs, targets)
RESULT_BYTES_PER_EPISODE = 400     # an evaluation's per-episode numbers and the CSV row built from them


def _layers(agent_cfg: Any, name: str, override: dict[str, Any]) -> tuple[int, ...]:
    v = override[name] if name in override else getattr(agent_cfg, name, None)
    if v is None:
        return ()
    return (int(v),) if isinstance(v, int) else tuple(int(h) for h in v)


def _hidden_units(agent_cfg: Any, override: dict[str, Any] | None = None) -> int:
    override = override or {}
    return sum(sum(_layers(agent_cfg, f, override)) for f in HIDDEN_FIELDS) + \
        int(override.get("latent_dim", getattr(agent_cfg, "latent_dim", 0)) or 0)


def _chain(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def param_count(agent_cfg: Any, obs_dim: int, act_dim: int, override: dict[str, Any] | None = None) -> int:
    """Parameters of the networks the agent's config asks for (agents/*.py build them)."""
    o = override or {}
    hidden, enc, head = (list(_layers(agent_cfg, f, o)) for f in ("hidden_sizes", "encoder_hidden", "head_hidden"))
    name = getattr(agent_cfg, "name", "")
    if name == "pearl":
        latent = int(o.get("latent_dim", getattr(agent_cfg, "latent_dim", 1)))
        ctx = 2 * obs_dim + act_dim + 2  # the widest context transition: s, a, r, s', Δr
        return (_chain([ctx, *enc, 2 * latent]) + _chain([obs_dim + latent, *hidden, 2 * act_dim])
                + 4 * _chain([obs_dim + latent + act_dim, *hidden, 1]))
    if name == "rl2_ppo":
        h = sum(_layers(agent_cfg, "hidden_size", o)) or 1
        x = [obs_dim + act_dim + 2, *enc]
        return (_chain(x) + 3 * (x[-1] * h + h * h + 2 * h) + _chain([h, *head, act_dim])
                + _chain([h, *head, 1]))
    return _chain([obs_dim, *hidden, *enc, *head, act_dim]) + act_dim


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
                   env_kind: str, agent_name: str, hidden_units: int, params: int = 0,
                   sac_samples: int = 0) -> dict[str, int]:
    """The estimate's parts in bytes: worker processes, env instances, one sampled batch
    (obs, next obs, actions, noise, rewards, successes), the learner's graphs over it, and the
    networks (`params` parameters, PARAM_COPIES copies each; PEARL: `sac_samples` transitions
    per gradient step)."""
    steps = n_slots * episodes * horizon
    per_step = 4 * (2 * obs_dim + 2 * act_dim + 1) + 1
    learner = LEARNER_FLOATS_PER_STEP_UNIT.get(agent_name, 0) * 4 * (obs_dim + act_dim + hidden_units)
    sac = sac_samples * PEARL_FLOATS_PER_SAMPLE_UNIT * 4 * (obs_dim + act_dim + hidden_units)
    return {"workers": n_workers * WORKER_BYTES, "envs": n_slots * ENV_BYTES.get(env_kind, 0),
            "batch": steps * per_step, "learner": steps * learner + sac,
            "networks": (PARAM_COPIES + n_workers) * 4 * params}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one run or evaluation allocates, each size with the field (or flag) it comes from."""

    slots: int
    workers: int
    episodes: int
    horizon: int
    fields: dict[str, str]      # "slots" | "workers" | "episodes" | "horizon" -> the name to blame
    extra: int = 0              # bytes on top (an evaluation's results)
    extra_field: str = ""


def _need(cfg: RunConfig, bench: Any, z: Sizes, override: dict[str, Any] | None = None) -> dict[str, int]:
    kind = getattr(bench.env_factory, "kind", "metaworld")
    sac = 0
    if cfg.agent.name == "pearl":
        o = override or {}
        sac = z.slots * int(o.get("batch_size", getattr(cfg.agent, "batch_size", 0)) +
                            getattr(cfg.agent, "embedding_batch_size", 0))
    parts = estimate_bytes(z.slots, z.workers, z.episodes, z.horizon, bench.obs_dim, bench.act_dim, kind,
                           cfg.agent.name, _hidden_units(cfg.agent, override),
                           param_count(cfg.agent, bench.obs_dim, bench.act_dim, override), sac)
    parts["results"] = z.extra
    return parts


def _culprit(cfg: RunConfig, bench: Any, z: Sizes, need: int) -> str:
    """The field whose value, brought back to a modest one, shrinks the estimate the most."""
    modest = {"slots": 1, "workers": 0, "episodes": 1, "horizon": min(z.horizon, 20)}
    best, best_need = z.fields["slots"], need
    for key, value in modest.items():
        n = sum(_need(cfg, bench, dataclasses.replace(z, **{key: value})).values())  # type: ignore[arg-type]
        if n < best_need:
            best, best_need = z.fields[key], n
    small: dict[str, Any] = {"hidden_sizes": (8,), "encoder_hidden": (8,), "head_hidden": (), "hidden_size": 8, "latent_dim": 1,
             "batch_size": 1}
    for name, value in small.items():
        if getattr(cfg.agent, name, None) is None:
            continue
        n = sum(_need(cfg, bench, z, {name: value}).values())
        if n < best_need:
            best, best_need = f"agent.{name}", n
    if z.extra and sum(_need(cfg, bench, dataclasses.replace(z, extra=0)).values()) < best_need:
        best = z.extra_field
    return best


def _check_ram(cfg: RunConfig, bench: Any, z: Sizes, what: str) -> None:
    parts = _need(cfg, bench, z)
    need = sum(parts.values())
    avail = available_ram_bytes()
    if avail is None or need <= avail:
        return
    field = _culprit(cfg, bench, z, need)
    raise ConfigError(
        f"{field}: {z.slots} task slots x {z.episodes} episodes x {z.horizon} steps with "
        f"{z.workers} worker process{'es' if z.workers != 1 else ''} need about {need / GIB:,.1f} GiB "
        f"(batch {(parts['batch'] + parts['learner']) / GIB:,.1f}, networks {parts['networks'] / GIB:,.1f}, "
        f"envs {parts['envs'] / GIB:,.1f}, workers {parts['workers'] / GIB:,.1f}"
        + (f", results {parts['results'] / GIB:,.1f}" if parts["results"] else "")
        + f") but {avail / GIB:,.1f} GiB of RAM is available; lower {field} ({what})")


def check_tasks(cfg: RunConfig) -> None:
    """env.toy_tasks against the available RAM, before the toy goals are drawn (both splits)."""
    if cfg.env.benchmark != "toy":
        return
    need, avail = int(cfg.env.toy_tasks) * TOY_TASK_BYTES, available_ram_bytes()
    if avail is not None and need > avail:
        raise ConfigError(f"env.toy_tasks: {cfg.env.toy_tasks:,} goals per split need about {need / GIB:,.1f} GiB "
                          f"but {avail / GIB:,.1f} GiB of RAM is available; lower env.toy_tasks")


def check(cfg: RunConfig, bench: Any, names: dict[str, str] | None = None) -> None:
    """Refuse agent.meta_batch / env.n_workers / episode and network sizes that cannot fit this
    machine, naming the field that weighs most; warn about more worker processes than cores.
    Called before any env is built, network allocated or worker spawned."""
    slots = int(cfg.agent.meta_batch)
    workers = int(cfg.env.n_workers)  # independent of the task slots: workers take units as they free up
    cores = cpu_cores()
    if workers > MAX_WORKERS_PER_CORE * cores:
        raise ConfigError(f"{(names or {}).get('workers', 'env.n_workers')}: {cfg.env.n_workers} worker processes on {cores} "
                          f"core{'s' if cores != 1 else ''}; allowed: "
                          f"0..{MAX_WORKERS_PER_CORE * cores} (up to {cores} without oversubscribing)")
    episodes = episodes_per_task(cfg.agent, cfg.eval)
    ep_field = "eval.episodes_per_round"
    if cfg.agent.name == "pearl":  # its collection phases, each a field
        phases = ("num_prior_episodes", "num_posterior_episodes", "num_extra_posterior_episodes")
        top = max(phases, key=lambda f: int(getattr(cfg.agent, f, 0) or 0))
        if int(getattr(cfg.agent, top)) > cfg.eval.episodes_per_round:
            ep_field = f"agent.{top}"
    elif int(getattr(cfg.agent, "episodes_per_task", 0) or 0) >= cfg.eval.episodes_per_round:
        ep_field = "agent.episodes_per_task"
    _check_ram(cfg, bench, Sizes(slots, workers, episodes, bench.max_episode_steps,
                                 {"slots": "agent.meta_batch", "workers": "env.n_workers", "episodes": ep_field,
                                  "horizon": "env.max_episode_steps", **(names or {})}),
               "the episodes per task, the network sizes or env.n_workers")
    if workers > cores:
        warn_once(f"env.n_workers={cfg.env.n_workers} starts {workers} worker processes on {cores} "
                  f"core{'s' if cores != 1 else ''}; they will share cores (no faster than {cores})")


def check_eval(cfg: RunConfig, bench: Any, n_tasks: int, episodes: int, results_per_task: int,
               names: dict[str, str]) -> None:
    """An evaluation of `n_tasks` tasks, `episodes` at most per sampler call and
    `results_per_task` results (rounds, or episodes) per task, against the available RAM (after `check`, which has
    bounded the training-side sizes). `names`: the flag or field of "episodes", "horizon",
    "results" (what sets the results per task)."""
    z = Sizes(min(int(cfg.agent.meta_batch), max(n_tasks, 1)), int(cfg.env.n_workers), episodes,
              bench.max_episode_steps,
              {"slots": "agent.meta_batch", "workers": "--workers", "episodes": names["episodes"],
               "horizon": names["horizon"]},
              extra=n_tasks * results_per_task * RESULT_BYTES_PER_EPISODE, extra_field=names["results"])
    _check_ram(cfg, bench, z, "or evaluate fewer tasks")


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
