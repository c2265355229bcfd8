"""Atomic checkpoints: temp file -> fsync -> rename; the newest N kept; corrupt ones skipped.

Checkpoints hold only tensors, numbers, strings, None, lists, tuples and dicts, and are read
with `torch.load(weights_only=True)`: loading one can never run code. A file that holds
other pickled objects is refused with one line (UnsafeCheckpoint), never loaded another way.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from metarl.training import runfiles
from metarl.core.types import ConfigError

if TYPE_CHECKING:
    from metarl.training.config import Registry

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def iteration_of(path: str | Path) -> int | None:
    """The iteration in a checkpoint file's name (ckpt_<iteration>.pt); None for any other name."""
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(i, p) for p in d.iterdir() if (i := iteration_of(p)) is not None and not p.is_dir()]
    return [p for _, p in sorted(found)]


class UnsafeCheckpoint(ConfigError):
    """The file holds pickled Python objects that weights-only loading refuses to build."""


class UnreadableCheckpoint(ConfigError):
    """The file cannot be read (no permission, an I/O error): its contents are unknown, not corrupt."""


class ForeignCheckpoint(ConfigError):
    """The checkpoint was written by another run (another agent or training config) than the run dir's."""


_SAFE_LEAVES = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.Size)


def check_safe(obj: Any, where: str = "payload") -> None:
    """Raise TypeError naming the first value `torch.load(weights_only=True)` could not read
    back: only tensors, Python numbers, strings, None, lists, tuples and dicts may be saved
    (convert NumPy arrays with torch.from_numpy or .tolist(), NumPy scalars with int/float)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint: {where} has a key of type {type(k).__name__}: {k!r}")
            check_safe(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_safe(v, f"{where}[{i}]")
    elif not isinstance(obj, _SAFE_LEAVES) or (isinstance(obj, str) and type(obj) is not str):  # a StrEnum pickles as its class
        raise TypeError(f"checkpoint: {where} is a {type(obj).__module__}.{type(obj).__qualname__}, which "
                        f"torch.load(weights_only=True) cannot read; store tensors, numbers, strings, "
                        f"lists or dicts")


def save(run_dir: str | Path, iteration: int, payload: dict[str, Any], keep: int = 3) -> Path:
    """Write checkpoint `iteration` and keep the newest `keep`. A directory standing at the checkpoint's
    name raises IsADirectoryError (no write is tried: the rename would fail on it every time)."""
    final = checkpoint_dir(run_dir) / f"ckpt_{iteration:07d}.pt"
    if final.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a directory stands at the checkpoint's name", str(final))
    final = write(final, payload)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return final


BEST = "best.pt"  # the model-selection checkpoint (eval.select_best); never picked by --resume


def write(final: Path, payload: dict[str, Any]) -> Path:
    """Write one checkpoint file atomically (temp file, fsync, rename, fsync the dir).
    OSError (a read-only or full disk) propagates; no temp file is left behind."""
    payload = {"format_version": FORMAT_VERSION, **payload}
    check_safe(payload)
    d = final.parent
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{final.name}.tmp"
    try:
        with open(tmp, "wb", opener=runfiles.fresh) as f:  # never through a link planted at the temp name
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    dir_fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_file(path: str | Path) -> dict[str, Any]:
    """Read one checkpoint with weights-only unpickling (no code runs, whatever the file holds)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint: no such file: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it was not written with
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:  # the file is there but cannot be read (permissions, an I/O error): not its bytes' fault
        raise UnreadableCheckpoint(f"checkpoint: cannot read {path} ({e.strerror or e.__class__.__name__}); "
                                   f"allowed: a checkpoint file this user can read (check its permissions)") from None
    except pickle.UnpicklingError as e:
        m = _GLOBAL.search(str(e))
        if m:  # a pickled object: building it would call m.group(1)
            raise UnsafeCheckpoint(
                f"checkpoint: {path} holds pickled Python objects ({m.group(1)}); refusing to unpickle "
                f"arbitrary objects, which can run code: it was written by an older metarl or not by "
                f"metarl") from None
        raise ConfigError(f"checkpoint: {path} is corrupt or truncated, or not a torch checkpoint "
                          f"(UnpicklingError)") from None
    except Exception as e:  # truncated zip, bad pickle, ...
        raise ConfigError(f"checkpoint: {path} is corrupt or truncated ({e.__class__.__name__})") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise ConfigError(f"checkpoint: {path} is not a metarl checkpoint")
    check_bounded(payload, path)
    version = payload["format_version"]
    if type(version) is not int or version != FORMAT_VERSION:
        shown = f"{version}" if type(version) is int else f"of type {type(version).__name__}"
        raise ConfigError(f"checkpoint: {path} has format version {shown}; this metarl reads version "
                          f"{FORMAT_VERSION} (an integer)")
    return payload


