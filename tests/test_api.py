"""The Python entry points (metarl.train / resume / evaluate), the Run object and the hooks."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import metarl
from metarl.agents import AGENTS
from metarl.core.types import ConfigError
from metarl.training import config
from metarl.training.hooks import FinalEvaluation, Hook, Progress, default_hooks
from metarl.training.run import Run, allowed_changes

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["eval.every=0", "eval.tasks_per_class=1", "eval.final_tasks_per_class=1", "eval.rounds=1",
         "eval.episodes_per_round=1"]


def _sets(tmp_path, name="r", steps=8000, *extra):
    return [f"run.out_dir={tmp_path}", f"run.name={name}", f"run.env_steps={steps}", "run.progress=false",
            *SMALL, *extra]


def test_a_script_trains_a_toy_preset_and_evaluates_it_without_the_cli(tmp_path):
    script = (
        "import json, sys, metarl\n"
        f"out = metarl.train({str(ROOT / 'configs' / 'toy_maml_trpo.yaml')!r}, {_sets(tmp_path)!r})\n"
        "curve = metarl.evaluate(out.run_dir, tasks_per_class=2, rounds=1, episodes=1, workers=0)\n"
        "print(json.dumps({'run_dir': str(out.run_dir), 'env_steps': out.env_steps, 'iteration': out.iteration,\n"
        "    'stopped': out.stopped, 'final': out.curve.success_by_round(), 'n_tasks': len(out.curve.tasks),\n"
        "    'eval': curve.success.tolist(), 'eval_returns': curve.returns.tolist()}))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    run = Path(got["run_dir"])
    assert run == tmp_path / "r" and (got["env_steps"], got["iteration"], got["stopped"]) == (8000, 2, False)
    final = json.loads((run / "final_eval.json").read_text())  # the outcome is what the run dir says
    assert final["success_by_round"] == got["final"] and final["n_tasks"] == got["n_tasks"] == 1
    # metarl.evaluate gives what `metarl eval` gives with the same flags
    from metarl.app.cli import main

    out = tmp_path / "e.csv"
    assert main(["eval", str(run), "--tasks-per-class", "2", "--rounds", "1", "--episodes", "1", "--workers", "0",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    cli = np.zeros((len(rows) // 2, 2))
    cli_returns = np.zeros_like(cli)
    for row in rows:
        cli[int(row["task_index"]), int(row["round"])] = float(row["success"])
        cli_returns[int(row["task_index"]), int(row["round"])] = float(row["return"])
    assert cli.tolist() == got["eval"] and np.allclose(cli_returns, got["eval_returns"], rtol=0, atol=1e-9)
    stretch = json.loads((run / "runs.jsonl").read_text())
    assert stretch["command"].endswith("(metarl.train)") and (stretch["from_env_steps"], stretch["to_env_steps"]) \
        == (0, 8000) and stretch["wall_seconds"] > 0 and "ended_by" not in stretch


class Recorder(Hook):
    def __init__(self):
        self.events = []

    def on_start(self, t):
        self.events.append(("start", t.env_steps))

    def on_iteration(self, t, it):
        self.events.append(("iteration", t.iteration, it.env_steps))

    def on_train_end(self, t):
        self.events.append(("train_end", t.env_steps))

    def on_end(self, t):
        self.events.append(("end", t.env_steps))


class QuietProgress(Progress):
    """A replacement for the default progress display: counts iterations, prints nothing."""

    def __init__(self):
        super().__init__()
        self.iterations = 0

    def on_start(self, t):
        pass

    def on_iteration(self, t, it):
        self.iterations += 1


def test_a_user_hook_is_called_and_a_default_hook_can_be_replaced(tmp_path, capsys):
    preset = str(ROOT / "configs" / "toy_maml_trpo.yaml")
    # run.progress on and no terminal: the default Progress prints lines
    sets = [s for s in _sets(tmp_path, "a") if s != "run.progress=false"]
    recorder = Recorder()
    out = metarl.train(preset, sets, extra_hooks=[recorder])
    assert recorder.events == [("start", 0), ("iteration", 1, 4000), ("iteration", 2, 4000), ("train_end", 8000),
                               ("end", 8000)]
    assert "[a: toy maml_trpo seed 0] iteration 1 · " in capsys.readouterr().err
    assert out.curve is not None
    # the default Progress replaced by a quiet one, and no final evaluation
    quiet = QuietProgress()
    out = metarl.train(preset, [s for s in _sets(tmp_path, "b") if s != "run.progress=false"],
                       hooks=lambda defaults: [quiet if isinstance(h, Progress) else h for h in defaults
                                               if not isinstance(h, FinalEvaluation)])
    assert quiet.iterations == 2 and "[b: toy maml_trpo seed 0]" not in capsys.readouterr().err
    assert out.curve is None and out.env_steps == 8000 and not (tmp_path / "b" / "final_eval.json").exists()
    # the same hooks by list, through Run
    cfg = config.load(preset, _sets(tmp_path, "c"), registry=AGENTS)
    assert [type(h).__name__ for h in default_hooks(cfg)] == ["Progress", "FinalEvaluation"]
    recorder = Recorder()
    with Run.create(cfg) as run:
        out = run.start([recorder])
    assert [e[0] for e in recorder.events] == ["start", "iteration", "iteration", "train_end", "end"]
    assert out.curve is None and not (tmp_path / "c" / "final_eval.json").exists()


class Boom(Hook):
    def on_iteration(self, t, it):
        raise RuntimeError("boom")


def test_run_records_each_stretch_and_reads_older_segments(tmp_path):
    preset = str(ROOT / "configs" / "toy_maml_trpo.yaml")
    cfg = config.load(preset, _sets(tmp_path, "r", 4000), registry=AGENTS)
    with Run.create(cfg, command="first") as run:
        assert run.result_name is None
        run.result_name = "toy_s0"
        with pytest.raises(ConfigError, match="result_name: '../x' is not a result name"):
            run.result_name = "../x"
        run.start()
    with pytest.raises(RuntimeError, match="boom"), Run.resume(run.dir, ["run.env_steps=12000"],
                                                                 command="second") as again:
        again.start(extra_hooks=[Boom()])
    # an older run dir recorded its stretches in segments.jsonl (benchmarks/run_preset.py): still counted
    (run.dir / "segments.jsonl").write_text(json.dumps({"command": "old", "from_env_steps": 0, "to_env_steps": 0,
                                                        "wall_seconds": 1.5}) + "\n")
    with Run.resume(run.dir, ["run.env_steps=12000"], command="third") as last:
        assert last.result_name == "toy_s0" and last.resumed
        outcome = last.start()
    stretches = last.stretches()
    assert [s["command"] for s in stretches] == ["old", "first", "second", "third"]
    assert [(s["from_env_steps"], s["to_env_steps"]) for s in stretches] == [(0, 0), (0, 4000), (4000, 8000),
                                                                           (4000, 12000)]
    assert stretches[2]["ended_by"] == "RuntimeError: boom" and "ended_by" not in stretches[3]
    assert (outcome.from_env_steps, outcome.env_steps, outcome.iteration) == (4000, 12000, 3)
    (run.dir / "result_name").write_text("../../etc\n")  # a file read back is input too
    with pytest.raises(ConfigError, match="is not a result name"):
        last.result_name


def test_the_allowed_changes_of_a_resume_are_the_fields_outside_the_training_hash():
    assert allowed_changes()[0] == "run.env_steps" and allowed_changes()[-1] == "eval.*"
    assert {f.removesuffix(".*") for f in allowed_changes()} == set(config.NOT_TRAINING)


def test_bad_input_to_evaluate_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="split: must be 'test' or 'train', got 'val'"):
        metarl.evaluate(tmp_path, split="val")
    with pytest.raises(ConfigError, match="rounds: must be an integer in 0..1000, got 5000"):
        metarl.evaluate(tmp_path, rounds=5000)
    with pytest.raises(ConfigError, match="checkpoint: "):
        metarl.evaluate(tmp_path / "nothing.pt")


def test_runs_without_a_name_started_in_the_same_second_each_claim_a_run_dir(tmp_path, monkeypatch):
    """run.name null: <preset>-s<seed>-<time>, then -2, -3, ... claimed atomically; a start refused after
    the claim removes its own dir and never one another run claimed."""
    import time

    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    preset = str(ROOT / "configs" / "toy_maml_trpo.yaml")
    sets = [s for s in _sets(tmp_path / "out", "x", 4000) if not s.startswith("run.name=")]
    cfg = config.load(preset, sets, registry=AGENTS)
    assert cfg.run.name is None
    first, second = Run.create(cfg), Run.create(cfg)  # both open (locked) at once
    try:
        assert (first.dir.name, second.dir.name) == ("toy_maml_trpo-s0-20260101-000000",
                                                     "toy_maml_trpo-s0-20260101-000000-2")
    finally:
        first.close()
        second.close()
    # a start refused after its claim (a link planted where the lock goes) leaves the others as they were
    base = tmp_path / "out" / "toy_maml_trpo-s0-20260101-000000"
    (tmp_path / "elsewhere").mkdir()
    taken = {p.name for p in (tmp_path / "out").iterdir()}
    real_mkdir = Path.mkdir

    def mkdir_then_plant(self, *a, **k):
        real_mkdir(self, *a, **k)
        if self.parent == tmp_path / "out" and self.name.startswith(base.name):
            (self / ".lock").symlink_to(tmp_path / "elsewhere" / "lock")

    monkeypatch.setattr(Path, "mkdir", mkdir_then_plant)
    with pytest.raises((ConfigError, OSError)):
        Run.create(cfg)
    monkeypatch.setattr(Path, "mkdir", real_mkdir)
    assert {p.name for p in (tmp_path / "out").iterdir()} == taken
    assert (base / "config.yaml").is_file() and (base.parent / f"{base.name}-2" / "config.yaml").is_file()
