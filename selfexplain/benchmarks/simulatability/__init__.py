"""Benchmark 4, simulatability (natural-language explanations vs human explanations, e-SNLI and CoS-E)."""

from selfexplain.benchmarks import register_benchmark
from selfexplain.benchmarks.simulatability.benchmark import SimulatabilityBenchmark

register_benchmark("simulatability", SimulatabilityBenchmark)
