"""`snappy eval` runs: settings checked on resume, several selections from one OCR pass, reports.

Pages are snappy.testing.synth's sample corpus rendered at 100 dpi; the OCR is a fake that returns the
generator's own text lines (no OCR model: fast, and it counts its calls); the encoder is the
weight-free lexical one.
"""
from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import snappy
import snappy.eval.cli as eval_cli
from pipelines.cli import app  # the `snappy` command, as a user runs it
from snappy.encoders.lexical import LexicalEncoder
from snappy.eval.datasets import load_jsonl
from snappy.eval.runner import (
    ChainScorer,
    EvalConfig,
    SelectionSet,
    _progress,
    evaluate_sample,
    plan_selections,
    read_records,
    run,
    run_selections,
)
from snappy.ocr.base import OcrEngine
from snappy.overlay import GT_COLOUR, SELECTED_COLOUR
from snappy.regions.region import Region

DPI = 100
THRESHOLDS = ("p50", "adaptive", "top3")


class LinesOcr(OcrEngine):
    """The generator's text lines of a page, found by image content; counts recognize() calls."""

    name = "rapid"

    def __init__(self, by_hash):
        self.by_hash, self.calls = by_hash, 0

    def recognize(self, image):
        self.calls += 1
        return self.by_hash[hashlib.sha1(image.tobytes()).hexdigest()]


def _clipped(box, i):
    """An imperfect OCR box: the line's box cut to 55-100% of its width (varies by line)."""
    x0, y0, x1, y1 = box
    return (x0, y0, x0 + (x1 - x0) * (0.55 + 0.05 * (i * 7 % 10)), y1)


@pytest.fixture(scope="module")
def evalset(tmp_path_factory):
    """Generic-JSONL eval set over the rendered sample corpus: 8 single-page facts + 1 two-page question."""
    from snappy.documents.pages import RenderOptions, load_pages
    from snappy.testing.synth import sample_corpus

    docs, facts = sample_corpus()
    root = tmp_path_factory.mktemp("evalset")
    by_hash = {}
    for d in docs:
        for page, spec in zip(load_pages(d.write_pdf_bytes(), RenderOptions(dpi=DPI)), d.pages):
            page.image.save(root / f"{d.name}_{page.number}.png")
            size = page.image.size
            by_hash[hashlib.sha1(page.image.tobytes()).hexdigest()] = [
                Region(bbox=_clipped(ln.bbox_px(DPI), i), page_size=size, text=ln.text)
                for i, ln in enumerate(spec.lines)]
    lines = []
    for i, f in enumerate(facts):
        d = next(d for d in docs if d.name == f.doc)
        boxes = d.pages[f.page_number - 1].line_boxes_px(f.line_text, DPI)
        lines.append({"id": f"fact{i}", "query": f.query, "image": f"{f.doc}_{f.page_number}.png",
                      "boxes": [list(b) for b in boxes], "category": f.doc})
    f0, f1 = facts[0], facts[1]
    b0 = next(d for d in docs if d.name == f0.doc).pages[0].line_boxes_px(f0.line_text, DPI)
    b1 = next(d for d in docs if d.name == f1.doc).pages[1].line_boxes_px(f1.line_text, DPI)
    lines.append({"id": "two-pages", "query": f"{f0.query} {f1.query}", "category": "multi",
                  "pages": [{"image": f"{f0.doc}_1.png", "boxes": [list(b) for b in b0], "page": 1},
                            {"image": f"{f1.doc}_2.png", "boxes": [list(b) for b in b1], "page": 2}]})
    path = root / "set.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path, by_hash


@pytest.fixture()
def cli(evalset, monkeypatch):
    """Invoke `snappy eval` with the fake OCR; returns (invoke, ocr engines made)."""
    _, by_hash = evalset
    made: list[LinesOcr] = []

    def make_scorer(index, encoder, ocr, method):
        assert index is None and encoder == "lexical"
        made.append(LinesOcr(by_hash))
        return ChainScorer(made[-1], LexicalEncoder(), method)

    monkeypatch.setattr(eval_cli, "make_scorer", make_scorer)

    def invoke(*args):
        return CliRunner().invoke(app, ["eval", *map(str, args)])

    return invoke, made


