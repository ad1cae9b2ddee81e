"""The candidate stage: codebook + codes + pooled vectors, kept up to date; candidates then exact = exact."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from snappy.search import Searcher, SearchOptions
from snappy.candidates.centroids import CandidateOptions, Codebook, CentroidIndex, default_k, pool_page
from snappy.candidates.settings import CandidateSettings
from snappy.candidates.maintain import plan_codebook, update_candidates
from snappy.ids import page_id_for
from snappy.storage.schema import CODEBOOK, CODES, IndexSettings, document_record, to_table
from snappy.testing.synth_index import StructuredCorpus, TemplateCorpus, write_vector_pages

N_TOKENS = 96
CORPUS = StructuredCorpus(400, n_tokens=N_TOKENS, vocabulary=512, concepts=(4, 10), seed=7)
SETTINGS = CandidateSettings(min_pages=100, k=256, train_pages=300, train_tokens=20000)


@pytest.fixture()
def index(tmp_path):
    vocab = CORPUS.vocabulary_vectors()
    store = write_vector_pages(str(tmp_path / "idx"), CORPUS.n_pages, lambda a, b: CORPUS.pages(a, b, vocab),
                               "synthetic:structured", name="structured")
    with store.writer() as w:
        out = update_candidates(w, SETTINGS)
    assert out["action"] == "trained" and out["pages_coded"] == CORPUS.n_pages
    return store


def queries(n: int = 24) -> tuple[list[np.ndarray], list[int]]:
    vocab = CORPUS.vocabulary_vectors()
    qs = [CORPUS.query(j, vocab) for j in range(n)]
    return [q for q, _ in qs], [t for _, t in qs]


def ranked(results) -> list[list[tuple[str, float]]]:
    return [[(p.page_id, round(p.score, 4)) for p in pages] for pages in results]


def test_candidates_covering_the_top_k_give_exactly_the_exact_results(index):
    q, _ = queries()
    exact = Searcher(index, options=SearchOptions(mode="exact"))
    wide = Searcher(index, options=SearchOptions(mode="candidates", candidates=CandidateOptions(64, 400, 400, 400)))
    assert exact.state.mode == "exact" and wide.state.mode == "candidates"
    a, b = exact.search_vectors(q, top_pages=10), wide.search_vectors(q, top_pages=10)
    assert ranked(a) == ranked(b)  # same pages, same order, same scores
    for pa_, pb in zip(a, b):  # and the same per-patch scores, so the same regions
        for x, y in zip(pa_, pb):
            np.testing.assert_allclose(x.patch_scores, y.patch_scores, atol=1e-5)


def test_default_candidates_find_the_exact_top_10(index):
    q, targets = queries(40)
    exact = Searcher(index, options=SearchOptions(mode="exact"))
    cand = Searcher(index, options=SearchOptions(mode="candidates", candidates=CandidateOptions(8, 128, 48)))
    ex, got = exact.rank(q, 10)[0], cand.rank(q, 10)[0]
    ids_ex = [{exact.state.page_ids[i] for i in row} for row in ex]
    ids_got = [{cand.state.page_ids[i] for i in row} for row in got]
    recall = np.mean([len(a & b) / 10 for a, b in zip(ids_ex, ids_got)])
    assert recall >= 0.9, recall
    # every query's target page is the top result
    assert all(cand.state.page_ids[row[0]] == page_id_for_target(t) for row, t in zip(got, targets))


def page_id_for_target(i: int) -> str:
    from snappy.ids import doc_id_for

    return page_id_for(doc_id_for(f"structured://{i:07d}"), 1)


def test_incremental_maintenance_adds_changes_and_drops_pages(index):
    store = index
    vocab = CORPUS.vocabulary_vectors()
    settings = IndexSettings("synthetic:structured", "none", 72.0)
    bigger = StructuredCorpus(460, n_tokens=N_TOKENS, vocabulary=512, concepts=(4, 10), seed=7)

    def page_rows(i: int, vectors: np.ndarray) -> tuple[dict, dict]:
        uri = f"structured://{i:07d}"
        doc = document_record(uri, settings, page_count=1)
        grid = '{"family":"synthetic","page_size":[384,4],"rows":1,"cols":%d}' % len(vectors)
        from snappy.patches.grid import PatchGrid

        grid = PatchGrid.uniform("synthetic", (len(vectors) * 4, 4), 1, len(vectors)).to_json()
        page = {"page_id": page_id_for(doc["doc_id"], 1), "doc_id": doc["doc_id"], "page_number": 1,
                "width": len(vectors) * 4, "height": 4, "width_pt": 1.0, "height_pt": 1.0, "dpi": 72.0, "image": None,
                "vectors": vectors, "n_tokens": len(vectors), "grid": grid, "encoder_id": "synthetic:structured"}
        return doc, page

    new = [page_rows(i, bigger.page(i, vocab)) for i in range(400, 460)]  # 60 new pages
    changed = [page_rows(i, bigger.page(459 - i, vocab)) for i in range(5)]  # 5 pages now show other content
    store.upsert([d for d, _ in new + changed], to_table("pages", [p for _, p in new + changed], 128), dim=128)
    store.delete_documents([document_record(f"structured://{i:07d}", settings)["doc_id"] for i in range(5, 10)])
    with store.writer() as w:
        out = update_candidates(w, SETTINGS)
    assert out == {**out, "action": "backfill", "pages_coded": 65}
    codes = store.read(CODES, ["page_id", "codebook_id"])
    live_pages = store.read("pages", ["page_id"])
    assert sorted(codes.column("page_id").to_pylist()) == sorted(live_pages.column("page_id").to_pylist())
    assert store.dataset(CODES).count_rows() == codes.num_rows  # replaced and deleted codes are gone
    assert store.count_rows()["pages"] == 455
    exact = Searcher(store, options=SearchOptions(mode="exact"))
    cand = Searcher(store, options=SearchOptions(mode="candidates", candidates=CandidateOptions(8, 160, 60)))
    qs = [bigger.query(j, vocab)[0] for j in range(30)]
    ex, got = exact.rank(qs, 10)[0], cand.rank(qs, 10)[0]
    recall = np.mean([len({exact.state.page_ids[i] for i in a} & {cand.state.page_ids[i] for i in b}) / 10
                      for a, b in zip(ex, got)])
    assert recall >= 0.9, recall


def test_growth_and_drift_retrain_the_codebook(index):
    cb = Codebook.from_table(index.dataset(CODEBOOK).to_table())
    s = CandidateSettings(min_pages=100)
    assert plan_codebook(50, None, None, s) is None  # too small: exact search
    assert plan_codebook(400, None, None, s).startswith("no codebook")
    assert plan_codebook(400, cb, cb.train_similarity, s) is None
    assert "grew" in plan_codebook(4 * cb.trained_pages, cb, None, s)
    assert "worse" in plan_codebook(400, cb, 0.8 * cb.train_similarity, s)
    with index.writer() as w:  # retraining replaces codebook and every page's codes in one commit
        w_epoch = w.epoch
        out = update_candidates(w, CandidateSettings(min_pages=100, k=128, retrain_growth=1.0, train_tokens=20000))
    assert out["action"] == "trained" and out["pages_coded"] == CORPUS.n_pages
    new = Codebook.from_table(index.dataset(CODEBOOK).to_table())
    assert new.k == 128 and new.codebook_id == w_epoch << 32 != cb.codebook_id
    assert set(index.read(CODES, ["codebook_id"]).column("codebook_id").to_pylist()) == {new.codebook_id}


def test_pooling_and_codebook_basics():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((256, 16)).astype(np.float32)
    pooled = pool_page(v, factor=8)
    assert 16 <= len(pooled) <= 32 and np.allclose(np.linalg.norm(pooled, axis=1), 1, atol=1e-5)
    assert default_k(10**3) == 256 and default_k(10**8) == 16384 and default_k(5 * 10**6) == 8192
    cb = Codebook.train(v, 8, codebook_id=1, trained_pages=1)
    codes, sims = cb.assign(v)
    assert codes.shape == (256,) and codes.max() < 8 and np.all(sims <= 1.0001)
    back = Codebook.from_table(cb.to_table())
    np.testing.assert_array_equal(back.centroids, cb.centroids)
    assert back.pool_scale == pytest.approx(cb.pool_scale)
    idx = CentroidIndex.build(cb, pa.array([[0, 3], [1], []], pa.list_(pa.int32())),
                              pa.array([np.zeros((2, 16), np.int8).tolist(), np.ones((1, 16), np.int8).tolist(), []],
                                       pa.list_(pa.list_(pa.int8(), 16))))
    assert idx.list_pages[idx.list_indptr[3]:idx.list_indptr[4]].tolist() == [0]
    assert idx.pooled_scores(np.ones((2, 16), np.float32), np.array([0, 1, 2])).tolist()[2] == 0.0


def test_empty_tokens_are_ignored_and_lexical_pages_are_not_pooled(tmp_path):
    from snappy.candidates.centroids import default_pool_factor, page_sketch

    rng = np.random.default_rng(1)
    v = rng.standard_normal((64, 16)).astype(np.float32)
    with_blanks = np.concatenate([v, np.zeros((192, 16), np.float32)])  # a page that is mostly white
    assert len(pool_page(with_blanks, factor=8)) == len(pool_page(v, factor=8)) == 8
    np.testing.assert_allclose(pool_page(with_blanks, factor=1), v / np.linalg.norm(v, axis=1, keepdims=True),
                               rtol=1e-6)
    assert default_pool_factor("lexical:d128:p28:t768:h8:s0") == 1 and default_pool_factor("vidore/colqwen2.5") == 8
    cb = Codebook.train(with_blanks, 8, codebook_id=1, trained_pages=1, pool_factor=1)
    assert cb.train_similarity > 0.3  # the blanks (cosine 0 to everything) are not part of the fit
    codes, pooled, sim = page_sketch(cb, with_blanks)
    assert len(pooled) == 64 and sim == pytest.approx(float(cb.assign(v)[1].mean()))
    back = Codebook.from_table(cb.to_table())
    assert back.pool_factor == 1
    older = cb.to_table().drop_columns(["pool_factor"])  # a codebook written before the column existed
    assert Codebook.from_table(older).pool_factor == 8


def test_a_lexical_index_keeps_its_words_in_the_candidate_stage(tmp_path):
    """The lexical encoder's codebook keeps every non-empty token (factor 1): the page of a rare word
    ("number 217") is still found among 400 pages that all say "the valve number ..." (8:1 pooling
    found the exact best page for 7 of 40 queries here, factor 1 for 35)."""
    import random

    from snappy.encoders.lexical import LexicalEncoder
    from snappy.regions.region import Region
    from snappy.candidates.settings import CandidateSettings
    from snappy.candidates.maintain import update_candidates
    from snappy.testing.synth_index import write_vector_pages
    from snappy.testing.synth import LETTER, text_page

    n, enc, rng = 400, LexicalEncoder(), random.Random(0)
    facts = [f"the {rng.choice(['valve', 'ledger', 'turbine'])} number {i} reads {rng.randint(100, 999)}"
             for i in range(n)]
    size = (round(LETTER[0] * 100 / 72), round(LETTER[1] * 100 / 72))

    def vectors(a, b):
        out = []
        for i in range(a, b):
            page = text_page(LETTER, [facts[i]], random.Random(i), n_lines=12)
            out.append(enc.embed_regions(size, [Region(bbox=tuple(v * 100 / 72 for v in ln.bbox_pt), page_size=size,
                                                        text=ln.text) for ln in page.lines]).vectors)
        return out

    uri = str(tmp_path / "lex")
    store = write_vector_pages(uri, n, vectors, enc.encoder_id, name="lexical")
    with store.writer() as w:
        update_candidates(w, CandidateSettings(min_pages=1))
    cand = Searcher(uri, options=SearchOptions(mode="candidates", candidates=CandidateOptions(pool=100, candidates=8)))
    exact = Searcher(uri, options=SearchOptions(mode="exact"))
    assert cand.state.mode == "candidates" and cand.state.index.codebook.pool_factor == 1
    qs = [enc.embed_queries([facts[i].split(" reads ")[0]])[0] for i in range(0, n, 10)]
    es, cs = exact.rank(qs, 1)[1], cand.rank(qs, 1)[1]
    assert np.mean(np.abs(es[:, 0] - cs[:, 0]) < 1e-4) >= 0.8


def test_four_bit_pooled_vectors_score_as_their_dequantised_values():
    """4 bits per dimension: the packed scores equal MaxSim on the unpacked vectors, which stay
    within half a step of the originals inside the fitted ranges."""
    rng = np.random.default_rng(3)
    pages = [pool_page(rng.standard_normal((int(n), 16)).astype(np.float32), 4) for n in (40, 8, 64)]
    cb = Codebook.train(np.concatenate(pages), 4, codebook_id=1, trained_pages=3)
    assert cb.pool_bits == 8
    cb4 = cb.with_pool_ranges(np.concatenate(pages), clip=0.0)
    assert cb4.pool_bits == 4 and cb4.pool_lo.shape == (16,)
    for p in pages:
        packed = cb4.pack4(p)
        assert packed.shape == (len(p), 8) and packed.dtype == np.uint8
        assert np.all(np.abs(cb4.unpack4(packed) - p) <= cb4.pool_step / 2 + 1e-6)
    idx = CentroidIndex.build(cb4, pa.array([[0], [1], [2]], pa.list_(pa.int32())),
                              pa.array([cb4.pack4(p).tolist() for p in pages], pa.list_(pa.list_(pa.uint8(), 8))))
    q = rng.standard_normal((5, 16)).astype(np.float32)
    want = [float((q @ cb4.unpack4(cb4.pack4(p)).T).max(axis=1).sum()) for p in pages]
    np.testing.assert_allclose(idx.pooled_scores(q, np.array([0, 1, 2])), want, rtol=1e-5, atol=1e-5)
    assert idx.pooled.nbytes == sum(len(p) for p in pages) * 8  # half of int8's bytes
    back = Codebook.from_table(cb4.to_table())  # ranges stored with the codebook
    np.testing.assert_array_equal(back.pool_lo, cb4.pool_lo)
    np.testing.assert_array_equal(back.pool_step, cb4.pool_step)
    assert Codebook.from_table(cb.to_table()).pool_bits == 8
    older = cb4.to_table().drop_columns(["pool_lo", "pool_step"])  # written before 4-bit ranges existed
    assert Codebook.from_table(older).pool_bits == 8
    with pytest.raises(ValueError, match="width 16"):  # int8 rows given to a 4-bit codebook
        CentroidIndex.build(cb4, pa.array([[0]], pa.list_(pa.int32())),
                            pa.array([cb.quantize(pages[0]).tolist()], pa.list_(pa.list_(pa.int8(), 16))))


def test_pool_bits_decisions():
    from snappy.candidates.maintain import default_pool_bits, plan_pool

    rng = np.random.default_rng(0)
    v = rng.standard_normal((64, 16)).astype(np.float32)
    cb = Codebook.train(v, 4, codebook_id=1, trained_pages=1)
    cb4 = cb.with_pool_ranges(v)
    assert default_pool_bits("vidore/colqwen2.5") == 4 and default_pool_bits("lexical:d128:p28:t768:h8:s0") == 8
    assert plan_pool(None, 4) is None and plan_pool(cb, 8) is None and plan_pool(cb4, 4) is None
    assert plan_pool(cb, 4) == "repack" and plan_pool(cb4, 8) == "retrain"


def test_an_int8_index_is_repacked_to_four_bits_without_recoding(tmp_path):
    """An index whose candidate stage predates 4-bit pooled vectors (codebook without ranges, codes
    table without ``pooled4``) is migrated by the next update: same codes, same pages, the pooled
    vectors re-packed in one commit, and search gives the same results as before for covering lists."""
    vocab = CORPUS.vocabulary_vectors()
    store = write_vector_pages(str(tmp_path / "old"), CORPUS.n_pages, lambda a, b: CORPUS.pages(a, b, vocab),
                               "synthetic:structured", name="structured")
    with store.writer() as w:
        assert update_candidates(w, CandidateSettings(**{**SETTINGS.__dict__, "pool_bits": 8}))["action"] == "trained"
    store.dataset(CODES).drop_columns(["pooled4"])  # as an older snappy wrote them
    store.dataset(CODEBOOK).drop_columns(["pool_lo", "pool_step"])
    with store.writer() as w:
        w.publish()
    q, _ = queries()
    wide = SearchOptions(mode="candidates", candidates=CandidateOptions(64, 400, 400, 400))
    before = Searcher(store, options=wide)
    assert before.state.index.codebook.pool_bits == 8 and before.state.index.pooled.dtype == np.int8
    old_codes = store.read(CODES, ["page_id", "codes"]).sort_by("page_id")
    with store.writer() as w:
        out = update_candidates(w, SETTINGS)
    assert out["action"] == "repacked" and out["pages_repacked"] == CORPUS.n_pages and out["pages_coded"] == 0
    new_codes = store.read(CODES, ["page_id", "codes", "pooled", "pooled4"]).sort_by("page_id")
    assert new_codes.column("codes").equals(old_codes.column("codes"))  # not recoded
    assert new_codes.column("pooled").null_count == CORPUS.n_pages and new_codes.column("pooled4").null_count == 0
    after = Searcher(store, options=wide)
    assert after.state.index.codebook.pool_bits == 4 and after.state.index.pooled.dtype == np.uint8
    assert after.state.uncoded.size == 0
    assert ranked(after.search_vectors(q, 10)) == ranked(before.search_vectors(q, 10))
    with store.writer() as w:  # nothing left to do
        assert update_candidates(w, SETTINGS)["action"] is None


def test_budgets_grow_with_the_index():
    from snappy.candidates.centroids import default_budgets

    assert default_budgets(1_000) == default_budgets(10_000) == (4096, 128)
    assert default_budgets(30_000) == (7094, 168)
    pool, cand = default_budgets(100_000)
    assert (pool, cand) == (12953, 228)
    assert default_budgets(10**9) == (16384, 512)
    assert all(a <= b for a, b in zip(default_budgets(50_000), default_budgets(60_000)))
    assert CandidateOptions().budgets(100_000) == (pool, cand)
    assert CandidateOptions(pool=100, candidates=8).budgets(100_000) == (100, 8)
    assert CandidateOptions(candidates=8).budgets(10) == (4096, 8)


def test_the_codebook_has_the_documented_size():
    """K = default_k(the index's non-empty tokens), computed before the training sample is cut to
    ``train_tokens`` (it was computed after: 4,096 centroids at 5,000 pages instead of 8,192)."""
    from snappy.candidates.maintain import index_k, train_codebook

    assert index_k(5_000 * 1024, 2_000 * 1024, 2_000 * 1024) == 8192  # docs/search.md: 5,000 pages
    assert index_k(30_000 * 1024, 2_000 * 1024, 2_000 * 1024) == 16384  # 30,000 pages (the cap)
    assert index_k(5_000 * 1024, 1000, 250) == default_k(1_280_000)  # empty tokens are never coded
    pages = CORPUS.pages(0, 300)
    cut = CandidateSettings(train_pages=300, train_tokens=4000)  # the sample is cut to 4,000 of 28,800 tokens
    cb = train_codebook(pages, CORPUS.n_pages * N_TOKENS, CORPUS.n_pages, cut, 1, "synthetic:structured")
    assert cb.k == default_k(CORPUS.n_pages * N_TOKENS) == 1024 > default_k(4000)


# near-duplicates: two templates of 200 pages each, more than the default rerank of 128
TEMPLATES = TemplateCorpus(400, n_tokens=N_TOKENS, vocabulary=512, concepts=(4, 10), group=200, seed=7)
CALIBRATION = CandidateSettings(min_pages=100, k=256, train_pages=300, train_tokens=20000, calibration_queries=60)


def recall_at_10(exact: Searcher, cand: Searcher, qs) -> tuple[float, float]:
    """(recall@10 of ``cand`` against ``exact``, mean pages scored exactly per query)."""
    ex = exact.rank(qs, 10)[0]
    got, scored = [], []
    for q in qs:
        idx, _, _, n = cand._rank([q], 10, cand.state)
        got.append(idx[0])
        scored.append(n)
    ids = lambda s, rows: [{s.state.page_ids[i] for i in row} for row in rows]  # noqa: E731
    return float(np.mean([len(a & b) / 10 for a, b in zip(ids(exact, ex), ids(cand, got))])), float(np.mean(scored))


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """The near-duplicate index, calibrated by its maintenance with 60 logged queries (the corpus's
    queries 100-159; the tests measure on queries 0-39)."""
    from snappy.candidates.maintain import QuerySamples

    vocab = TEMPLATES.vocabulary_vectors()
    store = write_vector_pages(str(tmp_path_factory.mktemp("tpl") / "idx"), TEMPLATES.n_pages,
                               lambda a, b: TEMPLATES.pages(a, b, vocab), "synthetic:templates", name="templates")
    logged = QuerySamples(prefix=vocab[TEMPLATES.vocabulary + TEMPLATES.background_styles:],
                          logged=[TEMPLATES.query(j, vocab)[0] for j in range(100, 160)])
    with store.writer() as w:
        out = update_candidates(w, CALIBRATION, logged)
    qs = [TEMPLATES.query(j, vocab)[0] for j in range(40)]
    return store, out, qs


def test_calibration_reaches_the_target_where_the_default_budgets_do_not(templates):
    store, out, qs = templates
    assert out["action"] == "trained" and out["calibrated"] == "no calibration yet"
    cal = Codebook.from_table(store.dataset(CODEBOOK).to_table()).calibration
    assert cal is not None and cal.target == 0.95 and cal.logged == 60 and cal.queries == 120  # + as many pseudo-queries
    exact = Searcher(store, options=SearchOptions(mode="exact"))
    default = Searcher(store, options=SearchOptions(mode="candidates", candidates=CandidateOptions(
        pool=4096, candidates=128)))  # the budgets before calibration: 128 reranked, fixed
    before, _ = recall_at_10(exact, default, qs)
    calibrated = Searcher(store, options=SearchOptions(mode="candidates"))
    after, scored = recall_at_10(exact, calibrated, qs)
    assert before < 0.95 <= after, (before, after)
    assert abs(after - cal.estimate) <= 0.05, (after, cal.estimate)
    assert scored < TEMPLATES.n_pages  # not by scoring everything
    # a query may ask for another target: answered from the same measured curve
    low = Searcher(store, options=SearchOptions(mode="candidates", candidates=CandidateOptions(target_recall=0.6)))
    assert low.info()["estimated_recall"] >= 0.6
    assert low.info()["budgets"]["max_candidates"] <= calibrated.info()["budgets"]["max_candidates"]


def test_near_duplicates_do_not_crowd_out_the_answer(templates):
    """A template group larger than the rerank: a fixed rerank of 64 pages keeps an arbitrary part of
    the group; reranking on while the bound says a page could still enter the top-10 keeps the exact
    top-10, and stops before the whole index."""
    store, _, qs = templates
    exact = Searcher(store, options=SearchOptions(mode="exact"))
    fixed = Searcher(store, options=SearchOptions(mode="candidates", candidates=CandidateOptions(
        pool=400, candidates=64, max_candidates=64)))
    bound = Searcher(store, options=SearchOptions(mode="candidates", candidates=CandidateOptions(
        pool=400, candidates=64, max_candidates=400)))
    (r_fixed, n_fixed), (r_bound, n_bound) = recall_at_10(exact, fixed, qs), recall_at_10(exact, bound, qs)
    assert r_fixed < 0.8 and n_fixed == 64
    assert r_bound > r_fixed + 0.1 and 64 < n_bound < 400, (r_bound, n_bound)


def test_the_estimated_recall_is_reported(templates):
    from snappy.storage.report import index_report

    store, out, _ = templates
    cal = Codebook.from_table(store.dataset(CODEBOOK).to_table()).calibration
    assert out["estimated_recall"] == round(cal.estimate, 3) and 0 < cal.estimate <= 1
    report = index_report(store, quick=True)["candidates"]
    assert report["centroids"] == 256
    assert report["calibration"]["estimated_recall"] == round(cal.estimate, 3)
    assert report["calibration"]["budgets"] == cal.summary()["budgets"]
    assert report["query_log"] == {"queries": 0, "files": 0, "newest": None}  # calibrated on the caller's queries
    from typer.testing import CliRunner

    from pipelines.cli import app

    text = CliRunner().invoke(app, ["inspect", store.uri]).stdout
    assert f"estimated recall@10 {round(cal.estimate, 3)} (target 0.95, 120 queries, 60 logged" in " ".join(text.split())
    searcher = Searcher(store, options=SearchOptions(mode="candidates"))
    info = searcher.info()
    assert info["estimated_recall"] == round(cal.estimate, 3) and info["calibration"] == cal.summary()
    from pipelines.serve import _calibration  # GET /version: each shard's calibration

    assert _calibration(searcher.state) == cal.summary() and _calibration(None) is None


def test_calibration_decisions():
    from snappy.candidates.calibrate import Budgets, Calibration, choose, plan_calibration, rerank_more

    curve = [{"budgets": Budgets(112, 100, c, c).__dict__, "recall": r, "cost_ms": c}
             for c, r in ((32, 0.7), (64, 0.93), (128, 0.96), (256, 0.99))]
    assert choose(curve, 0.95)["cost_ms"] == 128 and choose(curve, 0.9)["cost_ms"] == 64
    assert choose(curve, 0.999)["recall"] == 0.99  # none reaches it: the best
    cal = Calibration(7, 1000, 0.95, 100, 0, Budgets(**choose(curve, 0.95)["budgets"]), 0.96, curve)
    assert cal.for_target(0.9)[0].candidates == 64 and cal.for_target(None) == (cal.chosen, 0.96)
    assert Calibration.from_json(cal.to_json()) == cal
    # query groups (logged, pseudo): each must clear the target; the estimate is the lowest group's recall
    from snappy.candidates.calibrate import floor, row_estimate

    two = {"recall": 0.97, "se": 0.0, "groups": {"logged": {"recall": 0.955, "se": 0.01},
                                                 "pseudo": {"recall": 0.985, "se": 0.01}}}
    assert floor(two) == 0.945 and floor(two, 0.0) == 0.955 and row_estimate(two) == 0.955
    # the margin: a point must clear the target by margin_se standard errors of its recall
    noisy = [dict(r, se=0.02) for r in curve]
    assert [choose(noisy, 0.95, z)["cost_ms"] for z in (0.0, 1.0, 2.0)] == [128, 256, 256]
    import json

    stored = json.loads(cal.to_json())
    del stored["margin_se"]  # a calibration stored before the margin was a field
    assert Calibration.from_json(json.dumps(stored)).margin_se == 1.0
    assert plan_calibration(1000, 7, None, 0.95) == "no calibration yet"
    assert plan_calibration(1200, 7, cal, 0.95) is None
    assert "retrained" in plan_calibration(1000, 8, cal, 0.95)
    assert "target" in plan_calibration(1000, 7, cal, 0.9)
    assert "1600 pages" in plan_calibration(1600, 7, cal, 0.95)
    # the bound: pages whose pooled score + the largest (exact - pooled) seen could reach the 2nd exact score
    pooled = np.array([10, 9, 8, 7.5, 5, 1.0])
    assert rerank_more(pooled, np.array([11.5, 8.4]), 2) == 2  # lift 1.5: 8 and 7.5 can reach 8.4, 5 cannot
    assert rerank_more(pooled, np.array([10.5, 9.6, 8.1, 7.6]), 2) == 0
    assert rerank_more(pooled, np.array([10.5]), 2) == 1  # fewer than k: read up to k
    assert Budgets(pool=100, candidates=10, pool_share=0.01).pool_for(50_000) == 500


def test_the_nightly_run_calibrates_on_the_queries_the_service_logged(tmp_path):
    """Queries logged as the service logs them (snappy.storage.querylog) replace the pseudo-queries at the
    next run: the calibration is measured again on them, and its estimate holds on other real queries."""
    from snappy.storage import querylog
    from snappy.storage.querylog import QueryLogger, QueryLogOptions

    vocab = TEMPLATES.vocabulary_vectors()
    store = write_vector_pages(str(tmp_path / "idx"), TEMPLATES.n_pages, lambda a, b: TEMPLATES.pages(a, b, vocab),
                               "synthetic:templates", name="templates")
    with store.writer() as w:
        first = update_candidates(w, CALIBRATION)  # no log yet: pseudo-queries only
    assert first["calibrated"] == "no calibration yet" and first["query_log"] == {"queries": 0, "since_calibration": 0}
    assert Codebook.from_table(store.dataset(CODEBOOK).to_table()).calibration.logged == 0
    exact = Searcher(store, options=SearchOptions(mode="exact"))
    prefix = vocab[TEMPLATES.vocabulary + TEMPLATES.background_styles:]
    logger = QueryLogger(store.files, exact.encoder_id, QueryLogOptions(flush_queries=25), prefix=lambda: prefix)
    for j in range(100, 160):  # one request at a time, as the router records them
        logger.record([TEMPLATES.query(j, vocab)[0]])
    logger.flush()
    assert querylog.count(store.files, "synthetic:templates") == 60
    np.testing.assert_allclose(querylog.read_prefix(store.files, "synthetic:templates"), prefix)
    with store.writer() as w:
        second = update_candidates(w, CALIBRATION)
    assert second["calibrated"] == "the query log holds 60 queries, the calibration used 0", second
    cal = Codebook.from_table(store.dataset(CODEBOOK).to_table()).calibration
    assert cal.logged == 60 and cal.queries == 120
    chosen = next(r for r in cal.curve if r["budgets"] == {**cal.chosen.__dict__})
    assert set(chosen["groups"]) == {"logged", "pseudo"}  # the target had to hold on each
    assert cal.estimate == min(chosen["recall"], chosen["groups"]["logged"]["recall"], chosen["groups"]["pseudo"]["recall"])
    qs = [TEMPLATES.query(j, vocab)[0] for j in range(40)]
    after, _ = recall_at_10(exact, Searcher(store, options=SearchOptions(mode="candidates")), qs)
    assert after >= 0.95 and abs(after - cal.estimate) <= 0.05, (after, cal.estimate)
    with store.writer() as w:  # nothing new since: no measurement
        assert "calibrated" not in update_candidates(w, CALIBRATION)
    # a request may ask for another target: the budgets of the stored point for it
    calibrated = Searcher(store, options=SearchOptions(mode="candidates"))
    low = Searcher(store, options=SearchOptions(mode="candidates", candidates=CandidateOptions(target_recall=0.6)))
    scored = [calibrated._rank([q], 10, calibrated.state, 0.6)[3] for q in qs[:8]]
    assert scored == [low._rank([q], 10, low.state)[3] for q in qs[:8]]
    assert sum(scored) < sum(calibrated._rank([q], 10, calibrated.state)[3] for q in qs[:8])
