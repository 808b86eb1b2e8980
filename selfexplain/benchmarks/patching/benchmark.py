"""Benchmark 1, patching: predict the subject's answer after an activation patch.

A multiple-choice factual prompt about a base entity is run with the residual stream at
(layer block, token) replaced by its value on the same prompt about a counterfactual entity.
Ground truth is the subject's greedy answer after the patch: "unchanged from Y" or
"changes to Z". The explainer's query carries the text and the patch vector itself.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Sequence

import torch

from selfexplain.config import RunConfig
from selfexplain.explainers.base import Explainer, Explanation
from selfexplain.explainers.baselines import HeuristicExplainer
from selfexplain.data.facts import Fact, data_root, load_facts
from selfexplain.techniques.interventions import (Patch, can_skip_clean_layers, patch_residual, record_residual,
                                                   skip_clean_layers)
from selfexplain.models.loading import LoadedModel, eval_mode
from selfexplain.models.prefix_cache import cache_input, output_cache, repeat_cache
from selfexplain.templates import load_templates
from selfexplain.records import Provenance, Record
from selfexplain.benchmarks.patching.live import LIVE
from selfexplain.benchmarks.base import BaselineEnv, BaselineSpec, GroundTruth, balanced_sample, sources_for
from selfexplain.benchmarks.change import ChangeBenchmark, parse_change_answer

TOKEN_TYPES = ("subject_question", "subject_answer", "last")
parse_answer = parse_change_answer  # the patching answer format is the shared change format


@dataclass
class Item:
    """One (base, counterfactual) pair with its options."""

    base: Fact
    cf: Fact
    options: list[str]
    split: str


@dataclass
class Encoded:
    ids: list[int]
    positions: dict[str, int]  # token type -> position
    tokens: dict[str, str]     # token type -> token text


def layer_blocks(n_layers: int, n_blocks: int = 6) -> list[tuple[int, int]]:
    """Contiguous, near-equal layer blocks [first, last] covering every layer."""
    n_blocks = min(n_blocks, n_layers)
    bounds = [round(i * n_layers / n_blocks) for i in range(n_blocks + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(n_blocks)]


class PatchingBenchmark(ChangeBenchmark):
    name = "patching"
    description = "predict the subject's answer after activation patching (layer block x token)"
    after_key = "patched_answer"
    constant_baseline = "never-changes"
    default_suite = True  # the README's first command: the quickest privileged-access test
    before_key = "clean_answer"
    accuracy_key = "subject_accuracy_unpatched"
    sources = ("facts", "counterfact", "lre")
    live = LIVE  # `selfexplain explain`'s live claims (live.py)
    data_files = (("selfexplain.data", "relations.json"), ("selfexplain.data", "facts.jsonl"))

    def __init__(self, n_blocks: int = 6, test_fraction: float = 0.3, option_answers_only: bool = True):
        """option_answers_only: skip items where the unpatched subject answers none of the
        options on the base or the counterfactual prompt, or the same option on both (then
        neither "unchanged from" nor "changes to" has a meaningful target); counts are reported."""
        self.t = load_templates("selfexplain.benchmarks.patching")
        self.n_blocks = n_blocks
        self.test_fraction = test_fraction
        self.option_answers_only = option_answers_only

    # ----- prompts -------------------------------------------------------------------------
    def respond_line(self, options: Sequence[str]) -> str:
        return self.t["respond"].format(options=self.t["option_separator"].join(options))

    def subject_text(self, tokenizer, fact: Fact, options: Sequence[str]) -> tuple[str, bool]:
        """The subject's prompt: chat template (if any) with the statement as the reply's start."""
        user = f"{fact.question}\n{self.respond_line(options)}"
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": user}],
                                                 add_generation_prompt=True, tokenize=False)
            return text + fact.statement, False
        return f"{user}\n{fact.statement}", True

    def encode(self, subject: LoadedModel, fact: Fact, options: Sequence[str]) -> Encoded:
        tok = subject.tokenizer
        text, special = self.subject_text(tok, fact, options)
        enc = tok(text, add_special_tokens=special, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        q_start = text.rfind(fact.question)
        ends = {"subject_question": text.find(fact.entity, q_start) + len(fact.entity),
                "subject_answer": text.rfind(fact.entity) + len(fact.entity)}
        positions = {"last": len(ids) - 1}
        for kind, end in ends.items():
            positions[kind] = next(i for i, (s, e) in enumerate(offsets) if s < end <= e or (e == end and e > s))
        tokens = {k: tok.decode([ids[p]]).strip() for k, p in positions.items()}
        return Encoded(ids, positions, tokens)

    # ----- items ---------------------------------------------------------------------------
    def make_items(self, subject: LoadedModel, facts: list[Fact], rng: random.Random) -> list[Item]:
        """Pair each base fact with a counterfactual entity of the same relation and side."""
        entities = sorted({f.entity for f in facts})
        rng.shuffle(entities)
        n_test = int(round(self.test_fraction * len(entities)))
        side = {e: ("test" if i < n_test else "train") for i, e in enumerate(entities)}
        by_rel: dict[tuple[str, str], list[Fact]] = {}
        for f in facts:
            by_rel.setdefault((f.relation, side[f.entity]), []).append(f)
        unknown_tok = self.first_token(subject, self.t["unknown"])
        items: list[Item] = []
        for (relation, split), group in sorted(by_rel.items()):
            answers = sorted({f.answer for f in group})
            for base in group:
                for _ in range(20):
                    cf = rng.choice(group)
                    distractor = rng.choice(answers)
                    opts = [base.answer, cf.answer, distractor]
                    firsts = {self.first_token(subject, o) for o in opts} | {unknown_tok}
                    if cf.entity != base.entity and len(set(opts)) == 3 and len(firsts) == 4:
                        rng.shuffle(opts)
                        items.append(Item(base, cf, opts, split))
                        break
        rng.shuffle(items)
        return items

    def _patched_answers(self, subject: LoadedModel, ids: list[int], cache, start: int, n_rows: int,
                         patches: list[Patch], clean: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Next-token argmax of `n_rows` patched copies of `ids`.

        Tokens before `start` (the patched position) are identical in every copy and in the
        clean run, so their KV cache is reused: only the suffix is recomputed. With `clean` (the
        clean run's block outputs, layer -> [1, len(ids), hidden]), each row also starts at its
        first patched layer: the blocks below it would recompute the clean run.
        """
        device = subject.device
        past = repeat_cache(cache, n_rows, keep=start, copy=True)  # the tokens before `start`
        suffix = torch.tensor([ids[start:]] * n_rows, device=device)
        positions = torch.arange(start, len(ids), device=device).expand(n_rows, -1)
        first = dict.fromkeys(range(n_rows), 0)  # each row's first patched layer (0: no patch)
        for p in sorted(patches, key=lambda p: -p.layer):
            first[p.row] = p.layer
        order = sorted(range(n_rows), key=lambda r: first[r])  # rows by first patched layer
        new_row = {r: i for i, r in enumerate(order)}
        shifted = [Patch(new_row[p.row], p.layer, p.position - start, p.vector) for p in patches]
        skip = (contextlib.nullcontext() if clean is None or not can_skip_clean_layers(past) else
                skip_clean_layers(subject.model, [first[r] for r in order],
                                  {layer: h[:, start:] for layer, h in clean.items()}, past))
        with subject.autocast(), patch_residual(subject.model, shifted), skip:
            logits = subject.model(input_ids=suffix, **cache_input(past), position_ids=positions,
                                   use_cache=True, logits_to_keep=1).logits[:, -1]
        got = logits.float().argmax(-1)
        return got[torch.tensor([new_row[r] for r in range(n_rows)], device=got.device)]

    def answer_label(self, subject: LoadedModel, token: int, options: Sequence[str]) -> str:
        for opt in list(options) + [self.t["unknown"]]:
            if token == self.first_token(subject, opt):
                return opt
        return subject.tokenizer.decode([token]).strip() or "<blank>"

    # ----- ground truth --------------------------------------------------------------------
    @torch.no_grad()
    def build_records(self, subject: LoadedModel, config: RunConfig, progress=None) -> GroundTruth:
        rng = random.Random(config.seed)
        facts = load_facts(sources_for(config, self), data_root(config.data_root or None))
        blocks = layer_blocks(subject.num_layers, self.n_blocks)
        items = self.make_items(subject, facts, rng)
        # Items are processed until each side has enough records: the test side needs
        # n_test/2 of each class (it is balanced), the training side n_train in all.
        need = {("test", True): config.n_test // 2, ("test", False): config.n_test // 2,
                ("train", None): config.n_train}
        have = dict.fromkeys(need, 0)

        def wanted(split: str) -> bool:
            return any(have[k] < n for k, n in need.items() if k[0] == split)
        layers = list(range(subject.num_layers))
        raw: list[Record] = []
        n_clean_correct = 0
        base_kept = 0
        used_items = 0
        skipped_cf = 0
        with eval_mode(subject.model):
            for item in items:
                if not wanted(item.split):
                    if not wanted("train") and not wanted("test"):
                        break
                    continue
                used_items += 1
                base = self.encode(subject, item.base, item.options)
                cf = self.encode(subject, item.cf, item.options)
                ids = torch.tensor([base.ids], device=subject.device)
                with record_residual(subject.model, layers) as base_resid, subject.autocast():
                    out = subject.model(input_ids=ids, use_cache=True, logits_to_keep=1)
                clean = self.answer_label(subject, int(out.logits[0, -1].float().argmax()), item.options)
                if progress is not None:
                    progress(1)
                if self.option_answers_only and clean not in item.options:
                    continue
                base_kept += clean in item.options
                n_clean_correct += clean == item.base.answer
                cf_ids = torch.tensor([cf.ids], device=subject.device)
                with record_residual(subject.model, layers) as resid, subject.autocast():
                    cf_logits = subject.model(input_ids=cf_ids, logits_to_keep=1).logits[0, -1]
                cf_clean = self.answer_label(subject, int(cf_logits.float().argmax()), item.options)
                if self.option_answers_only and (cf_clean not in item.options or cf_clean == clean):
                    # The counterfactual must be a prompt the subject answers, differently:
                    # otherwise "changes to" has no meaningful target.
                    skipped_cf += 1
                    continue
                rows, answers = [], []
                for kind in TOKEN_TYPES:
                    kind_rows = [((first, last), kind) for first, last in blocks]
                    patches = [Patch(i, layer, base.positions[kind], resid[layer][0, cf.positions[kind]])
                               for i, ((first, last), _) in enumerate(kind_rows) for layer in range(first, last + 1)]
                    rows += kind_rows
                    answers += self._patched_answers(subject, base.ids, output_cache(out), base.positions[kind],
                                                     len(kind_rows), patches, base_resid).tolist()
                for row, ((first, last), kind) in enumerate(rows):
                    after = self.answer_label(subject, int(answers[row]), item.options)
                    raw.append(self._record(subject, config, item, base, cf, (first, last), kind, clean, cf_clean,
                                            after, resid[last][0, cf.positions[kind]].float().cpu()))
                    key = (item.split, None) if item.split == "train" else (item.split, after != clean)
                    have[key] += 1
        by_split = {s: [r for r in raw if r.split == s] for s in ("train", "test")}
        changed = lambda r: r.context["changed"]  # noqa: E731
        test = balanced_sample(by_split["test"], changed, config.n_test, rng, strict=True)
        train = balanced_sample(by_split["train"], changed, config.n_train, rng, strict=False)
        stats = {
            "n_items": used_items, "n_candidate_items": len(items), "n_items_with_option_answer": base_kept,
            "subject_accuracy_unpatched": n_clean_correct / max(1, used_items),
            "subject_accuracy_when_answering_an_option": n_clean_correct / max(1, base_kept),
            "n_items_skipped_counterfactual_unanswered_or_same": skipped_cf,
            "raw_changed_rate": sum(map(changed, raw)) / max(1, len(raw)),
            "n_raw_records": len(raw),
            "train_changed_rate": sum(map(changed, train)) / max(1, len(train)),
            "test_changed_rate": sum(map(changed, test)) / max(1, len(test)),
            "changed_rate_by_cell": _rate_by_cell(raw),
            "layer_blocks": blocks,
        }
        return GroundTruth(train + test, stats)

    def _record(self, subject, config, item: Item, base: Encoded, cf: Encoded, block, kind, clean, cf_clean,
                after, vector) -> Record:
        changed = after != clean
        answer = (self.t["answer_changed"] if changed else self.t["answer_unchanged"]).format(
            answer=after if changed else clean)
        query = self.t["query"].format(
            question=item.base.question, options=", ".join(item.options) + " or " + self.t["unknown"],
            first_layer=block[0], last_layer=block[1], token=base.tokens[kind],
            token_type=self.t["token_types"][kind], cf_entity=item.cf.entity, clean_answer=clean,
            cf_answer=cf_clean)
        rid = f"patching/{item.base.relation}/{item.base.entity}/{item.cf.entity}/L{block[0]}-{block[1]}/{kind}"
        return Record(
            id=rid, benchmark=self.name, split=item.split, group=item.base.entity, query=query, answer=answer,
            provenance=Provenance(subject.name, "activation_patching",
                                  {"layers": list(range(block[0], block[1] + 1)), "token_type": kind,
                                   "source": item.base.source, "vector_layer": block[1]}, config.seed),
            context={"relation": item.base.relation, "entity": item.base.entity, "cf_entity": item.cf.entity,
                     "options": item.options, "true_answer": item.base.answer, "clean_answer": clean,
                     "cf_clean_answer": cf_clean, "patched_answer": after, "changed": changed,
                     "block": list(block), "token_type": kind, "label": "changed" if changed else "unchanged",
                     "subject_correct": clean == item.base.answer},
            vector=vector,
        )

    def instruction(self) -> str:
        return self.t["instruction"]

    def options(self, record: Record) -> list[str]:
        """The record's options and "unknown" (both are answers the query lists). A patched answer
        outside them (some other token) is no candidate: no explainer can name it then."""
        return list(record.context["options"]) + [self.t["unknown"]]

    @torch.no_grad()
    def live_record(self, subject: LoadedModel, config: RunConfig, base: Fact, cf: Fact, options: Sequence[str],
                    block: tuple[int, int], kind: str) -> Record:
        """The record `build_records` makes for one cell (layer block, token type) of the pair
        (base, cf), computed now (split "live"): the query carries the patch vector, the answer
        is the subject's greedy answer after the patch. Items the benchmark would skip (no
        option answered, or the same answer on both prompts) are computed all the same."""
        first, last = block
        item = Item(base, cf, list(options), "live")
        enc, cf_enc = self.encode(subject, base, options), self.encode(subject, cf, options)
        device = subject.device
        with eval_mode(subject.model):
            with subject.autocast():
                out = subject.model(input_ids=torch.tensor([enc.ids], device=device), use_cache=True,
                                    logits_to_keep=1)
            clean = self.answer_label(subject, int(out.logits[0, -1].float().argmax()), options)
            with record_residual(subject.model, list(range(first, last + 1))) as resid, subject.autocast():
                cf_logits = subject.model(input_ids=torch.tensor([cf_enc.ids], device=device),
                                          logits_to_keep=1).logits[0, -1]
            cf_clean = self.answer_label(subject, int(cf_logits.float().argmax()), options)
            patches = [Patch(0, layer, enc.positions[kind], resid[layer][0, cf_enc.positions[kind]])
                       for layer in range(first, last + 1)]
            token = self._patched_answers(subject, enc.ids, output_cache(out), enc.positions[kind], 1, patches)
            after = self.answer_label(subject, int(token[0]), options)
        return self._record(subject, config, item, enc, cf_enc, block, kind, clean, cf_clean, after,
                            resid[last][0, cf_enc.positions[kind]].float().cpu())

    def baselines(self) -> list[BaselineSpec]:
        unchanged = self.t["answer_unchanged"]
        return [
            BaselineSpec("never-changes", "heuristic", "the answer never changes (unchanged from the subject's "
                         "unpatched answer)", lambda env: HeuristicExplainer(
                             "never-changes", lambda r: unchanged.format(answer=r.context["clean_answer"]),
                             "always 'unchanged from <the subject's unpatched answer>'", forward_passes=1)),
            BaselineSpec("layer-token-prior", "heuristic", "training change rate per (layer block, token, relation) "
                         "+ the subject's unpatched answers", lambda env: CellPrior(self.t)),
            BaselineSpec("attribution-patching", "post-hoc", "attribution patching (Nanda 2023): gradient x "
                         "activation difference at the patched block and token, thresholded on training items",
                         self._attribution_patching),
        ]

    # Training records the attribution-patching threshold is fitted on, per mode (balanced by label).
    attribution_patching_fit = {"quick": 64, "standard": 256, "full": 1024}

    def _attribution_patching(self, env: BaselineEnv) -> Explainer:
        from selfexplain.benchmarks.patching.attribution_patching import AttributionPatching

        facts = load_facts(sources_for(env.config, self), data_root(env.config.data_root or None))
        return AttributionPatching(self, env.subject(), {(f.relation, f.entity): f for f in facts},
                                   n_fit=self.attribution_patching_fit.get(env.config.mode, 64), seed=env.config.seed)