def _args(evalset, out, *extra):
    return ["--dataset", evalset[0], "--ocr", "rapid", "--encoder", "lexical", "--out", out, "--no-progress",
            "--random-repeats", "5", *extra]


def _overlays(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png")) if not p.name.startswith("curve")}


def test_multi_threshold_run_equals_separate_runs(cli, evalset, tmp_path):
    invoke, made = cli
    multi = tmp_path / "multi"
    res = invoke(*_args(evalset, multi, "--thresholds", ",".join(THRESHOLDS)))
    assert res.exit_code == 0, res.output
    for spec in THRESHOLDS:  # one table comparing the selections, rows named as in report.md
        assert f"| rapid+lexical @ {spec} |" in res.stdout
    # one OCR pass for all selections: each distinct page image recognised once
    n_images = len(evalset[1])
    assert len(made) == 1 and made[0].calls == n_images
    top = json.loads((multi / "summary.json").read_text())
    assert top["selections"] == list(THRESHOLDS) and set(top["comparison"]) == set(THRESHOLDS)
    folders = {"p50": "p50", "adaptive": "adaptive", "top3": "top3"}
    assert top["folders"] == folders
    report = (multi / "report.md").read_text()
    assert "## Selections compared" in report and (multi / "curve.png").is_file()
    for spec in THRESHOLDS:
        alone = tmp_path / f"alone-{spec}"
        res = invoke(*_args(evalset, alone, "--threshold", spec))
        assert res.exit_code == 0, res.output
        assert made[-1].calls == n_images  # a single run costs the same OCR pass
        sub = multi / folders[spec]
        a, b = read_records(sub / "samples.jsonl"), read_records(alone / "samples.jsonl")
        assert list(a) == list(b) and len(a) == 9
        assert a == b  # records identical, field by field (random draws included)
        sa, sb = json.loads((sub / "summary.json").read_text()), json.loads((alone / "summary.json").read_text())
        assert sa == sb
        assert sa["config"]["threshold"] == spec
        assert top["comparison"][spec]["mean_iou"] == pytest.approx(sb["mean_iou"])
        assert top["comparison"][spec]["area_precision"] == pytest.approx(
            sb["systems"]["method"]["precision"]["area_precision"])
        assert top["comparison"][spec]["token_savings_vs_all_ocr"] == pytest.approx(sb["token_savings_vs_all_ocr"])
        assert (sub / "report.md").read_text() == (alone / "report.md").read_text()
        assert _overlays(sub) == _overlays(alone) and _overlays(sub)  # the same figures, byte for byte
        assert (sub / "curve.png").read_bytes() == (alone / "curve.png").read_bytes()
    # the selections really differ (top3 keeps at most 3 regions a page)
    kept = {s: top["comparison"][s]["n_selected"] for s in THRESHOLDS}
    assert kept["top3"] <= 3 < kept["p50"]


def test_several_methods_from_one_pass(cli, evalset, tmp_path):
    invoke, made = cli
    out = tmp_path / "methods"
    res = invoke(*_args(evalset, out, "--threshold", "p50", "--method", "iou,max", "--limit", "3", "--no-tokens"))
    assert res.exit_code == 0, res.output
    assert made[0].calls == 3  # the first three facts are on three different pages
    top = json.loads((out / "summary.json").read_text())
    assert top["selections"] == ["iou/p50", "max/p50"]
    assert top["folders"] == {"iou/p50": "iou_p50", "max/p50": "max_p50"}
    alone = tmp_path / "max-alone"
    assert invoke(*_args(evalset, alone, "--threshold", "p50", "--method", "max", "--limit", "3",
                         "--no-tokens")).exit_code == 0
    assert read_records(out / "max_p50" / "samples.jsonl") == read_records(alone / "samples.jsonl")


def test_resume_refuses_a_settings_mismatch(cli, evalset, tmp_path, monkeypatch):
    invoke, made = cli
    out = tmp_path / "run"
    assert invoke(*_args(evalset, out, "--threshold", "p50", "--limit", "2")).exit_code == 0
    stored = json.loads((out / "run.json").read_text())
    assert stored["settings"]["thresholds"] == ["p50"] and stored["settings"]["ocr"]["kind"] == "rapid"
    assert stored["settings"]["versions"]["snappy"] == snappy.__version__
    summary, report = (out / "summary.json").read_text(), (out / "report.md").read_text()

    def refused(*extra, key):
        n = len(made)
        res = invoke(*_args(evalset, out, "--limit", "2", *extra))
        assert res.exit_code == 2, res.output
        assert key in res.output and "--no-resume" in res.output and "another --out" in res.output
        assert len(made) == n  # refused before any OCR or encoder was loaded
        return res.output

    msg = refused("--threshold", "top3", key="thresholds")
    assert 'thresholds: ["p50"] → ["top3"]' in msg
    refused("--threshold", "p50", "--method", "max", key='methods: ["iou"] → ["max"]')
    refused("--threshold", "p50,top3", key="thresholds")
    refused("--threshold", "p50", "--ocr", "tesseract", key="ocr.kind")
    refused("--threshold", "p50", "--encoder", "lexical:d64:p28:t768:h8:s0", key="encoder")
    refused("--threshold", "p50", "--seed", "1", key="seed: 0 → 1")
    refused("--threshold", "p50", "--no-tokens", key="text_tokens")
    monkeypatch.setattr(snappy, "__version__", "99.0")
    refused("--threshold", "p50", key=f'versions.snappy: "{stored["settings"]["versions"]["snappy"]}" → "99.0"')
    monkeypatch.undo()
    # nothing of the stored run was touched
    assert (out / "summary.json").read_text() == summary and (out / "report.md").read_text() == report
    assert json.loads((out / "run.json").read_text()) == stored

    # same settings: resumes (a larger --limit evaluates only the new questions)
    res = invoke(*_args(evalset, out, "--threshold", "p50", "--limit", "4"))
    assert res.exit_code == 0, res.output
    assert made[-1].calls == 2 and len(read_records(out / "samples.jsonl")) == 4
    # --no-resume starts over with the new settings
    res = invoke(*_args(evalset, out, "--threshold", "top3", "--limit", "2", "--no-resume"))
    assert res.exit_code == 0, res.output
    assert json.loads((out / "run.json").read_text())["settings"]["thresholds"] == ["top3"]
    recs = read_records(out / "samples.jsonl")
    assert len(recs) == 2 and all(len(p["pred_idx"]) <= 3 for r in recs.values() for p in r["pages"])
    assert json.loads((out / "summary.json").read_text())["config"]["threshold"] == "top3"


def test_resume_refuses_records_without_settings(cli, evalset, tmp_path):
    invoke, _ = cli
    out = tmp_path / "old"
    assert invoke(*_args(evalset, out, "--limit", "1")).exit_code == 0
    (out / "run.json").unlink()  # a folder written before run.json existed
    res = invoke(*_args(evalset, out, "--limit", "1"))
    assert res.exit_code == 2 and "no run.json" in res.output and "--no-resume" in res.output


def test_one_name_per_run(cli, evalset, tmp_path):
    invoke, _ = cli
    out = tmp_path / "named"
    res = invoke(*_args(evalset, out, "--limit", "3", "--no-tokens"))
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    label = summary["label"]
    assert summary["name"] == "rapid+lexical" and label == "rapid+lexical @ p50"
    report = (out / "report.md").read_text()
    assert f"| {label} |" in res.stdout and f"| {label} |" in report
    assert report.startswith("# snappy eval: rapid+lexical")
    for text in (res.stdout, report):
        assert "| method |" not in text and "lexical:d" not in text
    res = invoke(*_args(evalset, tmp_path / "renamed", "--limit", "1", "--no-tokens", "--name", "baseline-A"))
    assert "| baseline-A @ p50 |" in res.stdout


def test_overlays_are_readable_and_best_differs_from_worst(cli, evalset, tmp_path):
    invoke, _ = cli
    out = tmp_path / "figs"
    assert invoke(*_args(evalset, out, "--no-tokens")).exit_code == 0
    best = sorted(out.glob("best_*.png"))
    worst = sorted(out.glob("worst_*.png"))
    assert len(best) == 3 and len(worst) == 3

    def ids(paths):
        return {p.stem.split("_", 2)[2] for p in paths}

    assert not ids(best) & ids(worst)
    recs = read_records(out / "samples.jsonl")
    assert min(recs[i]["paper_iou"] for i in ids(best)) >= max(recs[i]["paper_iou"] for i in ids(worst))
    for p in best + worst:
        img = Image.open(p).convert("RGB")
        assert img.width >= 1200  # pages are rendered at 850-1100 px: upscaled to full width
        px = np.asarray(img).reshape(-1, 3)
        for colour in (GT_COLOUR, SELECTED_COLOUR):  # drawn boxes (and their legend swatches)
            assert (px == colour).all(axis=1).any(), (p.name, colour)
    two = next(p for p in best + worst if "two-pages" in p.name) if any(
        "two-pages" in p.name for p in best + worst) else None
    if two is not None:  # both pages stacked at full width
        assert Image.open(two).height > 2 * 1200
    report = (out / "report.md").read_text()
    assert "best questions" in report and "worst questions" in report and "legend" in report

    single = tmp_path / "one"
    assert invoke(*_args(evalset, single, "--limit", "1", "--no-tokens")).exit_code == 0
    assert not list(single.glob("best_*.png")) and not list(single.glob("worst_*.png"))
    assert len(list(single.glob("only_*.png"))) == 1
    assert "only one question was scored" in (single / "report.md").read_text()


def test_curve_has_labelled_axes_and_series(cli, evalset, tmp_path):
    from snappy.eval.report import curve_figure

    invoke, _ = cli
    out = tmp_path / "curve"
    assert invoke(*_args(evalset, out, "--limit", "3", "--no-tokens")).exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    fig = curve_figure(summary)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    lines = ax.get_lines()
    assert lines and all(not ln.get_label().startswith("_") for ln in lines)  # every series/marker labelled
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == len(lines)
    assert any("random baseline" in t for t in legend) and "selection rapid+lexical @ p50" in legend
    assert any("percentile" in t for t in legend) and any("oracle" in t for t in legend)


def test_progress_logs_eta_off_a_terminal(caplog):
    with caplog.at_level(logging.INFO, logger="snappy.eval.runner"):
        assert list(_progress(iter(range(4)), True, "eval x", total=4, every_s=0.0, tty=False)) == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and all("ETA" in m for m in lines)
    assert lines[0].startswith("eval x: 1/4 samples (25%)") and "4/4 samples (100%)" in lines[-1]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="snappy.eval.runner"):
        list(_progress(iter(range(50)), True, "eval y", total=50, every_s=3600.0, tty=False))
    assert len(caplog.records) == 2  # the first (an early ETA) and the last


