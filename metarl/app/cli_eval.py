"""`metarl eval | plot | report`: evaluate a checkpoint (optionally filming held-out tasks, metarl/training/video.py),
plot adaptation curves, write a run's report.md (metarl/app/run_report.py)."""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarl.app.run_report import read_eval_curve
from metarl.core.types import ConfigError
from metarl.training import runfiles

if TYPE_CHECKING:  # the commands import their modules when they run (a quick --help)
    import torch

    from metarl.training.config import RunConfig
    from metarl.training.evaluation import MetaworldProtocol, ProtocolResult
    from metarl.core.types import AdaptationCurve, Task


def _existing_ancestor(path: Path) -> Path:
    """`path` itself or its nearest existing parent: where creating `path` would start."""
    while not path.exists():
        path = path.parent
    return path



def _flag(value: Any, field: str, flag: str) -> None:
    """`flag` (None: not given) allows what config field `field` ("eval.rounds") allows: one line
    naming the flag otherwise (metarl.core.fields.check, with the field's own constraint)."""
    from metarl.core.fields import Section, check
    from metarl.training import config

    section, name = field.split(".")
    sections: dict[str, type[Section]] = {"run": config.RunSection, "env": config.EnvSection,
                                          "eval": config.EvalSection}
    check(value, sections[section].constraint(name), flag, optional=True)


def _flag_names(args: argparse.Namespace) -> dict[str, str]:
    """The eval flags that replaced a config size (resources.check names them, not the field)."""
    out = {}
    if args.horizon is not None or args.protocol == "metaworld":
        out["horizon"] = "--horizon"
    if args.workers is not None:
        out["workers"] = "--workers"
    return out


def _check_out(path: Path, flag: str = "--out") -> None:
    """Before anything runs: `path` (a file to write) is no link or non-regular file, and its
    directory can be created or written."""
    runfiles.refuse_links(path.parent, [path.name])
    probe = _existing_ancestor(path.parent)
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: cannot write {path}: {probe} is not a writable directory")


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
    _flag(args.seed, "run.seed", "--seed")
    from metarl.agents import AGENTS
    from metarl.training import checkpoint, config

    if args.ray_address is not None and args.backend != "ray":
        raise ConfigError("--ray-address: needs --backend ray (evaluation runs on worker processes here otherwise)")
    _flag(args.workers, "env.n_workers", "--workers")
    _flag(args.horizon, "env.max_episode_steps", "--horizon")
    ckpt_path, payload = checkpoint.resolve(args.checkpoint, registry=AGENTS)
    raw = payload.get("config")
    if not isinstance(raw, dict):
        raise ConfigError(f"checkpoint: {ckpt_path} has no config mapping (the run's resolved config); "
                          f"it was not written by metarl train")
    # where the work runs comes from this command line, never from the file: a checkpoint naming a
    # Ray cluster would otherwise send the evaluation (and what comes back from it) there. Replaced
    # before the config is even built, so the file's values are never used, nor checked
    env = raw.get("env") if raw.get("env") is not None else {}
    if isinstance(env, dict):
        env = {**env, "backend": args.backend or "multiprocess", "ray_address": args.ray_address}
        if args.workers is not None:
            env["n_workers"] = args.workers
        raw = {**raw, "env": env}
    cfg = config.from_dict(raw, registry=AGENTS)
    d = cfg.to_dict()
    if args.pearl_context is not None:
        if cfg.agent.name != "pearl":
            raise ConfigError(f"--pearl-context: applies to PEARL's posterior; this checkpoint holds a "
                              f"{cfg.agent.name!r} agent")
        d["eval"]["pearl_context"] = args.pearl_context
    horizon = args.horizon
    if horizon is None and args.protocol == "metaworld" and cfg.env.benchmark != "toy":
        horizon = 500  # the protocol's horizon, whatever the run trained with
    if horizon is not None:
        d["env"]["max_episode_steps"] = horizon
    cfg = config.from_dict(d, cfg.preset, registry=AGENTS)
    return ckpt_path, payload, cfg, config.resolve_device(args.device)


