"""Keeping the candidate stage up to date: when to (re)train the codebook, and codes for every page.

Runs under the index's writer (lease held) after the indexing run's commits:

- **no codebook** and at least ``min_pages`` live pages: train one (spherical k-means over tokens of
  ``train_pages`` sampled pages) and compute every page's codes;
- **drift**: pages written since training fit the centroids worse (mean cosine below
  ``retrain_similarity`` x the training one), or the index grew ``retrain_growth`` times since: retrain
  and recompute every page's codes (a full rebuild, committed at once with the new codebook);
- otherwise compute codes only for live pages that have none for the current codebook (pages written
  by a run that started before the codebook existed). The indexing run itself computes the codes of
  the pages it writes once a codebook exists, in the same commit as the pages;
- **4-bit pooled vectors**: a codebook trained before pool ranges existed (its codes rows hold int8
  pooled vectors, 16 KB a page) gains ranges fitted to a sample of its stored vectors, and every codes
  row is re-packed to 4 bits (8 KB) in the same commit: no re-pooling, no retraining (``plan_pool``).

- **calibration** (:mod:`snappy.candidates.calibrate`): after training, and again when the index grew or
  shrank ``recalibrate_growth`` times, the target changed, the query log gained enough queries or the
  calibration is old and the log has newer queries (``plan_calibration``), the budgets that reach
  ``target_recall`` are measured on pseudo-queries from the index's pages and the newest logged queries
  (:mod:`snappy.storage.querylog`, and :class:`QuerySamples`), against their exact MaxSim over every
  coded page, and stored with the codebook in a second commit (the codebook table rewritten
  with its calibration). The run also deletes logged queries older than ``query_log_days``.

Codes rows carry their page's generation, so they follow the commit protocol like pages: a
re-indexed document's old codes go with its old pages, and readers see codes and codebook of one
snapshot together.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from snappy.candidates.settings import CandidateSettings
from snappy.candidates.calibrate import Calibration, calibrate, exact_maxsim, plan_calibration, pseudo_queries
from snappy.candidates.centroids import (CentroidIndex, Codebook, codes_table, default_k, default_pool_factor, list_values, nonempty,
                                     pool_page, sketch_table)
from snappy.storage import querylog
from snappy.storage.commit import CommitBatch, live_mask
from snappy.storage.schema import CODEBOOK, CODES, DOCUMENTS, PAGES, codes_schema
from snappy.storage.writer import IndexWriter, write_fragments

log = logging.getLogger(__name__)


def plan_codebook(n_pages: int, codebook: Codebook | None, recent_similarity: float | None,
                  s: CandidateSettings) -> str | None:
    """Why the codebook must be (re)trained now, or None (pure)."""
    if not s.enabled or n_pages < s.min_pages:
        return None
    if codebook is None:
        return f"no codebook yet ({n_pages} pages)"
    if n_pages >= s.retrain_growth * max(codebook.trained_pages, 1):
        return f"the index grew from {codebook.trained_pages} to {n_pages} pages since training"
    if recent_similarity is not None and recent_similarity < s.retrain_similarity * codebook.train_similarity:
        return (f"new pages fit the centroids worse (mean cosine {recent_similarity:.3f} vs "
                f"{codebook.train_similarity:.3f} at training)")
    return None


def index_k(total_tokens: int, sampled: int, sampled_nonempty: int) -> int:
    """Centroids for an index of ``total_tokens`` tokens of which the training pages showed
    ``sampled_nonempty`` non-empty out of ``sampled`` (pure): ``default_k`` of the index's non-empty
    tokens, estimated from the share in the sample (empty tokens are never coded). Computed before the
    sample is cut to ``train_tokens``: before 2026-12-04 K came from the cut sample, so 5,000 pages got
    4,096 centroids instead of the documented 8,192 (issue 15)."""
    share = sampled_nonempty / sampled if sampled else 1.0
    return default_k(int(round(total_tokens * share)))


def default_pool_bits(encoder_id: str | None) -> int:
    """4 bits per dimension for model pages (half the RAM of int8; recall measured in docs/search.md);
    8 for lexical pages, whose unpooled count-sketch tokens were not measured at 4 bits (pure)."""
    return 8 if default_pool_factor(encoder_id) == 1 else 4


def plan_pool(codebook: Codebook | None, bits: int) -> str | None:
    """``"repack"`` when an int8 codebook's rows should become 4-bit, ``"retrain"`` for the reverse
    (4-bit codes cannot give back int8 ones), else None (pure)."""
    if codebook is None or codebook.pool_bits == bits:
        return None
    return "repack" if bits == 4 else "retrain"


def update_candidates(writer: IndexWriter, settings: CandidateSettings = CandidateSettings(),
                      queries: "QuerySamples | None" = None) -> dict:
    """Train / retrain / backfill as the module doc says, in one commit. Returns what it did."""
    store = writer.store
    out: dict = {"action": None}
    if not settings.enabled or not store.exists(PAGES) or not store.exists(DOCUMENTS):
        return out
    t0 = time.perf_counter()
    writer.migrate()  # before any fragment is written: codes fragments use the table's current schema
    docs = store.dataset(DOCUMENTS).to_table(columns=["doc_id", "gen", "status"])
    pages_ds = store.dataset(PAGES)
    meta = pages_ds.to_table(columns=["page_id", "doc_id", "gen", "n_tokens", "encoder_id"], scan_in_order=True)
    position = np.arange(meta.num_rows, dtype=np.int64)
    live = live_mask(meta.column("doc_id"), meta.column("gen"), docs) & \
        (pc.fill_null(meta.column("n_tokens"), 0).to_numpy(zero_copy_only=False) > 0)
    meta, position = meta.filter(pa.array(live)), position[live]
    codebook = Codebook.from_table(store.dataset(CODEBOOK).to_table()) if store.exists(CODEBOOK) else None
    codes = store.dataset(CODES).to_table(columns=["page_id", "doc_id", "gen", "codebook_id", "similarity"]) \
        if store.exists(CODES) else codes_schema().empty_table().select(["page_id", "doc_id", "gen", "codebook_id",
                                                                          "similarity"])
    codes = codes.filter(pa.array(live_mask(codes.column("doc_id"), codes.column("gen"), docs)))
    recent = None
    if codebook is not None:
        current = codes.filter(pc.equal(codes.column("codebook_id"), codebook.codebook_id))
        newer = current.filter(pc.greater(current.column("gen"), codebook.codebook_id))
        if newer.num_rows:
            recent = float(pc.mean(newer.column("similarity")).as_py())
    reason = plan_codebook(meta.num_rows, codebook, recent, settings)
    bits = settings.pool_bits or default_pool_bits(_major_encoder(meta))
    pool_plan = None if reason else plan_pool(codebook, bits)
    if pool_plan == "retrain":
        reason = f"the codebook holds {codebook.pool_bits}-bit pooled vectors; {bits} wanted"
    elif pool_plan == "repack":  # `codes` stays valid: the same live pages keep rows of the same codebook id
        codebook, repacked = _repack(writer, codebook, docs, settings)
        out.update(action="repacked", pages_repacked=repacked)
    batch = CommitBatch()
    if reason:
        log.info("training the candidate codebook: %s", reason)
        codebook = _train(pages_ds, meta, position, settings, writer)
        batch.replace[CODEBOOK] = codebook.to_table()
        batch.deletes[CODES] = f"codebook_id != {codebook.codebook_id}"
        todo = np.ones(meta.num_rows, bool)
        out.update(action="trained", reason=reason, k=codebook.k, train_similarity=round(codebook.train_similarity, 4))
    elif codebook is not None:
        have = codes.filter(pc.equal(codes.column("codebook_id"), codebook.codebook_id))
        todo = ~pc.is_in(meta.column("page_id"), value_set=have.column("page_id")).to_numpy(zero_copy_only=False)
        out.update(action="backfill" if todo.any() else out["action"])
    else:
        return out
    sel = np.flatnonzero(todo)
    frags = []
    for a in range(0, len(sel), settings.batch_pages):
        rows = sel[a:a + settings.batch_pages]
        vectors = pages_ds.take(position[rows], columns=["vectors"]).column("vectors").combine_chunks()
        table = sketch_table(codebook, meta.take(pa.array(rows)).select(["page_id", "doc_id", "gen"]), vectors)
        frags.extend(write_fragments(store.table_uri(CODES), table, store.storage_options))
    if frags:
        batch.fragments[CODES] = frags
    if not batch.is_empty():
        writer.commit(batch)
    out.update(pages_coded=int(len(sel)))
    why = None
    if settings.calibrate:
        queries = queries or QuerySamples()
        log_state = _query_log_state(store, _major_encoder(meta), codebook.calibration, settings)
        out["query_log"] = log_state
        why = plan_calibration(meta.num_rows, codebook.codebook_id, codebook.calibration, settings.target_recall,
                               settings.recalibrate_growth, log_state["queries"] + len(queries.logged),
                               log_state["since_calibration"] + len(queries.logged),
                               settings.calibration_queries, _age_days(codebook.calibration), settings.recalibrate_days)
    if why:
        log.info("calibrating the candidate stage's budgets: %s", why)
        cal = calibrate_index(store, codebook, meta, position, docs, settings, queries)
        writer.commit(CommitBatch(replace={CODEBOOK: replace(codebook, calibration=cal).to_table()}))
        out.update(calibrated=why, estimated_recall=round(cal.estimate, 3), budgets=cal.summary()["budgets"])
    out.update(seconds=round(time.perf_counter() - t0, 2))
    log.info("candidate stage: %s", out)
    return out


@dataclass
class QuerySamples:
    """What the caller knows of real queries, beside the index's query log (:mod:`snappy.storage.querylog`):
    the encoder's prefix tokens (the vectors every query carries, e.g. ``embed_queries`` of an empty query;
    an array, or a zero-argument callable called only when a calibration runs; None: the log's, if a
    service stored them) and queries' token vectors, measured before the log's."""

    prefix: np.ndarray | Callable[[], np.ndarray | None] | None = None
    logged: list[np.ndarray] = field(default_factory=list)

    def prefix_tokens(self) -> np.ndarray | None:
        """The prefix as ``[t, dim]`` float32 without all-zero rows (None: none)."""
        p = self.prefix
        if callable(p):
            try:
                p = p()
            except Exception as e:  # pseudo-queries without the prefix are still pseudo-queries
                log.warning("cannot compute the encoder's prefix tokens for the calibration (%s: %s)",
                            type(e).__name__, e)
                return None
        if p is None:
            return None
        p = np.atleast_2d(np.asarray(p, np.float32))
        p = p[(p != 0).any(axis=1)]
        return p if len(p) else None


def _query_log_state(store, encoder_id: str | None, cal: Calibration | None, s: CandidateSettings) -> dict:
    """Prune the index's query log (the writer does) and count it: all of ``encoder_id``'s logged queries,
    and those newer than the calibration."""
    if not s.query_log:
        return {"queries": 0, "since_calibration": 0}
    pruned = querylog.prune(store.files, s.query_log_days)
    files = querylog.log_files(store.files, encoder_id)
    since = _measured_ts(cal)
    return {"queries": sum(f.count for f in files),
            "since_calibration": sum(f.count for f in files if since is None or f.at > since)} | (
        {"pruned_files": pruned} if pruned else {})


def _measured_ts(cal: Calibration | None) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(cal.measured_at).timestamp() if cal is not None and cal.measured_at else None
    except ValueError:
        return None


def _age_days(cal: Calibration | None) -> float:
    ts = _measured_ts(cal)
    return 0.0 if ts is None else max(0.0, (time.time() - ts) / querylog.DAY_S)


def calibrate_index(store, codebook: Codebook, meta: pa.Table, position: np.ndarray, docs: pa.Table,
                    s: CandidateSettings, queries: QuerySamples | None = None) -> Calibration:
    """Measure the budgets on the index's live coded pages (:mod:`snappy.candidates.calibrate`): the
    candidate structure as a searcher loads it; up to ``calibration_queries`` logged queries (the caller's,
    then the query log's newest) and ``calibration_queries`` pseudo-queries from random pages; their exact
    MaxSim over every coded page (one streaming pass). With at least half of ``calibration_queries``
    logged, the target must hold on the logged and on the pseudo-queries each (``floor``'s groups);
    fewer logged queries are measured with the pseudo-queries as one set."""
    from datetime import datetime, timezone

    queries = queries or QuerySamples()
    index, page_ids = load_index(store, codebook, docs)
    at = pc.fill_null(pc.index_in(meta.column("page_id"), value_set=pa.array(page_ids, pa.string())), -1).to_numpy(
        zero_copy_only=False).astype(np.int64)
    coded = at >= 0
    rng = np.random.default_rng(s.seed + 1)
    logged = [np.asarray(q, np.float32) for q in queries.logged][:s.calibration_queries]
    encoder_id = _major_encoder(meta)
    if s.query_log and len(logged) < s.calibration_queries:
        logged += querylog.read_recent(store.files, s.calibration_queries - len(logged), encoder_id, codebook.dim)
    rows = np.sort(rng.choice(np.flatnonzero(coded), size=min(s.calibration_queries, int(coded.sum())),
                              replace=False))
    pages = _read_pages(store.dataset(PAGES), position[rows])
    prefix = queries.prefix_tokens()
    if prefix is None and s.query_log:
        prefix = querylog.read_prefix(store.files, encoder_id)
    if prefix is None:
        log.info("calibration: pseudo-queries without the encoder's prefix tokens (none given or logged)")
    made, made_hard = pseudo_queries(pages, codebook, np.diff(index.list_indptr), rng, prefix)
    qs = logged + made
    if len(logged) >= max(s.calibration_queries // 2, 1):  # two groups, each must reach the target
        hard, groups = None, np.array(["logged"] * len(logged) + ["pseudo"] * len(made))
    else:  # too few logged queries to stand alone: one set (logged queries are as hard as they are)
        hard, groups = np.concatenate([np.zeros(len(logged), bool), made_hard]), None
    exact = np.zeros((len(qs), index.n_pages), np.float32)
    ds = store.dataset(PAGES)
    sel = np.flatnonzero(coded)
    for a in range(0, len(sel), s.batch_pages):
        rows = sel[a:a + s.batch_pages]
        exact[:, at[rows]] = exact_maxsim(qs, _read_pages(ds, position[rows]))
    return calibrate(index, qs, exact, s.target_recall, codebook.codebook_id, index.n_pages, len(logged),
                     datetime.now(timezone.utc).isoformat(timespec="seconds"), hard=hard, groups=groups)


def _read_pages(ds, positions: np.ndarray) -> list[np.ndarray]:
    vectors = ds.take(positions, columns=["vectors"]).column("vectors").combine_chunks()
    dim = vectors.type.value_type.list_size
    lengths, flat = list_values(vectors, 2)
    flat = flat.reshape(-1, dim)
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def load_index(store, codebook: Codebook, docs: pa.Table) -> tuple[CentroidIndex, list[str]]:
    """The CentroidIndex of every live codes row of ``codebook`` and their page ids (in its order)."""
    column = "pooled" if codebook.pool_bits == 8 else "pooled4"
    t = store.dataset(CODES).to_table(columns=["page_id", "doc_id", "gen", "codes", column],
                                      filter=f"codebook_id = {codebook.codebook_id}")
    t = t.filter(pa.array(live_mask(t.column("doc_id"), t.column("gen"), docs) &
                          pc.is_valid(t.column(column)).to_numpy(zero_copy_only=False)))
    return CentroidIndex.build(codebook, t.column("codes"), t.column(column)), t.column("page_id").to_pylist()


def _train(pages_ds, meta: pa.Table, position: np.ndarray, s: CandidateSettings, writer: IndexWriter) -> Codebook:
    rng = np.random.default_rng(s.seed)
    n = meta.num_rows
    pick = np.sort(rng.choice(n, size=min(n, s.train_pages), replace=False))
    pages = _read_pages(pages_ds, position[pick])
    total_tokens = int(pc.sum(meta.column("n_tokens")).as_py() or 0)
    return train_codebook(pages, total_tokens, n, s, writer.epoch << 32, _major_encoder(meta))


def train_codebook(pages: list[np.ndarray], total_tokens: int, n_pages: int, s: CandidateSettings, codebook_id: int,
                   encoder_id: str | None) -> Codebook:
    """The codebook of an index of ``n_pages`` pages (``total_tokens`` tokens) from the token vectors of
    its sampled ``pages``: K by :func:`index_k`, k-means over at most ``train_tokens`` of their
    non-empty tokens, 4-bit pool ranges from the first ``range_pages`` pages pooled."""
    rng = np.random.default_rng(s.seed)
    dim = pages[0].shape[1] if pages else 128
    flat = np.concatenate(pages).astype(np.float32) if pages else np.zeros((0, dim), np.float32)
    sampled = len(flat)
    flat = nonempty(flat)
    k = s.k or index_k(total_tokens, sampled, len(flat))  # before the sample is cut to train_tokens
    if len(flat) > s.train_tokens:
        flat = flat[rng.choice(len(flat), size=s.train_tokens, replace=False)]
    factor = s.pool_factor or default_pool_factor(encoder_id)
    codebook = Codebook.train(flat, k, codebook_id=codebook_id, trained_pages=n_pages, seed=s.seed,
                              pool_factor=factor)
    if (s.pool_bits or default_pool_bits(encoder_id)) == 4:  # ranges from the pooled vectors of sampled pages
        pooled = [pool_page(p.astype(np.float32), factor) for p in pages[:s.range_pages] if len(p)]
        codebook = codebook.with_pool_ranges(np.concatenate(pooled) if pooled else np.zeros((1, dim), np.float32))
    return codebook


def _major_encoder(meta: pa.Table) -> str | None:
    counts = pc.value_counts(meta.column("encoder_id")).to_pylist()
    return max(counts, key=lambda c: c["counts"])["values"] if counts else None


def _repack(writer: IndexWriter, codebook: Codebook, docs: pa.Table, s: CandidateSettings) -> tuple[Codebook, int]:
    """An int8 codebook gains 4-bit pool ranges and its live codes rows become 4-bit, in one commit.
    Returns the 4-bit codebook and the rows re-packed."""
    store = writer.store
    ds = store.dataset(CODES)
    cols = ["page_id", "doc_id", "gen", "codes", "pooled", "similarity"]
    where = f"codebook_id = {codebook.codebook_id} AND pooled IS NOT NULL"
    sample = []  # ranges from the first pages' stored vectors (the table's order is the coding order)
    for b in ds.to_batches(columns=["pooled"], filter=where, batch_size=s.batch_pages):
        sample.append(list_values(b.column(0), 2)[1].reshape(-1, codebook.dim))
        if sum(len(x) for x in sample) >= s.range_pages * 128:
            break
    x = np.concatenate(sample).astype(np.float32) * codebook.pool_scale if sample else \
        np.zeros((1, codebook.dim), np.float32)
    four = codebook.with_pool_ranges(x)
    batch, n = CommitBatch(), 0
    frags = []
    for b in ds.to_batches(columns=cols, filter=where, batch_size=max(s.batch_pages, 2048)):
        t = pa.Table.from_batches([b])
        t = t.filter(pa.array(live_mask(t.column("doc_id"), t.column("gen"), docs)))
        if not t.num_rows:
            continue
        lengths, flat = list_values(t.column("pooled"), 2)
        packed = four.pack4(flat.reshape(-1, codebook.dim).astype(np.float32) * codebook.pool_scale)
        bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        rows = [packed[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        table = codes_table(four, t.select(["page_id", "doc_id", "gen"]),
                            [np.asarray(c, np.int32) for c in t.column("codes").to_numpy(zero_copy_only=False)],
                            rows, t.column("similarity").to_numpy(zero_copy_only=False), codebook.dim)
        frags.extend(write_fragments(store.table_uri(CODES), table, store.storage_options))
        n += t.num_rows
    batch.replace[CODEBOOK] = four.to_table()
    if frags:
        batch.fragments[CODES] = frags
    batch.deletes[CODES] = f"codebook_id = {codebook.codebook_id} AND pooled IS NOT NULL"  # after the appends
    writer.commit(batch)
    log.info("candidate stage: %d codes rows re-packed to 4-bit pooled vectors", n)
    return four, n
