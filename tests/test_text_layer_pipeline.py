"""The text layer in the indexing pipeline (issue 17): pages whose text layer is their text skip OCR
(no engine call), mixed pages OCR only their image areas, scans are OCR'd whole; with --ocr none the
text layer still gives regions; a text layer that reads wrong is caught by one OCR check per document.
The stage tests run without Ray; three go through Ray (one slow)."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from snappy.regions.region import Region

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

DPI = 72.0  # page pixels are PDF points, y down


def _pdf() -> bytes:
    """Page 1: born-digital text; page 2: an image only (a scan); page 3: text + a pasted image."""
    from test_pages import _text_and_scan_pdf

    return _text_and_scan_pdf()


class CountingOcr:
    """A fake engine: records the size of every image it is asked to read, answers one line at (10, 20)."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []

    def recognize(self, image):
        self.calls.append(image.size)
        return [Region(bbox=(10, 20, 110, 34), page_size=image.size, text="ocr words", level="line",
                       polygon=((10, 20), (110, 20), (110, 34), (10, 34)))]


def _work(src):
    from snappy.indexing.plan import WORK_SCHEMA
    from snappy.indexing.plan import Action

    rows = [{"ordinal": i, "doc_id": e.doc_id, "uri": e.uri, "raw_path": e.raw_path, "size": e.size, "etag": e.etag,
             "mtime_ns": e.mtime_ns, "known_hash": None, "action": int(Action.INDEX)} for i, e in enumerate(src.list())]
    return pa.Table.from_pylist(rows, schema=WORK_SCHEMA)


def _prepare(tmp_path, text_layer: str, data: bytes | None = None, docs: bool = False, **kw) -> pa.Table:
    from pipelines.stages import PAGE, prepare_documents
    from snappy.documents.pages import RenderOptions
    from snappy.documents.sources import ReadLimits, Source

    d = tmp_path / "src"
    d.mkdir(exist_ok=True)
    (d / "doc.pdf").write_bytes(_pdf() if data is None else data)
    src = Source(str(d))
    out = pa.concat_tables(prepare_documents(_work(src), src, RenderOptions(dpi=DPI, text_layer=text_layer),
                                             ReadLimits(), epoch=1, **kw))
    return out if docs else out.filter(pa.compute.equal(out.column("kind"), PAGE))


def _ocr_stage(engine):
    from pipelines.stages import OcrStage

    return OcrStage("none", engine=engine)


def _texts(row) -> list[str]:
    from snappy.indexing.document import regions_from_json

    return [r.text for r in regions_from_json(row["regions_json"])]


def test_read_stage_routes_pages_by_their_text_layer(tmp_path):
    rows = _prepare(tmp_path, "auto").to_pylist()
    assert [r["text_action"] for r in rows] == ["none", "full", "areas"]
    assert [r["ocr_needed"] for r in rows] == [False, True, True]
    assert _texts(rows[0])[0] == "Line 0 of born digital text about invoices and contracts." and len(_texts(rows[0])) == 12
    assert _texts(rows[1]) == [] and len(_texts(rows[2])) == 6
    (area,) = json.loads(rows[2]["ocr_areas"])
    assert np.allclose(area, [72, 392, 372, 592], atol=1)
    assert all(r["pixels"] is not None for r in rows)  # with_pixels: shipped for every page (encoder reads them)
    lean = _prepare(tmp_path, "auto", pixels_for_ocr_only=True).to_pylist()
    assert [r["pixels"] is not None for r in lean] == [False, True, True]  # no OCR, no pixel-reading encoder
    off = _prepare(tmp_path, "off").to_pylist()
    assert all(r["regions_json"] is None and r["ocr_needed"] is None for r in off)


def test_ocr_stage_skips_text_layer_pages_and_reads_only_the_areas(tmp_path):
    batch = _prepare(tmp_path, "auto")
    engine = CountingOcr()
    out = _ocr_stage(engine)(batch).to_pylist()
    w, h = out[0]["width"], out[0]["height"]
    # no call for the text-layer page; the scan whole; the mixed page: only the 300 x 200 pt image
    assert engine.calls == [(w, h), (300, 200)]
    assert out[0]["regions_json"] == batch.column("regions_json")[0].as_py()  # passed through untouched
    assert out[0]["ocr_s"] == 0.0 and _texts(out[1]) == ["ocr words"]
    from snappy.indexing.document import regions_from_json

    mixed = regions_from_json(out[2]["regions_json"])
    assert len(mixed) == 7 and [r.text for r in mixed].count("ocr words") == 1
    (found,) = [r for r in mixed if r.text == "ocr words"]
    assert found.source == "ocr" and {r.source for r in mixed if r is not found} == {"pdf"}
    assert np.allclose(found.bbox, (72 + 10, 392 + 20, 72 + 110, 392 + 34), atol=1)  # moved back to the page
    assert found.page_size == (w, h) and np.allclose(found.polygon[0], (82, 412), atol=1)
    assert mixed[-1].text == "ocr words"  # reading order: the image sits below the paragraph
    # --text-layer off: every page OCR'd whole, as before
    engine = CountingOcr()
    _ocr_stage(engine)(_prepare(tmp_path, "off"))
    assert engine.calls == [(w, h)] * 3


