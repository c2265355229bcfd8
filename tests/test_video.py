"""Videos of held-out tasks (metarl/training/video.py) and their error paths (issue 17)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from metarl.app.cli import main

ROOT = Path(__file__).resolve().parent.parent
RELEASED = ROOT / "benchmarks" / "checkpoints" / "ml1_reach_maml_trpo_s1.pt"
ML1 = str(ROOT / "configs" / "ml1_reach_maml_trpo.yaml")


def _gl_backend() -> str | None:
    from metarl.core.types import ConfigError
    from metarl.training.video import find_backend
    try:
        return find_backend("test")
    except ConfigError:
        return None


def _tiny_ml1(out: Path, name: str, *extra: str) -> list[str]:
    """An ML1 reach run of one iteration at horizon 10 (seconds), curve protocol, 1 adaptation round."""
    sets = [f"run.out_dir={out}", f"run.name={name}", "run.env_steps=40", "run.progress=false",
            "env.max_episode_steps=10", "env.n_workers=0", "agent.meta_batch=2", "agent.episodes_per_task=2",
            "agent.hidden_sizes=[8,8]", "eval.every=0", "eval.select_best=false", "eval.protocol=curve",
            "eval.final_tasks_per_class=3", "eval.rounds=1", "eval.episodes_per_round=2", *extra]
    return ["train", ML1] + [a for s in sets for a in ("--set", s)]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_no_gl_backend_fails_at_start_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METARL_VIDEO_BACKENDS", "no-such-backend,also-missing")
    rc = main(["eval", str(RELEASED), "--video", "1", "--tasks-per-class", "1", "--out", str(tmp_path / "e.csv")])
    err = _one_line_error(capsys)
    assert rc == 2
    assert "--video: no offscreen OpenGL backend works" in err
    assert "no-such-backend" in err and "also-missing" in err
    assert "apt-get install libegl1" in err and "libosmesa6" in err
    assert not any(tmp_path.iterdir())  # failed before evaluating: nothing written


def test_missing_extra_fails_at_start_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "imageio", None)  # `import imageio` raises ImportError
    rc = main(["eval", str(RELEASED), "--video", "--out", str(tmp_path / "e.csv")])
    err = _one_line_error(capsys)
    assert rc == 2
    assert "--video:" in err and "pip install -e '.[video]'" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--video", "0"], "--video: must be >= 1"),
    (["--video", "-3"], "--video: must be >= 1"),
    (["--video", "51"], "--video: must be in 1..50"),
])
def test_bad_video_count_is_refused(tmp_path, capsys, args, message):
    assert main(["eval", str(RELEASED), *args, "--out", str(tmp_path / "e.csv")]) == 2
    assert message in _one_line_error(capsys)


@pytest.mark.parametrize("override, message", [
    ("eval.video_tasks=-1", "eval.video_tasks: must be in 0..100"),
    ("eval.video_width=8", "eval.video_width: must be in 16..1024"),
    ("eval.video_fps=0", "eval.video_fps: must be in 1..120"),
    ("eval.video_stride=0", "eval.video_stride: must be in 1..500"),
    ("eval.video_camera=nope", "eval.video_camera: unknown camera 'nope'; allowed: topview, corner,"),
])
def test_bad_video_config_is_refused_before_training(tmp_path, capsys, override, message):
    rc = main(_tiny_ml1(tmp_path, "r", "eval.video_tasks=1", override))
    assert rc == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_toy_tasks_cannot_be_filmed(tmp_path, capsys):
    rc = main(["train", str(ROOT / "configs" / "toy_maml_trpo.yaml"), "--set", f"run.out_dir={tmp_path}",
               "--set", "eval.video_tasks=1"])
    assert rc == 2
    assert "eval.video_tasks: the toy tasks have no MuJoCo scene" in _one_line_error(capsys)
    assert not any(tmp_path.iterdir())


def test_tasks_to_film_take_one_goal_per_class_first():
    from metarl.core.types import Task
    from metarl.training.video import pick_tasks

    tasks = [Task(c, i, None) for c in ("a", "b") for i in range(3)]
    assert [t.label for t in pick_tasks(tasks, None, "f")] == ["a/0", "b/0"]
    assert [t.label for t in pick_tasks(tasks, 3, "f")] == ["a/0", "b/0", "a/1"]


def _frames(path: Path) -> np.ndarray:
    import imageio.v3 as iio
    return np.asarray(iio.imread(path, index=None))[..., :3]


@pytest.mark.slow  # 15 s on 2 cores; video is an option off by default
def test_numbers_are_identical_with_and_without_video(tmp_path):
    """The final evaluation's numbers (final_eval.json, eval.csv) do not change when videos are
    on, and the rendering pass replays the very episodes the evaluation scored."""
    if _gl_backend() is None:
        pytest.skip("no offscreen GL backend (EGL / OSMesa) on this machine")
    assert main(_tiny_ml1(tmp_path, "plain")) == 0
    assert main(_tiny_ml1(tmp_path, "video", "eval.video_tasks=1", "eval.video_width=32",
                          "eval.video_height=32", "eval.video_stride=5")) == 0
    a, b = tmp_path / "plain", tmp_path / "video"
    fa, fb = (json.loads((d / "final_eval.json").read_text()) for d in (a, b))
    for f in (fa, fb):
        f.pop("wall_seconds")
    assert fa == fb
    assert (a / "eval.csv").read_text() == (b / "eval.csv").read_text()
    assert not (a / "videos").exists()
    manifest = json.loads((b / "videos" / "videos.json").read_text())
    assert [t["task"] for t in manifest["tasks"]] == ["reach-v3_0"]
    assert manifest["tasks"][0]["matches"]
    # the filmed episodes' rounds score what eval.csv holds for that task
    import csv
    with (b / "eval.csv").open() as f:
        logged = [float(r["return"]) for r in csv.DictReader(f) if r["task_index"] == "0"]
    assert np.allclose([r["return"] for r in manifest["tasks"][0]["rounds"]], logged, rtol=1e-6)
    for r in manifest["tasks"][0]["rounds"]:
        assert _frames(b / "videos" / r["video"]).shape == (3, 32, 32, 3)  # reset, steps 5 and 10


@pytest.mark.slow
def test_videos_of_a_toy_budget_ml1_run(tmp_path):
    """2 tasks x 2 rounds: valid video files with non-blank, changing frames; the montages; the
    TensorBoard video summaries; `metarl report` embeds the montages."""
    if _gl_backend() is None:
        pytest.skip("no offscreen GL backend (EGL / OSMesa) on this machine")
    assert main(_tiny_ml1(tmp_path, "r", "eval.video_tasks=2", "eval.video_width=96", "eval.video_height=96",
                          "eval.video_stride=1")) == 0
    run = tmp_path / "r"
    manifest = json.loads((run / "videos" / "videos.json").read_text())
    assert [t["task"] for t in manifest["tasks"]] == ["reach-v3_0", "reach-v3_1"]
    assert all(t["matches"] for t in manifest["tasks"])
    clips = []
    for t in manifest["tasks"]:
        assert len(t["rounds"]) == 2
        for r in t["rounds"]:
            frames = _frames(run / "videos" / r["video"])
            assert frames.shape == (11, 96, 96, 3)  # the reset frame and 10 steps
            assert frames.std(axis=(1, 2, 3)).min() > 5  # not blank
            assert np.abs(np.diff(frames.astype(int), axis=0)).max(axis=(1, 2, 3)).min() > 0  # every step moves
            clips.append(frames)
        montage = _frames(run / "videos" / t["montage_gif"])
        assert montage.shape[2] == 2 * 96 + 4 and montage.std() > 5
        assert (run / "videos" / t["montage_png"]).is_file()
    assert not np.array_equal(clips[0], clips[2])  # two goals, two different videos
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()["images"]
    assert {"eval/video/reach-v3/goal0", "eval/video/reach-v3/goal1"} <= set(tags)
    ev = acc.Images("eval/video/reach-v3/goal0")[-1]
    assert ev.step == json.loads((run / "final_eval.json").read_text())["env_steps"]
    assert ev.encoded_image_string[:6] == b"GIF89a"
    assert main(["report", str(run)]) == 0
    report = (run / "report.md").read_text()
    assert "](videos/reach-v3_0_montage.gif)" in report and "](videos/reach-v3_1_montage.gif)" in report
