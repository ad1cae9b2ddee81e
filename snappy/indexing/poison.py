"""Work that kills its worker: count executions and deaths per unit, give up on a poison unit (pure).

A page that crashes the OCR engine (a segfault in native code, an out-of-memory kill, a hang
stopped by the time limit) kills its worker; Ray restarts the actor and retries the batch
forever. The ledger breaks that loop. Each unit of work (a document being rendered, a page
being OCR'd or embedded) is *entered* before it is processed and *exited* after; an entry never
exited means its worker died holding it.

A stage processes a batch whole the first time. When any unit of the batch has a death on
record, the stage processes the batch one unit at a time, so the next death is charged to the
unit that caused it; a unit with ``max_deaths`` deaths is not processed again and fails with the
recorded reason. An innocent unit in a batch that died is charged once and succeeds alone.

``enter`` also returns how many times a unit was entered before: the attempt number, which makes
each execution's rows a distinct generation (a re-executed document never duplicates rows).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class PoisonLedger:
    max_deaths: int = 3
    entries: dict[str, int] = field(default_factory=dict)  # times entered
    open: dict[str, int] = field(default_factory=dict)  # entered and not exited
    deaths: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # last known cause (e.g. "time limit")

    def enter(self, keys: Sequence[str]) -> list[tuple[int, int]]:
        """For each key: ``(attempt, deaths)`` — executions before this one, deaths charged so far."""
        out = []
        for k in keys:
            dead = self.open.get(k, 0)
            if dead:
                self.deaths[k] = self.deaths.get(k, 0) + dead
            self.open[k] = 1
            attempt = self.entries.get(k, 0)
            self.entries[k] = attempt + 1
            out.append((attempt, self.deaths.get(k, 0)))
        return out

    def exit(self, keys: Sequence[str]) -> None:
        for k in keys:
            if self.open.get(k):
                self.open[k] -= 1

    def note(self, key: str, cause: str) -> None:
        self.notes[key] = cause

    def poisoned(self, key: str) -> str | None:
        """The failure reason if ``key`` may not be processed again, else None."""
        n = self.deaths.get(key, 0)
        if n < self.max_deaths:
            return None
        cause = self.notes.get(key)
        return f"the worker died {n} times while processing it" + (f" (last: {cause})" if cause else
                                                                    " (a crash or out of memory)")


def careful(deaths: Sequence[int]) -> bool:
    """Whether a batch must be processed one unit at a time (a unit in it has a death on record)."""
    return any(d > 0 for d in deaths)
