"""Slow smoke tests on real Meta-World benchmarks: pytest -m slow."""
import json

import pytest

from metarl.app.cli import main


@pytest.mark.slow
def test_ml10_preset_trains_and_evaluates(tmp_path):
    rc = main(["train", "configs/ml10_maml_trpo.yaml", "--set", "run.env_steps=1600",
               "--set", "env.max_episode_steps=20", "--set", "agent.episodes_per_task=2",
               "--set", "eval.final_tasks_per_class=1", "--set", "eval.episodes_per_round=1",
               "--set", f"run.out_dir={tmp_path}", "--set", "run.name=ml10", "--set", "run.progress=false"])
    assert rc == 0
    final = json.loads((tmp_path / "ml10" / "final_eval.json").read_text())
    assert final["n_tasks"] == 5  # one goal of each of the 5 held-out ML10 classes
    # Meta-World 3.1.1's official ML10 test classes
    assert set(final["by_class"]) == {"drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3",
                                      "lever-pull-v3"}
