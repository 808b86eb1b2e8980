"""ERASER loader on the real shared rows, plus malformed copies; token positions on two tokenizers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from selfexplain.benchmarks.rationales.eraser import (KNOWN_CLASSES, MAX_TRUNCATED_CHARS, EraserItem, Evidence, LoadResult,
                                document_text, evidence_char_spans, evidence_token_mask, evidence_token_positions,
                                load_eraser, token_char_offsets)
from selfexplain.errors import DataError

DATASETS = ("movies", "boolq", "fever", "multirc", "cose")


def _data_root() -> Path:
    env = os.environ.get("SELFEXPLAIN_DATA_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


ERASER = _data_root() / "eraser"


@pytest.fixture(scope="module")
def loaded() -> dict[str, LoadResult]:
    if not ERASER.is_dir():
        pytest.skip(f"ERASER data not found at {ERASER}")
    return {name: load_eraser(ERASER / name) for name in DATASETS if (ERASER / name).is_dir()}


def _lines(path: Path) -> int:
    return sum(1 for line in path.open(encoding="utf-8") if line.strip())


# ----- real rows ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_loads(loaded, name):
    result = loaded[name]
    assert result.skipped == []
    assert len(result.items) == _lines(ERASER / name / "val.jsonl")
    labels = {item.label for item in result.items}
    assert labels == set(KNOWN_CLASSES[name])
    for item in result.items:
        assert item.dataset == name and item.classes == KNOWN_CLASSES[name]
        assert item.evidences and item.documents and isinstance(item.query, str)
        assert item.source.startswith(str(ERASER / name / "val.jsonl") + ":")


@pytest.mark.parametrize("name", DATASETS)
def test_evidence_char_spans_equal_the_evidence_text(loaded, name):
    for item in loaded[name].items:
        for ev in item.evidences:
            doc = item.documents[ev.doc_id]
            covered = doc[ev.start_char:ev.end_char]
            # the document keeps its sentence newlines; the span text joins tokens with spaces
            assert " ".join(covered.split()) == " ".join(doc.split()[ev.start_token:ev.end_token])
            assert covered == covered.strip()
            if ev.truncated:
                assert name == "cose"
                assert ev.text in covered and 0 < len(covered) - len(ev.text) <= MAX_TRUNCATED_CHARS
            else:
                assert " ".join(covered.split()) == ev.text


def test_cose_truncated_spans_follow_the_tokens(loaded):
    """README: 19 val spans have `text` cut by a character or two; the tokens are the truth."""
    cose = loaded["cose"]
    truncated = [(item, ev) for item in cose.items for ev in item.evidences if ev.truncated]
    if _lines(ERASER / "cose" / "val.jsonl") == 1086:  # the documented copy
        assert len(truncated) == 19 and cose.truncated_spans == 19
    by_text = {ev.text: (item, ev) for item, ev in truncated}
    item, ev = by_text["walkout basemen"]
    assert item.documents[ev.doc_id][ev.start_char:ev.end_char] == "walkout basement"
    item, ev = by_text["n the base of a stac"]  # cut at both ends
    assert item.documents[ev.doc_id][ev.start_char:ev.end_char] == "on the base of a stack"
    assert sum(evidence_token_mask(item, ev.doc_id)) == ev.end_token - ev.start_token


def test_cose_query_holds_the_choices(loaded):
    item = loaded["cose"].items[0]
    assert item.choices == ["europe", "city", "england", "garage", "new jersey"]
    assert document_text(item) == "Where is a crowded motorway likely to be ?"
    assert loaded["movies"].items[0].choices is None


def test_token_mask_is_erasers_rule(loaded):
    item = loaded["movies"].items[0]
    docid = item.docids[0]
    mask = evidence_token_mask(item, docid)
    expected = [0] * len(item.documents[docid].split())
    for ev in item.evidences:
        for t in range(ev.start_token, ev.end_token):
            expected[t] = 1
    assert mask == expected


# ----- token positions ----------------------------------------------------------------------
def _bpe_tokenizer(texts: list[str]):
    """A small byte-level BPE (GPT-2 / SmolLM2 style: leading-space tokens), trained in ms."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def _sample(loaded, per_dataset: int = 12) -> list[EraserItem]:
    return [item for name in DATASETS for item in loaded[name].items[:per_dataset]]


