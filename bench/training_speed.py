"""One LoRA training step (forward, backward, optimizer) on a batch of chat-formatted questions
(as in the ablation and rationales benchmarks: a shared chat header, then a different question
per row), three ways: the plain model call; with the output head's input made contiguous; and
with that plus the batch's common prompt prefix run once (what training does).

    python bench/training_speed.py [--models smollm2,gemma3-270m] [--steps 3] [--batch 8]

Prints seconds per step for each, side by side in one run, the ratios to the plain call, and
the largest loss difference (they must agree).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from selfexplain import training
from selfexplain.models.loading import load_model
from selfexplain.training import TrainConfig, answer_loss, shared_prefix_length

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
COUNTRIES = ["Poland", "Austria", "Peru", "Kenya", "Japan", "Chile", "Norway", "Egypt", "Laos", "Ghana"]
QUESTION = ("What is the official language of {}?\nRespond with one of French or Lao or Polish or Swahili and "
            "nothing else.\nSomeone who is usually right says the answer is French.")
FOLLOW_UP = "\nIf the hint were removed, how would your answer change?\nAnswer:"


def chat_prompt(tokenizer, country: str) -> str:
    """The ablation query shape: chat-formatted hinted question, then the explainer question."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION.format(country)}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - no chat template: plain text
        text = f"{SYSTEM}\n{QUESTION.format(country)}\n"
    return text + FOLLOW_UP
STRATEGIES = {"plain": (False, False), "contiguous head input": (True, False),
              "contiguous + shared prefix": (True, True)}


def step_seconds(loaded, prompts, answers, steps: int, contiguous: bool, share: bool):
    """Mean seconds per optimizer step (after one warm-up) and the first step's loss."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = TrainConfig()
    model = get_peft_model(loaded.model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                    target_modules="all-linear", task_type="CAUSAL_LM"))
    trained = type(loaded)(model, loaded.tokenizer, loaded.name, loaded.source, loaded.placeholder_id)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    original = training.contiguous_head_input
    if not contiguous:
        training.contiguous_head_input = lambda _model: contextlib.nullcontext()
    try:
        model.train()
        times, first_loss = [], None
        for i in range(steps + 1):
            start = time.perf_counter()
            loss = answer_loss(trained, prompts, answers, None, None, share_prefix=share)
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
        prompts = [training.encode_query(loaded, chat_prompt(loaded.tokenizer, c))
                   for c in (COUNTRIES * args.batch)[: args.batch]]
        answers = [training.encode_answer(loaded, " changes to Polish")] * len(prompts)
        shared = shared_prefix_length(prompts, loaded.placeholder_id)
        print(f"{name}: batch of {len(prompts)} queries of {min(map(len, prompts))}-{max(map(len, prompts))} "
              f"tokens, {shared} shared")
        results = {label: step_seconds(loaded, prompts, answers, args.steps, *flags)
                   for label, flags in STRATEGIES.items()}
        plain, plain_loss = results["plain"]
        for label, (seconds, loss) in results.items():
            print(f"  {label:28s} {seconds:5.2f} s/step  x{plain / seconds:.2f}  "
                  f"loss difference {abs(loss - plain_loss):.1e}")


if __name__ == "__main__":
    main()
