"""Task distributions and the vectorized simulator."""
from envs.benchmarks import BENCHMARKS, Benchmark, EnvFactory, make_benchmark
from envs.vector import TaskVectorEnv

__all__ = ["BENCHMARKS", "Benchmark", "EnvFactory", "make_benchmark", "TaskVectorEnv"]
