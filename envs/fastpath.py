"""Optional Meta-World fast path: equivalent, vectorized replacements for hot spots.

Off unless `env.fast_path: true`. tests/test_fastpath.py checks, on every ML45 env class
over randomized rollouts, that observations, rewards and success flags are identical
with and without it; benchmarks/throughput.py reports its speedup separately.

Replaced so far:
- `SawyerXYZEnv.touching_object`: two Python list comprehensions over every MuJoCo contact
  per call (used by the grasp rewards of 16 env classes) -> boolean masks over the
  contact arrays. The contact forces are summed in the same order, so the result is the
  same bit for bit.
"""
from __future__ import annotations


_ORIGINAL = {}


def _touching_object(self, object_geom_id: int) -> bool:
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


def enable() -> None:
    """Patch this process's Meta-World classes (idempotent)."""
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

    if "touching_object" not in _ORIGINAL:
        _ORIGINAL["touching_object"] = SawyerXYZEnv.touching_object
        SawyerXYZEnv.touching_object = _touching_object


def disable() -> None:
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

    if "touching_object" in _ORIGINAL:
        SawyerXYZEnv.touching_object = _ORIGINAL.pop("touching_object")
