"""Task distributions and the vectorized simulator."""
from metarl.envs.suites import BENCHMARKS, Benchmark, EnvFactory, make_benchmark
from metarl.envs.vector import TaskVectorEnv

__all__ = ["BENCHMARKS", "Benchmark", "EnvFactory", "make_benchmark", "TaskVectorEnv"]
