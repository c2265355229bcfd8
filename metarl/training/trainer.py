"""What is trained: the agent, its sampler, the counters, checkpoints, one training iteration and the
evaluations, and the stop flag the signals set. The loop that drives it is metarl/training/loop.py,
what happens around iterations (progress, evaluations, best.pt, final evaluation, video) the hooks of
metarl/training/hooks.py, and the run dir's life metarl/training/run.py."""
from __future__ import annotations

import contextlib
import copy
import json
import signal
import sys
import threading
import time
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, cast

import numpy as np
import torch

from metarl.envs.vector import WorkerError
from metarl.training import checkpoint, resources, runfiles
from metarl.training.build import build, needs_warm_restart
from metarl.training.config import RunConfig
from metarl.training.evaluation import MetaworldProtocol, evaluate, metaworld_evaluate, official_pool_size, select_tasks
from metarl.training.runlog import RunLogger
from metarl.core.types import AdaptationCurve, ConfigError, StorageError, UpdateResult

if TYPE_CHECKING:
    from rich.console import Console


def run_label(cfg: RunConfig, run_dir: Path) -> str:
    """What progress lines and logs name a run by: its dir and what it trains (the env, the agent, the
    seed), not the preset file, which --set may have changed (`configs/ml1_reach_maml_trpo.yaml --set
    env.env_name=push-v3` trains push-v3)."""
    env = cfg.env.env_name if cfg.env.benchmark == "ML1" and cfg.env.env_name else cfg.env.benchmark
    return f"{Path(run_dir).name}: {env} {cfg.agent.name} seed {cfg.run.seed}"


class RunStopped(RuntimeError):
    """Training cannot go on (workers keep dying, updates keep going non-finite); a checkpoint was written."""


