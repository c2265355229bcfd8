"""The Meta-World protocol's `evaluation_state` (metarl.training.evaluation.MetaworldProtocol): "continue"
(the evaluation episodes go on from where the previous one left the agent's task state: RL²'s
trial continues) and "restart" (each evaluation episode starts from the state `adapt` returned,
as metaworld-algorithms and garage evaluate RL²), on toy tasks; its validation, the CLI flag, the
config field and the record in eval_metaworld.json."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.agents.rl2_ppo import RL2PPO, RL2PPOConfig
from metarl.envs import TaskVectorEnv, make_benchmark
from metarl.training.evaluation import MetaworldProtocol, metaworld_evaluate, sample_calls
from metarl.training.sampler import Sampler, episode_lengths
from metarl.core.types import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _rl2():
    torch.manual_seed(0)
    bench = make_benchmark("toy", seed=0, max_episode_steps=6)
    agent = RL2PPO(RL2PPOConfig(meta_batch=3, episodes_per_task=3, hidden_size=16), bench.obs_dim, bench.act_dim)
    return bench, agent, Sampler(TaskVectorEnv(bench.env_factory, 3, 0), bench.max_episode_steps)


def _run(bench, agent, sampler, n_tasks=6, **protocol):
    p = MetaworldProtocol(adaptation_episodes=2, evaluation_episodes=3, **protocol)
    return metaworld_evaluate(agent, sampler, bench.test_tasks[:n_tasks], np.random.default_rng(7), p)


def _today(agent, sampler, tasks, rng, p):
    """metaworld_evaluate as it was before `evaluation_state` existed (one sample call for all
    evaluation episodes): the reference "continue" must reproduce bit for bit."""
    n = len(tasks)
    succ, ret = np.zeros((n, p.evaluation_episodes)), np.zeros((n, p.evaluation_episodes))
    lengths = np.zeros((n, p.evaluation_episodes), np.int64)
    a_ret = np.zeros((n, p.adaptation_steps, p.adaptation_episodes))
    for start in range(0, n, sampler.n_slots):
        chunk = tasks[start:start + sampler.n_slots]
        rows = slice(start, start + len(chunk))
        state = agent.initial_task_state(len(chunk), rng)
        for a in range(p.adaptation_steps):
            batch, state = sampler.sample(agent, chunk, state, p.adaptation_episodes, rng, p.adaptation_deterministic)
            a_ret[rows, a] = batch.episode_returns()
            state = agent.adapt(state, batch, rng)
        batch, state = sampler.sample(agent, chunk, state, p.evaluation_episodes, rng, p.evaluation_deterministic,
                                      end_on_success=True)
        succ[rows], ret[rows] = batch.episode_success(), batch.episode_returns()
        lengths[rows] = episode_lengths(batch.successes, True)
    return a_ret, succ, ret, lengths


@pytest.mark.parametrize("deterministic", [False, True])
def test_continue_is_the_default_and_gives_exactly_the_numbers_of_before(deterministic):
    bench, agent, sampler = _rl2()
    try:
        p = MetaworldProtocol(adaptation_episodes=2, evaluation_episodes=3, evaluation_deterministic=deterministic)
        assert p.evaluation_state == "continue"
        ref = _today(agent, sampler, bench.test_tasks[:6], np.random.default_rng(7), p)
        for proto in (p, MetaworldProtocol(adaptation_episodes=2, evaluation_episodes=3,
                                           evaluation_deterministic=deterministic, evaluation_state="continue")):
            got = metaworld_evaluate(agent, sampler, bench.test_tasks[:6], np.random.default_rng(7), proto)
            for x, y in zip((got.adapt_returns, got.success, got.returns, got.lengths), ref):
                assert np.array_equal(x, y)
    finally:
        sampler.vec_env.close()


def test_rl2_restart_repeats_the_post_adaptation_state_and_continue_does_not():
    """With mean actions in the evaluation episodes, every evaluation episode of a goal under
    "restart" is the same episode (same start state, deterministic toy dynamics); under
    "continue" RL²'s hidden state moves on and the episodes differ. In the first chunk of goals
    (the sampler's 3 slots) both start from the same post-adaptation state with the same first slot
    seeds, so their adaptation and first evaluation episodes agree; the later chunks' adaptation
    episodes differ, since "restart" drew more slot seeds from `rng` before them."""
    bench, agent, sampler = _rl2()
    try:
        cont = _run(bench, agent, sampler, evaluation_deterministic=True)
        rest = _run(bench, agent, sampler, evaluation_deterministic=True, evaluation_state="restart")
    finally:
        sampler.vec_env.close()
    assert rest.returns.shape == cont.returns.shape == (6, 3)
    for r in (rest.returns, rest.lengths, rest.success):
        assert (r == r[:, :1]).all()  # every goal: 3 identical evaluation episodes
    assert np.array_equal(rest.adapt_returns[:3], cont.adapt_returns[:3])
    assert np.array_equal(rest.returns[:3, 0], cont.returns[:3, 0])
    assert not np.array_equal(rest.adapt_returns[3:], cont.adapt_returns[3:])
    assert not np.allclose(cont.returns, cont.returns[:, :1])  # the trial going on changes them
    assert rest.protocol.evaluation_state == "restart"


def test_rl2_restart_with_sampled_actions_draws_each_episode_from_rng():
    """Sampled actions: one sample call (slot seeds from `rng`) per evaluation episode, each from the
    post-adaptation state: the episodes differ, the run repeats exactly with the same seed, and the
    first evaluation episode is continue's first (same seeds, same state)."""
    bench, agent, sampler = _rl2()
    try:
        a = _run(bench, agent, sampler, evaluation_state="restart")
        b = _run(bench, agent, sampler, evaluation_state="restart")
        cont = _run(bench, agent, sampler)
    finally:
        sampler.vec_env.close()
    assert np.array_equal(a.returns, b.returns) and np.array_equal(a.lengths, b.lengths)
    assert not np.allclose(a.returns, a.returns[:, :1])
    assert np.array_equal(a.returns[:3, 0], cont.returns[:3, 0])  # the first chunk (see above)
    assert sample_calls(a.protocol) == 1 + 3 and sample_calls(cont.protocol) == 1 + 1


def test_restart_changes_nothing_but_random_draws_for_an_agent_whose_state_stays_put():
    """MAML's adapted parameters do not change while it acts: with mean actions (no noise; the toy
    dynamics ignore the env seed) "restart" and "continue" give the same evaluation episodes (one
    chunk of goals: later chunks' sampled adaptation episodes would see other slot seeds)."""
    torch.manual_seed(0)
    bench = make_benchmark("toy", seed=0, max_episode_steps=6)
    agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=3, hidden_sizes=(16,)), bench.obs_dim, bench.act_dim)
    sampler = Sampler(TaskVectorEnv(bench.env_factory, 3, 0), bench.max_episode_steps)
    try:
        cont = _run(bench, agent, sampler, evaluation_deterministic=True, n_tasks=3)
        rest = _run(bench, agent, sampler, evaluation_deterministic=True, evaluation_state="restart", n_tasks=3)
    finally:
        sampler.vec_env.close()
    for x, y in ((cont.returns, rest.returns), (cont.lengths, rest.lengths), (cont.adapt_returns, rest.adapt_returns)):
        assert np.array_equal(x, y)


