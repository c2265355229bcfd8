"""Optional Meta-World fast path: equivalent, faster replacements for hot spots.

tests/test_fastpath.py checks, on every ML45 env class over randomized rollouts, that
observations, rewards and success flags are identical bit for bit with and without it;
benchmarks/throughput.py reports its speedup separately. `enable()` patches only the
metaworld and scipy versions that test ran against (`TESTED`) and only after a self-check
of the rotation conversion against scipy; otherwise it warns and leaves upstream in place.

Replaced:
- `SawyerXYZEnv.touching_object`: two Python list comprehensions over every MuJoCo contact
  per call (the grasp rewards of 16 env classes) -> boolean masks over the contact arrays.
  The contact forces are summed in the same order, so the result is the same bit for bit.
- `SawyerXYZEnv._get_curr_obs_combined_no_goal`: np.split / nested np.hstack per step ->
  slice assignment into one preallocated array (a copy: no arithmetic changes).
- `Rotation.from_matrix(m).as_quat()` in the 22 env modules that read an object's
  orientation this way (~100 us a call in scipy 1.17 for one 3x3 matrix): the same
  Markley branch choice, sums and normalisation in scalar Python float arithmetic, which
  reproduces scipy's numbers bit for bit. A matrix that is not clearly orthogonal (scipy
  would orthogonalise it by SVD) or not 3x3 float64 goes to scipy itself.
"""
from __future__ import annotations

import math
import sys
import warnings
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

TESTED = {"metaworld": ("3.1.1",), "scipy": ("1.17",)}  # scipy: major.minor
_ORIGINAL: dict = {}


# ---- touching_object -----------------------------------------------------------------
def _touching_object(self: Any, object_geom_id: int) -> bool:  # self: a SawyerXYZEnv (patched in)
    ids = getattr(self, "_metarl_pad_ids", None)
    if ids is None:
        ids = (self.data.geom("leftpad_geom").id, self.data.geom("rightpad_geom").id)
        self._metarl_pad_ids = ids
    if self.data.ncon == 0:
        return False
    contact = self.data.contact
    geom, efc = contact.geom, contact.efc_address
    with_obj = (geom == object_geom_id).any(axis=1)
    forces = self.data.efc_force
    total = []
    for pad in ids:
        sel = efc[with_obj & (geom == pad).any(axis=1)]
        acc = 0
        for f in forces[sel]:  # sequential, like the original sum()
            acc = acc + f
        total.append(acc)
    return 0 < total[0] and 0 < total[1]


# ---- observation ---------------------------------------------------------------------
def _curr_obs_combined_no_goal(self: Any) -> np.ndarray:  # self: a SawyerXYZEnv (patched in)
    pos_hand = self.get_endeff_pos()
    right, left = self.data.body("rightclaw"), self.data.body("leftclaw")
    apart = np.clip(np.linalg.norm(right.xpos - left.xpos) / 0.1, 0.0, 1.0)
    obj_pos = self._get_pos_objects()
    obj_quat = self._get_quat_objects()
    assert len(obj_pos) % 3 == 0 and len(obj_quat) % 4 == 0
    n = len(obj_pos) // 3
    if len(obj_quat) // 4 != n or 7 * n > self._obs_obj_max_len:
        return _ORIGINAL["_get_curr_obs_combined_no_goal"](self)  # upstream's behaviour, errors included
    out = np.zeros(4 + self._obs_obj_max_len)
    out[:3] = pos_hand
    out[3] = apart
    for i in range(n):
        out[4 + 7 * i:7 + 7 * i] = obj_pos[3 * i:3 * i + 3]
        out[7 + 7 * i:11 + 7 * i] = obj_quat[4 * i:4 * i + 4]
    return out


