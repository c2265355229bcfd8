"""Run a preset end to end (train + final meta-test) and write benchmarks/results/<preset>.{json,md,png}.

    python benchmarks/run_preset.py configs/ml1_reach_maml_trpo.yaml --seeds 1 2 3
    python benchmarks/run_preset.py --resume runs/bench/ml1_reach_pearl-s1-20261125-184229

Each seed trains in its own run dir under runs/bench/; the result files hold
the meta-test adaptation curve (mean over seeds, and each seed's) of the final
evaluation on the held-out tasks. `--resume RUN_DIR` continues one stopped run
from its newest checkpoint (its saved config; `--set` may change only fields
that do not shape training, such as run.env_steps) and rewrites the result;
the wall time then adds the earlier segments recorded in RUN_DIR/segments.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


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


def _commands(per_seed: list[dict], command: str, git: str | None) -> str:
    segments = [s for r in per_seed for s in r["segments"]]
    if len(segments) == 1:
        return f"Command: `{command}` at commit `{git}`\n"
    lines = [f"- env steps {s['from_env_steps']:,} to {s['to_env_steps']:,} ({s['wall_seconds'] / 60:.1f} min): "
             f"`{s['command']}`" + (f" at commit `{s['git_commit']}`" if s.get("git_commit") else "")
             + (" (warm restart: the checkpoint held no replay buffers; they were refilled with the policy "
                "before updates went on)" if s.get("warm_restart") else "")
             for s in segments]
    return "Trained in segments, each resumed from the previous one's last checkpoint:\n\n" + "\n".join(lines) + "\n"


def _table(success: list[float], returns: list[float]) -> str:
    """The adaptation curve as a markdown table, one row per round."""
    rows = "\n".join(f"| {k} | {100 * s:.1f}% | {r:.1f} |" for k, (s, r) in enumerate(zip(success, returns)))
    return f"| round k | success | return |\n|---|---|---|\n{rows}"


def main(argv=None) -> int:
    import torch

    from metarl.agents import AGENTS
    from metarl.training import config
    from metarl.app.cli import _git_commit, resume_config
    from metarl.training.runlog import curve_figure
    from metarl.training.trainer import Trainer
    from metarl.core.types import ConfigError

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this stopped run instead of starting new ones")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--runs", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--name", help="result file stem (default: the name the run was started with, else the "
                                  "preset name); e.g. ml10_maml_trpo_s2 for one seed of a multi-seed table")
    args = p.parse_args(argv)
    if (args.config is None) == (args.resume is None):
        p.error("give a preset CONFIG or --resume RUN_DIR (not both)")
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    git = _git_commit()
    per_seed = []
    cfg = None
    if args.resume:
        args.seeds = [None]  # the run's own seed, read from its checkpoint below
    for seed in list(args.seeds):
        payload = None
        try:
            if args.resume:
                run_dir = Path(args.resume)
                cfg, payload = resume_config(run_dir, args.set)
                seed = cfg.run.seed
                args.seeds = [seed]
            else:
                cfg = config.load(args.config, args.set, seed=seed, device=args.device, registry=AGENTS)
                cfg = config.from_dict({**cfg.to_dict(), "run": {
                    **cfg.to_dict()["run"], "out_dir": args.runs,
                    "name": f"{cfg.preset}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"}}, registry=AGENTS)
                run_dir = Path(cfg.run.out_dir) / cfg.run.name
            device = config.resolve_device(cfg.run.device)
        except ConfigError as e:
            print(f"run_preset: error: {e}", file=sys.stderr)
            return 2
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        # the result file stem: --name, else the one this run was started with, else the preset's
        stem_file = run_dir / "result_name"
        if args.name is None and stem_file.is_file():
            args.name = stem_file.read_text().strip() or None
        if args.name is not None and not stem_file.is_file():
            stem_file.write_text(args.name + "\n")
        segments = run_dir / "segments.jsonl"
        earlier = [json.loads(line) for line in segments.read_text().splitlines()] if segments.exists() else []
        t0 = time.time()
        trainer = Trainer(cfg, run_dir, device, payload)
        start_steps = trainer.env_steps
        # SIGINT / SIGTERM: stop training, evaluate the policy as it is, write the result (marked)
        segment = {"command": command, "git_commit": git, "from_env_steps": start_steps}
        if trainer.warm_restart:  # PEARL resumed without its replay buffers: refilled with the current policy
            segment["warm_restart"] = True

        def record(**extra) -> None:
            """Append this stretch to segments.jsonl, also when the run ends with an error (it
            left a checkpoint to resume from: the stretch it trained is part of the result)."""
            segment.update(to_env_steps=trainer.env_steps, wall_seconds=time.time() - t0, **extra)
            with segments.open("a") as f:
                f.write(json.dumps(segment) + "\n")
        try:
            curve = trainer.run(final_eval_on_stop=True)
        except BaseException as e:
            record(ended_by=f"{type(e).__name__}: {e}"[:300])
            raise
        record(**({"final_eval_stopped": list(trainer.final_eval_stopped)} if trainer.final_eval_stopped else {}))
        if curve is None:  # a second signal stopped the final evaluation before any task was done
            print(f"{run_dir}: the final evaluation was stopped before any task was done; no result written. "
                  f"Resume it (the evaluation runs again): python benchmarks/run_preset.py --resume "
                  f"{os.path.relpath(run_dir, ROOT)}", file=sys.stderr)
            return 1
        done = [*earlier, segment]
        per_seed.append({"seed": seed, "run_dir": os.path.relpath(run_dir, ROOT), "env_steps": trainer.env_steps,
                         "stopped_early": trainer.stopped_early or trainer.final_eval_stopped is not None,
                         # (tasks done, planned) when a signal cut the final evaluation short: a partial result
                         "final_eval_stopped": list(trainer.final_eval_stopped) if trainer.final_eval_stopped else None,
                         "warm_restart": any(e.get("warm_restart", False) for e in done),
                         "wall_seconds": sum(e["wall_seconds"] for e in done), "segments": done,
                         "success_by_round": curve.success_by_round(),
                         "return_by_round": curve.return_by_round(), "n_tasks": len(curve.tasks)})
        if trainer.protocol_summary is not None:  # eval.protocol: metaworld
            per_seed[-1]["metaworld"] = trainer.protocol_summary
        choice = trainer.selected()
        if choice is not None:  # eval.select_best: best.pt, chosen on training tasks only
            per_seed[-1]["selected"] = choice
    name = args.name or cfg.preset
    succ = np.mean([r["success_by_round"] for r in per_seed], axis=0).tolist()
    ret = np.mean([r["return_by_round"] for r in per_seed], axis=0).tolist()
    result = {
        "preset": cfg.preset, "agent": cfg.agent.name, "benchmark": cfg.env.benchmark,
        "env_name": cfg.env.env_name, "seeds": list(args.seeds),
        "env_steps": int(np.mean([r["env_steps"] for r in per_seed])),
        "budget_env_steps": cfg.run.env_steps,
        "stopped_early": any(r["stopped_early"] for r in per_seed),
        # a PEARL seed resumed from a checkpoint without its buffers (benchmarks/park_run.py): not bit-exact
        "warm_restart": any(r["warm_restart"] for r in per_seed),
        "wall_seconds": sum(r["wall_seconds"] for r in per_seed), "machine": machine(), "device": args.device,
        "torch": torch.__version__, "command": command, "git_commit": git, "config": cfg.to_dict(),
        "meta_test": {"success_by_round": succ, "return_by_round": ret, "n_tasks": per_seed[0]["n_tasks"],
                      "rounds": len(succ) - 1, "episodes_per_round": cfg.eval.episodes_per_round,
                      "split": "test"},
        "per_seed": per_seed,
    }
    selected = [r["selected"] for r in per_seed if "selected" in r]
    sel_md = ""
    if selected and len(selected) == len(per_seed):
        s_succ = np.mean([r["success_by_round"] for r in selected], axis=0).tolist()
        s_ret = np.mean([r["return_by_round"] for r in selected], axis=0).tolist()
        result["meta_test_selected"] = {"success_by_round": s_succ, "return_by_round": s_ret,
                                        "n_tasks": per_seed[0]["n_tasks"], "split": "test",
                                        "selected_at_env_steps": [r["env_steps"] for r in selected]}
        where = ", ".join(f"seed {r['seed']}: {r['selected']['env_steps']:,} env steps "
                          f"(training-task success {100 * r['selected']['score'][0]:.0f}% on "
                          f"{r['selected']['n_train_tasks']} tasks)" for r in per_seed)
        sel_md = (f"Model selection (`eval.select_best`): the checkpoint whose periodic evaluation on *training* "
                  f"tasks scored best (mean success over rounds 1..K), evaluated on the same held-out tasks; "
                  f"held-out tasks play no part in the choice. Selected: {where}.\n\n"
                  f"{_table(s_succ, s_ret)}\n\n")
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    for r in per_seed:  # the training and evaluation curves behind the result
        suffix = "" if len(per_seed) == 1 else f".s{r['seed']}"
        for f in ("progress.csv", "eval.csv", "eval_metaworld.json", "eval_metaworld_train.json"):
            src = ROOT / r["run_dir"] / f
            if src.exists():
                shutil.copyfile(src, out / f"{name}{suffix}.{f}")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    curves = {f"seed {r['seed']}": (r["success_by_round"], r["return_by_round"]) for r in per_seed}
    if len(per_seed) > 1:
        curves["mean"] = (succ, ret)
    curve_figure(curves, f"{name}: meta-test on held-out tasks").savefig(out / f"{name}.png", dpi=100)
    (out / f"{name}.md").write_text(
        f"# {name}\n\n{cfg.agent.name} on {cfg.env.benchmark} {cfg.env.env_name or ''}, seeds {args.seeds}, "
        f"{result['env_steps']:,} training env steps, {result['wall_seconds'] / 60:.1f} min on {result['machine']}.\n\n"
        f"Meta-test on {result['meta_test']['n_tasks']} held-out tasks, "
        f"{cfg.eval.episodes_per_round} episodes per round (round 0 = before adaptation)"
        + (f". Stopped early at {result['env_steps']:,} of the preset's {cfg.run.env_steps:,} env steps"
           if result["stopped_early"] else "") + ":\n\n"
        f"{_table(succ, ret)}\n\n" + sel_md + _commands(per_seed, command, git))
    print(json.dumps(result["meta_test"], indent=2))
    for r in per_seed:  # what comes next for each run dir
        if r["stopped_early"]:
            print(f"{r['run_dir']} stopped early; to resume it on any machine later: "
                  f"python benchmarks/park_run.py {r['run_dir']}, commit benchmarks/inflight/", file=sys.stderr)
        else:
            print(f"{r['run_dir']} reached its budget; next: python benchmarks/finish_run.py {r['run_dir']}",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
