"""Prompt templates live as JSON data next to this file: reviewable and diffable."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files


@lru_cache(maxsize=None)
def load_templates(benchmark: str) -> dict:
    return json.loads(files(__package__).joinpath(f"{benchmark}.json").read_text(encoding="utf-8"))
