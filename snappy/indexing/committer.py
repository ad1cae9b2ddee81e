"""The index run's commits: the pipeline's reports in, documents settled, a commit when due.

:class:`Committer` takes the small reports the Ray pipeline streams back to the driver (pages,
documents, written fragments), settles each document once all its pages are in
(:mod:`snappy.indexing.settle`), and commits at least every ``Cadence.every_docs`` settled documents or
``Cadence.every_s`` seconds (:mod:`snappy.storage.commit`: readers see whole documents or none).
No Ray here: ``pipelines/index.py`` feeds it; ``tests/test_committer.py`` drives it by hand.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import pyarrow as pa

from snappy.indexing.plan import KnownDocuments, Plan, doc_keys
from snappy.indexing.settle import DocumentTracker, document_row, rejected_row
from snappy.storage.commit import CommitBatch, sql_list
from snappy.storage.schema import CODES, DOCUMENTS, PAGES, REGIONS, SCHEMAS, IndexSettings

log = logging.getLogger("pipelines.index")  # the run's log (its lines are the run's, as before the move)

TIMING = ("read_s", "render_s", "encode_s", "ocr_s", "embed_s", "write_s")  # seconds per row, per stage


@dataclass(frozen=True)
class Cadence:
    """When the run commits: once this many documents are settled, or this many seconds passed."""

    every_docs: int
    every_s: float


class TextSources:
    """Where the run's pages got their text (counts by ``text_source`` and ``text_code``) and the
    documents whose text layer failed its OCR check: the run summary's ``text`` section."""

    def __init__(self):
        self.sources: dict[str, int] = {}
        self.codes: dict[str, int] = {}
        self.checks = {"passed": 0, "failed": 0, "unavailable": 0}
        self.failed_checks: list[dict] = []

    def page(self, source: str | None, code: str | None) -> None:
        source = source or "none"  # no text at all: --ocr none and no text layer
        self.sources[source] = self.sources.get(source, 0) + 1
        if code:
            self.codes[code] = self.codes.get(code, 0) + 1

    def document(self, uri: str | None, check: str | None, ok: bool | None) -> None:
        if check is None:
            return
        self.checks["passed" if ok else "failed" if ok is False else "unavailable"] += 1
        if ok is False and len(self.failed_checks) < 50:
            self.failed_checks.append({"uri": uri, "check": check})

    def summary(self) -> dict:
        return {"pages_by_source": dict(sorted(self.sources.items())),
                "pages_by_reason": dict(sorted(self.codes.items(), key=lambda kv: -kv[1])),
                "checks": dict(self.checks), "failed_checks": list(self.failed_checks)}