def _text_pdf(shift: bool = False) -> bytes:
    """Two pages of BODY in an embedded TrueType font; ``shift``: its ToUnicode map reads every letter
    as the next one ("a" -> "b"): a layer that passes every per-character test."""
    from test_textlayer import BODY, body, make_pdf, register_ttf, remap_tounicode

    font = register_ttf()

    def draw(c):
        body(c, BODY, font=font, size=12)
        c.showPage()
        body(c, BODY, font=font, size=12)

    data = make_pdf(draw)
    return remap_tounicode(data, lambda u: u + 1 if chr(u).isalpha() else u) if shift else data


def _picked(data: bytes) -> list[int]:
    """The lines (indices into BODY) check_crops picks on the first page of ``data``."""
    from snappy.documents.pages import RenderOptions, iter_pages
    from snappy.documents.textlayer import pick_check_lines

    page = next(iter(iter_pages(data, RenderOptions(dpi=DPI, text_layer="auto"))))
    return pick_check_lines(page.regions)


class TruthChecker:
    """A LayerChecker stand-in (no Ray, no engine): reads every crop as the text drawn there."""

    def __init__(self, lines):
        from test_textlayer import window

        self.lines, self.calls = [window(t) for t in lines], 0
        self.picked = list(range(len(lines)))  # which lines check_crops picks: set by the test

    def read(self, pngs):
        self.calls += 1
        crops = [Image.open(io.BytesIO(p)) for p in pngs]
        assert all(c.width > 100 for c in crops)  # line crops, not pages
        return [self.lines[k] for k in self.picked[:len(crops)]]


def test_a_text_layer_that_reads_wrong_sends_the_document_to_ocr(tmp_path):
    from test_textlayer import BODY

    from pipelines.stages import OcrStage

    # a shifted ToUnicode map: one OCR check of a few line crops (first page), then every page OCR'd
    checker = TruthChecker(BODY)
    checker.picked = _picked(_text_pdf())
    table = _prepare(tmp_path, "auto", data=_text_pdf(shift=True), docs=True, checkers=[checker])
    out = table.to_pylist()
    pages, (doc,) = [r for r in out if r["kind"] == "page"], [r for r in out if r["kind"] == "doc"]
    assert checker.calls == 1 and len(pages) == 2
    assert [(r["text_action"], r["text_code"], r["text_source"]) for r in pages] == [("full", "check_failed", "ocr")] * 2
    assert all(_texts(r) == [] and r["ocr_needed"] for r in pages)
    assert doc["text_check_ok"] is False and "reads wrong" in doc["text_check"]
    engine = CountingOcr()
    OcrStage("none", engine=engine)(table.filter(pa.compute.equal(table.column("kind"), "page")))
    assert len(engine.calls) == 2  # both pages OCR'd whole
    # the same document with a correct map: checked once, the text layer kept
    checker = TruthChecker(BODY)
    checker.picked = _picked(_text_pdf())
    out = _prepare(tmp_path, "auto", data=_text_pdf(), docs=True, checkers=[checker]).to_pylist()
    pages, (doc,) = [r for r in out if r["kind"] == "page"], [r for r in out if r["kind"] == "doc"]
    assert checker.calls == 1 and doc["text_check_ok"] is True
    assert [(r["text_action"], r["text_code"], r["text_source"]) for r in pages] == [("none", "text_layer", "pdf")] * 2
    assert _texts(pages[0])[0] == BODY[0]


def test_a_checker_that_fails_leaves_the_text_layer(tmp_path):
    class Broken:
        def read(self, pngs):
            raise RuntimeError("engine exploded")

    out = _prepare(tmp_path, "auto", data=_text_pdf(), docs=True, checkers=[Broken()]).to_pylist()
    (doc,) = [r for r in out if r["kind"] == "doc"]
    assert doc["text_check_ok"] is None and "unavailable" in doc["text_check"] and "engine exploded" in doc["text_check"]
    assert {r["text_action"] for r in out if r["kind"] == "page"} == {"none"}


