"""The Python entry points, for a script that trains and evaluates without the CLI (exported as
metarl.train, metarl.resume and metarl.evaluate):

    import metarl

    outcome = metarl.train("configs/toy_maml_trpo.yaml", ["run.env_steps=8000", "run.out_dir=runs/mine"])
    print(outcome.run_dir, outcome.curve.success_by_round())       # the final held-out evaluation
    curve = metarl.evaluate(outcome.run_dir, tasks_per_class=5)     # its newest checkpoint, again

`train` is `metarl train CONFIG --set ...` and `resume` is `metarl train --resume RUN_DIR`: the same
run dir, checkpoints, logs and runs.jsonl (metarl/training/run.py), returning a RunOutcome instead
of printing. `hooks` changes what runs around the loop (metarl/training/hooks.py): a list instead of
the defaults, or a function that gets the default list and returns the one to run:

    from metarl.training.hooks import Hook, Progress

    class Every(Hook):
        def on_iteration(self, t, it):                    # t: the Trainer, it: the Iteration
            print(t.iteration, it.update.success_rate)

    metarl.train(preset, extra_hooks=[Every()])
    metarl.train(preset, hooks=lambda defaults: [h for h in defaults if not isinstance(h, Progress)])

A bad config, override or path raises ConfigError with the one line the CLI would print.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from metarl.core.types import ConfigError

if TYPE_CHECKING:
    from metarl.core.types import AdaptationCurve
    from metarl.training.config import RunConfig
    from metarl.training.run import HookChoice, RunOutcome
    from metarl.training.hooks import Hook


def _command(call: str) -> str:
    return f"python {' '.join(sys.argv)} ({call})"


def train(config: str | Path | RunConfig, overrides: Sequence[str] = (), *, seed: int | None = None,
          device: str | None = None, hooks: HookChoice = None, extra_hooks: Sequence[Hook] = (),
          final_eval_on_stop: bool = False) -> RunOutcome:
    """Train a preset (a YAML path, with `overrides` as `--set` takes them, or a RunConfig) in a fresh
    run dir under run.out_dir, evaluate it, and return the RunOutcome. SIGINT / SIGTERM stop it after
    the current iteration with a checkpoint (`outcome.stopped`), as `metarl train` does."""
    from metarl.agents import AGENTS
    from metarl.training import config as configs
    from metarl.training.run import Run
    from metarl.training.trainer import StopFlag

    if isinstance(config, (str, Path)):
        cfg = configs.load(str(config), list(overrides), seed=seed, device=device, registry=AGENTS)
    else:
        if overrides or seed is not None or device is not None:
            raise ConfigError("overrides: give them with a preset path; a RunConfig is used as it is")
        cfg = config
    with StopFlag() as stop:
        with Run.create(cfg, command=_command("metarl.train")) as run:
            return run.start(hooks, stop, extra_hooks=extra_hooks, final_eval_on_stop=final_eval_on_stop)


def resume(run_dir: str | Path, overrides: Sequence[str] = (), *, allow_config_change: bool = False,
           seed: int | None = None, device: str | None = None, hooks: HookChoice = None,
           extra_hooks: Sequence[Hook] = (), final_eval_on_stop: bool = False) -> RunOutcome:
    """Continue `run_dir` from its newest readable checkpoint (`overrides` may change only fields that
    do not shape training unless `allow_config_change`), as `metarl train --resume` does."""
    from metarl.training.run import Run
    from metarl.training.trainer import StopFlag

    with StopFlag() as stop:
        with Run.resume(run_dir, overrides, allow_config_change, seed=seed, device=device,
                        command=_command("metarl.resume")) as run:
            return run.start(hooks, stop, extra_hooks=extra_hooks, final_eval_on_stop=final_eval_on_stop)


def _bounded(name: str, value: int | None, lo: int, hi: int) -> None:
    if value is not None and not (isinstance(value, int) and lo <= value <= hi):
        raise ConfigError(f"{name}: must be an integer in {lo}..{hi}, got {value!r}")


def evaluate(checkpoint: str | Path, *, split: str = "test", tasks_per_class: int = 0, rounds: int | None = None,
             episodes: int | None = None, deterministic: bool | None = None, seed: int = 0, device: str = "auto",
             workers: int | None = None) -> AdaptationCurve:
    """The adaptation curve of a checkpoint (a .pt file, or a run dir: its newest checkpoint) on
    `split`'s tasks ("test": held out, "train"), `tasks_per_class` a class (0: all), `rounds` and
    `episodes` a round (default: the run's eval section). The same numbers as `metarl eval CHECKPOINT`
    with the same flags (seed 0 there too); nothing is written. It runs in worker processes here
    (`workers`: how many, 0: in this process), never where the checkpoint's config says."""
    import numpy as np
    import torch

    from metarl.agents import AGENTS
    from metarl.training import checkpoint as checkpoints
    from metarl.training import config, resources
    from metarl.training.build import benchmark_for, build
    from metarl.training.evaluation import evaluate as evaluate_curve
    from metarl.training.evaluation import select_tasks

    if split not in ("test", "train"):
        raise ConfigError(f"split: must be 'test' or 'train', got {split!r}")
    _bounded("seed", seed, 0, 2**32 - 1)
    _bounded("tasks_per_class", tasks_per_class, 0, config.MAX_PER_CLASS)
    _bounded("rounds", rounds, 0, config.MAX_EVAL_ROUNDS)
    _bounded("episodes", episodes, 1, config.MAX_EVAL_EPISODES)
    _bounded("workers", workers, 0, 4096)
    path, payload = checkpoints.resolve(str(checkpoint), registry=AGENTS)
    raw = payload.get("config")
    if not isinstance(raw, dict):
        raise ConfigError(f"checkpoint: {path} has no config mapping (the run's resolved config); it was not "
                          f"written by metarl train")
    given = raw.get("env")
    env: dict[str, Any] = {**(given if isinstance(given, dict) else {}), "backend": "multiprocess", "ray_address": None,  # where work runs: never the file's choice
           **({"n_workers": workers} if workers is not None else {})}
    cfg = config.from_dict({**raw, "env": env}, registry=AGENTS)
    rounds = cfg.eval.rounds if rounds is None else rounds
    episodes = cfg.eval.episodes_per_round if episodes is None else episodes
    bench = benchmark_for(cfg, {"workers": "workers"} if workers is not None else None)
    tasks = select_tasks(bench.tasks(split), tasks_per_class)
    resources.check_eval(cfg, bench, len(tasks), episodes, rounds + 1,
                         {"episodes": "episodes", "horizon": "env.max_episode_steps", "results": "rounds"})
    torch.manual_seed(seed)
    bench, sampler, agent = build(cfg, config.resolve_device(device), bench)
    try:
        agent.load_state_dict(payload["agent"])
        return evaluate_curve(agent, sampler, tasks, rounds, episodes, np.random.default_rng(seed),
                              cfg.eval.deterministic if deterministic is None else deterministic)
    finally:
        sampler.vec_env.close()
