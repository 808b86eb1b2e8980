"""Benchmark 5, features: the subject describes concept directions of its own residual stream."""

from selfexplain.benchmarks import register_benchmark
from selfexplain.benchmarks.features.benchmark import FeaturesBenchmark

register_benchmark("features", FeaturesBenchmark)
