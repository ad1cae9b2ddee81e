"""The indexing pipeline: sources, the Ray-free per-document path, and the Ray Data job end to end.

One local Ray (2 CPUs, 2 declared fake GPUs) is shared by this module's Ray tests.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from pipelines.config import IndexConfig
from snappy.patches.grid import PatchGrid
from snappy.ids import doc_id_for
from snappy.storage import IndexStore, IndexSettings
from snappy.testing.synth import LETTER, SynthDoc, text_page
from snappy.eval.metrics import iou_matrix

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

DPI = 100.0  # small pages keep real OCR fast; Letter = 850 x 1100 px


def iou(a, b) -> float:
    return float(iou_matrix([a], [b])[0, 0])


# ---------------------------------------------------------------------- Ray-free parts
def test_index_document_without_ray(sample_corpus, tmp_path):
    from snappy.encoders import make_encoder
    from snappy.indexing.document import index_document
    from snappy.ocr import make_ocr
    from snappy.storage import to_table

    paths, _, _ = sample_corpus
    enc, ocr = make_encoder("lexical"), make_ocr("none")
    settings = IndexSettings(enc.encoder_id, "none", DPI)
    report = next(p for p in paths if p.name == "annual-report.pdf")
    out = index_document(str(report), report.read_bytes(), enc, ocr, settings)
    assert not out.failed and out.document["page_count"] == 3 and len(out.pages) == 3
    assert [p["page_number"] for p in out.pages] == [1, 2, 3]
    assert (out.pages[0]["width"], out.pages[0]["height"]) == (850, 1100)
    assert to_table("pages", out.pages).num_rows == 3
    bad = index_document(str(tmp_path / "bad.pdf"), b"%PDF-1.4 nonsense", enc, ocr, settings)
    assert bad.failed and "not a readable PDF" in bad.document["error"] and not bad.pages


def test_run_settings_go_on_the_datasets_own_context():
    """Ray Data's settings of a run (block size, progress bars, object store limit) are set on the
    context copy its dataset carries, never on the process's current DataContext."""
    from ray.data import DataContext

    from pipelines.index import _configure

    current = DataContext.get_current()
    before = (current.target_max_block_size, current.enable_progress_bars, current.execution_options.resource_limits)
    mine = current.copy()
    _configure(mine, IndexConfig("s", "i", block_bytes=3 << 20, progress=False, object_store_limit=5 << 30))
    assert (mine.target_max_block_size, mine.enable_progress_bars) == (3 << 20, False)
    assert mine.execution_options.resource_limits.object_store_memory == 5 << 30
    after = (current.target_max_block_size, current.enable_progress_bars, current.execution_options.resource_limits)
    assert after == before


def test_config_validation_and_resource_check():
    from pipelines.index import _check_resources

    with pytest.raises(ValueError, match="ocr_actors"):
        IndexConfig("s", "i", ocr_actors=0)
    cfg = IndexConfig("s", "i", ocr_actors=2).resolved(cluster_gpus=0)
    assert cfg.embed_num_gpus == 0 and cfg.embed_num_cpus == 0.25
    with pytest.raises(ValueError, match="reserve 2.25 CPUs"):
        _check_resources(cfg, {"CPU": 2})
    gpu = IndexConfig("s", "i").resolved(cluster_gpus=2)
    assert gpu.embed_num_gpus == 1 and gpu.embed_num_cpus == 0.25
    _check_resources(gpu, {"CPU": 2, "GPU": 2})
    with pytest.raises(ValueError, match="GPUs"):
        _check_resources(IndexConfig("s", "i", embed_actors=3).resolved(2), {"CPU": 8, "GPU": 2})


