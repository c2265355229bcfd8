"""Hostile inputs, round 2 (issue 29): oversized or self-referencing configs and checkpoints,
where evaluation sends work, symlinks planted in a run dir, two processes on one run dir, torn
CSV logs, and unbounded sizes. Each must end in one line on stderr naming the field or the
file and what is allowed, exit code 2, nothing written and nothing lost."""
import time
from pathlib import Path

import pytest
import torch
import yaml

from metarl.training import checkpoint, config
from metarl.app.cli import main
from metarl.agents import AGENTS

ROOT = Path(__file__).resolve().parent.parent
TOY = str(ROOT / "configs" / "toy_maml_trpo.yaml")


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("metarl: error: "), stderr
    return lines[0]


def _refused(capsys, argv, *messages, nothing_at=None):
    """In-process `metarl ARGV`: exit 2 and exactly one stderr line containing every message;
    `nothing_at` (if given) does not exist afterwards."""
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    for m in messages:
        assert m in line, line
    if nothing_at is not None:
        assert not Path(nothing_at).exists(), f"{nothing_at} was written"
    return line


def _toy_raw() -> dict:
    return yaml.safe_load(Path(TOY).read_text())


def _bomb(levels: int = 9, width: int = 9) -> list:
    """One list referenced `width` times at each of `levels` levels: width**levels strings when expanded."""
    x = ["lol"] * width
    for _ in range(levels - 1):
        x = [x] * width
    return x


# ---- S1: a checkpoint's config, and config files, are bounded plain data ----------------------
@pytest.mark.parametrize("where", ["config.preset", "config.run.name", "counters"])
def test_a_checkpoint_with_a_shared_reference_bomb_is_refused_in_one_line(tmp_path, capsys, where):
    raw = _toy_raw()
    payload = {"format_version": 1, "config": raw, "agent_name": "maml_trpo", "agent": {}, "counters": {}}
    if where == "config.preset":
        raw["preset"] = _bomb()
    elif where == "config.run.name":
        raw["run"]["name"] = _bomb()
    else:
        payload["counters"] = {"env_steps": _bomb(10)}
    bomb = tmp_path / "bomb.pt"
    torch.save(payload, bomb)
    assert bomb.stat().st_size < 20_000
    t0 = time.monotonic()
    expected = (f"checkpoint: {bomb}: config at {where[7:]}[1]: refers to one list from several places (a "
                f"shared reference" if where != "counters" else
                f"checkpoint: {bomb}: holds more than {checkpoint.MAX_PAYLOAD_VALUES:,} values (each reference "
                f"to a shared list or mapping counted); allowed: tensors")
    _refused(capsys, ["eval", str(bomb)], expected, nothing_at=tmp_path / "bomb_eval")
    assert time.monotonic() - t0 < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.pt"]


@pytest.mark.parametrize("what,value,message", [
    ("long string", "x" * 5000, "config at run.name: has a string of 5,000 characters"),
    ("deep", [[[[[[[[[["deep"]]]]]]]]]], "config at run.name[0][0][0][0][0][0][0]: is nested more than 8 levels deep"),
    ("huge int", 2**1000, "config at run.name: has an integer of 1,001 bits"),
], ids=["long string", "deep", "huge int"])
def test_a_checkpoint_config_outside_the_bounds_is_refused(tmp_path, capsys, what, value, message):
    raw = _toy_raw()
    raw["run"]["name"] = value
    path = tmp_path / "c.pt"
    torch.save({"format_version": 1, "config": raw, "agent": {}}, path)
    _refused(capsys, ["eval", str(path)], f"checkpoint: {path}: {message}", "allowed: plain data")


@pytest.mark.parametrize("version,shown", [("1", "of type str"), (torch.tensor(1), "of type Tensor"),
                                           (True, "of type bool"), (2, "2")])
def test_a_checkpoint_format_version_that_is_not_the_integer_1_is_refused(tmp_path, capsys, version, shown):
    path = tmp_path / "v.pt"
    torch.save({"format_version": version, "config": _toy_raw(), "agent": {}}, path)
    _refused(capsys, ["eval", str(path)], f"checkpoint: {path} has format version {shown}; this metarl reads "
                                          f"version 1 (an integer)")


