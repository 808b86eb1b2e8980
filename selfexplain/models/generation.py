"""Tokenizing explainer queries (with the vector placeholder) and batched greedy decoding."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from selfexplain.techniques.interventions import inject_at_placeholder, left_pad
from selfexplain.models.loading import LoadedModel, eval_mode
from selfexplain.records import VECTOR_MARKER, Record


@dataclass(frozen=True)
class Decoding:
    """How generating explainers write one benchmark's answers (the same for all of them)."""

    max_new_tokens: int = 8
    # > 0: never repeat an n-gram of the generated tokens. List answers (rationales) otherwise
    # collapse into "the, the, the" under greedy decoding.
    no_repeat_ngram: int = 0
    # The closed set of answers a record admits (e.g. "unchanged from X" and "changes to Y" for
    # every other option). When given, explainers answer with the candidate they find likeliest
    # instead of decoding freely; None (or None for a record): greedy decoding.
    candidates: Callable[[Record], list[str] | None] | None = None


def encode_query(loaded: LoadedModel, text: str, add_special_tokens: bool = True) -> list[int]:
    """Token ids of `text`, with each VECTOR_MARKER as exactly one placeholder token."""
    tok = loaded.tokenizer
    pieces = text.split(VECTOR_MARKER)
    ids: list[int] = tok(pieces[0], add_special_tokens=add_special_tokens)["input_ids"]
    for piece in pieces[1:]:
        ids.append(loaded.placeholder_id)
        if piece:
            ids.extend(tok(piece, add_special_tokens=False)["input_ids"])
    return ids


def encode_answer(loaded: LoadedModel, answer: str) -> list[int]:
    """Answer ids followed by EOS, so a trained explainer learns where to stop."""
    ids = loaded.tokenizer(answer, add_special_tokens=False)["input_ids"]
    return ids + [loaded.tokenizer.eos_token_id]


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by similar length: left padding stays minimal."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def greedy_generate(
    loaded: LoadedModel,
    prompts: Sequence[Sequence[int]],
    vectors: Sequence[torch.Tensor | None] | None = None,
    projector: torch.nn.Module | None = None,
    max_new_tokens: int = 8,
    no_repeat_ngram: int = 0,
    batch_size: int = 16,
    stop_at_newline: bool = True,
    prefix: Sequence[int] | None = None,
    prefix_vectors: torch.Tensor | None = None,
    progress=None,
) -> list[str]:
    """Greedy continuations of many prompts, batched by length with a KV cache.

    `prefix` (e.g. few-shot examples) precedes every prompt; it is run once and its KV cache
    shared by all batches. `prefix_vectors` are injected at its placeholders. `no_repeat_ngram`
    bans n-grams already generated (never ones of the prompt: answers may quote it).
    """
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    model, tok = loaded.model, loaded.tokenizer
    device = loaded.device
    eos = tok.eos_token_id
    outputs: list[str] = [""] * len(prompts)
    no_repeat = NoRepeatNGramLogitsProcessor(no_repeat_ngram) if no_repeat_ngram > 0 else None
    with eval_mode(model):
        prefix_cache, n_prefix = None, len(prefix or [])
        if prefix:
            with inject_at_placeholder(model, loaded.placeholder_id, prefix_vectors, projector), loaded.autocast():
                prefix_cache = model(input_ids=torch.tensor([list(prefix)], device=device),
                                     use_cache=True).past_key_values
        for idx in length_batches([len(p) for p in prompts], batch_size):
            batch = left_pad([prompts[i] for i in idx], tok.pad_token_id, device)
            vecs = None
            if vectors is not None and any(vectors[i] is not None for i in idx):
                # One prompt may hold several placeholders (few-shot): rows of [n_i, d].
                vecs = torch.cat([vectors[i].reshape(-1, vectors[i].shape[-1])
                                  for i in idx if vectors[i] is not None])
            generated = torch.empty((len(idx), 0), dtype=torch.long, device=device)
            done = torch.zeros(len(idx), dtype=torch.bool, device=device)
            mask, positions = batch.attention_mask, batch.position_ids + n_prefix
            past = None
            if prefix_cache is not None:
                past = copy.deepcopy(prefix_cache)
                past.batch_repeat_interleave(len(idx))
                mask = torch.cat([torch.ones((len(idx), n_prefix), dtype=mask.dtype, device=device), mask], dim=1)
            step_ids = batch.input_ids
            with inject_at_placeholder(model, loaded.placeholder_id, vecs, projector), loaded.autocast():
                for _ in range(max_new_tokens):
                    out = model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                                past_key_values=past, use_cache=True, logits_to_keep=1)
                    past = out.past_key_values
                    logits = out.logits[:, -1].float()
                    logits[:, loaded.placeholder_id] = float("-inf")  # never emit the vector slot
                    if no_repeat is not None:
                        logits = no_repeat(generated, logits)
                    nxt = logits.argmax(-1)
                    nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
                    generated = torch.cat([generated, nxt[:, None]], dim=1)
                    done |= nxt == eos
                    if stop_at_newline:
                        done |= torch.tensor(["\n" in tok.decode([int(t)]) for t in nxt], device=device)
                    if bool(done.all()):
                        break
                    step_ids = nxt[:, None]
                    mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
                    positions = positions[:, -1:] + 1
            for row, i in enumerate(idx):
                ids = [int(t) for t in generated[row] if int(t) != eos]
                text = tok.decode(ids, skip_special_tokens=True)
                outputs[i] = text.split("\n")[0].strip() if stop_at_newline else text
            if progress is not None:
                progress(len(idx))
    return outputs


