"""Replayed resets: a Meta-World reset whose outcome is already known, restored in microseconds.

A Meta-World reset (metaworld 3.1.1) runs `reset_model` twice, each time driving the hand to
its start for 50 frame-skipped simulation steps: about 5 ms, 8% of a 500-step episode on
this machine (`benchmarks/results/sampler_efficiency.md`). Once a task is set its goal and
object positions are frozen (`_freeze_rand_vec`), `mj_resetData` wipes what the last episode
left in the simulation, and nothing in a reset draws randomness, so every reset of an env
instance for a given task ends in the same state. The first full reset of each (env instance,
task) keeps what it produced, and later resets of that task restore it:

- the model arrays that resets of this env write (goal sites, object bodies: `site_pos`,
  `body_pos`, found by comparing the model before and after every full reset);
- the MuJoCo integration state (`mjSTATE_INTEGRATION`: time, qpos, qvel, act, ctrl, mocap,
  applied forces, solver warm start, ...), which alone determines every later `mj_step`, and
  the warning counters. One `mj_forward` then recomputes MjData's derived quantities
  (positions, contacts, sensors) from that state, and the warm start is put back after it
  (`mj_forward` overwrites it). A full reset that ends with an `mj_step` leaves derived
  quantities one step behind its state, so right after a replayed reset they can differ from a
  full reset's; nothing reads them before the first step recomputes them all (tested), and the
  video renderer, which draws a frame right after the reset, uses full resets;
- every attribute of the env object the reset wrote (found by recording `setattr` during the
  full reset, and by comparing arrays before and after it): copies of plain values, and the
  same object for arrays that are live views into MuJoCo's memory (`init_left_pad` is a view
  of `data.xpos`);
- the observation and info it returned.

When a full reset changes a model array that no earlier one did, the env's earlier snapshots
(which lack its value) are dropped. A reset that writes anything that is not a plain value
(number, string, None, NumPy array, or a list/tuple/dict of these) makes its env fall back to
full resets. tests/test_resetcache.py checks on ML45 classes, with scripted and random actions
and switches between goals, that observations, rewards, success flags, MuJoCo warnings, the
integration state, every MjData array after the first step and every plain attribute equal
those of full resets bit for bit. `env.fast_path: false` turns it off with the rest of the
fast path.
"""
from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field
from typing import Any, Hashable

import mujoco
import numpy as np

_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
_WARMSTART = mujoco.mjtState.mjSTATE_WARMSTART
_PLAIN = (int, float, bool, str, bytes, type(None), np.generic)
_ASSETS = ("mesh_", "tex_", "hfield_", "bvh_", "skin_", "flex_", "oct_")
MAX_SNAPSHOTS = 4096  # per env instance (an ML45 class has 50 train goals; a snapshot is ~10 KB)
_TRACKERS: dict[type, type] = {}
_WRITES: list[set[str]] = []  # the names written by setattr during the full reset in progress


def _tracking(cls: type) -> type:
    """A subclass of `cls` whose setattr and delattr record the attribute names (class swapped in
    only for the duration of one full reset)."""
    sub = _TRACKERS.get(cls)
    base: Any = cls
    if sub is None:
        def __setattr__(self: Any, name: str, value: Any) -> None:
            if _WRITES:
                _WRITES[-1].add(name)
            base.__setattr__(self, name, value)

        def __delattr__(self: Any, name: str) -> None:
            if _WRITES:
                _WRITES[-1].add(name)
            base.__delattr__(self, name)

        sub = type(cls.__name__, (cls,), {"__setattr__": __setattr__, "__delattr__": __delattr__,
                                          "__module__": cls.__module__, "__qualname__": cls.__qualname__})
        _TRACKERS[cls] = sub
    return sub


def _mujoco_view(v: Any) -> bool:
    """An array whose memory belongs to MuJoCo (MjData / MjModel fields and views of them)."""
    if not isinstance(v, np.ndarray):
        return False
    root: Any = v
    while isinstance(root, np.ndarray) and root.base is not None:
        root = root.base
    return not isinstance(root, np.ndarray)


def _plain(v: Any) -> bool:
    if isinstance(v, _PLAIN):
        return True
    if isinstance(v, np.ndarray):
        return v.dtype != object
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, (str, int)) and _plain(x) for k, x in v.items())
    return False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
    return False


def _model_fields(model: Any) -> dict[str, np.ndarray]:
    """The model's arrays a reset might write (Meta-World resets move goal sites and object bodies:
    `site_pos`, `body_pos`), leaving out the asset data (meshes, textures, height fields, BVH
    trees: 21 MB, and no reset touches them)."""
    return {f: a for f in dir(model) if not f.startswith(_ASSETS)
            for a in [getattr(model, f, None)] if isinstance(a, np.ndarray)}


