"""`metarl train | eval | plot`. Bad input: one line on stderr naming the field, exit code 2."""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarl.types import ConfigError

if TYPE_CHECKING:  # the commands import their modules when they run (a quick --help)
    import torch

    from metarl.config import RunConfig
    from metarl.evaluation import MetaworldProtocol, ProtocolResult
    from metarl.types import AdaptationCurve

EXIT_BAD_INPUT = 2


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent.parent).stdout.strip() or None
    except Exception:
        return None


def _existing_ancestor(path: Path) -> Path:
    """`path` itself or its nearest existing parent: where creating `path` would start."""
    while not path.exists():
        path = path.parent
    return path


def _prepare_run_dir(cfg: RunConfig) -> Path:
    out = Path(cfg.run.out_dir)
    name = cfg.run.name or f"{cfg.preset}-s{cfg.run.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = out / name
    if run_dir.exists() and any(run_dir.iterdir()):
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
    from metarl import checkpoint, config

    _, payload = checkpoint.load_latest(run_dir)
    base = config.from_dict(payload["config"])
    raw = base.to_dict()
    for key, value in config.parse_overrides(overrides):
        config._set_dotted(raw, key, value)
    for key, value in (("seed", seed), ("device", device)):
        if value is not None:
            config._set_dotted(raw, f"run.{key}", value)
    cfg = config.from_dict(raw, base.preset)
    # compare with the checkpoint's config as this code reads it (fields added since it was
    # written take their defaults), not with its stored hash, so new fields don't block resume
    if cfg.hash() != base.hash() and not allow_config_change:
        raise ConfigError("--resume: the config differs from the checkpoint's in fields that shape training; "
                          "allowed changes: run.env_steps, run.device, run.progress, run.keep_checkpoints, "
                          "run.torch_threads, env.fast_path, eval.* "
                          "(pass --allow-config-change to override)")
    return cfg, payload


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from metarl import config
    from metarl.trainer import Trainer, benchmark_for

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
        cfg = config.load(args.config, args.set or [], seed=args.seed, device=args.device)
        run_dir = None
    device = config.resolve_device(cfg.run.device)
    benchmark_for(cfg)  # validates names and sizes before anything is written
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
    try:
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        meta = {"command": " ".join(["metarl", *sys.argv[1:]]), "seed": cfg.run.seed, "device": str(device),
                "git_commit": _git_commit(), "python": platform.python_version(), "torch": torch.__version__,
                "machine": f"{platform.machine()} {os.cpu_count()} cores", "resumed": bool(args.resume),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "config_hash": cfg.hash()}  # checkpoint.check_run: the training configs this run has had
        with (run_dir / "runs.jsonl").open("a") as f:
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


