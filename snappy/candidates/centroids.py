"""The candidate stage: a few hundred pages out of millions, before the exact MaxSim.

What it keeps of each page (the ``codes`` table; about 9 KB a page instead of 256 KB of vectors):

- **codes**: the set of centroids its token vectors fall in, in a codebook of ``K`` centroids
  trained by spherical k-means (faiss) over a sample of the index's tokens (PLAID's centroids);
- **pooled**: its token vectors pooled ~8:1 (k-means inside the page: near-identical background
  patches and the patches of one word or figure merge), quantised to 4 bits per dimension (per-dimension
  ranges fitted once per codebook; 8 KB a page) — or int8 for lexical pages and for codebooks trained
  before the 4-bit ranges existed (16 KB).

A query (``T`` token vectors) then runs three stages (the last one is the searcher's):

1. **probe** — ``S = Q @ C.T`` (``[T, K]``); each query token's ``nprobe`` best centroids; the
   inverted lists (centroid -> pages) give the pages that contain one, scored by the sum over query
   tokens of the best probed centroid they contain. The ``pool`` best pages go on. The work follows
   the probed lists, not the index;
2. **rescore** — the pooled MaxSim of those pages (``sum_t max_v <q_t, pooled_v>``), from the
   in-memory quantised pooled vectors; the ``candidates`` best go on;
3. **exact** — the searcher reads those pages' stored vectors by row and computes the exact MaxSim.

Measured choices (``docs/search.md``, 5,000 structured pages): 8:1 pooling keeps 0.988 of the exact
top-10 within the 128 best pooled scores, at 4 bits per dimension as at int8 (half the RAM), 12:1
pooling 0.948, 16:1 0.916; the probe alone needs ~2,000 pages for 0.99; MUVERA encodings and binary
tokens needed far more candidates for the same recall. The budgets (probe depth, pool, candidates)
are measured on the index's own data by the nightly run (:mod:`snappy.candidates.calibrate`) and
stored with the codebook; an index not calibrated yet uses :func:`default_budgets`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from snappy.candidates.calibrate import Budgets, Calibration


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def default_k(n_tokens: int) -> int:
    """Centroids for an index of ``n_tokens`` token vectors: a power of two near ``4 * sqrt(n)``,
    between 256 and 16,384 (PLAID uses ``16 * sqrt(n)``; fewer keep k-means and assignment
    affordable on CPUs, with lists still short enough at 10^8 tokens)."""
    return int(min(16384, max(256, 2 ** round(math.log2(4 * math.sqrt(max(n_tokens, 1)))))))


def nonempty(vectors: np.ndarray) -> np.ndarray:
    """The tokens that carry something (an all-zero token, e.g. a lexical patch with no text, matches nothing)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    keep = (vectors != 0).any(axis=1)
    return vectors if keep.all() else vectors[keep]


def default_pool_factor(encoder_id: str | None) -> int:
    """Tokens per pooled vector for an encoder's pages (pure).

    Model tokens of a page are highly redundant (background, the patches of one word or figure):
    8:1 keeps the exact top-10 within the 96 best pooled scores (``docs/search.md``). The lexical
    encoder's tokens are count-sketches of distinct words: averaging them loses the rare word that
    identifies a page (8:1 kept the target page within 96 for 0.66 of queries at 2,000 pages, all
    non-empty tokens for 0.94), so they are kept whole (factor 1, ~280 a page instead of 744)."""
    return 1 if (encoder_id or "").startswith("lexical:") else 8


