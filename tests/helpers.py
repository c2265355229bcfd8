"""Shared test helpers."""
import multiprocessing
import os
import signal

import numpy as np
import torch


def assert_same(a, b, path="agent"):
    """Recursively equal: tensors bit for bit (same dtype), arrays, and everything else by ==."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    else:
        assert a == b, path


# ---- learning tests: several short seeds, assert on the median --------------------------------
# A single-seed learning test tuned on one CPU can fail on another: float rounding differs
# between CPUs (AVX2 vs AVX-512 kernels, thread counts), and a few ulps early in training send
# the run down another trajectory, as different as another seed. So a learning test trains
# several short seeds and asserts on the median margin, with a threshold set from a sweep of
# about 10 seeds (recorded in each test's docstring) and well below the sweep's worst
# median-of-k. Anything exact compares two runs on the same machine instead.


def perturb_(params, rel, seed):
    """Multiply every tensor of `params` in place by 1 + rel * N(0, 1), drawn from a generator
    seeded with `seed`: a learning sweep's stand-in for another CPU's rounding (rel ~ 1e-6)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.mul_(1 + rel * torch.randn(p.shape, generator=g))


class SeedRuns:
    """Per-seed metrics of one learning setup: `runs[i]` is the dict `train_one(seeds[i])` returned."""

    def __init__(self, seeds, runs):
        self.seeds = list(seeds)
        self.runs = list(runs)

    def values(self, key) -> np.ndarray:
        return np.array([r[key] for r in self.runs], dtype=float)

    def median(self, key) -> float:
        return float(np.median(self.values(key)))

    def table(self) -> str:
        keys = list(self.runs[0])
        rows = [f"seed {s}: " + ", ".join(f"{k} {r[k]:+.2f}" for k in keys) for s, r in zip(self.seeds, self.runs)]
        return "\n".join(rows)

    def assert_median_above(self, key, threshold):
        """The median of `key` over the seeds exceeds `threshold`; the message shows every seed."""
        med = self.median(key)
        assert med > threshold, f"median {key} {med:+.2f} <= {threshold:+.2f} over seeds {self.seeds}:\n{self.table()}"


_JOB = None  # (train_one, threads) for the forked workers of train_seeds


def _run_seed(seed):
    train_one, threads = _JOB
    torch.set_num_threads(threads)
    return {k: float(v) for k, v in train_one(int(seed)).items()}


