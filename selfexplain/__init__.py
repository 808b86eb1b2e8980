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
    With --seeds or --train-sizes set, a study (runs/study.py): its pooled results (study.json)."""
    from selfexplain.runs.run import Run
    from selfexplain.runs.study import Study, is_study

    return Study(config).execute() if is_study(config) else Run(config).execute()


__all__ = ["RunConfig", "get_benchmark", "list_benchmarks", "list_explainers", "list_models",
           "load_model", "register_benchmark", "run", "wrap_model"]