def pool_page(vectors: np.ndarray, factor: int = 8, seed: int = 0) -> np.ndarray:
    """``[~n/factor, dim]`` unit vectors: the page's non-empty tokens pooled by spherical k-means (faiss)."""
    import faiss

    x = _unit(nonempty(vectors))
    if factor <= 1 or len(x) <= 1:
        return x
    k = max(1, len(x) // factor)
    if len(x) <= k:
        return x
    km = faiss.Kmeans(x.shape[1], k, niter=8, seed=seed, spherical=True, verbose=False,
                      max_points_per_centroid=1 << 20, min_points_per_centroid=1)
    km.train(x)
    assign = km.index.search(x, 1)[1][:, 0]
    sums = np.zeros((k, x.shape[1]), np.float32)
    np.add.at(sums, assign, x)
    return _unit(sums[np.bincount(assign, minlength=k) > 0])


@dataclass
class Codebook:
    """``[K, dim]`` unit centroids, and what the training saw (to notice drift later)."""

    centroids: np.ndarray  # [K, dim] float32, unit rows
    codebook_id: int  # names this training; codes rows carry it
    trained_pages: int  # live pages when trained
    train_similarity: float  # mean cosine of the training tokens to their centroid
    pool_scale: float = 1.0 / 127  # int8 step of pooled vectors
    pool_factor: int = 8  # tokens per pooled vector (default_pool_factor of the index's encoder)
    pool_lo: np.ndarray | None = None  # [dim] 4-bit pooled vectors: value = pool_lo + code * pool_step
    pool_step: np.ndarray | None = None  # [dim]; None (both): pooled vectors are int8 (x pool_scale)
    calibration: Calibration | None = None  # budgets measured on the index's data (calibrate.py)
    _index: object = field(default=None, repr=False, compare=False)

    @property
    def pool_bits(self) -> int:
        """Bits per dimension of the pooled vectors this codebook's codes rows hold (4 or 8)."""
        return 8 if self.pool_lo is None else 4

    @property
    def k(self) -> int:
        return len(self.centroids)

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @classmethod
    def train(cls, sample: np.ndarray, k: int, codebook_id: int, trained_pages: int, seed: int = 0,
              niter: int = 12, pool_factor: int = 8) -> "Codebook":
        """Spherical k-means (faiss) over the non-empty ``sample`` ``[n, dim]`` token vectors."""
        import faiss

        x = _unit(nonempty(sample))
        k = int(min(k, len(x)))
        km = faiss.Kmeans(x.shape[1], k, niter=niter, spherical=True, seed=seed, verbose=False,
                          max_points_per_centroid=256, min_points_per_centroid=1)
        km.train(x)
        # int8 step: the largest component of the sample, so pooled vectors (averages) never clip
        cb = cls(_unit(km.centroids), int(codebook_id), int(trained_pages), 0.0, float(np.abs(x).max()) / 127,
                 int(pool_factor))
        cb.train_similarity = float(cb.assign(x)[1].mean())
        return cb

    def _search_index(self):
        """faiss index over the centroids: exact inner product up to 4,096 centroids, an IVF above it
        (a token then compares with ~8 % of the centroids; 96 % land on their best one, the rest on
        a near-best one, which costs the probe nothing measurable)."""
        if self._index is None:
            import faiss

            flat = faiss.IndexFlatIP(self.dim)
            if self.k <= 4096:
                index = flat
            else:
                nlist = int(4 * math.sqrt(self.k))
                index = faiss.IndexIVFFlat(flat, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
                index.train(self.centroids)
                index.nprobe = 8
            index.add(self.centroids)
            self._index = index
        return self._index

    def assign(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(codes [n] int32, cosine to the centroid [n] float32)`` of ``[n, dim]`` token vectors."""
        if len(vectors) == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        sims, ids = self._search_index().search(_unit(vectors), 1)
        ids = ids[:, 0]
        if (ids < 0).any():  # an IVF probe that found nothing: exact search for those few
            import faiss

            miss = ids < 0
            exact = faiss.IndexFlatIP(self.dim)
            exact.add(self.centroids)
            s2, i2 = exact.search(_unit(vectors[miss]), 1)
            ids, sims = ids.copy(), sims.copy()
            ids[miss], sims[miss, 0] = i2[:, 0], s2[:, 0]
        return ids.astype(np.int32), sims[:, 0].astype(np.float32)

    def quantize(self, pooled: np.ndarray) -> np.ndarray:
        """int8 pooled vectors (``* pool_scale``), the ``pooled`` column."""
        return np.clip(np.round(pooled / self.pool_scale), -127, 127).astype(np.int8)

    def with_pool_ranges(self, pooled: np.ndarray, clip: float = 0.1) -> "Codebook":
        """This codebook holding 4-bit pooled vectors, with per-dimension ranges fitted to a sample
        ``[n, dim]`` of float pooled vectors: the ``clip`` and ``100 - clip`` percentiles, in 15 steps
        (extremes clipped; recall against int8 in ``docs/search.md``)."""
        x = np.asarray(pooled, np.float32)
        lo, hi = np.percentile(x, clip, axis=0), np.percentile(x, 100 - clip, axis=0)
        step = np.maximum(hi - lo, 1e-6) / 15
        return replace(self, pool_lo=lo.astype(np.float32), pool_step=step.astype(np.float32), _index=self._index)

    def pack4(self, pooled: np.ndarray, chunk: int = 32768) -> np.ndarray:
        """``[n, dim // 2]`` uint8 of ``[n, dim]`` float pooled vectors: dimension ``d`` in the low
        nibble of byte ``d``, dimension ``d + dim/2`` in the high one."""
        x = np.asarray(pooled, np.float32)
        half = self.dim // 2
        inv, off = (1 / self.pool_step).astype(np.float32), (-self.pool_lo / self.pool_step + 0.5).astype(np.float32)
        out = np.empty((len(x), half), np.uint8)
        for a in range(0, len(x), chunk):
            c = x[a:a + chunk] * inv
            c += off
            c = np.clip(c, 0, 15.5, out=c).astype(np.uint8)  # floor(v + 0.5): round to the nearest step
            out[a:a + chunk] = c[:, :half] | (c[:, half:] << 4)
        return out

    def unpack4(self, packed: np.ndarray) -> np.ndarray:
        """``[n, dim]`` float32 pooled vectors of ``pack4``'s bytes (tests, tools; search never unpacks)."""
        codes = np.concatenate([packed & 15, packed >> 4], axis=1).astype(np.float32)
        return self.pool_lo + codes * self.pool_step

    # ------------------------------------------------------------------ storage rows
    def to_table(self) -> pa.Table:
        from snappy.storage.schema import codebook_schema

        k, dim = self.centroids.shape
        schema = codebook_schema(dim)

        def per_row(v: np.ndarray | None) -> pa.Array:  # [dim] repeated on every row, or nulls
            if v is None:
                return pa.nulls(k, pa.list_(pa.float32(), dim))
            return pa.FixedSizeListArray.from_arrays(pa.array(np.tile(v.astype(np.float32), k)), dim)

        flat = pa.array(self.centroids.reshape(-1), pa.float32())
        return pa.Table.from_arrays([
            pa.array(np.arange(k, dtype=np.int32)), pa.FixedSizeListArray.from_arrays(flat, dim),
            pa.array([self.codebook_id] * k, pa.int64()), pa.array([self.trained_pages] * k, pa.int64()),
            pa.array([self.train_similarity] * k, pa.float32()), pa.array([self.pool_scale] * k, pa.float32()),
            pa.array([self.pool_factor] * k, pa.int32()), per_row(self.pool_lo), per_row(self.pool_step),
            pa.array([None if self.calibration is None else self.calibration.to_json()] + [None] * (k - 1),
                     pa.string())],  # once, on centroid 0's row
            schema=schema)

    @classmethod
    def from_table(cls, t: pa.Table) -> "Codebook":
        t = t.sort_by("centroid")
        vec = t.column("vector").combine_chunks()
        dim = vec.type.list_size
        cents = vec.flatten().to_numpy().reshape(-1, dim).astype(np.float32)
        factor = t.column("pool_factor")[0].as_py() if "pool_factor" in t.column_names else None

        def first_row(name: str) -> np.ndarray | None:  # columns absent or null in older indexes
            v = t.column(name)[0].as_py() if name in t.column_names and t.num_rows else None
            return None if v is None else np.asarray(v, np.float32)

        cal = t.column("calibration")[0].as_py() if "calibration" in t.column_names and t.num_rows else None
        return cls(cents, int(t.column("codebook_id")[0].as_py()), int(t.column("trained_pages")[0].as_py()),
                   float(t.column("train_similarity")[0].as_py()), float(t.column("pool_scale")[0].as_py()),
                   int(factor or 8), first_row("pool_lo"), first_row("pool_step"), Calibration.from_json(cal))


def page_sketch(codebook: Codebook, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """What the candidate stage keeps of one page: (sorted unique codes, pooled vectors — int8, or
    ``pack4`` bytes when the codebook has pool ranges —, mean cosine of its tokens to their
    centroids), from its non-empty tokens."""
    vectors = nonempty(vectors)
    codes, sims = codebook.assign(vectors)
    width = codebook.dim if codebook.pool_bits == 8 else codebook.dim // 2
    if not len(vectors):
        pooled = np.zeros((0, width), np.int8 if codebook.pool_bits == 8 else np.uint8)
    else:
        p = pool_page(vectors, codebook.pool_factor)
        pooled = codebook.quantize(p) if codebook.pool_bits == 8 else codebook.pack4(p)
    return np.unique(codes), pooled, float(sims.mean()) if len(sims) else 1.0


def default_budgets(n_pages: int) -> tuple[int, int]:
    """(pool, candidates) for an index (or shard) of ``n_pages`` (pure): 4,096 pages kept by the probe
    and 128 reranked exactly up to 10,000 pages; above, the pool grows with the square root of the
    index (the probe is what loses the exact top-10 as the index grows) and the reranked pages with
    its fourth root, capped at 16,384 and 512. 30,000 pages: 7,094 and 168; 100,000: 12,953 and 228
    (measured recall@10 in ``docs/search.md``)."""
    grow = max(1.0, n_pages / 10_000)
    return int(min(16384, round(4096 * grow ** 0.5))), int(min(512, round(128 * grow ** 0.25)))


@dataclass(frozen=True)
class CandidateOptions:
    """How a query runs the candidate stage. Unset budgets come from the index's calibration (the
    cheapest budgets measured to reach its target recall, or ``target_recall`` when set: see
    :mod:`snappy.candidates.calibrate`), and without one from :func:`default_budgets`."""

    nprobe: int = 8  # centroids probed per query token, at least
    probe_budget: int | None = None  # centroids probed per query in all (short queries probe deeper per token)
    pool: int | None = None  # pages kept by the probe for the pooled rescoring
    candidates: int | None = None  # pages whose exact MaxSim is computed, at least
    max_candidates: int | None = None  # ... at most, while the bound says a page could still enter the top-k
    target_recall: float | None = None  # another recall@10 target than the calibrated one (from its curve)

    def budgets(self, n_pages: int, calibration: Calibration | None = None) -> tuple[int, int]:
        """(pool, candidates) for ``n_pages``: the ones set here, else the calibrated or default ones."""
        b = self.operating_point(n_pages, calibration)
        return b.pool, b.candidates

    def operating_point(self, n_pages: int, calibration: Calibration | None = None) -> Budgets:
        """The budgets a query runs with on an index (or shard) of ``n_pages`` (pure): the calibrated
        ones for ``target_recall`` (pool scaled to ``n_pages``), else ``default_budgets`` with a fixed
        rerank; each field set here replaces its value."""
        if calibration is not None:
            b, _ = calibration.for_target(self.target_recall)
            b = replace(b, pool=b.pool_for(n_pages), pool_share=None)
        else:
            pool, cand = default_budgets(n_pages)
            b = Budgets(112, pool, cand, cand)
        cand = self.candidates or b.candidates
        return Budgets(self.probe_budget or b.probe_budget, self.pool or b.pool, cand,
                       self.max_candidates or (cand if self.candidates else max(b.max_candidates, cand)), b.slack)


@dataclass
class CentroidIndex:
    """The in-memory candidate structure of the pages of one searcher (or shard)."""

    codebook: Codebook
    list_indptr: np.ndarray  # [K + 1] int64: centroid c's pages are list_pages[indptr[c]:indptr[c+1]]
    list_pages: np.ndarray  # int32 page positions
    pooled_indptr: np.ndarray  # [P + 1] int64: page i's pooled vectors are pooled[indptr[i]:indptr[i+1]]
    pooled: np.ndarray  # [n_pooled, dim] int8, or [n_pooled, dim / 2] uint8 (two 4-bit codes a byte)

    @property
    def n_pages(self) -> int:
        return len(self.pooled_indptr) - 1

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.list_indptr, self.list_pages, self.pooled_indptr, self.pooled)) + \
            self.codebook.centroids.nbytes

    @classmethod
    def build(cls, codebook: Codebook, codes: pa.ListArray | pa.ChunkedArray,
              pooled: pa.ListArray | pa.ChunkedArray) -> "CentroidIndex":
        """From each page's code list (``list<int32>``) and pooled vectors: the codes table's ``pooled``
        column (``list<fixed_size_list<int8, dim>>``) or, when the codebook has pool ranges, its
        ``pooled4`` column (``list<fixed_size_list<uint8, dim / 2>>``)."""
        n_codes, flat = list_values(codes)
        n_vectors, vectors = list_values(pooled, 2)
        return cls._from_arrays(codebook, n_codes, flat, n_vectors, vectors, pooled.type.value_type.list_size)

    @classmethod
    def from_batches(cls, codebook: Codebook, batches, max_codes: int, max_vectors: int) -> "CentroidIndex":
        """``build`` from ``(codes, pooled)`` column batches, each copied once into arrays sized by the
        upper bounds given (memory never touched is never resident): loading holds one batch beside
        the result instead of the whole table (``Searcher`` streams the codes table this way)."""
        width = codebook.dim if codebook.pool_bits == 8 else codebook.dim // 2
        codes_buf = _Appender(np.int32, max_codes)
        vec_buf = _Appender(np.int8 if codebook.pool_bits == 8 else np.uint8, max_vectors * width)
        n_codes, n_vectors = [], []
        for codes, pooled in batches:
            _check_width(codebook, pooled.type.value_type.list_size)
            lc, fc = list_values(codes)
            lv, fv = list_values(pooled, 2)
            codes_buf.add(fc)
            vec_buf.add(fv)
            n_codes.append(lc)
            n_vectors.append(lv)
        cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64))
        return cls._from_arrays(codebook, cat(n_codes), codes_buf.values(), cat(n_vectors), vec_buf.values(), width)

    @classmethod
    def _from_arrays(cls, codebook: Codebook, n_codes: np.ndarray, flat_codes: np.ndarray, n_vectors: np.ndarray,
                     flat_vectors: np.ndarray, width: int) -> "CentroidIndex":
        import scipy.sparse

        _check_width(codebook, width)
        page_indptr = np.concatenate([[0], np.cumsum(n_codes)]).astype(np.int64)
        # the inverted lists are the page x centroid matrix in CSC form: scipy's O(n) transpose keeps
        # each list's pages in order (10x faster than a stable argsort of the codes)
        by_page = scipy.sparse.csr_matrix((np.ones(len(flat_codes), np.bool_), flat_codes.astype(np.int32, copy=False),
                                           page_indptr), shape=(len(n_codes), codebook.k))
        by_code = by_page.tocsc()
        del by_page  # only the inverted lists stay: the page -> codes view is not needed
        dtype = np.int8 if codebook.pool_bits == 8 else np.uint8
        return cls(codebook, by_code.indptr.astype(np.int64), by_code.indices.astype(np.int32, copy=False),
                   np.concatenate([[0], np.cumsum(n_vectors)]).astype(np.int64),
                   flat_vectors.astype(dtype, copy=False).reshape(-1, width))

    def search(self, queries: list[np.ndarray], options: CandidateOptions = CandidateOptions()) -> np.ndarray:
        """Candidate page positions for a batch of ``[T, dim]`` float32 queries (their union; the first
        ``candidates`` of each query's :meth:`ranked_pool`)."""
        out = [self._search_one(np.asarray(q, np.float32), options) for q in queries]
        return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)

    def _search_one(self, q: np.ndarray, o: CandidateOptions) -> np.ndarray:
        b = o.operating_point(self.n_pages, self.codebook.calibration)
        return self.ranked_pool(q, b, o.nprobe)[0][:b.candidates]

    def ranked_pool(self, q: np.ndarray, b: Budgets, nprobe: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """(page positions, pooled scores) of the pool's best ``max_candidates`` pages by pooled score,
        best first: the rerank takes ``candidates`` of them, then more while the bound asks."""
        pool = self.probe(q, nprobe, b.pool, b.probe_budget)
        if not len(pool):
            return pool, np.zeros(0, np.float32)
        scores = self.pooled_scores(q, pool)
        keep = max(b.max_candidates, b.candidates)
        if len(pool) > keep:
            top = np.argpartition(-scores, keep - 1)[:keep]
            pool, scores = pool[top], scores[top]
        order = np.argsort(-scores, kind="stable")
        return pool[order], scores[order]

    def probe(self, q: np.ndarray, nprobe: int, pool: int, probe_budget: int = 0) -> np.ndarray:
        """Stage 1: the ``pool`` best pages by the sum over query tokens of their best probed centroid
        (``max(nprobe, probe_budget // T)`` centroids per token)."""
        if self.n_pages == 0:
            return np.zeros(0, np.int64)
        acc = self.probe_scores(q, nprobe, probe_budget)
        hit = np.flatnonzero(acc != 0)
        if len(hit) > pool:
            hit = hit[np.argpartition(-acc[hit], pool - 1)[:pool]]
        return hit.astype(np.int64)

    def probe_scores(self, q: np.ndarray, nprobe: int, probe_budget: int = 0, count: bool = False):
        """``[P]`` probe score of every page (0: no probed centroid); with ``count``, also the number of
        inverted-list entries the probe read (its work)."""
        s = q @ self.codebook.centroids.T  # [T, K]
        nprobe = min(max(nprobe, probe_budget // max(len(q), 1)), self.codebook.k)
        probe = np.argpartition(-s, nprobe - 1, axis=1)[:, :nprobe]  # [T, nprobe]
        acc = np.zeros(self.n_pages, np.float32)
        entries = 0
        for t in range(len(q)):
            cs = probe[t][np.argsort(-s[t, probe[t]])]  # this token's probed centroids, best first
            starts, ends = self.list_indptr[cs], self.list_indptr[cs + 1]
            if not (ends > starts).any():
                continue
            pages = np.concatenate([self.list_pages[a:b] for a, b in zip(starts, ends)])
            entries += len(pages)
            scores = np.repeat(s[t, cs], ends - starts)
            uniq, first = np.unique(pages, return_index=True)  # first occurrence = its best probed centroid
            acc[uniq] += scores[first]
        return (acc, entries) if count else acc

    def pooled_scores(self, q: np.ndarray, pages: np.ndarray, chunk: int = 128) -> np.ndarray:
        """Stage 2: ``[len(pages)]`` MaxSim of ``q`` with each page's pooled vectors (``chunk`` pages at a
        time: their float32 copy, ~8 MB, stays in cache; 512 at a time was 1.7x slower)."""
        out = np.zeros(len(pages), np.float32)
        cb = self.codebook
        if cb.pool_bits == 8:
            qs = q * cb.pool_scale  # fold the int8 step into the query: [T, dim]
        else:  # value = lo + code * step: fold step into the query halves, lo into a per-token constant
            half = cb.dim // 2
            q_lo, q_hi = q[:, :half] * cb.pool_step[:half], q[:, half:] * cb.pool_step[half:]  # [T, dim / 2] each
            const = (q @ cb.pool_lo)[:, None]  # [T, 1]
        for a in range(0, len(pages), chunk):
            sel = pages[a:a + chunk]
            starts, ends = self.pooled_indptr[sel], self.pooled_indptr[sel + 1]
            lengths = ends - starts
            nz = lengths > 0
            if not nz.any():
                continue
            seg = np.concatenate([[0], np.cumsum(lengths[nz])[:-1]])
            rows = np.repeat(starts[nz] - seg, lengths[nz]) + np.arange(int(lengths[nz].sum()))  # one gather
            if cb.pool_bits == 8:
                sim = qs @ self.pooled[rows].astype(np.float32).T  # [T, rows]
            else:
                packed = self.pooled[rows]  # [rows, dim / 2] uint8: low nibble dims < dim / 2
                sim = q_lo @ (packed & 15).astype(np.float32).T
                sim += q_hi @ (packed >> 4).astype(np.float32).T
                sim += const
            best = np.maximum.reduceat(sim, seg, axis=1)  # [T, pages with vectors]
            out[a + np.flatnonzero(nz)] = best.sum(axis=0)
        return out


def list_values(a: pa.ListArray | pa.ChunkedArray, depth: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(each row's length, every row's values flattened ``depth`` levels) of a list column, chunk by
    chunk (one copy of the values; combining the chunks first copied them twice)."""
    chunks = a.chunks if isinstance(a, pa.ChunkedArray) else [a]
    lengths, values = [], []
    for c in chunks:
        lengths.append(pc.fill_null(pc.list_value_length(c), 0).to_numpy(zero_copy_only=False))
        for _ in range(depth):
            c = c.flatten()
        values.append(c.to_numpy(zero_copy_only=False))
    if not chunks:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    return np.concatenate(lengths), (np.concatenate(values) if len(values) > 1 else values[0])


def _check_width(codebook: Codebook, width: int) -> None:
    want = codebook.dim if codebook.pool_bits == 8 else codebook.dim // 2
    if width != want:
        raise ValueError(f"pooled vectors of width {width}; the codebook's {codebook.pool_bits}-bit vectors "
                         f"have {want}")


class _Appender:
    """A 1-D array filled batch by batch up to a capacity given in advance (grown, by copy, only if a
    batch exceeds it)."""

    def __init__(self, dtype, capacity: int):
        self.buf, self.n = np.empty(max(int(capacity), 1), dtype), 0

    def add(self, values: np.ndarray) -> None:
        end = self.n + len(values)
        if end > len(self.buf):
            grown = np.empty(max(end, 2 * len(self.buf)), self.buf.dtype)
            grown[:self.n] = self.buf[:self.n]
            self.buf = grown
        self.buf[self.n:end] = values
        self.n = end

    def values(self) -> np.ndarray:
        return self.buf[:self.n]


def sketch_table(codebook: Codebook, pages: pa.Table, vectors: pa.ListArray | pa.ChunkedArray) -> pa.Table:
    """codes rows (``codes_schema``) of ``pages`` (page_id, doc_id, gen) from their vectors (same order)."""
    dim = vectors.type.value_type.list_size
    lengths, flat = list_values(vectors, 2)
    flat = flat.reshape(-1, dim)
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    codes, pooled, sims = [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        c, p, s = page_sketch(codebook, flat[a:b])
        codes.append(c)
        pooled.append(p)
        sims.append(s)
    return codes_table(codebook, pages, codes, pooled, np.asarray(sims, np.float32), dim)


def codes_table(codebook: Codebook, pages: pa.Table, codes: list[np.ndarray], pooled: list[np.ndarray],
                similarity: np.ndarray, dim: int) -> pa.Table:
    """codes rows of ``pages`` (page_id, doc_id, gen): per page its code ids and pooled vectors (int8
    ``[n, dim]`` into ``pooled``, or 4-bit ``[n, dim // 2]`` into ``pooled4``, by the codebook)."""
    from snappy.storage.schema import codes_schema

    schema = codes_schema(dim)
    four = codebook.pool_bits == 4
    column = "pooled4" if four else "pooled"
    width = dim // 2 if four else dim
    values = np.concatenate(pooled).reshape(-1) if pooled else np.zeros(0)
    vec = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum([len(p) for p in pooled])]).astype(np.int32)),
        pa.FixedSizeListArray.from_arrays(pa.array(values.astype(np.uint8 if four else np.int8)), width))
    n = pages.num_rows
    cols = {"page_id": pages.column("page_id"), "doc_id": pages.column("doc_id"),
            "codebook_id": pa.array([codebook.codebook_id] * n, pa.int64()),
            "codes": pa.array(codes, pa.list_(pa.int32())), "similarity": pa.array(similarity, pa.float32()),
            "gen": pages.column("gen"), column: vec}
    return pa.Table.from_arrays([cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in schema],
                                schema=schema)
