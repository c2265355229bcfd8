"""The reward decoder's loss fall on the toy, per seed: the sweep behind the threshold of
tests/test_pearl.py::test_reward_decoder_trains_the_encoder_and_learns_the_reward.

    python benchmarks/pearl_decoder_sweep.py [--seeds 0-9] [--perturbed 0-4] [--iterations 8]

Runs `decoder_loss_ratio` (last iteration's reward loss / first's) single-threaded for each seed,
then again for the `--perturbed` seeds with every initial weight multiplied by 1 + 1e-6 N(0, 1)
(the size of a CPU's different rounding), and prints one line per run plus the worst median of 3 distinct seeds.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv=None) -> int:
    import torch

    from test_pearl import decoder_loss_ratio

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0-9")
    p.add_argument("--perturbed", default="0-4")
    p.add_argument("--iterations", type=int, default=8)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    runs = []  # (seed, ratio)
    for perturb, seeds in ((0.0, _seeds(a.seeds)), (1e-6, _seeds(a.perturbed))):
        for s in seeds:
            r = decoder_loss_ratio(s, a.iterations, perturb)["ratio"]
            runs.append((s, r))
            print(f"seed {s}{' perturbed 1e-6' if perturb else ''}: ratio {r:.3f}", flush=True)
    r = np.array([x for _, x in runs])
    # the test takes the median of 3 distinct seeds: the worst such median over every run
    worst = max(float(np.median([x for _, x in c])) for c in itertools.combinations(runs, 3)
                if len({s for s, _ in c}) == 3)
    print(f"min {r.min():.3f} / median {np.median(r):.3f} / max {r.max():.3f}; worst median of 3 {worst:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
