"""The run's decisions without Ray: what to index, check, skip, reject, retry, prune; settling; poison."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from snappy.indexing.plan import Action, KnownDocuments, ListedChunk, PlanOptions, doc_keys, plan_chunk
from snappy.indexing.poison import PoisonLedger, careful
from snappy.indexing.settle import DOCUMENT_ERROR, INDEXED_OUTCOME, TOUCHED, TRANSIENT, DocumentTracker, document_row
from snappy.ids import doc_id_for
from snappy.storage.schema import IndexSettings, document_record, documents_schema

SETTINGS = IndexSettings("lexical:d128", "rapid", 150.0)
ROOT = "/lake"


@dataclass
class Entry:  # the fields of snappy.documents.sources.SourceEntry the planner reads
    uri: str
    size: int | None = 100
    etag: str | None = None
    mtime_ns: int | None = 1
    problem: str | None = None

    @property
    def doc_id(self) -> str:
        return doc_id_for(self.uri)


def known(*rows: dict) -> KnownDocuments:
    return KnownDocuments.from_table(pa.Table.from_pylist(list(rows), schema=documents_schema()), ROOT)


def row(name: str, size=100, mtime_ns=1, etag=None, settings=SETTINGS, **kw) -> dict:
    kw.setdefault("digest", "h-" + name)
    return document_record(f"{ROOT}/{name}", settings, size=size, mtime_ns=mtime_ns, etag=etag, **kw)


def plan(entries, k: KnownDocuments, **opts):
    cp = plan_chunk(ListedChunk.from_entries(entries), k, SETTINGS.to_json(), PlanOptions(**opts),
                    budget=opts.get("limit"))
    return [Action(a).name for a in cp.action], cp.counts()


def test_doc_keys_are_the_hex_ids_as_integers():
    ids = [doc_id_for(f"/x/{i}") for i in range(50)]
    assert doc_keys(ids).tolist() == [int(i, 16) for i in ids]
    assert doc_keys(pa.array(ids).slice(7, 5)).tolist() == [int(i, 16) for i in ids[7:12]]
    with pytest.raises(ValueError):
        doc_keys(["xyz"])


def test_unchanged_fingerprint_skips_without_reading_changed_one_is_checked():
    k = known(row("a.pdf"), row("b.pdf"), row("c.pdf", etag="e1"))
    actions, counts = plan([Entry(f"{ROOT}/a.pdf"), Entry(f"{ROOT}/b.pdf", mtime_ns=2), Entry(f"{ROOT}/c.pdf", etag="e2"),
                            Entry(f"{ROOT}/new.pdf")], k)
    assert actions == ["SKIP", "CHECK", "CHECK", "INDEX"]
    assert counts == {"unchanged": 1, "changed": 2, "new": 1}


def test_settings_full_and_missing_hash_index_directly():
    other = IndexSettings("colpali:x", "rapid", 150.0)
    k = known(row("a.pdf", settings=other), row("b.pdf"), row("c.pdf", digest=None))
    assert plan([Entry(f"{ROOT}/a.pdf"), Entry(f"{ROOT}/b.pdf"), Entry(f"{ROOT}/c.pdf", size=5)], k)[0] == \
        ["INDEX", "SKIP", "INDEX"]
    assert plan([Entry(f"{ROOT}/b.pdf")], k, incremental=False)[0] == ["INDEX"]


def test_failures_document_kept_transient_retried_up_to_the_cap():
    k = known(row("bad.pdf", error="not a PDF"),  # the document's own fault
              row("oom.pdf", error="OutOfMemoryError", failure="transient", status="pending", attempts=1),
              row("tired.pdf", error="timeout", failure="transient", status="pending", attempts=3),
              row("stale.pdf", error="S3 503", failure="transient", status="indexed", attempts=1))  # last update failed
    entries = [Entry(f"{ROOT}/{n}") for n in ("bad.pdf", "oom.pdf", "tired.pdf", "stale.pdf")]
    actions, counts = plan(entries, k)
    assert actions == ["SKIP", "INDEX", "SKIP", "INDEX"]
    assert counts == {"failed_unchanged": 1, "retry": 2, "gave_up": 1}
    assert plan(entries, k, retry_failed=True)[0] == ["INDEX"] * 4
    assert plan([Entry(f"{ROOT}/bad.pdf", size=7)], k)[0] == ["CHECK"]  # its bytes changed: look again


def test_after_failures_only_a_new_size_or_etag_is_a_change():
    # /proc/self/mem behind a symlink: size 0, a new mtime (the lister's start) every night, every read fails
    k = known(row("mem.pdf", size=0, digest=None, error="read error (EIO)", failure="transient", status="pending",
                  attempts=3),
              row("young.pdf", size=0, digest=None, error="read error (EIO)", failure="transient", status="pending",
                  attempts=1),
              row("stale.pdf", error="S3 503", failure="transient", status="indexed", attempts=3),
              row("bad.pdf", error="not a PDF"), row("unread.pdf", digest=None, error="over max_bytes"),
              row("s3.pdf", etag="e1", digest=None, error="S3 503", failure="transient", status="pending", attempts=3))
    names = ("mem.pdf", "young.pdf", "stale.pdf", "bad.pdf", "unread.pdf", "s3.pdf")
    sizes = {"mem.pdf": 0, "young.pdf": 0}
    etags = {"s3.pdf": "e1"}
    touched = [Entry(f"{ROOT}/{n}", size=sizes.get(n, 100), etag=etags.get(n), mtime_ns=99) for n in names]
    actions, counts = plan(touched, k)
    assert actions == ["SKIP", "INDEX", "SKIP", "SKIP", "SKIP", "SKIP"]  # under the cap: retried as before
    assert counts == {"gave_up": 3, "unhashed": 1, "failed_unchanged": 2}
    grown = [Entry(e.uri, size=e.size + 1, etag=e.etag, mtime_ns=99) for e in touched]
    assert plan(grown, k)[0] == ["INDEX", "INDEX", "CHECK", "CHECK", "INDEX", "INDEX"]
    assert plan([Entry(f"{ROOT}/s3.pdf", etag="e2")], k)[0] == ["INDEX"]  # a new ETag is a change
    assert plan(touched, k, retry_failed=True)[0] == ["INDEX", "INDEX", "CHECK", "CHECK", "INDEX", "INDEX"]
    assert plan(touched, k, max_attempts=4)[0][0] == "INDEX"  # a higher cap: not waiting yet
    other = IndexSettings("colpali:x", "rapid", 150.0)
    assert plan_chunk(ListedChunk.from_entries(touched), k, other.to_json()).counts() == {"settings": 6}
    # an indexed document is unaffected: a new mtime is still checked
    assert plan([Entry(f"{ROOT}/ok.pdf", mtime_ns=99)], known(row("ok.pdf")))[0] == ["CHECK"]


def test_text_layer_setting_reindexes_only_when_it_differs_from_what_old_runs_did():
    """Indexes written before --text-layer existed stored settings without the key: that was "off"."""
    import json

    assert SETTINGS.to_json() == IndexSettings("lexical:d128", "rapid", 150.0, text_layer="off").to_json()
    assert "text_layer" not in json.loads(SETTINGS.to_json())  # the JSON old runs wrote
    k = known(row("a.pdf"))  # an old row
    for mode, want in (("off", ["SKIP"]), ("auto", ["INDEX"]), ("only", ["INDEX"])):
        new = IndexSettings("lexical:d128", "rapid", 150.0, text_layer=mode)
        cp = plan_chunk(ListedChunk.from_entries([Entry(f"{ROOT}/a.pdf")]), k, new.to_json())
        assert [Action(a).name for a in cp.action] == want, mode
    auto = IndexSettings("lexical:d128", "rapid", 150.0, text_layer="auto")
    k = known(row("a.pdf", settings=auto))
    assert plan_chunk(ListedChunk.from_entries([Entry(f"{ROOT}/a.pdf")]), k, auto.to_json()).counts() == \
        {"unchanged": 1}
    assert plan_chunk(ListedChunk.from_entries([Entry(f"{ROOT}/a.pdf")]), k, SETTINGS.to_json()).counts() == \
        {"settings": 1}


def test_rejected_entries_are_recorded_once():
    k = known(row("dir.pdf", error="is a directory, not a document", size=None, mtime_ns=None, digest=None))
    entries = [Entry(f"{ROOT}/dir.pdf", size=None, mtime_ns=None, problem="is a directory, not a document"),
               Entry(f"{ROOT}/pipe.pdf", size=0, problem="not a regular file (FIFO)")]
    actions, counts = plan(entries, k)
    assert actions == ["SKIP", "REJECT"] and counts == {"rejected_unchanged": 1, "rejected": 1}
    # a new mtime (a file added to the folder; /proc/self has a new one every process) changes nothing
    assert plan([Entry(f"{ROOT}/dir.pdf", size=None, mtime_ns=7, problem="is a directory, not a document")], k)[0] \
        == ["SKIP"]


def test_limit_caps_reads_and_prune_uses_the_whole_listing():
    k = known(row("a.pdf"), row("b.pdf"), row("gone.pdf"), document_record("/elsewhere/x.pdf", SETTINGS))
    entries = [Entry(f"{ROOT}/a.pdf", mtime_ns=9), Entry(f"{ROOT}/b.pdf"), Entry(f"{ROOT}/n1.pdf"),
               Entry(f"{ROOT}/n2.pdf")]
    actions, counts = plan(entries, k, limit=2)
    assert actions == ["CHECK", "SKIP", "INDEX", "DEFER"] and counts["deferred"] == 1
    # every listed entry counts as seen, deferred or not: only the vanished document is pruned,
    # and not the one outside this source's root
    assert k.unseen_in_scope().column("uri").to_pylist() == [f"{ROOT}/gone.pdf"]


def test_planning_a_large_listing_is_vectorised():
    n = 200_000
    rows = pa.Table.from_pylist([row(f"{i:07d}.pdf", digest="h") for i in range(n)], schema=documents_schema())
    k = KnownDocuments.from_table(rows, ROOT)
    entries = [Entry(f"{ROOT}/{i:07d}.pdf", mtime_ns=1 if i % 1000 else 2) for i in range(n)]
    actions, counts = plan(entries, k)
    assert counts == {"unchanged": n - n // 1000, "changed": n // 1000}
    assert k.seen.all()


# ---------------------------------------------------------------------- settling reports
def test_tracker_settles_when_every_page_of_the_attempt_arrived_in_any_order():
    t = DocumentTracker()
    t.page("d1", 10)
    t.document({"doc_id": "d1", "gen": 10, "page_count": 2, "content_hash": "h"})
    assert t.take() == []
    t.page("d1", 10)
    (s,) = t.take()
    assert (s.doc_id, s.outcome, s.gen, s.pages) == ("d1", INDEXED_OUTCOME, 10, 2)
    t.page("d1", 11)  # a stray page of another attempt that arrives late
    assert t.take_drop_gens() == {11}


def test_tracker_outcomes_errors_touches_and_lost_documents():
    t = DocumentTracker()
    t.page("p", 1, error="OCR failed on page 1: segfault", failure="transient")
    t.document({"doc_id": "p", "gen": 1, "page_count": 1})
    t.document({"doc_id": "bad", "gen": 2, "page_count": 0, "error": "PDF has no pages", "failure": "document"})
    t.document({"doc_id": "same", "gen": 3, "page_count": 0, "touched": True})
    t.page("lost", 4)
    assert {s.doc_id: s.outcome for s in t.take()} == {"p": TRANSIENT, "bad": DOCUMENT_ERROR, "same": TOUCHED}
    assert t.unsettled() == ["lost"]
    assert t.abandon("lost", "lost").outcome == TRANSIENT and t.take_drop_gens() == {4}


def test_document_rows_keep_or_drop_previous_content():
    listed = {"doc_id": doc_id_for(f"{ROOT}/a.pdf"), "uri": f"{ROOT}/a.pdf", "size": 5, "etag": None, "mtime_ns": 9}
    old = row("a.pdf", gen=7, page_count=3)
    t = DocumentTracker()
    t.document({"doc_id": listed["doc_id"], "gen": 8, "page_count": 0, "error": "S3 timeout", "failure": "transient"})
    (s,) = t.take()
    new, keep = document_row(s, old, SETTINGS, listed)
    assert keep == 7 and new["status"] == "indexed" and new["gen"] == 7 and new["page_count"] == 3  # old content served
    assert (new["error"], new["attempts"], new["mtime_ns"]) == ("S3 timeout", 1, 9)
    fresh, keep = document_row(s, None, SETTINGS, listed)
    assert keep is None and fresh["status"] == "pending" and fresh["attempts"] == 1 and fresh["content_hash"] is None
    t.document({"doc_id": "x" * 16, "gen": 9, "page_count": 0, "error": "over max_pages", "failure": "document"})
    (s,) = t.take()
    failed, keep = document_row(s, old, SETTINGS, {**listed, "doc_id": "x" * 16})
    assert keep is None and failed["status"] == "failed" and failed["failure"] == "document" and failed["gen"] is None


# ---------------------------------------------------------------------- poison ledger
def test_poison_ledger_charges_deaths_and_gives_up():
    led = PoisonLedger(max_deaths=3)
    assert led.enter(["a", "b"]) == [(0, 0), (0, 0)]  # first batch ...
    # ... the worker died holding both: the retry sees one death each and goes one by one
    attempts = led.enter(["a", "b"])
    assert attempts == [(1, 1), (1, 1)] and careful([d for _, d in attempts])
    led.exit(["a", "b"])
    led.enter(["b"]), led.exit(["b"])  # b alone is fine
    led.enter(["a"])  # a alone kills its worker
    led.note("a", "OCR took over 300 s")
    led.enter(["a"])  # and again
    assert led.poisoned("a") is None and led.poisoned("b") is None
    led.enter(["a"])
    assert led.poisoned("a") == "the worker died 3 times while processing it (last: OCR took over 300 s)"
    assert led.poisoned("b") is None and led.entries["a"] == 5
    assert np.all([careful([0, 0]) is False])


def test_ledger_client_without_its_actor_never_repeats_an_attempt():
    from pipelines.guard import LedgerClient
    from snappy.storage.commit import make_gen

    class Gone:  # a handle whose calls raise, as a dead actor's do
        class enter:  # noqa: N801
            @staticmethod
            def remote(keys):
                raise RuntimeError("The actor died unexpectedly before finishing this task.")

    # prepare_documents makes a client per batch: the attempts must differ across clients too
    key = f"doc:{doc_id_for('/ledger-test')}"
    verdicts = [LedgerClient(Gone()).enter([key, key + "-other"]) for _ in range(3)]
    assert all(d == 0 and p is None for v in verdicts for _, d, p in v)
    assert len({make_gen(1, 5, v[0][0]) for v in verdicts}) == 3  # three generations, not one
    assert LedgerClient(None).enter([key])[0][0] not in {v[0][0] for v in verdicts}
