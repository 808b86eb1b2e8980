"""Benchmark 6, introspection (self-prediction with the 2x2 privileged-access design)."""

from selfexplain.benchmarks import register_benchmark
from selfexplain.benchmarks.introspection.benchmark import IntrospectionBenchmark

register_benchmark("introspection", IntrospectionBenchmark)