def test_bad_evaluation_state_is_refused_naming_the_field():
    with pytest.raises(ConfigError) as e:
        MetaworldProtocol(evaluation_state="reset")
    assert str(e.value).startswith("--evaluation-state:") and "continue, restart" in str(e.value)

    from metarl.agents import AGENTS
    from metarl.training import config

    toy = str(ROOT / "configs" / "toy_rl2_ppo.yaml")
    with pytest.raises(ConfigError) as e:
        config.load(toy, ["eval.protocol=metaworld", "eval.evaluation_state=reset"], registry=AGENTS)
    assert str(e.value).startswith("eval.evaluation_state:") and "continue, restart" in str(e.value)
    with pytest.raises(ConfigError) as e:  # the curve protocol has no evaluation episodes to restart
        config.load(toy, ["eval.evaluation_state=restart"], registry=AGENTS)
    assert str(e.value).startswith("eval.evaluation_state:") and "eval.protocol: metaworld" in str(e.value)
    cfg = config.load(toy, ["eval.protocol=metaworld", "eval.evaluation_state=restart"], registry=AGENTS)
    assert cfg.eval.evaluation_state == "restart"
    assert config.load(toy, registry=AGENTS).eval.evaluation_state == "continue"
    # a config saved before the field existed (a checkpoint's) reads as "continue"
    d = config.load(toy, registry=AGENTS).to_dict()
    del d["eval"]["evaluation_state"]
    assert config.from_dict(d, registry=AGENTS).eval.evaluation_state == "continue"


