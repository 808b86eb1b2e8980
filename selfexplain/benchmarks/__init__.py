"""Benchmark registry: `list_benchmarks()`, `get_benchmark(name)`, `register_benchmark`."""

from __future__ import annotations

from typing import Callable

from selfexplain.errors import ConfigError
from selfexplain.benchmarks.base import Benchmark, GroundTruth
from selfexplain.benchmarks.ablation.benchmark import AblationBenchmark
from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark
from selfexplain.benchmarks.rationales.benchmark import RationalesBenchmark

_REGISTRY: dict[str, Callable[[], Benchmark]] = {"patching": PatchingBenchmark, "ablation": AblationBenchmark,
                                                  "rationales": RationalesBenchmark}
PLANNED = ("simulatability", "features", "introspection")


def register_benchmark(name: str, factory: Callable[[], Benchmark]) -> None:
    """Add a user benchmark under `name`."""
    _REGISTRY[name] = factory


def list_benchmarks() -> dict[str, str]:
    return {name: factory().description for name, factory in _REGISTRY.items()}


def get_benchmark(name: str) -> Benchmark:
    if name not in _REGISTRY:
        hint = " (planned, not built yet)" if name in PLANNED else ""
        raise ConfigError(f"unknown benchmark '{name}'{hint}; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


__all__ = ["Benchmark", "GroundTruth", "get_benchmark", "list_benchmarks", "register_benchmark"]