def _print_curve(curve: AdaptationCurve, per_task: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    k_cols = [f"@{k}" for k in range(curve.rounds + 1)]
    table = Table(title="meta-test success (return) after k adaptation rounds")
    table.add_column("task")
    for c in k_cols:
        table.add_column(c, justify="right")
    if per_task:
        for i, t in enumerate(curve.tasks):
            table.add_row(t.label, *[f"{curve.success[i, k]:.0%} ({curve.returns[i, k]:.1f})"
                                     for k in range(curve.rounds + 1)])
    else:
        for name, (s, r) in curve.by_class().items():
            table.add_row(name, *[f"{s[k]:.0%} ({r[k]:.1f})" for k in range(len(s))])
    table.add_row("[bold]mean", *[f"{s:.0%} ({r:.1f})" for s, r in
                                  zip(curve.success_by_round(), curve.return_by_round())])
    Console().print(table)


def _eval_setup(args):
    """(checkpoint path, payload, config with --horizon applied, device) for `metarl eval`."""
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed: must be in 0..{2**32 - 1}, got {args.seed}")
    from metarl import checkpoint, config

    ckpt_path, payload = checkpoint.resolve(args.checkpoint)
    cfg = config.from_dict(payload["config"])
    horizon = args.horizon
    if horizon is None and args.protocol == "metaworld" and cfg.env.benchmark != "toy":
        horizon = 500  # the protocol's horizon, whatever the run trained with
    if horizon is not None:
        if horizon < 1:
            raise ConfigError(f"--horizon: must be >= 1, got {horizon}")
        d = cfg.to_dict()
        d["env"]["max_episode_steps"] = horizon
        cfg = config.from_dict(d)
    return ckpt_path, payload, cfg, config.resolve_device(args.device)


def _default_out_dir(ckpt_path: Path) -> Path:
    """A run's checkpoint (RUN_DIR/checkpoints/x.pt) -> RUN_DIR; a loose file -> <stem>_eval/ beside it."""
    if ckpt_path.parent.name == "checkpoints" and (ckpt_path.parent.parent / "config.yaml").is_file():
        return ckpt_path.parent.parent
    return ckpt_path.parent / f"{ckpt_path.stem}_eval"


def cmd_eval(args: argparse.Namespace) -> int:
    if args.protocol == "metaworld":
        return cmd_eval_metaworld(args)
    import numpy as np
    import torch

    from metarl.evaluation import evaluate, select_tasks
    from metarl.trainer import build

    ckpt_path, payload, cfg, device = _eval_setup(args)
    if args.rounds is not None and args.rounds < 0:
        raise ConfigError(f"--rounds: must be >= 0, got {args.rounds}")
    if args.episodes is not None and args.episodes < 1:
        raise ConfigError(f"--episodes: must be >= 1, got {args.episodes}")
    out = Path(args.out) if args.out else ckpt_path.parent.parent / f"eval_{args.split}" / "eval.csv"
    torch.manual_seed(args.seed)
    bench, sampler, agent = build(cfg, device)
    try:
        agent.load_state_dict(payload["agent"])
        tasks = select_tasks(bench.tasks(args.split), args.tasks_per_class)
        rounds = cfg.eval.rounds if args.rounds is None else args.rounds
        episodes = args.episodes or cfg.eval.episodes_per_round
        deterministic = cfg.eval.deterministic if args.deterministic is None else args.deterministic
        curve = evaluate(agent, sampler, tasks, rounds, episodes, np.random.default_rng(args.seed), deterministic)
    finally:
        sampler.vec_env.close()
    _print_curve(curve, per_task=args.per_task)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as f:
            w = csv.DictWriter(f, ["checkpoint", "split", "task", "task_index", "round", "success", "return"])
            w.writeheader()
            for row in curve.rows():
                w.writerow({"checkpoint": str(ckpt_path), "split": args.split, **row})
    except OSError as e:
        raise ConfigError(f"--out: cannot write {out}: {e.strerror}") from e
    print(f"wrote {out}", file=sys.stderr)
    return 0


def run_metaworld_protocol(cfg: RunConfig, payload: dict[str, Any], device: torch.device, split: str,
                           goals_per_class: int, seed: int, protocol: MetaworldProtocol,
                           progress: bool = True) -> tuple[ProtocolResult, int]:
    """Build the checkpoint's agent and run the Meta-World protocol on `split`'s goals.
    Returns (ProtocolResult, pool size of metaworld's own test vector env)."""
    import numpy as np
    import torch

    from metarl.evaluation import metaworld_evaluate, official_pool_size, select_tasks
    from metarl.trainer import build

    torch.manual_seed(seed)
    bench, sampler, agent = build(cfg, device)
    try:
        agent.load_state_dict(payload["agent"])
        tasks = select_tasks(bench.tasks(split), goals_per_class)
        p = protocol
        total = len(tasks) * (p.adaptation_steps * p.adaptation_episodes + p.evaluation_episodes) * sampler.horizon
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        with Progress(TextColumn("metaworld protocol"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} steps"),
                      TimeRemainingColumn(), disable=not progress, transient=True) as bar:
            job = bar.add_task("eval", total=total)
            result = metaworld_evaluate(agent, sampler, tasks, np.random.default_rng(seed), protocol,
                                        on_progress=lambda n: bar.advance(job, n))
    finally:
        sampler.vec_env.close()
    n_classes = len({t.name for t in tasks})
    return result, official_pool_size(n_classes)


def _print_protocol(summary: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in ("class", "goals", "before adaptation", "after adaptation", "return"):
        table.add_column(c, justify="left" if c == "class" else "right")
    for name, c in summary["per_class"].items():
        table.add_row(name, str(c["goals"]), f"{c['success_pre_adaptation']:.1%}", f"{c['success']:.1%}",
                      f"{c['return']:.1f}")
    table.add_row("[bold]mean over classes", str(summary["n_goals"]), f"{summary['success_pre_adaptation']:.1%}",
                  f"[bold]{summary['success']:.1%}", f"{summary['return']:.1f}")
    Console().print(table)
    print(f"success (per goal, then class, then mean): {summary['success']:.1%}; "
          f"as metaworld 3.1.1 pools it (first {summary['evaluation_episodes']} finished episodes of "
          f"{summary['pool_size']} envs per class): {summary['success_metaworld_pooled']:.1%}")


def cmd_eval_metaworld(args: argparse.Namespace) -> int:
    from metarl.evaluation import MetaworldProtocol
    from metarl.logging import write_protocol_result

    for flag in ("rounds", "episodes"):
        if getattr(args, flag) is not None:
            raise ConfigError(f"--{flag}: belongs to --protocol curve; with --protocol metaworld use "
                              f"--adaptation-episodes, --adaptation-steps, --evaluation-episodes")
    if args.deterministic is not None:
        raise ConfigError("--deterministic: belongs to --protocol curve; with --protocol metaworld use "
                          "--eval-deterministic (and --adapt-deterministic)")
    if args.tasks_per_class:
        raise ConfigError("--tasks-per-class: belongs to --protocol curve; with --protocol metaworld use "
                          "--goals-per-class")
    if args.goals_per_class < 0:
        raise ConfigError(f"--goals-per-class: must be >= 0 (0: all), got {args.goals_per_class}")
    protocol = MetaworldProtocol(args.adaptation_episodes, args.adaptation_steps, args.evaluation_episodes,
                                 args.adapt_deterministic, args.eval_deterministic)
    ckpt_path, payload, cfg, device = _eval_setup(args)
    out_dir = Path(args.out) if args.out else _default_out_dir(ckpt_path)
    stem = "eval_metaworld" if args.split == "test" else "eval_metaworld_train"
    probe = _existing_ancestor(out_dir)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: cannot write under {out_dir}: {probe} is not writable")
    t0 = time.time()
    result, pool = run_metaworld_protocol(cfg, payload, device, args.split, args.goals_per_class, args.seed,
                                          protocol, progress=sys.stderr.isatty())
    summary = {**result.to_dict(pool), "checkpoint": str(ckpt_path), "split": args.split, "seed": args.seed,
               "benchmark": cfg.env.benchmark, "env_name": cfg.env.env_name, "agent": cfg.agent.name,
               "wall_seconds": time.time() - t0}
    step = int(payload.get("counters", {}).get("env_steps", 0))
    tb = out_dir / "tb" if out_dir == _default_out_dir(ckpt_path) and (out_dir / "tb").is_dir() else None
    _print_protocol(summary, f"{cfg.env.benchmark} {args.split} goals, Meta-World protocol "
                             f"({step:,} env steps of training)")
    js, cs = write_protocol_result(out_dir, summary, result.rows(), step, tb, stem=stem)
    print(f"wrote {js} and {cs}", file=sys.stderr)
    return 0


def read_eval_curve(run_dir: Path, by_class: bool = False) -> tuple[int, dict[str, tuple[list[float], list[float]]]]:
    """Success and return by round of the last held-out evaluation in a run's eval.csv (rows of
    model selection on training tasks, `eval_train`, and of best.pt, `eval_best`, left out): the
    mean over tasks under the key "mean", or with `by_class` one entry per env class."""
    path = Path(run_dir) / "eval.csv"
    if not path.is_file():
        raise ConfigError(f"RUN_DIR: {run_dir} has no eval.csv (has it finished an evaluation?)")
    need = ("env_steps", "round", "success", "return")
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"RUN_DIR: cannot read {path} ({e.__class__.__name__})") from None
    if not rows:
        raise ConfigError(f"RUN_DIR: {path} is empty")
    missing = [c for c in need + (("task",) if by_class else ()) if c not in header]
    if missing:
        raise ConfigError(f"RUN_DIR: {path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                          f"an eval.csv needs {', '.join(need)}" + (" (and task for --by-class)" if by_class else ""))
    parsed = []
    for line, r in enumerate(rows, start=2):
        if r.get("eval", "eval") != "eval":
            continue
        try:
            parsed.append((int(r["env_steps"]), int(r["round"]), float(r["success"]), float(r["return"]),
                           r.get("task") if by_class else "mean"))
        except (TypeError, ValueError):
            raise ConfigError(f"RUN_DIR: {path} line {line}: env_steps and round must be integers, success and "
                              f"return numbers") from None
    if not parsed:
        raise ConfigError(f"RUN_DIR: {path} has no held-out evaluation rows")
    last = max(p[0] for p in parsed)
    at_last = [p for p in parsed if p[0] == last]
    k_max = max(p[1] for p in at_last)
    out: dict[str, tuple[list[float], list[float]]] = {}
    for group in dict.fromkeys(str(p[4]) for p in at_last):
        g = [p for p in at_last if str(p[4]) == group]
        n = [max(1, sum(1 for p in g if p[1] == k)) for k in range(k_max + 1)]
        out[group] = ([sum(p[2] for p in g if p[1] == k) / n[k] for k in range(k_max + 1)],
                      [sum(p[3] for p in g if p[1] == k) / n[k] for k in range(k_max + 1)])
    return last, out


def cmd_plot(args: argparse.Namespace) -> int:
    from metarl.logging import curve_figure

    curves = {}
    for rd in args.run_dirs:
        steps, groups = read_eval_curve(Path(rd), by_class=args.by_class)
        for group, (s, r) in groups.items():
            label = f"{Path(rd).name} @ {steps:,} steps" + (f": {group}" if args.by_class else "")
            curves[label] = (s, r)
    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "adaptation_curve.png"
    title = "meta-test adaptation curve" + (" by held-out class" if args.by_class else "")
    try:
        curve_figure(curves, title).savefig(out, dpi=100)
    except OSError as e:
        raise ConfigError(f"--out: cannot write {out}: {e.strerror}") from e
    print(f"wrote {out}")
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
    e = sub.add_parser("eval", help="evaluate a checkpoint on held-out tasks; prints a table and writes eval.csv")
    e.add_argument("checkpoint", help="checkpoint file or run dir (its newest checkpoint)")
    e.add_argument("--split", default="test", choices=["train", "test"])
    e.add_argument("--rounds", type=int, help="adaptation rounds K (default: the run's eval.rounds)")
    e.add_argument("--episodes", type=int, help="episodes per round (default: the run's eval.episodes_per_round)")
    e.add_argument("--tasks-per-class", type=int, default=0, help="curve: goals per env class (0: all)")
    e.add_argument("--per-task", action="store_true", help="one table row per task instead of per class")
    e.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="mean actions instead of sampled ones (default: the run's eval.deterministic)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", help="curve: CSV path (default: RUN_DIR/eval_<split>/eval.csv); metaworld: output "
                                 "dir (default: the run dir, or <checkpoint stem>_eval/ beside a loose file)")
    e.add_argument("--protocol", default="curve", choices=["curve", "metaworld"],
                   help="curve: rounds 0..K of adaptation (quick looks); metaworld: the Meta-World+ meta-test "
                        "protocol, for numbers compared with papers (horizon 500 unless --horizon)")
    e.add_argument("--horizon", type=int, help="episode length (default: the run's; 500 with --protocol metaworld)")
    e.add_argument("--goals-per-class", type=int, default=0, help="metaworld: goals per class (0: all)")
    e.add_argument("--adaptation-episodes", type=int, default=10, help="metaworld: episodes per adaptation step")
    e.add_argument("--adaptation-steps", type=int, default=1, help="metaworld: adaptation steps")
    e.add_argument("--evaluation-episodes", type=int, default=3,
                   help="metaworld: episodes after adaptation, each ending on success")
    e.add_argument("--adapt-deterministic", action=argparse.BooleanOptionalAction, default=False,
                   help="metaworld: mean actions in the adaptation episodes (default: sampled)")
    e.add_argument("--eval-deterministic", action=argparse.BooleanOptionalAction, default=False,
                   help="metaworld: mean actions in the evaluation episodes (default: sampled)")
    e.set_defaults(func=cmd_eval)
    pl = sub.add_parser("plot", help="plot the adaptation curve of one or more runs")
    pl.add_argument("run_dirs", nargs="+")
    pl.add_argument("--out", help="PNG path (default: first RUN_DIR/adaptation_curve.png)")
    pl.add_argument("--by-class", action="store_true", help="one line per held-out env class (ML10/ML45)")
    pl.set_defaults(func=cmd_plot)
    return p


def main(argv: list[str] | None = None) -> int:
    from metarl.trainer import RunStopped

    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"metarl: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunStopped as e:
        print(f"metarl: stopped: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
