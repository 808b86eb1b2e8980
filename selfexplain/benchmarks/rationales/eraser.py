"""ERASER rationale datasets (DeYoung et al. 2020): loader, character offsets, token positions.

Format (see shared/data/README.md): `<split>.jsonl` holds one annotation per line
(`annotation_id`, `classification`, `query`, `query_type`, optional `docids`, `evidences` = a
list of groups of spans); `docs.jsonl` holds `{"docid", "document"}` records (the original
release's `docs/<docid>` files are read too). Token offsets index `document.split()`, so the
loader maps every span to exact character offsets in the untouched document text; from there
`evidence_token_positions` maps them onto any fast tokenizer's tokens of any prompt that embeds
the document.

Token offsets are the truth, the span `text` is only checked: in cose a few spans' `text` is the
human's raw highlight, cut off by a character or two mid-word (e.g. "walkout basemen" for the
tokens "walkout basement"), while ERASER's tokens cover the whole words. Such spans load with
`truncated=True`; any other mismatch means the offsets point at the wrong words and the row is
skipped. Malformed rows are reported (file, line, reason) and skipped, never fatal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from selfexplain.data.jsonl import read_jsonl
from selfexplain.errors import DataError

# Label sets of the ERASER tasks (the benchmark's own class lists); other datasets in the same
# format get the sorted labels seen in their file.
KNOWN_CLASSES: dict[str, tuple[str, ...]] = {
    "movies": ("NEG", "POS"),
    "boolq": ("False", "True"),
    "fever": ("REFUTES", "SUPPORTS"),
    "multirc": ("False", "True"),
    "cose": ("A", "B", "C", "D", "E"),
    "esnli": ("contradiction", "entailment", "neutral"),
    "evidence_inference": ("no significant difference", "significantly decreased", "significantly increased"),
}

# Most characters a span's `text` may be missing against its tokens and still count as the
# known truncated-highlight case (README: "truncated by a character or two").
MAX_TRUNCATED_CHARS = 2

DOC_SEPARATOR = "\n\n"  # between documents in document_text() when an item has several
CHOICE_SEPARATOR = "[sep]"  # cose queries: the answer options

_TOKEN = re.compile(r"\S+")  # \s is str.isspace(), the same whitespace as str.split()


@dataclass(frozen=True)
class Evidence:
    """One rationale span. start/end_token index `document.split()` (end exclusive);
    start/end_char are the same span in the document's own text (end exclusive)."""

    doc_id: str
    text: str  # as annotated
    start_token: int
    end_token: int
    start_char: int
    end_char: int
    start_sentence: int | None = None  # None where the file gives -1 (not provided)
    end_sentence: int | None = None
    group: int = 0  # index of its evidence group in the annotation
    truncated: bool = False  # `text` is a cut-off copy of the tokens (known cose issue)


@dataclass(frozen=True)
class EraserItem:
    """One annotation with its documents. `documents` maps docid -> text, in `docids` order."""

    id: str
    dataset: str
    documents: dict[str, str]
    query: str
    query_type: str | None
    label: str
    evidences: list[Evidence]
    classes: tuple[str, ...]
    source: str = ""  # file:line, for error messages

    @property
    def docids(self) -> list[str]:
        return list(self.documents)

    @property
    def choices(self) -> list[str] | None:
        """Answer options of a '[sep]'-separated query (cose), else None."""
        if CHOICE_SEPARATOR not in self.query:
            return None
        return [c.strip() for c in self.query.split(CHOICE_SEPARATOR)]


@dataclass
class LoadResult:
    """Loaded items and the rows that were skipped: (file, line, reason)."""

    items: list[EraserItem]
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    dataset: str = ""

    @property
    def truncated_spans(self) -> int:
        return sum(ev.truncated for item in self.items for ev in item.evidences)


class _RowError(Exception):
    """A malformed annotation row: skipped and reported, not fatal."""


