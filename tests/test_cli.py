"""The snappy CLI through typer's CliRunner: query --json schema, --overlay, inspect; index options."""
from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.cli import app
from snappy.testing.synth_index import SynthDocSpec, SynthPageSpec, write_index

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
    # the default: auto level, gap rule. The invoice page's two lines form one block, but the evidence sits
    # on the second: its line is returned
    r = runner.invoke(app, ["query", index_dir, "total amount due", "--top-pages", "1", "--json"])
    (top,) = json.loads(r.stdout)
    assert [(g["text"], g["level"]) for g in top["regions"]] == [("Total amount due 1234 EUR", "line")]
    assert top["regions"][0]["bbox"] == [420.0, 500.0, 750.0, 540.0] and top["reason"] is None


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
    r = runner.invoke(app, ["query", index_dir, "tax", "--target-recall", "1.2"])
    assert r.exit_code == 2 and "target_recall must be" in r.output and "--target-recall" in r.output
    r = runner.invoke(app, ["query", index_dir, "signature director", "--target-recall", "0.99", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)  # a small index is scanned exactly: the target changes nothing


def test_inspect(index_dir, tmp_path):
    r = runner.invoke(app, ["inspect", index_dir, "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    t = info["tables"]
    # 7 OCR lines + 1 block (the invoice page's two lines, a word space apart, read as one phrase)
    assert (t["documents"]["rows"], t["pages"]["rows"], t["regions"]["rows"]) == (3, 3, 8)
    assert all(t[n]["version"] == 1 and t[n]["bytes"] > 0 for n in ("documents", "pages", "regions"))
    assert t["documents"]["status"] == {"indexed": 2, "failed": 1}
    assert [f["uri"] for f in info["failed"]] == ["mem://corrupt.pdf"]
    r = runner.invoke(app, ["inspect", index_dir])
    assert r.exit_code == 0 and "regions" in r.stdout and "corrupt.pdf" in r.stdout
    assert runner.invoke(app, ["inspect", str(tmp_path / "none")]).exit_code == 2


def test_index_offers_the_options_of_python_m_pipelines_index_with_the_same_defaults():
    import argparse

    import typer.main

    from pipelines.config import IndexConfig
    from pipelines.index import build_parser, config_from_args

    parser = build_parser()
    index = typer.main.get_command(app).commands["index"]
    typer_opts = {}
    for param in index.params:
        for name in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
            typer_opts[name] = param
    typer_opts["--source"] = next(p for p in index.params if p.name == "source")  # an argument there
    typer_opts["--verbose"] = typer_opts["-v"] = next(  # `snappy -v index ...`
        p for p in typer.main.get_command(app).params if p.name == "verbose")
    checked = 0
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        for name in action.option_strings:
            assert name in typer_opts, f"snappy index has no {name}"
            param = typer_opts[name]
            if action.dest not in ("source", "index"):
                assert param.default == action.default, (name, param.default, action.default)
                checked += 1
    assert checked > 45  # --max-attempts, --ocr-num-cpus, --read-timeout-s, --no-candidates, ...
    # every IndexConfig field is set by some option, and the defaults make the default config
    args = parser.parse_args(["--source", "s", "--index", "i"])
    assert config_from_args(args) == IndexConfig("s", "i")
    assert set(IndexConfig.field_names()) - set(vars(args)) == {"incremental", "s3"}  # --full, --s3-*
    r = runner.invoke(app, ["index", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--max-attempts" in r.stdout and "Stage resources" in r.stdout


def test_index_options_reach_the_config(monkeypatch, tmp_path):
    import pipelines.index as index_mod

    seen = {}

    def fake_run(config):
        seen["config"] = config
        return {"documents": {}, "run_id": "r"}

    monkeypatch.setattr(index_mod, "run_index", fake_run)
    monkeypatch.setattr(index_mod, "format_summary", lambda s: "ok")
    r = runner.invoke(app, ["index", str(tmp_path), "--index", str(tmp_path / "idx"), "--max-attempts", "5",
                            "--ocr-num-cpus", "0.5", "--read-timeout-s", "30", "--no-candidates",
                            "--candidate-min-pages", "7", "--no-housekeeping", "--object-store-limit", "1000",
                            "--full", "--s3-region", "eu", "--text-layer", "only"])
    assert r.exit_code == 0, r.output
    c = seen["config"]
    assert (c.max_attempts, c.ocr_num_cpus, c.read_timeout_s, c.candidates.enabled, c.candidates.min_pages,
            c.housekeeping, c.object_store_limit, c.incremental, c.s3.region) == (5, 0.5, 30.0, False, 7, False,
                                                                                   1000, False, "eu")
    assert (c.source, c.index) == (str(tmp_path), str(tmp_path / "idx"))
    from pipelines.config import IndexConfig

    assert c.text_layer == "only" and IndexConfig("s", "i").text_layer == "auto"
    from pipelines.config import TEXT_LAYER_MODES
    from snappy.documents.textlayer import MODES

    assert set(TEXT_LAYER_MODES) == set(MODES)
    with pytest.raises(ValueError, match="text_layer"):
        IndexConfig("s", "i", text_layer="always")


def test_index_setting_out_of_range_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    snappy = Path(sys.executable).with_name("snappy")
    r = subprocess.run([str(snappy), "index", str(tmp_path), "--index", str(tmp_path / "i"), "--max-attempts", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "max_attempts must be >= 1" in r.stderr and "Traceback" not in r.stderr
