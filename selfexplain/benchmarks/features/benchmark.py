"""Benchmark 5, features: describe directions of the subject's own residual stream.

Concept directions (mean activation over contexts about a concept minus a neutral mean, at a few
layers) are injected at a placeholder token: "At layer L, [vector] encodes" -> "NAME (CATEGORY)".
Control trials inject a zero vector or a random vector of matched norm and must be answered
"nothing specific". The split is by concept. Scored on held-out concepts by exact / category
match, MiniLM similarity to the name, and detection AUROC (does the description pick out the
contexts where the direction is active?), with the control false-positive rate.
"""

from __future__ import annotations

import json
import random
from importlib.resources import files
from typing import Any, Sequence

import torch

from selfexplain.benchmarks.base import (BaselineEnv, BaselineSpec, Benchmark, GroundTruth, MetricSpec, ReportChart,
                                         ReportFact, ReportTable)
from selfexplain.config import RunConfig
from selfexplain.data.facts import data_root
from selfexplain.errors import DataError
from selfexplain.explainers.base import Explanation
from selfexplain.metrics import bootstrap_mean, format_estimate, paired_difference
from selfexplain.models.generation import Decoding
from selfexplain.models.loading import LoadedModel
from selfexplain.records import Provenance, Record
from selfexplain.templates import load_templates
from selfexplain.benchmarks.features.explainers import (AutoInterp, LogitLens, SelfIE, VectorNeighbour,
                                                        description_parser)
from selfexplain.benchmarks.features.scoring import Similarity, auroc, finite, mentions, normalize
from selfexplain.benchmarks.features.vectors import (ConceptVectors, CorpusActivations, concept_vectors,
                                                     corpus_activations, pick_layers)

PACKAGE = __package__
CONCEPT_METRICS = ("exact_match", "category_match", "name_mentioned", "similarity", "detection_auroc")


def load_concepts() -> list[dict[str, str]]:
    """The concept list (concepts.json): unique names, each with a category."""
    data = json.loads(files(PACKAGE).joinpath("concepts.json").read_text(encoding="utf-8"))
    concepts = data["concepts"]
    seen: set[str] = set()
    for i, c in enumerate(concepts):
        if not isinstance(c, dict) or not c.get("name") or not c.get("category"):
            raise DataError(f"concepts.json: entry {i} needs a name and a category, got {c!r}")
        if normalize(c["name"]) in seen:
            raise DataError(f"concepts.json: concept {c['name']!r} is listed twice")
        seen.add(normalize(c["name"]))
    return concepts


def split_concepts(concepts: Sequence[dict[str, str]], test_fraction: float, seed: int) -> dict[str, str]:
    """name -> "train"/"test", a seeded share of each category held out (every category on both sides)."""
    rng = random.Random(seed)
    side: dict[str, str] = {}
    for cat in sorted({c["category"] for c in concepts}):
        names = sorted(c["name"] for c in concepts if c["category"] == cat)
        rng.shuffle(names)
        n_test = max(1, round(test_fraction * len(names))) if len(names) > 1 else 0
        side.update({n: "test" if i < n_test else "train" for i, n in enumerate(names)})
    return side


def read_data_root_corpus(root, limit: int) -> tuple[list[str], str]:
    """Up to `limit` human-written sentences from the data root (e-SNLI premises of 20-160
    characters), and their source with the count of malformed lines skipped (never silently)."""
    path = root / "esnli" / "esnli_dev.jsonl" if root is not None else None
    if path is None or not path.is_file():
        return [], ""
    seen: dict[str, None] = {}
    bad: list[int] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            try:
                text = json.loads(line)["premise"]
                if not isinstance(text, str):
                    raise TypeError
            except (json.JSONDecodeError, KeyError, TypeError):
                bad.append(number)
                continue
            if 20 <= len(text.strip()) <= 160:
                seen[text.strip()] = None
            if len(seen) >= limit:
                break
    note = f"; {len(bad)} malformed lines skipped, first {path}:{bad[0]}" if bad else ""
    return list(seen), f"{path}{note}"


