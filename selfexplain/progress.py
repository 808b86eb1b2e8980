"""Progress for every step that takes more than a few seconds: a rich bar on a terminal, plain
timed lines (start, every ~10%, end) when the output is a log file, CI or a pipe."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


@contextlib.contextmanager
def bar(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Yields advance(n=1, info=''); `info` shows e.g. a running training loss."""
    if not console.is_terminal:
        with _lines(description, total) as advance:
            yield advance
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as p:
        task = p.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str = "") -> None:
            p.update(task, advance=n, info=info)

        yield advance


@contextlib.contextmanager
def _lines(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Plain progress lines: no carriage returns, no cut columns in a log."""
    start, state = time.perf_counter(), {"done": 0, "next": 0.1, "info": ""}
    console.print(f"{description} ..." if total is None else f"{description}: 0/{total}", soft_wrap=True)

    def advance(n: int = 1, info: str = "") -> None:
        state["done"] += n
        state["info"] = info or state["info"]
        if total and state["done"] < total and state["done"] / total >= state["next"]:
            state["next"] = int(10 * state["done"] / total + 1) / 10
            console.print(f"{description}: {state['done']}/{total} {state['info']} "
                          f"({time.perf_counter() - start:.0f} s)".replace("  ", " "), soft_wrap=True)

    yield advance
    done = f"{state['done']}/{total}" if total else f"{state['done']} steps"
    console.print(f"{description}: done, {done} {state['info']} in {time.perf_counter() - start:.1f} s"
                  .replace("  ", " "), soft_wrap=True)


@contextlib.contextmanager
def status(text: str) -> Iterator[None]:
    """A spinner on a terminal; off one, a line before and a timed line after (e.g. model loads)."""
    if console.is_terminal:
        with console.status(text):
            yield
        return
    start = time.perf_counter()
    console.print(f"{text} ...", soft_wrap=True)
    yield
    console.print(f"{text}: done in {time.perf_counter() - start:.1f} s", soft_wrap=True)
