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
from snappy.testing.synth_index import StructuredCorpus, write_vector_pages

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
    wide = Searcher(index, options=SearchOptions(mode="candidates", candidates=CandidateOptions(64, 400, 400)))
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
    (e, es), (c, cs) = exact.rank(qs, 1), cand.rank(qs, 1)
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
    wide = SearchOptions(mode="candidates", candidates=CandidateOptions(64, 400, 400))
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
