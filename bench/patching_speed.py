"""Patching throughput, measured side by side in one run: naive vs batched vs batched + shared prefix.

    python bench/patching_speed.py [--subject smollm2] [--items 6]

Prints patches/second for each way and the ratios; checks that all three give identical answers.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from selfexplain.benchmarks.patching.benchmark import TOKEN_TYPES, PatchingBenchmark, layer_blocks
from selfexplain.data.facts import embedded_facts
from selfexplain.techniques.interventions import Patch, patch_residual, record_residual
from selfexplain.models.loading import load_model
from selfexplain.models.prefix_cache import output_cache


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subject", default="smollm2")
    ap.add_argument("--items", type=int, default=6)
    args = ap.parse_args()
    subject = load_model(args.subject)
    bench = PatchingBenchmark()
    items = bench.make_items(subject, embedded_facts(), random.Random(0))[: args.items]
    blocks = layer_blocks(subject.num_layers)
    layers = list(range(subject.num_layers))
    timings = {"naive (1 forward / patch)": 0.0, "batched": 0.0, "batched + shared prefix": 0.0}
    answers: dict[str, list[int]] = {k: [] for k in timings}
    n_patches = 0
    with torch.no_grad():
        for item in items:
            base = bench.encode(subject, item.base, item.options)
            cf = bench.encode(subject, item.cf, item.options)
            with record_residual(subject.model, layers) as resid, subject.autocast():
                subject.model(input_ids=torch.tensor([cf.ids]))
            cells = [((f, l), k) for k in TOKEN_TYPES for f, l in blocks]
            n_patches += len(cells)

            def patches_for(row, block, kind):
                return [Patch(row, layer, base.positions[kind], resid[layer][0, cf.positions[kind]])
                        for layer in range(block[0], block[1] + 1)]

            ids = torch.tensor([base.ids])
            start = time.perf_counter()
            for block, kind in cells:
                with patch_residual(subject.model, patches_for(0, block, kind)), subject.autocast():
                    answers["naive (1 forward / patch)"].append(
                        int(subject.model(input_ids=ids, logits_to_keep=1).logits[0, -1].argmax()))
            timings["naive (1 forward / patch)"] += time.perf_counter() - start

            start = time.perf_counter()
            batch = [p for row, (block, kind) in enumerate(cells) for p in patches_for(row, block, kind)]
            with patch_residual(subject.model, batch), subject.autocast():
                out = subject.model(input_ids=ids.repeat(len(cells), 1), logits_to_keep=1).logits[:, -1]
            answers["batched"] += out.argmax(-1).tolist()
            timings["batched"] += time.perf_counter() - start

            start = time.perf_counter()
            with subject.autocast():
                cache = output_cache(subject.model(input_ids=ids, use_cache=True, logits_to_keep=1))
            for kind in TOKEN_TYPES:
                kind_cells = [((f, l), kind) for f, l in blocks]
                ps = [p for row, (block, k) in enumerate(kind_cells) for p in patches_for(row, block, k)]
                answers["batched + shared prefix"] += bench._patched_answers(
                    subject, base.ids, cache, base.positions[kind], len(kind_cells), ps).tolist()
            timings["batched + shared prefix"] += time.perf_counter() - start
    naive = timings["naive (1 forward / patch)"]
    print(f"{n_patches} patches on {args.subject}, {len(items)} prompts, {torch.get_num_threads()} threads")
    for name, secs in timings.items():
        same = sum(a == b for a, b in zip(answers[name], answers["naive (1 forward / patch)"]))
        print(f"{name:28s} {n_patches / secs:7.1f} patches/s   x{naive / secs:4.1f} vs naive   "
              f"answers equal to naive: {same}/{n_patches}")


if __name__ == "__main__":
    main()
