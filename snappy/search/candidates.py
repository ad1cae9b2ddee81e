"""The candidate stage: a few hundred pages out of millions, before the exact MaxSim.

What it keeps of each page (the ``codes`` table; about 17 KB a page instead of 256 KB of vectors):

- **codes**: the set of centroids its token vectors fall in, in a codebook of ``K`` centroids
  trained by spherical k-means (faiss) over a sample of the index's tokens (PLAID's centroids);
- **pooled**: its token vectors pooled ~8:1 (k-means inside the page: near-identical background
  patches and the patches of one word or figure merge), as int8.

A query (``T`` token vectors) then runs three stages (the last one is the searcher's):

1. **probe** — ``S = Q @ C.T`` (``[T, K]``); each query token's ``nprobe`` best centroids; the
   inverted lists (centroid -> pages) give the pages that contain one, scored by the sum over query
   tokens of the best probed centroid they contain. The ``pool`` best pages go on. The work follows
   the probed lists, not the index;
2. **rescore** — the pooled MaxSim of those pages (``sum_t max_v <q_t, pooled_v>``), from the
   in-memory int8 pooled vectors; the ``candidates`` best go on;
3. **exact** — the searcher reads those pages' stored vectors by row and computes the exact MaxSim.

Measured choices (``docs/search.md``, 5,000 structured pages): 8:1 pooling keeps 0.988 of the exact
top-10 within the 128 best pooled scores, 16:1 pooling 0.916; the probe alone needs ~2,000 pages for
0.99; MUVERA encodings and binary tokens needed far more candidates for the same recall. Defaults
(pool 4,096, 128 candidates) give recall@10 0.978 / 0.953 / 0.930 at 10k / 30k / 100k pages.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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
    _index: object = field(default=None, repr=False, compare=False)

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
        return np.clip(np.round(pooled / self.pool_scale), -127, 127).astype(np.int8)

    # ------------------------------------------------------------------ storage rows
    def to_table(self) -> pa.Table:
        from snappy.storage.schema import codebook_schema

        k, dim = self.centroids.shape
        schema = codebook_schema(dim)
        flat = pa.array(self.centroids.reshape(-1), pa.float32())
        return pa.Table.from_arrays([
            pa.array(np.arange(k, dtype=np.int32)), pa.FixedSizeListArray.from_arrays(flat, dim),
            pa.array([self.codebook_id] * k, pa.int64()), pa.array([self.trained_pages] * k, pa.int64()),
            pa.array([self.train_similarity] * k, pa.float32()), pa.array([self.pool_scale] * k, pa.float32()),
            pa.array([self.pool_factor] * k, pa.int32())], schema=schema)

    @classmethod
    def from_table(cls, t: pa.Table) -> "Codebook":
        t = t.sort_by("centroid")
        vec = t.column("vector").combine_chunks()
        dim = vec.type.list_size
        cents = vec.flatten().to_numpy().reshape(-1, dim).astype(np.float32)
        factor = t.column("pool_factor")[0].as_py() if "pool_factor" in t.column_names else None
        return cls(cents, int(t.column("codebook_id")[0].as_py()), int(t.column("trained_pages")[0].as_py()),
                   float(t.column("train_similarity")[0].as_py()), float(t.column("pool_scale")[0].as_py()),
                   int(factor or 8))


def page_sketch(codebook: Codebook, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """What the candidate stage keeps of one page: (sorted unique codes, int8 pooled vectors, mean cosine
    of its tokens to their centroids), from its non-empty tokens."""
    vectors = nonempty(vectors)
    codes, sims = codebook.assign(vectors)
    pooled = codebook.quantize(pool_page(vectors, codebook.pool_factor)) if len(vectors) else \
        np.zeros((0, codebook.dim), np.int8)
    return np.unique(codes), pooled, float(sims.mean()) if len(sims) else 1.0


@dataclass(frozen=True)
class CandidateOptions:
    nprobe: int = 8  # centroids probed per query token, at least
    probe_budget: int = 112  # centroids probed per query in all: short queries probe deeper per token
    pool: int = 4096  # pages kept by the probe for the pooled rescoring
    candidates: int = 128  # pages whose exact MaxSim is computed (recall@10 >= 0.95 at 30k pages; docs/search.md)


@dataclass
class CentroidIndex:
    """The in-memory candidate structure of the pages of one searcher (or shard)."""

    codebook: Codebook
    list_indptr: np.ndarray  # [K + 1] int64: centroid c's pages are list_pages[indptr[c]:indptr[c+1]]
    list_pages: np.ndarray  # int32 page positions
    pooled_indptr: np.ndarray  # [P + 1] int64: page i's pooled vectors are pooled[indptr[i]:indptr[i+1]]
    pooled: np.ndarray  # [n_pooled, dim] int8

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
        """From each page's code list (``list<int32>``) and pooled vectors (``list<fixed_size_list<int8>>``)."""
        codes, pooled = _one_chunk(codes), _one_chunk(pooled)
        offsets = codes.offsets.to_numpy()
        page_indptr = (offsets - offsets[0]).astype(np.int64)
        flat = codes.flatten().to_numpy(zero_copy_only=False)
        page_codes = flat.astype(np.uint16 if codebook.k <= 1 << 16 else np.int32)  # uint16: radix sort, 2 B/code
        pages = np.repeat(np.arange(len(codes), dtype=np.int32), np.diff(page_indptr))
        order = np.argsort(page_codes, kind="stable")
        list_indptr = np.concatenate([[0], np.cumsum(np.bincount(page_codes, minlength=codebook.k))]).astype(np.int64)
        list_pages = pages[order]
        del pages, order, page_codes, flat  # only the inverted lists stay: the page -> codes view is not needed
        poff = pooled.offsets.to_numpy()
        pvec = pooled.flatten()
        pdata = pvec.flatten().to_numpy(zero_copy_only=False).astype(np.int8, copy=False).reshape(-1, codebook.dim)
        return cls(codebook, list_indptr, list_pages, (poff - poff[0]).astype(np.int64), pdata)

    def search(self, queries: list[np.ndarray], options: CandidateOptions = CandidateOptions()) -> np.ndarray:
        """Candidate page positions for a batch of ``[T, dim]`` float32 queries (their union)."""
        out = [self._search_one(np.asarray(q, np.float32), options) for q in queries]
        return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)

    def _search_one(self, q: np.ndarray, o: CandidateOptions) -> np.ndarray:
        pool = self.probe(q, o.nprobe, o.pool, o.probe_budget)
        if len(pool) <= o.candidates:
            return pool
        scores = self.pooled_scores(q, pool)
        return pool[np.argpartition(-scores, o.candidates - 1)[:o.candidates]]

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

    def probe_scores(self, q: np.ndarray, nprobe: int, probe_budget: int = 0) -> np.ndarray:
        """``[P]`` probe score of every page (0: no probed centroid)."""
        s = q @ self.codebook.centroids.T  # [T, K]
        nprobe = min(max(nprobe, probe_budget // max(len(q), 1)), self.codebook.k)
        probe = np.argpartition(-s, nprobe - 1, axis=1)[:, :nprobe]  # [T, nprobe]
        acc = np.zeros(self.n_pages, np.float32)
        for t in range(len(q)):
            cs = probe[t][np.argsort(-s[t, probe[t]])]  # this token's probed centroids, best first
            starts, ends = self.list_indptr[cs], self.list_indptr[cs + 1]
            if not (ends > starts).any():
                continue
            pages = np.concatenate([self.list_pages[a:b] for a, b in zip(starts, ends)])
            scores = np.repeat(s[t, cs], ends - starts)
            uniq, first = np.unique(pages, return_index=True)  # first occurrence = its best probed centroid
            acc[uniq] += scores[first]
        return acc

    def pooled_scores(self, q: np.ndarray, pages: np.ndarray, chunk: int = 128) -> np.ndarray:
        """Stage 2: ``[len(pages)]`` MaxSim of ``q`` with each page's pooled vectors (``chunk`` pages at a
        time: their float32 copy, ~8 MB, stays in cache; 512 at a time was 1.7x slower)."""
        out = np.zeros(len(pages), np.float32)
        qs = q * self.codebook.pool_scale  # fold the int8 step into the query: [T, dim]
        for a in range(0, len(pages), chunk):
            sel = pages[a:a + chunk]
            starts, ends = self.pooled_indptr[sel], self.pooled_indptr[sel + 1]
            lengths = ends - starts
            nz = lengths > 0
            if not nz.any():
                continue
            seg = np.concatenate([[0], np.cumsum(lengths[nz])[:-1]])
            rows = np.repeat(starts[nz] - seg, lengths[nz]) + np.arange(int(lengths[nz].sum()))  # one gather
            sim = qs @ self.pooled[rows].astype(np.float32).T  # [T, rows]
            best = np.maximum.reduceat(sim, seg, axis=1)  # [T, pages with vectors]
            out[a + np.flatnonzero(nz)] = best.sum(axis=0)
        return out


def _one_chunk(a: pa.ListArray | pa.ChunkedArray) -> pa.ListArray:
    if isinstance(a, pa.ChunkedArray):
        return a.combine_chunks() if a.num_chunks else pa.array([], a.type)
    return a


def sketch_table(codebook: Codebook, pages: pa.Table, vectors: pa.ListArray | pa.ChunkedArray) -> pa.Table:
    """codes rows (``codes_schema``) of ``pages`` (page_id, doc_id, gen) from their vectors (same order)."""
    from snappy.storage.schema import codes_schema

    vectors = _one_chunk(vectors)
    dim = vectors.type.value_type.list_size
    lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
    flat = vectors.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    codes, pooled, sims = [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        c, p, s = page_sketch(codebook, flat[a:b])
        codes.append(c)
        pooled.append(p)
        sims.append(s)
    pooled_arr = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum([len(p) for p in pooled])]).astype(np.int32)),
        pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(pooled).reshape(-1) if pooled else
                                                   np.zeros(0, np.int8), pa.int8()), dim))
    return pa.Table.from_arrays([
        pages.column("page_id"), pages.column("doc_id"), pa.array([codebook.codebook_id] * pages.num_rows, pa.int64()),
        pa.array(codes, pa.list_(pa.int32())), pooled_arr, pa.array(sims, pa.float32()), pages.column("gen")],
        schema=codes_schema(dim))