def _default_out_dir(ckpt_path: Path) -> Path:
    """A run's checkpoint (RUN_DIR/checkpoints/x.pt) -> RUN_DIR; a loose file -> <stem>_eval/ beside it."""
    if ckpt_path.parent.name == "checkpoints" and (ckpt_path.parent.parent / "config.yaml").is_file():
        return ckpt_path.parent.parent
    return ckpt_path.parent / f"{ckpt_path.stem}_eval"


def cmd_eval(args: argparse.Namespace) -> int:
    from metarl.training.video import no_gl_here

    no_gl_here()  # evaluation never renders (--video films in its own process): a bad MUJOCO_GL must not stop it
    if args.protocol == "metaworld":
        return cmd_eval_metaworld(args)
    if args.evaluation_state is not None:
        raise ConfigError("--evaluation-state: belongs to --protocol metaworld (where its evaluation episodes "
                          "start); the curve protocol's rounds always go on from the adapted state")
    import numpy as np
    import torch

    from metarl.training import resources
    from metarl.training.evaluation import evaluate, select_tasks
    from metarl.training.build import benchmark_for, build

    _flag(args.tasks_per_class, "eval.tasks_per_class", "--tasks-per-class")
    _flag(args.rounds, "eval.rounds", "--rounds")
    _flag(args.episodes, "eval.episodes_per_round", "--episodes")
    ckpt_path, payload, cfg, device = _eval_setup(args)
    out = Path(args.out) if args.out else _default_out_dir(ckpt_path) / f"eval_{args.split}" / "eval.csv"
    _check_out(out)  # before the evaluation, not after it
    rounds = cfg.eval.rounds if args.rounds is None else args.rounds
    episodes = args.episodes or cfg.eval.episodes_per_round
    bench = benchmark_for(cfg, _flag_names(args))
    tasks = select_tasks(bench.tasks(args.split), args.tasks_per_class)
    resources.check_eval(cfg, bench, len(tasks), episodes, rounds + 1,  # per task: one number a round
                         {"episodes": "--episodes" if args.episodes else "eval.episodes_per_round",
                          "horizon": "--horizon" if args.horizon else "env.max_episode_steps",
                          "results": "--rounds" if args.rounds is not None else "eval.rounds"})
    video = _video_setup(args, cfg, args.tasks_per_class, bench)
    torch.manual_seed(args.seed)
    bench, sampler, agent = build(cfg, device, bench)
    try:
        agent.load_state_dict(payload["agent"])
        deterministic = cfg.eval.deterministic if args.deterministic is None else args.deterministic
        curve = evaluate(agent, sampler, tasks, rounds, episodes, np.random.default_rng(args.seed), deterministic)
    finally:
        sampler.vec_env.close()
    _print_curve(curve, per_task=args.per_task)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with runfiles.open_write(out, "w", newline="") as f:
            w = csv.DictWriter(f, ["checkpoint", "split", "task", "task_index", "round", "success", "return"])
            w.writeheader()
            for row in curve.rows():
                w.writerow({"checkpoint": str(ckpt_path), "split": args.split, **row})
    except OSError as e:
        raise runfiles.output_error(e, "--out", out, "the evaluation ran but its results were not saved",
                                    "run the command again") from None
    print(f"wrote {out}", file=sys.stderr)
    if video is not None:
        _film(args, video, ckpt_path, payload, cfg, tasks, curve,
              {"name": "curve", "rounds": rounds, "episodes": episodes, "deterministic": deterministic},
              Path(args.out).parent if args.out else _default_out_dir(ckpt_path))
    return 0


