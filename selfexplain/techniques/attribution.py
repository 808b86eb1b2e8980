"""Input attribution for the subject's own prediction: one call signature, six methods.

Every method explains the same scalar, f(x) = log_softmax(logits at the last position)[target]
in float32, so scores from different methods are comparable. Perturbation methods
(occlusion, LIME, KernelSHAP) and integrated gradients come from captum; the attention
methods read the model's own attention weights.

Speed: the tokens before `start` never change, and neither do the attributable tokens before
the first one a batch perturbs, so their KV cache is computed once (the clean run) and reused
for every perturbed row; only the rest of each row is recomputed, many rows per forward.
Results are cached on disk, so re-running a benchmark costs no forward pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import numbers
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from selfexplain.runs.atomic import write_json
from selfexplain.errors import ConfigError, DataError, ModelLoadError
from selfexplain.models.loading import LoadedModel, base_model
from selfexplain.models.prefix_cache import cache_input, output_cache, prefix_cache, repeat_cache

log = logging.getLogger(__name__)

METHODS: dict[str, str] = {
    "occlusion": "occlusion (captum FeatureAblation): drop in log-prob when a feature becomes the baseline token",
    "lime": "LIME (captum Lime): weighted ridge surrogate on random on/off masks of the features",
    "kernel_shap": "KernelSHAP (captum KernelShap): Shapley values estimated from sampled coalitions",
    "integrated_gradients": "integrated gradients (captum) on the input embeddings, from the baseline token's",
    "attention_last": "last-layer attention from the last position, mean over heads",
    "attention_rollout": "attention rollout (Abnar & Zuidema 2020): 0.5*A+0.5*I per layer, product over layers",
}
# The methods in order of cost per input (attention is one forward, the perturbation methods many):
# runs answer with the cheapest first, so partial results appear early.
CHEAPEST_FIRST = ("attention_last", "attention_rollout", "integrated_gradients", "occlusion", "lime", "kernel_shap")

PERTURBATION_METHODS = ("occlusion", "lime", "kernel_shap")

# Defaults, chosen for a ~50-feature span on a CPU (see bench/attribution_speed.py):
# - n_samples=128: ~4x the ~30 words of a hinted MC question, so the KernelSHAP / LIME
#   regressions are well over-determined, in 4 forwards of 32 rows per input;
# - n_steps=64 Gauss-Legendre steps: on SmolLM2 the log-prob along the embedding path is bumpy;
#   measured completeness error |sum - (f(x) - f(baseline))| / |f(x) - f(baseline)| on MC
#   prompts was 14-84% at 16 steps, 10-45% at 32, 4-11% at 64;
# - kernel_width=0.25, alpha=1.0: the `lime` package's text explainer (cosine distance * 100 with
#   width 25, Ridge(alpha=1) on unnormalised weights);
# - baseline_token=None: the tokenizer's pad token (else unk, else eos).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "occlusion": {"baseline_token": None},
    "lime": {"n_samples": 128, "seed": 0, "kernel_width": 0.25, "alpha": 1.0, "baseline_token": None},
    "kernel_shap": {"n_samples": 128, "seed": 0, "baseline_token": None},
    "integrated_gradients": {"n_steps": 64, "baseline_token": None},
    "attention_last": {},
    "attention_rollout": {},
}

CACHE_VERSION = 1  # bump when a method's numerics change, so old cache files are not reused


@dataclass
class AttributionInput:
    """A prompt to explain; ids[:start] and ids[end:] are fixed, [start, end) is attributable."""

    ids: list[int]
    target: int
    start: int = 0
    end: int | None = None
    groups: list[int] | None = None  # feature index per position in [start, end); perturbation methods only

    @property
    def stop(self) -> int:
        return len(self.ids) if self.end is None else self.end


@dataclass
class Attribution:
    """Scores for one input, one per position of ids (0.0 outside [start, end)).

    `forward_passes` counts model rows (sequences in a batch) actually evaluated for this
    input: the clean run counts 1, a fixed-context run counts 1, each perturbed or
    interpolated row counts 1 however much of it a reused cache made unnecessary, and a row
    that is also back-propagated (integrated gradients) still counts 1. Rows identical to the
    unperturbed prompt reuse the clean value and are not counted.
    """

    method: str
    scores: list[float]
    target: int
    params: dict
    forward_passes: int
    seconds: float
    cached: bool = False

    def mass(self, positions: Iterable[int]) -> float:
        """Share of the total |score| that falls on `positions` (0.0 when the total is 0)."""
        total = sum(abs(s) for s in self.scores)
        if total == 0:
            return 0.0
        picked = {p for p in positions if 0 <= p < len(self.scores)}
        return sum(abs(self.scores[p]) for p in picked) / total

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Attribution":
        return cls(method=data["method"], scores=[float(s) for s in data["scores"]], target=int(data["target"]),
                   params=dict(data["params"]), forward_passes=int(data["forward_passes"]),
                   seconds=float(data["seconds"]), cached=bool(data.get("cached", False)))


# ----- validation ---------------------------------------------------------------------------
def _vocab_size(subject: LoadedModel) -> int:
    out = base_model(subject.model).get_output_embeddings()
    return int(out.weight.shape[0]) if out is not None else int(subject.config.vocab_size)


def default_baseline_token(tokenizer) -> int:
    """The 'absent' token: pad, else unk, else eos."""
    for name in ("pad_token_id", "unk_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ConfigError("the tokenizer has no pad, unk or eos token: pass baseline_token=<token id>")


def resolve_params(subject: LoadedModel, method: str, params: dict) -> dict:
    """DEFAULT_PARAMS[method] updated with `params`, checked, baseline token made concrete."""
    if method not in METHODS:
        raise ConfigError(f"unknown attribution method '{method}'; choose one of: {', '.join(METHODS)}")
    defaults = DEFAULT_PARAMS[method]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ConfigError(f"{method} takes no parameter {', '.join(unknown)}; it takes: "
                          f"{', '.join(defaults) or 'none'}")
    out = {**defaults, **params}
    if "baseline_token" in out:
        if out["baseline_token"] is None:
            out["baseline_token"] = default_baseline_token(subject.tokenizer)
        if not _is_int(out["baseline_token"]) or not 0 <= out["baseline_token"] < _vocab_size(subject):
            raise ConfigError(f"baseline_token must be a token id of the subject, got {out['baseline_token']!r}")
    for name, low in (("n_samples", 1), ("n_steps", 1), ("seed", 0)):
        if name in out and (not _is_int(out[name]) or out[name] < low):
            raise ConfigError(f"{method}: {name} must be an integer >= {low}, got {out[name]!r}")
    if method == "kernel_shap" and out["n_samples"] < 2:
        raise ConfigError("kernel_shap: n_samples must be >= 2 (the full and the empty coalition)")
    if "kernel_width" in out and not (isinstance(out["kernel_width"], (int, float)) and out["kernel_width"] > 0):
        raise ConfigError(f"lime: kernel_width must be > 0, got {out['kernel_width']!r}")
    if "alpha" in out and not (isinstance(out["alpha"], (int, float)) and out["alpha"] >= 0):
        raise ConfigError(f"lime: alpha must be >= 0, got {out['alpha']!r}")
    return out


def _is_int(value: object) -> bool:
    """Python or numpy integers, not bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def validate_input(inp: AttributionInput, vocab_size: int) -> None:
    """Raise DataError (one line) for a span, groups or target that cannot be explained."""
    n = len(inp.ids)
    if n == 0:
        raise DataError("attribution input has no tokens")
    if any(not _is_int(t) or not 0 <= t < vocab_size for t in inp.ids):
        raise DataError(f"attribution input has token ids outside the vocabulary (size {vocab_size})")
    if not _is_int(inp.target) or not 0 <= inp.target < vocab_size:
        raise DataError(f"attribution target {inp.target!r} is outside the vocabulary (size {vocab_size})")
    if not _is_int(inp.start) or not _is_int(inp.stop):
        raise DataError(f"attributable span bounds must be integers, got start={inp.start!r}, end={inp.end!r}")
    if inp.start < 0 or inp.stop > n or inp.start >= inp.stop:
        raise DataError(f"attributable span [{inp.start}, {inp.stop}) is empty or outside the {n} prompt tokens")
    if inp.groups is not None:
        if len(inp.groups) != inp.stop - inp.start:
            raise DataError(f"groups has {len(inp.groups)} entries but the span [{inp.start}, {inp.stop}) "
                            f"has {inp.stop - inp.start} positions")
        if any(not _is_int(g) for g in inp.groups):
            raise DataError("groups must be integers (one feature index per attributable position)")


