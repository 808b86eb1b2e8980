"""Crash injection for resume tests: `SELFEXPLAIN_CRASH_AT=NAME:N` makes the process kill itself
with SIGKILL (no cleanup, no exception handlers, like `kill -9` or a power cut) the N-th time it
reaches checkpoint NAME. Unset, a checkpoint costs one dictionary lookup.

Checkpoints: ground-truth (after a benchmark's records are computed, before they are stored),
train-step (after each optimizer step), adapter-saved (adapter weights written, completion
marker not yet), predictions-chunk (inside the transaction that stores a chunk of answers),
report (results stored, exports not yet written), merge-imported (inside the transaction that
copies the shards' rows into the merged store).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_reached: Counter[str] = Counter()


def checkpoint(name: str) -> None:
    spec = os.environ.get("SELFEXPLAIN_CRASH_AT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _reached[name] += 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
