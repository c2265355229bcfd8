"""`metarl bench report` (metarl/app/bench/report.py): per-seed result files -> aggregate JSON (the
issue's keys) and README."""
from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _report(d: Path) -> SimpleNamespace:
    """`metarl bench report --results d` in this process: its exit code, stdout and stderr."""
    from metarl.app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["bench", "report", "--results", str(d)])
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


def _complete(result: dict) -> dict:
    """A per-seed result file as `metarl bench run` writes it, around the fields a test sets (the report
    reads every result through metarl.app.bench.result.Result, which refuses a file missing a field)."""
    seed = result["seeds"][0]
    curve = {"success_by_round": [0.0, 0.5], "return_by_round": [0.0, 1.0], "n_tasks": 2}
    return {"device": "cpu", "torch": "test", **result,
            "meta_test": {**curve, "rounds": 1, "episodes_per_round": 1, "split": "test"},
            "per_seed": [{"seed": seed, "run_dir": f"runs/bench/x-s{seed}", "env_steps": result["env_steps"],
                          "wall_seconds": result["wall_seconds"], **curve}]}


def _seed_files(d: Path, name: str, seed: int, final: float, pooled: float, history: list[float],
                per_class: dict[str, float]):
    (d / f"{name}.json").write_text(json.dumps(_complete({
        "preset": "ml10_maml_trpo", "agent": "maml_trpo", "benchmark": "ML10", "env_name": None, "seeds": [seed],
        "env_steps": 20_000_000, "stopped_early": False, "wall_seconds": 3600.0, "machine": "test cpu",
        "command": "metarl bench run ...", "git_commit": "abc", "per_seed": [{}],
        "config": {"run": {"env_steps": 20_000_000}}})))
    (d / f"{name}.eval_metaworld.json").write_text(json.dumps({
        "protocol": "metaworld", "adaptation_episodes": 10, "adaptation_steps": 1, "evaluation_episodes": 3,
        "adaptation_deterministic": False, "evaluation_deterministic": False, "pool_size": 4, "horizon": 500,
        "success": final, "success_metaworld_pooled": pooled, "success_pre_adaptation": final / 2,
        "per_class": {c: {"success": v, "success_pre_adaptation": v / 2, "return": 0.0, "goals": 50}
                      for c, v in per_class.items()}}))
    with (d / f"{name}.eval.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["env_steps", "eval", "task", "task_index", "round", "success", "return"])
        w.writeheader()
        for i, s in enumerate(history):
            for task, task_success in (("a-v3", s), ("b-v3", s)):
                for k, v in ((0, 0.0), (1, task_success)):
                    w.writerow({"env_steps": (i + 1) * 2_000_000, "eval": "eval", "task": task, "task_index": 0,
                                "round": k, "success": v, "return": 0.0})


def test_report_aggregates_seeds_with_intervals_and_max_over_training(tmp_path):
    _seed_files(tmp_path, "ml10_maml_trpo_s1", 1, 0.30, 0.60, [0.1, 0.5, 0.2], {"a-v3": 0.2, "b-v3": 0.4})
    _seed_files(tmp_path, "ml10_maml_trpo_s2", 2, 0.40, 0.80, [0.2, 0.3], {"a-v3": 0.3, "b-v3": 0.5})
    _seed_files(tmp_path, "ml10_maml_trpo_s3", 3, 0.20, 0.40, [0.1, 0.1], {"a-v3": 0.1, "b-v3": 0.3})
    out = _report(tmp_path)
    assert out.returncode == 0, out.stderr
    agg = json.loads((tmp_path / "ml10_maml_trpo.json").read_text())
    for key in ("preset", "agent", "benchmark", "horizon", "protocol", "seeds", "env_steps", "wall_seconds",
                "machine", "command", "git_commit", "meta_test", "meta_train"):
        assert key in agg
    mt = agg["meta_test"]
    assert agg["seeds"] == [1, 2, 3] and agg["protocol"] == "metaworld" and agg["horizon"] == 500
    assert mt["success_final"] == pytest.approx(0.30)
    # 95% t interval over 3 seeds: t(0.975, 2) = 4.303, sd = 0.1
    assert mt["success_final_ci95"] == pytest.approx(4.3027 * 0.1 / 3 ** 0.5, rel=1e-3)
    assert mt["success_max"] == pytest.approx((0.5 + 0.4 + 0.2) / 3)  # best periodic or final, per seed
    assert mt["success_metaworld_pooled"] == pytest.approx(0.60)
    assert mt["per_class"] == pytest.approx({"a-v3": 0.2, "b-v3": 0.4})
    readme = (tmp_path / "README.md").read_text()
    assert "30.0% ± 24.8" in readme and "31.6%" in readme  # ours next to the published MAML row
    assert (tmp_path / "ml10_maml_trpo.curves.png").stat().st_size > 1000


def test_report_refuses_a_missing_results_dir(tmp_path):
    out = _report(tmp_path / "x")
    assert out.returncode == 2 and "no such directory" in out.stderr and "Traceback" not in out.stderr


# ---- `metarl report RUN_DIR` (metarl/app/run_report.py) --------------------------------------------------
def test_metarl_report_writes_a_readable_report_md(tmp_path):
    from PIL import Image

    from metarl.app.cli import main

    assert main(["train", str(ROOT / "configs" / "toy_maml_trpo.yaml"), "--set", f"run.out_dir={tmp_path}",
                 "--set", "run.name=r", "--set", "run.progress=false", "--set", "run.env_steps=8000",
                 "--set", "eval.every=1", "--set", "eval.tasks_per_class=2", "--set", "eval.select_best=true",
                 "--set", "eval.select_tasks_per_class=2", "--set", "eval.final_tasks_per_class=3"]) == 0
    run = tmp_path / "r"
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    for heading in ("## Success vs env steps", "## Adaptation curves per held-out class",
                    "## Final evaluation per task", "## Before and after adaptation", "## Config"):
        assert heading in md
    # images are linked relative to the run dir and are real PNGs
    for png in ("report_success.png", "report_adaptation_by_class.png"):
        assert f"]({png})" in md
        with Image.open(run / png) as im:
            assert im.format == "PNG" and im.width > 100
    # the final evaluation's per-task table: one row per held-out task, success@k as logged
    final = json.loads((run / "final_eval.json").read_text())
    rows = [line for line in md.splitlines() if line.startswith("| point |")]
    assert len(rows) == final["n_tasks"] == 3
    with (run / "eval.csv").open() as f:
        logged = [r for r in csv.DictReader(f) if r["eval"] == "eval" and int(r["env_steps"]) == final["env_steps"]
                  and r["task_index"] == rows[0].split("|")[2].strip() and r["round"] == "2"]
    assert f"{100 * float(logged[0]['success']):.0f}% ({float(logged[0]['return']):.1f})" in rows[0]
    assert "metarl eval" in md and "--video" in md  # no videos yet: says how to make them
    assert "preset: toy_maml_trpo" in md or "agent:" in md  # the config is there
    assert not list(run.glob(".*tmp*"))  # nothing half-written left behind


def test_metarl_report_refuses_a_dir_that_is_not_a_run(tmp_path, capsys):
    from metarl.app.cli import main

    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "RUN_DIR:" in err and "not a run dir" in err
    assert not (tmp_path / "report.md").exists()


# ---- the "ML1 reach-v3: MAML variants and Reptile" section ---------------------------------------------
def _variant_files(d: Path, name: str, agent: str, agent_cfg: dict, pre: float, after1: float, after2: float | None,
                   periodic: list[tuple[int, float]], train: list[tuple[float, float]] | None,
                   theta_success: list[float] | None, update_s: list[float], wall: float):
    """A per-seed result of one ML1 reach run. train: (pre, post) success per iteration (MAML's
    progress columns); theta_success: Reptile's only column (θ's episodes)."""
    (d / f"{name}.json").write_text(json.dumps(_complete({
        "preset": name[:-3], "agent": agent, "benchmark": "ML1", "env_name": "reach-v3", "seeds": [1],
        "env_steps": 1_000_000, "stopped_early": False, "wall_seconds": wall, "machine": "test cpu",
        "command": "metarl bench run ...", "git_commit": "abc", "per_seed": [{}],
        "config": {"run": {"env_steps": 1_000_000}, "agent": {"name": agent, **agent_cfg},
                   "eval": {"protocol": "metaworld"}}})))
    for suffix, steps, success in (("eval_metaworld", 1, after1), ("eval_metaworld_2steps", 2, after2)):
        if success is None:
            continue
        (d / f"{name}.{suffix}.json").write_text(json.dumps({
            "protocol": "metaworld", "adaptation_episodes": 10, "adaptation_steps": steps, "evaluation_episodes": 3,
            "adaptation_deterministic": False, "evaluation_deterministic": False, "pool_size": 20, "horizon": 500,
            "success": success, "success_metaworld_pooled": success, "success_pre_adaptation": pre,
            "per_class": {"reach-v3": {"success": success, "success_pre_adaptation": pre, "return": 0.0,
                                       "goals": 50}}}))
    with (d / f"{name}.eval.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["env_steps", "eval", "task", "task_index", "round", "success", "return"])
        w.writeheader()
        for steps, s in periodic:
            for k, v in ((0, pre), (1, s)):
                w.writerow({"env_steps": steps, "eval": "eval", "task": "reach-v3", "task_index": 0, "round": k,
                            "success": v, "return": 0.0})
    n = len(update_s)
    cols = ["env_steps"] + (["rollout/success_rate_pre"] if train else []) + ["rollout/success_rate", "time/update_s"]
    with (d / f"{name}.progress.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for i in range(n):
            row = {"env_steps": (i + 1) * 1_000_000 // n, "time/update_s": update_s[i]}
            if train:
                row["rollout/success_rate_pre"], row["rollout/success_rate"] = train[i]
            else:
                row["rollout/success_rate"] = theta_success[i]
            w.writerow(row)


def _variant_table(readme: str) -> dict[str, list[str]]:
    section = readme.split("## ML1 reach-v3: MAML variants and Reptile", 1)[1].split("\n## ", 1)[0]
    return {line.split("`")[1]: [c.strip() for c in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| **")}


def test_report_ml1_variants_section_compares_each_algorithm_with_maml_trpo(tmp_path):
    _variant_files(tmp_path, "ml1_reach_maml_trpo_s1", "maml_trpo", {"first_order": False, "learn_inner_lr": "none"},
                   0.40, 1.0, 0.98, [(400_000, 0.95), (800_000, 1.0), (1_000_000, 1.0)],
                   [(0.1, 0.5), (0.3, 0.92), (0.4, 1.0), (0.4, 1.0)], None, [10.0, 12.0, 14.0, 40.0], 1200.0)
    _variant_files(tmp_path, "ml1_reach_maml_fo_s1", "maml_trpo", {"first_order": True, "learn_inner_lr": "none"},
                   0.42, 1.0, 1.0, [(400_000, 1.0), (800_000, 1.0), (1_000_000, 1.0)],
                   [(0.1, 0.6), (0.3, 0.95), (0.4, 1.0), (0.4, 1.0)], None, [4.0, 4.0, 5.0, 5.0], 900.0)
    _variant_files(tmp_path, "ml1_reach_reptile_s1", "reptile", {"inner_steps": 3},
                   0.20, 0.70, None, [(400_000, 0.5), (800_000, 0.85), (1_000_000, 0.70)],
                   None, [0.05, 0.1, 0.15, 0.2], [1.0, 1.0, 1.0, 1.0], 600.0)
    with (tmp_path / "ml1_reach_maml_trpo_s1.eval_metaworld_2steps.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["task", "task_index", "phase", "episode", "success", "return", "length"])
        w.writeheader()
        for goal, (a0, a1, ev) in enumerate(((0.0, 1.0, 1.0), (1.0, 1.0, 0.0))):  # 2 goals, 2 episodes a phase
            for phase, v in (("adapt0", a0), ("adapt1", a1), ("eval", ev)):
                for e in range(2):
                    w.writerow({"task": "reach-v3", "task_index": goal, "phase": phase, "episode": e,
                                "success": v if e == 0 else 0.0, "return": 0.0, "length": 500})
    # no Meta-SGD files: its row is left out, not faked
    out = _report(tmp_path)
    assert out.returncode == 0, out.stderr
    readme = (tmp_path / "README.md").read_text()
    table = _variant_table(readme)
    assert list(table) == ["ml1_reach_maml_trpo", "ml1_reach_maml_fo", "ml1_reach_reptile"]
    # columns: algorithm, seeds, env steps, iterations, before, after 1, after 2, pooled, meta-test >= 90%,
    # training >= 90%, wall time, update s/iteration
    base, fo, rep = table["ml1_reach_maml_trpo"], table["ml1_reach_maml_fo"], table["ml1_reach_reptile"]
    assert base[0].startswith("**MAML-TRPO**") and fo[0].startswith("**first-order MAML**")
    assert rep[0].startswith("**Reptile**")
    assert base[3] == "4 (0.2M)"
    assert base[4:8] == ["40.0%", "100.0%", "98.0%", "100.0%"]
    assert rep[4:8] == ["20.0%", "70.0%", "–", "70.0%"]
    assert base[8] == "0.4M (0.4M, 0.8M, 1.0M)" and rep[8].startswith("not reached")
    assert base[9] == "0.5M" and fo[9] == "0.5M" and rep[9] == "–"  # Reptile logs only θ's episodes
    assert base[10] == "20 min" and base[11] == "19.0 (13.0)" and fo[11] == "4.5 (4.5)"
    # the shortfalls, computed: Reptile 30 points after 1 round and never at 90%; first-order MAML none
    assert "30.0 points of held-out success after 1 adaptation round (70.0% vs 100.0%)" in readme
    assert "90% never reached in the periodic meta-test evaluations" in readme
    assert "**first-order MAML** vs MAML-TRPO: no shortfall" in readme
    assert "MAML-TRPO adapt0 25.0%, adapt1 50.0%, eval 25.0%" in readme  # phases of the 2-round run's episodes
    assert "![ml1_reach_variants.png](ml1_reach_variants.png)" in readme
    assert (tmp_path / "ml1_reach_variants.png").stat().st_size > 1000
    # the aggregates of the new rows, with the baseline's keys
    keys = set(json.loads((tmp_path / "ml1_reach_maml_trpo.json").read_text()))
    for row in ("ml1_reach_maml_fo", "ml1_reach_reptile"):
        assert set(json.loads((tmp_path / f"{row}.json").read_text())) == keys
    # a hand-written reading of the curves, when present, goes under the table
    (tmp_path / "ml1_reach_variants.notes.md").write_text("Reptile's gap: see the dashed lines.\n")
    assert _report(tmp_path).returncode == 0
    section = (tmp_path / "README.md").read_text().split("## ML1 reach-v3: MAML variants and Reptile", 1)[1]
    assert "Reptile's gap: see the dashed lines." in section


def test_report_ml1_variants_section_needs_the_baseline_and_a_second_row(tmp_path):
    _variant_files(tmp_path, "ml1_reach_maml_fo_s1", "maml_trpo", {"first_order": True}, 0.4, 1.0, 1.0,
                   [(1_000_000, 1.0)], [(0.4, 1.0)], None, [4.0], 900.0)
    _variant_files(tmp_path, "ml1_reach_reptile_s1", "reptile", {}, 0.2, 0.7, None, [(1_000_000, 0.7)],
                   None, [0.2], [1.0], 600.0)
    out = _report(tmp_path)
    assert out.returncode == 0, out.stderr
    readme = (tmp_path / "README.md").read_text()
    assert "MAML variants and Reptile" not in readme and not (tmp_path / "ml1_reach_variants.png").exists()
    assert "first-order MAML (reach-v3)" in readme  # the ML1 table still lists the rows, by variant


def test_report_refuses_a_two_step_file_that_is_not_two_steps(tmp_path):
    for name, agent in (("ml1_reach_maml_trpo_s1", "maml_trpo"), ("ml1_reach_reptile_s1", "reptile")):
        _variant_files(tmp_path, name, agent, {}, 0.4, 1.0, 1.0, [(1_000_000, 1.0)], None, [1.0], [1.0], 60.0)
    bad = tmp_path / "ml1_reach_reptile_s1.eval_metaworld_2steps.json"
    bad.write_text(bad.read_text().replace('"adaptation_steps": 2', '"adaptation_steps": 1'))
    out = _report(tmp_path)
    assert out.returncode == 2 and "adaptation_steps 1, expected 2" in out.stderr and "Traceback" not in out.stderr


def test_agent_label_names_the_rl2_options_that_differ_from_the_preset():
    from metarl.agents import AGENTS

    def label(**agent):  # the report's label for a result whose config's agent section is this
        return AGENTS["rl2_ppo"].label({"minibatches": 4, "epochs": 10, **agent})

    assert label() == label(std="param", baseline="value_head") == "RL²-PPO, 40 PPO steps/iteration"
    assert label(std="state") == "RL²-PPO, 40 PPO steps/iteration, state-dependent std"
    assert label(baseline="linear", minibatches=20, epochs=16) == "RL²-PPO, 320 PPO steps/iteration, linear baseline"
    ref = dict(bptt="trial", head="bounded", normalize_advantages=False, baseline="linear_trial",
               task_sampling="class_balanced")
    assert label(**ref) == "RL²-PPO, reference settings"
    assert label(**{**ref, "bptt": "episode"}) == "RL²-PPO, reference settings without the boundary gradient (per-episode BPTT)"
    assert label(**{**ref, "head": "linear", "normalize_advantages": True}) == \
        "RL²-PPO, reference settings without the bounded head, raw advantages"


# ---- RL² evaluated both ways: `--evaluation-state continue` (the trial goes on) and `restart` ------------------
def _rl2_seed(d: Path, name: str, seed: int, final: float, restart: float | None):
    """An RL² seed's files; with `restart`, also `<name>.eval_metaworld_restart.json` (success `restart`)."""
    _seed_files(d, name, seed, final, final, [0.1, 0.5], {"a-v3": final, "b-v3": final})
    res = json.loads((d / f"{name}.json").read_text())
    (d / f"{name}.json").write_text(json.dumps({**res, "agent": "rl2_ppo", "preset": "ml10_rl2_ppo"}))
    if restart is not None:
        mw = json.loads((d / f"{name}.eval_metaworld.json").read_text())
        mw.update(evaluation_state="restart", evaluation_deterministic=True, success=restart,
                  success_metaworld_pooled=restart,
                  per_class={c: {**v, "success": restart} for c, v in mw["per_class"].items()})
        (d / f"{name}.eval_metaworld_restart.json").write_text(json.dumps(mw))


def test_report_shows_an_rl2_row_both_ways_when_both_files_exist(tmp_path):
    _rl2_seed(tmp_path, "ml10_rl2_ppo_s1", 1, 0.30, 0.60)
    _rl2_seed(tmp_path, "ml10_rl2_ppo_s2", 2, 0.40, 0.70)
    run = lambda: _report(tmp_path)  # noqa: E731
    out = run()
    assert out.returncode == 0, out.stderr
    cont = json.loads((tmp_path / "ml10_rl2_ppo.json").read_text())
    rest = json.loads((tmp_path / "ml10_rl2_ppo_restart.json").read_text())
    # files without the key ran "continue": that row is as before, its settings as its files record them
    assert "evaluation_state" not in cont["protocol_settings"]
    assert cont["meta_test"]["success_final"] == pytest.approx(0.35)
    assert cont["meta_test"]["success_max"] == pytest.approx((0.5 + 0.5) / 2)
    assert rest["protocol_settings"]["evaluation_state"] == "restart"
    assert rest["protocol_settings"]["evaluation_deterministic"] is True
    assert rest["meta_test"]["success_final"] == pytest.approx(0.65)
    assert rest["meta_test"]["success_max"] is None  # no periodic evaluations ran that way
    assert rest["result_files"] == ["ml10_rl2_ppo_s1", "ml10_rl2_ppo_s2"]
    assert not (tmp_path / "ml10_rl2_ppo_restart.curves.png").exists()
    readme = (tmp_path / "README.md").read_text()
    rows = [ln for ln in readme.splitlines() if ln.startswith("| **RL²-PPO")]
    assert rows[0].startswith("| **RL²-PPO** (`ml10_rl2_ppo`) |") and "35.0% ± " in rows[0]
    assert rows[1].startswith("| **RL²-PPO, evaluation episodes restarted** (`ml10_rl2_ppo_restart`) |")
    assert "65.0% ± " in rows[1]
    assert "*evaluation episodes restarted*: each of the 3 evaluation episodes starts from" in readme

    # a "restart" file that does not record restart is refused
    mw = json.loads((tmp_path / "ml10_rl2_ppo_s2.eval_metaworld_restart.json").read_text())
    del mw["evaluation_state"]
    (tmp_path / "ml10_rl2_ppo_s2.eval_metaworld_restart.json").write_text(json.dumps(mw))
    out = run()
    assert out.returncode == 2 and "ml10_rl2_ppo_s2.eval_metaworld_restart.json: evaluation_state 'continue', " \
        "expected 'restart'" in out.stderr and "Traceback" not in out.stderr


def test_report_without_restart_files_has_no_restart_row_or_note(tmp_path):
    _rl2_seed(tmp_path, "ml10_rl2_ppo_s1", 1, 0.30, None)
    out = _report(tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "ml10_rl2_ppo_restart.json").exists()
    readme = (tmp_path / "README.md").read_text()
    assert "restart" not in readme


# ---- PEARL evaluated both ways: `--pearl-context train_size` (a training-size context) and `all` --------------
def _pearl_seed(d: Path, name: str, seed: int, final: float, ctx: str | None, other: float | None):
    """A PEARL seed whose own evaluation used `ctx` (None: a file from before the setting, i.e. all); with
    `other`, also `<name>.eval_metaworld_ctx_<the other setting>.json` (success `other`)."""
    _seed_files(d, name, seed, final, final, [0.1, 0.5], {"a-v3": final, "b-v3": final})
    res = json.loads((d / f"{name}.json").read_text())
    (d / f"{name}.json").write_text(json.dumps({**res, "agent": "pearl", "preset": "ml10_pearl_cpu"}))
    mw = json.loads((d / f"{name}.eval_metaworld.json").read_text())
    if ctx is not None:
        mw["pearl_context"] = ctx
        (d / f"{name}.eval_metaworld.json").write_text(json.dumps(mw))
    if other is not None:
        v = "all" if ctx == "train_size" else "train_size"
        mw.update(pearl_context=v, success=other, success_metaworld_pooled=other,
                  per_class={c: {**x, "success": other} for c, x in mw["per_class"].items()})
        (d / f"{name}.eval_metaworld_ctx_{v}.json").write_text(json.dumps(mw))


def test_report_shows_a_pearl_row_with_both_posteriors_when_both_files_exist(tmp_path):
    _pearl_seed(tmp_path, "ml10_pearl_cpu_s1", 1, 0.10, "train_size", 0.02)
    _pearl_seed(tmp_path, "ml10_pearl_cpu_s2", 2, 0.20, "train_size", 0.04)
    out = _report(tmp_path)
    assert out.returncode == 0, out.stderr
    own = json.loads((tmp_path / "ml10_pearl_cpu.json").read_text())
    other = json.loads((tmp_path / "ml10_pearl_cpu_ctx_all.json").read_text())
    assert own["protocol_settings"]["pearl_context"] == "train_size" and own["meta_test"]["success_final"] == \
        pytest.approx(0.15)
    assert other["protocol_settings"]["pearl_context"] == "all" and other["meta_test"]["success_final"] == \
        pytest.approx(0.03)
    assert other["meta_test"]["success_max"] is None  # no periodic evaluations ran that way
    readme = (tmp_path / "README.md").read_text()
    rows = [ln for ln in readme.splitlines() if ln.startswith("| **PEARL")]
    assert rows[0].startswith("| **PEARL, posterior from a training-size context** (`ml10_pearl_cpu`) |")
    assert "15.0% ± " in rows[0]
    assert rows[1].startswith("| **PEARL, posterior from the whole context** (`ml10_pearl_cpu_ctx_all`) |")
    assert "3.0% ± " in rows[1]
    assert "*posterior from a training-size context* (PEARL" in readme
    # a "_ctx_all" file that does not record all is refused
    bad = tmp_path / "ml10_pearl_cpu_s2.eval_metaworld_ctx_all.json"
    bad.write_text(bad.read_text().replace('"pearl_context": "all"', '"pearl_context": "train_size"'))
    out = _report(tmp_path)
    assert out.returncode == 2 and "ml10_pearl_cpu_s2.eval_metaworld_ctx_all.json: pearl_context 'train_size', " \
        "expected 'all'" in out.stderr and "Traceback" not in out.stderr


def test_report_pearl_files_from_before_the_setting_used_the_whole_context(tmp_path):
    _pearl_seed(tmp_path, "ml10_pearl_cpu_s1", 1, 0.05, None, 0.09)   # and a train_size evaluation beside it
    out = _report(tmp_path)
    assert out.returncode == 0, out.stderr
    readme = (tmp_path / "README.md").read_text()
    rows = [ln for ln in readme.splitlines() if ln.startswith("| **PEARL")]
    assert rows[0].startswith("| **PEARL** (`ml10_pearl_cpu`) |")     # the label as before
    assert rows[1].startswith("| **PEARL, posterior from a training-size context** (`ml10_pearl_cpu_ctx_train_size`) |")
    assert "pearl_context" not in json.loads((tmp_path / "ml10_pearl_cpu.json").read_text())["protocol_settings"]
    # seeds of one row evaluated differently are refused, not averaged
    _pearl_seed(tmp_path, "ml10_pearl_cpu_s1", 1, 0.05, None, None)
    _pearl_seed(tmp_path, "ml10_pearl_cpu_s2", 2, 0.05, "train_size", None)
    (tmp_path / "ml10_pearl_cpu_s1.eval_metaworld_ctx_train_size.json").unlink()
    out = _report(tmp_path)
    assert out.returncode == 2 and "row ml10_pearl_cpu mixes PEARL evaluations with pearl_context" in out.stderr
