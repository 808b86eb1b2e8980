"""Multiple-choice question sources: questions built from the embedded facts, and MMLU.

A `Question` knows what the subject answers with (`labels`: option texts or letters) and the
reply prefix (`statement`) whose next token is a label, so the subject's answer is the label
with the highest next-token logit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from selfexplain.errors import DataError
from selfexplain.data.facts import Fact, data_root, embedded_facts
from selfexplain.data.jsonl import read_jsonl
from selfexplain.templates import load_templates

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Question:
    id: str
    source: str
    text: str              # the question (and, for lettered questions, its option lines)
    labels: tuple[str, ...]  # what the subject answers with
    correct: str           # the correct label
    statement: str         # reply prefix whose next token is a label
    topic: str


def fact_questions(facts: list[Fact], first_token: Callable[[str], int], rng: random.Random,
                   n_options: int = 4) -> list[Question]:
    """One question per fact: its answer plus distractors of the same relation, shuffled.

    Options must start with distinct tokens, so the subject's answer is read from one logit.
    """
    by_relation: dict[str, list[str]] = {}
    for f in facts:
        by_relation.setdefault(f.relation, [])
        if f.answer not in by_relation[f.relation]:
            by_relation[f.relation].append(f.answer)
    questions = []
    for f in facts:
        pool = [a for a in by_relation[f.relation] if a != f.answer]
        for _ in range(20):
            options = [f.answer] + rng.sample(pool, min(n_options - 1, len(pool)))
            if len(options) == n_options and len({first_token(o) for o in options}) == n_options:
                rng.shuffle(options)
                questions.append(Question(f"{f.source}/{f.relation}/{f.entity}", f.source, f.question,
                                          tuple(options), f.answer, f.statement, f.relation))
                break
    return questions


def _mmlu_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"MMLU data not found at {path}")
    files = sorted(path.glob("*test*.jsonl")) or sorted(path.glob("*.jsonl"))
    if not files:
        raise DataError(f"no .jsonl files in {path}")
    return files


def mmlu_questions(path: Path) -> list[Question]:
    """MMLU rows (question, choices[4], answer letter or answer_index) as lettered questions."""
    t = load_templates("selfexplain.benchmarks.ablation")
    questions = []
    first_line: dict[str, str] = {}
    for file in _mmlu_files(path):
        for lineno, row in read_jsonl(file, ("question", "choices")):
            choices = row["choices"]
            where = f"{file}:{lineno}"
            if not isinstance(row["question"], str) or not row["question"].strip():
                raise DataError(f"{where}: 'question' must be a non-empty string")
            if not (isinstance(choices, list) and len(choices) == 4 and all(isinstance(c, str) for c in choices)):
                raise DataError(f"{where}: 'choices' must be a list of 4 strings")
            answer = row.get("answer")
            if not isinstance(answer, str) or answer not in LETTERS:
                index = row.get("answer_index", answer)
                if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 4:
                    raise DataError(f"{where}: 'answer' must be one of A-D (or 'answer_index' 0-3)")
                answer = LETTERS[index]
            lines = [t["letter_option"].format(label=label, text=text.strip()) for label, text in zip(LETTERS, choices)]
            text = row["question"].strip() + "\n" + "\n".join(lines)
            qid = str(row.get("id") or f"{file.stem}/{lineno}")
            if qid in first_line:
                raise DataError(f"{where}: duplicate id {qid!r} (first at {first_line[qid]}); ids must be unique")
            first_line[qid] = where
            questions.append(Question(f"mmlu/{qid}", "mmlu", text, LETTERS, answer, t["letter_statement"],
                                      str(row.get("subject", "mmlu"))))
    if not questions:
        raise DataError(f"no MMLU questions in {path}: the file(s) hold no rows")
    return questions


QUESTION_SOURCES = ("facts", "mmlu")


def load_questions(sources: list[str], root: str | Path | None, first_token: Callable[[str], int],
                   rng: random.Random) -> list[Question]:
    """Questions from sources: 'facts', 'mmlu' (from the data root) or 'mmlu:PATH' (file or dir)."""
    questions: list[Question] = []
    for source in sources:
        name, _, path = source.partition(":")
        if name == "facts":
            questions += fact_questions(embedded_facts(), first_token, rng)
        elif name == "mmlu":
            if not path:
                base = data_root(root)
                if base is None:
                    raise DataError("question source 'mmlu' needs a data root (--data-root or "
                                    "$SELFEXPLAIN_DATA_ROOT) or a path: --sources mmlu:PATH")
                path = str(base / "mmlu")
            questions += mmlu_questions(Path(path).expanduser())
        else:
            raise DataError(f"unknown question source '{source}' (choose from {', '.join(QUESTION_SOURCES)})")
    return questions
