"""The Meta-World protocol (metarl.training.evaluation.metaworld_evaluate) against metaworld 3.1.1's own
`metalearning_evaluation`, through the adapter (metarl.training.protocol):

(a) same goals, same noise: our per-episode successes, returns and lengths equal what the
    official envs produce episode by episode;
(b) re-applying the official pooling rule to our episodes gives the official function's number,
    so the gap between our per-goal figure and metaworld's is the counting and nothing else.

A scripted agent makes the check meaningful on an untrained machine: it reaches for a guessed
point with noisy actions and adapts by moving its guess to where the adaptation episodes earned
the most reward, so episodes succeed at different steps before and after adaptation. A variant
whose task state changes while it acts (a step count that sets its gain, as RL²'s hidden state
sets its actions) checks both `evaluation_state`s: "continue" and "restart" (every evaluation
episode from the post-adaptation state) give the official envs' episodes too.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from metarl.envs import TaskVectorEnv, make_benchmark
from metarl.agents.base import MetaAgent
from metarl.training.evaluation import MetaworldProtocol, metaworld_evaluate, pooled_success
from metarl.training.protocol import MetaworldAgentAdapter
from metarl.training.sampler import Sampler


class ScriptedReacher(MetaAgent):
    """A MetaAgent for reach-v3 whose task state is a guessed goal [S, 3] (the protocol's defaults,
    actor() and observe(), come from metarl.agents.base.MetaAgent)."""

    act_dim = 4

    def __init__(self, noise_scale: float = 1.0, start=(0.0, 0.85, 0.175)):  # the goals' centre
        self.noise_scale = noise_scale
        self.start = torch.tensor(start)

    def initial_task_state(self, n: int, rng=None):
        return {"target": self.start.repeat(n, 1)}

    def act(self, obs, task_state, *, deterministic: bool, noise=None):
        d = (task_state["target"] - obs[:, :3]) * 10.0
        a = torch.cat([d.clamp(-1, 1), torch.zeros(len(obs), 1)], dim=1)
        if not deterministic:
            a = a + self.noise_scale * noise
        return a, task_state

    def adapt(self, task_state, episodes, rng=None):
        s, m, t = episodes.rewards.shape
        flat = episodes.rewards.reshape(s, m * t).argmax(axis=1)
        hand = episodes.obs.reshape(s, m * t, -1)[np.arange(s), flat, :3]
        return {"target": torch.as_tensor(hand, dtype=torch.float32)}


class CountingReacher(ScriptedReacher):
    """ScriptedReacher whose task state also counts the steps it has acted, `k`, and whose gain
    follows k: its actions depend on where in the trial it is. `adapt` keeps k."""

    def initial_task_state(self, n: int, rng=None):
        return {"target": self.start.repeat(n, 1), "k": torch.zeros(n, 1)}

    def act(self, obs, task_state, *, deterministic: bool, noise=None):
        gain = 10.0 * (1.0 + 0.8 * torch.sin(task_state["k"] / 9.0))
        d = (task_state["target"] - obs[:, :3]) * gain
        a = torch.cat([d.clamp(-1, 1), torch.zeros(len(obs), 1)], dim=1)
        if not deterministic:
            a = a + self.noise_scale * noise
        return a, {"target": task_state["target"], "k": task_state["k"] + 1}

    def adapt(self, task_state, episodes, rng=None):
        return {**super().adapt(task_state, episodes, rng), "k": task_state["k"]}


class Recorder:
    """Wraps one official env and records every finished episode: any-step success, return, length."""

    def __init__(self, env):
        import gymnasium as gym

        class _R(gym.Wrapper):
            def __init__(s, e):
                super().__init__(e)
                s.episodes, s._succ, s._ret, s._len = [], False, 0.0, 0

            def step(s, action):
                obs, r, term, trunc, info = s.env.step(action)
                s._succ |= bool(info["success"] > 0)
                s._ret += float(r)
                s._len += 1
                if term or trunc:
                    s.episodes.append((s._succ, s._ret, s._len))
                    s._succ, s._ret, s._len = False, 0.0, 0
                return obs, r, term, trunc, info

        self.env = _R(env)


N_GOALS, HORIZON = 8, 100
PROTOCOL = MetaworldProtocol(adaptation_episodes=2, adaptation_steps=1, evaluation_episodes=3)
# 20 evaluation episodes: the official loop stops once the class (8 goals) has that many, so each
# goal's second and later evaluation episodes, where the two evaluation states differ, are compared
LONG_EVAL = dataclasses.replace(PROTOCOL, evaluation_episodes=20)
RESTART = dataclasses.replace(LONG_EVAL, evaluation_state="restart")


def run_both(agent=None, protocol=PROTOCOL):
    """(our ProtocolResult, each official env's recorded episodes, the official figure)."""
    PROTOCOL = protocol  # noqa: N806 (the module's default, shadowed)
    import metaworld
    from metaworld.evaluation import metalearning_evaluation

    bench = make_benchmark("ML1", "reach-v3", seed=0, max_episode_steps=HORIZON)
    tasks = bench.test_tasks[:N_GOALS]
    agent = agent or ScriptedReacher()
    sampler = Sampler(TaskVectorEnv(bench.env_factory, N_GOALS, 0), HORIZON)
    try:
        ours = metaworld_evaluate(agent, sampler, tasks, np.random.default_rng(123), PROTOCOL)
    finally:
        sampler.vec_env.close()

    # the official envs: env i holds test goal i of ML1(reach-v3, seed=0), as ours do
    envs = metaworld.make_ml_envs_test("reach-v3", seed=0, meta_batch_size=N_GOALS,
                                       total_tasks_per_cls=N_GOALS, max_episode_steps=HORIZON)
    recorders = [Recorder(e) for e in envs.envs]
    envs.envs = [r.env for r in recorders]
    adapter = MetaworldAgentAdapter(agent, N_GOALS, HORIZON, np.random.default_rng(123), PROTOCOL)
    official, _, _ = metalearning_evaluation(adapter, envs, num_evals=1,
                                             adaptation_steps=PROTOCOL.adaptation_steps,
                                             adaptation_episodes=PROTOCOL.adaptation_episodes,
                                             evaluation_episodes=PROTOCOL.evaluation_episodes)
    envs.close()
    assert [t.payload for t in tasks] == [e.get_wrapper_attr("tasks")[0] for e in envs.envs]
    return ours, [r.env.episodes for r in recorders], official


@pytest.fixture(scope="module")
def both_runs():
    return run_both()


def test_our_episodes_equal_the_official_envs_episode_by_episode(both_runs):
    assert_same_episodes(*both_runs[:2])


def assert_same_episodes(ours, recorded, protocol=PROTOCOL):
    a, e = protocol.adaptation_episodes, protocol.evaluation_episodes
    compared = 0
    for i, eps in enumerate(recorded):
        # the official evaluation stops once each class has `e` finished episodes in all, so a
        # goal may get fewer than `e` of them (none, when others finish first): those it got
        # must be the first of ours
        assert len(eps) >= a
        adapt, evals = eps[:a], eps[a:a + e]
        k = len(evals)
        compared += k
        assert [s for s, _, _ in adapt] == ours.adapt_success[i, 0].astype(bool).tolist()
        np.testing.assert_allclose([r for _, r, _ in adapt], ours.adapt_returns[i, 0], rtol=1e-5)
        assert [n for _, _, n in adapt] == [HORIZON] * a
        assert [s for s, _, _ in evals] == ours.success[i, :k].astype(bool).tolist()
        assert [n for _, _, n in evals] == ours.lengths[i, :k].tolist()
        np.testing.assert_allclose([r for _, r, _ in evals], ours.returns[i, :k], rtol=1e-5)
    assert compared >= e
    # the check has teeth: some episodes succeed, some fail, and they end at different steps
    assert 0 < ours.success.mean() < 1 and 0 < ours.adapt_success.mean() < 1
    assert len(set(ours.lengths.ravel().tolist())) > 2


# restart: ~25 s on 2 cores (20 sample calls a chunk), so slow; tests/test_evaluation_state.py checks restart fast
@pytest.mark.parametrize("protocol", [LONG_EVAL, pytest.param(RESTART, marks=pytest.mark.slow)],
                         ids=["continue", "restart"])
def test_an_agent_whose_state_changes_while_acting_matches_the_official_envs(protocol):
    """The adapter carries the task state through the official evaluation loop as the sampler does:
    on from episode to episode ("continue"), or back to the post-adaptation state at the start of
    each evaluation episode, with the e-th sample call's slot seeds for its noise ("restart")."""
    ours, recorded, official = run_both(CountingReacher(), protocol)
    assert ours.protocol.evaluation_state == protocol.evaluation_state
    assert_same_episodes(ours, recorded, protocol)
    assert ours.pooled_success(pool_size=N_GOALS) == pytest.approx(official, abs=1e-12)
    a = protocol.adaptation_episodes
    assert all(len(eps) - a >= 2 for eps in recorded)  # every goal's 2nd evaluation episode is compared


def test_official_pooling_rule_on_our_episodes_reproduces_the_official_number(both_runs):
    ours, _, official = both_runs
    assert ours.pooled_success(pool_size=N_GOALS) == pytest.approx(official, abs=1e-12)
    # and it is the counting that differs: per-goal counting gives another number here
    assert ours.success_mean() != pytest.approx(official, abs=1e-9)


def test_pooled_success_counts_the_first_episodes_to_finish():
    """Two goals of one class: goal 0 succeeds fast every time, goal 1 never. Pooled counting
    sees only goal 0's three quick episodes (100%); per goal it is 50%."""
    from metarl.core.types import Task
    tasks = [Task("c", 0, None), Task("c", 1, None)]
    success = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    lengths = np.array([[10, 10, 10], [500, 500, 500]])
    assert pooled_success(tasks, success, lengths, pool_size=2) == 1.0
    assert pooled_success(tasks, success, lengths, pool_size=1) == 0.5
    # ties on the finishing step go to the env listed first
    lengths = np.array([[500, 500, 500], [500, 500, 500]])
    assert pooled_success(tasks, success, lengths, pool_size=2) == pytest.approx(2 / 3)


def test_final_protocol_evaluation_is_reproduced_by_metarl_eval_on_the_checkpoint(tmp_path):
    """A run's final Meta-World-protocol evaluation (eval.protocol: metaworld) and
    `metarl eval CHECKPOINT --protocol metaworld` give the same episodes, so a released
    checkpoint reproduces its table row."""
    import json
    from pathlib import Path

    from helpers import run_cli

    root = Path(__file__).resolve().parent.parent
    r = run_cli("train", str(root / "configs" / "toy_maml_trpo.yaml"), "--set", f"run.out_dir={tmp_path}",
                "--set", "run.name=r", "--set", "run.progress=false", "--set", "run.env_steps=8000",
                "--set", "eval.every=0", "--set", "eval.protocol=metaworld", "--set", "eval.final_tasks_per_class=0",
                cwd=root)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "r"
    final = json.loads((run / "eval_metaworld.json").read_text())
    ckpt = sorted((run / "checkpoints").glob("ckpt_*.pt"))[-1]
    r = run_cli("eval", str(ckpt), "--protocol", "metaworld", "--out", str(tmp_path / "again"), cwd=root)
    assert r.returncode == 0, r.stderr
    again = json.loads((tmp_path / "again" / "eval_metaworld.json").read_text())
    assert again["n_goals"] == final["n_goals"] == 40
    for key in ("success", "success_pre_adaptation", "success_metaworld_pooled", "return"):
        assert again[key] == final[key], key
    assert (run / "eval_metaworld.csv").read_text().replace("\r", "").splitlines()[1:] == \
        (tmp_path / "again" / "eval_metaworld.csv").read_text().replace("\r", "").splitlines()[1:]
