"""Finish a benchmark run that reached its budget: the meta-train evaluation, the released policy,
the report, and the parked copy's removal, in one command.

    python benchmarks/finish_run.py runs/bench/ml10_rl2_ppo-s1-20261127-222340

Steps, for a run whose run_preset.py result (benchmarks/results/<name>.json) is this run's and
did not stop early:
1. the Meta-World protocol on training goals, unless the run dir has it already:
   `metarl eval RUN_DIR --protocol metaworld --split train --goals-per-class N` (N: 10 by default),
   copied to benchmarks/results/<name>.eval_metaworld_train.json (the report's meta-train column);
2. `benchmarks/release.py RUN_DIR <name>`: the final policy in benchmarks/checkpoints/ + MANIFEST;
3. `benchmarks/report.py`: benchmarks/results/README.md;
4. benchmarks/inflight/<run>/ removed, if the run had been parked there.
What is left by hand: the README's results table and benchmarks/inflight/README.md.
Any agent's run: a PEARL run dir's checkpoints hold its replay buffers, the released policy does not.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from park_run import INFLIGHT, RESULTS, ParkError, own_result, result_name  # noqa: E402


def finished_result(run: Path, results: Path) -> tuple[str, dict]:
    path, r = own_result(run, results)
    if r is None:
        raise ParkError(f"RUN_DIR: no result {path} for this run (run_preset.py writes it when the run ends)")
    if r.get("stopped_early"):
        raise ParkError(f"RUN_DIR: {path} says stopped_early ({r.get('env_steps'):,} of "
                        f"{r.get('budget_env_steps'):,} env steps): resume the run first "
                        f"(python benchmarks/run_preset.py --resume {run})")
    return result_name(run), r


def finish(run: Path, results: Path = RESULTS, goals_per_class: int = 10, inflight: Path = INFLIGHT,
           checkpoints: Path | None = None) -> list[str]:
    """Run the steps; returns what was done, one line each."""
    from metarl.app.cli import main as metarl_main

    import release
    import report

    run = run.resolve()
    name, _ = finished_result(run, results)
    done = []
    train = run / "eval_metaworld_train.json"
    if not train.is_file():
        rc = metarl_main(["eval", str(run), "--protocol", "metaworld", "--split", "train",
                          "--goals-per-class", str(goals_per_class)])
        if rc != 0 or not train.is_file():
            raise ParkError(f"metarl eval {run} --split train failed (exit {rc})")
        done.append(f"meta-train evaluation ({goals_per_class} goals per class): {train}")
    shutil.copyfile(train, results / f"{name}.eval_metaworld_train.json")
    done.append(f"copied to {results / (name + '.eval_metaworld_train.json')}")
    target = release.release(str(run), name, release.DEST if checkpoints is None else checkpoints)
    done.append(f"released {target} (+ MANIFEST)")
    if report.main(["--results", str(results)]) != 0:
        raise ParkError("benchmarks/report.py failed")
    done.append(f"rebuilt {results / 'README.md'}")
    parked = inflight / run.name
    if parked.is_dir():
        shutil.rmtree(parked)
        done.append(f"removed the parked copy {parked}")
    return done


def main(argv=None) -> int:
    from metarl.core.types import ConfigError

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run dir under runs/bench/ whose run_preset.py run reached its budget")
    p.add_argument("--goals-per-class", type=int, default=10, help="training goals per class for step 1")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--checkpoints", default=str(ROOT / "benchmarks" / "checkpoints"), help="where step 2 releases")
    p.add_argument("--inflight", default=str(INFLIGHT), help="where step 4 looks for a parked copy")
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    if not run.is_dir():
        print(f"finish_run: error: RUN_DIR: no such directory: {run}", file=sys.stderr)
        return 2
    if args.goals_per_class < 0:
        print(f"finish_run: error: --goals-per-class: must be >= 0 (0: all), got {args.goals_per_class}",
              file=sys.stderr)
        return 2
    try:
        for line in finish(run, Path(args.results), args.goals_per_class, Path(args.inflight),
                           Path(args.checkpoints)):
            print(line)
    except (ParkError, ConfigError) as e:
        print(f"finish_run: error: {e}", file=sys.stderr)
        return 2
    print("left by hand: the README's results table, and benchmarks/inflight/README.md if the run was parked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
