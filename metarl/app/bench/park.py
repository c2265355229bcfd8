"""`metarl bench park RUN_DIR`: a benchmark run stopped with SIGTERM goes to benchmarks/inflight/, so
that a later session, on any machine, can commit-clone-resume it.

What it copies: what a resume needs (config.yaml, result_name, runs.jsonl and an older run's
segments.jsonl, the newest checkpoint) and what the run has measured so far (best.pt and best.json,
progress.csv, eval.csv, the Meta-World protocol results, final_eval.json, adaptation_curve.png,
tb/). It moves the stopped_early result that `metarl bench run` wrote (benchmarks/results/<name>.*)
into the parked folder's results/, so the report never mixes a partial seed into a finished row.

PEARL checkpoints are parked without their replay buffers (gigabytes, not committable): the
resume on the next machine is then a warm restart, which refills the buffers with the current
policy before updates go on (metarl/agents/pearl.py; recorded in runs.jsonl and as "warm_restart"
in the result). It continues the run, not bit-exactly; a run whose own checkpoints (with buffers)
are still on disk resumes bit-exactly from them instead.

A run that reached its budget but whose final evaluation a signal cut short (final_eval.json:
"final_eval_stopped"; on ML10 that evaluation takes an hour) is parked the same way: its resume
runs the final evaluation again, in full, and trains nothing.

It refuses, and writes nothing, when the run has not stopped early (a run still training, or one
that finished: finish that one with `metarl bench finish`), or when a checkpoint (PEARL's without
its buffers) is larger than --max-mib. Parking the same run again replaces its folder. Resume, on
any machine:

    cp -r benchmarks/inflight/<run> runs/bench/
    metarl bench run --resume runs/bench/<run>
"""
from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

from metarl.app.bench.paths import INFLIGHT, RESULTS, shown
from metarl.app.bench.result import Result
from metarl.core.types import ConfigError

__all__ = ["park", "summary", "stopped_run", "own_result", "result_name", "without_buffers", "ParkError", "FILES"]

FILES = ("config.yaml", "result_name", "segments.jsonl", "runs.jsonl", "progress.csv", "eval.csv", "best.json",
         "final_eval.json", "adaptation_curve.png", "eval_metaworld.json", "eval_metaworld.csv",
         "eval_metaworld_train.json", "eval_metaworld_train.csv")


class ParkError(ConfigError):
    """A run dir that is not in the state the command expects: one line saying why and what to do."""


def newest_checkpoint(run: Path) -> tuple[Path, int]:
    from metarl.training.checkpoint import iteration_of, list_checkpoints

    found = list_checkpoints(run)
    iteration = iteration_of(found[-1]) if found else None
    if iteration is None:
        raise ParkError(f"RUN_DIR: {run} has no checkpoints/ckpt_*.pt to resume from")
    return found[-1], iteration


def result_name(run: Path) -> str:
    """The stem of the run's result files: RUN/result_name, else `metarl bench run`'s default, the
    preset name (the run dir's name up to "-s<seed>-<date>-<time>[-<n>]")."""
    f = run / "result_name"
    name = f.read_text().strip() if f.is_file() else ""
    if not name:
        name = re.sub(r"-s\d+-\d{8}-\d{6}(-\d+)?$", "", run.name)
    if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,99}", name) or name in (".", ".."):
        raise ParkError(f"RUN_DIR: {f} names the result {name[:60]!r}; allowed: letters, digits, '.', '_', '-'")
    return name


def _running(run: Path) -> bool:
    """Whether a training process on this machine (`metarl bench run`, `metarl train`, or an older
    checkout's benchmarks/run_preset.py) names the run dir on its command line (Linux /proc;
    elsewhere this check finds nothing)."""
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmd.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        metarl = any(a.endswith("metarl") or a == "metarl.app.cli" for a in argv)
        trains = any(a.endswith("run_preset.py") for a in argv) or (metarl and (
            "train" in argv or ("bench" in argv and "run" in argv)))
        if trains and any(run.name in a for a in argv):
            return True
    return False


