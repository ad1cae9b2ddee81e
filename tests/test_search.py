"""Searcher: exact MaxSim ranking, region selection from stored overlaps, refresh on new versions."""
from __future__ import annotations

import numpy as np
import pytest

from snappy.patches.grid import GridBlock, PatchGrid
from snappy.search import PageMatrix, Searcher, SearchOptions, maxsim, maxsim_reference, top_k
from snappy.ids import doc_id_for
from snappy.storage import PAGES
from snappy.testing.synth_index import SynthDocSpec, SynthPageSpec, write_index

GRID = PatchGrid.uniform("test", (400, 400), 4, 4)  # 16 patches of 100x100 px, row-major
DIM = 128


def e(k: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[k] = 1.0
    return v


def _page(patches: dict[int, np.ndarray]) -> np.ndarray:
    """Every patch e_0 except the given ones."""
    v = np.tile(e(0), (GRID.n_tokens, 1))
    for k, vec in patches.items():
        v[k] = vec
    return v


REGIONS = [((100, 0, 300, 100), "target"), ((0, 200, 400, 300), "other"), ((0, 300, 200, 400), "third")]


@pytest.fixture()
def hand_index(tmp_path):
    docs = [
        SynthDocSpec("mem://b", [SynthPageSpec((400, 400), REGIONS, _page({1: 0.6 * e(5) + 0.8 * e(0)}), GRID)]),
        SynthDocSpec("mem://a", [SynthPageSpec((400, 400), REGIONS, _page({}), GRID),
                                 SynthPageSpec((400, 400), REGIONS, _page({1: e(5), 2: e(5), 9: e(7)}), GRID)]),
        SynthDocSpec("mem://c", [SynthPageSpec((400, 400), REGIONS, _page({}), GRID)]),
        SynthDocSpec("mem://bad", error="broken"),
    ]
    return write_index(str(tmp_path / "idx"), docs)


def test_hand_built_top_page_and_region(hand_index):
    s = Searcher(hand_index)
    assert s.n_pages == 4  # the failed document has no pages
    (res,) = s.search_vectors([e(5)[None]], top_pages=3, threshold="top1")
    assert [(r.uri, r.page_number) for r in res] == [("mem://a", 2), ("mem://b", 1)]  # the others score 0
    assert res[0].score == pytest.approx(1.0) and res[1].score == pytest.approx(0.6, abs=1e-3)
    assert [r.rank for r in res] == [1, 2] and res.reason is None
    top = res[0].regions
    assert [r.text for r in top] == ["target"] and top[0].bbox == (100, 0, 300, 100)
    assert top[0].bbox_norm == pytest.approx((0.25, 0.0, 0.75, 0.25)) and top[0].score == pytest.approx(1.0)
    assert res[0].patch_scores.shape == (16,) and res[0].patch_scores[1] == pytest.approx(1.0)
    # a two-token query: e5 and e7 both on page a/2; e7 sits in patch 9 (row 2) -> region "other"
    (res,) = s.search_vectors([np.stack([e(5), e(7)])], top_pages=1, threshold="top2", method="max", level="line")
    assert res[0].score == pytest.approx(2.0) and [r.text for r in res[0].regions] == ["target", "other"]
    # "other" and "third" are stacked lines: one block, which scores as its best line under "max": auto returns
    # it whole, ranked above the smaller "target" of equal score (scale-aware: the larger region is surer)
    (auto,) = s.search_vectors([np.stack([e(5), e(7)])], top_pages=1, threshold="top2", method="max", level="auto")
    assert [(r.text, r.level) for r in auto[0].regions] == [("other third", "block"), ("target", "line")]
    assert auto[0].regions[0].bbox == (0, 200, 400, 400) and auto[0].peak > 0 and auto[0].reason is None
    d = res[0].to_dict()
    assert d["page_number"] == 2 and d["regions"][0]["bbox"] == [100.0, 0.0, 300.0, 100.0]


def test_only_pages_that_match_are_results(hand_index):
    """A page scoring 0 or less (no patch similar to the query at all) is no result, however many pages
    were asked for; with none left the list is empty and says why."""
    from snappy.search.results import NO_MATCH

    write_index(hand_index.uri, [SynthDocSpec("mem://neg", [SynthPageSpec((400, 400), REGIONS,
                                                                           np.tile(-e(5), (16, 1)), GRID)])])
    s = Searcher(hand_index)
    assert s.n_pages == 5
    q5, q9, q0 = e(5)[None], e(9)[None], np.stack([e(0), e(9)])
    hits, none, all_ = s.search_vectors([q5, q9, q0], top_pages=5)
    assert [r.uri for r in hits] == ["mem://a", "mem://b"]  # mem://neg scores -1, the rest 0
    assert none == [] and none.reason == NO_MATCH
    assert len(all_) == 4 and all(r.score > 0 for r in all_) and all_.reason is None  # e0 is on every page but neg
    assert s.rank([q9], 5)[0].shape == (1, 5)  # ranking itself still orders every page


def test_an_index_without_text_matches_nothing(sample_corpus, tmp_path):
    """`snappy index --ocr none --encoder lexical`: pages without regions, zero vectors. Every query once
    scored 0.0 everywhere and still got k arbitrary pages."""
    import json

    from typer.testing import CliRunner

    from pipelines.cli import app
    from snappy.encoders import make_encoder
    from snappy.indexing.document import index_document
    from snappy.ocr import make_ocr
    from snappy.search.results import NO_MATCH
    from snappy.storage import IndexSettings, IndexStore, to_table

    paths, _, _ = sample_corpus
    enc, ocr = make_encoder("lexical"), make_ocr("none")
    settings = IndexSettings(enc.encoder_id, "none", 72.0)
    docs = [index_document(str(p), p.read_bytes(), enc, ocr, settings) for p in paths[:2]]
    uri = str(tmp_path / "idx")
    IndexStore(uri).upsert([d.document for d in docs], to_table(PAGES, [p for d in docs for p in d.pages]))
    s = Searcher(uri)
    assert s.n_pages >= 2 and not s.state.matrix.vectors.any()
    results = s.query_batch(["total amount due", "annual report"], top_pages=5)
    assert results == [[], []] and [r.reason for r in results] == [NO_MATCH, NO_MATCH]
    r = CliRunner().invoke(app, ["query", uri, "total amount due"])
    assert r.exit_code == 0 and f"no page matches this query ({NO_MATCH})" in " ".join(r.output.split()), r.output
    r = CliRunner().invoke(app, ["query", uri, "total amount due", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == []


def test_batch_equals_single_queries(hand_index):
    s = Searcher(hand_index)
    qs = [e(5)[None], np.stack([e(7), e(0)])]
    batch = s.search_vectors(qs, top_pages=4)
    singles = [s.search_vectors([q], top_pages=4)[0] for q in qs]
    for b, one in zip(batch, singles):
        assert [(r.page_id, r.score) for r in b] == [(r.page_id, r.score) for r in one]


def test_maxsim_matches_float64_reference():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 300, size=60)
    pages = [rng.standard_normal((n, DIM)).astype(np.float16) for n in lengths]
    queries = [rng.standard_normal((t, DIM)).astype(np.float32) for t in (1, 7, 32)]
    ref = maxsim_reference(queries, pages)  # [3, 60] float64
    for dtype in (np.float16, np.float32):
        m = PageMatrix.from_pages(pages, dtype)
        for chunk in (4096, 1 << 30):  # many chunks / one chunk
            got = maxsim(queries, m, chunk_bytes=chunk)
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
            np.testing.assert_array_equal(top_k(got, 10), top_k(ref, 10))
        assert maxsim(queries, m, threads=2).tobytes() == maxsim(queries, m).tobytes()
    with pytest.raises(ValueError, match="empty page"):
        PageMatrix.from_pages([pages[0], pages[0][:0]])


def test_top_k_ties_break_by_index():
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 3.0]])
    np.testing.assert_array_equal(top_k(scores, 2), [[1, 2]])
    np.testing.assert_array_equal(top_k(scores, 9), [[1, 2, 4, 0, 3]])


