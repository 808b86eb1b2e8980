"""The subject on ERASER rationale inputs: accuracy, cost per prediction, budget statistics, and
option scoring (KV-cache continuation, the library's way) against the two naive ways.

    OMP_NUM_THREADS=1 python bench/rationale_inputs.py [--n 40] [--budgets 256,128] [--speed 10]

Items: a label-balanced sample of n val items per dataset (seed 0). Speed: the same inputs
scored three ways, each in turn on the same machine load:
- kv: one forward per prompt (left-padded batch), multi-token options continue from its KV cache
  (generation.option_logprobs with faithfulness.SUBJECT_LAYOUT, as rationale_inputs.predict does);
- concat: every (prompt, option) row as its own padded sequence, one batch;
- single: one forward per (prompt, option), no batching.
All three must agree; the ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import torch

from selfexplain.benchmarks.rationales.eraser import load_eraser
from selfexplain.benchmarks.rationales.faithfulness import SUBJECT_LAYOUT
from selfexplain.models.generation import option_logprobs
from selfexplain.techniques.interventions import left_pad
from selfexplain.models.loading import eval_mode, load_model
from selfexplain.benchmarks.rationales.inputs import accuracy, build_inputs, predict

DATASETS = ("movies", "boolq", "fever", "multirc", "cose")


def balanced_sample(items, n: int, seed: int = 0):
    """n items, labels taken in turn (sorted label order), each label's items shuffled (seed)."""
    rng = random.Random(seed)
    by_label: dict[str, list] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    for group in by_label.values():
        rng.shuffle(group)
    out, k = [], 0
    while len(out) < n and any(k < len(g) for g in by_label.values()):
        for label in sorted(by_label):
            if k < len(by_label[label]) and len(out) < n:
                out.append(by_label[label][k])
        k += 1
    return out


def concat_scores(subject, inputs, batch_size: int = 8) -> list[torch.Tensor]:
    """Every (prompt, option) as its own left-padded row; the option's log-probs read from the
    last len(option) positions."""
    rows = [(i, c) for i, inp in enumerate(inputs) for c in range(len(inp.option_ids))]
    out = [torch.zeros(len(inp.option_ids)) for inp in inputs]
    with eval_mode(subject.model), subject.autocast():
        for lo in range(0, len(rows), batch_size):
            chunk = rows[lo:lo + batch_size]
            seqs = [inputs[i].ids + inputs[i].option_ids[c][:-1] for i, c in chunk]
            keep = max(len(inputs[i].option_ids[c]) for i, c in chunk)
            batch = left_pad(seqs, subject.tokenizer.pad_token_id, subject.device)
            logp = subject.model(**batch.model_inputs(), logits_to_keep=keep).logits.float().log_softmax(-1)
            for r, (i, c) in enumerate(chunk):
                opt = inputs[i].option_ids[c]
                for j, t in enumerate(opt):
                    out[i][c] += logp[r, keep - len(opt) + j, t]
    return out


def single_scores(subject, inputs) -> list[torch.Tensor]:
    out = []
    with eval_mode(subject.model), subject.autocast():
        for inp in inputs:
            row = []
            for opt in inp.option_ids:
                ids = torch.tensor([inp.ids + opt[:-1]])
                logp = subject.model(input_ids=ids, logits_to_keep=len(opt)).logits[0].float().log_softmax(-1)
                row.append(sum(float(logp[j, t]) for j, t in enumerate(opt)))
            out.append(torch.tensor(row))
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "eraser"))
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--budgets", default="256,128")
    parser.add_argument("--speed", type=int, default=10, help="inputs per dataset for the speed comparison (0: skip)")
    parser.add_argument("--speed-datasets", default="movies,cose")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", default="", help="write the numbers to this file")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    subject = load_model("smollm2", device="cpu")
    items = {name: balanced_sample(load_eraser(Path(args.data) / name).items, args.n)
             for name in args.datasets.split(",")}
    report: dict = {"n_per_dataset": args.n, "threads": torch.get_num_threads(), "budgets": {}, "speed": {}}

    if args.speed:
        for name in args.speed_datasets.split(","):
            inputs = build_inputs(subject, items[name][:args.speed], 256).inputs
            option_logprobs(subject, [i.ids for i in inputs[:2]], [i.option_ids for i in inputs[:2]],
                            batch_size=16, layout=SUBJECT_LAYOUT)  # warm-up
            kv, t_kv = timed(lambda: option_logprobs(subject, [i.ids for i in inputs], [i.option_ids for i in inputs],
                                                     batch_size=args.batch_size, layout=SUBJECT_LAYOUT))
            cat, t_cat = timed(lambda: concat_scores(subject, inputs, args.batch_size))
            one, t_one = timed(lambda: single_scores(subject, inputs))
            diff = max(max(float((a - b).abs().max()), float((a - c).abs().max())) for a, b, c in zip(kv, cat, one))
            tokens = sum(len(i.ids) for i in inputs)
            options = sum(len(i.option_ids) for i in inputs)
            row = {"inputs": len(inputs), "prompt_tokens_mean": tokens / len(inputs), "options": options,
                   "multi_token_options": sum(len(o) > 1 for i in inputs for o in i.option_ids),
                   "s_per_input": {"kv": t_kv / len(inputs), "concat": t_cat / len(inputs),
                                   "single": t_one / len(inputs)},
                   "concat_over_kv": t_cat / t_kv, "single_over_kv": t_one / t_kv, "max_abs_diff": diff}
            report["speed"][name] = row
            print(f"speed {name}: {json.dumps(row)}", flush=True)

    for budget in map(int, args.budgets.split(",")):
        per = {}
        for name, sample in items.items():
            built = build_inputs(subject, sample, budget)
            start = time.perf_counter()
            preds = predict(subject, built.inputs, args.batch_size)
            seconds = time.perf_counter() - start
            acc = accuracy(built.inputs, preds)[name]
            counts = {o: sum(p.index == k for p in preds) for k, o in enumerate(built.inputs[0].options)} \
                if name != "cose" else {}
            correct_by_label: dict[str, list[bool]] = {}
            for inp, p in zip(built.inputs, preds):
                correct_by_label.setdefault(inp.label if name != "cose" else "any", []).append(p.correct)
            per[name] = {**built.stats()[name], "accuracy": acc, "s_per_prediction": seconds / len(preds),
                         "predicted_counts": counts,
                         "accuracy_by_gold": {k: sum(v) / len(v) for k, v in correct_by_label.items()},
                         "prompt_tokens_mean": statistics.fmean(len(i.ids) for i in built.inputs),
                         "mean_p_predicted": statistics.fmean(max(p.probs) for p in preds)}
            print(f"budget {budget} {name}: {json.dumps(per[name])}", flush=True)
        report["budgets"][budget] = per
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
