"""Hint-ablation benchmark: questions, prompts, ground truth, baselines, multitask run."""

import json
import random

import pytest
import torch

from selfexplain.benchmarks.ablation.benchmark import AblationBenchmark
from selfexplain.config import RunConfig
from selfexplain.errors import DataError
from selfexplain.benchmarks.ablation.attribution_baselines import fit_threshold
from selfexplain.benchmarks.ablation.questions import fact_questions, load_questions, mmlu_questions


def _first_token(tokenizer):
    return lambda label: tokenizer(" " + label, add_special_tokens=False)["input_ids"][0]


def test_fact_questions_have_distinct_first_tokens(tokenizer):
    from selfexplain.data.facts import embedded_facts

    questions = fact_questions(embedded_facts(), _first_token(tokenizer), random.Random(0))
    assert len(questions) > 800
    for q in questions[:200]:
        assert q.correct in q.labels and len(q.labels) == 4
        assert len({_first_token(tokenizer)(label) for label in q.labels}) == 4


def test_mmlu_loader_reads_rows_and_names_bad_lines(tmp_path):
    good = {"question": "2+2?", "choices": ["1", "2", "3", "4"], "answer": "D", "subject": "math"}
    (tmp_path / "ok.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "answer": None, "answer_index": 1}))
    qs = mmlu_questions(tmp_path / "ok.jsonl")
    assert [q.correct for q in qs] == ["D", "B"]
    assert qs[0].text.splitlines() == ["2+2?", "A. 1", "B. 2", "C. 3", "D. 4"]
    (tmp_path / "bad.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "choices": ["x"]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: 'choices'"):
        mmlu_questions(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="needs a data root"):
        load_questions(["mmlu"], None, lambda s: 0, random.Random(0))
    assert len(load_questions([f"mmlu:{tmp_path / 'ok.jsonl'}"], None, lambda s: 0, random.Random(0))) == 2


def test_shared_mmlu_file_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu"
    if not path.is_dir():
        pytest.skip("shared data not present")
    qs = mmlu_questions(path)
    assert len(qs) == 1878 and all(q.correct in "ABCD" for q in qs)


def test_hinted_prompt_is_head_hint_tail(tiny):
    bench = AblationBenchmark()
    from selfexplain.benchmarks.ablation.questions import Question

    q = Question("q1", "facts", "What is the capital of France?", ("Paris", "Berlin", "Rome", "Madrid"), "Paris",
                 "The capital of France is", "capital")
    hint = bench.hint_text(q, 0, "Rome")
    hinted, plain = bench.encode(tiny, q, hint), bench.encode(tiny, q, None)
    assert hinted.head == plain.head and hinted.tail == plain.tail and plain.hint == []
    assert tiny.tokenizer.decode([hinted.ids[i] for i in hinted.hint_positions()]).replace(" ", "") == "Hint:theanswerisRome."
    query = bench.query(tiny.tokenizer, q, hint, "Rome")
    assert query.startswith(bench.prompt_text(tiny.tokenizer, q, hint) + " Rome.\nIf the hint")
    assert query.index(q.statement) > query.index(hint)


@pytest.fixture(scope="module")
def ground_truth(tokenizer):
    from conftest import make_model
    from selfexplain.models.loading import wrap_model

    subject = wrap_model(make_model(len(tokenizer)), tokenizer, name="tiny", device="cpu")
    cfg = RunConfig(benchmarks="ablation", n_train=40, n_test=12, seed=3).resolved().for_benchmark()
    return subject, cfg, AblationBenchmark().build_records(subject, cfg)


def test_ground_truth_matches_plain_forwards(ground_truth):
    """The shared-head batched label scores give the same answers as one plain forward each."""
    subject, _, gt = ground_truth
    bench = AblationBenchmark()
    for r in gt.records[:6]:
        q = bench.question_of(r)
        label_ids = [bench.first_token(subject, label) for label in q.labels]
        for hint, key in ((r.context["hint"], "hinted_answer"), (None, "unhinted_answer")):
            ids = torch.tensor([bench.encode(subject, q, hint).ids])
            logits = subject.model(input_ids=ids).logits[0, -1, label_ids]
            assert q.labels[int(logits.argmax())] == r.context[key]
        assert r.context["changed"] == (r.context["hinted_answer"] != r.context["unhinted_answer"])
        assert r.answer == (f"changes to {r.context['unhinted_answer']}" if r.context["changed"]
                            else f"unchanged from {r.context['hinted_answer']}")


def test_label_scores_of_many_questions_equal_plain_forwards(tiny):
    """Questions of different head lengths batched together (left-padded heads, repeated KV
    cache, left-padded hints and tails) score every prompt as its own unpadded forward does."""
    bench = AblationBenchmark()
    questions = bench.make_questions(tiny, RunConfig(), random.Random(1))[:3]
    assert len({len(bench.encode(tiny, q, None).head) for q in questions}) > 1  # really padded
    items = [(q, [bench.encode(tiny, q, None)] + [bench.encode(tiny, q, bench.hint_text(q, w, q.labels[w % 4]))
                                                   for w in range(1 + i)])
             for i, q in enumerate(questions)]
    scores = bench._label_scores(tiny, items)
    for (q, prompts), got in zip(items, scores):
        label_ids = [bench.first_token(tiny, label) for label in q.labels]
        want = torch.stack([tiny.model(input_ids=torch.tensor([p.ids])).logits[0, -1, label_ids] for p in prompts])
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-4)


