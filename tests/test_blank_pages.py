"""Blank pages are not stored: the read stage skips them and counts them; all-blank documents fail.

The Ray test shares one local Ray (2 CPUs) for this module.
"""
from __future__ import annotations

import os

import pyarrow as pa
import pytest
from reportlab.pdfgen import canvas

from pipelines.config import IndexConfig
from snappy.storage import IndexStore

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _pdf(path, pages: list[str | None]) -> None:
    """One Letter page per entry: a line of text, or nothing (None)."""
    c = canvas.Canvas(str(path))
    for text in pages:
        if text:
            c.setFont("Helvetica", 12)
            c.drawString(72, 700, text)
        c.showPage()
    c.save()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("blank-source")
    _pdf(out / "mixed.pdf", ["first page of text", None, "third page of text", None, None])
    _pdf(out / "empty.pdf", [None, None, None])
    _pdf(out / "text.pdf", ["only text here"])
    return out


def _work(src):
    from snappy.indexing.plan import WORK_SCHEMA
    from snappy.indexing.plan import Action

    rows = [{"ordinal": i, "doc_id": e.doc_id, "uri": e.uri, "raw_path": e.raw_path, "size": e.size, "etag": e.etag,
             "mtime_ns": e.mtime_ns, "known_hash": None, "action": int(Action.INDEX)} for i, e in enumerate(src.list())]
    return pa.Table.from_pylist(rows, schema=WORK_SCHEMA)


def test_read_stage_skips_blank_pages_and_says_how_many(source):
    from pipelines.stages import prepare_documents
    from snappy.documents.pages import RenderOptions
    from snappy.documents.sources import ReadLimits, Source

    src = Source(source)

    def run(**kw):
        out = pa.concat_tables(prepare_documents(_work(src), src, RenderOptions(dpi=50), ReadLimits(), epoch=1,
                                                 with_pixels=False, **kw))
        rows = out.select(["kind", "uri", "page_number", "page_count", "blank_pages", "error", "failure"]).to_pylist()
        pages = {}
        for r in rows:
            if r["kind"] == "page":
                pages.setdefault(os.path.basename(r["uri"]), []).append(r["page_number"])
        docs = {os.path.basename(r["uri"]): r for r in rows if r["kind"] == "doc"}
        return pages, docs

    pages, docs = run()
    assert pages == {"mixed.pdf": [1, 3], "text.pdf": [1]}  # page numbers keep their place
    mixed = docs["mixed.pdf"]
    assert (mixed["page_count"], mixed["blank_pages"], mixed["error"]) == (2, 3, None)
    assert (docs["text.pdf"]["page_count"], docs["text.pdf"]["blank_pages"]) == (1, 0)
    empty = docs["empty.pdf"]
    assert (empty["page_count"], empty["blank_pages"], empty["error"], empty["failure"]) == (
        0, 3, "all 3 pages are blank", "document")
    pages, docs = run(skip_blank=False)
    assert pages == {"mixed.pdf": [1, 2, 3, 4, 5], "text.pdf": [1], "empty.pdf": [1, 2, 3]}
    assert all(d["blank_pages"] == 0 and d["error"] is None for d in docs.values())


def test_pipeline_stores_no_blank_page_and_reports_them(ray_session, source, tmp_path):
    from pipelines.index import format_summary, run_index

    cfg = IndexConfig(str(source), str(tmp_path / "idx"), encoder="lexical", ocr="none", dpi=50.0)
    summary = run_index(cfg)
    d = summary["documents"]
    assert (d["listed"], d["indexed"], d["failed"]) == (3, 2, 1)
    assert summary["pages"] == 3 and summary["blank_pages"] == 3
    assert "3 pages (3 blank pages skipped)" in format_summary(summary)
    store = IndexStore(cfg.index)
    docs = {os.path.basename(r["uri"]): r for r in store.documents().to_pylist()}
    assert (docs["mixed.pdf"]["status"], docs["mixed.pdf"]["page_count"]) == ("indexed", 2)
    assert (docs["empty.pdf"]["status"], docs["empty.pdf"]["error"]) == ("failed", "all 3 pages are blank")
    name = {r["doc_id"]: n for n, r in docs.items()}
    pages = store.read("pages", ["doc_id", "page_number"]).to_pylist()
    assert sorted((name[p["doc_id"]], p["page_number"]) for p in pages) == [("mixed.pdf", 1), ("mixed.pdf", 3),
                                                                             ("text.pdf", 1)]
    assert [f["uri"] for f in summary["failures"]] == [str(source / "empty.pdf")]