def test_only_mode_never_calls_ocr(tmp_path):
    batch = _prepare(tmp_path, "only")
    assert batch.column("ocr_needed").to_pylist() == [False, False, False]
    engine = CountingOcr()
    out = _ocr_stage(engine)(batch).to_pylist()
    assert engine.calls == [] and len(_texts(out[0])) == 12


def test_ocr_none_run_indexes_text_layer_regions(ray_session, tmp_path):
    from pipelines.config import IndexConfig
    from pipelines.index import run_index
    from snappy.storage import IndexStore

    d = tmp_path / "src"
    d.mkdir()
    (d / "doc.pdf").write_bytes(_pdf())
    cfg = IndexConfig(str(d), str(tmp_path / "idx"), encoder="lexical", ocr="none", dpi=DPI)
    s = run_index(cfg)
    assert s["documents"]["indexed"] == 1
    regions = IndexStore(cfg.index).read("regions", ["page_number", "text", "level", "source"]).to_pylist()
    assert {r["source"] for r in regions} == {"pdf"}
    lines = [r for r in regions if r["level"] == "line"]
    by_page = {}
    for r in lines:
        by_page.setdefault(r["page_number"], []).append(r["text"])
    assert len(by_page[1]) == 12 and "Line 3 of born digital text about invoices and contracts." in by_page[1]
    assert 2 not in by_page and len(by_page[3]) == 6  # the scan and the pasted image: no OCR here
    # the run and the pages table say where each page's text came from, and why
    assert s["text"]["pages_by_source"] == {"ocr": 1, "pdf": 1, "pdf+ocr": 1}
    assert s["text"]["pages_by_reason"] == {"text_layer": 1, "no_text_layer": 1, "image_areas": 1}
    assert s["text"]["checks"] == {"passed": 0, "failed": 0, "unavailable": 0}  # --ocr none: nothing to check with
    pages = IndexStore(cfg.index).read("pages", ["page_number", "text_source", "text_code", "text_reason"])
    by_number = {r["page_number"]: r for r in pages.to_pylist()}
    assert [by_number[k]["text_source"] for k in (1, 2, 3)] == ["pdf", "ocr", "pdf+ocr"]
    assert by_number[2]["text_code"] == "no_text_layer" and "no usable text layer" in by_number[2]["text_reason"]
    from pipelines.index import format_summary

    text = format_summary(s)
    assert "page text: 1 OCR, 1 text layer, 1 text layer + OCR of image areas" in text
    # snappy inspect counts the index's live pages the same way
    from typer.testing import CliRunner

    from pipelines.cli import app
    from snappy.storage.report import index_report

    report = index_report(IndexStore(cfg.index))
    assert report["text"]["pages_by_source"] == {"ocr": 1, "pdf": 1, "pdf+ocr": 1}
    assert index_report(IndexStore(cfg.index), quick=True)["text"] is None
    shown = CliRunner().invoke(app, ["inspect", cfg.index])
    assert shown.exit_code == 0, shown.output
    assert "page text: 1 OCR, 1 text layer, 1 text layer + OCR of image areas; why: image_areas 1, no_text_layer 1, " \
           "text_layer 1" in shown.output


@pytest.mark.slow  # ~40 s: rapid OCR of a scan, a pasted image and two pages
def test_a_run_with_ocr_checks_each_document_once_and_ocrs_only_what_needs_it(ray_session, tmp_path):
    """The real route: LayerChecker actors check each document's layer, the OCR pool reads the scan,
    the pasted image and the document whose layer reads wrong; the text-layer pages pass through."""
    pytest.importorskip("rapidocr")
    from pipelines.config import IndexConfig
    from pipelines.index import run_index
    from snappy.storage import IndexStore

    d = tmp_path / "src"
    d.mkdir()
    (d / "mixed.pdf").write_bytes(_pdf())
    (d / "good.pdf").write_bytes(_text_pdf())
    (d / "shifted.pdf").write_bytes(_text_pdf(shift=True))
    cfg = IndexConfig(str(d), str(tmp_path / "idx"), encoder="lexical", ocr="rapid", dpi=150.0)
    s = run_index(cfg)
    assert s["documents"]["indexed"] == 3, s
    t = s["text"]
    assert t["checks"] == {"passed": 2, "failed": 1, "unavailable": 0}, t
    assert [f["uri"].rsplit("/", 1)[-1] for f in t["failed_checks"]] == ["shifted.pdf"]
    # good.pdf 2 + mixed page 1: text layer; shifted.pdf 2 + the scan: OCR; the pasted image: both
    assert t["pages_by_source"] == {"ocr": 3, "pdf": 3, "pdf+ocr": 1}, t
    assert t["pages_by_reason"]["check_failed"] == 2
    regions = IndexStore(cfg.index).read("regions", ["doc_id", "text", "level", "source"]).to_pylist()
    lines = [r["text"] for r in regions if r["level"] == "line" and r["source"] == "ocr"]
    assert any("committee" in x.lower() for x in lines), lines  # the shifted document, read by OCR
    assert not any(x.startswith("Uif") for x in (r["text"] for r in regions))  # its wrong layer never stored


