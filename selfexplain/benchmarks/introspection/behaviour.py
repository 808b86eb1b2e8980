"""Object-level behaviour: a model's temperature-0 answers to prompts, computed by running it."""

from __future__ import annotations

from typing import Sequence

from selfexplain.benchmarks.introspection.families import Prompt
from selfexplain.benchmarks.introspection.properties import clean_answer, spec
from selfexplain.models.generation import greedy_generate
from selfexplain.models.loading import LoadedModel
from selfexplain.templates import chat_parts

# Longest answer read: properties look at the first words and characters only.
MAX_NEW_TOKENS = 12
BATCH = 32


def prompt_ids(model: LoadedModel, prompt: Prompt) -> list[int]:
    """The prompt as the model is asked it: in its chat template (its default system prompt), or
    as "Question: ...\\nAnswer:" for a base model without one."""
    tok = model.tokenizer
    if getattr(tok, "chat_template", None):
        before, after = chat_parts(tok)
        return tok(before + prompt.text + after, add_special_tokens=False)["input_ids"]
    return tok(spec()["plain_format"].format(prompt=prompt.text), add_special_tokens=True)["input_ids"]


def answers(model: LoadedModel, prompts: Sequence[Prompt], progress=None) -> list[tuple[str, str]]:
    """(raw greedy continuation, cleaned answer) per prompt, batched by length with a KV cache."""
    raw = greedy_generate(model, [prompt_ids(model, p) for p in prompts], max_new_tokens=MAX_NEW_TOKENS,
                          batch_size=BATCH, stop_at_newline=False, progress=progress)
    return [(r, clean_answer(r)) for r in raw]
