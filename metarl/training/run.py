"""A run dir from creation to release: `Run`.

    with Run.create(cfg) as run:                 # or Run.resume(run_dir, overrides)
        outcome = run.start()                    # RunOutcome: the final curve, counters, what stopped it

`Run.create` validates the config against the machine, names and makes the run dir (removing what
it made if start-up fails), takes its lock (one process per run dir), builds the agent and its
workers, writes config.yaml and appends this stretch of training to runs.jsonl. `Run.resume`
does the same for a run dir, from its newest readable checkpoint: the run's config.yaml with
`overrides`, refusing a change to a field that shapes training (`allowed_changes()` lists those it
may change: config.NOT_TRAINING) unless `allow_config_change`, and refusing a finished run unless
its budget grows. `start(hooks)` runs the training loop (metarl/training/loop.py) with
`hooks.default_hooks(cfg)` unless given others, records the end of the stretch in runs.jsonl (env
steps from/to, wall seconds, `final_eval_stopped`, `ended_by` when it raised) and releases the
run dir. `metarl train` goes through here, and so do Python scripts (metarl.train, metarl/app/api.py).

A benchmark runner (train a preset's seeds, write a result file) uses it so:

    with Run.create(cfg) as run:                       # fresh; or Run.resume(run_dir, overrides)
        if run.result_name is None: run.result_name = name     # RUN/result_name: its result file's stem
        outcome = run.start(final_eval_on_stop=True)   # a SIGTERM ends training and evaluates the policy;
                                                       # a second one cuts that evaluation (final_eval_stopped)
    stretches = run.stretches()                        # every stretch trained, this one included (runs.jsonl,
                                                       # and an older run dir's segments.jsonl): commands,
                                                       # commits, env steps from/to, wall seconds, warm restarts

Provenance is one file, runs.jsonl, one JSON line a stretch: command, git_commit, python, torch,
machine, seed, device, config_hash, started, resumed, from_env_steps, warm_restart (only when
true), and at the end of the stretch to_env_steps, wall_seconds, final_eval_stopped ([done,
planned], when a signal cut the final evaluation) and ended_by (when it raised).
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

from metarl.core.types import ConfigError
from metarl.training import checkpoint, config, runfiles
from metarl.training.config import RunConfig

if TYPE_CHECKING:
    import torch

    from metarl.core.types import AdaptationCurve
    from metarl.training.hooks import Hook
    from metarl.training.trainer import StopFlag, Trainer

# Run.start's `hooks`: None (hooks.default_hooks), a list, or a function of the default list
HookChoice = Union[Sequence["Hook"], Callable[[list["Hook"]], Sequence["Hook"]], None]

RESULT_NAME = "result_name"
SEGMENTS = "segments.jsonl"  # what benchmarks/run_preset.py recorded before runs.jsonl held the stretches


def git_commit() -> str | None:
    """The commit of the metarl checkout running this, or None (not a git checkout, no git)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent.parent).stdout.strip() or None
    except Exception:
        return None


def allowed_changes() -> list[str]:
    """The fields a resume may change without --allow-config-change: those the training hash leaves
    out (config.NOT_TRAINING), a whole section as `eval.*`."""
    order = ["run", "env", "agent", "eval"]
    names = sorted(config.NOT_TRAINING, key=lambda f: order.index(f.partition(".")[0]))
    return [f if "." in f else f"{f}.*" for f in names]


