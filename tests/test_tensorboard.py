"""TensorBoard custom-scalars layout: read back from the event file of a toy run."""
from __future__ import annotations

from pathlib import Path

from metarl.app.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_custom_scalars_layout_charts_each_held_out_class_and_train_vs_test(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    assert main(["train", str(ROOT / "configs" / "toy_maml_trpo.yaml"), "--set", f"run.out_dir={tmp_path}",
                 "--set", "run.name=r", "--set", "run.progress=false", "--set", "run.env_steps=8000",
                 "--set", "eval.every=1", "--set", "eval.tasks_per_class=2", "--set", "eval.select_best=true",
                 "--set", "eval.select_tasks_per_class=2", "--set", "eval.final_tasks_per_class=2"]) == 0
    ea = EventAccumulator(str(tmp_path / "r" / "tb"), size_guidance={"tensors": 0})
    ea.Reload()
    content = ea.PluginTagToContent("custom_scalars")
    assert content, "no custom-scalars layout in the event file"
    raw = ea.Tensors(next(iter(content)))[0].tensor_proto.string_val[0]
    layout = layout_pb2.Layout.FromString(raw)
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts["point"] == ["eval/point/success@0", "eval/point/success@1", "eval/point/success@2"]
    assert charts["success after 2 round(s)"] == ["eval/success@2", "eval_train/success@2"]
    # every tag the layout names is a scalar the run logged
    logged = set(ea.Tags()["scalars"])
    for tags in charts.values():
        assert set(tags) <= logged, set(tags) - logged
