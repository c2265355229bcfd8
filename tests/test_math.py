import numpy as np
import pytest
import torch

from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.envs import TaskVectorEnv, make_benchmark
from metarl.core.nn import call, flat, gaussian_kl, unflat_like
from metarl.core.optim import backtracking_line_search, conjugate_gradient
from metarl.core.returns import LinearFeatureBaseline, discount_cumsum, gae
from metarl.training.sampler import Sampler


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(8, 8, generator=g, dtype=torch.float64)
    a = m @ m.T + 8 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=8)
    assert torch.allclose(x, torch.linalg.solve(a, b), atol=1e-8)


def test_gae_matches_hand_computed_case():
    r = np.array([[1.0, 0.0, 2.0]])
    v = np.array([[0.5, 1.0, 1.5]])
    gamma, lam = 0.9, 0.8
    # deltas: d2 = 2 - 1.5 = 0.5 ; d1 = 0 + 0.9*1.5 - 1.0 = 0.35 ; d0 = 1 + 0.9*1.0 - 0.5 = 1.4
    a2 = 0.5
    a1 = 0.35 + 0.72 * a2
    a0 = 1.4 + 0.72 * a1
    np.testing.assert_allclose(gae(r, v, gamma, lam), [[a0, a1, a2]], rtol=1e-12)
    # lambda = 1 and zero values: advantages are the discounted returns
    np.testing.assert_allclose(gae(r, np.zeros_like(r), gamma, 1.0), discount_cumsum(r, gamma))
    np.testing.assert_allclose(discount_cumsum(r, gamma), [[1 + 0.81 * 2, 0.9 * 2, 2.0]])


def test_linear_baseline_fits_linear_returns():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(4, 30, 3))
    target = 2 * obs[..., 0] - obs[..., 1] + 0.5
    pred = LinearFeatureBaseline().fit(obs, target).predict(obs)
    np.testing.assert_allclose(pred, target, atol=1e-3)


def test_line_search_rejects_nan_and_kl_violations_and_restores():
    x = torch.zeros(2)
    x0 = x.clone()

    def apply(d):
        x.copy_(x0 + d)

    # every step gives NaN loss: rejected, parameters restored
    ok, k, _, _ = backtracking_line_search(torch.ones(2), apply, lambda: (float("nan"), 0.0), 1.0, 0.01, 5)
    assert not ok and k == 5 and torch.equal(x, x0)
    # KL too large everywhere: rejected
    ok, _, _, _ = backtracking_line_search(torch.ones(2), apply, lambda: (0.0, 1.0), 1.0, 0.01, 5)
    assert not ok and torch.equal(x, x0)
    # loss improves only once the step is small enough
    ok, k, loss, _ = backtracking_line_search(
        torch.ones(2), apply, lambda: (0.0 if float(x[0]) < 0.5 else 2.0, 0.0), 1.0, 0.01, 10, 0.5)
    assert ok and k == 2 and loss == 0.0 and torch.allclose(x, torch.full((2,), 0.25))


def _maml_batches():
    torch.manual_seed(0)
    bench = make_benchmark("toy", seed=0, max_episode_steps=10)
    agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=3, episodes_per_task=4, hidden_sizes=(8,), inner_lr=0.5),
                     bench.obs_dim, bench.act_dim)
    sampler = Sampler(TaskVectorEnv(bench.env_factory, 3), bench.max_episode_steps)
    rng = np.random.default_rng(0)
    state = agent.initial_task_state(3)
    pre, _ = sampler.sample(agent, bench.train_tasks[:3], state, 4, rng)
    adapted = agent.adapt(state, pre)
    post, _ = sampler.sample(agent, bench.train_tasks[:3], adapted, 4, rng)
    return agent, pre, post


