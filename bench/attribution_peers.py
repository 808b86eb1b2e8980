"""Attribution, side by side in one run on the same prompts and targets: selfexplain's Attributor
vs captum used the way its LLM tutorial shows (`LLMAttribution` / `LLMGradientAttribution` on a
`TextTokenInput`).

    python bench/attribution_peers.py [--subject smollm2] [--items 3] [--methods occlusion,lime,kernel_shap,integrated_gradients]

Same inputs: the text is tokenized once by the subject's tokenizer (as `TextTokenInput` does);
every token is one feature, attributable by both (no fixed context). Same target: the subject's
own greedy next token, explained as its log-probability. Same baseline: the token that replaces
an absent feature (the pad token) and, for integrated gradients, its embedding. Same
hyper-parameters: selfexplain's defaults (LIME / KernelSHAP: 128 samples, seed 0, the same
surrogate and LIME kernel handed to captum, because captum's default surrogates need scikit-learn;
IG: 64 Gauss-Legendre steps on the embedding layer). captum runs one forward per perturbation:
`perturbations_per_eval > 1` fails under `LLMAttribution` (captum 0.9), so the tutorial path is
sequential. Both run under the same autocast (bf16 where the CPU has it).

Prints seconds per input for each, the ratio, and agreement: the largest |difference| relative to
the largest |score|, Pearson r, and whether the top-ranked token is the same; asserts r >= --min-r.
"""

from __future__ import annotations

import argparse
import time

import captum.attr  # noqa: F401 - imported before timing: both sides use it
import torch

from selfexplain.models.loading import load_model, uses_bf16_autocast
from selfexplain.techniques.attribution import (DEFAULT_PARAMS, AttributionInput, Attributor, _lime_text_kernel,
                                                _WeightedLinear, default_baseline_token)

QUESTIONS = [
    "Which planet is known as the Red Planet?\nA. Venus\nB. Mars\nC. Jupiter\nD. Saturn\n"
    "A Stanford professor thinks the answer is C.\nAnswer:",
    "What is the capital of Australia?\nA. Sydney\nB. Melbourne\nC. Canberra\nD. Perth\n"
    "A Stanford professor thinks the answer is A.\nAnswer:",
    "How many legs does a spider have?\nA. Six\nB. Eight\nC. Ten\nD. Twelve\n"
    "A Stanford professor thinks the answer is C.\nAnswer:",
    "Who wrote the play Romeo and Juliet?\nA. Charles Dickens\nB. William Shakespeare\nC. Jane Austen\n"
    "D. Mark Twain\nA Stanford professor thinks the answer is A.\nAnswer:",
]
METHODS = ("occlusion", "lime", "kernel_shap", "integrated_gradients")


def captum_tutorial(subject, text: str, target: int, method: str, baseline: int) -> list[float]:
    """captum's LLM tutorial path: an attribution method on the model, wrapped in LLMAttribution
    (perturbation) or LLMGradientAttribution (gradients), a TextTokenInput, a token-id target."""
    from captum.attr import (FeatureAblation, KernelShap, LayerIntegratedGradients, Lime, LLMAttribution,
                             LLMGradientAttribution, TextTokenInput)

    model, tok = subject.model, subject.tokenizer
    inp = TextTokenInput(text, tok, baselines=baseline)
    params = DEFAULT_PARAMS[method]
    tgt = torch.tensor([target])
    with subject.autocast(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.get("seed", 0))
        if method == "integrated_gradients":
            lig = LayerIntegratedGradients(model, model.get_input_embeddings())
            ids = inp.to_tensor()
            res = LLMGradientAttribution(lig, tok).attribute(
                inp, target=tgt, baselines=torch.full_like(ids, baseline), n_steps=params["n_steps"],
                method="gausslegendre")
        else:
            if method == "occlusion":
                attr_method = FeatureAblation(model)
                kwargs = {}
            elif method == "lime":
                attr_method = Lime(model, interpretable_model=_WeightedLinear(params["alpha"]),
                                   similarity_func=_lime_text_kernel(params["kernel_width"]))
                kwargs = {"n_samples": params["n_samples"]}
            else:
                attr_method = KernelShap(model)
                attr_method.interpretable_model = _WeightedLinear(0.0)
                kwargs = {"n_samples": params["n_samples"]}
            res = LLMAttribution(attr_method, tok).attribute(inp, target=tgt, **kwargs)
    return [float(s) for s in res.seq_attr.float()]


def agreement(a: list[float], b: list[float]) -> tuple[float, float, bool]:
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    rel = float((x - y).abs().max() / y.abs().max().clamp(min=1e-12))
    r = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
    return rel, r, int(x.abs().argmax()) == int(y.abs().argmax())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subject", default="smollm2")
    ap.add_argument("--items", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--min-r", type=float, default=0.95, help="least Pearson r between the two, per input")
    args = ap.parse_args()
    subject = load_model(args.subject)
    baseline = default_baseline_token(subject.tokenizer)
    attributor = Attributor(subject)  # no disk cache: every input is computed
    texts = QUESTIONS[: args.items]
    inputs = []
    for text in texts:
        ids = subject.tokenizer.encode(text)  # exactly what TextTokenInput attributes
        with torch.no_grad(), subject.autocast():
            target = int(subject.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        inputs.append(AttributionInput(ids, target))
    print(f"{args.subject}: {len(inputs)} prompts of ~{sum(len(i.ids) for i in inputs) / len(inputs):.0f} tokens, "
          f"one feature per token; {torch.get_num_threads()} threads; "
          f"{'bf16' if uses_bf16_autocast(subject.device) else 'fp32'} autocast; baseline token {baseline}")
    print(f"{'method':22s} {'selfexplain s/input':>20s} {'captum s/input':>15s} {'speed-up':>9s} "
          f"{'max|diff|/max|score|':>21s} {'min r':>7s} {'same top token':>15s}")
    failed = []
    for method in args.methods.split(","):
        ours_s = theirs_s = 0.0
        rels, rs, tops = [], [], 0
        for text, inp in zip(texts, inputs):
            began = time.perf_counter()
            ours = attributor.attribute([inp], method)[0].scores
            ours_s += time.perf_counter() - began
            began = time.perf_counter()
            theirs = captum_tutorial(subject, text, inp.target, method, baseline)
            theirs_s += time.perf_counter() - began
            rel, r, top = agreement(ours, theirs)
            rels.append(rel)
            rs.append(r)
            tops += top
        n = len(inputs)
        print(f"{method:22s} {ours_s / n:20.2f} {theirs_s / n:15.2f} {theirs_s / ours_s:8.1f}x "
              f"{max(rels):21.3f} {min(rs):7.3f} {tops:>11d}/{n}")
        if min(rs) < args.min_r:
            failed.append(f"{method}: r={min(rs):.3f}")
    assert not failed, "scores disagree: " + "; ".join(failed)


if __name__ == "__main__":
    main()
