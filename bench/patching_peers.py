"""Residual-stream patching sweeps, side by side in one run on the same prompts and the same model:
selfexplain vs nnsight vs TransformerLens vs a naive one-forward-per-patch loop.

    python bench/patching_peers.py [--subject smollm2] [--sweep-prompts 1] [--grid-prompts 6]

Two grids, each over N (base, counterfactual) prompt pairs of the patching benchmark:
  sweep: every layer x every position (base and counterfactual of equal length, position p
         patched from position p), the classic activation-patching heat map;
  grid:  the patching benchmark's layer block x token type cells (counterfactual position of the
         same token type, every layer of the block patched at once).
Every way answers the same question per cell: the subject's next-token argmax after the patch.
All run the same HF model object (a deep copy per library, so no library's wrapping touches
another's), under the same autocast (bf16 where the CPU has it), with `logits_to_keep=1` wherever
the library passes it through (a 49k-vocabulary head over every position would cost them more).

  naive         : HF forward hooks, one forward per patch (the whole prompt).
  nnsight       : the nnsight tutorial's way: one `trace`, one `invoke` per patch (batched by
                  nnsight into one forward); one trace per position (sweep) / token type (grid).
  TransformerLens: TransformerBridge (TL 4: a hooked wrapper of the HF model); the sweep through
                  `transformer_lens.patching.generic_activation_patch` on `resid_post` (TL's
                  activation-patching helper: one forward per cell), the grid through
                  `run_with_hooks`, one forward per cell.
  selfexplain   : batched patches + the unpatched tokens before the patched position reused from
                  the clean run's KV cache + each row run from its first patched layer on (the
                  blocks below carry the clean run's residual) (`PatchingBenchmark._patched_answers`).
Prints patches/s, the ratio of selfexplain to each peer, and how many answers equal the naive
loop's (asserted: at least --agree of them, --agree-eager for TransformerLens; bf16 rounding
differs with the batch shape and the attention kernel).
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from functools import partial
from typing import Callable

import torch

from selfexplain.benchmarks.patching.benchmark import TOKEN_TYPES, PatchingBenchmark, layer_blocks
from selfexplain.data.facts import embedded_facts
from selfexplain.models.loading import load_model, uses_bf16_autocast
from selfexplain.models.prefix_cache import output_cache
from selfexplain.techniques.interventions import Patch, patch_residual, record_residual

# A cell: (layers patched, base position, counterfactual position).
Cell = tuple[tuple[int, ...], int, int]


def cells_for(kind: str, subject, base, cf) -> list[Cell]:
    n = subject.num_layers
    if kind == "sweep":
        return [((layer,), p, p) for p in range(len(base.ids)) for layer in range(n)]
    return [(tuple(range(f, last + 1)), base.positions[t], cf.positions[t])
            for t in TOKEN_TYPES for f, last in layer_blocks(n)]


def by_position(cells: list[Cell]) -> dict[int, list[Cell]]:
    groups: dict[int, list[Cell]] = {}
    for c in cells:
        groups.setdefault(c[1], []).append(c)
    return groups


def run_naive(subject, base_ids, cf_ids, cells):
    model = subject.model
    layers = list(range(subject.num_layers))
    with record_residual(model, layers) as resid, subject.autocast():
        model(input_ids=torch.tensor([cf_ids]), logits_to_keep=1)
    ids = torch.tensor([base_ids])
    out = []
    for layers_, p, q in cells:
        with patch_residual(model, [Patch(0, l, p, resid[l][0, q]) for l in layers_]), subject.autocast():
            out.append(int(model(input_ids=ids, logits_to_keep=1).logits[0, -1].argmax()))
    return out


def run_selfexplain(subject, base_ids, cf_ids, cells, bench: PatchingBenchmark):
    model = subject.model
    layers = list(range(subject.num_layers))
    with record_residual(model, layers) as resid, subject.autocast():
        model(input_ids=torch.tensor([cf_ids]), logits_to_keep=1)
    with record_residual(model, layers) as clean, subject.autocast():
        cache = output_cache(model(input_ids=torch.tensor([base_ids]), use_cache=True, logits_to_keep=1))
    answers: dict[Cell, int] = {}
    for p, group in by_position(cells).items():
        patches = [Patch(row, l, p, resid[l][0, q]) for row, (ls, _, q) in enumerate(group) for l in ls]
        if p == 0:  # nothing before the patch to reuse: a plain batched forward
            with patch_residual(model, patches), subject.autocast():
                logits = model(input_ids=torch.tensor([base_ids] * len(group)), logits_to_keep=1).logits
            got = logits[:, -1].float().argmax(-1).tolist()
        else:
            got = bench._patched_answers(subject, base_ids, cache, p, len(group), patches, clean).tolist()
        answers.update(zip(group, got))
    return [answers[c] for c in cells]


def run_nnsight(lm, subject, base_ids, cf_ids, cells):
    """The nnsight tutorial's pattern: save the counterfactual's layer outputs in one trace, then
    one invoke per patch inside one trace (nnsight batches the invokes into one forward)."""
    layers = lm.model.layers
    n = subject.num_layers
    cf = torch.tensor([cf_ids])
    base = torch.tensor([base_ids])
    hs = []
    with subject.autocast(), lm.trace(cf, logits_to_keep=1):
        for layer in range(n):
            hs.append(layers[layer].output.save())
    answers: dict[Cell, int] = {}
    for _p, group in by_position(cells).items():
        saved = []
        with subject.autocast(), lm.trace(logits_to_keep=1) as tracer:
            for ls, p, q in group:
                with tracer.invoke(base):
                    for layer in ls:
                        layers[layer].output[:, p, :] = hs[layer][:, q, :]
                    saved.append(lm.lm_head.output[:, -1].argmax(-1).save())
        answers.update(zip(group, (int(s) for s in saved)))
    return [answers[c] for c in cells]


def run_transformer_lens(bridge, subject, base_ids, cf_ids, cells, kind: str):
    from transformer_lens import patching

    n = subject.num_layers
    base = torch.tensor([base_ids])
    with subject.autocast():
        _, cache = bridge.run_with_cache(torch.tensor([cf_ids]))
    argmax = lambda logits: logits[0, -1].float().argmax()  # noqa: E731 - TL's metric: logits -> scalar
    if kind == "sweep":  # TL's helper; resid_post of block l = the block's output, our layer l
        sweep = partial(patching.generic_activation_patch, patch_setter=patching.layer_pos_patch_setter,
                        activation_name="resid_post", index_axis_names=("layer", "pos"))
        with subject.autocast():
            table = sweep(bridge, base, cache, argmax)  # [layer, pos]
        return [int(table[ls[0], p]) for ls, p, _ in cells]
    out = []
    for ls, p, q in cells:
        def hook(act, hook, q=q, p=p):
            act[:, p, :] = cache[hook.name][:, q, :].to(act.dtype)
            return act
        with subject.autocast():
            logits = bridge.run_with_hooks(base, fwd_hooks=[(f"blocks.{l}.hook_resid_post", hook) for l in ls],
                                           logits_to_keep=1)
        out.append(int(argmax(logits)))
    assert n == bridge.cfg.n_layers
    return out


def load_peers(subject) -> dict[str, Callable]:
    """The peer libraries that import and load the subject; say why for those that do not."""
    peers: dict[str, object] = {}
    try:
        from nnsight import LanguageModel

        peers["nnsight"] = LanguageModel(copy.deepcopy(subject.model), tokenizer=subject.tokenizer)
    except Exception as exc:  # noqa: BLE001 - reported, the rest still runs
        print(f"nnsight unavailable: {type(exc).__name__}: {exc}")
    try:
        import os
        import tempfile

        from transformer_lens.model_bridge import TransformerBridge

        # TL 4 reads the config from a model name or directory; the model itself is handed over.
        with tempfile.TemporaryDirectory() as d:
            subject.config.save_pretrained(d)
            bridge = TransformerBridge.boot_transformers(d, hf_model=copy.deepcopy(subject.model),
                                                         tokenizer=subject.tokenizer, device="cpu")
        bridge.eval()
        peers["TransformerLens"] = bridge
        os.environ.setdefault("TQDM_DISABLE", "1")
    except Exception as exc:  # noqa: BLE001
        print(f"TransformerLens unavailable: {type(exc).__name__}: {exc}")
    return peers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subject", default="smollm2")
    ap.add_argument("--sweep-prompts", type=int, default=1)
    ap.add_argument("--grid-prompts", type=int, default=6)
    ap.add_argument("--agree", type=float, default=0.98, help="least share of answers equal to naive's")
    ap.add_argument("--agree-eager", type=float, default=0.9,
                    help="the same for TransformerLens, which forces eager attention: under bf16 its rounding "
                         "differs from sdpa's (in fp32 its residuals equal HF's to 2e-5 on a tiny model)")
    args = ap.parse_args()
    subject = load_model(args.subject)
    bench = PatchingBenchmark()
    items = bench.make_items(subject, embedded_facts(), random.Random(0))
    encoded = [(bench.encode(subject, it.base, it.options), bench.encode(subject, it.cf, it.options)) for it in items]
    same_len = [pair for pair in encoded if len(pair[0].ids) == len(pair[1].ids)]
    peers = load_peers(subject)
    print(f"{args.subject}: {subject.num_layers} layers; {torch.get_num_threads()} threads; "
          f"autocast {'bf16' if uses_bf16_autocast(subject.device) else 'fp32'}; "
          f"peers loaded: {', '.join(peers) or 'none'}")
    failed = []
    for kind, pairs in (("sweep", same_len[: args.sweep_prompts]), ("grid", encoded[: args.grid_prompts])):
        ways: dict[str, Callable] = {
            "naive (1 forward/patch)": lambda b, c, cells: run_naive(subject, b, c, cells),
            "selfexplain": lambda b, c, cells: run_selfexplain(subject, b, c, cells, bench)}
        if "nnsight" in peers:
            ways["nnsight (tutorial)"] = lambda b, c, cells: run_nnsight(peers["nnsight"], subject, b, c, cells)
        if "TransformerLens" in peers:
            ways["TransformerLens"] = lambda b, c, cells: run_transformer_lens(peers["TransformerLens"], subject,
                                                                              b, c, cells, kind)
        seconds = dict.fromkeys(ways, 0.0)
        answers: dict[str, list[int]] = {w: [] for w in ways}
        n_patches = 0
        with torch.no_grad():
            for base, cf in pairs:
                cells = cells_for(kind, subject, base, cf)
                n_patches += len(cells)
                for way, fn in ways.items():  # each prompt in turn, so machine load hits all alike
                    began = time.perf_counter()
                    answers[way] += fn(base.ids, cf.ids, cells)
                    seconds[way] += time.perf_counter() - began
        tokens = sum(len(b.ids) for b, _ in pairs) / max(1, len(pairs))
        print(f"\n{kind}: {n_patches} patches over {len(pairs)} prompt pairs of ~{tokens:.0f} tokens")
        ours = seconds["selfexplain"]
        for way, secs in seconds.items():
            same = sum(a == b for a, b in zip(answers[way], answers["naive (1 forward/patch)"]))
            print(f"  {way:26s} {n_patches / secs:8.1f} patches/s   selfexplain x{secs / ours:5.1f} faster   "
                  f"answers equal to naive {same}/{n_patches}")
            if same < (args.agree_eager if way == "TransformerLens" else args.agree) * n_patches:
                failed.append(f"{kind}/{way}: {same}/{n_patches} answers equal to naive")
    assert not failed, "; ".join(failed)


if __name__ == "__main__":
    main()
