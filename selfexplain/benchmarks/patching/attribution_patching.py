"""Attribution patching (Nanda 2023; Syed et al. 2023): the human-centric tool of the patching
benchmark. A first-order estimate of each patch's effect replaces running the patch:

    effect ~= sum over the block's layers l of  grad_{h_l} m . (h_l^cf - h_l^clean)

at the patched token, where m = logit(clean answer) - logit(counterfactual answer) at the last
position, and each h_l is the residual stream (decoder block output) at the patched position.
Every layer of the block is patched, so each gradient is taken with the other overrides held
fixed: the clean run's values at (l, token) are replaced by leaf tensors equal to them, and the
gradient with respect to each leaf is exactly that partial derivative. The predicted drop,
-effect / m (the share of the clean logit gap the patch closes), becomes "changes" above a
threshold fitted on training records (balanced accuracy), as the ablation attribution
baselines do. Cost per pair of prompts: one counterfactual forward, and per token type one
forward + backward over all of its layer blocks (batched rows).
"""

from __future__ import annotations

import random
import time
from typing import Sequence

import torch

from selfexplain.benchmarks.ablation.attribution_baselines import _balanced_accuracy, fit_threshold
from selfexplain.data.facts import Fact
from selfexplain.explainers.base import Explainer, Explanation
from selfexplain.models.loading import LoadedModel, decoder_layers, eval_mode
from selfexplain.records import Record
from selfexplain.techniques.interventions import _hidden, _replace_hidden, record_residual

# The clean logit gap below which the share is not divided further (the subject barely prefers its answer).
MIN_GAP = 1e-3


def patch_effect_estimates(subject: LoadedModel, ids: Sequence[int], position: int,
                           blocks: Sequence[tuple[int, int]], cf_values: dict[int, torch.Tensor],
                           target: int, rival: int) -> tuple[list[float], float]:
    """First-order estimates of m(patched) - m(clean), one per layer block (each patched at
    every layer of the block at `position` with `cf_values[layer]`), where m = logit[target] -
    logit[rival] at the last position; and m on the clean prompt. One forward + backward."""
    layers = decoder_layers(subject.model)
    leaves: dict[int, tuple[list[int], torch.Tensor]] = {}
    handles = []
    for layer in range(len(layers)):
        rows = [i for i, (first, last) in enumerate(blocks) if first <= layer <= last]
        if not rows:
            continue

        def hook(_module, _args, output, layer=layer, rows=rows):
            hidden = _hidden(output)
            leaf = hidden[rows, position].detach().clone().requires_grad_(True)
            leaves[layer] = (rows, leaf)
            hidden = hidden.clone()
            hidden[rows, position] = leaf.to(hidden.dtype)
            return _replace_hidden(output, hidden)
        handles.append(layers[layer].register_forward_hook(hook))
    batch = torch.tensor([list(ids)] * len(blocks), device=subject.device)
    try:
        with eval_mode(subject.model), torch.enable_grad(), subject.autocast():
            logits = subject.model(input_ids=batch, logits_to_keep=1).logits[:, -1].float()
    finally:
        for h in handles:
            h.remove()
    m = logits[:, target] - logits[:, rival]
    order = sorted(leaves)
    grads = torch.autograd.grad(m.sum(), [leaves[layer][1] for layer in order])
    estimates = torch.zeros(len(blocks), dtype=torch.float64)
    for layer, grad in zip(order, grads):
        rows, leaf = leaves[layer]
        delta = cf_values[layer].to(leaf.device).float() - leaf.detach().float()
        estimates[rows] += (grad.float() * delta).sum(-1).double().cpu()
    return estimates.tolist(), float(m[0].detach())