def run_metaworld_protocol(cfg: RunConfig, payload: dict[str, Any], device: torch.device, split: str,
                           goals_per_class: int, seed: int, protocol: MetaworldProtocol,
                           progress: str | None = "bar", bench: Any = None) -> tuple[ProtocolResult, int]:
    """Build the checkpoint's agent and run the Meta-World protocol on `split`'s goals.
    `progress`: "bar" (a terminal), "lines" (plain lines every 30 s, for a log file) or None.
    Returns (ProtocolResult, pool size of metaworld's own test vector env)."""
    import numpy as np
    import torch

    from metarl.training.evaluation import metaworld_evaluate, official_pool_size, select_tasks
    from metarl.training.build import build

    torch.manual_seed(seed)
    bench, sampler, agent = build(cfg, device, bench)
    try:
        agent.load_state_dict(payload["agent"])
        tasks = select_tasks(bench.tasks(split), goals_per_class)
        p = protocol
        total = len(tasks) * (p.adaptation_steps * p.adaptation_episodes + p.evaluation_episodes) * sampler.horizon
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        from metarl.training.runlog import TextProgress
        text = TextProgress(f"metarl eval, {split} goals", total, 0) if progress == "lines" else None
        with Progress(TextColumn("metaworld protocol"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} steps"),
                      TimeRemainingColumn(), disable=progress != "bar", transient=True) as bar:
            job = bar.add_task("eval", total=total)

            def advance(n: int) -> None:
                bar.advance(job, n)
                if text:
                    done = int(bar.tasks[job].completed)
                    text.eval_steps("Meta-World protocol", done, total)
            result = metaworld_evaluate(agent, sampler, tasks, np.random.default_rng(seed), protocol,
                                        on_progress=advance)
        if text:
            text.note(f"Meta-World protocol done: {len(tasks)} goals, {int(bar.tasks[job].completed):,} env steps, "
                      f"success {100 * result.success_mean():.1f}%")
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
    if summary.get("evaluation_state", "continue") == "restart":
        print("evaluation episodes: each restarted from the agent's state after adaptation (--evaluation-state restart)")
    if summary.get("pearl_context") == "train_size":
        print("PEARL posterior after adaptation: from agent.embedding_batch_size transitions drawn from the context "
              "(--pearl-context train_size)")


def cmd_eval_metaworld(args: argparse.Namespace) -> int:
    from metarl.training.evaluation import MetaworldProtocol, select_tasks
    from metarl.training.runlog import write_protocol_result

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
    from metarl.training import resources
    from metarl.training.build import benchmark_for

    _flag(args.goals_per_class, "eval.tasks_per_class", "--goals-per-class")
    # MetaworldProtocol checks --adaptation-episodes, --adaptation-steps, --evaluation-episodes
    protocol = MetaworldProtocol(args.adaptation_episodes, args.adaptation_steps, args.evaluation_episodes,
                                 args.adapt_deterministic, args.eval_deterministic,
                                 args.evaluation_state or "continue")
    ckpt_path, payload, cfg, device = _eval_setup(args)
    if args.evaluation_state is None:  # the run's eval.evaluation_state, which its own final evaluation used
        protocol = dataclasses.replace(protocol, evaluation_state=cfg.eval.evaluation_state)
    out_dir = Path(args.out) if args.out else _default_out_dir(ckpt_path)
    stem = "eval_metaworld" if args.split == "test" else "eval_metaworld_train"
    probe = _existing_ancestor(out_dir)
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: cannot write under {out_dir}: {probe} is not a writable directory")
    if out_dir.is_dir():
        runfiles.refuse_links(out_dir, [f"{stem}.json", f"{stem}.csv"])
    bench = benchmark_for(cfg, _flag_names(args))
    n_goals = len(select_tasks(bench.tasks(args.split), args.goals_per_class))
    p = protocol
    resources.check_eval(cfg, bench, n_goals, max(p.adaptation_episodes, p.evaluation_episodes),
                         p.adaptation_steps * p.adaptation_episodes + p.evaluation_episodes,
                         {"episodes": "--adaptation-episodes" if p.adaptation_episodes >= p.evaluation_episodes
                          else "--evaluation-episodes", "horizon": "--horizon",
                          "results": "--adaptation-steps"})
    video = _video_setup(args, cfg, args.goals_per_class, bench)
    t0 = time.time()
    result, pool = run_metaworld_protocol(cfg, payload, device, args.split, args.goals_per_class, args.seed,
                                          protocol, progress="bar" if sys.stderr.isatty() else "lines", bench=bench)
    summary = {**result.to_dict(pool), "checkpoint": str(ckpt_path), "split": args.split, "seed": args.seed,
               "benchmark": cfg.env.benchmark, "env_name": cfg.env.env_name, "agent": cfg.agent.name,
               **({"pearl_context": cfg.eval.pearl_context} if cfg.agent.name == "pearl" else {}),
               "wall_seconds": time.time() - t0}
    step = int(payload.get("counters", {}).get("env_steps", 0))
    tb = out_dir / "tb" if out_dir == _default_out_dir(ckpt_path) and (out_dir / "tb").is_dir() else None
    _print_protocol(summary, f"{cfg.env.benchmark} {args.split} goals, Meta-World protocol "
                             f"({step:,} env steps of training)")
    try:
        js, cs = write_protocol_result(out_dir, summary, result.rows(), step, tb, stem=stem)
    except OSError as e:
        raise runfiles.output_error(e, "--out", out_dir, "the evaluation ran but its results were not saved",
                                    "run the command again") from None
    print(f"wrote {js} and {cs}", file=sys.stderr)
    if video is not None:
        _film(args, video, ckpt_path, payload, cfg, result.tasks, result.as_curve(),
              {"name": "metaworld", **dataclasses.asdict(protocol)}, out_dir)
    return 0


