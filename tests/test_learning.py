"""MAML-TRPO must meta-learn on the toy point-goal distribution (about 15 s of CPU)."""
import numpy as np
import pytest
import torch

from agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from envs import TaskVectorEnv, make_benchmark
from metarl.evaluation import evaluate
from metarl.sampler import Sampler


@pytest.mark.parametrize("fvp_subsample", [1.0, 0.2])  # 0.2: the ML10 preset's cheaper Fisher-vector products
def test_maml_trpo_meta_learns_on_toy_tasks(fvp_subsample):
    torch.manual_seed(0)
    bench = make_benchmark("toy", seed=0, max_episode_steps=20)
    agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=10, episodes_per_task=10, hidden_sizes=(32, 32),
                                    fvp_subsample=fvp_subsample),
                     bench.obs_dim, bench.act_dim)
    sampler = Sampler(TaskVectorEnv(bench.env_factory, 10), bench.max_episode_steps)

    def held_out():
        c = evaluate(agent, sampler, bench.test_tasks[:20], rounds=1, episodes_per_round=10,
                     rng=np.random.default_rng(123))
        return c.return_by_round()

    before_training = held_out()
    rng = np.random.default_rng(0)
    for _ in range(25):
        agent.train_iteration(sampler, bench.train_tasks, rng)
    pre, post = held_out()
    # returns are minus the summed distance to the goal over 20 steps (about -9 for a policy that stays put)
    assert post > pre + 2.0, (pre, post)                      # one adaptation step helps, by a clear margin
    assert post > before_training[1] + 2.0, (before_training, post)  # meta-training improved adapted return