def test_training_and_metarl_eval_record_the_evaluation_state(tmp_path, capsys):
    """eval.evaluation_state: restart reaches the run's final Meta-World-protocol evaluation and its
    eval_metaworld.json; `metarl eval` takes the run's setting by default (and reproduces that
    evaluation), --evaluation-state overrides it, and with --protocol curve it is refused."""
    from metarl.app.cli import main

    assert main(["train", str(ROOT / "configs" / "toy_rl2_ppo.yaml"), "--set", f"run.out_dir={tmp_path}",
                 "--set", "run.name=r", "--set", "run.progress=false", "--set", "run.env_steps=400",
                 "--set", "eval.every=0", "--set", "eval.protocol=metaworld", "--set", "eval.evaluation_state=restart",
                 "--set", "eval.final_tasks_per_class=4"]) == 0
    run = tmp_path / "r"
    final = json.loads((run / "eval_metaworld.json").read_text())
    assert final["evaluation_state"] == "restart" and final["evaluation_episodes"] == 3
    assert main(["eval", str(run), "--protocol", "metaworld", "--goals-per-class", "4", "--out",
                 str(tmp_path / "same")]) == 0
    same = json.loads((tmp_path / "same" / "eval_metaworld.json").read_text())
    assert same["evaluation_state"] == "restart"
    for key in ("success", "success_pre_adaptation", "success_metaworld_pooled", "return"):
        assert same[key] == final[key], key
    assert main(["eval", str(run), "--protocol", "metaworld", "--goals-per-class", "4", "--evaluation-state",
                 "continue", "--out", str(tmp_path / "cont")]) == 0
    cont = json.loads((tmp_path / "cont" / "eval_metaworld.json").read_text())
    assert cont["evaluation_state"] == "continue"
    assert cont["success_pre_adaptation"] == final["success_pre_adaptation"]  # same adaptation episodes
    capsys.readouterr()
    assert main(["eval", str(run), "--evaluation-state", "restart"]) == 2
    assert "--evaluation-state: belongs to --protocol metaworld" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main(["eval", str(run), "--protocol", "metaworld", "--evaluation-state", "reset"])


@pytest.mark.slow  # a Meta-World training run plus EGL rendering: ~25 s on 2 cores
def test_final_evaluation_videos_replay_the_restart_episodes(tmp_path):
    """With eval.evaluation_state: restart the filming pass (metarl/training/video.py) replays the final
    evaluation under the same setting, so the filmed rounds score what the evaluation scored."""
    from metarl.app.cli import main
    from metarl.training.video import find_backend

    try:
        find_backend("test")
    except ConfigError:
        pytest.skip("no offscreen GL backend (EGL / OSMesa) on this machine")
    sets = [f"run.out_dir={tmp_path}", "run.name=v", "run.env_steps=40", "run.progress=false",
            "env.max_episode_steps=10", "env.n_workers=0", "agent.meta_batch=2", "agent.episodes_per_task=2",
            "agent.hidden_sizes=[8,8]", "eval.every=0", "eval.select_best=false", "eval.protocol=metaworld",
            "eval.evaluation_state=restart", "eval.final_tasks_per_class=3", "eval.video_tasks=1",
            "eval.video_width=32", "eval.video_height=32", "eval.video_stride=5"]
    assert main(["train", str(ROOT / "configs" / "ml1_reach_maml_trpo.yaml")] + [a for s in sets for a in ("--set", s)]) == 0
    manifest = json.loads((tmp_path / "v" / "videos" / "videos.json").read_text())
    assert manifest["protocol"]["evaluation_state"] == "restart"
    assert [t["matches"] for t in manifest["tasks"]] == [True]