# ----- reading ------------------------------------------------------------------------------
def _rows(path: Path, skipped: list[tuple[str, int, str]]) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each JSON object line; bad lines go to `skipped` (data.jsonl policy)."""
    return read_jsonl(path, skipped=skipped, what="ERASER file")


def _locate(path: Path, split_file: str) -> tuple[Path, Path]:
    """(annotation file, folder holding docs.jsonl or docs/) for a directory or a file."""
    path = Path(path).expanduser()
    if path.is_dir():
        annotations, folder = path / split_file, path
    elif path.is_file():
        annotations, folder = path, path.parent
    else:
        raise DataError(f"ERASER data not found at {path}")
    if not annotations.is_file():
        raise DataError(f"ERASER annotation file not found: {annotations}")
    if not (folder / "docs.jsonl").is_file() and not (folder / "docs").is_dir():
        raise DataError(f"ERASER documents not found: neither {folder / 'docs.jsonl'} nor {folder / 'docs'}/")
    return annotations, folder


def _read_docs(folder: Path, wanted: set[str], skipped: list[tuple[str, int, str]]) -> dict[str, str]:
    """docid -> text for the wanted docids: docs.jsonl when present, else docs/<docid> files."""
    file = folder / "docs.jsonl"
    docs: dict[str, str] = {}
    if file.is_file():
        for lineno, row in _rows(file, skipped):
            if not isinstance(row.get("docid"), str) or not isinstance(row.get("document"), str):
                skipped.append((str(file), lineno, "document row needs string 'docid' and 'document'"))
            elif row["docid"] in wanted:
                docs[row["docid"]] = row["document"]
        return docs
    for docid in sorted(wanted):
        doc = folder / "docs" / docid
        if doc.is_file():
            try:
                docs[docid] = doc.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"cannot read {doc}: {exc}") from None
    return docs


# ----- one annotation -----------------------------------------------------------------------
def token_char_offsets(document: str) -> list[tuple[int, int]]:
    """Character span of each token of `document.split()`, in order."""
    return [m.span() for m in _TOKEN.finditer(document)]


def _int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _RowError(f"evidence {name} must be an integer, got {value!r}")
    return value


def _sentence(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _truncation_of(annotated: str, tokens: str) -> bool:
    """Whether `annotated` is `tokens` with at most MAX_TRUNCATED_CHARS cut from its ends."""
    missing = len(tokens) - len(annotated)
    return 0 < missing <= MAX_TRUNCATED_CHARS and bool(annotated.strip()) \
        and any(tokens[cut:cut + len(annotated)] == annotated for cut in range(missing + 1))


def _evidence(span: object, group: int, documents: dict[str, str],
              offsets: dict[str, list[tuple[int, int]]]) -> Evidence:
    if not isinstance(span, dict):
        raise _RowError("an evidence span is not an object")
    doc_id = span.get("docid")
    if doc_id not in documents:
        raise _RowError(f"evidence document {doc_id!r} is not among the item's documents")
    start, end = _int(span.get("start_token"), "start_token"), _int(span.get("end_token"), "end_token")
    spans = offsets[doc_id]
    if not 0 <= start < end <= len(spans):
        raise _RowError(f"evidence tokens [{start}, {end}) outside document {doc_id!r} ({len(spans)} tokens)")
    text = span.get("text")
    if not isinstance(text, str):
        raise _RowError("evidence 'text' must be a string")
    tokens = " ".join(documents[doc_id][a:b] for a, b in spans[start:end])
    truncated = False
    if text != tokens:
        truncated = _truncation_of(text, tokens)
        if not truncated:
            raise _RowError(f"evidence text {text[:40]!r} does not match tokens [{start}, {end}) "
                            f"of {doc_id!r}: {tokens[:40]!r}")
    return Evidence(doc_id, text, start, end, spans[start][0], spans[end - 1][1],
                    _sentence(span.get("start_sentence")), _sentence(span.get("end_sentence")),
                    group, truncated)


def _docids(row: dict) -> list[str]:
    """`docids` when present, else the evidences' docids in first-seen order (README rule)."""
    docids = row.get("docids")
    if docids:
        if not isinstance(docids, list) or not all(isinstance(d, str) for d in docids):
            raise _RowError("'docids' must be a list of strings")
        return list(dict.fromkeys(docids))
    found = [s.get("docid") for g in row["evidences"] if isinstance(g, list) for s in g if isinstance(s, dict)]
    if not found or not all(isinstance(d, str) for d in found):
        raise _RowError("no 'docids' and no evidence docids to find the documents by")
    return list(dict.fromkeys(found))


REQUIRED = ("annotation_id", "classification", "query", "evidences")


def _item(row: dict, dataset: str, docs: dict[str, str], offsets: dict[str, list[tuple[int, int]]],
          source: str) -> EraserItem:
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise _RowError(f"missing field(s) {', '.join(missing)}")
    if not isinstance(row["evidences"], list) or not all(isinstance(g, list) for g in row["evidences"]):
        raise _RowError("'evidences' must be a list of lists of spans")
    if not isinstance(row["query"], str) or not isinstance(row["classification"], (str, bool)):
        raise _RowError("'query' and 'classification' must be strings")
    docids = _docids(row)
    absent = [d for d in docids if d not in docs]
    if absent:
        raise _RowError(f"document(s) {', '.join(map(repr, absent[:3]))} not found in the documents")
    documents = {d: docs[d] for d in docids}
    evidences = [_evidence(span, g, documents, offsets) for g, group in enumerate(row["evidences"])
                 for span in group]
    label = str(row["classification"])
    classes = KNOWN_CLASSES.get(dataset, ())
    if classes and label not in classes:
        raise _RowError(f"label {label!r} is not one of {dataset}'s classes {', '.join(classes)}")
    query_type = row.get("query_type")
    return EraserItem(str(row["annotation_id"]), dataset, documents, row["query"],
                      None if query_type is None else str(query_type), label, evidences, classes, source)


