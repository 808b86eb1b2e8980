"""A study: one run per (seed, training size), each an ordinary resumable run in the results store,
aggregated into seed-pooled estimates and learning curves.

- `--seeds 0,1,2`: one run per seed. The seed draws the ground truth (which items, pairs and split)
  and trains (LoRA initialisation, batch order, few-shot picks, threshold fits), so the spread
  across seeds is what a rerun with another draw moves. Estimates pool seeds and items: the mean
  over seeds of each seed's mean, with a bootstrap that resamples seeds and items within them
  (metrics.pooled_mean); the self - rival verdicts use every seed.
- `--train-sizes 250,500,...`: a learning curve. Each seed's ground truth is built once, with the
  largest size (every point's run has that --n-train, so later points copy it from the store); each
  point trains every explainer on a nested, seeded subset of its training records
  (`--train-subset`) at the run's fixed --epochs, so optimizer steps grow with the size, and
  every point is tested on the same test set.
The study's outputs (study.json, study.md, study.html) are rewritten from the store at the end of
every invocation; rerunning the same command resumes every unfinished run.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from selfexplain.config import RunConfig
from selfexplain.errors import ConfigError
from selfexplain.metrics import pooled_mean, pooled_paired_difference, seed_spread
from selfexplain.progress import console
from selfexplain.records import Record
from selfexplain.runs.atomic import write_json, write_text

STUDY_VERSION = 1


def training_subset(records: Sequence[Record], k: int, seed: int) -> list[Record]:
    """`records` with only k of its training records: the first k of a permutation seeded by
    `seed` alone, so a smaller subset is inside every larger one (nested curve points). Records
    keep their order; test records are all kept. k >= the training count keeps everything."""
    train = [i for i, r in enumerate(records) if r.split == "train"]
    if k >= len(train):
        return list(records)
    order = train[:]
    random.Random(f"{seed}/train-subset").shuffle(order)
    keep = set(order[:k])
    return [r for i, r in enumerate(records) if r.split != "train" or i in keep]


def is_study(config: RunConfig) -> bool:
    """Whether the config asks for several runs (--seeds or --train-sizes)."""
    return bool(config.seeds.strip() or config.train_sizes.strip())


def point_configs(config: RunConfig) -> list[tuple[int, int | None, RunConfig]]:
    """(seed, training size or None, run config) of every run of the study, smallest size first."""
    cfg = config.resolved()
    seeds = cfg.seed_list() or [cfg.seed]
    sizes = cfg.train_size_list()
    out = []
    for seed in seeds:
        for size in sizes or [None]:
            values = {**asdict(config), "seeds": "", "train_sizes": "", "seed": seed}
            if size is not None:  # the largest point is the plain run at that size
                values.update(n_train=max(sizes), train_subset=0 if size == max(sizes) else size)
            out.append((seed, size, RunConfig(**values)))
    return out


class Study:
    """Runs (or resumes) every run of a study, then writes the pooled results and curves."""

    def __init__(self, config: RunConfig):
        from selfexplain.runs.run import Run

        self.cfg = config.resolved()
        if not is_study(self.cfg):
            raise ConfigError("a study needs --seeds or --train-sizes")
        self.points = point_configs(config)
        self.first = Run(self.points[0][2])  # checks names, data and models before anything runs
        # what the study computes: its config (less the explainer list) and, through the first
        # run's directory name, the benchmarks' identities
        identity = {"config": {k: v for k, v in asdict(self.cfg).items() if k != "explainers"},
                    "first_run": self.first.dir.name}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
        name = Path(self.cfg.subject).stem.replace("/", "_")[:64]
        self.dir = Path(self.cfg.output_dir) / f"study-{'+'.join(self.cfg.benchmark_list())}-{name}-{digest}"
        self.store = self.first.store

    def execute(self) -> dict[str, Any]:
        from selfexplain.runs.run import Run

        self.dir.mkdir(parents=True, exist_ok=True)
        previous = _read_json(self.dir / "study.json")
        timings = {p["run_id"]: p.get("wall_seconds") for p in previous.get("runs", [])}
        finished = {r.id for r in self.store.runs() if r.status == "finished"}
        runs, subject = [], None
        for i, (seed, size, cfg) in enumerate(self.points):
            run = self.first if i == 0 else Run(cfg)
            run._subject = subject  # the subject is never modified: load it once for every run
            what = f"seed {seed}" + (f", {size} training records" if size is not None else "")
            console.print(f"[bold]study[/] run {i + 1}/{len(self.points)} ({what}): {run.dir}")
            start = time.perf_counter()
            results = run.execute()
            if run.id not in finished or timings.get(run.id) is None:
                timings[run.id] = time.perf_counter() - start
            subject = run._subject
            runs.append({"seed": seed, "train_size": size, "run_id": run.id, "run_dir": str(run.dir),
                         "wall_seconds": timings[run.id], "results": results})
        study = aggregate(self.store, self.cfg, runs)
        study["study_dir"] = str(self.dir)
        self.export(study)
        return study

    def export(self, study: dict[str, Any]) -> None:
        from selfexplain.report.study_page import study_markdown, write_study_html

        write_json(self.dir / "study.json", study)
        write_text(self.dir / "study.md", study_markdown(study))
        write_study_html(study, self.dir / "study.html")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _steps(run_dir: str, explainer: str) -> int | None:
    """Optimizer steps of a trained explainer of a run (None for explainers that do not train)."""
    info = _read_json(Path(run_dir) / "adapters" / explainer / "selfexplain_training.json")
    return info.get("steps")


def aggregate(store, cfg: RunConfig, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The study's results: per benchmark, per training size, per explainer, the seed-pooled
    primary metric, its spread across seeds and the pooled paired self - rival differences."""
    sizes = sorted({r["train_size"] for r in runs if r["train_size"] is not None})
    seeds = sorted({r["seed"] for r in runs})
    out: dict[str, Any] = {"study_version": STUDY_VERSION, "config": asdict(cfg), "seeds": seeds,
                           "train_sizes": sizes,
                           "runs": [{k: v for k, v in r.items() if k != "results"} for r in runs],
                           "benchmarks": {}}
    for bench_name in runs[0]["results"]["benchmarks"]:
        section0 = runs[0]["results"]["benchmarks"][bench_name]
        metric = section0["primary_metric"]
        spec = next(m for m in section0["metrics"] if m["name"] == metric)
        points = []
        for size in sizes or [None]:
            members = [r for r in runs if r["train_size"] == size]
            points.append(_point(store, bench_name, metric, spec["higher_is_better"], members, size, cfg.seed))
        entry = {"primary_metric": metric, "metric_label": spec["label"], "higher_is_better": spec["higher_is_better"],
                 "percent": spec.get("percent", True), "points": points}
        if sizes:
            entry["curve"] = curve_summary(points, spec["higher_is_better"])
        out["benchmarks"][bench_name] = entry
    return out


