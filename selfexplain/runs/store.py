"""The results store: one SQLite file per output directory holding every run's config,
environment, ground-truth records, per-example predictions and scores, and metrics.

Why SQLite: every write is a transaction, so a run killed at any instant (kill -9 included)
leaves either a finished step or nothing of it, never half-written rows; primary keys make a
resumed step unable to duplicate a record or a prediction. Large artefacts that are not rows
(adapters, attribution caches) stay in the run directory; results.json/.md/.html there are
exports of what the store holds.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from selfexplain.errors import ConfigError
from selfexplain.explainers.base import Explanation
from selfexplain.records import Provenance, Record

STORE_NAME = "selfexplain.db"
SCHEMA_VERSION = 1
# Status of a shard's run (--shard I/N) whose share of the answers and scores is stored: complete
# for `selfexplain merge`, which computes the run's results from every shard.
SHARD_FINISHED = "shard-finished"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, run_dir TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    status TEXT NOT NULL, subject TEXT, benchmarks TEXT, mode TEXT, seed INTEGER,
    config TEXT NOT NULL, environment TEXT NOT NULL, results TEXT, host TEXT, pid INTEGER);
CREATE TABLE IF NOT EXISTS ground_truth (
    run_id TEXT NOT NULL, benchmark TEXT NOT NULL, stats TEXT NOT NULL,
    PRIMARY KEY (run_id, benchmark));
CREATE TABLE IF NOT EXISTS records (
    run_id TEXT NOT NULL, benchmark TEXT NOT NULL, id TEXT NOT NULL, position INTEGER NOT NULL,
    split TEXT NOT NULL, grp TEXT NOT NULL, query TEXT NOT NULL, answer TEXT NOT NULL,
    provenance TEXT NOT NULL, context TEXT NOT NULL, vector BLOB, vector_shape TEXT,
    PRIMARY KEY (run_id, benchmark, id));
CREATE TABLE IF NOT EXISTS predictions (
    run_id TEXT NOT NULL, benchmark TEXT NOT NULL, explainer TEXT NOT NULL, record_id TEXT NOT NULL,
    position INTEGER NOT NULL, text TEXT NOT NULL, forward_passes REAL NOT NULL, seconds REAL NOT NULL,
    scores TEXT, structured TEXT,
    PRIMARY KEY (run_id, benchmark, explainer, record_id));
CREATE TABLE IF NOT EXISTS explainer_runs (
    run_id TEXT NOT NULL, benchmark TEXT NOT NULL, explainer TEXT NOT NULL, n_items INTEGER NOT NULL,
    info TEXT, completed REAL NOT NULL,
    PRIMARY KEY (run_id, benchmark, explainer));
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, benchmark TEXT NOT NULL, explainer TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, low REAL, high REAL, n INTEGER,
    PRIMARY KEY (run_id, benchmark, explainer, metric));
"""


@dataclass(frozen=True)
class RunRow:
    """One line of `selfexplain runs`."""

    id: str
    run_dir: str
    status: str
    created: float
    updated: float
    subject: str
    benchmarks: str
    mode: str
    seed: int


