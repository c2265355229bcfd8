"""Videos of held-out tasks before and after adaptation (issue 17).

Rendering never happens in the process that trains or evaluates: OpenGL's backend is chosen
when mujoco is imported (`MUJOCO_GL`), and a GL context must not be made in training. After an
evaluation, `render_evaluation` starts `python -m metarl.training.video SPEC.json` with `MUJOCO_GL` set to
a backend that `find_backend` has seen work. That process rebuilds the agent from the checkpoint
and replays the evaluation with the same generator: the chunks of tasks that hold a task to film
run exactly as in the evaluation (every slot, every episode, so adaptation sees the same
episodes), the other chunks only draw the seeds the sampler would have drawn. The first episode
of each round of a filmed task is recorded: `videos/<class>_<goal>_round<k>.mp4` (GIF without
ffmpeg) and `<class>_<goal>_montage.gif` / `.png` (round 0 | last round). The replayed success
and return of each filmed task are compared with the evaluation's (`videos.json`: "matches").
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from metarl.core.types import ConfigError, Task

if TYPE_CHECKING:
    from metarl.training.config import RunConfig
    from metarl.core.types import AdaptationCurve

BACKENDS = ("egl", "osmesa")  # offscreen MuJoCo GL backends, tried in this order
BACKENDS_ENV = "METARL_VIDEO_BACKENDS"  # comma-separated override of BACKENDS (tests force a failing one)
INSTALL_HINT = "apt-get install libegl1 (MUJOCO_GL=egl) or apt-get install libosmesa6 (MUJOCO_GL=osmesa)"
EXTRA_HINT = "pip install -e '.[video]'"
_PROBE = ("import mujoco\n"
          "m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos=\"0 0 1\"/>"
          "<geom size=\".1\"/></worldbody></mujoco>')\n"
          "d = mujoco.MjData(m); mujoco.mj_forward(m, d)\n"
          "r = mujoco.Renderer(m, 16, 16); r.update_scene(d); img = r.render()\n"
          "assert img.shape == (16, 16, 3) and img.any(), 'blank frame'\n")


USER_GL = "METARL_USER_MUJOCO_GL"  # MUJOCO_GL as the user set it ("": unset), kept by no_gl_here
# the values mujoco 3.3 takes on Linux (mujoco/gl_context.py); any other makes `import mujoco` raise
GL_OFF = ("disable", "disabled", "off", "false", "0")
GL_VALUES = ("egl", "osmesa", "glfw", "glx", "enable", "enabled", "on", "true", "1") + GL_OFF
GL_ALLOWED = "egl or osmesa (offscreen), glfw or glx (with a display), or unset (egl, then osmesa are tried)"


def no_gl_here() -> None:
    """This process (training, evaluation) never renders. mujoco reads MUJOCO_GL when it is first
    imported and raises on a value it does not know (MUJOCO_GL=invalid), or fails to load a GL
    library that is not installed (osmesa without libOSMesa): so here, and in the workers this
    process starts, it is imported with GL off (MUJOCO_GL=disable). The user's value is kept in
    METARL_USER_MUJOCO_GL for `preflight` and `find_backend`; rendering runs in its own process
    (`render_evaluation`), with MUJOCO_GL set to the backend found."""
    if "mujoco" in sys.modules:  # already imported (and so with a value that worked): nothing to change
        return
    if USER_GL not in os.environ:
        os.environ[USER_GL] = os.environ.get("MUJOCO_GL", "")
    os.environ["MUJOCO_GL"] = "disable"


def user_gl() -> str | None:
    """MUJOCO_GL as the user set it (None: unset), whatever no_gl_here made of it."""
    return os.environ.get(USER_GL, os.environ.get("MUJOCO_GL")) or None


def check_user_gl(field: str) -> None:
    """One line, before anything runs, for a MUJOCO_GL that cannot render: a value mujoco does not
    know, or one that turns rendering off."""
    user = user_gl()
    if user is None:
        return
    value = user.lower().strip()
    if value in GL_OFF:
        raise ConfigError(f"MUJOCO_GL: {user!r} turns MuJoCo's rendering off, and {field} renders; allowed: "
                          f"{GL_ALLOWED}")
    if value not in GL_VALUES:
        raise ConfigError(f"MUJOCO_GL: {user[:40]!r} is not a MuJoCo GL backend (needed by {field}); allowed: "
                          f"{GL_ALLOWED}")


def check_extra(field: str) -> bool:
    """The `video` extra is installed; returns whether ffmpeg is there too (else GIF files)."""
    try:
        import imageio  # noqa: F401
        from PIL import Image  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"{field}: videos need the optional extra ({e.name} is missing); install it with: "
                          f"{EXTRA_HINT}") from None
    import importlib.util
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def backends() -> list[str]:
    raw = os.environ.get(BACKENDS_ENV)
    if raw is not None:
        return [b.strip() for b in raw.split(",") if b.strip()]
    user = user_gl()
    return ([user] if user and user not in BACKENDS else []) + list(BACKENDS)


def find_backend(field: str) -> str:
    """The first offscreen backend that renders a frame in a fresh process, or one ConfigError
    naming every backend tried and how to install one."""
    tried = []
    for b in backends():
        env = {**os.environ, "MUJOCO_GL": b}
        env.pop("PYOPENGL_PLATFORM", None)  # mujoco sets it to match MUJOCO_GL
        try:
            r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            tried.append(f"{b} (timed out)")
            continue
        if r.returncode == 0:
            return b
        last = (r.stderr.strip().splitlines() or ["exit code %d" % r.returncode])[-1]
        tried.append(f"{b} ({last[:80]})")
    raise ConfigError(f"{field}: no offscreen OpenGL backend works for MuJoCo (tried MUJOCO_GL={', '.join(tried) or 'none'}); "
                      f"install one: {INSTALL_HINT}")


def camera_names(factory: Any) -> list[str]:
    """Cameras of the first Meta-World class of an env factory (no GL needed)."""
    classes = dict(getattr(factory, "classes", ()))
    if not classes:
        return []
    env = next(iter(classes.values()))()
    try:
        return [env.model.camera(i).name for i in range(env.model.ncam)]
    finally:
        env.close()


def preflight(cfg: RunConfig, factory: Any, field: str) -> tuple[str, bool]:
    """Check at start that videos can be made: a Meta-World benchmark, a known camera, the extra
    and a working GL backend. Returns (backend, whether ffmpeg is there)."""
    if cfg.env.benchmark == "toy":
        raise ConfigError(f"{field}: the toy tasks have no MuJoCo scene to film; allowed with env.benchmark toy: "
                          f"no video (eval.video_tasks: 0)")
    check_user_gl(field)
    ffmpeg = check_extra(field)
    cams = camera_names(factory)
    if cfg.eval.video_camera not in cams:
        raise ConfigError(f"eval.video_camera: unknown camera {cfg.eval.video_camera!r}; allowed: {', '.join(cams)}")
    return find_backend(field), ffmpeg


def pick_tasks(tasks: Sequence[Task], n: int | None, field: str) -> list[Task]:
    """`n` tasks, one goal per class first (class order), then the next goal of each; None: one
    goal of every class."""
    by_class: dict[str, list[Task]] = {}
    for t in tasks:
        by_class.setdefault(t.name, []).append(t)
    if n is None:
        n = len(by_class)
    if not 1 <= n <= len(tasks):
        raise ConfigError(f"{field}: must be in 1..{len(tasks)} (the evaluated tasks), got {n}")
    order = [ts[r] for r in range(max(map(len, by_class.values()))) for ts in by_class.values() if r < len(ts)]
    return order[:n]


def stem(task: Task) -> str:
    return f"{task.name}_{task.index}"


# ---- the parent side: spec, subprocess, TensorBoard ---------------------------------------------
def render_evaluation(*, checkpoint: Path, cfg: RunConfig, split: str, tasks: Sequence[Task], film: Sequence[Task],
                      protocol: dict[str, Any], rng_seed: Any, torch_seed: int, torch_from_checkpoint: bool,
                      curve: AdaptationCurve, out_dir: Path, backend: str, tb: Any = None, step: int = 0,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """Film `film` (a subset of `tasks`, the evaluated tasks in evaluation order) in a subprocess
    that replays the evaluation: `protocol` is {"name": "curve", rounds, episodes, deterministic}
    or {"name": "metaworld", **MetaworldProtocol fields}; `rng_seed` seeds the evaluation's NumPy
    generator; the agent is built after torch.manual_seed(torch_seed) and loaded from
    `checkpoint` (with `torch_from_checkpoint`, torch's RNG is then set to the checkpoint's)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = {id(t): i for i, t in enumerate(tasks)}
    spec = {"checkpoint": str(checkpoint), "config": cfg.to_dict(), "preset": cfg.preset,
            "split": split, "tasks": [[t.name, t.index] for t in tasks], "film": [index[id(t)] for t in film],
            "protocol": protocol, "rng_seed": rng_seed, "torch_seed": torch_seed,
            "torch_from_checkpoint": torch_from_checkpoint, "out_dir": str(out_dir),
            "expected": {stem(t): {"success": curve.success[index[id(t)]].tolist(),
                                   "return": curve.returns[index[id(t)]].tolist()} for t in film}}
    spec_path = out_dir / ".spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "MUJOCO_GL": backend}
    env.pop("PYOPENGL_PLATFORM", None)
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "metarl.training.video", str(spec_path)], env=env,
                           capture_output=True, text=True)
    finally:
        spec_path.unlink(missing_ok=True)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        raise ConfigError(f"video: the rendering process failed: {tail}")
    manifest = json.loads((out_dir / "videos.json").read_text())
    c = manifest["cost"]
    log(f"videos: {len(film)} task(s) x {len(manifest['tasks'][0]['rounds'])} round(s) in {out_dir}; "
        f"{c['frames']} frames rendered in {c['render_s']:.1f} s ({c['ms_per_frame']:.0f} ms/frame at "
        f"{cfg.eval.video_width}x{cfg.eval.video_height}, MUJOCO_GL={backend}), replay {c['replay_s']:.1f} s, "
        f"encoding {c['encode_s']:.1f} s, {time.perf_counter() - t0:.1f} s in all")
    bad = [t["task"] for t in manifest["tasks"] if not t["matches"]]
    if bad:
        log(f"videos: warning: the replay of {', '.join(bad)} differs from the evaluation's numbers "
            f"(see videos.json); those videos show similar, not the same, episodes")
    if tb is not None:
        from metarl.training.videofile import add_gif_summary
        for t in manifest["tasks"]:  # the before | after preview of each task
            add_gif_summary(tb, f"eval/video/{t['class']}/goal{t['goal']}", out_dir / t["montage_gif"], step)
        tb.flush()
    return manifest


