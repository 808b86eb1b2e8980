"""Integrated gradients with the subject's weights frozen (what Attributor does) vs trainable
(weight gradients computed and thrown away), side by side on the same inputs, alternating.

    python bench/ig_frozen_weights.py [--subject smollm2] [--items 5] [--steps 16] [--reps 2]

Prompts are the hinted multiple-choice questions of bench/attribution_speed.py. Prints seconds
per input for both, their ratio, and the largest score difference (0: same numbers).
"""

from __future__ import annotations

import argparse
import time

import torch

from selfexplain.techniques.attribution import Attributor, _inference
from selfexplain.models.loading import load_model

from attribution_speed import QUESTIONS, build_input, user_text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subject", default="smollm2")
    ap.add_argument("--items", type=int, default=5)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    subject = load_model(args.subject)
    inputs = [build_input(subject, user_text(q, opts, hint)) for q, opts, hint in QUESTIONS[: args.items]]
    attributor = Attributor(subject)
    for p in subject.model.parameters():
        p.requires_grad_(True)

    def trainable(inp):
        # The frozen path is Attributor._compute inside _inference; this one skips the freeze.
        with torch.enable_grad():
            return attributor._compute(inp, "integrated_gradients", {"n_steps": args.steps, "baseline_token":
                                                                      subject.tokenizer.pad_token_id})

    def frozen(inp):
        with _inference(subject.model):
            return trainable(inp)

    seconds = {"trainable": 0.0, "frozen": 0.0}
    diff = 0.0
    frozen(inputs[0])  # warm-up
    for _ in range(args.reps):
        for inp in inputs:
            results = {}
            for name, fn in (("trainable", trainable), ("frozen", frozen)):
                began = time.perf_counter()
                results[name] = fn(inp)
                seconds[name] += time.perf_counter() - began
            diff = max(diff, max(abs(a - b) for a, b in zip(results["trainable"].scores, results["frozen"].scores)))
    n = args.items * args.reps
    print(f"{args.subject}, {args.items} prompts x {args.reps}, integrated gradients {args.steps} steps, "
          f"{torch.get_num_threads()} threads")
    print(f"weights trainable {seconds['trainable'] / n:.2f} s/input, frozen {seconds['frozen'] / n:.2f} s/input: "
          f"x{seconds['trainable'] / seconds['frozen']:.2f}; max |score difference| {diff:.1e}")


if __name__ == "__main__":
    main()
