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

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from metarl.core.types import ConfigError, StorageError

# the files `metarl train` (and eval, report) write directly in a run dir
RUN_FILES = ("config.yaml", "runs.jsonl", "progress.csv", "eval.csv", "best.json", "final_eval.json",
             "adaptation_curve.png", "eval_metaworld.json", "eval_metaworld.csv", "eval_metaworld_train.json",
             "eval_metaworld_train.csv", "report.md", "report_success.png", "report_adaptation_by_class.png")


# what the disk (not the input) can make a write fail with: full, over quota, read-only, no permission, I/O
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                         errno.EFBIG})


def write_error(e: OSError, label: str, default: str | Path, stopped: str, then: str) -> StorageError:
    """One line for a write that failed because of the disk: `label: cannot write FILE (why);
    STOPPED. HOW TO FIX, then THEN` (`default`: the file named when the error names none, as a
    failed write() or the TensorBoard writer's does not)."""
    target = Path(os.fsdecode(e.filename)) if isinstance(e.filename, (str, bytes, os.PathLike)) else Path(default)
    why = e.strerror or e.__class__.__name__
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = f"Free space on the disk that holds {target.parent}"
    elif e.errno == errno.EROFS:
        fix = f"Make the file system that holds {target.parent} writable"
    else:
        fix = f"Make {target.parent} writable"
    return StorageError(f"{label}: cannot write {target} ({why}); {stopped}. {fix}, then {then}")


def output_error(e: OSError, label: str, path: str | Path, stopped: str, then: str) -> ConfigError | StorageError:
    """A command's output that could not be written: a StorageError (write_error) when the disk
    is the cause (DISK_ERRNOS), else a ConfigError naming the path, which the user chose (a file
    standing where a directory must be, a name too long)."""
    if e.errno in DISK_ERRNOS:
        return write_error(e, label, path, stopped, then)
    return ConfigError(f"{label}: cannot write {path}: {e.strerror or e.__class__.__name__}")


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OSError raised inside that names no file (a failed write() or flush, the TensorBoard
    writer thread's) is given `path`, so that its one-line message says what could not be written."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


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
    with naming(path), open_write(path, "w") as f:
        f.write(text)


def replace_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temp file and a rename (a link at `path` is replaced,
    its target untouched)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with naming(tmp), open_temp(tmp, "w") as f:
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


LOCK = ".lock"


class RunDirBusy(ConfigError):
    """Another live process holds the run dir's lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLock:
    """One process per run dir: an exclusive flock on RUN/.lock, which holds the holder's PID.

    The kernel drops a flock when its holder dies, however it dies, so a lock left by a dead
    process is never in the way: it is taken over, with a note naming the PID the file still
    held. A clean release empties the file, so a PID found there means the holder never got to
    release it. Used as a context manager; `note` receives that one line."""

    def __init__(self, run_dir: str | Path, note: Any = None):
        self.path = Path(run_dir) / LOCK
        self.note = note
        self.fd: int | None = None
        self.stale_pid: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EMLINK) and self.path.is_symlink():
                raise _link_error(self.path) from None
            if e.errno in DISK_ERRNOS:
                raise write_error(e, "run dir", self.path, "nothing was started",
                                  "run the command again") from None
            raise ConfigError(f"run dir: cannot create the lock file {self.path} "
                              f"({e.strerror or e.__class__.__name__})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise LinkedPath(f"{self.path}: is not a regular file; allowed: a regular file or nothing at "
                                 f"that path")
            held = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = held if held.isdigit() else "unknown"
                raise RunDirBusy(
                    f"run dir: {self.path.parent} is in use by another metarl process (PID {holder}, holding "
                    f"{self.path}); allowed: one process per run dir. Wait for it to end, or stop it with "
                    f"kill -TERM {holder} and resume") from None
            held = os.pread(fd, 32, 0).decode("ascii", "replace").strip()  # as it is now that we hold it
            if held.isdigit() and int(held) != os.getpid():
                self.stale_pid = int(held)
                if self.note is not None:
                    state = "has ended" if not _pid_alive(int(held)) else "no longer holds it"
                    self.note(f"run dir: {self.path} was left locked by PID {held}, which {state}; taken over")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # a clean end: no PID left behind
        except OSError:
            pass
        os.close(self.fd)  # drops the flock
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: Any) -> None:
        self.release()
