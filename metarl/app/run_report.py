"""`metarl report RUN_DIR`: RUN_DIR/report.md, plain Markdown with relative links, so it reads on any
Git host: the config, success vs env steps, per-class adaptation curves, the final evaluation per
task and the before | after videos (metarl/training/video.py). Every file is written under a temporary name
and renamed, so a failure leaves no half-written report."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from metarl.training import runfiles
from metarl.core.types import ConfigError

SUCCESS_PNG = "report_success.png"
BY_CLASS_PNG = "report_adaptation_by_class.png"


def _rows(path: Path) -> list[dict[str, str]]:
    from metarl.training.runlog import read_rows

    if not path.is_file():
        return []
    return read_rows(path)[1]  # a torn or glued row is refused, not plotted


def _num(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key) or "nan")
    except ValueError:
        return math.nan


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    with runfiles.open_temp(tmp, "wb") as f:  # never through a link planted at the temp name
        fig.savefig(f, dpi=90, format="png")
    os.replace(tmp, path)


def success_vs_steps(progress: list[dict[str, str]], evals: list[dict[str, str]], title: str) -> Any:
    """Training rollouts' success (progress.csv) and held-out / training-task evaluations'
    success after 0 and K rounds (eval.csv) against env steps."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    for key, label in (("rollout/success_rate_pre", "train rollouts, before adaptation"),
                       ("rollout/success_rate", "train rollouts, after adaptation")):
        pts = [(_num(r, "env_steps"), _num(r, key)) for r in progress if r.get(key) not in (None, "")]
        if pts:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], lw=1, alpha=0.7, label=label)
    for tag, name in (("eval", "held-out"), ("eval_train", "training tasks (selection)")):
        rows = [r for r in evals if r.get("eval", "eval") == tag]
        if not rows:
            continue
        k_max = max(int(_num(r, "round")) for r in rows)
        for k in sorted({0, k_max}):
            by_step: dict[float, list[float]] = {}
            for r in rows:
                if int(_num(r, "round")) == k:
                    by_step.setdefault(_num(r, "env_steps"), []).append(_num(r, "success"))
            xs = sorted(by_step)
            ax.plot(xs, [100 * sum(by_step[x]) / len(by_step[x]) for x in xs], marker="o", ms=3,
                    ls="--" if k == 0 else "-", label=f"{name} evaluation, {k} round(s)")
    ax.set(xlabel="env steps (training)", ylabel="success rate (%)", ylim=(-2, 102), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def final_table(evals: list[dict[str, str]]) -> list[str]:
    """Markdown rows of the last held-out evaluation in eval.csv: one per task, success and return by round."""
    rows = [r for r in evals if r.get("eval", "eval") == "eval"]
    if not rows:
        return ["(no held-out evaluation in eval.csv)"]
    last = max(_num(r, "env_steps") for r in rows)
    rows = [r for r in rows if _num(r, "env_steps") == last]
    k_max = max(int(_num(r, "round")) for r in rows)
    tasks: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    for r in rows:
        tasks.setdefault((r.get("task", "?"), r.get("task_index", "?")), {})[int(_num(r, "round"))] = \
            (_num(r, "success"), _num(r, "return"))
    ks = range(k_max + 1)
    out = [f"Evaluation at {int(last):,} env steps; success (mean episode return) after k adaptation rounds.", "",
           "| task | goal | " + " | ".join(f"k={k}" for k in ks) + " |",
           "|---|---:|" + "---:|" * len(ks)]
    for (name, goal), by_k in tasks.items():
        cells = [f"{100 * by_k[k][0]:.0f}% ({by_k[k][1]:.1f})" if k in by_k else "" for k in ks]
        out.append(f"| {name} | {goal} | " + " | ".join(cells) + " |")
    return out


def video_section(run_dir: Path) -> list[str]:
    path = run_dir / "videos" / "videos.json"
    if not path.is_file():
        return [f"No videos yet; film held-out tasks with `metarl eval {run_dir} --video`."]
    try:
        m = json.loads(path.read_text())
        c = m["cost"]
        out = [f"Camera `{m['camera']}`, {m['width']}x{m['height']}, one frame every {m['stride']} env step(s), "
               f"{m['fps']} fps; {c['frames']} frames rendered at {c['ms_per_frame']:.0f} ms/frame. "
               f"Left: the first episode before adaptation; right: the first episode after it.", ""]
        for t in m["tasks"]:
            s = [r["success"] for r in t["rounds"]]
            links = ", ".join(f"[round {k}](videos/{r['video']})" for k, r in enumerate(t["rounds"]))
            note = "" if t["matches"] else " (replay differs from the evaluation's numbers)"
            out += [f"**{t['class']}, goal {t['goal']}**: success {100 * s[0]:.0f}% before, "
                    f"{100 * s[-1]:.0f}% after{note}; {links}", "",
                    f"![{t['class']} goal {t['goal']}: before | after](videos/{t['montage_gif']})", ""]
        return out
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"RUN_DIR: {path} is not a videos manifest ({e.__class__.__name__})") from None