def test_predictions_mode_prints_no_empty_split(cli, evalset, tmp_path):
    invoke, _ = cli
    out = tmp_path / "singles"
    assert invoke(*_args(evalset, out, "--limit", "2", "--no-tokens")).exit_code == 0
    res = invoke("-p", out / "samples.jsonl")
    assert res.exit_code == 0, res.output
    assert "multi-page questions: none in these predictions." in res.output
    assert "single-page questions (" in res.output
    assert res.output.count("| model |") == 2  # overall + single-page, no empty multi-page table


def test_selection_set_through_an_evaluate_callable(evalset):
    """The Ray path hands actors a SelectionSet: bundles give the same records as local runs."""
    path, by_hash = evalset
    samples = load_jsonl(str(path))[:3]
    cfgs = plan_selections(["p50", "top1"], ["iou"], EvalConfig(random_repeats=3))
    scorer = ChainScorer(LinesOcr(by_hash), LexicalEncoder())

    def evaluate(todo):  # what pipelines.eval.EvalActor does per batch
        return (evaluate_sample(s, scorer, SelectionSet.of(cfgs), None) for s in todo)

    remote = run_selections(samples, None, cfgs, None, evaluate=evaluate, progress=False)
    for key, cfg in cfgs.items():
        local = run(samples, ChainScorer(LinesOcr(by_hash), LexicalEncoder()), cfg, None, progress=False)
        assert remote[key].records == local.records
    with pytest.raises(ValueError, match="percentile|threshold"):
        plan_selections(["p500"])
    with pytest.raises(ValueError, match="region-scoring method"):
        plan_selections(["p50"], ["best"])
