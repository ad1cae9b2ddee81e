"""When a document being indexed is complete, how it ended, and its new documents row (pure).

An indexing run streams reports back to its driver: one per page (written, or the error that
stopped it) and one per document attempt (what was read, how many pages were rendered, or the
error). They arrive in any order, and a retried attempt may report pages twice under another
generation. :class:`DocumentTracker` settles a document once its report and all its pages of the
same generation have arrived; pages of another generation are strays, to be deleted.

:func:`document_row` turns a settled document into its documents row, given what the index knew
(``known``): how failures keep or drop the previous content is decided here.

| outcome        | documents row                                       | rows kept          |
|----------------|-----------------------------------------------------|--------------------|
| indexed        | indexed, new generation, new hash, attempts 0       | the new generation |
| touched        | the known row, new fingerprint (same bytes)          | unchanged          |
| document error | failed, the reason, kept until the bytes change     | none               |
| transient      | known indexed: the known row + error, attempts + 1  | the known ones     |
|                | otherwise: pending, the reason, attempts + 1        | none               |
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from snappy.storage.schema import FAILED, INDEXED, PENDING, IndexSettings, document_record

INDEXED_OUTCOME, TOUCHED, DOCUMENT_ERROR, TRANSIENT = "indexed", "touched", "document", "transient"


@dataclass
class Settled:
    doc_id: str
    outcome: str  # INDEXED_OUTCOME | TOUCHED | DOCUMENT_ERROR | TRANSIENT
    gen: int
    report: dict  # the document's report row (uri, size, etag, mtime_ns, content_hash, page_count, ...)
    error: str | None = None
    pages: int = 0


@dataclass
class _Attempt:
    report: dict | None = None
    pages: int = 0
    error: tuple[str, str] | None = None  # (failure kind, reason) of the first failed page


@dataclass
class DocumentTracker:
    """Collects page and document reports; yields documents as they complete."""

    attempts: dict[str, dict[int, _Attempt]] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)  # doc_id -> settled gen (this run)
    drop_gens: set[int] = field(default_factory=set)  # generations of pages that arrived for no live attempt
    _ready: list[Settled] = field(default_factory=list)

    def page(self, doc_id: str, gen: int, error: str | None = None, failure: str | None = None) -> None:
        if doc_id in self.done:
            if gen != self.done[doc_id]:
                self.drop_gens.add(int(gen))
            return
        a = self.attempts.setdefault(doc_id, {}).setdefault(int(gen), _Attempt())
        a.pages += 1
        if error is not None and a.error is None:
            a.error = (failure or TRANSIENT, error)
        self._maybe_settle(doc_id, int(gen))

    def document(self, report: dict) -> None:
        """A document attempt's report: doc_id, gen, page_count (pages emitted), error, failure, touched, ..."""
        doc_id, gen = report["doc_id"], int(report["gen"])
        if doc_id in self.done:
            if gen != self.done[doc_id]:
                self.drop_gens.add(gen)
            return
        self.attempts.setdefault(doc_id, {}).setdefault(gen, _Attempt()).report = report
        self._maybe_settle(doc_id, gen)

    def _maybe_settle(self, doc_id: str, gen: int) -> None:
        a = self.attempts[doc_id][gen]
        r = a.report
        if r is None or a.pages < int(r.get("page_count") or 0):
            return
        if r.get("error"):
            outcome, error = (DOCUMENT_ERROR if r.get("failure") == DOCUMENT_ERROR else TRANSIENT), r["error"]
        elif a.error is not None:
            outcome, error = (DOCUMENT_ERROR if a.error[0] == DOCUMENT_ERROR else TRANSIENT), a.error[1]
        elif r.get("touched"):
            outcome, error = TOUCHED, None
        else:
            outcome, error = INDEXED_OUTCOME, None
        others = self.attempts.pop(doc_id)
        self.drop_gens.update(g for g in others if g != gen)
        self.done[doc_id] = gen
        self._ready.append(Settled(doc_id, outcome, gen, r, error, a.pages))

    def take(self) -> list[Settled]:
        """Documents settled since the last call."""
        out, self._ready = self._ready, []
        return out

    def take_drop_gens(self) -> set[int]:
        out, self.drop_gens = self.drop_gens, set()
        return out

    def unsettled(self) -> list[str]:
        return sorted(self.attempts)

    def abandon(self, doc_id: str, reason: str) -> Settled:
        """Settle a document whose reports never completed (the pipeline lost them) as transient."""
        atts = self.attempts.pop(doc_id, {})
        self.drop_gens.update(atts)
        report = next((a.report for a in atts.values() if a.report), None) or {"doc_id": doc_id}
        self.done[doc_id] = -1
        return Settled(doc_id, TRANSIENT, -1, report, reason)


def document_row(s: Settled, known: dict | None, settings: IndexSettings, listed: dict) -> tuple[dict, int | None]:
    """The documents row for a settled document and the generation whose rows it keeps.

    ``known``: the document's previous row (None if new); ``listed``: what the listing said
    (uri, size, etag, mtime_ns) — the fingerprint recorded, so an unchanged entry is skipped next run.
    """
    r = s.report
    fp = {"size": listed.get("size"), "etag": listed.get("etag"), "mtime_ns": listed.get("mtime_ns")}
    now = datetime.now(timezone.utc)
    if s.outcome == INDEXED_OUTCOME:
        row = document_record(listed["uri"], settings, digest=r.get("content_hash"), page_count=s.pages,
                              gen=s.gen, doc_id=s.doc_id, **fp)
        return row, s.gen
    if s.outcome == TOUCHED and known is not None:
        row = {**known, **fp, "checked_at": now}
        if row.get("status") == INDEXED:
            row.update(error=None, failure=None, attempts=0)
        return row, None if row.get("status") != INDEXED else row.get("gen")
    if s.outcome == DOCUMENT_ERROR or (s.outcome == TOUCHED and known is None):
        row = document_record(listed["uri"], settings, digest=r.get("content_hash"), error=s.error or "failed",
                              failure=DOCUMENT_ERROR, status=FAILED, doc_id=s.doc_id, **fp)
        return row, None
    attempts = int((known or {}).get("attempts") or 0) + 1
    if known is not None and known.get("status") == INDEXED:  # keep serving the previous content
        row = {**known, **fp, "error": s.error, "failure": TRANSIENT, "attempts": attempts, "checked_at": now}
        return row, known.get("gen")
    row = document_record(listed["uri"], settings, error=s.error, failure=TRANSIENT, status=PENDING,
                          attempts=attempts, doc_id=s.doc_id, **fp)
    return row, None


def rejected_row(listed: dict, reason: str, settings: IndexSettings) -> dict:
    """The documents row of a listed entry that cannot be a document (a directory, a FIFO, ...)."""
    return document_record(listed["uri"], settings, error=reason, failure=DOCUMENT_ERROR, status=FAILED,
                           doc_id=listed["doc_id"], size=listed.get("size"), etag=listed.get("etag"),
                           mtime_ns=listed.get("mtime_ns"))