def read_eval_curve(run_dir: Path, by_class: bool = False) -> tuple[int, dict[str, tuple[list[float], list[float]]]]:
    """Success and return by round of the last held-out evaluation in a run's eval.csv (rows of
    model selection on training tasks, `eval_train`, and of best.pt, `eval_best`, left out): the
    mean over tasks under the key "mean", or with `by_class` one entry per env class."""
    path = Path(run_dir) / "eval.csv"
    if not path.is_file():
        raise ConfigError(f"RUN_DIR: {run_dir} has no eval.csv (has it finished an evaluation?)")
    from metarl.training.runlog import read_rows

    need = ("env_steps", "round", "success", "return")
    header, rows = read_rows(path)  # a torn or glued row is refused, not read as data
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




def write_report(run_dir: Path) -> Path:
    from metarl.training.runlog import curve_figure

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not run_dir.is_dir() or not cfg_path.is_file():
        raise ConfigError(f"RUN_DIR: {run_dir} is not a run dir (no config.yaml)")
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"RUN_DIR: cannot write report.md in {run_dir}: not writable")
    runfiles.refuse_links(run_dir)  # what it reads and writes: never through a link planted there
    progress, evals = _rows(run_dir / "progress.csv"), _rows(run_dir / "eval.csv")
    lines = [f"# Run report: {run_dir.name}", ""]
    final = run_dir / "final_eval.json"
    if final.is_file():
        try:
            f = json.loads(final.read_text())
            s = f["success_by_round"]
            lines += [f"Final held-out evaluation at {f['env_steps']:,} env steps on {f['n_tasks']} tasks: "
                      f"success {100 * s[0]:.1f}% before adaptation, {100 * s[-1]:.1f}% after "
                      f"{len(s) - 1} round(s)" + (" (stopped early)" if f.get("stopped_early") else "") + "."]
            if "metaworld" in f:
                mw = f["metaworld"]
                lines += ["", f"Meta-World protocol: {100 * mw['success']:.1f}% per goal "
                              f"(as metaworld 3.1.1 pools it: {100 * mw['success_metaworld_pooled']:.1f}%)."]
            lines.append("")
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            raise ConfigError(f"RUN_DIR: {final} is not a final evaluation ({e.__class__.__name__})") from None
    lines += ["## Success vs env steps", ""]
    if progress or evals:
        _save(success_vs_steps(progress, evals, run_dir.name), run_dir / SUCCESS_PNG)
        lines += [f"![success vs env steps]({SUCCESS_PNG})", ""]
    else:
        lines += ["(no progress.csv or eval.csv yet)", ""]
    lines += ["## Adaptation curves per held-out class", ""]
    if evals:
        steps, groups = read_eval_curve(run_dir, by_class=True)
        _save(curve_figure(groups, f"held-out classes at {steps:,} env steps"), run_dir / BY_CLASS_PNG)
        lines += [f"![adaptation curves by class]({BY_CLASS_PNG})", "", "## Final evaluation per task", "",
                  *final_table(evals), ""]
    else:
        lines += ["(no evaluation yet)", ""]
    lines += ["## Before and after adaptation", "", *video_section(run_dir), "",
              "## Config", "", "```yaml", cfg_path.read_text().rstrip(), "```", ""]
    out = run_dir / "report.md"
    runfiles.replace_text(out, "\n".join(lines))
    return out
