"""`selfexplain` command line. Options of `run` are generated from RunConfig's fields."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sqlite3
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import typer

from selfexplain.config import RunConfig, check_output_dir
from selfexplain.errors import ConfigError, SelfExplainError


def _exception_classes(name: str, *modules: str) -> tuple[type[BaseException], ...]:
    """`name` from each module that has it: typer >= 0.2x raises its bundled click's classes
    (typer._click), older typer the real click's; both are caught."""
    found: list[type[BaseException]] = []
    for module in modules:
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


USAGE_ERRORS = _exception_classes("ClickException", "typer._click.exceptions", "click.exceptions")
ABORTS = _exception_classes("Abort", "typer.exceptions", "typer", "click.exceptions")
STORE_FAULTS = ("malformed", "not a database", "readonly", "read-only", "disk i/o error", "unable to open")

# The results store the running command reads or writes, named (and closed) when SQLite reports it damaged.
_store: dict[str, Any] = {}


def _using_store(path: Path | str, store: Any = None) -> None:
    _store.update(path=Path(path), store=store)


def _close_store() -> None:
    store = _store.get("store")
    if store is not None:
        try:
            store.close()
        except sqlite3.Error:
            pass


def check_store_readable(path: Path) -> None:
    """Fail fast (ConfigError) if an existing results store cannot be read through: a damaged
    store is found before a run directory is created or a model loads. A missing one is fine."""
    if not path.exists():
        return
    if not path.is_file():
        raise ConfigError(f"results store {path} is not a file; move it aside or pass another --output-dir")
    db = None
    try:
        db = sqlite3.connect(path, timeout=60)
        problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"results store {path} is unreadable ({exc}); move it aside (or restore a backup) "
                          f"or pass another --output-dir") from exc
    finally:
        if db is not None:
            db.close()
    if problems != ["ok"]:
        first = " ".join(str(problems[0]).split()) if problems else "no answer"
        raise ConfigError(f"results store {path} is damaged ({first}); move it aside (or restore a backup) "
                          f"or pass another --output-dir")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train models to explain themselves; benchmark self-explanations against "
                       "human-centric interpretability.")


def options_from(dataclass_type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command one --option per dataclass field (same names, defaults and help)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        params = []
        for f in fields(dataclass_type):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            flag = f"--{f.name.replace('_', '-')}"
            if isinstance(default, bool):
                flag = f"{flag}/--no-{flag[2:]}"
            option = typer.Option(default, flag, help=f.metadata.get("help", ""))
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                            annotation=type(default)))
        func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return func

    return decorate


@app.command()
@options_from(RunConfig)
def run(**kwargs: Any) -> None:
    """Run (or resume) a benchmark suite and print its leaderboard."""
    config = RunConfig(**kwargs)
    cfg = config.resolved()  # every option checked before anything is imported, created or loaded
    check_output_dir(cfg.output_dir)

    from selfexplain.progress import console
    from selfexplain.runs.run import Run
    from selfexplain.runs.store import STORE_NAME

    _using_store(cfg.store_dir() / STORE_NAME)  # a shard's store is in <output-dir>/shard-I-of-N
    check_store_readable(cfg.store_dir() / STORE_NAME)
    from selfexplain.runs.study import is_study

    if is_study(cfg):
        _study(config)
        return
    runner = Run(config)
    _using_store(runner.store.path, runner.store)
    console.print(f"run directory: {runner.dir}")
    results = runner.execute()
    if runner.shard:
        i, n = runner.shard
        answered = sum(sum(by.values()) for by in results["answered"].values())
        typer.echo(f"shard {i}/{n} of run {runner.id} complete: {answered} answers in {runner.store.path}; when all "
                   f"{n} are, combine them: selfexplain merge {Path(cfg.output_dir) / 'shard-*-of-'}{n}")
        return
    _print_results(results, f"results: {runner.store.path} (run {runner.id}); exports {runner.dir / 'results.md'} "
                            f"and {runner.dir / 'report.html'}")


def _print_results(results: dict[str, Any], footer: str) -> None:
    from rich.console import Console

    from selfexplain.report.tables import rich_tables

    out = Console(width=max(150, Console().width))
    for item in rich_tables(results):
        out.print(item)
    out.print(footer)


@app.command()
@options_from(RunConfig)
def curve(**kwargs: Any) -> None:
    """A learning curve: `run` at every --train-sizes (with --seeds, per seed) on one test set."""
    config = RunConfig(**kwargs)
    if not config.resolved().train_size_list():
        raise ConfigError("`selfexplain curve` needs --train-sizes, e.g. --train-sizes 250,500,1000,2000,4000")
    run(**kwargs)


