"""TaskVectorEnv: E task slots stepped together, in-process or over W worker processes.

Every slot runs one task (explicit `set_tasks`), is seeded per slot with
`env.seed`, and is stepped in lock-step with the others: all episodes share the
same horizon, so all slots reset together. Actions are checked to be finite
before every step (a NaN action makes MuJoCo reset silently).

Two ways to drive it:
- `rollout(actor, task_state, ...)`: whole episodes. Each worker runs the episode
  loop (metarl.rollout.run_episodes) on its own slots with its own CPU copy of the
  actor, so there is one message per worker per call instead of one per step.
  The per-task state must be a pytree of tensors with a leading task dimension.
- `reset()` / `step(actions)`: one step at a time, for external policies.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import warnings
from multiprocessing.connection import Connection
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils import _pytree as pytree

from metarl.rollout import Rollout, run_episodes, take_slots
from metarl.types import Actor, Task, TaskEnv, TaskState

WORKER_TIMEOUT_S = 120.0

# Sent to a whole process group by Ctrl-C, `timeout` and batch schedulers: the trainer's to handle.
_GROUP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _ensure_forkserver() -> None:
    """Start multiprocessing's forkserver, if it is not running, with SIGINT and SIGTERM blocked.

    The forkserver is the workers' parent and sits in the trainer's process group. Started
    plainly, a group SIGTERM kills it (it ignores only SIGINT), and then Process.is_alive()
    reports every live worker as dead with exit code 255, restarts get spent on live workers
    and a later start prints a traceback. A blocked mask survives fork and exec and Python never
    unblocks it, so the forkserver never sees them (multiprocessing's resource tracker starts
    itself the same way). Blocked rather than ignored in the parent: a signal that comes in the
    meantime is delivered to the parent when the mask is restored, not lost."""
    from multiprocessing import forkserver, resource_tracker

    # forkserver.ensure_running() first starts the resource tracker, which unblocks both signals
    # once it has spawned (it does not restore the mask): start the tracker before blocking
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _GROUP_SIGNALS)
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _exited(proc: mp.process.BaseProcess) -> bool:
    """Whether a worker process has ended. Process.is_alive() learns of a worker's exit from the
    forkserver, and if the forkserver is gone it says "exit code 255" for workers that are alive;
    that case is checked with the kernel (no such pid, or a zombie, is an exit)."""
    if proc.is_alive():
        return False
    if proc.exitcode != 255 or proc.pid is None:
        return True                       # the forkserver reported a real exit (it reaped the worker)
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")  # gone just now; without /proc, kill(pid, 0) said alive
    except OSError:
        return False


def _kill(proc: mp.process.BaseProcess) -> None:
    """SIGKILL a worker that has not exited (Process.kill() does nothing once is_alive() is wrong)."""
    if proc.pid is not None and not _exited(proc):
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _join(proc: mp.process.BaseProcess, timeout: float) -> bool:
    """Wait up to `timeout` s for a worker to exit; whether it did."""
    proc.join(timeout)  # returns at once if the forkserver is gone, hence the polling below
    deadline = time.monotonic() + timeout
    while not _exited(proc):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _worker(conn: Connection, env_factory: Callable[[], TaskEnv], n_slots: int) -> None:
    # The parent owns a worker's life: it sends "close", kills a hung one, and its death
    # ends ours (EOF on the pipe). SIGINT / SIGTERM sent to the whole process group (Ctrl-C,
    # `timeout`, a batch scheduler) are the parent's to handle: it finishes the iteration,
    # checkpoints and may still evaluate, which needs the workers alive. They arrive blocked
    # (inherited from the forkserver, see _ensure_forkserver): ignore, then unblock, so that
    # anything this worker starts gets a plain mask.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _GROUP_SIGNALS)
    torch.set_num_threads(1)
    envs = [env_factory() for _ in range(n_slots)]
    active = 0
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "set":
                tasks, seeds = arg
                active = len(tasks)
                for env, task, seed in zip(envs, tasks, seeds):
                    env.seed(seed)
                    env.set_task(task)
                conn.send(None)
            elif cmd == "reset":
                conn.send(np.stack([envs[i].reset() for i in range(active)]) if active else None)
            elif cmd == "step":
                out = [envs[i].step(arg[i]) for i in range(active)]
                if active:
                    conn.send((np.stack([o[0] for o in out]), np.array([o[1] for o in out]),
                               np.array([o[2] for o in out]),
                               np.array([envs[i].sim_warnings() for i in range(active)])))
                else:
                    conn.send(None)
            elif cmd == "rollout":
                if arg is None:
                    conn.send(None)
                    continue
                actor, state, n_episodes, horizon, noise, end_on_success = arg
                conn.send(run_episodes(envs[:active], actor, state, n_episodes, horizon, noise,
                                       end_on_success=end_on_success))
            elif cmd == "close":
                break
    except EOFError:
        pass
    finally:
        for env in envs:
            env.close()
        conn.close()


class WorkerError(RuntimeError):
    """A sampler worker died or hung and could not be recovered."""


class _Dead(Exception):
    pass


class TaskVectorEnv:
    """E = n_slots task slots. n_workers = 0 steps them in this process;
    n_workers = W > 0 spreads them over W processes (forkserver start).

    A worker that dies (or gives no answer within `timeout_s`) during `set_tasks`
    or `rollout` is restarted with the same tasks and seeds and its share of the
    call is run again: the episodes are exactly those it would have returned.
    After `max_restarts` restarts in the life of the vector env, WorkerError.
    """

    def __init__(self, env_factory: Callable[[], TaskEnv], n_slots: int, n_workers: int = 0,
                 max_restarts: int = 3, timeout_s: float = WORKER_TIMEOUT_S):
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        if n_workers < 0:
            raise ValueError(f"n_workers must be >= 0, got {n_workers}")
        self.n_slots = n_slots
        self.n_workers = min(n_workers, n_slots)
        self.n_active = 0
        self.restarts = 0
        self.max_restarts = max_restarts
        self.timeout_s = timeout_s
        self._closed = False
        self._factory = env_factory
        if self.n_workers == 0:
            self._envs = [env_factory() for _ in range(n_slots)]
            return
        # strided slot assignment: tasks usually come grouped by env class (whose step costs
        # differ up to 3.5x on ML10), so worker i takes slots i, i+W, ... to balance the load
        self._slots = [np.arange(i, n_slots, self.n_workers) for i in range(self.n_workers)]
        self._ctx = mp.get_context("forkserver")
        self._conns: list = [None] * self.n_workers
        self._procs: list = [None] * self.n_workers
        self._last_set: list = [None] * self.n_workers
        for i in range(self.n_workers):
            self._start(i)
        self._set_active(n_slots)

    # -- multiprocess plumbing ---------------------------------------------------------
    def _set_active(self, n_active: int) -> None:
        self._active = [idx[idx < n_active] for idx in self._slots]
        self._inverse = np.argsort(np.concatenate(self._active))  # worker order -> slot order

    def _merge(self, parts: list) -> np.ndarray:
        return np.concatenate(parts)[self._inverse]

    def _start(self, i: int) -> None:
        _ensure_forkserver()  # (re)started with the group's signals blocked before p.start() needs it
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=_worker, args=(child, self._factory, len(self._slots[i])), daemon=True)
        p.start()
        child.close()
        self._conns[i], self._procs[i] = parent, p

    def _send(self, i: int, msg: tuple[str, Any]) -> None:
        try:
            self._conns[i].send(msg)
        except (BrokenPipeError, ConnectionResetError, OSError) as e:
            raise _Dead() from e

    def _wait(self, i: int) -> Any:
        """The worker's answer; _Dead if it died or hung (checked every 0.2 s)."""
        conn, proc = self._conns[i], self._procs[i]
        deadline = time.monotonic() + self.timeout_s
        while True:
            if conn.poll(0.2):
                try:
                    return conn.recv()
                except (EOFError, ConnectionResetError, OSError) as e:
                    raise _Dead() from e
            if _exited(proc) and not conn.poll(0):
                raise _Dead()
            if time.monotonic() > deadline:
                _kill(proc)
                raise _Dead()

    def _recover(self, i: int, cmd: str, arg: Any) -> Any:
        while True:
            old = self._procs[i]
            code = old.exitcode if _exited(old) else None
            _kill(old)
            _join(old, timeout=5)
            self._conns[i].close()
            if self.restarts >= self.max_restarts:
                raise WorkerError(f"sampler worker {i} died (exit code {code}) and {self.restarts} restarts "
                                  f"were already used (max_restarts={self.max_restarts}); giving up")
            self.restarts += 1
            warnings.warn(f"sampler worker {i} died (exit code {code}); restarting it "
                          f"({self.restarts}/{self.max_restarts}) and re-collecting its episodes", stacklevel=3)
            self._start(i)
            try:
                if self._last_set[i] is not None:
                    self._send(i, ("set", self._last_set[i]))
                    self._wait(i)
                if cmd == "set":
                    return None
                self._send(i, (cmd, arg))
                return self._wait(i)
            except _Dead:
                continue

    def _broadcast(self, cmd: str, args: Sequence, retry: bool = False) -> list:
        sent = []
        for i, arg in enumerate(args):
            try:
                self._send(i, (cmd, arg))
                sent.append(True)
            except _Dead:
                sent.append(False)
        out = []
        for i, arg in enumerate(args):
            try:
                if not sent[i]:
                    raise _Dead()
                out.append(self._wait(i))
            except _Dead:
                if not retry:
                    raise WorkerError(f"sampler worker {i} died in the middle of step-wise use "
                                      f"(exit code {self._procs[i].exitcode}); its episodes cannot be resumed")
                out.append(self._recover(i, cmd, arg))
        return out

    # -- public API --------------------------------------------------------------------
    def set_tasks(self, tasks: Sequence[Task], seeds: Sequence[int]) -> None:
        if not 1 <= len(tasks) <= self.n_slots:
            raise ValueError(f"set_tasks got {len(tasks)} tasks for {self.n_slots} slots")
        if len(seeds) != len(tasks):
            raise ValueError("set_tasks needs one seed per task")
        self.n_active = len(tasks)
        if self.n_workers == 0:
            for env, task, seed in zip(self._envs, tasks, seeds):
                env.seed(int(seed))
                env.set_task(task)
            return
        self._set_active(self.n_active)
        self._last_set = [([tasks[j] for j in idx], [int(seeds[j]) for j in idx]) for idx in self._active]
        self._broadcast("set", self._last_set, retry=True)

    def reset(self) -> np.ndarray:
        """[n_active, D] first observations."""
        if self.n_workers == 0:
            return np.stack([env.reset() for env in self._envs[: self.n_active]])
        parts = self._broadcast("reset", [None] * len(self._conns))
        return self._merge([p for p in parts if p is not None])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """actions [n_active, A] -> obs [n_active, D], rewards, successes, sim warning counts."""
        actions = np.asarray(actions)
        if actions.shape[0] != self.n_active:
            raise ValueError(f"step got {actions.shape[0]} actions for {self.n_active} active slots")
        bad = ~np.isfinite(actions).all(axis=1)
        if bad.any():
            raise FloatingPointError(f"non-finite actions for slots {np.flatnonzero(bad).tolist()}")
        if self.n_workers == 0:
            out = [env.step(a) for env, a in zip(self._envs, actions)]
            return (np.stack([o[0] for o in out]), np.array([o[1] for o in out]),
                    np.array([o[2] for o in out]),
                    np.array([env.sim_warnings() for env in self._envs[: self.n_active]]))
        parts = self._broadcast("step", [actions[idx] for idx in self._active])
        parts = [p for p in parts if p is not None]
        return tuple(self._merge([p[j] for p in parts]) for j in range(4))  # type: ignore[return-value]

    def rollout(self, actor: Actor, task_state: TaskState, n_episodes: int, horizon: int,
                noise: np.ndarray | None, end_on_success: bool = False) -> tuple[Rollout, TaskState]:
        """Run `n_episodes` episodes on every active slot (see metarl.rollout.run_episodes);
        `task_state` on the CPU (the Sampler moves it there)."""
        if self.n_workers == 0:
            return run_episodes(self._envs[: self.n_active], actor, task_state, n_episodes, horizon, noise,
                                end_on_success=end_on_success)
        args = [(actor, take_slots(task_state, idx), n_episodes, horizon, None if noise is None else noise[idx],
                 end_on_success) if len(idx) else None
                for idx in self._active]
        parts = [p for p in self._broadcast("rollout", args, retry=True) if p is not None]
        rollout = Rollout(*[self._merge([getattr(r, f) for r, _ in parts]) for f in Rollout.__dataclass_fields__])
        inverse = torch.as_tensor(self._inverse)
        states = [st for _, st in parts]
        merged = pytree.tree_map(lambda *xs: torch.cat(xs)[inverse] if torch.is_tensor(xs[0]) else xs[0],
                                 states[0], *states[1:])
        return rollout, merged

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n_workers == 0:
            for env in self._envs:
                env.close()
            return
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
        for p in self._procs:
            if not _join(p, timeout=10):
                _kill(p)
                _join(p, timeout=10)
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> TaskVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
