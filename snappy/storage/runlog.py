"""The run log kept in the index: one JSON record per indexing run, ``<index>/_runs/<run_id>.json``.

A run writes its record when it starts (``status: running``), after each commit (progress) and
when it ends (``ok`` or ``failed`` with the error). A run killed outright stays ``running``; the
next run marks it ``died`` when it takes the lease over. ``snappy inspect`` shows the last runs, a
``running`` one whose process is gone or that lost the lease as dead (:func:`dead_reason`).
Run ids start with a UTC timestamp, so the folder lists in run order.
"""
from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any, Callable

from snappy.storage.fs import Files
from snappy.storage.lease import pid_alive

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


def dead_reason(record: dict, lease: dict | None, host: str | None = None,
                alive: Callable[[int], bool] | None = None) -> str | None:
    """Why a ``running`` record's run cannot be running any more (None: it may be, or it is not
    ``running``). ``lease``: :func:`snappy.storage.lease.state` of the index's lease; a live run
    holds it under its own run id."""
    if record.get("status") != "running":
        return None
    pid = record.get("pid")
    if pid and record.get("host") == (host or socket.gethostname()) and not (alive or pid_alive)(int(pid)):
        return f"its process (pid {pid}) is gone"
    if lease is None or lease.get("run_id") != record.get("run_id"):
        return "it does not hold the index's lease"
    if lease["state"] != "held":
        return f"its lease is {lease['state']}" + (f" ({lease['stale_reason']})" if lease["stale_reason"] else "")
    return None


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