def default_processes(n_seeds):
    """One process per core this process may run on, at most one per seed; METARL_TEST_PROCESSES
    overrides it (1: every seed in the test's own process). 1 where fork is not available."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if os.environ.get("METARL_TEST_PROCESSES"):
        return max(1, int(os.environ["METARL_TEST_PROCESSES"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n_seeds, cores))


def train_seeds(train_one, seeds, threads=1, processes=None) -> SeedRuns:
    """Run `train_one(seed) -> {metric: float}` for each seed, with torch on `threads` threads,
    and give back the per-seed metrics. The seeds run in `processes` forked processes (default:
    one per core, at most one per seed); with threads=1 each seed's numbers are the same in
    any process, since it runs single-threaded from its own seeds. With one process they run here, and torch's
    global RNG state and thread count are restored afterwards."""
    global _JOB
    seeds = [int(s) for s in seeds]
    processes = default_processes(len(seeds)) if processes is None else processes
    if processes > 1:
        _JOB = (train_one, threads)  # inherited by the forked workers: train_one may be a lambda
        try:
            with multiprocessing.get_context("fork").Pool(processes) as pool:
                runs = pool.map(_run_seed, seeds, chunksize=1)
        finally:
            _JOB = None
        return SeedRuns(seeds, runs)
    old_threads, old_rng = torch.get_num_threads(), torch.get_rng_state()
    _JOB = (train_one, threads)
    try:
        runs = [_run_seed(s) for s in seeds]
    finally:
        _JOB = None
        torch.set_num_threads(old_threads)
        torch.set_rng_state(old_rng)
    return SeedRuns(seeds, runs)


def train_toy_point_goals(seed, make_agent, iterations, *, toy_goals="square", episodes_per_round=10):
    """One seed of a meta-learner on the toy point goals (20-step episodes; `toy_goals`: square or
    semicircle): tasks, initial weights, sampling and evaluation noise all drawn from `seed`.
    `make_agent(bench)` builds the agent; returns held-out return before (`pre`) and after
    (`post`) one adaptation round of `episodes_per_round` episodes after meta-training, `adapt` =
    post - pre, `meta` = post minus the adapted return before meta-training, and `rejected`, the
    updates the agent rejected."""
    from metarl.envs import TaskVectorEnv, make_benchmark
    from metarl.training.evaluation import evaluate
    from metarl.training.sampler import Sampler

    torch.manual_seed(seed)
    bench = make_benchmark("toy", seed=seed, max_episode_steps=20, toy_goals=toy_goals)
    agent = make_agent(bench)
    sampler = Sampler(TaskVectorEnv(bench.env_factory, agent.meta_batch), bench.max_episode_steps)

    def held_out():
        c = evaluate(agent, sampler, bench.test_tasks[:20], rounds=1, episodes_per_round=episodes_per_round,
                     rng=np.random.default_rng(10_000 + seed))
        return c.return_by_round()

    _, post0 = held_out()
    rng = np.random.default_rng(seed)
    rejected = 0.0
    for _ in range(iterations):
        rejected += agent.train_iteration(sampler, bench.train_tasks, rng).rejected
    pre, post = held_out()
    return {"pre": pre, "post": post, "adapt": post - pre, "meta": post - post0, "rejected": rejected}


def sigterm_on_progress(evaluate):
    """`evaluate` (metarl.training.evaluation.evaluate) wrapped so that each progress report first sends this
    process SIGTERM: a signal that arrives while an evaluation runs."""
    def wrapped(*a, on_progress=None, **k):
        def progress(n):
            os.kill(os.getpid(), signal.SIGTERM)
            if on_progress is not None:
                on_progress(n)
        return evaluate(*a, on_progress=progress, **k)
    return wrapped


# ---- the CLI in this process -----------------------------------------------------------------
class CliResult:
    """What `run_cli` gives back: the fields of subprocess.CompletedProcess that the tests read."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _print_warning(message, category, filename, lineno, file=None, line=None):
    import sys
    import warnings

    (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


def run_cli(*args, cwd=None) -> CliResult:
    """`python -m metarl.app.cli ARGS` run in this process, without the ~2 s a fresh interpreter takes to
    import torch, MuJoCo and Meta-World: exit code, stdout and stderr as a subprocess would give them.

    As in a fresh process: sys.argv is the command line (a run records it), warnings print to stderr under
    Python's default filters (not pytest's recorder, so a test that counts stderr lines sees them),
    resources' warn-once set starts empty, an uncaught exception is a traceback on stderr and exit code 1,
    a SystemExit (argparse) its code. Put back afterwards: cwd, os.environ, sys.argv, signal handlers,
    torch's thread count and RNG, numpy's global RNG. For what only a process shows (signals, a crash,
    environment read at import, a lock held by another process, what worker processes print) keep a
    subprocess."""
    import contextlib
    import io
    import signal
    import sys
    import traceback
    import warnings

    from metarl.app import cli
    from metarl.training import resources

    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_env, old_argv = os.getcwd(), dict(os.environ), sys.argv
    old_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    old_threads, old_torch_rng, old_np_rng = torch.get_num_threads(), torch.get_rng_state(), np.random.get_state()
    old_warned = set(resources._warned)
    resources._warned.clear()
    try:
        if cwd is not None:
            os.chdir(cwd)
        sys.argv = [cli.__file__, *map(str, args)]
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.resetwarnings()  # a fresh interpreter's filters (python -W / PYTHONWARNINGS unset)
            warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
            warnings.showwarning = _print_warning
            try:
                rc = cli.main([str(a) for a in args])
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    rc = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    rc = 1
            except Exception:
                traceback.print_exc()
                rc = 1
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
        sys.argv = old_argv
        for s, h in old_signals.items():
            if h is not None:  # None: a handler not set from Python, which cannot be put back from here
                signal.signal(s, h)
        torch.set_num_threads(old_threads)
        torch.set_rng_state(old_torch_rng)
        np.random.set_state(old_np_rng)
        resources._warned.clear()
        resources._warned.update(old_warned)
    return CliResult(rc, out.getvalue(), err.getvalue())
