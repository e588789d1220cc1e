"""``metrics.jsonl``: a training run's log, one JSON record per line (``"kind": "train"`` per
step, ``"eval"`` per evaluation), read by ``plot`` and by a resumed run.
"""
from __future__ import annotations

import os
from typing import Any

from ..io.untrusted import (
    InputError,
    Int,
    Num,
    Object,
    Optional,
    Str,
    check,
    parse_json,
    require_regular_file,
)

__all__ = ["METRICS", "read_metrics"]

METRICS = "metrics.jsonl"
# A metrics.jsonl line is a few hundred bytes; a longer one is not a record of ours.
MAX_METRICS_LINE = 1 << 20
METRICS_SPEC = Object({
    "kind": Str(), "step": Int(0), "loss": Optional(Num()), "train_loss": Optional(Num()),
    "val_loss": Optional(Num()),
}, required=("step",), extra=True)


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``, each checked (METRICS_SPEC) and read a line
    at a time; a torn last line (a crash mid-write) is skipped, any other bad line is an error
    naming it."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: no such file (is {run_dir} a training run folder?)")
    require_regular_file(path)
    records, torn = [], None
    with open(path, "rb") as f:
        for lineno, line in enumerate(iter(lambda: f.readline(MAX_METRICS_LINE + 1), b""), 1):
            if not line.strip():
                continue
            if torn is not None:  # a bad line with records after it is no torn write
                raise torn
            if len(line) > MAX_METRICS_LINE:
                raise InputError(f"{path}:{lineno}: longer than {MAX_METRICS_LINE:,} bytes, "
                                 "not a record")
            try:
                record = parse_json(line, f"{path}:{lineno}")
            except InputError as e:
                torn = InputError(f"{path}:{lineno}: not a JSON record ({e})")
                continue
            records.append(check(record, METRICS_SPEC, f"{path}:{lineno}"))
    return records
