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

All functions are pure except `class_probabilities`, the only place that runs the model (option
log-likelihoods come from `generation.option_logprobs` with SUBJECT_LAYOUT).
"""

from __future__ import annotations

import math
import numbers
import random
import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from selfexplain.errors import ConfigError, DataError
from selfexplain.models.generation import ScoreLayout, option_logprobs, prompt_logits
from selfexplain.models.loading import LoadedModel, base_model, eval_mode

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


# ----- the model helpers --------------------------------------------------------------------
def _token_ids(ids: object) -> bool:
    return isinstance(ids, numbers.Integral) and not isinstance(ids, bool)


def class_probabilities(subject: LoadedModel, prompts_ids: Sequence[Sequence[int]],
                        class_token_ids: Sequence[int] | Sequence[Sequence[int]],
                        batch_size: int = 16) -> torch.Tensor:
    """(N, C) float32: per prompt, the subject's probability of each class, a softmax over the
    classes only.

    `class_token_ids` is one token id per class (its next-token logit at the last position is
    read) or one token-id sequence per class (multi-token options, e.g. answer texts): then a
    class's score is the summed log-likelihood of its whole sequence after the prompt
    (`generation.option_logprobs`). Both give the same numbers for single-token classes: the softmax
    of logits and of log-probabilities at the same position only differ by a constant.
    Batched and left-padded (rows sorted by length to pad little); the result is in prompt order
    and matches one-at-a-time runs."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    vocab = _vocab_size(subject)
    if len(class_token_ids) and not all(_token_ids(c) for c in class_token_ids):
        options = _check_options(class_token_ids, vocab)
        if any(len(o) > 1 for o in options):
            if any(len(p) == 0 for p in prompts_ids):
                raise DataError("a prompt has no tokens (did a perturbation remove everything?)")
            per_prompt = checked_options(subject, prompts_ids, [options] * len(prompts_ids))
            scores = option_logprobs(subject, prompts_ids, per_prompt, batch_size=batch_size, layout=SUBJECT_LAYOUT)
            out = torch.empty((len(prompts_ids), len(options)), dtype=torch.float32)
            for i, row in enumerate(scores):
                out[i] = torch.softmax(row, dim=-1)
            return out
        class_token_ids = [o[0] for o in options]
    classes = [int(c) for c in class_token_ids]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ConfigError(f"need at least two distinct class token ids, got {classes}")
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
            logits, *_ = prompt_logits(subject, [prompts_ids[i] for i in rows], min_shared_prefix=MIN_SHARED_PREFIX)
            out[rows] = torch.softmax(logits[:, index], dim=-1).cpu()
    return out


# A batch whose prompts all start with this many tokens runs them once (KV cache) for every row:
# perturbations of one input share its chat header and template text (~15-25% of the tokens).
MIN_SHARED_PREFIX = 8
# How the subject's option log-likelihoods are batched (longest prompts first, shared prefixes
# run once, only multi-token options continue): kept so stored numbers stay bit-identical.
SUBJECT_LAYOUT = ScoreLayout(longest_first=True, min_shared_prefix=MIN_SHARED_PREFIX, continuation="tails")


def _vocab_size(subject: LoadedModel) -> int:
    head = base_model(subject.model).get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(subject.config.vocab_size)


def _check_options(options: Sequence[Sequence[int]], vocab: int) -> list[list[int]]:
    """Options as lists of ints: at least two, distinct, non-empty, inside the vocabulary."""
    out = []
    for option in options:
        if _token_ids(option) or not all(_token_ids(t) for t in option):
            raise ConfigError(f"an option must be a sequence of token ids, got {option!r}")
        out.append([int(t) for t in option])
    if len(out) < 2 or any(not o for o in out) or len({tuple(o) for o in out}) != len(out):
        raise ConfigError(f"need at least two distinct, non-empty options, got {out}")
    if any(not 0 <= t < vocab for o in out for t in o):
        raise ConfigError(f"option token ids must be < the vocabulary size {vocab}, got {out}")
    return out


def checked_options(subject: LoadedModel, prompts_ids: Sequence[Sequence[int]],
                    options: Sequence[Sequence[Sequence[int]]]) -> list[list[list[int]]]:
    """Each prompt's options as lists of ints, for `generation.option_logprobs` with
    SUBJECT_LAYOUT, after checking them (at least two, distinct, non-empty) and the prompts
    (non-empty) against the subject's vocabulary: a bad id fails here, with its reason."""
    vocab = _vocab_size(subject)
    opts = [_check_options(o, vocab) for o in options]
    if any(len(p) == 0 for p in prompts_ids):
        raise DataError("a prompt has no tokens (did a perturbation remove everything?)")
    if any(not _token_ids(t) or not 0 <= t < vocab for p in prompts_ids for t in p):
        raise DataError(f"a prompt has token ids outside the vocabulary (size {vocab})")
    return opts