class FeaturesBenchmark(Benchmark):
    name = "features"
    description = "describe concept directions of the subject's residual stream (injected vector -> concept)"
    answer_format = "free"
    metrics = (MetricSpec("exact_match", "exact match (concept name)", primary=True),
               MetricSpec("category_match", "category match"),
               MetricSpec("name_mentioned", "name mentioned"),
               MetricSpec("similarity", "embedding similarity to the name"),
               MetricSpec("detection_auroc", "detection AUROC"),
               MetricSpec("control_fpr", "control false-positive rate", higher_is_better=False))
    # 300 concepts, 70/30 by concept, 3 layers: 612 training and 288 test concept records, plus
    # controls (20%). quick and standard use them all (quick: 2 passes, standard: 4).
    sizes = {"quick": {"n_train": 765, "n_test": 360},
             "standard": {"n_train": 765, "n_test": 360},
             "full": {"n_train": 20000, "n_test": 2000}}
    generic_explainers = frozenset({"self", "other"})
    truth_keys = frozenset({"concept", "category", "label", "active_contexts", "random_contexts"})
    decoding = Decoding(max_new_tokens=10)
    train_repeats = {"quick": 2, "standard": 4}
    data_files = (("selfexplain.benchmarks.features", "concepts.json"),)
    ground_truth_version = 3
    scoring_text = ("Every explainer describes the same held-out concept directions (concepts never seen in "
                    "training) and control vectors. Exact match: the described concept is the concept's name; "
                    "detection AUROC: one scorer (sentence-embedding similarity of description and context) "
                    "separates contexts where the direction is strongly active from random ones.")
    ground_truth_text = ("A concept direction is the subject's mean residual stream at the concept's name over "
                         "several contexts minus the mean over neutral words in the same contexts, at a few layers. "
                         "Controls are zero vectors and random vectors of matched norm (answer: nothing specific).")

    def __init__(self, n_layers: int = 3, test_fraction: float = 0.3, control_fraction: float = 0.2,
                 n_active: int = 5, scorer: str = "auto", corpus_limit: int = 300):
        self.t = load_templates(PACKAGE)
        self.n_layers = n_layers
        self.test_fraction = test_fraction
        self.control_fraction = control_fraction
        self.n_active = n_active
        self.scorer = scorer
        self.corpus_limit = corpus_limit
        self._corpus: dict[str, CorpusActivations] = {}
        self._similarity: Similarity | None = None
        self._env: BaselineEnv | None = None

    # ----- vocabulary -------------------------------------------------------------------------
    @property
    def concepts(self) -> list[dict[str, str]]:
        if "_concepts" not in self.__dict__:
            self.__dict__["_concepts"] = load_concepts()
        return self.__dict__["_concepts"]

    def category_names(self) -> list[str]:
        return sorted({c["category"] for c in self.concepts})

    def parser(self):
        lexicon = {normalize(c["name"]): c["category"] for c in self.concepts}
        return description_parser(self.t["nothing"], lexicon, self.category_names())

    def similarity(self) -> Similarity:
        if self._similarity is None:
            self._similarity = Similarity(self.scorer)
        return self._similarity

    # ----- the corpus -----------------------------------------------------------------------
    def corpus_texts(self, config: RunConfig) -> tuple[list[str], str]:
        """Built-in sentences (four per concept, category templates unlike the vector contexts, plus
        neutral filler), and e-SNLI premises when a data root holds them."""
        texts = [tpl.format(name=c["name"]) for c in self.concepts
                 for tpl in self.t["corpus_templates"][c["category"]]] + list(self.t["neutral_corpus"])
        extra, source = read_data_root_corpus(data_root(config.data_root or None), self.corpus_limit)
        return texts + extra, ("built-in" + (f" + {len(extra)} e-SNLI premises ({source})" if extra else ""))

    def corpus(self, subject: LoadedModel, layers: Sequence[int], config: RunConfig) -> CorpusActivations:
        key = f"{subject.name}/{list(layers)}"
        if key not in self._corpus:
            self._corpus[key] = corpus_activations(subject, self.corpus_texts(config)[0], layers)
        return self._corpus[key]

    # ----- ground truth ---------------------------------------------------------------------
    @torch.no_grad()
    def build_records(self, subject: LoadedModel, config: RunConfig, progress=None) -> GroundTruth:
        rng = random.Random(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        layers = pick_layers(subject.num_layers, self.n_layers)
        side = split_concepts(self.concepts, self.test_fraction, config.seed)
        names = [c["name"] for c in self.concepts]
        vecs = concept_vectors(subject, names, self.t["vector_contexts"], self.t["neutral_words"], layers)
        if progress is not None:
            progress(len(names))
        corpus = self.corpus(subject, layers, config)
        every = [self._concept_record(subject, config, c, layer, side[c["name"]], vecs, i, corpus, rng)
                 for i, c in enumerate(self.concepts) for layer in layers]
        records = {s: [r for r in every if r.split == s] for s in ("train", "test")}
        picked: list[Record] = []
        for s, n in (("train", config.n_train), ("test", config.n_test)):
            n_controls = int(round(self.control_fraction * n))
            concept_records = records[s]
            rng.shuffle(concept_records)
            picked += concept_records[:max(0, n - n_controls)]
            picked += [self._control_record(subject, config, s, k, layers, vecs, gen, rng) for k in range(n_controls)]
        norms = {layer: vecs.directions[layer].norm(dim=1) for layer in layers}
        test = [r for r in picked if r.split == "test"]
        stats = {
            "layers": layers, "n_concepts": len(names),
            "n_train_concepts": sum(v == "train" for v in side.values()),
            "n_test_concepts": sum(v == "test" for v in side.values()),
            "n_categories": len(self.category_names()),
            "n_test_concept_records": sum(r.context["label"] != "control" for r in test),
            "n_test_control_records": sum(r.context["label"] == "control" for r in test),
            "corpus_size": len(corpus.texts), "corpus_source": self.corpus_texts(config)[1],
            "vector_norm_by_layer": {str(k): float(v.mean()) for k, v in norms.items()},
            "own_context_top_rate": self._own_top_rate(picked, corpus),
            "test_categories": _shares([r.context["label"] for r in test]),
        }
        rng.shuffle(picked)
        return GroundTruth(picked, stats)

    def _concept_record(self, subject, config, concept, layer, split, vecs: ConceptVectors, index,
                        corpus: CorpusActivations, rng: random.Random) -> Record:
        vector = vecs.directions[layer][index].clone()
        order = corpus.ranking(layer, vector)
        k = self.n_active
        active = [corpus.texts[i] for i in order[0:2 * k:2]]  # odd ranks: auto-interp sees the even ones
        random_ctx = [corpus.texts[i] for i in rng.sample(order[4 * k:], k)]
        return Record(
            id=f"features/L{layer}/{concept['name']}", benchmark=self.name, split=split, group=concept["name"],
            query=self.t["query"].format(layer=layer), answer=self.t["answer"].format(**concept),
            provenance=Provenance(subject.name, "concept_direction",
                                  {"layer": layer, "contexts": len(self.t["vector_contexts"]),
                                   "baseline_words": len(self.t["neutral_words"])}, config.seed),
            context={"layer": layer, "concept": concept["name"], "category": concept["category"],
                     "label": concept["category"], "active_contexts": active, "random_contexts": random_ctx},
            vector=vector)

    def _control_record(self, subject, config, split, k, layers, vecs: ConceptVectors, gen, rng) -> Record:
        layer = layers[k % len(layers)]
        kind = "zero" if k % 2 == 0 else "random"
        vector = torch.zeros(subject.hidden_size)
        if kind == "random":
            norm = float(vecs.directions[layer][rng.randrange(len(vecs.names))].norm())
            vector = torch.randn(subject.hidden_size, generator=gen)
            vector = vector / vector.norm() * norm
        return Record(
            id=f"features/control/{split}/{k}", benchmark=self.name, split=split, group=f"control-{split}-{k}",
            query=self.t["query"].format(layer=layer), answer=self.t["nothing"],
            provenance=Provenance(subject.name, "control_vector", {"layer": layer, "kind": kind}, config.seed),
            context={"layer": layer, "concept": "", "category": kind, "label": "control",
                     "active_contexts": [], "random_contexts": []},
            vector=vector)

    @staticmethod
    def _own_top_rate(records: Sequence[Record], corpus: CorpusActivations) -> float:
        """Share of concept records whose strongest corpus context names the concept (a sanity
        check that the directions mean what they are called)."""
        hits = [mentions(r.context["active_contexts"][0], r.context["concept"])
                for r in records if r.context["label"] != "control" and r.context["active_contexts"]]
        return sum(hits) / max(1, len(hits))

    # ----- scoring --------------------------------------------------------------------------
    def score(self, records: Sequence[Record], explanations: Sequence[Explanation]) -> dict[str, list]:
        parse = self.parser()
        sim = self.similarity()
        out: dict[str, list] = {m.name: [] for m in self.metrics}
        concept_rows = [(r, e) for r, e in zip(records, explanations) if r.context["label"] != "control"]
        name_sim = {}
        if concept_rows:
            texts = [e.text or "" for _, e in concept_rows]
            s = sim.similarity(texts, [r.context["concept"] for r, _ in concept_rows])
            name_sim = {r.id: float(s[i, i]) for i, (r, _) in enumerate(concept_rows)}
        for r, e in zip(records, explanations):
            concept, category, nothing = parse(e.text or "")
            if r.context["label"] == "control":
                for m in CONCEPT_METRICS:
                    out[m].append(None)
                out["control_fpr"].append(float(not nothing))
                continue
            out["exact_match"].append(float(concept == normalize(r.context["concept"])))
            out["category_match"].append(float(category == r.context["category"]))
            out["name_mentioned"].append(float(not nothing and mentions(e.text or "", r.context["concept"])))
            out["similarity"].append(name_sim[r.id])
            out["detection_auroc"].append(self._detection(e.text or "", r))
            out["control_fpr"].append(None)
        return out

    def _detection(self, text: str, r: Record) -> float:
        pos, neg = r.context["active_contexts"], r.context["random_contexts"]
        s = self.similarity().similarity([text], list(pos) + list(neg))[0]
        return auroc(list(s[:len(pos)]), list(s[len(pos):]))

    def summarize(self, records: Sequence[Record], scores: dict[str, list], seed: int) -> dict[str, Any]:
        out: dict[str, Any] = {m.name: bootstrap_mean(finite(scores[m.name]), seed).to_dict() for m in self.metrics}
        by_layer: dict[str, dict] = {}
        for layer in sorted({r.context["layer"] for r in records}):
            idx = [i for i, r in enumerate(records) if r.context["layer"] == layer]
            by_layer[str(layer)] = {m: bootstrap_mean(finite([scores[m][i] for i in idx]), seed).to_dict()
                                    for m in ("exact_match", "category_match", "detection_auroc", "control_fpr")}
        out["by_layer"] = by_layer
        out["scorer"] = self.similarity().kind
        return out

    def comparisons(self, records: Sequence[Record], per_item: dict[str, dict[str, dict]],
                    summaries: dict[str, dict], seed: int) -> dict[str, Any]:
        """Paired self - rival on every metric besides the primary one (the run pairs that), over
        the items where both are defined."""
        if "self" not in per_item:
            return {}
        out: dict[str, Any] = {}
        for metric in ("category_match", "detection_auroc", "similarity", "control_fpr"):
            mine = per_item["self"][metric]
            for rival in per_item:
                if rival == "self":
                    continue
                theirs = per_item[rival][metric]
                ids = [i for i in mine if i in theirs and mine[i] is not None and theirs[i] is not None]
                if ids:
                    diff = paired_difference([mine[i] for i in ids], [theirs[i] for i in ids], seed)
                    out.setdefault(metric, {})[rival] = {"difference": diff.to_dict(), "n": len(ids)}
        return out

    # ----- explainers -------------------------------------------------------------------------
    def prepare(self, env: BaselineEnv) -> None:
        self._env = env

    def _corpus_for(self, env: BaselineEnv) -> CorpusActivations:
        subject = env.subject()
        return self.corpus(subject, pick_layers(subject.num_layers, self.n_layers), env.config)

    def baselines(self) -> list[BaselineSpec]:
        nothing = self.t["nothing"]
        return [
            BaselineSpec("vector-neighbour", "heuristic", "the answer of the training vector (same layer) with the "
                         "highest cosine similarity", lambda env: VectorNeighbour()),
            BaselineSpec("logit-lens", "post-hoc", "top-5 tokens of the vector through the final norm and "
                         "unembedding; abstains below a top-probability threshold fitted on training",
                         lambda env: LogitLens(env.subject, nothing)),
            BaselineSpec("selfie", "untrained", "the untrained subject reads the vector injected at its own layer "
                         "(SelfIE / Patchscopes style; scale chosen on training concepts)",
                         lambda env: SelfIE(env.subject, self.t["selfie"], self.t["selfie_reply"], self.parser(),
                                            seed=env.config.seed)),
            BaselineSpec("auto-interp", "post-hoc", "top-activating corpus contexts summarised into a label by the "
                         "untrained subject (the human-centric standard)",
                         lambda env: AutoInterp(env.subject, lambda: self._corpus_for(env), self.t, self.n_active)),
        ]

    # ----- report -------------------------------------------------------------------------
    def report_facts(self, stats: dict[str, Any]) -> list[ReportFact]:
        return [
            ReportFact("concepts (train / test)", f"{stats['n_concepts']} ({stats['n_train_concepts']} / "
                       f"{stats['n_test_concepts']})", "text", "split by concept: test concepts never seen in training",
                       headline=True),
            ReportFact("layers", ", ".join(map(str, stats["layers"])), "text", headline=True),
            ReportFact("test records: concept / control", f"{stats['n_test_concept_records']} / "
                       f"{stats['n_test_control_records']}", "text", headline=True),
            ReportFact("categories", stats["n_categories"], "count"),
            ReportFact("detection corpus", f"{stats['corpus_size']} sentences ({stats['corpus_source']})", "text"),
            ReportFact("strongest context names the concept", stats["own_context_top_rate"], "percent",
                       "share of concept directions whose top-activating corpus sentence names the concept"),
            *[ReportFact(f"mean direction norm, layer {k}", v, "number", group="directions")
              for k, v in stats["vector_norm_by_layer"].items()],
        ]

    def report_charts(self, stats: dict[str, Any]) -> list[ReportChart]:
        return [ReportChart("test records by category", "bars", stats["test_categories"])]

    def report_tables(self, section: dict[str, Any]) -> list[ReportTable]:
        summaries = section["explainers"]
        layers = sorted({k for s in summaries.values() for k in s.get("by_layer", {})}, key=int)
        tables = [ReportTable(
            "Exact match per layer (held-out concepts)", ["explainer"] + [f"layer {k}" for k in layers],
            [[n] + [format_estimate(s["by_layer"][k]["exact_match"]) if k in s.get("by_layer", {}) else "–"
                    for k in layers] for n, s in summaries.items()]),
            ReportTable(
                "Detection AUROC and control false positives per explainer",
                ["explainer", "detection AUROC", "category match", "control false-positive rate", "scorer"],
                [[n, _auc(s["detection_auroc"]), format_estimate(s["category_match"]),
                  format_estimate(s["control_fpr"]), s.get("scorer", "")] for n, s in summaries.items()],
                "AUROC 0.5 = the description does not pick out the contexts where the direction is active.")]
        comps = section.get("comparisons") or {}
        rows = [[metric, rival, _auc(c["difference"]) if metric in ("detection_auroc", "similarity")
                 else format_estimate(c["difference"]), str(c["n"])]
                for metric, by in comps.items() for rival, c in by.items()]
        if rows:
            tables.append(ReportTable("Self minus each rival on the other metrics (paired bootstrap)",
                                      ["metric", "rival", "self - rival [95% CI]", "n"], rows))
        return tables

    def report_notes(self, section: dict[str, Any]) -> list[str]:
        scorers = {s.get("scorer") for s in section["explainers"].values()} - {None}
        return [f"Detection and similarity scorer: {', '.join(sorted(scorers))} (one scorer for every explainer)."]


def _auc(est: dict[str, float]) -> str:
    return f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"


def _shares(labels: Sequence[str]) -> dict[str, float]:
    counts = {k: labels.count(k) for k in sorted(set(labels))}
    return {k: v / max(1, len(labels)) for k, v in counts.items()}
