"""Full-chain evaluation on generated pages with known boxes: real OCR (rapid) + lexical encoder."""
from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from snappy.encoders.lexical import LexicalEncoder
from pipelines.cli import app  # the `snappy` command, as a user runs it
from snappy.eval.datasets import load_jsonl
from snappy.eval.runner import ChainScorer, EvalConfig, read_records, run, summarize_records
from snappy.eval.report import write_report
from snappy.ocr.base import OcrEngine

DPI = 100  # the conftest's ocr_corpus renders at 100 dpi


class CachedOcr(OcrEngine):
    """Serves the session's real rapid-OCR results by image content (avoids OCR'ing twice)."""

    name = "rapid"

    def __init__(self, by_hash):
        self.by_hash = by_hash

    def recognize(self, image):
        return self.by_hash[hashlib.sha1(image.tobytes()).hexdigest()]


@pytest.fixture(scope="module")
def synth_set(ocr_corpus, sample_corpus, tmp_path_factory):
    """Generic-JSONL eval set over the rendered sample corpus (GT: the fact's line boxes)."""
    _, facts, docs = sample_corpus
    root = tmp_path_factory.mktemp("evalset")
    by_hash = {}
    for (doc, number), (page, regions) in ocr_corpus.items():
        page.image.save(root / f"{doc}_{number}.png")
        by_hash[hashlib.sha1(page.image.tobytes()).hexdigest()] = regions
    lines = []
    for i, f in enumerate(facts):
        d = next(d for d in docs if d.name == f.doc)
        boxes = d.pages[f.page_number - 1].line_boxes_px(f.line_text, DPI)
        lines.append(json.dumps({"id": f"fact{i}", "query": f.query, "image": f"{f.doc}_{f.page_number}.png",
                                 "boxes": [list(b) for b in boxes], "category": f.doc}))
    # a two-page question: each page's boxes are scored against that page's own regions
    f0, f1 = facts[0], facts[1]
    b0 = next(d for d in docs if d.name == f0.doc).pages[0].line_boxes_px(f0.line_text, DPI)
    b1 = next(d for d in docs if d.name == f1.doc).pages[1].line_boxes_px(f1.line_text, DPI)
    lines.append(json.dumps({"id": "two-pages", "query": f"{f0.query} {f1.query}", "category": "multi",
                             "pages": [{"image": f"{f0.doc}_1.png", "boxes": [list(b) for b in b0], "page": 1},
                                       {"image": f"{f1.doc}_2.png", "boxes": [list(b) for b in b1], "page": 2}]}))
    path = root / "set.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, by_hash


@pytest.fixture(scope="module")
def chain_run(synth_set, tmp_path_factory):
    path, by_hash = synth_set
    samples = load_jsonl(str(path))
    cfg = EvalConfig(threshold="p50", random_repeats=50)
    out = tmp_path_factory.mktemp("run") / "samples.jsonl"
    scorer = ChainScorer(CachedOcr(by_hash), LexicalEncoder())
    res = run(samples, scorer, cfg, None, out, resume=True, progress=False)
    return samples, scorer, cfg, out, res, summarize_records(res.records, cfg)


def test_method_beats_random_and_oracle_bounds_it(chain_run):
    _, _, _, _, res, s = chain_run
    assert s["n_failed"] == 0 and s["n_scored"] == 9
    sy = s["systems"]
    m, rnd, ora, allocr = sy["method"], sy["random"], sy["oracle"], sy["all_ocr"]
    # same budget: random keeps exactly as many regions as the method
    assert rnd["precision"]["n_selected"] == pytest.approx(m["precision"]["n_selected"])
    assert m["precision"]["area_precision"] > rnd["precision"]["area_precision"]
    assert m["precision"]["region_precision"] > rnd["precision"]["region_precision"]
    assert m["hit_rate"]["0.5"] > rnd["hit_rate"]["0.5"]
    assert ora["mean_iou"] >= m["mean_iou"] and ora["hit_rate"]["0.5"] >= m["hit_rate"]["0.5"]
    assert ora["precision"]["area_precision"] >= m["precision"]["area_precision"]
    # all OCR regions: every region kept, worst precision, and the paper metric cannot tell
    assert allocr["precision"]["kept_fraction"] == 1.0
    assert allocr["precision"]["area_precision"] < m["precision"]["area_precision"]
    assert allocr["mean_iou"] >= m["mean_iou"]
    assert sy["ceiling"]["mean_iou"] == pytest.approx(allocr["mean_iou"])
    # the method keeps a real subset (p50), not every region
    assert 0 < m["precision"]["kept_fraction"] < 0.7