# A whole payload, bounded before anything walks it (load_state_dict, formatting a message): a
# training checkpoint holds a few hundred values (optimizer state, RNG state, counters; PEARL's
# buffers are tensors), a released one under 100.
MAX_PAYLOAD_VALUES = 200_000
MAX_PAYLOAD_DEPTH = 32
MAX_PAYLOAD_STRING = 1 << 20


def check_bounded(payload: dict[str, Any], path: str | Path) -> None:
    """Refuse, in one line naming the file, a payload that is not plain data of bounded size:
    the whole of it (tensors, numbers, strings, lists, dicts; at most MAX_PAYLOAD_VALUES values
    counted once per reference, so a list shared many times over cannot expand to billions when
    walked or formatted), and its `config` by the config's own bounds (config.check_plain).
    Nothing formats the payload before this passes."""
    from metarl.training import config

    if "config" in payload:  # first: its bounds are the tighter ones
        config.check_plain(payload["config"], f"checkpoint: {path}: config")
    config.check_plain(payload, f"checkpoint: {path}", max_values=MAX_PAYLOAD_VALUES,
                       max_depth=MAX_PAYLOAD_DEPTH, max_str=MAX_PAYLOAD_STRING, key_types=(str, int),
                       leaves=(torch.Tensor, torch.dtype), shared_ok=True,
                       allowed=f"tensors, numbers, strings, lists and dicts of at most {MAX_PAYLOAD_VALUES:,} "
                               f"values, nested at most {MAX_PAYLOAD_DEPTH} deep")


def load_latest(run_dir: str | Path, *, registry: Registry, resume: bool = False) -> tuple[Path, dict[str, Any]]:
    """Newest readable checkpoint of a run, validated (`validate`; `resume`: complete for a
    resume); a corrupt or truncated newer one is skipped with a warning, one that reads but
    does not validate is refused. `registry` (agents.AGENTS) reads the training configs
    `check_run` compares."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--resume: no such run dir: {run_dir}")
    candidates = list_checkpoints(run_dir)
    errors = []
    for path in reversed(candidates):
        try:
            payload = load_file(path)
        except (UnsafeCheckpoint, UnreadableCheckpoint):
            raise  # someone put it there, or it may be fine once readable: never fall back silently past it
        except ConfigError as e:
            errors.append(str(e))
            warnings.warn(f"skipping unreadable checkpoint {path.name}: {e}", stacklevel=2)
            continue
        check_run(path, payload, registry=registry)
        validate(path, payload, registry=registry, resume=resume)
        return path, payload
    if not candidates:
        raise ConfigError(f"--resume: no checkpoint in {checkpoint_dir(run_dir)}")
    raise ConfigError(f"--resume: no readable checkpoint in {checkpoint_dir(run_dir)}: {errors[0]}")


def resolve(path_or_run: str | Path, *, registry: Registry) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file, or a run dir meaning its newest readable checkpoint: read (load_file),
    checked against its run dir (check_run) and validated (validate), or refused in one line.
    What eval, release and the video renderer read."""
    p = Path(path_or_run)
    if p.is_dir():
        return load_latest(p, registry=registry)
    check_manifest(p)
    payload = load_file(p)
    check_run(p, payload, registry=registry)
    validate(p, payload, registry=registry)
    return p, payload


MANIFEST = "MANIFEST"  # beside released checkpoints (metarl bench release): `<sha256>  <file>  ...` per line