def _study(config: RunConfig) -> None:
    """Run (or resume) every run of a study (--seeds / --train-sizes) and print its pooled tables."""
    from rich.console import Console

    from selfexplain.progress import console
    from selfexplain.report.study_page import rich_study
    from selfexplain.runs.study import Study

    study = Study(config)
    _using_store(study.store.path, study.store)
    console.print(f"study directory: {study.dir}")
    results = study.execute()
    out = Console(width=max(150, Console().width))
    for item in rich_study(results):
        out.print(item)
    out.print(f"study: {study.dir / 'study.md'} and {study.dir / 'study.html'}; every run is in {study.store.path}")


@app.command("list")
def list_cmd() -> None:
    """List benchmarks, explainers and registered offline models."""
    from selfexplain import list_benchmarks, list_explainers, list_models

    for title, entries in (("benchmarks", list_benchmarks()), ("explainers", list_explainers()),
                           ("models", list_models())):
        typer.echo(f"{title}:")
        for name, text in entries.items():
            typer.echo(f"  {name:20s} {text}")


OUTPUT_DIR = typer.Option("runs", "--output-dir", help="the --output-dir the runs were written to")


@app.command("runs")
def runs_cmd(output_dir: str = OUTPUT_DIR) -> None:
    """List the runs in an output directory's results store."""
    import time

    from rich.console import Console
    from rich.table import Table

    from selfexplain.runs.store import Store

    store = Store.open_existing(output_dir)
    _using_store(store.path, store)
    table = Table(title=f"runs in {store.path}")
    table.add_column("run", overflow="fold", min_width=20)  # ids are copied into other commands: never cut
    for col in ("status", "benchmarks", "subject", "mode", "seed", "updated", "records", "answers"):
        table.add_column(col)
    for r in store.runs():
        counts = store.counts(r.id)
        table.add_row(r.id, r.status, r.benchmarks, r.subject, r.mode, str(r.seed),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated)), str(counts["records"]),
                      str(counts["predictions"]))
    Console(width=max(120, Console().width)).print(table)


@app.command()
def merge(shards: list[str] = typer.Argument(..., help="the shard directories <output-dir>/shard-I-of-N (all N, "
                                                      "each once)"),
          output_dir: str = typer.Option("", "--output-dir", help="where to write the merged run (default: the "
                                                                   "shards' --output-dir, where the unsharded run "
                                                                   "would be)"),
          run: str = typer.Option("", "--run", help="the run id, when the shard directories hold shards of "
                                                    "several runs")) -> None:
    """Combine the shards of a run (`run ... --shard I/N`) into the run, with its leaderboard and report."""
    if output_dir:
        check_output_dir(output_dir)
    from selfexplain.runs.merge import merge_shards

    for path in shards:
        check_store_readable(Path(path) / "selfexplain.db")
    results = merge_shards(shards, output_dir or None, run)
    run_dir = Path(results["run_dir"])
    _print_results(results, f"merged {len(shards)} shards into {run_dir.parent / 'selfexplain.db'} (run "
                            f"{results['run_id']}); exports {run_dir / 'results.md'} and {run_dir / 'report.html'}")


@app.command()
def compare(run_a: str = typer.Argument(..., help="run id (or unique prefix, or run directory)"),
            run_b: str = typer.Argument(..., help="run id (or unique prefix, or run directory)"),
            output_dir: str = OUTPUT_DIR) -> None:
    """Per benchmark and explainer: B minus A on the primary metric, with a 95% CI."""
    from rich.console import Console
    from rich.table import Table

    from selfexplain.report.compare import compare_runs
    from selfexplain.runs.store import Store

    store = Store.open_existing(output_dir)
    _using_store(store.path, store)
    a, b = store.resolve(run_a), store.resolve(run_b)
    deltas = compare_runs(store, a, b)
    if not deltas:
        typer.echo(f"runs {a} and {b} share no benchmark and explainer", err=True)
        raise typer.Exit(1)
    pct = lambda v: "" if v is None else f"{100 * v:.1f}"  # noqa: E731
    table = Table(title=f"B minus A   A = {a}   B = {b}")
    for col in ("benchmark", "explainer", "metric", "A", "B", "B - A [95% CI]", "items", "CI"):
        table.add_column(col, justify="left" if col in ("benchmark", "explainer", "metric") else "right")
    for d in deltas:
        diff = "" if d.difference is None else str(d.difference)
        table.add_row(d.benchmark, d.explainer, d.metric, pct(d.a), pct(d.b), diff,
                      str(d.difference.n) if d.difference else "", "paired" if d.paired else "unpaired")
    Console(width=max(120, Console().width)).print(table)


