"""Ground-truth forwards and LoRA training steps as a fraction of this machine's matmul peak,
measured side by side in one run.

    python bench/throughput.py [--subject smollm2] [--rows 18] [--batch 8] [--steps 3]

1. Peak: torch.matmul of two n x n matrices in the dtype the subject computes in (bf16 under
   autocast where the CPU has it, else fp32), best of several repeats: 2 n^3 FLOP per product.
2. Ground-truth forward: the patching benchmark's forward shape: `--rows` rows of a patching
   prompt (one per layer block x token type cell) in one batch, next-token logits only, under the
   subject's autocast, as ground-truth generation runs it.
3. Training step: `answer_loss` + backward + AdamW on a LoRA (r=16, all linear layers) over a
   batch of chat-formatted queries (bench/training_speed.py's), the path `train_explainer` takes.
FLOPs are model FLOPs of the whole rows: 2 x (decoder linear weights) per token, 4 x layers x
T x d per token for attention scores and values, 2 x d x vocab per scored position for the head;
a training step counts forward + backward through the frozen weights (grad w.r.t. inputs only,
2x forward) and ignores the LoRA weight gradients (<1%). The shared prompt prefix that training
runs once is counted per row (the work a plain implementation does), so training's share may
exceed what the hardware executed.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from selfexplain import training
from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark
from selfexplain.data.facts import embedded_facts
from selfexplain.models.loading import decoder_layers, load_model, uses_bf16_autocast
from selfexplain.training import TrainConfig, answer_loss


def matmul_peak(dtype: torch.dtype, n: int = 1024, seconds: float = 2.0) -> float:
    """FLOP/s of the best repeat of n x n @ n x n in `dtype`."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        began = time.perf_counter()
        for _ in range(4):
            torch.matmul(a, b)
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - began))
    return best


def linear_weights(model) -> int:
    return sum(m.in_features * m.out_features for layer in decoder_layers(model)
               for m in layer.modules() if isinstance(m, torch.nn.Linear))


def forward_flops(subject, rows: int, length: int, scored: int) -> float:
    """Model FLOPs of one forward of `rows` x `length` tokens, `scored` head positions per row."""
    cfg = subject.config
    per_token = 2 * linear_weights(subject.model) + 4 * cfg.num_hidden_layers * length * cfg.hidden_size
    return rows * (length * per_token + scored * 2 * cfg.hidden_size * cfg.vocab_size)


def timed(fn, repeats: int) -> float:
    """Mean seconds of `repeats` calls after one warm-up."""
    fn()
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - began) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subject", default="smollm2")
    ap.add_argument("--rows", type=int, default=18)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    subject = load_model(args.subject)
    bf16 = uses_bf16_autocast(subject.device)
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak = matmul_peak(dtype)
    other = matmul_peak(torch.float32 if bf16 else torch.bfloat16, seconds=1.0)

    bench = PatchingBenchmark()
    item = bench.make_items(subject, embedded_facts(), random.Random(0))[0]
    ids = torch.tensor([bench.encode(subject, item.base, item.options).ids] * args.rows)

    def forward() -> None:
        with torch.no_grad(), subject.autocast():
            subject.model(input_ids=ids, logits_to_keep=1)

    fwd_s = timed(forward, 5)
    fwd_flops = forward_flops(subject, args.rows, ids.shape[1], 1)

    from peft import LoraConfig, get_peft_model

    from training_speed import COUNTRIES, chat_prompt  # bench/ is on sys.path when run as a script

    config = TrainConfig()
    torch.manual_seed(0)
    peft = get_peft_model(subject.model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                    target_modules="all-linear", task_type="CAUSAL_LM"))
    trained = type(subject)(peft, subject.tokenizer, subject.name, subject.source, subject.placeholder_id)
    prompts = [training.encode_query(trained, chat_prompt(subject.tokenizer, c))
               for c in (COUNTRIES * args.batch)[: args.batch]]
    answers = [training.encode_answer(trained, " changes to Polish")] * len(prompts)
    params = [p for p in peft.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    peft.train()

    def step() -> None:
        loss = answer_loss(trained, prompts, answers, None, None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_s = timed(step, args.steps)
    train_tokens = sum(len(p) + len(a) for p, a in zip(prompts, answers))
    train_flops = 2 * sum(forward_flops(subject, 1, len(p) + len(a), len(a) + 1) for p, a in zip(prompts, answers))

    name = "bf16" if bf16 else "fp32"
    print(f"{args.subject} on {torch.get_num_threads()} threads; computes in {name}")
    print(f"matmul peak ({name}, 1024^3): {peak / 1e9:7.1f} GFLOP/s   "
          f"({'fp32' if bf16 else 'bf16'}: {other / 1e9:.1f} GFLOP/s)")
    print(f"ground-truth forward: {args.rows} rows x {ids.shape[1]} tokens  {fwd_s * 1e3:7.1f} ms   "
          f"{args.rows * ids.shape[1] / fwd_s:8.0f} tokens/s   {fwd_flops / fwd_s / 1e9:6.1f} GFLOP/s   "
          f"{fwd_flops / fwd_s / peak:6.1%} of peak")
    print(f"training step: {len(prompts)} rows, {train_tokens} tokens  {step_s * 1e3:7.1f} ms   "
          f"{train_tokens / step_s:8.0f} tokens/s   {train_flops / step_s / 1e9:6.1f} GFLOP/s   "
          f"{train_flops / step_s / peak:6.1%} of peak")


if __name__ == "__main__":
    main()