def test_refresh_on_new_version(hand_index, tmp_path):
    s = Searcher(hand_index)
    assert s.refresh() is False
    write_index(hand_index.uri, [SynthDocSpec("mem://d", [SynthPageSpec((400, 400), REGIONS, _page({3: e(9)}), GRID)])])
    assert s.refresh() is True and s.n_pages == 5
    (res,) = s.search_vectors([e(9)[None]], top_pages=1)
    assert res[0].uri == "mem://d"
    auto = Searcher(hand_index, options=SearchOptions(auto_refresh=True, dtype="float16"))
    hand_index.delete_documents([doc_id_for("mem://d")])
    assert auto.search_vectors([e(9)[None]], top_pages=1)[0][0].uri == "mem://d"  # query_vectors: no refresh
    auto.query_batch(["x"])  # query_batch refreshes
    assert auto.n_pages == 4


def test_multi_block_grid_and_page_image(tmp_path):
    """A tiles + global grid (Idefics-style): overlaps index tokens of all blocks."""
    grid = PatchGrid("tiles", (400, 200), (GridBlock(2, 2, 0, 0, 200, 200), GridBlock(2, 2, 200, 0, 400, 200),
                                           GridBlock(2, 4, 0, 0, 400, 200)))
    vec = np.tile(e(0), (grid.n_tokens, 1))
    vec[5] = e(3)  # second tile, top-right quarter: x 300-400, y 0-100
    store = write_index(str(tmp_path / "idx"), [SynthDocSpec("mem://t", [SynthPageSpec(
        (400, 200), [((300, 0, 400, 100), "corner"), ((0, 100, 200, 200), "left")], vec, grid)])])
    s = Searcher(store)
    (res,) = s.search_vectors([e(3)[None]], top_pages=1, threshold="top1")
    assert [r.text for r in res[0].regions] == ["corner"]
    assert s.page_image(res[0].page_id).size == (400, 200)


