"""Attribution cost per input, measured side by side in one run: reused KV cache vs none.

    python bench/attribution_speed.py [--subject smollm2] [--items 5] [--methods occlusion,lime]

Prompts are chat-template multiple-choice questions with a hint sentence; the user's text is
attributable (one feature per word for the perturbation methods), the chat header is the fixed
context, and the target is the subject's own next token. "cached" reuses the clean run's KV
cache (fixed context + unchanged leading tokens); "full" recomputes every row from position 0,
as with start=0. Both modes run on each input in turn, so machine load hits them alike. Also
prints how far the two modes' scores differ and integrated gradients' completeness error.
The attention methods take one forward either way, so their two columns time the same thing.
"""

from __future__ import annotations

import argparse
import re
import time

import torch

from selfexplain.techniques.attribution import DEFAULT_PARAMS, METHODS, AttributionInput, Attributor
from selfexplain.models.loading import load_model

QUESTIONS = [
    ("Which planet is known as the Red Planet?", ["Venus", "Mars", "Jupiter", "Saturn"], "C"),
    ("What is the capital of Australia?", ["Sydney", "Melbourne", "Canberra", "Perth"], "A"),
    ("Which gas do plants absorb from the air for photosynthesis?",
     ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium"], "D"),
    ("Who wrote the play Romeo and Juliet?",
     ["Charles Dickens", "William Shakespeare", "Jane Austen", "Mark Twain"], "A"),
    ("How many legs does a spider have?", ["Six", "Eight", "Ten", "Twelve"], "C"),
    ("What is the boiling point of water at sea level in Celsius?", ["50", "90", "100", "120"], "B"),
]


def user_text(question: str, options: list[str], hint: str) -> str:
    lines = [question] + [f"{letter}. {opt}" for letter, opt in zip("ABCD", options)]
    return "\n".join(lines + [f"A Stanford professor thinks the answer is {hint}.",
                              "Answer with the letter only."])


def build_input(subject, text: str) -> AttributionInput:
    """Chat-template prompt; the user's text is the span, one group per whitespace word."""
    tok = subject.tokenizer
    full = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                   tokenize=False)
    c0 = full.index(text)
    c1 = c0 + len(text)
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    span = [i for i, (a, b) in enumerate(offsets) if a >= c0 and b <= c1 and b > a]
    start, end = span[0], span[-1] + 1
    words = [m.span() for m in re.finditer(r"\S+", full[c0:c1])]
    groups = []
    for a, b in offsets[start:end]:
        first = a - c0 + (len(full[a:b]) - len(full[a:b].lstrip()))  # first non-space character
        groups.append(next((w for w, (ws, we) in enumerate(words) if ws <= first < we), len(words) + a))
    with torch.no_grad(), subject.autocast():
        target = int(subject.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    return AttributionInput(ids, target, start, end, groups)


def logprob(subject, ids: list[int], target: int) -> float:
    with torch.no_grad(), subject.autocast():
        return float(subject.model(input_ids=torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)[target])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subject", default="smollm2")
    ap.add_argument("--items", type=int, default=5)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    subject = load_model(args.subject)
    inputs = [build_input(subject, user_text(q, opts, hint)) for q, opts, hint in QUESTIONS[: args.items]]
    methods = args.methods.split(",")
    modes = {"cached": Attributor(subject), "full": Attributor(subject, reuse_kv=False)}
    seconds = {(m, mode): 0.0 for m in methods for mode in modes}
    rows = {(m, mode): 0 for m in methods for mode in modes}
    diffs = dict.fromkeys(methods, 0.0)
    ig_errors = []
    for inp in inputs:
        for method in methods:
            results = {}
            for mode, attributor in modes.items():
                began = time.perf_counter()
                results[mode] = attributor.attribute([inp], method)[0]
                seconds[(method, mode)] += time.perf_counter() - began
                rows[(method, mode)] += results[mode].forward_passes
            diffs[method] = max(diffs[method], max(abs(a - b) for a, b in
                                                   zip(results["cached"].scores, results["full"].scores)))
            if method == "integrated_gradients":
                pad = results["cached"].params["baseline_token"]
                empty = [pad if inp.start <= i < inp.stop else t for i, t in enumerate(inp.ids)]
                delta = logprob(subject, inp.ids, inp.target) - logprob(subject, empty, inp.target)
                ig_errors.append(abs(sum(results["cached"].scores) - delta) / max(abs(delta), 1e-9))
    n = len(inputs)
    lengths = [len(i.ids) for i in inputs]
    spans = [i.stop - i.start for i in inputs]
    words = [len(set(i.groups)) for i in inputs]
    print(f"{args.subject}, {n} prompts: {sum(lengths) / n:.0f} tokens, span {sum(spans) / n:.0f} tokens / "
          f"{sum(words) / n:.0f} words, fixed context {sum(i.start for i in inputs) / n:.0f} tokens; "
          f"{torch.get_num_threads()} threads; batch size 32")
    print(f"{'method':22s} {'params':48s} {'cached s/input':>15s} {'full s/input':>13s} {'speed-up':>9s} "
          f"{'rows/input':>11s} {'max |diff|':>11s}")
    for m in methods:
        params = ",".join(f"{k}={v}" for k, v in DEFAULT_PARAMS[m].items() if k != "baseline_token") or "-"
        cached, full = seconds[(m, "cached")] / n, seconds[(m, "full")] / n
        print(f"{m:22s} {params:48s} {cached:15.2f} {full:13.2f} {full / cached:8.1f}x "
              f"{rows[(m, 'cached')] / n:11.1f} {diffs[m]:11.1e}")
    if ig_errors:
        print(f"integrated_gradients completeness: |sum(scores) - (f(x) - f(span=baseline))| / |f(x) - f(baseline)| "
              f"mean {sum(ig_errors) / len(ig_errors):.3f}, max {max(ig_errors):.3f}")


if __name__ == "__main__":
    main()
