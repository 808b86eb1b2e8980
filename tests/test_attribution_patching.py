"""Attribution patching: the gradient estimate equals the measured effect of a small patch
(first order), and the baseline runs on the patching benchmark's full test set."""

from __future__ import annotations

import pytest
import torch

from selfexplain import RunConfig, run
from selfexplain.benchmarks.patching.attribution_patching import patch_effect_estimates
from selfexplain.techniques.interventions import Patch, patch_residual, record_residual


def test_estimate_is_the_first_order_effect_of_a_block_patch(tiny):
    """Patch every layer of a block at one token with clean + eps * (cf - clean): the change of
    the logit difference divided by eps tends to the estimate as eps -> 0."""
    torch.manual_seed(0)
    tiny.model.double()  # fewer rounding errors in the finite differences (RMSNorm still runs in fp32)
    vocab = tiny.model.config.vocab_size
    ids = torch.randint(5, vocab, (12,)).tolist()
    cf_ids = torch.randint(5, vocab, (12,)).tolist()
    position, blocks, target, rival = 6, [(1, 2), (0, 0), (2, 3), (3, 3)], 7, 11
    layers = list(range(tiny.num_layers))
    with torch.no_grad(), record_residual(tiny.model, layers) as cf:
        tiny.model(input_ids=torch.tensor([cf_ids]))
    cf_values = {layer: cf[layer][0, position].clone() for layer in layers}
    with torch.no_grad(), record_residual(tiny.model, layers) as clean:
        base = tiny.model(input_ids=torch.tensor([ids])).logits[0, -1]
    clean_values = {layer: clean[layer][0, position].clone() for layer in layers}
    m0 = float(base[target] - base[rival])
    estimates, gap = patch_effect_estimates(tiny, ids, position, blocks, cf_values, target, rival)
    assert gap == pytest.approx(m0, abs=1e-5)
    eps = 1e-3

    def m(scale: float, first: int, last: int) -> float:
        patches = [Patch(0, layer, position, clean_values[layer] + scale * (cf_values[layer] - clean_values[layer]))
                   for layer in range(first, last + 1)]
        with torch.no_grad(), patch_residual(tiny.model, patches):
            logits = tiny.model(input_ids=torch.tensor([ids])).logits[0, -1]
        return float(logits[target] - logits[rival])

    for (first, last), estimate in zip(blocks, estimates):
        measured = (m(eps, first, last) - m(-eps, first, last)) / (2 * eps)  # central difference: O(eps^2)
        assert measured == pytest.approx(estimate, rel=2e-3, abs=2e-4)
    assert min(abs(e) for e in estimates[:3]) > 1e-3  # real effects, not zeros
    # the last layer's output at an earlier token reaches the last position through no attention
    # layer: patching only it changes nothing, and its gradient is exactly zero
    assert estimates[3] == 0.0


@pytest.fixture(scope="module", autouse=True)
def random_answers_allowed():
    from selfexplain.benchmarks import register_benchmark
    from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark

    register_benchmark("patching", lambda: PatchingBenchmark(option_answers_only=False))
    yield
    register_benchmark("patching", PatchingBenchmark)


def test_attribution_patching_baseline_runs_on_every_test_item(tiny_dirs, tmp_path):
    cfg = RunConfig(subject=str(tiny_dirs["subject"]), output_dir=str(tmp_path), n_train=24, n_test=8, epochs=1,
                    seed=1, explainers="attribution-patching,never-changes")
    bench = run(cfg)["benchmarks"]["patching"]
    s = bench["explainers"]["attribution-patching"]
    assert s["family"] == "post-hoc" and s["n_items"] == 8 and not s["subsample"]
    assert s["info"]["n_fit"] == 24 and s["info"]["method"] == "attribution_patching"
    assert 0.5 <= s["info"]["fit_balanced_accuracy"] <= 1.0  # the fitted cut is at least chance on its own fit
    assert s["cost"]["forward_passes"] == 2 and s["cost"]["seconds"] > 0
