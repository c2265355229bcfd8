"""The optional Meta-World fast path changes nothing: same observations, rewards and success
flags as upstream over randomized rollouts, on five diverse ML45 env classes in the default
suite and on every one of the 50 with -m slow."""
import dataclasses
import inspect
import re
import warnings

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from metarl.envs import fastpath, make_benchmark


def _rollout(env, task, seed, actions):
    env.seed(seed)
    env.set_task(task)
    out = [env.reset()]
    for a in actions:
        out.append(env.step(a))
    return out


# five diverse classes for the default suite: the rotation patch with grasp contacts
# (pick-place), the rotation patch on an articulated object (door-open), touching_object without
# the rotation patch (sweep, and hand-insert, an ML45 test class), and neither (button-press-topdown:
# the observation patch alone)
FEW = ("pick-place-v3", "door-open-v3", "sweep-v3", "hand-insert-v3", "button-press-topdown-v3")


def _check_identical(cases):
    """Randomized 120-step rollouts on each (task, env factory) in `cases`, with and without the
    fast path: observations, rewards and success flags equal bit for bit."""
    rng = np.random.default_rng(0)
    checked = []
    try:
        for task, factory in cases:
            actions = rng.uniform(-1, 1, (120, 4))
            actions[60:, 3] = 1.0  # close the gripper for the second half: contacts with objects
            ref_env = dataclasses.replace(factory, fast_path=False)()
            assert not fastpath.enabled()
            ref = _rollout(ref_env, task, 3, actions)
            got_env = dataclasses.replace(factory, fast_path=True)()
            assert fastpath.enabled()
            got = _rollout(got_env, task, 3, actions)
            assert np.array_equal(ref[0], got[0]), task.name
            for (o1, r1, s1), (o2, r2, s2) in zip(ref[1:], got[1:]):
                assert np.array_equal(o1, o2) and r1 == r2 and s1 == s2, task.name
            checked.append(task.name)
    finally:
        fastpath.disable()
    return checked


def test_fast_path_is_identical_to_upstream_on_a_few_ml45_classes():
    # each class through its own ML1 benchmark: building ML45 resets all 50 classes 2,500 times
    # (~24 s of CPU), building five ML1s about a tenth of that
    cases = []
    for name in FEW:
        bench = make_benchmark("ML1", name, seed=0, max_episode_steps=120)
        cases.append((bench.train_tasks[0], bench.env_factory))
    assert _check_identical(cases) == list(FEW)


@pytest.mark.slow
def test_fast_path_is_identical_to_upstream_on_every_ml45_class():
    bench = make_benchmark("ML45", seed=0, max_episode_steps=120)
    first = {}
    for t in bench.train_tasks + bench.test_tasks:
        first.setdefault(t.name, t)
    assert len(first) == 50 and set(FEW) <= set(first)
    assert len(_check_identical([(t, bench.env_factory) for t in first.values()])) == 50


def test_fast_touching_object_matches_upstream_in_contact():
    """Drive the gripper onto the object so that contacts do happen, and compare the two
    implementations of touching_object at every step."""
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

    bench = make_benchmark("ML1", "pick-place-v3", seed=0, max_episode_steps=200)
    env = bench.env_factory()
    env.seed(0)
    env.set_task(bench.train_tasks[0])
    env.reset()
    raw = env.env
    oid = raw._get_id_main_object()
    fastpath.disable()
    upstream = SawyerXYZEnv.touching_object
    touched = 0
    for k in range(200):
        obs = raw._get_obs()
        hand, obj = obs[:3], obs[4:7]
        delta = np.clip((obj - hand) * 10, -1, 1)
        grip = -1.0 if k < 60 else 1.0
        if k < 60:
            delta[2] = np.clip((obj[2] + 0.05 - hand[2]) * 10, -1, 1)
        env.step(np.array([*delta, grip]))
        a, b = upstream(raw, oid), fastpath._touching_object(raw, oid)
        assert a == b, k
        touched += a
    assert touched > 0, "the scripted grasp never touched the object: the comparison proved nothing"


def test_quaternion_from_matrix_is_scipys_bit_for_bit():
    rng = np.random.default_rng(0)
    mats = np.concatenate([
        Rotation.random(5000, rng=rng).as_matrix(),                                # every Markley branch
        Rotation.from_rotvec(rng.normal(0, 1e-3, (2000, 3))).as_matrix(),          # objects near rest
        Rotation.from_rotvec(np.pi * np.eye(3) * (1 - 1e-9)).as_matrix(),          # half turns
        np.eye(3)[None], np.diag([1.0, -1.0, -1.0])[None]])
    branches = set()
    for m in mats:
        q = fastpath.quat_from_matrix(m)
        assert q is not None
        np.testing.assert_array_equal(q, Rotation.from_matrix(m).as_quat())
        d = [m[0, 0], m[1, 1], m[2, 2], np.trace(m)]
        branches.add(int(np.argmax(d)))
    assert branches == {0, 1, 2, 3}
    # not orthogonal (scipy would orthogonalise by SVD) or a reflection: left to scipy
    m = mats[0] + 1e-9
    assert fastpath.quat_from_matrix(m) is None and fastpath.quat_from_matrix(-mats[0]) is None
    np.testing.assert_array_equal(fastpath.FastRotation.from_matrix(m).as_quat(), Rotation.from_matrix(m).as_quat())
    with pytest.raises(ValueError):
        fastpath.FastRotation.from_matrix(-mats[0])


def test_patched_modules_only_convert_matrices_to_quaternions():
    """FastRotation covers `Rotation.from_matrix(m).as_quat()` only: every use of Rotation in
    the modules it is swapped into must be of that form."""
    mods = fastpath._rotation_modules()
    assert len(mods) == 22
    for mod in mods:
        src = inspect.getsource(mod)
        uses = re.findall(r"Rotation\.(\w+)", src)
        assert uses and set(uses) == {"from_matrix"}, mod.__name__
        assert src.count(".as_quat()") == len(uses), mod.__name__


def test_fast_path_stays_off_for_untested_versions(monkeypatch):
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

    fastpath.disable()
    original = SawyerXYZEnv.touching_object
    monkeypatch.setitem(fastpath.TESTED, "metaworld", ("0.0.0",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fastpath.enable() is False
    assert any("env.fast_path: left off" in str(w.message) for w in caught)
    assert not fastpath.enabled() and SawyerXYZEnv.touching_object is original