PLOT_FORMATS = ("png", "pdf", "svg")


def _plot_out(args: argparse.Namespace) -> tuple[Path, str]:
    """(file, format) `plot` writes: --out FILE.png|pdf|svg, --out DIR (an existing directory:
    DIR/adaptation_curve.png), default: the first run dir's adaptation_curve.png."""
    if not args.out:
        return Path(args.run_dirs[0]) / "adaptation_curve.png", "png"
    out = Path(args.out)
    if out.is_dir():
        return out / "adaptation_curve.png", "png"
    fmt = out.suffix[1:].lower()
    if fmt not in PLOT_FORMATS:
        raise ConfigError(f"--out: {out} has {'the extension ' + repr(out.suffix) if out.suffix else 'no extension'}; "
                          f"allowed: a file ending in {', '.join('.' + f for f in PLOT_FORMATS)}, or an existing "
                          f"directory (for its adaptation_curve.png)")
    return out, fmt


def cmd_plot(args: argparse.Namespace) -> int:
    from metarl.training.runlog import curve_figure

    out, fmt = _plot_out(args)  # checked before anything is read
    curves = {}
    for rd in args.run_dirs:
        steps, groups = read_eval_curve(Path(rd), by_class=args.by_class)
        for group, (s, r) in groups.items():
            label = f"{Path(rd).name} @ {steps:,} steps" + (f": {group}" if args.by_class else "")
            curves[label] = (s, r)
    title = "meta-test adaptation curve" + (" by held-out class" if args.by_class else "")
    try:
        with runfiles.open_write(out, "wb") as f:
            curve_figure(curves, title).savefig(f, dpi=100, format=fmt)
    except OSError as e:
        raise runfiles.output_error(e, "--out", out, "the figure was not saved", "run the command again") from None
    print(f"wrote {out}")
    return 0


def _video_setup(args: argparse.Namespace, cfg: RunConfig, per_class: int,
                 bench: Any = None) -> tuple[str, list[Task], list[Task]] | None:
    """--video: (GL backend, the tasks the evaluation will run, those to film), checked before
    anything runs; None without --video."""
    if args.video is None:
        return None
    if args.video == 0 or args.video < -1:
        raise ConfigError(f"--video: must be >= 1 (tasks to film; no value: one goal per held-out class), "
                          f"got {args.video}")
    from metarl.training.evaluation import select_tasks
    from metarl.training.build import benchmark_for
    from metarl.training.video import pick_tasks, preflight

    bench = bench if bench is not None else benchmark_for(cfg)
    backend, _ = preflight(cfg, bench.env_factory, "--video")
    tasks = select_tasks(bench.tasks(args.split), per_class)
    return backend, tasks, pick_tasks(tasks, None if args.video == -1 else args.video, "--video")