def _point(store, bench: str, metric: str, higher: bool, members: list[dict[str, Any]], size: int | None,
           seed: int) -> dict[str, Any]:
    """One curve point (or the only point of a seeds study): every explainer pooled over seeds."""
    sections = [m["results"]["benchmarks"][bench] for m in members]
    names = [n for n in sections[0]["explainers"] if all(n in s["explainers"] for s in sections)]
    scores = {n: [store.item_scores(m["run_id"], bench, n, metric) for m in members] for n in names}
    explainers = {}
    for n in names:
        per_seed = [s["explainers"][n][metric]["value"] for s in sections]
        first = sections[0]["explainers"][n]
        explainers[n] = {"family": first.get("family"), "reference": bool(first.get("reference")),
                         "subsample": any(s["explainers"][n].get("subsample") for s in sections),
                         "per_seed": per_seed, "spread": seed_spread(per_seed),
                         "pooled": pooled_mean([list(d.values()) for d in scores[n]], seed).to_dict(),
                         "n_items": [s["explainers"][n].get("n_items") for s in sections],
                         "steps": [_steps(m["run_dir"], n) for m in members],
                         "seconds": float(np.mean([s["explainers"][n]["cost"]["seconds"] for s in sections]))}
    sign = 1.0 if higher else -1.0
    rivals = [n for n in names if n != "self" and not explainers[n]["reference"] and not explainers[n]["subsample"]]
    point: dict[str, Any] = {"train_size": size, "n_train": [s["n_train"] for s in sections],
                             "n_test": [s["n_test"] for s in sections], "explainers": explainers,
                             "self_vs_best_other": None, "self_vs": {}, "vector_controls": {}}
    if "self" in names:
        for rival in [n for n in names if n != "self"]:
            point["self_vs"][rival] = _pooled_pair(scores, "self", rival, seed)
        if rivals:
            best = max(rivals, key=lambda n: sign * explainers[n]["pooled"]["value"])
            point["self_vs_best_other"] = {**point["self_vs"][best], "best_other": best}
    from selfexplain.explainers import CONTROL_EXPLAINERS, base_of

    for control in (n for n in names if n in CONTROL_EXPLAINERS and base_of(n) in names):
        point["vector_controls"][control] = {**_pooled_pair(scores, base_of(control), control, seed),
                                             "base": base_of(control)}
    return point


