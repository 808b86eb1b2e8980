"""ERASER faithfulness formulas against hand-computed cases; class probabilities on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from selfexplain.errors import ConfigError, DataError
from selfexplain.benchmarks.rationales.faithfulness import (AOPC_BINS, aopc, bin_size, class_probabilities, comprehensiveness,
                                      normalize, only_rationale, predicted_class, probability_drop,
                                      random_rationales, sufficiency, top_k_positions, without_rationale)


# ----- formulas -----------------------------------------------------------------------------
@pytest.mark.parametrize("p_full, p_without, expected", [
    (0.9, 0.2, 0.7), (0.6, 0.6, 0.0), (0.5, 0.8, -0.3), (1.0, 0.0, 1.0)])
def test_comprehensiveness(p_full, p_without, expected):
    assert comprehensiveness(p_full, p_without) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("p_full, p_only, expected", [
    (0.9, 0.85, 0.05), (0.7, 0.9, -0.2), (0.55, 0.0, 0.55), (0.4, 0.4, 0.0)])
def test_sufficiency(p_full, p_only, expected):
    assert sufficiency(p_full, p_only) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("p_full, p_bins, expected", [
    # drops 0.1, 0.3, 0.4, 0.6, 0.8 -> 2.2 / 5
    (0.9, [0.8, 0.6, 0.5, 0.3, 0.1], 0.44),
    # sufficiency-like: keeping more restores p; drops 0.5, 0.3, 0.1, 0.0, -0.1 -> 0.8 / 5
    (0.7, [0.2, 0.4, 0.6, 0.7, 0.8], 0.16),
    (0.5, [0.5] * 5, 0.0)])
def test_aopc_is_the_mean_over_bins(p_full, p_bins, expected):
    assert AOPC_BINS == (0.01, 0.05, 0.10, 0.20, 0.50)
    assert aopc(p_full, p_bins) == pytest.approx(expected, abs=1e-12)


def test_aopc_needs_one_value_per_bin():
    with pytest.raises(ConfigError):
        aopc(0.9, [0.1, 0.2])
    assert aopc(0.9, [0.3, 0.6], bins=(0.1, 0.5)) == pytest.approx(0.45)


@pytest.mark.parametrize("full, perturbed, cls, drop", [
    ([0.2, 0.7, 0.1], [0.5, 0.3, 0.2], 1, 0.4),
    ([0.4, 0.4, 0.2], [0.1, 0.6, 0.3], 0, 0.3),  # tie -> the lower class index
    ([0.1, 0.9], [0.05, 0.95], 1, -0.05)])
def test_probability_drop_uses_the_predicted_class(full, perturbed, cls, drop):
    assert predicted_class(full) == cls
    assert predicted_class(torch.tensor(full)) == cls
    assert probability_drop(full, perturbed) == pytest.approx(drop, abs=1e-12)


# ----- choosing rationales ------------------------------------------------------------------
@pytest.mark.parametrize("fraction, n, k", [
    (0.01, 10, 1), (0.01, 100, 1), (0.01, 101, 2), (0.05, 40, 2), (0.1, 30, 3), (0.2, 7, 2),
    (0.5, 7, 4), (0.5, 1, 1), (1.0, 5, 5), (0.5, 0, 0)])
def test_bin_size(fraction, n, k):
    assert bin_size(fraction, n) == k


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_bin_size_rejects_bad_fractions(fraction):
    with pytest.raises(ConfigError):
        bin_size(fraction, 10)


@pytest.mark.parametrize("fraction, expected", [
    (0.2, [1]), (0.4, [1, 3]), (0.6, [1, 2, 3]), (0.8, [1, 2, 3, 4]), (1.0, [1, 2, 3, 4, 5])])
def test_top_k_positions_breaks_ties_by_position(fraction, expected):
    scores = [9.0, 5.0, 3.0, 5.0, 3.0, 1.0, 8.0]  # 0 and 6 are not candidates
    assert top_k_positions(scores, fraction, [5, 4, 3, 2, 1]) == expected


def test_top_k_positions_checks_range():
    with pytest.raises(DataError):
        top_k_positions([1.0, 2.0], 0.5, [0, 2])


def test_random_rationales_are_seeded_and_sized():
    positions = list(range(10, 40))
    a = random_rationales(positions, 5, 20, seed=3)
    assert a == random_rationales(list(reversed(positions)), 5, 20, seed=3)
    assert a != random_rationales(positions, 5, 20, seed=4)
    assert len(a) == 20 and len({tuple(r) for r in a}) > 1
    for r in a:
        assert len(r) == 5 == len(set(r)) and r == sorted(r) and set(r) <= set(positions)
    assert random_rationales(positions, 0, 2, seed=0) == [[], []]
    assert random_rationales(positions, 30, 1, seed=0) == [positions]
    with pytest.raises(ConfigError):
        random_rationales(positions, 31, 1, seed=0)


# ----- normalisation ------------------------------------------------------------------------
def test_normalize_difference_and_ratio():
    n = normalize(0.5, [0.1, 0.3])
    assert (n.raw, n.n_random) == (0.5, 2)
    assert n.random_mean == pytest.approx(0.2) and n.random_std == pytest.approx(0.1)
    assert n.difference == pytest.approx(0.3) and n.ratio == pytest.approx(2.5)
    worse = normalize(-0.05, [0.1, 0.3, 0.2])  # e.g. sufficiency: below random is better
    assert worse.difference == pytest.approx(-0.25) and worse.ratio == pytest.approx(-0.25)
    flat = normalize(0.2, [0.0, 0.0])
    assert flat.difference == pytest.approx(0.2) and math.isnan(flat.ratio) and flat.random_std == 0.0
    with pytest.raises(ConfigError):
        normalize(0.2, [])


# ----- perturbed inputs ---------------------------------------------------------------------
IDS = [10, 11, 12, 13, 14, 15, 16]


@pytest.mark.parametrize("strategy, baseline, without, only", [
    ("delete", None, [10, 11, 13, 15, 16], [10, 12, 14, 16]),
    ("replace", 0, [10, 11, 0, 13, 0, 15, 16], [10, 0, 12, 0, 14, 0, 16])])
def test_without_and_only_rationale(strategy, baseline, without, only):
    rationale, scope = [2, 4], [1, 2, 3, 4, 5]  # 0 and 6: template tokens, never removed
    assert without_rationale(IDS, rationale, strategy, baseline) == without
    assert only_rationale(IDS, rationale, scope, strategy, baseline) == only


def test_only_rationale_scope_defaults_to_everything():
    assert only_rationale(IDS, [0, 6]) == [10, 16]
    assert only_rationale(IDS, [3], strategy="replace", baseline_token=1) == [1, 1, 1, 13, 1, 1, 1]
    assert without_rationale(IDS, []) == IDS


def test_perturbation_errors():
    with pytest.raises(ConfigError):
        without_rationale(IDS, [1], strategy="mask")
    with pytest.raises(ConfigError):
        without_rationale(IDS, [1], strategy="replace")
    with pytest.raises(DataError):
        without_rationale(IDS, [7])
    with pytest.raises(DataError):
        only_rationale(IDS, [1], scope=[-1, 1])


# ----- class probabilities on the tiny model ------------------------------------------------
def _prompts(vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(4, vocab, (n,), generator=gen).tolist() for n in (5, 9, 3, 12, 7, 1)]


def test_class_probabilities_match_a_manual_softmax(tiny):
    prompts = _prompts(len(tiny.tokenizer))
    classes = [7, 20, 33]
    got = class_probabilities(tiny, prompts, classes, batch_size=4)
    assert got.dtype == torch.float32 and got.shape == (len(prompts), 3)
    with torch.no_grad():
        for row, ids in zip(got, prompts):
            logits = tiny.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            assert torch.allclose(row, torch.softmax(logits[classes], -1), atol=1e-6)
    assert torch.allclose(got.sum(-1), torch.ones(len(prompts)), atol=1e-6)


def test_class_probabilities_batched_equals_one_at_a_time(tiny):
    prompts = _prompts(len(tiny.tokenizer))
    batched = class_probabilities(tiny, prompts, [5, 6], batch_size=len(prompts))
    single = torch.cat([class_probabilities(tiny, [p], [5, 6], batch_size=1) for p in prompts])
    assert torch.allclose(batched, single, atol=1e-6)
    assert tiny.model.training is False


def test_a_shared_prefix_runs_once_with_the_same_numbers(tiny):
    """Perturbations of one input share its first tokens: they run once (KV cache) for the
    whole batch, with the same probabilities as plain full forwards, for single- and multi-token
    options, and with rows of different lengths (left padding after the prefix)."""
    from selfexplain.benchmarks.rationales.faithfulness import MIN_SHARED_PREFIX, SUBJECT_LAYOUT
    from selfexplain.models.generation import option_logprobs
    from selfexplain.models.prefix_cache import shared_prefix_length as common_prefix

    gen = torch.Generator().manual_seed(1)
    head = torch.randint(4, len(tiny.tokenizer), (MIN_SHARED_PREFIX + 4,), generator=gen).tolist()
    prompts = [head + torch.randint(4, len(tiny.tokenizer), (n,), generator=gen).tolist() for n in (6, 1, 9, 3)]
    assert common_prefix(prompts) == len(head)
    assert common_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # every row keeps one token to run
    calls = []
    hook = tiny.model.model.embed_tokens.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    try:
        batched = class_probabilities(tiny, prompts, [5, 6, 9], batch_size=4)
    finally:
        hook.remove()
    assert calls[0] == (1, len(head))  # the prefix, once
    assert calls[1] == (4, 9)  # then only the rows' own tokens
    with torch.no_grad():
        for row, ids in zip(batched, prompts):
            logits = tiny.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            assert torch.allclose(row, torch.softmax(logits[[5, 6, 9]], -1), atol=1e-5)
    options = [[5, 8, 2], [6], [9, 9]]
    shared = option_logprobs(tiny, prompts, [options] * len(prompts), batch_size=4, layout=SUBJECT_LAYOUT)
    single = [option_logprobs(tiny, [p], [options], batch_size=1, layout=SUBJECT_LAYOUT)[0] for p in prompts]
    for a, b in zip(shared, single):
        assert torch.allclose(a, b, atol=1e-5)


def test_class_probabilities_errors(tiny):
    with pytest.raises(ConfigError):
        class_probabilities(tiny, [[5, 6]], [5, 5])
    with pytest.raises(ConfigError):
        class_probabilities(tiny, [[5, 6]], [5, 10 ** 6])
    with pytest.raises(DataError):
        class_probabilities(tiny, [[5, 6], []], [5, 6])
    assert class_probabilities(tiny, [], [5, 6]).shape == (0, 2)
