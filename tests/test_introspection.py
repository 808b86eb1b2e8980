"""Introspection (self-prediction): prompt families, property values, the family split, the mode
baseline, calibration, and the 2x2 design end to end on tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfexplain import RunConfig, run
from selfexplain.benchmarks.introspection import properties as P
from selfexplain.benchmarks.introspection.baselines import OTHER_ON_ITSELF, SUBJECT_ON_OTHER
from selfexplain.benchmarks.introspection.benchmark import HELDOUT_FAMILY, HELDOUT_PROMPT, IntrospectionBenchmark
from selfexplain.benchmarks.introspection.families import Prompt, build_prompts
from selfexplain.metrics import expected_calibration_error
from selfexplain.runs.store import Store


def test_families_are_many_distinct_and_seeded():
    prompts = build_prompts(0)
    assert len(prompts) >= 8
    for family, items in prompts.items():
        texts = [p.text for p in items]
        assert len(set(texts)) == len(texts) >= 150, family
        assert len({p.id for p in items}) == len(items)
    again = build_prompts(0)
    assert [p.text for p in again["options"]] == [p.text for p in prompts["options"]]
    assert [p.text for p in build_prompts(1)["options"]] != [p.text for p in prompts["options"]]


OPTIONS = Prompt("options/0", "options", "Pick one: cat, dog, owl, wolf.", ("among_options", "option_half"),
                 ("cat", "dog", "owl", "wolf"))
SEQUENCE = Prompt("number_sequence/0", "number_sequence", "Next number: 2, 4, 6,", ("parity",))


@pytest.mark.parametrize("prop,answer,prompt,expected", [
    ("first_word", "Blue whale", SEQUENCE, "blue"),
    ("first_word", "", SEQUENCE, "(empty)"),
    ("first_char", "Blue whale", SEQUENCE, "b"),
    ("second_char", "Blue whale", SEQUENCE, "l"),
    ("second_char", "A cat", SEQUENCE, "(space)"),
    ("second_char", "A", SEQUENCE, "(none)"),
    ("starts_with_vowel", "owl", SEQUENCE, "yes"),
    ("starts_with_vowel", "Wolf", SEQUENCE, "no"),
    ("second_word", "Blue whale", SEQUENCE, "whale"),
    ("second_word", "Blue", SEQUENCE, "(none)"),
    ("length", "Blue whale", SEQUENCE, "1-2"),
    ("length", "the blue whale", SEQUENCE, "3-5"),
    ("length", "I think the blue whale is big", SEQUENCE, "6 or more"),
    ("parity", "8", SEQUENCE, "even"),
    ("parity", "The answer is 13", SEQUENCE, "odd"),
    ("parity", "eight", SEQUENCE, "no number"),
    ("among_options", "Dog", OPTIONS, "yes"),
    ("among_options", "Horse", OPTIONS, "no"),
    ("option_half", "dog", OPTIONS, "first two"),
    ("option_half", "Owl.", OPTIONS, "last two"),
    ("option_half", "horse", OPTIONS, "neither"),
])
def test_property_values(prop, answer, prompt, expected):
    assert P.value(prop, P.clean_answer(answer), prompt) == expected


def test_clean_answer_and_open_candidates():
    assert P.clean_answer('\n  "Paris."  \nmore') == "Paris"
    assert P.clean_answer("**Red**") == "Red"
    values = ["b"] * 5 + ["a"] * 5 + ["c"] * 3 + ["d"]
    assert P.open_candidates(values, 3) == ["a", "b", "c", "other"]  # alphabetical: order tells no frequency
    assert P.bucket("d", ["a", "b", "c", "other"]) == "other"
    assert P.applicable(OPTIONS)[-2:] == ["among_options", "option_half"]
    assert "parity" in P.applicable(SEQUENCE) and "among_options" not in P.applicable(SEQUENCE)


def test_family_split_leaks_nothing():
    bench = IntrospectionBenchmark()
    cfg = RunConfig(n_train=300, n_test=200, seed=5)
    plan = bench.plan(cfg)
    train_fams = {p.family for p, split, _, _ in plan if split == "train"}
    heldout_fams = {p.family for p, _, kind, _ in plan if kind == HELDOUT_FAMILY}
    assert len(heldout_fams) == bench.heldout_families and not train_fams & heldout_fams
    in_family = [p for p, _, kind, _ in plan if kind == HELDOUT_PROMPT]
    assert in_family and {p.family for p in in_family} <= train_fams
    train_texts = {p.text for p, split, _, _ in plan if split == "train"}
    assert not train_texts & {p.text for p in in_family}  # held-out prompts were never trained on
    assert len({p.id for p, _, _, _ in plan}) == len(plan)
    for _, _, _, props in plan:
        assert len(props) == len(set(props)) <= bench.properties_per_prompt
    assert bench.split_families(list(build_prompts(5)), 5) == bench.split_families(list(build_prompts(5)), 5)


def test_expected_calibration_error_by_hand():
    conf = [0.95, 0.95, 0.55, 0.55, 0.15]
    correct = [1, 0, 1, 1, 0]
    # bins: [0.9,1): acc .5 conf .95 (2 items); [0.5,0.6): acc 1 conf .55 (2); [0.1,0.2): acc 0 conf .15 (1)
    expected = (2 * 0.45 + 2 * 0.45 + 1 * 0.15) / 5
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)
    assert expected_calibration_error([1.0, 1.0], [1, 1]) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def intro_run(tiny_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("introspection")
    cfg = RunConfig(benchmarks="introspection", subject=str(tiny_dirs["subject"]), other=str(tiny_dirs["other"]),
                    output_dir=str(out), n_train=48, n_test=32, seed=0)
    return cfg, run(cfg)


def test_two_by_two_end_to_end(intro_run):
    cfg, res = intro_run
    bench = res["benchmarks"]["introspection"]
    ex = bench["explainers"]
    assert set(ex) == {"nearest-neighbour", "zero-shot", "4-shot", "self", "other", "most-common", OTHER_ON_ITSELF,
                       SUBJECT_ON_OTHER}
    assert bench["n_train"] == 48 and bench["n_test"] == 32
    assert ex[OTHER_ON_ITSELF]["predicts"] == ex[SUBJECT_ON_OTHER]["predicts"] == "other"
    assert ex["self"]["predicts"] == ex["other"]["predicts"] == "subject"
    # mirror explainers predict the other model: never "the best other", never paired with self
    assert bench["self_vs_best_other"]["best_other"] not in (OTHER_ON_ITSELF, SUBJECT_ON_OTHER)
    assert OTHER_ON_ITSELF not in bench["self_vs"] and SUBJECT_ON_OTHER not in bench["self_vs"]
    assert "most-common" in bench["self_vs"]
    n_main = 32 - round(0.25 * 32)
    assert ex["self"]["accuracy"]["n"] == n_main and ex["self"]["accuracy_in_family"]["n"] == 32 - n_main
    two = bench["comparisons"]["two_by_two"]
    assert two["subject"]["n"] == two["other"]["n"] == n_main
    # self - cross of the 2x2 is the run's paired self - other (same items, same seed)
    assert two["subject"]["difference"] == bench["self_vs_other"]["difference"]
    # the mode baseline scores what the ground truth says it scores
    assert ex["most-common"]["accuracy"]["value"] == pytest.approx(bench["ground_truth"]["mode_accuracy_heldout_families"])
    assert ex["most-common"]["over_mode"]["value"] == pytest.approx(0.0)
    # explainers that pick among candidates are calibrated from their probabilities; NN gives none
    assert math.isfinite(ex["self"]["ece"]["value"]) and ex["nearest-neighbour"]["ece"]["n"] == 0
    titles = [t["title"] for t in bench["tables"]]
    assert any("2x2" in t for t in titles) and any("per property" in t for t in titles)
    assert any("No privileged access" in n or "predicts itself" in n for n in bench["notes"])


def test_mirror_answers_are_scored_on_the_other_models_behaviour(intro_run):
    cfg, res = intro_run
    store = Store.for_output_dir(cfg.output_dir)
    records, _ = store.ground_truth(res["run_id"], "introspection")
    test = {r.id: r for r in records if r.split == "test"}
    preds = store.predictions(res["run_id"], "introspection", SUBJECT_ON_OTHER)
    main = [i for i in preds if test[i].context["heldout"] == HELDOUT_FAMILY]
    right = np.mean([preds[i].text == test[i].context["other_value"] for i in main])
    assert right == pytest.approx(res["benchmarks"]["introspection"]["explainers"][SUBJECT_ON_OTHER]["accuracy"]["value"])
    for i in main:  # the mirror saw the other model's candidates
        assert preds[i].text in test[i].context["other_candidates"]


def test_lora_layers_option_sets_the_adapted_depth():
    from selfexplain.errors import ConfigError
    from selfexplain.runs.run import explainer_train_config, run_dir_for

    default = RunConfig(benchmarks="introspection").resolved()
    assert explainer_train_config(default, ["introspection"], trains_projector=False).lora_layer_fraction == 0.5
    assert explainer_train_config(default, ["introspection"], trains_projector=True).lora_layer_fraction == 1.0
    full = RunConfig(benchmarks="introspection", lora_layers=1.0).resolved()
    assert explainer_train_config(full, ["introspection"], trains_projector=False).lora_layer_fraction == 1.0
    assert run_dir_for(full) != run_dir_for(default)
    assert run_dir_for(RunConfig(benchmarks="introspection", lora_layers=0.0).resolved()) == run_dir_for(default)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="--lora-layers"):
            RunConfig(lora_layers=bad).resolved()
