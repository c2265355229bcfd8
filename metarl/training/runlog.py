"""Run logging: TensorBoard events, progress.csv, eval.csv and adaptation-curve figures.

Only the trainer (and the CLI's eval/plot commands) write logs.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence, TextIO

import numpy as np

from metarl.training import runfiles
from metarl.core.types import AdaptationCurve, ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def curve_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "") -> Figure:
    """curves: label -> (success by round, return by round). Returns a matplotlib Figure."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax_s, ax_r = fig.subplots(1, 2)
    for label, (s, r) in curves.items():
        ks = np.arange(len(s))
        ax_s.plot(ks, np.asarray(s) * 100, marker="o", label=label)
        ax_r.plot(ks, r, marker="o", label=label)
    ax_s.set(xlabel="adaptation round k", ylabel="success rate (%)", ylim=(-2, 102), title="success after k rounds")
    ax_r.set(xlabel="adaptation round k", ylabel="mean episode return", title="return after k rounds")
    for ax in (ax_s, ax_r):
        ax.grid(alpha=0.3)
        if len(curves) <= 12:
            ax.legend(fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_curve_png(curve: AdaptationCurve, path: str | Path, title: str = "") -> None:
    curves = {"mean over held-out tasks": (curve.success_by_round(), curve.return_by_round())}
    by_class = curve.by_class()
    if len(by_class) > 1:
        curves.update({k: (list(s), list(r)) for k, (s, r) in by_class.items()})
    with runfiles.naming(path), runfiles.open_write(path, "wb") as f:
        curve_figure(curves, title).savefig(f, dpi=100, format="png")


def repair_torn_line(path: Path) -> int:
    """A crash mid-append leaves a partial last line; the next row would be glued onto it (one
    return read as 12000). Cut the file back to its last complete line; returns the bytes cut."""
    if not path.exists():
        return 0
    try:
        with runfiles.open_write(path, "ab") as f:
            size = f.seek(0, 2)
            if size == 0:
                return 0
            with path.open("rb") as r:
                r.seek(max(0, size - 1))
                if r.read(1) == b"\n":
                    return 0
                # the last newline: read back in blocks (a row is a few KB at most)
                end, pos = size, size
                while pos > 0:
                    pos = max(0, pos - 65536)
                    r.seek(pos)
                    block = r.read(end - pos)
                    i = block.rfind(b"\n")
                    if i >= 0:
                        keep = pos + i + 1
                        break
                    end = pos
                else:
                    keep = 0
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            return size - keep
    except FileNotFoundError:
        return 0


def read_rows(path: Path, what: str = "RUN_DIR") -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a run's CSV log, refusing in one line what is not one: unreadable or
    undecodable bytes, a row whose field count is not the header's (a torn or glued line), or an
    env_steps that is not a number."""
    try:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            raw = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"{what}: cannot read {path} ({e.__class__.__name__})") from None
    rows = []
    for line, values in enumerate(raw, start=2):
        if not values:
            continue
        if len(values) != len(header):
            raise ConfigError(f"{what}: {path} line {line} has {len(values)} fields but the header has "
                              f"{len(header)}: a torn or glued line (a crash mid-write); allowed: complete rows "
                              f"(metarl train --resume repairs a torn last line)")
        row = dict(zip(header, values))
        if "env_steps" in row:
            try:
                ok = math.isfinite(float(row["env_steps"]))
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"{what}: {path} line {line}: env_steps must be a number, got "
                                  f"{row['env_steps'][:40]!r}")
        rows.append(row)
    return header, rows


def check_log(path: Path, what: str = "--resume") -> None:
    """Refuse, in one line, a run's CSV log that metarl could not read back: not UTF-8 text, or not
    CSV (a NUL byte: a binary or damaged file). A torn last line passes (CsvLog cuts it)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for _ in csv.reader(f):
                pass
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else \
            "not CSV text" if isinstance(e, csv.Error) else (e.strerror or e.__class__.__name__)
        raise ConfigError(f"{what}: {path} is not a CSV log metarl can read ({why}: a binary or damaged file); "
                          f"allowed: the log the run wrote. Move it aside (a new one is started) and try "
                          f"again") from None


class CsvLog:
    """Append rows to a CSV; when new columns appear, rewrite it with the wider header. A torn
    last line (a crash mid-append) is cut off when the log is opened again, with a note. A log
    that is not UTF-8 CSV text is refused in one line (check_log), never rewritten."""

    def __init__(self, path: Path):
        self.path = path
        self.fields: list[str] = []
        runfiles.refuse_links(path.parent, [path.name])  # never read or written through a planted link
        check_log(path)
        cut = repair_torn_line(path)
        if cut:
            print(f"metarl: note: {path} ended in a partial line ({cut} bytes, cut off by a crash); removed",
                  file=sys.stderr)
        if path.exists():
            with path.open() as f:
                self.fields = next(csv.reader(f), [])

    def truncate_after(self, env_steps: int) -> int:
        """Drop the rows logged after `env_steps` (a resume redoes those iterations); returns how
        many were dropped. Rewritten atomically; rows without a numeric env_steps are kept."""

        def later(r: dict) -> bool:
            try:
                return int(float(r.get("env_steps") or "")) > env_steps
            except ValueError:
                return False

        return self.drop_rows(later)

    def drop_rows(self, drop: Callable[[dict], bool]) -> int:
        """Drop the rows for which `drop(row)` is true; returns how many. Rewritten atomically."""
        if not self.path.exists() or not self.fields:
            return 0
        with self.path.open() as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if not drop(r)]
        if len(keep) == len(rows):
            return 0
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with runfiles.open_temp(tmp, "w", newline="") as out:
            w = csv.DictWriter(out, self.fields)
            w.writeheader()
            w.writerows(keep)
        tmp.replace(self.path)
        return len(rows) - len(keep)

    def write(self, row: dict) -> None:
        new = [k for k in row if k not in self.fields]
        if new:
            old_rows = []
            if self.path.exists() and self.fields:
                with self.path.open() as f:
                    old_rows = list(csv.DictReader(f))
            self.fields += new
            with runfiles.open_write(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, self.fields)
                w.writeheader()
                w.writerows(old_rows)
        with runfiles.naming(self.path), runfiles.open_write(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)