# ---------------------------------------------------------------------- Ray job
@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        # Fake GPUs: the embed pool asks for them, the OCR pool for none.
        ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus_dir(sample_corpus, tmp_path_factory) -> Path:
    paths, _, _ = sample_corpus
    out = tmp_path_factory.mktemp("source")
    for p in paths:
        shutil.copy(p, out / p.name)
    (out / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj garbage, the rest of this file is missing")
    return out


@pytest.fixture(scope="module")
def ocr_run(ray_session, corpus_dir, tmp_path_factory):
    """The sample corpus + a corrupt PDF, indexed with real OCR (rapid) and the lexical encoder
    (--text-layer off: every page OCR'd, as the text layer would spare these born-digital pages OCR)."""
    from pipelines.index import run_index

    index = tmp_path_factory.mktemp("index") / "idx"
    cfg = IndexConfig(str(corpus_dir), str(index), encoder="lexical", ocr="rapid", dpi=DPI, text_layer="off")
    return cfg, run_index(cfg)


def test_pipeline_writes_the_three_tables(ocr_run, sample_corpus):
    cfg, summary = ocr_run
    _, facts, docs = sample_corpus
    store = IndexStore(cfg.index)
    d = summary["documents"]
    assert (d["listed"], d["indexed"], d["failed"], d["skipped"]) == (4, 3, 1, 0)
    assert summary["commits"] == 1 and summary["snapshot"] == store.snapshot().seq
    assert store.latest_versions() == store.snapshot().versions  # nothing unpublished after the run

    documents = {r["uri"].rsplit("/", 1)[-1]: r for r in store.documents().to_pylist()}
    assert set(documents) == {"annual-report.pdf", "journal-a4.pdf", "memo-landscape.pdf", "broken.pdf"}
    assert documents["broken.pdf"]["status"] == "failed" and "not a readable PDF" in documents["broken.pdf"]["error"]
    assert {n: documents[n]["page_count"] for n in documents if n != "broken.pdf"} == {
        "annual-report.pdf": 3, "journal-a4.pdf": 2, "memo-landscape.pdf": 1}
    assert all(r["encoder_id"].startswith("lexical:") and r["ocr_engine"] == "rapid" and r["dpi"] == DPI
               for r in documents.values())

    pages = store.read("pages").to_pylist()
    assert len(pages) == 6 == summary["pages"] == store.dataset("pages").count_rows()
    assert {doc_id_for(r["uri"]) for n, r in documents.items() if n != "broken.pdf"} == {p["doc_id"] for p in pages}
    sizes = {(p["width"], p["height"]) for p in pages}
    assert sizes == {(850, 1100), (827, 1170), (1100, 850)}  # Letter, A4, landscape Letter at 100 dpi
    for p in pages:
        grid = PatchGrid.from_json(p["grid"])
        assert grid.page_size == (p["width"], p["height"])
        assert p["n_tokens"] == grid.n_tokens == len(p["vectors"]) and len(p["vectors"][0]) == 128
        assert p["image"][:2] == b"\xff\xd8"  # JPEG

    regions = store.read("regions")
    assert regions.num_rows == summary["regions"] > 6 * 10
    assert set(pc.unique(regions.column("page_id")).to_pylist()) == {p["page_id"] for p in pages}
    # Overlaps were precomputed against each page's own grid: recompute a few.
    grids = {p["page_id"]: PatchGrid.from_json(p["grid"]) for p in pages}
    for r in regions.slice(0, 40).to_pylist():
        boxes = grids[r["page_id"]].boxes()
        x0, y0, x1, y1 = r["bbox"]
        inter = (np.clip(np.minimum(boxes[:, 2], x1) - np.maximum(boxes[:, 0], x0), 0, None)
                 * np.clip(np.minimum(boxes[:, 3], y1) - np.maximum(boxes[:, 1], y0), 0, None))
        assert r["patch_idx"] == np.flatnonzero(inter > 0).tolist()
        # atol: text-layer boxes have fractional edges; the stored float32 bbox moves a sliver's area a little
        np.testing.assert_allclose(r["patch_inter"], inter[inter > 0], rtol=1e-4, atol=1e-2)

    # Real OCR found the facts where the generator put them (PP-OCR boxes are looser than the ink).
    by_page = {(p["doc_id"], p["page_number"]): p["page_id"] for p in pages}
    rows = regions.to_pylist()
    uris = {n.removesuffix(".pdf"): r["uri"] for n, r in documents.items()}
    for fact in facts:
        page_id = by_page[(doc_id_for(uris[fact.doc]), fact.page_number)]
        truth = next(doc for doc in docs if doc.name == fact.doc).pages[fact.page_number - 1].line_boxes_px(
            fact.line_text, DPI)[0]
        best = max((iou(r["bbox"], truth) for r in rows if r["page_id"] == page_id), default=0.0)
        assert best >= 0.4, (fact, best)


def test_searcher_on_the_pipeline_index_finds_each_fact(ocr_run, sample_corpus):
    """Query -> top page right, and the top region's box overlaps the fact's line (IoU >= 0.5)."""
    from snappy.search import Searcher

    cfg, _ = ocr_run
    _, facts, docs = sample_corpus
    searcher = Searcher(cfg.index)
    results = searcher.query_batch([f.query for f in facts], top_pages=2, threshold="p50", level="line")
    for fact, pages in zip(facts, results):
        top = pages[0]
        assert (top.uri.rsplit("/", 1)[-1], top.page_number) == (f"{fact.doc}.pdf", fact.page_number), fact.query
        truth = next(d for d in docs if d.name == fact.doc).pages[fact.page_number - 1].line_boxes_px(
            fact.line_text, DPI)
        best_region = top.regions[0]
        assert max(iou(best_region.bbox, t) for t in truth) >= 0.5, (fact.query, best_region.text)
        lines = searcher.regions_of([top.page_id])[top.page_id].filter(pc.not_equal(pc.field("level"), "block"))
        assert 1 <= len(top.regions) <= (lines.num_rows + 1) // 2  # p50 keeps at most half the page's lines
    # the default (auto level, gap rule): a table's cells stay units, so the question gets its cell
    cardamom = next(f for f in facts if "cardamom" in f.query)
    (top, *_) = searcher.query(cardamom.query, top_pages=1)
    truth = next(d for d in docs if d.name == cardamom.doc).pages[cardamom.page_number - 1].line_boxes_px(
        cardamom.line_text, DPI)[0]
    cell = top.regions[0]
    assert cell.level == "line" and "cardamom" in cell.text and "Kerala" not in cell.text
    assert iou(cell.bbox, truth) >= 0.5


def test_cli_index_then_query(ray_session, corpus_dir, tmp_path):
    """`snappy index` (progress display, summary) then `snappy query --json` on what it wrote."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(corpus_dir / "memo-landscape.pdf", src)
    shutil.copy(corpus_dir / "broken.pdf", src)
    index = tmp_path / "idx"
    runner = CliRunner()
    r = runner.invoke(app, ["index", str(src), "--index", str(index), "--encoder", "lexical", "--ocr", "none",
                            "--text-layer", "off", "--dpi", "72", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert (summary["documents"]["indexed"], summary["documents"]["failed"]) == (1, 1)
    r = runner.invoke(app, ["inspect", str(index), "--json"])
    assert r.exit_code == 0 and "broken.pdf" in r.stdout
    r = runner.invoke(app, ["query", str(index), "anything", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == []  # no OCR, no text layer: no text, zero vectors, so no page matches any query


def test_weight_free_encoder_runs_in_tasks_and_ocr_in_a_cpu_actor(ocr_run):
    _, summary = ocr_run
    embed, ocr = summary["workers"]["embed"], summary["workers"]["ocr"]
    assert len(ocr) == 1 and ocr[0]["gpu_ids"] == []  # the OCR actor holds no GPU
    assert embed and all(w["gpu_ids"] == [] and w["device"] == "cpu" for w in embed)  # lexical: no actor, no GPU
    assert set(summary["stage_seconds"]) == {"read", "render", "encode", "ocr", "embed", "write"}
    assert summary["stage_seconds"]["ocr"] > 0


def test_same_corpus_twice_changes_nothing(ocr_run):
    from pipelines.index import run_index

    cfg, first = ocr_run
    store = IndexStore(cfg.index)
    before = store.count_rows()
    again = run_index(cfg)
    d = again["documents"]
    assert (d["indexed"], d["failed"], d["skipped"]) == (0, 0, 4)  # unchanged docs and the known-bad one
    assert store.count_rows() == before == {"documents": 4, "pages": 6, "regions": first["regions"]}
    assert again["commits"] == 0 and again["snapshot"] == first["snapshot"]
    assert again["ray"] is None and again["plan"] == {"unchanged": 3, "failed_unchanged": 1}  # nothing read


def test_full_reindex_update_and_prune(ray_session, corpus_dir, tmp_path):
    """No OCR here (fast): idempotent full re-index, a changed document replaced, a vanished one pruned."""
    from pipelines.index import run_index

    src = tmp_path / "src"
    shutil.copytree(corpus_dir, src)
    cfg = IndexConfig(str(src), str(tmp_path / "idx"), encoder="lexical", ocr="none", dpi=72.0)
    store = IndexStore(cfg.index)
    first = run_index(cfg)
    counts = store.count_rows()
    assert counts["documents"] == 4 and counts["pages"] == 6

    full = run_index(replace(cfg, incremental=False))
    assert full["documents"]["indexed"] == 3 and store.count_rows() == counts
    assert full["commits"] == 1 and full["snapshot"] > first["snapshot"]
    page_ids = store.dataset("pages").to_table(columns=["page_id"]).column("page_id")  # superseded rows are gone
    assert len(pc.unique(page_ids)) == len(page_ids) == counts["pages"]

    # annual-report shrinks to one page: its old pages 2-3 must go; memo disappears.
    import random

    SynthDoc("annual-report", [text_page(LETTER, ["A shorter report."], random.Random(1))]).write_pdf(
        src / "annual-report.pdf")
    (src / "memo-landscape.pdf").unlink()
    upd = run_index(replace(cfg, prune=True))
    assert (upd["documents"]["indexed"], upd["documents"]["pruned"], upd["documents"]["skipped"]) == (1, 1, 2)
    report_id = doc_id_for(str(src / "annual-report.pdf"))
    pages = store.read("pages", ["doc_id", "page_number"]).to_pylist()
    assert sorted(p["page_number"] for p in pages if p["doc_id"] == report_id) == [1]
    assert len(pages) == 3  # 1 (report) + 2 (journal)
    uris = store.documents(columns=["uri"]).column("uri").to_pylist()
    assert str(src / "memo-landscape.pdf") not in uris and len(uris) == 3


def test_changed_settings_reindex_everything(ray_session, corpus_dir, tmp_path):
    from pipelines.index import run_index

    cfg = IndexConfig(str(corpus_dir / "memo-landscape.pdf"), str(tmp_path / "idx"), encoder="lexical",
                      ocr="none", dpi=72.0)
    assert run_index(cfg)["documents"]["indexed"] == 1
    assert run_index(cfg)["documents"]["skipped"] == 1
    again = run_index(replace(cfg, dpi=60.0))
    assert again["documents"]["indexed"] == 1
    page = IndexStore(cfg.index).read("pages").to_pylist()
    assert len(page) == 1 and (page[0]["width"], page[0]["height"]) == (660, 510)


@pytest.mark.slow
def test_tiny_colqwen25_runs_the_whole_pipeline(ray_session, corpus_dir, tmp_path):
    from pipelines.index import run_index

    src = tmp_path / "src"
    src.mkdir()
    for name in ("annual-report.pdf", "memo-landscape.pdf"):  # portrait and landscape pages
        shutil.copy(corpus_dir / name, src / name)
    cfg = IndexConfig(str(src), str(tmp_path / "idx"), encoder="tiny:colqwen2.5", ocr="none", dpi=72.0,
                      embed_batch_size=2)
    summary = run_index(cfg)
    assert summary["documents"]["indexed"] == 2
    (embed,) = summary["workers"]["embed"]  # a model: one actor, holding one of the two (fake) GPUs
    assert embed["gpu_ids"] in (["0"], ["1"]) and embed["device"] == "cpu"  # fake GPU: torch runs on CPU
    pages = IndexStore(cfg.index).read("pages").to_pylist()
    assert len(pages) == 4 and len({(p["width"], p["height"]) for p in pages}) == 2
    for p in pages:
        grid = PatchGrid.from_json(p["grid"])
        assert p["encoder_id"].startswith("colpali:colqwen2.5:tiny-")
        assert p["n_tokens"] == grid.n_tokens == len(p["vectors"]) > 0
        assert np.isfinite(np.asarray(p["vectors"], np.float32)).all()
    # the prefix tokens the calibration's pseudo-queries start with: the model's vectors of an empty query,
    # computed in a task on the embed stage's resources (the driver loads no model)
    from pipelines.index import _query_prefix, describe_encoder
    from snappy.encoders import make_encoder

    prefix = _query_prefix(cfg, describe_encoder(cfg.encoder))
    np.testing.assert_allclose(prefix, make_encoder(cfg.encoder).embed_queries([""])[0], atol=1e-4)
    assert prefix.shape == (10, 128) and _query_prefix(cfg, describe_encoder("lexical")) is None


@pytest.mark.slow
def test_s3_source_and_s3_index_through_a_local_endpoint(ray_session, sample_corpus, s3_endpoint, s3_client):
    """s3:// in, s3:// out (moto on 127.0.0.1): listing, reading in workers, staging and commits on S3."""
    from pipelines.index import run_index
    from snappy.storage.fs import S3Settings

    s3_client.create_bucket(Bucket="docs")
    s3_client.create_bucket(Bucket="index")
    paths, _, _ = sample_corpus
    for p in paths:
        s3_client.upload_file(str(p), "docs", f"corpus/{p.name}")
    s3 = S3Settings(endpoint=s3_endpoint, region="us-east-1", access_key_id="test", secret_access_key="test")
    cfg = IndexConfig("s3://docs/corpus", "s3://index/snappy", encoder="lexical", ocr="none", dpi=72.0, s3=s3)
    summary = run_index(cfg)
    assert summary["documents"]["indexed"] == 3 and summary["pages"] == 6
    store = IndexStore(cfg.index, s3)
    rows = store.count_rows()  # no OCR: the regions are the PDFs' text layer
    assert rows["documents"] == 3 and rows["pages"] == 6 and rows["regions"] == summary["regions"] > 0
    assert set(store.read("regions", ["source"]).column("source").to_pylist()) == {"pdf"}
    assert sorted(store.documents(columns=["uri"]).column("uri").to_pylist()) == [
        f"s3://docs/corpus/{p.name}" for p in sorted(paths)]
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket="index").get("Contents", [])]
    assert not any("_staging" in k for k in keys)  # the staging dataset was removed
    assert run_index(cfg)["documents"]["skipped"] == 3
