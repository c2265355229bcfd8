"""`metarl train | eval | plot | report` (eval, plot, report: metarl/app/cli_eval.py). Bad input: one line on
stderr naming the field, exit code 2. A file that cannot be written (a full or read-only disk): one line
naming it and how to go on, exit code 1. Warnings: one line each."""
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

from metarl.training import runfiles
from metarl.app.cli_eval import _existing_ancestor, _print_curve, add_eval_commands
from metarl.app.run_report import read_eval_curve
from metarl.core.types import ConfigError, StorageError

if TYPE_CHECKING:  # the commands import their modules when they run (a quick --help)
    from metarl.training.config import RunConfig

__all__ = ["main", "make_parser", "resume_config", "read_eval_curve", "_existing_ancestor", "_print_curve"]

EXIT_BAD_INPUT = 2
EXIT_STORAGE = 1  # a file could not be written (full or read-only disk): the run stopped, not the input


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent.parent).stdout.strip() or None
    except Exception:
        return None


def _taken(run_dir: Path) -> ConfigError:
    """The refusal of a fresh start in a run dir that holds something."""
    from metarl.training import checkpoint

    if (run_dir / "config.yaml").is_file() or checkpoint.list_checkpoints(run_dir):
        return ConfigError(f"run.name: run dir {run_dir} already exists and is not empty; "
                           f"choose another run.name or resume it with --resume {run_dir}")
    return ConfigError(f"run.name: {run_dir} already exists and holds no metarl run (no config.yaml, no "
                       f"checkpoint); choose another run.name, or remove that directory")


def _prepare_run_dir(cfg: RunConfig) -> Path:
    out = Path(cfg.run.out_dir)
    name = cfg.run.name or f"{cfg.preset}-s{cfg.run.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = out / name
    if run_dir.exists() and any(p.name != runfiles.LOCK for p in run_dir.iterdir()):  # .lock alone: a start
        raise _taken(run_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"run.out_dir: {out} is not a directory")
    probe = _existing_ancestor(out)
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"run.out_dir: cannot create run dir under {out}: {probe} is not writable")
    return run_dir


