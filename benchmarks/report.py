"""Build benchmarks/results/README.md (and one aggregate JSON + figures per benchmark) from the
per-seed result files that benchmarks/run_preset.py writes.

    python benchmarks/report.py [--results benchmarks/results]

A benchmark row is a result name with its seed suffix removed: `ml10_maml_trpo_s1.json`,
`ml10_maml_trpo_s2.json`, ... make the row `ml10_maml_trpo` and its aggregate
`ml10_maml_trpo.json`. A single-seed result without a suffix (`ml1_reach_maml_trpo.json`, written
by run_preset) is its own row. Per seed it reads:

- `<name>.eval_metaworld.json`: the final Meta-World-protocol evaluation on the held-out goals
  (`metarl eval RUN_DIR --protocol metaworld`, or the run's own with eval.protocol: metaworld):
  `success` counts per goal, then class, then mean over classes; `success_metaworld_pooled` is
  what metaworld 3.1.1's `metalearning_evaluation` computes from the same episodes;
- `<name>.eval_metaworld_train.json` (optional): the same on training goals;
- `<name>.eval.csv`: the periodic evaluations (`eval` rows: held-out goals, `eval_train` rows:
  training goals); success after adaptation = round 1. "max" = the best of these and the final
  evaluation, as the Meta-World paper's "average maximum success" (max over training, then mean
  over seeds).
Intervals are 95% Student-t intervals over seeds (none for one seed).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# Published ML10 rows (success rates, %). Meta-World paper (Yu et al., CoRL 2019; arXiv v2) Table 1:
# average maximum success over training, meta-train / meta-test. Meta-World+ (v3 envs, 20M env
# steps): meta-test success read from the paper's figures, approximate.
PUBLISHED = {
    "ML10": [
        {"source": "Meta-World paper v2, Table 1", "agent": "maml_trpo", "meta_train": 44.4, "meta_test": 31.6},
        {"source": "Meta-World paper v2, Table 1", "agent": "rl2_ppo", "meta_train": 86.9, "meta_test": 35.8},
        {"source": "Meta-World paper v2, Table 1", "agent": "pearl", "meta_train": 23.2, "meta_test": 13.0},
        {"source": "Meta-World+ (v3 envs, 20M steps; read from its figures)", "agent": "maml_trpo",
         "meta_train": None, "meta_test": 35.0, "approx": True},
        {"source": "Meta-World+ (v3 envs, 20M steps; read from its figures)", "agent": "rl2_ppo",
         "meta_train": None, "meta_test": 35.0, "approx": True},
    ],
}
AGENT_NAMES = {"maml_trpo": "MAML-TRPO", "rl2_ppo": "RL²-PPO", "pearl": "PEARL"}
_SEED = re.compile(r"^(?P<row>.+)_s(?P<seed>\d+)$")


def t95(n: int) -> float:
    """Two-sided 95% Student-t quantile for n - 1 degrees of freedom."""
    from scipy import stats
    return float(stats.t.ppf(0.975, n - 1))


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    v = np.asarray(values, float)
    if len(v) < 2:
        return float(v.mean()), None
    return float(v.mean()), float(t95(len(v)) * v.std(ddof=1) / math.sqrt(len(v)))


def periodic(eval_csv: Path, tag: str) -> list[tuple[int, float]]:
    """(env steps, mean success after adaptation) of each periodic evaluation with `tag`:
    round 1, mean over goals of each class, then over classes."""
    if not eval_csv.is_file():
        return []
    by_step: dict[int, dict[str, list[float]]] = {}
    with eval_csv.open() as f:
        for r in csv.DictReader(f):
            if r.get("eval", "eval") != tag or int(r["round"]) != 1:
                continue
            by_step.setdefault(int(r["env_steps"]), {}).setdefault(r["task"], []).append(float(r["success"]))
    return [(s, float(np.mean([np.mean(v) for v in by_step[s].values()]))) for s in sorted(by_step)]


def load_seed(results: Path, name: str) -> dict | None:
    """One seed's figures, or None when it has no Meta-World-protocol evaluation yet."""
    res = json.loads((results / f"{name}.json").read_text())
    mw_path = results / f"{name}.eval_metaworld.json"
    if not mw_path.is_file():
        return None
    mw = json.loads(mw_path.read_text())
    train_path = results / f"{name}.eval_metaworld_train.json"
    mw_train = json.loads(train_path.read_text()) if train_path.is_file() else None
    test_hist = periodic(results / f"{name}.eval.csv", "eval")
    train_hist = periodic(results / f"{name}.eval.csv", "eval_train")
    seed = res["seeds"][0] if len(res["seeds"]) == 1 else None
    train_final = mw_train["success"] if mw_train else (train_hist[-1][1] if train_hist else None)
    return {
        "name": name, "seed": seed, "result": res, "metaworld": mw, "metaworld_train": mw_train,
        "env_steps": res["env_steps"], "wall_seconds": res["wall_seconds"],
        "stopped_early": res.get("stopped_early", False),
        "periodic_protocol": res.get("config", {}).get("eval", {}).get("protocol", "curve"),
        "test": {"final": mw["success"], "pooled": mw["success_metaworld_pooled"],
                 "max": max([mw["success"]] + [s for _, s in test_hist]), "history": test_hist,
                 "pre_adaptation": mw.get("success_pre_adaptation"),
                 "per_class": {k: v["success"] for k, v in mw["per_class"].items()},
                 "per_class_pre": {k: v["success_pre_adaptation"] for k, v in mw["per_class"].items()}},
        "train": {"final": train_final, "pooled": mw_train["success_metaworld_pooled"] if mw_train else None,
                  "max": max([x for x in [train_final] + [s for _, s in train_hist] if x is not None], default=None),
                  "history": train_hist,
                  "per_class": {k: v["success"] for k, v in mw_train["per_class"].items()} if mw_train else {}},
    }