@dataclass(frozen=True)
class RunOutcome:
    """What a stretch of training ended with (Run.start).

    curve: the final held-out evaluation of the last policy (the tasks done when a signal cut it),
        None when none ran (stopped before the budget) or a signal stopped it before any task.
    stopped: training ended on a stop request before the budget (a checkpoint was written).
    stopped_early: the final evaluation ran on such a stopped policy (final_eval_on_stop).
    final_eval_stopped: (tasks done, planned) when a signal cut the final evaluation short.
    protocol_summary: eval.protocol: metaworld, the final evaluation's eval_metaworld.json summary.
    selected: eval.select_best, the choice (best.json's fields) with best.pt's final held-out curve.
    warm_restart: resumed from a PEARL checkpoint without its buffers (not bit-exact).
    wall_seconds: this stretch's wall-clock seconds; trained_seconds: the run's training and
        evaluation seconds over all its stretches (the checkpoint's counter)."""
    run_dir: Path
    curve: AdaptationCurve | None
    env_steps: int
    iteration: int
    from_env_steps: int
    stopped: bool
    stopped_early: bool
    final_eval_stopped: tuple[int, int] | None
    protocol_summary: dict[str, Any] | None
    selected: dict[str, Any] | None
    warm_restart: bool
    wall_seconds: float
    trained_seconds: float

    @property
    def partial(self) -> bool:
        """Not the whole budget, or not the whole final evaluation."""
        return self.stopped_early or self.final_eval_stopped is not None