def _film(args: argparse.Namespace, video: tuple[str, list[Task], list[Task]], ckpt_path: Path, payload: dict,
          cfg: RunConfig, tasks: list[Task], curve: AdaptationCurve, protocol: dict[str, Any], out_dir: Path) -> None:
    """Film the chosen tasks (`tasks`: the evaluated ones, in evaluation order) into out_dir/videos;
    into the run's TensorBoard too when the checkpoint belongs to a run dir."""
    from metarl.training.video import render_evaluation

    backend, _, chosen = video
    film = [t for t in tasks if (t.name, t.index) in {(c.name, c.index) for c in chosen}]
    step = int(payload.get("counters", {}).get("env_steps", 0))
    run_dir = _default_out_dir(ckpt_path)
    tb = None
    if run_dir != ckpt_path.parent / f"{ckpt_path.stem}_eval" and (run_dir / "tb").is_dir():
        from torch.utils.tensorboard import SummaryWriter
        tb = SummaryWriter(str(run_dir / "tb"))
    try:
        render_evaluation(checkpoint=ckpt_path, cfg=cfg, split=args.split, tasks=tasks, film=film, protocol=protocol,
                          rng_seed=args.seed, torch_seed=args.seed, torch_from_checkpoint=False, curve=curve,
                          out_dir=out_dir / "videos", backend=backend, tb=tb, step=step,
                          log=lambda s: print(s, file=sys.stderr))
    finally:
        if tb is not None:
            tb.close()


def cmd_report(args: argparse.Namespace) -> int:
    from metarl.app.run_report import write_report

    try:
        out = write_report(Path(args.run_dir))
    except OSError as e:  # a figure or report.md could not be written
        raise runfiles.output_error(e, "RUN_DIR", e.filename or args.run_dir, "the report is not complete",
                                    "run the command again") from None
    print(f"wrote {out}")
    return 0


def add_eval_commands(sub: Any) -> None:
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
    e.add_argument("--backend", choices=["multiprocess", "ray"], default=None,
                   help="who runs the worker processes (default: multiprocess; never the checkpoint's env.backend)")
    e.add_argument("--ray-address", default=None,
                   help="with --backend ray: 'auto' or a cluster address (default: a local Ray; never the "
                        "checkpoint's env.ray_address)")
    e.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: the run's env.n_workers, bounded by this machine's cores)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", help="curve: CSV path (default: RUN_DIR/eval_<split>/eval.csv, or <checkpoint "
                                 "stem>_eval/eval_<split>/eval.csv beside a loose file); metaworld: output dir "
                                 "(default: the run dir, or <checkpoint stem>_eval/ beside a loose file)")
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
    e.add_argument("--evaluation-state", choices=["continue", "restart"], default=None,
                   help="metaworld: where each evaluation episode starts. continue: where the previous one left "
                        "the agent's per-task state (RL²: the trial goes on); restart: from the state after "
                        "adaptation, as metaworld-algorithms and garage evaluate RL² (default: the run's "
                        "eval.evaluation_state, continue for runs without it)")
    e.add_argument("--pearl-context", choices=["all", "train_size"], default=None,
                   help="PEARL: the posterior after adaptation from all context transitions, or from "
                        "agent.embedding_batch_size of them drawn from it, the size training used (default: the "
                        "run's eval.pearl_context, all for runs without it)")
    e.add_argument("--video", type=int, nargs="?", const=-1, metavar="N",
                   help="film N evaluated tasks (no N: one goal per class) at round 0 and after each adaptation "
                        "round: videos/ beside the results, TensorBoard eval/video/<class> (pip install -e "
                        "'.[video]' and EGL or OSMesa; camera, size, fps: the run's eval.video_* fields)")
    e.set_defaults(func=cmd_eval)
    pl = sub.add_parser("plot", help="plot the adaptation curve of one or more runs")
    pl.add_argument("run_dirs", nargs="+")
    pl.add_argument("--out", help="a .png, .pdf or .svg file, or an existing directory (its adaptation_curve.png); "
                                  "default: first RUN_DIR/adaptation_curve.png")
    pl.add_argument("--by-class", action="store_true", help="one line per held-out env class (ML10/ML45)")
    pl.set_defaults(func=cmd_plot)
    rp = sub.add_parser("report", help="write RUN_DIR/report.md: config, success vs env steps, adaptation "
                                         "curves per class, the final per-task table and the videos")
    rp.add_argument("run_dir")
    rp.set_defaults(func=cmd_report)
