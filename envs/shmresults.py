"""Unit results written in place: one shared-memory block per sample call of the process pool.

Sent through a pipe, a one-episode ML10 unit is ~170 KB (obs and next_obs dominate). A pipe
holds 64 KB, so the worker blocks in `send` until the parent has been scheduled and has read
the rest: measured on 2 cores with 2 busy workers, ~1.5 ms a unit, 2% of the worker's time, plus
the parent's unpickling. Instead the parent creates, per call, one block with a region for every
unit (its episodes' obs, actions, rewards, next_obs, successes at a fixed offset); the worker
copies its arrays into the unit's region and sends only the small rest of the UnitResult. Every
unit has its own region, so a unit run again (a restarted worker) rewrites the same bytes and
nothing is ever overwritten before the parent has read it.

The parent falls back to the pipe when it does not yet know the observation size (first call of
a pool), when the block would be larger than `MAX_BYTES` or than half of what /dev/shm has free
(Docker's default /dev/shm is 64 MB), or when creating it fails. A worker that finds a unit's
arrays do not match the region's shapes sends them through the pipe. Either way the numbers are
the same bytes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Sequence

import numpy as np

from metarl.rollout import Unit, UnitResult

MAX_BYTES = 512 * 2**20


def _specs(obs_dim: int, act_dim: int) -> tuple[tuple[np.dtype, tuple[int, ...]], ...]:
    """dtype and per-step shape of UnitResult.data's fields, in its order (metarl.rollout._episode)."""
    f32 = np.dtype(np.float32)
    return ((f32, (obs_dim,)), (f32, (act_dim,)), (f32, ()), (f32, (obs_dim,)), (np.dtype(bool), ()))


@dataclass(frozen=True)
class Layout:
    """Where each unit's arrays lie in the block `name` (sent to the workers with the job)."""

    name: str
    horizon: int
    obs_dim: int
    act_dim: int
    offsets: dict[int, tuple[int, int]]  # unit index -> (byte offset, episodes)

    def views(self, buf: memoryview, index: int) -> tuple[np.ndarray, ...]:
        offset, n = self.offsets[index]
        out = []
        for dtype, tail in _specs(self.obs_dim, self.act_dim):
            shape = (n, self.horizon, *tail)
            out.append(np.ndarray(shape, dtype, buffer=buf, offset=offset))
            offset += _aligned(int(np.prod(shape)) * dtype.itemsize)
        return tuple(out)


def _aligned(n: int) -> int:
    return (n + 63) // 64 * 64


def _unit_bytes(n_episodes: int, horizon: int, obs_dim: int, act_dim: int) -> int:
    return sum(_aligned(n_episodes * horizon * int(np.prod(tail, dtype=np.int64)) * dtype.itemsize)
               for dtype, tail in _specs(obs_dim, act_dim))


def _shm_free() -> int:
    try:
        st = os.statvfs("/dev/shm")
        return st.f_bavail * st.f_frsize
    except OSError:  # no /dev/shm (macOS): POSIX shared memory lives elsewhere; stay modest
        return 128 * 2**20


class ResultBlock:
    """The parent's side: creates the block, reads units' arrays back, removes it."""

    def __init__(self, layout: Layout, shm: shared_memory.SharedMemory):
        self.layout = layout
        self._shm = shm

    @classmethod
    def create(cls, units: Sequence[Unit], horizon: int, obs_dim: int | None, act_dim: int) -> ResultBlock | None:
        """None where the pipe is to be used (see the module's docstring)."""
        if obs_dim is None or not units:
            return None
        offsets: dict[int, tuple[int, int]] = {}
        total = 0
        for u in units:
            offsets[u.index] = (total, u.n_episodes)
            total += _unit_bytes(u.n_episodes, horizon, obs_dim, act_dim)
        if total > min(MAX_BYTES, _shm_free() // 2):
            return None
        try:
            shm = shared_memory.SharedMemory(create=True, size=total)
        except OSError:
            return None
        return cls(Layout(shm.name, horizon, obs_dim, act_dim, offsets), shm)

    def read(self, result: UnitResult) -> UnitResult:
        """`result` with its arrays copied out of the block (they stay as they are if it came
        with its arrays)."""
        if result.data is None:
            buf = self._shm.buf
            assert buf is not None  # open until close()
            result.data = tuple(v.copy() for v in self.layout.views(buf, result.index))
        return result

    def close(self) -> None:
        self._shm.close()
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass


class ResultWriter:
    """A worker's side: attached to the current call's block, if any."""

    def __init__(self) -> None:
        self._layout: Layout | None = None
        self._shm: shared_memory.SharedMemory | None = None

    def attach(self, layout: Layout | None) -> None:
        self.detach()
        if layout is None:
            return
        try:
            self._shm = shared_memory.SharedMemory(name=layout.name)
        except OSError:  # gone or not reachable: this worker sends through the pipe
            return
        self._layout = layout

    def put(self, result: UnitResult) -> UnitResult:
        """Copy the result's arrays into its region and drop them from it, where they fit."""
        if self._layout is None or self._shm is None or result.data is None:
            return result
        buf = self._shm.buf
        if buf is None:
            return result
        views = self._layout.views(buf, result.index)
        if any(v.shape != a.shape or v.dtype != a.dtype for v, a in zip(views, result.data)):
            return result
        for v, a in zip(views, result.data):
            v[...] = a
        result.data = None
        return result

    def detach(self) -> None:
        if self._shm is not None:
            self._shm.close()
        self._shm = None
        self._layout = None
