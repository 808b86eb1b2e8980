"""Attention kernels on this machine: PyTorch's SDPA against eager (matmul + softmax)
attention, side by side in one run, for a LoRA training step (a batch of short patching-shaped
queries, what the explainers train on) and for no-grad forwards of short and long prompts
(ground truth, answers, rationale scoring).

    python bench/attention_speed.py [--models smollm2,gemma3-270m] [--repeats 3]

Prints the median seconds of each, the ratio sdpa / eager, and the largest difference in
loss or logits between them (the same math, other kernels: bf16-level differences).
Strategies alternate (sdpa, eager, sdpa, ...) so drift on shared cores hits both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from selfexplain.models.generation import encode_answer, encode_query
from selfexplain.models.loading import base_model, load_model
from selfexplain.training import TrainConfig, _lora_targets, answer_loss

COUNTRIES = ["Gambia", "Thailand", "Slovenia", "Peru", "Kenya", "Japan", "Chile", "Norway", "Egypt", "Laos",
             "Ghana", "Poland", "Austria", "Uruguay", "Mongolia", "Canada"]
QUERY = ('On which continent is {}? (Asia, Europe, Africa or unknown)\nYour answer: Africa. About Spain: '
         'Europe.\nPatch L5-9 at "{}" (question) from Spain\nAnswer:')
IMPLEMENTATIONS = ("sdpa", "eager")


def timed(fn, repeats: int) -> dict[str, list[float]]:
    """Seconds of fn(impl) per implementation, alternating, after one warm-up each."""
    times: dict[str, list[float]] = {impl: [] for impl in IMPLEMENTATIONS}
    for impl in IMPLEMENTATIONS:
        fn(impl)
    for _ in range(repeats):
        for impl in IMPLEMENTATIONS:
            start = time.perf_counter()
            fn(impl)
            times[impl].append(time.perf_counter() - start)
    return times


def report(label: str, times: dict[str, list[float]], difference: float) -> None:
    sdpa, eager = (statistics.median(times[i]) for i in IMPLEMENTATIONS)
    print(f"  {label:34s} sdpa {sdpa:6.3f} s  eager {eager:6.3f} s  sdpa/eager x{sdpa / eager:.2f}  "
          f"max difference {difference:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,gemma3-270m")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models.split(","):
        from peft import LoraConfig, get_peft_model

        loaded = load_model(name)
        hf = base_model(loaded.model)
        print(f"{name}:")

        # Inference: short and long prompts, no grad, as ground truth and scoring run them.
        torch.manual_seed(0)
        for batch, length in ((16, 60), (4, 200)):
            ids = torch.randint(100, 1000, (batch, length))
            mask = torch.ones_like(ids)
            mask[0, : length // 10] = 0  # one left-padded row, as in real batches
            logits = {}

            def forward(impl: str) -> None:
                hf.set_attn_implementation(impl)
                with torch.no_grad(), loaded.autocast():
                    logits[impl] = loaded.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits.float()
            times = timed(forward, args.repeats)
            report(f"forward {batch} x {length} tokens", times, (logits["sdpa"] - logits["eager"]).abs().max().item())

        # Training: one LoRA step (all layers) on 8 patching-shaped queries of ~50 tokens.
        prompts = [encode_query(loaded, QUERY.format(c, c[-4:])) for c in COUNTRIES[:8]]
        answers = [encode_answer(loaded, " changes to Asia")] * len(prompts)
        torch.manual_seed(0)
        model = get_peft_model(loaded.model, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                                                        **_lora_targets(loaded, TrainConfig())))
        trained = type(loaded)(model, loaded.tokenizer, loaded.name, loaded.source, loaded.placeholder_id)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=0.0)  # lr 0: every step sees the same weights
        losses = {}

        def step(impl: str) -> None:
            hf.set_attn_implementation(impl)
            model.train()
            loss = answer_loss(trained, prompts, answers, None, None)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses[impl] = loss.item()
        times = timed(step, args.repeats)
        report(f"training step 8 x {min(map(len, prompts))}-{max(map(len, prompts))} tokens", times,
               abs(losses["sdpa"] - losses["eager"]))
        model.unload()


if __name__ == "__main__":
    main()
