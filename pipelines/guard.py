"""Keeping one bad document from stopping or hanging a run: the poison ledger actor and a watchdog.

- :class:`Ledger` is a Ray actor around :class:`snappy.indexing.poison.PoisonLedger` (one per run, created
  by the driver, passed to the stages). Stages call it before and after each unit of work.
- :class:`Watchdog` ends the worker process when one unit runs past its time limit (a page that
  hangs inside native code cannot be interrupted otherwise); Ray restarts the worker, and the
  ledger, which was told why, fails the unit once it has killed its worker ``max_deaths`` times.

If the ledger actor is unreachable the stages go on without it (logged): it only adds safety.
The attempt numbers it hands out make the documents' generations (``snappy/storage/commit.py``);
inside a Ray task an attempt is never below Ray's own attempt number of the task (+1 per retry,
kept by the task's owner), so a retry after the ledger died still gets a generation of its own.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Sequence

from snappy.indexing.poison import PoisonLedger

log = logging.getLogger(__name__)


class LedgerImpl:
    def __init__(self, max_deaths: int = 3):
        self.ledger = PoisonLedger(max_deaths=max_deaths)

    def enter(self, keys: Sequence[str]) -> list[tuple[int, int, str | None]]:
        """For each key: (attempt, deaths, poison reason or None)."""
        return [(a, d, self.ledger.poisoned(k)) for k, (a, d) in zip(keys, self.ledger.enter(keys))]

    def exit(self, keys: Sequence[str]) -> None:
        self.ledger.exit(keys)

    def note(self, key: str, cause: str) -> None:
        self.ledger.note(key, cause)

    def stats(self) -> dict:
        return {"deaths": dict(self.ledger.deaths), "notes": dict(self.ledger.notes)}


def start_ledger(max_deaths: int = 3):
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(LedgerImpl).remote(max_deaths)


def task_attempt() -> int | None:
    """Ray's attempt number of the running task (0, +1 per retry); None outside a Ray task."""
    ray = sys.modules.get("ray")
    try:
        if ray is None or not ray.is_initialized() or ray.get_runtime_context().get_task_id() is None:
            return None
        return int(ray._private.worker.global_worker.core_worker.get_current_task_attempt_number())
    except Exception as e:  # a private API: without it, the fallback below
        log.debug("no task attempt number from Ray (%s: %s)", type(e).__name__, e)
        return None


_entries_without_ledger: dict[str, int] = {}  # outside Ray tasks: this process's count per key


class LedgerClient:
    """What a stage holds: calls the actor, or goes on without it if there is none / it is gone.

    The attempt it returns differs between executions of a unit entered once per execution of its
    task (a document): the actor's count raised to Ray's task attempt number; without the actor,
    that attempt number, or outside a Ray task (no retries there) this process's count."""

    def __init__(self, handle=None, timeout_s: float = 30.0):
        self.handle, self.timeout_s = handle, timeout_s

    def enter(self, keys: Sequence[str]) -> list[tuple[int, int, str | None]]:
        floor = task_attempt()
        if self.handle is not None:
            try:
                import ray

                verdicts = ray.get(self.handle.enter.remote(list(keys)), timeout=self.timeout_s)
                return [(max(a, floor or 0), d, p) for a, d, p in verdicts]
            except Exception as e:
                log.warning("poison ledger unavailable (%s); going on without it", e)
                self.handle = None
        if floor is not None:
            return [(floor, 0, None)] * len(keys)
        out = []
        for k in keys:
            n = _entries_without_ledger.get(k, 0)
            _entries_without_ledger[k] = n + 1
            out.append((n, 0, None))
        return out

    def exit(self, keys: Sequence[str]) -> None:
        if self.handle is not None:
            try:
                self.handle.exit.remote(list(keys))
            except Exception as e:
                log.warning("poison ledger unavailable (%s); going on without it", e)
                self.handle = None

    def note(self, key: str, cause: str) -> None:
        if self.handle is not None:
            try:
                import ray

                ray.get(self.handle.note.remote(key, cause), timeout=self.timeout_s)
            except Exception as e:  # the note only names the cause of a death; the count is kept
                log.warning("poison ledger unavailable (%s); %s's cause not recorded: %s", e, key, cause)


class Watchdog:
    """``with Watchdog(60, on_timeout):`` — if the block is still running after 60 s, call
    ``on_timeout()`` then end this process (exit code 70). ``seconds=None`` disables it."""

    def __init__(self, seconds: float | None, on_timeout=None):
        self.seconds, self.on_timeout = seconds, on_timeout
        self._done = threading.Event()

    def _run(self) -> None:
        if self._done.wait(self.seconds):
            return
        try:
            if self.on_timeout is not None:
                self.on_timeout()
        finally:
            log.error("time limit of %.0f s exceeded: ending worker process %d", self.seconds, os.getpid())
            os._exit(70)

    def __enter__(self) -> "Watchdog":
        if self.seconds:
            threading.Thread(target=self._run, name="snappy-watchdog", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
