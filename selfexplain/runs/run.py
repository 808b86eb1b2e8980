"""A run: one benchmark suite for one subject and config, persisted in its own directory.

Rows (records, predictions, metrics) live in the output directory's results store
(store.py, one SQLite file for every run there); each step is one transaction, so a run killed at
any point resumes with the same command. Layout of a run directory:
    config.json, environment.json
    adapters/<explainer>/     (PEFT adapter + projector, trained on every benchmark's records)
    results.json, results.md, report.html   (exports of the store, rewritten at the end)
Per-input caches (attributions, the subject's probabilities on perturbed inputs) are keyed by
their content (subject, method, parameters, token ids), so every run of an output directory
shares them in <output-dir>/cache/.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from selfexplain import __version__

from selfexplain.runs import faults
from selfexplain.runs.atomic import write_json, write_text
from selfexplain.benchmarks import Benchmark, get_benchmark
from selfexplain.benchmarks.base import SUBJECT_TARGET, BaselineEnv, balanced_sample, sources_for
from selfexplain.config import RunConfig
from selfexplain.errors import ConfigError
from selfexplain.explainers import (CONTROL_EXPLAINERS, GENERIC_EXPLAINERS, Explainer, Explanation, LoRAExplainer,
                                    NearestNeighbour, PromptedExplainer, WithheldVectorExplainer, base_of)
from selfexplain.explainers.lora import copy_of
from selfexplain.metrics import paired_difference
from selfexplain.results import SCHEMA_VERSION
from selfexplain.models.loading import LoadedModel, load_model, resolve_model
from selfexplain.progress import bar, console, status
from selfexplain.records import Record, split
from selfexplain.runs.store import Store
from selfexplain.training import TrainConfig, training_steps


# Answers stored per transaction: a kill loses at most this many (seconds of work for any explainer).
PREDICTION_CHUNK = 32


def predicts_subject(summary: dict[str, Any]) -> bool:
    """Whether an explainer's answers are scored on the subject's behaviour. A benchmark may score
    some explainers on another model's (summary["predicts"], e.g. a mirror design): those are
    never paired with self, whose answers are about the subject."""
    return summary.get("predicts", SUBJECT_TARGET) == SUBJECT_TARGET


def _scored(x: Any) -> bool:
    """Whether a per-item score counts: None and NaN mark items a metric does not cover."""
    return x is not None and not (isinstance(x, float) and x != x)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# Config fields that choose what is evaluated, not what is computed: a rerun with other
# explainers reuses the run's ground truth, adapters and answers, and adds the missing ones.
NOT_IDENTITY = ("explainers", "seeds", "train_sizes",  # these two choose runs (runs/study.py)
                "shard")  # which part of the run a process computes: every shard is the same run (runs/merge.py)
# Fields that enter a run's identity only when they differ from these defaults: runs made before
# the field existed keep their directories.
IDENTITY_IF_SET = {"train_subset": 0, "lora_layers": 0.0}
# Config fields a benchmark's ground truth does not depend on: a run whose other fields equal an
# earlier run's (say, only --epochs differs) copies that run's ground truth instead of recomputing it.
NOT_GROUND_TRUTH = NOT_IDENTITY + ("benchmarks", "other", "epochs", "learning_rate", "lora_r", "batch_size",
                                   "n_attribution", "answers", "train_subset", "lora_layers")


def ground_truth_identity(config: dict[str, Any], benchmark: str) -> dict[str, Any] | None:
    """What determines a benchmark's ground truth: the config fields that do (missing keys of older
    runs: defaults), the benchmark's identity when the run was made (parameters, prompt-file
    hashes, code version) and the selfexplain version. None for runs saved without an identity."""
    identity = config.get("identity") or {}
    if benchmark not in identity.get("benchmarks", {}):
        return None
    full = {**asdict(RunConfig()), **{k: v for k, v in config.items() if k != "identity"}}
    return {**{k: v for k, v in full.items() if k not in NOT_GROUND_TRUTH},
            "benchmark": identity["benchmarks"][benchmark], "selfexplain": identity.get("selfexplain")}


def run_identity(cfg: RunConfig) -> dict[str, Any]:
    """Everything that changes what a run computes: its config (less what only chooses what is
    evaluated), each benchmark's identity and the selfexplain version. Saved in config.json."""
    return {"config": {k: v for k, v in asdict(cfg).items()
                       if k not in NOT_IDENTITY and not (k in IDENTITY_IF_SET and v == IDENTITY_IF_SET[k])},
            "benchmarks": {name: get_benchmark(name).identity() for name in cfg.benchmark_list()},
            "selfexplain": __version__}


