"""ERASER faithfulness (DeYoung et al. 2020) of a rationale, measured on the subject model.

p is the subject's probability of its own predicted class (argmax on the full input), read as
a softmax over the class tokens only, so it is comparable across prompts:
- comprehensiveness = p(x) - p(x \\ r): how much removing the rationale hurts (higher better);
- sufficiency = p(x) - p(r): how much keeping only the rationale hurts (lower better);
- AOPC = the mean of a metric over rationales made of the top {1, 5, 10, 20, 50}% ranked tokens
  (the reference code `rationale_benchmark/metrics.py` averages over exactly these bins; no
  empty 0% bin is added).

Raw numbers depend on rationale length and on how fragile the prompt is, so each metric is
also normalised against random rationales of the same length and scope (Carton et al. 2020
found human rationales not reliably sufficient; a random baseline tells "faithful" from
"any k tokens would do"). See `normalize`.

All functions are pure except `class_probabilities`, the one place that runs the model.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from .errors import ConfigError, DataError
from .interventions import left_pad
from .models import LoadedModel, base_model, eval_mode

AOPC_BINS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20, 0.50)
STRATEGIES = ("delete", "replace")


# ----- formulas -----------------------------------------------------------------------------
def comprehensiveness(p_full: float, p_without: float) -> float:
    """p(x) - p(x \\ r): the drop in the predicted class's probability when r is removed."""
    return float(p_full) - float(p_without)


def sufficiency(p_full: float, p_only: float) -> float:
    """p(x) - p(r): the drop when only r is kept (0 or below: r alone suffices)."""
    return float(p_full) - float(p_only)


def aopc(p_full: float, p_bins: Sequence[float], bins: Sequence[float] = AOPC_BINS) -> float:
    """Mean over bins of p(x) - p(perturbed_k), where perturbed_k removes (comprehensiveness)
    or keeps only (sufficiency) the top bins[k] fraction of tokens: both AOPCs are this mean."""
    if len(p_bins) != len(bins) or not bins:
        raise ConfigError(f"aopc needs one probability per bin ({len(bins)}), got {len(p_bins)}")
    return sum(float(p_full) - float(p) for p in p_bins) / len(bins)


def predicted_class(probs: Sequence[float] | torch.Tensor) -> int:
    """The subject's own class: argmax of the full-input probabilities, lowest index on ties."""
    values = [float(p) for p in probs]
    return max(range(len(values)), key=lambda i: (values[i], -i))


def probability_drop(full: Sequence[float] | torch.Tensor, perturbed: Sequence[float] | torch.Tensor) -> float:
    """p(x) - p(x') for the class predicted on x: comprehensiveness when x' = x \\ r,
    sufficiency when x' = r (ERASER scores the class the model predicted, not the gold one)."""
    c = predicted_class(full)
    return float(full[c]) - float(perturbed[c])


