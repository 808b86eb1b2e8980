"""The rationales benchmark: answer text <-> word indices, the macro bootstrap, and a tiny-model
run whose every score is recomputed independently (ERASER-format data written in the test)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from selfexplain import RunConfig, run
from selfexplain.errors import ConfigError, DataError
from selfexplain.metrics import bootstrap_macro_mean, bootstrap_mean
from selfexplain.benchmarks.rationales.text import format_ranking, parse_rationale, sayable, word_key


# ----- answer text --------------------------------------------------------------------------
WORDS = ["The", "film", "was", "good,", "really", "good", "--", "and", "1,000", "fans", "agreed."]


def test_format_and_parse_round_trip():
    ranked = [5, 3, 10, 0, 8]
    plain = format_ranking(WORDS, ranked)
    assert plain == "good, good, agreed, The, 1,000"
    # plain words take their first free occurrence: "good" -> 3 then 5 (not the order ranked)
    assert parse_rationale(plain, WORDS).ranked == [3, 5, 10, 0]
    indexed = format_ranking(WORDS, ranked + [6], with_index=True)
    assert indexed == "good@5, good@3, agreed@10, The@0, 1,000@8, @6"
    parsed = parse_rationale(indexed, WORDS)
    assert parsed.ranked == ranked + [6] and parsed.listed == 6 and parsed.matched == 6


def test_parse_is_forgiving_and_counts():
    parsed = parse_rationale("Film; REALLY good\nfans, fans, nothing, good@4, good@99", WORDS)
    # case and punctuation ignored; a second "fans" has no occurrence left; a wrong index reads
    # as a plain word
    assert parsed.ranked == [1, 4, 3, 9, 5]
    assert parsed.listed == 8 and parsed.matched == 5
    assert parse_rationale("", WORDS).empty
    assert parse_rationale("I cannot tell.", WORDS).empty
    assert parse_rationale("@6", WORDS).ranked == [6]
    assert word_key("Good,") == "good" and not sayable("--")


# ----- metrics ------------------------------------------------------------------------------
def test_bootstrap_macro_mean_weights_groups_equally():
    est = bootstrap_macro_mean([1.0, 1.0, 1.0, 0.0], ["a", "a", "a", "b"], seed=3)
    assert est.value == pytest.approx(0.5)  # (1 + 0) / 2, not the micro mean 0.75
    assert est.n == 4
    assert 0.0 <= est.low <= est.value <= est.high <= 1.0
    # group b has one item: it resamples to itself, so the CI is group a's spread / 2 = 0
    assert est.low == est.high == pytest.approx(0.5)
    assert bootstrap_macro_mean([0.2, 0.4], ["x", "x"], seed=0).to_dict() == bootstrap_mean([0.2, 0.4], 0).to_dict()
    again = bootstrap_macro_mean([0.1, 0.9, 0.3, 0.5], list("aabb"), seed=1)
    assert again == bootstrap_macro_mean([0.1, 0.9, 0.3, 0.5], list("aabb"), seed=1)


# ----- a tiny run ---------------------------------------------------------------------------
def _vocab_words(tokenizer) -> list[str]:
    return sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) > 2)


def _span(docid: str, start: int, end: int, words: list[str]) -> dict:
    return {"docid": docid, "start_token": start, "end_token": end, "start_sentence": -1, "end_sentence": -1,
            "text": " ".join(words[start:end])}


def _write(folder: Path, rows: list[dict], docs: dict[str, str]) -> None:
    folder.mkdir(parents=True)
    (folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "docs.jsonl").write_text("".join(json.dumps({"docid": d, "document": t}) + "\n" for d, t in docs.items()))


def write_datasets(root: Path, tokenizer, n_docs: int = 8) -> dict[str, Path]:
    """ERASER-format 'movies' (two queries share one document, so the split must keep them
    together) and 'cose' folders, written with words the tiny tokenizer knows."""
    vocab = _vocab_words(tokenizer)
    rng = random.Random(0)
    docs, rows = {}, []
    for i in range(n_docs):
        words = [rng.choice(vocab) for _ in range(rng.randint(14, 22))]
        docs[f"m{i}"] = " ".join(words[:8]) + " .\n" + " ".join(words[8:])
        start = rng.randint(0, 5)
        text_words = docs[f"m{i}"].split()
        rows.append({"annotation_id": f"m{i}", "classification": "POS" if i % 2 else "NEG",
                     "query": "What is the sentiment of this review?", "query_type": None,
                     "evidences": [[_span(f"m{i}", start, start + 4, text_words)]]})
    rows.append(dict(rows[0], annotation_id="m0-again"))
    # one malformed row (no label): counted, not fatal
    rows.append({k: v for k, v in rows[1].items() if k != "classification"} | {"annotation_id": "broken"})
    _write(root / "movies", rows, docs)
    docs, rows = {}, []
    for i in range(n_docs):
        words = [rng.choice(vocab) for _ in range(rng.randint(6, 10))]
        docs[f"c{i}"] = " ".join(words)
        choices = rng.sample(vocab, 5)
        rows.append({"annotation_id": f"c{i}", "classification": "ABCDE"[i % 5],
                     "query": " [sep] ".join(choices), "query_type": None,
                     "evidences": [[_span(f"c{i}", 1, 3, words)]]})
    _write(root / "cose", rows, docs)
    return {"movies": root / "movies", "cose": root / "cose"}


EXPLAINERS = "human,random,occlusion,attention-last,integrated-gradients,self,zero-shot"


@pytest.fixture(scope="module")
def tiny_subject(tmp_path_factory) -> tuple[Path, object]:
    """A tiny random model whose word-level vocabulary also holds the rationale templates'
    words (so 'negative' and 'positive' are distinct options)."""
    import re

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from conftest import SPECIALS, _vocab, make_model
    from selfexplain.benchmarks.rationales.benchmark import QUESTION
    from selfexplain.templates import load_templates

    text = json.dumps(load_templates("selfexplain.benchmarks.rationales")) + QUESTION
    words = SPECIALS + sorted((set(_vocab()) | set(re.findall(r"\w+|[^\w\s]", text))) - set(SPECIALS))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                        unk_token="<unk>", additional_special_tokens=["<filename>"])
    path = tmp_path_factory.mktemp("models") / "subject"
    make_model(len(tokenizer), seed=3).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, tokenizer


@pytest.fixture(scope="module")
def rationale_run(tiny_subject, tmp_path_factory):
    path, tokenizer = tiny_subject
    root = tmp_path_factory.mktemp("eraser")
    paths = write_datasets(root, tokenizer)
    cfg = RunConfig(benchmarks="rationales", subject=str(path),
                    sources=f"movies:{paths['movies']},cose:{paths['cose']}", explainers=EXPLAINERS,
                    output_dir=str(tmp_path_factory.mktemp("runs")), n_train=8, n_test=6, epochs=1, seed=2,
                    budget_tokens=32)
    return cfg, run(cfg)


def _loaded(cfg, res):
    from selfexplain.runs.run import Run
    from selfexplain.runs.store import Store

    store = Store.open_existing(cfg.output_dir)
    records, stats = store.ground_truth(res["run_id"], "rationales")
    r = Run(cfg)
    return store, r, records, stats


def test_run_reports_every_explainer_per_dataset(rationale_run):
    from selfexplain.benchmarks.rationales.benchmark import METRICS

    cfg, res = rationale_run
    bench = res["benchmarks"]["rationales"]
    assert set(bench["explainers"]) == set(EXPLAINERS.split(","))
    assert bench["primary_metric"] == "comprehensiveness_vs_random"
    for name, s in bench["explainers"].items():
        for m in METRICS:
            assert s[m]["low"] <= s[m]["value"] <= s[m]["high"], (name, m)
        assert set(s["per_dataset"]) == {"movies", "cose"}
        assert sum(d["n"] for d in s["per_dataset"].values()) == s["n_items"] == 6
    assert bench["explainers"]["human"]["parse_rate"] == 1.0
    # occlusion is the imitation ceiling: never "the best other"
    assert bench["self_vs_best_other"]["best_other"] != "occlusion"
    assert set(bench["comparisons"]) == set(EXPLAINERS.split(",")) - {"self"}
    assert set(bench["comparisons"]["human"]) == {"cost_ratio", "movies", "cose"}
    gt = bench["ground_truth"]
    assert gt["budget_tokens"] == 32 and gt["datasets"]["movies"]["malformed_rows"] == 1
    md = (Path(res["run_dir"]) / "results.md").read_text()
    assert "### rationales: movies" in md and "### rationales: cose" in md
    html = (Path(res["run_dir"]) / "report.html").read_text()
    assert "<h3>Breakdown</h3>" in html and "<h4>movies</h4>" in html and "1 malformed rows" in html
    where = gt["datasets"]["movies"]["malformed_examples"]
    assert len(where) == 1 and ":" in where[0] and where[0].split(": ", 1)[0] in html  # file:line reaches the page
    assert "never changes" not in html.split("<h3>Ground truth</h3>")[1][:400]


def test_split_keeps_documents_on_one_side(rationale_run):
    cfg, res = rationale_run
    _, _, records, _ = _loaded(cfg, res)
    sides: dict[str, set] = {}
    for r in records:
        inp = r.context["input"]
        sides.setdefault(r.context["dataset"] + "|" + " ".join(inp["words"]), set()).add(r.split)
    assert all(len(s) == 1 for s in sides.values())
    assert {r.split for r in records} == {"train", "test"}
    assert sum(r.split == "test" for r in records) == 6


def test_training_answers_are_the_subjects_occlusion_ranking(rationale_run):
    from selfexplain.techniques.attribution import Attributor
    from selfexplain.benchmarks.rationales.benchmark import RationalesBenchmark
    from selfexplain.benchmarks.rationales.explainers import rank_words, word_scores
    from selfexplain.models.loading import load_model

    cfg, res = rationale_run
    _, _, records, _ = _loaded(cfg, res)
    subject = load_model(cfg.subject)
    bench = RationalesBenchmark()
    train = [r for r in records if r.split == "train"]
    assert train and all(r.provenance.technique == "occlusion" for r in train)
    for r in train[:3]:
        inp, c = bench.input_of(r)
        scores = word_scores(Attributor(subject).attribute([inp.attribution_input(c)], "occlusion")[0], inp)
        ranked = [w for w in rank_words(scores) if sayable(inp.words[w])][:bench.listed(inp)]
        assert r.answer == format_ranking(inp.words, ranked)
        assert scores[ranked[0]] == max(scores[w] for w in range(len(inp.words)) if sayable(inp.words[w]))
        assert r.query.endswith("Words:") and inp.options[c] in r.query


def test_scores_equal_an_independent_recomputation(rationale_run):
    """comprehensiveness / sufficiency at the human length, recomputed from the subject's
    probabilities with plain deletions, for every test item and two explainers."""
    from selfexplain.benchmarks.rationales.faithfulness import class_probabilities, only_rationale, without_rationale
    from selfexplain.models.loading import load_model

    cfg, res = rationale_run
    store, runner, records, _ = _loaded(cfg, res)
    subject = load_model(cfg.subject)
    test = [r for r in records if r.split == "test"]
    for name in ("human", "occlusion"):
        comp = store.item_scores(res["run_id"], "rationales", name, "comprehensiveness")
        suff = store.item_scores(res["run_id"], "rationales", name, "sufficiency")
        answers = store.predictions(res["run_id"], "rationales", name)
        assert len(comp) == len(test)
        for r in test:
            inp = r.context["input"]
            c = r.context["predicted"]
            k = len(inp["human_words"])
            words = parse_rationale(answers[r.id].text, inp["words"]).ranked[:k]
            assert len(words) == k  # both rank at least the human length
            positions = [p for p in range(inp["doc_start"], inp["doc_end"]) if inp["word_groups"][p] in words]
            doc = range(inp["doc_start"], inp["doc_end"])
            probs = class_probabilities(subject, [without_rationale(inp["ids"], positions),
                                                  only_rationale(inp["ids"], positions, doc)], inp["option_ids"])
            p_full = r.context["prediction"]["probs"][c]
            key = next(k for k in comp if r.id in k)
            assert comp[key] == pytest.approx(p_full - float(probs[0, c]), abs=1e-5)
            assert suff[key] == pytest.approx(p_full - float(probs[1, c]), abs=1e-5)


def test_unparseable_answers_are_the_shared_random_fill(rationale_run):
    """An empty rationale scores exactly as the fill order every explainer shares, its
    normalised comprehensiveness minus random is the raw one minus the same random baseline, and
    its parse rate is 0."""
    from selfexplain.benchmarks.rationales.benchmark import RationalesBenchmark
    from selfexplain.explainers.base import Explanation

    cfg, res = rationale_run
    _, runner, records, _ = _loaded(cfg, res)
    test = [r for r in records if r.split == "test"]
    bench = RationalesBenchmark()
    bench.prepare(runner.baseline_env())
    empty = bench.score(test, [Explanation("no idea", 1, 0.0) for _ in test])
    fill = [format_ranking(bench.input_of(r)[0].words, bench.fill_order(bench.input_of(r)[0], cfg.seed),
                           with_index=True) for r in test]
    filled = bench.score(test, [Explanation(t, 1, 0.0) for t in fill])
    for m in ("comprehensiveness", "sufficiency", "aopc_comprehensiveness", "comprehensiveness_vs_random"):
        assert empty[m] == pytest.approx(filled[m])
    assert empty["parsed"] == [0.0] * len(test) and filled["parsed"] == [1.0] * len(test)
    from selfexplain.benchmarks.rationales.explainers import item_seed
    from selfexplain.benchmarks.rationales.faithfulness import class_probabilities, random_rationales, without_rationale

    random_comp = [a - b for a, b in zip(empty["comprehensiveness"], empty["comprehensiveness_vs_random"])]
    for r, value in zip(test, random_comp):
        inp, c = bench.input_of(r)
        k = len(inp.human_words)
        (words,) = random_rationales(range(len(inp.words)), k, 1, seed=item_seed(cfg.seed, inp.item_id, str(k)))
        p = class_probabilities(runner.subject, [without_rationale(inp.ids, inp.positions_of(words))], inp.option_ids)
        assert value == pytest.approx(r.context["prediction"]["probs"][c] - float(p[0, c]), abs=1e-5)


def test_a_run_differing_only_in_training_reuses_ground_truth_and_caches(rationale_run):
    """Only --epochs differs: the ground truth is copied (no occlusion recomputed), baselines'
    attributions and the subject's probabilities come from the output directory's shared cache,
    and their scores are identical."""
    from selfexplain.runs.store import Store

    cfg, res = rationale_run
    again = run(RunConfig(**{**cfg.__dict__, "epochs": 2, "explainers": "human,occlusion,self"}))
    assert again["run_id"] != res["run_id"]
    store = Store.open_existing(cfg.output_dir)
    first, _ = store.ground_truth(res["run_id"], "rationales")
    copied, stats = store.ground_truth(again["run_id"], "rationales")
    assert [(r.id, r.answer, r.query) for r in copied] == [(r.id, r.answer, r.query) for r in first]
    assert stats["copied_from"] == res["run_id"]
    for name in ("human", "occlusion"):
        a = res["benchmarks"]["rationales"]["explainers"][name]
        b = again["benchmarks"]["rationales"]["explainers"][name]
        assert a["comprehensiveness"] == b["comprehensiveness"] and a["sufficiency"] == b["sufficiency"]
    assert again["benchmarks"]["rationales"]["explainers"]["occlusion"]["cost"] == \
        res["benchmarks"]["rationales"]["explainers"]["occlusion"]["cost"]  # cached attributions keep their cost


def test_missing_data_is_a_one_line_error(tmp_path, monkeypatch):
    from selfexplain.runs.run import Run

    monkeypatch.delenv("SELFEXPLAIN_DATA_ROOT", raising=False)
    with pytest.raises(ConfigError, match="--data-root"):
        Run(RunConfig(benchmarks="rationales", output_dir=str(tmp_path)))
    with pytest.raises(DataError, match="movies not found"):
        Run(RunConfig(benchmarks="rationales", sources=f"movies:{tmp_path / 'nope'}", output_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="budget-tokens"):
        Run(RunConfig(benchmarks="rationales", budget_tokens=8, output_dir=str(tmp_path)))