def own_result(run: Path, results: Path) -> tuple[Path, Result | None]:
    """results/<name>.json of this run and its content (None if there is none); ParkError if that
    file is another run's result."""
    path = results / f"{result_name(run)}.json"
    if not path.is_file():
        return path, None
    r = Result.from_json(path)
    dirs = [Path(s.run_dir).name for s in r.per_seed]
    if dirs != [run.name]:
        raise ParkError(f"results: {path} is the result of {dirs}, not of {run.name}")
    return path, r


def _stretch_ends(run: Path) -> list[Any]:
    """The env steps each recorded stretch of training ended at (segments.jsonl, then runs.jsonl)."""
    ends = []
    for f in ("segments.jsonl", "runs.jsonl"):
        path = run / f
        if not path.is_file():
            continue
        for i, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                raise ParkError(f"RUN_DIR: {path} line {i + 1} is not JSON") from None
            ends.append(entry.get("to_env_steps") if isinstance(entry, dict) else None)
    return ends


def stopped_run(run: Path) -> tuple[Path, str, dict[str, Any]]:
    """The newest checkpoint, result name and final_eval of a run that stopped early, or of one at its
    budget whose final evaluation a signal cut short (final_eval_stopped); ParkError else."""
    ckpt, iteration = newest_checkpoint(run)
    try:
        final = json.loads((run / "final_eval.json").read_text())
    except (OSError, ValueError) as e:
        raise ParkError(f"RUN_DIR: {run}/final_eval.json is missing or unreadable ({e}); stop the run with "
                        f"SIGTERM to `metarl bench run` and wait for its stopped_early evaluation") from None
    if not isinstance(final, dict):
        raise ParkError(f"RUN_DIR: {run}/final_eval.json must hold a JSON object")
    if not (final.get("stopped_early") or final.get("final_eval_stopped")):
        raise ParkError(f"RUN_DIR: {run} did not stop early (final_eval.json: stopped_early is false, and its "
                        f"final evaluation ran in full); a finished run is finished with `metarl bench finish`, "
                        f"not parked")
    if final.get("iterations") != iteration:
        raise ParkError(f"RUN_DIR: the newest checkpoint {ckpt.name} is not the one final_eval.json was written "
                        f"at (iteration {final.get('iterations')}); is the run still training?")
    steps = final.get("env_steps")
    rows = (run / "progress.csv").read_text().splitlines() if (run / "progress.csv").is_file() else []
    if len(rows) > 1 and rows[-1].split(",", 1)[0] != str(steps):
        raise ParkError(f"RUN_DIR: progress.csv goes past final_eval.json's {steps} env steps: the run is still "
                        f"training (stop it with SIGTERM to `metarl bench run` and wait for it to exit)")
    if _running(run):
        raise ParkError(f"RUN_DIR: a process is still running on {run} (stop it with SIGTERM and wait)")
    ends = _stretch_ends(run)
    if not ends or ends[-1] != steps:
        raise ParkError(f"RUN_DIR: the run's last recorded stretch (runs.jsonl) does not end at final_eval.json's "
                        f"{steps} env steps; wait until `metarl bench run` has exited")
    return ckpt, result_name(run), final


def without_buffers(path: Path) -> tuple[dict[str, Any] | None, int]:
    """A PEARL checkpoint's payload with its replay buffers left out (None for a checkpoint that holds
    none: it is copied as it is), and the size in bytes of what will be parked."""
    import torch

    from metarl.training.checkpoint import load_file

    payload = load_file(path)
    agent = payload.get("agent")
    if not (isinstance(agent, dict) and agent.get("buffers") is not None):
        return None, path.stat().st_size
    light = {**payload, "agent": {**agent, "buffers": None}}
    buf = io.BytesIO()
    torch.save(light, buf)
    return light, buf.tell()