class Store:
    """A SQLite results store. Cheap to open; every public write is one transaction."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)  # explicit BEGIN/COMMIT
            self.db.execute("PRAGMA journal_mode=WAL")  # readers (runs, report) never block a writer
            self.db.execute("PRAGMA synchronous=FULL")  # a committed step survives power loss too
            self.db.executescript(_SCHEMA)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}
            for column, kind in (("host", "TEXT"), ("pid", "INTEGER")):  # stores written before these existed
                if column not in columns:
                    self.db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
            if "structured" not in {row[1] for row in self.db.execute("PRAGMA table_info(predictions)")}:
                self.db.execute("ALTER TABLE predictions ADD COLUMN structured TEXT")
            version = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path} is not a selfexplain results store ({exc})") from exc
        if version is None:
            with self.transaction() as db:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(version[0]) > SCHEMA_VERSION:
            raise ConfigError(f"{self.path} was written by a newer selfexplain (schema {version[0]}); upgrade")

    @classmethod
    def for_output_dir(cls, output_dir: Path | str) -> "Store":
        return cls(Path(output_dir) / STORE_NAME)

    @classmethod
    def open_existing(cls, path: Path | str) -> "Store":
        """A store that must already exist: `path` is the file or its output directory."""
        path = Path(path)
        if path.is_dir():
            path = path / STORE_NAME
        if not path.is_file():
            raise ConfigError(f"no results store at {path}; pass the --output-dir of your runs")
        return cls(path)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: an exception (or a kill) before the end leaves the store unchanged."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ----- runs ----------------------------------------------------------------------------
    def start_run(self, run_id: str, run_dir: Path, config: dict[str, Any], environment: dict[str, str]) -> None:
        """Register a run, or mark a resumed one running again (its created time is kept)."""
        now = time.time()
        with self.transaction() as db:  # BEGIN IMMEDIATE: check and claim are one step for two starters
            row = db.execute("SELECT status, host, pid FROM runs WHERE id=?", (run_id,)).fetchone()
            if (row and row[0] == "running" and row[1] == socket.gethostname() and row[2]
                    and row[2] != os.getpid() and _alive(row[2])):  # another host's pid cannot be checked
                raise ConfigError(f"run {run_id} is being computed by process {row[2]} on {row[1]}; wait for it to "
                                  "finish (rerun then to read its results) or stop it, then rerun to resume")
            db.execute(
                "INSERT INTO runs (id, run_dir, created, updated, status, subject, benchmarks, mode, seed, config, "
                "environment, host, pid) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO "
                "UPDATE SET updated=excluded.updated, status='running', run_dir=excluded.run_dir, config=excluded.config, "
                "environment=excluded.environment, host=excluded.host, pid=excluded.pid",
                (run_id, str(run_dir), now, now, config.get("subject"), config.get("benchmarks"), config.get("mode"),
                 config.get("seed"), json.dumps(config, sort_keys=True), json.dumps(environment, sort_keys=True),
                 socket.gethostname(), os.getpid()))

    def finish_run(self, run_id: str, results: dict[str, Any],
                   item_scores: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> None:
        """Save the results, the metric rows and every prediction's per-item scores at once.

        item_scores: benchmark -> explainer -> record id -> {score name: value}.
        """
        rows = []
        for bench, data in results["benchmarks"].items():
            for explainer, summary in data["explainers"].items():
                for metric, est in summary.items():
                    if isinstance(est, dict) and {"value", "low", "high"} <= set(est):
                        rows.append((run_id, bench, explainer, metric, _num(est["value"]), _num(est["low"]),
                                     _num(est["high"]), est.get("n")))
        with self.transaction() as db:
            db.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            for bench, by_explainer in item_scores.items():
                for explainer, by_id in by_explainer.items():
                    db.executemany(
                        "UPDATE predictions SET scores=? WHERE run_id=? AND benchmark=? AND explainer=? "
                        "AND record_id=?",
                        [(json.dumps(s, allow_nan=True), run_id, bench, explainer, rid) for rid, s in by_id.items()])
            db.execute("UPDATE runs SET results=?, status='finished', updated=? WHERE id=?",
                       (json.dumps(results, allow_nan=True), time.time(), run_id))

    def save_item_scores(self, run_id: str, benchmark: str, by_explainer: dict[str, dict[str, dict[str, Any]]]) -> None:
        """Per-item scores of stored answers (explainer -> record id -> {score: value}), one transaction."""
        with self.transaction() as db:
            for explainer, by_id in by_explainer.items():
                db.executemany("UPDATE predictions SET scores=? WHERE run_id=? AND benchmark=? AND explainer=? "
                               "AND record_id=?", [(json.dumps(s, allow_nan=True), run_id, benchmark, explainer, rid)
                                                   for rid, s in by_id.items()])

    def finish_shard(self, run_id: str) -> None:
        """Mark a shard's run complete: every answer and score of its share is stored."""
        with self.transaction() as db:
            db.execute("UPDATE runs SET status=?, updated=? WHERE id=?", (SHARD_FINISHED, time.time(), run_id))

    def runs(self) -> list[RunRow]:
        """Every run, oldest first; a 'running' run whose process is gone shows as 'interrupted'."""
        cur = self.db.execute("SELECT id, run_dir, status, created, updated, subject, benchmarks, mode, seed, "
                              "host, pid FROM runs ORDER BY created")
        rows = []
        for *fields, host, pid in cur.fetchall():
            if fields[2] == "running" and host == socket.gethostname() and pid and not _alive(pid):
                fields[2] = "interrupted"
            rows.append(RunRow(*fields))
        return rows

    def resolve(self, ref: str) -> str:
        """A run id from an id, a unique id prefix or a run directory path."""
        name = Path(ref).name if ("/" in ref or Path(ref).is_dir()) else ref
        if not ref.strip() or not name.strip():  # '' (or '.') is a prefix of every id: never guess
            raise ConfigError(f"no run id given ({ref!r}); pass a run id, a unique prefix of one or a run "
                              f"directory (`selfexplain runs` lists them)")
        ids = [r.id for r in self.runs()]
        if name in ids:
            return name
        matches = [i for i in ids if i.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ConfigError(f"no run '{ref}' in {self.path}; `selfexplain runs` lists them")
        raise ConfigError(f"'{ref}' matches several runs ({', '.join(matches)}); give more of the id")

    def results(self, run_id: str) -> dict[str, Any]:
        row = self.db.execute("SELECT results, status FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise ConfigError(f"no run '{run_id}' in {self.path}")
        if row[0] is None and row[1] == SHARD_FINISHED:
            raise ConfigError(f"run '{run_id}' in {self.path} is one shard of a sharded run; combine all its shards "
                              f"with `selfexplain merge`, then read the merged run")
        if row[0] is None:
            raise ConfigError(f"run '{run_id}' has no results yet (status: {row[1]}); rerun its command to finish it")
        from selfexplain.results import check_results

        return check_results(json.loads(row[0]), f"run '{run_id}' in {self.path}")

    def config(self, run_id: str) -> dict[str, Any]:
        row = self.db.execute("SELECT config FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise ConfigError(f"no run '{run_id}' in {self.path}")
        return json.loads(row[0])

    # ----- ground truth --------------------------------------------------------------------
    def save_ground_truth(self, run_id: str, benchmark: str, records: Sequence[Record], stats: dict) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM records WHERE run_id=? AND benchmark=?", (run_id, benchmark))
            db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [_record_row(run_id, i, r) for i, r in enumerate(records)])
            db.execute("INSERT OR REPLACE INTO ground_truth VALUES (?, ?, ?)",
                       (run_id, benchmark, json.dumps(stats, allow_nan=True)))

    def ground_truth(self, run_id: str, benchmark: str) -> tuple[list[Record], dict] | None:
        """The saved records and statistics of a benchmark, or None if not computed yet."""
        row = self.db.execute("SELECT stats FROM ground_truth WHERE run_id=? AND benchmark=?",
                              (run_id, benchmark)).fetchone()
        if row is None:
            return None
        cur = self.db.execute("SELECT id, benchmark, split, grp, query, answer, provenance, context, vector, "
                              "vector_shape FROM records WHERE run_id=? AND benchmark=? ORDER BY position",
                              (run_id, benchmark))
        return [_record_from_row(row) for row in cur.fetchall()], json.loads(row[0])

    # ----- predictions ---------------------------------------------------------------------
    def add_predictions(self, run_id: str, benchmark: str, explainer: str, start: int,
                        items: Sequence[Record], explanations: Sequence[Explanation],
                        positions: Sequence[int] | None = None) -> None:
        """One chunk of an explainer's answers (positions start, start+1, ..., or `positions`: a
        shard's items are not consecutive in the run's item list), in one transaction."""
        from selfexplain.runs import faults

        where = list(positions) if positions is not None else [start + i for i in range(len(items))]
        with self.transaction() as db:
            db.executemany("INSERT INTO predictions (run_id, benchmark, explainer, record_id, position, text, "
                           "forward_passes, seconds, structured) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(run_id, benchmark, explainer, r.id, pos, e.text, e.forward_passes, e.seconds,
                             json.dumps(e.structured()) if e.structured() else None)
                            for pos, r, e in zip(where, items, explanations)])
            faults.checkpoint("predictions-chunk")  # crash tests kill here, inside the transaction

    def complete_predictions(self, run_id: str, benchmark: str, explainer: str, n_items: int,
                             info: dict | None) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO explainer_runs VALUES (?, ?, ?, ?, ?, ?)",
                       (run_id, benchmark, explainer, n_items, json.dumps(info) if info is not None else None,
                        time.time()))

    def predictions(self, run_id: str, benchmark: str, explainer: str) -> dict[str, Explanation]:
        """The answers saved so far (complete or not), by record id."""
        cur = self.db.execute("SELECT record_id, text, forward_passes, seconds, structured FROM predictions WHERE "
                              "run_id=? AND benchmark=? AND explainer=? ORDER BY position", (run_id, benchmark, explainer))
        return {rid: Explanation(text, fp, s, **(json.loads(st) if st else {}))
                for rid, text, fp, s, st in cur.fetchall()}

    def completed(self, run_id: str, benchmark: str, explainer: str) -> tuple[int, dict | None] | None:
        """(number of items, info) if the explainer answered all its items; None otherwise."""
        row = self.db.execute("SELECT n_items, info FROM explainer_runs WHERE run_id=? AND benchmark=? AND "
                              "explainer=?", (run_id, benchmark, explainer)).fetchone()
        if row is None:
            return None
        return row[0], json.loads(row[1]) if row[1] else None

    def examples(self, run_id: str, benchmark: str) -> list[dict[str, Any]]:
        """Every answered test record with each explainer's answer and per-item scores (report)."""
        cur = self.db.execute("SELECT id, query, answer, context FROM records WHERE run_id=? AND benchmark=? AND "
                              "split='test' ORDER BY position", (run_id, benchmark))
        rows = {rid: {"id": rid, "query": q, "truth": a, "context": json.loads(c), "predictions": {}}
                for rid, q, a, c in cur.fetchall()}
        cur = self.db.execute("SELECT explainer, record_id, text, scores FROM predictions WHERE run_id=? AND "
                              "benchmark=? ORDER BY explainer, position", (run_id, benchmark))
        for explainer, rid, text, scores in cur.fetchall():
            if rid in rows:
                s = json.loads(scores) if scores else {}
                rows[rid]["predictions"][explainer] = {"text": text, **s}
        return list(rows.values())

    def item_scores(self, run_id: str, benchmark: str, explainer: str, metric: str) -> dict[tuple, float]:
        """Per-item values of a metric, keyed by (record id, query, answer): two runs share a key
        only for the same question with the same ground truth, so pairing across runs is sound."""
        cur = self.db.execute(
            "SELECT r.id, r.query, r.answer, p.scores FROM predictions p JOIN records r ON r.run_id=p.run_id AND "
            "r.benchmark=p.benchmark AND r.id=p.record_id WHERE p.run_id=? AND p.benchmark=? AND p.explainer=? "
            "AND p.scores IS NOT NULL", (run_id, benchmark, explainer))
        out = {}
        for rid, query, answer, scores in cur.fetchall():
            value = json.loads(scores).get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[(rid, query, answer)] = float(value)
        return out

    def counts(self, run_id: str) -> dict[str, int]:
        """Rows per table for a run (resume tests and `selfexplain runs`)."""
        return {table: self.db.execute(f"SELECT COUNT(*) FROM {table} WHERE run_id=?", (run_id,)).fetchone()[0]
                for table in ("records", "predictions", "explainer_runs", "metrics")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def _record_row(run_id: str, position: int, r: Record) -> tuple:
    vector, shape = None, None
    if r.vector is not None:
        arr = r.vector.detach().cpu().float().contiguous().numpy()
        vector, shape = arr.tobytes(), json.dumps(list(arr.shape))
    return (run_id, r.benchmark, r.id, position, r.split, r.group, r.query, r.answer,
            json.dumps(r.provenance.__dict__, sort_keys=True), json.dumps(r.context, ensure_ascii=False),
            vector, shape)


def _record_from_row(row: tuple) -> Record:
    rid, bench, split, grp, query, answer, prov, context, vector, shape = row
    tensor = None
    if vector is not None:
        tensor = torch.from_numpy(np.frombuffer(vector, dtype=np.float32).reshape(json.loads(shape)).copy())
    return Record(id=rid, benchmark=bench, split=split, group=grp, query=query, answer=answer,
                  provenance=Provenance(**json.loads(prov)), context=json.loads(context), vector=tensor)
