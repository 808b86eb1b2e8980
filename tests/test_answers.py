"""Closed-set answers: candidate log-probabilities against plain full forwards, and the pick."""

from __future__ import annotations

import pytest
import torch

from selfexplain.benchmarks.ablation.benchmark import AblationBenchmark
from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark
from selfexplain.config import RunConfig
from selfexplain.errors import ConfigError
from selfexplain.models.generation import Decoding, encode_query, greedy_generate, option_logprobs, pick_answers
from selfexplain.techniques.interventions import inject_at_placeholder
from selfexplain.records import Provenance, Record
from selfexplain.training import make_projector

PROMPTS = ["What is the capital of France ? Patch <<vector>> Answer :",
           "Patch L0 - 4 at Japan <<vector>> Answer :",
           "What is the official language of Brazil ? ( Portuguese , Spanish or unknown ) Patch <<vector>> Answer :"]
CANDIDATES = [["unchanged from Paris", "changes to Rome", "changes to unknown"],
              ["changes to Tokyo", "unchanged from Kyoto"],
              ["unchanged from Portuguese", "changes to Spanish", "changes to unknown", "changes to Brazil"]]


def reference(loaded, prefix, prefix_vectors, prompt, vector, candidate, projector) -> float:
    """Sum of the candidate's token log-probs from one full forward of prefix + prompt + candidate."""
    ids = list(prefix) + prompt + candidate
    vecs = torch.cat([v for v in (prefix_vectors, vector[None]) if v is not None])
    with torch.no_grad(), inject_at_placeholder(loaded.model, loaded.placeholder_id, vecs, projector):
        logp = loaded.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    start = len(ids) - len(candidate)
    return float(sum(logp[start + j - 1, t] for j, t in enumerate(candidate)))


@pytest.mark.parametrize("with_prefix", [False, True])
def test_candidate_logprobs_equal_full_forwards(tiny, with_prefix):
    torch.manual_seed(0)
    tok = tiny.tokenizer
    projector = make_projector(tiny, 24)
    vectors = [torch.randn(24) for _ in PROMPTS]
    prefix, prefix_vectors = [], None
    if with_prefix:  # few-shot examples with their own vectors, run once and cached
        prefix = encode_query(tiny, "Patch <<vector>> Answer : changes to Rome Patch <<vector>> Answer : unchanged from Paris")
        prefix_vectors = torch.randn(2, 24)
    prompts = [encode_query(tiny, p, add_special_tokens=not with_prefix) for p in PROMPTS]
    cands = [[tok(" " + c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in row]
             for row in CANDIDATES]
    got = [row.tolist() for row in option_logprobs(tiny, prompts, cands, vectors, projector, batch_size=2,
                                                   prefix=prefix or None, prefix_vectors=prefix_vectors)]
    assert [len(g) for g in got] == [len(c) for c in CANDIDATES]
    for p, v, row, scores in zip(prompts, vectors, cands, got):
        expected = [reference(tiny, prefix, prefix_vectors, p, v, c, projector) for c in row]
        assert scores == pytest.approx(expected, abs=1e-4)
        assert len(set(round(s, 3) for s in scores)) == len(scores)  # distinct: the test can tell them apart


def _record(i: int, query: str, benchmark: str = "t") -> Record:
    return Record(f"r{i}", benchmark, "test", str(i), query, "", Provenance("tiny", "test", {}, 0), {}, None)


def test_pick_answers_takes_the_likeliest_candidate_and_decodes_the_rest(tiny):
    queries = [q.replace(" <<vector>>", "") for q in PROMPTS]
    records = [_record(i, q) for i, q in enumerate(queries)]
    open_answer = records[1].id  # no closed set: greedy decoding, as without candidates
    decoding = Decoding(max_new_tokens=4, candidates=lambda r: None if r.id == open_answer
                        else CANDIDATES[int(r.group)])
    prompts = [encode_query(tiny, q) for q in queries]
    end = [tiny.tokenizer.eos_token_id]
    picked = pick_answers(tiny, prompts, records, decoding, end)
    tok = tiny.tokenizer
    for i in (0, 2):
        scores = option_logprobs(tiny, [prompts[i]], [[tok(" " + c, add_special_tokens=False)["input_ids"] + end
                                                      for c in CANDIDATES[i]]])[0].tolist()
        text, passes, probs = picked[i]
        assert (text, passes) == (CANDIDATES[i][scores.index(max(scores))], 1 + len(CANDIDATES[i]))
        expected = torch.tensor(scores, dtype=torch.float64).softmax(-1).tolist()
        assert list(probs) == CANDIDATES[i] and list(probs.values()) == pytest.approx(expected, abs=1e-4)
        assert max(probs, key=probs.get) == text
    (free,) = greedy_generate(tiny, [prompts[1]], max_new_tokens=4)
    assert picked[1][0] == free and picked[1][2] is None


def _ablation_record(hinted: str, labels: list[str]) -> Record:
    return Record("a", "ablation", "test", "q", "", "", Provenance("tiny", "test", {}, 0),
                  {"hinted_answer": hinted, "labels": labels}, None)


def test_change_benchmarks_list_their_closed_answer_sets():
    ablation = AblationBenchmark()
    assert ablation.candidates(_ablation_record("Paris", ["Rome", "Paris", "Berlin"])) == [
        "unchanged from Paris", "changes to Rome", "changes to Berlin"]
    patching = PatchingBenchmark()
    record = Record("p", "patching", "test", "q", "", "", Provenance("tiny", "test", {}, 0),
                    {"clean_answer": "Asia", "options": ["Africa", "Asia", "Europe"]}, None)
    assert patching.candidates(record) == ["unchanged from Asia", "changes to Africa", "changes to Europe",
                                           "changes to unknown"]
    assert patching.decoding_for("ranked").candidates(record) == patching.candidates(record)
    assert patching.decoding_for("generated").candidates is None


def test_answers_mode_is_checked():
    with pytest.raises(ConfigError, match="answers must be one of ranked, generated"):
        RunConfig(answers="sampled").resolved()
