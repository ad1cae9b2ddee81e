"""The Searcher: query -> candidate pages -> exact MaxSim -> regions, over one published snapshot.

Two ways to rank, chosen per snapshot (``SearchOptions.mode``; ``auto`` picks):

- **exact** (small indexes, or no codebook yet): every live page's patch vectors in one in-RAM
  matrix, scanned by :func:`snappy.search.maxsim.maxsim` for every query;
- **candidates** (large indexes): the centroid codes of every page (``codes`` table) in an
  in-RAM :class:`~snappy.candidates.centroids.CentroidIndex` give a few hundred candidate pages, whose
  stored vectors are read by row from Lance (``take`` at the snapshot's version) for the exact
  MaxSim. Nothing of size ``pages x tokens`` is held in memory.

Either way the result pages' regions are scored from the per-patch maxima of the exact MaxSim
with cached weights (:mod:`snappy.search.region_rows`). A Searcher serves one snapshot at a time;
:meth:`Searcher.refresh` builds the next snapshot's state off to the side and swaps it in, so a
query always runs against one consistent snapshot (it holds its state for its whole duration).
With ``shard=(i, n)`` it serves the pages of the documents whose id hashes to ``i``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from snappy.regions.blocks import DEFAULT_LEVEL
from snappy.encoders import Encoder, make_encoder
from snappy.patches.grid import PatchGrid
from snappy.regions.propagation import DEFAULT_METHOD, DEFAULT_THRESHOLD, Threshold
from snappy.candidates.centroids import CandidateOptions, CentroidIndex, Codebook
from snappy.search.maxsim import PageMatrix, maxsim, top_k
from snappy.errors import QueryError
from snappy.search.query import DEFAULT_TOP_PAGES, check_level, check_query, check_request, check_target
from snappy.search.region_rows import REGION_COLUMNS, RegionStore
from snappy.search.results import NO_MATCH, NO_PAGES, PageResult, PageResults, RegionResult
from snappy.storage.commit import live_mask, sql_list
from snappy.storage.schema import CODEBOOK, CODES, DOCUMENTS, PAGES, REGIONS
from snappy.storage.querylog import QueryLogger
from snappy.storage.snapshot import Snapshot
from snappy.storage.tables import IndexDamaged, IndexStore, IndexUnavailable, reraise_fatal

log = logging.getLogger(__name__)

_META = ["page_id", "doc_id", "gen", "page_number", "width", "height", "n_tokens", "grid", "encoder_id"]
_META_TYPES = {"gen": pa.int64(), "page_number": pa.int32(), "width": pa.int32(), "height": pa.int32(),
               "n_tokens": pa.int32()}


@dataclass(frozen=True)
class SearchOptions:
    mode: str = "auto"  # auto | exact | candidates
    exact_max_pages: int = 20_000  # auto: the exact in-RAM scan up to this many pages (or without a codebook)
    candidates: CandidateOptions = field(default_factory=CandidateOptions)
    max_uncoded: int = 20_000  # candidates mode: pages without codes yet, scored exactly beside the candidates
    dtype: str = "float32"  # exact mode's matrix: float32 (fastest) or float16 (half the memory)
    chunk_bytes: int = 8 << 20  # size of one [query tokens, page tokens] similarity block
    threads: int = 1  # exact mode: chunks scored in parallel
    region_cache_pages: int = 4096  # pages whose region weights stay cached
    auto_refresh: bool = False  # check for a newer snapshot before every query
    check_files: bool = False  # check a snapshot's manifests and files before loading it (the query service does)

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "exact", "candidates"):
            raise ValueError(f"SearchOptions.mode must be auto, exact or candidates, got {self.mode!r}")


def shard_of(doc_ids: pa.Array | pa.ChunkedArray, n: int) -> np.ndarray:
    """``[len]`` shard number of each document (its id's first 8 hex digits modulo ``n``)."""
    if n == 1:
        return np.zeros(len(doc_ids), np.int64)
    heads = pc.utf8_slice_codeunits(doc_ids, 0, 8).cast(pa.binary(8))  # ids are >= 16 hex digits
    if isinstance(heads, pa.ChunkedArray):
        heads = heads.combine_chunks()
    raw = np.frombuffer(heads.buffers()[1], np.uint8)[heads.offset * 8:(heads.offset + len(heads)) * 8]
    digits = _HEX[raw.reshape(-1, 8)].astype(np.int64)  # [len, 8] nibbles
    return (digits << np.arange(28, -1, -4, dtype=np.int64)).sum(axis=1) % n


_HEX = np.zeros(256, np.uint8)  # ASCII hex digit -> its value
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


@dataclass
class SearchState:
    """Everything a query needs from one snapshot (immutable once built)."""

    snap: Snapshot
    docs: pa.Table  # doc_id, gen, status (for the live filter of rows read later)
    doc_uri: dict[str, str]
    page_ids: np.ndarray  # [P] object
    page_doc: np.ndarray  # [P] object
    page_number: np.ndarray  # [P] int
    page_size: np.ndarray  # [P, 2] (width, height) px
    grid_of: np.ndarray  # [P] int: index into grids
    grids: list[PatchGrid]
    n_tokens: np.ndarray  # [P]
    position: np.ndarray  # [P] row position in the pages table at the snapshot's version (for take)
    key_rank: np.ndarray  # [P] rank of page_id: ties break by page id, the same in every shard
    encoder_id: str | None
    mode: str
    matrix: PageMatrix | None = None  # exact mode
    index: CentroidIndex | None = None  # candidates mode
    index_pages: np.ndarray | None = None  # candidates mode: CentroidIndex page position -> state page
    uncoded: np.ndarray | None = None  # candidates mode: state pages without codes (always scored)
    pages_ds: object = None  # the pages Lance dataset at the snapshot's version
    regions: RegionStore | None = None
    region_columns: list[str] | None = None  # REGION_COLUMNS the regions table has (read at first use)
    page_index: dict[str, int] = field(default_factory=dict)
    loaded_s: float = 0.0

    @property
    def n_pages(self) -> int:
        return len(self.page_ids)

    def grid(self, i: int) -> PatchGrid:
        return self.grids[self.grid_of[i]]


class Searcher:
    """Ranks an index's pages and scores their regions (see the module doc).

    ``encoder`` is an Encoder, a spec or stored id for :func:`snappy.encoders.make_encoder`, or None
    (the index's own encoder, built on first query). ``query_log``: where the token vectors of the
    queries it encodes are logged for the nightly calibration (:mod:`snappy.storage.querylog`); None:
    nowhere (the default of the library; ``snappy serve`` logs).
    """

    def __init__(self, index: str | IndexStore, encoder: Encoder | str | None = None,
                 storage_options: Mapping[str, str] | None = None, options: SearchOptions | None = None,
                 shard: tuple[int, int] = (0, 1), query_log: QueryLogger | None = None):
        self.store = index if isinstance(index, IndexStore) else IndexStore(index, storage_options)
        self.options = options or SearchOptions()
        if not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
        self.shard = shard
        self._encoder = encoder if isinstance(encoder, Encoder) else None
        self._encoder_spec = encoder if isinstance(encoder, str) else None
        self._swap = threading.Lock()
        self.query_log = query_log
        self.state: SearchState = self.load(self._latest())

    # ------------------------------------------------------------------ snapshots
    def _latest(self) -> Snapshot:
        snap = self.store.snapshot()
        if snap is None or DOCUMENTS not in snap.versions:
            raise FileNotFoundError(f"{self.store.uri}: no index here (no snapshot and no documents table: "
                                    f"was it indexed?)")
        return snap

    @property
    def snapshot(self) -> Snapshot:
        return self.state.snap

    @property
    def loaded_versions(self) -> dict[str, int]:
        return dict(self.state.snap.versions)

    @property
    def n_pages(self) -> int:
        return self.state.n_pages

    @property
    def doc_uri(self) -> dict[str, str]:
        return self.state.doc_uri

    @property
    def encoder_id(self) -> str | None:
        return self.state.encoder_id

    def refresh(self, force: bool = False) -> bool:
        """Load the latest snapshot if it is newer than the one served; True if swapped in.
        Queries running meanwhile finish on the state they started with."""
        snap = self._latest()
        if not force and snap.seq == self.state.snap.seq and snap.versions == self.state.snap.versions:
            return False
        state = self.load(snap)
        with self._swap:
            self.state = state
        return True

    def load(self, snap: Snapshot) -> SearchState:
        """The state of ``snap`` (does not swap it in)."""
        t0 = time.perf_counter()
        if self.options.check_files:  # a missing or truncated file: refused now, not at some later query
            from snappy.storage.health import Damaged, check

            problems = check(self.store, snap=snap, quick=True)
            if problems:
                raise Damaged(self.store.uri, f"snapshot {snap.seq}", problems)
        with self._reading(f"cannot load snapshot {snap.seq}", snap):
            state = self._load(snap)
        state.loaded_s = time.perf_counter() - t0
        log.info("%s: snapshot %d, %d pages (%s mode) in %.1f s", self.store.uri, snap.seq, state.n_pages, state.mode,
                 state.loaded_s)
        return state

    @contextlib.contextmanager
    def _reading(self, what: str, snap: Snapshot | None = None):
        """Errors reading the tables of ``snap`` -> IndexDamaged naming the table, the file and the cause
        (:class:`~snappy.storage.health.Damaged` from the health check, run only now that something failed)."""
        try:
            yield
        except (IndexDamaged, IndexUnavailable, QueryError):
            raise
        except BaseException as e:  # Lance panics on some corrupt files (a BaseException)
            reraise_fatal(e)
            from snappy.storage.health import Damaged, check

            try:
                problems = check(self.store, snap=snap)
            except BaseException as e2:
                reraise_fatal(e2)
                problems = []
            if problems:
                raise Damaged(self.store.uri, what, problems) from e
            raise IndexDamaged(self.store.uri, f"{what}: {_short(e)}") from e

    def _load(self, snap: Snapshot) -> SearchState:
        store, (si, sn) = self.store, self.shard
        docs = store.documents(["doc_id", "uri", "status", "gen"], snap=snap)
        if sn > 1:
            docs = docs.filter(pa.array(shard_of(docs.column("doc_id"), sn) == si))
        live_docs = docs.select(["doc_id", "gen", "status"])
        doc_uri = dict(zip(docs.column("doc_id").to_pylist(), docs.column("uri").to_pylist()))
        if PAGES in snap.versions:
            pages_ds = store.dataset(PAGES, snap.versions[PAGES])
            meta = pages_ds.to_table(columns=_META, scan_in_order=True)  # [rows] light columns, in take order
        else:  # every document so far failed: an index without pages
            pages_ds, meta = None, pa.table({c: pa.array([], _META_TYPES.get(c, pa.string())) for c in _META})
        position = np.arange(meta.num_rows, dtype=np.int64)
        keep = live_mask(meta.column("doc_id"), meta.column("gen"), live_docs) & \
            (pc.fill_null(meta.column("n_tokens"), 0).to_numpy(zero_copy_only=False) > 0)
        meta, position = meta.filter(pa.array(keep)), position[keep]
        page_ids = np.asarray(meta.column("page_id").to_pylist(), dtype=object)
        enc_ids = sorted({e for e in meta.column("encoder_id").to_pylist() if e})
        if len(enc_ids) > 1:  # several encoders (settings changed, a re-index still under way): serve the majority
            counts = pc.value_counts(meta.column("encoder_id")).to_pylist()
            major = max(counts, key=lambda c: c["counts"])["values"]
            log.warning("%s: pages indexed with %d encoders %s; serving the %d pages of %s until the re-index "
                        "finishes", store.uri, len(enc_ids), enc_ids, major and max(c["counts"] for c in counts), major)
            sel = pc.equal(meta.column("encoder_id"), major).to_numpy(zero_copy_only=False)
            meta, position, page_ids = meta.filter(pa.array(sel)), position[sel], page_ids[sel]
            enc_ids = [major]
        grid_json = meta.column("grid").to_pylist()
        uniq: dict[str, int] = {}
        grid_of = np.array([uniq.setdefault(g, len(uniq)) for g in grid_json], np.int64)
        grids = [PatchGrid.from_json(g) for g in uniq]
        key_rank = np.empty(len(page_ids), np.int64)
        key_rank[np.argsort(page_ids, kind="stable")] = np.arange(len(page_ids))
        state = SearchState(
            snap=snap, docs=live_docs, doc_uri=doc_uri, page_ids=page_ids,
            page_doc=np.asarray(meta.column("doc_id").to_pylist(), dtype=object),
            page_number=meta.column("page_number").to_numpy(zero_copy_only=False),
            page_size=np.stack([meta.column("width").to_numpy(zero_copy_only=False),
                                meta.column("height").to_numpy(zero_copy_only=False)], axis=1)
            if meta.num_rows else np.zeros((0, 2), np.int64),
            grid_of=grid_of, grids=grids, n_tokens=meta.column("n_tokens").to_numpy(zero_copy_only=False),
            position=position, key_rank=key_rank, encoder_id=enc_ids[0] if enc_ids else None, mode="exact",
            pages_ds=pages_ds, page_index={p: i for i, p in enumerate(page_ids)})
        state.regions = RegionStore(lambda ids: self._read_regions(state, ids), self.options.region_cache_pages)
        mode = self._mode(snap, state.n_pages)
        if mode == "candidates" and self._load_candidates(state):
            state.mode = "candidates"
        else:
            state.matrix = self._load_matrix(state)
        return state

    def _mode(self, snap: Snapshot, n_pages: int) -> str:
        o = self.options
        if o.mode != "auto":
            return o.mode
        has_codebook = CODEBOOK in snap.versions and CODES in snap.versions
        return "candidates" if has_codebook and n_pages > o.exact_max_pages else "exact"

    def _load_candidates(self, state: SearchState) -> bool:
        """Codebook + codes of the state's pages -> CentroidIndex; False (exact instead) if unusable."""
        snap = state.snap
        if CODEBOOK not in snap.versions or CODES not in snap.versions:
            if self.options.mode == "candidates":
                log.warning("%s: no codebook yet; searching exactly", self.store.uri)
            return False
        codebook = Codebook.from_table(self.store.dataset(CODEBOOK, snap.versions[CODEBOOK]).to_table())
        pooled = "pooled" if codebook.pool_bits == 8 else "pooled4"  # the codebook says which column is set
        ds = self.store.at(CODES, snap)
        # pass 1, light columns of every row: which rows serve (live, this codebook, a page of the state)
        light = ds.to_table(columns=["page_id", "doc_id", "gen", "codebook_id"], scan_in_order=True)
        row_pos = pc.index_in(light.column("page_id"), value_set=pa.array(list(state.page_ids), pa.string()))
        serve = live_mask(light.column("doc_id"), light.column("gen"), state.docs) & pc.fill_null(pc.and_(
            pc.equal(light.column("codebook_id"), codebook.codebook_id), pc.is_valid(row_pos)), False).to_numpy(
            zero_copy_only=False)
        row_pos = pc.fill_null(row_pos, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        del light
        positions: list[np.ndarray] = []

        def batches():  # pass 2, same row order: the heavy columns of the rows that serve, a batch at a time
            row = 0
            for b in ds.to_batches(columns=["codes", pooled], batch_size=8192, scan_in_order=True):
                keep = serve[row:row + b.num_rows] & pc.is_valid(b.column(pooled)).to_numpy(zero_copy_only=False)
                pos = row_pos[row:row + b.num_rows][keep]
                row += b.num_rows
                if not keep.any():
                    continue
                if not keep.all():  # (a filter copies every column: only when rows are dropped)
                    b = b.filter(pa.array(keep))
                positions.append(pos)
                yield b.column("codes"), b.column(pooled)

        n_tok = state.n_tokens.astype(np.int64)
        factor = codebook.pool_factor
        max_vectors = int(np.sum(n_tok if factor <= 1 else np.maximum(1, n_tok // factor)))  # pool_page's bound
        index = CentroidIndex.from_batches(codebook, batches(), int(n_tok.sum()), max_vectors)
        pos = np.concatenate(positions) if positions else np.zeros(0, np.int64)
        coded = np.zeros(state.n_pages, bool)
        coded[pos] = True
        uncoded = np.flatnonzero(~coded)
        if len(uncoded) > self.options.max_uncoded:
            log.warning("%s: %d pages have no codes yet (over max_uncoded=%d); searching exactly", self.store.uri,
                        len(uncoded), self.options.max_uncoded)
            return False
        state.index = index
        state.index_pages, state.uncoded = pos, uncoded
        pa.default_memory_pool().release_unused()  # the read's batches: back to the OS, not kept by the pool
        return True

    def _load_matrix(self, state: SearchState) -> PageMatrix:
        """Every page's vectors in one contiguous matrix (exact mode), streamed batch by batch."""
        ds = state.pages_ds
        if ds is None or state.n_pages == 0:
            return PageMatrix(np.zeros((0, 128), np.dtype(self.options.dtype)), np.zeros(1, np.int64))
        dim = ds.schema.field("vectors").type.value_type.list_size
        dtype = np.dtype(self.options.dtype)
        n_tok = state.n_tokens.astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(n_tok)]).astype(np.int64)
        vectors = np.empty((int(offsets[-1]), dim), dtype)  # [n_tokens_total, dim]
        wanted = np.zeros(ds.count_rows(), bool)
        wanted[state.position] = True
        row, pos, page = 0, 0, 0
        for batch in ds.to_batches(columns=["vectors"], scan_in_order=True):
            col = batch.column(0)
            sel = wanted[row:row + len(col)]
            row += len(col)
            if not sel.any():
                continue
            col = col.filter(pa.array(sel))
            lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
            expect = n_tok[page:page + len(col)]
            if not np.array_equal(lengths, expect):
                bad = int(np.flatnonzero(lengths != expect)[0])
                raise IndexDamaged(self.store.uri, f"{self.store.table_uri(PAGES)}: page {state.page_ids[page + bad]} "
                                                   f"has {lengths[bad]} vectors but n_tokens={expect[bad]}")
            flat = col.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
            vectors[pos:pos + len(flat)] = flat
            pos += len(flat)
            page += len(col)
        return PageMatrix(vectors, offsets)

    def _read_regions(self, state: SearchState, page_ids: Sequence[str]) -> pa.Table:
        if REGIONS not in state.snap.versions:
            return pa.table({c: [] for c in REGION_COLUMNS})
        if state.region_columns is None:  # once per snapshot: indexes written before blocks lack "parent"
            have = set(self.store.at(REGIONS, state.snap).schema.names)
            state.region_columns = [c for c in REGION_COLUMNS if c in have]
        return self.store.read(REGIONS, state.region_columns, filter=f"page_id IN ({sql_list(page_ids)})",
                               snap=state.snap, documents=state.docs)

    # ------------------------------------------------------------------ encoder
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            spec = self._encoder_spec or self.state.encoder_id
            if spec is None:
                raise ValueError(f"{self.store.uri}: the index has no pages, so no encoder to encode queries with")
            self._encoder = make_encoder(spec)
            if self.state.encoder_id and self._encoder.encoder_id != self.state.encoder_id:
                log.warning("query encoder %s differs from the index's encoder %s", self._encoder.encoder_id,
                            self.state.encoder_id)
        return self._encoder

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token vectors of the queries (after :func:`snappy.search.query.check_query`)."""
        return self.encoder.embed_queries([check_query(t) for t in texts])

    # ------------------------------------------------------------------ ranking
    def rank(self, query_vectors: Sequence[np.ndarray], top_pages: int = DEFAULT_TOP_PAGES,
             state: SearchState | None = None, target_recall: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(page indices [B, k], scores [B, k])`` of the best pages per query (indices into ``state``)."""
        idx, scores, _, _ = self._rank(query_vectors, top_pages, state or self.state, target_recall)
        return idx, scores

    def _rank(self, queries, top_pages: int, state: SearchState, target_recall: float | None = None):
        """(idx [B,k], scores [B,k], per-page patch scores getter, scored pages) for a batch of queries."""
        if state.mode == "exact":
            scores, patches = maxsim(queries, state.matrix, self.options.chunk_bytes, self.options.threads,
                                     patch_max=True)
            idx = top_k(scores, top_pages, keys=state.key_rank)
            offsets = state.matrix.offsets

            def patch_scores(b: int, i: int) -> np.ndarray:
                return patches[b, offsets[i]:offsets[i + 1]]
            return idx, np.take_along_axis(scores, idx, axis=1), patch_scores, state.n_pages
        return self._rank_candidates(queries, top_pages, state, target_recall)

    def _rank_candidates(self, queries, top_pages: int, state: SearchState, target_recall: float | None = None):
        """The candidate path: each query's ranked pool (:meth:`CentroidIndex.ranked_pool`); its first
        ``candidates`` pages (and the uncoded ones) read and scored exactly; then, while
        :func:`~snappy.candidates.calibrate.rerank_more` says pages not yet read could still enter a
        query's top-k, the next ones, up to ``max_candidates``. Every page read is scored for every query.
        ``target_recall``: this request's target instead of the options' (the calibrated point for it)."""
        from snappy.candidates.calibrate import rerank_more
        from snappy.search.maxsim import query_matrix

        index, o = state.index, self.options.candidates
        if target_recall is not None:
            o = replace(o, target_recall=target_recall)
        b = o.operating_point(index.n_pages, index.codebook.calibration)
        qs = [query_matrix([q], index.codebook.dim)[0] for q in queries]
        pools = []  # per query: (state pages in pooled order, pooled scores)
        for q in qs:
            pos, ps = index.ranked_pool(q, b, o.nprobe)
            pools.append((state.index_pages[pos], ps))
        chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # (pages, offsets, scores, patches)
        column = np.full(state.n_pages, -1, np.int64)  # state page -> its column in `scores` (-1: not read)
        scores = np.zeros((len(queries), 0), np.float32)  # [B, pages read], in reading order
        taken = [min(len(p), b.candidates) for p, _ in pools]
        want = np.concatenate([p[:n] for (p, _), n in zip(pools, taken)] + [state.uncoded]).astype(np.int64)
        while True:
            new = np.unique(want[column[want] < 0])
            if len(new):
                chunk = self._score_pages(queries, new, state)
                column[chunk[0]] = scores.shape[1] + np.arange(len(chunk[0]))
                scores = np.concatenate([scores, chunk[2]], axis=1)
                chunks.append(chunk)
            more = []
            for qi, ((pages, ps), n) in enumerate(zip(pools, taken)):
                limit = min(len(pages), b.max_candidates)
                if n >= limit:
                    continue
                extra = min(rerank_more(ps, scores[qi, column[pages[:n]]], top_pages, b.slack), 32, limit - n)
                if extra:
                    more.append(pages[n:n + extra])
                    taken[qi] = n + extra
            if not more:
                break
            want = np.concatenate(more)
        cand = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0, np.int64)
        starts = np.cumsum([0] + [len(c[0]) for c in chunks])
        local = top_k(scores, top_pages, keys=state.key_rank[cand])

        def patch_scores(q: int, i: int) -> np.ndarray:
            at = int(column[i])
            ci = int(np.searchsorted(starts, at, side="right")) - 1
            j = at - int(starts[ci])
            _, offsets, _, patches = chunks[ci]
            return patches[q, offsets[j]:offsets[j + 1]]
        return cand[local], np.take_along_axis(scores, local, axis=1), patch_scores, len(cand)

    def _score_pages(self, queries, cand: np.ndarray, state: SearchState):
        """(pages, token offsets, exact scores [B, pages], per-patch maxima [B, tokens]) of state pages
        ``cand``, their stored vectors read by row (in file order: 1.4x faster)."""
        cand = cand[np.argsort(state.position[cand], kind="stable")]
        with self._reading("cannot read candidate pages", state.snap):
            rows = state.pages_ds.take(state.position[cand], columns=["vectors"])  # exact vectors, by row
        col = rows.column("vectors").combine_chunks()
        dim = col.type.value_type.list_size
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        matrix = PageMatrix(col.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim),
                            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        scores, patches = maxsim(queries, matrix, self.options.chunk_bytes, 1, patch_max=True)
        return cand, matrix.offsets, scores, patches

    # ------------------------------------------------------------------ queries
    def query(self, text: str, top_pages: int = DEFAULT_TOP_PAGES, threshold: "Threshold | str | float" = DEFAULT_THRESHOLD,
              method: str = DEFAULT_METHOD, level: str = DEFAULT_LEVEL, target_recall: float | None = None) -> PageResults:
        return self.query_batch([text], top_pages, threshold, method, level, target_recall)[0]

    def query_batch(self, texts: Sequence[str], top_pages: int = DEFAULT_TOP_PAGES,
                    threshold: "Threshold | str | float" = DEFAULT_THRESHOLD, method: str = DEFAULT_METHOD,
                    level: str = DEFAULT_LEVEL, target_recall: float | None = None) -> list[PageResults]:
        """Result pages per query: only pages that match it, so up to ``top_pages`` (none: ``reason``
        says why). QueryError for a query or option that cannot be searched.

        ``level``: which regions a page returns, ``line``, ``block`` or ``auto`` (snappy.regions.blocks).
        ``target_recall``: the candidate stage's recall@10 target for these queries (the cheapest
        calibrated budgets that reach it; None: the options' or the calibrated one). The exact scan ignores it."""
        top_pages, _, method = check_request(top_pages, threshold, method)
        level = check_level(level)
        target_recall = check_target(target_recall)
        if self.options.auto_refresh:
            self.refresh()
        state = self.state
        if state.n_pages == 0:
            return [PageResults([], NO_PAGES) for _ in texts]
        vectors = self.encode(texts)
        if self.query_log is not None:
            self.query_log.record(vectors)
        return self.search_vectors(vectors, top_pages, threshold, method, state, level, target_recall)

    def search_vectors(self, query_vectors: Sequence[np.ndarray], top_pages: int = DEFAULT_TOP_PAGES,
                       threshold: "Threshold | str | float" = DEFAULT_THRESHOLD, method: str = DEFAULT_METHOD,
                       state: SearchState | None = None, level: str = DEFAULT_LEVEL,
                       target_recall: float | None = None) -> list[PageResults]:
        """Like :meth:`query_batch` with encoded queries (``[t, dim]`` float32 each).

        A page matches when its MaxSim is finite and above 0: a page scoring 0 has no patch similar to
        the query (no shared word for the lexical encoder, a page without text), so it is no result."""
        state = state or self.state
        threshold = Threshold.parse(threshold)
        usable = [i for i, q in enumerate(query_vectors) if np.size(q) and np.isfinite(q).all()]
        if len(usable) < len(query_vectors):  # one bad query must not fail the batch it came in
            log.warning("%d of %d queries have no token vectors or non-finite values: no results for them",
                        len(query_vectors) - len(usable), len(query_vectors))
            out = [PageResults([], "the query has no token vectors or non-finite values") for _ in query_vectors]
            if usable:
                for i, res in zip(usable, self.search_vectors([query_vectors[i] for i in usable], top_pages,
                                                              threshold, method, state, level, target_recall)):
                    out[i] = res
            return out
        if state.n_pages == 0 or not len(query_vectors):
            return [PageResults([], NO_PAGES) for _ in query_vectors]
        idx, scores, patch_scores, _ = self._rank(query_vectors, top_pages, state, target_recall)
        match = np.isfinite(scores) & (scores > 0)  # [B, k]
        wanted = np.unique(idx[match]).tolist()
        with self._reading("cannot read regions", state.snap):
            regions = state.regions.get([state.page_ids[i] for i in wanted],
                                        {state.page_ids[i]: state.grid(i) for i in wanted})
        out = []
        for b, (row, srow, ok) in enumerate(zip(idx, scores, match)):
            out.append(PageResults([self._page_result(state, int(i), float(s), patch_scores(b, int(i)),
                                                      regions.get(state.page_ids[i]), threshold, method, rank, level)
                                    for rank, (i, s) in enumerate(zip(row[ok], srow[ok]), start=1)], NO_MATCH))
        return out

    def _page_result(self, state: SearchState, i: int, score: float, ps: np.ndarray, regions, threshold: Threshold,
                     method: str, rank: int, level: str = DEFAULT_LEVEL) -> PageResult:
        selected: list[RegionResult] = []
        peak, reason = 0.0, "no regions"
        if regions is not None and regions.n_regions:
            rs = regions.scores(ps, method)  # [R]
            sel = regions.select(rs, threshold, level)
            keep, peak, reason = sel.kept, sel.peak, sel.reason
            if len(keep):
                rows = regions.rows.take(pa.array(np.asarray(keep, np.int64))).to_pylist()
                selected = [RegionResult(region_id=r["region_id"], bbox=tuple(r["bbox"]), bbox_norm=tuple(r["bbox_norm"]),
                                         text=r["text"] or "", score=float(rs[j]), confidence=r["confidence"],
                                         level=r["level"]) for j, r in zip(keep, rows)]
        w, h = (int(v) for v in state.page_size[i])
        doc = state.page_doc[i]
        return PageResult(doc_id=doc, uri=state.doc_uri.get(doc, ""), page_id=state.page_ids[i],
                          page_number=int(state.page_number[i]), score=score, width=w, height=h, regions=selected,
                          patch_scores=np.asarray(ps, np.float32), grid=state.grid(i), rank=rank, peak=peak,
                          reason=reason)

    # ------------------------------------------------------------------ single pages
    def page(self, page_id: str) -> dict:
        """One page's stored vectors ``[n, dim]``, grid, size and region rows (for evaluation and tools)."""
        state = self.state
        i = self._page_at(state, page_id)
        vectors = self._page_vectors(state, i)
        regions = self._read_regions(state, [page_id]).sort_by("region_index")
        return {"vectors": vectors, "grid": state.grid(i), "size": tuple(int(v) for v in state.page_size[i]),
                "regions": regions, "doc_id": state.page_doc[i], "page_number": int(state.page_number[i])}

    def _page_at(self, state: SearchState, page_id: str) -> int:
        """The index of ``page_id`` in ``state``; KeyError if the page is not there."""
        i = state.page_index.get(page_id)
        if i is None:
            raise KeyError(f"{self.store.uri}: page {page_id} is not in the index")
        return i

    def _page_vectors(self, state: SearchState, i: int) -> np.ndarray:
        """``[n_tokens, dim]`` stored vectors of page ``i`` of ``state`` (from RAM, else read by row)."""
        if state.matrix is not None:
            return state.matrix.page(i)
        with self._reading("cannot read page vectors", state.snap):
            col = state.pages_ds.take([int(state.position[i])], columns=["vectors"]).column("vectors")
        return np.asarray(col.combine_chunks().flatten().flatten().to_numpy(zero_copy_only=False)).reshape(
            int(state.n_tokens[i]), -1)

    def patch_map(self, query_vectors: np.ndarray, page_id: str, state: SearchState | None = None) -> dict:
        """Where on one page the query is similar: patch boxes in page pixels and, per patch, the
        similarity of each query token (``token_scores`` [t][P]) and of the best one (``max`` [P])."""
        state = state or self.state
        i = self._page_at(state, page_id)
        sims = np.asarray(query_vectors, np.float32) @ self._page_vectors(state, i).astype(np.float32).T  # [t, P]
        sims = np.round(np.nan_to_num(sims, nan=0.0), 4)
        boxes = np.round(state.grid(i).boxes(), 1)
        return {"boxes": boxes.tolist(), "max": sims.max(axis=0).tolist(), "token_scores": sims.tolist()}

    def regions_of(self, page_ids: Sequence[str]) -> dict[str, pa.Table]:
        """Region rows of these pages, per page_id, in reading order."""
        state = self.state
        if not page_ids:
            return {}
        table = self._read_regions(state, page_ids).sort_by([("page_id", "ascending"), ("region_index", "ascending")])
        out = {}
        pids = np.asarray(table.column("page_id").to_pylist(), dtype=object)
        if len(pids):
            starts = np.flatnonzero(np.r_[True, pids[1:] != pids[:-1]])
            for a, b in zip(starts, np.r_[starts[1:], len(pids)]):
                out[str(pids[a])] = table.slice(a, b - a)
        return out

    def page_jpeg(self, page_id: str, state: SearchState | None = None) -> bytes:
        """The stored rendered page, as stored (JPEG bytes). KeyError for a page not in ``state``."""
        state = state or self.state
        self._page_at(state, page_id)
        with self._reading("cannot read a page image", state.snap):
            return self._stored_jpeg(state, page_id)

    def _stored_jpeg(self, state: SearchState, page_id: str) -> bytes:
        t = self.store.read(PAGES, ["image"], filter=f"page_id IN ({sql_list([page_id])})", snap=state.snap,
                            documents=state.docs)
        if t.num_rows == 0 or t.column("image")[0].as_py() is None:
            raise KeyError(f"{self.store.table_uri(PAGES)}: no image stored for page {page_id}")
        return t.column("image")[0].as_py()

    def page_image(self, page_id: str):
        """The stored rendered page (PIL image)."""
        from PIL import Image

        return Image.open(io.BytesIO(self._stored_jpeg(self.state, page_id))).convert("RGB")

    def info(self) -> dict:
        s = self.state
        mem = s.matrix.vectors.nbytes if s.matrix is not None else (s.index.nbytes if s.index is not None else 0)
        return {"index": self.store.uri, "snapshot": s.snap.seq, "versions": dict(s.snap.versions),
                "pages": s.n_pages, "mode": s.mode, "encoder_id": s.encoder_id, "shard": list(self.shard),
                "memory_bytes": int(mem), "loaded_s": round(s.loaded_s, 3)} | (
            {} if s.index is None else self._candidate_info(s.index))

    def _candidate_info(self, index: CentroidIndex) -> dict:
        """The candidate stage's budgets a query runs with, and the calibration's estimate (None: not calibrated)."""
        cal = index.codebook.calibration
        b = self.options.candidates.operating_point(index.n_pages, cal)
        est = cal.for_target(self.options.candidates.target_recall)[1] if cal is not None else None
        return {"pool_bits": index.codebook.pool_bits, "centroids": index.codebook.k,
                "budgets": {"probe_budget": b.probe_budget, "pool": b.pool, "candidates": b.candidates,
                            "max_candidates": b.max_candidates},
                "estimated_recall": None if est is None else round(est, 3),
                "calibration": None if cal is None else cal.summary()}


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
