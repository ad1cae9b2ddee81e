"""The text layer in the indexing pipeline (issue 17): pages whose text layer is their text skip OCR
(no engine call), mixed pages OCR only their image areas, scans are OCR'd whole; with --ocr none the
text layer still gives regions. The stage tests run without Ray; one run goes through Ray."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

from snappy.regions import Region
from snappy.synth import LETTER

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

DPI = 72.0  # page pixels are PDF points, y down


def _pdf() -> bytes:
    """Page 1: born-digital text; page 2: an image only (a scan); page 3: text + a pasted image."""
    rng = np.random.default_rng(1)
    noise = Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=LETTER, invariant=1)
    c.setFont("Helvetica", 11)
    for k in range(12):
        c.drawString(72, 700 - 16 * k, f"Line {k} of born digital text about invoices and contracts.")
    c.showPage()
    c.drawImage(ImageReader(noise), 0, 0, width=LETTER[0], height=LETTER[1])
    c.showPage()
    c.setFont("Helvetica", 11)
    for k in range(6):
        c.drawString(72, 700 - 16 * k, f"Paragraph line {k} above a pasted screenshot of a table.")
    c.drawImage(ImageReader(noise), 72, 200, width=300, height=200)
    c.showPage()
    c.save()
    return buf.getvalue()


class CountingOcr:
    """A fake engine: records the size of every image it is asked to read, answers one line at (10, 20)."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []

    def recognize(self, image):
        self.calls.append(image.size)
        return [Region(bbox=(10, 20, 110, 34), page_size=image.size, text="ocr words", level="line",
                       polygon=((10, 20), (110, 20), (110, 34), (10, 34)))]


def _work(src):
    from pipelines.stages import WORK_SCHEMA
    from snappy.plan import Action

    rows = [{"ordinal": i, "doc_id": e.doc_id, "uri": e.uri, "raw_path": e.raw_path, "size": e.size, "etag": e.etag,
             "mtime_ns": e.mtime_ns, "known_hash": None, "action": int(Action.INDEX)} for i, e in enumerate(src.list())]
    return pa.Table.from_pylist(rows, schema=WORK_SCHEMA)


def _prepare(tmp_path, text_layer: str, **kw) -> pa.Table:
    from pipelines.stages import PAGE, prepare_documents
    from snappy.pages import RenderOptions
    from snappy.sources import ReadLimits, Source

    d = tmp_path / "src"
    d.mkdir(exist_ok=True)
    (d / "doc.pdf").write_bytes(_pdf())
    src = Source(str(d))
    out = pa.concat_tables(prepare_documents(_work(src), src, RenderOptions(dpi=DPI, text_layer=text_layer),
                                             ReadLimits(), epoch=1, **kw))
    return out.filter(pa.compute.equal(out.column("kind"), PAGE))


def _ocr_stage(engine):
    from pipelines.stages import OcrStage

    stage = OcrStage("none")
    stage.engine = engine
    return stage


def _texts(row) -> list[str]:
    from snappy.indexing import regions_from_json

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
    from snappy.indexing import regions_from_json

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
