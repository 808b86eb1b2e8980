"""Concept directions in the residual stream, per-token activations over a corpus, and the logit lens.

A concept direction at layer L is the mean residual stream (block L's output) at the last token
of the concept's name over several contexts, minus the same mean over neutral words in the same
contexts (the Lindsey 2025 / Fonseca 2025 protocol). All reads are batched, left-padded forwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from selfexplain.errors import DataError
from selfexplain.models.loading import LoadedModel, base_model, eval_mode
from selfexplain.techniques.interventions import left_pad, record_residual

# Where the final norm lives, per `config.model_type` (architecture differences as data).
FINAL_NORM_PATHS: dict[str, str] = {"gpt2": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm"}
DEFAULT_FINAL_NORM = "model.norm"


def pick_layers(n_layers: int, k: int) -> list[int]:
    """k layers spread over the depth (quarter points for k=3), never the embedding layer."""
    if k < 1:
        raise DataError(f"features: need at least one layer, not {k}")
    return sorted({min(n_layers - 1, max(0, int(n_layers * (i + 1) / (k + 1)))) for i in range(k)})


def name_position(tokenizer, text: str, name: str) -> tuple[list[int], int]:
    """Token ids of `text` and the index of the token holding the last character of the last `name` in it."""
    end = text.rfind(name)
    if end < 0:
        raise DataError(f"features: context {text!r} does not contain {name!r}")
    end += len(name)
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    pos = [i for i, (s, e) in enumerate(offsets) if s < end <= e or (e == end and e > s)]
    return ids, pos[0] if pos else len(ids) - 1


@torch.no_grad()
def residuals_at(subject: LoadedModel, rows: Sequence[tuple[list[int], int]], layers: Sequence[int],
                 batch_size: int = 32) -> dict[int, torch.Tensor]:
    """Residual stream at one position per row: layer -> [n_rows, d] float32 (CPU)."""
    out = {layer: torch.zeros(len(rows), subject.hidden_size) for layer in layers}
    with eval_mode(subject.model):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = left_pad([ids for ids, _ in chunk], subject.tokenizer.pad_token_id, subject.device)
            with record_residual(subject.model, layers) as resid, subject.autocast():
                subject.model(**batch.model_inputs(), logits_to_keep=1)
            idx = torch.arange(len(chunk))
            pos = torch.tensor([off + p for off, (_, p) in zip(batch.offsets, chunk)])
            for layer in layers:
                out[layer][start:start + len(chunk)] = resid[layer][idx, pos].float().cpu()
    return out


@dataclass
class ConceptVectors:
    """Directions per layer ([n_concepts, d], rows in `names` order) and the baseline means."""

    names: list[str]
    layers: list[int]
    directions: dict[int, torch.Tensor]
    baseline: dict[int, torch.Tensor]


def concept_vectors(subject: LoadedModel, names: Sequence[str], templates: Sequence[str],
                    neutral_words: Sequence[str], layers: Sequence[int]) -> ConceptVectors:
    """Mean activation at the name's last token over `templates` minus the mean over neutral words."""
    tok = subject.tokenizer
    rows = [name_position(tok, t.format(name=n), n) for n in names for t in templates]
    base_rows = [name_position(tok, t.format(name=w), w) for w in neutral_words for t in templates]
    acts = residuals_at(subject, rows + base_rows, layers)
    k, n = len(templates), len(names)
    directions, baseline = {}, {}
    for layer in layers:
        a = acts[layer]
        baseline[layer] = a[n * k:].mean(0)
        directions[layer] = a[:n * k].reshape(n, k, -1).mean(1) - baseline[layer]
    return ConceptVectors(list(names), list(layers), directions, baseline)


@dataclass
class CorpusActivations:
    """Per-token residuals of a corpus (position 0, the BOS/attention sink, left out) per layer."""

    texts: list[str]
    acts: dict[int, torch.Tensor]  # layer -> [n_texts, max_len, d]
    mask: torch.Tensor  # [n_texts, max_len] bool: a real token

    def activation(self, layer: int, direction: torch.Tensor) -> torch.Tensor:
        """Each text's activation of `direction`: the max over its tokens of the projection on the
        unit direction (a zero direction gives zeros)."""
        d = direction.float()
        d = d / d.norm().clamp(min=1e-12) if float(d.norm()) > 0 else d
        proj = self.acts[layer] @ d
        return proj.masked_fill(~self.mask, float("-inf")).max(1).values

    def ranking(self, layer: int, direction: torch.Tensor) -> list[int]:
        """Corpus indices by activation, strongest first (ties in index order)."""
        a = self.activation(layer, direction)
        return sorted(range(len(a)), key=lambda i: (-float(a[i]), i))


@torch.no_grad()
def corpus_activations(subject: LoadedModel, texts: Sequence[str], layers: Sequence[int],
                       batch_size: int = 32) -> CorpusActivations:
    """Residuals of every token after the first, for every text, at `layers` (one batched pass)."""
    ids = [subject.tokenizer(t)["input_ids"] for t in texts]
    width = max(len(i) for i in ids) - 1
    acts = {layer: torch.zeros(len(texts), width, subject.hidden_size) for layer in layers}
    mask = torch.zeros(len(texts), width, dtype=torch.bool)
    with eval_mode(subject.model):
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            batch = left_pad(chunk, subject.tokenizer.pad_token_id, subject.device)
            with record_residual(subject.model, layers) as resid, subject.autocast():
                subject.model(**batch.model_inputs(), logits_to_keep=1)
            for r, (row, off) in enumerate(zip(chunk, batch.offsets)):
                n = len(row) - 1
                mask[start + r, :n] = True
                for layer in layers:
                    acts[layer][start + r, :n] = resid[layer][r, off + 1:].float().cpu()
    return CorpusActivations(list(texts), acts, mask)


def _module_at(model: torch.nn.Module, path: str) -> torch.nn.Module:
    obj = base_model(model)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@torch.no_grad()
def logit_lens(subject: LoadedModel, vectors: torch.Tensor) -> torch.Tensor:
    """Logits of `vectors` ([n, d]) read through the final norm and the unembedding: [n, vocab] float32."""
    hf = base_model(subject.model)
    norm = _module_at(subject.model, FINAL_NORM_PATHS.get(hf.config.model_type, DEFAULT_FINAL_NORM))
    head = subject.model.get_output_embeddings()
    with eval_mode(subject.model), subject.autocast():
        x = vectors.to(subject.device, next(norm.parameters()).dtype)
        return head(norm(x)).float().cpu()