# ----- disk cache ---------------------------------------------------------------------------
def cache_key(subject_name: str, method: str, params: dict, inp: AttributionInput) -> str:
    """sha256 of a canonical JSON of everything the scores depend on."""
    fields = {"version": CACHE_VERSION, "subject": subject_name, "method": method, "params": params,
              "ids": [int(t) for t in inp.ids], "target": int(inp.target), "start": int(inp.start),
              "end": int(inp.stop), "groups": None if inp.groups is None else [int(g) for g in inp.groups]}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _cache_path(root: Path, key: str) -> Path:
    return root / "attributions" / key[:2] / f"{key}.json"


def _load_cached(root: Path | None, key: str) -> Attribution | None:
    if root is None:
        return None
    path = _cache_path(root, key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # a torn or foreign file: recompute and overwrite it
        log.warning("ignoring unreadable attribution cache file %s: %s", path, exc)
        return None
    result = Attribution.from_dict(data)
    result.cached = True
    return result


def _store(root: Path | None, key: str, result: Attribution) -> None:
    """Cache a result (atomic write: a killed run never leaves a half file)."""
    if root is None:
        return
    path = _cache_path(root, key)
    try:
        write_json(path, {**result.to_dict(), "cached": False}, indent=None)
    except OSError as exc:  # a cache: a failed write only costs a recomputation
        log.warning("could not cache attribution at %s: %s", path, exc)


# ----- evaluating f on many variants of one prompt ------------------------------------------
# Fixed cost of one forward call, in recomputed tokens, for the row-chunking cost model.
# CPU: one 72-token row alone ran at ~180 tok/s vs ~490 tok/s batched (SmolLM2, 2 threads),
# i.e. ~130 tokens of overhead; a GPU is dominated by per-call cost, so it prefers few calls.
FORWARD_OVERHEAD_TOKENS: dict[str, int] = {"cpu": 64, "cuda": 4096}


def split_rows(firsts: Sequence[int], length: int, overhead: int) -> list[tuple[int, int]]:
    """Cut rows sorted by first changed position into consecutive chunks [lo, hi) minimising
    recomputed tokens + `overhead` per forward; a chunk recomputes from its first row's position.

    Exact dynamic programme over cut points (at most batch_size rows, so O(n^2) is nothing).
    """
    n = len(firsts)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for hi in range(1, n + 1):
        for lo in range(hi):
            cost = best[lo] + (hi - lo) * (length - firsts[lo]) + overhead
            if cost < best[hi]:
                best[hi], cut[hi] = cost, lo
    chunks, hi = [], n
    while hi > 0:
        chunks.append((cut[hi], hi))
        hi = cut[hi]
    return chunks[::-1]


class _Scorer:
    """f = log p(target | prompt) at the last position, for batches of span variants.

    With `reuse_kv`, the clean prompt is run once and its KV cache reused: rows are
    recomputed only from the first position they change (never before `start`).
    Without it, every row is recomputed from position 0 (the reference for checks).
    """

    def __init__(self, subject: LoadedModel, inp: AttributionInput, reuse_kv: bool):
        self.subject = subject
        self.model = subject.model
        self.device = subject.device
        self.target = int(inp.target)
        self.start, self.end = inp.start, inp.stop
        self.ids = torch.tensor(inp.ids, dtype=torch.long, device=self.device)
        self.span = self.ids[self.start:self.end]
        self.reuse_kv = reuse_kv
        self.rows = 0
        self._cache = None  # KV cache of ids[:self._cache_len]
        self._cache_len = 0
        self._clean: torch.Tensor | None = None

    def _logprob(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1].float().log_softmax(-1)[:, self.target]

    def _past(self, length: int, n_rows: int):
        """The cached KV of the first `length` tokens, repeated for `n_rows` rows (None for 0)."""
        if length == 0:
            return None
        return repeat_cache(self._cache, n_rows, keep=length, copy=True)

    def _run(self, first: int, n_rows: int, **inputs: torch.Tensor) -> torch.Tensor:
        """Forward rows from position `first` on (ids[:first] come from the cache)."""
        past = self._past(first, n_rows)
        positions = torch.arange(first, len(self.ids), device=self.device).expand(n_rows, -1)
        with self.subject.autocast():
            logits = self.model(**inputs, **cache_input(past), position_ids=positions,
                                use_cache=past is not None, logits_to_keep=1).logits
        self.rows += n_rows
        return self._logprob(logits)

    @torch.no_grad()
    def clean(self) -> torch.Tensor:
        """f(x) on the unperturbed prompt, shape (1,); keeps its KV cache when reusing."""
        if self._clean is None:
            with self.subject.autocast():
                out = self.model(input_ids=self.ids[None], use_cache=self.reuse_kv, logits_to_keep=1)
            self.rows += 1
            self._clean = self._logprob(out.logits)
            if self.reuse_kv:
                self._cache, self._cache_len = output_cache(out), len(self.ids)
        return self._clean

    def _ensure_prefix(self) -> None:
        """A KV cache covering ids[:start] (the fixed context), run once."""
        if self._cache_len >= self.start or self.start == 0:
            return
        with torch.no_grad(), self.subject.autocast():
            self._cache = prefix_cache(self.model, self.ids[None, :self.start])
        self.rows += 1
        self._cache_len = self.start

    @torch.no_grad()
    def span_ids(self, span: torch.Tensor) -> torch.Tensor:
        """f for each row of `span` (B, end-start token ids); unchanged rows reuse f(x).

        Rows are sorted by the first position they change and run in consecutive chunks, each
        from its earliest changed position on (see `split_rows`): occlusion of a late word
        recomputes only the tokens after it.
        """
        span = span.to(self.device)
        out = self.clean().expand(span.shape[0]).clone()
        which = (span != self.span).any(1).nonzero()[:, 0]
        if len(which) == 0:
            return out
        rows = span[which]
        full = torch.cat([self.ids[:self.start].expand(len(rows), -1), rows,
                          self.ids[self.end:].expand(len(rows), -1)], 1)
        firsts = torch.zeros(len(rows), dtype=torch.long, device=self.device)
        if self.reuse_kv:  # argmax finds the first changed position of each row
            firsts = self.start + (rows != self.span).int().argmax(1)
        order = firsts.argsort(stable=True)
        overhead = FORWARD_OVERHEAD_TOKENS.get(self.device.type, 64)
        for lo, hi in split_rows(firsts[order].tolist(), len(self.ids), overhead):
            chunk = order[lo:hi]
            first = int(firsts[chunk[0]])
            out[which[chunk]] = self._run(first, len(chunk), input_ids=full[chunk, first:])
        return out

    def embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings as the model computes them (scaled ones included, e.g. Gemma)."""
        with torch.no_grad():
            return base_model(self.model).get_input_embeddings()(ids)

    def span_embeds(self, span: torch.Tensor) -> torch.Tensor:
        """f for span embeddings (B, end-start, d), differentiable (integrated gradients)."""
        n = span.shape[0]
        suffix = self.embeddings(self.ids[None, self.end:]).expand(n, -1, -1).to(span.dtype)
        if self.reuse_kv:
            self._ensure_prefix()
            return self._run(self.start, n, inputs_embeds=torch.cat([span, suffix], 1))
        prefix = self.embeddings(self.ids[None, :self.start]).expand(n, -1, -1).to(span.dtype)
        return self._run(0, n, inputs_embeds=torch.cat([prefix, span, suffix], 1))


# ----- LIME / KernelSHAP surrogate ----------------------------------------------------------
class _WeightedLinear:
    """Weighted least squares with an intercept, ridge penalty `alpha` on the coefficients.

    Replaces captum's default surrogates (SkLearnLasso / SkLearnLinearRegression), which need
    scikit-learn, a dependency selfexplain does not have. Closed form in float64 on the CPU,
    so it is deterministic; `gelsd` gives the minimum-norm solution when samples < features.
    Implements captum's `Model` interface (fit / representation / __call__).
    """

    def __init__(self, alpha: float = 0.0):
        self.alpha = float(alpha)
        self.coef = torch.zeros(0, dtype=torch.float64)
        self.intercept = 0.0

    def fit(self, train_data, **kwargs: object) -> dict:
        xs, ys, ws = zip(*[(b[0], b[1], b[2]) for b in train_data])
        x = torch.cat(xs).double().cpu()
        x = x.reshape(len(x), -1)
        y = torch.cat(ys).double().cpu().reshape(-1)
        w = torch.cat(ws).double().cpu().reshape(-1)
        mean_x = (w[:, None] * x).sum(0) / w.sum()
        mean_y = float((w * y).sum() / w.sum())
        root = w.sqrt()
        a = (x - mean_x) * root[:, None]
        b = (y - mean_y) * root
        if self.alpha > 0:
            a = torch.cat([a, math.sqrt(self.alpha) * torch.eye(x.shape[1], dtype=torch.float64)])
            b = torch.cat([b, torch.zeros(x.shape[1], dtype=torch.float64)])
        self.coef = torch.linalg.lstsq(a, b[:, None], driver="gelsd").solution[:, 0]
        self.intercept = mean_y - float(mean_x @ self.coef)
        return {}

    def representation(self) -> torch.Tensor:
        return self.coef.float()[None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.double().cpu() @ self.coef + self.intercept


def _lime_text_kernel(width: float) -> Callable[..., torch.Tensor]:
    """Sample weight from the cosine distance between the on/off mask and the all-on mask,
    exp(-d^2 / (2 width^2)), as the `lime` package's text explainer weighs samples."""

    def similarity(original, perturbed, interpretable: torch.Tensor, **kwargs: object) -> torch.Tensor:
        on = float(interpretable.sum())
        total = interpretable.numel()
        distance = 1.0 - math.sqrt(on / total) if on > 0 else 1.0
        return torch.tensor([math.exp(-distance ** 2 / (2 * width ** 2))])

    return similarity


# ----- the methods --------------------------------------------------------------------------
def _feature_mask(inp: AttributionInput, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(feature index per span position, 0..K-1; size of each position's feature)."""
    raw = inp.groups if inp.groups is not None else list(range(inp.stop - inp.start))
    index = {g: i for i, g in enumerate(sorted(set(raw)))}
    mask = torch.tensor([index[g] for g in raw], dtype=torch.long, device=device)
    sizes = torch.bincount(mask)[mask].float()
    return mask, sizes


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG (captum samples there) and restore the caller's RNG state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _perturbation(scorer: _Scorer, inp: AttributionInput, method: str, params: dict,
                  batch_size: int) -> torch.Tensor:
    """Per-token scores on the span: captum's per-feature value divided by the feature's size."""
    from captum.attr import FeatureAblation, KernelShap, Lime

    mask, sizes = _feature_mask(inp, scorer.device)
    span = scorer.span[None]
    common = {"baselines": params["baseline_token"], "feature_mask": mask[None],
              "perturbations_per_eval": batch_size}
    n_features = int(mask.max()) + 1
    with torch.no_grad():
        if method == "occlusion" or (method == "kernel_shap" and n_features == 1):
            # With one feature its Shapley value is exactly f(x) - f(baseline), i.e. occlusion;
            # captum's KernelShap cannot run there (its coalition-size distribution is 0/0).
            attr = FeatureAblation(scorer.span_ids).attribute(span, **common)
        elif method == "lime":
            lime = Lime(scorer.span_ids, interpretable_model=_WeightedLinear(params["alpha"]),
                        similarity_func=_lime_text_kernel(params["kernel_width"]))
            with _seeded(params["seed"]):
                attr = lime.attribute(span, n_samples=params["n_samples"], **common)
        else:
            shap = KernelShap(scorer.span_ids)
            shap.interpretable_model = _WeightedLinear(0.0)  # captum's default needs scikit-learn
            with _seeded(params["seed"]):
                attr = shap.attribute(span, n_samples=params["n_samples"], **common)
    return attr[0].float() / sizes


def _integrated_gradients(scorer: _Scorer, params: dict, batch_size: int) -> torch.Tensor:
    """IG on the span's input embeddings, summed over the hidden dimension per token."""
    from captum.attr import IntegratedGradients

    x = scorer.embeddings(scorer.span[None]).detach()
    base = scorer.embeddings(torch.full_like(scorer.span[None], params["baseline_token"])).detach()
    with torch.enable_grad():
        attr = IntegratedGradients(scorer.span_embeds).attribute(
            x, baselines=base, n_steps=params["n_steps"], method="gausslegendre",
            internal_batch_size=batch_size)
    return attr[0].float().sum(-1).detach()


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Temporarily switch to eager attention, the only kind that returns attention weights
    (sdpa / flash return an empty tuple in transformers 5); restored even on error."""
    hf = base_model(model)
    before = hf.config._attn_implementation
    if before == "eager":
        yield
        return
    hf.set_attn_implementation("eager")
    try:
        yield
    finally:
        hf.set_attn_implementation(before)


def attention_maps(subject: LoadedModel, ids: Sequence[int]) -> list[torch.Tensor]:
    """Per-layer attention weights (heads, L, L) in float32 for one prompt, one forward."""
    x = torch.tensor([list(ids)], dtype=torch.long, device=subject.device)
    with eager_attention(subject.model), torch.no_grad(), subject.autocast():
        attentions = subject.model(input_ids=x, output_attentions=True, logits_to_keep=1).attentions
    if not attentions:
        raise ModelLoadError(f"{subject.name} returned no attention weights even with eager attention")
    return [a[0].float() for a in attentions]


def rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (L, L): per layer A' = 0.5*mean_heads(A) + 0.5*I with rows
    renormalised, multiplied from the first layer up (R = A'_n ... A'_1). Rows sum to 1."""
    result = None
    for layer in attentions:
        a = layer.double().mean(0)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    return result.float()


def _attention(subject: LoadedModel, inp: AttributionInput, method: str) -> torch.Tensor:
    maps = attention_maps(subject, inp.ids)
    row = maps[-1].mean(0)[-1] if method == "attention_last" else rollout(maps)[-1]
    return row[inp.start:inp.stop]


# ----- public entry point -------------------------------------------------------------------
@contextlib.contextmanager
def _inference(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and frozen weights for the duration, restoring the caller's
    mode and flags. Integrated gradients needs gradients for its input embeddings only: with
    the weights frozen, backward skips every weight gradient (bench/ig_frozen_weights.py:
    x1.04 per input on SmolLM2 with 2 threads, identical scores)."""
    was_training = model.training
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        model.train(was_training)
        for p in trainable:
            p.requires_grad_(True)


class Attributor:
    """Explains the subject's own next token with any method in METHODS, same call for all.

    `batch_size` rows go through the model per forward (captum's perturbations_per_eval /
    internal_batch_size). `reuse_kv=False` recomputes every row from position 0: slower, for
    checks and for measuring what the reused cache saves.
    """

    def __init__(self, subject: LoadedModel, cache_dir: Path | None = None, batch_size: int = 32,
                 reuse_kv: bool = True):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.subject = subject
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.reuse_kv = reuse_kv

    def attribute(self, inputs: Sequence[AttributionInput], method: str, progress=None,
                  **params: Any) -> list[Attribution]:
        """One Attribution per input; `progress(1)` after each. Disk-cached per input."""
        resolved = resolve_params(self.subject, method, params)
        vocab = _vocab_size(self.subject)
        for inp in inputs:  # fail before spending minutes on the valid ones
            validate_input(inp, vocab)
        results = []
        with _inference(self.subject.model):
            for inp in inputs:
                key = cache_key(self.subject.name, method, resolved, inp)
                result = _load_cached(self.cache_dir, key)
                if result is None:
                    result = self._compute(inp, method, resolved)
                    _store(self.cache_dir, key, result)
                results.append(result)
                if progress is not None:
                    progress(1)
        return results

    def _compute(self, inp: AttributionInput, method: str, params: dict) -> Attribution:
        began = time.perf_counter()
        if method.startswith("attention_"):
            span_scores, rows = _attention(self.subject, inp, method), 1
        else:
            scorer = _Scorer(self.subject, inp, self.reuse_kv)
            if method == "integrated_gradients":
                span_scores = _integrated_gradients(scorer, params, self.batch_size)
            else:
                span_scores = _perturbation(scorer, inp, method, params, self.batch_size)
            rows = scorer.rows
        scores = [0.0] * len(inp.ids)
        scores[inp.start:inp.stop] = [float(s) for s in span_scores.cpu()]
        return Attribution(method, scores, int(inp.target), dict(params), rows, time.perf_counter() - began)
