"""The sweep behind the thresholds of tests/test_learning.py::test_maml_variants_meta_learn_on_toy_tasks:
first-order MAML and Meta-SGD (per-parameter) on the toy point goals, seeds 0-9, and seeds 0-4
again with every initial weight perturbed by a relative 1e-6 (a CPU's different rounding).

    python benchmarks/maml_variants_sweep.py     # ~2 min on 2 cores; writes results/maml_variants_sweep.json
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from helpers import perturb_, train_seeds, train_toy_point_goals
from test_learning import toy_maml


def make(kw, perturb):
    def f(bench):
        a = toy_maml(bench, **kw)
        if perturb:
            perturb_(a.policy.parameters(), 1e-6, 123)
        return a
    return f


out = {}
for label, kw in [("first_order", dict(first_order=True)), ("meta_sgd", dict(learn_inner_lr="per_parameter"))]:
    for perturb, seeds in ((False, range(10)), (True, range(5))):
        runs = train_seeds(lambda s: train_toy_point_goals(s, make(kw, perturb), 10), seeds)
        print(label, "perturbed" if perturb else "plain", runs.table(), flush=True)
        out[f"{label}_{'p' if perturb else 'n'}"] = [{k: r[k] for k in ("adapt", "meta")} for r in runs.runs]
(ROOT / "benchmarks" / "results" / "maml_variants_sweep.json").write_text(json.dumps(out, indent=1) + "\n")
