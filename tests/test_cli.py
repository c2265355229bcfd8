"""The CLI end to end on the toy preset: run dir, TensorBoard tags, eval, plot, resume, bad input."""
import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from metarl.training import checkpoint
from metarl.app.cli import main
from helpers import assert_same, run_cli
from metarl.agents import AGENTS


def train(tmp_path, toy_config, *extra, name="r"):
    return main(["train", toy_config, "--set", f"run.out_dir={tmp_path}", "--set", f"run.name={name}",
                 "--set", "run.progress=false", *extra])


def test_train_writes_run_dir_and_tensorboard_tags(tmp_path, toy_config):
    assert train(tmp_path, toy_config, "--set", "run.env_steps=24000") == 0
    run = tmp_path / "r"
    for f in ("config.yaml", "progress.csv", "eval.csv", "adaptation_curve.png", "final_eval.json", "runs.jsonl"):
        assert (run / f).is_file(), f
    assert checkpoint.list_checkpoints(run)
    meta = json.loads((run / "runs.jsonl").read_text().splitlines()[0])
    assert meta["seed"] == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = set(acc.Tags()["scalars"])
    for t in ("rollout/success_rate", "rollout/return_mean", "rollout/sim_warnings", "train/loss_before", "train/loss_after", "train/kl",
              "train/line_search_accepted", "time/sps", "time/sample_s", "time/update_s",
              "eval/success@0", "eval/success@2", "eval/return@0", "eval/return@1",
              "eval/point/success@1", "eval/point/return@2"):
        assert t in tags, t
    assert "eval/adaptation_curve" in acc.Tags()["images"]
    steps = [e.step for e in acc.Scalars("rollout/return_mean")]
    assert steps == [4000, 8000, 12000, 16000, 20000, 24000]  # x-axis is env steps (4000 per iteration)
    final = json.loads((run / "final_eval.json").read_text())
    assert len(final["success_by_round"]) == 3 and final["n_tasks"] == 20

    # eval and plot on the finished run
    out = tmp_path / "e.csv"
    assert main(["eval", str(run), "--rounds", "1", "--episodes", "2", "--tasks-per-class", "3",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 * 2 and {r["round"] for r in rows} == {"0", "1"}
    png = tmp_path / "p.png"
    assert main(["plot", str(run), "--out", str(png)]) == 0
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("preset,per_iter", [("toy_maml_trpo", 4000), ("toy_rl2_ppo", 400)])
def test_resume_gives_exactly_the_uninterrupted_parameters(tmp_path, preset, per_iter):
    config = str(Path(__file__).resolve().parent.parent / "configs" / f"{preset}.yaml")
    common = ["--set", "eval.every=2", "--set", "eval.tasks_per_class=2", "--set", "eval.final_tasks_per_class=1"]
    total, split = 5 * per_iter, 3 * per_iter  # the resumed stretch crosses a periodic evaluation (iteration 4)
    assert train(tmp_path, config, "--set", f"run.env_steps={total}", *common, name="straight") == 0
    assert train(tmp_path, config, "--set", f"run.env_steps={split}", *common, name="split") == 0
    assert main(["train", "--resume", str(tmp_path / "split"), "--set", f"run.env_steps={total}"]) == 0
    a = checkpoint.load_latest(tmp_path / "straight", registry=AGENTS)[1]
    b = checkpoint.load_latest(tmp_path / "split", registry=AGENTS)[1]
    assert a["counters"]["iteration"] == b["counters"]["iteration"] == 5
    assert_same(a["agent"], b["agent"])  # parameters (and optimizer state where there is one)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["rng"]["numpy"] == b["rng"]["numpy"]


def test_eval_and_plot_work_on_rl2_runs(tmp_path):
    config = str(Path(__file__).resolve().parent.parent / "configs" / "toy_rl2_ppo.yaml")
    assert train(tmp_path, config, "--set", "run.env_steps=2000", "--set", "eval.final_tasks_per_class=3") == 0
    out = tmp_path / "e.csv"
    assert main(["eval", str(tmp_path / "r"), "--rounds", "3", "--tasks-per-class", "2", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 * 4 and {r["round"] for r in rows} == {"0", "1", "2", "3"}
    assert main(["plot", str(tmp_path / "r"), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_resume_falls_back_from_a_truncated_checkpoint(tmp_path, toy_config):
    assert train(tmp_path, toy_config, "--set", "run.env_steps=20000", "--set", "eval.every=0",
                 "--set", "eval.final_tasks_per_class=1") == 0
    ckpts = checkpoint.list_checkpoints(tmp_path / "r")
    newest = ckpts[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        path, payload = checkpoint.load_latest(tmp_path / "r", registry=AGENTS)
    assert path == ckpts[-2] and payload["counters"]["iteration"] == 4


BAD_INPUTS = [
    (["--set", "env.benchmark=ML7"], "env.benchmark: unknown benchmark 'ML7'; allowed: ML1, ML10, ML45, toy"),
    (["--set", "env.benchmark=ML1", "--set", "env.env_name=reach-v9"], "env.env_name: unknown ML1 env 'reach-v9'"),
    (["--set", "agent.inner_lrr=0.1"], "agent.inner_lrr: unknown config key; allowed:"),
    (["--set", "evall.every=1"], "evall: unknown config key; allowed: run, env, agent, eval"),
    (["--set", "agent.meta_batch=0"], "agent.meta_batch: must be > 0, got 0"),
    (["--set", "agent.meta_batch=-3"], "agent.meta_batch: must be > 0, got -3"),
    (["--set", "agent.discount=1.5"], "agent.discount: must be in (0, 1], got 1.5"),
    (["--set", "agent.discount=0"], "agent.discount: must be in (0, 1], got 0"),
    (["--set", "agent.name=dqn"], "agent.name: unknown agent 'dqn'; allowed: maml_trpo, rl2_ppo, pearl"),
    (["--set", "run.env_steps=ten"], "run.env_steps: must be an integer, got 'ten'"),
    (["--device", "tpu"], "run.device: unknown device 'tpu'; allowed: auto, cpu, cuda"),
    (["--set", "agent.meta_batch=41"], "agent.meta_batch: 41 exceeds the 40 training tasks of toy; allowed: 1..40"),
    (["--set", "env.benchmark=toy", "--set", "env.toy_goals=circle"], "env.toy_goals: unknown goal shape 'circle'"),
    (["--set", "eval.select_best=true", "--set", "eval.every=0"],
     "eval.select_best: needs periodic evaluations (eval.every > 0)"),
]


def _cli(*args, cwd=None):
    return run_cli(*args, cwd=cwd)  # in-process: a subprocess would spend ~2 s importing torch and MuJoCo


@pytest.mark.parametrize("extra,message", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_leaves_no_run_dir(tmp_path, toy_config, extra, message):
    r = _cli("train", toy_config, "--set", f"run.out_dir={tmp_path / 'out'}", *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def one_iteration_run(tmp_path_factory):
    """A toy MAML-TRPO run of one iteration (4,000 env steps), trained once for the tests below; each
    takes a copy (`one_iteration_copy`)."""
    out = tmp_path_factory.mktemp("one_iteration")
    config = str(Path(__file__).resolve().parent.parent / "configs" / "toy_maml_trpo.yaml")
    assert train(out, config, "--set", "run.env_steps=4000", "--set", "eval.final_tasks_per_class=1") == 0
    return out / "r"


@pytest.fixture
def one_iteration_copy(one_iteration_run, tmp_path):
    """tmp_path / "r": a copy of `one_iteration_run`, as `train(tmp_path, toy_config, ...)` leaves it."""
    shutil.copytree(one_iteration_run, tmp_path / "r", symlinks=True)
    return tmp_path / "r"


def test_checkpoint_of_another_agent_is_refused(tmp_path, toy_config, one_iteration_copy):
    # through the CLI the agent's own config keys already refuse the switch ...
    r = _cli("train", "--resume", str(tmp_path / "r"), "--allow-config-change", "--set", "agent.name=rl2_ppo")
    assert r.returncode == 2 and "agent.hidden_sizes: unknown config key" in r.stderr, r.stderr
    # ... and a trainer handed another agent's checkpoint refuses it by name
    from metarl.training import config
    from metarl.training.trainer import Trainer
    from metarl.core.types import ConfigError

    rl2 = config.load(Path(toy_config).parent / "toy_rl2_ppo.yaml", ["run.progress=false"], registry=AGENTS)
    with pytest.raises(ConfigError, match="the checkpoint holds a 'maml_trpo' agent but the config asks for 'rl2_ppo'"):
        Trainer(rl2, tmp_path / "other", torch.device("cpu"), checkpoint.load_latest(tmp_path / "r", registry=AGENTS)[1])


def test_cuda_without_cuda_is_refused(tmp_path, toy_config):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = _cli("train", toy_config, "--device", "cuda", "--set", f"run.out_dir={tmp_path / 'out'}")
    assert r.returncode == 2 and "run.device: 'cuda' requested but no CUDA device is available" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_unwritable_run_dir_is_refused(tmp_path, toy_config):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = _cli("train", toy_config, "--set", f"run.out_dir={blocker / 'runs'}")
    assert r.returncode == 2 and r.stderr.startswith("metarl: error: run.out_dir:"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and blocker.read_text() == "not a directory"


def test_missing_or_corrupt_checkpoint_is_refused(tmp_path, toy_config):
    r = _cli("eval", str(tmp_path / "nope.pt"))
    assert r.returncode == 2 and "checkpoint: no such file" in r.stderr
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    r = _cli("eval", str(bad))
    assert r.returncode == 2 and "is corrupt or truncated" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("train", "--resume", str(tmp_path / "no_run"))
    assert r.returncode == 2 and "--resume: no such run dir" in r.stderr
    (tmp_path / "empty_run").mkdir()
    r = _cli("train", "--resume", str(tmp_path / "empty_run"))
    assert r.returncode == 2 and "--resume: no checkpoint in" in r.stderr
    r = _cli("train", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "config: file not found" in r.stderr


def test_resume_accepts_a_checkpoint_written_before_a_config_field_existed(tmp_path, one_iteration_copy):
    from metarl.core.types import ConfigError
    from metarl.training.run import resume_config

    path, payload = checkpoint.load_latest(tmp_path / "r", registry=AGENTS)
    del payload["config"]["env"]["fast_path"]  # as written by a version without that field
    payload["config_hash"] = "hash-of-an-older-version"
    torch.save(payload, path)
    cfg, _ = resume_config(tmp_path / "r", ["run.env_steps=8000"])
    assert cfg.run.env_steps == 8000 and cfg.env.fast_path is True  # the default
    with pytest.raises(ConfigError, match="fields that shape training"):
        resume_config(tmp_path / "r", ["agent.inner_lr=0.5"])


def test_select_best_keeps_the_best_training_task_checkpoint_and_evaluates_it(tmp_path, toy_config):
    """eval.select_best: best.pt is the checkpoint of the periodic evaluation on training tasks with
    the best mean success over rounds 1..K (ties: return), --resume ignores it, and the final
    held-out evaluation also runs on it."""
    assert train(tmp_path, toy_config, "--set", "run.env_steps=24000", "--set", "eval.every=1",
                 "--set", "eval.select_best=true", "--set", "eval.select_tasks_per_class=6",
                 "--set", "eval.tasks_per_class=2", "--set", "eval.final_tasks_per_class=3",
                 "--set", "run.keep_checkpoints=10") == 0
    run = tmp_path / "r"
    rows = list(csv.DictReader((run / "eval.csv").open()))
    train_rows = [r for r in rows if r["eval"] == "eval_train"]
    scores = {}
    for r in train_rows:
        assert int(r["task_index"]) < 6  # training tasks, 6 of them
        if r["round"] != "0":
            scores.setdefault(int(r["env_steps"]), []).append((float(r["success"]), float(r["return"])))
    assert sorted(scores) == [4000, 8000, 12000, 16000, 20000]  # every iteration but the last
    mean = {k: (sum(s for s, _ in v) / len(v), sum(x for _, x in v) / len(v)) for k, v in scores.items()}
    best_steps = max(mean, key=lambda k: (mean[k], -k))  # the first of equal scores is kept
    best = json.loads((run / "best.json").read_text())
    assert best["env_steps"] == best_steps and best["score"] == pytest.approx(list(mean[best_steps]))
    path = checkpoint.checkpoint_dir(run) / checkpoint.BEST
    assert path not in checkpoint.list_checkpoints(run)
    assert checkpoint.load_latest(run, registry=AGENTS)[0].name == "ckpt_0000006.pt"
    a = checkpoint.load_file(path)
    assert a["counters"]["iteration"] == best["iteration"] == best_steps // 4000
    assert_same(a["agent"], checkpoint.load_file(
        checkpoint.checkpoint_dir(run) / f"ckpt_{best['iteration']:07d}.pt")["agent"])
    final = json.loads((run / "final_eval.json").read_text())
    assert final["selected"]["env_steps"] == best_steps and len(final["selected"]["success_by_round"]) == 3
    assert len([r for r in rows if r["eval"] == "eval_best"]) == 3 * 3  # 3 held-out tasks x rounds 0..2


def test_select_best_changes_neither_training_nor_the_held_out_evaluation(tmp_path, toy_config):
    common = ["--set", "run.env_steps=12000", "--set", "eval.every=1", "--set", "eval.tasks_per_class=2",
              "--set", "eval.final_tasks_per_class=3"]
    assert train(tmp_path, toy_config, *common, name="plain") == 0
    assert train(tmp_path, toy_config, *common, "--set", "eval.select_best=true",
                 "--set", "eval.select_tasks_per_class=4", name="select") == 0
    a, b = (checkpoint.load_latest(tmp_path / n, registry=AGENTS)[1] for n in ("plain", "select"))
    assert_same(a["agent"], b["agent"])
    rows = {n: [r for r in csv.DictReader((tmp_path / n / "eval.csv").open()) if r["eval"] == "eval"]
            for n in ("plain", "select")}
    assert rows["plain"] == rows["select"] and len(rows["plain"]) == (2 + 2 + 3) * 3


def test_plot_by_class_draws_one_curve_per_held_out_class_from_the_last_evaluation(tmp_path):
    from metarl.app.cli import read_eval_curve
    run = tmp_path / "r"
    run.mkdir()
    rows = ["env_steps,eval,task,task_index,round,success,return"]
    for step, tag in ((100, "eval"), (200, "eval"), (200, "eval_best"), (200, "eval_train")):
        for task, s in (("door-close-v3", 0.5), ("lever-pull-v3", 0.1)):
            for k in (0, 1):
                val = 1.0 if tag != "eval" else (s + 0.2 * k if step == 200 else 0.0)
                rows.append(f"{step},{tag},{task},0,{k},{val},{val * 10}")
    (run / "eval.csv").write_text("\n".join(rows) + "\n")
    steps, groups = read_eval_curve(run, by_class=True)
    assert steps == 200 and list(groups) == ["door-close-v3", "lever-pull-v3"]
    assert groups["door-close-v3"][0] == pytest.approx([0.5, 0.7]) and groups["lever-pull-v3"][0] == pytest.approx([0.1, 0.3])
    _, mean = read_eval_curve(run)  # eval_best / eval_train rows at the same step are not mixed in
    assert mean["mean"][0] == pytest.approx([0.3, 0.5])
    assert main(["plot", str(run), "--by-class", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_progress_label_names_what_runs_not_the_preset_file(tmp_path):
    """Defect 26 of the hardening round: a preset with --set env.env_name=push-v3 trains push-v3, and
    the progress lines say so (and name the run dir), where they named the preset file."""
    from metarl.agents import AGENTS
    from metarl.training import config
    from metarl.training.trainer import run_label

    root = Path(__file__).resolve().parent.parent
    cfg = config.load(str(root / "configs" / "ml1_reach_maml_trpo.yaml"), ["env.env_name=push-v3"], registry=AGENTS)
    assert run_label(cfg, tmp_path / "r1") == "r1: push-v3 maml_trpo seed 1"
    cfg = config.load(str(root / "configs" / "ml10_rl2_ppo.yaml"), ["run.seed=3"], registry=AGENTS)
    assert run_label(cfg, tmp_path / "r2") == "r2: ML10 rl2_ppo seed 3"


def test_progress_without_a_terminal_is_plain_lines_and_off_with_run_progress_false(tmp_path, toy_config):
    """Output to a file or pipe (a background run, a batch job): the bar cannot draw, so the run
    prints where it is as lines (the first and last iteration at least, each evaluation)."""
    base = ["train", toy_config, "--set", f"run.out_dir={tmp_path}", "--set", "run.env_steps=16000",
            "--set", "eval.every=2"]
    r = _cli(*base, "--set", "run.name=a")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("[a: toy maml_trpo seed 0] ")]
    iters = [ln for ln in lines if " iteration " in ln]
    assert iters and " iteration 1 · " in iters[0] and "(100.0%)" in iters[-1], lines
    assert "eta " in iters[0] and "training success " in iters[0]
    assert any("periodic eval, held-out tasks at " in ln for ln in lines), lines
    assert "final eval at 16,000 env steps: success " in lines[-1], lines
    r = _cli(*base, "--set", "run.name=b", "--set", "run.progress=false")
    assert r.returncode == 0 and "[b: toy maml_trpo seed 0]" not in r.stdout + r.stderr
    r = _cli("eval", str(tmp_path / "a"), "--protocol", "metaworld", "--goals-per-class", "3")
    assert r.returncode == 0, r.stderr
    assert "[metarl eval, test goals] Meta-World protocol done: 3 goals, " in r.stderr, r.stderr
