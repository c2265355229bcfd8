"""A benchmark run's life across sessions: `metarl bench park` (a run stopped with SIGTERM goes to
benchmarks/inflight/ with its stopped_early result) and `metarl bench finish` (a run that reached its
budget gets its meta-train evaluation, release and report), on a toy RL² run; `metarl bench run`
trains them (metarl/app/bench/)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH = [sys.executable, "-m", "metarl.app.cli", "bench"]  # `metarl bench` in a process of its own


def _bench(command: str, *args: str) -> SimpleNamespace:
    """`metarl bench COMMAND ARGS` in this process: its exit code, stdout and stderr."""
    from metarl.app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["bench", command, *map(str, args)])
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


def _resume_elsewhere(parked_run: Path, res: Path, tmp_path: Path, more_steps: int):
    """The next session: copy a parked run back (as from a fresh clone, without the result files parked
    with it) and resume it with `metarl bench run --resume` to `more_steps` env steps beyond where it
    stopped; gives (the resumed run dir, the env steps it had stopped at, the finished process)."""
    run = tmp_path / "runs2" / parked_run.name
    run.parent.mkdir()
    shutil.copytree(parked_run, run)
    shutil.rmtree(run / "results")
    steps = json.loads((parked_run / "final_eval.json").read_text())["env_steps"]
    r = subprocess.run([*BENCH, "run", "--resume", str(run),
                        "--results", str(res), "--set", f"run.env_steps={steps + more_steps}"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    return run, steps, r


def _tree(d: Path) -> dict[str, int]:
    return {str(f.relative_to(d)): f.stat().st_mtime_ns for f in sorted(d.rglob("*"))} if d.exists() else {}


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="bench park finds live runs in /proc")
def test_park_a_stopped_run_resume_it_elsewhere_and_finish_it(tmp_path):
    runs, res, parked, rel = (tmp_path / d for d in ("runs", "res", "inflight", "rel"))
    proc = subprocess.Popen(
        [*BENCH, "run", str(ROOT / "configs" / "toy_rl2_ppo.yaml"),
         "--runs", str(runs), "--results", str(res), "--name", "toy_s1", "--set", "run.env_steps=4000000",
         "--set", "eval.every=0", "--set", "eval.final_tasks_per_class=4", "--set", "run.progress=false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not list(runs.glob("*/progress.csv")) and time.monotonic() < deadline:
            time.sleep(0.2)
        run = next(runs.iterdir())
        # while it trains: refused, nothing written
        r = _bench("park", run, "--dest", parked, "--results", res)
        assert r.returncode == 2 and "metarl: error: RUN_DIR:" in r.stderr and "Traceback" not in r.stderr
        assert not parked.exists()
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "metarl bench park" in err  # bench run says what comes next
    assert json.loads((res / "toy_s1.json").read_text())["stopped_early"] is True

    # a checkpoint over the size limit: refused, nothing written or moved
    before = _tree(res)
    r = _bench("park", run, "--dest", parked, "--results", res, "--max-mib", "0.001")
    assert r.returncode == 2 and "--max-mib" in r.stderr and not parked.exists() and _tree(res) == before

    r = _bench("park", run, "--dest", parked, "--results", res)
    assert r.returncode == 0, r.stderr
    p = parked / run.name
    newest = max((run / "checkpoints").glob("ckpt_*.pt"))
    assert sorted(f.name for f in (p / "checkpoints").iterdir()) == [newest.name]  # toy run: no best.pt
    assert (p / "checkpoints" / newest.name).read_bytes() == newest.read_bytes()
    assert {"config.yaml", "result_name", "runs.jsonl", "progress.csv", "final_eval.json"} <= \
        {f.name for f in p.iterdir()}
    assert (p / "results" / "toy_s1.json").is_file() and not list(res.glob("toy_s1.*"))  # moved, not copied
    assert not list(parked.glob(".*"))  # no temporary left behind
    # a finished run is not parked; a parked run is not finished
    r = _bench("finish", run, "--results", res, "--checkpoints", rel, "--inflight", parked)
    assert r.returncode == 2 and "no result" in r.stderr and not rel.exists()

    # the next session: copy it back (as from a fresh clone) and resume to its (shortened) budget
    resumed_run, steps, r = _resume_elsewhere(p, res, tmp_path, 4000)
    assert r.returncode == 0, r.stderr
    result = json.loads((res / "toy_s1.json").read_text())
    assert result["stopped_early"] is False and result["env_steps"] > steps
    assert "next: metarl bench finish" in r.stderr
    r = _bench("park", resumed_run, "--dest", parked, "--results", res)
    assert r.returncode == 2 and "did not stop early" in r.stderr

    r = _bench("finish", resumed_run, "--results", res, "--checkpoints", rel, "--inflight", parked,
               "--goals-per-class", "2")
    assert r.returncode == 0, r.stderr
    train = json.loads((res / "toy_s1.eval_metaworld_train.json").read_text())
    assert train["split"] == "train" and (resumed_run / "eval_metaworld_train.json").is_file()
    released = torch.load(rel / "toy_s1.pt", map_location="cpu", weights_only=True)
    assert released["agent"]["policy_only"] and released["counters"]["env_steps"] == result["env_steps"]
    assert "toy_s1.pt" in (rel / "MANIFEST").read_text()
    assert (res / "README.md").is_file()
    assert not p.exists()  # the parked copy is gone

    # a budget grown after the finish: the meta-train evaluation of the earlier checkpoint is not
    # copied into the new result, and the copy from then goes
    r = subprocess.run([*BENCH, "run", "--resume", str(resumed_run), "--results", str(res),
                        "--set", f"run.env_steps={result['env_steps'] + 4000}"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    grown = json.loads((res / "toy_s1.json").read_text())
    assert grown["env_steps"] > result["env_steps"]
    assert not (res / "toy_s1.eval_metaworld_train.json").exists()
    assert (resumed_run / "eval_metaworld_train.json").is_file()  # the run dir keeps its own record


def test_park_and_finish_refuse_what_is_not_a_run(tmp_path):
    for command in ("park", "finish"):
        r = _bench(command, tmp_path / "nope")
        assert r.returncode == 2 and "RUN_DIR: no such directory" in r.stderr
        r = _bench(command, tmp_path)
        assert r.returncode == 2 and "RUN_DIR:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="bench park finds live runs in /proc")
def test_a_parked_pearl_run_leaves_its_buffers_behind_and_resumes_with_a_warm_restart(tmp_path):
    """PEARL's checkpoints hold its replay buffers: `bench park` parks them without (small enough to commit),
    the resume elsewhere refills them with the current policy (recorded in runs.jsonl and the result's
    "warm_restart"), and `bench finish` finishes the run as any other. About 20 s on 2 busy cores."""
    from metarl.training import checkpoint

    runs, res, parked, rel = (tmp_path / d for d in ("runs", "res", "inflight", "rel"))
    proc = subprocess.Popen(
        [*BENCH, "run", str(ROOT / "configs" / "toy_pearl.yaml"),
         "--runs", str(runs), "--results", str(res), "--name", "toy_pearl_s1", "--set", "run.env_steps=4000000",
         "--set", "eval.every=0", "--set", "eval.final_tasks_per_class=4", "--set", "eval.episodes_per_round=1",
         "--set", "agent.grad_steps_per_iteration=10", "--set", "run.progress=false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not list(runs.glob("*/checkpoints/ckpt_*.pt")) and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    run = next(runs.iterdir())
    newest = max((run / "checkpoints").glob("ckpt_*.pt"))
    assert checkpoint.load_file(newest)["agent"]["buffers"] is not None
    # over the limit even without its buffers: refused, nothing written
    r = _bench("park", run, "--dest", parked, "--results", res, "--max-mib", "0.001")
    assert r.returncode == 2 and "without its replay buffers is" in r.stderr and not parked.exists()
    r = _bench("park", run, "--dest", parked, "--results", res)
    assert r.returncode == 0, r.stderr
    assert "the resume refills them with the current policy (a warm restart" in r.stdout
    p = parked / run.name
    light = checkpoint.load_file(p / "checkpoints" / newest.name)
    assert light["agent"]["buffers"] is None and light["counters"] == checkpoint.load_file(newest)["counters"]
    assert (p / "checkpoints" / newest.name).stat().st_size < newest.stat().st_size

    resumed_run, steps, r = _resume_elsewhere(p, res, tmp_path, 800)
    assert r.returncode == 0, r.stderr
    assert "pearl: warm restart" in r.stderr
    result = json.loads((res / "toy_pearl_s1.json").read_text())
    assert result["stopped_early"] is False and result["env_steps"] > steps and result["warm_restart"] is True
    segs = result["per_seed"][0]["segments"]
    assert [s.get("warm_restart", False) for s in segs] == [False, True] and result["per_seed"][0]["warm_restart"]
    assert "(warm restart: the checkpoint held no replay buffers" in (res / "toy_pearl_s1.md").read_text()
    resumed = checkpoint.load_latest(resumed_run, registry=__import__("metarl.agents", fromlist=["AGENTS"]).AGENTS)[1]
    assert resumed["agent"]["buffers"] is not None      # its own checkpoints hold buffers again

    r = _bench("finish", resumed_run, "--results", res, "--checkpoints", rel, "--inflight", parked,
               "--goals-per-class", "2")
    assert r.returncode == 0, r.stderr
    released = torch.load(rel / "toy_pearl_s1.pt", map_location="cpu", weights_only=True)
    assert released["agent"]["policy_only"] and "buffers" not in released["agent"]
    assert not p.exists()


def test_a_signal_during_bench_runs_final_evaluation_stops_it_and_the_result_says_so(tmp_path, monkeypatch):
    """`metarl bench run` evaluates even a run a signal stopped; a signal during that final
    evaluation stops it after the chunk of tasks in progress (on ML10 it takes hours), and the
    result records the partial evaluation (final_eval_stopped: done, planned) as stopped early."""
    import metarl.training.trainer as trainer
    from helpers import sigterm_on_progress
    from metarl.app.cli import main
    monkeypatch.setattr(trainer, "evaluate", sigterm_on_progress(trainer.evaluate))
    runs, res = tmp_path / "runs", tmp_path / "res"
    # 40 held-out toy goals, evaluated 10 at a time (agent.meta_batch 10)
    assert main(["bench", "run", str(ROOT / "configs" / "toy_maml_trpo.yaml"), "--runs", str(runs),
                 "--results", str(res), "--name", "t", "--set", "run.env_steps=4000", "--set", "eval.every=0",
                 "--set", "eval.select_best=false", "--set", "eval.final_tasks_per_class=0",
                 "--set", "run.progress=false"]) == 0
    result = json.loads((res / "t.json").read_text())
    seed = result["per_seed"][0]
    assert result["stopped_early"] and seed["final_eval_stopped"] == [10, 40] and seed["n_tasks"] == 10
    segment = json.loads((next(runs.iterdir()) / "runs.jsonl").read_text().splitlines()[-1])
    assert segment["final_eval_stopped"] == [10, 40]


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="bench park finds live runs in /proc")
def test_a_run_at_its_budget_whose_final_evaluation_was_cut_is_parked_and_resumes_to_evaluate_in_full(
        tmp_path, monkeypatch):
    """A run that reached its budget, its final evaluation cut by a signal (an ML10 one takes an hour, and a
    session may end during it): `bench park` takes it, and its resume on the next machine trains nothing
    and runs the whole final evaluation; then `bench finish` takes it."""
    import metarl.training.trainer as trainer
    from helpers import sigterm_on_progress
    from metarl.app.cli import main
    real = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", sigterm_on_progress(real))
    runs, res, parked, rel = (tmp_path / d for d in ("runs", "res", "inflight", "rel"))
    assert main(["bench", "run", str(ROOT / "configs" / "toy_maml_trpo.yaml"), "--runs", str(runs),
                 "--results", str(res), "--name", "cut_s1", "--set", "run.env_steps=4000", "--set", "eval.every=0",
                 "--set", "eval.select_best=false", "--set", "eval.final_tasks_per_class=0",
                 "--set", "run.progress=false"]) == 0
    monkeypatch.setattr(trainer, "evaluate", real)
    run = next(runs.iterdir())
    final = json.loads((run / "final_eval.json").read_text())
    assert final["stopped_early"] is False and final["final_eval_stopped"] is True  # at budget, evaluation cut
    steps = final["env_steps"]
    assert json.loads((res / "cut_s1.json").read_text())["stopped_early"] is True
    r = _bench("finish", run, "--results", res, "--checkpoints", rel, "--inflight", parked)
    assert r.returncode == 2 and "stopped_early" in r.stderr and not rel.exists()

    r = _bench("park", run, "--dest", parked, "--results", res)
    assert r.returncode == 0, r.stderr
    assert "final evaluation cut by a signal after 10 of 40 held-out tasks" in r.stdout
    p = parked / run.name
    assert (p / "results" / "cut_s1.json").is_file() and not list(res.glob("cut_s1.*"))

    resumed_run, parked_steps, r = _resume_elsewhere(p, res, tmp_path, 0)
    assert r.returncode == 0, r.stderr
    assert parked_steps == steps
    result = json.loads((res / "cut_s1.json").read_text())
    seed = result["per_seed"][0]
    assert result["stopped_early"] is False and seed["final_eval_stopped"] is None
    assert seed["n_tasks"] == 40 and result["env_steps"] == steps  # evaluated in full; trained nothing more
    assert seed["segments"][-1]["from_env_steps"] == seed["segments"][-1]["to_env_steps"] == steps
    r = _bench("finish", resumed_run, "--results", res, "--checkpoints", rel, "--inflight", parked,
               "--goals-per-class", "2")
    assert r.returncode == 0, r.stderr
    assert (rel / "cut_s1.pt").is_file() and not p.exists()


def test_a_run_dir_from_before_runs_jsonl_resumes_and_its_segments_count(tmp_path):
    """Run dirs started before runs.jsonl recorded the stretches (benchmarks/inflight/ holds some) have a
    segments.jsonl instead: `metarl bench run --resume` continues them, and the result counts those stretches."""
    from metarl.app.cli import main

    runs, res = tmp_path / "runs", tmp_path / "res"
    assert main(["bench", "run", str(ROOT / "configs" / "toy_maml_trpo.yaml"), "--runs", str(runs), "--results",
                 str(res), "--name", "old_s1", "--set", "run.env_steps=2000", "--set", "eval.every=0",
                 "--set", "eval.select_best=false", "--set", "eval.final_tasks_per_class=2",
                 "--set", "run.progress=false"]) == 0
    run = next(runs.iterdir())
    steps = json.loads((run / "runs.jsonl").read_text().splitlines()[-1])["to_env_steps"]
    # as benchmarks/run_preset.py left a run dir: its stretches in segments.jsonl, no runs.jsonl
    old = {"command": "python benchmarks/run_preset.py configs/toy_maml_trpo.yaml --name old_s1", "git_commit": "abc",
           "from_env_steps": 0, "to_env_steps": steps, "wall_seconds": 12.5}
    (run / "segments.jsonl").write_text(json.dumps(old) + "\n")
    (run / "runs.jsonl").unlink()
    assert main(["bench", "run", "--resume", str(run), "--results", str(res),
                 "--set", f"run.env_steps={steps + 2000}"]) == 0
    result = json.loads((res / "old_s1.json").read_text())
    seed = result["per_seed"][0]
    assert [s["from_env_steps"] for s in seed["segments"]] == [0, steps] and seed["segments"][0] == old
    assert seed["segments"][1]["command"].startswith("metarl bench run --resume ")
    assert seed["wall_seconds"] == pytest.approx(12.5 + seed["segments"][1]["wall_seconds"])
    assert result["env_steps"] > steps and result["stopped_early"] is False
    assert "Trained in segments" in (res / "old_s1.md").read_text()


@pytest.mark.parametrize("parked", sorted(p.name for p in (ROOT / "benchmarks" / "inflight").iterdir()
                                          if (p / "checkpoints").is_dir()))
def test_the_committed_parked_runs_still_resume(parked):
    """Every run dir in benchmarks/inflight/ (parked by the old scripts: segments.jsonl, PEARL without its
    buffers) still gives a config and checkpoint to resume from, and its recorded stretches read as segments."""
    from metarl.app.bench.run import segments_of
    from metarl.training.run import read_stretches, resume_config

    run = ROOT / "benchmarks" / "inflight" / parked
    cfg, payload = resume_config(run, [])
    steps = payload["counters"]["env_steps"] if payload is not None else 0
    assert steps > 0
    # left to train, or at its budget with the final evaluation a signal cut (the resume evaluates in full)
    final = json.loads((run / "final_eval.json").read_text())
    assert cfg.run.env_steps > steps or (cfg.run.env_steps == steps and final["final_eval_stopped"] is True
                                         and final["env_steps"] == steps)
    # the old scripts' segments.jsonl, then runs.jsonl (a parked run resumed by `metarl bench run
    # --resume` and parked again has both), read as Run.stretches() reads them
    segments = segments_of(read_stretches(run), run)
    assert segments and segments[-1].to_env_steps == payload["counters"]["env_steps"]


def test_bench_runs_started_in_the_same_second_get_run_dirs_of_their_own(tmp_path, monkeypatch):
    """Two `metarl bench run` of one preset and seed in the same second (a shell loop over settings):
    the second gets <preset>-s<seed>-<time>-2, not a refusal; a start refused before it wrote anything
    leaves no run dir behind."""
    import time

    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    runs, res = tmp_path / "runs", tmp_path / "res"
    common = [ROOT / "configs" / "toy_maml_trpo.yaml", "--runs", runs, "--results", res, "--set", "run.env_steps=1",
              "--set", "eval.every=0", "--set", "eval.select_best=false", "--set", "eval.final_tasks_per_class=1",
              "--set", "run.progress=false"]
    for name in ("a_s1", "b_s1"):
        r = _bench("run", *common, "--name", name)
        assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in runs.iterdir()) == ["toy_maml_trpo-s1-20260101-000000",
                                                      "toy_maml_trpo-s1-20260101-000000-2"]
    assert (runs / "toy_maml_trpo-s1-20260101-000000-2" / "result_name").read_text().strip() == "b_s1"
    from metarl.app.bench.park import result_name

    (runs / "toy_maml_trpo-s1-20260101-000000-2" / "result_name").unlink()  # a run without --name: the preset's
    assert result_name(runs / "toy_maml_trpo-s1-20260101-000000-2") == "toy_maml_trpo"
    from metarl.core.machine import cpu_cores
    from metarl.training.resources import MAX_THREADS_PER_CORE

    too_many = MAX_THREADS_PER_CORE * cpu_cores() + 1  # refused by Run.create before it claims a dir
    r = _bench("run", *common, "--name", "c_s1", "--set", f"run.torch_threads={too_many}")
    assert r.returncode == 2 and "run.torch_threads" in r.stderr and "Traceback" not in r.stderr
    assert len(list(runs.iterdir())) == 2