# ---- Rotation.from_matrix(...).as_quat() ------------------------------------------------
def quat_from_matrix(m: np.ndarray) -> np.ndarray | None:
    """scipy's `Rotation.from_matrix(m).as_quat()` (x, y, z, w) for a 3x3 float64 matrix that
    is orthogonal with determinant +1 by a wide margin of scipy's tolerances; None otherwise
    (the caller then asks scipy)."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.ravel().tolist()
    # scipy orthogonalises (SVD) unless isclose(m m^T, I, atol=1e-12, rtol=1e-5); take only
    # matrices well inside that, so a last-bit difference in the Gram matrix cannot matter
    g = ((m00 * m00 + m01 * m01 + m02 * m02) - 1.0, (m10 * m10 + m11 * m11 + m12 * m12) - 1.0,
         (m20 * m20 + m21 * m21 + m22 * m22) - 1.0)
    o = (m00 * m10 + m01 * m11 + m02 * m12, m00 * m20 + m01 * m21 + m02 * m22,
         m10 * m20 + m11 * m21 + m12 * m22)
    if not (max(abs(x) for x in g) < 1e-6 and max(abs(x) for x in o) < 2.5e-13):
        return None
    det = m00 * (m11 * m22 - m12 * m21) - m01 * (m10 * m22 - m12 * m20) + m02 * (m10 * m21 - m11 * m20)
    if not det > 0.5:
        return None
    tr = m00 + m11 + m22
    # np.argmax over (m00, m11, m22, trace): the first maximum
    choice, best = 0, m00
    for i, v in ((1, m11), (2, m22), (3, tr)):
        if v > best:
            choice, best = i, v
    if choice == 0:
        q = (1 - tr + 2 * m00, m10 + m01, m20 + m02, m21 - m12)
    elif choice == 1:
        q = (m10 + m01, 1 - tr + 2 * m11, m21 + m12, m02 - m20)
    elif choice == 2:
        q = (m20 + m02, m21 + m12, 1 - tr + 2 * m22, m10 - m01)
    else:
        q = (m21 - m12, m02 - m20, m10 - m01, 1 + tr)
    norm = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    return np.array([q[0] / norm, q[1] / norm, q[2] / norm, q[3] / norm])


class _Quat:
    __slots__ = ("_q",)

    def __init__(self, q: np.ndarray):
        self._q = q

    def as_quat(self) -> np.ndarray:
        return self._q.copy()


class FastRotation:
    """Stands in for scipy's `Rotation` inside the Meta-World env modules, which only ever
    call `Rotation.from_matrix(m).as_quat()` (tests/test_fastpath.py checks their source)."""

    @staticmethod
    def from_matrix(matrix, **kwargs):
        m = np.asarray(matrix)
        if not kwargs and m.shape == (3, 3) and m.dtype == np.float64:
            q = quat_from_matrix(m)
            if q is not None:
                return _Quat(q)
        return Rotation.from_matrix(matrix, **kwargs)


def _rotation_modules() -> list:
    """The imported metaworld env modules that bind scipy's Rotation at module level."""
    import metaworld.envs  # noqa: F401  (imports every env module)

    return [mod for name, mod in sorted(sys.modules.items())
            if name.startswith("metaworld.") and getattr(mod, "Rotation", None) is Rotation]


def _self_check(n: int = 200) -> bool:
    rng = np.random.default_rng(12345)
    mats = np.concatenate([Rotation.random(n, rng=rng).as_matrix(),
                           Rotation.from_rotvec(rng.normal(0, 1e-3, (n, 3))).as_matrix(), np.eye(3)[None]])
    for m in mats:
        q = quat_from_matrix(m)
        if q is not None and not np.array_equal(q, Rotation.from_matrix(m).as_quat()):
            return False
    return True


def _versions_tested() -> str | None:
    import metaworld
    import scipy

    mw = getattr(metaworld, "__version__", None)
    if mw is None:
        from importlib.metadata import version
        mw = version("metaworld")
    sp = ".".join(scipy.__version__.split(".")[:2])
    if mw not in TESTED["metaworld"] or sp not in TESTED["scipy"]:
        return f"metaworld {mw} / scipy {scipy.__version__} (tested: {TESTED})"
    return None


def enable() -> bool:
    """Patch this process's Meta-World classes (idempotent). Returns whether the fast path is on."""
    if _ORIGINAL:
        return True
    untested = _versions_tested()
    if untested is not None or not _self_check():
        warnings.warn(f"env.fast_path: left off; parity is not established for "
                      f"{untested or 'this scipy (rotation self-check failed)'}", stacklevel=2)
        return False
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

    _ORIGINAL["touching_object"] = SawyerXYZEnv.touching_object
    # patching the methods is the point of this module
    SawyerXYZEnv.touching_object = _touching_object  # type: ignore[method-assign]
    _ORIGINAL["_get_curr_obs_combined_no_goal"] = SawyerXYZEnv._get_curr_obs_combined_no_goal
    SawyerXYZEnv._get_curr_obs_combined_no_goal = _curr_obs_combined_no_goal  # type: ignore[method-assign]
    mods = _rotation_modules()
    _ORIGINAL["Rotation"] = (Rotation, mods)
    for mod in mods:
        mod.Rotation = FastRotation
    return True


def disable() -> None:
    if not _ORIGINAL:
        return
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

    SawyerXYZEnv.touching_object = _ORIGINAL.pop("touching_object")  # type: ignore[method-assign]
    SawyerXYZEnv._get_curr_obs_combined_no_goal = _ORIGINAL.pop(  # type: ignore[method-assign]
        "_get_curr_obs_combined_no_goal")
    rotation, mods = _ORIGINAL.pop("Rotation")
    for mod in mods:
        mod.Rotation = rotation


def enabled() -> bool:
    return bool(_ORIGINAL)