class AttributionPatching(Explainer):
    """Predicts each patch's effect from gradients instead of running it, thresholded on training."""

    name = "attribution-patching"
    description = ("attribution patching (gradient x activation difference at the patched layer block and token), "
                   "the share of the clean logit gap it closes, thresholded on training items")

    def __init__(self, bench, subject: LoadedModel, facts: dict[tuple[str, str], Fact], n_fit: int = 64,
                 seed: int = 0):
        self.bench = bench
        self.subject = subject
        self.facts = facts
        self.n_fit = n_fit
        self.seed = seed
        self.threshold = 1.0
        self.fit_stats: dict = {}

    def _shares(self, records: Sequence[Record]) -> tuple[list[float], list[float]]:
        """Per record: the predicted share of the clean logit gap the patch closes, and seconds."""
        shares, seconds = [0.0] * len(records), [0.0] * len(records)
        pairs: dict[tuple, list[int]] = {}
        for i, r in enumerate(records):
            c = r.context
            pairs.setdefault((c["relation"], c["entity"], c["cf_entity"], tuple(c["options"])), []).append(i)
        subject, bench = self.subject, self.bench
        for (relation, entity, cf_entity, options), members in pairs.items():
            start = time.perf_counter()
            base = bench.encode(subject, self.facts[(relation, entity)], options)
            cf = bench.encode(subject, self.facts[(relation, cf_entity)], options)
            with torch.no_grad(), eval_mode(subject.model), record_residual(
                    subject.model, range(subject.num_layers)) as resid, subject.autocast():
                subject.model(input_ids=torch.tensor([cf.ids], device=subject.device), logits_to_keep=1)
            first = records[members[0]].context
            target = bench.first_token(subject, first["clean_answer"])
            rival = bench.first_token(subject, first["cf_clean_answer"])
            by_kind: dict[str, list[int]] = {}
            for i in members:
                by_kind.setdefault(records[i].context["token_type"], []).append(i)
            for kind, idx in by_kind.items():
                blocks = sorted({tuple(records[i].context["block"]) for i in idx})
                values = {layer: v[0, cf.positions[kind]] for layer, v in resid.items()}
                estimates, gap = patch_effect_estimates(subject, base.ids, base.positions[kind], blocks, values,
                                                        target, rival)
                share = {b: -e / max(gap, MIN_GAP) for b, e in zip(blocks, estimates)}
                for i in idx:
                    shares[i] = share[tuple(records[i].context["block"])]
            per = (time.perf_counter() - start) / len(members)
            for i in members:
                seconds[i] = per
        return shares, seconds

    def fit(self, train: Sequence[Record]) -> None:
        """The threshold on the share that maximises balanced accuracy on up to `n_fit` training
        records, balanced by label."""
        rng = random.Random(self.seed)
        by_label: dict[str, list[Record]] = {}
        for r in train:
            by_label.setdefault(r.context["label"], []).append(r)
        per_label = self.n_fit // max(1, len(by_label))
        picked = [r for label in sorted(by_label)
                  for r in rng.sample(by_label[label], min(per_label, len(by_label[label])))]
        if not picked:
            return
        shares, seconds = self._shares(picked)
        changed = [r.context["changed"] for r in picked]
        self.threshold = fit_threshold(shares, changed)
        self.fit_stats = {"n_fit": len(picked), "threshold": self.threshold,
                          "fit_balanced_accuracy": _balanced_accuracy(shares, changed, self.threshold),
                          "fit_seconds": float(sum(seconds))}

    def info(self) -> dict:
        return {"method": "attribution_patching", **self.fit_stats}

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        shares, seconds = self._shares(queries)
        out = []
        for r, share, s in zip(queries, shares, seconds):
            c = r.context
            text = (self.bench.t["answer_changed"].format(answer=c["cf_clean_answer"]) if share > self.threshold
                    else self.bench.t["answer_unchanged"].format(answer=c["clean_answer"]))
            # per explanation: the base prompt (with its backward pass) and the counterfactual prompt
            out.append(Explanation(text, forward_passes=2, seconds=s, fields={"gap_share": share}))
        return out
