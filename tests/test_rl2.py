import numpy as np
import torch

from agents.rl2_ppo import RL2PPO, RL2PPOConfig, trial_inputs
from envs import TaskVectorEnv, make_benchmark
from metarl.rollout import slot_noise
from metarl.sampler import Sampler


def _setup(n_workers=0):
    torch.manual_seed(0)
    bench = make_benchmark("toy", seed=0, max_episode_steps=6)
    agent = RL2PPO(RL2PPOConfig(meta_batch=3, episodes_per_task=3, hidden_size=16), bench.obs_dim, bench.act_dim)
    sampler = Sampler(TaskVectorEnv(bench.env_factory, 3, n_workers), bench.max_episode_steps)
    return bench, agent, sampler


def _sampled_means(agent, batch, seeds):
    """The means the actor used: action = mean + std * noise, noise known from the slot seeds."""
    s, m, t = batch.rewards.shape
    noise = slot_noise(seeds, m, t, agent.act_dim)
    std = agent.net.log_std.detach().exp().numpy()
    return (batch.actions - std * noise).reshape(s, m * t, -1)


def test_hidden_state_carried_across_episodes_and_reset_between_trials():
    bench, agent, sampler = _setup()
    rng = np.random.default_rng(5)
    seeds = [np.random.default_rng(5).integers(0, 2**31 - 1, size=3)]
    probe = np.random.default_rng(5)
    probe.integers(0, 2**31 - 1, size=3)
    b1, state = sampler.sample(agent, bench.train_tasks[:3], agent.initial_task_state(3), 3, rng)
    assert state["h"].abs().sum() > 0  # the trial left something in the hidden state
    seeds.append(probe.integers(0, 2**31 - 1, size=3))
    b2, _ = sampler.sample(agent, bench.train_tasks[:3], agent.initial_task_state(3), 3, rng)
    for batch, sd in zip((b1, b2), seeds):
        x = torch.as_tensor(trial_inputs(batch, 1.0))
        with torch.no_grad():
            mean, _, _ = agent.forward_chunks(x, x.shape[1])  # one pass over the whole trial from h = 0
        np.testing.assert_allclose(_sampled_means(agent, batch, sd), mean.numpy(), atol=1e-5)
        # contrast: resetting the hidden state at each episode start would give other actions
        t = batch.horizon
        with torch.no_grad():
            reset_means = torch.cat([agent.forward_chunks(x[:, k * t:(k + 1) * t], t)[0] for k in range(3)], 1)
        assert np.abs(reset_means[:, t:].numpy() - mean[:, t:].numpy()).max() > 1e-4


def test_chunked_forward_equals_full_sequence_forward():
    bench, agent, sampler = _setup()
    batch, _ = sampler.sample(agent, bench.train_tasks[:3], agent.initial_task_state(3), 3, np.random.default_rng(0))
    x = torch.as_tensor(trial_inputs(batch, 1.0))
    with torch.no_grad():
        full_mean, full_v, _ = agent.forward_chunks(x, 18)
        for chunk in (1, 4, 6, 7):
            mean, v, starts = agent.forward_chunks(x, chunk)
            torch.testing.assert_close(mean, full_mean, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(v, full_v, atol=1e-6, rtol=1e-5)
            assert starts.shape == (3, -(-18 // chunk), 16)
            # the learner's minibatch path: each chunk from its stored start state
            for c in range(starts.shape[1]):
                m_c, _, _ = agent.net(x[:, c * chunk:(c + 1) * chunk], starts[:, c])
                torch.testing.assert_close(m_c, full_mean[:, c * chunk:(c + 1) * chunk], atol=1e-6, rtol=1e-5)


def test_multiprocess_backend_carries_rl2_state_like_in_process():
    out = []
    for w in (0, 2):
        bench, agent, sampler = _setup(w)
        batch, state = sampler.sample(agent, bench.train_tasks[:3], agent.initial_task_state(3), 2,
                                      np.random.default_rng(1))
        sampler.vec_env.close()
        out.append((batch, state))
    # the GRU's float rounding depends on how many slots share a matmul (1e-9 here), so close, not equal
    np.testing.assert_allclose(out[0][0].actions, out[1][0].actions, atol=1e-6)
    np.testing.assert_allclose(out[0][0].obs, out[1][0].obs, atol=1e-6)
    torch.testing.assert_close(out[0][1]["h"], out[1][1]["h"])


def test_rl2_meta_learns_within_a_trial_on_toy_tasks():
    """After meta-training, the second episode of a trial (same task, hidden state kept)
    beats the first by a clear margin: the GRU remembered where the goal was."""
    from metarl.evaluation import evaluate

    torch.manual_seed(0)
    torch.set_num_threads(1)
    bench = make_benchmark("toy", seed=0, max_episode_steps=10, toy_goals="semicircle")
    agent = RL2PPO(RL2PPOConfig(meta_batch=20, episodes_per_task=2, hidden_size=64, lr=3e-3, epochs=5,
                                minibatches=2), bench.obs_dim, bench.act_dim)
    sampler = Sampler(TaskVectorEnv(bench.env_factory, 20), bench.max_episode_steps)

    def trial_returns():
        c = evaluate(agent, sampler, bench.test_tasks[:40], rounds=1, episodes_per_round=1,
                     rng=np.random.default_rng(1), deterministic=True)
        return c.return_by_round()

    first0, last0 = trial_returns()
    rng = np.random.default_rng(0)
    for _ in range(300):
        agent.train_iteration(sampler, bench.train_tasks, rng)
    first, last = trial_returns()
    # returns are minus the summed distance over 10 steps (about -5 for a policy that stays put)
    assert last > first + 0.5, (first, last)
    assert (last - first) > (last0 - first0) + 0.5, ((first0, last0), (first, last))