@app.command()
def report(run: str = typer.Argument(..., help="run id (or unique prefix, or run directory)"),
           output_dir: str = OUTPUT_DIR,
           out: str = typer.Option("", "--out", help="HTML file to write (default: RUN_DIR/report.html)")) -> None:
    """Write a run's self-contained HTML report (viewable offline)."""
    if not run.strip():
        raise ConfigError("no run id given (''); pass a run id, a unique prefix of one or a run directory "
                          "(`selfexplain runs` lists them)")
    if out:
        if Path(out).is_dir() or out.endswith(("/", os.sep)):
            raise ConfigError(f"--out {out} is a directory; pass the HTML file to write, e.g. "
                              f"{Path(out) / 'report.html'}")
        check_output_dir(Path(out).parent, "--out")
    from selfexplain.report.html_page import write_html_report
    from selfexplain.runs.store import Store

    if not Path(output_dir, "selfexplain.db").is_file() and Path(run, "..", "selfexplain.db").is_file():
        output_dir = str(Path(run).resolve().parent)  # a run directory given: its store is beside it
    store = Store.open_existing(output_dir)
    _using_store(store.path, store)
    run_id = store.resolve(run)
    results = store.results(run_id)
    examples = {name: store.examples(run_id, name) for name in results["benchmarks"]}
    target = Path(out) if out else Path(results["run_dir"]) / "report.html"
    if not out and target.is_dir():
        raise ConfigError(f"{target} is a directory; pass --out FILE")
    path = write_html_report(results, examples, target)
    typer.echo(str(path))


@app.command()
def explain(prompt: str = typer.Argument(None, help="user message: question, 'Respond with one of A or B ... and "
                                                     "nothing else.', optional hint line (\\n for newlines)"),
            run_dir: str = typer.Option(..., "--run", help="run directory with config.json and adapters/self"),
            adapter: str = typer.Option("", "--adapter", help="adapter directory (default: RUN/adapters/self)"),
            statement: str = typer.Option("", "--statement", help="start of the subject's reply (default: inferred)"),
            patch: list[str] = typer.Option([], "--patch", help="ask about a patch BLOCK:TOKEN_TYPE:ENTITY, e.g. "
                                                                "L25-29:last:Laos (repeatable)"),
            as_json: bool = typer.Option(False, "--json", help="one JSON object per prompt"),
            interactive: bool = typer.Option(False, "--interactive",
                                             help="prompt loop, one prompt per line (also when no PROMPT)")) -> None:
    """The self explainer's claims about the subject's answer to PROMPT, each checked live by intervening."""
    from selfexplain.explain import run_cli

    run_cli(prompt, run_dir, adapter, statement, patch, as_json, interactive)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: usage errors print the usage message and exit 2; user mistakes become one line
    on stderr (`error: ...`) and exit 2. `argv`: the arguments (default: sys.argv[1:])."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # weight-loading bars: our own progress says what loads
    except ImportError:
        pass
    _store.clear()
    try:
        # standalone_mode=False: errors reach the handlers below; typer then *returns* the code of
        # typer.Exit (and 130 for Ctrl-C), which must become the process's exit status.
        if argv is None:
            code = app(standalone_mode=False)
        else:
            code = app(args=list(argv), prog_name="selfexplain", standalone_mode=False)
    except USAGE_ERRORS as exc:  # NoSuchOption, MissingParameter, BadParameter, ...: usage + 'Error: ...'
        if type(exc).__name__ != "NoArgsIsHelpError" or exc.format_message().strip():  # help already printed
            exc.show()
        sys.exit(exc.exit_code)
    except ABORTS:
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except SelfExplainError as exc:  # one line even when a value in the message holds a line break
        typer.echo("error: " + str(exc).replace("\r", "\\r").replace("\n", "\\n"), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except OSError as exc:
        if exc.errno == 28:
            typer.echo(f"error: disk full while writing ({exc.filename}); free space and rerun to resume", err=True)
            sys.exit(1)
        raise
    except sqlite3.DatabaseError as exc:  # the results store
        text = " ".join(str(exc).split())
        where = f"results store {_store['path']}" if _store.get("path") else "results store"
        _close_store()
        if isinstance(exc, sqlite3.OperationalError) and ("full" in text or "locked" in text):
            typer.echo(f"error: {where}: {text}; free space or stop the other run, then rerun to resume", err=True)
            sys.exit(1)
        if type(exc) is sqlite3.DatabaseError or any(k in text.lower() for k in STORE_FAULTS):
            what = "is unreadable" if type(exc) is sqlite3.DatabaseError else "cannot be used"
            typer.echo(f"error: {where} {what} ({text}); move it aside (or restore a backup) or pass another "
                       f"--output-dir", err=True)
            sys.exit(2)
        raise
    if code == 130:
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)


def _interrupted() -> None:
    typer.echo("interrupted: finished steps are saved; rerun the same command to resume", err=True)
    sys.exit(130)


if __name__ == "__main__":
    main()
