"""The optional Meta-World fast path changes nothing: same observations, rewards and success
flags as upstream on every ML45 env class over randomized rollouts."""
import numpy as np

from envs import fastpath, make_benchmark


def _rollout(env, task, seed, actions):
    env.seed(seed)
    env.set_task(task)
    out = [env.reset()]
    for a in actions:
        out.append(env.step(a))
    return out


def test_fast_path_is_identical_to_upstream_on_every_ml45_class():
    bench = make_benchmark("ML45", seed=0, max_episode_steps=120)
    first = {}
    for t in bench.train_tasks + bench.test_tasks:
        first.setdefault(t.name, t)
    assert len(first) == 50
    rng = np.random.default_rng(0)
    checked = 0
    try:
        for name, task in first.items():
            actions = rng.uniform(-1, 1, (120, 4))
            actions[60:, 3] = 1.0  # close the gripper for the second half: contacts with objects
            fastpath.disable()
            ref = _rollout(bench.env_factory(), task, 3, actions)
            fastpath.enable()
            got = _rollout(bench.env_factory(), task, 3, actions)
            assert np.array_equal(ref[0], got[0]), name
            for (o1, r1, s1), (o2, r2, s2) in zip(ref[1:], got[1:]):
                assert np.array_equal(o1, o2) and r1 == r2 and s1 == s2, name
            checked += 1
    finally:
        fastpath.disable()
    assert checked == 50


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
