"""The CUDA learner path: every agent trains on the toy tasks with its learner on the GPU,
its checkpoint resumes there, and the saved parameters load on a CPU-only machine.
Skipped where torch sees no CUDA device (CI; this repository's development machine)."""
from pathlib import Path

import pytest
import torch

from metarl.training import checkpoint
from metarl.app.cli import main
from metarl.agents import AGENTS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _tensors(tree):
    if torch.is_tensor(tree):
        yield tree
    elif isinstance(tree, dict):
        for v in tree.values():
            yield from _tensors(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _tensors(v)


@pytest.mark.parametrize("preset", ["toy_maml_trpo", "toy_rl2_ppo", "toy_pearl"])
def test_agent_trains_and_resumes_on_cuda(tmp_path, preset):
    from metarl.training import config
    from metarl.training.build import build

    cfg = config.load(CONFIGS / f"{preset}.yaml", [], device="cuda", registry=AGENTS)
    _, sampler, agent = build(cfg, config.resolve_device("cuda"))
    sampler.vec_env.close()
    learner = [p for m in vars(agent).values() if isinstance(m, torch.nn.Module) for p in m.parameters()]
    assert learner and all(p.device.type == "cuda" for p in learner)

    common = ["--set", f"run.out_dir={tmp_path}", "--set", "run.name=r", "--set", "run.progress=false",
              "--set", "eval.every=2", "--set", "eval.tasks_per_class=2", "--set", "eval.final_tasks_per_class=2"]
    assert main(["train", str(CONFIGS / f"{preset}.yaml"), "--device", "cuda", "--set", "run.env_steps=2000",
                 *common]) == 0
    first = checkpoint.load_latest(tmp_path / "r", registry=AGENTS)[1]
    assert main(["train", "--resume", str(tmp_path / "r"), "--set", "run.env_steps=12000"]) == 0
    last = checkpoint.load_latest(tmp_path / "r", registry=AGENTS)[1]
    assert last["counters"]["iteration"] > first["counters"]["iteration"]
    params = [t for t in _tensors(last["agent"]) if t.is_floating_point()]
    assert params and all(torch.isfinite(t).all() for t in params)
    assert any(not torch.equal(a, b) for a, b in zip(_tensors(first["agent"]), _tensors(last["agent"])))


def test_select_best_on_cuda_evaluates_best_pt(tmp_path):
    import json

    assert main(["train", str(CONFIGS / "toy_pearl.yaml"), "--device", "cuda", "--set", "run.env_steps=6000",
                 "--set", f"run.out_dir={tmp_path}", "--set", "run.name=r", "--set", "run.progress=false",
                 "--set", "eval.every=1", "--set", "eval.select_best=true", "--set", "eval.select_tasks_per_class=4",
                 "--set", "eval.tasks_per_class=2", "--set", "eval.final_tasks_per_class=2"]) == 0
    final = json.loads((tmp_path / "r" / "final_eval.json").read_text())
    best = json.loads((tmp_path / "r" / "best.json").read_text())
    assert final["selected"]["iteration"] == best["iteration"] >= 1
    assert len(final["selected"]["success_by_round"]) == len(final["success_by_round"])
