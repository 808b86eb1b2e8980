"""Progress bars (rich) for every step that takes more than a few seconds."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


@contextlib.contextmanager
def bar(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Yields advance(n=1, **fields); `loss=` shows a running training loss."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as p:
        task = p.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str = "") -> None:
            p.update(task, advance=n, info=info)

        yield advance