def _check_positions(tokenizer, item: EraserItem) -> None:
    doc = document_text(item)
    prefix = f"Query: {item.query}\nDocument: "
    prompt = prefix + doc + "\nAnswer:"
    spans = evidence_char_spans(item)
    positions = evidence_token_positions(tokenizer, prompt, spans, offset=len(prefix))
    offsets = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    shifted = [(a + len(prefix), b + len(prefix)) for a, b in spans]
    chosen = set(positions)
    for pos, (s, e) in enumerate(offsets):  # exactly the overlapping tokens
        assert (pos in chosen) == (e > s and any(s < b and a < e for a, b in shifted))
    for a, b in shifted:  # the chosen tokens' text contains every evidence span
        inside = [offsets[p] for p in positions if offsets[p][0] < b and a < offsets[p][1]]
        start, end = min(s for s, _ in inside), max(e for _, e in inside)
        assert prompt[a:b] in prompt[start:end]
    for ev in item.evidences:
        inside = [offsets[p] for p in positions
                  if offsets[p][0] < len(prefix) + ev.end_char and len(prefix) + ev.start_char < offsets[p][1]]
        assert ev.text in " ".join(prompt[min(s for s, _ in inside):max(e for _, e in inside)].split())


def test_token_positions_word_level(loaded, tokenizer):
    for item in _sample(loaded):
        _check_positions(tokenizer, item)


def test_token_positions_byte_level_bpe(loaded):
    items = _sample(loaded)
    bpe = _bpe_tokenizer([document_text(i) for i in items])
    for item in items:
        _check_positions(bpe, item)


def test_token_positions_hand_case(tokenizer):
    text = "The capital of France is Paris ."
    # chars 15-21 = "France"; a span inside a token still selects the whole token
    assert evidence_token_positions(tokenizer, text, [(15, 21)]) == [3]
    assert evidence_token_positions(tokenizer, text, [(16, 18)]) == [3]
    assert evidence_token_positions(tokenizer, "Q: " + text, [(15, 21)], offset=3) == [5]
    assert evidence_token_positions(tokenizer, text, [(0, 3), (25, 31)]) == [0, 5]
    with pytest.raises(DataError):
        evidence_token_positions(tokenizer, text, [(30, 40)])


