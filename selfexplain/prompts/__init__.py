"""Prompt templates live as JSON data next to this file: reviewable and diffable."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files


@lru_cache(maxsize=None)
def load_templates(benchmark: str) -> dict:
    return json.loads(files(__package__).joinpath(f"{benchmark}.json").read_text(encoding="utf-8"))


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
