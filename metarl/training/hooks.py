"""What happens around the training loop's iterations (metarl/training/loop.py), as hooks.

A hook subclasses `Hook` and overrides the methods it needs; each gets the `Trainer` (the run's
training state: config, run dir, agent, sampler, counters, logs, stop flag, display, results):

    on_start(t)           the loop starts (before the logs open and the start-up checkpoint)
    on_iteration(t, it)   after each training iteration (`it`: Iteration), before its checkpoint;
                          the time spent here counts in the run's wall seconds
    on_train_end(t)       training is over: the budget is reached or a stop was asked
    on_end(t)             always, last, also when the loop raises (undo what on_start did)

Hooks run in list order. `default_hooks(cfg)` is what `metarl train` runs:

    Progress             a rich progress bar on a terminal, else plain lines (run.progress)
    SelectBest           eval.select_best: every eval.every iterations, evaluate on training tasks
                         and keep checkpoints/best.pt and best.json when the score is the best so far
    PeriodicEvaluation   eval.every: evaluate on held-out tasks (eval.csv, TensorBoard)
    FinalEvaluation      the final held-out evaluation of the last policy, then of best.pt;
                         final_eval.json (and eval_metaworld.json under eval.protocol: metaworld)
    Video                eval.video_tasks: film the final evaluation in its own process

SelectBest comes before PeriodicEvaluation (eval.csv holds a step's training-task rows first) and
Video after FinalEvaluation (it films what that evaluated). To add a hook, append it; to replace
one, swap it in the list:

    hooks = [MyProgress() if isinstance(h, Progress) else h for h in default_hooks(cfg)]
    run.start(hooks)
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from metarl.training import checkpoint, runfiles
from metarl.training.config import RunConfig
from metarl.training.evaluation import MetaworldProtocol, select_tasks
from metarl.training.trainer import Display, run_label

if TYPE_CHECKING:
    from rich.console import Console

    from metarl.core.types import AdaptationCurve
    from metarl.training.runlog import TextProgress
    from metarl.training.trainer import Iteration, Trainer


class Hook:
    """The loop's events, each a no-op here: override what a hook needs."""

    def on_start(self, t: Trainer) -> None:
        pass

    def on_iteration(self, t: Trainer, it: Iteration) -> None:
        pass

    def on_train_end(self, t: Trainer) -> None:
        pass

    def on_end(self, t: Trainer) -> None:
        pass


def default_hooks(cfg: RunConfig, final_eval_on_stop: bool = False) -> list[Hook]:
    """The hooks `metarl train` runs for `cfg`. `final_eval_on_stop`: the final evaluation also runs
    on a policy a signal stopped before the budget (the benchmark runner's results)."""
    hooks: list[Hook] = [Progress()]
    if cfg.eval.select_best:
        hooks.append(SelectBest())
    if cfg.eval.every:
        hooks.append(PeriodicEvaluation())
    hooks.append(FinalEvaluation(on_stop=final_eval_on_stop))
    if cfg.eval.video_tasks:
        hooks.append(Video())
    return hooks


# ---- progress ----------------------------------------------------------------------------------
class _Lines(Display):
    """Progress as plain lines (runlog.TextProgress), for output that is not a terminal."""

    def __init__(self, text: TextProgress):
        self.text = text

    def note(self, line: str) -> None:
        self.text.note(line)

    def evaluation(self, label: str, env_steps: int, curve: AdaptationCurve) -> None:
        self.text.evaluation(label, env_steps, curve)

    def eval_progress(self, label: str, total: int) -> Callable[[int], None]:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            self.text.eval_steps(label, done, total)
        return advance


class _Bar(Display):
    """Progress as a rich bar (a terminal); notes go to stderr above it."""

    def __init__(self, bar: Any, job: Any):
        self.bar, self.job = bar, job

    def phase(self, name: str) -> None:
        self.bar.update(self.job, description=name)

    def eval_progress(self, label: str, total: int) -> Callable[[int], None]:
        job = self.bar.add_task(label, total=total, sps=0.0, success="-")
        t1 = time.perf_counter()

        def advance(n: int) -> None:
            self.bar.advance(job, n)
            self.bar.update(job, sps=self.bar.tasks[job].completed / max(time.perf_counter() - t1, 1e-9))
        return advance