class StopFlag:
    """SIGINT / SIGTERM ask the loop to stop after the current iteration (the final evaluation:
    after the chunk of tasks in progress); a second SIGINT at least ABORT_AFTER_S later aborts.
    Sooner it is the same request delivered twice: `timeout` signals its child and then the
    child's process group, which holds that child too. `metarl train` holds one from before the
    run dir is made, so a signal during start-up is kept for the loop, not lost in a half-made
    run dir. Not entered (not installed), it is a flag nobody sets: `request()` sets it."""

    ABORT_AFTER_S = 1.0

    def __init__(self):
        self.requested = False
        self._first = 0.0
        self._latest = 0.0  # when the latest request came (a repeat of the first within ABORT_AFTER_S: not one)
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame):
        now = time.monotonic()
        if not self.requested:
            self.requested, self._first, self._latest = True, now, now
        elif now - self._first >= self.ABORT_AFTER_S:
            self._latest = now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt

    def request(self) -> None:
        """Ask the loop to stop, as a signal does (from a hook, or from Python)."""
        now = time.monotonic()
        if not self.requested:
            self.requested, self._first = True, now
        self._latest = now

    def requested_since(self, t: float) -> bool:
        """Whether a stop was asked for at time.monotonic() `t` or later (the final evaluation
        of a run stopped early runs to its end unless asked again)."""
        return self.requested and self._latest >= t

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _writer_thread_errors_surface_here():
    """TensorBoard writes its events from a thread. When a write fails there because of the disk
    (full, read-only), the thread dies printing a traceback, and the next write or flush in this
    thread raises the same error, which ends the run in one line (Trainer.run): that traceback is
    not printed. Any other error in a thread is reported as before."""
    old = threading.excepthook

    def hook(args: Any) -> None:
        if isinstance(args.exc_value, OSError) and args.exc_value.errno in runfiles.DISK_ERRNOS:
            return
        old(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = old


@dataclass(frozen=True)
class Iteration:
    """One training iteration as the hooks see it (Hook.on_iteration): the agent's UpdateResult, the
    env steps it took and its seconds (sampling and update)."""
    update: UpdateResult
    env_steps: int
    seconds: float

    @property
    def steps_per_second(self) -> float:
        return self.env_steps / self.seconds


class Display:
    """Where a run shows what it does. This one shows only the agent's notes, one line each on
    stderr; the Progress hook (metarl/training/hooks.py) puts one that draws a bar or prints lines
    in `Trainer.display` when the run starts, and the evaluation hooks report through it."""

    def note(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def phase(self, name: str) -> None:
        """What the run does now ("train", "eval")."""

    def evaluation(self, label: str, env_steps: int, curve: AdaptationCurve) -> None:
        """An evaluation's result."""

    def eval_progress(self, label: str, total: int) -> Callable[[int], None]:
        """A callback for an evaluation of at most `total` env steps: called with the steps each chunk took."""
        return lambda n: None


class Trainer:
    """The state of a run's training, which the loop and its hooks share: the config, the run dir,
    the benchmark, sampler and agent, the counters (`iteration`, `env_steps`, `wall_seconds`), the
    logs (`logger`, open while the loop runs), the stop flag, where progress goes (`display`), and
    what the evaluations found (`best`, `final_curve`, `best_curve`, `protocol_summary`,
    `final_eval_stopped`, `stopped_early`). Built from a checkpoint's payload (`resume`) it goes on
    from there, bit-exactly."""
    resumed_from: int | None = None  # env steps of the checkpoint this run was resumed from
    warm_restart = False  # resumed from a checkpoint without PEARL's buffers (needs_warm_restart)

    def __init__(self, cfg: RunConfig, run_dir: Path, device: torch.device,
                 resume: dict[str, Any] | None = None, console: Console | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = device
        self.console = console
        if cfg.run.torch_threads:
            torch.set_num_threads(cfg.run.torch_threads)
        torch.manual_seed(cfg.run.seed)
        self.rng = np.random.default_rng(cfg.run.seed)
        self.bench, self.sampler, self.agent = build(cfg, device)
        self.iteration = 0
        self.env_steps = 0
        self.wall_seconds = 0.0
        self.last_success = float("nan")
        self.rejected_streak = 0
        self.stop = StopFlag()  # the loop puts the installed one here
        self.display = Display()
        self.logger: RunLogger | None = None
        self.best: dict[str, Any] | None = None  # eval.select_best: the best training-task evaluation so far
        self.final_curve: AdaptationCurve | None = None  # the final held-out evaluation (the tasks done)
        self.best_curve: AdaptationCurve | None = None  # final held-out evaluation of checkpoints/best.pt
        self.protocol_summary: dict[str, Any] | None = None  # eval.protocol: metaworld, final evaluation
        self.final_eval_stopped: tuple[int, int] | None = None  # (tasks done, planned): a signal stopped it
        self.stopped_early = False  # the final evaluation ran on a policy a signal stopped before the budget
        if resume is not None:
            self._restore(resume)

    # ---- checkpoint state -----------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(), "config_hash": self.cfg.hash(), "agent_name": self.cfg.agent.name,
            "agent": self.agent.state_dict(),
            "counters": {"iteration": self.iteration, "env_steps": self.env_steps,
                         "eval_env_steps": self.sampler.env_steps - self.env_steps,
                         "wall_seconds": self.wall_seconds},
            "rng": {"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state()},
            "selection": self.best,
        }

    def _restore(self, payload: dict[str, Any]) -> None:
        if isinstance(payload.get("agent"), dict) and payload["agent"].get("policy_only"):
            raise ConfigError("--resume: the checkpoint is a released policy (metarl bench release: no optimizer "
                              "state or buffers); it can be evaluated with `metarl eval`, not resumed")
        if payload.get("agent_name") != self.cfg.agent.name:
            raise ConfigError(f"--resume: the checkpoint holds a {payload.get('agent_name')!r} agent but the config "
                              f"asks for {self.cfg.agent.name!r}; allowed: agent.name={payload.get('agent_name')}")
        buf = payload["agent"].get("buffers")
        if isinstance(buf, dict):  # PEARL: sized for this run's tasks and horizon, or refused before allocating
            from metarl.agents.pearl import PEARLConfig, buffer_task_count
            pearl = cast(PEARLConfig, self.cfg.agent)  # only PEARL's checkpoints hold buffers (checkpoint.validate)
            want = {"n_tasks": buffer_task_count(pearl, self.bench.train_tasks),
                    "horizon": self.bench.max_episode_steps}
            got = {k: buf.get(k) for k in want}
            if got != want:
                raise ConfigError(f"--resume: the checkpoint's PEARL buffers are sized for {got} but this run has "
                                  f"{want}; allowed: buffers the run wrote")
            cap = {"replay": pearl.replay_capacity}
            for part in ("replay", "context"):
                arrays = buf.get(part)
                shapes = {k: tuple(v.shape) for k, v in arrays.items()} if isinstance(arrays, dict) and all(
                    isinstance(v, torch.Tensor) for v in arrays.values()) else None
                if (shapes is None  # prev_rewards: absent from checkpoints written before it existed
                        or set(shapes) - {"prev_rewards"} != {"obs", "actions", "rewards", "next_obs", "ptr", "size"}
                        or shapes.get("prev_rewards", shapes["rewards"]) != shapes["rewards"]
                        or shapes["ptr"] != (want["n_tasks"],) or shapes["size"] != (want["n_tasks"],)
                        or any(shapes[k][0] != want["n_tasks"] or shapes[k][1] > cap.get(part, shapes[k][1])
                               or shapes[k][1] != shapes["obs"][1] for k in ("obs", "actions", "rewards", "next_obs"))
                        or shapes["obs"][2:] != (self.bench.obs_dim,) or shapes["next_obs"][2:] != (self.bench.obs_dim,)
                        or shapes["actions"][2:] != (self.bench.act_dim,) or len(shapes["rewards"]) != 2):
                    raise ConfigError(f"--resume: the checkpoint's PEARL {part} buffer does not have this run's "
                                      f"shape ({want['n_tasks']} tasks); allowed: buffers the run wrote")
        self.agent.load_state_dict(payload["agent"])
        c = payload["counters"]
        self.iteration, self.env_steps, self.wall_seconds = c["iteration"], c["env_steps"], c["wall_seconds"]
        self.sampler.env_steps = c["env_steps"] + c["eval_env_steps"]
        self.rng.bit_generator.state = payload["rng"]["numpy"]
        torch.set_rng_state(payload["rng"]["torch"])
        self.best = payload.get("selection")
        self.resumed_from = int(c["env_steps"])
        self.warm_restart = needs_warm_restart(payload)

    def save_checkpoint(self) -> Path:
        """checkpoints/ckpt_<iteration>.pt (the newest run.keep_checkpoints stay); StorageError when the disk refuses."""
        try:
            return checkpoint.save(self.run_dir, self.iteration, self._payload(), self.cfg.run.keep_checkpoints)
        except OSError as e:
            raise self.write_failed(e) from None

    def write_failed(self, e: OSError, label: str = "checkpoints") -> ConfigError | StorageError:
        """One line for a file of the run that cannot be written (a full or read-only disk, no
        permission; StorageError): the file, where the run stopped, the newest checkpoint on disk
        and how to go on. A directory standing at a checkpoint's name is named as such (ConfigError)."""
        d = checkpoint.checkpoint_dir(self.run_dir)
        try:
            newest = checkpoint.list_checkpoints(self.run_dir)
        except OSError:
            newest = []
        on_disk = f"the newest checkpoint on disk is {newest[-1].name}" if newest else "no checkpoint is on disk"
        if isinstance(e, IsADirectoryError) and label == "checkpoints":
            return ConfigError(f"checkpoints: {e.filename} is a directory, not a checkpoint; training stopped at "
                               f"iteration {self.iteration} ({self.env_steps:,} env steps) and {on_disk}. Remove or "
                               f"rename that directory, then resume with: metarl train --resume {self.run_dir}")
        return runfiles.write_error(e, label, d if label == "checkpoints" else self.run_dir,
                                    f"training stopped at iteration {self.iteration} ({self.env_steps:,} env steps) "
                                    f"and {on_disk}", f"resume with: metarl train --resume {self.run_dir}")

    # ---- evaluation -----------------------------------------------------------------
    def evaluate(self, per_class: int, progress: Callable[[int], None] | None = None, split: str = "test",
                 final: bool = False, should_stop: Callable[[], bool] | None = None) -> AdaptationCurve:
        """The meta-test protocol on the held-out tasks (split="test") or, for model selection, on
        training tasks (split="train"); each split draws from its own generator. With
        eval.protocol: metaworld, the Meta-World protocol as a 2-round curve; `final` then also
        writes eval_metaworld.json / .csv and keeps the summary in `protocol_summary`.
        `should_stop`: asked before each chunk of tasks; the curve then holds the tasks done."""
        ev = self.cfg.eval
        tasks = select_tasks(self.bench.tasks(split), per_class)
        rng = np.random.default_rng([self.cfg.run.seed, self.iteration, 1 if split == "test" else 2])
        if final and ev.protocol == "metaworld":
            rng = np.random.default_rng(0)  # as `metarl eval CHECKPOINT --protocol metaworld` (--seed 0): the
            #                                 released checkpoint reproduces this number exactly
        with torch.random.fork_rng(devices=[]):  # evaluation never shifts training's random streams
            if ev.protocol == "curve":
                return evaluate(self.agent, self.sampler, tasks, ev.rounds, ev.episodes_per_round, rng,
                                ev.deterministic, on_progress=progress, should_stop=should_stop)
            result = metaworld_evaluate(self.agent, self.sampler, tasks, rng,
                                        MetaworldProtocol(evaluation_state=ev.evaluation_state),
                                        on_progress=progress, should_stop=should_stop)
        if final and result.tasks:
            from metarl.training.runlog import write_protocol_result
            summary = {**result.to_dict(official_pool_size(len({t.name for t in tasks}))), "split": split,
                       "benchmark": self.cfg.env.benchmark, "env_name": self.cfg.env.env_name,
                       "agent": self.cfg.agent.name,
                       **({"pearl_context": self.cfg.eval.pearl_context} if self.cfg.agent.name == "pearl" else {})}
            if len(result.tasks) < len(tasks):  # stopped by a signal: the goals done, and how many were planned
                summary.update(stopped=True, n_goals_planned=len(tasks))
            write_protocol_result(self.run_dir, summary, result.rows(), self.env_steps, self.run_dir / "tb")
            self.protocol_summary = summary
        return result.as_curve()

    # ---- one iteration, the logs, the agent's notes --------------------------------------
    @property
    def budget_reached(self) -> bool:
        return self.env_steps >= self.cfg.run.env_steps

    def open_logs(self) -> RunLogger:
        """progress.csv, eval.csv and TensorBoard (what a resume redoes is dropped from them)."""
        self.logger = RunLogger(self.run_dir, run_label(self.cfg, self.run_dir), resume_step=self.resumed_from)
        self.logger.layout(list(dict.fromkeys(t.name for t in self.bench.test_tasks)),
                           1 if self.cfg.eval.protocol == "metaworld" else self.cfg.eval.rounds)
        return self.logger

    def close(self, logs_must_close: bool) -> None:
        """Close the logs and the sampler's workers; a failure to close the logs is the run's
        error only when `logs_must_close` (the loop ran to its end), else another error is on its way."""
        try:
            if self.logger is not None:
                self.logger.close()
        except OSError:
            if logs_must_close:
                raise
        finally:
            self.sampler.vec_env.close()

    def has_checkpoint_here(self) -> bool:
        """A checkpoint of the current iteration is on disk."""
        return (checkpoint.checkpoint_dir(self.run_dir) / f"ckpt_{self.iteration:07d}.pt").is_file()

    def train_iteration(self) -> Iteration:
        """One meta-update, logged to progress.csv. A worker that keeps dying stops the run with a
        checkpoint (the iteration's random streams rewound), and so do `run.max_rejected_streak`
        non-finite updates in a row (RunStopped)."""
        cfg = self.cfg
        assert self.logger is not None, "open_logs() first"
        t0, steps0, sample0 = time.perf_counter(), self.sampler.env_steps, self.sampler.sample_seconds
        warn0 = self.sampler.sim_warnings
        rng_snapshot = (copy.deepcopy(self.rng.bit_generator.state), torch.get_rng_state())
        try:
            result = self.agent.train_iteration(self.sampler, self.bench.train_tasks, self.rng)
        except WorkerError as e:
            # nothing of this iteration was applied: rewind its random streams, then save
            self.rng.bit_generator.state = rng_snapshot[0]
            torch.set_rng_state(rng_snapshot[1])
            self.save_checkpoint()
            raise RunStopped(f"{e}. Checkpoint written at iteration {self.iteration}; resume with "
                             f"metarl train --resume {self.run_dir}") from e
        self.show_notes()
        if result.rejected > 0:
            self.rejected_streak += 1
            if self.rejected_streak >= cfg.run.max_rejected_streak:
                self.iteration += 1
                self.env_steps += self.sampler.env_steps - steps0
                self.save_checkpoint()
                raise RunStopped(
                    f"updates were rejected as non-finite in {self.rejected_streak} iterations in a row "
                    f"(run.max_rejected_streak={cfg.run.max_rejected_streak}); checkpoint written at "
                    f"iteration {self.iteration}. Lower the learning rate / step size and resume with "
                    f"metarl train --resume {self.run_dir} --allow-config-change")
        else:
            self.rejected_streak = 0
        dt = time.perf_counter() - t0
        steps = self.sampler.env_steps - steps0
        sample_s = self.sampler.sample_seconds - sample0
        self.iteration += 1
        self.env_steps += steps
        self.wall_seconds += dt
        metrics = result.log_scalars()
        metrics.update({"rollout/sim_warnings": float(self.sampler.sim_warnings - warn0),
                        "time/sps": steps / dt, "time/sample_s": sample_s,
                        "time/update_s": dt - sample_s, "time/iteration": float(self.iteration)})
        self.logger.log(metrics, self.env_steps)
        self.last_success = result.success_rate
        return Iteration(result, steps, dt)

    def show_notes(self) -> None:
        """The agent's notes (MetaAgent.notes), through the display."""
        for line in self.agent.notes():
            self.display.note(line)

    def selected(self) -> dict[str, Any] | None:
        """eval.select_best: the choice (best.json's fields) and best.pt's final held-out curve."""
        if self.best_curve is None or self.best is None:
            return None
        return {**self.best, "success_by_round": self.best_curve.success_by_round(),
                "return_by_round": self.best_curve.return_by_round()}
