"""Hostile inputs: checkpoints that would run code, checkpoints of another run, and config or
run-dir inputs that used to crash or be silently accepted. Each must end in one line on stderr
naming the field and what is allowed, exit code 2, and nothing written."""
import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from metarl.training import checkpoint
from metarl.app.cli import main
from metarl.agents import AGENTS
from helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
RL2 = str(ROOT / "configs" / "toy_rl2_ppo.yaml")


def _cli(*args, cwd=None):
    return run_cli(*args, cwd=cwd)  # in-process: a subprocess would spend ~2 s importing torch and MuJoCo


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("metarl: error: "), stderr
    return lines[0]


def _train(tmp_path, config, *extra, name="r"):
    return main(["train", config, "--set", f"run.out_dir={tmp_path}", "--set", f"run.name={name}",
                 "--set", "run.progress=false", "--set", "eval.every=0", "--set", "eval.final_tasks_per_class=1",
                 *extra])


def _refused(capsys, argv, message, nothing_at):
    """In-process `metarl ARGV`: exit 2, exactly one stderr line containing `message`, and
    `nothing_at` does not exist afterwards."""
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert message in line, line
    assert not Path(nothing_at).exists(), f"{nothing_at} was written"
    return line


# ---- 1. checkpoints that would run code ---------------------------------------------------
class _CreatesFile:
    """Unpickling this calls open(path, 'w'): it creates the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _RunsShell:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_malicious_checkpoint_is_refused_by_eval_and_resume_and_never_runs(tmp_path, toy_config):
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    ckpts.mkdir(parents=True)
    cfg_yaml = yaml.safe_load(Path(toy_config).read_text())
    (run / "config.yaml").write_text(yaml.safe_dump(cfg_yaml))
    # an older, harmless checkpoint: the malicious newer one must not be skipped in its favour
    checkpoint.write(ckpts / "ckpt_0000001.pt", {"config": cfg_yaml, "counters": {"iteration": 1}})
    marker, marker2 = tmp_path / "PWNED_open", tmp_path / "PWNED_shell"
    evil = ckpts / "ckpt_0000002.pt"
    torch.save({"format_version": 1, "config": cfg_yaml, "agent_name": "maml_trpo",
                "agent": {"x": _CreatesFile(marker)}, "counters": {"y": _RunsShell(marker2)}}, evil)
    for args in (["eval", str(evil)], ["eval", str(run)], ["train", "--resume", str(run)]):
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        line = _one_line(r.stderr)
        assert "refusing to unpickle arbitrary objects" in line and "older metarl or not by metarl" in line, line
        assert str(evil) in line
        assert not marker.exists() and not marker2.exists(), f"unpickling ran code on {args}"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml"]  # nothing written
    # the file is live: the old weights_only=False load would have created the marker
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_checkpoint_payloads_hold_only_weights_only_types(tmp_path):
    with pytest.raises(TypeError, match=r"payload\['agent'\]\['buf'\] is a numpy.ndarray"):
        checkpoint.write(tmp_path / "a.pt", {"agent": {"buf": np.zeros(3)}})
    with pytest.raises(TypeError, match="numpy.int64"):
        checkpoint.write(tmp_path / "b.pt", {"counters": [np.int64(3)]})
    assert not list(tmp_path.iterdir())  # refused before anything reaches the disk
    # what the trainer stores: numpy's PCG64 state (128-bit ints), torch's RNG state, an optimizer
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(2))])
    opt.zero_grad()
    opt.param_groups[0]["params"][0].sum().backward()
    opt.step()
    rng = np.random.default_rng(7)
    rng.random()
    payload = {"rng": {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}, "opt": opt.state_dict()}
    checkpoint.write(tmp_path / "c.pt", payload)
    back = checkpoint.load_file(tmp_path / "c.pt")
    assert back["rng"]["numpy"] == rng.bit_generator.state
    assert torch.equal(back["rng"]["torch"], payload["rng"]["torch"])
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


# ---- 2. a checkpoint of another run copied into a run dir ---------------------------------
def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def one_iteration_run(tmp_path_factory):
    """_train(..., "--set", "run.env_steps=4000"): a toy MAML-TRPO run of one iteration, trained once for
    the tests that need one; each works on a copy."""
    out = tmp_path_factory.mktemp("one_iteration")
    assert _train(out, str(ROOT / "configs" / "toy_maml_trpo.yaml"), "--set", "run.env_steps=4000") == 0
    return out / "r"


@pytest.mark.parametrize("other", ["another_agent", "another_config"])
def test_checkpoint_copied_from_another_run_is_refused_by_eval_and_resume(tmp_path, toy_config, other,
                                                                         one_iteration_run):
    shutil.copytree(one_iteration_run, tmp_path / "mine", symlinks=True)
    if other == "another_agent":
        assert _train(tmp_path, RL2, "--set", "run.env_steps=400", name="theirs") == 0
        expected = "holds a 'rl2_ppo' agent but its run dir's config.yaml asks for 'maml_trpo'"
    else:
        assert _train(tmp_path, toy_config, "--set", "run.env_steps=4000", "--set", "agent.inner_lr=0.05",
                      name="theirs") == 0
        expected = "was written with training config"
    mine = tmp_path / "mine"
    theirs = checkpoint.load_latest(tmp_path / "theirs", registry=AGENTS)[0]
    shutil.copyfile(theirs, checkpoint.checkpoint_dir(mine) / "ckpt_0000099.pt")
    before = _snapshot(mine)
    for args in (["eval", str(mine)], ["eval", str(checkpoint.checkpoint_dir(mine) / "ckpt_0000099.pt")],
                 ["train", "--resume", str(mine), "--set", "run.env_steps=8000"]):
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        line = _one_line(r.stderr)
        assert expected in line and "copied from another run" in line, line
        assert _snapshot(mine) == before, f"{args} wrote into the run dir"


def test_checkpoints_of_a_run_resumed_with_a_config_change_still_load(tmp_path, toy_config):
    """The run's config history (runs.jsonl) keeps its earlier checkpoints its own."""
    assert _train(tmp_path, toy_config, "--set", "run.env_steps=4000", "--set", "run.keep_checkpoints=5") == 0
    assert main(["train", "--resume", str(tmp_path / "r"), "--allow-config-change", "--set", "agent.inner_lr=0.05",
                 "--set", "run.env_steps=8000"]) == 0
    for p in checkpoint.list_checkpoints(tmp_path / "r"):  # iteration 1 (old config), 2 (new)
        assert checkpoint.resolve(p, registry=AGENTS)[0] == p


