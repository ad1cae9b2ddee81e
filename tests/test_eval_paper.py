"""`snappy eval --predictions` on the Snappy paper's own per-sample runs reproduces its table."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipelines.cli import app  # the `snappy` command, as a user runs it
from snappy.eval.predictions import evaluate_predictions, load_predictions, union_of_selections
from snappy.eval.report import num, pct

# The paper's table (arXiv 2512.02660; ../shared/anchors/README.md), percentile-50 threshold.
PAPER = {
    "colmodernvbert-0.5b": ("0.480", "72.2%", "45.5%", "27.9%", "38.0%", "58.5%"),
    "colqwen3-4b": ("0.569", "84.4%", "59.7%", "35.8%", "28.8%", "52.3%"),
    "colqwen3-8b": ("0.569", "83.9%", "59.8%", "36.1%", "26.3%", "50.7%"),
}


@pytest.fixture(scope="module")
def runs(anchors_dir):
    files = {m: anchors_dir / "snappy-paper-runs" / f"{m}.summary.json" for m in PAPER}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        pytest.skip(f"paper run files missing: {missing}")
    return {m: load_predictions(f) for m, f in files.items()}, files


@pytest.fixture(scope="module")
def results(runs):
    return {m: evaluate_predictions(p) for m, p in runs[0].items()}


@pytest.mark.parametrize("model", sorted(PAPER))
def test_paper_table_reproduced_exactly(results, model):
    r = results[model]
    assert r["n_scored"] == 1619 and r["n_failed"] == 4 and r["n_samples"] == 1623
    got = (num(r["mean_iou"]), pct(r["hit_rate"]["0.25"]), pct(r["hit_rate"]["0.5"]), pct(r["hit_rate"]["0.7"]),
           pct(r["token_savings_vs_all_ocr"]), pct(r["token_savings_vs_full_image"]))
    assert got == PAPER[model]


def test_token_totals_match_the_runs_own_summary(runs, results, anchors_dir):
    _, files = runs
    for model, f in files.items():
        ts = json.loads(f.read_text())["token_summary"]
        r = results[model]
        assert (r["tokens_selected"], r["tokens_all_ocr"], r["tokens_full_image"]) == (
            ts["total_tokens_selected"], ts["total_tokens_all_ocr"], ts["total_tokens_full_image"])


def test_precision_aware_figures_expose_the_recall_bias(runs, results):
    """A bigger selection (the union of the three runs' selections) scores higher on the paper's
    metric while its area precision drops: the paper's metric rewards recall only."""
    union = evaluate_predictions(union_of_selections(list(runs[0].values())))
    best = results["colqwen3-4b"]
    assert union["mean_iou"] > best["mean_iou"] and union["hit_rate"]["0.5"] > best["hit_rate"]["0.5"]
    assert union["precision"]["area_precision"] < best["precision"]["area_precision"]
    assert union["precision"]["n_selected"] > best["precision"]["n_selected"]
    for r in results.values():
        p = r["precision"]
        assert 0 < p["area_precision"] < p["area_recall"] < 1
        assert p["region_recall"] is None  # the run files keep no full region list


def test_cli_prints_the_paper_table(runs):
    _, files = runs
    args = ["eval"] + [a for f in files.values() for a in ("--predictions", str(f))]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "| colqwen3-4b | 1619 | 4 | 0.569 | 84.4% | 59.7% | 35.8% | 28.8% | 52.3% |" in res.output
    assert "| colmodernvbert-0.5b | 1619 | 4 | 0.480 | 72.2% | 45.5% | 27.9% | 38.0% | 58.5% |" in res.output
    assert "| colqwen3-8b | 1619 | 4 | 0.569 | 83.9% | 59.8% | 36.1% | 26.3% | 50.7% |" in res.output


def test_cli_json(runs):
    _, files = runs
    res = CliRunner().invoke(app, ["eval", "--predictions", str(files["colqwen3-4b"]), "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["n_scored"] == 1619 and obj["n_failed"] == 4
    assert round(obj["mean_iou"], 3) == 0.569
    assert {k: round(v, 3) for k, v in obj["hit_rate"].items()} == {"0.25": 0.844, "0.5": 0.597, "0.7": 0.358}
    assert round(obj["token_savings_vs_all_ocr"], 3) == 0.288
    assert round(obj["token_savings_vs_full_image"], 3) == 0.523


def test_cli_joins_the_annotations_for_page_splits(runs, anchors_dir):
    _, files = runs
    ann = anchors_dir / "bbox-docvqa" / "benchmark_v2.sample10.jsonl"
    res = CliRunner().invoke(app, ["eval", "-p", str(files["colqwen3-4b"]), "--dataset", str(ann), "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    # the first 10 annotation records are single-page; their ids join the run's sample ids
    assert obj["single_page"]["n_scored"] == 10 and obj["multi_page"]["n_scored"] == 0


def test_cli_bad_predictions_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "run.json"
    bad.write_text('{"results": []}')
    res = CliRunner().invoke(app, ["eval", "--predictions", str(bad)])
    assert res.exit_code == 2
    assert "run.json" in res.output and "sample_results" in res.output