def aggregate(row: str, seeds: list[dict]) -> dict:
    first = seeds[0]["result"]
    cfg = first["config"]

    def split(key: str) -> dict:
        finals = [s[key]["final"] for s in seeds if s[key]["final"] is not None]
        maxes = [s[key]["max"] for s in seeds if s[key]["max"] is not None]
        pooled = [s[key]["pooled"] for s in seeds if s[key]["pooled"] is not None]
        if not finals:
            return {"success_final": None, "success_max": None, "success_final_ci95": None,
                    "success_max_ci95": None, "success_metaworld_pooled": None, "per_seed": [], "per_class": {}}
        f_mean, f_ci = mean_ci(finals)
        m_mean, m_ci = mean_ci(maxes)
        classes = list(seeds[0][key]["per_class"])
        return {
            "success_final": f_mean, "success_final_ci95": f_ci, "success_max": m_mean, "success_max_ci95": m_ci,
            "success_metaworld_pooled": float(np.mean(pooled)) if pooled else None,
            "success_pre_adaptation": float(np.mean([s[key].get("pre_adaptation") for s in seeds]))
            if key == "test" else None,
            "per_seed": [{"seed": s["seed"], "success_final": s[key]["final"], "success_max": s[key]["max"],
                          "success_metaworld_pooled": s[key]["pooled"],
                          "history": [{"env_steps": e, "success": v} for e, v in s[key]["history"]]}
                         for s in seeds],
            "per_class": {c: float(np.mean([s[key]["per_class"].get(c, np.nan) for s in seeds])) for c in classes},
        }

    return {
        "preset": first["preset"], "agent": first["agent"], "benchmark": first["benchmark"],
        "env_name": first.get("env_name"), "horizon": seeds[0]["metaworld"]["horizon"], "protocol": "metaworld",
        "protocol_settings": {k: seeds[0]["metaworld"][k] for k in
                              ("adaptation_episodes", "adaptation_steps", "evaluation_episodes",
                               "adaptation_deterministic", "evaluation_deterministic", "pool_size")},
        "seeds": [s["seed"] for s in seeds], "env_steps": [s["env_steps"] for s in seeds],
        "budget_env_steps": cfg["run"]["env_steps"], "stopped_early": [s["stopped_early"] for s in seeds],
        "wall_seconds": [s["wall_seconds"] for s in seeds], "machine": sorted({s["result"]["machine"] for s in seeds}),
        "command": [s["result"]["command"] for s in seeds], "git_commit": [s["result"]["git_commit"] for s in seeds],
        "meta_test": split("test"), "meta_train": split("train"), "result_files": [s["name"] for s in seeds],
        "periodic_protocol": [s["periodic_protocol"] for s in seeds],
    }