LEXICAL_DOCS = [
    SynthDocSpec("mem://report.pdf", [
        SynthPageSpec((800, 1000), [((50, 50, 750, 100), "Annual report of the company"),
                                    ((50, 400, 750, 440), "Quarterly revenue grew by twelve percent"),
                                    ((50, 700, 750, 740), "Employees worked from three offices")]),
        SynthPageSpec((800, 1000), [((50, 50, 750, 100), "Appendix tables"),
                                    ((50, 500, 400, 540), "Invoice number 4521 issued in March"),
                                    ((420, 500, 750, 540), "Total amount due 1234 EUR")]),
    ]),
    SynthDocSpec("mem://letter.pdf", [
        SynthPageSpec((1000, 700), [((60, 60, 900, 110), "Dear customer, thank you for your order"),
                                    ((60, 600, 500, 650), "Signature of the director")]),
    ]),
]


def test_lexical_index_real_regions(tmp_path):
    store = write_index(str(tmp_path / "idx"), LEXICAL_DOCS)
    s = Searcher(store.uri)  # encoder rebuilt from the index's encoder_id
    assert s.encoder.encoder_id == s.encoder_id
    cases = {"quarterly revenue": ("mem://report.pdf", 1, "Quarterly revenue grew by twelve percent"),
             "total amount due": ("mem://report.pdf", 2, "Total amount due 1234 EUR"),
             "signature director": ("mem://letter.pdf", 1, "Signature of the director")}
    results = s.query_batch(list(cases), top_pages=2, threshold="top1", level="line")
    for (q, (uri, page, text)), res in zip(cases.items(), results):
        assert (res[0].uri, res[0].page_number, res[0].regions[0].text) == (uri, page, text), q
        assert res[0].score > res[1].score
    # the stored page vectors are what the encoder produced: MaxSim equals the float64 reference
    pages = store.dataset(PAGES).to_table(columns=["page_id", "vectors"]).to_pylist()
    q = s.encoder.embed_queries(["revenue invoice director"])
    ref = maxsim_reference(q, [np.asarray(p["vectors"], np.float32) for p in pages])[0]
    got = maxsim(q, s.state.matrix)[0]
    order = [s.state.page_index[p["page_id"]] for p in pages]
    np.testing.assert_allclose(got[order], ref, rtol=1e-5, atol=1e-5)


def test_query_actor_body(tmp_path):
    from pipelines.query import QueryActorImpl, QueryUDF

    store = write_index(str(tmp_path / "idx"), LEXICAL_DOCS)
    actor = QueryActorImpl(store.uri)
    pages = actor.query("total amount due", top_pages=1, threshold="top1", level="line")
    assert pages[0]["regions"][0]["text"] == "Total amount due 1234 EUR" and pages[0]["page_number"] == 2
    (page,) = actor.query("total amount due", top_pages=1)  # default: auto; the evidence is on one line of the two
    assert [(r["text"], r["level"]) for r in page["regions"]] == [("Total amount due 1234 EUR", "line")]
    assert actor.info()["pages"] == 3 and actor.refresh() is False
    out = QueryUDF(store.uri, top_pages=1, threshold="top1")({"query": np.array(["signature director"])})
    import json

    assert json.loads(out["results"][0])[0]["uri"] == "mem://letter.pdf"


@pytest.mark.slow
def test_query_actor_in_ray(tmp_path):
    import os

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from pipelines.query import start_query_actor

    store = write_index(str(tmp_path / "idx"), LEXICAL_DOCS)
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        actor = start_query_actor(store.uri, num_cpus=0.5)
        res = ray.get(actor.query_batch.remote(["quarterly revenue", "signature director"], 1, "top1"))
        assert [r[0]["regions"][0]["text"] for r in res] == ["Quarterly revenue grew by twelve percent",
                                                             "Signature of the director"]
        assert ray.get(actor.info.remote())["pid"] != os.getpid()
    finally:
        if started:
            ray.shutdown()
