"""Unit results through the call's shared-memory block (envs/shmresults.py): the same bytes as
the pipe and the in-process backend, the block removed after every call, a killed worker's
units rewritten in place, and the fallbacks to the pipe."""
import os

import numpy as np
import pytest
import torch

from agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from agents.rl2_ppo import RL2PPO, RL2PPOConfig
from envs import TaskVectorEnv, make_benchmark, shmresults
from envs.faults import DieAtStepFactory
from metarl.rollout import UnitResult
from metarl.sampler import Sampler

FIELDS = ("obs", "actions", "rewards", "next_obs", "successes")


@pytest.fixture
def blocks(monkeypatch):
    """The names of the result blocks the pool made (None where it used the pipe)."""
    made: list[str | None] = []
    create = shmresults.ResultBlock.create.__func__

    def spy(cls, *a, **kw):
        block = create(cls, *a, **kw)
        made.append(None if block is None else block.layout.name)
        return block
    monkeypatch.setattr(shmresults.ResultBlock, "create", classmethod(spy))
    return made


def _calls(bench, factory, workers, agent, n_calls=3, episodes=3, n_slots=4):
    with TaskVectorEnv(factory, n_slots, workers) as vec:
        sampler = Sampler(vec, bench.max_episode_steps)
        out = []
        for i in range(n_calls):
            batch, state = sampler.sample(agent, bench.train_tasks[i:i + n_slots], agent.initial_task_state(n_slots),
                                          episodes, np.random.default_rng(i))
            out.append((batch, state))
        return out, vec.restarts


def _same(ref, got):
    for (a, sa), (b, sb) in zip(ref, got):
        for f in FIELDS:
            assert np.array_equal(getattr(a, f), getattr(b, f)), f
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


def _gone(name: str) -> bool:
    return not os.path.isdir("/dev/shm") or not os.path.exists(f"/dev/shm/{name.lstrip('/')}")


@pytest.mark.parametrize("agent_name", ["maml", "rl2"])
def test_blocks_after_the_first_call_give_the_in_process_batches(blocks, agent_name):
    bench = make_benchmark("ML1", "reach-v3", seed=0, max_episode_steps=20)
    torch.manual_seed(0)
    if agent_name == "maml":  # one-episode units, task state not sent back
        agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=4, hidden_sizes=(16,)), bench.obs_dim, bench.act_dim)
    else:                     # trial units, the recurrent state sent back
        agent = RL2PPO(RL2PPOConfig(meta_batch=4, hidden_size=16), bench.obs_dim, bench.act_dim)
    ref, _ = _calls(bench, bench.env_factory, 0, agent)
    assert blocks == []  # in-process: no block
    got, _ = _calls(bench, bench.env_factory, 2, agent)
    _same(ref, got)
    assert blocks[0] is None and all(blocks[1:]), blocks  # the first call learns the observation size
    assert all(_gone(n) for n in blocks[1:])


def test_a_worker_killed_during_a_block_call_rewrites_its_units(blocks, tmp_path):
    bench = make_benchmark("toy", seed=0, max_episode_steps=10)
    torch.manual_seed(0)
    agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=4, hidden_sizes=(16,)), bench.obs_dim, bench.act_dim)
    ref, _ = _calls(bench, bench.env_factory, 0, agent)
    # a call is 4 x 3 x 10 = 120 steps: no env reaches step 125 in the first call (the pipe's),
    # and of the 360 steps of three calls one of the two workers takes at least 180
    faulty = DieAtStepFactory(bench.env_factory, at_step=125, marker=str(tmp_path / "died"))
    with pytest.warns(UserWarning, match="restarting it"):
        got, restarts = _calls(bench, faulty, 2, agent)
    assert (tmp_path / "died").exists() and restarts == 1
    assert blocks[0] is None and all(blocks[1:])
    _same(ref, got)


def test_the_pipe_is_used_where_no_block_fits(blocks, monkeypatch):
    bench = make_benchmark("toy", seed=0, max_episode_steps=10)
    torch.manual_seed(0)
    agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=4, hidden_sizes=(16,)), bench.obs_dim, bench.act_dim)
    ref, _ = _calls(bench, bench.env_factory, 0, agent, n_calls=2)
    monkeypatch.setattr(shmresults, "MAX_BYTES", 1024)  # a call's arrays are ~4 KB
    got, _ = _calls(bench, bench.env_factory, 2, agent, n_calls=2)
    assert blocks == [None, None]
    _same(ref, got)


def test_a_result_that_does_not_match_its_region_keeps_its_arrays():
    bench = make_benchmark("toy", seed=0, max_episode_steps=10)
    from metarl.rollout import plan_units
    units = plan_units(bench.train_tasks[:2], [1, 2], 1, True)
    block = shmresults.ResultBlock.create(units, 10, bench.obs_dim, bench.act_dim)
    assert block is not None
    writer = shmresults.ResultWriter()
    try:
        writer.attach(block.layout)
        good = tuple(np.full((1, 10, *s), 3, d) for d, s in shmresults._specs(bench.obs_dim, bench.act_dim))
        bad = tuple(np.zeros((1, 7, *s), d) for d, s in shmresults._specs(bench.obs_dim, bench.act_dim))
        r0 = writer.put(UnitResult(0, good, np.zeros(1, np.int64), None, 0.0, "w"))
        r1 = writer.put(UnitResult(1, bad, np.zeros(1, np.int64), None, 0.0, "w"))
        assert r0.data is None and r1.data is bad
        back = block.read(r0).data
        assert back is not None and all(np.array_equal(a, b) for a, b in zip(back, good))
        assert block.read(r1).data is bad
    finally:
        writer.detach()
        block.close()
    assert _gone(block.layout.name)
    assert shmresults.ResultBlock.create(units, 10, None, bench.act_dim) is None  # observation size unknown