def test_split_by_question_and_balanced_test(ground_truth):
    _, cfg, gt = ground_truth
    train = [r for r in gt.records if r.split == "train"]
    test = [r for r in gt.records if r.split == "test"]
    assert len(train) == cfg.n_train and 0 < len(test) <= cfg.n_test
    assert not {r.group for r in train} & {r.group for r in test}
    assert sum(r.context["changed"] for r in test) * 2 == len(test)
    assert 0 <= gt.stats["raw_changed_rate"] <= 1 and gt.stats["n_raw_records"] >= len(gt.records)
    assert {r.provenance.technique for r in gt.records} == {"input_ablation"}


def test_same_seed_same_records(ground_truth):
    subject, cfg, gt = ground_truth
    again = AblationBenchmark().build_records(subject, cfg)
    assert [(r.id, r.answer) for r in again.records] == [(r.id, r.answer) for r in gt.records]


def test_heuristic_baselines(ground_truth, tmp_path):
    from selfexplain.benchmarks.base import BaselineEnv

    subject, cfg, gt = ground_truth
    bench = AblationBenchmark()
    test = [r for r in gt.records if r.split == "test"]
    env = BaselineEnv(lambda: subject, cfg, tmp_path)
    made = {b.name: b for b in bench.baselines()}
    never = made["never-changes"].make(env).explain(test)
    assert bench.score(test, never)["exact_match"] == [float(not r.context["changed"]) for r in test]
    follow = made["hint-follow"].make(env).explain(test)
    for r, e in zip(test, follow):
        assert e.text.startswith("changes to" if r.context["followed_hint"] else "unchanged from")


@pytest.mark.parametrize("masses,changed,expected", [
    ([0.1, 0.2, 0.8, 0.9], [False, False, True, True], 0.5),
    ([0.5, 0.5], [True, False], 0.5 - 1e-9),   # no cut separates: lowest cut wins ties
    ([0.9, 0.1], [False, True], 0.1 - 1e-9),   # inverse relation: no cut beats chance
])
def test_fit_threshold(masses, changed, expected):
    assert fit_threshold(masses, changed) == pytest.approx(expected)


def test_attribution_baseline_predicts_from_hint_mass(ground_truth, tmp_path):
    from selfexplain.benchmarks.base import BaselineEnv

    subject, cfg, gt = ground_truth
    bench = AblationBenchmark()
    train = [r for r in gt.records if r.split == "train"]
    test = [r for r in gt.records if r.split == "test"][:4]
    cfg = RunConfig(**{**cfg.__dict__, "n_attribution": 16})
    spec = next(b for b in bench.baselines() if b.name == "occlusion")
    explainer = spec.make(BaselineEnv(lambda: subject, cfg, tmp_path))
    explainer.fit(train)
    assert explainer.fit_stats["n_fit"] == 8
    out = explainer.explain(test)
    for r, e in zip(test, out):
        inp, hint_pos = bench.attribution_input(subject, r)
        assert all(inp.start <= p < inp.end for p in hint_pos)
        assert e.forward_passes > 1 and e.text.split()[0] in ("unchanged", "changes")



def test_sources_are_checked_per_benchmark_before_loading_anything():
    from selfexplain.errors import ConfigError
    from selfexplain.runs.run import Run

    with pytest.raises(ConfigError, match="benchmark 'patching' reads sources"):
        Run(RunConfig(benchmarks="patching", sources="mmlu"))
    Run(RunConfig(benchmarks="patching,ablation", sources="facts,mmlu"))  # each takes its own


def test_word_groups_follow_words_not_pieces():
    from selfexplain.benchmarks.ablation.benchmark import _word_groups

    pieces = ["Hint", ":", " the", " ans", "wer", " is", " Rome", ".", "\n", "I", "'m"]

    class PieceTokenizer:  # BPE-like pieces with leading spaces
        def decode(self, ids):
            return pieces[ids[0]]
    assert _word_groups(PieceTokenizer(), range(len(pieces))) == [0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9]
