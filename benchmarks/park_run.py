"""Park a benchmark run stopped with SIGTERM in benchmarks/inflight/, so that a later session, on
any machine, can commit-clone-resume it.

    python benchmarks/park_run.py runs/bench/ml10_rl2_ppo-s1-20261127-222340

What it copies: what a resume needs (config.yaml, result_name, segments.jsonl, the newest
checkpoint) and what the run has measured so far (best.pt and best.json, progress.csv, eval.csv,
the Meta-World protocol results, final_eval.json, adaptation_curve.png, tb/). It moves the
stopped_early result that run_preset.py wrote (benchmarks/results/<name>.*) into the parked
folder's results/, so the report never mixes a partial seed into a finished row.

PEARL checkpoints are parked without their replay buffers (gigabytes, not committable): the
resume on the next machine is then a warm restart, which refills the buffers with the current
policy before updates go on (metarl/agents/pearl.py; recorded in segments.jsonl by run_preset.py, in
runs.jsonl by `metarl train --resume`, and as "warm_restart" in the result). It continues the
run, not bit-exactly; a run whose own checkpoints (with buffers) are still on disk resumes
bit-exactly from them instead.

It refuses, and writes nothing, when the run has not stopped early (a run still training, or one
that finished: finish that one with benchmarks/finish_run.py), or when a checkpoint (PEARL's
without its buffers) is larger than --max-mib. Parking the same run again replaces its folder.
Resume, on any machine:

    cp -r benchmarks/inflight/<run> runs/bench/
    python benchmarks/run_preset.py --resume runs/bench/<run>
"""
from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INFLIGHT = ROOT / "benchmarks" / "inflight"
RESULTS = ROOT / "benchmarks" / "results"
FILES = ("config.yaml", "result_name", "segments.jsonl", "progress.csv", "eval.csv", "best.json",
         "final_eval.json", "adaptation_curve.png", "eval_metaworld.json", "eval_metaworld.csv",
         "eval_metaworld_train.json", "eval_metaworld_train.csv")


class ParkError(Exception):
    pass


def newest_checkpoint(run: Path) -> tuple[Path, int]:
    from metarl.training.checkpoint import iteration_of, list_checkpoints

    found = list_checkpoints(run)
    if not found:
        raise ParkError(f"RUN_DIR: {run} has no checkpoints/ckpt_*.pt to resume from")
    return found[-1], iteration_of(found[-1])


def result_name(run: Path) -> str:
    f = run / "result_name"
    name = f.read_text().strip() if f.is_file() else ""
    if not name:  # run_preset's default stem: the preset name, the run dir's name up to "-s<seed>-"
        name = re.sub(r"-s\d+-\d{8}-\d{6}$", "", run.name)
    return name


def _running(run: Path) -> bool:
    """Whether a training process on this machine (run_preset.py or `metarl train`) names the run
    dir on its command line (Linux /proc; elsewhere this check finds nothing)."""
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmd.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        trains = any(a.endswith("run_preset.py") for a in argv) or ("train" in argv and any(
            a.endswith("metarl") or a == "metarl.app.cli" for a in argv))
        if trains and any(run.name in a for a in argv):
            return True
    return False


def own_result(run: Path, results: Path) -> tuple[Path, dict | None]:
    """benchmarks/results/<name>.json of this run and its content (None if there is none);
    ParkError if that file is another run's result."""
    path = results / f"{result_name(run)}.json"
    if not path.is_file():
        return path, None
    r = json.loads(path.read_text())
    dirs = [Path(s.get("run_dir", "")).name for s in r.get("per_seed", [])]
    if dirs != [run.name]:
        raise ParkError(f"results: {path} is the result of {dirs}, not of {run.name}")
    return path, r