@dataclass
class Snapshot:
    state: np.ndarray        # mjSTATE_INTEGRATION
    warmstart: np.ndarray    # mjSTATE_WARMSTART (mj_forward overwrites it)
    warning_number: np.ndarray
    warning_lastinfo: np.ndarray
    model: dict[str, np.ndarray]  # the model arrays resets of this env write, as this reset left them
    attrs: dict[str, Any]    # plain values, deep-copied (as one dict) on every restore
    views: dict[str, Any]    # live views into MuJoCo memory: the same object back
    deleted: tuple[str, ...]
    obs: np.ndarray
    info: dict[str, Any]


@dataclass
class _EnvRecord:
    snaps: dict[Hashable, Snapshot] = field(default_factory=dict)
    model_written: frozenset[str] = frozenset()  # model arrays any full reset of this env changed
    cacheable: bool = True


class ResetCache:
    """Snapshots per env instance (a Meta-World env object) and task, made by full resets."""

    def __init__(self, max_snapshots: int = MAX_SNAPSHOTS) -> None:
        # weak keys: a record goes with its env, and a new env never finds a dead one's record
        self._envs: weakref.WeakKeyDictionary[Any, _EnvRecord] = weakref.WeakKeyDictionary()
        self.max_snapshots = max_snapshots
        self.hits = 0
        self.misses = 0

    def reset(self, env: Any, key: Hashable) -> tuple[np.ndarray, dict[str, Any]]:
        rec = self._envs.get(env)
        if rec is None:
            rec = self._envs[env] = _EnvRecord()
        snap = rec.snaps.get(key)
        if snap is not None and getattr(env, "_freeze_rand_vec", False):
            self.hits += 1
            return self._restore(env, snap)
        self.misses += 1
        return self._full_reset(env, key, rec)

    def _full_reset(self, env: Any, key: Hashable, rec: _EnvRecord) -> tuple[np.ndarray, dict[str, Any]]:
        if not rec.cacheable or not getattr(env, "_freeze_rand_vec", False):
            return env.reset()
        cls = type(env)
        before = dict(vars(env))
        arrays = {k: v.copy() for k, v in before.items() if isinstance(v, np.ndarray)}
        model = _model_fields(env.model)
        model_before = {f: a.copy() for f, a in model.items()}
        _WRITES.append(set())
        env.__class__ = _tracking(cls)
        try:
            obs, info = env.reset()
        finally:
            env.__class__ = cls
            written = _WRITES.pop()
        after = vars(env)
        written |= {k for k, v in after.items() if k not in before}
        written |= {k for k, old in arrays.items() if k in after and not _same(old, after[k])}
        written.discard("__class__")
        if any(k not in before and k not in after for k in written):  # a property's setter, not an attribute
            return self._give_up(rec, obs, info)
        deleted = tuple(k for k in written if k not in after)
        plain, views = {}, {}
        for k in written:
            if k not in after:
                continue
            v = after[k]
            if _mujoco_view(v):
                views[k] = v
            elif _plain(v):
                plain[k] = v
            else:  # an object the snapshot cannot restore faithfully: this env resets in full
                return self._give_up(rec, obs, info)
        attrs = copy.deepcopy(plain)  # one deepcopy: attributes that share an object still share it
        if not (_plain(obs) and _plain(info)):
            return self._give_up(rec, obs, info)
        changed = {f for f, a in model.items() if not _same(model_before[f], a)}
        if not changed <= rec.model_written:
            # a model array no earlier reset wrote: the earlier snapshots do not hold its value
            rec.model_written = rec.model_written | changed
            rec.snaps.clear()
        if len(rec.snaps) >= self.max_snapshots:
            rec.snaps.clear()
        m, d = env.model, env.data
        state = np.empty(mujoco.mj_stateSize(m, _STATE))
        mujoco.mj_getState(m, d, state, _STATE)
        warm = np.empty(mujoco.mj_stateSize(m, _WARMSTART))
        mujoco.mj_getState(m, d, warm, _WARMSTART)
        rec.snaps[key] = Snapshot(state, warm, d.warning.number.copy(), d.warning.lastinfo.copy(),
                                  {f: model[f].copy() for f in rec.model_written}, attrs, views, deleted,
                                  np.array(obs, copy=True), copy.deepcopy(info))
        return obs, info

    @staticmethod
    def _give_up(rec: _EnvRecord, obs: np.ndarray, info: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        rec.cacheable = False
        rec.snaps.clear()
        return obs, info

    @staticmethod
    def _restore(env: Any, snap: Snapshot) -> tuple[np.ndarray, dict[str, Any]]:
        m, d = env.model, env.data
        for f, a in snap.model.items():
            np.copyto(getattr(m, f), a)
        mujoco.mj_setState(m, d, snap.state, _STATE)
        mujoco.mj_forward(m, d)
        mujoco.mj_setState(m, d, snap.warmstart, _WARMSTART)
        d.warning.number[:] = snap.warning_number
        d.warning.lastinfo[:] = snap.warning_lastinfo
        state = vars(env)
        for k in snap.deleted:
            state.pop(k, None)
        state.update(copy.deepcopy(snap.attrs))
        state.update(snap.views)
        return snap.obs.copy(), copy.deepcopy(snap.info)