def test_maml_meta_gradient_matches_finite_differences():
    agent, pre_b, post_b = _maml_batches()
    agent.policy.double()
    pre, post = agent.task_data(pre_b), agent.task_data(post_b)
    params = list(agent.policy.parameters())
    # old distributions: the adapted policies at the current parameters (fixed)
    with torch.enable_grad():
        ad = agent.adapted_params(agent.params, pre, create_graph=False)
    old = [tuple(t.detach() for t in call(agent.policy, {k: v.detach() for k, v in a.items()}, d[0]))
           for a, d in zip(ad, post)]
    loss = agent.meta_objective(pre, post, old)
    grad = flat(torch.autograd.grad(loss, params))
    # first-order MAML (inner gradient treated as a constant) for contrast
    fo_adapted = agent.adapted_params(agent.params, pre, create_graph=False)
    fo_grad = flat(torch.autograd.grad(agent.surrogate_and_kl(fo_adapted, post, old)[0], params))
    fo_mismatch = 0.0
    x0 = flat([p.detach() for p in params]).clone()
    rng = torch.Generator().manual_seed(1)
    eps = 1e-5
    for _ in range(3):
        v = torch.randn(x0.shape, generator=rng, dtype=torch.float64)
        v /= v.norm()
        vals = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, new in zip(params, unflat_like(x0 + sign * eps * v, params)):
                    p.copy_(new)
            vals.append(float(agent.meta_objective(pre, post, old)))
        fd = (vals[0] - vals[1]) / (2 * eps)
        assert abs(fd - float(grad @ v)) <= 1e-6 + 1e-4 * abs(fd), (fd, float(grad @ v))
        fo_mismatch = max(fo_mismatch, abs(fd - float(fo_grad @ v)) / (abs(fd) + 1e-12))
    assert fo_mismatch > 1e-2, "second-order term vanished: the test would not tell MAML from FOMAML"
    with torch.no_grad():
        for p, new in zip(params, unflat_like(x0, params)):
            p.copy_(new)


def test_gaussian_kl_zero_for_same_and_positive_otherwise():
    m, s = torch.zeros(5, 2), torch.zeros(5, 2)
    assert torch.allclose(gaussian_kl(m, s, m, s), torch.zeros(5))
    assert (gaussian_kl(m, s, m + 0.3, s - 0.2) > 0).all()


def test_batched_mlp_matches_vmap_functional_call():
    from metarl.core.nn import GaussianMLPPolicy, batched_call

    torch.manual_seed(0)
    pol = GaussianMLPPolicy(5, 3, (16, 16))
    stacked = {k: v.detach().unsqueeze(0).repeat(4, *[1] * v.dim()) + 0.01 * torch.randn(4, *v.shape)
               for k, v in pol.named_parameters()}
    obs = torch.randn(4, 7, 5)
    with torch.no_grad():
        m1, s1 = pol.batched(stacked, obs)
        m2, s2 = batched_call(pol, stacked, obs)
    torch.testing.assert_close(m1, m2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s1, s2)


def test_numpy_actor_matches_the_torch_policy():
    from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
    from metarl.core.nn import BatchedGaussianActor

    torch.manual_seed(0)
    agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=5, hidden_sizes=(16, 16)), 6, 3)
    actor = agent.actor()
    assert isinstance(actor, BatchedGaussianActor)
    state = {k: v + 0.1 * torch.randn_like(v) for k, v in agent.initial_task_state(5).items()}  # per-slot params
    obs, noise = torch.randn(5, 6), torch.randn(5, 3)
    for det in (True, False):
        a, _ = actor.act(obs, state, deterministic=det, noise=noise)
        b, _ = agent.act(obs, state, deterministic=det, noise=noise)
        assert a.shape == b.shape == (5, 3) and a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # slot i acts with its own parameters: changing slot 0's weights moves only slot 0's action
    state2 = dict(state)
    state2["mean.0.weight"] = state["mean.0.weight"].clone()
    state2["mean.0.weight"][0] += 1.0
    a, _ = actor.act(obs, state, deterministic=True)
    c, _ = actor.act(obs, state2, deterministic=True)
    assert not torch.equal(a[0], c[0]) and torch.equal(a[1:], c[1:])


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_first_order_maml_gradient_treats_the_inner_jacobian_as_identity(inner_steps):
    """agent.first_order: d(meta-objective)/d(theta) equals d(surrogate)/d(theta') at the adapted
    parameters theta' (each task's gradient, averaged), and differs from the second-order one."""
    from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
    from metarl.envs import TaskVectorEnv, make_benchmark
    from metarl.training.sampler import Sampler

    bench = make_benchmark("toy", seed=0, max_episode_steps=10)
    grads = {}
    for first_order in (True, False):
        torch.manual_seed(0)
        agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=4, episodes_per_task=3, hidden_sizes=(16,), inner_lr=0.5,
                                        inner_steps=inner_steps, first_order=first_order),
                         bench.obs_dim, bench.act_dim)
        sampler = Sampler(TaskVectorEnv(bench.env_factory, 4), bench.max_episode_steps)
        rng = np.random.default_rng(0)
        state = agent.initial_task_state(4)
        pre_b, _ = sampler.sample(agent, bench.train_tasks[:4], state, 3, rng)
        adapted = agent.adapt(state, pre_b)
        post_b, _ = sampler.sample(agent, bench.train_tasks[:4], adapted, 3, rng)
        pre, post = agent.task_data(pre_b), agent.task_data(post_b)
        with torch.no_grad():
            old = [call(agent.policy, {k: v[i] for k, v in adapted.items()}, d[0]) for i, d in enumerate(post)]
        params = list(agent.params.values())
        grads[first_order] = torch.autograd.grad(agent.meta_objective(pre, post, old), params)
        if first_order:
            leaf = [{k: v[i].clone().requires_grad_(True) for k, v in adapted.items()} for i in range(4)]
            loss, _ = agent.surrogate_and_kl(leaf, post, old)
            at_adapted = torch.autograd.grad(loss, [p for d in leaf for p in d.values()])
            n = len(params)
            expected = [sum(at_adapted[i * n + j] for i in range(4)) for j in range(n)]
            for g, e in zip(grads[True], expected):
                torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
        sampler.vec_env.close()
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[True], grads[False]))


