"""A run: one benchmark suite for one subject and config, persisted in its own directory.

Layout of a run directory:
    config.json, environment.json
    <benchmark>/records/{records.jsonl, vectors.safetensors}, ground_truth.json
    <benchmark>/predictions/<explainer>.jsonl      (written atomically; reused on rerun)
    <benchmark>/adapters/<explainer>/               (PEFT adapter + projector)
    results.json, results.md
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import __version__
from .benchmarks import Benchmark, get_benchmark
from .config import RunConfig
from .errors import ConfigError
from .explainers import EXPLAINERS, Explainer, Explanation, LoRAExplainer, NearestNeighbour, PromptedExplainer
from .explainers.lora import copy_of
from .metrics import paired_difference
from .models import LoadedModel, load_model
from .progress import bar, console
from .records import Record, load_records, save_records, split
from .training import TrainConfig, training_steps


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_dir_for(cfg: RunConfig) -> Path:
    """Deterministic directory: the same config reruns (and resumes) in the same place."""
    digest = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:8]
    name = Path(cfg.subject).stem.replace("/", "_")
    return Path(cfg.output_dir) / f"{'+'.join(cfg.benchmark_list())}-{name}-seed{cfg.seed}-{digest}"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


def environment() -> dict[str, str]:
    import peft
    import transformers

    return {"selfexplain": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu", "platform": platform.platform(),
            "threads": str(torch.get_num_threads())}


class Run:
    """Executes (or resumes) a run; each finished step is on disk before the next starts."""

    def __init__(self, config: RunConfig):
        self.cfg = config.resolved()
        for name in self.cfg.benchmark_list():
            get_benchmark(name)  # fail fast on unknown names
        wanted = self._explainer_names()
        unknown = [e for e in wanted if e not in EXPLAINERS]
        if unknown:
            raise ConfigError(f"unknown explainer(s) {unknown}; available: {', '.join(EXPLAINERS)}")
        self.dir = run_dir_for(self.cfg)
        self._subject: LoadedModel | None = None

    def _explainer_names(self) -> list[str]:
        if self.cfg.explainers == "all":
            return list(EXPLAINERS)
        return [e.strip() for e in self.cfg.explainers.split(",") if e.strip()]

    @property
    def subject(self) -> LoadedModel:
        if self._subject is None:
            with console.status(f"loading subject {self.cfg.subject}"):
                self._subject = load_model(self.cfg.subject, trust_remote_code=self.cfg.trust_remote_code)
        return self._subject

    def execute(self) -> dict[str, Any]:
        seed_everything(self.cfg.seed)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg.save(self.dir / "config.json")
        _write_json(self.dir / "environment.json", environment())
        results = {"run_dir": str(self.dir), "config": asdict(self.cfg), "benchmarks": {}}
        for name in self.cfg.benchmark_list():
            results["benchmarks"][name] = self.run_benchmark(get_benchmark(name))
        _write_json(self.dir / "results.json", results)
        from .report import markdown_summary

        (self.dir / "results.md").write_text(markdown_summary(results))
        return results

    # ----- one benchmark -------------------------------------------------------------------
    def ground_truth(self, bench: Benchmark, bdir: Path) -> tuple[list[Record], dict]:
        rdir = bdir / "records"
        if (rdir / "records.jsonl").is_file() and (bdir / "ground_truth.json").is_file():
            return load_records(rdir), json.loads((bdir / "ground_truth.json").read_text())
        start = time.perf_counter()
        with bar(f"{bench.name}: ground truth on the subject", None) as advance:
            gt = bench.build_records(self.subject, self.cfg, progress=advance)
        gt.stats["seconds"] = time.perf_counter() - start
        save_records(gt.records, rdir)
        _write_json(bdir / "ground_truth.json", gt.stats)
        return gt.records, gt.stats

    def make_explainer(self, name: str, bench: Benchmark, bdir: Path) -> Explainer:
        train_cfg = TrainConfig(lora_r=self.cfg.lora_r, lora_alpha=2 * self.cfg.lora_r,
                                learning_rate=self.cfg.learning_rate, epochs=self.cfg.epochs,
                                batch_size=self.cfg.batch_size, seed=self.cfg.seed)
        if name in ("self", "other"):
            load: Callable[[], LoadedModel]
            if name == "self":
                load = lambda: copy_of(self.subject)  # noqa: E731
            else:
                load = lambda: load_model(self.cfg.other, trust_remote_code=self.cfg.trust_remote_code)  # noqa: E731
            if name == "self":  # no trainable input projector: adapt the top half only (faster)
                train_cfg.lora_layer_fraction = 0.5
            return LoRAExplainer(name, load, train_cfg, bdir / "adapters" / name, EXPLAINERS[name])
        if name in ("zero-shot", "4-shot"):
            k = 0 if name == "zero-shot" else 4
            return PromptedExplainer(self.subject, k, bench.instruction(), self.cfg.seed, bench.example_key)
        if name == "nearest-neighbour":
            return NearestNeighbour()
        for h in bench.heuristics():
            if h.name == name:
                return h

        raise ConfigError(f"explainer '{name}' does not apply to benchmark '{bench.name}'")

    def run_benchmark(self, bench: Benchmark) -> dict[str, Any]:
        bdir = self.dir / bench.name
        bdir.mkdir(parents=True, exist_ok=True)
        records, stats = self.ground_truth(bench, bdir)
        train, test = split(records, "train"), split(records, "test")
        console.print(f"[bold]{bench.name}[/]: {len(train)} train / {len(test)} test records; "
                      f"subject accuracy (unpatched) {stats.get('subject_accuracy_unpatched', float('nan')):.1%}; "
                      f"raw changed rate {stats.get('raw_changed_rate', float('nan')):.1%}")
        applicable = {h.name for h in bench.heuristics()} | {"self", "other", "zero-shot", "4-shot",
                                                             "nearest-neighbour"}
        names = [n for n in self._explainer_names() if n in applicable]
        per_item: dict[str, dict[str, list]] = {}
        summaries: dict[str, dict[str, Any]] = {}
        for name in names:
            preds = self.predictions(name, bench, bdir, train, test)
            scores = bench.score(test, preds)
            per_item[name] = scores
            summary = bench.summarize(test, scores, self.cfg.seed)
            summary["cost"] = {"forward_passes": float(np.mean([p.forward_passes for p in preds])),
                               "seconds": float(np.mean([p.seconds for p in preds]))}
            summaries[name] = summary
        return {"ground_truth": stats, "n_train": len(train), "n_test": len(test),
                "primary_metric": bench.primary_metric, "explainers": summaries,
                "self_vs_best_other": self.paired(bench, per_item, summaries),
                "self_vs_other": self.paired(bench, per_item, summaries, against="other")}

    def paired(self, bench: Benchmark, per_item: dict, summaries: dict,
               against: str | None = None) -> dict[str, Any] | None:
        """Paired bootstrap of self minus `against` (default: the best non-self explainer)."""
        metric = bench.primary_metric
        others = [n for n in summaries if n != "self"]
        if "self" not in summaries or not others or (against and against not in summaries):
            return None
        best = against or max(others, key=lambda n: summaries[n][metric]["value"])
        diff = paired_difference(per_item["self"][metric], per_item[best][metric], self.cfg.seed)
        return {"metric": metric, "best_other": best, "difference": diff.to_dict()}

    def predictions(self, name: str, bench: Benchmark, bdir: Path, train: list[Record],
                    test: list[Record]) -> list[Explanation]:
        path = bdir / "predictions" / f"{name}.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            if [r["id"] for r in rows] == [r.id for r in test]:
                return [Explanation(r["text"], r["forward_passes"], r["seconds"]) for r in rows]
        explainer = self.make_explainer(name, bench, bdir)
        if isinstance(explainer, LoRAExplainer):
            steps = training_steps(len(train), explainer.train_config)
            with bar(f"{bench.name}: training '{name}'", steps) as advance:
                explainer.progress = lambda step, total, loss: advance(1, f"loss {loss:.3f}")
                explainer.fit(train)
        else:
            explainer.fit(train)
        with console.status(f"{bench.name}: '{name}' explains {len(test)} test queries"):
            preds = explainer.explain(test)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for r, p in zip(test, preds):
                fh.write(json.dumps({"id": r.id, **p.to_dict(), "truth": r.answer}, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        del explainer
        return preds
