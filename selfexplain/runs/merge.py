"""`selfexplain merge`: the N shards of a run (`selfexplain run ... --shard I/N`) combined into the
run itself, in one store, with the results the unsharded run computes.

Every shard of a run computes the same ground truth and trains the same adapters (same config,
seed and code), then answers and scores its share of the test records (runs/run.py, shard_ids) in
its own store, <output-dir>/shard-I-of-N/selfexplain.db. The merge checks that the shards belong
together (one run, one split into N, each index once, each complete, identical ground truth,
adapters and fitted baselines), copies the ground truth and the union of the answers into the
target store in one transaction, and then computes the leaderboard exactly as an unsharded run
does from stored answers (Run.execute: bootstrap CIs, paired differences, report). A killed merge
resumes with the same command; merging the same shards into the same place again recomputes the
results and exports. Scores that
need the subject (rationales) hit the per-item caches the shards filled, copied beside the store.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from selfexplain.config import RunConfig, parse_shard, shard_dir_name
from selfexplain.errors import ConfigError
from selfexplain.runs import faults
from selfexplain.runs.store import SHARD_FINISHED, STORE_NAME, Store

# Ground-truth statistics and explainer info that are measurements of the process, not results.
VOLATILE = ("seconds", "copied_from")


@dataclass
class Shard:
    """One shard's run in its store."""

    path: Path  # the shard's output directory (holds the store)
    store: Store
    run_id: str
    config: dict[str, Any]
    status: str
    index: int
    count: int

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count} ({self.path})"

    @property
    def run_dir(self) -> Path:
        return self.path / self.run_id


def open_shard(path: str | Path, run: str = "") -> Shard:
    """The shard run in `path`: a shard directory (<output-dir>/shard-I-of-N) or a shard's run
    directory inside one. `run`: the run id when the directory holds shards of several runs."""
    path = Path(path)
    if (path / STORE_NAME).is_file():
        store_dir = path
    elif path.is_dir() and (path.parent / STORE_NAME).is_file():
        store_dir, run = path.parent, run or path.name
    else:
        raise ConfigError(f"{path}: no results store ({STORE_NAME}) here; pass the directories "
                          f"<output-dir>/shard-I-of-N that `selfexplain run --shard I/N` wrote")
    store = Store(store_dir / STORE_NAME)
    rows = {r.id: r for r in store.runs()}
    sharded = [rid for rid in rows if store.config(rid).get("shard")]
    if run:
        run_id = store.resolve(run)
        if run_id not in sharded:
            raise ConfigError(f"run {run_id} in {store_dir} is not a shard (it ran without --shard); merge the "
                              f"directories that `selfexplain run --shard I/N` wrote")
    elif len(sharded) == 1:
        run_id = sharded[0]
    elif not sharded:
        raise ConfigError(f"{store_dir} holds no shard of a run; pass the directories <output-dir>/shard-I-of-N "
                          f"that `selfexplain run --shard I/N` wrote")
    else:
        raise ConfigError(f"{store_dir} holds shards of several runs ({', '.join(sharded)}); pass --run ID")
    config = store.config(run_id)
    index, count = parse_shard(config["shard"])  # type: ignore[misc]
    return Shard(store_dir, store, run_id, config, rows[run_id].status, index, count)


def what_it_computes(config: dict[str, Any]) -> dict[str, Any]:
    """A shard's saved config less which shard it is and where it was written: shards of one run
    may have run with different --output-dir on different machines (their run ids then differ,
    as the id covers the output directory, but they computed the same)."""
    out = {k: v for k, v in config.items() if k not in ("shard", "output_dir")}
    if isinstance(out.get("identity"), dict):
        identity = dict(out["identity"])
        identity["config"] = {k: v for k, v in (identity.get("config") or {}).items() if k != "output_dir"}
        out["identity"] = identity
    return out


