"""The snappy CLI through typer's CliRunner: query --json schema, --overlay, inspect."""
from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.cli import app
from snappy.storage.synthetic import SynthDocSpec, SynthPageSpec, write_index

DOCS = [
    SynthDocSpec("mem://report.pdf", [
        SynthPageSpec((800, 1000), [((50, 50, 750, 100), "Annual report of the company"),
                                    ((50, 400, 750, 440), "Quarterly revenue grew by twelve percent"),
                                    ((50, 700, 750, 740), "Employees worked from three offices")]),
        SynthPageSpec((800, 1000), [((50, 500, 400, 540), "Invoice number 4521 issued in March"),
                                    ((420, 500, 750, 540), "Total amount due 1234 EUR")]),
    ]),
    SynthDocSpec("mem://letter.pdf", [SynthPageSpec((1000, 700), [((60, 60, 900, 110), "Dear customer, thank you"),
                                                                  ((60, 600, 500, 650), "Signature of the director")])]),
    SynthDocSpec("mem://corrupt.pdf", error="not a readable PDF (Failed to load document)"),
]

runner = CliRunner()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "idx"
    write_index(str(out), DOCS)
    return str(out)


def test_query_json_schema(index_dir):
    r = runner.invoke(app, ["query", index_dir, "total amount due", "--top-pages", "2", "--threshold", "top1",
                            "--level", "line", "--json"])
    assert r.exit_code == 0, r.output
    pages = json.loads(r.stdout)
    assert isinstance(pages, list) and len(pages) == 2
    for p in pages:
        assert {"doc_id", "uri", "page_number", "score", "width", "height", "regions"} <= set(p)
        assert isinstance(p["page_number"], int) and p["page_number"] >= 1
        for reg in p["regions"]:
            assert {"bbox", "bbox_norm", "text", "score"} <= set(reg) and len(reg["bbox"]) == 4
            assert all(0 <= v <= 1 for v in reg["bbox_norm"])
    assert pages[0]["score"] >= pages[1]["score"]
    top = pages[0]
    assert (top["uri"], top["page_number"], top["width"], top["height"]) == ("mem://report.pdf", 2, 800, 1000)
    assert top["regions"][0]["text"] == "Total amount due 1234 EUR"
    assert top["regions"][0]["bbox"] == [420.0, 500.0, 750.0, 540.0]
    assert "patch_scores" not in top
    # the default: blocks (the invoice page's two lines share a row: one block), gap rule
    r = runner.invoke(app, ["query", index_dir, "total amount due", "--top-pages", "1", "--json"])
    (top,) = json.loads(r.stdout)
    assert [(g["text"], g["level"]) for g in top["regions"]] == [
        ("Invoice number 4521 issued in March Total amount due 1234 EUR", "block")]
    assert top["regions"][0]["bbox"] == [50.0, 500.0, 750.0, 540.0] and top["reason"] is None
    assert top["peak"] == 0  # the page's only block: nothing to stand out from


def test_query_patch_scores_and_overlay(index_dir, tmp_path):
    out = tmp_path / "hits.png"
    r = runner.invoke(app, ["query", index_dir, "quarterly revenue", "-k", "2", "--json", "--patch-scores",
                            "--overlay", str(out)])
    assert r.exit_code == 0, r.output
    pages = json.loads(r.stdout)
    assert len(pages[0]["patch_scores"]) == sum(b["rows"] * b["cols"] for b in pages[0]["grid"]["blocks"])
    assert out.exists() and (tmp_path / "hits-2.png").exists()
    img = Image.open(out).convert("RGB")
    assert img.size == (800, 1000)
    # the top region is outlined in red; the heat map tints the page (not pure white any more)
    x0, y0, x1, y1 = pages[0]["regions"][0]["bbox"]
    assert img.getpixel((int(x0) + 1, int((y0 + y1) / 2))) == (255, 0, 0)
    assert img.getpixel((5, 5)) != (255, 255, 255)


def test_query_human_output_and_errors(index_dir, tmp_path):
    r = runner.invoke(app, ["query", index_dir, "signature director", "--threshold", "top1"])
    assert r.exit_code == 0 and "Signature of the director" in r.stdout and "letter.pdf" in r.stdout
    r = runner.invoke(app, ["query", index_dir, "x", "--threshold", "p500"])
    assert r.exit_code != 0 and "percentile" in r.output
    r = runner.invoke(app, ["query", str(tmp_path / "none"), "x"])
    assert r.exit_code == 2


def test_inspect(index_dir, tmp_path):
    r = runner.invoke(app, ["inspect", index_dir, "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    t = info["tables"]
    # 7 OCR lines + 1 block (the invoice page's two lines share a row)
    assert (t["documents"]["rows"], t["pages"]["rows"], t["regions"]["rows"]) == (3, 3, 8)
    assert all(t[n]["version"] == 1 and t[n]["bytes"] > 0 for n in ("documents", "pages", "regions"))
    assert t["documents"]["status"] == {"indexed": 2, "failed": 1}
    assert [f["uri"] for f in info["failed"]] == ["mem://corrupt.pdf"]
    r = runner.invoke(app, ["inspect", index_dir])
    assert r.exit_code == 0 and "regions" in r.stdout and "corrupt.pdf" in r.stdout
    assert runner.invoke(app, ["inspect", str(tmp_path / "none")]).exit_code == 2