class Progress(Hook):
    """run.progress: a rich progress bar when the output is a terminal, else plain progress lines
    (at most one every 30 s; runlog.TextProgress). It puts its display in `t.display`, through which
    the evaluation hooks and the agent's notes report."""

    def __init__(self, console: Console | None = None):
        self.console = console
        self._bar: Any = None
        self._job: Any = None
        self._text: TextProgress | None = None

    def on_start(self, t: Trainer) -> None:
        if not t.cfg.run.progress:
            return
        from rich import get_console

        console = self.console or t.console
        if not (console or get_console()).is_terminal:  # a log file, a pipe: lines, not a bar
            from metarl.training.runlog import TextProgress

            self._text = TextProgress(run_label(t.cfg, t.run_dir), t.cfg.run.env_steps, t.env_steps)
            t.display = _Lines(self._text)
            return
        from rich.progress import BarColumn
        from rich.progress import Progress as Bar
        from rich.progress import TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
                        TextColumn("{task.fields[sps]:,.0f} steps/s"), TextColumn("success {task.fields[success]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self._bar.start()
        self._job = self._bar.add_task("train", total=t.cfg.run.env_steps, completed=t.env_steps, sps=0.0,
                                       success="-")
        t.display = _Bar(self._bar, self._job)

    def on_iteration(self, t: Trainer, it: Iteration) -> None:
        if self._bar is not None:
            self._bar.update(self._job, completed=t.env_steps, sps=it.steps_per_second,
                             success=f"{t.last_success:.0%}")
        if self._text is not None:
            self._text.iteration(t.iteration, t.env_steps, t.last_success, it.steps_per_second)

    def on_end(self, t: Trainer) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar = self._text = None
        t.display = Display()


# ---- periodic evaluation and model selection ---------------------------------------------------
def evaluation_due(t: Trainer) -> bool:
    """A periodic evaluation is due: every eval.every iterations, except at the budget (the final
    evaluation comes then)."""
    every = t.cfg.eval.every
    return bool(every) and t.iteration % every == 0 and not t.budget_reached


class SelectBest(Hook):
    """eval.select_best: when a periodic evaluation is due, evaluate on training tasks (never
    held-out ones) and keep checkpoints/best.pt and best.json when the mean success over the
    adaptation rounds (1..K; round 0 when K = 0) beats the best so far, ties broken by return.
    The choice (`t.best`) is saved in checkpoints, so a resume goes on with it."""

    def on_iteration(self, t: Trainer, it: Iteration) -> None:
        if not evaluation_due(t):
            return
        assert t.logger is not None
        t.display.phase("eval")
        curve = t.evaluate(t.cfg.eval.select_tasks_per_class, split="train")
        t.logger.log_eval(curve, t.env_steps, tag="eval_train")
        succ, ret = curve.success_by_round(), curve.return_by_round()
        after = slice(1, None) if len(succ) > 1 else slice(0, None)
        score = [float(np.mean(succ[after])), float(np.mean(ret[after]))]
        if t.best is None or score > t.best["score"]:
            t.best = {"score": score, "iteration": t.iteration, "env_steps": t.env_steps,
                      "train_success_by_round": succ, "train_return_by_round": ret,
                      "n_train_tasks": len(curve.tasks)}
            try:
                checkpoint.write(checkpoint.checkpoint_dir(t.run_dir) / checkpoint.BEST, t._payload())
                runfiles.replace_text(t.run_dir / "best.json", json.dumps(t.best, indent=2))
            except OSError as e:
                raise t.write_failed(e) from None
        t.display.phase("train")


class PeriodicEvaluation(Hook):
    """eval.every: evaluate on eval.tasks_per_class held-out tasks a class; eval.csv and TensorBoard."""

    def on_iteration(self, t: Trainer, it: Iteration) -> None:
        if not evaluation_due(t):
            return
        assert t.logger is not None
        t.display.phase("eval")
        curve = t.evaluate(t.cfg.eval.tasks_per_class)
        t.logger.log_eval(curve, t.env_steps)
        t.display.evaluation("periodic eval, held-out tasks", t.env_steps, curve)
        t.display.phase("train")


# ---- the final evaluation and its video ------------------------------------------------------
class FinalEvaluation(Hook):
    """At the budget (with `on_stop`, also when a signal stopped training): the held-out evaluation
    of the last policy on eval.final_tasks_per_class tasks a class, then, with eval.select_best, of
    checkpoints/best.pt; final_eval.json. A signal during it stops it after the chunk of tasks in
    progress, keeping the tasks done (`t.final_eval_stopped`: done, planned); with `on_stop` that is
    a second signal, one after this evaluation began. Sets `t.final_curve` (None: no task was done),
    `t.best_curve`, `t.stopped_early`."""

    def __init__(self, on_stop: bool = False):
        self.on_stop = on_stop

    def on_train_end(self, t: Trainer) -> None:
        finished = t.budget_reached and not t.stop.requested
        if not (finished or (t.stop.requested and self.on_stop)):
            return
        assert t.logger is not None
        cfg = t.cfg
        tasks = select_tasks(t.bench.test_tasks, cfg.eval.final_tasks_per_class)
        per_task = (cfg.eval.rounds + 1) * cfg.eval.episodes_per_round if cfg.eval.protocol == "curve" \
            else MetaworldProtocol().adaptation_episodes + MetaworldProtocol().evaluation_episodes
        total = len(tasks) * per_task * t.sampler.horizon
        started = time.monotonic()
        asked = lambda: t.stop.requested_since(started)  # noqa: E731
        t1 = time.perf_counter()
        curve = t.evaluate(cfg.eval.final_tasks_per_class, progress=t.display.eval_progress("final eval", total),
                           final=True, should_stop=asked)
        t.wall_seconds += time.perf_counter() - t1
        cut = len(curve.tasks) < len(tasks)
        if cut:
            t.final_eval_stopped = (len(curve.tasks), len(tasks))
            if not curve.tasks:
                return
        t.final_curve = curve
        # rows an earlier final evaluation of this checkpoint logged (one stopped, or cut short by a crash,
        # then resumed) or a periodic one of the same policy: this evaluation replaces them, never doubles them
        t.logger.eval_csv.drop_rows(lambda r: r.get("env_steps") == str(t.env_steps)
                                    and r.get("eval") in ("eval", "eval_best"))
        t.logger.log_eval(curve, t.env_steps)
        label = "final eval" + (" (stopped early)" if not finished else "")
        if cut:
            label += f" (stopped by a signal: {len(curve.tasks)} of {len(tasks)} tasks)"
        t.display.evaluation(label, t.env_steps, curve)
        best_path = checkpoint.checkpoint_dir(t.run_dir) / checkpoint.BEST
        if not cut and cfg.eval.select_best and t.best is not None and best_path.is_file():
            t.agent.load_state_dict(checkpoint.load_file(best_path)["agent"])
            t1 = time.perf_counter()
            best_curve = t.evaluate(cfg.eval.final_tasks_per_class, should_stop=asked,
                                    progress=t.display.eval_progress("final eval (best.pt)", total))
            t.wall_seconds += time.perf_counter() - t1
            if len(best_curve.tasks) < len(tasks):  # stopped: best.pt's half-done evaluation is not its result
                t.final_eval_stopped = (len(curve.tasks), len(tasks))
            else:
                t.best_curve = best_curve
                t.logger.log_eval(best_curve, t.env_steps, tag="eval_best")
                t.display.evaluation("final eval of best.pt", t.env_steps, best_curve)
        t.stopped_early = not finished
        self.write(t, curve)

    @staticmethod
    def write(t: Trainer, curve: AdaptationCurve) -> None:
        """final_eval.json: the curve, by class, and what stopped it or was selected."""
        out: dict[str, Any] = {
            "env_steps": t.env_steps, "stopped_early": t.stopped_early, "iterations": t.iteration,
            "wall_seconds": t.wall_seconds, "n_tasks": len(curve.tasks), "success_by_round": curve.success_by_round(),
            "return_by_round": curve.return_by_round(),
            "by_class": {k: {"success_by_round": list(map(float, s)), "return_by_round": list(map(float, r))}
                         for k, (s, r) in curve.by_class().items()}}
        if t.final_eval_stopped is not None:  # a signal stopped it: the tasks done, of how many
            out.update(final_eval_stopped=True, n_tasks_planned=t.final_eval_stopped[1])
        selected = t.selected()
        if selected is not None:
            out["selected"] = selected
        if t.protocol_summary is not None:
            out["metaworld"] = t.protocol_summary
        runfiles.replace_text(t.run_dir / "final_eval.json", json.dumps(out, indent=2))


class Video(Hook):
    """eval.video_tasks: after final_eval.json, film the final evaluation in its own process
    (metarl/training/video.py); not when a signal cut that evaluation short."""

    def on_train_end(self, t: Trainer) -> None:
        if t.final_curve is None or t.final_eval_stopped is not None or not t.cfg.eval.video_tasks:
            return
        assert t.logger is not None
        from metarl.training.video import film_final_evaluation

        film_final_evaluation(t.cfg, t.run_dir, t.bench.test_tasks, t.iteration, t.env_steps, t.final_curve,
                              t.logger.tb)