def film_final_evaluation(cfg: RunConfig, run_dir: Path, test_tasks: Sequence[Task], iteration: int,
                          env_steps: int, curve: AdaptationCurve, tb: Any) -> None:
    """eval.video_tasks: film the trainer's final held-out evaluation (the newest checkpoint is the
    policy it evaluated). A failure is reported and leaves the run's results as they are."""
    from metarl.training import checkpoint
    from metarl.training.evaluation import MetaworldProtocol, select_tasks

    ev = cfg.eval
    tasks = select_tasks(test_tasks, ev.final_tasks_per_class)
    if ev.protocol == "curve":  # the generators of Trainer.evaluate(final=True)
        protocol: dict[str, Any] = {"name": "curve", "rounds": ev.rounds, "episodes": ev.episodes_per_round,
                                    "deterministic": ev.deterministic}
        rng_seed: Any = [cfg.run.seed, iteration, 1]
    else:
        import dataclasses
        protocol, rng_seed = {"name": "metaworld", **dataclasses.asdict(
            MetaworldProtocol(evaluation_state=ev.evaluation_state))}, 0
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    try:
        film = pick_tasks(tasks, min(ev.video_tasks, len(tasks)), "eval.video_tasks")
        render_evaluation(checkpoint=checkpoint.list_checkpoints(run_dir)[-1], cfg=cfg, split="test", tasks=tasks,
                          film=film,
                          protocol=protocol, rng_seed=rng_seed, torch_seed=cfg.run.seed, torch_from_checkpoint=True,
                          curve=curve, out_dir=Path(run_dir) / "videos", backend=find_backend("eval.video_tasks"),
                          tb=tb, step=env_steps, log=log)
    except (ConfigError, OSError, IndexError) as e:
        log(f"videos: not made ({e}); the run's results are written. Try again with: metarl eval {run_dir} --video")


