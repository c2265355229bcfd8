"""`metarl train | eval | plot | report` (eval, plot, report: metarl/cli_eval.py). Bad input: one line on
stderr naming the field, exit code 2. Warnings: one line each."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarl import runfiles
from metarl.cli_eval import _existing_ancestor, _print_curve, add_eval_commands, read_eval_curve
from metarl.types import ConfigError

if TYPE_CHECKING:  # the commands import their modules when they run (a quick --help)
    from metarl.config import RunConfig

__all__ = ["main", "make_parser", "resume_config", "read_eval_curve", "_existing_ancestor", "_print_curve"]

EXIT_BAD_INPUT = 2


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent.parent).stdout.strip() or None
    except Exception:
        return None


def _prepare_run_dir(cfg: RunConfig) -> Path:
    out = Path(cfg.run.out_dir)
    name = cfg.run.name or f"{cfg.preset}-s{cfg.run.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = out / name
    if run_dir.exists() and any(p.name != runfiles.LOCK for p in run_dir.iterdir()):  # .lock alone: a start
        raise ConfigError(f"run.name: run dir {run_dir} already exists and is not empty; "
                          f"choose another run.name or resume it with --resume {run_dir}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"run.out_dir: {out} is not a directory")
    probe = _existing_ancestor(out)
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"run.out_dir: cannot create run dir under {out}: {probe} is not writable")
    return run_dir


def resume_config(run_dir: str | Path, overrides: list[str], allow_config_change: bool = False,
                  seed: int | None = None, device: str | None = None) -> tuple[RunConfig, dict[str, Any]]:
    """(config, checkpoint payload) to continue `run_dir` from its newest readable checkpoint:
    the checkpoint's config with `overrides` applied; a change to a field that shapes training
    is refused unless `allow_config_change`."""
    from agents import AGENTS
    from metarl import checkpoint, config

    path, payload = checkpoint.load_latest(run_dir, registry=AGENTS, resume=True)
    base = config.from_dict(payload["config"], registry=AGENTS)
    raw = base.to_dict()
    for key, value in config.parse_overrides(overrides):
        config._set_dotted(raw, key, value)
    for key, value in (("seed", seed), ("device", device)):
        if value is not None:
            config._set_dotted(raw, f"run.{key}", value)
    cfg = config.from_dict(raw, base.preset, registry=AGENTS)
    # compare with the checkpoint's config as this code reads it (fields added since it was
    # written take their defaults), not with its stored hash, so new fields don't block resume
    if cfg.hash() != base.hash() and not allow_config_change:
        raise ConfigError("--resume: the config differs from the checkpoint's in fields that shape training; "
                          "allowed changes: run.env_steps, run.device, run.progress, run.keep_checkpoints, "
                          "run.torch_threads, env.fast_path, eval.* "
                          "(pass --allow-config-change to override)")
    if cfg.hash() != base.hash():  # the checkpoint's weights must fit the agent the new config builds
        try:
            checkpoint.validate(path, {**payload, "config": cfg.to_dict()}, registry=AGENTS, resume=True)
        except checkpoint.InvalidCheckpoint as e:
            raise ConfigError(f"--allow-config-change: the new config cannot take the checkpoint's state "
                              f"({str(e).removeprefix('checkpoint: ')}); allowed: changes that keep the agent's "
                              f"network sizes") from None
    return cfg, payload


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from metarl.video import no_gl_here

    no_gl_here()  # training never renders: a bad MUJOCO_GL must not stop `import mujoco`

    from agents import AGENTS
    from metarl import config
    from metarl.trainer import Trainer, benchmark_for, needs_warm_restart

    resume_payload = None
    if args.resume:
        run_dir = Path(args.resume)
        cfg, resume_payload = resume_config(run_dir, args.set or [], args.allow_config_change,
                                            seed=args.seed, device=args.device)
        if args.config:
            print(f"note: resuming {run_dir}; its saved config.yaml is used, {args.config} is ignored",
                  file=sys.stderr)
    else:
        if not args.config:
            raise ConfigError("CONFIG: a preset YAML is required (e.g. configs/ml1_reach_maml_trpo.yaml) "
                              "unless --resume RUN_DIR is given")
        cfg = config.load(args.config, args.set or [], seed=args.seed, device=args.device, registry=AGENTS)
        run_dir = None
    device = config.resolve_device(cfg.run.device)
    bench = benchmark_for(cfg)  # validates names and sizes before anything is written
    from metarl import resources
    resources.check_threads(cfg)
    if cfg.eval.video_tasks:  # fail now, not after training, when videos cannot be made here
        from metarl.video import preflight
        preflight(cfg, bench.env_factory, "eval.video_tasks")
    created = None  # the topmost directory this command created (removed again if it fails to start)
    if run_dir is None:
        run_dir = _prepare_run_dir(cfg)
        created = run_dir
        while not created.parent.exists() and created.parent != created:
            created = created.parent
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"run.out_dir: cannot create run dir {run_dir}: {e.strerror}") from e
    # one process per run dir: a second `train` (a resume, or a fresh run of the same run.name) is
    # refused in one line naming the holder's PID; a lock its dead holder left is taken over
    lock = runfiles.RunLock(run_dir, note=lambda s: print(f"metarl: note: {s}", file=sys.stderr))
    try:
        lock.acquire()
        if created is not None and any(p.name != runfiles.LOCK for p in run_dir.iterdir()):
            created = None  # another start got there first: its dir, not ours to remove
            raise ConfigError(f"run.name: run dir {run_dir} already exists and is not empty; "
                              f"choose another run.name or resume it with --resume {run_dir}")
    except BaseException as e:
        lock.release()
        if created is not None and not isinstance(e, runfiles.RunDirBusy):
            shutil.rmtree(created, ignore_errors=True)
        raise
    with lock:
        try:
            runfiles.refuse_links(run_dir)  # a link planted in the run dir: refused before anything is written
            runfiles.write_text(run_dir / "config.yaml", cfg.to_yaml())
            meta = {"command": " ".join(["metarl", *sys.argv[1:]]), "seed": cfg.run.seed, "device": str(device),
                    "git_commit": _git_commit(), "python": platform.python_version(), "torch": torch.__version__,
                    "machine": f"{platform.machine()} {os.cpu_count()} cores", "resumed": bool(args.resume),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    **({"warm_restart": True} if resume_payload is not None and needs_warm_restart(resume_payload)
                       else {}),  # PEARL resumed without its buffers: refilled, not bit-exact
                    "config_hash": cfg.hash()}  # checkpoint.check_run: the training configs this run has had
            with runfiles.open_write(run_dir / "runs.jsonl", "a") as f:
                f.write(json.dumps(meta) + "\n")
            trainer = Trainer(cfg, run_dir, device, resume_payload)
        except BaseException:
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise
        print(f"run dir: {run_dir}  (tensorboard --logdir {run_dir / 'tb'})", file=sys.stderr)
        curve = trainer.run()
    if curve is None:
        print(f"stopped at iteration {trainer.iteration} ({trainer.env_steps:,} env steps); "
              f"checkpoint written. Resume with: metarl train --resume {run_dir}", file=sys.stderr)
        return 0
    _print_curve(curve)
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metarl", description="Meta-RL on Meta-World: MAML-TRPO (more agents to come)")
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
    return p


def main(argv: list[str] | None = None) -> int:
    from metarl.trainer import RunStopped

    args = make_parser().parse_args(argv)
    old_format = warnings.formatwarning
    warnings.formatwarning = _warning_line  # printed warnings: one line each, no source line
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"metarl: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
