"""The query path: exact MaxSim page ranking over the stored patch vectors, then patch -> region
propagation with the stored overlap weights. No page is re-encoded; only the query is.

Page vectors are loaded once into one contiguous ``[n_tokens_total, dim]`` matrix with per-page
offsets (:class:`PageMatrix`). :func:`maxsim` scores a batch of queries against every page with a
chunked float32 matmul and a segment max (``np.maximum.reduceat``) per page.
"""
from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from snappy.encoders import Encoder, make_encoder
from snappy.grid import PatchGrid
from snappy.propagation import RegionOverlap, Threshold, patch_scores, region_scores, select_regions
from snappy.storage.schema import DOCUMENTS, PAGES, REGIONS
from snappy.storage.commit import live_mask, sql_list
from snappy.storage.tables import IndexStore

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- encoders

# ---------------------------------------------------------------------------- MaxSim


@dataclass
class PageMatrix:
    """All pages' patch vectors in one contiguous matrix; page ``i`` is ``vectors[offsets[i]:offsets[i+1]]``."""

    vectors: np.ndarray  # [n_tokens_total, dim] float16 or float32, C-contiguous
    offsets: np.ndarray  # [n_pages + 1] int64, strictly increasing (no empty pages)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.offsets.ndim != 1 or self.offsets[0] != 0 \
                or self.offsets[-1] != self.vectors.shape[0]:
            raise ValueError("PageMatrix offsets do not cover the vectors")
        if self.n_pages and np.any(np.diff(self.offsets) <= 0):
            raise ValueError("PageMatrix has an empty page (no vectors); drop it before ranking")

    @property
    def n_pages(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def page(self, i: int) -> np.ndarray:
        return self.vectors[self.offsets[i]:self.offsets[i + 1]]  # [n_tokens_i, dim]

    @classmethod
    def from_pages(cls, pages: Sequence[np.ndarray], dtype=np.float16) -> "PageMatrix":
        lengths = [len(p) for p in pages]
        vectors = np.ascontiguousarray(np.concatenate(pages, axis=0), dtype=dtype) if pages else np.zeros((0, 0), dtype)
        return cls(vectors, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def _chunks(offsets: np.ndarray, chunk_tokens: int) -> list[tuple[int, int]]:
    """Page ranges ``[p0, p1)`` of about ``chunk_tokens`` tokens each (a page is never split)."""
    n = len(offsets) - 1
    bounds = np.searchsorted(offsets, np.arange(0, offsets[-1], max(chunk_tokens, 1)), side="right") - 1
    starts = np.unique(np.clip(bounds, 0, max(n - 1, 0)))
    ends = np.append(starts[1:], n)
    return [(int(a), int(b)) for a, b in zip(starts, ends) if b > a]


def maxsim(queries: Sequence[np.ndarray], matrix: PageMatrix, chunk_bytes: int = 8 << 20,
           threads: int = 1) -> np.ndarray:
    """Exact MaxSim ``[n_queries, n_pages]`` float32: ``sum_i max_p <q_i, d_p>`` per (query, page).

    Queries are stacked into one ``[T, dim]`` matrix, so a batch costs one pass over the pages.
    Each chunk of pages is one float32 matmul ``[T, dim] x [dim, c]`` (``c`` sized so the
    ``[T, c]`` block stays about ``chunk_bytes``), then a segment max over each page's
    (contiguous) columns and a segment sum over each query's tokens.
    """
    if not len(queries):
        return np.zeros((0, matrix.n_pages), np.float32)
    qs = [np.asarray(q, dtype=np.float32).reshape(-1, matrix.dim) for q in queries]
    if any(len(q) == 0 for q in qs):
        raise ValueError("a query has no token vectors")
    q = np.ascontiguousarray(np.concatenate(qs, axis=0))  # [T, dim]
    q_starts = np.concatenate([[0], np.cumsum([len(x) for x in qs])[:-1]])  # [B]
    out = np.empty((len(qs), matrix.n_pages), np.float32)  # [B, n_pages]
    chunk_tokens = int(np.clip(chunk_bytes // (4 * len(q)), 1024, 1 << 20))

    def run(rng: tuple[int, int]) -> None:
        p0, p1 = rng
        o = matrix.offsets[p0:p1 + 1]
        block = matrix.vectors[o[0]:o[-1]]  # [c, dim]
        if block.dtype != np.float32:
            block = block.astype(np.float32)
        sim = q @ block.T  # [T, c]
        page_max = np.maximum.reduceat(sim, o[:-1] - o[0], axis=1)  # [T, p1-p0]
        out[:, p0:p1] = np.add.reduceat(page_max, q_starts, axis=0)  # [B, p1-p0]

    ranges = _chunks(matrix.offsets, chunk_tokens)
    if threads > 1 and len(ranges) > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, ranges))
    else:
        for r in ranges:
            run(r)
    return out


def maxsim_reference(queries: Sequence[np.ndarray], pages: Sequence[np.ndarray]) -> np.ndarray:
    """float64 MaxSim ``[n_queries, n_pages]`` computed page by page (for tests and benchmarks)."""
    return np.array([[float((np.asarray(q, np.float64) @ np.asarray(p, np.float64).T).max(axis=1).sum())
                      for p in pages] for q in queries])


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """``[B, min(k, n)]`` indices of the best scores per row, best first (ties: lower index first)."""
    n = scores.shape[1]
    k = min(k, n)
    if k <= 0:
        return np.zeros((scores.shape[0], 0), np.int64)
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # widen to every index tied with the k-th score so that ties break by index deterministically
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        rows = []
        for b in range(scores.shape[0]):
            cand = np.flatnonzero(scores[b] >= kth[b])
            rows.append(cand[np.lexsort((cand, -scores[b, cand]))][:k])
        return np.stack(rows)
    return np.stack([np.lexsort((np.arange(n), -row)) for row in scores])


# ---------------------------------------------------------------------------- results


@dataclass
class RegionResult:
    region_id: str
    bbox: tuple[float, float, float, float]  # page pixels [x0, y0, x1, y1]
    bbox_norm: tuple[float, float, float, float]
    text: str
    score: float
    confidence: float | None = None
    level: str | None = None

    def to_dict(self) -> dict:
        return {"region_id": self.region_id, "bbox": [float(v) for v in self.bbox],
                "bbox_norm": [float(v) for v in self.bbox_norm], "text": self.text, "score": float(self.score),
                "confidence": None if self.confidence is None else float(self.confidence), "level": self.level}


@dataclass
class PageResult:
    doc_id: str
    uri: str
    page_id: str
    page_number: int  # 1-based
    score: float  # MaxSim of the query and the page
    width: int  # page pixels
    height: int
    regions: list[RegionResult]  # selected regions, best first
    patch_scores: np.ndarray = field(repr=False)  # [n_tokens] per-patch MaxSim of the query
    grid: PatchGrid = field(repr=False)
    rank: int = 0  # 1-based

    def to_dict(self, with_patch_scores: bool = False) -> dict:
        d = {"rank": self.rank, "doc_id": self.doc_id, "uri": self.uri, "page_id": self.page_id,
             "page_number": int(self.page_number), "score": float(self.score), "width": int(self.width),
             "height": int(self.height), "regions": [r.to_dict() for r in self.regions]}
        if with_patch_scores:
            d["patch_scores"] = [float(v) for v in self.patch_scores]
            d["grid"] = self.grid.to_dict()
        return d


# ---------------------------------------------------------------------------- Searcher

_PAGE_COLUMNS = ["page_id", "doc_id", "page_number", "width", "height", "n_tokens", "grid", "encoder_id"]
_REGION_COLUMNS = ["region_id", "page_id", "region_index", "bbox", "bbox_norm", "text", "confidence", "level",
                   "area", "patch_idx", "patch_inter"]


@dataclass(frozen=True)
class SearchOptions:
    dtype: str = "float32"  # in-memory page vectors: float32 (fastest) or float16 (half the memory)
    chunk_bytes: int = 8 << 20  # size of one [query tokens, page tokens] similarity block
    threads: int = 1  # chunks scored in parallel (BLAS already uses the cores; >1 helps reduceat)
    auto_refresh: bool = False  # check the table versions before every query


class Searcher:
    """Ranks an index's pages by exact MaxSim and scores their regions.

    ``encoder`` is an Encoder, a spec or stored id for :func:`snappy.encoders.make_encoder`, or None (use the index's
    encoder_id, built on first query). Tables are read once; :meth:`refresh` reloads them when
    a table's Lance version changed.
    """

    def __init__(self, index: str | IndexStore, encoder: Encoder | str | None = None,
                 storage_options: Mapping[str, str] | None = None, options: SearchOptions | None = None):
        self.store = index if isinstance(index, IndexStore) else IndexStore(index, storage_options)
        self.options = options or SearchOptions()
        self._encoder = encoder if isinstance(encoder, Encoder) else None
        self._encoder_spec = encoder if isinstance(encoder, str) else None
        self.loaded_versions: dict[str, int] = {}
        self.refresh(force=True)

    # ------------------------------------------------------------------ loading
    def refresh(self, force: bool = False) -> bool:
        """Reload if a newer snapshot was published since the last load; True if reloaded."""
        snap = self.store.snapshot()
        versions = dict(snap.versions) if snap else {}
        if not force and versions == self.loaded_versions:
            return False
        for name in (DOCUMENTS, PAGES):  # a regions table is optional (pages without OCR regions)
            if name not in versions:
                raise FileNotFoundError(f"{self.store.uri}: the index has no {name!r} table (was it indexed?)")
        self._load(snap)
        return True

    def _load(self, snap) -> None:
        store = self.store
        versions = dict(snap.versions)
        docs = store.documents(["doc_id", "uri", "status", "encoder_id", "gen"], snap=snap)
        self._docs = docs.select(["doc_id", "gen", "status"])
        self.doc_uri = dict(zip(docs.column("doc_id").to_pylist(), docs.column("uri").to_pylist()))

        pages_ds = store.dataset(PAGES, versions[PAGES])
        meta = pages_ds.to_table(columns=_PAGE_COLUMNS + ["gen"])  # [n_rows] light columns, dataset order
        live = live_mask(meta.column("doc_id"), meta.column("gen"), self._docs)
        keep = pc.and_(pa.array(live), pc.greater(pc.fill_null(meta.column("n_tokens"), 0), 0))
        keep_np = keep.to_numpy(zero_copy_only=False)
        dim = pages_ds.schema.field("vectors").type.value_type.list_size
        dtype = np.dtype(self.options.dtype)
        n_tok = meta.column("n_tokens").to_numpy(zero_copy_only=False)
        n_tok = np.where(keep_np, np.nan_to_num(n_tok, nan=0), 0).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(n_tok[keep_np])]).astype(np.int64)
        vectors = np.empty((int(offsets[-1]), dim), dtype)  # [n_tokens_total, dim]

        # Stream the vectors column into the preallocated matrix (one batch in memory at a time).
        row, pos = 0, 0
        page_ids = meta.column("page_id").to_pylist()
        for batch in pages_ds.to_batches(columns=["vectors"], scan_in_order=True):
            col = batch.column(0)
            sel = keep_np[row:row + len(col)]
            if not sel.all():
                col = col.filter(pa.array(sel))
            flat = col.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
            lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
            expect = n_tok[row:row + len(sel)][sel]
            if not np.array_equal(lengths, expect):
                bad = np.flatnonzero(lengths != expect)[0]
                pid = np.asarray(page_ids[row:row + len(sel)], dtype=object)[sel][bad]
                raise ValueError(f"{store.table_uri(PAGES)}: page {pid} has {lengths[bad]} vectors but n_tokens={expect[bad]}")
            vectors[pos:pos + len(flat)] = flat
            pos += len(flat)
            row += len(sel)
        self.matrix = PageMatrix(vectors, offsets)

        kept = meta.filter(keep)
        self.page_ids = kept.column("page_id").to_pylist()
        self.page_doc = kept.column("doc_id").to_pylist()
        self.page_number = kept.column("page_number").to_numpy(zero_copy_only=False)
        self.page_size = np.stack([kept.column("width").to_numpy(zero_copy_only=False),
                                   kept.column("height").to_numpy(zero_copy_only=False)], axis=1) if len(kept) else np.zeros((0, 2))
        self._grids_json = kept.column("grid").to_pylist()
        self._grid_cache: dict[int, PatchGrid] = {}
        self.page_index = {p: i for i, p in enumerate(self.page_ids)}
        enc_ids = sorted({e for e in kept.column("encoder_id").to_pylist() if e})
        if len(enc_ids) > 1:
            raise ValueError(f"{store.uri}: pages were indexed with several encoders {enc_ids}; re-index with one")
        if enc_ids and self._encoder is not None and self._encoder.encoder_id != enc_ids[0]:
            log.warning("query encoder %s differs from the index's encoder %s", self._encoder.encoder_id, enc_ids[0])
        self.encoder_id = enc_ids[0] if enc_ids else None
        self.snapshot = snap
        self.loaded_versions = dict(versions)
        log.info("loaded %d pages (%d vectors, %s) from %s at versions %s", self.matrix.n_pages,
                 len(vectors), dtype, store.uri, versions)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            spec = self._encoder_spec or self.encoder_id
            if spec is None:
                raise ValueError(f"{self.store.uri}: the index has no pages, so no encoder to encode queries with")
            self._encoder = make_encoder(spec)
            if self.encoder_id and self._encoder.encoder_id != self.encoder_id:
                log.warning("query encoder %s differs from the index's encoder %s",
                            self._encoder.encoder_id, self.encoder_id)
        return self._encoder

    def grid(self, i: int) -> PatchGrid:
        if i not in self._grid_cache:
            self._grid_cache[i] = PatchGrid.from_json(self._grids_json[i])
        return self._grid_cache[i]

    # ------------------------------------------------------------------ ranking
    def rank(self, query_vectors: Sequence[np.ndarray], top_pages: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """``(page indices [B, k], scores [B, k])`` of the best pages per query, by exact MaxSim."""
        scores = maxsim(query_vectors, self.matrix, self.options.chunk_bytes, self.options.threads)
        idx = top_k(scores, top_pages)
        return idx, np.take_along_axis(scores, idx, axis=1)

    def query(self, text: str, top_pages: int = 5, threshold: "Threshold | str | float" = "p50",
              method: str = "iou") -> list[PageResult]:
        return self.query_batch([text], top_pages, threshold, method)[0]

    def query_batch(self, texts: Sequence[str], top_pages: int = 5, threshold: "Threshold | str | float" = "p50",
                    method: str = "iou") -> list[list[PageResult]]:
        if self.options.auto_refresh:
            self.refresh()
        if self.matrix.n_pages == 0:
            return [[] for _ in texts]
        return self.query_vectors(self.encoder.embed_queries(list(texts)), top_pages, threshold, method)

    def query_vectors(self, query_vectors: Sequence[np.ndarray], top_pages: int = 5,
                      threshold: "Threshold | str | float" = "p50", method: str = "iou") -> list[list[PageResult]]:
        """Like :meth:`query_batch` with already encoded queries (``[t, dim]`` float32 each)."""
        threshold = Threshold.parse(threshold)
        if self.matrix.n_pages == 0:
            return [[] for _ in query_vectors]
        idx, scores = self.rank(query_vectors, top_pages)
        wanted = sorted({int(i) for i in idx.ravel()})
        regions = self.regions_of([self.page_ids[i] for i in wanted])
        out = []
        for q, row, srow in zip(query_vectors, idx, scores):
            results = []
            for rank, (i, s) in enumerate(zip(row, srow), start=1):
                results.append(self._page_result(int(i), float(s), np.asarray(q, np.float32), regions.get(self.page_ids[i]),
                                                 threshold, method, rank))
            out.append(results)
        return out

    # ------------------------------------------------------------------ regions
    def regions_of(self, page_ids: Sequence[str]) -> dict[str, pa.Table]:
        """Region rows of these pages, per page_id, in reading order."""
        if not page_ids or REGIONS not in self.loaded_versions:
            return {}
        table = self.store.read(REGIONS, _REGION_COLUMNS, filter=f"page_id IN ({sql_list(page_ids)})",
                                snap=self.snapshot, documents=self._docs)
        table = table.sort_by([("page_id", "ascending"), ("region_index", "ascending")])
        pids = table.column("page_id").to_numpy(zero_copy_only=False)
        out = {}
        if len(pids):
            starts = np.flatnonzero(np.r_[True, pids[1:] != pids[:-1]])
            ends = np.r_[starts[1:], len(pids)]
            for a, b in zip(starts, ends):
                out[str(pids[a])] = table.slice(a, b - a)
        return out

    def _page_result(self, i: int, score: float, q: np.ndarray, regions: pa.Table | None,
                     threshold: Threshold, method: str, rank: int) -> PageResult:
        grid = self.grid(i)
        ps = patch_scores(q, self.matrix.page(i))  # [n_tokens]
        selected: list[RegionResult] = []
        if regions is not None and regions.num_rows:
            overlap = overlap_from_table(regions, grid)
            rs = region_scores(ps, overlap, method)  # [R]
            keep = select_regions(rs, threshold)
            cols = {c: regions.column(c) for c in ("region_id", "bbox", "bbox_norm", "text", "confidence", "level")}
            for j in keep:
                j = int(j)
                selected.append(RegionResult(
                    region_id=cols["region_id"][j].as_py(), bbox=tuple(cols["bbox"][j].as_py()),
                    bbox_norm=tuple(cols["bbox_norm"][j].as_py()), text=cols["text"][j].as_py() or "",
                    score=float(rs[j]), confidence=cols["confidence"][j].as_py(), level=cols["level"][j].as_py()))
        w, h = (int(v) for v in self.page_size[i])
        doc = self.page_doc[i]
        return PageResult(doc_id=doc, uri=self.doc_uri.get(doc, ""), page_id=self.page_ids[i],
                          page_number=int(self.page_number[i]), score=score, width=w, height=h,
                          regions=selected, patch_scores=ps, grid=grid, rank=rank)

    def page_image(self, page_id: str):
        """The stored rendered page (PIL image)."""
        from PIL import Image

        t = self.store.read(PAGES, ["image"], filter=f"page_id IN ({sql_list([page_id])})", snap=self.snapshot,
                            documents=self._docs)
        if t.num_rows == 0 or t.column("image")[0].as_py() is None:
            raise KeyError(f"{self.store.table_uri(PAGES)}: no image stored for page {page_id}")
        return Image.open(io.BytesIO(t.column("image")[0].as_py())).convert("RGB")


def overlap_from_table(regions: pa.Table, grid: PatchGrid) -> RegionOverlap:
    """The page's RegionOverlap from its stored region rows (``patch_idx`` / ``patch_inter`` lists)."""
    idx_col = regions.column("patch_idx").combine_chunks()
    inter_col = regions.column("patch_inter").combine_chunks()
    idx_col = pc.fill_null(idx_col, pa.scalar([], idx_col.type)) if idx_col.null_count else idx_col
    inter_col = pc.fill_null(inter_col, pa.scalar([], inter_col.type)) if inter_col.null_count else inter_col
    off = idx_col.offsets.to_numpy()
    indptr = (off - off[0]).astype(np.int64)
    indices = idx_col.flatten().to_numpy(zero_copy_only=False).astype(np.int32)
    data = inter_col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    if len(indices) != len(data):
        raise ValueError("stored region overlaps are inconsistent: patch_idx and patch_inter lengths differ")
    if len(indices) and indices.max() >= grid.n_tokens:
        raise ValueError(f"stored region overlap refers to patch {indices.max()} but the grid has {grid.n_tokens}")
    inter = sp.csr_matrix((data, indices, indptr), shape=(regions.num_rows, grid.n_tokens))
    boxes = grid.boxes()
    patch_area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32)
    region_area = regions.column("area").to_numpy(zero_copy_only=False).astype(np.float32)
    return RegionOverlap(inter, region_area, patch_area)
