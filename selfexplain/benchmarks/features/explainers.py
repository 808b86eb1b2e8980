"""The features benchmark's baselines: logit lens, SelfIE-style injection, nearest neighbour over
the training vectors, and auto-interp. Each reads `record.vector` and `context['layer']` only."""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

from selfexplain.explainers.base import Explainer, Explanation, Stopwatch
from selfexplain.models.generation import encode_query, greedy_generate
from selfexplain.models.loading import LoadedModel
from selfexplain.records import Record
from selfexplain.techniques.interventions import Patch, patch_residual, record_residual
from selfexplain.templates import chat_parts
from selfexplain.benchmarks.features.scoring import fit_threshold, normalize, parse_description
from selfexplain.benchmarks.features.vectors import CorpusActivations, logit_lens


def _is_control(r: Record) -> bool:
    return r.context["label"] == "control"  # training records only (fit): the label is ground truth


class LogitLens(Explainer):
    """Top tokens of the vector through the final norm and unembedding (nostalgebraist 2020).

    Abstains ("nothing specific") when its top probability is below a threshold fitted on the
    training records (concepts vs controls), so its control false-positive rate is meaningful.
    """

    name = "logit-lens"
    description = "top-5 tokens of the vector through the final norm and unembedding"

    def __init__(self, subject: Callable[[], LoadedModel], nothing: str, top_k: int = 5):
        self.subject, self.nothing, self.top_k = subject, nothing, top_k
        self.threshold = float("-inf")

    def _read(self, records: Sequence[Record]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logit_lens(self.subject(), torch.stack([r.vector.float() for r in records]))
        probs = logits.softmax(-1)
        top = probs.topk(self.top_k, dim=-1)
        return top.values[:, 0].log(), top.indices

    def fit(self, train: Sequence[Record]) -> None:
        stat, _ = self._read(train)
        concept = [float(s) for s, r in zip(stat, train) if not _is_control(r)]
        control = [float(s) for s, r in zip(stat, train) if _is_control(r)]
        self.threshold = fit_threshold(concept, control)

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        tok = self.subject().tokenizer
        with Stopwatch() as sw:
            stat, ids = self._read(queries)
            texts = [", ".join(tok.decode([int(i)]).strip() or "<blank>" for i in row) for row in ids]
        return [Explanation(self.nothing if float(s) <= self.threshold else t, 1, sw.per_item(len(queries)))
                for s, t in zip(stat, texts)]


class VectorNeighbour(Explainer):
    """The answer of the training record at the same layer whose vector has the highest cosine
    (controls included: a zero vector matches a zero vector)."""

    name = "vector-neighbour"
    description = "answer of the training vector (same layer) with the highest cosine similarity"

    def fit(self, train: Sequence[Record]) -> None:
        self.by_layer: dict[int, tuple[torch.Tensor, list[str]]] = {}
        for layer in sorted({r.context["layer"] for r in train}):
            rows = [r for r in train if r.context["layer"] == layer]
            self.by_layer[layer] = (torch.stack([_unit(r.vector) for r in rows]), [r.answer for r in rows])

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        out = []
        with Stopwatch() as sw:
            for q in queries:
                matrix, answers = self.by_layer[q.context["layer"]]
                v = _unit(q.vector)
                if float(v.norm()) == 0:  # identical to a zero training vector, if any
                    zero = (matrix.norm(dim=1) == 0).nonzero()
                    best = int(zero[0]) if len(zero) else 0
                else:
                    best = int((matrix @ v).argmax())
                out.append(answers[best])
        return [Explanation(t, 0, sw.per_item(len(queries))) for t in out]


def _unit(v: torch.Tensor) -> torch.Tensor:
    v = v.float()
    n = v.norm()
    return v / n if float(n) > 0 else v


class SelfIE(Explainer):
    """SelfIE / Patchscopes-style zero-shot reading: the untrained subject is asked what the
    placeholder means (its reply begun with `reply`, e.g. 'It means "') while the residual stream
    at the placeholder, at the vector's own layer, is replaced by the unit vector times `scale` x
    the prompt's mean residual norm there.
    The scale is the best (exact match, then category match) of `scales` on training concepts."""

    name = "selfie"
    description = "the untrained subject reads the vector injected at its own layer (SelfIE-style)"

    def __init__(self, subject: Callable[[], LoadedModel], prompt: str, reply: str, parse: Callable[[str], tuple],
                 scales: Sequence[float] = (0.5, 1.0, 2.0, 4.0), n_fit: int = 24, seed: int = 0,
                 max_new_tokens: int = 6):
        self.subject, self.prompt, self.reply, self.parse = subject, prompt, reply, parse
        self.scales, self.n_fit, self.seed, self.max_new_tokens = tuple(scales), n_fit, seed, max_new_tokens
        self.scale = self.scales[0]
        self.fit_scores: dict[float, float] = {}

    def _prompt(self, loaded: LoadedModel) -> tuple[list[int], int]:
        before, after = chat_parts(loaded.tokenizer)
        ids = encode_query(loaded, before + self.prompt + after + self.reply, add_special_tokens=not before)
        return ids, ids.index(loaded.placeholder_id)

    def _norms(self, loaded: LoadedModel, ids: list[int], layers: set[int]) -> dict[int, float]:
        with torch.no_grad(), record_residual(loaded.model, sorted(layers)) as resid, loaded.autocast():
            loaded.model(input_ids=torch.tensor([ids], device=loaded.device), logits_to_keep=1)
        return {layer: float(resid[layer][0, 1:].float().norm(dim=-1).mean()) for layer in layers}

    def _generate(self, records: Sequence[Record], scale: float) -> list[str]:
        loaded = self.subject()
        ids, pos = self._prompt(loaded)
        norms = self._norms(loaded, ids, {r.context["layer"] for r in records})
        out: list[str] = []
        for start in range(0, len(records), 16):
            chunk = records[start:start + 16]
            patches = [Patch(i, r.context["layer"], pos, _unit(r.vector) * scale * norms[r.context["layer"]])
                       for i, r in enumerate(chunk)]
            with patch_residual(loaded.model, patches):
                out += greedy_generate(loaded, [ids] * len(chunk), max_new_tokens=self.max_new_tokens,
                                       batch_size=len(chunk))
        return out

    def fit(self, train: Sequence[Record]) -> None:
        concepts = [r for r in train if not _is_control(r)]
        picked = random.Random(self.seed).sample(concepts, min(self.n_fit, len(concepts)))
        if not picked:
            return
        for scale in self.scales:
            texts = self._generate(picked, scale)
            hits = [(p[0] == normalize(r.context["concept"]), p[1] == r.context["category"])
                    for r, p in zip(picked, map(self.parse, texts))]
            self.fit_scores[scale] = sum(e for e, _ in hits) + 0.01 * sum(c for _, c in hits)
        self.scale = max(self.scales, key=lambda s: (self.fit_scores[s], -s))

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        with Stopwatch() as sw:
            texts = self._generate(queries, self.scale)
        return [Explanation(t, 1 + self.max_new_tokens, sw.per_item(len(queries))) for t in texts]

    def info(self) -> dict:
        return {"scale": self.scale, "fit_scores": {str(k): v for k, v in self.fit_scores.items()}}


class AutoInterp(Explainer):
    """Auto-interp (Bills et al. 2023; delphi): the direction's top-activating corpus contexts
    (activation = max projection over tokens), summarised into a label by the untrained subject
    with a fixed 2-example prompt. It sees the even ranks 2, 4, ..., 2k; the detection metric
    scores on the odd ranks, so explanation and scoring contexts never overlap. Abstains when
    the top contexts' z-score is below a threshold fitted on training concepts vs controls."""

    name = "auto-interp"
    description = "top-activating corpus contexts summarised into a label by the untrained subject"

    def __init__(self, subject: Callable[[], LoadedModel], corpus: Callable[[], CorpusActivations],
                 templates: dict, k: int = 5, max_new_tokens: int = 8):
        self.subject, self.corpus, self.t, self.k, self.max_new_tokens = subject, corpus, templates, k, max_new_tokens
        self.threshold = float("-inf")

    def _read(self, r: Record) -> tuple[float, list[str]]:
        corpus = self.corpus()
        layer = r.context["layer"]
        act = corpus.activation(layer, r.vector)
        if float(r.vector.float().norm()) == 0:
            return float("-inf"), []
        order = corpus.ranking(layer, r.vector)
        shown = order[1:2 * self.k:2]
        z = (float(act[order[:2 * self.k]].mean()) - float(act.mean())) / max(1e-9, float(act.std()))
        return z, [corpus.texts[i] for i in shown]

    def fit(self, train: Sequence[Record]) -> None:
        stats = [(self._read(r)[0], _is_control(r)) for r in train]
        self.threshold = fit_threshold([s for s, c in stats if not c], [s for s, c in stats if c])

    def _block(self, contexts: Sequence[str]) -> str:
        return self.t["autointerp_block"].format(contexts="\n".join(f"- {c}" for c in contexts))

    def prefix(self) -> str:
        shots = "".join(f"{self._block(ex['contexts'])} {ex['label']}\n\n" for ex in self.t["autointerp_examples"])
        return f"{self.t['autointerp_instruction']}\n\n{shots}"

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        loaded = self.subject()
        with Stopwatch() as sw:
            reads = [self._read(q) for q in queries]
            ask = [i for i, (z, _) in enumerate(reads) if z > self.threshold]
            texts = [self.t["nothing"]] * len(queries)
            if ask:
                prompts = [encode_query(loaded, self._block(reads[i][1]), add_special_tokens=False) for i in ask]
                labels = greedy_generate(loaded, prompts, max_new_tokens=self.max_new_tokens,
                                         prefix=encode_query(loaded, self.prefix()))
                for i, label in zip(ask, labels):
                    texts[i] = label
        return [Explanation(t, 1 + self.max_new_tokens, sw.per_item(len(queries)),
                            fields={"contexts": reads[i][1]}) for i, t in enumerate(texts)]

    def info(self) -> dict:
        return {"threshold": self.threshold}


def description_parser(nothing: str, categories: dict[str, str], category_names: Sequence[str]):
    """`parse_description` bound to the benchmark's vocabulary."""
    return lambda text: parse_description(text, nothing, categories, category_names)
