"""`metarl train | eval | plot | report` (eval, plot, report: metarl/app/cli_eval.py). Bad input: one line on
stderr naming the field, exit code 2. A file that cannot be written (a full or read-only disk): one line
naming it and how to go on, exit code 1. Warnings: one line each."""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from metarl.app.cli_eval import _existing_ancestor, _print_curve, add_eval_commands
from metarl.app.run_report import read_eval_curve
from metarl.core.types import ConfigError, StorageError

__all__ = ["main", "make_parser", "read_eval_curve", "_existing_ancestor", "_print_curve"]

EXIT_BAD_INPUT = 2
EXIT_STORAGE = 1  # a file could not be written (full or read-only disk): the run stopped, not the input


def cmd_train(args: argparse.Namespace) -> int:
    from metarl.training.trainer import StopFlag
    from metarl.training.video import no_gl_here

    no_gl_here()  # training never renders: a bad MUJOCO_GL must not stop `import mujoco`
    # a SIGINT / SIGTERM from here on is kept for the training loop, which stops at its first chance
    # with a checkpoint (at iteration 0 during start-up): never a run dir without one
    with StopFlag() as stop:
        return _train(args, stop)


def _train(args: argparse.Namespace, stop: Any) -> int:
    from metarl.agents import AGENTS
    from metarl.training import config
    from metarl.training.run import Run

    command = " ".join(["metarl", *sys.argv[1:]])
    if args.resume:
        run = Run.resume(args.resume, args.set or [], args.allow_config_change, seed=args.seed, device=args.device,
                         command=command)
        if args.config:
            print(f"note: resuming {run.dir}; its saved config.yaml is used, {args.config} is ignored",
                  file=sys.stderr)
    else:
        if not args.config:
            raise ConfigError("CONFIG: a preset YAML is required (e.g. configs/ml1_reach_maml_trpo.yaml) "
                              "unless --resume RUN_DIR is given")
        cfg = config.load(args.config, args.set or [], seed=args.seed, device=args.device, registry=AGENTS)
        run = Run.create(cfg, command=command)
    with run:
        print(f"run dir: {run.dir}  (tensorboard --logdir {run.dir / 'tb'})", file=sys.stderr)
        outcome = run.start(stop=stop)
    if outcome.final_eval_stopped is not None:
        done, planned = outcome.final_eval_stopped
        if outcome.curve is not None:
            _print_curve(outcome.curve)
        kept = (f"the {done} done are in final_eval.json (\"final_eval_stopped\": true) and eval.csv" if done
                else "nothing of it was written")
        print(f"metarl: final evaluation stopped by a signal after {done} of {planned} held-out tasks; {kept}. "
              f"Run it in full with: metarl train --resume {run.dir}", file=sys.stderr)
        return 0
    if outcome.curve is None:
        print(f"stopped at iteration {outcome.iteration} ({outcome.env_steps:,} env steps); "
              f"checkpoint written. Resume with: metarl train --resume {run.dir}", file=sys.stderr)
        return 0
    _print_curve(outcome.curve)
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metarl", description="Meta-RL on Meta-World: train and evaluate MAML-TRPO "
                                "(also first-order and Meta-SGD), RL²-PPO, PEARL and Reptile")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a preset; writes a run dir with TensorBoard events and checkpoints")
    t.add_argument("config", nargs="?", help="preset YAML, e.g. configs/ml1_reach_maml_trpo.yaml")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. agent.inner_lr=0.05")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="auto | cpu | cuda")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest readable checkpoint")
    t.add_argument("--allow-config-change", action="store_true", help="resume even if training fields changed")
    t.set_defaults(func=cmd_train)
    add_eval_commands(sub)
    from metarl.app.bench.cli import add_bench_commands  # metarl bench run | park | finish | release | report
    add_bench_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from metarl.training.trainer import RunStopped

    args = make_parser().parse_args(argv)
    old_format = warnings.formatwarning
    warnings.formatwarning = _warning_line  # printed warnings: one line each, no source line
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"metarl: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StorageError as e:
        print(f"metarl: error: {e}", file=sys.stderr)
        return EXIT_STORAGE
    except RunStopped as e:
        print(f"metarl: stopped: {e}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = old_format


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  line: str | None = None) -> str:
    """A warning as one line: `metarl: warning: MESSAGE` (other categories than UserWarning are
    named), instead of Python's two lines with the file, the line number and the source line."""
    text = " ".join(str(message).split())
    kind = "" if category is UserWarning else f"{category.__name__}: "
    return f"metarl: warning: {kind}{text}\n"


if __name__ == "__main__":
    sys.exit(main())
