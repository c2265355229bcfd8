"""Atomic checkpoints: temp file -> fsync -> rename; the newest N kept; corrupt ones skipped."""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from metarl.types import ConfigError

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save(run_dir: str | Path, iteration: int, payload: dict[str, Any], keep: int = 3) -> Path:
    final = write(checkpoint_dir(run_dir) / f"ckpt_{iteration:07d}.pt", payload)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return final


BEST = "best.pt"  # the model-selection checkpoint (eval.select_best); never picked by --resume


def write(final: Path, payload: dict[str, Any]) -> Path:
    """Write one checkpoint file atomically (temp file, fsync, rename, fsync the dir)."""
    d = final.parent
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{final.name}.tmp"
    with open(tmp, "wb") as f:
        torch.save({"format_version": FORMAT_VERSION, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def load_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint: no such file: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, bad pickle, ...
        raise ConfigError(f"checkpoint: {path} is corrupt or truncated ({e.__class__.__name__})") from e
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise ConfigError(f"checkpoint: {path} is not a metarl checkpoint")
    if payload["format_version"] != FORMAT_VERSION:
        raise ConfigError(f"checkpoint: {path} has format version {payload['format_version']}; "
                          f"this metarl reads version {FORMAT_VERSION}")
    return payload


def load_latest(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """Newest readable checkpoint of a run; a corrupt newer one is skipped with a warning."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--resume: no such run dir: {run_dir}")
    candidates = list_checkpoints(run_dir)
    errors = []
    for path in reversed(candidates):
        try:
            return path, load_file(path)
        except ConfigError as e:
            errors.append(str(e))
            warnings.warn(f"skipping unreadable checkpoint {path.name}: {e}", stacklevel=2)
    if not candidates:
        raise ConfigError(f"--resume: no checkpoint in {checkpoint_dir(run_dir)}")
    raise ConfigError(f"--resume: no readable checkpoint in {checkpoint_dir(run_dir)}: {errors[0]}")


def resolve(path_or_run: str | Path) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file, or a run dir meaning its newest readable checkpoint."""
    p = Path(path_or_run)
    if p.is_dir():
        return load_latest(p)
    return p, load_file(p)
