"""The change answer format, shared by benchmarks that intervene and ask what happened:
"unchanged from X" / "changes to Y", scored by exact match, has-changed macro-F1 and content match."""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np

from selfexplain.benchmarks.base import Benchmark, MetricSpec, ReportChart, ReportFact
from selfexplain.explainers.base import Explanation
from selfexplain.metrics import bootstrap_macro_f1, bootstrap_mean
from selfexplain.records import Record

_CHANGE_ANSWER = re.compile(r"^\s*(unchanged from|changes to)\s+(.+?)\s*\.?\s*$", re.IGNORECASE)
# An explainer whose answers say "changes" (or "unchanged") this often or more answers one way.
ONE_SIDED = 0.95


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def normalize(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.lower()).strip()


def parse_change_answer(text: str) -> tuple[bool | None, str]:
    """(changed?, answer content) of "unchanged from X" / "changes to Y"; (None, '') when unparseable."""
    m = _CHANGE_ANSWER.match(text.strip().split("\n")[0])
    if not m:
        return None, ""
    return m.group(1).lower() == "changes to", normalize(m.group(2))


class ChangeBenchmark(Benchmark):
    """Benchmarks whose answers are "unchanged from X" / "changes to Y" after an intervention.

    Records carry context['changed'] and context[after_key] (the subject's answer after the
    intervention); scoring is exact match, has-changed macro-F1 and content match.
    """

    answer_format = "closed"
    metrics = (MetricSpec("exact_match", "exact match", primary=True),
               MetricSpec("changed_macro_f1", "changed macro-F1"),
               MetricSpec("content_match", "content match"),
               MetricSpec("exact_match_subject_correct", "exact match (subject correct)"))
    ground_truth_text = ("The ground truth is what the subject actually did under the intervention, measured by "
                         "running it. Few interventions change the answer, so the test set is balanced by sampling: "
                         "a constant \u201cnever changes\u201d answer then scores about half. The subject's task "
                         "accuracy shows how well it knows the questions in the first place.")
    after_key: str = "answer_after"
    before_key: str = "answer_before"  # the subject's answer without the intervention
    # Subclasses hold templates `t` with "answer_unchanged" and "answer_changed" ({answer}).
    t: dict[str, Any]

    def options(self, record: Record) -> list[str]:
        """Every answer the subject could change to (the record's options)."""
        raise NotImplementedError

    def candidates(self, record: Record) -> list[str]:
        """"unchanged from <answer before>", and "changes to <o>" for every other option."""
        before = record.context[self.before_key]
        return [self.t["answer_unchanged"].format(answer=before)] + [
            self.t["answer_changed"].format(answer=o) for o in self.options(record) if o != before]

    def score(self, records: Sequence[Record], explanations: Sequence[Explanation]) -> dict[str, list]:
        out: dict[str, list] = {"exact_match": [], "changed_pred": [], "changed_true": [], "content_match": [],
                                "parsed": []}
        for r, e in zip(records, explanations):
            pred_changed, pred_content = parse_change_answer(e.text)
            true_changed, true_content = parse_change_answer(r.answer)
            out["exact_match"].append(float(pred_changed == true_changed and pred_content == true_content))
            out["changed_pred"].append(pred_changed)
            out["changed_true"].append(true_changed)
            out["content_match"].append(float(pred_content == normalize(r.context[self.after_key])))
            out["parsed"].append(float(pred_changed is not None))
        return out

    def summarize(self, records: Sequence[Record], scores: dict[str, list], seed: int) -> dict[str, Any]:
        right = [i for i, r in enumerate(records) if r.context.get("subject_correct")]
        return {
            "exact_match": bootstrap_mean(scores["exact_match"], seed).to_dict(),
            "changed_macro_f1": bootstrap_macro_f1(scores["changed_true"], scores["changed_pred"], seed).to_dict(),
            "content_match": bootstrap_mean(scores["content_match"], seed).to_dict(),
            "parse_rate": float(sum(scores["parsed"]) / max(1, len(scores["parsed"]))),
            # share of parsed answers that say "changes": near 0 or 1, an explainer answers one way
            "said_changed_rate": float(np.mean(said)) if (said := [p for p in scores["changed_pred"] if p is not None])
            else float("nan"),
            "exact_match_subject_correct": bootstrap_mean([scores["exact_match"][i] for i in right], seed).to_dict(),
        }

    @property
    def truth_keys(self) -> frozenset[str]:  # type: ignore[override]
        """What the intervention did: explainers answering a query never see it."""
        return frozenset({"changed", "label", self.after_key})

    def one_sided(self, summary: dict[str, Any]) -> str:
        """'' or, for an explainer that gives one kind of answer to (nearly) every item, e.g.
        "answered 'unchanged' on 99.7% of the items": beating it says little about what either learned."""
        rate = summary.get("said_changed_rate")
        if not isinstance(rate, float) or rate != rate or ONE_SIDED > rate > 1 - ONE_SIDED:
            return ""
        kind, share = ("changes", rate) if rate >= ONE_SIDED else ("unchanged", 1 - rate)
        return f"answered '{kind}' on {100 * share:.1f}% of the items"

    # The baseline that always answers "unchanged": what it scores is the level to beat.
    constant_baseline: str = ""
    # The subject's accuracy without the intervention: stats key and the label of its fact.
    accuracy_key: str = "subject_accuracy"

    def report_facts(self, stats: dict[str, Any]) -> list[ReportFact]:
        facts = [ReportFact("subject task accuracy", stats.get(self.accuracy_key, float("nan")), "percent",
                            "without the intervention", headline=True)]
        if "raw_changed_rate" in stats:
            n_raw = stats.get("n_raw_records")
            facts.append(ReportFact("changed before balancing", stats["raw_changed_rate"], "percent",
                                    f"of {n_raw} raw records" if n_raw is not None else "", headline=True))
        if "test_changed_rate" in stats:
            facts.append(ReportFact("changed in the test set", stats["test_changed_rate"], "percent",
                                    "after balancing", headline=True))
        for key, v in stats.items():
            if not isinstance(v, (dict, list)) and key not in (self.accuracy_key, "raw_changed_rate",
                                                                "test_changed_rate"):
                kind = ("seconds" if key == "seconds" or key.endswith("_seconds") else "text"
                        if isinstance(v, (str, bool)) else "percent" if ("rate" in key or "accuracy" in key)
                        else "count" if isinstance(v, int) else "number")
                facts.append(ReportFact(key.replace("_", " "), v, kind, group="all ground-truth statistics"))
        return facts

    def report_charts(self, stats: dict[str, Any]) -> list[ReportChart]:
        balance = {label: stats[key] for key, label in (("raw_changed_rate", "before balancing"),
                                                        ("train_changed_rate", "training set"),
                                                        ("test_changed_rate", "test set"))
                   if _finite(stats.get(key))}
        charts = [ReportChart("changed vs unchanged", "split", balance, ("changed", "unchanged"))] if balance else []
        for key, v in stats.items():
            if key.startswith("changed_rate_by_") and isinstance(v, dict) and len(v) >= 2 and all(
                    _finite(x) for x in v.values()):
                charts.append(ReportChart(key.replace("changed_rate_by_", "changed rate by "), "bars", v,
                                          axis="changed rate (%)"))
        return charts

    def report_notes(self, section: dict[str, Any]) -> list[str]:
        """What the constant answer scores on the balanced test set: the level to beat."""
        ref = section["explainers"].get(self.constant_baseline)
        rate = section["ground_truth"].get("test_changed_rate")
        primary = self.primary_metric
        if not ref or not _finite(rate) or not _finite((ref.get(primary) or {}).get("value")):
            return []
        return [f"The test set is {100 * rate:.1f}% changed, so the constant answer {self.constant_baseline} scores "
                f"{100 * ref[primary]['value']:.1f}%: the level to beat."]

    def example_key(self, record: Record) -> str:
        return "changed" if record.context["changed"] else "unchanged"
