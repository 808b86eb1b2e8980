"""Scoring rationales on the subject: perturbed copies of one input, with and without running
their shared prefix (chat header + template text) once through the KV cache.

    python bench/faithfulness_speed.py [--dataset movies] [--items 4] [--budget 128] [--threads 2]

Prints seconds for both strategies side by side in one run, their ratio, and the largest
probability difference (they must agree).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from selfexplain.benchmarks.rationales import faithfulness
from selfexplain.benchmarks.rationales.eraser import load_eraser
from selfexplain.benchmarks.rationales.faithfulness import AOPC_BINS, bin_size, random_rationales
from selfexplain.models.loading import load_model
from selfexplain.benchmarks.rationales.inputs import build_inputs, option_probabilities


def variants(inp, seed: int) -> list[list[int]]:
    """The rows scoring one explainer needs: x \\ r and r at the human length and every bin."""
    n = len(inp.words)
    rows = []
    for k in [len(inp.human_words)] + [bin_size(f, n) for f in AOPC_BINS]:
        (words,) = random_rationales(range(n), k, 1, seed + k)
        rows += [inp.without_words(words), inp.only_words(words)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movies")
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--budget", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", default=os.environ.get("SELFEXPLAIN_DATA_ROOT", "../shared/data"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    subject = load_model("smollm2")
    items = load_eraser(Path(args.data_root) / "eraser" / args.dataset, args.dataset).items[:args.items]
    inputs = build_inputs(subject, items, args.budget).inputs
    rows = [variants(inp, i) for i, inp in enumerate(inputs)]
    option_probabilities(subject, inputs[0], rows[0][:2])  # warm-up
    results, seconds = {}, {}
    for label, minimum in (("full rows", 10**9), ("shared prefix once", faithfulness.MIN_SHARED_PREFIX)):
        saved, faithfulness.MIN_SHARED_PREFIX = faithfulness.MIN_SHARED_PREFIX, minimum
        try:
            began = time.perf_counter()
            results[label] = [option_probabilities(subject, inp, r) for inp, r in zip(inputs, rows)]
            seconds[label] = time.perf_counter() - began
        finally:
            faithfulness.MIN_SHARED_PREFIX = saved
    n_rows = sum(len(r) for r in rows)
    diff = max(float((a - b).abs().max()) for a, b in zip(*results.values()))
    prefix = [inp.doc_start for inp in inputs]
    print(f"{args.dataset}, budget {args.budget}: {len(inputs)} inputs, {n_rows} rows "
          f"(median {sorted(len(v) for r in rows for v in r)[n_rows // 2]} tokens; shared prefix "
          f"{min(prefix)}-{max(prefix)} tokens), {args.threads} threads")
    for label, s in seconds.items():
        print(f"  {label:20s} {s:7.2f} s  ({n_rows / s:.1f} rows/s)")
    print(f"  speed-up x{seconds['full rows'] / seconds['shared prefix once']:.2f}; max |probability difference| "
          f"{diff:.2e}")


if __name__ == "__main__":
    main()