# ----- choosing rationales ------------------------------------------------------------------
def bin_size(fraction: float, n: int) -> int:
    """Tokens in a `fraction` bin of n candidates: ceil(fraction * n), at least 1 when n > 0.
    Ceil, not floor: floor would leave the 1% bin empty on every input under 100 tokens."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"a rationale fraction must be in (0, 1], got {fraction}")
    return min(n, math.ceil(round(fraction * n, 9)))  # round: 0.1 * 30 is 3.0000000000000004


def top_k_positions(scores: Sequence[float], fraction: float, positions: Sequence[int]) -> list[int]:
    """The top ceil(fraction * len(positions)) candidate positions by score, returned sorted.

    `scores` is indexed by token position (as Attribution.scores); only `positions` compete.
    Ties go to the earlier position, so the ranking is deterministic. Rank by signed score
    (support for the predicted class); pass |scores| to rank by magnitude.
    """
    candidates = sorted(set(positions))
    if any(p < 0 or p >= len(scores) for p in candidates):
        raise DataError(f"positions fall outside the {len(scores)} scores")
    k = bin_size(fraction, len(candidates))
    ranked = sorted(candidates, key=lambda p: (-float(scores[p]), p))
    return sorted(ranked[:k])


def random_rationales(positions: Sequence[int], k: int, n: int, seed: int) -> list[list[int]]:
    """n random rationales of k distinct candidate positions each (sorted), from one seeded
    stream: the same arguments always give the same rationales."""
    candidates = sorted(set(positions))
    if not 0 <= k <= len(candidates):
        raise ConfigError(f"cannot draw {k} of {len(candidates)} positions")
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    return [sorted(rng.sample(candidates, k)) for _ in range(n)]


# ----- normalisation ------------------------------------------------------------------------
@dataclass(frozen=True)
class Normalized:
    """A metric next to the same metric for random rationales of equal length.

    difference = raw - random_mean, in probability units and with the raw metric's direction:
    > 0 is better than random for comprehensiveness, < 0 better than random for sufficiency.
    It is the headline number: it averages linearly over items and stays defined when the
    random baseline is ~0 (typical for sufficiency).
    ratio = raw / random_mean (how many times random), NaN when |random_mean| < 1e-12; a ratio
    of means, so compute it from dataset means, not by averaging per-item ratios.
    """

    raw: float
    random_mean: float
    random_std: float
    n_random: int
    difference: float
    ratio: float


def normalize(metric: float, random_metrics: Iterable[float]) -> Normalized:
    """Compare `metric` with the metric of random rationales of the same length and scope."""
    values = [float(v) for v in random_metrics]
    if not values:
        raise ConfigError("normalize needs at least one random-rationale metric")
    mean = statistics.fmean(values)
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    ratio = float(metric) / mean if abs(mean) >= 1e-12 else math.nan
    return Normalized(float(metric), mean, std, len(values), float(metric) - mean, ratio)


# ----- building perturbed inputs ------------------------------------------------------------
def _check(ids: Sequence[int], positions: Iterable[int], strategy: str, baseline_token: int | None) -> set[int]:
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if strategy == "replace" and (not isinstance(baseline_token, int) or isinstance(baseline_token, bool)):
        raise ConfigError("strategy 'replace' needs baseline_token=<token id>")
    chosen = set(positions)
    if any(p < 0 or p >= len(ids) for p in chosen):
        raise DataError(f"rationale positions fall outside the {len(ids)}-token input")
    return chosen


def _perturb(ids: Sequence[int], drop: set[int], strategy: str, baseline_token: int | None) -> list[int]:
    if strategy == "delete":
        return [t for i, t in enumerate(ids) if i not in drop]
    return [baseline_token if i in drop else t for i, t in enumerate(ids)]


def without_rationale(ids: Sequence[int], rationale: Iterable[int], strategy: str = "delete",
                      baseline_token: int | None = None) -> list[int]:
    """x \\ r: the rationale's tokens deleted (ERASER default) or replaced by baseline_token
    (keeps positions and length, at the price of an unnatural token)."""
    drop = _check(ids, rationale, strategy, baseline_token)
    return _perturb(ids, drop, strategy, baseline_token)


def only_rationale(ids: Sequence[int], rationale: Iterable[int], scope: Iterable[int] | None = None,
                   strategy: str = "delete", baseline_token: int | None = None) -> list[int]:
    """r: every `scope` token outside the rationale removed; tokens outside `scope` (the prompt
    template, the question, the answer cue) stay, so the task is still posed.
    `scope` defaults to the whole input."""
    keep = _check(ids, rationale, strategy, baseline_token)
    candidates = set(range(len(ids))) if scope is None else _check(ids, scope, strategy, baseline_token)
    return _perturb(ids, candidates - keep, strategy, baseline_token)


# ----- the model helper ---------------------------------------------------------------------
def class_probabilities(subject: LoadedModel, prompts_ids: Sequence[Sequence[int]],
                        class_token_ids: Sequence[int], batch_size: int = 16) -> torch.Tensor:
    """(N, C) float32: per prompt, the softmax over the class tokens' next-token logits at the
    last position. Batched and left-padded (rows sorted by length to pad little); the result
    is in prompt order and matches one-at-a-time runs."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    classes = [int(c) for c in class_token_ids]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ConfigError(f"need at least two distinct class token ids, got {classes}")
    head = base_model(subject.model).get_output_embeddings()
    vocab = int(head.weight.shape[0]) if head is not None else int(subject.config.vocab_size)
    if any(not 0 <= c < vocab for c in classes):
        raise ConfigError(f"class token ids must be < the vocabulary size {vocab}, got {classes}")
    if any(len(p) == 0 for p in prompts_ids):
        raise DataError("a prompt has no tokens (did a perturbation remove everything?)")
    out = torch.empty((len(prompts_ids), len(classes)), dtype=torch.float32)
    if not prompts_ids:
        return out
    order = sorted(range(len(prompts_ids)), key=lambda i: -len(prompts_ids[i]))
    index = torch.tensor(classes, device=subject.device)
    with eval_mode(subject.model), subject.autocast():
        for lo in range(0, len(order), batch_size):
            rows = order[lo:lo + batch_size]
            batch = left_pad([prompts_ids[i] for i in rows], subject.tokenizer.pad_token_id, subject.device)
            logits = subject.model(**batch.model_inputs(), logits_to_keep=1).logits[:, -1]
            out[rows] = torch.softmax(logits.float()[:, index], dim=-1).cpu()
    return out