# ---- the child side: replay and film --------------------------------------------------------------
class _Recorder:
    """A task slot that films, for each task to film, the first episode it runs in each round
    (`store["round"]`: the sample call of the chunk, counted by the replay): a frame at reset,
    then every `stride` steps, at a success and at the horizon. A finished clip goes to
    `store["dir"]/<stem>_<round>.npy`."""

    def __init__(self, inner: Any, store: dict, film: set[str], stride: int, horizon: int):
        self.inner, self.store, self.film, self.stride, self.horizon = inner, store, film, stride, horizon
        self._task: str | None = None
        self._clip: tuple[str, int] | None = None
        self._frames: list[np.ndarray] = []
        self._t, self._succeeded = 0, False

    def _finish(self) -> None:
        if self._clip is not None:
            np.save(Path(self.store["dir"]) / f"{self._clip[0]}_{self._clip[1]}.npy", np.stack(self._frames))
            self.store["frames"] = self.store.get("frames", 0) + len(self._frames)
        self._clip, self._frames = None, []

    def set_task(self, task: Task) -> None:
        self._finish()
        self.inner.set_task(task)
        self._task = stem(task) if stem(task) in self.film else None

    def seed(self, seed: int) -> None:
        self.inner.seed(seed)

    def _grab(self) -> None:
        t0 = time.perf_counter()
        # Meta-World's cameras were set up for mujoco-py's bottom-up images; gymnasium flips once
        # more, so they come out upside down: flip back
        self._frames.append(np.ascontiguousarray(np.flipud(self.inner.env.render())))
        self.store["render_s"] = self.store.get("render_s", 0.0) + time.perf_counter() - t0

    def reset(self) -> np.ndarray:
        self._finish()
        obs = self.inner.reset()
        self._t, self._succeeded = 0, False
        key = (self._task, self.store["round"])
        if self._task is not None and key not in self.store.setdefault("taken", set()):
            self.store["taken"].add(key)
            self._clip = (self._task, self.store["round"])
            self._grab()
        return obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        out = self.inner.step(action)
        if self._clip is not None:
            self._t += 1
            first_success = out[2] and not self._succeeded
            self._succeeded |= out[2]
            if self._t % self.stride == 0 or first_success or self._t == self.horizon:
                self._grab()
        return out

    def sim_warnings(self) -> int:
        return self.inner.sim_warnings()

    def close(self) -> None:
        self._finish()
        self.inner.close()


