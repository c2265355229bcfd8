"""`metarl bench run | park | finish | release | report`: the benchmark workflow (docs/design.md, "The
benchmark workflow"). Registered on metarl's parser by `add_bench_commands`; bad input ends in one
line (ConfigError, exit code 2), as every metarl command."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from metarl.app.bench.paths import CHECKPOINTS, INFLIGHT, RESULTS, RUNS, shown

__all__ = ["add_bench_commands"]


def _run_command(args: argparse.Namespace) -> str:
    """The command line as given (the result files and runs.jsonl record it)."""
    words = ["metarl", "bench", "run"]
    if args.config is not None:
        words.append(args.config)
    if args.resume is not None:
        words += ["--resume", args.resume]
    if args.seeds_given:
        words += ["--seeds", *map(str, args.seeds)]
    for s in args.set:
        words += ["--set", s]
    for flag, value, default in (("--device", args.device, "cpu"), ("--results", args.results, str(RESULTS)),
                                 ("--runs", args.runs, str(RUNS)), ("--name", args.name, None)):
        if value != default:
            words += [flag, value]
    return " ".join(shlex.quote(w) for w in words)


class _Seeds(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.seeds_given = True


def cmd_run(args: argparse.Namespace) -> int:
    from metarl.app.bench.run import run_preset

    return run_preset(args.config, args.resume, args.seeds, args.set, args.device, Path(args.results),
                      Path(args.runs), args.name, _run_command(args))


def cmd_park(args: argparse.Namespace) -> int:
    from metarl.app.bench.park import park, summary

    run = Path(args.run_dir)
    dest = park(run, Path(args.dest), Path(args.results), args.max_mib)
    print(summary(run, dest))
    return 0


def cmd_finish(args: argparse.Namespace) -> int:
    from metarl.app.bench.finish import finish

    for line in finish(Path(args.run_dir), Path(args.results), args.goals_per_class, Path(args.inflight),
                       Path(args.checkpoints)):
        print(line)
    print("left by hand: the README's results table, and benchmarks/inflight/README.md if the run was parked")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from metarl.app.bench.release import release

    target = release(args.source, args.name, Path(args.dest))
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KiB) and {target.parent / 'MANIFEST'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from metarl.app.bench.report import build

    results = Path(args.results)
    rows = build(results)
    print(f"wrote {results / 'README.md'} ({len(rows)} benchmark rows: {', '.join(rows) or 'none'})")
    return 0


def add_bench_commands(sub: Any) -> None:
    """`metarl bench ...` on metarl's subparsers."""
    b = sub.add_parser("bench", help="the benchmark workflow: run, park, finish, release, report",
                       description="Train presets into benchmarks/results/, park stopped runs in "
                                   "benchmarks/inflight/, finish and release them, rebuild the results README.")
    bs = b.add_subparsers(dest="bench_cmd", required=True)

    r = bs.add_parser("run", help="train a preset's seeds (or resume a run dir) and write benchmarks/results/NAME.*",
                      description="Train a preset's seeds, evaluate them on held-out tasks and write "
                                  "RESULTS/NAME.{json,md,png}. SIGTERM: evaluate the policy as it is (stopped_early).")
    r.add_argument("config", nargs="?", help="preset YAML, e.g. configs/ml1_reach_maml_trpo.yaml")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue this stopped run instead of starting new ones")
    r.add_argument("--seeds", type=int, nargs="+", default=[1], action=_Seeds, help="one run per seed (default: 1)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    r.add_argument("--device", default="cpu", help="auto | cpu | cuda (default: cpu)")
    r.add_argument("--results", default=str(RESULTS), help=f"where the result files go (default: {shown(RESULTS)})")
    r.add_argument("--runs", default=str(RUNS), help=f"where the run dirs go (default: {shown(RUNS)})")
    r.add_argument("--name", help="result file stem (default: the name the run was started with, else the "
                                  "preset name), e.g. ml10_maml_trpo_s2")
    r.set_defaults(func=cmd_run, seeds_given=False)

    p = bs.add_parser("park", help="copy a run stopped with SIGTERM to benchmarks/inflight/ (PEARL: no buffers)",
                      description="Copy a run stopped with SIGTERM to DEST/<run>/ (newest checkpoint, logs; PEARL's "
                                  "without replay buffers) and move its stopped_early result there.")
    p.add_argument("run_dir", help="a run dir stopped with SIGTERM")
    p.add_argument("--dest", default=str(INFLIGHT), help=f"default: {shown(INFLIGHT)}")
    p.add_argument("--results", default=str(RESULTS), help=f"default: {shown(RESULTS)}")
    p.add_argument("--max-mib", type=float, default=64.0, help="largest checkpoint to park (MiB, default 64)")
    p.set_defaults(func=cmd_park)

    f = bs.add_parser("finish", help="meta-train evaluation, release and report for a run at its budget",
                      description="For a run that reached its budget: the Meta-World protocol on training goals, "
                                  "the released policy, the results README, the parked copy removed.")
    f.add_argument("run_dir", help="a run dir whose `metarl bench run` reached its budget")
    f.add_argument("--goals-per-class", type=int, default=10, help="training goals per class (0: all; default 10)")
    f.add_argument("--results", default=str(RESULTS), help=f"default: {shown(RESULTS)}")
    f.add_argument("--checkpoints", default=str(CHECKPOINTS), help=f"where it releases (default: {shown(CHECKPOINTS)})")
    f.add_argument("--inflight", default=str(INFLIGHT), help=f"where a parked copy is (default: {shown(INFLIGHT)})")
    f.set_defaults(func=cmd_finish)

    rel = bs.add_parser("release", help="write a run's policy-only checkpoint and its MANIFEST line",
                        description="Write DEST/NAME.pt (policy only, loads with weights_only=True) and its "
                                    "SHA-256 line in DEST/MANIFEST.")
    rel.add_argument("source", help="run dir (its newest checkpoint) or checkpoint file")
    rel.add_argument("name", help="released file stem, e.g. ml10_maml_trpo_s1")
    rel.add_argument("--dest", default=str(CHECKPOINTS), help=f"default: {shown(CHECKPOINTS)}")
    rel.set_defaults(func=cmd_release)

    rp = bs.add_parser("report", help="rebuild benchmarks/results/README.md from the result files",
                       description="Rebuild RESULTS/README.md, each row's aggregate JSON and figures from the "
                                   "per-seed result files.")
    rp.add_argument("--results", default=str(RESULTS), help=f"default: {shown(RESULTS)}")
    rp.set_defaults(func=cmd_report)
