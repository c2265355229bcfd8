"""Worker processes (forkserver) that run sampling units as they free up.

Each worker builds one env at start (a Meta-World env caches one simulator per class it has
seen) and then runs, per sample call, a `Job` (actor, task states, horizon) and as many units
as it is handed; the parent keeps one unit in flight per worker and gives the next one to
whichever worker answers first. A worker that dies or hangs is restarted and its unit handed
out again: units carry their own seeds and noise, so the batch is exactly what it would have
been. After `max_restarts` restarts in the life of the pool, WorkerError.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import socket
import time
import traceback
import warnings
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

import torch

from metarl.core.rollout import Job, Unit, UnitResult, run_unit
from metarl.core.types import TaskEnv

# Sent to a whole process group by Ctrl-C, `timeout` and batch schedulers: the trainer's to handle.
_GROUP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class WorkerError(RuntimeError):
    """A sampler worker died or hung and could not be recovered."""


class _Dead(Exception):
    pass


class RestartBudget:
    """The restarts a pool may spend in its life (worker processes here, Ray actors in
    metarl/envs/raypool.py): each one warns; one past `max_restarts` raises WorkerError instead."""

    def __init__(self, max_restarts: int, what: str):
        self.max_restarts = max_restarts
        self.what = what  # "sampler worker", "Ray sampler actor"
        self.used = 0

    def spend(self, i: int, why: str) -> None:
        if self.used >= self.max_restarts:
            raise WorkerError(f"{self.what} {i} {why} and {self.used} restarts were already used "
                              f"(max_restarts={self.max_restarts}); giving up")
        self.used += 1
        warnings.warn(f"{self.what} {i} {why}; restarting it ({self.used}/{self.max_restarts}) and "
                      f"re-collecting its episodes", stacklevel=5)


class RunningClock:
    """Monotonic seconds less the stretches in which this process did not run, for hang timeouts.

    The pools poll their workers at least every second; a poll that finds more than `stall_s`
    passed since the previous one means this process was stopped (SIGSTOP / Ctrl-Z of the
    process group, a scheduler's suspend, a debugger), and with a group stop the workers were
    too: that stretch is not counted toward any unit's age. (It also leaves out the rare
    stretch this process spent on its own work, a restart's join: a hang is then noticed a
    little later, never wrongly.)"""

    def __init__(self, stall_s: float = 1.0):
        self.stall_s = stall_s
        self._last = time.monotonic()
        self._skipped = 0.0

    def now(self) -> float:
        t = time.monotonic()
        if t - self._last > self.stall_s:
            self._skipped += t - self._last
        self._last = t
        return t - self._skipped


class _Failure:
    """An exception raised by a unit in a worker, sent back to be raised in the parent."""

    def __init__(self, exc: BaseException):
        self.text = "".join(traceback.format_exception(exc))
        try:
            pickle.dumps(exc)
            self.exc: BaseException | None = exc
        except Exception:
            self.exc = None

    def reraise(self) -> None:
        if self.exc is not None:
            raise self.exc from RuntimeError(f"in a sampler worker:\n{self.text}")
        raise RuntimeError(f"a sampler worker raised:\n{self.text}")


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


def _ended(code: int | None) -> str:
    """How a worker ended, for the restart warning: its exit code, the signal that killed it, or
    (still running: its pipe broke) that it stopped answering."""
    if code is None:
        return "stopped answering (its pipe closed)"
    if code < 0:
        try:
            return f"died (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f"died (killed by signal {-code})"
    return f"died (exit code {code})"


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


def _worker(conn: Connection, env_factory: Callable[[], TaskEnv]) -> None:
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
    name = f"{socket.gethostname()}:{os.getpid()}"
    env = env_factory()
    job: Job | _Failure | None = None
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "job":  # pickled once by the parent for all workers
                try:
                    job = pickle.loads(arg)
                except Exception as e:  # e.g. an actor whose class cannot be imported here
                    job = _Failure(e)
            elif cmd == "unit":
                if isinstance(job, _Failure):
                    conn.send(job)
                    continue
                assert job is not None
                try:
                    conn.send(run_unit(env, job, arg, name))
                except Exception as e:  # the parent raises it
                    conn.send(_Failure(e))
            elif cmd == "prepare":  # build the env's simulator for each task's class now
                for task in arg:
                    env.set_task(task)
                conn.send(None)
            elif cmd == "close":
                break
    except EOFError:
        pass
    finally:
        env.close()
        conn.close()


class ProcessPool:
    def __init__(self, env_factory: Callable[[], TaskEnv], n_workers: int, max_restarts: int, timeout_s: float):
        self.n_workers = n_workers
        self.budget = RestartBudget(max_restarts, "sampler worker")
        self.timeout_s = timeout_s
        self._factory = env_factory
        self._ctx = mp.get_context("forkserver")
        self._conns: list = [None] * n_workers
        self._procs: list = [None] * n_workers
        for i in range(n_workers):
            self._start(i)

    @property
    def restarts(self) -> int:
        return self.budget.used

    def _start(self, i: int) -> None:
        _ensure_forkserver()  # (re)started with the group's signals blocked before p.start() needs it
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=_worker, args=(child, self._factory), daemon=True)
        p.start()
        child.close()
        self._conns[i], self._procs[i] = parent, p

    def _send(self, i: int, msg: tuple[str, Any]) -> None:
        try:
            self._conns[i].send(msg)
        except (BrokenPipeError, ConnectionResetError, OSError) as e:
            raise _Dead() from e

    def _restart(self, i: int, job: bytes, why: str | None = None) -> None:
        """Replace worker i (dead or hung: `why`, else what its exit says) and give it the call's job;
        WorkerError past the cap."""
        while True:
            old = self._procs[i]
            if why is None and not _exited(old):
                _join(old, timeout=0.5)  # its pipe closed: it is most likely on its way out, say how it ended
            code = old.exitcode if _exited(old) else None
            _kill(old)
            _join(old, timeout=5)
            self._conns[i].close()
            self.budget.spend(i, why or _ended(code))
            why = None
            self._start(i)
            try:
                self._send(i, ("job", job))
                return
            except _Dead:
                continue

    def prepare(self, tasks: Sequence[Any]) -> None:
        for i in range(self.n_workers):
            self._send(i, ("prepare", list(tasks)))
        for i in range(self.n_workers):
            self._conns[i].recv()

    def run(self, job: Job, units: Sequence[Unit]) -> list[UnitResult]:
        """Run `units` (in this order of hand-out) over the workers; results in any order."""
        blob = pickle.dumps(job)
        pending = deque(units)
        results: list[UnitResult] = []
        busy: dict[int, tuple[Unit, float]] = {}
        for i in range(self.n_workers):
            try:
                self._send(i, ("job", blob))
            except _Dead:
                self._restart(i, blob)

        failure: list[_Failure] = []
        clock = RunningClock()

        def feed(i: int) -> None:
            while pending and not failure:
                unit = pending.popleft()
                try:
                    self._send(i, ("unit", unit))
                    busy[i] = (unit, clock.now())
                    return
                except _Dead:
                    pending.appendleft(unit)
                    self._restart(i, blob)

        def dead(i: int, why: str | None = None) -> None:
            pending.appendleft(busy.pop(i)[0])
            self._restart(i, blob, why)
            feed(i)

        for i in range(self.n_workers):
            feed(i)
        while busy:
            index = {id(self._conns[i]): i for i in busy}
            for conn in wait([self._conns[i] for i in busy], timeout=0.2):
                i = index[id(conn)]
                try:
                    out: UnitResult | _Failure = self._conns[i].recv()
                except (EOFError, ConnectionResetError, OSError):
                    dead(i)
                    continue
                if isinstance(out, _Failure):
                    failure.append(out)  # raised once the other workers' units are in (no stale answers)
                else:
                    results.append(out)
                del busy[i]
                feed(i)
            now = clock.now()
            for i in list(busy):
                proc, conn = self._procs[i], self._conns[i]
                if _exited(proc) and not conn.poll(0):
                    dead(i)
                elif now - busy[i][1] > self.timeout_s:
                    _kill(proc)
                    dead(i, f"hung (no answer within {self.timeout_s:g} s; killed)")
        if failure:
            failure[0].reraise()
        return results

    def close(self) -> None:
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