def pct(x: float | None, ci: float | None = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.1f}%" + (f" ± {100 * ci:.1f}" if ci is not None else "")


def figures(results: Path, row: str, agg: dict, seeds: list[dict]) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    out = []
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key, title in zip(axes, ("train", "test"), ("meta-train goals", "meta-test (held-out) goals")):
        for s in seeds:
            h = s[key]["history"]
            if h:
                ax.plot([e / 1e6 for e, _ in h], [100 * v for _, v in h], marker=".", alpha=0.6,
                        label=f"seed {s['seed']}")
        lens = {len(s[key]["history"]) for s in seeds}
        if len(seeds) > 1 and len(lens) == 1 and lens != {0}:
            steps = [e / 1e6 for e, _ in seeds[0][key]["history"]]
            mean = np.mean([[v for _, v in s[key]["history"]] for s in seeds], axis=0)
            ax.plot(steps, 100 * mean, color="k", lw=2, label="mean")
        ax.set(title=title, xlabel="env steps (M)", ylabel="success after adaptation (%)", ylim=(-2, 102))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{row}: periodic evaluations (success after adaptation, a fixed subsample of goals)")
    fig.tight_layout()
    fig.savefig(results / f"{row}.curves.png", dpi=100)
    out.append(f"{row}.curves.png")

    classes = list(agg["meta_test"]["per_class"])
    fig = Figure(figsize=(max(6, 1.2 * len(classes) + 2), 4))
    ax = fig.subplots()
    x = np.arange(len(classes))
    pre = [np.mean([s["test"]["per_class_pre"][c] for s in seeds]) for c in classes]
    post = [agg["meta_test"]["per_class"][c] for c in classes]
    ax.bar(x - 0.2, 100 * np.asarray(pre), 0.4, label="adaptation episodes (before the adaptation step)")
    ax.bar(x + 0.2, 100 * np.asarray(post), 0.4, label="evaluation episodes (after)")
    ax.set_xticks(x, classes, rotation=20, fontsize=8)
    ax.set(ylabel="success (%)", ylim=(0, 102), title=f"{row}: held-out classes, final evaluation, mean over seeds")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(results / f"{row}.per_class.png", dpi=100)
    out.append(f"{row}.per_class.png")
    return out