def check_shards(shards: Sequence[Shard]) -> None:
    """One run, one split into N, every index exactly once, every shard complete."""
    first = shards[0]
    for s in shards[1:]:
        if s.count != first.count:
            raise ConfigError(f"shards {first.label} and {s.label} split the run differently ({first.count} vs "
                              f"{s.count} shards); merge the shards of one --shard I/N split")
        a, b = what_it_computes(first.config), what_it_computes(s.config)
        if a != b:
            differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise ConfigError(f"shards {first.label} and {s.label} are of different runs (config differs in "
                              f"{', '.join(differ)}); merge the shards of one run")
    seen: dict[int, Shard] = {}
    for s in shards:
        if s.index in seen:
            raise ConfigError(f"shard {s.index}/{s.count} given twice: {seen[s.index].path} and {s.path}; pass each "
                              f"shard once")
        seen[s.index] = s
    missing = [f"{i}/{first.count}" for i in range(1, first.count + 1) if i not in seen]
    if missing:
        raise ConfigError(f"shard {', '.join(missing)} of run {first.run_id} missing; pass all {first.count} shard "
                          f"directories (<output-dir>/{shard_dir_name(1, first.count)} ... "
                          f"{shard_dir_name(first.count, first.count)})")
    for s in shards:
        if s.status != SHARD_FINISHED:
            raise ConfigError(f"shard {s.label} is not complete (status: {s.status}); rerun its command "
                              f"(selfexplain run ... --shard {s.index}/{s.count}) to finish it, then merge")


def _steady(value: Any) -> Any:
    """`value` without the keys that measure the process (timings), recursively."""
    if isinstance(value, dict):
        return {k: _steady(v) for k, v in value.items() if not any(k.endswith(w) for w in VOLATILE)}
    return value


def _ground_truth_rows(shard: Shard) -> dict[str, tuple[list[tuple], Any]]:
    db = shard.store.db
    out = {}
    for bench, stats in db.execute("SELECT benchmark, stats FROM ground_truth WHERE run_id=? ORDER BY benchmark",
                                   (shard.run_id,)):
        rows = db.execute("SELECT id, position, split, grp, query, answer, provenance, context, vector, vector_shape "
                          "FROM records WHERE run_id=? AND benchmark=? ORDER BY position",
                          (shard.run_id, bench)).fetchall()
        out[bench] = (rows, json.loads(stats))
    return out


def _explainer_runs(shard: Shard) -> dict[tuple[str, str], tuple[int, Any, float]]:
    return {(b, e): (n, json.loads(info) if info else None, done) for b, e, n, info, done in shard.store.db.execute(
        "SELECT benchmark, explainer, n_items, info, completed FROM explainer_runs WHERE run_id=?", (shard.run_id,))}


