"""The index run's commit decisions without Ray: reports in, documents settled, commits when due
(snappy/indexing/committer.py), and the run summary's text-source counts."""
from types import SimpleNamespace

import pyarrow as pa

from snappy.indexing import committer as committer_mod
from snappy.indexing.committer import TIMING, Cadence, Committer, TextSources
from snappy.ids import doc_id_for
from snappy.indexing.plan import KnownDocuments, Plan
from snappy.storage.schema import CODES, DOCUMENTS, PAGES, REGIONS, IndexSettings

SETTINGS = IndexSettings(encoder_id="lexical-v2", ocr_engine="none", dpi=150.0)
A, B = doc_id_for("/docs/a.pdf"), doc_id_for("/docs/b.pdf")
URI = {A: "/docs/a.pdf", B: "/docs/b.pdf"}


class FakeWriter:
    """What the committer needs of an IndexWriter: its store (an empty index) and commit()."""

    def __init__(self):
        self.store = SimpleNamespace(exists=lambda name: False)
        self.batches = []

    def commit(self, batch):
        self.batches.append(batch)
        return SimpleNamespace(seq=len(self.batches))


def report(kind: str, doc_id: str, gen: int = 7, **kw) -> dict:
    row = {"kind": kind, "doc_id": doc_id, "gen": gen, "error": None, "failure": None, "touched": None,
           "uri": URI.get(doc_id), "page_count": None, "regions": None, "table": None, "fragments": None,
           "content_hash": None, "text_source": None, "text_code": None, "text_check": None, "text_check_ok": None,
           "ocr_worker": None, "embed_worker": None, **{k: None for k in TIMING}}
    row.update(kw)
    return row


def page(doc_id: str, gen: int = 7, regions: int = 3, **kw) -> dict:
    return report("page", doc_id, gen, regions=regions, text_source="pdf", text_code="full", render_s=0.5, **kw)


def doc(doc_id: str, gen: int = 7, pages: int = 1, **kw) -> dict:
    return report("doc", doc_id, gen, page_count=pages, content_hash="h-" + doc_id, read_s=0.25, **kw)