def _render_factory(factory: Any, cfg: RunConfig, store: dict, film: set[str], horizon: int) -> Callable[[], Any]:
    import dataclasses
    import functools

    ev = cfg.eval
    kw = {"render_mode": "rgb_array", "camera_name": ev.video_camera, "width": ev.video_width,
          "height": ev.video_height}
    # full resets: the frame drawn right after a replayed reset could show MuJoCo's derived
    # positions one step apart from a full reset's (metarl/envs/resetcache.py); the numbers are the same
    filmed = dataclasses.replace(factory, classes=tuple((n, functools.partial(c, **kw)) for n, c in factory.classes),
                                 reset_cache=False)
    return lambda: _Recorder(filmed(), store, film, ev.video_stride, horizon)


def _replay(spec: dict[str, Any], store: dict) -> tuple[AdaptationCurve, RunConfig]:
    import torch

    from metarl.agents import AGENTS
    from metarl.envs import TaskVectorEnv
    from metarl.training import checkpoint, config
    from metarl.training.evaluation import MetaworldProtocol, evaluate, metaworld_evaluate, sample_calls
    from metarl.training.sampler import Sampler
    from metarl.training.build import build
    from metarl.core.types import AdaptationCurve

    cfg = config.from_dict(spec["config"], spec["preset"], registry=AGENTS)
    cfg_local = config.from_dict({**cfg.to_dict(), "env": {**cfg.to_dict()["env"], "n_workers": 0}}, cfg.preset,
                                 registry=AGENTS)
    _, payload = checkpoint.resolve(spec["checkpoint"], registry=AGENTS)
    torch.manual_seed(spec["torch_seed"])
    bench, sampler, agent = build(cfg_local, torch.device("cpu"))  # the same construction as the evaluation's
    agent.load_state_dict(payload["agent"])
    if spec["torch_from_checkpoint"]:
        torch.set_rng_state(payload["rng"]["torch"])
    by_key = {(t.name, t.index): t for t in bench.tasks(spec["split"])}
    tasks = [by_key[(n, i)] for n, i in spec["tasks"]]
    film = {stem(tasks[i]) for i in spec["film"]}
    n_slots = sampler.n_slots
    sampler.vec_env.close()

    class Counted(Sampler):  # counts the sample calls of a chunk: the rounds
        def sample(self, *args: Any, **kwargs: Any) -> Any:
            store["round"] += 1
            return super().sample(*args, **kwargs)

    sampler = Counted(TaskVectorEnv(_render_factory(bench.env_factory, cfg, store, film, sampler.horizon),
                                    n_slots, 0), sampler.horizon)
    p = dict(spec["protocol"])
    name = p.pop("name")
    rng = np.random.default_rng(spec["rng_seed"])
    n_rounds = p["rounds"] + 1 if name == "curve" else 2
    success = np.full((len(tasks), n_rounds), np.nan)
    returns = np.full_like(success, np.nan)
    try:
        for start in range(0, len(tasks), n_slots):
            chunk = tasks[start:start + n_slots]
            if not film & {stem(t) for t in chunk}:
                # the draws Sampler.sample makes per call (slot seeds; noise comes from them)
                for _ in range(n_rounds if name == "curve" else sample_calls(MetaworldProtocol(**p))):
                    rng.integers(0, 2**31 - 1, size=len(chunk))
                continue
            store["round"] = -1
            with torch.random.fork_rng(devices=[]):
                if name == "curve":
                    c = evaluate(agent, sampler, chunk, p["rounds"], p["episodes"], rng, p["deterministic"])
                else:
                    c = metaworld_evaluate(agent, sampler, chunk, rng, MetaworldProtocol(**p)).as_curve()
            success[start:start + len(chunk)] = c.success
            returns[start:start + len(chunk)] = c.returns
    finally:
        sampler.vec_env.close()
    return AdaptationCurve(tasks, success, returns), cfg