def sha256(path: Path) -> str:
    """The file's SHA-256, hex (what MANIFEST lists; metarl bench release writes it)."""
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_manifest(path: str | Path) -> None:
    """A checkpoint in a directory of released ones (a MANIFEST beside it, as benchmarks/checkpoints/
    has) must have the SHA-256 its MANIFEST lists, checked before it is unpickled: a file changed
    after its release, or one MANIFEST does not list, is refused in one line. Elsewhere: nothing to
    check. Both the path as given and the file a link there points to are checked."""
    path = Path(path)
    if not path.is_file():
        return  # load_file says so
    for p in dict.fromkeys([path, path.resolve()]):
        manifest = p.parent / MANIFEST
        if not manifest.is_file():
            continue
        try:
            lines = manifest.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise ConfigError(f"checkpoint: cannot read {manifest} ({why}), which lists the SHA-256 of the released "
                              f"checkpoints beside it; allowed: a readable MANIFEST") from None
        listed = {parts[1]: parts[0].lower() for parts in (ln.split() for ln in lines)
                  if len(parts) >= 2 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0])}
        if p.name not in listed:
            raise ConfigError(f"checkpoint: {p} is not listed in {manifest}; allowed there: the released checkpoints "
                              f"it lists (metarl bench release adds them)")
        try:
            actual = sha256(p)
        except OSError as e:
            raise UnreadableCheckpoint(f"checkpoint: cannot read {p} ({e.strerror or e.__class__.__name__}); "
                                       f"allowed: a checkpoint file this user can read (check its permissions)") from None
        if actual != listed[p.name]:
            raise ConfigError(f"checkpoint: {p} has SHA-256 {actual[:16]}... but {manifest} lists "
                              f"{listed[p.name][:16]}...: the file changed after its release; allowed: the released "
                              f"file (restore it, e.g. from git)")


def _config_hash(raw: Any, registry: Registry) -> str | None:
    """The training-config hash of a config mapping as this code reads it; None if it cannot."""
    from metarl.training import config

    try:
        return config.from_dict(raw, registry=registry).hash()
    except (ConfigError, TypeError, ValueError, AttributeError):
        return None


def run_config_hashes(run_dir: Path) -> set[str]:
    """Training-config hashes a run has had: runs.jsonl records one per `metarl train` start
    (a resume with --allow-config-change adds a new one)."""
    out: set[str] = set()
    try:
        lines = (run_dir / "runs.jsonl").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            h = json.loads(line).get("config_hash")
        except (ValueError, AttributeError):
            continue
        if isinstance(h, str):
            out.add(h)
    return out


def check_run(path: Path, payload: dict[str, Any], *, registry: Registry) -> None:
    """A checkpoint in RUN_DIR/checkpoints/ must have been written by that run: same agent and a
    training config the run has had (RUN_DIR/config.yaml, or one recorded in runs.jsonl).
    Checked before anything is written, so a checkpoint copied from another run is refused
    instead of resumed or evaluated under this run's name. Outside a run dir: nothing to check."""
    path = Path(path)
    run_dir = path.parent.parent
    cfg_file = run_dir / "config.yaml"
    if path.parent.name != "checkpoints" or not cfg_file.is_file():
        return
    from metarl.training import config

    runfiles.refuse_links(run_dir, ["config.yaml"])  # never read (nor later rewritten) through a planted link
    try:
        raw = config.read_yaml(cfg_file, "checkpoint: run config")
    except ConfigError:
        raw = None
    if not isinstance(raw, dict):
        raise ConfigError(f"checkpoint: {cfg_file} is not a readable run config; cannot tell whether "
                          f"{path.name} belongs to this run (restore config.yaml or move the checkpoint out)")
    saved_raw = payload.get("config")
    saved: dict[str, Any] = saved_raw if isinstance(saved_raw, dict) else {}
    saved_agent, run_agent_raw = saved.get("agent"), raw.get("agent")
    ck_agent = payload.get("agent_name") or (saved_agent.get("name", "maml_trpo") if isinstance(saved_agent, dict)
                                             else "maml_trpo")
    run_agent = run_agent_raw.get("name", "maml_trpo") if isinstance(run_agent_raw, dict) else \
        "maml_trpo" if run_agent_raw is None else None
    if ck_agent != run_agent:
        raise ForeignCheckpoint(
            f"checkpoint: {path} holds a {ck_agent!r} agent but its run dir's config.yaml asks for "
            f"{run_agent!r}: it was copied from another run; allowed: checkpoints this run wrote (move it out "
            f"of {path.parent})")
    ck_hash, run_hash = _config_hash(saved, registry), _config_hash(raw, registry)
    if ck_hash is None or run_hash is None:
        return  # written by a metarl whose config this code cannot read: the agent check is all we can do
    if ck_hash != run_hash and ck_hash not in run_config_hashes(run_dir):
        raise ForeignCheckpoint(
            f"checkpoint: {path} was written with training config {ck_hash} but its run dir's config.yaml "
            f"has {run_hash}: it was copied from another run; allowed: checkpoints this run wrote (move it "
            f"out of {path.parent})")


# ---- one checkpoint, from bytes on disk to a validated object ----------------------------------
TOP_KEYS = ("format_version", "config", "config_hash", "agent_name", "agent", "counters", "rng", "selection",
            "release")