def stopped_run(run: Path) -> tuple[Path, str, dict]:
    """The newest checkpoint, result name and final_eval of a run that stopped early; ParkError else."""
    if not (run / "config.yaml").is_file() or not (run / "checkpoints").is_dir():
        raise ParkError(f"RUN_DIR: {run} is not a run dir (no config.yaml and checkpoints/)")
    ckpt, iteration = newest_checkpoint(run)
    try:
        final = json.loads((run / "final_eval.json").read_text())
    except (OSError, ValueError) as e:
        raise ParkError(f"RUN_DIR: {run}/final_eval.json is missing or unreadable ({e}); stop the run with "
                        f"SIGTERM to run_preset.py and wait for its stopped_early evaluation") from None
    if not final.get("stopped_early"):
        raise ParkError(f"RUN_DIR: {run} did not stop early (final_eval.json: stopped_early is false); "
                        f"a finished run is finished with benchmarks/finish_run.py, not parked")
    if final.get("iterations") != iteration:
        raise ParkError(f"RUN_DIR: the newest checkpoint {ckpt.name} is not the one final_eval.json was written "
                        f"at (iteration {final.get('iterations')}); is the run still training?")
    steps = final.get("env_steps")
    rows = (run / "progress.csv").read_text().splitlines() if (run / "progress.csv").is_file() else []
    if len(rows) > 1 and rows[-1].split(",", 1)[0] != str(steps):
        raise ParkError(f"RUN_DIR: progress.csv goes past final_eval.json's {steps} env steps: the run is still "
                        f"training (stop it with SIGTERM to run_preset.py and wait for it to exit)")
    if _running(run):
        raise ParkError(f"RUN_DIR: a process is still running on {run} (stop it with SIGTERM and wait)")
    segments = [json.loads(x) for x in (run / "segments.jsonl").read_text().splitlines() if x.strip()] \
        if (run / "segments.jsonl").is_file() else []
    if not segments or segments[-1].get("to_env_steps") != steps:
        raise ParkError(f"RUN_DIR: segments.jsonl does not end at final_eval.json's {steps} env steps; wait "
                        f"until run_preset.py has exited")
    return ckpt, result_name(run), final


def without_buffers(path: Path) -> tuple[dict | None, int]:
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
    from metarl.training.checkpoint import BEST, checkpoint_dir, write

    run = run.resolve()
    ckpt, name, final = stopped_run(run)
    best = checkpoint_dir(run) / BEST
    ckpts = [ckpt] + ([best] if best.is_file() else [])
    light = {}
    for c in ckpts:
        light[c], size = without_buffers(c)
        mib = size / 2**20
        if mib > max_mib:
            what = f"{c} without its replay buffers" if light[c] is not None else str(c)
            raise ParkError(f"RUN_DIR: {what} is {mib:,.0f} MiB, over --max-mib {max_mib:g} (too large to commit; "
                            f"finish this run on this machine)")
    moved = []
    result_json, r = own_result(run, results)
    if r is not None:  # move the stopped_early result only if it is this run's
        if not r.get("stopped_early"):
            raise ParkError(f"results: {result_json} is not a stopped_early result; nothing parked")
        moved = sorted(results.glob(f"{name}.*"))
    dest = dest_root / run.name
    tmp = dest_root / f".{run.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints").mkdir(parents=True)
    (tmp / "results").mkdir()
    for f in FILES:
        if (run / f).is_file():
            shutil.copy2(run / f, tmp / f)
    if (run / "tb").is_dir():
        shutil.copytree(run / "tb", tmp / "tb")
    for c in ckpts:
        if light[c] is None:
            shutil.copy2(c, tmp / "checkpoints" / c.name)
        else:  # PEARL: the resume refills the buffers (a warm restart)
            write(tmp / "checkpoints" / c.name, light[c])
    for f in moved:
        shutil.copy2(f, tmp / "results" / f.name)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    for f in moved:  # only once the parked copy is complete
        f.unlink()
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run dir under runs/bench/ stopped with SIGTERM")
    p.add_argument("--dest", default=str(INFLIGHT))
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--max-mib", type=float, default=64.0, help="largest checkpoint to park (MiB)")
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    if not run.is_dir():
        print(f"park_run: error: RUN_DIR: no such directory: {run}", file=sys.stderr)
        return 2
    try:
        dest = park(run, Path(args.dest), Path(args.results), args.max_mib)
    except ParkError as e:
        print(f"park_run: error: {e}", file=sys.stderr)
        return 2
    final = json.loads((dest / "final_eval.json").read_text())
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 2**20
    rel = dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest
    from metarl.training.checkpoint import load_file
    from metarl.training.build import needs_warm_restart
    warm = any(needs_warm_restart(load_file(c)) for c in sorted((dest / "checkpoints").glob("ckpt_*.pt")))
    print(f"parked {run.name} at {final['env_steps']:,} env steps in {rel} ({size:.1f} MiB); "
          f"stopped_early meta-test success {100 * final['success_by_round'][-1]:.1f}%.\n"
          + ("Its checkpoint holds no replay buffers: the resume refills them with the current policy (a warm "
             "restart, not bit-exact).\n" if warm else "") +
          f"Commit it, note it in benchmarks/inflight/README.md, and resume with:\n"
          f"    cp -r {rel} runs/bench/\n"
          f"    python benchmarks/run_preset.py --resume runs/bench/{run.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
