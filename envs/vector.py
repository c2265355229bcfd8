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
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils import _pytree as pytree

from metarl.rollout import Rollout, run_episodes
from metarl.types import Task

WORKER_TIMEOUT_S = 120.0


def _worker(conn, env_factory: Callable, n_slots: int) -> None:
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
                actor, state, n_episodes, horizon, noise = arg
                conn.send(run_episodes(envs[:active], actor, state, n_episodes, horizon, noise))
            elif cmd == "close":
                break
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        for env in envs:
            env.close()
        conn.close()


class TaskVectorEnv:
    """E = n_slots task slots. n_workers = 0 steps them in this process;
    n_workers = W > 0 spreads them over W processes (forkserver start)."""

    def __init__(self, env_factory: Callable, n_slots: int, n_workers: int = 0):
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        if n_workers < 0:
            raise ValueError(f"n_workers must be >= 0, got {n_workers}")
        self.n_slots = n_slots
        self.n_workers = min(n_workers, n_slots)
        self.n_active = 0
        self._closed = False
        if self.n_workers == 0:
            self._envs = [env_factory() for _ in range(n_slots)]
            return
        bounds = np.linspace(0, n_slots, self.n_workers + 1).round().astype(int)
        self._ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        ctx = mp.get_context("forkserver")
        self._conns, self._procs = [], []
        for a, b in self._ranges:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, env_factory, b - a), daemon=True)
            p.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(p)
        self._active_ranges = self._ranges

    # -- multiprocess plumbing ---------------------------------------------------------
    def _recv(self, i: int):
        conn = self._conns[i]
        if not conn.poll(WORKER_TIMEOUT_S):
            raise RuntimeError(f"sampler worker {i} gave no answer in {WORKER_TIMEOUT_S:.0f} s")
        try:
            return conn.recv()
        except EOFError as e:
            raise RuntimeError(f"sampler worker {i} died (exit code {self._procs[i].exitcode})") from e

    def _broadcast(self, cmd: str, args: Sequence) -> list:
        for conn, arg in zip(self._conns, args):
            conn.send((cmd, arg))
        return [self._recv(i) for i in range(len(self._conns))]

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
        self._active_ranges = [(min(a, self.n_active), min(b, self.n_active)) for a, b in self._ranges]
        self._broadcast("set", [(list(tasks[a:b]), [int(s) for s in seeds[a:b]])
                                for a, b in self._active_ranges])

    def reset(self) -> np.ndarray:
        """[n_active, D] first observations."""
        if self.n_workers == 0:
            return np.stack([env.reset() for env in self._envs[: self.n_active]])
        parts = self._broadcast("reset", [None] * len(self._conns))
        return np.concatenate([p for p in parts if p is not None])

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
        parts = self._broadcast("step", [actions[a:b] for a, b in self._active_ranges])
        parts = [p for p in parts if p is not None]
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(4))  # type: ignore[return-value]

    def rollout(self, actor, task_state, n_episodes: int, horizon: int,
                noise: np.ndarray | None) -> tuple[Rollout, object]:
        """Run `n_episodes` episodes on every active slot (see metarl.rollout.run_episodes)."""
        if self.n_workers == 0:
            return run_episodes(self._envs[: self.n_active], actor, task_state, n_episodes, horizon, noise)
        cpu_state = pytree.tree_map(lambda x: x.cpu() if torch.is_tensor(x) else x, task_state)
        args = [(actor, pytree.tree_map(lambda x: x[a:b], cpu_state), n_episodes, horizon,
                 None if noise is None else noise[a:b]) for a, b in self._active_ranges]
        parts = [p for p in self._broadcast("rollout", [arg if b > a else None for arg, (a, b)
                                                         in zip(args, self._active_ranges)]) if p is not None]
        rollout = Rollout(*[np.concatenate([getattr(r, f) for r, _ in parts])
                            for f in Rollout.__dataclass_fields__])
        states = [st for _, st in parts]
        merged = pytree.tree_map(lambda *xs: torch.cat(xs), states[0], *states[1:]) if len(states) > 1 \
            else states[0]
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
            except (BrokenPipeError, OSError):
                pass
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        for conn in self._conns:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
