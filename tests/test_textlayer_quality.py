"""Quality of text-layer regions on generated block pages (no OCR): read as the pipeline reads them
(``iter_pages`` with ``text_layer="auto"``), the lines carry exactly the text the generator drew, and
the blocks ``blocks_from_lines`` builds from them reach the generator's block boxes at least as well
as measured (``benchmarks/bench_textlayer.py --quality``); the same pages as scans go to OCR."""
from __future__ import annotations

import numpy as np
import pytest
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

from snappy.regions.blocks import blocks_from_lines
from snappy.eval.metrics import best_iou_per_gt, iou_matrix
from snappy.documents.pages import RenderOptions, iter_pages
from snappy.testing.synth import BLOCK_LAYOUTS, SynthDoc, block_pages
from snappy.documents.textlayer import cer

DPI = 150.0
# Measured on block_pages(6, seed=0) at 150 dpi: block-level ceiling 0.974 over the 19 block-truth
# questions other than table rows, every kind 0.963-0.984 (table rows: cells stay apart, 0.13).
MIN_BLOCK_CEILING = 0.95
MIN_KIND_CEILING = 0.93


@pytest.fixture(scope="module")
def read_pages():
    pages, questions = block_pages(len(BLOCK_LAYOUTS), seed=0)  # one page of each layout
    read = []
    for p, page in enumerate(pages):
        (got,) = iter_pages(SynthDoc(f"page_{p}", [page]).write_pdf_bytes(),
                            RenderOptions(dpi=DPI, text_layer="auto"))
        read.append(got)
    return pages, questions, read


def _boxes(regions) -> np.ndarray:
    return np.asarray([r.bbox for r in regions], np.float64).reshape(-1, 4)


def test_lines_reproduce_the_generator_text(read_pages):
    pages, _, read = read_pages
    for spage, page in zip(pages, read):
        assert page.decision.action == "none", page.decision.reason
        assert len(page.regions) == len(spage.lines)  # no line split, merged or invented
        gt = np.asarray([ln.bbox_px(DPI) for ln in spage.lines])
        m = iou_matrix(gt, _boxes(page.regions))
        best = m.argmax(axis=1)
        assert (m.max(axis=1) >= 0.5).all()
        assert len(set(best.tolist())) == len(spage.lines)  # one region per generator line
        for ln, j in zip(spage.lines, best.tolist()):
            assert page.regions[j].text == ln.text  # the very string: CER 0, spaces included
            assert cer(ln.text, page.regions[j].text) == 0.0


def test_blocks_reach_the_block_truth(read_pages):
    pages, questions, read = read_pages
    blocks = [blocks_from_lines(page.regions)[0] for page in read]
    by_kind: dict[str, list[float]] = {}
    for q in questions:
        gt = np.asarray([pages[q.page].box_px(q.block, DPI)])
        by_kind.setdefault(q.kind, []).append(float(best_iou_per_gt(gt, _boxes(blocks[q.page]))[0]))
    by_kind.pop("table_row")  # a table's cells stay units of their own (no row block): docs/regions.md
    block_truth = [v for k, vs in by_kind.items() if k != "line" for v in vs]
    assert len(block_truth) >= 15
    assert np.mean(block_truth) >= MIN_BLOCK_CEILING, by_kind
    for kind, vs in by_kind.items():
        assert np.mean(vs) >= MIN_KIND_CEILING, (kind, vs)


def test_the_same_pages_as_scans_go_to_ocr(read_pages):
    """Each page drawn losslessly as a full-page image: no text layer, OCR'd whole, same pixels."""
    import io

    for page in read_pages[2]:
        buf = io.BytesIO()
        c = canvas.Canvas(buf, pagesize=(page.width_pt, page.height_pt), invariant=1)
        c.drawImage(ImageReader(page.image), 0, 0, width=page.width_pt, height=page.height_pt)
        c.showPage()
        c.save()
        (scan,) = iter_pages(buf.getvalue(), RenderOptions(dpi=DPI, text_layer="auto"))
        assert scan.decision.action == "full", scan.decision.reason
        assert scan.regions == []
        assert np.array_equal(np.asarray(scan.image), np.asarray(page.image))