# ---- 3. config values ---------------------------------------------------------------------
@pytest.mark.parametrize("override,message", [
    ("agent.inner_lr=.nan", "agent.inner_lr: must be a finite number (no .nan, .inf or -.inf), got nan"),
    ("agent.max_kl=.inf", "agent.max_kl: must be a finite number (no .nan, .inf or -.inf), got inf"),
    ("agent.init_log_std=.nan", "agent.init_log_std: must be a finite number"),
    ("agent.init_log_std=-.inf", "agent.init_log_std: must be a finite number"),
    ("agent.discount=.nan", "agent.discount: must be a finite number"),
    ("run.env_steps=.inf", "run.env_steps: must be an integer, got inf"),
])
def test_nan_or_inf_in_a_number_field_is_refused(tmp_path, toy_config, capsys, override, message):
    out = tmp_path / "out"
    _refused(capsys, ["train", toy_config, "--set", f"run.out_dir={out}", "--set", override], message, out)


@pytest.mark.parametrize("yaml_text,override,message", [
    (None, "run=5", "run: must be a mapping of run.* fields"),
    (None, "agent=5", "agent: must be a mapping of agent.* fields"),
    ("run: [1, 2]\n", None, "run: must be a mapping of run.* fields (env_steps, seed, device, out_dir, ...), "
                            "got list [1, 2]"),
    ("run: hello\n", None, "run: must be a mapping of run.* fields (env_steps, seed, device, out_dir, ...), "
                           "got str 'hello'"),
    ("env: 3\n", None, "env: must be a mapping of env.* fields"),
    ("run: [1, 2]\n", "run.seed=3", "run: must be a mapping of run.* fields (to set run.seed), got list [1, 2]"),
])
def test_a_section_that_is_not_a_mapping_is_refused(tmp_path, toy_config, capsys, monkeypatch, yaml_text, override,
                                                     message):
    config = toy_config
    if yaml_text is not None:
        config = tmp_path / "c.yaml"
        config.write_text(yaml_text)
    argv = ["train", str(config)] + (["--set", override] if override else [])
    monkeypatch.chdir(tmp_path)  # run.out_dir is the default, runs/: it must not appear
    _refused(capsys, argv, message, tmp_path / "runs")


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_an_empty_config_file_is_refused(tmp_path, capsys, text):
    config = tmp_path / "empty.yaml"
    config.write_text(text)
    _refused(capsys, ["train", str(config), "--set", f"run.out_dir={tmp_path / 'out'}"],
             f"config: {config} is empty", tmp_path / "out")


