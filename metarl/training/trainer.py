"""The training loop: budget, evaluation cadence, logging, checkpoints, signals."""
from __future__ import annotations

import contextlib
import copy
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from metarl.envs.vector import WorkerError
from metarl.training import checkpoint, resources, runfiles
from metarl.training.build import benchmark_for, build, needs_warm_restart, task_seed
from metarl.training.config import RunConfig
from metarl.training.evaluation import MetaworldProtocol, evaluate, metaworld_evaluate, official_pool_size, select_tasks
from metarl.training.runlog import RunLogger, TextProgress
from metarl.training.sampler import Sampler
from metarl.core.types import AdaptationCurve, ConfigError, StorageError

if TYPE_CHECKING:
    from rich.console import Console

    from metarl.agents.base import MetaAgent
    from metarl.envs.suites import Benchmark


def run_label(cfg: RunConfig, run_dir: Path) -> str:
    """What progress lines and logs name a run by: its dir and what it trains (the env, the agent, the
    seed), not the preset file, which --set may have changed (`configs/ml1_reach_maml_trpo.yaml --set
    env.env_name=push-v3` trains push-v3)."""
    env = cfg.env.env_name if cfg.env.benchmark == "ML1" and cfg.env.env_name else cfg.env.benchmark
    return f"{Path(run_dir).name}: {env} {cfg.agent.name} seed {cfg.run.seed}"


class RunStopped(RuntimeError):
    """Training cannot go on (workers keep dying, updates keep going non-finite); a checkpoint was written."""


class _StopFlag:
    """SIGINT / SIGTERM ask the loop to stop after the current iteration (the final evaluation:
    after the chunk of tasks in progress); a second SIGINT at least ABORT_AFTER_S later aborts.
    Sooner it is the same request delivered twice: `timeout` signals its child and then the
    child's process group, which holds that child too. `metarl train` holds one from before the
    run dir is made, so a signal during start-up is kept for the loop, not lost in a half-made
    run dir."""

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


