"""The Ray backend (env.backend: ray): same units, same numbers as in-process; dead actors
restarted; two Ray nodes on one machine. Needs the ray extra: `make test-ray`."""
from __future__ import annotations

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig  # noqa: E402
from metarl.agents.rl2_ppo import RL2PPO, RL2PPOConfig  # noqa: E402
from metarl.envs import TaskVectorEnv, make_benchmark  # noqa: E402
from metarl.envs.faults import DieAtStepFactory  # noqa: E402
from metarl.training.sampler import Sampler  # noqa: E402

pytestmark = pytest.mark.ray
FIELDS = ("obs", "actions", "rewards", "next_obs", "successes")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _agent(kind: str):
    torch.manual_seed(0)
    if kind == "maml":
        return MAMLTRPO(MAMLTRPOConfig(meta_batch=4, hidden_sizes=(16,)), 2, 2)
    return RL2PPO(RL2PPOConfig(meta_batch=4, episodes_per_task=3, hidden_size=16), 2, 2)


def _sample(factory, kind, calls=2, **kw):
    bench = make_benchmark("toy", seed=0, max_episode_steps=10)
    agent = _agent(kind)
    with TaskVectorEnv(factory or bench.env_factory, 4, **kw) as vec:
        sampler = Sampler(vec, bench.max_episode_steps)
        out = [sampler.sample(agent, bench.train_tasks[4 * i:4 * i + 4], agent.initial_task_state(4), 3,
                              np.random.default_rng(i)) for i in range(calls)]
        return out, vec.restarts, vec


def _same(ref, got):
    for (a, sa), (b, sb) in zip(ref, got):
        for f in FIELDS:
            assert np.array_equal(getattr(a, f), getattr(b, f)), f
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("kind", ["maml", "rl2"])
def test_ray_backend_equals_in_process_and_multiprocess(local_ray, kind):
    ref, _, _ = _sample(None, kind, n_workers=0)
    _same(ref, _sample(None, kind, n_workers=3, backend="ray")[0])
    _same(ref, _sample(None, kind, n_workers=2, backend="multiprocess")[0])


def test_killed_actor_is_restarted_and_its_units_rerun(local_ray, tmp_path):
    bench = make_benchmark("toy", seed=0, max_episode_steps=10)
    ref, _, _ = _sample(None, "rl2", n_workers=0)
    # the first env to reach its 15th step (inside a trial) SIGKILLs its actor process
    faulty = DieAtStepFactory(bench.env_factory, at_step=15, marker=str(tmp_path / "died"))
    with pytest.warns(UserWarning, match="Ray sampler actor .* died"):
        got, restarts, _ = _sample(faulty, "rl2", n_workers=2, backend="ray")
    assert (tmp_path / "died").exists() and restarts == 1
    _same(ref, got)


def test_train_through_the_cli_on_ray(local_ray, tmp_path, toy_config):
    from metarl.app.cli import main

    args = ["train", toy_config, "--set", f"run.out_dir={tmp_path}", "--set", "run.progress=false",
            "--set", "run.env_steps=1", "--set", "eval.every=0", "--set", "eval.final_tasks_per_class=1"]
    assert main(args + ["--set", "run.name=here"]) == 0
    assert main(args + ["--set", "run.name=ray", "--set", "env.n_workers=2", "--set", "env.backend=ray"]) == 0

    def last(run):
        return torch.load(sorted((tmp_path / run / "checkpoints").glob("ckpt_*.pt"))[-1], weights_only=True)

    a, b = last("here")["agent"], last("ray")["agent"]
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k


def test_two_node_cluster_on_one_machine(tmp_path):
    """ray.cluster_utils.Cluster: a head and a second node, one CPU each, so the two actors land
    on different nodes; the batch is the in-process one."""
    from ray.cluster_utils import Cluster

    ref, _, _ = _sample(None, "maml", n_workers=0)
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        got, _, vec = _sample(None, "maml", calls=2, n_workers=2, backend="ray", ray_address=cluster.address)
        _same(ref, got)
        nodes = {w.rpartition("@node:")[2] for w in vec.last_call.units_by_worker}
        assert len(nodes) == 2, vec.last_call.units_by_worker  # one actor on each node
        ray.init(address=cluster.address, ignore_reinit_error=True)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