@pytest.mark.parametrize("mode", ["scalar", "per_parameter"])
def test_meta_sgd_learns_the_inner_step_size_with_the_right_gradient(mode, tmp_path):
    """agent.learn_inner_lr: theta' = theta - alpha * g, so d(objective)/d(alpha) = -sum over tasks
    of (d objective / d theta') * g (summed over every weight for a scalar alpha). At alpha =
    inner_lr the adapted parameters are plain MAML's; the step sizes round-trip through a
    checkpoint, and a TRPO update changes them."""
    from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
    from metarl.envs import TaskVectorEnv, make_benchmark
    from metarl.training.sampler import Sampler

    bench = make_benchmark("toy", seed=0, max_episode_steps=10)
    torch.manual_seed(0)
    agent = MAMLTRPO(MAMLTRPOConfig(meta_batch=4, episodes_per_task=3, hidden_sizes=(16,), inner_lr=0.3,
                                    learn_inner_lr=mode), bench.obs_dim, bench.act_dim)
    torch.manual_seed(0)
    plain = MAMLTRPO(MAMLTRPOConfig(meta_batch=4, episodes_per_task=3, hidden_sizes=(16,), inner_lr=0.3),
                     bench.obs_dim, bench.act_dim)
    sampler = Sampler(TaskVectorEnv(bench.env_factory, 4), bench.max_episode_steps)
    rng = np.random.default_rng(0)
    state = agent.initial_task_state(4)
    pre_b, _ = sampler.sample(agent, bench.train_tasks[:4], state, 3, rng)
    adapted = agent.adapt(state, pre_b)
    for k, v in plain.adapt(state, pre_b).items():
        torch.testing.assert_close(adapted[k], v)
    post_b, _ = sampler.sample(agent, bench.train_tasks[:4], adapted, 3, rng)
    pre, post = agent.task_data(pre_b), agent.task_data(post_b)
    with torch.no_grad():
        old = [call(agent.policy, {k: v[i] for k, v in adapted.items()}, d[0]) for i, d in enumerate(post)]
    lrs = list(agent.inner_lrs.values())
    got = torch.autograd.grad(agent.meta_objective(pre, post, old), lrs)
    # the same by hand: inner gradients g_i at theta, outer gradients at theta'_i
    leaf = [{k: v[i].clone().requires_grad_(True) for k, v in adapted.items()} for i in range(4)]
    loss, _ = agent.surrogate_and_kl(leaf, post, old)
    outer = torch.autograd.grad(loss, [p for d in leaf for p in d.values()])
    n = len(agent.names)
    expected = {k: torch.zeros_like(v) for k, v in agent.params.items()}
    for i, d in enumerate(pre):
        p = {k: v.detach().clone().requires_grad_(True) for k, v in agent.params.items()}
        from metarl.core.nn import gaussian_log_prob
        mean, log_std = call(agent.policy, p, d[0])
        inner_loss = -(gaussian_log_prob(mean, log_std, d[1]) * d[2]).mean()
        g = torch.autograd.grad(inner_loss, list(p.values()))
        for j, k in enumerate(agent.names):
            expected[k] += -outer[i * n + j] * g[j]
    if mode == "scalar":
        torch.testing.assert_close(got[0], sum(e.sum() for e in expected.values()), rtol=1e-4, atol=1e-6)
    else:
        for k, gk in zip(agent.inner_lrs, got):
            torch.testing.assert_close(gk, expected[k], rtol=1e-4, atol=1e-6)
    before = [v.detach().clone() for v in lrs]
    agent.update(pre_b, post_b, adapted)
    assert any(not torch.equal(b, v.detach()) for b, v in zip(before, lrs))
    other = MAMLTRPO(MAMLTRPOConfig(meta_batch=4, episodes_per_task=3, hidden_sizes=(16,), learn_inner_lr=mode),
                     bench.obs_dim, bench.act_dim)
    other.load_state_dict(agent.state_dict())
    for a, b in zip(other.inner_lrs.values(), lrs):
        assert torch.equal(a, b.detach())
    sampler.vec_env.close()
