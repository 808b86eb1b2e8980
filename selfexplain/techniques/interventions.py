"""Reading and patching the residual stream, and injecting vectors at a placeholder token.

All three are forward hooks on an unmodified HF (or PEFT) model: raw HF numerics, no fork.
The residual stream "at layer l" is the output of decoder block l.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from selfexplain.models.loading import decoder_layers


@dataclass(frozen=True)
class Batch:
    """Left-padded token ids; `offsets[i]` is how many pad tokens precede row i."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    offsets: list[int]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids}


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    """Left-pad id lists so every row ends at the last column (generation and last-token reads)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    offsets = []
    for i, row in enumerate(rows):
        off = width - len(row)
        ids[i, off:] = torch.tensor(list(row), dtype=torch.long)
        mask[i, off:] = 1
        offsets.append(off)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids.to(device), mask.to(device), positions.to(device), offsets)


def _hidden(output) -> torch.Tensor:
    # Llama blocks return a tensor in transformers 5, others a tuple; `output[0]` on a tensor
    # would silently take batch row 0 (notes.md), so check the type.
    return output if isinstance(output, torch.Tensor) else output[0]


def _replace_hidden(output, hidden: torch.Tensor):
    if isinstance(output, torch.Tensor):
        return hidden
    return (hidden, *output[1:])


@contextlib.contextmanager
def record_residual(model: torch.nn.Module, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Capture the residual stream (block outputs) of `layers` during the next forward(s).

    Yields a dict layer -> [batch, seq, hidden] tensor, filled as the forward runs (the last
    forward wins).
    """
    blocks = decoder_layers(model)
    captured: dict[int, torch.Tensor] = {}
    handles = []
    for layer in layers:
        def hook(_module, _args, output, layer=layer):
            captured[layer] = _hidden(output).detach()
        handles.append(blocks[layer].register_forward_hook(hook))
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class Patch:
    """Replace the residual stream of batch row `row` at (`layer`, `position`) by `vector`."""

    row: int
    layer: int
    position: int
    vector: torch.Tensor


@contextlib.contextmanager
def patch_residual(model: torch.nn.Module, patches: Sequence[Patch]) -> Iterator[None]:
    """Apply many patches, on any rows, in one forward (batching patches is the speed lever).

    Patches apply only to forwards long enough to contain their position, so a generate()
    call patches the prompt pass and leaves the cached decoding steps alone.
    """
    blocks = decoder_layers(model)
    by_layer: dict[int, list[Patch]] = {}
    for p in patches:
        by_layer.setdefault(p.layer, []).append(p)
    handles = []
    for layer, group in by_layer.items():
        rows = torch.tensor([p.row for p in group])
        positions = torch.tensor([p.position for p in group])
        vectors = torch.stack([p.vector for p in group])

        def hook(_module, _args, output, rows=rows, positions=positions, vectors=vectors):
            hidden = _hidden(output)
            if hidden.shape[1] <= int(positions.max()):
                return output
            hidden = hidden.clone()
            hidden[rows.to(hidden.device), positions.to(hidden.device)] = vectors.to(hidden.device, hidden.dtype)
            return _replace_hidden(output, hidden)

        handles.append(blocks[layer].register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def inject_at_placeholder(
    model: torch.nn.Module,
    placeholder_id: int,
    vectors: torch.Tensor | None,
    projector: torch.nn.Module | None = None,
) -> Iterator[None]:
    """Replace the input embedding of every `placeholder_id` token by a vector.

    `vectors` is [n_placeholders_in_batch, d] in row-major order of placeholder occurrences.
    `projector` maps vectors into this model's embedding space (a different hidden size).
    Gradients flow into the projector, so it trains jointly with a LoRA adapter.
    """
    if vectors is None:
        yield
        return
    embedding = model.get_input_embeddings()

    def hook(_module, args, output):
        ids = args[0]
        mask = ids == placeholder_id
        n = int(mask.sum())
        if n == 0:  # decoding steps after the prompt
            return output
        if n != vectors.shape[0]:
            raise ValueError(f"{n} placeholder tokens in the batch but {vectors.shape[0]} vectors")
        vec = vectors.to(output.device)
        if projector is not None:
            vec = projector(vec)
        output = output.clone()
        output[mask] = vec.to(output.dtype)
        return output

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _rows(value, n: int, k: int):
    """`value` cut to its first `k` batch rows where it is a per-row tensor of a batch of `n`
    (hidden states, masks, position ids, rotary tables); anything else passes unchanged.
    One-dimensional tensors (cache positions) are never per-row."""
    if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[0] == n:
        return value[:k]
    if isinstance(value, tuple):
        return tuple(_rows(v, n, k) for v in value)
    if isinstance(value, dict):
        return {key: _rows(v, n, k) for key, v in value.items()}
    return value


def _cache_layers(cache) -> list | None:
    """The per-layer key/value holders of a transformers 5 cache (None: unknown layout)."""
    layers = getattr(cache, "layers", None)
    if layers is None or not all(hasattr(l, "keys") and hasattr(l, "values") for l in layers):
        return None
    return list(layers)


def can_skip_clean_layers(cache) -> bool:
    """Whether `skip_clean_layers` can run with this cache (a transformers 5 per-layer cache)."""
    return _cache_layers(cache) is not None


@contextlib.contextmanager
def skip_clean_layers(model: torch.nn.Module, first_layers: Sequence[int], clean: dict[int, torch.Tensor],
                      cache) -> Iterator[None]:
    """Run each batch row only from its first patched layer on.

    Below a row's first patched layer its residual stream equals the clean run's, so computing
    it again is wasted: block l runs only the rows whose first patched layer is <= l, and the
    other rows carry `clean[l]` (the clean run's block-l output over the positions this forward
    runs, batch 1). Rows must be sorted by `first_layers` (ascending), so the rows a block runs
    are a leading slice; `cache` (the KV cache this forward continues, one entry per row) is cut
    to those rows layer by layer, and is left unusable for later forwards. Exact: a row gets the
    numbers of the full forward up to the batch shape of its matmuls.
    """
    blocks = decoder_layers(model)
    firsts = list(first_layers)
    if firsts != sorted(firsts):
        raise ValueError("skip_clean_layers: rows must be sorted by their first patched layer")
    n = len(firsts)
    cached = _cache_layers(cache)
    if cached is None:
        raise ValueError("skip_clean_layers: unsupported KV cache layout")
    # At least one row runs everywhere (running a row below its first patch is just the clean
    # computation), so every block still returns what its model's code expects.
    active = [max(1, sum(f <= layer for f in firsts)) for layer in range(len(blocks))]
    for layer, k in enumerate(active):
        if k < n and cached[layer].keys is not None:
            cached[layer].keys, cached[layer].values = cached[layer].keys[:k], cached[layer].values[:k]
    replaced = []
    for layer, block in enumerate(blocks):
        k = active[layer]
        if k == n:
            continue
        original = block.forward

        def forward(*args, _original=original, _k=k, _layer=layer, **kwargs):
            out = _original(*_rows(args, n, _k), **_rows(kwargs, n, _k))
            hidden = _hidden(out)
            filler = clean[_layer].to(hidden.device, hidden.dtype).expand(n - _k, -1, -1)
            return _replace_hidden(out, torch.cat([hidden, filler]))

        replaced.append(block)
        block.forward = forward
    try:
        yield
    finally:
        for block in replaced:
            del block.forward
