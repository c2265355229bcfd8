"""`metarl bench run`: train a preset end to end (train + final meta-test) for some seeds and write
benchmarks/results/<name>.{json,md,png}.

    metarl bench run configs/ml1_reach_maml_trpo.yaml --seeds 1 2 3
    metarl bench run --resume runs/bench/ml1_reach_pearl-s1-20261125-184229

Each seed trains in its own run dir under runs/bench/ (metarl.training.run.Run); the result files
hold the meta-test adaptation curve (mean over seeds, and each seed's) of the final evaluation on
the held-out tasks. `--resume RUN_DIR` continues one stopped run from its newest checkpoint (its
saved config; `--set` may change only fields that do not shape training, such as run.env_steps)
and rewrites the result; the wall time then adds the earlier stretches the run dir records
(runs.jsonl, and segments.jsonl of run dirs started before it). A SIGINT / SIGTERM stops training,
evaluates the policy as it is and writes the result marked stopped_early; a second one cuts that
evaluation short (final_eval_stopped: tasks done, planned).
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from metarl.app.bench.paths import RESULTS, ROOT, RUNS, shown
from metarl.app.bench.result import (MetaTest, MetaTestSelected, MetaworldSummary, Result, Segment, SeedResult,
                                     Selected)
from metarl.core.types import ConfigError

__all__ = ["run_preset", "machine", "segments_of", "write_result"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


SEGMENT_KEYS = ("command", "git_commit", "from_env_steps", "to_env_steps", "wall_seconds", "warm_restart",
                "final_eval_stopped", "ended_by")


def segments_of(stretches: list[dict[str, Any]], source: Path) -> tuple[Segment, ...]:
    """The stretches of training a run dir records (Run.stretches(): segments.jsonl of older run
    dirs, then runs.jsonl) that ended, as result segments; one line naming the file for a bad one."""
    out = []
    for i, s in enumerate(stretches):
        if "to_env_steps" not in s or "wall_seconds" not in s:
            continue  # a stretch killed before it could record its end: nothing of it is in the result
        out.append(Segment.from_dict({k: s[k] for k in SEGMENT_KEYS if k in s}, f"{source} (stretch {i + 1})"))
    return tuple(out)


def _commands(per_seed: Sequence[SeedResult], command: str, git: str | None) -> str:
    segments = [s for r in per_seed for s in r.segments]
    if len(segments) == 1:
        return f"Command: `{command}` at commit `{git}`\n"
    lines = [f"- env steps {s.from_env_steps:,} to {s.to_env_steps:,} ({s.wall_seconds / 60:.1f} min): "
             f"`{s.command}`" + (f" at commit `{s.git_commit}`" if s.git_commit else "")
             + (" (warm restart: the checkpoint held no replay buffers; they were refilled with the policy "
                "before updates went on)" if s.warm_restart else "")
             for s in segments]
    return "Trained in segments, each resumed from the previous one's last checkpoint:\n\n" + "\n".join(lines) + "\n"


def _table(success: Sequence[float], returns: Sequence[float]) -> str:
    """The adaptation curve as a markdown table, one row per round."""
    rows = "\n".join(f"| {k} | {100 * s:.1f}% | {r:.1f} |" for k, (s, r) in enumerate(zip(success, returns)))
    return f"| round k | success | return |\n|---|---|---|\n{rows}"


def _train_seed(cfg: Any, run_dir: Path | None, overrides: Sequence[str], name: str | None, command: str,
                ) -> tuple[SeedResult | None, Any, str | None, Path]:
    """Create (run_dir None) or resume one run and train it; (its result entry, or None when a signal
    stopped the final evaluation before any task; its config; the result name; its run dir)."""
    from metarl.training.run import Run

    run = Run.create(cfg, command=command) if run_dir is None else Run.resume(run_dir, overrides, command=command)
    with run:
        if name is None:
            name = run.result_name
        elif run.result_name is None:
            run.result_name = name
        outcome = run.start(final_eval_on_stop=True)
    cfg = run.cfg
    if outcome.curve is None:
        return None, cfg, name, run.dir
    segments = segments_of(run.stretches(), run.dir)
    curve = outcome.curve
    entry = SeedResult(
        seed=cfg.run.seed, run_dir=shown(run.dir), env_steps=outcome.env_steps,
        stopped_early=outcome.stopped_early or outcome.final_eval_stopped is not None,
        final_eval_stopped=outcome.final_eval_stopped,  # (tasks done, planned): a partial result
        warm_restart=any(s.warm_restart for s in segments),
        wall_seconds=sum(s.wall_seconds for s in segments), segments=segments,
        success_by_round=tuple(curve.success_by_round()), return_by_round=tuple(curve.return_by_round()),
        n_tasks=len(curve.tasks),
        metaworld=MetaworldSummary.from_dict(outcome.protocol_summary, run.dir / "eval_metaworld.json")
        if outcome.protocol_summary is not None else None,  # eval.protocol: metaworld
        selected=Selected.from_dict(outcome.selected, run.dir / "best.json")
        if outcome.selected is not None else None)  # eval.select_best: best.pt, chosen on training tasks only
    return entry, cfg, name, run.dir


def run_preset(config_path: str | None, resume: str | None, seeds: Sequence[int], overrides: Sequence[str],
               device: str, results: Path = RESULTS, runs: Path = RUNS, name: str | None = None,
               command: str | None = None) -> int:
    """Train the seeds of a preset (or resume one run dir) and write the result files; the exit code
    (1: a signal stopped the final evaluation before any task, nothing written)."""
    from metarl.agents import AGENTS
    from metarl.training import config
    from metarl.training.run import git_commit

    if (config_path is None) == (resume is None):
        raise ConfigError("CONFIG: give a preset CONFIG or --resume RUN_DIR (not both)")
    command = command or "metarl bench run " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    git = git_commit()
    per_seed: list[SeedResult] = []
    cfg = None
    for seed in ([None] if resume else list(seeds)):
        if resume is not None:
            entry, cfg, name, run_dir = _train_seed(None, Path(resume), overrides, name, command)
        else:
            assert config_path is not None
            cfg = config.load(config_path, list(overrides), seed=seed, device=device, registry=AGENTS)
            # run.name null: Run claims runs/<preset>-s<seed>-<time> (-2, -3, ... when taken) atomically
            cfg = config.from_dict({**cfg.to_dict(), "run": {
                **cfg.to_dict()["run"], "out_dir": str(runs), "name": None}}, registry=AGENTS)
            entry, cfg, name, run_dir = _train_seed(cfg, None, overrides, name, command)
        if entry is None:  # a second signal stopped the final evaluation before any task was done
            print(f"{run_dir}: the final evaluation was stopped before any task was done; no result written. "
                  f"Resume it (the evaluation runs again): metarl bench run --resume {shown(run_dir)}",
                  file=sys.stderr)
            return 1
        per_seed.append(entry)
    assert cfg is not None
    result = write_result(per_seed, cfg, name or cfg.preset, results, device if not resume else cfg.run.device,
                          command, git)
    print(json.dumps(result.mean.to_dict(), indent=2))
    for r in per_seed:  # what comes next for each run dir
        if r.stopped_early:
            print(f"{r.run_dir} stopped early; to resume it on any machine later: "
                  f"metarl bench park {r.run_dir}, commit benchmarks/inflight/", file=sys.stderr)
        else:
            print(f"{r.run_dir} reached its budget; next: metarl bench finish {r.run_dir}", file=sys.stderr)
    return 0


def write_result(per_seed: list[SeedResult], cfg: Any, name: str, results: Path, device: str, command: str,
                 git: str | None) -> Result:
    """results/<name>.{json,md,png} and the seeds' logs (<name>[.s<seed>].{progress.csv, eval.csv, ...})."""
    import torch

    from metarl.training.runlog import curve_figure

    succ = tuple(np.mean([r.success_by_round for r in per_seed], axis=0).tolist())
    ret = tuple(np.mean([r.return_by_round for r in per_seed], axis=0).tolist())
    selected = [r.selected for r in per_seed if r.selected is not None]
    sel_md = ""
    meta_test_selected = None
    if selected and len(selected) == len(per_seed):
        s_succ = tuple(np.mean([s.success_by_round for s in selected], axis=0).tolist())
        s_ret = tuple(np.mean([s.return_by_round for s in selected], axis=0).tolist())
        meta_test_selected = MetaTestSelected(success_by_round=s_succ, return_by_round=s_ret,
                                              n_tasks=per_seed[0].n_tasks, split="test",
                                              selected_at_env_steps=tuple(s.env_steps for s in selected))
        where = ", ".join(f"seed {r.seed}: {s.env_steps:,} env steps (training-task success "
                          f"{100 * s.score[0]:.0f}% on {s.n_train_tasks} tasks)" for r, s in zip(per_seed, selected))
        sel_md = (f"Model selection (`eval.select_best`): the checkpoint whose periodic evaluation on *training* "
                  f"tasks scored best (mean success over rounds 1..K), evaluated on the same held-out tasks; "
                  f"held-out tasks play no part in the choice. Selected: {where}.\n\n"
                  f"{_table(s_succ, s_ret)}\n\n")
    result = Result(
        preset=cfg.preset, agent=cfg.agent.name, benchmark=cfg.env.benchmark, env_name=cfg.env.env_name,
        seeds=tuple(r.seed for r in per_seed), env_steps=int(np.mean([r.env_steps for r in per_seed])),
        budget_env_steps=cfg.run.env_steps, stopped_early=any(r.stopped_early for r in per_seed),
        # a PEARL seed resumed from a checkpoint without its buffers (metarl bench park): not bit-exact
        warm_restart=any(r.warm_restart for r in per_seed),
        wall_seconds=sum(r.wall_seconds for r in per_seed), machine=machine(), device=device,
        torch=torch.__version__, command=command, git_commit=git, config=cfg.to_dict(),
        meta_test=MetaTest(success_by_round=succ, return_by_round=ret, n_tasks=per_seed[0].n_tasks,
                           rounds=len(succ) - 1, episodes_per_round=cfg.eval.episodes_per_round, split="test"),
        per_seed=tuple(per_seed), meta_test_selected=meta_test_selected)
    result = Result.from_dict(json.loads(result.to_json()), f"{name}.json (as written)")  # what readers will see
    results.mkdir(parents=True, exist_ok=True)
    for r in per_seed:  # the training and evaluation curves behind the result
        suffix = "" if len(per_seed) == 1 else f".s{r.seed}"
        run_dir = ROOT / r.run_dir  # (an absolute run_dir stays itself)
        for f in ("progress.csv", "eval.csv", "eval_metaworld.json", "eval_metaworld_train.json"):
            src, dst = run_dir / f, results / f"{name}{suffix}.{f}"
            if f.startswith("eval_metaworld") and src.exists() and _evaluated_at(src) != r.env_steps:
                # an evaluation of an earlier checkpoint (`bench finish` before a resume that grew the
                # budget): not this result's; a copy of it from then goes too
                dst.unlink(missing_ok=True)
            elif src.exists():
                shutil.copyfile(src, dst)
    (results / f"{name}.json").write_text(result.to_json())
    curves = {f"seed {r.seed}": (list(r.success_by_round), list(r.return_by_round)) for r in per_seed}
    if len(per_seed) > 1:
        curves["mean"] = (list(succ), list(ret))
    curve_figure(curves, f"{name}: meta-test on held-out tasks").savefig(results / f"{name}.png", dpi=100)
    (results / f"{name}.md").write_text(
        f"# {name}\n\n{cfg.agent.name} on {cfg.env.benchmark} {cfg.env.env_name or ''}, seeds {list(result.seeds)}, "
        f"{result.env_steps:,} training env steps, {result.wall_seconds / 60:.1f} min on {result.machine}.\n\n"
        f"Meta-test on {result.mean.n_tasks} held-out tasks, "
        f"{cfg.eval.episodes_per_round} episodes per round (round 0 = before adaptation)"
        + (f". Stopped early at {result.env_steps:,} of the preset's {cfg.run.env_steps:,} env steps"
           if result.stopped_early else "") + ":\n\n"
        f"{_table(succ, ret)}\n\n" + sel_md + _commands(per_seed, command, git))
    return result


def _evaluated_at(path: Path) -> int | None:
    """The env_steps an evaluation file of a run dir records (None: unreadable or absent)."""
    try:
        steps = json.loads(path.read_text()).get("env_steps")
    except (OSError, ValueError, AttributeError):
        return None
    return steps if isinstance(steps, int) else None
