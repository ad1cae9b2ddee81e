"""Exact MaxSim: ``score(q, page) = sum_i max_p <q_i, d_p>``, vectorised over pages and queries.

Page vectors sit in one contiguous ``[n_tokens_total, dim]`` matrix with per-page offsets
(:class:`PageMatrix`). :func:`maxsim` scores a batch of queries against every page with a chunked
float32 matmul and a segment max (``np.maximum.reduceat``) per page; :func:`top_k` ranks.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np


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


def query_matrix(queries: Sequence[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack queries into ``([T, dim] float32, [B] start rows)``; a clear error for a query of the
    wrong shape or width, without tokens, or with non-finite values (never a silent reshape)."""
    qs = []
    for i, q in enumerate(queries):
        a = np.asarray(q, dtype=np.float32)
        if a.ndim == 1 and a.shape[0] == dim:
            a = a[None, :]
        if a.ndim != 2 or a.shape[1] != dim:
            raise ValueError(f"query {i} has shape {tuple(a.shape)}; expected [tokens, {dim}]")
        if a.shape[0] == 0:
            raise ValueError(f"query {i} has no token vectors")
        if not np.isfinite(a).all():
            raise ValueError(f"query {i} has non-finite values (the encoder produced NaN or inf)")
        qs.append(a)
    q = np.ascontiguousarray(np.concatenate(qs, axis=0))  # [T, dim]
    return q, np.concatenate([[0], np.cumsum([len(x) for x in qs])[:-1]]).astype(np.int64)  # [B]


def maxsim(queries: Sequence[np.ndarray], matrix: PageMatrix, chunk_bytes: int = 8 << 20,
           threads: int = 1, patch_max: bool = False):
    """Exact MaxSim ``[n_queries, n_pages]`` float32: ``sum_i max_p <q_i, d_p>`` per (query, page).

    Queries are stacked into one ``[T, dim]`` matrix, so a batch costs one pass over the pages.
    Each chunk of pages is one float32 matmul ``[T, dim] x [dim, c]`` (``c`` sized so the
    ``[T, c]`` block stays about ``chunk_bytes``), then a segment max over each page's
    (contiguous) columns and a segment sum over each query's tokens. With ``patch_max`` also
    returns ``[n_queries, n_tokens_total]``: each patch's best similarity to each query (the
    per-patch scores regions are scored from), computed from the same blocks.
    """
    if not len(queries):
        empty = np.zeros((0, matrix.n_pages), np.float32)
        return (empty, np.zeros((0, len(matrix.vectors)), np.float32)) if patch_max else empty
    q, q_starts = query_matrix(queries, matrix.dim)
    out = np.empty((len(q_starts), matrix.n_pages), np.float32)  # [B, n_pages]
    patches = np.empty((len(q_starts), len(matrix.vectors)), np.float32) if patch_max else None  # [B, N]
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
        if patches is not None:
            patches[:, o[0]:o[-1]] = np.maximum.reduceat(sim, q_starts, axis=0)  # [B, c]

    ranges = _chunks(matrix.offsets, chunk_tokens)
    if threads > 1 and len(ranges) > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, ranges))
    else:
        for r in ranges:
            run(r)
    return (out, patches) if patch_max else out


def maxsim_reference(queries: Sequence[np.ndarray], pages: Sequence[np.ndarray]) -> np.ndarray:
    """float64 MaxSim ``[n_queries, n_pages]`` computed page by page (for tests and benchmarks)."""
    return np.array([[float((np.asarray(q, np.float64) @ np.asarray(p, np.float64).T).max(axis=1).sum())
                      for p in pages] for q in queries])


def top_k(scores: np.ndarray, k: int, keys: np.ndarray | None = None) -> np.ndarray:
    """``[B, min(k, n)]`` indices of the best scores per row, best first.

    Ties break by ``keys`` (default: the index), so equal scores rank the same everywhere (a shard,
    a candidate list, the whole index). NaN scores rank last and never raise.
    """
    scores = np.where(np.isnan(scores), -np.inf, scores)
    n = scores.shape[1]
    k = min(k, n)
    if k <= 0:
        return np.zeros((scores.shape[0], 0), np.int64)
    keys = np.arange(n) if keys is None else np.asarray(keys)
    rows = []
    for row in scores:
        if k < n:  # the k best, widened to every index tied with the k-th score
            part = np.argpartition(-row, k - 1)[:k]
            cand = np.flatnonzero(row >= row[part].min())
        else:
            cand = np.arange(n)
        rows.append(cand[np.lexsort((keys[cand], -row[cand]))][:k])
    return np.stack(rows)