class Committer:
    """Turns the pipeline's reports into commits: settles documents, batches them, commits on schedule."""

    def __init__(self, writer, known: KnownDocuments, settings: IndexSettings, plan: Plan, cadence: Cadence,
                 dim: int, on_commit=None):
        self.writer, self.known, self.settings, self.plan, self.cadence, self.dim = \
            writer, known, settings, plan, cadence, dim
        self.tracker = DocumentTracker()
        self.on_commit = on_commit
        self.counts = {"indexed": 0, "touched": 0, "failed": 0, "retry_later": 0, "pruned": 0, "pages": 0,
                       "blank_pages": 0, "regions": 0, "commits": 0}
        self.failures: list[dict] = []
        self.stage_seconds = {k[:-2]: 0.0 for k in TIMING}
        self.workers: dict[str, set] = {"ocr": set(), "embed": set()}
        self.text = TextSources()
        self._reset()
        self.last_commit = time.monotonic()

    def _reset(self) -> None:
        self.fragments: dict[str, list[dict]] = {PAGES: [], REGIONS: [], CODES: []}
        self.doc_rows: list[dict] = []
        self.settled: list = []
        self.settle: dict[str, int | None] = {}
        self.delete_documents: list[str] = []
        self.pending_pages = self.pending_regions = 0

    # ------------------------------------------------------------------ input
    def add_reports(self, batch: pa.Table) -> None:
        for r in batch.to_pylist():
            kind = r["kind"]
            if kind == "fragments":
                self.fragments[r["table"]].extend(json.loads(r["fragments"]))
            elif kind == "page":
                if r["error"] is None:
                    self.pending_pages += 1
                    self.pending_regions += r["regions"] or 0
                    self.text.page(r["text_source"], r["text_code"])
                for k in TIMING:
                    self.stage_seconds[k[:-2]] += r[k] or 0.0
                for w in ("ocr", "embed"):
                    if r[f"{w}_worker"]:
                        self.workers[w].add(r[f"{w}_worker"])
                self.tracker.page(r["doc_id"], r["gen"], r["error"], r["failure"])
            elif kind == "doc":
                self.stage_seconds["read"] += r["read_s"] or 0.0
                self.text.document(r["uri"], r["text_check"], r["text_check_ok"])
                self.tracker.document(r)
        for s in self.tracker.take():
            self._settled(s)

    def add_rejects(self, rejects: list[tuple[dict, str]]) -> None:
        for listed, reason in rejects:
            self.doc_rows.append(rejected_row(listed, reason, self.settings))
            self.settle[listed["doc_id"]] = None
            self.counts["failed"] += 1
            self.failures.append({"uri": listed["uri"], "error": reason})

    def add_prune(self, doc_ids: list[str]) -> None:
        for d in doc_ids:
            self.settle[d] = None
        self.delete_documents.extend(doc_ids)
        self.counts["pruned"] += len(doc_ids)

    def _settled(self, s) -> None:
        self.settled.append(s)
        if s.error:
            uri = self.plan.listed_of.get(s.doc_id, {}).get("uri") or s.report.get("uri")
            self.failures.append({"uri": uri, "error": s.error, "kind": s.outcome})

    def _known_rows(self, doc_ids: list[str]) -> dict[str, dict]:
        """The index's current rows of these documents (read at commit time: never the whole table)."""
        store = self.writer.store
        if not doc_ids or not store.exists(DOCUMENTS):
            return {}
        t = store.dataset(DOCUMENTS).to_table(filter=f"doc_id IN ({sql_list(doc_ids)})")
        return {r["doc_id"]: r for r in t.to_pylist()}

    def _document_rows(self) -> None:
        """Documents rows (and kept generations) of the documents settled since the last commit."""
        if not self.settled:
            return
        ids = [s.doc_id for s in self.settled]
        in_index = self.known.lookup(doc_keys(ids)) >= 0
        known = self._known_rows([d for d, k in zip(ids, in_index) if k])
        for s in self.settled:
            listed = self.plan.listed_of.get(s.doc_id, {"doc_id": s.doc_id, "uri": s.report.get("uri")})
            row, keep = document_row(s, known.get(s.doc_id), self.settings, listed)
            self.doc_rows.append(row)
            if s.outcome != "touched":  # a touch wrote no rows: nothing to replace
                self.settle[s.doc_id] = keep
            if s.outcome in ("indexed", "touched"):
                self.counts[s.outcome] += 1
                self.counts["blank_pages"] += int(s.report.get("blank_pages") or 0)
            elif row["status"] == "failed":
                self.counts["failed"] += 1
            else:
                self.counts["retry_later"] += 1
        self.settled = []

    # ------------------------------------------------------------------ commit
    def due(self) -> bool:
        n = len(self.settled) + len(self.settle)
        return n >= self.cadence.every_docs or (time.monotonic() - self.last_commit >= self.cadence.every_s
                                                 and n > 0)

    def commit(self) -> None:
        self._document_rows()
        docs = pa.Table.from_pylist(self.doc_rows, schema=SCHEMAS[DOCUMENTS]()) if self.doc_rows else None
        batch = CommitBatch(fragments=self.fragments, documents=docs, settle=self.settle,
                            drop_gens=self.tracker.take_drop_gens(), delete_documents=sorted(set(self.delete_documents)),
                            dim=self.dim)
        if batch.is_empty():
            return
        t = time.perf_counter()
        snap = self.writer.commit(batch)
        self.counts["commits"] += 1
        self.counts["pages"] += self.pending_pages
        self.counts["regions"] += self.pending_regions
        log.info("commit %d: %d documents settled, snapshot %s (%.1f s)", self.counts["commits"], len(self.settle),
                 snap.seq if snap else "-", time.perf_counter() - t)
        self._reset()
        self.last_commit = time.monotonic()
        if self.on_commit is not None:
            self.on_commit(self)

    def finish(self) -> None:
        for doc_id in self.tracker.unsettled():
            self._settled(self.tracker.abandon(doc_id, "the pipeline lost some of its pages (retried next run)"))
        self.commit()
