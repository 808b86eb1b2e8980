"""e-SNLI and CoS-E items for the simulatability benchmark (formats of shared/data/README.md).

e-SNLI JSONL rows: `premise`, `hypothesis`, `gold_label` (entailment / neutral / contradiction),
`explanation_1..3` (human). CoS-E rows (CommonsenseQA joined with CoS-E): `question`, `choices`
(list of {label, text}), `answer_key`, `explanation_open_ended` (the raw human explanation, as the
CoS-E paper used it). Either takes a file or a directory holding the usual file name. Malformed
rows are skipped and counted with file:line (data.jsonl policy); a missing path is a DataError.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from selfexplain.data.jsonl import Skipped, read_jsonl
from selfexplain.errors import DataError

NLI_LABELS = ("entailment", "neutral", "contradiction")
# The file a dataset directory holds (shared/data layout); any file in the format works as a path.
DEFAULT_FILES = {"esnli": ("esnli", "esnli_dev.jsonl"), "cose": ("cos_e", "cose_v1.11_dev.jsonl")}


@dataclass
class Item:
    """One task input: NLI (premise, hypothesis, options = the three labels) or multiple choice
    (question, options = the choices' texts). `gold` indexes `options`; `human` holds the human
    explanations (at least one)."""

    id: str
    dataset: str
    options: list[str]
    gold: int
    human: list[str]
    premise: str = ""
    hypothesis: str = ""
    question: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Item":
        return cls(**d)


@dataclass
class Loaded:
    items: list[Item]
    skipped: Skipped = field(default_factory=list)
    path: str = ""


def resolve(path: Path, dataset: str) -> Path:
    """A file as given, or the dataset's usual file inside a directory (or its data-root folder)."""
    path = Path(path)
    if path.is_dir():
        folder, name = DEFAULT_FILES[dataset]
        for candidate in (path / name, path / folder / name):
            if candidate.is_file():
                return candidate
        raise DataError(f"{dataset}: no {name} in {path} (pass a JSONL file in the {dataset} format, e.g. "
                        f"--sources {dataset}:PATH)")
    if not path.exists():
        raise DataError(f"{dataset} data not found at {path} (pass --data-root DIR holding "
                        f"{'/'.join(DEFAULT_FILES[dataset])}, or --sources {dataset}:PATH)")
    return path


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    return value.strip() if isinstance(value, str) else ""


def load_esnli(path: Path) -> Loaded:
    path = resolve(path, "esnli")
    out = Loaded([], [], str(path))
    for line, row in read_jsonl(path, ("premise", "hypothesis", "gold_label"), out.skipped, "e-SNLI file"):
        premise, hypothesis, label = _text(row, "premise"), _text(row, "hypothesis"), row.get("gold_label")
        human = [_text(row, f"explanation_{k}") for k in (1, 2, 3)]
        human = [h for h in human if h]
        why = ("empty premise or hypothesis" if not premise or not hypothesis else
               f"gold_label {label!r} is not one of {', '.join(NLI_LABELS)}" if label not in NLI_LABELS else
               "no explanation_1..3" if not human else "")
        if why:
            out.skipped.append((str(path), line, why))
            continue
        out.items.append(Item(f"esnli-{row.get('idx', line)}", "esnli", list(NLI_LABELS), NLI_LABELS.index(label),
                              human, premise=premise, hypothesis=hypothesis))
    return out


def load_cose(path: Path) -> Loaded:
    path = resolve(path, "cose")
    out = Loaded([], [], str(path))
    for line, row in read_jsonl(path, ("question", "choices", "answer_key"), out.skipped, "CoS-E file"):
        choices = row.get("choices")
        ok = isinstance(choices, list) and all(isinstance(c, dict) and isinstance(c.get("text"), str)
                                               and c.get("label") for c in choices)
        texts = [c["text"].strip() for c in choices] if ok else []
        labels = [c["label"] for c in choices] if ok else []
        human = [h for h in (_text(row, "explanation_open_ended"),) if h]
        why = ("choices is not a list of {label, text}" if not ok else
               "fewer than two choices, or repeated/empty ones" if len(texts) < 2 or len(set(texts)) != len(texts)
               or not all(texts) else
               f"answer_key {row.get('answer_key')!r} is not a choice label" if row.get("answer_key") not in labels else
               "empty question" if not _text(row, "question") else
               "no explanation_open_ended" if not human else "")
        if why:
            out.skipped.append((str(path), line, why))
            continue
        out.items.append(Item(f"cose-{row.get('id', line)}", "cose", texts, labels.index(row["answer_key"]), human,
                              question=_text(row, "question")))
    return out


LOADERS = {"esnli": load_esnli, "cose": load_cose}