def _pooled_pair(scores: dict[str, list[dict]], a: str, b: str, seed: int) -> dict[str, Any]:
    """a - b paired over the items both answered in each seed, seeds and items resampled."""
    left, right = [], []
    for sa, sb in zip(scores[a], scores[b]):
        common = [k for k in sa if k in sb]
        left.append([sa[k] for k in common])
        right.append([sb[k] for k in common])
    diff = pooled_paired_difference(left, right, seed)
    return {"difference": diff.to_dict(), "n": diff.n, "n_seeds": sum(1 for x in left if x)}


def curve_summary(points: list[dict[str, Any]], higher: bool) -> dict[str, Any]:
    """Where self and the best non-self explainer (at the largest size) cross, or the gap's trend
    (with >= 3 sizes, a least-squares line in log2 size: points per doubling, and the size where
    it would reach zero, an extrapolation); and each explainer's sample efficiency (Li et al. 2025): the
    fraction of its largest-size score it reaches at the smallest size."""
    sizes = [p["train_size"] for p in points]
    last = points[-1]
    out: dict[str, Any] = {"sample_efficiency": {}}
    for n, e in last["explainers"].items():
        final, first = e["pooled"]["value"], points[0]["explainers"].get(n, {}).get("pooled", {}).get("value")
        if higher and first is not None and final and math.isfinite(final) and final > 0:
            out["sample_efficiency"][n] = first / final
    best = (last.get("self_vs_best_other") or {}).get("best_other")
    if not best or len(points) < 2:
        return out
    sign = 1.0 if higher else -1.0
    gaps = [sign * (p["explainers"]["self"]["pooled"]["value"] - p["explainers"][best]["pooled"]["value"])
            if best in p["explainers"] and "self" in p["explainers"] else float("nan") for p in points]
    out.update(rival=best, gaps=gaps, gap_at_largest=last["self_vs"][best]["difference"])
    crossings = []
    for (k0, g0), (k1, g1) in zip(zip(sizes, gaps), zip(sizes[1:], gaps[1:])):
        if g0 == g0 and g1 == g1 and (g0 * g1 < 0 or (g1 == 0 and g0 != 0)):
            t = -g0 / (g1 - g0)  # linear in log size between the two points
            crossings.append(float(math.exp(math.log(k0) + t * (math.log(k1) - math.log(k0)))))
    out["crossings"] = crossings
    ok = [(math.log2(k), g) for k, g in zip(sizes, gaps) if g == g]
    if len(ok) >= 3:  # a line through two points is no trend
        x, y = np.array([a for a, _ in ok]), np.array([b for _, b in ok])
        slope, intercept = np.polyfit(x, y, 1)
        out["gap_per_doubling"] = float(slope)
        out["fitted_gap_at_largest"] = float(intercept + slope * math.log2(sizes[-1]))
        if not crossings and slope != 0 and (y[-1] < 0 < slope or y[-1] > 0 > slope):
            out["extrapolated_crossing"] = float(2 ** (-intercept / slope))  # beyond the measured sizes
    return out