def _adapter_tensors(adapter: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = {}
    if (adapter / "adapter_model.safetensors").is_file():
        tensors.update(load_file(adapter / "adapter_model.safetensors"))
    if (adapter / "projector.pt").is_file():
        state = torch.load(adapter / "projector.pt", map_location="cpu", weights_only=True)
        tensors.update({f"projector.{k}": v for k, v in state.items()})
    return tensors


def check_same_work(shards: Sequence[Shard]) -> dict[str, tuple[list[tuple], Any]]:
    """Every shard computed the same ground truth, adapters and fitted baselines (what the run
    shares), and the shards' answers are disjoint. Returns the ground truth (first shard's)."""
    first = shards[0]
    truth = _ground_truth_rows(first)
    runs = _explainer_runs(first)
    hint = ("every shard must run the same code, data and subject, and compute deterministically "
            "(docs/scale.md, Guarantees)")
    for s in shards[1:]:
        other = _ground_truth_rows(s)
        if set(other) != set(truth):
            raise ConfigError(f"shards {first.label} and {s.label} hold ground truth of different benchmarks "
                              f"({', '.join(sorted(truth))} vs {', '.join(sorted(other))})")
        for bench, (rows, stats) in truth.items():
            if other[bench][0] != rows:
                diff = next((a[0] for a, b in zip(rows, other[bench][0]) if a != b), "count")
                raise ConfigError(f"shards {first.label} and {s.label} computed different ground truth for {bench} "
                                  f"(first difference: record {diff}); {hint}")
            if _steady(other[bench][1]) != _steady(stats):
                raise ConfigError(f"shards {first.label} and {s.label} computed different ground-truth statistics "
                                  f"for {bench}; {hint}")
        theirs = _explainer_runs(s)
        if set(theirs) != set(runs):
            raise ConfigError(f"shards {first.label} and {s.label} answered with different explainers "
                              f"({len(runs)} vs {len(theirs)} benchmark/explainer pairs)")
        for key, (_, info, _) in runs.items():
            if _steady(theirs[key][1]) != _steady(info):
                raise ConfigError(f"shards {first.label} and {s.label} fitted '{key[1]}' on {key[0]} differently "
                                  f"({json.dumps(_steady(info))} vs {json.dumps(_steady(theirs[key][1]))}); {hint}")
    adapters = sorted(p.name for p in (first.run_dir / "adapters").glob("*") if p.is_dir())
    for name in adapters:
        mine = _adapter_tensors(first.run_dir / "adapters" / name)
        for s in shards[1:]:
            path = s.run_dir / "adapters" / name
            if not path.is_dir():
                raise ConfigError(f"shard {s.label} has no adapter '{name}' ({path}); copy each shard's whole "
                                  f"directory, run directory included")
            theirs = _adapter_tensors(path)
            if theirs.keys() != mine.keys() or any(not torch.equal(mine[k], theirs[k]) for k in mine):
                raise ConfigError(f"shards {first.label} and {s.label} trained different '{name}' adapters (training "
                                  f"is not bit-reproducible across their devices); train once and copy adapters/ "
                                  f"into every shard's run directory before its answers (docs/scale.md)")
    owner: dict[tuple[str, str, str], int] = {}
    for s in shards:
        for b, e, rid in s.store.db.execute("SELECT benchmark, explainer, record_id FROM predictions WHERE run_id=?",
                                            (s.run_id,)):
            if (b, e, rid) in owner:
                raise ConfigError(f"shards {owner[(b, e, rid)]}/{s.count} and {s.label} both answered record {rid} "
                                  f"with '{e}' on {b}; the shards' stores were altered")
            owner[(b, e, rid)] = s.index
    return truth


def _copy_missing(src: Path, dst: Path) -> None:
    """Files under src that dst lacks (content-keyed caches: a file of the same name is the same)."""
    if not src.is_dir():
        return
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".merging")
            shutil.copy2(path, tmp)
            tmp.replace(target)


def merged_config(shard: Shard, output_dir: str | Path | None) -> RunConfig:
    """The config of the unsharded run: the shards' with no --shard, in `output_dir` (default: the
    shards' --output-dir, where `selfexplain run` without --shard would have written it)."""
    values = {k: v for k, v in shard.config.items() if k != "identity"}
    values.update(shard="", output_dir=str(output_dir) if output_dir else values["output_dir"])
    known = set(RunConfig.__dataclass_fields__)
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"shard {shard.label} has config keys this selfexplain does not know ({sorted(unknown)}); "
                          f"merge with the version that computed it")
    return RunConfig(**values).resolved()


def merge_shards(paths: Sequence[str | Path], output_dir: str | Path | None = None, run: str = "") -> dict[str, Any]:
    """Merge the shard directories `paths` into one run in `output_dir`'s store; returns its results."""
    from selfexplain.runs.run import Run, run_dir_for, run_identity

    if not paths:
        raise ConfigError("no shard directories given; pass every shard's directory, e.g. runs/shard-*-of-4")
    resolved: dict[Path, str] = {}
    for p in paths:
        key = Path(p).resolve()
        if key in resolved:
            raise ConfigError(f"shard directory {p} given twice; pass each shard once")
        resolved[key] = str(p)
    shards = [open_shard(p, run) for p in paths]
    try:
        check_shards(shards)
        shards.sort(key=lambda s: s.index)
        first = shards[0]
        places = sorted({str(s.config["output_dir"]) for s in shards})
        if not output_dir and len(places) > 1:
            raise ConfigError(f"the shards ran with different --output-dir ({', '.join(places)}); pass --output-dir "
                              f"for the merged run")
        cfg = merged_config(first, output_dir)
        recorded = first.config.get("identity") or {}
        current = run_identity(cfg)
        if {k: recorded.get(k) for k in ("benchmarks", "selfexplain")} != {k: current[k] for k in ("benchmarks",
                                                                                                "selfexplain")}:
            raise ConfigError(f"shards of run {first.run_id} were computed by another selfexplain version or benchmark "
                              f"definition (prompts, parameters) than this one; merge with the version that computed "
                              f"them")
        truth = check_same_work(shards)
        run_id = run_dir_for(cfg).name
        target = Store.for_output_dir(cfg.output_dir)
        merged_from = ", ".join(str(s.path.resolve()) for s in shards)  # however the paths were spelt
        try:
            existing = {r.id: r for r in target.runs()}.get(run_id)
            resuming = False
            if existing is not None:
                env = json.loads(target.db.execute("SELECT environment FROM runs WHERE id=?",
                                                   (run_id,)).fetchone()[0])
                # the same shards merged here before (perhaps killed): finish it, or recompute the exports
                resuming = env.get("merged_from") == merged_from
                if not resuming:
                    raise ConfigError(f"run {run_id} already exists in {target.path} (status: {existing.status}); "
                                      f"merge into another --output-dir")
            if not resuming:
                _import(target, shards, run_id, cfg, truth, merged_from)
        finally:
            target.close()
        run_dir = Path(cfg.output_dir) / run_id
        if (first.run_dir / "adapters").is_dir():
            _copy_missing(first.run_dir / "adapters", run_dir / "adapters")
        for s in shards:
            _copy_missing(s.path / "cache", Path(cfg.output_dir) / "cache")
    finally:
        for s in shards:
            s.store.close()
    runner = Run(cfg, check_inputs=False, environment_extra={"merged_from": merged_from})
    try:
        return runner.execute()
    finally:
        runner.store.close()


