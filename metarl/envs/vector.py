"""TaskVectorEnv: runs a sample call's units (metarl.core.rollout) in-process, over worker processes
or over Ray actors.

A unit is a whole episode or a whole trial of one task slot; every backend runs it with the
same code (`metarl.core.rollout.run_unit`) on one env, and hands units to workers as they free up,
the longest first by the step cost measured so far for its task's class. Units carry their
own seeds and noise, so the batch is bit-identical whatever the backend, the number of workers
(which is independent of the number of task slots) or the order in which they finish.

`n_slots` is the most tasks one call may sample. Faults: a worker process or Ray actor that
dies or hangs is restarted and its unit run again, up to `max_restarts` times in the life of
the vector env (then WorkerError).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from metarl.envs.procpool import ProcessPool, WorkerError
from metarl.core.rollout import Job, Unit, UnitResult, run_units_here
from metarl.core.fields import check, nonnegative, one_of, positive
from metarl.core.types import Task, TaskEnv

WORKER_TIMEOUT_S = 120.0
BACKENDS = ("multiprocess", "ray")

__all__ = ["BACKENDS", "CallStats", "TaskVectorEnv", "WorkerError"]


@dataclass
class CallStats:
    """Timings of the last run_units call: wall time and each worker's busy time (its units' seconds)."""

    wall_s: float
    workers: int
    busy_s: dict[str, float] = field(default_factory=dict)
    units_by_worker: dict[str, int] = field(default_factory=dict)

    @property
    def balance_efficiency(self) -> float:
        """(sum of busy time over workers) / (workers x wall time of the call)."""
        return sum(self.busy_s.values()) / (self.workers * self.wall_s) if self.wall_s > 0 else 0.0


class TaskVectorEnv:
    """`n_workers` = 0 runs units in this process; W > 0 over W worker processes
    (`backend="multiprocess"`, forkserver start) or W Ray actors (`backend="ray"`; `ray_address`
    None starts a local Ray, "auto" joins the running cluster)."""

    def __init__(self, env_factory: Callable[[], TaskEnv], n_slots: int, n_workers: int = 0,
                 max_restarts: int = 3, timeout_s: float = WORKER_TIMEOUT_S, backend: str = "multiprocess",
                 ray_address: str | None = None):
        check(n_slots, positive(), "n_slots")
        check(n_workers, nonnegative(), "n_workers")
        check(backend, one_of(*BACKENDS, what="backend"), "env.backend")
        self.n_slots = n_slots
        self.n_workers = n_workers
        self.backend = backend if n_workers else "in-process"
        self.last_call: CallStats | None = None
        self._step_cost: dict[str, float] = {}  # task class -> seconds per step, measured
        self._closed = False
        self._pool: Any = None
        self._env: TaskEnv | None = None
        if n_workers == 0:
            self._env = env_factory()
        elif backend == "ray":
            from metarl.envs.raypool import RayPool
            self._pool = RayPool(env_factory, n_workers, ray_address, max_restarts, timeout_s)
        else:
            self._pool = ProcessPool(env_factory, n_workers, max_restarts, timeout_s)

    @property
    def restarts(self) -> int:
        return int(getattr(self._pool, "restarts", 0))

    @property
    def _procs(self) -> list:
        return list(getattr(self._pool, "_procs", []))

    def _cost(self, unit: Unit, horizon: int) -> float:
        known = self._step_cost
        per_step = known.get(unit.task.name, sum(known.values()) / len(known) if known else 1.0)
        return per_step * unit.n_episodes * horizon

    def prepare(self, tasks: Sequence[Task]) -> None:
        """Have every worker build its env's simulator for each class among `tasks` now (a
        Meta-World env builds one per class on first use), so later calls are not slowed by it."""
        one_per_class = list({t.name: t for t in tasks}.values())
        if self._pool is None:
            assert self._env is not None
            for task in one_per_class:
                self._env.set_task(task)
        else:
            self._pool.prepare(one_per_class)

    def run_units(self, job: Job, units: Sequence[Unit]) -> list[UnitResult]:
        """Every unit's result, in the order of `units`."""
        if self._closed:
            raise RuntimeError("run_units on a closed TaskVectorEnv")
        order = sorted(units, key=lambda u: (-self._cost(u, job.horizon), u.index))
        t0 = time.perf_counter()
        if self._pool is None:
            assert self._env is not None
            results = run_units_here(self._env, job, order)
        else:
            results = self._pool.run(job, order)
        wall = time.perf_counter() - t0
        busy: dict[str, float] = {}
        counts: dict[str, int] = {}
        by_index = {r.index: r for r in results}
        for u in units:
            r = by_index[u.index]
            busy[r.worker] = busy.get(r.worker, 0.0) + r.seconds
            counts[r.worker] = counts.get(r.worker, 0) + 1
            per_step = r.seconds / (u.n_episodes * job.horizon)
            old = self._step_cost.get(u.task.name)
            self._step_cost[u.task.name] = per_step if old is None else 0.7 * old + 0.3 * per_step
        self.last_call = CallStats(wall, max(self.n_workers, 1), busy, counts)
        return [by_index[u.index] for u in units]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._env is not None:
            self._env.close()
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> TaskVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
