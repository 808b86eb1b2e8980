"""selfexplain: train language models to explain themselves, and measure whether it beats
human-centric interpretability.

Front door::

    import selfexplain as se
    se.list_benchmarks(); se.list_explainers(); se.list_models()
    subject = se.load_model("smollm2")
    results = se.run(se.RunConfig())  # the default suite, quick mode
"""

__version__ = "0.1.0"

from selfexplain.benchmarks import get_benchmark, list_benchmarks, register_benchmark  # noqa: E402
from selfexplain.config import RunConfig  # noqa: E402
from selfexplain.explainers import list_explainers  # noqa: E402
from selfexplain.models.loading import list_models, load_model, wrap_model  # noqa: E402


def run(config: "RunConfig") -> dict:
    """Run (or resume) a benchmark suite; returns the results dict also saved in the run dir.
    With --seeds or --train-sizes set, a study (runs/study.py): its pooled results (study.json).
    With shard="I/N", that shard's part (a summary); `merge` the N shards for the results."""
    from selfexplain.runs.run import Run
    from selfexplain.runs.study import Study, is_study

    return Study(config).execute() if is_study(config) else Run(config).execute()


def merge(shards: list, output_dir: str | None = None, run: str = "") -> dict:
    """Combine the shard directories of a run made with RunConfig(shard="I/N") (every I once)
    into the run itself; returns its results, as `run` returns the unsharded run's (docs/scale.md).
    output_dir: where to write it (default: the shards' output_dir)."""
    from selfexplain.runs.merge import merge_shards

    return merge_shards(shards, output_dir, run)


__all__ = ["RunConfig", "get_benchmark", "list_benchmarks", "list_explainers", "list_models",
           "load_model", "merge", "register_benchmark", "run", "wrap_model"]
