import multiprocessing as mp

import numpy as np
import pytest
import torch

from agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from envs import TaskVectorEnv, make_benchmark
from metarl.sampler import Sampler
from metarl.types import ConfigError


def test_ml1_train_goals_differ_from_test_goals():
    b = make_benchmark("ML1", "reach-v3", seed=0)
    assert len(b.train_tasks) == 50 and len(b.test_tasks) == 50
    assert {t.name for t in b.train_tasks} == {"reach-v3"}

    def goals(tasks):
        env = b.env_factory()
        out = []
        for t in tasks:
            env.set_task(t)
            env.reset()
            out.append(np.round(env.env._target_pos.copy(), 6))
        return {tuple(g) for g in out}

    train, test = goals(b.train_tasks), goals(b.test_tasks)
    assert len(train) == 50 and len(test) == 50
    assert not train & test


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="env.benchmark.*allowed: ML1, ML10, ML45, toy"):
        make_benchmark("ML7")
    with pytest.raises(ConfigError, match="env.env_name.*'reachh-v3'.*allowed:.*reach-v3"):
        make_benchmark("ML1", "reachh-v3")


def _sample(bench, n_workers, seed, n_slots=4, episodes=2):
    torch.manual_seed(0)
    agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=n_slots, hidden_sizes=(16,)), bench.obs_dim, bench.act_dim)
    with TaskVectorEnv(bench.env_factory, n_slots, n_workers) as vec:
        sampler = Sampler(vec, bench.max_episode_steps)
        batch, _ = sampler.sample(agent, bench.train_tasks[:n_slots], agent.initial_task_state(n_slots),
                                  episodes, np.random.default_rng(seed))
    return batch


def test_same_seed_gives_bit_identical_trajectories():
    b = make_benchmark("ML1", "reach-v3", seed=0, max_episode_steps=30)
    x, y, z = _sample(b, 0, 7), _sample(b, 0, 7), _sample(b, 0, 8)
    for f in ("obs", "actions", "rewards", "next_obs", "successes"):
        assert np.array_equal(getattr(x, f), getattr(y, f)), f
    assert not np.array_equal(x.actions, z.actions)


def test_multiprocess_backend_matches_in_process():
    b = make_benchmark("ML1", "reach-v3", seed=0, max_episode_steps=30)
    x, y = _sample(b, 0, 3, n_slots=5), _sample(b, 2, 3, n_slots=5)
    for f in ("obs", "actions", "rewards", "next_obs", "successes"):
        assert np.array_equal(getattr(x, f), getattr(y, f)), f


def test_step_api_checks_finite_actions_and_close_leaves_no_children():
    b = make_benchmark("toy", seed=0)
    vec = TaskVectorEnv(b.env_factory, 4, 2)
    vec.set_tasks(b.train_tasks[:3], [1, 2, 3])
    obs = vec.reset()
    assert obs.shape == (3, 2)
    obs, r, s, w = vec.step(np.full((3, 2), 0.5))
    np.testing.assert_allclose(obs, 0.05)
    bad = np.zeros((3, 2))
    bad[1, 0] = np.nan
    with pytest.raises(FloatingPointError, match=r"slots \[1\]"):
        vec.step(bad)
    procs = list(vec._procs)
    assert all(p.is_alive() for p in procs)
    vec.close()
    assert not any(p.is_alive() for p in procs)
    assert not [c for c in mp.active_children() if c in procs]


def test_toy_task_interface():
    b = make_benchmark("toy", seed=3, max_episode_steps=5)
    env = b.env_factory()
    env.set_task(b.test_tasks[0])
    env.seed(0)
    o = env.reset()
    assert o.shape == (2,)
    for _ in range(5):
        o, r, s = env.step(np.ones(2))
    assert r == pytest.approx(-np.linalg.norm(o - b.test_tasks[0].payload))
    with pytest.raises(RuntimeError):
        env.step(np.ones(2))