def park(run: Path, dest_root: Path = INFLIGHT, results: Path = RESULTS, max_mib: float = 64.0) -> Path:
    """Copy the stopped run `run` to `dest_root`/<run>/ and move its stopped_early result files there;
    the parked folder. ParkError (one line), writing nothing, when the run is not one to park."""
    from metarl.training.checkpoint import BEST, checkpoint_dir, write
    from metarl.training.runfiles import RunDirBusy, RunLock

    if not run.is_dir():
        raise ParkError(f"RUN_DIR: no such directory: {run}")
    run = run.resolve()
    lock = RunLock(run)
    try:
        lock.acquire()  # nothing trains in it while it is copied
    except RunDirBusy as e:
        raise ParkError(f"RUN_DIR: {e}") from None
    with lock:
        ckpt, name, final = stopped_run(run)
        best = checkpoint_dir(run) / BEST
        ckpts = [ckpt] + ([best] if best.is_file() else [])
        light: dict[Path, dict[str, Any] | None] = {}
        for c in ckpts:
            light[c], size = without_buffers(c)
            mib = size / 2**20
            if mib > max_mib:
                what = f"{c} without its replay buffers" if light[c] is not None else str(c)
                raise ParkError(f"RUN_DIR: {what} is {mib:,.0f} MiB, over --max-mib {max_mib:g} (too large to "
                                f"commit; finish this run on this machine)")
        moved: list[Path] = []
        result_json, r = own_result(run, results)
        if r is not None:  # move the stopped_early result only if it is this run's
            if not r.stopped_early:
                raise ParkError(f"results: {result_json} is not a stopped_early result; nothing parked")
            moved = sorted(results.glob(f"{name}.*"))
        dest = dest_root / run.name
        tmp = dest_root / f".{run.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "checkpoints").mkdir(parents=True)
        (tmp / "results").mkdir()
        for fname in FILES:
            if (run / fname).is_file():
                shutil.copy2(run / fname, tmp / fname)
        if (run / "tb").is_dir():
            shutil.copytree(run / "tb", tmp / "tb")
        for c in ckpts:
            payload = light[c]
            if payload is None:
                shutil.copy2(c, tmp / "checkpoints" / c.name)
            else:  # PEARL: the resume refills the buffers (a warm restart)
                write(tmp / "checkpoints" / c.name, payload)
        for f in moved:
            shutil.copy2(f, tmp / "results" / f.name)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        for f in moved:  # only once the parked copy is complete
            f.unlink()
    return dest


def summary(run: Path, dest: Path) -> str:
    """What `metarl bench park` prints: where the run went and how to resume it."""
    from metarl.training.build import needs_warm_restart
    from metarl.training.checkpoint import load_file

    final = json.loads((dest / "final_eval.json").read_text())
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 2**20
    rel = shown(dest)
    warm = any(needs_warm_restart(load_file(c)) for c in sorted((dest / "checkpoints").glob("ckpt_*.pt")))
    tasks = f"after {final.get('n_tasks')} of {final.get('n_tasks_planned')} held-out tasks"
    if not final.get("final_eval_stopped"):
        state = "stopped_early"
    elif final.get("stopped_early"):
        state = f"stopped_early (evaluation cut {tasks}), partial"
    else:
        state = f"final evaluation cut by a signal {tasks} (the resume trains nothing and runs it again in full), partial"
    return (f"parked {run.name} at {final['env_steps']:,} env steps in {rel} ({size:.1f} MiB); "
            f"{state} meta-test success {100 * final['success_by_round'][-1]:.1f}%.\n"
            + ("Its checkpoint holds no replay buffers: the resume refills them with the current policy (a warm "
               "restart, not bit-exact).\n" if warm else "") +
            f"Commit it, note it in benchmarks/inflight/README.md, and resume with:\n"
            f"    cp -r {rel} runs/bench/\n"
            f"    metarl bench run --resume runs/bench/{run.name}")

