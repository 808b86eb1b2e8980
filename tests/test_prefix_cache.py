"""The prefix-KV-cache helper: rows continued from a shared prefix's cache get the logits of
full-sequence forwards (float64 tiny model, so equality is tight), and the cache is passed the
way this transformers version expects (no deprecation warning)."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from selfexplain.models import prefix_cache as pc
from selfexplain.techniques.interventions import left_pad

PREFIX = [5, 9, 13, 7, 21, 4, 30, 11]
TAILS = [[17, 3, 25], [8], [40, 2, 6, 19, 12]]


@pytest.fixture()
def model64(tokenizer):
    from conftest import make_model

    return make_model(len(tokenizer)).double()


def full_last_logits(model, rows):
    with torch.no_grad():
        return torch.stack([model(input_ids=torch.tensor([r])).logits[0, -1] for r in rows])


def test_cache_argument_matches_the_installed_transformers():
    from transformers import LlamaForCausalLM

    assert pc.CACHE_ARG in inspect.signature(LlamaForCausalLM.forward).parameters
    assert pc.cache_input(None) == {pc.CACHE_ARG: None}


def test_rows_continued_from_a_repeated_prefix_equal_full_forwards(model64, tokenizer):
    rows = [PREFIX + t for t in TAILS]
    want = full_last_logits(model64, rows)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # `past_key_values` is deprecated ...
        cache = pc.prefix_cache(model64, PREFIX)
        assert cache.get_seq_length() == len(PREFIX)
        batch = left_pad(TAILS, tokenizer.pad_token_id)
        mask, positions = pc.after_prefix(len(PREFIX), batch.attention_mask, batch.position_ids)
        assert mask.shape == (3, len(PREFIX) + 5) and bool(mask[:, :len(PREFIX)].all())
        assert positions[1, -1] == len(PREFIX)  # the one-token row's position counts on from the prefix
        out = model64(input_ids=batch.input_ids, attention_mask=mask, position_ids=positions,
                      **pc.cache_input(pc.repeat_cache(cache, len(TAILS), copy=True)), use_cache=True)
    got = out.logits[:, -1]
    assert torch.allclose(got, want, atol=1e-10, rtol=0)
    assert pc.output_cache(out).get_seq_length() == len(PREFIX) + 5
    assert cache.get_seq_length() == len(PREFIX) and cache.layers[0].keys.shape[0] == 1  # copy: untouched
    # A wrong position offset or a prefix row mix-up would not pass:
    assert not torch.allclose(got, full_last_logits(model64, [PREFIX[:-1] + t for t in TAILS]), atol=1e-3)


def test_select_and_keep_pick_rows_and_crop_tokens(model64):
    a, b = PREFIX + [17], [3, 25, 8, 40, 2, 6, 19, 12, 33]
    with torch.no_grad():
        cache = pc.prefix_cache(model64, torch.tensor([a[:7], b[:7]]))
        picked = pc.repeat_cache(cache, torch.tensor([1, 0, 1]), keep=4, copy=True)  # rows b, a, b; 4 tokens
        assert picked.get_seq_length() == 4 and picked.layers[0].keys.shape[0] == 3
        assert cache.get_seq_length() == 7 and cache.layers[0].keys.shape[0] == 2
        out = model64(input_ids=torch.tensor([b[4:], a[4:], b[4:]]), position_ids=torch.arange(4, 9).expand(3, -1),
                      **pc.cache_input(picked))
    assert torch.allclose(out.logits[:, -1], full_last_logits(model64, [b, a, b]), atol=1e-10, rtol=0)


def test_gradients_flow_through_the_prefix(model64):
    rows = [PREFIX + t for t in TAILS[:2]]
    emb = model64.get_input_embeddings().weight
    full = sum(model64(input_ids=torch.tensor([r])).logits[0, -1, 3] for r in rows)
    (want,) = torch.autograd.grad(full, emb)
    cache = pc.repeat_cache(pc.prefix_cache(model64, PREFIX), 2)  # in place: a cache with grad can't be copied
    batch = left_pad(TAILS[:2], 0)
    mask, positions = pc.after_prefix(len(PREFIX), batch.attention_mask, batch.position_ids)
    out = model64(input_ids=batch.input_ids, attention_mask=mask, position_ids=positions, **pc.cache_input(cache))
    (got,) = torch.autograd.grad(out.logits[:, -1, 3].sum(), emb)
    assert got[PREFIX].abs().sum() > 0  # the prefix tokens' embeddings get gradient through the cache
    # Llama's RMSNorm computes in float32 even in a float64 model, so gradients summed over the
    # repeated rows before (cache) or after (full rows) the prefix agree to float32 rounding.
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


def test_shared_prefix_length():
    assert pc.shared_prefix_length([[1, 2, 3, 9, 4], [1, 2, 3, 9, 5]], stop_token=9) == 3
    assert pc.shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # every row keeps a token to run
    assert pc.shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert pc.shared_prefix_length([[5, 2], [1, 2]]) == 0
