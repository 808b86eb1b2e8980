"""Prompt templates are data: each benchmark package keeps a `prompts.json` beside its code,
reviewable and diffable; shared sources keep theirs in their own package (data/relations.json)."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib.resources import files


@lru_cache(maxsize=None)
def load_templates(package: str, name: str = "prompts.json") -> dict:
    """The JSON template file `name` of `package` (e.g. a benchmark's `__package__`)."""
    return json.loads(files(package).joinpath(name).read_text(encoding="utf-8"))


def template_digest(package: str, name: str = "prompts.json") -> str:
    """sha256 of a template file's bytes: part of a run's identity, so a prompt edit is a new run."""
    return hashlib.sha256(files(package).joinpath(name).read_bytes()).hexdigest()[:16]


_SPLIT = "\x00"


def chat_parts(tokenizer) -> tuple[str, str]:
    """Chat-template text before and after a user message ("" and "\\n" without a chat template):
    every benchmark renders prompts this way, so the subject sees its own default system prompt."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": _SPLIT}],
                                             add_generation_prompt=True, tokenize=False)
        before, after = text.split(_SPLIT)
        return before, after
    return "", "\n"