def _saved_config(run_dir: Path) -> RunConfig | None:
    """RUN/config.yaml as a config (None when the run dir has none), or one line naming the file."""
    from metarl.agents import AGENTS
    from metarl.training import config

    path = run_dir / "config.yaml"
    runfiles.refuse_links(run_dir, ["config.yaml"])  # never read (nor later rewritten) through a planted link
    if not path.exists():
        return None
    raw = config.read_yaml(path, "--resume")
    if not isinstance(raw, dict):
        raise ConfigError(f"--resume: {path} must hold a mapping of sections (run, env, agent, eval)")
    try:
        return config.from_dict(raw, registry=AGENTS)
    except ConfigError as e:
        raise ConfigError(f"--resume: {path}: {e}") from None


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _final_eval_done(run_dir: Path, env_steps: int) -> bool:
    """final_eval.json holds the whole final evaluation of the checkpoint at `env_steps`."""
    try:
        done = json.loads((run_dir / "final_eval.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(done, dict) and done.get("env_steps") == env_steps and not done.get("stopped_early") \
        and not done.get("final_eval_stopped")


def resume_config(run_dir: str | Path, overrides: list[str], allow_config_change: bool = False,
                  seed: int | None = None, device: str | None = None) -> tuple[RunConfig, dict[str, Any] | None]:
    """(config, checkpoint payload) to continue `run_dir` from its newest readable checkpoint: the
    run's config.yaml (an edit of it counts as a change, as `overrides` do) with `overrides`
    applied; a change to a field that shapes training is refused, naming the fields, unless
    `allow_config_change`. A run that has finished (budget trained, final evaluation written) is
    refused unless the budget grows. A run dir stopped before its first checkpoint (killed during
    start-up) starts over from its config.yaml: payload None."""
    from metarl.agents import AGENTS
    from metarl.training import checkpoint, config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--resume: no such run dir: {run_dir}")
    saved = _saved_config(run_dir)
    given = {k: "--set" for k, _ in config.parse_overrides(overrides)}  # field -> where this command changes it
    given.update({f"run.{k}": f"--{k}" for k, v in (("seed", seed), ("device", device)) if v is not None})
    if not checkpoint.list_checkpoints(run_dir):
        if saved is None:
            raise ConfigError(f"--resume: no checkpoint in {checkpoint.checkpoint_dir(run_dir)} and no config.yaml "
                              f"in {run_dir}: nothing to resume; start a run with metarl train CONFIG")
        raw = saved.to_dict()  # stopped before its first checkpoint: nothing trained, any field may change
        for key, value in config.parse_overrides(overrides):
            config._set_dotted(raw, key, value)
        for key, value in (("seed", seed), ("device", device)):
            if value is not None:
                config._set_dotted(raw, f"run.{key}", value)
        return config.from_dict(raw, saved.preset, registry=AGENTS), None
    path, payload = checkpoint.load_latest(run_dir, registry=AGENTS, resume=True)
    base = config.from_dict(payload["config"], registry=AGENTS)
    raw = base.to_dict()
    edited: set[str] = set()
    if saved is not None:  # the run's config as its user left it: edits count as changes
        edited = set(config.changed_fields(raw, saved.to_dict()))
        raw = saved.to_dict()
    for key, value in config.parse_overrides(overrides):
        config._set_dotted(raw, key, value)
    for key, value in (("seed", seed), ("device", device)):
        if value is not None:
            config._set_dotted(raw, f"run.{key}", value)
    cfg = config.from_dict(raw, base.preset, registry=AGENTS)
    # compare with the checkpoint's config as this code reads it (fields added since it was
    # written take their defaults), not with its stored hash, so new fields don't block resume
    changed = config.changed_fields(base.training_dict(), cfg.training_dict())
    if changed and not allow_config_change:
        def source(f: str) -> str:
            for k, flag in given.items():
                if f == k or f.startswith(k + "."):
                    return flag
            return "config.yaml" if f in edited else "the command line"

        old, new = base.to_dict(), cfg.to_dict()

        def value(d: Any, f: str) -> Any:
            for part in f.split("."):
                d = d.get(part) if isinstance(d, dict) else None
            return d

        shown = "; ".join(f"{f}: {_shown(value(old, f))} in the checkpoint, {_shown(value(new, f))} in {source(f)}"
                          for f in changed[:5]) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
        restore = f", or restore {run_dir / 'config.yaml'}" if any(source(f) == "config.yaml" for f in changed) else ""
        raise ConfigError(f"--resume: the config differs from the checkpoint's in fields that shape training ({shown}); "
                          f"allowed changes: run.env_steps, run.device, run.progress, run.keep_checkpoints, "
                          f"run.torch_threads, env.fast_path, eval.* (pass --allow-config-change to override"
                          f"{restore})")
    if changed:  # the checkpoint's weights must fit the agent the new config builds
        try:
            checkpoint.validate(path, {**payload, "config": cfg.to_dict()}, registry=AGENTS, resume=True)
        except checkpoint.InvalidCheckpoint as e:
            raise ConfigError(f"--allow-config-change: the new config cannot take the checkpoint's state "
                              f"({str(e).removeprefix('checkpoint: ')}); allowed: changes that keep the agent's "
                              f"network sizes") from None
    steps = int(payload["counters"]["env_steps"])
    if steps >= cfg.run.env_steps and _final_eval_done(run_dir, steps):
        raise ConfigError(f"--resume: {run_dir} has finished: {steps:,} env steps trained (run.env_steps="
                          f"{cfg.run.env_steps:,}) and evaluated (final_eval.json); allowed: a larger budget to "
                          f"train on, --set run.env_steps=N with N > {steps}. `metarl eval {run_dir}` evaluates it "
                          f"again")
    return cfg, payload


def cmd_train(args: argparse.Namespace) -> int:
    from metarl.training.trainer import _StopFlag
    from metarl.training.video import no_gl_here

    no_gl_here()  # training never renders: a bad MUJOCO_GL must not stop `import mujoco`
    # a SIGINT / SIGTERM from here on is kept for the training loop, which stops at its first chance
    # with a checkpoint (at iteration 0 during start-up): never a run dir without one
    with _StopFlag() as stop:
        return _train(args, stop)


def _train(args: argparse.Namespace, stop: Any) -> int:
    import torch

    from metarl.agents import AGENTS
    from metarl.training import config
    from metarl.training.runlog import check_log
    from metarl.training.trainer import Trainer
    from metarl.training.build import benchmark_for, needs_warm_restart

    resume_payload = None
    restart = False  # --resume of a run dir stopped before its first checkpoint: it starts over
    if args.resume:
        run_dir = Path(args.resume)
        cfg, resume_payload = resume_config(run_dir, args.set or [], args.allow_config_change,
                                            seed=args.seed, device=args.device)
        restart = resume_payload is None
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
    from metarl.training import resources
    resources.check_threads(cfg)
    if cfg.eval.video_tasks:  # fail now, not after training, when videos cannot be made here
        from metarl.training.video import preflight
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
            shutil.rmtree(created, ignore_errors=True)  # the parents it made before failing
            if e.errno in runfiles.DISK_ERRNOS:
                raise runfiles.write_error(e, "run.out_dir", run_dir, "the run did not start",
                                           "start it again") from None
            raise ConfigError(f"run.out_dir: cannot create run dir {run_dir}: {e.strerror}") from None
    # one process per run dir: a second `train` (a resume, or a fresh run of the same run.name) is
    # refused in one line naming the holder's PID; a lock its dead holder left is taken over
    lock = runfiles.RunLock(run_dir, note=lambda s: print(f"metarl: note: {s}", file=sys.stderr))
    try:
        lock.acquire()
        if created is not None and any(p.name != runfiles.LOCK for p in run_dir.iterdir()):
            created = None  # another start got there first: its dir, not ours to remove
            raise _taken(run_dir)
    except BaseException as e:
        lock.release()
        if created is not None and not isinstance(e, runfiles.RunDirBusy):
            shutil.rmtree(created, ignore_errors=True)
        raise
    with lock:
        try:
            runfiles.refuse_links(run_dir)  # a link planted in the run dir: refused before anything is written
            if args.resume:  # logs it could not append to: refused before config.yaml and runs.jsonl are touched
                for name in ("progress.csv", "eval.csv"):
                    check_log(run_dir / name)
            trainer = Trainer(cfg, run_dir, device, resume_payload)
        except BaseException:
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise
        if restart:
            trainer.resumed_from = 0  # what the stopped start logged is dropped: it starts over
            print(f"metarl: note: {run_dir} has no checkpoint (it stopped before its first one); starting it over "
                  f"from its config.yaml", file=sys.stderr)
        try:  # only a resume that can go on rewrites config.yaml (with the changes it takes) and adds to runs.jsonl
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
        except BaseException as e:
            trainer.sampler.vec_env.close()
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            if isinstance(e, OSError) and e.errno in runfiles.DISK_ERRNOS:
                raise (runfiles.write_error(e, "run dir", run_dir, f"the run did not start ({created} removed)",
                                            "start it again") if created is not None else
                       runfiles.write_error(e, "run dir", run_dir, "training did not resume; its checkpoints are "
                                            "unchanged", f"resume with: metarl train --resume {run_dir}")) from None
            raise
        print(f"run dir: {run_dir}  (tensorboard --logdir {run_dir / 'tb'})", file=sys.stderr)
        curve = trainer.run(stop=stop)
    if trainer.final_eval_stopped is not None:
        done, planned = trainer.final_eval_stopped
        if curve is not None:
            _print_curve(curve)
        kept = (f"the {done} done are in final_eval.json (\"final_eval_stopped\": true) and eval.csv" if done
                else "nothing of it was written")
        print(f"metarl: final evaluation stopped by a signal after {done} of {planned} held-out tasks; {kept}. "
              f"Run it in full with: metarl train --resume {run_dir}", file=sys.stderr)
        return 0
    if curve is None:
        print(f"stopped at iteration {trainer.iteration} ({trainer.env_steps:,} env steps); "
              f"checkpoint written. Resume with: metarl train --resume {run_dir}", file=sys.stderr)
        return 0
    _print_curve(curve)
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
