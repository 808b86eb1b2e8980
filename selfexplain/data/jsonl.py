"""The one JSONL reader every loader uses, with one policy for malformed rows.

A row that is not valid JSON, not a JSON object, or lacks a required field is malformed. With a
`skipped` list the reader appends (file, line, reason) and goes on (the loader reports the count
and the locations); without one (strict) the first malformed row is a DataError naming file:line.
A missing or unreadable file (permissions, not UTF-8) is always a DataError. A UTF-8 byte-order
mark at the start of the file is ignored, so the first row is never lost to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from selfexplain.errors import DataError

Skipped = list[tuple[str, int, str]]


def read_jsonl(path: Path, required: tuple[str, ...] = (), skipped: Skipped | None = None,
               what: str = "data file") -> Iterator[tuple[int, dict]]:
    """(line number, row) for each well-formed object row of `path`."""
    path = Path(path)

    def bad(lineno: int, why: str) -> None:
        if skipped is None:
            raise DataError(f"{path}:{lineno}: {why}")
        skipped.append((str(path), lineno, why))

    try:
        with path.open(encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    bad(lineno, f"not valid JSON ({exc.msg})")
                    continue
                if not isinstance(row, dict):
                    bad(lineno, "not a JSON object")
                    continue
                missing = [k for k in required if k not in row]
                if missing:
                    bad(lineno, f"missing field(s) {', '.join(missing)}")
                    continue
                yield lineno, row
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