# ----- public API ---------------------------------------------------------------------------
def load_eraser(path: Path, dataset: str | None = None, split_file: str = "val.jsonl") -> LoadResult:
    """Load an ERASER-format dataset: a directory holding `split_file` and docs.jsonl (or
    docs/), or an annotation file next to its documents. `dataset` defaults to the folder
    name and picks the label set (KNOWN_CLASSES; else the sorted labels seen).

    Malformed rows are skipped and listed in `skipped` as (file, line, reason); a missing path
    or an unreadable file raises DataError.
    """
    annotations, folder = _locate(Path(path), split_file)
    name = dataset or folder.name
    skipped: list[tuple[str, int, str]] = []
    rows = list(_rows(annotations, skipped))
    wanted = set()
    for _, row in rows:
        try:
            wanted.update(_docids(row) if isinstance(row.get("evidences"), list) else [])
        except _RowError:
            pass
    docs = _read_docs(folder, wanted, skipped)
    offsets = {d: token_char_offsets(text) for d, text in docs.items()}
    items = []
    for lineno, row in rows:
        try:
            items.append(_item(row, name, docs, offsets, f"{annotations}:{lineno}"))
        except _RowError as exc:
            skipped.append((str(annotations), lineno, str(exc)))
    if name not in KNOWN_CLASSES:
        classes = tuple(sorted({item.label for item in items}))
        items = [EraserItem(i.id, i.dataset, i.documents, i.query, i.query_type, i.label, i.evidences,
                            classes, i.source) for i in items]
    skipped.sort(key=lambda s: (s[0], s[1]))
    return LoadResult(items, skipped, name)


def document_text(item: EraserItem) -> str:
    """The text an input is built from: the item's documents, joined by DOC_SEPARATOR when
    there are several. Untouched, so evidence_char_spans() index it exactly."""
    return DOC_SEPARATOR.join(item.documents.values())


def evidence_char_spans(item: EraserItem, merge: bool = True) -> list[tuple[int, int]]:
    """Evidence character spans in document_text(item) coordinates, sorted; with `merge`,
    overlapping or touching spans are joined (groups may repeat a span)."""
    starts, at = {}, 0
    for docid, text in item.documents.items():
        starts[docid] = at
        at += len(text) + len(DOC_SEPARATOR)
    spans = sorted((starts[e.doc_id] + e.start_char, starts[e.doc_id] + e.end_char) for e in item.evidences)
    if not merge:
        return spans
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def evidence_token_mask(item: EraserItem, docid: str) -> list[int]:
    """ERASER's token-level mask over `document.split()` of one document (1 = in a rationale)."""
    mask = [0] * len(token_char_offsets(item.documents[docid]))
    for ev in item.evidences:
        if ev.doc_id == docid:
            mask[ev.start_token:ev.end_token] = [1] * (ev.end_token - ev.start_token)
    return mask


def evidence_token_positions(tokenizer, text: str, spans: Sequence[tuple[int, int]], offset: int = 0,
                             add_special_tokens: bool = False) -> list[int]:
    """Positions of the tokens of `tokenizer(text, add_special_tokens=...)` that overlap a
    character span (a token is in the rationale if any of its characters is).

    `spans` are in the coordinates of a document that starts at character `offset` of `text`
    (the prompt that embeds it), e.g. evidence_char_spans(item) with
    offset=prompt.index(document_text(item)). Needs a fast tokenizer (offset mappings);
    zero-width tokens (special tokens) are never in a rationale.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("evidence_token_positions needs a fast tokenizer (return_offsets_mapping)")
    shifted = sorted((a + offset, b + offset) for a, b in spans if b > a)
    if any(a < 0 or b > len(text) for a, b in shifted):
        raise DataError(f"evidence character spans fall outside the {len(text)}-character text")
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    positions = []
    for pos, (start, end) in enumerate(enc["offset_mapping"]):
        if end > start and any(start < b and a < end for a, b in shifted):
            positions.append(pos)
    return positions
