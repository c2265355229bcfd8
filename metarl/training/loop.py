"""The training loop. Everything around the iterations is a hook (metarl/training/hooks.py); the
loop keeps the signals, the start-up checkpoint and the checkpoint cadence. A run dir's life
(creation, resume, runs.jsonl) is metarl/training/run.py's."""
from __future__ import annotations

import contextlib
import time
from typing import Sequence

from metarl.training import runfiles
from metarl.training.hooks import Hook
from metarl.training.trainer import StopFlag, Trainer, _writer_thread_errors_surface_here


def train(t: Trainer, hooks: Sequence[Hook], stop: StopFlag | None = None) -> None:
    """Train `t` to its budget (run.env_steps) or until a stop is asked, then let the hooks finish
    (the final evaluation is one). SIGINT / SIGTERM ask to stop after the current iteration, with a
    checkpoint (`stop`: a StopFlag already installed, as `metarl train` does before start-up, else
    one is installed here). A write that fails because of the disk ends the run with one
    StorageError line; RunStopped when workers keep dying or updates keep being rejected."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_writer_thread_errors_surface_here())
        t.stop = stop if stop is not None else stack.enter_context(StopFlag())
        try:
            _loop(t, list(hooks))
        except OSError as e:
            if e.errno not in runfiles.DISK_ERRNOS:
                raise
            raise t.write_failed(e, "run dir") from None


def _loop(t: Trainer, hooks: list[Hook]) -> None:
    started: list[Hook] = []
    ended = False  # the loop ran to its end: a failure to close the logs is then the run's error
    try:
        for hook in hooks:
            hook.on_start(t)
            started.append(hook)
        t.show_notes()  # what the agent said while it was built and loaded
        t.open_logs()
        if t.stop.requested and not t.has_checkpoint_here():
            t.save_checkpoint()  # stopped during start-up: a checkpoint to resume from, not a bare run dir
        while not t.budget_reached and not t.stop.requested:
            it = t.train_iteration()
            t0 = time.perf_counter()
            for hook in hooks:
                hook.on_iteration(t, it)
            t.wall_seconds += time.perf_counter() - t0
            if t.iteration % t.cfg.run.checkpoint_every == 0 or t.budget_reached or t.stop.requested:
                t.save_checkpoint()
        for hook in hooks:
            hook.on_train_end(t)
        ended = True
    finally:
        try:
            for hook in reversed(started):
                hook.on_end(t)
        finally:
            t.close(logs_must_close=ended)