def child_main(spec_path: str) -> int:
    import tempfile

    from metarl.training.videofile import montage, write

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out_dir"])
    p = spec["protocol"]
    with tempfile.TemporaryDirectory(prefix=".clips-", dir=out) as tmp:
        store: dict[str, Any] = {"dir": tmp}
        t0 = time.perf_counter()
        curve, cfg = _replay(spec, store)
        replay_s = time.perf_counter() - t0 - store.get("render_s", 0.0)
        ffmpeg = check_extra("video")
        fps, ext = cfg.eval.video_fps, (".mp4" if ffmpeg else ".gif")
        # the recorded rounds behind each round of the curve: curve rounds 0..K, or for the
        # Meta-World protocol the last adaptation step's episodes and the evaluation episodes
        a = p.get("adaptation_steps", 0)
        ks = list(range(curve.rounds + 1)) if p["name"] == "curve" else [max(a - 1, 0), a]
        t1 = time.perf_counter()
        entries = []
        for i in spec["film"]:
            task = curve.tasks[i]
            s = stem(task)
            rounds = []
            for k, rec in enumerate(ks):
                clip = list(np.load(Path(tmp) / f"{s}_{rec}.npy"))
                write(out / f"{s}_round{k}{ext}", clip, fps)
                rounds.append({"video": f"{s}_round{k}{ext}", "frames": len(clip),
                               "success": float(curve.success[i, k]), "return": float(curve.returns[i, k])})
            exp = spec["expected"][s]
            matches = bool(np.allclose(curve.success[i], exp["success"], rtol=0, atol=1e-9) and
                           np.allclose(curve.returns[i], exp["return"], rtol=1e-6, atol=1e-6))
            before, after = (list(np.load(Path(tmp) / f"{s}_{rec}.npy")) for rec in (ks[0], ks[-1]))
            m = montage(before, after, ("before adaptation", "after adaptation"))
            for suffix in (".gif", ".png") + ((".mp4",) if ffmpeg else ()):
                write(out / f"{s}_montage{suffix}", m, fps, preview=True)
            entries.append({"task": s, "class": task.name, "goal": task.index, "rounds": rounds, "matches": matches,
                            "montage_gif": f"{s}_montage.gif", "montage_png": f"{s}_montage.png",
                            "expected": exp})
    render_s = store.get("render_s", 0.0)
    n_frames = store.get("frames", 0)
    cost = {"frames": n_frames, "render_s": render_s, "ms_per_frame": 1000 * render_s / max(n_frames, 1),
            "replay_s": replay_s, "encode_s": time.perf_counter() - t1}
    manifest = {"camera": cfg.eval.video_camera, "width": cfg.eval.video_width, "height": cfg.eval.video_height,
                "fps": fps, "stride": cfg.eval.video_stride, "checkpoint": spec["checkpoint"],
                "protocol": p, "cost": cost, "tasks": entries}
    tmp_js = out / ".videos.json.tmp"
    tmp_js.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp_js, out / "videos.json")
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
