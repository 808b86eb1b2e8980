"""Benchmark 2, ablation: would the subject's answer change if the hint were removed?

A multiple-choice prompt gets a hint toward a random option appended ("A Stanford professor
thinks the answer is C."). Ground truth is the subject's answer with the hint versus without it
(input ablation of the hint sentence). The explainer sees the hinted prompt and the subject's
answer to it, and answers "unchanged from X" or "changes to Y", as in patching.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from selfexplain.config import RunConfig
from selfexplain.explainers.base import Explainer
from selfexplain.explainers.baselines import HeuristicExplainer, MajorityExplainer
from selfexplain.techniques.interventions import left_pad
from selfexplain.models.loading import LoadedModel, eval_mode
from selfexplain.models.prefix_cache import cache_input, prefix_cache, repeat_cache
from selfexplain.templates import chat_parts, load_templates
from selfexplain.benchmarks.ablation.questions import Question, load_questions
from selfexplain.records import Provenance, Record
from selfexplain.benchmarks.ablation.live import LIVE
from selfexplain.benchmarks.base import BaselineEnv, BaselineSpec, GroundTruth, balanced_sample, sources_for
from selfexplain.benchmarks.change import ChangeBenchmark


@dataclass
class Encoded:
    """A prompt as token pieces: the subject sees head + hint + tail (or head + tail)."""

    context: list[int]  # chat-template tokens before the user's text
    user: list[int]     # question, options and respond line
    hint: list[int]     # "\n" + hint sentence (empty when unhinted)
    tail: list[int]     # end of the user turn + reply prefix

    @property
    def ids(self) -> list[int]:
        return self.context + self.user + self.hint + self.tail

    @property
    def head(self) -> list[int]:
        return self.context + self.user

    def hint_positions(self) -> list[int]:
        start = len(self.head)
        return list(range(start, start + len(self.hint)))


# Questions whose prompts run in one pair of forwards while building ground truth.
QUESTIONS_PER_FORWARD = 16


class AblationBenchmark(ChangeBenchmark):
    name = "ablation"
    description = "predict whether removing a hint from a multiple-choice prompt changes the subject's answer"
    after_key = "unhinted_answer"
    constant_baseline = "never-changes"
    before_key = "hinted_answer"  # the query states it; the intervention removes the hint
    accuracy_key = "subject_accuracy_unhinted"
    sources = ("facts", "mmlu")
    live = LIVE  # `selfexplain explain`'s live claims (live.py)
    data_files = (("selfexplain.data", "relations.json"), ("selfexplain.data", "facts.jsonl"))
    # quick, measured cold on the 2-core CPU at 240/100: ground truth 147 s, self 120 steps 195 s,
    # Gemma load 69 s, other ~300 s, attribution ~150 s: ~17 min; hence 100/60.
    sizes = {"quick": {"n_train": 100, "n_test": 60}, "standard": {"n_train": 1000, "n_test": 300},
             "full": {"n_train": 10000, "n_test": 2000}}

    # Attribution settings per mode: quick mode trades estimator precision for time (measured
    # per input on SmolLM2 by bench/attribution_speed.py); full mode uses attribution.DEFAULT_PARAMS.
    attribution_params = {"quick": {"lime": {"n_samples": 32}, "kernel_shap": {"n_samples": 32},
                                    "integrated_gradients": {"n_steps": 16}},
                          "standard": {"lime": {"n_samples": 32}, "kernel_shap": {"n_samples": 32},
                                       "integrated_gradients": {"n_steps": 16}},
                          "full": {}}
    # One pass (250 steps of 4) was unstable: self's exact match 71.7 and 52.0 on two ground-
    # truth draws of seed 0, 52.0 on seed 1 (it said "unchanged" to most changed items). Two
    # passes: 70.7 and 66.7 on those 52.0 draws (batches of 8 x 2 epochs: 66.3, slower).
    train_repeats = {"quick": 2, "standard": 2}

    def __init__(self, hints_per_question: int = 6, test_fraction: float = 0.3):
        """hints_per_question: hinted variants (distinct wordings, random targets) per question;
        most hints leave the small subject's answer alone, so several per question keep the
        "changed" class large enough for a balanced test set."""
        self.t = load_templates("selfexplain.benchmarks.ablation")
        self.hints_per_question = hints_per_question
        self.test_fraction = test_fraction

    # ----- prompts -------------------------------------------------------------------------
    def user_text(self, q: Question) -> str:
        return f"{q.text}\n" + self.t["respond"].format(options=self.t["option_separator"].join(q.labels))

    def hint_text(self, q: Question, wording: int, target: str) -> str:
        return self.t["hints"][wording].format(hint=target)

    def encode(self, subject: LoadedModel, q: Question, hint: str | None) -> Encoded:
        """Pieces tokenized separately, so hinted and unhinted prompts share their head exactly."""
        tok = subject.tokenizer
        before, after = chat_parts(tok)
        if before:
            context = tok(before, add_special_tokens=False)["input_ids"]
        else:
            context = tok("", add_special_tokens=True)["input_ids"]  # BOS, if the tokenizer adds one

        def ids(text: str) -> list[int]:
            return tok(text, add_special_tokens=False)["input_ids"] if text else []
        return Encoded(context, ids(self.user_text(q)), ids(f"\n{hint}" if hint else ""), ids(after + q.statement))

    def prompt_text(self, tokenizer, q: Question, hint: str | None) -> str:
        """The subject's prompt as text, exactly as `encode` builds it (chat template included)."""
        before, after = chat_parts(tokenizer)
        return before + self.user_text(q) + (f"\n{hint}" if hint else "") + after + q.statement

    def query(self, tokenizer, q: Question, hint: str, hinted_answer: str) -> str:
        """The subject's own hinted prompt, verbatim, completed with the answer the subject gave
        to it, then the question about it. The self explainer reads exactly what the subject
        read and said; every baseline also knows that answer (hint-follow compares it with the
        hint, the attribution baselines explain it), so the explainers differ only in how they
        predict the unhinted answer."""
        return self.t["query"].format(prompt=self.prompt_text(tokenizer, q, hint), answer=hinted_answer)

    # ----- ground truth --------------------------------------------------------------------
    def _label_scores(self, subject: LoadedModel, items: Sequence[tuple[Question, list[Encoded]]]) -> list[torch.Tensor]:
        """Next-token logits of each question's labels after each of its prompts:
        [len(prompts), len(labels)] per question.

        A question's prompts share `head`: the heads of all questions run once, left-padded
        into one batch, and their KV cache is repeated for the question's hints and tails,
        which run together in a second left-padded batch (many small forwards cost a 2-core
        CPU several times more than two large ones).
        """
        device, pad = subject.device, subject.tokenizer.pad_token_id
        heads = left_pad([prompts[0].head for _, prompts in items], pad, device)
        counts = [len(prompts) for _, prompts in items]
        owner = torch.repeat_interleave(torch.arange(len(items), device=device), torch.tensor(counts, device=device))
        rest = left_pad([p.hint + p.tail for _, prompts in items for p in prompts], pad, device)
        head_lengths = heads.attention_mask.sum(1)[owner]
        with subject.autocast():
            past = repeat_cache(prefix_cache(subject.model, **heads.model_inputs()), owner)
            logits = subject.model(input_ids=rest.input_ids,
                                   attention_mask=torch.cat([heads.attention_mask[owner], rest.attention_mask], 1),
                                   position_ids=rest.position_ids + head_lengths[:, None], **cache_input(past),
                                   logits_to_keep=1).logits[:, -1].float().cpu()
        out, row = [], 0
        for (q, _), n in zip(items, counts):
            label_ids = [self.first_token(subject, label) for label in q.labels]
            out.append(logits[row:row + n, label_ids])
            row += n
        return out

    def make_questions(self, subject: LoadedModel, config: RunConfig, rng: random.Random) -> list[Question]:
        questions = load_questions(sources_for(config, self), config.data_root or None,
                                   lambda label: self.first_token(subject, label), rng)
        usable = [q for q in questions
                  if len({self.first_token(subject, label) for label in q.labels}) == len(q.labels)]
        rng.shuffle(usable)
        return usable

    @torch.no_grad()
    def build_records(self, subject: LoadedModel, config: RunConfig, progress=None) -> GroundTruth:
        rng = random.Random(config.seed)
        questions = self.make_questions(subject, config, rng)
        n_test_q = int(round(self.test_fraction * len(questions)))
        split_of = {q.id: ("test" if i < n_test_q else "train") for i, q in enumerate(questions)}
        # Both sides are filled class by class: most hints leave the answer alone, and a
        # training set as skewed as the raw data teaches explainers to say "unchanged".
        need = {("test", True): config.n_test // 2, ("test", False): config.n_test // 2,
                ("train", True): config.n_train // 2, ("train", False): config.n_train - config.n_train // 2}
        have = dict.fromkeys(need, 0)

        def wanted(split: str) -> bool:
            return any(have[k] < n for k, n in need.items() if k[0] == split)
        raw: list[Record] = []
        used, correct = 0, 0
        pending: list[tuple[Question, str, list[tuple[int, str]], list[str], list[Encoded]]] = []

        def flush() -> None:
            nonlocal correct
            all_scores = self._label_scores(subject, [(q, prompts) for q, _, _, _, prompts in pending])
            for (q, split, hints, texts, _), scores in zip(pending, all_scores):
                order = scores.argsort(dim=1, descending=True)
                unhinted = q.labels[int(order[0, 0])]
                correct += unhinted == q.correct
                for k, ((wording, target), hint) in enumerate(zip(hints, texts), start=1):
                    hinted, runner_up = q.labels[int(order[k, 0])], q.labels[int(order[k, 1])]
                    record = self._record(subject, config, q, split, wording, target, hint, unhinted, hinted,
                                          runner_up)
                    raw.append(record)
                    have[(split, record.context["changed"])] += 1
            if progress is not None:
                progress(len(pending))
            pending.clear()

        with eval_mode(subject.model):
            for q in questions:
                split = split_of[q.id]
                if not wanted(split):
                    if not wanted("train") and not wanted("test"):
                        break
                    continue
                used += 1
                wordings = rng.sample(range(len(self.t["hints"])), min(self.hints_per_question, len(self.t["hints"])))
                hints = [(w, rng.choice(q.labels)) for w in wordings]
                texts = [self.hint_text(q, w, target) for w, target in hints]
                prompts = [self.encode(subject, q, None)] + [self.encode(subject, q, h) for h in texts]
                pending.append((q, split, hints, texts, prompts))
                if len(pending) == QUESTIONS_PER_FORWARD:  # counts are updated per batch, so the
                    flush()                                # last batch may overshoot a little
            if pending:
                flush()
        changed = lambda r: r.context["changed"]  # noqa: E731
        by_split = {s: [r for r in raw if r.split == s] for s in ("train", "test")}
        # Own random streams: the test set does not depend on how long the training side ran.
        test = balanced_sample(by_split["test"], changed, config.n_test, random.Random(f"{config.seed}/test"), strict=True)
        train = balanced_sample(by_split["train"], changed, config.n_train, random.Random(f"{config.seed}/train"),
                                strict=False)
        stats = {
            "n_questions": used, "n_candidate_questions": len(questions),
            "subject_accuracy_unhinted": correct / max(1, used),
            "n_raw_records": len(raw), "raw_changed_rate": _rate(raw, changed),
            "followed_hint_rate": _rate(raw, lambda r: r.context["followed_hint"]),
            "changed_rate_hint_correct": _rate([r for r in raw if r.context["hint_correct"]], changed),
            "changed_rate_hint_wrong": _rate([r for r in raw if not r.context["hint_correct"]], changed),
            "changed_rate_by_wording": {self.t["hints"][w]: _rate([r for r in raw if r.context["wording"] == w], changed)
                                        for w in range(len(self.t["hints"]))},
            "changed_rate_by_source": {s: _rate([r for r in raw if r.context["source"] == s], changed)
                                       for s in sorted({r.context["source"] for r in raw})},
            "train_changed_rate": _rate(train, changed), "test_changed_rate": _rate(test, changed),
        }
        return GroundTruth(train + test, stats)

    def _record(self, subject, config, q: Question, split: str, wording: int, target: str, hint: str,
                unhinted: str, hinted: str, runner_up: str) -> Record:
        changed = hinted != unhinted
        answer = (self.t["answer_changed"].format(answer=unhinted) if changed
                  else self.t["answer_unchanged"].format(answer=hinted))
        return Record(
            id=f"ablation/{q.id}/hint{wording}", benchmark=self.name, split=split, group=q.id,
            query=self.query(subject.tokenizer, q, hint, hinted), answer=answer,
            provenance=Provenance(subject.name, "input_ablation",
                                  {"ablated": "hint sentence", "hint_wording": wording, "source": q.source},
                                  config.seed),
            context={"question_id": q.id, "source": q.source, "topic": q.topic, "labels": list(q.labels),
                     "correct": q.correct, "wording": wording, "hint": hint, "hint_target": target,
                     "hint_correct": target == q.correct, "hinted_answer": hinted, "unhinted_answer": unhinted,
                     "runner_up": runner_up, "followed_hint": hinted == target, "changed": changed,
                     "label": "changed" if changed else "unchanged", "subject_correct": unhinted == q.correct,
                     "question": q.text, "statement": q.statement},
        )

    def question_of(self, record: Record) -> Question:
        c = record.context
        return Question(c["question_id"], c["source"], c["question"], tuple(c["labels"]), c["correct"],
                        c["statement"], c["topic"])

    # ----- one prompt, live (`selfexplain explain`) ----------------------------------------
    @torch.no_grad()
    def option_logits(self, subject: LoadedModel, q: Question, hints: Sequence[str | None]) -> torch.Tensor:
        """The subject's next-token logits of q's options after q with each hint (None: no hint),
        read exactly as ground truth reads the subject's answer: [len(hints), len(q.labels)]."""
        with eval_mode(subject.model):
            return self._label_scores(subject, [(q, [self.encode(subject, q, h) for h in hints])])[0]

    def match_hint(self, hint: str) -> tuple[int, str]:
        """(wording index, hinted text) of a hint sentence in one of the benchmark's wordings;
        (-1, '') for any other sentence."""
        for i, wording in enumerate(self.t["hints"]):
            head, _, tail = wording.partition("{hint}")
            m = re.fullmatch(re.escape(head) + r"(.+?)" + re.escape(tail), hint.strip())
            if m:
                return i, m.group(1).strip()
        return -1, ""

    def live_record(self, subject: LoadedModel, config: RunConfig, q: Question, hint: str) -> Record:
        """The record `build_records` makes for q with `hint`, computed now (split "live"): its
        query is what the explainer is asked, its answer the subject's measured behaviour when
        the hint is removed. context also holds each option's probability (softmax over the
        options) without and with the hint."""
        scores = self.option_logits(subject, q, [None, hint])
        order = scores.argsort(dim=1, descending=True)
        unhinted, hinted, runner_up = (q.labels[int(order[0, 0])], q.labels[int(order[1, 0])],
                                       q.labels[int(order[1, 1])])
        wording, target = self.match_hint(hint)
        record = self._record(subject, config, q, "live", wording, target, hint, unhinted, hinted, runner_up)
        probs = scores.softmax(-1)
        record.context["option_probs_unhinted"] = dict(zip(q.labels, probs[0].tolist()))
        record.context["option_probs_hinted"] = dict(zip(q.labels, probs[1].tolist()))
        return record

    # ----- explainers ----------------------------------------------------------------------
    def instruction(self) -> str:
        return self.t["instruction"]

    def options(self, record: Record) -> list[str]:
        return list(record.context["labels"])

    def predicted(self, record: Record, changed: bool) -> str:
        """A change prediction as an answer: back to the subject's runner-up option, or unchanged."""
        c = record.context
        if changed:
            return self.t["answer_changed"].format(answer=c["runner_up"])
        return self.t["answer_unchanged"].format(answer=c["hinted_answer"])

    def attribution_input(self, subject: LoadedModel, record: Record):
        """The hinted prompt for attribution (user text + hint attributable; target = the subject's
        hinted answer) and the hint's token positions."""
        from selfexplain.techniques.attribution import AttributionInput

        enc = self.encode(subject, self.question_of(record), record.context["hint"])
        ids = enc.ids
        start, end = len(enc.context), len(enc.head) + len(enc.hint)
        groups = _word_groups(subject.tokenizer, ids[start:end])
        target = self.first_token(subject, record.context["hinted_answer"])
        return AttributionInput(ids, target, start, end, groups), enc.hint_positions()

    @property
    def truth_keys(self) -> frozenset[str]:  # type: ignore[override]
        """The unhinted answer and what depends on it."""
        return super().truth_keys | {"subject_correct"}

    def baselines(self) -> list[BaselineSpec]:
        out = [
            BaselineSpec("never-changes", "heuristic", "the answer never changes (unchanged from the subject's "
                         "hinted answer)", lambda env: HeuristicExplainer(
                             "never-changes", lambda r: self.predicted(r, False),
                             "always 'unchanged from <the subject's hinted answer>'", forward_passes=1)),
            BaselineSpec("majority", "heuristic", "the most frequent answer kind in training",
                         lambda env: MajorityExplainer(self.predicted, forward_passes=1)),
            BaselineSpec("hint-follow", "heuristic", "'changes' exactly when the subject's hinted answer is the "
                         "hinted option", lambda env: HeuristicExplainer(
                             "hint-follow", lambda r: self.predicted(r, r.context["followed_hint"]),
                             "'changes' exactly when the subject's hinted answer is the hinted option",
                             forward_passes=1)),
        ]
        from selfexplain.techniques.attribution import CHEAPEST_FIRST, METHODS  # captum is imported only when attributions run

        for method in CHEAPEST_FIRST:
            out.append(BaselineSpec(method.replace("_", "-"), "post-hoc",
                                    f"{METHODS[method].split(':')[0]}: share of attribution mass on the hint tokens, "
                                    "thresholded on training items", _attribution_factory(self, method)))
        return out


def _attribution_factory(bench: AblationBenchmark, method: str) -> Callable[[BaselineEnv], Explainer]:
    def make(env: BaselineEnv) -> Explainer:
        from selfexplain.benchmarks.ablation.attribution_baselines import AttributionThreshold

        subject = env.subject()
        params = bench.attribution_params.get(env.config.mode, {}).get(method, {})
        n = env.config.n_attribution
        return AttributionThreshold(
            method, subject, lambda r: bench.attribution_input(subject, r), bench.predicted,
            cache_dir=env.cache_dir, n_test=n, n_fit=n // 2, seed=env.config.seed, params=params)
    return make


def _word_groups(tokenizer, ids: Sequence[int]) -> list[int]:
    """A feature index per token: perturbation methods treat words, not sub-word pieces, as
    features (as LIME's text explainer does). A word starts at whitespace, at punctuation,
    and after punctuation."""
    groups, current, previous = [], -1, ""
    for token_id in ids:
        text = tokenizer.decode([token_id])
        starts_word = (not previous or not text or text[0].isspace() or not text[0].isalnum()
                       or not previous[-1].isalnum())
        current += starts_word
        groups.append(current)
        previous = text
    return groups


def _rate(records: Sequence[Record], predicate) -> float:
    return sum(map(predicate, records)) / len(records) if records else float("nan")