# Characters of the subject's name in a run directory's name (filesystems allow 255 in all).
MAX_NAME = 64


def run_dir_for(cfg: RunConfig) -> Path:
    """Deterministic directory: the same config reruns (and resumes) in the same place; a prompt
    edit or a benchmark parameter change is a new run."""
    digest = hashlib.sha256(json.dumps(run_identity(cfg), sort_keys=True).encode()).hexdigest()[:8]
    name = Path(cfg.subject).stem.replace("/", "_")[:MAX_NAME]  # the digest keeps long names unique
    return Path(cfg.output_dir) / f"{'+'.join(cfg.benchmark_list())}-{name}-seed{cfg.seed}-{digest}"


def shard_ids(test: list[Record], shard: tuple[int, int] | None, block: int | None = None) -> set[str]:
    """The ids of the test records that shard (I, N) answers and scores: blocks of `block`
    (default PREDICTION_CHUNK) consecutive records of the stored test split, block k to shard
    k mod N + 1. The split's order is the ground truth's, which every shard computes identically
    (merge checks it), never the order work happens in. Blocks are the unsharded run's chunks, so
    an explainer that answers every test record (self, other, prompted, nearest neighbour,
    heuristics) answers each block in the very batch the unsharded run does; one record is in one
    shard for every explainer, so its per-item caches are written by one process. None: every id."""
    if shard is None:
        return {r.id for r in test}
    i, n = shard
    size = block or PREDICTION_CHUNK
    return {r.id for k, r in enumerate(test) if (k // size) % n == i - 1}


def explainer_declarations(bench: Benchmark) -> dict[str, tuple[str, str, bool]]:
    """name -> (family, description, reference) of every explainer that applies to `bench`."""
    out = {n: (fam, desc, False) for n, (fam, desc) in GENERIC_EXPLAINERS.items() if n in bench.generic_explainers}
    # withheld-vector controls: shown beside their base explainer, never "the best other"
    out.update({n: (fam, desc, True) for n, (fam, desc) in CONTROL_EXPLAINERS.items()
                if base_of(n) in bench.generic_explainers})
    out.update({b.name: (b.family, b.description, b.reference) for b in bench.baselines()})
    return out


def explainer_order(bench: Benchmark) -> list[str]:
    """Run order on `bench`: the generic explainers, then its baselines in declared order.

    The order is part of what a run computes: the rationales scores of an item's variants are
    cached and batched with the variants not scored yet, so in bf16 an explainer's scores depend
    (by <= 0.4 points) on which explainers ran before it. This order reproduces the runs made
    before the plug-in contract exactly."""
    return ([n for n in GENERIC_EXPLAINERS if n in bench.generic_explainers]
            + [b.name for b in bench.baselines()]
            + [n for n in CONTROL_EXPLAINERS if base_of(n) in bench.generic_explainers])


def explainer_names() -> list[str]:
    """Every explainer of any registered benchmark."""
    from selfexplain.benchmarks import all_baselines

    return (list(GENERIC_EXPLAINERS) + [n for n in all_baselines() if n not in GENERIC_EXPLAINERS]
            + list(CONTROL_EXPLAINERS))


def explainer_train_config(cfg: RunConfig, benchmarks: list[str], trains_projector: bool) -> TrainConfig:
    """The one training budget of a run's LoRA explainers (self, other, and any a benchmark
    trains itself, e.g. a mirror pair trained on another model's behaviour), so that they compare
    at equal steps."""
    train_cfg = TrainConfig(lora_r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, learning_rate=cfg.learning_rate,
                            epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                            benchmark_repeats={b: get_benchmark(b).train_repeats.get(cfg.mode, 1) for b in benchmarks})
    if cfg.lora_layers:
        train_cfg.lora_layer_fraction = cfg.lora_layers
    elif not trains_projector:
        # No trainable input projector (self's vectors live in its own space, or no vectors):
        # adapt the top half only, so backprop stops half-way (faster). With an injected vector
        # that leaves the lower half frozen around it: --lora-layers 1 adapts every layer.
        train_cfg.lora_layer_fraction = 0.5
    return train_cfg


def environment() -> dict[str, str]:
    import peft
    import transformers

    return {"selfexplain": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu", "platform": platform.platform(),
            "threads": str(torch.get_num_threads())}


class Run:
    """Executes (or resumes) a run; each finished step is on disk before the next starts."""

    def __init__(self, config: RunConfig, check_inputs: bool = True, environment_extra: dict | None = None):
        """check_inputs: check the data sources and resolve the models now (a wrong path fails
        before a run directory exists); `merge` skips it: it reads no data, and loads the subject
        only if scoring needs it. environment_extra: added to environment.json and the store."""
        self.cfg = config.resolved()
        self.shard = self.cfg.shard_spec()
        self._environment_extra = environment_extra or {}
        for name in self.cfg.benchmark_list():
            bench = get_benchmark(name)
            if check_inputs:
                sources_for(self.cfg, bench)  # fail fast on unknown names, sources and missing data
            bench.validate(self.cfg)
        known = explainer_names()
        unknown = [e for e in self._explainer_names() if e not in known]
        if unknown:
            raise ConfigError(f"unknown explainer(s) {unknown}; available: {', '.join(known)}")
        uses_other = False
        for name in self.cfg.benchmark_list():
            bench = get_benchmark(name)
            applicable = self.applicable(bench)
            if not applicable:
                raise ConfigError(f"none of --explainers {self.cfg.explainers} applies to benchmark '{name}'; it "
                                  f"runs {', '.join(explainer_order(bench))}")
            uses_other = uses_other or "other" in applicable
        if check_inputs:
            resolve_model(self.cfg.subject)  # a wrong model path fails here, before a run directory exists
            if uses_other:
                resolve_model(self.cfg.other)
        # A shard's directory and store are in <output-dir>/shard-I-of-N; its id is the run's.
        self.dir = self.cfg.store_dir() / run_dir_for(self.cfg).name
        self.id = self.dir.name
        self.store = Store.for_output_dir(self.cfg.store_dir())
        self._subject: LoadedModel | None = None
        self._trained: dict[str, LoRAExplainer] = {}

    def _explainer_names(self) -> list[str]:
        if self.cfg.explainers == "all":  # controls (which double training) run only when named
            return [n for n in explainer_names() if n not in CONTROL_EXPLAINERS]
        return [e.strip() for e in self.cfg.explainers.split(",") if e.strip()]

    @property
    def subject(self) -> LoadedModel:
        if self._subject is None:
            with status(f"loading subject {self.cfg.subject}"):
                self._subject = load_model(self.cfg.subject, trust_remote_code=self.cfg.trust_remote_code)
        return self._subject

    def execute(self) -> dict[str, Any]:
        seed_everything(self.cfg.seed)
        self.dir.mkdir(parents=True, exist_ok=True)
        identity = run_identity(self.cfg)
        self.cfg.save(self.dir / "config.json", identity)
        saved = {**asdict(self.cfg), "identity": identity}
        env = {**environment(), **self._environment_extra}
        write_json(self.dir / "environment.json", env)
        self.store.start_run(self.id, self.dir, saved, env)
        benches = [get_benchmark(name) for name in self.cfg.benchmark_list()]
        truths = {b.name: self.ground_truth(b) for b in benches}  # every shard: all of it (docs/scale.md)
        if self.cfg.train_subset:  # a learning-curve point: nested seeded subsets of one ground truth
            from selfexplain.runs.study import training_subset

            truths = {n: (training_subset(records, self.cfg.train_subset, self.cfg.seed), {
                **stats, "train_subset": self.cfg.train_subset}) for n, (records, stats) in truths.items()}
        if self.shard:
            return self.execute_shard(benches, truths)
        results: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "run_dir": str(self.dir), "run_id": self.id,
                                   "config": asdict(self.cfg), "environment": env,
                                   "benchmarks": {}}
        item_scores: dict[str, dict] = {}
        for bench in benches:
            records, stats = truths[bench.name]
            results["benchmarks"][bench.name], item_scores[bench.name] = self.run_benchmark(
                bench, records, stats, truths)
        self.store.finish_run(self.id, results, item_scores)
        faults.checkpoint("report")
        self.export(results)
        return results

    def execute_shard(self, benches: list[Benchmark], truths: dict[str, tuple[list[Record], dict]]) -> dict[str, Any]:
        """A shard's part of the run: every explainer's answers to, and per-item scores of, this
        shard's test records (shard_ids), stored; the leaderboard is computed by `merge` over all
        shards' items (bootstrap CIs and paired differences need every item). Returns a summary."""
        answered: dict[str, dict[str, int]] = {}
        for bench in benches:
            records, stats = truths[bench.name]
            train, test = split(records, "train"), split(records, "test")
            console.print(f"[bold]{bench.name}[/] shard {self.cfg.shard}: {len(shard_ids(test, self.shard))} of "
                          f"{len(test)} test records; {len(train)} train records")
            bench.prepare(self.baseline_env())
            names = self.applicable(bench)
            if all(r.vector is None for r in records):
                names = [n for n in names if n not in CONTROL_EXPLAINERS]
            scores_of: dict[str, dict[str, dict[str, Any]]] = {}
            for name in names:
                items, preds, _ = self.predictions(name, bench, train, test, truths)
                scores = bench.score(items, preds)  # the expensive scores (on the subject) are cached per item
                scores_of[name] = {r.id: {m: v[i] for m, v in scores.items()} for i, r in enumerate(items)}
            answered[bench.name] = {n: len(s) for n, s in scores_of.items()}
            self.store.save_item_scores(self.id, bench.name, scores_of)
        self.store.finish_shard(self.id)
        return {"run_id": self.id, "run_dir": str(self.dir), "shard": self.cfg.shard, "answered": answered}

    def export(self, results: dict[str, Any]) -> None:
        """results.json, results.md and report.html in the run directory, from the store."""
        from selfexplain.report.html_page import write_html_report
        from selfexplain.report.tables import markdown_summary

        write_json(self.dir / "results.json", results)
        write_text(self.dir / "results.md", markdown_summary(results))
        examples = {name: self.store.examples(self.id, name) for name in results["benchmarks"]}
        write_html_report(results, examples, self.dir / "report.html")

    # ----- ground truth --------------------------------------------------------------------
    def ground_truth(self, bench: Benchmark) -> tuple[list[Record], dict]:
        saved = self.store.ground_truth(self.id, bench.name)
        if saved is not None:
            return saved
        bench.prepare(self.baseline_env())
        mine = ground_truth_identity({**asdict(self.cfg), "identity": run_identity(self.cfg)}, bench.name)
        for row in self.store.runs():
            if row.id != self.id and ground_truth_identity(self.store.config(row.id), bench.name) == mine:
                earlier = self.store.ground_truth(row.id, bench.name)
                if earlier is not None:
                    console.print(f"{bench.name}: ground truth copied from run {row.id} (same data, subject, "
                                  f"seed and sizes)")
                    records, stats = earlier
                    stats = {**stats, "copied_from": row.id}
                    self.store.save_ground_truth(self.id, bench.name, records, stats)
                    return records, stats
        start = time.perf_counter()
        with bar(f"{bench.name}: ground truth on the subject", None) as advance:
            gt = bench.build_records(self.subject, self.cfg.for_benchmark(bench.sizes), progress=advance)
        gt.stats["seconds"] = time.perf_counter() - start
        faults.checkpoint("ground-truth")
        self.store.save_ground_truth(self.id, bench.name, gt.records, gt.stats)
        return gt.records, gt.stats

    # ----- explainers ----------------------------------------------------------------------
    def baseline_env(self) -> BaselineEnv:
        return BaselineEnv(lambda: self.subject, self.cfg, self.cfg.store_dir() / "cache")

    def trained(self, name: str, truths: dict[str, tuple[list[Record], dict]]) -> LoRAExplainer:
        """The LoRA explainer `name`, trained once on the training records of every benchmark
        of the run (one multitask adapter), or loaded from the run directory if trained before."""
        if name in self._trained:
            return self._trained[name]
        train = [r for records, _ in truths.values() for r in split(records, "train")]
        base = base_of(name)  # a withheld-vector control trains like its base explainer
        train_cfg = explainer_train_config(self.cfg, list(truths), trains_projector=base != "self" and any(
            r.vector is not None for r in train))
        def load() -> LoadedModel:
            if base == "self":
                return copy_of(self.subject)
            with status(f"loading the other explainer's model {self.cfg.other}"):
                return load_model(self.cfg.other, trust_remote_code=self.cfg.trust_remote_code)
        kind, description = ((WithheldVectorExplainer, CONTROL_EXPLAINERS[name][1]) if name in CONTROL_EXPLAINERS
                             else (LoRAExplainer, GENERIC_EXPLAINERS[name][1]))
        explainer = kind(name, load, train_cfg, self.dir / "adapters" / name, description)
        steps = training_steps(train, train_cfg)
        tasks = "+".join(truths)
        with bar(f"training '{name}' on {len(train)} {tasks} records", steps) as advance:
            done = [0]

            def progress(step: int, total: int, loss: float) -> None:  # step jumps ahead on resume
                advance(step - done[0], f"loss {loss:.3f}")
                done[0] = step
                faults.checkpoint("train-step")

            explainer.progress = progress
            explainer.fit(train)
        self._trained[name] = explainer
        return explainer

    def make_explainer(self, name: str, bench: Benchmark, truths) -> Explainer:
        if base_of(name) in ("self", "other"):
            return self.trained(name, truths)
        if name in ("zero-shot", "4-shot"):
            k = 0 if name == "zero-shot" else 4
            return PromptedExplainer(self.subject, k, bench.instruction(), self.cfg.seed, bench.example_key,
                                     decoding=bench.decoding_for(self.cfg.answers))
        if name == "nearest-neighbour":
            return NearestNeighbour()
        baselines = {b.name: b for b in bench.baselines()}
        if name in baselines:
            return baselines[name].make(self.baseline_env())
        raise ConfigError(f"explainer '{name}' does not apply to benchmark '{bench.name}'")

    # ----- one benchmark -------------------------------------------------------------------
    def applicable(self, bench: Benchmark) -> list[str]:
        """The run's explainers that apply to `bench`, in run order (explainer_order)."""
        order = explainer_order(bench)
        wanted = self._explainer_names()
        return [n for n in order if n in wanted] if self.cfg.explainers == "all" else [n for n in wanted if n in order]

    def run_benchmark(self, bench: Benchmark, records: list[Record], stats: dict,
                      truths: dict[str, tuple[list[Record], dict]]) -> tuple[dict[str, Any], dict]:
        """The benchmark's results section (results.py schema) and every explainer's per-item scores."""
        train, test = split(records, "train"), split(records, "test")
        console.print(f"[bold]{bench.name}[/]: {len(train)} train / {len(test)} test records; {bench.describe(stats)}")
        bench.prepare(self.baseline_env())
        names = self.applicable(bench)
        skipped = [n for n in names if n in CONTROL_EXPLAINERS] if all(r.vector is None for r in records) else []
        if skipped:
            console.print(f"{bench.name}: {', '.join(skipped)} skipped: its records carry no injected vector")
            names = [n for n in names if n not in skipped]
        declared = explainer_declarations(bench)
        per_item: dict[str, dict[str, dict[str, float]]] = {}
        item_scores: dict[str, dict[str, dict[str, Any]]] = {}
        summaries: dict[str, dict[str, Any]] = {}
        for name in names:
            items, preds, info = self.predictions(name, bench, train, test, truths)
            scores = bench.score(items, preds)
            ids = [r.id for r in items]
            per_item[name] = {m: dict(zip(ids, v)) for m, v in scores.items()}
            item_scores[name] = {rid: {m: v[i] for m, v in scores.items()} for i, rid in enumerate(ids)}
            summary = bench.summarize(items, scores, self.cfg.seed)
            summary["n_items"] = len(items)
            summary["subsample"] = len(items) < len(test)
            summary["cost"] = {"forward_passes": float(np.mean([p.forward_passes for p in preds])),
                               "seconds": float(np.mean([p.seconds for p in preds]))}
            if info is not None:
                summary["info"] = info
            family, description, reference = declared[name]
            summary.update(family=family, description=description, reference=reference)
            caveat = bench.one_sided(summary)
            if caveat:
                summary["one_sided"] = caveat
            summaries[name] = summary
        extra = bench.comparisons(test, per_item, summaries, self.cfg.seed)
        section: dict[str, Any] = {
            "description": bench.description, "answer_format": bench.answer_format,
            "scoring_text": bench.scoring_text, "ground_truth_text": bench.ground_truth_text,
            "metrics": [m.to_dict() for m in bench.metrics], "primary_metric": bench.primary_metric,
            "ground_truth": stats, "n_train": len(train), "n_test": len(test), "explainers": summaries,
            "multitask": len(truths) > 1,
            "facts": [f.to_dict() for f in bench.report_facts(stats)],
            "charts": [c.to_dict() for c in bench.report_charts(stats)],
            "self_vs_best_other": self.paired(bench, per_item, summaries),
            "self_vs_other": self.paired(bench, per_item, summaries, against="other"),
            "self_vs": {n: self.paired(bench, per_item, summaries, against=n)
                        for n in summaries if n != "self" and predicts_subject(summaries[n])}
            if "self" in summaries else {},
            **({"comparisons": extra} if extra else {})}
        section["charts"] += [c.to_dict() for c in bench.result_charts(section)]
        section["tables"] = [t.to_dict() for t in bench.report_tables(section)]
        section["notes"] = bench.report_notes(section) + self.control_notes(bench, per_item, summaries, section)
        return section, item_scores

    def control_notes(self, bench: Benchmark, per_item: dict, summaries: dict, section: dict) -> list[str]:
        """'base - base-no-vector' of every withheld-vector control with its base in the run, paired
        over the same items: the measured contribution of the injected vector."""
        from selfexplain.metrics import format_estimate

        metric, notes = bench.primary_metric, []
        for control in (n for n in CONTROL_EXPLAINERS if n in summaries and base_of(n) in summaries):
            pair = self.paired(bench, per_item, summaries, against=control, base=base_of(control))
            section.setdefault("vector_controls", {})[control] = pair
            notes.append(f"Withheld-vector control: {base_of(control)} - {control}, {bench.metric(metric).label}: "
                         f"{format_estimate(pair['difference'])} points (paired bootstrap 95% CI, {pair['n']} items): "
                         f"the measured contribution of the injected vector.")
        return notes

    def paired(self, bench: Benchmark, per_item: dict, summaries: dict,
               against: str | None = None, base: str = "self") -> dict[str, Any] | None:
        """Paired bootstrap of self minus `against` (default: the best non-self, non-reference
        explainer evaluated on the full test set, by the primary metric's direction) over the
        items both explainers answered. `base`: the explainer on the left (self, or a control's base)."""
        metric = bench.primary_metric
        others = [n for n in summaries if n != base and not summaries[n]["subsample"]
                  and not summaries[n]["reference"] and predicts_subject(summaries[n])]
        if base not in summaries or (against is None and not others) or (against and against not in summaries):
            return None
        sign = 1.0 if bench.metric(metric).higher_is_better else -1.0
        best = against or max(others, key=lambda n: sign * summaries[n][metric]["value"])
        # Items both answered; None or NaN marks an item the metric does not cover (a control
        # trial, or an item outside the held-out part the primary metric is defined on).
        ids = [i for i in per_item[best][metric] if i in per_item[base][metric]
               and _scored(per_item[best][metric][i]) and _scored(per_item[base][metric][i])]
        diff = paired_difference([per_item[base][metric][i] for i in ids],
                                 [per_item[best][metric][i] for i in ids], self.cfg.seed)
        return {"metric": metric, "best_other": best, "difference": diff.to_dict(), "n": len(ids)}

    def test_items(self, explainer: Explainer, test: list[Record]) -> list[Record]:
        """The test records an explainer answers: all, or a seeded balanced subsample for slow
        explainers (`max_items`), the same for every such explainer."""
        limit = getattr(explainer, "max_items", None)
        if not limit or limit >= len(test):
            return test
        picked = {r.id for r in balanced_sample(list(test), lambda r: r.context.get("label"), limit,
                                                random.Random(self.cfg.seed), strict=True)}
        return [r for r in test if r.id in picked]

    def predictions(self, name: str, bench: Benchmark, train: list[Record], test: list[Record],
                    truths) -> tuple[list[Record], list[Explanation], dict | None]:
        """The explainer's answers to its test items, computed in chunks that are each stored in
        one transaction: a killed run recomputes at most one chunk, and never duplicates one."""
        by_id = {r.id: r for r in test}
        saved = self.store.predictions(self.id, bench.name, name)
        done = self.store.completed(self.id, bench.name, name)
        if done is not None and len(saved) == done[0] and all(i in by_id for i in saved):
            return [by_id[i] for i in saved], list(saved.values()), done[1]
        explainer = self.make_explainer(name, bench, truths)
        if isinstance(explainer, LoRAExplainer):
            explainer.decoding = bench.decoding_for(self.cfg.answers)  # one multitask adapter, per-benchmark answers
        else:
            explainer.fit(train)
        items = self.test_items(explainer, test)
        mine = shard_ids(test, self.shard)
        # A shard answers its share of the items; positions stay those of the whole run's item list.
        positions = {r.id: i for i, r in enumerate(items)}
        items = [r for r in items if r.id in mine]
        if set(saved) - {r.id for r in items}:  # stale rows from another item set
            raise ConfigError(f"store {self.store.path} holds answers of '{name}' to other items for run "
                              f"{self.id}; delete the store or use another --output-dir")
        todo = [(i, r) for i, r in enumerate(items) if r.id not in saved]
        with bar(f"{bench.name}: '{name}' explains {len(items)} test queries", len(items)) as advance:
            advance(len(items) - len(todo))
            for start in range(0, len(todo), PREDICTION_CHUNK):
                chunk = todo[start:start + PREDICTION_CHUNK]
                preds = explainer.explain([r.without(bench.truth_keys) for _, r in chunk])
                self.store.add_predictions(self.id, bench.name, name, chunk[0][0], [r for _, r in chunk], preds,
                                           positions=[positions[r.id] for _, r in chunk] if self.shard else None)
                saved.update({r.id: p for (_, r), p in zip(chunk, preds)})
                advance(len(chunk))
        info = explainer.info() if hasattr(explainer, "info") else None
        self.store.complete_predictions(self.id, bench.name, name, len(items), info)
        return items, [saved[r.id] for r in items], info