class CellPrior(Explainer):
    """A strong behavioural baseline with no access to the patch vector.

    Predicts "changes" when the training change rate of (layer block, token type, relation)
    exceeds 0.5, and then the subject's own unpatched answer on the counterfactual prompt;
    otherwise "unchanged from" the subject's unpatched answer. It reads the subject's outputs
    on both unpatched prompts: what a user could get with two forward passes and a table.
    """

    name = "layer-token-prior"
    description = "change rate of (layer block, token, relation) in training + the subject's unpatched answers"

    def __init__(self, templates: dict):
        self.t = templates
        self.rates: dict[tuple, float] = {}

    @staticmethod
    def _cell(r: Record) -> tuple:
        return tuple(r.context["block"]), r.context["token_type"], r.context["relation"]

    def fit(self, train: Sequence[Record]) -> None:
        cells: dict[tuple, list[bool]] = {}
        for r in train:
            cells.setdefault(self._cell(r), []).append(r.context["changed"])
        self.rates = {k: sum(v) / len(v) for k, v in cells.items()}

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        out = []
        for r in queries:
            if self.rates.get(self._cell(r), 0.0) > 0.5:
                text = self.t["answer_changed"].format(answer=r.context["cf_clean_answer"])
            else:
                text = self.t["answer_unchanged"].format(answer=r.context["clean_answer"])
            out.append(Explanation(text, forward_passes=2, seconds=0.0))
        return out


def _rate_by_cell(records: Sequence[Record]) -> dict[str, float]:
    cells: dict[str, list[bool]] = {}
    for r in records:
        key = f"L{r.context['block'][0]}-{r.context['block'][1]}/{r.context['token_type']}"
        cells.setdefault(key, []).append(r.context["changed"])
    return {k: sum(v) / len(v) for k, v in cells.items()}
