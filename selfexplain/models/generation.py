"""Tokenizing explainer queries (with the vector placeholder), batched greedy decoding, and
scoring candidate continuations by log-likelihood (explainer answers and subject class options)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from transformers.cache_utils import Cache

from selfexplain.errors import ConfigError
from selfexplain.techniques.interventions import inject_at_placeholder, left_pad
from selfexplain.models.loading import LoadedModel, eval_mode
from selfexplain.models.prefix_cache import (after_prefix, cache_input, output_cache, prefix_cache, repeat_cache,
                                             shared_prefix_length)
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
        shared, n_prefix = _run_prefix(loaded, prefix, prefix_vectors, projector)
        for idx in length_batches([len(p) for p in prompts], batch_size):
            batch = left_pad([prompts[i] for i in idx], tok.pad_token_id, device)
            vecs = _batch_vectors(vectors, idx)
            generated = torch.empty((len(idx), 0), dtype=torch.long, device=device)
            done = torch.zeros(len(idx), dtype=torch.bool, device=device)
            mask, positions = after_prefix(n_prefix, batch.attention_mask, batch.position_ids)
            past = repeat_cache(shared, len(idx), copy=True) if shared is not None else None
            step_ids = batch.input_ids
            with inject_at_placeholder(model, loaded.placeholder_id, vecs, projector), loaded.autocast():
                for _ in range(max_new_tokens):
                    out = model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                                **cache_input(past), use_cache=True, logits_to_keep=1)
                    past = output_cache(out)
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


def _run_prefix(loaded: LoadedModel, prefix: Sequence[int] | None, prefix_vectors: torch.Tensor | None,
                projector: torch.nn.Module | None) -> tuple[Cache | None, int]:
    """The KV cache of `prefix` (vectors injected at its placeholders) and its length; (None, 0)
    without one. Run once per call and copied for each batch."""
    if not prefix:
        return None, 0
    with inject_at_placeholder(loaded.model, loaded.placeholder_id, prefix_vectors, projector), loaded.autocast():
        cache = prefix_cache(loaded.model, torch.tensor([list(prefix)], device=loaded.device))
    return cache, len(prefix)


def _batch_vectors(vectors: Sequence[torch.Tensor | None] | None, idx: Sequence[int]) -> torch.Tensor | None:
    """The vectors of a batch's prompts, one row per placeholder in row-major order (a prompt
    may hold several, e.g. few-shot: rows of [n_i, d]); None when the batch has none."""
    if vectors is None or all(vectors[i] is None for i in idx):
        return None
    return torch.cat([vectors[i].reshape(-1, vectors[i].shape[-1]) for i in idx if vectors[i] is not None])


@dataclass(frozen=True)
class ScoreLayout:
    """How `option_logprobs` batches its forwards. Any layout gives the same log-likelihoods up
    to float rounding; each caller keeps its own so that stored numbers stay bit-identical."""

    # Batch order: prompts sorted by length, shortest (False) or longest (True) first.
    longest_first: bool = False
    # > 0: a batch whose prompts share at least this many leading tokens runs them once.
    min_shared_prefix: int = 0
    # "padded": every option of a prompt continues from its cache, right-padded, one slot per
    # option (explainer answers). "tails": only options of several tokens continue, their first
    # token is read from the prompt's forward (subject class options).
    continuation: Literal["padded", "tails"] = "padded"


ANSWER_LAYOUT = ScoreLayout()


def prompt_logits(loaded: LoadedModel, rows: Sequence[Sequence[int]], prefix: Cache | None = None,
                  n_prefix: int = 0, min_shared_prefix: int = 0,
                  use_cache: bool = False) -> tuple[torch.Tensor, Cache | None, torch.Tensor, torch.Tensor]:
    """One left-padded forward of `rows`, last position only: (logits (B, V) float32, the KV cache
    or None, the attention mask over cache + rows, the position ids of the rows' tokens).

    `prefix` (the cache of `n_prefix` tokens preceding every row) is copied for the rows;
    otherwise, with `min_shared_prefix`, leading tokens all rows share run once for all.
    Runs in the caller's contexts (eval mode, autocast, vector injection)."""
    past = None
    if prefix is not None:
        past = repeat_cache(prefix, len(rows), copy=True)
    elif min_shared_prefix and len(rows) > 1:
        n_prefix = shared_prefix_length(rows)
        if n_prefix >= min_shared_prefix:
            head = torch.tensor([list(rows[0][:n_prefix])], device=loaded.device)
            past = repeat_cache(prefix_cache(loaded.model, head), len(rows))
            rows = [r[n_prefix:] for r in rows]
        else:
            n_prefix = 0
    batch = left_pad(rows, loaded.tokenizer.pad_token_id, loaded.device)
    mask, positions = after_prefix(n_prefix, batch.attention_mask, batch.position_ids)
    out = loaded.model(input_ids=batch.input_ids, attention_mask=mask, position_ids=positions,
                       **cache_input(past), use_cache=use_cache, logits_to_keep=1)
    return out.logits[:, -1].float(), output_cache(out) if use_cache else None, mask, positions


@torch.no_grad()
def option_logprobs(
    loaded: LoadedModel,
    prompts: Sequence[Sequence[int]],
    options: Sequence[Sequence[Sequence[int]]],
    vectors: Sequence[torch.Tensor | None] | None = None,
    projector: torch.nn.Module | None = None,
    batch_size: int = 8,
    prefix: Sequence[int] | None = None,
    prefix_vectors: torch.Tensor | None = None,
    layout: ScoreLayout = ANSWER_LAYOUT,
) -> list[torch.Tensor]:
    """Per prompt, a float32 CPU tensor (len(options[i]),): the summed log-probability of each
    option's token sequence right after prompt i, sum_j log p(o_j | prompt, o_<j): the
    likelihood of a whole answer. Prompts may have different options.

    Each prompt runs once (left-padded batches sorted by length, last position only); options
    then continue from its KV cache, all of a batch's (prompt, option) rows in one more
    forward. `prefix` (e.g. few-shot examples, `prefix_vectors` injected at its placeholders)
    precedes every prompt and runs once; `vectors` are injected at the prompts' placeholders,
    `projector` maps them (as in `greedy_generate`). `layout`: see ScoreLayout.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if len(options) != len(prompts):
        raise ConfigError(f"need one option list per prompt: {len(prompts)} prompts, {len(options)} lists")
    model = loaded.model
    opts = [[[int(t) for t in o] for o in row] for row in options]
    lengths = [len(p) for p in prompts]
    if layout.longest_first:
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        batches = [order[lo:lo + batch_size] for lo in range(0, len(order), batch_size)]
    else:
        batches = length_batches(lengths, batch_size)
    out: list[torch.Tensor] = [torch.empty(0)] * len(prompts)
    with eval_mode(model):
        shared, n_prefix = _run_prefix(loaded, prefix, prefix_vectors, projector)
        for idx in batches:
            rows = [prompts[i] for i in idx]
            row_opts = [opts[i] for i in idx]
            with inject_at_placeholder(model, loaded.placeholder_id, _batch_vectors(vectors, idx), projector), \
                    loaded.autocast():
                if layout.continuation == "padded":
                    scores = _padded_continuations(loaded, rows, row_opts, shared, n_prefix, layout)
                else:
                    scores = _tail_continuations(loaded, rows, row_opts, shared, n_prefix, layout)
            for i, s in zip(idx, scores):
                out[i] = s
    return out


def _padded_continuations(loaded: LoadedModel, rows: Sequence[Sequence[int]], opts: list[list[list[int]]],
                          shared: Cache | None, n_prefix: int, layout: ScoreLayout) -> list[torch.Tensor]:
    """Every option continues from its prompt's cache: each prompt gets the same number n of
    option slots (repeats of its last option; ignored), right-padded with pad tokens masked out."""
    tok, device = loaded.tokenizer, loaded.device
    n = max(len(o) for o in opts)
    flat = [c for row in opts for c in row + [row[-1]] * (n - len(row))]
    width = max(len(c) for c in flat)
    cand_ids = torch.full((len(flat), width), tok.pad_token_id, dtype=torch.long)
    cand_mask = torch.zeros((len(flat), width), dtype=torch.long)
    for j, c in enumerate(flat):
        cand_ids[j, :len(c)] = torch.tensor(c, dtype=torch.long)
        cand_mask[j, :len(c)] = 1
    cand_ids, cand_mask = cand_ids.to(device), cand_mask.to(device)
    logits, past, mask, positions = prompt_logits(loaded, rows, shared, n_prefix, layout.min_shared_prefix,
                                                  use_cache=True)
    first = logits.log_softmax(-1).repeat_interleave(n, dim=0)
    rest = loaded.model(input_ids=cand_ids,
                        attention_mask=torch.cat([mask.repeat_interleave(n, dim=0), cand_mask], dim=1),
                        position_ids=positions[:, -1:].repeat_interleave(n, dim=0) + 1
                        + torch.arange(width, device=device),
                        **cache_input(repeat_cache(past, n)), use_cache=True).logits.float().log_softmax(-1)
    # Token j of an option is predicted by the prompt's last position (j = 0) or by the
    # option's token j - 1.
    logp = torch.cat([first[:, None], rest[:, :-1]], dim=1).gather(-1, cand_ids[:, :, None])[..., 0]
    totals = (logp * cand_mask).sum(-1).cpu()
    return [totals[r * n: r * n + len(o)] for r, o in enumerate(opts)]


def _tail_continuations(loaded: LoadedModel, rows: Sequence[Sequence[int]], opts: list[list[list[int]]],
                        shared: Cache | None, n_prefix: int, layout: ScoreLayout) -> list[torch.Tensor]:
    """Options' first tokens are read from the prompt's forward; only options of several tokens
    continue, one cache row per (prompt, option), right-padded with repeats of their last
    token: pad columns come after each row's last real token, so (causal attention) they change
    nothing that is read. Single-token options cost nothing beyond the prompt's forward."""
    device = loaded.device
    multi = [(b, c) for b, row in enumerate(opts) for c, o in enumerate(row) if len(o) > 1]
    logits, past, prompt_mask, _ = prompt_logits(loaded, rows, shared, n_prefix, layout.min_shared_prefix,
                                                 use_cache=bool(multi))
    first = logits.log_softmax(-1).cpu()
    scores = [first[b, [o[0] for o in row]].clone() for b, row in enumerate(opts)]
    if multi:
        which = torch.tensor([b for b, _ in multi], device=device)
        past = repeat_cache(past, which)  # repeats allowed
        tails = [opts[b][c] for b, c in multi]
        width = max(len(t) for t in tails) - 1
        cont = torch.tensor([t[:-1] + [t[-1]] * (width - len(t) + 1) for t in tails], device=device)
        mask = torch.cat([prompt_mask[which],
                          torch.ones((len(multi), width), dtype=prompt_mask.dtype, device=device)], 1)
        positions = prompt_mask.sum(-1)[which][:, None] + torch.arange(width, device=device)[None]
        logits = loaded.model(input_ids=cont, attention_mask=mask, position_ids=positions,
                              **cache_input(past)).logits.float().log_softmax(-1).cpu()
        for r, ((b, c), t) in enumerate(zip(multi, tails)):
            scores[b][c] += logits[r, torch.arange(len(t) - 1), t[1:]].sum()
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
) -> list[tuple[str, int, dict[str, float] | None]]:
    """Each record's answer, the sequences run to get it, and, where it was picked among
    candidates, every candidate's probability (softmax of the whole-answer log-likelihoods over
    the candidate set, for calibration): the likeliest of its candidates (`decoding.candidates`,
    each followed by `terminator`, the explainer's end of an answer) or, for records without
    candidates, greedy decoding (probabilities None)."""
    cands = [decoding.candidates(r) if decoding.candidates else None for r in records]
    ranked = [i for i, c in enumerate(cands) if c]
    free = [i for i, c in enumerate(cands) if not c]
    out: list[tuple[str, int, dict[str, float] | None]] = [("", 0, None)] * len(records)
    vecs = (lambda idx: [vectors[i] for i in idx]) if vectors is not None else (lambda idx: None)
    if ranked:
        ids = [[loaded.tokenizer(" " + c, add_special_tokens=False)["input_ids"] + list(terminator)
                for c in cands[i]] for i in ranked]
        scores = option_logprobs(loaded, [prompts[i] for i in ranked], ids, vecs(ranked), projector,
                                 prefix=prefix, prefix_vectors=prefix_vectors)
        for i, row in zip(ranked, scores):
            s = row.tolist()
            probs = row.double().softmax(-1).tolist()
            out[i] = (cands[i][max(range(len(s)), key=s.__getitem__)], 1 + len(s), dict(zip(cands[i], probs)))
    if free:
        texts = greedy_generate(loaded, [prompts[i] for i in free], vecs(free), projector,
                                max_new_tokens=decoding.max_new_tokens, no_repeat_ngram=decoding.no_repeat_ngram,
                                prefix=prefix, prefix_vectors=prefix_vectors)
        for i, t in zip(free, texts):
            out[i] = (t, 1 + len(loaded.tokenizer(t)["input_ids"]), None)
    return out
