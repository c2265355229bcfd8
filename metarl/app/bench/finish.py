"""`metarl bench finish RUN_DIR`: a benchmark run that reached its budget gets the meta-train
evaluation, the released policy, the report, and the parked copy's removal, in one command.

Steps, for a run whose result (benchmarks/results/<name>.json, written by `metarl bench run`) is
this run's and did not stop early:
1. the Meta-World protocol on training goals, unless the run dir has it already:
   `metarl eval RUN_DIR --protocol metaworld --split train --goals-per-class N` (N: 10 by default),
   copied to benchmarks/results/<name>.eval_metaworld_train.json (the report's meta-train column);
2. `metarl bench release RUN_DIR <name>`: the final policy in benchmarks/checkpoints/ + MANIFEST;
3. `metarl bench report`: benchmarks/results/README.md;
4. benchmarks/inflight/<run>/ removed, if the run had been parked there.
What is left by hand: the README's results table and benchmarks/inflight/README.md.
Any agent's run: a PEARL run dir's checkpoints hold its replay buffers, the released policy does not.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from metarl.app.bench import release, report
from metarl.app.bench.park import ParkError, own_result, result_name
from metarl.app.bench.paths import CHECKPOINTS, INFLIGHT, RESULTS
from metarl.app.bench.result import Result
from metarl.core.types import ConfigError

__all__ = ["finish", "finished_result"]


def finished_result(run: Path, results: Path) -> tuple[str, Result]:
    """The result name and file of a run whose result is its own and did not stop early; ParkError else."""
    path, r = own_result(run, results)
    if r is None:
        raise ParkError(f"RUN_DIR: no result {path} for this run (`metarl bench run` writes it when the run ends)")
    if r.stopped_early:
        budget = f"{r.budget_env_steps:,}" if r.budget_env_steps is not None else "?"
        raise ParkError(f"RUN_DIR: {path} says stopped_early ({r.env_steps:,} of {budget} env steps): resume "
                        f"the run first (metarl bench run --resume {run})")
    return result_name(run), r


def _eval_train(run: Path, goals_per_class: int) -> int:
    """`metarl eval RUN --protocol metaworld --split train --goals-per-class N`, in this process."""
    from metarl.app.cli_eval import add_eval_commands

    parser = argparse.ArgumentParser(prog="metarl")
    add_eval_commands(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(["eval", str(run), "--protocol", "metaworld", "--split", "train",
                              "--goals-per-class", str(goals_per_class)])
    return int(args.func(args))


def finish(run: Path, results: Path = RESULTS, goals_per_class: int = 10, inflight: Path = INFLIGHT,
           checkpoints: Path = CHECKPOINTS) -> list[str]:
    """Run the steps; returns what was done, one line each. ParkError / ConfigError (one line) when
    the run is not one to finish or a step fails."""
    if not run.is_dir():
        raise ParkError(f"RUN_DIR: no such directory: {run}")
    if goals_per_class < 0:
        raise ConfigError(f"--goals-per-class: must be >= 0 (0: all), got {goals_per_class}")
    run = run.resolve()
    name, _ = finished_result(run, results)
    done = []
    train = run / "eval_metaworld_train.json"
    if not train.is_file():
        rc = _eval_train(run, goals_per_class)
        if rc != 0 or not train.is_file():
            raise ParkError(f"metarl eval {run} --split train failed (exit {rc})")
        done.append(f"meta-train evaluation ({goals_per_class} goals per class): {train}")
    shutil.copyfile(train, results / f"{name}.eval_metaworld_train.json")
    done.append(f"copied to {results / (name + '.eval_metaworld_train.json')}")
    target = release.release(run, name, checkpoints)
    done.append(f"released {target} (+ MANIFEST)")
    report.build(results)
    done.append(f"rebuilt {results / 'README.md'}")
    parked = inflight / run.name
    if parked.is_dir():
        shutil.rmtree(parked)
        done.append(f"removed the parked copy {parked}")
    return done