def _hms(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class TextProgress:
    """Progress as plain lines, for when the progress bar cannot draw (output to a file or a
    pipe: a run in the background, a batch job). One line at most every `interval` seconds, and
    always the first and the last of a stretch, so a log shows where a run is and when it ends."""

    def __init__(self, title: str, total_steps: int, start_steps: int, interval: float = 30.0,
                 out: TextIO | None = None):
        import sys

        self.title, self.total, self.start, self.interval = title, total_steps, start_steps, interval
        self.out = out if out is not None else sys.stderr
        self.t0 = time.monotonic()
        self.last = -float("inf")

    def _emit(self, line: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            print(f"[{self.title}] {line}", file=self.out, flush=True)

    def iteration(self, iteration: int, env_steps: int, success: float, sps: float) -> None:
        done = env_steps - self.start
        rate = done / max(time.monotonic() - self.t0, 1e-9)
        eta = f" · eta {_hms((self.total - env_steps) / rate)} of training" if 0 < done and env_steps < self.total \
            else ""
        self._emit(f"iteration {iteration} · {env_steps:,}/{self.total:,} env steps "
                   f"({100 * env_steps / self.total:.1f}%) · training success {100 * success:.0f}% · "
                   f"{sps:,.0f} steps/s{eta}",
                   force=self.last < 0 or env_steps >= self.total)

    def evaluation(self, label: str, env_steps: int, curve: AdaptationCurve) -> None:
        """`curve`'s success after its last round, over its tasks."""
        self._emit(f"{label} at {env_steps:,} env steps: success {100 * curve.success_by_round()[-1]:.1f}% on "
                   f"{len(curve.tasks)} tasks", force=True)

    def eval_steps(self, label: str, done: int, total: int) -> None:
        """`total`: the most env steps the evaluation can take (episodes may end on success)."""
        self._emit(f"{label}: {done:,} env steps of at most {total:,} ({100 * done / max(total, 1):.0f}%)")

    def note(self, line: str) -> None:
        self._emit(line, force=True)


class RunLogger:
    def __init__(self, run_dir: Path, title: str = "", resume_step: int | None = None):
        """`resume_step`: the env steps of the checkpoint a resumed run continues from; what was
        logged after it (progress.csv and eval.csv rows, TensorBoard events) is dropped, since
        those iterations run again."""
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.title = title
        self.tb_dir = self.run_dir / "tb"  # named by a failed write of the TensorBoard thread (runfiles.naming)
        with runfiles.naming(self.tb_dir):
            self.tb = SummaryWriter(str(self.tb_dir), purge_step=None if resume_step is None else resume_step + 1)
        self.progress = CsvLog(self.run_dir / "progress.csv")
        self.eval_csv = CsvLog(self.run_dir / "eval.csv")
        if resume_step is not None:
            self.progress.truncate_after(resume_step)
            self.eval_csv.truncate_after(resume_step)

    def layout(self, test_classes: Sequence[str], rounds: int) -> dict:
        """A TensorBoard custom-scalars layout: per held-out class, success after 0..K rounds as one
        multi-line chart; the mean over held-out tasks likewise; training vs held-out success after
        adaptation on one chart (with eval.select_best)."""
        k = list(range(rounds + 1))
        per_class = {c: ["Multiline", [f"eval/{c}/success@{r}" for r in k]] for c in test_classes}
        layout = {
            "adaptation (held-out)": {"mean over held-out tasks": ["Multiline", [f"eval/success@{r}" for r in k]],
                                      **per_class},
            "train vs test": {f"success after {rounds} round(s)": ["Multiline", [f"eval/success@{rounds}",
                                                                                  f"eval_train/success@{rounds}"]],
                              "meta-training rollouts": ["Multiline", ["rollout/success_rate_pre",
                                                                        "rollout/success_rate"]]},
        }
        with runfiles.naming(self.tb_dir):
            self.tb.add_custom_scalars(layout)
            self.tb.flush()
        return layout

    def log(self, metrics: dict[str, float], step: int) -> None:
        with runfiles.naming(self.tb_dir):
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
        self.progress.write({"env_steps": step, **metrics})
        with runfiles.naming(self.tb_dir):
            self.tb.flush()

    def log_eval(self, curve: AdaptationCurve, step: int, tag: str = "eval") -> dict[str, float]:
        scalars = curve.scalars(tag)
        with runfiles.naming(self.tb_dir):
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        for row in curve.rows():
            self.eval_csv.write({"env_steps": step, "eval": tag, **row})
        curves = {f"{tag} @ {step} steps": (curve.success_by_round(), curve.return_by_round())}
        with runfiles.naming(self.tb_dir):
            self.tb.add_figure(f"{tag}/adaptation_curve", curve_figure(curves, self.title), step)
        save_curve_png(curve, self.run_dir / "adaptation_curve.png", f"{self.title} ({tag}, {step:,} env steps)")
        with runfiles.naming(self.tb_dir):
            self.tb.flush()
        return scalars

    def close(self) -> None:
        with runfiles.naming(self.tb_dir):
            try:
                self.tb.flush()  # raises what the writer thread met (a full disk); close() would not
            finally:
                self.tb.close()


def write_protocol_result(out_dir: str | Path, summary: dict, rows: list[dict], step: int,
                          tb_dir: str | Path | None = None, stem: str = "eval_metaworld") -> tuple[Path, Path]:
    """A Meta-World-protocol evaluation: `<stem>.json` (the summary: success per goal -> class ->
    overall, the pooled figure, per class), `<stem>.csv` (one row per episode) and, with
    `tb_dir`, TensorBoard scalars `eval_metaworld/...` at env step `step`. The files are written
    to temp names and renamed, so a crash leaves no half-written result."""
    import json
    import os

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, cs = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    tmp_js, tmp_cs = out_dir / f".{stem}.json.tmp", out_dir / f".{stem}.csv.tmp"
    with runfiles.naming(tmp_js), runfiles.open_temp(tmp_js, "w") as f:
        f.write(json.dumps({"env_steps": step, **summary}, indent=2))
    with runfiles.naming(tmp_cs), runfiles.open_temp(tmp_cs, "w", newline="") as f:
        w = csv.DictWriter(f, ["env_steps", "task", "task_index", "phase", "episode", "success", "return", "length"])
        w.writeheader()
        for r in rows:
            w.writerow({"env_steps": step, **r})
    os.replace(tmp_js, js)
    os.replace(tmp_cs, cs)
    if tb_dir is not None:
        from torch.utils.tensorboard import SummaryWriter
        tb = SummaryWriter(str(tb_dir))
        for k in ("success", "success_metaworld_pooled", "success_pre_adaptation", "return"):
            tb.add_scalar(f"eval_metaworld/{k}", summary[k], step)
        for name, c in summary["per_class"].items():
            tb.add_scalar(f"eval_metaworld/{name}/success", c["success"], step)
            tb.add_scalar(f"eval_metaworld/{name}/success_pre_adaptation", c["success_pre_adaptation"], step)
        tb.close()
    return js, cs
