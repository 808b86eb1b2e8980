"""What a run writes and prints: export file modes, and plain progress lines off a terminal."""

from __future__ import annotations

import io
import os

from rich.console import Console

from selfexplain import progress
from selfexplain.runs.atomic import write_json, write_text


def test_exports_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert write_text(tmp_path / "report.html", "<p>x</p>").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert write_json(tmp_path / "results.json", {"a": 1}).stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_progress_is_plain_lines_when_not_a_terminal(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=out, force_terminal=False, width=60))
    with progress.bar("training 'self' on 200 records", 200) as advance:
        for _ in range(200):
            advance(1, "loss 0.500")
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "━" not in text
    assert lines[0] == "training 'self' on 200 records: 0/200"
    assert lines[-1].startswith("training 'self' on 200 records: done, 200/200 loss 0.500 in ")
    assert 9 <= len(lines) <= 12  # start, about every 10%, end: readable in a log
    assert all(len(line) > 60 or "…" not in line for line in lines)  # never cut to the width


def test_model_load_status_is_two_plain_lines_off_a_terminal(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=out, force_terminal=False, width=60))
    with progress.status("loading subject smollm2"):
        pass
    first, second = out.getvalue().splitlines()
    assert first == "loading subject smollm2 ..." and second.startswith("loading subject smollm2: done in ")


def test_benchmarks_all_and_default():
    from selfexplain import RunConfig, list_benchmarks

    assert RunConfig(benchmarks="all").resolved().benchmarks == ",".join(list_benchmarks())
    assert RunConfig().resolved().benchmarks == "patching"  # the default suite: patching declares it