def test_pages_wait_for_the_check_without_blocking_the_render(ray_session, tmp_path):
    """Through a real LayerChecker-like actor: the checked page and the next ones are held (at most
    HOLD) while the check runs, then go on in order with the verdict applied to all of them."""
    import time

    import ray

    from pipelines.stages import _DocumentCheck
    from snappy.documents.pages import RenderOptions, iter_pages

    @ray.remote(num_cpus=0)
    class SlowWrong:  # reads every crop as nonsense, after a while
        def read(self, pngs):
            time.sleep(1.0)
            return ["zzzz qqqq xxxx"] * len(pngs)

    data = _text_pdf(shift=False)
    pages = list(iter_pages(data, RenderOptions(dpi=DPI, text_layer="auto"))) * 3  # 6 pages
    check = _DocumentCheck(SlowWrong.remote(), timeout_s=60)
    got = [check.offer(p, 0.01) for p in pages]
    assert [len(g) for g in got] == [0, 0, 0, 4, 1, 1]  # held until HOLD pages, then the verdict for all
    assert check.result.ok is False and check.finish() == []
    out = [p for g in got for p, _ in g]
    assert [p.number for p in out] == [p.number for p in pages]
    assert all(p.decision.code == "check_failed" and p.regions == [] for p in out)
    assert check.row()["text_check_ok"] is False
    # a verdict that arrives early releases the held pages at once; finish() releases the rest
    check = _DocumentCheck(SlowWrong.remote(), timeout_s=60)
    assert check.offer(pages[0], 0.01) == []
    assert ray.wait([check.pending], timeout=60)[0]  # the verdict is in
    assert len(check.offer(pages[1], 0.01)) == 2
    check = _DocumentCheck(SlowWrong.remote(), timeout_s=60)
    assert check.offer(pages[0], 0.01) == [] and len(check.finish()) == 1


def test_index_document_without_ray_follows_the_text_layer():
    """snappy.indexing.document.index_document (no Ray) takes the same decisions: the text-layer page is not
    OCR'd, the scan is, the mixed page only in its image area; the layer is checked once."""
    from snappy.encoders import make_encoder
    from snappy.indexing.document import index_document
    from snappy.documents.pages import RenderOptions, iter_pages
    from snappy.storage.schema import IndexSettings
    from snappy.documents.textlayer import check_crops

    data = _pdf()
    first = next(iter(iter_pages(data, RenderOptions(dpi=DPI, text_layer="auto"))))

    class Engine(CountingOcr):
        checks = 0

        def read_lines(self, crops):  # the check reads what the layer says: it passes
            self.checks += 1
            return check_crops(first.image, first.regions)[1]

    engine, enc = Engine(), make_encoder("lexical")
    settings = IndexSettings(enc.encoder_id, "fake", DPI, text_layer="auto")
    out = index_document("doc.pdf", data, enc, engine, settings, render=RenderOptions(dpi=DPI, text_layer="auto"))
    assert not out.failed and engine.checks == 1
    w, h = first.width, first.height
    assert engine.calls == [(w, h), (300, 200)]  # the scan whole, the mixed page's image only
    assert [(p["text_source"], p["text_code"]) for p in out.pages] == [
        ("pdf", "text_layer"), ("ocr", "no_text_layer"), ("pdf+ocr", "image_areas")]
    lines = [r for r in out.regions.to_pylist() if r["level"] == "line"]
    assert {r["source"] for r in lines if r["page_number"] == 1} == {"pdf"}
    assert [r["text"] for r in lines if r["page_number"] == 2] == ["ocr words"]
    assert sum(r["text"] == "ocr words" for r in lines if r["page_number"] == 3) == 1
    # the settings' default (text layer off) OCRs every page, as before
    engine = Engine()
    index_document("doc.pdf", data, enc, engine, IndexSettings(enc.encoder_id, "fake", DPI))
    assert len(engine.calls) == 3 and engine.checks == 0
