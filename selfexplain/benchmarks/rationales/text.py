"""Rationales as text: how an explainer writes a ranked list of document words, and how any
answer is read back to word indices.

Every explainer of the rationales benchmark answers in one format, "word, word, ..." (most
important first). Explainers that know exact positions (attribution maps, human spans) write
"word@index" so repeated words stay unambiguous; a trained or prompted model writes plain words.
Reading is forgiving and counted: an item that names no word of the document is dropped, a
plain word takes its first occurrence not already taken, and an answer with nothing usable is
an empty rationale (the benchmark reports how often that happens).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

SEPARATOR = ", "
_EDGE = re.compile(r"^\W+|\W+$")
_INDEXED = re.compile(r"^(.*?)@(\d+)$")
_ITEMS = re.compile(r",\s+|[;\n]+")


def word_key(word: str) -> str:
    """The form words are matched in: lower case, punctuation at both ends stripped."""
    return _EDGE.sub("", word.strip()).lower()


def sayable(word: str) -> bool:
    """Whether a document word can be named in a text answer (not punctuation only)."""
    return bool(word_key(word))


def clean_word(word: str) -> str:
    """A document word as an answer names it: surrounding punctuation stripped, case kept."""
    return _EDGE.sub("", word.strip())


def format_ranking(words: Sequence[str], ranked: Sequence[int], with_index: bool = False) -> str:
    """The answer text naming `ranked` word indices in order. Without indices, punctuation-only
    words cannot be named and are skipped; with them they read "@index"."""
    parts = [f"{clean_word(words[w])}@{w}" if with_index else clean_word(words[w])
             for w in ranked if with_index or sayable(words[w])]
    return SEPARATOR.join(parts)


@dataclass(frozen=True)
class ParsedRationale:
    """Word indices an answer names (distinct, in its order), and how much of it was usable."""

    ranked: list[int]
    listed: int
    matched: int

    @property
    def empty(self) -> bool:
        return not self.ranked


def parse_rationale(text: str, words: Sequence[str]) -> ParsedRationale:
    """Read an answer back to word indices of `words` (see the module docstring).

    Items are separated by commas, semicolons or new lines; an item of several words names
    each of them. "word@i" takes index i when words[i] matches the word, else reads as a plain
    word. A word already taken takes its next occurrence; one with none left is dropped.
    """
    occurrences: dict[str, list[int]] = {}
    for i, w in enumerate(words):
        key = word_key(w)
        if key:
            occurrences.setdefault(key, []).append(i)
    taken: set[int] = set()
    ranked: list[int] = []
    listed = 0
    for item in _ITEMS.split(text.strip()):
        # "1,000@12" is one indexed item; anything else may still be "a,b" or "not good"
        tokens = [item.strip()] if _INDEXED.match(item.strip()) else item.replace(",", " ").split()
        for token in tokens:
            listed += 1
            index = _indexed(token, words, taken)
            if index is None:
                key = word_key(_INDEXED.sub(r"\1", token))
                index = next((i for i in occurrences.get(key, ()) if i not in taken), None)
            if index is not None:
                taken.add(index)
                ranked.append(index)
    return ParsedRationale(ranked, listed, len(ranked))


def _indexed(token: str, words: Sequence[str], taken: set[int]) -> int | None:
    m = _INDEXED.match(token)
    if not m:
        return None
    index = int(m.group(2))
    if index < len(words) and index not in taken and word_key(words[index]) == word_key(m.group(1)):
        return index
    return None