# ---- resume: which config, which checkpoint -----------------------------------------------------
def _saved_config(run_dir: Path) -> RunConfig | None:
    """RUN/config.yaml as a config (None when the run dir has none), or one line naming the file."""
    from metarl.agents import AGENTS

    path = run_dir / "config.yaml"
    runfiles.refuse_links(run_dir, ["config.yaml"])  # never read (nor later rewritten) through a planted link
    if not path.exists():
        return None
    raw = config.read_yaml(path, "--resume")
    if not isinstance(raw, dict):
        raise ConfigError(f"--resume: {path} must hold a mapping of sections (run, env, agent, eval)")
    try:
        return config.from_dict(raw, registry=AGENTS)
    except ConfigError as e:
        raise ConfigError(f"--resume: {path}: {e}") from None


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def final_eval_done(run_dir: Path, env_steps: int) -> bool:
    """final_eval.json holds the whole final evaluation of the checkpoint at `env_steps`."""
    try:
        done = json.loads((run_dir / "final_eval.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(done, dict) and done.get("env_steps") == env_steps and not done.get("stopped_early") \
        and not done.get("final_eval_stopped")


def resume_config(run_dir: str | Path, overrides: Sequence[str], allow_config_change: bool = False,
                  seed: int | None = None, device: str | None = None) -> tuple[RunConfig, dict[str, Any] | None]:
    """(config, checkpoint payload) to continue `run_dir` from its newest readable checkpoint: the
    run's config.yaml (an edit of it counts as a change, as `overrides` do) with `overrides`
    applied; a change to a field that shapes training is refused, naming the fields, unless
    `allow_config_change`. A run that has finished (budget trained, final evaluation written) is
    refused unless the budget grows. A run dir stopped before its first checkpoint (killed during
    start-up) starts over from its config.yaml: payload None."""
    from metarl.agents import AGENTS

    run_dir = Path(run_dir)
    overrides = list(overrides)
    if not run_dir.is_dir():
        raise ConfigError(f"--resume: no such run dir: {run_dir}")
    saved = _saved_config(run_dir)
    given = {k: "--set" for k, _ in config.parse_overrides(overrides)}  # field -> where this command changes it
    given.update({f"run.{k}": f"--{k}" for k, v in (("seed", seed), ("device", device)) if v is not None})
    if not checkpoint.list_checkpoints(run_dir):
        if saved is None:
            raise ConfigError(f"--resume: no checkpoint in {checkpoint.checkpoint_dir(run_dir)} and no config.yaml "
                              f"in {run_dir}: nothing to resume; start a run with metarl train CONFIG")
        raw = saved.to_dict()  # stopped before its first checkpoint: nothing trained, any field may change
        for key, value in config.parse_overrides(overrides):
            config._set_dotted(raw, key, value)
        for key, value in (("seed", seed), ("device", device)):
            if value is not None:
                config._set_dotted(raw, f"run.{key}", value)
        return config.from_dict(raw, saved.preset, registry=AGENTS), None
    path, payload = checkpoint.load_latest(run_dir, registry=AGENTS, resume=True)
    base = config.from_dict(payload["config"], registry=AGENTS)
    raw = base.to_dict()
    edited: set[str] = set()
    if saved is not None:  # the run's config as its user left it: edits count as changes
        edited = set(config.changed_fields(raw, saved.to_dict()))
        raw = saved.to_dict()
    for key, value in config.parse_overrides(overrides):
        config._set_dotted(raw, key, value)
    for key, value in (("seed", seed), ("device", device)):
        if value is not None:
            config._set_dotted(raw, f"run.{key}", value)
    cfg = config.from_dict(raw, base.preset, registry=AGENTS)
    # compare with the checkpoint's config as this code reads it (fields added since it was
    # written take their defaults), not with its stored hash, so new fields don't block resume
    changed = config.changed_fields(base.training_dict(), cfg.training_dict())
    if changed and not allow_config_change:
        def source(f: str) -> str:
            for k, flag in given.items():
                if f == k or f.startswith(k + "."):
                    return flag
            return "config.yaml" if f in edited else "the command line"

        old, new = base.to_dict(), cfg.to_dict()

        def value(d: Any, f: str) -> Any:
            for part in f.split("."):
                d = d.get(part) if isinstance(d, dict) else None
            return d

        shown = "; ".join(f"{f}: {_shown(value(old, f))} in the checkpoint, {_shown(value(new, f))} in {source(f)}"
                          for f in changed[:5]) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
        restore = f", or restore {run_dir / 'config.yaml'}" if any(source(f) == "config.yaml" for f in changed) else ""
        raise ConfigError(f"--resume: the config differs from the checkpoint's in fields that shape training ({shown}); "
                          f"allowed changes: {', '.join(allowed_changes())} (pass --allow-config-change to override"
                          f"{restore})")
    if changed:  # the checkpoint's weights must fit the agent the new config builds
        try:
            checkpoint.validate(path, {**payload, "config": cfg.to_dict()}, registry=AGENTS, resume=True)
        except checkpoint.InvalidCheckpoint as e:
            raise ConfigError(f"--allow-config-change: the new config cannot take the checkpoint's state "
                              f"({str(e).removeprefix('checkpoint: ')}); allowed: changes that keep the agent's "
                              f"network sizes") from None
    steps = int(payload["counters"]["env_steps"])
    if steps >= cfg.run.env_steps and final_eval_done(run_dir, steps):
        raise ConfigError(f"--resume: {run_dir} has finished: {steps:,} env steps trained (run.env_steps="
                          f"{cfg.run.env_steps:,}) and evaluated (final_eval.json); allowed: a larger budget to "
                          f"train on, --set run.env_steps=N with N > {steps}. `metarl eval {run_dir}` evaluates it "
                          f"again")
    return cfg, payload


# ---- a fresh run dir ------------------------------------------------------------------------------
def _taken(run_dir: Path) -> ConfigError:
    """The refusal of a fresh start in a run dir that holds something."""
    if (run_dir / "config.yaml").is_file() or checkpoint.list_checkpoints(run_dir):
        return ConfigError(f"run.name: run dir {run_dir} already exists and is not empty; "
                           f"choose another run.name or resume it with --resume {run_dir}")
    return ConfigError(f"run.name: {run_dir} already exists and holds no metarl run (no config.yaml, no "
                       f"checkpoint); choose another run.name, or remove that directory")


def _run_dir_for(cfg: RunConfig) -> Path:
    """RUN = run.out_dir / run.name, else run.out_dir / <preset>-s<seed>-<time>, checked before it is made
    (`_make_run_dir` claims an automatic name atomically, adding -2, -3, ... when it is taken)."""
    out = Path(cfg.run.out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"run.out_dir: {out} is not a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"run.out_dir: cannot create run dir under {out}: {probe} is not writable")
    if not cfg.run.name:
        return out / _auto_name(cfg)
    run_dir = out / cfg.run.name
    if run_dir.exists() and any(p.name != runfiles.LOCK for p in run_dir.iterdir()):  # .lock alone: a start
        raise _taken(run_dir)
    return run_dir


def _auto_name(cfg: RunConfig) -> str:
    return f"{cfg.preset}-s{cfg.run.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def _make_run_dir(cfg: RunConfig) -> tuple[Path, Path]:
    """(run dir, the topmost directory made for it: what a failed start removes). Without run.name the
    dir is claimed atomically: runs of one preset and seed started in the same second (a shell loop over
    settings) get <name>, <name>-2, <name>-3, ..., never one another's."""
    run_dir = _run_dir_for(cfg)
    top = run_dir  # the topmost directory this start makes
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    made_parents = top != run_dir
    try:
        if cfg.run.name:
            run_dir.mkdir(parents=True, exist_ok=True)
            return run_dir, top
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        base = run_dir.name
        for i in range(1, 1000):
            run_dir = run_dir.parent / (base if i == 1 else f"{base}-{i}")
            try:
                run_dir.mkdir()
            except FileExistsError:
                continue
            return run_dir, top if made_parents else run_dir
    except OSError as e:
        if made_parents or cfg.run.name:  # what it made before failing; never a dir another run claimed
            shutil.rmtree(top, ignore_errors=True)
        if e.errno in runfiles.DISK_ERRNOS:
            raise runfiles.write_error(e, "run.out_dir", run_dir, "the run did not start", "start it again") from None
        raise ConfigError(f"run.out_dir: cannot create run dir {run_dir}: {e.strerror}") from None
    if made_parents:
        shutil.rmtree(top, ignore_errors=True)
    raise ConfigError(f"run.out_dir: {run_dir.parent} already holds {base} and 998 numbered copies of it; "
                      f"give a run.name or another run.out_dir")


def _note(line: str) -> None:
    print(f"metarl: note: {line}", file=sys.stderr)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file the run wrote (blank lines skipped), or one line naming the
    file and line that is not one."""
    runfiles.refuse_links(path.parent, [path.name])
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: line {i} is not a JSON object; allowed: the lines metarl wrote "
                              f"(one JSON object a stretch of training)")
        out.append(entry)
    return out


class Run:
    """One run dir, held (locked) from `create` / `resume` until `start` ends or `close`. Use it as a
    context manager. `dir`, `cfg`, `trainer` (the built agent, sampler and counters; None once
    started), `resumed`, `result_name` (get/set RUN/result_name), `stretches()`."""

    def __init__(self, cfg: RunConfig, run_dir: Path, trainer: Trainer, lock: runfiles.RunLock, *,
                 resumed: bool, stretch: dict[str, Any]):
        self.cfg = cfg
        self.dir = run_dir
        self.trainer: Trainer | None = trainer
        self.resumed = resumed
        self._lock = lock
        self._stretch = stretch

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def create(cls, cfg: RunConfig, *, command: str | None = None) -> Run:
        """A fresh run of `cfg` in run.out_dir / run.name (a name made of the preset, the seed and the
        time when run.name is empty). Refused, creating nothing, when the dir holds a run."""
        return cls._open(cfg, None, None, command=command)

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: Sequence[str] = (), allow_config_change: bool = False,
               seed: int | None = None, device: str | None = None, *, command: str | None = None) -> Run:
        """`run_dir` from its newest readable checkpoint (resume_config); a run dir stopped before
        its first checkpoint starts over from its config.yaml."""
        cfg, payload = resume_config(run_dir, overrides, allow_config_change, seed=seed, device=device)
        return cls._open(cfg, Path(run_dir), payload, command=command)

    @classmethod
    def _open(cls, cfg: RunConfig, run_dir: Path | None, payload: dict[str, Any] | None,
              command: str | None) -> Run:
        from metarl.training import resources
        from metarl.training.build import benchmark_for
        from metarl.training.runlog import check_log
        from metarl.training.trainer import Trainer

        resumed = run_dir is not None
        device = config.resolve_device(cfg.run.device)
        bench = benchmark_for(cfg)  # validates names and sizes before anything is written
        resources.check_threads(cfg)
        if cfg.eval.video_tasks:  # fail now, not after training, when videos cannot be made here
            from metarl.training.video import preflight
            preflight(cfg, bench.env_factory, "eval.video_tasks")
        created = None  # the topmost directory this start made (removed again if it fails to start)
        if run_dir is None:
            run_dir, created = _make_run_dir(cfg)
        # one process per run dir: a second start (a resume, or a fresh run of the same run.name) is
        # refused in one line naming the holder's PID; a lock its dead holder left is taken over
        lock = runfiles.RunLock(run_dir, note=_note)
        try:
            lock.acquire()
            if created is not None and any(p.name != runfiles.LOCK for p in run_dir.iterdir()):
                created = None  # another start got there first: its dir, not ours to remove
                raise _taken(run_dir)
        except BaseException as e:
            lock.release()
            if created is not None and not isinstance(e, runfiles.RunDirBusy):
                shutil.rmtree(created, ignore_errors=True)
            raise
        try:
            runfiles.refuse_links(run_dir)  # a link planted in the run dir: refused before anything is written
            if resumed:  # logs it could not append to: refused before config.yaml and runs.jsonl are touched
                for name in ("progress.csv", "eval.csv"):
                    check_log(run_dir / name)
            trainer = Trainer(cfg, run_dir, device, payload)
        except BaseException:
            lock.release()
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise
        if resumed and payload is None:
            trainer.resumed_from = 0  # what the stopped start logged is dropped: it starts over
            _note(f"{run_dir} has no checkpoint (it stopped before its first one); starting it over from its "
                  f"config.yaml")
        import torch

        stretch = {"command": command if command is not None else " ".join(sys.argv), "seed": cfg.run.seed,
                   "device": str(device), "git_commit": git_commit(), "python": platform.python_version(),
                   "torch": torch.__version__, "machine": f"{platform.machine()} {os.cpu_count()} cores",
                   "resumed": resumed, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                   **({"warm_restart": True} if trainer.warm_restart else {}),  # PEARL without its buffers
                   "config_hash": cfg.hash(),  # checkpoint.check_run: the training configs this run has had
                   "from_env_steps": trainer.env_steps}
        try:  # only a start that can go on (re)writes config.yaml (with the changes it takes) and adds to runs.jsonl
            runfiles.write_text(run_dir / "config.yaml", cfg.to_yaml())
            with runfiles.open_write(run_dir / "runs.jsonl", "a") as f:
                f.write(json.dumps(stretch) + "\n")
        except BaseException as e:
            trainer.sampler.vec_env.close()
            lock.release()
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            if isinstance(e, OSError) and e.errno in runfiles.DISK_ERRNOS:
                raise (runfiles.write_error(e, "run dir", run_dir, f"the run did not start ({created} removed)",
                                            "start it again") if created is not None else
                       runfiles.write_error(e, "run dir", run_dir, "training did not resume; its checkpoints are "
                                            "unchanged", f"resume with: metarl train --resume {run_dir}")) from None
            raise
        return cls(cfg, run_dir, trainer, lock, resumed=resumed, stretch=stretch)

    # ---- training -----------------------------------------------------------------------------
    def start(self, hooks: HookChoice = None, stop: StopFlag | None = None, *,
              extra_hooks: Sequence[Hook] = (), final_eval_on_stop: bool = False) -> RunOutcome:
        """Train to the budget and evaluate (metarl/training/loop.py), then release the run dir.
        `hooks`: a list instead of hooks.default_hooks(cfg, final_eval_on_stop), or a function that
        gets that list and returns the one to run (to replace or drop a default); `extra_hooks`: run
        after them. `stop`: a StopFlag already installed (before start-up, as `metarl train` does), else
        one is installed while it trains. Starts once."""
        from metarl.training import loop
        from metarl.training.hooks import default_hooks

        t = self.trainer
        if t is None:
            raise RuntimeError(f"{self.dir}: this Run has started or was closed; open it again with Run.resume")
        self.trainer = None
        defaults = default_hooks(self.cfg, final_eval_on_stop)
        chosen = list(defaults if hooks is None else hooks(defaults) if callable(hooks) else hooks) + list(extra_hooks)
        t0 = time.time()
        try:
            loop.train(t, chosen, stop)
        except BaseException as e:
            self._end_stretch(t, t0, {"ended_by": f"{type(e).__name__}: {e}"[:300]}, quiet=True)
            self.close()
            raise
        self._end_stretch(t, t0, {"final_eval_stopped": list(t.final_eval_stopped)}
                          if t.final_eval_stopped is not None else {})
        self.close()
        return RunOutcome(run_dir=self.dir, curve=t.final_curve, env_steps=t.env_steps, iteration=t.iteration,
                          from_env_steps=self._stretch["from_env_steps"],
                          stopped=t.stop.requested and not t.budget_reached, stopped_early=t.stopped_early,
                          final_eval_stopped=t.final_eval_stopped, protocol_summary=t.protocol_summary,
                          selected=t.selected(), warm_restart=t.warm_restart, wall_seconds=time.time() - t0,
                          trained_seconds=t.wall_seconds)

    def _end_stretch(self, t: Trainer, t0: float, extra: dict[str, Any], quiet: bool = False) -> None:
        """Complete this stretch's line of runs.jsonl (the last, as this process holds the run dir).
        When the run ended with an error, a failure here stays quiet: that error is the news."""
        done = {**self._stretch, "to_env_steps": t.env_steps, "wall_seconds": round(time.time() - t0, 3), **extra}
        path = self.dir / "runs.jsonl"
        try:
            lines = path.read_text().splitlines()
            if lines and lines[-1] == json.dumps(self._stretch):
                lines = lines[:-1]
            runfiles.replace_text(path, "".join(line + "\n" for line in [*lines, json.dumps(done)]))
            self._stretch = done
        except (OSError, ConfigError) as e:
            if not quiet:
                warnings.warn(f"{path}: the end of this stretch (env steps {done['from_env_steps']:,} to "
                              f"{done['to_env_steps']:,}) was not recorded: {e}")

    # ---- the run dir --------------------------------------------------------------------------
    def close(self) -> None:
        """Release the run dir (and the workers, when it never started)."""
        if self.trainer is not None:
            self.trainer.sampler.vec_env.close()
            self.trainer = None
        self._lock.release()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def result_name(self) -> str | None:
        """RUN/result_name: the stem of the result files a benchmark runner writes for this run (set
        when it started, kept across resumes), or None."""
        path = self.dir / RESULT_NAME
        runfiles.refuse_links(self.dir, [RESULT_NAME])
        if not path.is_file():
            return None
        name = path.read_text().strip()
        if name and not _valid_result_name(name):
            raise ConfigError(f"{path}: {name[:60]!r} is not a result name; allowed: letters, digits, '.', '_', "
                              f"'-' (not first), at most 100")
        return name or None

    @result_name.setter
    def result_name(self, name: str) -> None:
        if not _valid_result_name(name):
            raise ConfigError(f"result_name: {name[:60]!r} is not a result name; allowed: letters, digits, '.', "
                              f"'_', '-' (not first), at most 100")
        try:
            runfiles.write_text(self.dir / RESULT_NAME, name + "\n")
        except OSError as e:
            raise runfiles.output_error(e, "result_name", self.dir / RESULT_NAME, "the name was not saved",
                                        "run the command again") from None

    def stretches(self) -> list[dict[str, Any]]:
        """Every stretch of training this run dir records (read_stretches)."""
        return read_stretches(self.dir)


def read_stretches(run_dir: Path) -> list[dict[str, Any]]:
    """Every stretch of training `run_dir` records, oldest first: an older run dir's
    segments.jsonl (benchmarks/run_preset.py before runs.jsonl), then runs.jsonl. A stretch that
    ended has to_env_steps and wall_seconds; one without (killed, or recorded by an older
    version) has only its start."""
    return _read_jsonl(run_dir / SEGMENTS) + _read_jsonl(run_dir / "runs.jsonl")


def _valid_result_name(name: str) -> bool:
    return isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,99}", name) is not None \
        and name not in (".", "..")


__all__ = ["Run", "RunOutcome", "HookChoice", "allowed_changes", "git_commit", "resume_config", "final_eval_done",
           "read_stretches"]
