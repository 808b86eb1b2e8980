"""Benchmark registry: `list_benchmarks()`, `get_benchmark(name)`, `register_benchmark`.

Built-in benchmarks are the sub-packages of this package: each registers itself when imported
(its `__init__` calls `register_benchmark`); the registry imports them all on first use. Other
packages register theirs by calling `register_benchmark` or through the `selfexplain.benchmarks`
entry-point group. Nothing here knows a benchmark by name.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Callable

from selfexplain.benchmarks.base import BaselineSpec, Benchmark, GroundTruth, MetricSpec
from selfexplain.errors import ConfigError
from selfexplain.explainers.families import FAMILIES

_REGISTRY: dict[str, Callable[[], Benchmark]] = {}
_DISCOVERED = False


def register_benchmark(name: str, factory: Callable[[], Benchmark]) -> None:
    """Add a benchmark under `name`; its declaration is checked now (one primary metric, known
    families, baseline names unique and distinct from the generic explainers)."""
    check_declaration(name, factory())
    _REGISTRY[name] = factory


def check_declaration(name: str, bench: Benchmark) -> None:
    from selfexplain.explainers import GENERIC_EXPLAINERS

    if bench.name != name:
        raise ValueError(f"benchmark registered as '{name}' declares name '{bench.name}'")
    if bench.answer_format not in ("closed", "ranking", "free"):
        raise ValueError(f"benchmark '{name}': answer_format must be closed, ranking or free")
    bench.primary_metric  # noqa: B018 - raises unless exactly one metric is primary
    names = [b.name for b in bench.baselines()]
    clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(GENERIC_EXPLAINERS)))
    if clash:
        raise ValueError(f"benchmark '{name}': baseline names {clash} repeat or shadow a generic explainer")
    bad = [b.name for b in bench.baselines() if b.family not in FAMILIES]
    if bad:
        raise ValueError(f"benchmark '{name}': baselines {bad} name no known family ({', '.join(FAMILIES)})")


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.ispkg:
            importlib.import_module(f"{__name__}.{info.name}")
    for ep in entry_points(group="selfexplain.benchmarks"):
        ep.load()


def list_benchmarks() -> dict[str, str]:
    _discover()
    return {name: factory().description for name, factory in _REGISTRY.items()}


def get_benchmark(name: str) -> Benchmark:
    _discover()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown benchmark '{name}'; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


def default_suite() -> list[str]:
    """What `selfexplain run` runs without --benchmarks: the benchmarks declaring `default_suite`."""
    _discover()
    return [name for name, factory in _REGISTRY.items() if factory().default_suite]


def all_baselines() -> dict[str, list[tuple[str, BaselineSpec]]]:
    """Every registered benchmark's baselines by name: [(benchmark, spec), ...]."""
    _discover()
    out: dict[str, list[tuple[str, BaselineSpec]]] = {}
    for name, factory in _REGISTRY.items():
        for spec in factory().baselines():
            out.setdefault(spec.name, []).append((name, spec))
    return out


__all__ = ["BaselineSpec", "Benchmark", "GroundTruth", "MetricSpec", "all_baselines", "get_benchmark",
           "list_benchmarks", "register_benchmark"]
