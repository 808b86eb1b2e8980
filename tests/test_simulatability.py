"""Simulatability (benchmark 4): counterfactual edits on hand-written cases, LAS by hand, loaders'
errors, the two simulators' disjoint pools and seeds, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from selfexplain import RunConfig, run
from selfexplain.benchmarks.simulatability import counterfactuals as C
from selfexplain.benchmarks.simulatability.benchmark import SimulatabilityBenchmark
from selfexplain.benchmarks.simulatability.data import NLI_LABELS, Item, load_cose, load_esnli
from selfexplain.benchmarks.simulatability.metrics import las, paired_las_difference
from selfexplain.benchmarks.simulatability.simulator import explanation_only_query, training_examples
from selfexplain.errors import DataError

NLI = Item("esnli-1", "esnli", list(NLI_LABELS), 0, ["two men are sitting ."],
           premise="A young man is sitting on a red bench .", hypothesis="A man is sitting outside .")
CQA = Item("cose-1", "cose", ["bank", "library", "mall"], 0, ["banks are secure ."],
           question="Where would you find a big revolving door?")


def kind(dataset: str, name: str) -> C.EditKind:
    return next(k for k in C.edit_kinds(dataset) if k.name == name)


@pytest.mark.parametrize("item,dataset,name,field,expected", [
    (NLI, "esnli", "negate_hypothesis", "hypothesis", "A man is not sitting outside ."),
    (NLI, "esnli", "swap", "premise", "A man is sitting outside ."),
    (NLI, "esnli", "drop_modifier_premise", "premise", None),  # 'young' or 'red': checked below
    (CQA, "cose", "negate_question", "question", "Where would you not find a big revolving door?"),
    (CQA, "cose", "drop_modifier_question", "question", "Where would you find a revolving door?"),
])
def test_edits_do_what_they_say(item, dataset, name, field, expected):
    cf, outcome = C.apply(item, kind(dataset, name))
    assert outcome == C.OK and cf is not None and cf.kind == name
    if expected is not None:
        assert getattr(cf.item, field) == expected
    else:
        assert getattr(cf.item, field) in ("A man is sitting on a red bench .", "A young man is sitting on a bench .")


def test_unnegate_substitute_and_articles():
    neg = Item("e", "esnli", list(NLI_LABELS), 0, ["x"], premise="A dog runs .", hypothesis="The man is not asleep .")
    cf, _ = C.apply(neg, kind("esnli", "negate_hypothesis"))
    assert cf.item.hypothesis == "The man is asleep ."
    cf, _ = C.apply(Item("e", "esnli", list(NLI_LABELS), 0, ["x"], premise="An old dog .", hypothesis="x"),
                    kind("esnli", "substitute_premise"))
    assert cf.item.premise in ("A young dog .", "An old cat .")  # article follows the new word
    cf, _ = C.apply(NLI, kind("esnli", "substitute_hypothesis"))
    assert cf.item.hypothesis in ("A woman is sitting outside .", "A man is standing outside .",
                                  "A man is sitting inside .")


def test_choice_edits_keep_the_options_and_move_gold():
    cf, _ = C.apply(CQA, kind("cose", "reverse_choices"))
    assert cf.item.options == ["mall", "library", "bank"] and cf.item.gold == 2
    cf, _ = C.apply(CQA, kind("cose", "rotate_choices"))
    assert cf.item.options == ["library", "mall", "bank"] and cf.item.gold == 2
    cf, _ = C.apply(CQA, kind("cose", "remove_choice"))
    assert len(cf.item.options) == 2 and set(cf.item.options) < set(CQA.options)


def test_dropped_edits_are_counted():
    plain = Item("e", "esnli", list(NLI_LABELS), 0, ["x"], premise="Folks wave .", hypothesis="Someone waves .")
    assert C.apply(plain, kind("esnli", "negate_hypothesis")) == (None, C.NO_SITE)
    assert C.apply(plain, kind("esnli", "substitute_hypothesis")) == (None, C.NO_SITE)
    pred = Item("e", "esnli", list(NLI_LABELS), 0, ["x"], premise="The dog is old .", hypothesis="He has a dog .")
    assert C.apply(pred, kind("esnli", "drop_modifier_premise")) == (None, C.UNGRAMMATICAL)  # predicate position
    assert C.apply(pred, kind("esnli", "negate_hypothesis")) == (None, C.UNGRAMMATICAL)  # 'has not a dog'
    same = Item("e", "esnli", list(NLI_LABELS), 0, ["x"], premise="A cat .", hypothesis="A cat .")
    assert C.apply(same, kind("esnli", "swap")) == (None, C.UNCHANGED)
    kept, outcomes = C.make_counterfactuals(plain, C.edit_kinds("esnli"), 4)
    assert [c.kind for c in kept] == ["swap"] and outcomes["negate_hypothesis"] == C.NO_SITE
    kept, outcomes = C.make_counterfactuals(NLI, C.edit_kinds("esnli"), 4)
    assert len(kept) == 4 and len({c.kind for c in kept}) == 4


def test_nli_options_are_verbalised_for_every_prompt():
    from selfexplain.benchmarks.simulatability.subject import message, verbalize

    v = verbalize(NLI)
    assert v.options == ["True", "Neither", "False"] and v.gold == 0
    assert "True, False, or Neither?" in message(v)
    assert verbalize(CQA) == CQA  # CoS-E options are the choices themselves


def test_las_by_hand():
    # gains per item; items 0-1 leak, items 2-4 do not.
    gains, leaks = [0.5, 0.25, 0.0, -0.25, 0.25], [1, 1, 0, 0, 0]
    # leaking mean 0.375, non-leaking mean 0.0: LAS = 0.1875 (the plain mean would be 0.15)
    assert las(gains, leaks) == pytest.approx(0.1875)
    assert las([0.5, 0.5], [1, 1]) == pytest.approx(0.5)  # one group only: its mean
    assert math.isnan(las([], []))
    d = paired_las_difference(gains, leaks, [0.0] * 5, [0] * 5, seed=0)
    assert d.value == pytest.approx(0.1875) and d.low <= d.value <= d.high


def test_simulator_training_mixes_sources_equally():
    cfs, _ = C.make_counterfactuals(NLI, C.edit_kinds("esnli"), 4)
    pool = [(NLI, cfs, 0, [0, 1, 2, 0], {"human": "h", "subject": "s", "other": "o", "probe": "p"})] * 4
    ex = training_examples(pool, ("human", "subject", "other", "probe"))
    with_e = [q.text for q in ex if "explanation: because" in q.text and "New input" in q.text]
    without = [q.text for q in ex if "explanation" not in q.text]
    assert len(without) == len(with_e) == 16  # each counterfactual once without, once with
    assert {t.split("because ")[1][0] for t in with_e} == {"h", "s", "o", "p"}
    assert all(sum(t.split("because ")[1][0] == s for t in with_e) == 4 for s in "hsop")
    assert explanation_only_query(NLI, "h", 0).text in [q.text for q in ex]


def write_data(root):
    (root / "esnli").mkdir(parents=True)
    (root / "cos_e").mkdir()
    rows = []
    nouns = ["man", "woman", "boy", "girl", "dog", "cat"]
    for i in range(60):
        n = nouns[i % len(nouns)]
        rows.append({"idx": i, "premise": f"A young {n} is sitting on a red bench number {i} .",
                     "hypothesis": f"The {n} is outside .", "gold_label": NLI_LABELS[i % 3],
                     "explanation_1": f"the {n} sits outside", "explanation_2": "", "explanation_3": ""})
    lines = [json.dumps(r) for r in rows] + ["{not json", json.dumps({"premise": "x"})]
    (root / "esnli" / "esnli_dev.jsonl").write_text("\n".join(lines) + "\n")
    rows = []
    for i in range(60):
        rows.append({"id": f"q{i}", "question": f"Where would you find a big dog number {i}?",
                     "choices": [{"label": L, "text": t} for L, t in zip("ABCDE", ["bank", "park", "mall", "home",
                                                                                    "zoo"])],
                     "answer_key": "ABCDE"[i % 5], "explanation_open_ended": "dogs live at home"})
    rows.append({"id": "bad", "question": "q", "choices": "A", "answer_key": "A", "explanation_open_ended": "x"})
    (root / "cos_e" / "cose_v1.11_dev.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def test_loaders_count_malformed_rows_and_name_missing_paths(tmp_path):
    root = write_data(tmp_path / "data")
    esnli = load_esnli(root)
    assert len(esnli.items) == 60 and len(esnli.skipped) == 2
    assert esnli.skipped[0][1] == 61 and "JSON" in esnli.skipped[0][2]
    cose = load_cose(root / "cos_e")
    assert len(cose.items) == 60 and len(cose.skipped) == 1 and "choices" in cose.skipped[0][2]
    with pytest.raises(DataError, match="--data-root"):
        load_esnli(tmp_path / "missing")
    with pytest.raises(DataError, match="--sources esnli:PATH"):
        SimulatabilityBenchmark().validate(RunConfig(benchmarks="simulatability", data_root=str(tmp_path)))


@pytest.fixture(scope="module")
def sim_run(tiny_dirs, tmp_path_factory):
    root = write_data(tmp_path_factory.mktemp("simdata"))
    out = tmp_path_factory.mktemp("simulatability")
    cfg = RunConfig(benchmarks="simulatability", subject=str(tiny_dirs["subject"]), other=str(tiny_dirs["other"]),
                    output_dir=str(out), data_root=str(root), n_train=8, n_test=8, seed=0)
    return cfg, run(cfg)


def test_end_to_end_tiny(sim_run):
    cfg, res = sim_run
    bench = res["benchmarks"]["simulatability"]
    ex = bench["explainers"]
    assert set(ex) == {"self", "zero-shot", "human", "other-zero-shot", "no-explanation", "leakage-probe"}
    assert bench["n_test"] == 8 and bench["n_train"] <= 8
    for name, s in ex.items():
        assert set(s["per_dataset"]) == {"esnli", "cose"}
        assert 0 <= s["simulation_accuracy"]["value"] <= 1
        assert s["per_dataset"]["esnli"]["by_kind"]
    none = ex["no-explanation"]
    assert none["gain_over_none"]["value"] == pytest.approx(0.0) and none["leak_rate"]["value"] == 0.0
    assert bench["self_vs_best_other"]["best_other"] != "leakage-probe"  # a reference, never the rival
    assert "human" in bench["comparisons"] and set(bench["comparisons"]["human"]) == {"esnli", "cose"}
    gt = bench["ground_truth"]
    assert gt["datasets"]["esnli"]["malformed_rows"] == 2 and gt["datasets"]["cose"]["malformed_rows"] == 1
    titles = [t["title"] for t in bench["tables"]]
    assert "Self vs human (and vs no explanation, zero-shot, other)" in titles
    html = (Path(res["run_dir"]) / "report.html").read_text()
    assert "simulatability" in html


def test_selection_and_scoring_simulators_differ(sim_run):
    cfg, res = sim_run
    gt = res["benchmarks"]["simulatability"]["ground_truth"]
    sims = gt["simulators"]
    assert sims["select"]["adapter_dir"] != sims["score"]["adapter_dir"]
    assert sims["select"]["seed"] != sims["score"]["seed"]
    for d in gt["datasets"].values():
        assert d["pool_items"]["select"] > 0 and d["pool_items"]["score"] > 0
    # Pools are disjoint: test, training and both simulators' items never overlap.
    from selfexplain.runs.store import Store

    store = Store.for_output_dir(cfg.output_dir)
    records, _ = store.ground_truth(res["run_id"], "simulatability")
    test_ids = {r.group for r in records if r.split == "test"}
    train_ids = {r.group for r in records if r.split == "train"}
    assert not test_ids & train_ids
    for r in records:
        if r.split == "train":
            assert r.provenance.params["selector"] == sims["select"]["adapter_dir"]
        else:
            assert r.context["scoring_simulator"] == sims["score"]["adapter_dir"]