@torch.no_grad()
def answer_logprobs(
    loaded: LoadedModel,
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[Sequence[int]]],
    vectors: Sequence[torch.Tensor | None] | None = None,
    projector: torch.nn.Module | None = None,
    batch_size: int = 8,
    prefix: Sequence[int] | None = None,
    prefix_vectors: torch.Tensor | None = None,
) -> list[list[float]]:
    """Log-probability of each candidate continuation (token ids) of each prompt.

    Each prompt runs once; its KV cache is repeated for its candidates, which run together in
    one right-padded pass. `prefix`/`prefix_vectors` as in `greedy_generate`. The result is the
    sum of the candidate's token log-probabilities: the likelihood of the whole answer.
    """
    model, tok, device = loaded.model, loaded.tokenizer, loaded.device
    scores: list[list[float]] = [[] for _ in prompts]
    with eval_mode(model):
        prefix_cache, n_prefix = None, len(prefix or [])
        if prefix:
            with inject_at_placeholder(model, loaded.placeholder_id, prefix_vectors, projector), loaded.autocast():
                prefix_cache = model(input_ids=torch.tensor([list(prefix)], device=device),
                                     use_cache=True).past_key_values
        for idx in length_batches([len(p) for p in prompts], batch_size):
            batch = left_pad([prompts[i] for i in idx], tok.pad_token_id, device)
            vecs = None
            if vectors is not None and any(vectors[i] is not None for i in idx):
                vecs = torch.cat([vectors[i].reshape(-1, vectors[i].shape[-1])
                                  for i in idx if vectors[i] is not None])
            # Every row gets the same number of candidate slots (repeats of its last one; ignored).
            n = max(len(candidates[i]) for i in idx)
            slots = [list(candidates[i]) + [candidates[i][-1]] * (n - len(candidates[i])) for i in idx]
            flat = [c for row in slots for c in row]
            width = max(len(c) for c in flat)
            cand_ids = torch.full((len(flat), width), tok.pad_token_id, dtype=torch.long)
            cand_mask = torch.zeros((len(flat), width), dtype=torch.long)
            for j, c in enumerate(flat):
                cand_ids[j, :len(c)] = torch.tensor(list(c), dtype=torch.long)
                cand_mask[j, :len(c)] = 1
            cand_ids, cand_mask = cand_ids.to(device), cand_mask.to(device)
            mask, positions = batch.attention_mask, batch.position_ids + n_prefix
            past = None
            if prefix_cache is not None:
                past = copy.deepcopy(prefix_cache)
                past.batch_repeat_interleave(len(idx))
                mask = torch.cat([torch.ones((len(idx), n_prefix), dtype=mask.dtype, device=device), mask], dim=1)
            with inject_at_placeholder(model, loaded.placeholder_id, vecs, projector), loaded.autocast():
                out = model(input_ids=batch.input_ids, attention_mask=mask, position_ids=positions,
                            past_key_values=past, use_cache=True, logits_to_keep=1)
                past = out.past_key_values
                past.batch_repeat_interleave(n)
                first = out.logits[:, -1].float().log_softmax(-1).repeat_interleave(n, dim=0)
                rest = model(input_ids=cand_ids,
                             attention_mask=torch.cat([mask.repeat_interleave(n, dim=0), cand_mask], dim=1),
                             position_ids=positions[:, -1:].repeat_interleave(n, dim=0) + 1
                             + torch.arange(width, device=device),
                             past_key_values=past, use_cache=True).logits.float().log_softmax(-1)
            # Token j of a candidate is predicted by the prompt's last position (j = 0) or by
            # the candidate's token j - 1.
            logp = torch.cat([first[:, None], rest[:, :-1]], dim=1).gather(-1, cand_ids[:, :, None])[..., 0]
            totals = (logp * cand_mask).sum(-1).tolist()
            for row, i in enumerate(idx):
                scores[i] = totals[row * n: row * n + len(candidates[i])]
    return scores


def pick_answers(
    loaded: LoadedModel,
    prompts: Sequence[Sequence[int]],
    records: Sequence[Record],
    decoding: Decoding,
    terminator: Sequence[int],
    vectors: Sequence[torch.Tensor | None] | None = None,
    projector: torch.nn.Module | None = None,
    prefix: Sequence[int] | None = None,
    prefix_vectors: torch.Tensor | None = None,
) -> list[tuple[str, int]]:
    """Each record's answer and the sequences run to get it: the likeliest of its candidates
    (`decoding.candidates`, each followed by `terminator`, the explainer's end of an answer) or,
    for records without candidates, greedy decoding."""
    cands = [decoding.candidates(r) if decoding.candidates else None for r in records]
    ranked = [i for i, c in enumerate(cands) if c]
    free = [i for i, c in enumerate(cands) if not c]
    out: list[tuple[str, int]] = [("", 0)] * len(records)
    vecs = (lambda idx: [vectors[i] for i in idx]) if vectors is not None else (lambda idx: None)
    if ranked:
        ids = [[loaded.tokenizer(" " + c, add_special_tokens=False)["input_ids"] + list(terminator)
                for c in cands[i]] for i in ranked]
        scores = answer_logprobs(loaded, [prompts[i] for i in ranked], ids, vecs(ranked), projector,
                                 prefix=prefix, prefix_vectors=prefix_vectors)
        for i, s in zip(ranked, scores):
            out[i] = (cands[i][max(range(len(s)), key=s.__getitem__)], 1 + len(s))
    if free:
        texts = greedy_generate(loaded, [prompts[i] for i in free], vecs(free), projector,
                                max_new_tokens=decoding.max_new_tokens, no_repeat_ngram=decoding.no_repeat_ngram,
                                prefix=prefix, prefix_vectors=prefix_vectors)
        for i, t in zip(free, texts):
            out[i] = (t, 1 + len(loaded.tokenizer(t)["input_ids"]))
    return out
