"""Writing files into a run dir without following symbolic links planted there.

A run dir is shared with whoever can write into it; `ln -s ~/victim RUN/progress.csv` must not
make `metarl train --resume RUN` write into ~/victim. Every file metarl writes in a run dir goes
through here: `open_write` opens with O_NOFOLLOW (a link at the path is refused in one line,
never followed) and refuses anything but a regular file (a FIFO would block the run);
`open_temp` first removes whatever sits at a temp name, then creates it with O_EXCL, so the
temp-then-rename writes (checkpoints, reports, results) never write through a link either; the
rename then replaces a link at the final name, not the file it points to. `refuse_links`
checks a run dir's files before a command writes anything.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO, Any, Iterable

from metarl.types import ConfigError

# the files `metarl train` (and eval, report) write directly in a run dir
RUN_FILES = ("config.yaml", "runs.jsonl", "progress.csv", "eval.csv", "best.json", "final_eval.json",
             "adaptation_curve.png", "eval_metaworld.json", "eval_metaworld.csv", "eval_metaworld_train.json",
             "eval_metaworld_train.csv", "report.md", "report_success.png", "report_adaptation_by_class.png")


class LinkedPath(ConfigError):
    """A path metarl writes is a symbolic link (or not a regular file): refused, never followed."""


def _link_error(path: Path) -> LinkedPath:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return LinkedPath(f"{path}: is a symbolic link{target}; metarl never writes through a link in a run dir. "
                      f"Allowed: a regular file or nothing at that path (remove the link)")


def nofollow(path: str | Path, flags: int) -> int:
    """An `opener` for open(): os.open with O_NOFOLLOW, refusing a link or a non-regular file at
    `path` in one LinkedPath line (O_NONBLOCK while opening, so a FIFO cannot block)."""
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK) and path.is_symlink():
            raise _link_error(path) from None
        if e.errno == errno.ENXIO:  # a FIFO nobody reads
            raise LinkedPath(f"{path}: is not a regular file; allowed: a regular file or nothing at that "
                             f"path") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LinkedPath(f"{path}: is not a regular file; allowed: a regular file or nothing at that path")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fresh(path: str | Path, flags: int) -> int:
    """An `opener` for a temp file: whatever sits at `path` (a planted link included) is removed
    first, then the file is created exclusively, so nothing is written through a link."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise LinkedPath(f"{path}: is a directory where metarl writes a temp file; allowed: nothing at that "
                         f"path") from None
    return nofollow(path, flags | os.O_CREAT | os.O_EXCL)


def open_write(path: str | Path, mode: str = "w", **kw: Any) -> IO:
    """open(path, mode) for writing ("w", "a", "wb", ...), refusing a link or a non-regular file
    at `path` with one LinkedPath line."""
    return open(path, mode, opener=nofollow, **kw)


def open_temp(path: str | Path, mode: str = "w", **kw: Any) -> IO:
    """open(path, mode) on a fresh file at the temp name `path` (see `fresh`)."""
    return open(path, mode, opener=fresh, **kw)


def write_text(path: str | Path, text: str) -> None:
    with open_write(path, "w") as f:
        f.write(text)


def replace_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temp file and a rename (a link at `path` is replaced,
    its target untouched)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open_temp(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def refuse_links(run_dir: str | Path, names: Iterable[str] = RUN_FILES) -> None:
    """One LinkedPath line for the first of `names` in `run_dir` that is a symbolic link or not a
    regular file: checked before a command writes anything there."""
    for name in names:
        p = Path(run_dir) / name
        if p.is_symlink():
            raise _link_error(p)
        if p.exists() and not p.is_file():
            raise LinkedPath(f"{p}: is not a regular file; allowed: a regular file or nothing at that path")