ENV_DIMS = {"toy": (2, 2)}      # (obs_dim, act_dim) of a benchmark's envs (tests check them against envs/)
METAWORLD_DIMS = (39, 4)
COUNTERS = {"iteration": int, "env_steps": int, "eval_env_steps": int, "wall_seconds": float}
COUNTER_MAX = 2 ** 62
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class InvalidCheckpoint(ConfigError):
    """A checkpoint read safely that does not hold what its config describes."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint: its config (env.backend and env.ray_address as the file has
    them, never used by eval), the agent's state (shapes and dtypes of the agent the config
    builds, finite), counters (zeros where a released policy has none)."""

    path: Path
    payload: dict[str, Any]
    agent_name: str
    policy_only: bool
    counters: dict[str, int | float]


def _bad(path: Path, what: str) -> InvalidCheckpoint:
    return InvalidCheckpoint(f"checkpoint: {path}: {what}")


def _walk_tensors(x: Any, at: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _walk_tensors(v, f"{at}.{k}" if at else str(k))
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _walk_tensors(v, f"{at}[{i}]")
    elif isinstance(x, torch.Tensor):
        yield at, x


def _check_tensor(path: Path, at: str, t: torch.Tensor, ref: torch.Tensor | None) -> None:
    if t.is_complex() or t.dtype not in FLOAT_DTYPES + (torch.int64, torch.int32, torch.uint8, torch.bool):
        raise _bad(path, f"agent.{at} has dtype {t.dtype}; allowed: real floating point (float32) weights")
    if ref is not None:
        if t.dtype != ref.dtype:
            raise _bad(path, f"agent.{at} has dtype {t.dtype}; the agent its config builds has {ref.dtype} "
                             f"(refused, not cast)")
        if tuple(t.shape) != tuple(ref.shape):
            raise _bad(path, f"agent.{at} has shape {list(t.shape)}; the agent its config builds has "
                             f"{list(ref.shape)}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise _bad(path, f"agent.{at} holds NaN or infinite values; allowed: finite weights")


def _check_against(path: Path, state: dict[str, Any], ref: dict[str, Any], required: set[str]) -> None:
    """Every module (a dict of tensors in `ref`) with the same keys, shapes and dtypes; every
    other tensor real and finite; no top-level key `ref` lacks."""
    extra = sorted(str(k) for k in state if k not in ref and k not in ("policy_only", "protocol_seed"))
    if extra:
        raise _bad(path, f"agent has the key{'s' if len(extra) > 1 else ''} {', '.join(extra)[:200]}, which the "
                         f"{'released ' if state.get('policy_only') else ''}agent its config builds does not have; "
                         f"allowed: {', '.join(sorted(map(str, ref)))}")
    missing = sorted(k for k in required if k not in state)
    if missing:
        raise _bad(path, f"agent lacks {', '.join(missing)}, which the agent its config builds needs")
    for key, r in ref.items():
        if key not in state:
            continue
        v = state[key]
        if isinstance(r, torch.Tensor):
            if not isinstance(v, torch.Tensor):
                raise _bad(path, f"agent.{key} must be a tensor, got {type(v).__name__}")
            _check_tensor(path, key, v, r)
        elif isinstance(r, dict) and r and all(isinstance(t, torch.Tensor) for t in r.values()):  # a module
            if not isinstance(v, dict) or set(v) != set(r):
                got = sorted(map(str, v)) if isinstance(v, dict) else type(v).__name__
                raise _bad(path, f"agent.{key} must hold the tensors {', '.join(sorted(r))[:200]}, got "
                                 f"{str(got)[:200]}")
            for n, t in r.items():
                if not isinstance(v[n], torch.Tensor):
                    raise _bad(path, f"agent.{key}.{n} must be a tensor, got {type(v[n]).__name__}")
                _check_tensor(path, f"{key}.{n}", v[n], t)
        elif isinstance(r, (int, float, bool)) and not isinstance(v, (int, float, bool)):
            raise _bad(path, f"agent.{key} must be a number, got {type(v).__name__}")
        else:
            for at, t in _walk_tensors(v, key):
                _check_tensor(path, at, t, None)


def _check_counters(path: Path, payload: dict[str, Any], required: bool) -> dict[str, int | float]:
    c = payload.get("counters")
    if c is None and not required:
        return {k: tp(0) for k, tp in COUNTERS.items()}
    if not isinstance(c, dict):
        raise _bad(path, f"counters must be a mapping of {', '.join(COUNTERS)}, got {type(c).__name__}")
    out: dict[str, int | float] = {}
    for k, tp in COUNTERS.items():
        v = c.get(k)
        ok = (isinstance(v, int) and not isinstance(v, bool)) if tp is int else \
            (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
        if not ok or not 0 <= v < COUNTER_MAX:  # type: ignore[operator]  # ok: v is a number
            shown = repr(v) if isinstance(v, (int, float, str, type(None))) else type(v).__name__
            raise _bad(path, f"counters.{k} must be {'an integer' if tp is int else 'a finite number'} in "
                             f"0..2^62, got {shown[:60]}")
        out[k] = tp(v)
    extra = sorted(str(k) for k in c if k not in COUNTERS)
    if extra:
        raise _bad(path, f"counters has the key {extra[0][:40]}; allowed: {', '.join(COUNTERS)}")
    return out


def _check_rng(path: Path, rng: Any) -> None:
    import numpy as np

    if not isinstance(rng, dict) or set(rng) != {"numpy", "torch"}:
        raise _bad(path, "rng must be a mapping of numpy and torch generator states")
    t = rng["torch"]
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 1:
        raise _bad(path, "rng.torch must be a 1-D uint8 tensor (torch.get_rng_state())")
    try:
        torch.Generator().set_state(t)
        gen = np.random.default_rng()
        gen.bit_generator.state = rng["numpy"]
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError):
        raise _bad(path, "rng is not a generator state this numpy and torch can restore") from None


def validate(path: str | Path, payload: dict[str, Any], *, registry: Registry, resume: bool = False) -> Checkpoint:
    """Schema, types, shapes, dtypes and finiteness of a payload load_file returned, against
    the agent its own config builds: one InvalidCheckpoint line naming the file and the entry,
    before anything loads it. `resume`: also counters and RNG state must be complete."""
    from metarl.training import config

    path = Path(path)
    extra = sorted(str(k) for k in payload if k not in TOP_KEYS)
    if extra:
        raise _bad(path, f"has the key {extra[0][:40]}; allowed: {', '.join(TOP_KEYS)}")
    for key in ("agent", "config"):
        if key not in payload:
            raise _bad(path, f"has no {key!r} entry (the {'agent state' if key == 'agent' else 'run config'}); "
                             f"it was not written by metarl train")
        if not isinstance(payload[key], dict):
            raise _bad(path, f"{key} must be a mapping, got {type(payload[key]).__name__}")
    raw = payload["config"]
    env = raw.get("env")
    if isinstance(env, dict):  # never used from the file by eval; not checked against this machine here
        raw = {**raw, "env": {**env, "backend": "multiprocess", "ray_address": None}}
    try:
        cfg = config.from_dict(raw, registry=registry)
    except ConfigError as e:
        raise _bad(path, f"config: {e}") from None
    name = payload.get("agent_name", cfg.agent.name)
    if name != cfg.agent.name:
        shown = repr(name)[:60] if isinstance(name, str) else type(name).__name__
        raise _bad(path, f"agent_name is {shown} but its config's agent.name is {cfg.agent.name!r}")
    state = payload["agent"]
    policy_only = state.get("policy_only", False)
    if not isinstance(policy_only, bool):
        raise _bad(path, f"agent.policy_only must be true or false, got {type(policy_only).__name__}")
    if resume and policy_only:
        raise InvalidCheckpoint(f"--resume: {path} is a released policy (metarl bench release: no optimizer "
                                f"state or buffers); it can be evaluated with `metarl eval`, not resumed")
    obs_dim, act_dim = ENV_DIMS.get(cfg.env.benchmark, METAWORLD_DIMS)
    cls: Any = registry[cfg.agent.name]  # an agent class (agents.AGENTS), called as agents.make does
    with torch.random.fork_rng(devices=[]):
        agent = cls(cfg.agent, obs_dim, act_dim, "cpu")  # no task facts: PEARL's buffers stay unsized
    ref = agent.state_dict()
    release_keys = getattr(cls, "RELEASE_KEYS", None) or tuple(ref)
    if policy_only:
        ref = {k: v for k, v in ref.items() if k in release_keys}
        required = set(ref)
    else:
        required = {k for k, v in ref.items() if v is not None and k not in ("buffers",)}
    _check_against(path, state, ref, required)
    counters = _check_counters(path, payload, required=resume or "counters" in payload)
    if resume:
        _check_rng(path, payload.get("rng"))
    return Checkpoint(path, payload, cfg.agent.name, policy_only, counters)