def _import(target: Store, shards: Sequence[Shard], run_id: str, cfg: RunConfig,
            truth: dict[str, tuple[list[tuple], Any]], merged_from: str) -> None:
    """The shards' ground truth (the first's: all are equal) and the union of their answers, as
    run `run_id` of `target`, in one transaction: an interrupted merge leaves nothing of it."""
    from dataclasses import asdict

    from selfexplain.runs.run import environment, run_dir_for, run_identity

    first = shards[0]
    per_shard = [_explainer_runs(s) for s in shards]  # the same keys in every shard (check_same_work)
    runs = {key: (sum(r[key][0] for r in per_shard), info, max(r[key][2] for r in per_shard))
            for key, (_, info, _) in per_shard[0].items()}
    env = {**environment(), "merged_from": merged_from}
    config = {**asdict(cfg), "identity": run_identity(cfg)}
    with target.transaction() as db:
        row = first.store.db.execute("SELECT created FROM runs WHERE id=?", (first.run_id,)).fetchone()
        db.execute("INSERT INTO runs (id, run_dir, created, updated, status, subject, benchmarks, mode, seed, config, "
                   "environment, host, pid) VALUES (?, ?, ?, ?, 'merging', ?, ?, ?, ?, ?, ?, NULL, NULL)",
                   (run_id, str(run_dir_for(cfg)), row[0], row[0], cfg.subject, cfg.benchmarks, cfg.mode, cfg.seed,
                    json.dumps(config, sort_keys=True), json.dumps(env, sort_keys=True)))
        for bench, (rows, stats) in truth.items():
            db.executemany("INSERT INTO records (run_id, benchmark, id, position, split, grp, query, answer, "
                           "provenance, context, vector, vector_shape) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(run_id, bench, *r) for r in rows])
            stats = {k: v for k, v in stats.items() if k != "copied_from"}
            db.execute("INSERT INTO ground_truth VALUES (?, ?, ?)", (run_id, bench, json.dumps(stats, allow_nan=True)))
        for s in shards:
            rows = s.store.db.execute("SELECT benchmark, explainer, record_id, position, text, forward_passes, "
                                      "seconds, scores, structured FROM predictions WHERE run_id=?",
                                      (s.run_id,)).fetchall()
            db.executemany("INSERT INTO predictions (run_id, benchmark, explainer, record_id, position, text, "
                           "forward_passes, seconds, scores, structured) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(run_id, *r) for r in rows])
        db.executemany("INSERT INTO explainer_runs VALUES (?, ?, ?, ?, ?, ?)",
                       [(run_id, b, e, n, json.dumps(info) if info is not None else None, done)
                        for (b, e), (n, info, done) in runs.items()])
        faults.checkpoint("merge-imported")  # crash tests kill here, inside the transaction