def markdown(rows: dict[str, dict], figs: dict[str, list[str]], others: list[str], extra: str = "") -> str:
    lines = ["# Benchmark results", "",
             "Generated by `python benchmarks/report.py` from the per-seed result files in this folder; "
             "do not edit by hand.", "",
             "**How success is counted.** Every figure below comes from the Meta-World protocol "
             "(`metarl eval RUN_DIR --protocol metaworld`): per held-out goal, 10 adaptation episodes with "
             "sampled actions, one adaptation step (MAML: one inner step; RL²: the trial goes on; PEARL: "
             "posterior from that context), then 3 evaluation episodes that end on success; an episode succeeds "
             "if any step does; mean per goal, then per class, then over classes. *final* = the last policy on all "
             "goals of each held-out class; *max* = the best of the periodic evaluations (a fixed subsample of goals, "
             "the same for every seed) and the final one, as the Meta-World paper's \"average maximum success\". "
             "± = 95% Student-t interval over seeds. *pooled* = the number metaworld 3.1.1's own "
             "`metalearning_evaluation` computes from the very same episodes: it counts only the first 3 episodes "
             "to *finish* among the envs of a class, so early successes count and slow failures do not "
             "(tests/test_protocol.py reproduces it exactly); published v3 numbers were computed that way.", ""]
    for bench in sorted({r["benchmark"] for r in rows.values()}):
        lines += [f"## {bench}", ""]
        lines += ["| agent | seeds | env steps | meta-train final | meta-train max | meta-test final | meta-test max "
                  "| meta-test before adaptation | meta-test pooled (metaworld 3.1.1) | wall time per seed | machine |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row, a in sorted(rows.items()):
            if a["benchmark"] != bench:
                continue
            steps = ", ".join((f"{e / 1e6:.1f}M" if e >= 1e5 else f"{e:,}") + (" (stopped)" if st else "")
                              for e, st in zip(a["env_steps"], a["stopped_early"]))
            mt, mtr = a["meta_test"], a["meta_train"]
            label = AGENT_NAMES.get(a["agent"], a["agent"]) + (f" ({a['env_name']})" if a.get("env_name") else "")
            lines.append(
                f"| **{label}** (`{row}`) | {len(a['seeds'])} | {steps} | {pct(mtr['success_final'], mtr['success_final_ci95'])} "
                f"| {pct(mtr['success_max'], mtr['success_max_ci95'])} | {pct(mt['success_final'], mt['success_final_ci95'])} "
                f"| {pct(mt['success_max'], mt['success_max_ci95'])} | {pct(mt.get('success_pre_adaptation'))} "
                f"| {pct(mt['success_metaworld_pooled'])} | {', '.join(f'{w / 3600:.1f} h' for w in a['wall_seconds'])} "
                f"| {'; '.join(a['machine'])} |")
        for p in PUBLISHED.get(bench, []):
            mt = f"{'~' if p.get('approx') else ''}{p['meta_test']:.1f}%"
            mtr = "–" if p["meta_train"] is None else f"{p['meta_train']:.1f}%"
            lines.append(f"| {AGENT_NAMES[p['agent']]} — *published: {p['source']}* | | | | {mtr} | | {mt} | | | | |")
        lines.append("")
        for row, a in sorted(rows.items()):
            if a["benchmark"] == bench:
                lines.append(f"`{row}`: " + " ".join(f"![{f}]({f})" for f in figs.get(row, [])))
                lines.append("")
                curve_seeds = [str(sd) for sd, pp in zip(a["seeds"], a["periodic_protocol"]) if pp != "metaworld"]
                if curve_seeds:
                    lines.append(f"Seed(s) {', '.join(curve_seeds)} of `{row}` ran before `eval.protocol: metaworld` "
                                 "existed: their periodic evaluations (the *max* columns) used the curve protocol on the "
                                 "same goals (10 episodes, one adaptation step, 10 more episodes), which estimates the "
                                 "same success for MAML-TRPO; their *final* figures come from the Meta-World protocol.")
                    lines.append("")
                per_class = a["meta_test"]["per_class"]
                lines.append("Held-out classes (final, mean over seeds): " +
                             ", ".join(f"{c} {pct(v)}" for c, v in per_class.items()))
                lines.append("")
    if extra:
        lines += [extra, ""]
    if others:
        lines += ["## Other results in this folder", "",
                  "Earlier runs, not under the Meta-World protocol (150-step episodes or the curve protocol); "
                  "not comparable with published tables:", ""]
        lines += [f"- [{o}]({o}.md)" for o in others]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    results = Path(args.results)
    if not results.is_dir():
        print(f"report: error: --results: no such directory: {results}", file=sys.stderr)
        return 2
    groups: dict[str, list[dict]] = {}
    others = []
    for path in sorted(results.glob("*.json")):
        name = path.name[:-len(".json")]
        if "." in name:
            continue  # <name>.eval_metaworld.json and friends
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            print(f"report: error: {path}: not JSON ({e})", file=sys.stderr)
            return 2
        if not isinstance(data, dict) or "per_seed" not in data or "preset" not in data:
            continue  # an aggregate this script wrote, or another benchmark's output
        if data.get("protocol") == "metaworld" and "meta_test" in data and "success_final" in data["meta_test"]:
            continue
        seed = load_seed(results, name)
        if seed is None:
            if (results / f"{name}.md").is_file():
                others.append(name)
            continue
        m = _SEED.match(name)
        groups.setdefault(m.group("row") if m else name, []).append(seed)
    rows, figs = {}, {}
    for row, seeds in sorted(groups.items()):
        seeds.sort(key=lambda s: (s["seed"] is None, s["seed"]))
        agg = aggregate(row, seeds)
        rows[row] = agg
        # a row made of one unsuffixed result (run_preset's own <name>.json) must not overwrite it
        target = results / (f"{row}.json" if seeds[0]["name"] != row else f"{row}_all_seeds.json")
        target.write_text(json.dumps(agg, indent=2) + "\n")
        figs[row] = figures(results, row, agg, seeds)
    extra = ""
    scratch = results / "scratch_baseline.md"
    if scratch.is_file():
        extra = "## From-scratch baseline\n\n" + scratch.read_text().split("\n", 1)[1].strip()
    (results / "README.md").write_text(markdown(rows, figs, others, extra) + "\n")
    print(f"wrote {results / 'README.md'} ({len(rows)} benchmark rows: {', '.join(rows) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
