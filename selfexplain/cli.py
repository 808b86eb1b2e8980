"""`selfexplain` command line. Options of `run` are generated from RunConfig's fields."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from dataclasses import MISSING, fields
from typing import Any, Callable

import click
import typer

from .config import RunConfig
from .errors import SelfExplainError

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
    from .progress import console
    from .report import rich_tables
    from .runs import Run

    runner = Run(RunConfig(**kwargs))
    console.print(f"run directory: {runner.dir}")
    results = runner.execute()
    from rich.console import Console

    out = Console(width=max(150, Console().width))
    for item in rich_tables(results):
        out.print(item)
    out.print(f"results: {runner.dir / 'results.json'} and {runner.dir / 'results.md'}")


@app.command("list")
def list_cmd() -> None:
    """List benchmarks, explainers and registered offline models."""
    from . import list_benchmarks, list_explainers, list_models

    for title, entries in (("benchmarks", list_benchmarks()), ("explainers", list_explainers()),
                           ("models", list_models())):
        typer.echo(f"{title}:")
        for name, text in entries.items():
            typer.echo(f"  {name:20s} {text}")


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
    from .explain import run_cli

    run_cli(prompt, run_dir, adapter, statement, patch, as_json, interactive)


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        app(standalone_mode=False)
    except SelfExplainError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished steps are saved; rerun the same command to resume", err=True)
        sys.exit(130)
    except OSError as exc:
        if exc.errno == 28:
            typer.echo(f"error: disk full while writing ({exc.filename}); free space and rerun to resume", err=True)
            sys.exit(1)
        raise
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