def batch(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist(list(rows))


def make(every_docs: int = 100, every_s: float = 1e9, listed=(A, B)) -> tuple[Committer, FakeWriter]:
    plan = Plan(listed_of={d: {"doc_id": d, "uri": URI[d], "size": 10, "etag": None, "mtime_ns": 1} for d in listed})
    w = FakeWriter()
    return Committer(w, KnownDocuments.empty(), SETTINGS, plan, Cadence(every_docs, every_s), dim=128), w


def test_a_document_settles_once_its_report_and_all_its_pages_are_in():
    c, w = make()
    c.add_reports(batch(doc(A, pages=2), page(A)))
    assert c.settled == [] and c.tracker.unsettled() == [A]
    c.add_reports(batch(page(A)))
    assert [s.doc_id for s in c.settled] == [A] and c.settled[0].outcome == "indexed"
    c.commit()
    assert c.counts["indexed"] == 1 and c.counts["pages"] == 2 and c.counts["regions"] == 6
    assert c.counts["commits"] == 1 and w.batches[0].settle == {A: 7}
    row = w.batches[0].documents.to_pylist()[0]
    assert (row["doc_id"], row["status"], row["gen"], row["page_count"]) == (A, "indexed", 7, 2)
    assert c.stage_seconds["render"] == 1.0 and c.stage_seconds["read"] == 0.25


def test_commit_is_due_after_every_docs_settled_documents():
    c, w = make(every_docs=2)
    c.add_reports(batch(doc(A), page(A)))
    assert not c.due()
    c.add_reports(batch(doc(B), page(B)))
    assert c.due()
    c.commit()
    assert not c.due() and len(w.batches) == 1 and set(w.batches[0].settle) == {A, B}


def test_commit_is_due_after_every_s_seconds_only_with_something_to_commit(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(committer_mod.time, "monotonic", lambda: clock[0])
    c, w = make(every_docs=100, every_s=10.0)
    clock[0] += 60
    assert not c.due()  # nothing settled: no empty commit
    c.add_reports(batch(doc(A), page(A)))
    assert c.due()
    c.commit()
    assert not c.due()
    c.add_reports(batch(doc(B), page(B)))
    assert not c.due()  # the interval restarts at each commit
    clock[0] += 10
    assert c.due()


def test_an_empty_commit_writes_nothing():
    c, w = make()
    c.commit()
    assert w.batches == [] and c.counts["commits"] == 0


def test_failures_retries_rejects_and_prunes_are_counted():
    c, w = make()
    c.add_reports(batch(doc(A, pages=0, error="not a PDF", failure="document")))
    c.add_reports(batch(doc(B, pages=1), page(B, error="OutOfMemoryError", failure="transient", regions=None)))
    c.add_rejects([({"doc_id": "f" * 16, "uri": "/docs/dir.pdf", "size": None, "etag": None, "mtime_ns": None},
                    "is a directory, not a document")])
    c.add_prune(["e" * 16])
    c.commit()
    assert {k: c.counts[k] for k in ("indexed", "failed", "retry_later", "pruned", "pages")} == \
        {"indexed": 0, "failed": 2, "retry_later": 1, "pruned": 1, "pages": 0}
    rows = {r["doc_id"]: r for r in w.batches[0].documents.to_pylist()}
    assert rows[A]["status"] == "failed" and rows[B]["status"] == "pending" and rows["f" * 16]["status"] == "failed"
    assert w.batches[0].settle == {A: None, B: None, "f" * 16: None, "e" * 16: None}
    assert w.batches[0].delete_documents == ["e" * 16]
    assert {f["uri"] for f in c.failures} == {"/docs/a.pdf", "/docs/b.pdf", "/docs/dir.pdf"}


def test_finish_abandons_documents_whose_pages_never_came():
    c, w = make()
    c.add_reports(batch(doc(A, pages=3), page(A)))
    c.finish()
    assert c.counts["retry_later"] == 1 and c.counts["commits"] == 1
    row = w.batches[0].documents.to_pylist()[0]
    assert row["status"] == "pending" and "lost some of its pages" in row["error"]
    assert 7 in w.batches[0].drop_gens  # the abandoned attempt's rows go


def test_fragments_and_workers_are_collected_until_the_commit():
    c, w = make()
    frag = '[{"id": 1}]'
    c.add_reports(batch(report("fragments", A, table=PAGES, fragments=frag),
                        report("fragments", A, table=REGIONS, fragments=frag),
                        doc(A), page(A, ocr_worker='{"host": "h", "pid": 1}')))
    c.commit()
    assert w.batches[0].fragments == {PAGES: [{"id": 1}], REGIONS: [{"id": 1}], CODES: []}
    assert c.workers["ocr"] == {'{"host": "h", "pid": 1}'} and c.fragments[PAGES] == []
    assert DOCUMENTS not in w.batches[0].fragments


def test_text_sources_count_pages_by_source_and_reason():
    t = TextSources()
    t.page("pdf", "full")
    t.page("pdf", "full")
    t.page("ocr", "scan")
    t.page(None, None)  # no text at all
    s = t.summary()
    assert s["pages_by_source"] == {"none": 1, "ocr": 1, "pdf": 2}
    assert list(s["pages_by_reason"].items()) == [("full", 2), ("scan", 1)]  # most pages first


def test_text_sources_count_checks_and_keep_the_first_50_failures():
    t = TextSources()
    t.document("/a.pdf", None, None)  # not checked: not counted
    t.document("/b.pdf", "ocr agrees", True)
    t.document("/c.pdf", "no OCR engine", None)
    for i in range(60):
        t.document(f"/bad{i}.pdf", "ocr disagrees", False)
    s = t.summary()
    assert s["checks"] == {"passed": 1, "failed": 60, "unavailable": 1}
    assert len(s["failed_checks"]) == 50 and s["failed_checks"][0] == {"uri": "/bad0.pdf", "check": "ocr disagrees"}
