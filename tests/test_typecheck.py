"""mypy over metarl/ with the settings in pyproject.toml ([tool.mypy]), as part of
the test suite, so that `make test` and CI fail on a type error.

Time on the 2-core machine: ~17 s of CPU on a fresh clone (most of it reading torch's types),
~1 s once .mypy_cache/ (gitignored) holds the result of an earlier run."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _mypy(*args: str) -> subprocess.CompletedProcess:
    try:
        import mypy  # noqa: F401
    except ImportError:
        raise AssertionError("mypy is not installed: pip install -c constraints.txt -e '.[test]'") from None
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "MYPYPATH": str(ROOT)})


def test_mypy_passes():
    r = _mypy()
    assert r.returncode == 0, r.stdout + r.stderr


# wrong arguments across module boundaries, each of which mypy must report (line: error code)
PROBE = '''\
import numpy as np
from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.envs import TaskVectorEnv, make_benchmark
from metarl.training.evaluation import evaluate
from metarl.training.sampler import Sampler
bench = make_benchmark("toy", seed="0")
vec = TaskVectorEnv(bench.env_factory, 4, n_workers=2.0)
sampler = Sampler(vec, horizon=None)
agent = MAMLTRPO(MAMLTRPOConfig(), bench.obs_dim, "2")
class NotAnAgent:
    meta_batch = 4
    act_dim = 2
evaluate(NotAnAgent(), sampler, bench.test_tasks, 2, 10, np.random.default_rng(0))
evaluate(agent, sampler, bench.test_tasks[0], 2, 10, np.random.default_rng(0))
'''
EXPECTED = {6: "arg-type", 7: "arg-type", 8: "arg-type", 9: "arg-type", 13: "arg-type", 14: "arg-type"}


def test_mypy_catches_wrong_arguments_across_module_boundaries(tmp_path):
    """The settings are strict enough to matter: a str seed, a float worker count, a missing
    horizon, a wrong action size type, an object that is not a MetaAgent, one Task for a list."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    r = _mypy("--config-file", str(ROOT / "pyproject.toml"), str(probe))
    found = {int(m[1]): m[2] for m in re.finditer(r"probe\.py:(\d+): error: .*\[([a-z-]+)\]", r.stdout)}
    assert found == EXPECTED, r.stdout
