"""The patching benchmark (design.md benchmark 1): predict the subject's answer after an activation patch."""

from selfexplain.benchmarks import register_benchmark
from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark

register_benchmark("patching", PatchingBenchmark)