ALIAS_BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.parametrize("text,message", [
    ("preset:\n  " + ALIAS_BOMB.replace("\n", "\n  "), "uses a YAML anchor &a at line 2"),
    ("run:\n  name: &n x\nenv:\n  env_name: *n\n", "uses a YAML anchor &n at line 2"),
    ("run:\n  name: " + "[" * 2000 + "]" * 2000 + "\n", "is nested"),
    ("run:\n  name: " + "y" * 5000 + "\n", "at run.name: has a string of 5,000 characters"),
], ids=["alias bomb", "anchor", "deep", "long string"])
def test_yaml_alias_bombs_and_oversized_configs_are_refused(tmp_path, capsys, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    t0 = time.monotonic()
    _refused(capsys, ["train", str(path), "--set", f"run.out_dir={out}"], f"config: {path}", message,
             nothing_at=out)
    # refused before anything expands: the bomb expanded is 9**9 list entries (minutes and gigabytes);
    # the refusal takes well under a second on an idle machine, 9 s on one whose cores serve runs at nice -10
    assert time.monotonic() - t0 < 60


def test_a_config_file_over_1_mib_is_refused_unread(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 200_000)
    _refused(capsys, ["train", str(path)], f"config: {path} is 2,000,000 bytes; allowed: at most 1,048,576 bytes")


def test_an_alias_in_a_set_value_is_refused(tmp_path, capsys):
    _refused(capsys, ["train", TOY, "--set", f"run.out_dir={tmp_path / 'o'}", "--set", "run.name=[&x [1], *x]"],
             "--set run.name: uses a YAML anchor &x", nothing_at=tmp_path / "o")


def test_a_planted_config_yaml_bomb_makes_the_run_config_unreadable_not_expanded(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(ALIAS_BOMB)
    ck = run / "checkpoints" / "ckpt_0000001.pt"
    checkpoint.write(ck, {"config": _toy_raw(), "agent": {}})
    _refused(capsys, ["eval", str(ck)], f"checkpoint: {run / 'config.yaml'} is not a readable run config")


def test_saved_checkpoints_and_the_presets_pass_the_bounds():
    for p in sorted((ROOT / "benchmarks" / "checkpoints").glob("*.pt")):
        checkpoint.validate(p, checkpoint.load_file(p), registry=AGENTS)
    for p in sorted((ROOT / "configs").glob("*.yaml")):
        config.load(p, registry=AGENTS)


# ---- a trained toy run, shared (copied by the tests that change it) -----------------------------
@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished toy MAML-TRPO run of two iterations (8,000 env steps) with one periodic evaluation."""
    out = tmp_path_factory.mktemp("toy")
    assert main(["train", TOY, "--set", f"run.out_dir={out}", "--set", "run.name=r", "--set", "run.progress=false",
                 "--set", "run.env_steps=8000", "--set", "eval.every=1", "--set", "eval.tasks_per_class=1",
                 "--set", "eval.final_tasks_per_class=1", "--set", "eval.rounds=1",
                 "--set", "eval.episodes_per_round=1"]) == 0
    return out / "r"


@pytest.fixture
def run_copy(toy_run, tmp_path):
    import shutil

    shutil.copytree(toy_run, tmp_path / "r", symlinks=True)
    return tmp_path / "r"


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


# ---- S2: evaluation never takes where work runs from the checkpoint -----------------------------
def test_eval_takes_backend_and_ray_address_from_the_command_line_not_the_checkpoint(toy_run, tmp_path, capsys,
                                                                                 monkeypatch):
    import metarl.training.build as trainer  # build() makes the TaskVectorEnv

    payload = checkpoint.load_file(checkpoint.list_checkpoints(toy_run)[-1])
    payload["config"]["env"].update(backend="ray", ray_address="203.0.113.7:6379", n_workers=1)
    crafted = tmp_path / "crafted.pt"
    checkpoint.write(crafted, {k: v for k, v in payload.items() if k != "format_version"})
    seen = []
    real = trainer.TaskVectorEnv

    def recording(*a, **k):
        seen.append((k.get("backend"), k.get("ray_address")))
        return real(*a, **k)

    monkeypatch.setattr(trainer, "TaskVectorEnv", recording)
    assert main(["eval", str(crafted), "--tasks-per-class", "1", "--rounds", "0", "--episodes", "1",
                 "--workers", "0", "--out", str(tmp_path / "e.csv")]) == 0  # in-process: no worker start-up
    assert seen == [("multiprocess", None)]
    _refused(capsys, ["eval", str(crafted), "--ray-address", "auto"], "--ray-address: needs --backend ray")
    _refused(capsys, ["eval", str(crafted), "--workers", "-1"], "--workers: must be >= 0")


# ---- S3: symlinks planted in a run dir are refused, never followed --------------------------------
@pytest.mark.parametrize("name", ["progress.csv", "eval.csv", "config.yaml", "runs.jsonl", "final_eval.json"])
def test_resume_refuses_a_symlink_planted_in_the_run_dir(run_copy, tmp_path, capsys, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run_copy / name).unlink()
    (run_copy / name).symlink_to(victim)
    before = _snapshot(run_copy)
    expected = (f"{run_copy / name}: is a symbolic link (to {victim}); metarl never writes through a link in a run "
                f"dir. Allowed: a regular file or nothing at that path")
    _refused(capsys, ["train", "--resume", str(run_copy), "--set", "run.env_steps=12000"], expected)
    assert victim.read_text() == "precious\n"
    assert _snapshot(run_copy) == before


def test_report_refuses_a_symlink_planted_in_the_run_dir(run_copy, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run_copy / "report.md").symlink_to(victim)
    _refused(capsys, ["report", str(run_copy)], f"{run_copy / 'report.md'}: is a symbolic link")
    assert victim.read_text() == "precious\n"
    assert not (run_copy / "report_success.png").exists()


def test_temp_files_are_never_written_through_a_planted_link(run_copy, tmp_path):
    """The temp names of checkpoints, reports and results are removed, then created afresh."""
    victims = []
    for tmp in ("checkpoints/.ckpt_0000003.pt.tmp", ".report.md.tmp", ".report_success.png.tmp.png",
                ".final_eval.json.tmp", ".progress.csv.tmp"):
        victim = tmp_path / f"victim{len(victims)}"
        victim.write_text("precious\n")
        (run_copy / tmp).symlink_to(victim)
        victims.append(victim)
    assert main(["train", "--resume", str(run_copy), "--set", "run.env_steps=12000", "--set", "run.progress=false"]) == 0
    assert main(["report", str(run_copy)]) == 0
    assert [v.read_text() for v in victims] == ["precious\n"] * len(victims)
    assert checkpoint.iteration_of(checkpoint.list_checkpoints(run_copy)[-1]) == 3


def test_a_fifo_or_link_at_an_eval_output_is_refused(toy_run, tmp_path, capsys):
    import os

    fifo, link = tmp_path / "fifo.csv", tmp_path / "link.csv"
    os.mkfifo(fifo)
    link.symlink_to(tmp_path / "victim.csv")
    for out, message in ((fifo, "is not a regular file"), (link, "is a symbolic link")):
        _refused(capsys, ["eval", str(toy_run), "--tasks-per-class", "1", "--rounds", "0", "--episodes", "1",
                          "--out", str(out)], f"{out}: {message}")
    assert not (tmp_path / "victim.csv").exists()


# ---- defect 2: one process per run dir ---------------------------------------------------------
def test_a_second_train_on_a_locked_run_dir_is_refused_naming_the_holder(run_copy, tmp_path, capsys):
    import os

    from metarl.training import runfiles

    before = _snapshot(run_copy)
    with runfiles.RunLock(run_copy):  # this process holds it, on another open file: flock conflicts
        _refused(capsys, ["train", "--resume", str(run_copy), "--set", "run.env_steps=12000"],
                 f"run dir: {run_copy} is in use by another metarl process (PID {os.getpid()}, holding "
                 f"{run_copy / '.lock'}); allowed: one process per run dir")
        fresh = tmp_path / "out" / "same"
        fresh.mkdir(parents=True)
        with runfiles.RunLock(fresh):
            _refused(capsys, ["train", TOY, "--set", f"run.out_dir={tmp_path / 'out'}", "--set", "run.name=same",
                              "--set", "run.env_steps=1"], f"run dir: {fresh} is in use by another metarl process")
            assert [p.name for p in fresh.iterdir()] == [".lock"]  # the holder's dir is left alone
    assert {k: v for k, v in _snapshot(run_copy).items() if k != ".lock"} == \
        {k: v for k, v in before.items() if k != ".lock"}


def test_a_lock_left_by_a_dead_process_is_taken_over(run_copy, capsys):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_copy / ".lock").write_text(f"{dead.pid}\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(run_copy), "--set", "run.env_steps=12000", "--set",
                 "run.progress=false"]) == 0
    err = capsys.readouterr().err
    assert f"metarl: note: run dir: {run_copy / '.lock'} was left locked by PID {dead.pid}, which has ended; " \
           f"taken over" in err, err
    assert (run_copy / ".lock").read_text() == ""  # released cleanly: no PID left behind


# ---- defect 3: torn CSV lines -------------------------------------------------------------------
def test_resume_repairs_a_torn_last_line_of_progress_and_eval_csv(run_copy, capsys):
    import csv
    import os

    for name in ("progress.csv", "eval.csv"):
        size = (run_copy / name).stat().st_size
        os.truncate(run_copy / name, size - 150)  # a crash mid-append: `truncate -s -150`
        assert not (run_copy / name).read_bytes().endswith(b"\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(run_copy), "--set", "run.env_steps=12000", "--set",
                 "run.progress=false"]) == 0
    err = capsys.readouterr().err
    for name in ("progress.csv", "eval.csv"):
        assert f"metarl: note: {run_copy / name} ended in a partial line" in err, err
        rows = list(csv.reader((run_copy / name).open(newline="")))
        assert {len(r) for r in rows} == {len(rows[0])}, name  # nothing glued
    steps = [int(r["env_steps"]) for r in csv.DictReader((run_copy / "progress.csv").open())]
    assert steps == [4000, 12000]  # the torn 8000 row is gone, not glued to the next
    evals = {int(r["env_steps"]) for r in csv.DictReader((run_copy / "eval.csv").open())}
    assert max(evals) == 12000
    assert main(["plot", str(run_copy), "--out", str(run_copy / "p.png")]) == 0


@pytest.mark.parametrize("cmd", ["plot", "report"])
def test_readers_refuse_a_glued_row(run_copy, capsys, cmd):
    text = (run_copy / "eval.csv").read_text().splitlines()
    glued = text[:-2] + [text[-2][:-3] + text[-1]]  # a torn line with the next row appended to it
    (run_copy / "eval.csv").write_text("\n".join(glued) + "\n")
    before = _snapshot(run_copy)
    _refused(capsys, [cmd, str(run_copy)], f"RUN_DIR: {run_copy / 'eval.csv'} line {len(glued)} has",
             "fields but the header has", "a torn or glued line")
    assert _snapshot(run_copy) == before


# ---- defects 17, 20, 24: torch_threads, control characters in run.name, --tasks-per-class -------
@pytest.mark.parametrize("threads,message", [
    ("1000000000000", "run.torch_threads: must be in 0..1024, got 1000000000000"),
    ("-1", "run.torch_threads: must be in 0..1024, got -1"),
    ("1000", "run.torch_threads: 1000 learner threads on 2 cores; allowed: 0..8 (0: torch's default; up to 2 "
             "without oversubscribing)"),
])
def test_torch_threads_is_bounded(tmp_path, capsys, monkeypatch, threads, message):
    from metarl.training import resources

    monkeypatch.setattr(resources, "cpu_cores", lambda: 2)
    _refused(capsys, ["train", TOY, "--set", f"run.out_dir={tmp_path / 'o'}", "--set", f"run.torch_threads={threads}",
                      "--set", "run.env_steps=1"], message, nothing_at=tmp_path / "o")


@pytest.mark.parametrize("name", ["a\nb", "x\x1b[31mred", "tab\there", "bell\x07", "del\x7f"])
def test_control_characters_in_run_name_are_refused_and_not_echoed_raw(tmp_path, capsys, name):
    raw = _toy_raw()
    raw["run"].update(name=name, out_dir=str(tmp_path / "o"), env_steps=1)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))  # a double-quoted YAML string with escapes
    line = _refused(capsys, ["train", str(path)],
                    "run.name: must be printable: no control characters (newline, tab, ESC, ...), got",
                    nothing_at=tmp_path / "o")
    assert line.isprintable() and repr(name) in line


def test_eval_tasks_per_class_below_zero_is_refused(toy_run, tmp_path, capsys):
    _refused(capsys, ["eval", str(toy_run), "--tasks-per-class", "-3", "--out", str(tmp_path / "e.csv")],
             "--tasks-per-class: must be in 0..100000 (0: all), got -3", nothing_at=tmp_path / "e.csv")


# ---- defect 21: plot output paths ----------------------------------------------------------------
@pytest.mark.parametrize("out,shown", [("x.xyz", "the extension '.xyz'"), ("noext", "no extension")])
def test_plot_refuses_an_unsupported_out_extension(toy_run, tmp_path, capsys, out, shown):
    _refused(capsys, ["plot", str(toy_run), "--out", str(tmp_path / out)],
             f"--out: {tmp_path / out} has {shown}; allowed: a file ending in .png, .pdf, .svg, or an existing "
             f"directory", nothing_at=tmp_path / out)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("out", ["DIR", "c.svg", "c.PDF"])
def test_plot_prints_the_path_it_wrote(toy_run, tmp_path, capsys, out):
    target = tmp_path / out
    if out == "DIR":
        target.mkdir()
    capsys.readouterr()
    assert main(["plot", str(toy_run), "--out", str(target)]) == 0
    wrote = capsys.readouterr().out.strip()
    expected = target / "adaptation_curve.png" if out == "DIR" else target
    assert wrote == f"wrote {expected}" and expected.is_file() and expected.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("cmd", ["plot", "report"])
def test_a_full_disk_under_plot_and_report_is_a_storage_error_not_bad_input(toy_run, tmp_path, capsys, monkeypatch,
                                                                           cmd):
    """ConfigError (exit 2) is for input; a write that fails because of the disk is one StorageError
    line (exit 1) naming the file."""
    import errno

    from metarl.training import runfiles

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runfiles, "open_write", full)
    monkeypatch.setattr(runfiles, "replace_text", full)
    monkeypatch.setattr(runfiles, "open_temp", full)
    argv = ["plot", str(toy_run), "--out", str(tmp_path / "c.png")] if cmd == "plot" else ["report", str(toy_run)]
    capsys.readouterr()
    assert main(argv) == 1
    line = _one_line(capsys.readouterr().err)
    assert "cannot write" in line and "No space left on device" in line and "Free space on the disk" in line


# ---- defects 1, 4, 13, 14, 18: every size goes into the resource check, blamed on its own field ----
@pytest.mark.parametrize("argv,message", [
    (["--rounds", "1000000000"], "--rounds: must be in 0..1000, got 1000000000"),
    (["--episodes", "1000000000"], "--episodes: must be in 1..1000, got 1000000000"),
    (["--tasks-per-class", "1000000000"], "--tasks-per-class: must be in 0..100000 (0: all), got 1000000000"),
    (["--horizon", "1000000000"], "--horizon: must be in 1..100000, got 1000000000"),
    (["--protocol", "metaworld", "--adaptation-steps", "1000000000"], "--adaptation-steps: must be in 0..100, got"),
    (["--protocol", "metaworld", "--adaptation-episodes", "1000000000"], "--adaptation-episodes: must be in 1..1000"),
    (["--protocol", "metaworld", "--evaluation-episodes", "0"], "--evaluation-episodes: must be in 1..1000, got 0"),
    (["--protocol", "metaworld", "--goals-per-class", "-1"], "--goals-per-class: must be in 0..100000 (0: all)"),
], ids=lambda x: x[-2] if isinstance(x, list) else None)
def test_eval_size_flags_are_bounded(toy_run, tmp_path, capsys, argv, message):
    _refused(capsys, ["eval", str(toy_run), "--out", str(tmp_path / "e"), *argv], message, nothing_at=tmp_path / "e")


@pytest.mark.parametrize("argv,field", [
    (["--episodes", "1000", "--rounds", "0"], "--episodes: "),
    (["--horizon", "100000", "--episodes", "10"], "--horizon: "),
    (["--rounds", "1000", "--episodes", "1000"], "--episodes: "),
    (["--protocol", "metaworld", "--adaptation-episodes", "1000"],
     "--adaptation-episodes: "),
], ids=["episodes", "horizon", "rounds x episodes", "metaworld"])
def test_eval_sizes_go_into_the_ram_check_before_anything_runs(toy_run, tmp_path, capsys, monkeypatch, argv, field):
    from metarl.training import resources
    import metarl.training.build as trainer  # build() makes the TaskVectorEnv

    monkeypatch.setattr(resources, "available_ram_bytes", lambda: 64 * resources.MIB)
    monkeypatch.setattr(trainer, "TaskVectorEnv", None)  # never built
    _refused(capsys, ["eval", str(toy_run), "--out", str(tmp_path / "e"), *argv], field, "GiB of RAM is available",
             nothing_at=tmp_path / "e")


@pytest.mark.parametrize("sets,message", [
    (["eval.rounds=1000000000"], "eval.rounds: must be in 0..1000, got 1000000000"),
    (["eval.episodes_per_round=1000000000"], "eval.episodes_per_round: must be in 1..1000, got 1000000000"),
    (["eval.final_tasks_per_class=-1"], "eval.final_tasks_per_class: must be in 0..100000 (0: all), got -1"),
    (["env.toy_tasks=1000000000"], "env.toy_tasks: must be in 1..1000000, got 1000000000"),
    (["env.max_episode_steps=1000000000"], "env.max_episode_steps: must be in 1..100000 or null, got 1000000000"),
    (["agent.init_log_std=100"], "agent.init_log_std: must be in [-20, 2]"),
])
def test_eval_and_env_size_fields_are_bounded(tmp_path, capsys, sets, message):
    out = tmp_path / "o"
    argv = ["train", TOY, "--set", f"run.out_dir={out}"]
    for s in sets:
        argv += ["--set", s]
    _refused(capsys, argv, message, nothing_at=out)


@pytest.mark.parametrize("sets,field", [
    (["env.toy_tasks=1000000"], "env.toy_tasks: 1,000,000 goals per split need about"),
    (["agent.hidden_sizes=[1000000000]"], "agent.hidden_sizes: "),
    (["env.max_episode_steps=100000"], "env.max_episode_steps: "),
    (["agent.meta_batch=40", "agent.episodes_per_task=100000"], "agent.episodes_per_task: "),
], ids=["toy_tasks", "hidden_sizes", "horizon", "episodes"])
def test_train_sizes_are_blamed_on_their_own_field(tmp_path, capsys, monkeypatch, sets, field):
    from metarl.training import resources
    from metarl.envs import toy

    monkeypatch.setattr(resources, "available_ram_bytes", lambda: 256 * resources.MIB)
    if "toy_tasks" in field:
        monkeypatch.setattr(toy, "make_tasks", None)  # the goals are never drawn
    out = tmp_path / "o"
    argv = ["train", TOY, "--set", f"run.out_dir={out}"]
    for s in sets:
        argv += ["--set", s]
    _refused(capsys, argv, field, "GiB of RAM is available", nothing_at=out)


@pytest.mark.parametrize("sets,field", [
    (["agent.latent_dim=1000000000000"], "agent.latent_dim: "),
    (["agent.hidden_sizes=[1000000000]"], "agent.hidden_sizes: "),
    (["agent.encoder_hidden=[1000000000]"], "agent.encoder_hidden: "),
])
def test_pearl_network_sizes_are_in_the_ram_check(tmp_path, capsys, sets, field):
    out = tmp_path / "o"
    argv = ["train", str(ROOT / "configs" / "toy_pearl.yaml"), "--set", f"run.out_dir={out}"]
    for s in sets:
        argv += ["--set", s]
    _refused(capsys, argv, field, "GiB of RAM is available", nothing_at=out)


def test_eval_of_a_checkpoint_whose_config_asks_for_too_many_toy_tasks_is_refused(toy_run, tmp_path, capsys,
                                                                                monkeypatch):
    from metarl.training import resources

    payload = checkpoint.load_file(checkpoint.list_checkpoints(toy_run)[-1])
    payload["config"]["env"]["toy_tasks"] = 1_000_000
    crafted = tmp_path / "crafted.pt"
    checkpoint.write(crafted, {k: v for k, v in payload.items() if k != "format_version"})
    monkeypatch.setattr(resources, "available_ram_bytes", lambda: 256 * resources.MIB)
    _refused(capsys, ["eval", str(crafted)], "env.toy_tasks: 1,000,000 goals per split need about",
             nothing_at=tmp_path / "crafted_eval")


def test_curve_eval_of_a_loose_checkpoint_writes_beside_it_and_checks_out_first(toy_run, tmp_path, capsys):
    import shutil

    (tmp_path / "loose").mkdir()
    ck = shutil.copy(checkpoint.list_checkpoints(toy_run)[-1], tmp_path / "loose" / "p.pt")
    assert main(["eval", str(ck), "--tasks-per-class", "1", "--rounds", "0", "--episodes", "1"]) == 0
    assert (tmp_path / "loose" / "p_eval" / "eval_test" / "eval.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loose"]  # nothing in the grandparent
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _refused(capsys, ["eval", str(ck), "--out", str(blocker / "e.csv")], f"--out: cannot write {blocker / 'e.csv'}")


# ---- defects 6, 7, 23: a checkpoint is validated against the agent its config builds ------------
def _crafted(toy_run, tmp_path, edit, name="c.pt"):
    payload = checkpoint.load_file(checkpoint.list_checkpoints(toy_run)[-1])
    payload.pop("format_version")
    edit(payload)
    path = tmp_path / name
    torch.save({"format_version": 1, **payload}, path)
    return path


def _set_weight(value=None, dtype=None, shape=None):
    def edit(p):
        w = p["agent"]["policy"]["mean.0.weight"] if "mean.0.weight" in p["agent"]["policy"] else \
            next(iter(p["agent"]["policy"].values()))
        key = next(k for k, v in p["agent"]["policy"].items() if v is w)
        if value is not None:
            w = w.clone()
            w[0, 0] = value
        if dtype is not None:
            w = w.to(dtype)
        if shape is not None:
            w = torch.zeros(shape)
        p["agent"]["policy"][key] = w
    return edit


@pytest.mark.parametrize("edit,message", [
    (_set_weight(value=float("nan")), "holds NaN or infinite values; allowed: finite weights"),
    (_set_weight(value=float("inf")), "holds NaN or infinite values"),
    (_set_weight(dtype=torch.int64), "has dtype torch.int64"),
    (_set_weight(dtype=torch.complex64), "has dtype torch.complex64; allowed: real floating point"),
    (_set_weight(dtype=torch.float64), "has dtype torch.float64; the agent its config builds has torch.float32 "
                                       "(refused, not cast)"),
    (_set_weight(shape=(3, 5)), "has shape [3, 5]; the agent its config builds has"),
    (lambda p: p["agent"]["policy"].update(extra=torch.zeros(1)), "must hold the tensors"),
    (lambda p: p["agent"].update(extra=1), "agent has the key extra, which the agent its config builds does not"),
    (lambda p: p.update(surprise=1), "has the key surprise; allowed: format_version"),
    (lambda p: p.pop("agent"), "has no 'agent' entry"),
    (lambda p: p.pop("config"), "has no 'config' entry"),
    (lambda p: p.update(config=[1, 2]), "config must be a mapping, got list"),
    (lambda p: p["config"]["agent"].update(init_log_std=100.0), "config: agent.init_log_std: must be in [-20, 2]"),
    (lambda p: p.update(counters={"env_steps": "x"}), "counters.iteration must be an integer"),
    (lambda p: p["counters"].update(env_steps=-5), "counters.env_steps must be an integer in 0..2^62, got -5"),
    (lambda p: p.update(agent_name="pearl"), "agent_name is 'pearl' but its config's agent.name is 'maml_trpo'"),
], ids=["nan", "inf", "int64", "complex", "float64", "shape", "extra tensor", "extra agent key", "extra top key",
        "no agent", "no config", "config list", "init_log_std", "counters type", "counters negative", "agent_name"])
def test_a_malformed_checkpoint_is_refused_in_one_line_before_eval(toy_run, tmp_path, capsys, edit, message):
    import metarl.training.build as trainer  # build() makes the TaskVectorEnv

    path = _crafted(toy_run, tmp_path, edit)
    real = trainer.TaskVectorEnv
    trainer.TaskVectorEnv = None  # nothing is built
    try:
        for protocol in ("curve", "metaworld"):
            _refused(capsys, ["eval", str(path), "--protocol", protocol], f"checkpoint: {path}", message,
                     nothing_at=tmp_path / "c_eval")
    finally:
        trainer.TaskVectorEnv = real


@pytest.mark.parametrize("edit,message", [
    (_set_weight(value=float("nan")), "holds NaN or infinite values"),
    (lambda p: p["rng"].update(torch=torch.zeros(3)), "rng.torch must be a 1-D uint8 tensor"),
    (lambda p: p["rng"]["numpy"].update(bit_generator="Nope"), "rng is not a generator state"),
    (lambda p: p.pop("counters"), "counters must be a mapping"),
], ids=["nan", "torch rng", "numpy rng", "no counters"])
def test_a_malformed_checkpoint_is_refused_on_resume_with_nothing_written(run_copy, tmp_path, capsys, edit, message):
    newest = checkpoint.list_checkpoints(run_copy)[-1]
    bad = _crafted(run_copy, tmp_path, edit)
    newest.write_bytes(bad.read_bytes())
    before = _snapshot(run_copy)
    _refused(capsys, ["train", "--resume", str(run_copy), "--set", "run.env_steps=12000"], f"checkpoint: {newest}",
             message)
    assert {k: v for k, v in _snapshot(run_copy).items() if k != ".lock"} == \
        {k: v for k, v in before.items() if k != ".lock"}


def test_resume_with_new_network_sizes_is_refused_before_anything_is_written(run_copy, capsys):
    before = _snapshot(run_copy)
    _refused(capsys, ["train", "--resume", str(run_copy), "--allow-config-change", "--set",
                      "agent.hidden_sizes=[64, 64]", "--set", "run.env_steps=12000"],
             "--allow-config-change: the new config cannot take the checkpoint's state", "has shape [32, 2]; the agent its config builds has [64, 2]")
    assert {k: v for k, v in _snapshot(run_copy).items() if k != ".lock"} == \
        {k: v for k, v in before.items() if k != ".lock"}


def test_checkpoint_env_dims_match_the_envs():
    from metarl.envs import toy
    from metarl.envs.metaworld import MetaWorldEnv

    assert checkpoint.ENV_DIMS["toy"] == (toy.OBS_DIM, toy.ACT_DIM)
    assert checkpoint.METAWORLD_DIMS == (MetaWorldEnv.obs_dim, MetaWorldEnv.act_dim)


# ---- defect 8: a config names its benchmark and agent --------------------------------------------
@pytest.mark.parametrize("text,field", [("{}\n", "env.benchmark"), ("preset: x\n", "env.benchmark"),
                                        ("env:\n  benchmark: toy\n", "agent.name")])
def test_a_config_that_does_not_name_its_benchmark_and_agent_is_refused(tmp_path, capsys, text, field):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    _refused(capsys, ["train", str(path), "--set", f"run.out_dir={tmp_path / 'o'}"],
             f"{field}: missing in {path}; a config must name its benchmark and agent", nothing_at=tmp_path / "o")


# ---- defect 19: what a user types is what they get (YAML 1.2 scalars, no duplicate keys) ------
@pytest.mark.parametrize("value,expected", [("1e-1", 0.1), ("no", "no"), ("on", "on"), ("yes", "yes"),
                                            ("1:30", "1:30"), ("true", True), ("5", 5), ("0.5", 0.5)])
def test_set_values_are_yaml_1_2_scalars(value, expected):
    assert config.parse_overrides([f"x.y={value}"]) == [("x.y", expected)]


def test_yaml_1_1_surprises_in_set_and_config_files(tmp_path, capsys):
    cfg = config.load(TOY, ["agent.inner_lr=1e-1", "run.name=no"], registry=AGENTS)
    assert cfg.agent.inner_lr == 0.1 and cfg.run.name == "no"
    _refused(capsys, ["train", TOY, "--set", "run.env_steps=1:30"], "run.env_steps: must be an integer, got '1:30'")
    _refused(capsys, ["train", TOY, "--set", "run.progress=off"], "run.progress: must be true or false, got 'off'")
    path = tmp_path / "dup.yaml"
    path.write_text(Path(TOY).read_text() + "run:\n  seed: 3\n")
    _refused(capsys, ["train", str(path), "--set", f"run.out_dir={tmp_path / 'o'}"],
             f"config: {path}: has the key 'run' twice (line 19); allowed: each key once in a mapping",
             nothing_at=tmp_path / "o")


# ---- the items left of issue 29 --------------------------------------------------------------------
SMALL_EVAL = ["--set", "run.progress=false", "--set", "eval.tasks_per_class=1", "--set", "eval.final_tasks_per_class=1",
              "--set", "eval.rounds=1", "--set", "eval.episodes_per_round=1"]


def _last_line(err: str) -> str:
    """The one error line a run ends with (other lines before it: progress, notes); no traceback."""
    assert "Traceback" not in err and "Exception in thread" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("metarl: error: "), err
    return line


def _env_steps(run: Path, name: str = "progress.csv") -> list[int]:
    import csv

    return [int(r["env_steps"]) for r in csv.DictReader((run / name).open())]


def _unchanged(run: Path, before: dict[str, bytes]) -> None:
    assert {k: v for k, v in _snapshot(run).items() if k != ".lock"} == \
        {k: v for k, v in before.items() if k != ".lock"}


# ---- defect 5: a full or read-only disk mid-run or at start: its own error (exit 1), one line, how to go on
def test_a_full_disk_at_the_png_writer_ends_the_run_in_one_line_and_it_resumes(tmp_path, capsys, monkeypatch):
    import errno

    from metarl.training import runfiles

    real = runfiles.open_write
    pngs = []

    def full(path, mode="w", **kw):
        if str(path).endswith(".png"):
            pngs.append(path)
            if len(pngs) > 1:  # the second evaluation's figure; a failed write() names no file
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, mode, **kw)

    monkeypatch.setattr(runfiles, "open_write", full)
    out = tmp_path / "o"
    capsys.readouterr()
    rc = main(["train", TOY, "--set", f"run.out_dir={out}", "--set", "run.name=r", "--set", "run.env_steps=12000",
               "--set", "eval.every=1", *SMALL_EVAL])
    run = out / "r"
    assert rc == 1
    assert _last_line(capsys.readouterr().err) == (
        f"metarl: error: run dir: cannot write {run / 'adaptation_curve.png'} (No space left on device); training "
        f"stopped at iteration 2 (8,000 env steps) and the newest checkpoint on disk is ckpt_0000001.pt. Free space "
        f"on the disk that holds {run}, then resume with: metarl train --resume {run}")
    monkeypatch.setattr(runfiles, "open_write", real)  # space freed
    assert main(["train", "--resume", str(run)]) == 0
    assert _env_steps(run) == [4000, 8000, 12000]


def test_a_read_only_disk_under_the_tensorboard_thread_ends_the_run_in_one_line(tmp_path, capsys, monkeypatch):
    import errno

    from tensorboard.summary.writer import record_writer

    out = tmp_path / "o"
    run = out / "r"
    real = record_writer.RecordWriter.write

    def read_only(self, data):  # in TensorBoard's writer thread, once the first checkpoint is on disk
        if checkpoint.list_checkpoints(run):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", read_only)
    capsys.readouterr()
    rc = main(["train", TOY, "--set", f"run.out_dir={out}", "--set", "run.name=r", "--set", "run.env_steps=12000",
               "--set", "eval.every=0", *SMALL_EVAL])
    assert rc == 1
    assert _last_line(capsys.readouterr().err) == (
        f"metarl: error: run dir: cannot write {run / 'tb'} (Read-only file system); training stopped at iteration 2 "
        f"(8,000 env steps) and the newest checkpoint on disk is ckpt_0000001.pt. Make the file system that holds "
        f"{run} writable, then resume with: metarl train --resume {run}")
    monkeypatch.setattr(record_writer.RecordWriter, "write", real)
    assert main(["train", "--resume", str(run)]) == 0
    assert _env_steps(run) == [4000, 8000, 12000]


def test_a_full_disk_at_start_ends_in_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import errno

    from metarl.training import runfiles

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runfiles, "write_text", full)
    out = tmp_path / "o"
    capsys.readouterr()
    assert main(["train", TOY, "--set", f"run.out_dir={out}", "--set", "run.name=r", *SMALL_EVAL]) == 1
    assert _last_line(capsys.readouterr().err) == (
        f"metarl: error: run dir: cannot write {out / 'r' / 'config.yaml'} (No space left on device); the run did "
        f"not start ({out} removed). Free space on the disk that holds {out / 'r'}, then start it again")
    assert not out.exists()


# ---- defect 9: a signal during start-up leaves a run dir that resumes ------------------------------
def test_a_signal_during_start_up_leaves_a_checkpoint_to_resume_from(tmp_path, capsys, monkeypatch):
    import os
    import signal

    import metarl.training.trainer as trainer
    from helpers import assert_same

    real = trainer.build

    def build_then_sigterm(*a, **k):  # `timeout -s TERM` while the agent and its workers are built
        built = real(*a, **k)
        os.kill(os.getpid(), signal.SIGTERM)
        return built

    monkeypatch.setattr(trainer, "build", build_then_sigterm)
    args = ["--set", "run.env_steps=8000", "--set", "eval.every=0", *SMALL_EVAL]
    argv = ["train", TOY, "--set", f"run.out_dir={tmp_path}", "--set", "run.name=r", *args]
    capsys.readouterr()
    assert main(argv) == 0
    run = tmp_path / "r"
    assert f"stopped at iteration 0 (0 env steps); checkpoint written. Resume with: metarl train --resume {run}" \
        in capsys.readouterr().err
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["ckpt_0000000.pt"]
    monkeypatch.setattr(trainer, "build", real)
    _refused(capsys, argv, f"run.name: run dir {run} already exists and is not empty; choose another run.name or "
                           f"resume it with --resume {run}")
    assert main(["train", "--resume", str(run)]) == 0
    assert _env_steps(run) == [4000, 8000]
    assert main(["train", TOY, "--set", f"run.out_dir={tmp_path}", "--set", "run.name=straight", *args]) == 0
    assert_same(checkpoint.load_latest(run, registry=AGENTS)[1]["agent"],
                checkpoint.load_latest(tmp_path / "straight", registry=AGENTS)[1]["agent"])


def test_a_run_dir_killed_before_its_first_checkpoint_starts_over_on_resume(run_copy, capsys):
    """SIGKILL (or a power cut) before the first checkpoint: --resume starts it over from its config.yaml,
    dropping what the killed start logged, instead of 'no checkpoint' (while a fresh start says 'resume it')."""
    for p in checkpoint.list_checkpoints(run_copy):
        p.unlink()
    (run_copy / "final_eval.json").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(run_copy)]) == 0
    assert f"metarl: note: {run_copy} has no checkpoint (it stopped before its first one); starting it over from " \
           f"its config.yaml" in capsys.readouterr().err
    assert _env_steps(run_copy) == [4000, 8000]
    assert sorted(set(_env_steps(run_copy, "eval.csv"))) == [4000, 8000]
    assert len(_env_steps(run_copy, "eval.csv")) == 4  # one task, rounds 0 and 1, at each: none doubled


# ---- defects 10 and 11: a signal during the final evaluation; resuming a finished run -----------------
def test_a_signal_during_the_final_evaluation_stops_it_keeping_the_tasks_done(tmp_path, capsys, monkeypatch):
    import csv
    import json

    import metarl.training.trainer as trainer
    from helpers import sigterm_on_progress

    real = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", sigterm_on_progress(real))
    # 40 held-out toy goals, evaluated 10 at a time (agent.meta_batch)
    capsys.readouterr()
    assert main(["train", TOY, "--set", f"run.out_dir={tmp_path}", "--set", "run.name=r", "--set", "run.env_steps=4000",
                 "--set", "eval.every=0", *SMALL_EVAL, "--set", "eval.final_tasks_per_class=0"]) == 0
    run = tmp_path / "r"
    assert f"metarl: final evaluation stopped by a signal after 10 of 40 held-out tasks; the 10 done are in " \
           f"final_eval.json (\"final_eval_stopped\": true) and eval.csv. Run it in full with: metarl train --resume " \
           f"{run}" in capsys.readouterr().err
    final = json.loads((run / "final_eval.json").read_text())
    assert (final["n_tasks"], final["final_eval_stopped"], final["n_tasks_planned"]) == (10, True, 40)
    assert len(list(csv.DictReader((run / "eval.csv").open()))) == 10 * 2
    monkeypatch.setattr(trainer, "evaluate", real)
    runs_before = (run / "runs.jsonl").read_text()
    assert main(["train", "--resume", str(run)]) == 0  # the final evaluation again, in full, replacing the 10
    rows = [(r["env_steps"], r["eval"], r["task_index"], r["round"]) for r in csv.DictReader((run / "eval.csv").open())]
    assert len(rows) == len(set(rows)) == 40 * 2
    final = json.loads((run / "final_eval.json").read_text())
    assert final["n_tasks"] == 40 and "final_eval_stopped" not in final
    # finished: nothing to do, and nothing appended or rewritten (15 -> 30 -> 45 eval rows before)
    before = _snapshot(run)
    _refused(capsys, ["train", "--resume", str(run)],
             f"--resume: {run} has finished: 4,000 env steps trained (run.env_steps=4,000) and evaluated "
             f"(final_eval.json); allowed: a larger budget to train on, --set run.env_steps=N with N > 4000")
    _unchanged(run, before)
    assert (run / "runs.jsonl").read_text().count("\n") == runs_before.count("\n") + 1


def test_resume_refuses_an_edited_training_field_of_config_yaml_and_takes_an_allowed_edit(run_copy, capsys):
    path = run_copy / "config.yaml"
    text = path.read_text()
    assert "  inner_lr: 0.1\n" in text and "  episodes_per_round: 1\n" in text
    path.write_text(text.replace("  inner_lr: 0.1\n", "  inner_lr: 0.5\n"))
    before = _snapshot(run_copy)
    _refused(capsys, ["train", "--resume", str(run_copy), "--set", "run.env_steps=12000", "--set", "agent.max_kl=0.02"],
             "--resume: the config differs from the checkpoint's in fields that shape training (agent.inner_lr: 0.1 "
             "in the checkpoint, 0.5 in config.yaml; agent.max_kl: 0.01 in the checkpoint, 0.02 in --set); allowed "
             "changes: run.env_steps,", f"(pass --allow-config-change to override, or restore {path})")
    _unchanged(run_copy, before)  # the edit is still there; runs.jsonl has no new line
    path.write_text(text.replace("  episodes_per_round: 1\n", "  episodes_per_round: 2\n"))  # eval.*: allowed
    assert main(["train", "--resume", str(run_copy), "--set", "run.env_steps=12000"]) == 0
    assert yaml.safe_load(path.read_text())["eval"]["episodes_per_round"] == 2
    assert checkpoint.load_latest(run_copy, registry=AGENTS)[1]["config"]["eval"]["episodes_per_round"] == 2


# ---- defect 16: unreadable inputs ------------------------------------------------------------------
def test_resume_refuses_a_binary_progress_csv_and_writes_nothing(run_copy, capsys):
    (run_copy / "progress.csv").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    before = _snapshot(run_copy)
    _refused(capsys, ["train", "--resume", str(run_copy), "--set", "run.env_steps=12000"],
             f"--resume: {run_copy / 'progress.csv'} is not a CSV log metarl can read (not UTF-8 text: a binary or "
             f"damaged file); allowed: the log the run wrote")
    _unchanged(run_copy, before)


def test_a_config_file_that_is_not_utf8_or_cannot_be_read_is_refused(tmp_path, capsys, monkeypatch):
    import errno

    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(Path(TOY).read_bytes() + b"# caf\xe9\n")
    _refused(capsys, ["train", str(latin1), "--set", f"run.out_dir={tmp_path / 'o'}"],
             f"config: {latin1} is not UTF-8 text; allowed: a UTF-8 YAML file", nothing_at=tmp_path / "o")
    locked = tmp_path / "locked.yaml"
    locked.write_text(Path(TOY).read_text())
    real_open = Path.open

    def denied(self, *a, **k):  # chmod 000 does not stop root, which runs CI here
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *a, **k)

    monkeypatch.setattr(Path, "open", denied)
    _refused(capsys, ["train", str(locked), "--set", f"run.out_dir={tmp_path / 'o'}"],
             f"config: cannot read {locked} (Permission denied); allowed: a YAML file this user can read",
             nothing_at=tmp_path / "o")


# ---- defect 18: blamed on the right field, and nothing left behind ---------------------------------
def test_a_run_name_too_long_for_a_file_name_is_blamed_on_run_name_and_leaves_nothing(tmp_path, capsys):
    _refused(capsys, ["train", TOY, "--set", f"run.out_dir={tmp_path / 'o' / 'sub'}", "--set", f"run.name={'a' * 300}"],
             "run.name: must be at most 255 bytes (one file name), got 300 bytes: 'aaaa", nothing_at=tmp_path / "o")
    # a directory of run.out_dir too long: blamed on run.out_dir, and the parents made before it removed
    _refused(capsys, ["train", TOY, "--set", f"run.out_dir={tmp_path / 'o' / ('b' * 300) / 'runs'}",
                      "--set", "run.name=r"], "run.out_dir: cannot create run dir", "File name too long",
             nothing_at=tmp_path / "o")


def test_an_unreadable_checkpoint_is_not_called_corrupt_nor_skipped(run_copy, tmp_path, capsys, monkeypatch):
    import errno

    newest = checkpoint.list_checkpoints(run_copy)[-1]
    real = torch.load

    def denied(f, *a, **k):
        if Path(f) == newest:
            raise PermissionError(errno.EACCES, "Permission denied", str(f))
        return real(f, *a, **k)

    monkeypatch.setattr(torch, "load", denied)
    before = _snapshot(run_copy)
    expected = f"checkpoint: cannot read {newest} (Permission denied); allowed: a checkpoint file this user can read"
    for argv in (["eval", str(newest), "--out", str(tmp_path / "e.csv")],
                 ["train", "--resume", str(run_copy), "--set", "run.env_steps=12000"]):  # not resumed from an older one
        assert "corrupt" not in _refused(capsys, argv, expected)
    _unchanged(run_copy, before)


# ---- defect 15: released checkpoints are checked against their MANIFEST ------------------------------
def test_a_released_checkpoint_is_checked_against_its_manifest_before_it_is_read(toy_run, tmp_path, capsys):
    import hashlib
    import shutil

    rel = tmp_path / "checkpoints"  # as benchmarks/checkpoints/: released files and their MANIFEST
    rel.mkdir()
    first, last = checkpoint.list_checkpoints(toy_run)[0], checkpoint.list_checkpoints(toy_run)[-1]
    f = rel / "toy_s0.pt"
    shutil.copy(last, f)
    (rel / "MANIFEST").write_text(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  toy_s0.pt  {f.stat().st_size} bytes  "
                                  f"8000 env steps  maml_trpo toy\n")
    args = ["--tasks-per-class", "1", "--rounds", "0", "--episodes", "1", "--workers", "0"]
    assert main(["eval", str(f), *args]) == 0  # as released
    shutil.rmtree(rel / "toy_s0_eval")
    f.write_bytes(first.read_bytes())  # tampered: a valid checkpoint, other weights
    _refused(capsys, ["eval", str(f), *args], f"checkpoint: {f} has SHA-256 {hashlib.sha256(f.read_bytes()).hexdigest()[:16]}"
             f"... but {rel / 'MANIFEST'} lists", "the file changed after its release; allowed: the released file",
             nothing_at=rel / "toy_s0_eval")
    shutil.copy(last, rel / "extra.pt")
    _refused(capsys, ["eval", str(rel / "extra.pt"), *args],
             f"checkpoint: {rel / 'extra.pt'} is not listed in {rel / 'MANIFEST'}; allowed there: the released "
             f"checkpoints it lists", nothing_at=rel / "extra_eval")


# ---- defect 12: a bad MUJOCO_GL stops neither training nor evaluation (they never render) --------------
def test_a_bad_mujoco_gl_stops_neither_training_nor_eval_and_rendering_refuses_it(tmp_path, capsys, monkeypatch):
    import os
    import subprocess
    import sys

    from metarl.training.video import USER_GL

    cfg = tmp_path / "ml1.yaml"  # one 10-step Meta-World iteration, then one held-out goal (in-process: the
    #                              worker processes a run starts inherit its MUJOCO_GL=disable)
    cfg.write_text("env: {benchmark: ML1, env_name: reach-v3, max_episode_steps: 10, n_workers: 0}\n"
                   "agent: {name: maml_trpo, meta_batch: 1, episodes_per_task: 1, hidden_sizes: [8]}\n"
                   "run: {env_steps: 10, progress: false}\n"
                   "eval: {every: 0, final_tasks_per_class: 1, rounds: 0, episodes_per_round: 1}\n")
    env = {k: v for k, v in os.environ.items() if k != USER_GL}
    env["MUJOCO_GL"] = "invalid"
    out = tmp_path / "o"
    for argv in (["train", str(cfg), "--set", f"run.out_dir={out}", "--set", "run.name=r"],
                 ["eval", str(out / "r"), "--tasks-per-class", "1", "--rounds", "0", "--episodes", "1", "--workers", "0"]):
        r = subprocess.run([sys.executable, "-m", "metarl.app.cli", *argv], env=env, capture_output=True, text=True,
                           cwd=ROOT, timeout=300)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert (out / "r" / "final_eval.json").is_file() and (out / "r" / "eval_test" / "eval.csv").is_file()
    monkeypatch.setenv("MUJOCO_GL", "invalid")
    monkeypatch.delenv(USER_GL, raising=False)
    _refused(capsys, ["eval", str(out / "r"), "--tasks-per-class", "1", "--rounds", "0", "--episodes", "1",
                      "--workers", "0", "--video", "--out", str(tmp_path / "v.csv")],
             "MUJOCO_GL: 'invalid' is not a MuJoCo GL backend (needed by --video); allowed: egl or osmesa (offscreen)",
             nothing_at=tmp_path / "v.csv")


# ---- defect 25: warnings in one line, and how a restarted worker ended -------------------------------
def test_warnings_print_as_one_line_without_a_source_line(run_copy, tmp_path):
    import subprocess
    import sys

    ckpts = checkpoint.list_checkpoints(run_copy)
    for p in ckpts:
        p.write_bytes(p.read_bytes()[:100])
    r = subprocess.run([sys.executable, "-m", "metarl.app.cli", "eval", str(run_copy), "--out", str(tmp_path / "e.csv")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == len(ckpts) + 1, r.stderr  # a warning line per skipped checkpoint, then the error
    for line, p in zip(lines, reversed(ckpts)):
        assert line.startswith(f"metarl: warning: skipping unreadable checkpoint {p.name}: checkpoint: {p} is corrupt "
                               f"or truncated"), r.stderr
    assert lines[-1].startswith(f"metarl: error: --resume: no readable checkpoint in {run_copy / 'checkpoints'}")
    assert "UserWarning" not in r.stderr and "warn(" not in r.stderr, r.stderr


def test_restart_warnings_say_how_a_worker_ended():
    from metarl.envs.procpool import _ended

    assert _ended(None) == "stopped answering (its pipe closed)"  # never "exit code None"
    assert _ended(-9) == "died (killed by SIGKILL)"
    assert _ended(3) == "died (exit code 3)"
