"""The rationales benchmark (design.md benchmark 3): ranked words the subject's prediction relied on, vs human rationales."""

from selfexplain.benchmarks import register_benchmark
from selfexplain.benchmarks.rationales.benchmark import RationalesBenchmark

register_benchmark("rationales", RationalesBenchmark)
