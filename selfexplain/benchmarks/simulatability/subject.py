"""The subject's side: its task prompt per dataset (prompts.json; CoS-E reuses the rationales
benchmark's template), its answers by option log-likelihood, the explanation query, and sampled
explanations (for self's rejection-sampling training).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Sequence

import torch

from selfexplain.benchmarks.rationales.faithfulness import SUBJECT_LAYOUT
from selfexplain.benchmarks.simulatability.data import Item
from selfexplain.errors import ConfigError
from selfexplain.explainers.prompting import EXAMPLE_SEPARATOR
from selfexplain.models.generation import encode_query, length_batches, option_logprobs
from selfexplain.models.loading import LoadedModel, eval_mode
from selfexplain.techniques.interventions import left_pad
from selfexplain.templates import chat_parts, load_templates

PACKAGE = "selfexplain.benchmarks.simulatability"


@lru_cache(maxsize=None)
def prompts() -> dict:
    return load_templates(PACKAGE)


@dataclass(frozen=True)
class TaskTemplate:
    user: str
    reply: str
    respond: str
    option_separator: str
    labels: tuple[tuple[str, str], ...] = ()  # class -> option text the prompt uses


@lru_cache(maxsize=None)
def task_template(dataset: str) -> TaskTemplate:
    """The dataset's subject template; `from_rationales` takes the rationales benchmark's one."""
    p = prompts()
    d = p["subject"].get(dataset)
    if d is None:
        raise ConfigError(f"simulatability: no subject prompt for dataset {dataset!r} in prompts.json")
    if "from_rationales" in d:
        from selfexplain.benchmarks.rationales.inputs import load_rationale_templates

        r = load_rationale_templates()[d["from_rationales"]]
        # The rationales template names the task text {document} (the cose question).
        return TaskTemplate(r.user.replace("{document}", "{question}"), r.reply, r.respond, r.option_separator)
    return TaskTemplate(d["user"], d["reply"], d.get("respond", p["respond"]), d.get("option_separator",
                        p["option_separator"]), tuple((d.get("labels") or {}).items()))


def verbalize(item: Item) -> Item:
    """The item with its classes as the template's option texts (e-SNLI: True / Neither / False):
    the subject, the explainers and the simulator all see these."""
    labels = dict(task_template(item.dataset).labels)
    return replace(item, options=[labels.get(o, o) for o in item.options]) if labels else item


def message(item: Item) -> str:
    """The user's message the subject answers (also the explainers' view of the input)."""
    t = task_template(item.dataset)
    respond = t.respond.format(options=t.option_separator.join(item.options))
    return t.user.format(premise=item.premise, hypothesis=item.hypothesis, question=item.question, respond=respond)


def prompt_ids(subject: LoadedModel, item: Item) -> list[int]:
    before, after = chat_parts(subject.tokenizer)
    text = before + message(item) + after + task_template(item.dataset).reply
    return subject.tokenizer(text, add_special_tokens=not before)["input_ids"]


def option_ids(loaded: LoadedModel, options: Sequence[str]) -> list[list[int]]:
    return [loaded.tokenizer(" " + o, add_special_tokens=False)["input_ids"] for o in options]


def answers(subject: LoadedModel, items: Sequence[Item], batch_size: int = 16) -> list[int]:
    """The subject's answer (an index into each item's options): the option of highest summed
    log-likelihood after its prompt (ties: the first)."""
    if not items:
        return []
    scores = option_logprobs(subject, [prompt_ids(subject, it) for it in items],
                             [option_ids(subject, it.options) for it in items], batch_size=batch_size,
                             layout=SUBJECT_LAYOUT)
    return [int(torch.argmax(s)) for s in scores]


def explain_query(item: Item, answer: str) -> str:
    return prompts()["explain"]["query"].format(message=message(item), answer=answer)


def instruction() -> str:
    return prompts()["explain"]["instruction"]


def probe_text(answer: str) -> str:
    return prompts()["probe"].format(answer=answer)


def clean(text: str) -> str:
    """An explanation as generated: its first line, stripped."""
    return text.split("\n")[0].strip()


@torch.no_grad()
def sample_explanations(model: LoadedModel, queries: Sequence[str], k: int, max_new_tokens: int,
                        temperature: float, seed: int, batch_size: int = 16, progress=None) -> list[list[str]]:
    """k sampled explanations per query from the untrained model, prompted exactly as the
    zero-shot explainer is (instruction, blank line, query); batched, KV cache (HF generate)."""
    tok = model.tokenizer
    prefix = encode_query(model, instruction() + EXAMPLE_SEPARATOR)
    rows = [prefix + encode_query(model, q, add_special_tokens=False) for q in queries]
    out: list[list[str]] = [[] for _ in queries]
    torch.manual_seed(seed)
    per_batch = max(1, batch_size // max(1, k))
    with eval_mode(model.model), model.autocast():
        for idx in length_batches([len(r) for r in rows], per_batch):
            batch = left_pad([rows[i] for i in idx], tok.pad_token_id, model.device)
            gen = model.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                       do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                       max_new_tokens=max_new_tokens, num_return_sequences=k,
                                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            gen = gen[:, batch.input_ids.shape[1]:]
            for j, i in enumerate(idx):
                out[i] = [clean(tok.decode(g, skip_special_tokens=True)) for g in gen[j * k:(j + 1) * k]]
            if progress is not None:
                progress(len(idx))
    return out