class Trainer:
    resumed_from: int | None = None  # env steps of the checkpoint this run was resumed from
    final_eval_stopped: tuple[int, int] | None = None  # (tasks done, planned): a signal stopped the final evaluation
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
        self.stopped_early = False
        self.best: dict[str, Any] | None = None  # eval.select_best: the best training-task evaluation so far
        self.best_curve: AdaptationCurve | None = None  # final held-out evaluation of checkpoints/best.pt
        self.protocol_summary: dict[str, Any] | None = None  # eval.protocol: metaworld, final evaluation
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
            raise ConfigError("--resume: the checkpoint is a released policy (benchmarks/release.py: no optimizer "
                              "state or buffers); it can be evaluated with `metarl eval`, not resumed")
        if payload.get("agent_name") != self.cfg.agent.name:
            raise ConfigError(f"--resume: the checkpoint holds a {payload.get('agent_name')!r} agent but the config "
                              f"asks for {self.cfg.agent.name!r}; allowed: agent.name={payload.get('agent_name')}")
        buf = payload["agent"].get("buffers")
        if isinstance(buf, dict):  # PEARL: sized for this run's tasks and horizon, or refused before allocating
            from metarl.agents.pearl import buffer_task_count
            want = {"n_tasks": buffer_task_count(self.cfg.agent, self.bench.train_tasks),
                    "horizon": self.bench.max_episode_steps}
            got = {k: buf.get(k) for k in want}
            if got != want:
                raise ConfigError(f"--resume: the checkpoint's PEARL buffers are sized for {got} but this run has "
                                  f"{want}; allowed: buffers the run wrote")
            cap = {"replay": self.cfg.agent.replay_capacity}
            for part in ("replay", "context"):
                arrays = buf.get(part)
                shapes = {k: tuple(v.shape) for k, v in arrays.items()} if isinstance(arrays, dict) and all(
                    isinstance(v, torch.Tensor) for v in arrays.values()) else None
                if (shapes is None or set(shapes) != {"obs", "actions", "rewards", "next_obs", "ptr", "size"}
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
        try:
            return checkpoint.save(self.run_dir, self.iteration, self._payload(), self.cfg.run.keep_checkpoints)
        except OSError as e:
            raise self._write_failed(e) from None

    def _write_failed(self, e: OSError, label: str = "checkpoints") -> ConfigError | StorageError:
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

    # ---- the loop -------------------------------------------------------------------
    def run(self, final_eval_on_stop: bool = False, stop: _StopFlag | None = None) -> AdaptationCurve | None:
        """Train to the budget, then evaluate on the held-out tasks. A SIGINT/SIGTERM stops after
        the current iteration with a checkpoint and returns None, or, with `final_eval_on_stop`,
        runs the final evaluation on the policy as it is (`stopped_early` is then True). A signal
        during the final evaluation (with `final_eval_on_stop`, a second one) stops it after the chunk of tasks in progress: the tasks done
        are kept (`final_eval_stopped`: done, planned). `stop`: a _StopFlag already installed (by
        `metarl train`, before start-up), else one is installed here. A write that fails because
        of the disk ends the run with one StorageError line."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(_writer_thread_errors_surface_here())
            flag = stop if stop is not None else stack.enter_context(_StopFlag())
            try:
                return self._run(final_eval_on_stop, flag)
            except OSError as e:
                if e.errno not in runfiles.DISK_ERRNOS:
                    raise
                raise self._write_failed(e, "run dir") from None

    def _run(self, final_eval_on_stop: bool, stop: _StopFlag) -> AdaptationCurve | None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        cfg = self.cfg
        columns = [TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
                   TextColumn("{task.fields[sps]:,.0f} steps/s"), TextColumn("success {task.fields[success]}"),
                   TimeElapsedColumn(), TimeRemainingColumn()]
        final_curve = None
        # no terminal to draw the bar on (a log file, a pipe): plain progress lines instead
        from rich import get_console
        text = TextProgress(run_label(cfg, self.run_dir), cfg.run.env_steps, self.env_steps) \
            if cfg.run.progress and not (self.console or get_console()).is_terminal else None
        logger: RunLogger | None = None
        ended = False  # the body ran to its end: a failure to close the logs is then the run's error
        self._show_notes(text)  # what the agent said while it was built and loaded
        try:
            logger = RunLogger(self.run_dir, run_label(cfg, self.run_dir), resume_step=self.resumed_from)
            logger.layout(list(dict.fromkeys(t.name for t in self.bench.test_tasks)),
                          1 if cfg.eval.protocol == "metaworld" else cfg.eval.rounds)
            if stop.requested and not (checkpoint.checkpoint_dir(self.run_dir) / f"ckpt_{self.iteration:07d}.pt").is_file():
                self.save_checkpoint()  # stopped during start-up: a checkpoint to resume from, not a bare run dir
            with Progress(*columns, console=self.console, disable=not cfg.run.progress, transient=False) as bar:
                job = bar.add_task("train", total=cfg.run.env_steps, completed=self.env_steps, sps=0.0,
                                   success="-")
                while self.env_steps < cfg.run.env_steps and not stop.requested:
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
                    self._show_notes(text)
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
                    logger.log(metrics, self.env_steps)
                    self.last_success = result.success_rate
                    bar.update(job, completed=self.env_steps, sps=steps / dt, success=f"{self.last_success:.0%}")
                    if text:
                        text.iteration(self.iteration, self.env_steps, self.last_success, steps / dt)
                    done = self.env_steps >= cfg.run.env_steps
                    if cfg.eval.every and self.iteration % cfg.eval.every == 0 and not done:
                        bar.update(job, description="eval")
                        t1 = time.perf_counter()
                        if cfg.eval.select_best:
                            self._select(logger)
                        curve = self.evaluate(cfg.eval.tasks_per_class)
                        self.wall_seconds += time.perf_counter() - t1
                        logger.log_eval(curve, self.env_steps)
                        if text:
                            text.evaluation("periodic eval, held-out tasks", self.env_steps, curve)
                        bar.update(job, description="train")
                    if self.iteration % cfg.run.checkpoint_every == 0 or done or stop.requested:
                        self.save_checkpoint()
                finished = self.env_steps >= cfg.run.env_steps and not stop.requested
                if finished or (stop.requested and final_eval_on_stop):
                    final_curve = self._final_evaluation(logger, bar, text, stop, finished)
            ended = True
        finally:
            try:
                if logger is not None:
                    logger.close()
            except OSError:
                if ended:
                    raise
            finally:
                self.sampler.vec_env.close()
        return final_curve

    def _show_notes(self, text: TextProgress | None) -> None:
        """The agent's notes (MetaAgent.notes): progress lines when the output is not a terminal,
        else one line each on stderr (above the progress bar)."""
        for line in self.agent.notes():
            if text is not None:
                text.note(line)
            else:
                print(line, file=sys.stderr, flush=True)

    def _final_evaluation(self, logger: RunLogger, bar: Any, text: TextProgress | None, stop: _StopFlag,
                          finished: bool) -> AdaptationCurve | None:
        """The final held-out evaluation (and best.pt's, and the videos); a signal stops it after the
        chunk of tasks in progress, keeping the tasks done (None: none were)."""
        cfg = self.cfg
        tasks = select_tasks(self.bench.test_tasks, cfg.eval.final_tasks_per_class)
        per_task = (cfg.eval.rounds + 1) * cfg.eval.episodes_per_round if cfg.eval.protocol == "curve" \
            else MetaworldProtocol().adaptation_episodes + MetaworldProtocol().evaluation_episodes
        total = len(tasks) * per_task * self.sampler.horizon
        ev_job = bar.add_task("final eval", total=total, sps=0.0, success="-")
        t1 = time.perf_counter()
        started = time.monotonic()

        def advance(n: int) -> None:
            bar.advance(ev_job, n)
            done_steps = bar.tasks[ev_job].completed
            bar.update(ev_job, sps=done_steps / max(time.perf_counter() - t1, 1e-9))
            if text:
                text.eval_steps("final eval", int(done_steps), total)

        # a signal now stops it (after the chunk in progress); with final_eval_on_stop (benchmarks/run_preset.py
        # evaluates a run a signal stopped) that is a second signal, one after this evaluation began
        asked = lambda: stop.requested_since(started)  # noqa: E731
        final_curve = self.evaluate(cfg.eval.final_tasks_per_class, progress=advance, final=True, should_stop=asked)
        self.wall_seconds += time.perf_counter() - t1
        cut = len(final_curve.tasks) < len(tasks)
        if cut:
            self.final_eval_stopped = (len(final_curve.tasks), len(tasks))
            if not final_curve.tasks:
                return None
        # rows an earlier final evaluation of this checkpoint logged (one stopped, or cut short by a crash,
        # then resumed) or a periodic one of the same policy: this evaluation replaces them, never doubles them
        logger.eval_csv.drop_rows(lambda r: r.get("env_steps") == str(self.env_steps)
                                  and r.get("eval") in ("eval", "eval_best"))
        logger.log_eval(final_curve, self.env_steps)
        if text:
            label = "final eval" + (" (stopped early)" if not finished else "")
            if cut:
                label += f" (stopped by a signal: {len(final_curve.tasks)} of {len(tasks)} tasks)"
            text.evaluation(label, self.env_steps, final_curve)
        best_path = checkpoint.checkpoint_dir(self.run_dir) / checkpoint.BEST
        if not cut and cfg.eval.select_best and self.best is not None and best_path.is_file():
            bar.update(ev_job, description="final eval (best.pt)", completed=0)
            self.agent.load_state_dict(checkpoint.load_file(best_path)["agent"])
            t1 = time.perf_counter()
            best_curve = self.evaluate(cfg.eval.final_tasks_per_class, progress=advance, should_stop=asked)
            self.wall_seconds += time.perf_counter() - t1
            if len(best_curve.tasks) < len(tasks):  # stopped: best.pt's half-done evaluation is not its result
                self.final_eval_stopped = (len(final_curve.tasks), len(tasks))
                cut = True
            else:
                self.best_curve = best_curve
                logger.log_eval(self.best_curve, self.env_steps, tag="eval_best")
                if text:
                    text.evaluation("final eval of best.pt", self.env_steps, self.best_curve)
        self._write_final(final_curve, stopped_early=not finished)
        self.stopped_early = not finished
        if cfg.eval.video_tasks and not cut:  # after final_eval.json, in its own process (metarl/training/video.py)
            from metarl.training.video import film_final_evaluation
            film_final_evaluation(cfg, self.run_dir, self.bench.test_tasks, self.iteration,
                                  self.env_steps, final_curve, logger.tb)
        return final_curve

    def _select(self, logger: RunLogger) -> None:
        """Evaluate on training tasks; keep checkpoints/best.pt when the mean success over the
        adaptation rounds (1..K; round 0 when K = 0) beats the best so far, ties broken by return.
        Held-out tasks play no part in the choice."""
        curve = self.evaluate(self.cfg.eval.select_tasks_per_class, split="train")
        logger.log_eval(curve, self.env_steps, tag="eval_train")
        succ, ret = curve.success_by_round(), curve.return_by_round()
        after = slice(1, None) if len(succ) > 1 else slice(0, None)
        score = [float(np.mean(succ[after])), float(np.mean(ret[after]))]
        if self.best is None or score > self.best["score"]:
            self.best = {"score": score, "iteration": self.iteration, "env_steps": self.env_steps,
                         "train_success_by_round": succ, "train_return_by_round": ret,
                         "n_train_tasks": len(curve.tasks)}
            try:
                checkpoint.write(checkpoint.checkpoint_dir(self.run_dir) / checkpoint.BEST, self._payload())
                runfiles.replace_text(self.run_dir / "best.json", json.dumps(self.best, indent=2))
            except OSError as e:
                raise self._write_failed(e) from None

    def selected(self) -> dict[str, Any] | None:
        """eval.select_best: the choice (best.json's fields) and best.pt's final held-out curve."""
        if self.best_curve is None or self.best is None:
            return None
        return {**self.best, "success_by_round": self.best_curve.success_by_round(),
                "return_by_round": self.best_curve.return_by_round()}

    def _write_final(self, curve: AdaptationCurve, stopped_early: bool = False) -> None:
        out = {"env_steps": self.env_steps, "stopped_early": stopped_early, "iterations": self.iteration, "wall_seconds": self.wall_seconds,
               "n_tasks": len(curve.tasks), "success_by_round": curve.success_by_round(),
               "return_by_round": curve.return_by_round(),
               "by_class": {k: {"success_by_round": list(map(float, s)), "return_by_round": list(map(float, r))}
                            for k, (s, r) in curve.by_class().items()}}
        if self.final_eval_stopped is not None:  # a signal stopped it: the tasks done, of how many
            out.update(final_eval_stopped=True, n_tasks_planned=self.final_eval_stopped[1])
        selected = self.selected()
        if selected is not None:
            out["selected"] = selected
        if self.protocol_summary is not None:
            out["metaworld"] = self.protocol_summary
        runfiles.replace_text(self.run_dir / "final_eval.json", json.dumps(out, indent=2))