@pytest.mark.parametrize("seed", ["100000000000000000000000", str(2**32), "-1"])
def test_seed_outside_0_to_2_pow_32_is_refused_and_leaves_no_run_dir(tmp_path, toy_config, capsys, seed):
    out = tmp_path / "runs"
    line = _refused(capsys, ["train", toy_config, "--seed", seed, "--set", f"run.out_dir={out}",
                             "--set", "run.env_steps=1"],
                    f"run.seed: must be in 0..{2**32 - 1}, got {seed}", out)
    assert "Traceback" not in line


def test_the_largest_seed_is_accepted(tmp_path, toy_config):
    assert _train(tmp_path, toy_config, "--seed", str(2**32 - 1), "--set", "run.env_steps=1") == 0


@pytest.mark.parametrize("name", ["../../x", "../x", "..", ".", "a/b", "ABSOLUTE", ""])
def test_run_name_must_stay_inside_out_dir(tmp_path, toy_config, capsys, name):
    out = tmp_path / "a" / "b" / "out"
    if name == "ABSOLUTE":
        name = str(tmp_path / "abs")
    _refused(capsys, ["train", toy_config, "--set", f"run.out_dir={out}", "--set", f"run.name={name}",
                      "--set", "run.env_steps=1", "--set", "eval.final_tasks_per_class=1"],
             "run.name: must be a plain directory name, which stays inside run.out_dir", tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


# ---- 4. sizes against cores and memory ----------------------------------------------------
def test_huge_meta_batch_is_refused_before_allocating(tmp_path, toy_config, capsys, monkeypatch):
    from metarl.training import resources

    monkeypatch.setattr(resources, "available_ram_bytes", lambda: 16 * resources.GIB)
    out = tmp_path / "out"
    _refused(capsys, ["train", toy_config, "--set", f"run.out_dir={out}", "--set", "env.toy_tasks=300000",
                      "--set", "agent.meta_batch=300000"],
             "agent.meta_batch: 300000 task slots x 10 episodes x 20 steps", out)


def test_worker_count_is_checked_against_cores_and_memory(tmp_path, toy_config, capsys, monkeypatch):
    from metarl.training import resources

    out = tmp_path / "out"
    monkeypatch.setattr(resources, "cpu_cores", lambda: 2)
    _refused(capsys, ["train", toy_config, "--set", f"run.out_dir={out}", "--set", "env.n_workers=40",
                      "--set", "run.env_steps=1", "--set", "eval.final_tasks_per_class=1"],
             "env.n_workers: 40 worker processes on 2 cores; allowed: 0..8", out)
    monkeypatch.setattr(resources, "cpu_cores", lambda: 64)
    monkeypatch.setattr(resources, "available_ram_bytes", lambda: resources.GIB)
    _refused(capsys, ["train", toy_config, "--set", f"run.out_dir={out}", "--set", "env.n_workers=10",
                      "--set", "run.env_steps=1", "--set", "eval.final_tasks_per_class=1"],
             "env.n_workers: 10 task slots x 10 episodes x 20 steps with 10 worker processes need about", out)


def test_more_workers_than_cores_warns_once(toy_config, capsys, monkeypatch):
    from metarl.training import config, resources
    from metarl.training.build import benchmark_for

    monkeypatch.setattr(resources, "cpu_cores", lambda: 2)
    monkeypatch.setattr(resources, "_warned", set())
    cfg = config.load(toy_config, ["env.n_workers=3"], registry=AGENTS)
    benchmark_for(cfg)
    benchmark_for(cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["metarl: warning: env.n_workers=3 starts 3 worker processes on 2 cores; "
                   "they will share cores (no faster than 2)"]


# ---- 5. plot, read-only checkpoints, resume after a truncated checkpoint ------------------
@pytest.mark.parametrize("drop", ["success", "round", "env_steps", "return"])
def test_plot_on_an_eval_csv_that_lacks_a_column(tmp_path, capsys, drop):
    run = tmp_path / "r"
    run.mkdir()
    cols = [c for c in ("env_steps", "eval", "task", "round", "success", "return") if c != drop]
    with (run / "eval.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerow({c: {"eval": "eval", "task": "point"}.get(c, "1") for c in cols})
    _refused(capsys, ["plot", str(run)], f"RUN_DIR: {run / 'eval.csv'} lacks the column {drop}; an eval.csv needs "
                                         f"env_steps, round, success, return", run / "adaptation_curve.png")


def test_plot_on_an_eval_csv_with_a_bad_number(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "eval.csv").write_text("env_steps,round,success,return\n4000,0,1.0,-3\n4000,one,0.5,-2\n")
    _refused(capsys, ["plot", str(run)], "line 3: env_steps and round must be integers", run / "adaptation_curve.png")


def test_checkpoints_made_unwritable_mid_run_end_in_one_line_with_a_resume_hint(tmp_path, toy_config, capsys,
                                                                             monkeypatch):
    """After the first checkpoint, writing checkpoints fails with EACCES, as it does when
    checkpoints/ is made read-only (simulated: chmod does not stop root, which runs CI here)."""
    real_open = open
    writes = []

    def guarded_open(path, *a, **k):
        if str(path).endswith(".tmp"):
            writes.append(path)
            if len(writes) > 1:
                raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(checkpoint, "open", guarded_open, raising=False)
    capsys.readouterr()
    rc = _train(tmp_path, toy_config, "--set", "run.env_steps=16000")
    err = capsys.readouterr().err
    assert rc == 1, err  # the disk, not the input (exit 2): metarl.core.types.StorageError
    assert "Traceback" not in err and "PermissionError" not in err
    last = err.strip().splitlines()[-1]
    run = tmp_path / "r"
    assert last.startswith(f"metarl: error: checkpoints: cannot write {run / 'checkpoints' / '.ckpt_0000002.pt.tmp'} "
                           f"(Permission denied); training stopped at iteration 2 (8,000 env steps) and the newest "
                           f"checkpoint on disk is ckpt_0000001.pt."), last
    assert last.endswith(f"then resume with: metarl train --resume {run}"), last
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["ckpt_0000001.pt"]  # no temp file left


def test_a_directory_at_a_checkpoints_name_is_named_in_one_line_and_skipped_on_resume(tmp_path, capsys,
                                                                                      one_iteration_run):
    """Defect 22 of the hardening round: a stray directory named checkpoints/ckpt_0000002.pt stopped
    every save with "make writable". Now: one line naming it and what to do; --resume skips it."""
    run = tmp_path / "r"
    shutil.copytree(one_iteration_run, run, symlinks=True)
    (run / "checkpoints" / "ckpt_0000002.pt").mkdir()
    capsys.readouterr()
    rc = main(["train", "--resume", str(run), "--set", "run.env_steps=16000"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert f"checkpoints: {run / 'checkpoints' / 'ckpt_0000002.pt'} is a directory, not a checkpoint" in last, last
    assert "Remove or rename that directory, then resume with" in last and "writable" not in last, last
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["ckpt_0000001.pt"]


def test_resume_after_a_truncated_checkpoint_writes_each_env_steps_row_once(tmp_path, toy_config):
    assert _train(tmp_path, toy_config, "--set", "run.env_steps=12000", "--set", "eval.every=1") == 0
    run = tmp_path / "r"
    newest = checkpoint.list_checkpoints(run)[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # iteration 3's checkpoint is lost
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        assert main(["train", "--resume", str(run), "--set", "run.env_steps=16000"]) == 0
    steps = [int(r["env_steps"]) for r in csv.DictReader((run / "progress.csv").open())]
    assert steps == [4000, 8000, 12000, 16000]
    evals = sorted({(int(r["env_steps"]), r["eval"]) for r in csv.DictReader((run / "eval.csv").open())})
    rows = list(csv.DictReader((run / "eval.csv").open()))
    assert evals == [(4000, "eval"), (8000, "eval"), (12000, "eval"), (16000, "eval")]
    assert len([r for r in rows if r["env_steps"] == "12000"]) == len([r for r in rows if r["env_steps"] == "8000"])


@pytest.mark.parametrize("seed", ["-1", "100000000000000000000000"])
def test_eval_seed_outside_0_to_2_pow_32_is_refused(tmp_path, seed):
    r = _cli("eval", str(tmp_path / "nothing"), "--seed", seed, cwd=tmp_path)
    assert r.returncode == 2 and "--seed: must be in 0.." in _one_line(r.stderr)
