"""Benchmark 6, introspection: does the subject predict properties of its own answers better than
another model trained on the same records of its behaviour? (Binder et al. 2024, arXiv 2410.13787)

Object-level prompts come from built-in families (families.json). Ground truth is the subject's
temperature-0 answer to each prompt, computed by running it; a record asks a hypothetical
("Suppose you were asked P: what would be the first word of your answer?") with a closed answer
set. The split is by family: the main score is on families no explainer trained on, and
held-out prompts of the training families give a second number. With `mirror` on, the other
model's own answers are computed too, for the 2x2 privileged-access design: each model is
trained on its own behaviour and on the other's, at the same budget (baselines.py).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch

from selfexplain.benchmarks.base import (SUBJECT_TARGET, BaselineSpec, Benchmark, GroundTruth, LiveClaims, MetricSpec,
                                         ReportChart, ReportFact, ReportTable)
from selfexplain.benchmarks.introspection import properties as P
from selfexplain.benchmarks.introspection.behaviour import MAX_NEW_TOKENS, answers
from selfexplain.benchmarks.introspection.families import Prompt, build_prompts
from selfexplain.config import RunConfig
from selfexplain.errors import ConfigError
from selfexplain.explainers.base import Explanation
from selfexplain.metrics import bootstrap_ece, bootstrap_mean, format_estimate, paired_difference, reliability
from selfexplain.models.loading import LoadedModel, load_model
from selfexplain.progress import status
from selfexplain.records import Provenance, Record

# Which model an explanation is about: the subject unless the explainer declares otherwise
# (Explanation.fields["predicts"]); the mirror explainers predict the other model.
SUBJECT, OTHER = SUBJECT_TARGET, "other"
HELDOUT_FAMILY, HELDOUT_PROMPT = "family", "prompt"


def _nan() -> float:
    return float("nan")


class IntrospectionBenchmark(Benchmark):
    name = "introspection"
    description = "predict properties of the subject's own answers to hypothetical prompts (self-prediction)"
    answer_format = "closed"
    metrics = (
        MetricSpec("accuracy", "accuracy, held-out families", primary=True),
        MetricSpec("over_mode", "accuracy minus the mode baseline, held-out families"),
        MetricSpec("accuracy_in_family", "accuracy, held-out prompts of training families"),
        MetricSpec("ece", "expected calibration error, held-out families (lower is better)", higher_is_better=False),
        MetricSpec("distribution_error", "distribution error: total variation between predicted and actual "
                   "answer distributions (lower is better)", higher_is_better=False),
    )
    sizes = {"quick": {"n_train": 480, "n_test": 320}, "standard": {"n_train": 2000, "n_test": 800},
             "full": {"n_train": 20000, "n_test": 4000}}
    truth_keys = frozenset({"value", "raw_answer", "other_value", "other_raw_answer"})
    # `selfexplain explain` names the topic; a live check (ask, then run the prompt) is not built yet.
    live = LiveClaims(about="properties of the subject's own answer to a prompt")
    data_files = (("selfexplain.benchmarks.introspection", "families.json"),
                  ("selfexplain.data", "relations.json"), ("selfexplain.data", "facts.jsonl"))
    scoring_text = ("Every explainer picks one answer from the same closed set for each hypothetical question; "
                    "an answer counts as right when it equals the property of what the model actually answered. "
                    "The primary score is on prompt families no explainer was trained on.")
    ground_truth_text = ("The ground truth is the subject's temperature-0 answer to each object-level prompt, "
                         "computed by running it, reduced to a property (first word, first or second character, "
                         "starts with a vowel, length, parity, option position). Open-valued properties list the "
                         "family's most frequent values plus \u201cother\u201d, in alphabetical order.")

    def __init__(self, heldout_families: int = 3, in_family_test_share: float = 0.25,
                 properties_per_prompt: int = 3, mirror: bool = True):
        """heldout_families: families only in the test set (seeded choice); in_family_test_share: of
        the test records, the share from held-out prompts of training families; properties_per_prompt:
        properties asked per prompt (a random subset, so one prompt's answer weighs little);
        mirror: also compute the other model's behaviour for the 2x2 design (loads it once)."""
        if heldout_families < 1:
            raise ConfigError("introspection: heldout_families must be >= 1")
        self.heldout_families = heldout_families
        self.in_family_test_share = in_family_test_share
        self.properties_per_prompt = properties_per_prompt
        self.mirror = mirror
        self.t = P.spec()

    # ----- records ---------------------------------------------------------------------------
    def query(self, prompt: Prompt, prop: str, candidates: Sequence[str]) -> str:
        return self.t["query"].format(prompt=prompt.text, question=self.t["properties"][prop]["question"],
                                      options=self.t["option_separator"].join(candidates))

    def split_families(self, families: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
        names = sorted(families)
        random.Random(f"{seed}/families").shuffle(names)
        k = min(self.heldout_families, len(names) - 1)
        return sorted(names[k:]), sorted(names[:k])

    def plan(self, config: RunConfig) -> list[tuple[Prompt, str, str, list[str]]]:
        """The prompts to run, each with its split, held-out kind and properties, sized so the
        record counts reach n_train / n_test: training families give the training prompts and the
        in-family test prompts (disjoint), the held-out families the main test prompts."""
        rng = random.Random(f"{config.seed}/introspection")
        by_family = build_prompts(config.seed)
        train_fams, test_fams = self.split_families(list(by_family), config.seed)
        k = self.properties_per_prompt
        want = self.side_sizes(config)
        plan: list[tuple[Prompt, str, str, list[str]]] = []
        for fam_names, sides in ((train_fams, (("train", ""), ("test", HELDOUT_PROMPT))),
                                 (test_fams, (("test", HELDOUT_FAMILY),))):
            pools = {f: rng.sample(by_family[f], len(by_family[f])) for f in fam_names}
            for side in sides:
                per_family = math.ceil(want[side] / k / len(fam_names))
                for f in fam_names:
                    for prompt in pools[f][:per_family]:
                        props = P.applicable(prompt)
                        plan.append((prompt, side[0], side[1], rng.sample(props, min(k, len(props)))))
                    del pools[f][:per_family]
        return plan

    def side_sizes(self, config: RunConfig) -> dict[tuple[str, str], int]:
        """Records per (split, held-out kind): n_train, and n_test divided between held-out
        families (the main score) and held-out prompts of training families."""
        n_in_family = int(round(self.in_family_test_share * config.n_test))
        return {("train", ""): config.n_train, ("test", HELDOUT_FAMILY): config.n_test - n_in_family,
                ("test", HELDOUT_PROMPT): n_in_family}

    @torch.no_grad()
    def build_records(self, subject: LoadedModel, config: RunConfig, progress=None) -> GroundTruth:
        plan = self.plan(config)
        prompts = [p for p, _, _, _ in plan]
        mine = dict(zip([p.id for p in prompts], answers(subject, prompts, progress)))
        theirs: dict[str, tuple[str, str]] = {}
        other_name = ""
        if self.mirror:
            with status(f"introspection: loading {config.other} for the mirror (its own behaviour)"):
                other = load_model(config.other, trust_remote_code=config.trust_remote_code)
            other_name = other.name
            theirs = dict(zip([p.id for p in prompts], answers(other, prompts)))
            del other
        cands = P.candidate_sets({p.id: (p, mine[p.id][1]) for p in prompts})
        other_cands = P.candidate_sets({p.id: (p, theirs[p.id][1]) for p in prompts}) if theirs else {}
        sides: dict[tuple[str, str], list[Record]] = {}
        for prompt, split, heldout, props in plan:
            for prop in props:
                sides.setdefault((split, heldout), []).append(self._record(
                    subject.name, config, prompt, split, heldout, prop, mine[prompt.id], cands[(prompt.family, prop)],
                    theirs.get(prompt.id), other_cands.get((prompt.family, prop))))
        # Prompts are planned per family with rounding up: trim each side to its size (seeded).
        want = self.side_sizes(config)
        records = []
        for side, recs in sorted(sides.items()):
            keep = set(r.id for r in random.Random(f"{config.seed}/{side}").sample(recs, min(len(recs), want[side])))
            records += [r for r in recs if r.id in keep]
        self._fit_modes(records)
        stats = self._stats(records, plan, other_name)
        return GroundTruth(records, stats)

    def _record(self, subject_name: str, config: RunConfig, prompt: Prompt, split: str, heldout: str, prop: str,
                mine: tuple[str, str], cands: list[str], theirs: tuple[str, str] | None,
                other_cands: list[str] | None) -> Record:
        value = P.bucket(P.value(prop, mine[1], prompt), cands)
        context: dict[str, Any] = {
            "family": prompt.family, "property": prop, "prompt": prompt.text, "heldout": heldout,
            "candidates": cands, "value": value, "raw_answer": mine[0], }
        if theirs is not None and other_cands is not None:
            context.update(other_value=P.bucket(P.value(prop, theirs[1], prompt), other_cands),
                           other_raw_answer=theirs[0], other_candidates=other_cands,
                           other_query=self.query(prompt, prop, other_cands))
        return Record(
            id=f"introspection/{prompt.id}/{prop}", benchmark=self.name, split=split, group=prompt.family,
            query=self.query(prompt, prop, cands), answer=value,
            provenance=Provenance(subject_name, "self_prediction",
                                  {"decoding": "greedy", "max_new_tokens": MAX_NEW_TOKENS, "property": prop}, config.seed),
            context=context)

    def _fit_modes(self, records: list[Record]) -> None:
        """Each test record's mode-baseline distribution over its candidates, fitted on training
        records only: per (family, property) where the family was trained on, else per property
        (held-out families). Not ground truth of the item: what 'always the most common answer' says."""
        train = [r for r in records if r.split == "train"]
        for key, cand_key, mode_key in (("value", "candidates", "mode_probs"),
                                        ("other_value", "other_candidates", "other_mode_probs")):
            if train and key not in train[0].context:
                continue
            by_prop: dict[str, Counter] = {}
            by_fam: dict[tuple[str, str], Counter] = {}
            for r in train:
                v = r.context[key]
                by_prop.setdefault(r.context["property"], Counter())[v] += 1
                by_fam.setdefault((r.context["family"], r.context["property"]), Counter())[v] += 1
            for r in records:
                c = r.context
                counts = by_fam.get((c["family"], c["property"])) or by_prop.get(c["property"], Counter())
                cands = c[cand_key]
                other = self.t["other"]
                raw = {v: counts.get(v, 0) for v in cands if v != other}
                if other in cands:
                    raw[other] = sum(n for v, n in counts.items() if v not in raw)
                total = sum(raw.values()) + len(cands)  # add-one smoothing
                c[mode_key] = {v: (raw.get(v, 0) + 1) / total for v in cands}

    def _stats(self, records: list[Record], plan, other_name: str) -> dict[str, Any]:
        test = [r for r in records if r.split == "test"]
        fams = sorted({p.family for p, s, h, _ in plan if h == HELDOUT_FAMILY})
        stats: dict[str, Any] = {
            "n_prompts": len(plan), "heldout_families": ", ".join(fams),
            "train_families": ", ".join(sorted({p.family for p, s, _, _ in plan if s == "train"})),
            "mirror_model": other_name or "(mirror off)",
            "test_other_rate": _rate(test, lambda r: r.answer == self.t["other"]),
            "entropy_bits": {prop: _entropy([r.answer for r in test if r.context["property"] == prop])
                             for prop in self.t["properties"]},
            "mode_accuracy_heldout_families": _rate(
                [r for r in test if r.context["heldout"] == HELDOUT_FAMILY],
                lambda r: max(r.context["mode_probs"], key=r.context["mode_probs"].get) == r.answer),
        }
        if other_name:
            stats["other_entropy_bits"] = {prop: _entropy([r.context["other_value"] for r in test
                                                           if r.context["property"] == prop])
                                           for prop in self.t["properties"]}
            stats["subject_other_same_answer_rate"] = _rate(test, lambda r: r.answer == r.context["other_value"])
        return stats

    # ----- answers ---------------------------------------------------------------------------
    def candidates(self, record: Record) -> list[str]:
        return list(record.context["candidates"])

    def instruction(self) -> str:
        return self.t["instruction"]

    def example_key(self, record: Record) -> str:
        return record.context["property"]

    def baselines(self) -> list[BaselineSpec]:
        from selfexplain.benchmarks.introspection.baselines import baseline_specs

        return baseline_specs(self)

    # ----- scoring ---------------------------------------------------------------------------
    def score(self, records: Sequence[Record], explanations: Sequence[Explanation]) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in ("accuracy", "accuracy_in_family", "over_mode", "correct",
                                                "confidence", "predicts", "truth", "probs")}
        for r, e in zip(records, explanations):
            target = (e.fields or {}).get("predicts", SUBJECT)
            c = r.context
            truth = r.answer if target == SUBJECT else c["other_value"]
            mode_probs = c["mode_probs"] if target == SUBJECT else c["other_mode_probs"]
            pred = e.text.strip()
            correct = float(pred.lower() == truth.lower())
            mode_correct = float(max(mode_probs, key=mode_probs.get) == truth)
            main = c["heldout"] == HELDOUT_FAMILY
            out["accuracy"].append(correct if main else _nan())
            out["accuracy_in_family"].append(_nan() if main else correct)
            out["over_mode"].append(correct - mode_correct if main else _nan())
            out["correct"].append(correct)
            probs = e.probabilities or {}
            out["confidence"].append(float(probs[pred]) if pred in probs else _nan())
            out["predicts"].append(target)
            out["truth"].append(truth)
            out["probs"].append(e.probabilities)
        return out

    def summarize(self, records: Sequence[Record], scores: dict[str, list], seed: int) -> dict[str, Any]:
        main = [i for i, r in enumerate(records) if r.context["heldout"] == HELDOUT_FAMILY]
        inner = [i for i, r in enumerate(records) if r.context["heldout"] != HELDOUT_FAMILY]
        pick = lambda key, idx: [scores[key][i] for i in idx]  # noqa: E731
        calibrated = [i for i in main if not math.isnan(scores["confidence"][i])]
        conf, corr = pick("confidence", calibrated), pick("correct", calibrated)
        nan_est = {"value": _nan(), "low": _nan(), "high": _nan(), "n": 0}
        target = scores["predicts"][0] if scores["predicts"] else SUBJECT
        return {
            "accuracy": bootstrap_mean(pick("accuracy", main), seed).to_dict(),
            "accuracy_in_family": bootstrap_mean(pick("accuracy_in_family", inner), seed).to_dict(),
            "over_mode": bootstrap_mean(pick("over_mode", main), seed).to_dict(),
            "ece": bootstrap_ece(conf, corr, seed).to_dict() if calibrated else nan_est,
            "distribution_error": self._distribution_error(records, main, scores, seed) if calibrated else nan_est,
            "reliability": reliability(conf, corr) if calibrated else [],
            "predicts": target,
            "by_property": {prop: float(np.mean([scores["correct"][i] for i in main
                                                 if records[i].context["property"] == prop]))
                            for prop in sorted({records[i].context["property"] for i in main})},
            "by_family": {fam: float(np.mean([scores["correct"][i] for i in range(len(records))
                                              if records[i].context["family"] == fam]))
                          for fam in sorted({r.context["family"] for r in records})},
        }

    def _distribution_error(self, records, main, scores, seed) -> dict[str, float]:
        """Binder et al.'s distribution-level calibration: per (family, property) of the held-out
        families, total variation between the mean predicted distribution over the candidates and
        the distribution of the true answers; item-weighted mean, CI by resampling groups."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i in main:
            groups.setdefault((records[i].context["family"], records[i].context["property"]), []).append(i)
        errors, weights = [], []
        for idx in groups.values():
            probs = [scores["probs"][i] for i in idx]
            if any(p is None for p in probs):
                continue
            cands = list(probs[0])
            truth = Counter(scores["truth"][i] for i in idx)
            predicted = np.mean([[p.get(c, 0.0) for c in cands] for p in probs], axis=0)
            actual = np.array([truth.get(c, 0) / len(idx) for c in cands])
            errors.append(0.5 * float(np.abs(predicted - actual).sum()))
            weights.append(len(idx))
        if not errors:
            return {"value": _nan(), "low": _nan(), "high": _nan(), "n": 0}
        e, w = np.array(errors), np.array(weights, dtype=float)
        rng = np.random.default_rng(seed)
        boots = [np.average(e[s], weights=w[s]) for s in rng.integers(0, len(e), size=(1000, len(e)))]
        lo, hi = np.percentile(boots, [2.5, 97.5])
        return {"value": float(np.average(e, weights=w)), "low": float(lo), "high": float(hi), "n": int(w.sum())}

    # ----- comparisons and report ----------------------------------------------------------------
    def comparisons(self, records: Sequence[Record], per_item: dict[str, dict[str, dict]],
                    summaries: dict[str, dict], seed: int) -> dict[str, Any]:
        """The 2x2: each model predicting itself vs the other model predicting it, paired over
        held-out-family items."""
        from selfexplain.benchmarks.introspection.baselines import OTHER_ON_ITSELF, SUBJECT_ON_OTHER

        def diff(a: str, b: str) -> dict[str, Any] | None:
            if a not in per_item or b not in per_item:
                return None
            xa, xb = per_item[a]["accuracy"], per_item[b]["accuracy"]
            ids = [i for i in xa if i in xb and not math.isnan(xa[i]) and not math.isnan(xb[i])]
            return {"a": a, "b": b, "n": len(ids),
                    "difference": paired_difference([xa[i] for i in ids], [xb[i] for i in ids], seed).to_dict()}
        return {"two_by_two": {SUBJECT: diff("self", "other"), OTHER: diff(OTHER_ON_ITSELF, SUBJECT_ON_OTHER)}}

    def report_facts(self, stats: dict[str, Any]) -> list[ReportFact]:
        facts = [ReportFact("held-out families", stats.get("heldout_families", ""), "text", headline=True),
                 ReportFact("mode baseline on held-out families", stats.get("mode_accuracy_heldout_families",
                                                                            _nan()), "percent", headline=True),
                 ReportFact("'other' answers in the test set", stats.get("test_other_rate", _nan()), "percent",
                            "open-valued properties outside the family's top values"),
                 ReportFact("training families", stats.get("train_families", ""), "text"),
                 ReportFact("object-level prompts run", stats.get("n_prompts", 0), "count"),
                 ReportFact("mirror model", stats.get("mirror_model", ""), "text")]
        if "subject_other_same_answer_rate" in stats:
            facts.append(ReportFact("subject and other model answer alike", stats["subject_other_same_answer_rate"],
                                    "percent", "share of test properties with the same value"))
        for prop, bits in (stats.get("entropy_bits") or {}).items():
            facts.append(ReportFact(f"entropy of {prop}", bits, "number", "bits, subject's test answers "
                                    "(0: always the same; says nothing)", group="answer entropy per property"))
        if "seconds" in stats:
            facts.append(ReportFact("ground truth time", stats["seconds"], "seconds"))
        return facts

    def result_charts(self, section: dict[str, Any]) -> list[ReportChart]:
        charts = []
        for name in ("self", "other"):
            rows = (section["explainers"].get(name) or {}).get("reliability") or []
            if rows:
                charts.append(ReportChart(f"calibration of '{name}': accuracy per confidence bin (held-out families)",
                                          "bars", {f"{100 * b['low']:.0f}-{100 * b['high']:.0f}% (n={b['n']})":
                                                   b["accuracy"] for b in rows}, axis="accuracy (%)"))
        return charts

    def report_tables(self, section: dict[str, Any]) -> list[ReportTable]:
        from selfexplain.benchmarks.introspection.baselines import OTHER_ON_ITSELF, SUBJECT_ON_OTHER

        ex = section["explainers"]
        tables = []
        cell = lambda n: format_estimate(ex[n]["accuracy"]) if n in ex else "not run"  # noqa: E731
        two = (section.get("comparisons") or {}).get("two_by_two") or {}
        dcell = lambda d: format_estimate(d["difference"]) + f" (n={d['n']})" if d else "not run"  # noqa: E731
        other_model = section["ground_truth"].get("mirror_model", "other")
        tables.append(ReportTable(
            "Privileged access: the 2x2 (accuracy on held-out families, 95% CI)",
            ["predictor (trained on the column's behaviour)", "predicts the subject", f"predicts {other_model}"],
            [["subject + LoRA", cell("self") + " (self)", cell(SUBJECT_ON_OTHER) + " (cross)"],
             [f"{other_model} + LoRA", cell("other") + " (cross)", cell(OTHER_ON_ITSELF) + " (self)"],
             ["self - cross (paired)", dcell(two.get(SUBJECT)), dcell(two.get(OTHER))]],
            lead="Each model is trained on records of a model's behaviour at the same budget; privileged access "
                 "shows as each model predicting itself better than the other model predicts it."))
        names = [n for n in ex if ex[n].get("by_property")]
        props = sorted({p for n in names for p in ex[n]["by_property"]})
        if names:
            tables.append(ReportTable("Accuracy per property (held-out families, %)", ["property"] + names,
                                      [[p] + [_pct(ex[n]["by_property"].get(p)) for n in names] for p in props]))
            fams = sorted({f for n in names for f in ex[n]["by_family"]})
            tables.append(ReportTable("Accuracy per family (all test records, %)", ["family"] + names,
                                      [[f] + [_pct(ex[n]["by_family"].get(f)) for n in names] for f in fams]))
            tables.append(ReportTable("Calibration (held-out families; lower is better)",
                                      ["explainer", "ECE", "distribution error"],
                                      [[n, format_estimate(ex[n]["ece"]) if ex[n]["ece"]["n"] else "no probabilities",
                                        format_estimate(ex[n]["distribution_error"])
                                        if ex[n]["distribution_error"]["n"] else "–"] for n in names]))
        return tables

    def report_notes(self, section: dict[str, Any]) -> list[str]:
        """The verdict in plain words, per model of the 2x2."""
        two = (section.get("comparisons") or {}).get("two_by_two") or {}
        other_model = section["ground_truth"].get("mirror_model", "the other model")
        notes = []
        for target, who, rival in ((SUBJECT, "The subject", other_model), (OTHER, other_model, "the subject")):
            d = two.get(target)
            if not d or not d["n"]:
                continue
            est = d["difference"]
            if est["low"] > 0:
                notes.append(f"{who} predicts itself better than {rival} predicts it, by "
                             f"{format_estimate(est)} points on held-out families (n={d['n']}).")
            elif est["high"] < 0:
                notes.append(f"{who} predicts itself worse than {rival} predicts it, by "
                             f"{format_estimate(est)} points on held-out families (n={d['n']}).")
            else:
                notes.append(f"No privileged access measured for {who.lower() if who == 'The subject' else who}: "
                             f"self - cross {format_estimate(est)} points on held-out families (n={d['n']}).")
        wins = [t for t in (SUBJECT, OTHER) if two.get(t) and two[t]["n"] and two[t]["difference"]["low"] > 0]
        if all(two.get(t) and two[t]["n"] for t in (SUBJECT, OTHER)):
            notes.append("Privileged access in both directions (each model predicts itself better than the other "
                         f"predicts it): {'measured' if len(wins) == 2 else 'not measured'}.")
        over = (section["explainers"].get("self") or {}).get("over_mode")
        if over and over.get("n") and over["low"] <= 0:
            notes.append(f"'self' does not beat always-the-most-common-answer on held-out families (self - mode "
                         f"{format_estimate(over)} points): a self - cross gap then measures how far the cross "
                         "model falls below the mode, not self-knowledge beyond the answer distribution.")
        mode = section["ground_truth"].get("mode_accuracy_heldout_families")
        if isinstance(mode, float) and mode == mode:
            notes.append(f"Always answering the most common training answer scores {100 * mode:.1f}% on held-out "
                         "families: the level every explainer must beat.")
        return notes


def _pct(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and x != x) else f"{100 * x:.1f}"


def _rate(items: Sequence[Any], predicate) -> float:
    return sum(1 for x in items if predicate(x)) / len(items) if items else _nan()


def _entropy(values: Sequence[str]) -> float:
    counts = np.array(list(Counter(values).values()), dtype=float)
    if counts.sum() == 0:
        return _nan()
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no "-0"