def test_multi_page_scored_per_page(chain_run):
    _, _, _, _, res, s = chain_run
    rec = next(r for r in res.records if r["sample_id"] == "two-pages")
    assert rec["multi_page"] and len(rec["pages"]) == 2
    assert [p["page"] for p in rec["pages"]] == [1, 2]
    # each page's selection comes from that page's own regions
    for p in rec["pages"]:
        assert p["pred_bboxes"] == [p["region_bboxes"][i] for i in p["pred_idx"]]
    assert s["multi_page"]["method"]["n_scored"] == 1 and s["single_page"]["method"]["n_scored"] == 8


def test_curves_trade_kept_fraction_for_recall(chain_run):
    s = chain_run[5]
    pct = [s["curve"][f"p{k}"] for k in (10, 30, 50, 70, 90)]
    kept = [c["kept_fraction"] for c in pct]
    assert kept == sorted(kept, reverse=True) and kept[0] > kept[-1]
    assert all(0 <= c["area_recall"] <= 1 for c in pct)
    assert s["curve"]["top1"]["kept_fraction"] < s["curve"]["p50"]["kept_fraction"]


def test_resume_skips_done_samples_and_report_is_written(chain_run, tmp_path):
    samples, scorer, cfg, out, res, s = chain_run
    again = run(samples, scorer, cfg, None, out, resume=True, progress=False)
    assert again.n_run == 0 and again.n_skipped == len(samples)
    assert len(read_records(out)) == len(samples)
    assert summarize_records(again.records, cfg)["systems"]["method"] == s["systems"]["method"]
    paths = write_report(tmp_path / "report", s, res.records, n_overlays=1)
    for key in ("summary", "report", "curve", "best_1", "worst_1"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    assert "## By category" in paths["report"].read_text()


def test_predictions_mode_rescores_a_run_per_page(chain_run):
    """The per-sample JSONL of a run is itself a predictions file: rescoring gives the same numbers."""
    _, _, _, out, _, s = chain_run
    res = CliRunner().invoke(app, ["eval", "--predictions", str(out), "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["n_scored"] == s["n_scored"]
    assert obj["mean_iou"] == pytest.approx(s["systems"]["method"]["mean_iou"])
    assert obj["precision"]["region_recall"] == pytest.approx(s["systems"]["method"]["precision"]["region_recall"])


@pytest.mark.slow
def test_cli_full_chain_with_real_ocr(synth_set, tmp_path):
    path, _ = synth_set
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["eval", "--dataset", str(path), "--ocr", "rapid", "--encoder", "lexical",
                                   "--limit", "2", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "APPROXIMATE" not in res.output  # exact cl100k counts, offline
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_scored"] == 2 and summary["token_savings_vs_full_image"] is not None
    assert len(read_records(out / "samples.jsonl")) == 2


def test_index_scorer_matches_the_chain(chain_run, synth_set, ocr_corpus, tmp_path):
    """Pages read back from a snappy index (stored vectors, grid, regions, overlaps) select the
    same regions as running OCR + encoder on the image."""
    from snappy.eval.runner import IndexScorer
    from snappy.search import Searcher
    from snappy.testing.synth_index import SynthDocSpec, SynthPageSpec, write_index

    samples, _, cfg, _, res, s = chain_run
    path, _ = synth_set
    docs = [SynthDocSpec(str(path.parent / f"{doc}_{number}.png"),
                         [SynthPageSpec(page.size, [(r.bbox, r.text) for r in regions])])
            for (doc, number), (page, regions) in ocr_corpus.items()]
    write_index(str(tmp_path / "idx"), docs, LexicalEncoder())
    scorer = IndexScorer(Searcher(str(tmp_path / "idx"), encoder=LexicalEncoder()))
    from_index = run(samples, scorer, cfg, None, None, progress=False)
    for a, b in zip(res.records, from_index.records):
        assert [p["pred_idx"] for p in a["pages"]] == [p["pred_idx"] for p in b["pages"]], a["sample_id"]
    assert summarize_records(from_index.records, cfg)["systems"]["method"]["mean_iou"] == pytest.approx(
        s["systems"]["method"]["mean_iou"])


def test_default_selection_is_what_the_searcher_returns_by_default(chain_run, synth_set, ocr_corpus, tmp_path):
    """`snappy eval --thresholds default` on indexed pages selects the regions `Searcher.query` returns
    with its defaults (level, rule, method), block for block and line for line."""
    import numpy as np

    from snappy.eval.runner import IndexScorer, plan_selections, run_selections
    from snappy.search import Searcher
    from snappy.testing.synth_index import SynthDocSpec, SynthPageSpec, write_index

    samples = chain_run[0]
    path, _ = synth_set
    docs = [SynthDocSpec(str(path.parent / f"{doc}_{number}.png"),
                         [SynthPageSpec(page.size, [(r.bbox, r.text) for r in regions])])
            for (doc, number), (page, regions) in ocr_corpus.items()]
    write_index(str(tmp_path / "idx"), docs, LexicalEncoder())
    searcher = Searcher(str(tmp_path / "idx"), encoder=LexicalEncoder())
    cfgs = plan_selections(["default"])
    (res,) = run_selections(samples, IndexScorer(searcher), cfgs, None, None, progress=False).values()
    compared = 0
    for sample, rec in zip(samples, res.records):
        page = sample.pages[0]
        hits = [p for p in searcher.query(sample.query, top_pages=len(docs)) if p.uri == str(page.image)]
        if not hits:
            continue
        got = np.asarray([r.bbox for r in hits[0].regions], float).reshape(-1, 4)
        want = np.asarray(rec["pages"][0]["pred_bboxes"], float).reshape(-1, 4)
        np.testing.assert_allclose(got, want, atol=0.01, err_msg=sample.sample_id)
        compared += 1
    assert compared >= len(samples) - 1


@pytest.mark.slow
def test_cli_runs_on_ray_actors_and_resumes(synth_set, tmp_path):
    """`snappy eval --ray-actors 2`: the same records as a local run, streamed into samples.jsonl."""
    path, _ = synth_set
    args = ["eval", "--dataset", str(path), "--ocr", "rapid", "--encoder", "lexical", "--limit", "3",
            "--no-progress", "--no-tokens"]
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert CliRunner().invoke(app, [*args, "--out", str(local)]).exit_code == 0
    res = CliRunner().invoke(app, [*args, "--out", str(distributed), "--ray-actors", "2"])
    assert res.exit_code == 0, res.output
    a, b = read_records(local / "samples.jsonl"), read_records(distributed / "samples.jsonl")
    assert set(a) == set(b) and len(b) == 3
    for k in a:
        assert a[k]["pred_bboxes"] == b[k]["pred_bboxes"] and a[k]["pages"] == b[k]["pages"]
    # resume: nothing left to do, no Ray needed, same summary
    res = CliRunner().invoke(app, [*args, "--out", str(distributed), "--ray-actors", "2", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["n_scored"] == 3
