"""Benchmark 4, simulatability: which natural-language explanation lets a fixed simulator predict
what the subject does on counterfactual inputs? (design.md; Hase et al. 2020 LAS; Chen et al.
2023 counterfactual simulatability.)

Items are e-SNLI pairs and CoS-E (CommonsenseQA) questions. The subject answers by option
log-likelihood (subject.py). Each item gets `per_item` counterfactuals from programmatic edits
(counterfactuals.json), each run on the subject: its real answers are the ground truth. Items are
drawn into four disjoint pools per dataset: test, train (self's training items), and one pool per
simulator. Two simulators (the other model + LoRA, simulator.py) are trained on their own pools
with their own seeds, on every source's explanations in equal shares plus no explanation: the
*selection* simulator scores k explanations sampled from the subject for each training item
(rejection sampling) and the best becomes that item's training answer, so `self` (subject + LoRA,
trained by the run) learns explanations that predict its own counterfactual behaviour; the
*scoring* simulator scores every explainer's test explanations. The selecting simulator never
scores the test set (docs/metrics.md, the fairness argument).
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from selfexplain.benchmarks.base import (BaselineEnv, BaselineSpec, Benchmark, GroundTruth, LiveClaims, MetricSpec,
                                         ReportFact, ReportTable, sources_for)
from selfexplain.benchmarks.simulatability import explainers as E
from selfexplain.benchmarks.simulatability import simulator as S
from selfexplain.benchmarks.simulatability.counterfactuals import (OUTCOMES, Counterfactual, edit_kinds,
                                                                   make_counterfactuals, spec)
from selfexplain.benchmarks.simulatability.data import LOADERS, Item, resolve
from selfexplain.benchmarks.simulatability.metrics import macro_las, paired_las_difference
from selfexplain.benchmarks.simulatability.subject import (answers, explain_query, instruction, probe_text,
                                                           sample_explanations, verbalize)
from selfexplain.config import RunConfig
from selfexplain.data.facts import data_root
from selfexplain.errors import ConfigError, DataError
from selfexplain.explainers.base import Explanation
from selfexplain.explainers.prompting import EXAMPLE_SEPARATOR
from selfexplain.metrics import bootstrap_macro_mean, bootstrap_mean, format_estimate, paired_difference
from selfexplain.models.generation import Decoding, encode_query, greedy_generate
from selfexplain.models.loading import LoadedModel, load_model
from selfexplain.progress import bar, status
from selfexplain.records import Provenance, Record
from selfexplain.training import TrainConfig

DATASETS = ("esnli", "cose")
POOLS = ("test", "train", "score", "select")  # fill order; score/select: the two simulators' items
SOURCES = ("human", "subject", "other", "probe")  # explanation sources the simulators train on
METRIC_KEYS = ("simulation_accuracy", "gain_over_none", "leak", "none_accuracy")
MAX_LISTED_ROWS = 20
EXAMPLES_PER_DATASET = 4


def _nan() -> float:
    return float("nan")


class SimulatabilityBenchmark(Benchmark):
    name = "simulatability"
    description = ("natural-language explanations scored by how well a fixed simulator predicts the subject's "
                   "answers on programmatic counterfactuals, vs human explanations (e-SNLI, CoS-E)")
    answer_format = "free"
    metrics = (MetricSpec("simulation_accuracy", "counterfactual simulation accuracy", primary=True),
               MetricSpec("gain_over_none", "gain over no explanation (paired)"),
               MetricSpec("las", "LAS (leakage-adjusted simulatability)"),
               MetricSpec("simulation_accuracy_correct", "simulation accuracy, items the subject gets right"),
               MetricSpec("leak_rate", "leaking explanations (the explanation alone gives the answer; lower: "
                          "less label leakage)", higher_is_better=False))
    sources = DATASETS
    default_sources = DATASETS
    # Self (trained for simulatability) and the untrained subject; the other model is a baseline
    # prompted zero-shot (it is also the simulator's base model, never trained to explain).
    generic_explainers = frozenset({"self", "zero-shot"})
    truth_keys = frozenset({"cf_answers", "cf_answer_texts"})
    decoding = Decoding(max_new_tokens=20)
    # Items summed over datasets (split evenly). quick: measured on the 2-core CPU (docs/experiments.md).
    sizes = {"quick": {"n_train": 48, "n_test": 80}, "standard": {"n_train": 200, "n_test": 200},
             "full": {"n_train": 2000, "n_test": 1000}}
    # Items per simulator pool (summed over datasets) and explanations sampled per training item.
    simulator_items = {"quick": 64, "standard": 160, "full": 1000}
    samples = {"quick": 4, "standard": 6, "full": 8}
    train_repeats = {"quick": 4, "standard": 2}
    data_files = (("selfexplain.benchmarks.simulatability", "counterfactuals.json"),
                  ("selfexplain.benchmarks.rationales", "prompts.json"))
    ground_truth_version = 1
    live = LiveClaims(about="why the subject gave its answer, as a simulator reads it")
    scoring_text = ("Every explainer explains the subject's answer on the same held-out items; one fixed simulator "
                    "(the other model + LoRA, trained on held-apart items with every source's explanations in equal "
                    "shares) reads the input, the explanation and a counterfactual input, and guesses the subject's "
                    "answer on the counterfactual. An explanation scores by the share of guesses that match what the "
                    "subject actually answered.")
    ground_truth_text = ("The ground truth is the subject's answer (option log-likelihood) on programmatic "
                         "counterfactuals of each item: negation, word substitution from a word list, premise/"
                         "hypothesis swap, dropped modifiers (e-SNLI); reordered, removed or substituted choices and "
                         "negated questions (CoS-E).")

    def __init__(self, temperature: float = 1.0, simulator_epochs: float = 1.0,
                 simulator_learning_rate: float = 2e-4, simulator: str = ""):
        """temperature: of self's sampled candidate explanations; simulator_*: the two simulators'
        training; simulator: the simulator's base model ('' = the run's --other model)."""
        self.temperature = temperature
        self.simulator_epochs = simulator_epochs
        self.simulator_learning_rate = simulator_learning_rate
        self.simulator = simulator
        self._env: BaselineEnv | None = None
        self._scorer: tuple[str, LoadedModel] | None = None
        self._none: dict[tuple[str, str], list[int]] = {}  # (scoring simulator, record id) -> guesses

    # ----- inputs ---------------------------------------------------------------------------
    def datasets(self, config: RunConfig) -> list[tuple[str, Path]]:
        """(name, path) per dataset: --sources 'esnli' / 'cose' (under the data root) or 'name:PATH'."""
        out = []
        for entry in sources_for(config, self):
            name, _, path = entry.partition(":")
            if not path:
                root = data_root(config.data_root or None)
                if root is None:
                    raise ConfigError(f"the simulatability benchmark reads e-SNLI and CoS-E: pass --data-root DIR "
                                      f"(holding esnli/ and cos_e/) or --sources {name}:PATH")
                path = str(root)
            out.append((name, Path(path)))
        return out

    def validate(self, config: RunConfig) -> None:
        for name, path in self.datasets(config):
            resolve(path, name)  # DataError, one line, on a missing file

    def prepare(self, env: BaselineEnv) -> None:
        self._env = env

    def instruction(self) -> str:
        return instruction()

    def simulator_config(self, config: RunConfig, role: str) -> TrainConfig:
        """The two simulators differ in items and seed only."""
        offset = {"select": 1001, "score": 2002}[role]
        return TrainConfig(lora_r=config.lora_r, lora_alpha=2 * config.lora_r,
                           learning_rate=self.simulator_learning_rate, epochs=self.simulator_epochs, batch_size=8,
                           seed=config.seed + offset, balance_labels=False, lora_layer_fraction=0.5)

    # ----- ground truth ---------------------------------------------------------------------
    def _pools(self, name: str, path: Path, config: RunConfig, want: dict[str, int]) -> tuple[dict, dict]:
        loaded = LOADERS[name](path)
        if not loaded.items:
            raise DataError(f"{loaded.path}: no usable {name} rows ({len(loaded.skipped)} malformed; first: "
                            f"{':'.join(map(str, loaded.skipped[0][1:])) if loaded.skipped else 'none'})")
        kinds = edit_kinds(name)
        per_item = int(spec()["per_item"])
        order = [verbalize(it) for it in loaded.items]
        random.Random(f"{config.seed}/simulatability/{name}").shuffle(order)
        pools: dict[str, list[tuple[Item, list[Counterfactual]]]] = {p: [] for p in POOLS}
        outcomes = {k.name: Counter() for k in kinds}
        too_few = scanned = 0
        for item in order:
            side = next((p for p in POOLS if len(pools[p]) < want[p]), None)
            if side is None:
                break
            scanned += 1
            cfs, result = make_counterfactuals(item, kinds, per_item, config.seed)
            for kind, outcome in result.items():
                outcomes[kind][outcome] += 1
            if len(cfs) < per_item:
                too_few += 1
                continue
            pools[side].append((item, cfs))
        short = {p: want[p] - len(pools[p]) for p in POOLS if len(pools[p]) < want[p]}
        if short:
            raise DataError(f"{loaded.path}: only {sum(len(v) for v in pools.values())} {name} items have "
                            f"{per_item} counterfactuals; {sum(want.values())} needed (lower --n-train/--n-test)")
        kept = Counter(cf.kind for p in POOLS for _, cfs in pools[p] for cf in cfs)
        stats = {"path": loaded.path, "malformed_rows": len(loaded.skipped),
                 "malformed_examples": [f"{f}:{line}: {why}" for f, line, why in loaded.skipped[:MAX_LISTED_ROWS]],
                 "items_scanned": scanned, "items_too_few_counterfactuals": too_few,
                 "edit_kinds": {k.name: {**{o: outcomes[k.name][o] for o in OUTCOMES}, "kept": kept[k.name],
                                         "description": k.description} for k in kinds},
                 "pool_items": {p: len(pools[p]) for p in POOLS}}
        return pools, stats

    def build_records(self, subject: LoadedModel, config: RunConfig, progress=None) -> GroundTruth:
        if self._env is None:
            raise RuntimeError("SimulatabilityBenchmark.build_records needs prepare(env) first (it caches simulators)")
        start = time.perf_counter()
        datasets = self.datasets(config)
        n = len(datasets)
        # Simulator pools: the mode's size, never more than the run's own items (small test runs).
        sim_items = min(self.simulator_items.get(config.mode, 48), config.n_train + config.n_test)
        want = {"test": math.ceil(config.n_test / n), "train": math.ceil(config.n_train / n),
                "score": math.ceil(sim_items / n), "select": math.ceil(sim_items / n)}
        stats: dict[str, Any] = {"datasets": {}, "samples_per_item": self.samples.get(config.mode, 4),
                                 "counterfactuals_per_item": int(spec()["per_item"]), "temperature": self.temperature}
        # (dataset, pool, item, counterfactuals) in a fixed order
        units: list[tuple[str, str, Item, list[Counterfactual]]] = []
        for name, path in datasets:
            pools, stats["datasets"][name] = self._pools(name, path, config, want)
            units += [(name, p, item, cfs) for p in POOLS for item, cfs in pools[p]]
        # The subject's answers on every item and counterfactual: the ground truth.
        flat = [x for _, _, item, cfs in units for x in [item] + [cf.item for cf in cfs]]
        with status(f"simulatability: the subject answers {len(flat)} inputs and counterfactuals"):
            picked = iter(answers(subject, flat))
        answered = [(next(picked), [next(picked) for _ in cfs]) for _, _, _, cfs in units]
        # Explanations: k samples from the subject for training items, one for each simulator item;
        # the other model's zero-shot explanation for simulator items; human; the probe.
        k = stats["samples_per_item"]
        queries = [explain_query(item, item.options[a]) for (_, _, item, _), (a, _) in zip(units, answered)]
        train_idx = [i for i, u in enumerate(units) if u[1] == "train"]
        sim_idx = [i for i, u in enumerate(units) if u[1] in ("score", "select")]
        with bar(f"simulatability: sampling {k} explanations per training item", len(train_idx)) as advance:
            candidates = sample_explanations(subject, [queries[i] for i in train_idx], k, self.decoding.max_new_tokens,
                                             self.temperature, config.seed, progress=advance)
        with bar("simulatability: one sampled subject explanation per simulator item", len(sim_idx)) as advance:
            subject_sim = sample_explanations(subject, [queries[i] for i in sim_idx], 1, self.decoding.max_new_tokens,
                                              self.temperature, config.seed + 1, progress=advance)
        sim_spec = self.simulator or config.other
        with status(f"simulatability: loading the simulator's base model {sim_spec}"):
            base = load_model(sim_spec, trust_remote_code=config.trust_remote_code)
        with bar("simulatability: the other model's zero-shot explanations of simulator items", len(sim_idx)) as adv:
            prefix = encode_query(base, instruction() + EXAMPLE_SEPARATOR)
            other_sim = greedy_generate(base, [encode_query(base, queries[i], add_special_tokens=False) for i in sim_idx],
                                        max_new_tokens=self.decoding.max_new_tokens, prefix=prefix, progress=adv)
        rng = random.Random(f"{config.seed}/simulatability/human")
        expl: dict[int, dict[str, str]] = {}
        for j, i in enumerate(sim_idx):
            item, a = units[i][2], answered[i][0]
            expl[i] = {"human": rng.choice(item.human), "subject": subject_sim[j][0], "other": other_sim[j],
                       "probe": probe_text(item.options[a])}
        pool_of = lambda role: [(units[i][2], units[i][3], answered[i][0], answered[i][1], expl[i])  # noqa: E731
                                for i in sim_idx if units[i][1] == role]
        # The selection simulator picks each training item's best candidate.
        sim_stats = {}
        selector, sim_stats["select"] = self._train_simulator(base, pool_of("select"), "select", config)
        rows, owner = [], []
        for j, i in enumerate(train_idx):
            item, cfs = units[i][2], units[i][3]
            for c, text in enumerate(candidates[j]):
                for cf, a in zip(cfs, answered[i][1]):
                    rows.append(S.counterfactual_query(item, text, cf, a))
                    owner.append((j, c))
        with status(f"simulatability: the selection simulator scores {len(rows)} candidate guesses"):
            probs = S.predict(selector, rows)
        del selector
        score: dict[tuple[int, int], list[tuple[float, float]]] = {}
        for (j, c), q, p in zip(owner, rows, probs):
            score.setdefault((j, c), []).append((float(S.argmax(p) == q.answer), p[q.answer]))
        best: dict[int, tuple[str, list[float]]] = {}
        for j in range(len(train_idx)):
            ranked = []
            for c, text in enumerate(candidates[j]):
                s = score[(j, c)]
                acc, prob = statistics.fmean(x for x, _ in s), statistics.fmean(y for _, y in s)
                ranked.append(((bool(text.strip()), acc, prob), c))
            ranked_sorted = sorted(ranked, reverse=True)
            best[j] = (candidates[j][ranked_sorted[0][1]], [key[1] for key, _ in ranked])
        chosen_acc = [max(v[1]) if v[1] else _nan() for v in best.values()]
        mean_acc = [statistics.fmean(v[1]) for v in best.values() if v[1]]
        stats["selection"] = {"best_candidate_accuracy": statistics.fmean(chosen_acc) if chosen_acc else _nan(),
                              "mean_candidate_accuracy": statistics.fmean(mean_acc) if mean_acc else _nan(),
                              "empty_candidates": sum(1 for c in candidates for t in c if not t.strip())}
        scorer, sim_stats["score"] = self._train_simulator(base, pool_of("score"), "score", config)
        self._scorer = (sim_stats["score"]["adapter_dir"], scorer)
        del base
        stats["simulators"] = sim_stats
        stats["simulator_model"] = sim_spec
        # Records: training items carry the selected explanation; test items the counterfactuals.
        records: list[Record] = []
        train_pos = {i: j for j, i in enumerate(train_idx)}
        for i, ((name, pool, item, cfs), (a, cf_a)) in enumerate(zip(units, answered)):
            answer_text = item.options[a]
            context = {"dataset": name, "label": answer_text, "answer": a, "answer_text": answer_text,
                       "subject_correct": a == item.gold, "gold_text": item.options[item.gold]}
            if pool == "train":
                text, accs = best[train_pos[i]]
                if not text.strip():
                    continue  # every sample empty: nothing to train on (counted in stats["selection"])
                records.append(Record(
                    id=f"simulatability/{item.id}", benchmark=self.name, split="train", group=item.id,
                    query=queries[i], answer=text,
                    provenance=Provenance(subject.name, "rejection_sampling",
                                          {"samples": k, "temperature": self.temperature,
                                           "selector": sim_stats["select"]["adapter_dir"]}, config.seed),
                    context={**context, "candidates": candidates[train_pos[i]], "candidate_accuracy": accs}))
            elif pool == "test":
                cf_texts = [cf.item.options[x] for cf, x in zip(cfs, cf_a)]
                truth = " | ".join([f"original: {answer_text}"] + [f"{cf.kind}: {t}" for cf, t in zip(cfs, cf_texts)])
                records.append(Record(
                    id=f"simulatability/{item.id}", benchmark=self.name, split="test", group=item.id,
                    query=queries[i], answer=truth,
                    provenance=Provenance(subject.name, "counterfactual_answers",
                                          {"edits": [cf.kind for cf in cfs]}, config.seed),
                    context={**context, "item": item.to_dict(), "human": item.human[0],
                             "counterfactuals": [cf.to_dict() for cf in cfs],
                             "edits": [f"{cf.kind}: {cf.change}" for cf in cfs],
                             "cf_answers": cf_a, "cf_answer_texts": cf_texts,
                             "scoring_simulator": sim_stats["score"]["adapter_dir"]}))
        for name in stats["datasets"]:
            test = [(units[i], answered[i]) for i in range(len(units)) if units[i][0] == name and units[i][1] == "test"]
            d = stats["datasets"][name]
            d["subject_accuracy_test"] = statistics.fmean(u[2].gold == a for u, (a, _) in test)
            d["subject_answers_test"] = dict(Counter(u[2].options[a] if name == "esnli" else _position(a)
                                                     for u, (a, _) in test))
            d["gold_test"] = dict(Counter(u[2].options[u[2].gold] if name == "esnli" else _position(u[2].gold)
                                          for u, _ in test))
            # Answer text changed, over counterfactuals that still offer the original answer.
            changed = [cf.item.options[x] != u[2].options[a] for u, (a, cf_a) in test for cf, x in zip(u[3], cf_a)
                       if u[2].options[a] in cf.item.options]
            d["answer_changed_rate"] = statistics.fmean(changed) if changed else _nan()
        stats["seconds_ground_truth_and_simulators"] = time.perf_counter() - start
        return GroundTruth(records, stats)

    def _train_simulator(self, base: LoadedModel, pool, role: str, config: RunConfig):
        from selfexplain.explainers.lora import copy_of

        assert self._env is not None
        examples = S.training_examples(pool, SOURCES)
        cfg = self.simulator_config(config, role)
        start = time.perf_counter()
        from selfexplain.training import training_steps

        steps = training_steps(S.as_records(examples, role, cfg.seed), cfg)
        with bar(f"simulatability: training the {role} simulator on {len(examples)} examples", steps) as advance:
            done = [0]

            def progress(step: int, total: int, loss: float) -> None:
                advance(step - done[0], f"loss {loss:.3f}")
                done[0] = step

            sim, path = S.train_simulator(copy_of(base), examples, role, cfg, self._env.cache_dir, progress)
        info = {}
        try:
            info = json.loads((path / "selfexplain_training.json").read_text())
        except (OSError, ValueError):
            pass
        return sim, {"adapter_dir": str(path), "items": len(pool), "examples": len(examples), "seed": cfg.seed,
                     "steps": info.get("steps", steps), "final_loss": info.get("final_loss", _nan()),
                     "seconds": time.perf_counter() - start}

    # ----- explainers -------------------------------------------------------------------------
    def baselines(self) -> list[BaselineSpec]:
        def other(env: BaselineEnv):
            return E.other_zero_shot(lambda: load_model(env.config.other, trust_remote_code=env.config.trust_remote_code),
                                     env.config.seed, self.decoding)
        return [BaselineSpec("human", "human", "the dataset's human explanation (e-SNLI explanation_1, CoS-E "
                             "open-ended explanation)", lambda env: E.human()),
                BaselineSpec("other-zero-shot", "other", "the other model, untrained, prompted zero-shot like the "
                             "subject (no training for simulatability)", other),
                BaselineSpec("no-explanation", "heuristic", "no explanation: the simulator sees only the input and "
                             "the counterfactual", lambda env: E.no_explanation()),
                BaselineSpec("leakage-probe", "reference", "only restates the subject's answer ('the answer is X.'): "
                             "what label leakage alone scores", lambda env: E.leakage_probe(), reference=True)]

    # ----- scoring ----------------------------------------------------------------------------
    def scorer(self, records: Sequence[Record]) -> LoadedModel:
        """The scoring simulator: the one trained with the ground truth, or loaded from its adapter."""
        path = records[0].context["scoring_simulator"] if records else ""
        if self._scorer is not None and self._scorer[0] == path:
            return self._scorer[1]
        from selfexplain.training import load_adapter

        if self._env is None:
            raise RuntimeError("SimulatabilityBenchmark.score needs prepare(env) first (it loads the simulator)")
        spec_ = self.simulator or self._env.config.other
        with status(f"simulatability: loading the scoring simulator ({spec_} + {path})"):
            sim, _ = load_adapter(load_model(spec_, trust_remote_code=self._env.config.trust_remote_code), Path(path))
        self._scorer = (path, sim)
        return sim

    def score(self, records: Sequence[Record], explanations: Sequence[Explanation]) -> dict[str, list]:
        sim = self.scorer(records)
        rows: list[S.SimQuery] = []
        where: list[tuple[int, str]] = []  # (record index, "cf" | "leak" | "none")
        for i, (r, e) in enumerate(zip(records, explanations)):
            item = Item.from_dict(r.context["item"])
            cfs = [Counterfactual.from_dict(c) for c in r.context["counterfactuals"]]
            text = (e.text or "").strip()
            for cf, a in zip(cfs, r.context["cf_answers"]):
                rows.append(S.counterfactual_query(item, text, cf, a))
                where.append((i, "cf"))
            if text:
                rows.append(S.explanation_only_query(item, text, r.context["answer"]))
                where.append((i, "leak"))
            if (r.context["scoring_simulator"], r.id) not in self._none:
                for cf, a in zip(cfs, r.context["cf_answers"]):
                    rows.append(S.counterfactual_query(item, "", cf, a))
                    where.append((i, "none"))
        probs = S.predict(sim, rows)
        guesses: dict[int, dict[str, list[int]]] = {}
        for (i, kind), q, p in zip(where, rows, probs):
            guesses.setdefault(i, {}).setdefault(kind, []).append(S.argmax(p))
        out: dict[str, list] = {k: [] for k in (*METRIC_KEYS, "subject_correct", "by_kind", "simulated")}
        for i, r in enumerate(records):
            g = guesses.get(i, {})
            key = (r.context["scoring_simulator"], r.id)
            if "none" in g:
                self._none[key] = g["none"]
            truth = r.context["cf_answers"]
            cfs = r.context["counterfactuals"]
            right = [float(x == t) for x, t in zip(g.get("cf", []), truth)]
            none = [float(x == t) for x, t in zip(self._none[key], truth)]
            acc, acc0 = statistics.fmean(right), statistics.fmean(none)
            out["simulation_accuracy"].append(acc)
            out["none_accuracy"].append(acc0)
            out["gain_over_none"].append(acc - acc0)
            out["leak"].append(float(bool(g.get("leak")) and g["leak"][0] == r.context["answer"]))
            out["subject_correct"].append(float(r.context["subject_correct"]))
            by_kind: dict[str, list[float]] = {}
            for c, ok in zip(cfs, right):
                by_kind.setdefault(c["kind"], []).append(ok)
            out["by_kind"].append(by_kind)
            out["simulated"].append([c["item"]["options"][x] for c, x in zip(cfs, g.get("cf", []))])
        return out

    def summarize(self, records: Sequence[Record], scores: dict[str, list], seed: int) -> dict[str, Any]:
        ds = [r.context["dataset"] for r in records]
        right = [i for i, r in enumerate(records) if r.context["subject_correct"]]
        pick = lambda key, idx: [scores[key][i] for i in idx]  # noqa: E731
        out: dict[str, Any] = {
            "simulation_accuracy": bootstrap_macro_mean(scores["simulation_accuracy"], ds, seed).to_dict(),
            "gain_over_none": bootstrap_macro_mean(scores["gain_over_none"], ds, seed).to_dict(),
            "las": macro_las(scores["gain_over_none"], scores["leak"], ds, seed).to_dict(),
            "leak_rate": bootstrap_macro_mean(scores["leak"], ds, seed).to_dict(),
            "none_accuracy": bootstrap_macro_mean(scores["none_accuracy"], ds, seed).to_dict(),
            "simulation_accuracy_correct": bootstrap_macro_mean(pick("simulation_accuracy", right),
                                                                [ds[i] for i in right], seed).to_dict(),
            "per_dataset": {}, "examples": {}}
        for name in sorted(set(ds)):
            idx = [i for i, d in enumerate(ds) if d == name]
            ok = [i for i in idx if i in set(right)]
            kinds: dict[str, list[float]] = {}
            for i in idx:
                for kind, vals in scores["by_kind"][i].items():
                    kinds.setdefault(kind, []).extend(vals)
            out["per_dataset"][name] = {
                "n": len(idx), "n_subject_correct": len(ok),
                "subject_accuracy": statistics.fmean(pick("subject_correct", idx)),
                **{k: bootstrap_mean(pick(k, idx), seed).to_dict() for k in ("simulation_accuracy", "gain_over_none",
                                                                              "none_accuracy")},
                "leak_rate": bootstrap_mean(pick("leak", idx), seed).to_dict(),
                "las": macro_las(pick("gain_over_none", idx), pick("leak", idx), [name] * len(idx), seed).to_dict(),
                "simulation_accuracy_correct": bootstrap_mean(pick("simulation_accuracy", ok), seed).to_dict(),
                "las_correct": macro_las(pick("gain_over_none", ok), pick("leak", ok), [name] * len(ok), seed).to_dict(),
                "by_kind": {k: {"accuracy": statistics.fmean(v), "n": len(v)} for k, v in sorted(kinds.items())}}
            for i in idx[:EXAMPLES_PER_DATASET]:
                out["examples"][records[i].id] = scores["simulated"][i]
        return out

    def comparisons(self, records: Sequence[Record], per_item: dict[str, dict[str, dict]],
                    summaries: dict[str, dict], seed: int) -> dict[str, Any]:
        """Per dataset, self minus every other explainer (paired over items): simulation accuracy
        and LAS on all items and on the items the subject gets right."""
        if "self" not in per_item:
            return {}
        ds = {r.id: r.context["dataset"] for r in records}
        correct = {r.id for r in records if r.context["subject_correct"]}
        out: dict[str, Any] = {}
        mine = per_item["self"]
        for rival, theirs in per_item.items():
            if rival == "self":
                continue
            rows: dict[str, Any] = {}
            for name in sorted(set(ds.values())):
                for label, keep in (("all", lambda i: True), ("subject_correct", lambda i: i in correct)):
                    ids = [i for i in mine["simulation_accuracy"] if i in theirs["simulation_accuracy"]
                           and ds.get(i) == name and keep(i)]
                    a = lambda m, who: [who[m][i] for i in ids]  # noqa: E731
                    rows.setdefault(name, {})[label] = {
                        "n": len(ids),
                        "simulation_accuracy": paired_difference(a("simulation_accuracy", mine),
                                                                 a("simulation_accuracy", theirs), seed).to_dict(),
                        "las": paired_las_difference(a("gain_over_none", mine), a("leak", mine),
                                                     a("gain_over_none", theirs), a("leak", theirs), seed).to_dict()}
            out[rival] = rows
        return out

    # ----- report -----------------------------------------------------------------------------
    def report_facts(self, stats: dict[str, Any]) -> list[ReportFact]:
        facts = [ReportFact("counterfactuals per item", stats.get("counterfactuals_per_item", 0), "count", headline=True),
                 ReportFact("explanations sampled per training item", stats.get("samples_per_item", 0), "count"),
                 ReportFact("simulator base model", stats.get("simulator_model", ""), "text")]
        for name, d in (stats.get("datasets") or {}).items():
            g = f"{name}"
            facts += [ReportFact(f"{name}: subject accuracy (test)", d.get("subject_accuracy_test", _nan()), "percent",
                                 headline=True, group=g),
                      ReportFact(f"{name}: subject's answers (test)", _dist(d.get("subject_answers_test", {})), "text",
                                 group=g),
                      ReportFact(f"{name}: gold labels (test)", _dist(d.get("gold_test", {})), "text", group=g),
                      ReportFact(f"{name}: counterfactuals that change the subject's answer",
                                 d.get("answer_changed_rate", _nan()), "percent",
                                 "answer text; counterfactuals that removed the answered choice excluded", headline=True, group=g),
                      ReportFact(f"{name}: items drawn / with too few counterfactuals",
                                 f"{d.get('items_scanned', 0)} / {d.get('items_too_few_counterfactuals', 0)}", "text",
                                 group=g),
                      ReportFact(f"{name}: malformed rows skipped", d.get("malformed_rows", 0), "count",
                                 "; ".join(d.get("malformed_examples", [])[:3]), group=g)]
            for kind, k in (d.get("edit_kinds") or {}).items():
                facts.append(ReportFact(f"{name}: {kind}", f"kept {k['kept']}, made {k['ok']}, dropped: no site "
                                        f"{k['no_site']}, unchanged {k['unchanged']}, ungrammatical {k['ungrammatical']}",
                                        "text", k.get("description", ""), group=f"{name}: counterfactual edits"))
        sel = stats.get("selection") or {}
        if sel:
            facts += [ReportFact("selected explanation: selection simulator's accuracy",
                                 sel.get("best_candidate_accuracy", _nan()), "percent", group="rejection sampling"),
                      ReportFact("average sampled explanation: selection simulator's accuracy",
                                 sel.get("mean_candidate_accuracy", _nan()), "percent", group="rejection sampling")]
        for role, s in (stats.get("simulators") or {}).items():
            facts.append(ReportFact(f"{role} simulator", f"{s['items']} items, {s['examples']} examples, "
                                    f"{s['steps']} steps, seed {s['seed']}, final loss {s['final_loss']:.3f}",
                                    "text", group="simulators"))
        if "seconds" in stats:
            facts.append(ReportFact("ground truth time (incl. both simulators)", stats["seconds"], "seconds"))
        return facts

    def report_tables(self, section: dict[str, Any]) -> list[ReportTable]:
        ex = section["explainers"]
        comps = section.get("comparisons") or {}
        datasets = sorted({d for s in ex.values() for d in s.get("per_dataset", {})})
        out = []
        cols = ("simulation_accuracy", "gain_over_none", "las", "leak_rate", "simulation_accuracy_correct")
        labels = {m.name: m.label for m in self.metrics}
        for name in datasets:
            ranked = sorted(((n, s["per_dataset"][name]) for n, s in ex.items() if name in s.get("per_dataset", {})),
                            key=lambda kv: -_or_low(kv[1]["simulation_accuracy"]["value"]))
            rows = []
            for n, d in ranked:
                pair = (comps.get(n) or {}).get(name, {}).get("all", {})
                rows.append([n, str(d["n"])] + [format_estimate(d[c]) for c in cols]
                            + [format_estimate(pair[m]) if pair else "" for m in ("simulation_accuracy", "las")])
            out.append(ReportTable(f"{name}: leaderboard", ["explainer", "n"] + [labels[c] for c in cols]
                                   + ["self - this: accuracy", "self - this: LAS"], rows,
                                   "95% CIs; self - this is paired over the same items."))
        rows = []
        for name in datasets:
            for subset in ("all", "subject_correct"):
                for rival in ("human", "no-explanation", "zero-shot", "other-zero-shot"):
                    c = (comps.get(rival) or {}).get(name, {}).get(subset)
                    if c and c["n"]:
                        rows.append([name, subset.replace("_", " "), rival, str(c["n"]),
                                     format_estimate(c["simulation_accuracy"]), format_estimate(c["las"])])
        if rows:
            out.append(ReportTable("Self vs human (and vs no explanation, zero-shot, other)",
                                   ["dataset", "items", "rival", "n", "self - rival: accuracy", "self - rival: LAS"],
                                   rows, "Paired bootstrap 95% CIs over items; 'subject correct': items whose gold "
                                         "label the subject picks."))
        for name in datasets:
            names = [n for n in ex if name in ex[n].get("per_dataset", {})]
            kinds = sorted({k for n in names for k in ex[n]["per_dataset"][name]["by_kind"]})
            if kinds:
                out.append(ReportTable(f"{name}: simulation accuracy per edit kind (%)", ["edit kind", "n"] + names,
                                       [[k, str(ex[names[0]]["per_dataset"][name]["by_kind"].get(k, {}).get("n", 0))]
                                        + [_pct(ex[n]["per_dataset"][name]["by_kind"].get(k, {}).get("accuracy"))
                                           for n in names] for k in kinds]))
        return out + self._example_tables(section)

    def _example_tables(self, section: dict[str, Any]) -> list[ReportTable]:
        """Per-example views: each explainer's simulator guesses on a few items' counterfactuals
        (the explanations themselves, the input and the edits are in the example browser)."""
        ex = section["explainers"]
        ids = list(dict.fromkeys(i for s in ex.values() for i in (s.get("examples") or {})))
        names = [n for n in ex if ex[n].get("examples")]
        if not ids or not names:
            return []
        rows = []
        for rid in ids:
            guesses = {n: ex[n]["examples"].get(rid) or [] for n in names}
            width = max(len(g) for g in guesses.values())
            for j in range(width):
                rows.append([rid if j == 0 else "", str(j + 1)] + [g[j] if j < len(g) else "" for g in guesses.values()])
        return [ReportTable("Per-example simulator guesses (first items per dataset; the subject's real answers and "
                            "the edits are in each example's ground truth and context below)",
                            ["item", "counterfactual"] + names, rows)]

    def report_notes(self, section: dict[str, Any]) -> list[str]:
        comps = section.get("comparisons") or {}
        notes = []
        for name in sorted({d for c in comps.values() for d in c}):
            for rival in ("human", "no-explanation"):
                c = (comps.get(rival) or {}).get(name, {}).get("all")
                if not c or not c["n"]:
                    continue
                est = c["simulation_accuracy"]
                verdict = ("self wins" if est["low"] > 0 else f"{rival} wins" if est["high"] < 0 else "no difference")
                notes.append(f"{name}: self - {rival} simulation accuracy {format_estimate(est)} points, LAS "
                             f"{format_estimate(c['las'])} (n={c['n']}): {verdict} at 95%.")
        probe = (section["explainers"].get("leakage-probe") or {}).get("simulation_accuracy")
        if probe:
            notes.append(f"The leakage probe (it only restates the answer) scores {format_estimate(probe)}: "
                         "accuracy at or below it says little beyond the answer itself.")
        return notes


def _position(index: int) -> str:
    return "ABCDEFGH"[index] if 0 <= index < 8 else str(index)


def _dist(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _pct(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and x != x) else f"{100 * x:.1f}"


def _or_low(x: float) -> float:
    return x if x == x else float("-inf")
