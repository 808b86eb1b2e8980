"""The ablation benchmark (design.md benchmark 2): would removing a hint change the subject's answer?"""

from selfexplain.benchmarks import register_benchmark
from selfexplain.benchmarks.ablation.benchmark import AblationBenchmark

register_benchmark("ablation", AblationBenchmark)
