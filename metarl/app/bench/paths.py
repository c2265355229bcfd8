"""Where the benchmark workflow keeps its files by default: the checkout's benchmarks/ folder."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the checkout holding metarl/
RESULTS = ROOT / "benchmarks" / "results"
INFLIGHT = ROOT / "benchmarks" / "inflight"
CHECKPOINTS = ROOT / "benchmarks" / "checkpoints"
RUNS = ROOT / "runs" / "bench"


def shown(path: Path) -> str:
    """`path` relative to the checkout when it lies inside it (as commands and result files name it)."""
    full = Path(path).resolve()
    return os.path.relpath(full, ROOT) if full.is_relative_to(ROOT) else str(full)
