import pytest

from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark, layer_blocks, parse_answer
from selfexplain.config import RunConfig
from selfexplain.data.facts import embedded_facts
from selfexplain.runs.store import Store


@pytest.mark.parametrize("text,expected", [
    ("unchanged from Paris", (False, "paris")),
    ("changes to North America.", (True, "north america")),
    ("Changes to Berlin\nmore text", (True, "berlin")),
    ("  unchanged from  Mexico City ", (False, "mexico city")),
    ("The answer is Paris", (None, "")),
    ("", (None, "")),
])
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize("n_layers,n_blocks,expected", [
    (30, 6, [(0, 4), (5, 9), (10, 14), (15, 19), (20, 24), (25, 29)]),
    (4, 6, [(0, 0), (1, 1), (2, 2), (3, 3)]),
    (7, 3, [(0, 1), (2, 4), (5, 6)]),
])
def test_layer_blocks(n_layers, n_blocks, expected):
    assert layer_blocks(n_layers, n_blocks) == expected


def test_embedded_facts_are_large_enough():
    facts = embedded_facts()
    entities = {f.entity for f in facts}
    assert len(facts) > 800 and len(entities) > 250
    # >= 2,000 records: 18 patches per (base, counterfactual) pair, one pair per fact
    assert len(facts) * 18 >= 2000


@pytest.fixture(scope="module")
def ground_truth(tokenizer):
    from conftest import make_model
    from selfexplain.models.loading import wrap_model

    subject = wrap_model(make_model(len(tokenizer)), tokenizer, name="tiny", device="cpu")
    cfg = RunConfig(n_train=40, n_test=12, seed=3).resolved().for_benchmark()
    return subject, cfg, PatchingBenchmark(option_answers_only=False).build_records(subject, cfg)


def test_records_have_provenance_and_vectors(ground_truth):
    subject, _, gt = ground_truth
    r = gt.records[0]
    assert r.provenance.technique == "activation_patching" and r.provenance.seed == 3
    assert r.provenance.subject == "tiny"
    assert r.vector is not None and r.vector.shape == (subject.hidden_size,)
    assert r.query.count("<<vector>>") == 1
    # The query states the subject's own unpatched answers, as every baseline knows them.
    assert (f"Your answer: {r.context['clean_answer']}. About {r.context['cf_entity']}: "
            f"{r.context['cf_clean_answer']}.\nPatch L") in r.query
    assert r.answer == (f"changes to {r.context['patched_answer']}" if r.context["changed"]
                        else f"unchanged from {r.context['clean_answer']}")


def test_split_by_entity_and_balanced_test(ground_truth):
    _, cfg, gt = ground_truth
    train = [r for r in gt.records if r.split == "train"]
    test = [r for r in gt.records if r.split == "test"]
    assert len(train) == cfg.n_train
    assert 0 < len(test) <= cfg.n_test
    entities = lambda rs: {r.context["entity"] for r in rs} | {r.context["cf_entity"] for r in rs}  # noqa: E731
    assert not entities(train) & entities(test)
    assert sum(r.context["changed"] for r in test) * 2 == len(test)
    assert 0 <= gt.stats["raw_changed_rate"] <= 1


def test_same_seed_same_records(ground_truth, tokenizer):
    subject, cfg, gt = ground_truth
    again = PatchingBenchmark(option_answers_only=False).build_records(subject, cfg)
    assert [(r.id, r.answer) for r in again.records] == [(r.id, r.answer) for r in gt.records]


def test_records_roundtrip_through_the_store(ground_truth, tmp_path):
    _, _, gt = ground_truth
    store = Store(tmp_path / "s.db")
    store.save_ground_truth("run", "patching", gt.records, {"n": 1})
    loaded, stats = Store(tmp_path / "s.db").ground_truth("run", "patching")
    assert stats == {"n": 1}
    assert [r.to_json() for r in loaded] == [r.to_json() for r in gt.records]
    assert all((a.vector == b.vector).all() for a, b in zip(loaded, gt.records))


def test_scoring(ground_truth):
    from selfexplain.explainers import Explanation

    _, _, gt = ground_truth
    test = [r for r in gt.records if r.split == "test"][:4]
    bench = PatchingBenchmark()
    perfect = bench.score(test, [Explanation(r.answer, 0, 0) for r in test])
    assert perfect["exact_match"] == [1.0] * 4 and perfect["content_match"] == [1.0] * 4
    garbage = bench.score(test, [Explanation("no idea", 0, 0) for r in test])
    assert garbage["exact_match"] == [0.0] * 4 and garbage["parsed"] == [0.0] * 4
