"""Atomic checkpoints: temp file -> fsync -> rename; the newest N kept; corrupt ones skipped.

Checkpoints hold only tensors, numbers, strings, None, lists, tuples and dicts, and are read
with `torch.load(weights_only=True)`: loading one can never run code. A file that holds
other pickled objects is refused with one line (UnsafeCheckpoint), never loaded another way.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metarl import runfiles
from metarl.types import ConfigError

if TYPE_CHECKING:
    from metarl.config import Registry

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
    found = [(i, p) for p in d.iterdir() if (i := iteration_of(p)) is not None]
    return [p for _, p in sorted(found)]


class UnsafeCheckpoint(ConfigError):
    """The file holds pickled Python objects that weights-only loading refuses to build."""


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
    elif not isinstance(obj, _SAFE_LEAVES):
        raise TypeError(f"checkpoint: {where} is a {type(obj).__module__}.{type(obj).__qualname__}, which "
                        f"torch.load(weights_only=True) cannot read; store tensors, numbers, strings, "
                        f"lists or dicts")


def save(run_dir: str | Path, iteration: int, payload: dict[str, Any], keep: int = 3) -> Path:
    final = write(checkpoint_dir(run_dir) / f"ckpt_{iteration:07d}.pt", payload)
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
    from metarl import config

    if "config" in payload:  # first: its bounds are the tighter ones
        config.check_plain(payload["config"], f"checkpoint: {path}: config")
    config.check_plain(payload, f"checkpoint: {path}", max_values=MAX_PAYLOAD_VALUES,
                       max_depth=MAX_PAYLOAD_DEPTH, max_str=MAX_PAYLOAD_STRING, key_types=(str, int),
                       leaves=(torch.Tensor, torch.dtype), shared_ok=True,
                       allowed=f"tensors, numbers, strings, lists and dicts of at most {MAX_PAYLOAD_VALUES:,} "
                               f"values, nested at most {MAX_PAYLOAD_DEPTH} deep")


def load_latest(run_dir: str | Path, *, registry: Registry) -> tuple[Path, dict[str, Any]]:
    """Newest readable checkpoint of a run; a corrupt newer one is skipped with a warning.
    `registry` (agents.AGENTS) reads the training configs `check_run` compares."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--resume: no such run dir: {run_dir}")
    candidates = list_checkpoints(run_dir)
    errors = []
    for path in reversed(candidates):
        try:
            payload = load_file(path)
        except UnsafeCheckpoint:
            raise  # someone put it there: never fall back silently past it
        except ConfigError as e:
            errors.append(str(e))
            warnings.warn(f"skipping unreadable checkpoint {path.name}: {e}", stacklevel=2)
            continue
        check_run(path, payload, registry=registry)
        return path, payload
    if not candidates:
        raise ConfigError(f"--resume: no checkpoint in {checkpoint_dir(run_dir)}")
    raise ConfigError(f"--resume: no readable checkpoint in {checkpoint_dir(run_dir)}: {errors[0]}")


def resolve(path_or_run: str | Path, *, registry: Registry) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file, or a run dir meaning its newest readable checkpoint."""
    p = Path(path_or_run)
    if p.is_dir():
        return load_latest(p, registry=registry)
    payload = load_file(p)
    check_run(p, payload, registry=registry)
    return p, payload


def _config_hash(raw: Any, registry: Registry) -> str | None:
    """The training-config hash of a config mapping as this code reads it; None if it cannot."""
    from metarl import config

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
    from metarl import config

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
