"""Run a shared prompt prefix once, then continue a batch of rows from its KV cache.

Every batched forward in selfexplain that shares leading tokens (few-shot examples, a chat
header, a clean prompt before a patch or a perturbation) goes through these few functions, so
there is one way to build the cache, one way to spread it over rows and one way to pass it to
the model. All of them are exact: a row continued from the cache gets the same numbers as a
forward of the whole row (tests/test_prefix_cache.py).
"""

from __future__ import annotations

import copy as _copy
import inspect
from typing import Sequence

import torch
from transformers import LlamaForCausalLM
from transformers.cache_utils import Cache

# transformers 5.24 renamed the forward argument (and output field) `past_key_values` to
# `cache`; the old name warns (FutureWarning) and 5.40 removes it. Checked once, on a model
# class whose signature is representative, so any version in the pinned range works.
CACHE_ARG: str = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def cache_input(cache: Cache | None) -> dict[str, Cache | None]:
    """The keyword argument that hands `cache` to a model forward: `model(..., **cache_input(c))`."""
    return {CACHE_ARG: cache}


def output_cache(output) -> Cache | None:
    """The KV cache a forward returned (named as this transformers version names it)."""
    return getattr(output, CACHE_ARG)


def shared_prefix_length(rows: Sequence[Sequence[int]], stop_token: int | None = None) -> int:
    """Leading tokens every row shares, ending before the first `stop_token` (an injected vector
    differs per row) and leaving each row at least its last token to run."""
    limit = min(len(r) for r in rows) - 1
    n = 0
    while n < limit and rows[0][n] != stop_token and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def prefix_cache(model: torch.nn.Module, input_ids: torch.Tensor | Sequence[int], **inputs) -> Cache:
    """The KV cache of one forward of `input_ids` (a token list: one row; or a (B, n) tensor,
    with `inputs` such as its attention mask). Only the last position's logits are computed: the
    head's output over a prefix is never read (Gemma's 262k vocabulary makes it costly), and
    the cache does not depend on it. Runs under the caller's grad mode, so gradients can flow
    back through the cache (training)."""
    if not isinstance(input_ids, torch.Tensor):
        device = model.get_input_embeddings().weight.device
        input_ids = torch.tensor([list(input_ids)], dtype=torch.long, device=device)
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **inputs)
    return output_cache(out)


def repeat_cache(cache: Cache, rows: int | torch.Tensor, keep: int | None = None, copy: bool = False) -> Cache:
    """`cache` spread over a batch: each cached row repeated `rows` times (an int), or the
    cached rows picked by index (a tensor, repeats allowed: one per continuation).

    `keep`: only the first `keep` cached tokens (a prefix of what was run). `copy`: leave
    `cache` untouched for reuse (a deep copy; not possible on a cache that requires grad).
    Otherwise the cache is changed in place and returned.
    """
    if copy:
        cache = _copy.deepcopy(cache)
    length = cache.get_seq_length()
    if keep is not None and keep < length:
        cache.crop(keep - length)  # transformers 5 crops by a negative count of tokens
    if isinstance(rows, torch.Tensor):
        cache.batch_select_indices(rows)
    else:
        cache.batch_repeat_interleave(rows)
    return cache


def after_prefix(n_prefix: int, attention_mask: torch.Tensor,
                 position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention mask and position ids of (left-padded) rows that continue after `n_prefix`
    cached tokens every row shares: the prefix is attended (ones in front) and positions
    count on from it. With no prefix (0) the mask is returned as it is."""
    if n_prefix:
        ones = torch.ones((attention_mask.shape[0], n_prefix), dtype=attention_mask.dtype,
                          device=attention_mask.device)
        attention_mask = torch.cat([ones, attention_mask], 1)
    return attention_mask, position_ids + n_prefix
