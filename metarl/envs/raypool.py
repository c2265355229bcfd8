"""Ray actors that run sampling units, on one machine or a cluster (`env.backend: ray`).

Each actor builds one env when it starts (like a worker process) and runs units with the same
code (`metarl.core.rollout.run_unit`), so a batch is identical to the other backends'. Units are
handed to actors as they free up, two queued on each actor (so a Ray round trip never leaves
one idle). An actor that dies (its process killed, its node lost) or hangs is replaced by a new
one and its units run again; after
`max_restarts` replacements in the life of the pool, WorkerError.

`address`: None starts a local Ray (or uses the one this process already joined); "auto"
joins the cluster this machine belongs to (`ray start --head` / `ray start --address=...`);
any other value is passed to `ray.init(address=...)`.
"""
from __future__ import annotations

import os
import socket
import warnings
from collections import deque
from typing import Any, Callable, Sequence

from metarl.envs.procpool import RestartBudget, RunningClock
from metarl.core.rollout import Job, Unit, UnitResult, run_unit
from metarl.core.types import ConfigError, TaskEnv

# Ray returns a task's result inline (in the reply) below this size, else through the object
# store. A cluster reads it from RAY_max_direct_call_object_size in the environment of `ray start`.
INLINE_BYTES = 4 * 2**20
INSTALL_HINT = "env.backend: 'ray' needs Ray, an optional extra: pip install -e '.[ray]'"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


class RayWorker:
    """The actor: one env, the current call's job, one unit at a time."""

    def __init__(self, env_factory: Callable[[], TaskEnv]):
        import torch
        torch.set_num_threads(1)
        self.env = env_factory()
        self.job: Job | None = None
        import ray
        node = ray.get_runtime_context().get_node_id()
        self.name = f"{socket.gethostname()}:{os.getpid()}@node:{node[:12]}"

    def set_job(self, job: Job) -> None:
        self.job = job

    def prepare(self, tasks: list) -> None:
        for task in tasks:
            self.env.set_task(task)

    def run(self, unit: Unit) -> UnitResult:
        assert self.job is not None
        return run_unit(self.env, self.job, unit, self.name)

    def where(self) -> tuple[str, int]:
        """(Ray node id, pid) of this actor."""
        import ray
        return ray.get_runtime_context().get_node_id(), os.getpid()


class RayPool:
    PREFETCH = 2  # units queued on each actor

    def __init__(self, env_factory: Callable[[], TaskEnv], n_workers: int, address: str | None,
                 max_restarts: int, timeout_s: float):
        ray = self._ray = import_ray()
        if not ray.is_initialized():
            kw: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
            if address is None:  # a local Ray: room for every actor even with more actors than cores
                kw["num_cpus"] = max(os.cpu_count() or 1, n_workers)
                # unit results (~170 KB for a 500-step ML10 episode) come back inline instead of
                # through the object store (default threshold 100 KB); measured in benchmarks/results/2026-12-06-history.md
                kw["_system_config"] = {"max_direct_call_object_size": INLINE_BYTES}
            ray.init(**kw)
        self.n_workers = n_workers
        self.budget = RestartBudget(max_restarts, "Ray sampler actor")
        self.timeout_s = timeout_s
        # one CPU per actor; if the cluster has fewer CPUs than actors they share them (Ray would
        # otherwise leave the surplus actors unscheduled and their units waiting forever)
        total = float(ray.cluster_resources().get("CPU", 1.0))
        per_actor = 1.0 if total >= n_workers else total / n_workers
        if per_actor < 1.0:
            warnings.warn(f"{n_workers} Ray sampler actors on {total:g} CPUs: they share them "
                          f"({per_actor:.2f} CPU each)", stacklevel=3)
        self._remote = ray.remote(num_cpus=per_actor, max_restarts=0)(RayWorker)
        self._factory = env_factory
        self.actors = [self._remote.remote(env_factory) for _ in range(n_workers)]

    @property
    def restarts(self) -> int:
        return self.budget.used

    def _replace(self, i: int, job_ref: Any, why: str) -> None:
        ray = self._ray
        try:
            ray.kill(self.actors[i], no_restart=True)
        except Exception:
            pass
        self.budget.spend(i, why)
        self.actors[i] = self._remote.remote(self._factory)
        self.actors[i].set_job.remote(job_ref)

    def prepare(self, tasks: Sequence[Any]) -> None:
        self._ray.get([a.prepare.remote(list(tasks)) for a in self.actors])

    def run(self, job: Job, units: Sequence[Unit]) -> list[UnitResult]:
        """Each actor holds up to PREFETCH units: the next one is already queued on it when one
        finishes, so a Ray round trip (a few ms) never leaves it idle. Results in any order."""
        ray = self._ray
        job_ref = ray.put(job)
        for actor in self.actors:
            actor.set_job.remote(job_ref)  # actor calls run in order: before any of its units
        pending = deque(units)
        results: list[UnitResult] = []
        in_flight: dict[Any, tuple[int, Unit]] = {}
        clock = RunningClock(stall_s=2.0)  # ray.wait below returns at least every second
        since = [clock.now()] * self.n_workers  # when actor i last finished a unit (or got its first)
        failure: list[BaseException] = []

        def feed(i: int) -> None:
            if pending and not failure:
                unit = pending.popleft()
                in_flight[self.actors[i].run.remote(unit)] = (i, unit)

        def replace(i: int, why: str) -> None:
            """Actor i's units go back to the front of the queue; a new actor takes its place."""
            for ref, (j, unit) in list(in_flight.items()):
                if j == i:
                    del in_flight[ref]
                    pending.appendleft(unit)
            self._replace(i, job_ref, why)
            since[i] = clock.now()
            for _ in range(self.PREFETCH):
                feed(i)

        for _ in range(self.PREFETCH):
            for i in range(self.n_workers):
                feed(i)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                if ref not in in_flight:  # its actor was replaced meanwhile: the unit is queued again
                    continue
                i, unit = in_flight.pop(ref)
                try:
                    results.append(ray.get(ref))
                except ray.exceptions.RayActorError as e:
                    pending.appendleft(unit)
                    replace(i, f"died ({type(e).__name__})")
                    continue
                except ray.exceptions.RayTaskError as e:  # the unit raised: raise it here, once all are in
                    failure.append(e.as_instanceof_cause())
                since[i] = clock.now()
                feed(i)
            now = clock.now()
            for i in {j for j, _ in in_flight.values()}:
                if now - since[i] > self.timeout_s:
                    replace(i, f"gave no answer within {self.timeout_s:.0f} s")
        if failure:
            raise failure[0]
        return results

    def close(self) -> None:
        for actor in self.actors:
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self.actors = []
