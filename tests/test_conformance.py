"""Conformance suite: every registered agent (agents.AGENTS) against the MetaAgent contract.

A new agent gets all of it by being in the registry and having a `configs/toy_<name>.yaml`:
protocol verbs present, per-task state a pytree of tensors with a leading task dimension,
in-process and 3-worker sampling identical bit for bit, adaptation through the evaluator,
resume bit-exact, checkpoints that load with weights_only=True, a released policy that
evaluates, and `metarl eval` (both protocols) and `metarl plot` on its run dir.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils import _pytree as pytree

from metarl import agents
from metarl.agents.base import MetaAgent
from metarl.envs import TaskVectorEnv
from helpers import assert_same
from metarl.training import checkpoint, config
from metarl.app.cli import main
from metarl.training.sampler import Sampler
from metarl.training.build import benchmark_for
from metarl.agents import AGENTS

ROOT = Path(__file__).resolve().parent.parent
NAMES = sorted(agents.AGENTS)
CLI = [sys.executable, "-m", "metarl.app.cli"]
# every registered agent with its toy preset, and the MAML-TRPO variants through their configs
CASES = [(n, ()) for n in NAMES] + [("maml_trpo", ("agent.first_order=true",)),
                                    ("maml_trpo", ("agent.learn_inner_lr=per_parameter",))]
IDS = [n if not o else n + "[" + ",".join(o) + "]" for n, o in CASES]
# the variants act through MAML-TRPO's own code (they differ in the update): their sampling cases are slow
SAMPLING_CASES = [pytest.param(*c, marks=pytest.mark.slow) if c[1] else c for c in CASES]
# first-order MAML keeps no state of its own (Meta-SGD keeps its step sizes): its resume case is slow
RESUME_CASES = [pytest.param(*c, marks=pytest.mark.slow) if c[1] == ("agent.first_order=true",) else c
                for c in CASES]



def _preset(name: str) -> Path:
    return ROOT / "configs" / f"toy_{name}.yaml"


def test_every_registered_agent_has_a_toy_preset():
    assert NAMES and all(_preset(n).is_file() for n in NAMES), [n for n in NAMES if not _preset(n).is_file()]


def _build(name: str, n_workers: int, overrides: tuple[str, ...] = ()):
    cfg = config.load(str(_preset(name)), ["env.max_episode_steps=6", *overrides], seed=3, device="cpu",
                      registry=AGENTS)
    bench = benchmark_for(cfg)
    torch.manual_seed(0)
    agent = agents.make(cfg.agent, bench.obs_dim, bench.act_dim, "cpu", n_train_tasks=len(bench.train_tasks),
                        horizon=bench.max_episode_steps)
    return bench, agent, Sampler(TaskVectorEnv(bench.env_factory, agent.meta_batch, n_workers), bench.max_episode_steps)


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_protocol_verbs_and_task_state_shape(name, overrides):
    bench, agent, sampler = _build(name, 0, overrides)
    try:
        for verb in ("initial_task_state", "act", "adapt", "train_iteration", "state_dict", "load_state_dict"):
            assert callable(getattr(agent, verb, None)), verb
        assert isinstance(agent.meta_batch, int) and isinstance(agent.act_dim, int)
        assert MetaAgent in type(agent).__mro__  # the optional verbs' defaults come from metarl.agents.base
        state = agent.initial_task_state(3, np.random.default_rng(0))
        leaves = [x for x in pytree.tree_leaves(state) if torch.is_tensor(x)]
        assert leaves and all(x.shape[0] == 3 for x in leaves)
        actor = agent.actor()
        obs = torch.zeros(3, bench.obs_dim)
        action, state2 = actor.act(obs, state, deterministic=False, noise=torch.zeros(3, bench.act_dim))
        assert action.shape == (3, bench.act_dim) and torch.isfinite(action).all()
        assert all(x.shape[0] == 3 for x in pytree.tree_leaves(state2) if torch.is_tensor(x))
        batch, state3 = sampler.sample(agent, bench.test_tasks[:3], agent.initial_task_state(3, np.random.default_rng(0)),
                                       2, np.random.default_rng(0))
        adapted = agent.adapt(state3, batch, np.random.default_rng(1))
        assert all(x.shape[0] == 3 for x in pytree.tree_leaves(adapted) if torch.is_tensor(x))
        # no private randomness: the same generator state gives the same task states
        for verb, args in ((agent.initial_task_state, (3,)), (agent.adapt, (state3, batch))):
            a, b = (verb(*args, np.random.default_rng(5)) for _ in range(2))
            assert all(torch.equal(x, y) for x, y in zip(pytree.tree_leaves(a), pytree.tree_leaves(b))), verb
    finally:
        sampler.vec_env.close()


@pytest.mark.parametrize("name,overrides", SAMPLING_CASES, ids=IDS)
def test_in_process_and_three_worker_sampling_are_identical(name, overrides):
    """Units (episodes or trials) run alone with batch-1 policy calls wherever they run: exact
    equality for every agent, whatever the worker count."""
    out = []
    for workers in (0, 3):
        bench, agent, sampler = _build(name, workers, overrides)
        try:
            n = min(agent.meta_batch, 5)
            batch, state = sampler.sample(agent, bench.train_tasks[:n], agent.initial_task_state(n, np.random.default_rng(6)), 3,
                                          np.random.default_rng(7))
            out.append((batch, state))
        finally:
            sampler.vec_env.close()
    (a, sa), (b, sb) = out
    for f in ("obs", "actions", "rewards", "next_obs", "successes"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert_same(sa, sb, "task_state")


def _cli(*args: str) -> None:
    assert main(list(args)) == 0, args  # in-process: a subprocess per call would cost an import of torch


def _train(tmp_path, name, run, *extra, overrides=()):
    _cli("train", str(_preset(name)), *[a for o in overrides for a in ("--set", o)],
         "--set", f"run.out_dir={tmp_path}", "--set", f"run.name={run}",
         "--set", "run.progress=false", "--set", "env.max_episode_steps=8", "--set", "eval.every=0",
         "--set", "eval.final_tasks_per_class=2", *extra)
    return tmp_path / run


@pytest.mark.parametrize("name,overrides", RESUME_CASES, ids=IDS)
def test_resume_checkpoints_release_eval_and_plot(tmp_path, name, overrides):
    cfg = config.load(str(_preset(name)), ["env.max_episode_steps=8", *overrides], seed=0, device="cpu",
                      registry=AGENTS)
    # one iteration, then two resumes of one iteration each (iterations may differ in env steps)
    part = _train(tmp_path, name, "split", "--set", "run.env_steps=1", overrides=overrides)
    for _ in range(2):
        steps = checkpoint.load_latest(part, registry=AGENTS)[1]["counters"]["env_steps"]
        _cli("train", "--resume", str(part), "--set", f"run.env_steps={steps + 1}")
    total = checkpoint.load_latest(part, registry=AGENTS)[1]["counters"]["env_steps"]
    straight = _train(tmp_path, name, "straight", "--set", f"run.env_steps={total}", overrides=overrides)
    path_a, a = checkpoint.load_latest(straight, registry=AGENTS)
    _, b = checkpoint.load_latest(part, registry=AGENTS)
    assert a["counters"]["iteration"] == b["counters"]["iteration"] == 3
    assert_same(a["agent"], b["agent"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]) and a["rng"]["numpy"] == b["rng"]["numpy"]
    torch.load(path_a, map_location="cpu", weights_only=True)  # no pickled objects
    assert cfg.agent.name == name
    # the variant's fields survive into the run and its resumes (the config a resume trains with)
    assert config.from_dict(b["config"], registry=AGENTS).agent == cfg.agent
    _cli("eval", str(straight), "--tasks-per-class", "2", "--out", str(tmp_path / "e.csv"))
    _cli("eval", str(straight), "--protocol", "metaworld", "--goals-per-class", "2", "--out", str(tmp_path / "mw"))
    assert (tmp_path / "mw" / "eval_metaworld.json").is_file()
    _cli("plot", str(straight), "--out", str(tmp_path / "p.png"))
    _cli("bench", "release", str(straight), f"toy_{name}", "--dest", str(tmp_path / "rel"))
    released = torch.load(tmp_path / "rel" / f"toy_{name}.pt", map_location="cpu", weights_only=True)
    assert released["agent"]["policy_only"]
    _cli("eval", str(tmp_path / "rel" / f"toy_{name}.pt"), "--protocol", "metaworld", "--goals-per-class", "2")