# ----- other folders in the same format -----------------------------------------------------
def _write(path: Path, rows: list[object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


def _span(docid, start, end, text, **extra):
    return {"docid": docid, "start_token": start, "end_token": end, "start_sentence": -1,
            "end_sentence": -1, "text": text, **extra}


def test_malformed_rows_are_skipped_with_file_and_line(tmp_path):
    if not (ERASER / "cose").is_dir():
        pytest.skip("ERASER cose not found")
    folder = tmp_path / "cose"
    folder.mkdir()
    shutil.copy(ERASER / "cose" / "docs.jsonl", folder / "docs.jsonl")
    real = [json.loads(line) for line in (ERASER / "cose" / "val.jsonl").read_text().splitlines()[:3]]
    docid = real[0]["evidences"][0][0]["docid"]
    no_label = {k: v for k, v in real[1].items() if k != "classification"}
    out_of_range = json.loads(json.dumps(real[2]))
    out_of_range["evidences"][0][0]["end_token"] = 999
    wrong_text = json.loads(json.dumps(real[0]))
    wrong_text["evidences"][0][0]["text"] = "something else entirely"
    unknown_doc = json.loads(json.dumps(real[0]))
    unknown_doc["evidences"][0][0]["docid"] = "no-such-doc"
    bad_label = dict(real[0], classification="Z")
    _write(folder / "val.jsonl", [real[0], '{"annotation_id": "x", "classif', no_label, out_of_range,
                                  wrong_text, "", unknown_doc, bad_label, "[1, 2]", real[2]])
    result = load_eraser(folder)
    assert [i.id for i in result.items] == [real[0]["annotation_id"], real[2]["annotation_id"]]
    val = str(folder / "val.jsonl")
    lines = {line: reason for file, line, reason in result.skipped if file == val}
    assert sorted(lines) == [2, 3, 4, 5, 7, 8, 9]
    assert "not valid JSON" in lines[2]
    assert "classification" in lines[3]
    assert "outside document" in lines[4]
    assert "does not match" in lines[5]
    assert "no-such-doc" in lines[7]
    assert "'Z'" in lines[8]
    assert "not a JSON object" in lines[9]
    assert result.items[0].evidences[0].doc_id == docid


def test_bad_document_rows_are_reported(tmp_path):
    _write(tmp_path / "d" / "docs.jsonl", [{"docid": "a", "document": "one two three"}, "{oops",
                                           {"docid": "b"}])
    _write(tmp_path / "d" / "val.jsonl", [
        {"annotation_id": "1", "classification": "yes", "query": "q", "evidences": [[_span("a", 1, 2, "two")]]},
        {"annotation_id": "2", "classification": "no", "query": "q", "evidences": [[_span("b", 0, 1, "x")]]},
    ])
    result = load_eraser(tmp_path / "d")
    docs, val = str(tmp_path / "d" / "docs.jsonl"), str(tmp_path / "d" / "val.jsonl")
    assert [(f, line) for f, line, _ in result.skipped] == [(docs, 2), (docs, 3), (val, 2)]
    assert [i.id for i in result.items] == ["1"]


def test_missing_paths_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_eraser(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="val.jsonl"):
        load_eraser(tmp_path / "empty")
    _write(tmp_path / "nodocs" / "val.jsonl", [])
    with pytest.raises(DataError, match="documents not found"):
        load_eraser(tmp_path / "nodocs")
    _write(tmp_path / "bad" / "docs.jsonl", [])
    (tmp_path / "bad" / "val.jsonl").write_bytes(b"\xff\xfe\x00not utf-8\n")
    with pytest.raises(DataError, match="cannot read"):
        load_eraser(tmp_path / "bad")


def test_any_folder_file_and_docs_dir(tmp_path):
    """An unknown task name, several documents per item, an annotation file path, docs/ files."""
    docs = {"p1": "A man plays guitar .\nHe sings .", "h1": "A person makes music ."}
    rows = [{"annotation_id": "e1", "classification": "entailment", "query": "", "query_type": None,
             "docids": ["p1", "h1"],
             "evidences": [[_span("p1", 2, 4, "plays guitar"), _span("h1", 2, 4, "makes music")],
                           [_span("p1", 5, 7, "He sings")]]},
            {"annotation_id": "e2", "classification": "neutral", "query": "", "evidences": []}]
    # e2 has no documents to find: skipped, reported
    _write(tmp_path / "nli" / "test.jsonl", rows)
    _write(tmp_path / "nli" / "docs.jsonl", [{"docid": k, "document": v} for k, v in docs.items()])
    result = load_eraser(tmp_path / "nli" / "test.jsonl")
    assert result.dataset == "nli" and [i.id for i in result.items] == ["e1"]
    assert [line for _, line, _ in result.skipped] == [2]
    item = result.items[0]
    assert item.classes == ("entailment",) and item.docids == ["p1", "h1"]
    text = document_text(item)
    assert text == docs["p1"] + "\n\n" + docs["h1"]
    assert [text[a:b] for a, b in evidence_char_spans(item)] == ["plays guitar", "He sings", "makes music"]
    assert [e.group for e in item.evidences] == [0, 0, 1]

    for k, v in docs.items():  # the original release's docs/<docid> layout
        (tmp_path / "rel" / "docs").mkdir(parents=True, exist_ok=True)
        (tmp_path / "rel" / "docs" / k).write_text(v, encoding="utf-8")
    _write(tmp_path / "rel" / "val.jsonl", rows[:1])
    again = load_eraser(tmp_path / "rel", dataset="esnli")
    assert again.items[0].classes == KNOWN_CLASSES["esnli"]
    assert evidence_char_spans(again.items[0]) == evidence_char_spans(item)


def test_overlapping_spans_merge():
    evs = [Evidence("d", "b c", 1, 3, 2, 5), Evidence("d", "c d", 2, 4, 4, 7), Evidence("d", "a", 0, 1, 0, 1)]
    item = EraserItem("i", "x", {"d": "a b c d e"}, "q", None, "y", evs, ("y",))
    assert evidence_char_spans(item) == [(0, 1), (2, 7)]
    assert evidence_char_spans(item, merge=False) == [(0, 1), (2, 5), (4, 7)]
    assert token_char_offsets(" a\u00a0b\n c ") == [(1, 2), (3, 4), (6, 7)]  # str.split() whitespace
