"""The run log kept in the index: one JSON record per indexing run, ``<index>/_runs/<run_id>.json``.

A run writes its record when it starts (``status: running``), after each commit (progress) and
when it ends (``ok`` or ``failed`` with the error). A run killed outright stays ``running``; the
next run marks it ``died`` when it takes the lease over. ``snappy inspect`` shows the last runs.
Run ids start with a UTC timestamp, so the folder lists in run order.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

from snappy.storage.fs import Files

RUNS_DIR = "_runs"
KEEP_RUNS = 1000


def new_run_id(now: float | None = None) -> str:
    """``20261126T161005.123Z-1a2b3c4d``: milliseconds, so two runs in one second still list in order."""
    now = now or time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    return stamp + "-" + uuid.uuid4().hex[:8]


def write(files: Files, record: dict[str, Any]) -> None:
    files.put(f"{RUNS_DIR}/{record['run_id']}.json", json.dumps(record, sort_keys=True, default=str).encode())


def read(files: Files, run_id: str) -> dict | None:
    data = files.get(f"{RUNS_DIR}/{run_id}.json")
    return json.loads(data) if data else None


def recent(files: Files, n: int = 10) -> list[dict]:
    """The last ``n`` run records, newest first."""
    out = []
    for name in reversed(files.list(RUNS_DIR)[-n:]):
        data = files.get(f"{RUNS_DIR}/{name}")
        if data:
            out.append(json.loads(data))
    return out


def mark_dead(files: Files, run_id: str, reason: str) -> bool:
    """Mark a run that never finished as ``died``; True if it was still ``running``."""
    rec = read(files, run_id)
    if not rec or rec.get("status") != "running":
        return False
    rec.update(status="died", error=reason, finished_at=None)
    write(files, rec)
    return True


def prune(files: Files, keep: int = KEEP_RUNS) -> None:
    for name in files.list(RUNS_DIR)[:-keep]:
        files.delete(f"{RUNS_DIR}/{name}")
