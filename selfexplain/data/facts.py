"""Factual prompt sources: the embedded fact set, CounterFact and the LRE relations.

Every source yields `Fact`s: (relation, entity, answer) with a question and a statement
prefix whose next token is the answer. Malformed rows raise a DataError naming file and line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from selfexplain.data.jsonl import read_jsonl
from selfexplain.errors import DataError
from selfexplain.templates import load_templates

DATA_ROOT_ENV = "SELFEXPLAIN_DATA_ROOT"


@dataclass(frozen=True)
class Fact:
    relation: str
    entity: str
    answer: str
    question: str
    statement: str
    source: str


def data_root(explicit: str | Path | None) -> Path | None:
    """The data root: the explicit option, else $SELFEXPLAIN_DATA_ROOT, else None."""
    root = explicit or os.environ.get(DATA_ROOT_ENV)
    if not root:
        return None
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root {path} is not a directory")
    return path


def embedded_facts() -> list[Fact]:
    """Facts from the fact set shipped with selfexplain (countries and cities)."""
    templates = load_templates("selfexplain.data", "relations.json")["relations"]
    path = Path(str(files("selfexplain").joinpath("data/facts.jsonl")))
    facts = []
    for _, row in read_jsonl(path, ("entity", "kind")):
        for relation, spec in templates.items():
            if row["kind"] == spec["kind"] and row.get(spec["field"]):
                facts.append(Fact(relation, row["entity"], row[spec["field"]],
                                  spec["question"].format(entity=row["entity"]),
                                  spec["statement"].format(entity=row["entity"]), "embedded"))
    return facts


def _external(relation: str, entity: str, answer: str, template: str, source: str) -> Fact:
    statement = template.replace("{}", entity, 1)
    question = load_templates("selfexplain.data", "relations.json")["external_question"].format(statement=statement)
    return Fact(relation, entity, answer, question, statement, source)


def counterfact_facts(path: Path) -> list[Fact]:
    """CounterFact rows (ROME format): the relation template with the true object."""
    file = path / "counterfact_val.jsonl" if path.is_dir() else path
    facts = []
    for lineno, row in read_jsonl(file, ("subject", "prompt", "target_true"), what="CounterFact file"):
        bad = [k for k in ("subject", "prompt", "target_true") if not isinstance(row[k], str) or not row[k].strip()]
        if bad or not isinstance(row.get("relation_template", ""), str):
            raise DataError(f"{file}:{lineno}: {', '.join(bad) or 'relation_template'} must be a non-empty string")
        template = row.get("relation_template") or row["prompt"].replace(row["subject"], "{}", 1)
        if "{}" in template and not template.rstrip().endswith("{}"):
            facts.append(_external(template, row["subject"], row["target_true"], template, "counterfact"))
    if not facts:
        raise DataError(f"no usable CounterFact rows in {file}")
    return facts


def lre_facts(path: Path) -> list[Fact]:
    """LRE factual relations: samples.jsonl joined with the zero-shot templates of relations.jsonl."""
    directory = path if path.is_dir() else path.parent
    templates = {}
    for lineno, row in read_jsonl(directory / "relations.jsonl", ("relation", "prompt_templates_zs"), what="LRE file"):
        zs = row["prompt_templates_zs"]
        if not isinstance(row["relation"], str) or not (isinstance(zs, list) and zs and all(
                isinstance(t, str) and "{}" in t for t in zs)):
            raise DataError(f"{directory / 'relations.jsonl'}:{lineno}: 'relation' must be a string and "
                            "'prompt_templates_zs' a non-empty list of templates with '{}'")
        declarative = [t for t in zs if "?" not in t]
        templates[row["relation"]] = (declarative or zs)[0]
    facts = []
    for lineno, row in read_jsonl(directory / "samples.jsonl", ("relation", "subject", "object"), what="LRE file"):
        if not all(isinstance(row[k], str) and row[k].strip() for k in ("relation", "subject", "object")):
            raise DataError(f"{directory / 'samples.jsonl'}:{lineno}: relation, subject and object must be "
                            "non-empty strings")
        if row["relation"] not in templates:
            raise DataError(f"{directory / 'samples.jsonl'}:{lineno}: unknown relation {row['relation']!r}")
        facts.append(_external(row["relation"], row["subject"], row["object"], templates[row["relation"]], "lre"))
    if not facts:
        raise DataError(f"no usable LRE samples in {directory / 'samples.jsonl'}")
    return facts


SOURCES = {"facts": None, "counterfact": "counterfact", "lre": "lre_relations"}


def load_facts(sources: list[str], root: Path | None) -> list[Fact]:
    """Facts from the named sources: 'facts' (embedded), 'counterfact' and 'lre' (from the data
    root), or 'counterfact:PATH' / 'lre:PATH' (any file or directory in those formats)."""
    facts: list[Fact] = []
    for spec in sources:
        source, _, path = spec.partition(":")
        if source not in SOURCES:
            raise DataError(f"unknown fact source '{source}' (choose from {', '.join(SOURCES)})")
        if source == "facts":
            facts += embedded_facts()
            continue
        if not path and root is None:
            raise DataError(f"fact source '{source}' needs a data root (--data-root or ${DATA_ROOT_ENV}) "
                            f"or a path: --sources {source}:PATH")
        loader = counterfact_facts if source == "counterfact" else lre_facts
        location = Path(path).expanduser() if path else root / SOURCES[source]
        if not location.exists():
            raise DataError(f"{source} data not found at {location}")
        facts += loader(location)
    return facts
