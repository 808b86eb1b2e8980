"""One LoRA training step (forward, backward, optimizer) on patching-style records, with the
output head's input made contiguous (what training does) and without (the plain model call).

    python bench/training_speed.py [--models smollm2,gemma3-270m] [--steps 3] [--batch 8]

Prints seconds per step for both, side by side in one run, their ratio, and the largest loss
difference (they must agree).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time

import torch

from selfexplain import training
from selfexplain.models import load_model
from selfexplain.training import TrainConfig, answer_loss, make_projector

QUERY = ('What is the official language of {}? (French, Lao, Polish or unknown)\n'
         'Patch L25-29 at "{}" (question) from Laos <<vector>>\nAnswer:')
COUNTRIES = ["Poland", "Austria", "Peru", "Kenya", "Japan", "Chile", "Norway", "Egypt"]


def step_seconds(loaded, prompts, answers, vectors, projector, steps: int, contiguous: bool):
    """Mean seconds per optimizer step (after one warm-up) and the first step's loss."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    projector = copy.deepcopy(projector)  # trained by the steps: each strategy starts from the same one
    config = TrainConfig()
    model = get_peft_model(loaded.model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                    target_modules="all-linear", task_type="CAUSAL_LM"))
    trained = type(loaded)(model, loaded.tokenizer, loaded.name, loaded.source, loaded.placeholder_id)
    params = [p for p in model.parameters() if p.requires_grad] + list(projector.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    original = training.contiguous_head_input
    if not contiguous:
        training.contiguous_head_input = lambda _model: contextlib.nullcontext()
    try:
        model.train()
        times, first_loss = [], None
        for i in range(steps + 1):
            start = time.perf_counter()
            loss = answer_loss(trained, prompts, answers, vectors, projector)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            first_loss = loss.item() if first_loss is None else first_loss
            if i:
                times.append(time.perf_counter() - start)
    finally:
        training.contiguous_head_input = original
        model.unload()  # back to the plain base model for the next strategy
    return sum(times) / len(times), first_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,gemma3-270m")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    for name in args.models.split(","):
        loaded = load_model(name)
        queries = [QUERY.format(c, c) for c in (COUNTRIES * args.batch)[: args.batch]]
        prompts = [training.encode_query(loaded, q) for q in queries]
        answers = [training.encode_answer(loaded, " changes to French")] * args.batch
        vectors = torch.randn(args.batch, 576)
        projector = make_projector(loaded, 576)
        plain, loss_plain = step_seconds(loaded, prompts, answers, vectors, projector, args.steps, False)
        fast, loss_fast = step_seconds(loaded, prompts, answers, vectors, projector, args.steps, True)
        print(f"{name}: {len(prompts[0])}-token queries, batch {args.batch}: plain {plain:.2f} s/step, "
              f"contiguous head input {fast:.2f} s/step (x{plain / fast:.2f}); "
              f"loss difference {abs(loss_plain - loss_fast):.2e}")


if __name__ == "__main__":
    main()
