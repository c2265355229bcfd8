"""Reptile (metarl/agents/reptile.py): meta-learns on the toy point goals (several seeds, median
margin), its outer step is θ + ε·mean(θ'_i − θ), and it runs through the trainer, checkpoints
and the Meta-World protocol like the other agents."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metarl.agents.reptile import Reptile, ReptileConfig
from metarl.envs import TaskVectorEnv, make_benchmark
from helpers import run_cli, train_seeds, train_toy_point_goals
from metarl.training.sampler import Sampler

ROOT = Path(__file__).resolve().parent.parent


def train_reptile(seed, iterations=12):
    """`adapt` = held-out return after k inner steps minus before, after meta-training;
    `meta` = adapted return after meta-training minus adapted return before it."""
    out = train_toy_point_goals(seed, lambda bench: Reptile(
        ReptileConfig(meta_batch=10, episodes_per_task=10, hidden_sizes=(32, 32)), bench.obs_dim, bench.act_dim),
        iterations)
    return {"adapt": out["adapt"], "meta": out["meta"]}


def test_reptile_meta_learns_on_toy_tasks():
    """Four seeds of 12 iterations. Sweep of seeds 0-9 (AMD EPYC; returns are minus the summed
    distance to the goal over 20 steps): adapt min +0.28 / median +0.87 / max +1.23, worst
    median-of-4 +0.60; meta min +0.48 / median +0.59 / max +0.87, worst median-of-4 +0.53.
    Thresholds at half the worst median-of-4."""
    runs = train_seeds(train_reptile, range(4))
    print(runs.table())
    runs.assert_median_above("adapt", 0.3)   # k inner steps on a held-out goal help
    runs.assert_median_above("meta", 0.25)   # and meta-training made them help more


def test_outer_step_moves_theta_toward_the_mean_adapted_parameters():
    bench = make_benchmark("toy", seed=0, max_episode_steps=10)
    torch.manual_seed(0)
    agent = Reptile(ReptileConfig(meta_batch=4, episodes_per_task=2, hidden_sizes=(8,), outer_lr=0.5),
                    bench.obs_dim, bench.act_dim)
    sampler = Sampler(TaskVectorEnv(bench.env_factory, 4), bench.max_episode_steps)
    theta = {k: v.detach().clone() for k, v in agent.policy.named_parameters()}
    # replay the iteration's draws to get the same batch and adapted parameters
    rng = np.random.default_rng(0)
    idx = np.random.default_rng(0).choice(len(bench.train_tasks), size=4, replace=False)
    rng_copy = np.random.default_rng(0)
    rng_copy.choice(len(bench.train_tasks), size=4, replace=False)
    batch, _ = sampler.sample(agent, [bench.train_tasks[i] for i in idx], agent.initial_task_state(4), 2, rng_copy)
    adapted = agent.adapt(agent.initial_task_state(4), batch)
    agent.train_iteration(sampler, bench.train_tasks, rng)
    for k, p in agent.policy.named_parameters():
        torch.testing.assert_close(p.detach(), theta[k] + 0.5 * (adapted[k].mean(0) - theta[k]))
    assert any(not torch.equal(p.detach(), theta[k]) for k, p in agent.policy.named_parameters())


def test_reptile_trains_resumes_and_evaluates_through_the_cli(tmp_path):
    r = run_cli("train", str(ROOT / "configs" / "toy_reptile.yaml"), "--set", f"run.out_dir={tmp_path}",
                "--set", "run.name=r", "--set", "run.progress=false", "--set", "run.env_steps=4000",
                "--set", "eval.every=0", "--set", "eval.protocol=metaworld", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r" / "eval_metaworld.json").is_file()
    r = run_cli("train", "--resume", str(tmp_path / "r"), "--set", "run.env_steps=6000", cwd=ROOT)
    assert r.returncode == 0, r.stderr
