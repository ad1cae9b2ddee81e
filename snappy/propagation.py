"""Patch -> region relevance propagation (the Snappy paper, arXiv 2512.02660).

A query's token vectors are compared with a page's patch vectors (MaxSim per patch); the
per-patch scores are propagated onto OCR regions through the region<->patch overlap:

    rel(r) = sum_p IoU(r, p) * s_p / sum_p IoU(r, p),   s_p = max_i <q_i, d_p>

The overlap (intersection areas, sparse ``[R, P]``) depends only on the page's geometry, so
it is computed once per page at index time; scoring a page is then one sparse mat-vec.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp

Reduce = Literal["max", "mean", "sum"]
Method = Literal["iou", "ior", "mean", "max"]
METHODS: tuple[str, ...] = ("iou", "ior", "mean", "max")


def intersection_areas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense ``[N, M]`` float64 intersection areas of two sets of ``[x0, y0, x1, y1]`` boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])  # [N, M]
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None)


def intersection_matrix(region_boxes: np.ndarray, patch_boxes: np.ndarray) -> sp.csr_matrix:
    """Sparse ``[R, P]`` float32 intersection areas between region and patch boxes."""
    return sp.csr_matrix(intersection_areas(region_boxes, patch_boxes).astype(np.float32))


def _box_areas(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).astype(np.float32)


@dataclass
class RegionOverlap:
    """Sparse region<->patch overlap of one page, with the weight matrices derived from it.

    ``inter`` is ``[R, P]`` CSR of intersection areas (page px^2). Row-normalised weight
    matrices are built lazily, once per method, so repeated queries reuse them.
    """

    inter: sp.csr_matrix  # [R, P]
    region_area: np.ndarray  # [R]
    patch_area: np.ndarray  # [P]
    _weights: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, patch_boxes: np.ndarray, region_boxes: np.ndarray) -> "RegionOverlap":
        return cls(intersection_matrix(region_boxes, patch_boxes), _box_areas(region_boxes), _box_areas(patch_boxes))

    @classmethod
    def from_lists(cls, patch_idx: list[np.ndarray], patch_inter: list[np.ndarray],
                   region_area: np.ndarray, patch_area: np.ndarray) -> "RegionOverlap":
        """Rebuild from per-region (patch indices, intersection areas), as stored in the index."""
        lengths = np.fromiter((len(i) for i in patch_idx), dtype=np.int64, count=len(patch_idx))
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        indices = np.concatenate(patch_idx).astype(np.int32) if len(patch_idx) else np.zeros(0, np.int32)
        data = np.concatenate(patch_inter).astype(np.float32) if len(patch_inter) else np.zeros(0, np.float32)
        inter = sp.csr_matrix((data, indices, indptr), shape=(len(patch_idx), len(patch_area)))
        return cls(inter, np.asarray(region_area, np.float32), np.asarray(patch_area, np.float32))

    def to_lists(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per region: (patch indices int32, intersection areas float32)."""
        ip, ix, d = self.inter.indptr, self.inter.indices, self.inter.data
        return ([ix[ip[i]:ip[i + 1]].astype(np.int32) for i in range(self.n_regions)],
                [d[ip[i]:ip[i + 1]].astype(np.float32) for i in range(self.n_regions)])

    @property
    def n_regions(self) -> int:
        return self.inter.shape[0]

    @property
    def n_patches(self) -> int:
        return self.inter.shape[1]

    def weights(self, method: Method) -> sp.csr_matrix:
        """Row-normalised ``[R, P]`` weights: ``method`` scores are ``weights @ patch_scores``."""
        if method not in self._weights:
            self._weights[method] = _normalised_weights(self, method)
        return self._weights[method]

    @property
    def empty(self) -> np.ndarray:
        """``[R]`` bool: regions that overlap no patch (they score NaN)."""
        if "empty" not in self._weights:
            self._weights["empty"] = np.diff(self.inter.indptr) == 0
        return self._weights["empty"]


def _normalised_weights(ov: RegionOverlap, method: str) -> sp.csr_matrix:
    inter = ov.inter.tocoo()
    rows, cols, a = inter.row, inter.col, inter.data.astype(np.float64)
    if method == "iou":
        w = a / (ov.region_area[rows] + ov.patch_area[cols] - a)
    elif method == "ior":  # intersection over region: the share of the region each patch covers
        w = a / np.maximum(ov.region_area[rows], 1e-12)
    elif method in ("mean", "max"):
        w = np.ones_like(a)
    else:
        raise ValueError(f"unknown region scoring method {method!r}; expected one of {METHODS}")
    keep = w > 0
    rows, cols, w = rows[keep], cols[keep], w[keep]
    totals = np.bincount(rows, weights=w, minlength=ov.n_regions)
    w = w / totals[rows]
    return sp.csr_matrix((w.astype(np.float32), (rows, cols)), shape=ov.inter.shape)


def patch_scores(query: np.ndarray, patches: np.ndarray, reduce: Reduce = "max") -> np.ndarray:
    """Per-patch relevance ``[P]``: similarity ``[t, P]`` reduced over the query's tokens."""
    sim = np.asarray(query, dtype=np.float32) @ np.asarray(patches, dtype=np.float32).T  # [t, P]
    if reduce == "max":
        return sim.max(axis=0)
    if reduce == "mean":
        return sim.mean(axis=0)
    if reduce == "sum":
        return sim.sum(axis=0)
    raise ValueError(f"unknown reduce {reduce!r}; expected max, mean or sum")


def region_scores(scores: np.ndarray, overlap: RegionOverlap, method: Method = "iou") -> np.ndarray:
    """Region relevance ``[R]`` from patch scores ``[P]``; NaN for a region that overlaps no patch."""
    s = np.asarray(scores, dtype=np.float32)
    if s.shape != (overlap.n_patches,):
        raise ValueError(f"got {s.shape[0] if s.ndim else 0} patch scores for {overlap.n_patches} patches")
    w, empty = overlap.weights(method), overlap.empty
    if method == "max":
        out = np.full(overlap.n_regions, np.nan, dtype=np.float32)
        if not empty.all():
            out[~empty] = np.maximum.reduceat(s[w.indices], w.indptr[:-1][~empty])
        return out
    out = w @ s  # [R] float32
    if empty.any():
        out[empty] = np.nan
    return out


# ---------------------------------------------------------------------------- thresholds

_THRESHOLD_RE = re.compile(
    r"^(?:p(?P<pct>\d+(?:\.\d+)?)|adaptive(?::(?P<k>-?\d+(?:\.\d+)?))?|top(?P<top>\d+)|(?P<fixed>-?\d*\.?\d+(?:e-?\d+)?))$"
)


@dataclass(frozen=True)
class Threshold:
    """Which regions to keep, given their scores.

    - ``percentile`` (``p50``): scores at or above the k-th percentile of the page's regions;
    - ``adaptive`` (``adaptive`` / ``adaptive:1.5``): scores >= mean + k*std (k default 1);
    - ``top`` (``top3``): the k best;
    - ``fixed`` (``0.4``): scores >= value (absolute; the only rule that may keep a flat page).

    Relative rules keep nothing on a flat score map of two or more regions (range below
    ``flat_eps`` times the largest magnitude): no region stands out, so none is selected; a lone
    region is kept. Ties at the cut are kept only if that
    does not exceed the rule's budget (percentile: ``ceil((100-k)% * R)`` regions).
    """

    kind: Literal["percentile", "adaptive", "top", "fixed"]
    value: float
    flat_eps: float = 1e-6

    @classmethod
    def parse(cls, spec: "str | float | Threshold") -> "Threshold":
        if isinstance(spec, Threshold):
            return spec
        if isinstance(spec, (int, float)):
            return cls("fixed", float(spec))
        m = _THRESHOLD_RE.match(spec.strip().lower())
        if not m:
            raise ValueError(f"bad threshold {spec!r}; use p50, adaptive[:k], top3 or a number like 0.4")
        if m["pct"] is not None:
            pct = float(m["pct"])
            if not 0 <= pct <= 100:
                raise ValueError(f"bad threshold {spec!r}: percentile must be within 0..100")
            return cls("percentile", pct)
        if m["top"] is not None:
            return cls("top", float(int(m["top"])))
        if m["fixed"] is not None:
            return cls("fixed", float(m["fixed"]))
        return cls("adaptive", float(m["k"]) if m["k"] is not None else 1.0)

    def __str__(self) -> str:
        return {"percentile": f"p{self.value:g}", "adaptive": f"adaptive:{self.value:g}",
                "top": f"top{int(self.value)}", "fixed": f"{self.value:g}"}[self.kind]


def select_regions(scores: np.ndarray, threshold: "Threshold | str | float") -> np.ndarray:
    """Indices of kept regions, best first, ties in region order (NaN scores are never kept).

    Every rule keeps a prefix of the regions sorted by score, so one stable sort serves them all
    (this runs once per result page: a few microseconds, no per-region Python)."""
    th = threshold if isinstance(threshold, Threshold) else Threshold.parse(threshold)
    s = np.asarray(scores)
    order = np.argsort(-s, kind="stable")  # best first; NaN last
    v = s[order]  # descending
    if v.size and np.isnan(v[-1]):
        n = int(np.count_nonzero(~np.isnan(v)))
        order, v = order[:n], v[:n]
    if v.size == 0:
        return np.zeros(0, dtype=np.int64)
    if th.kind == "fixed":
        return order[:np.count_nonzero(v >= th.value)]
    vmax, vmin = float(v[0]), float(v[-1])
    scale = max(abs(vmax), abs(vmin), 1e-12)
    if v.size > 1 and vmax - vmin <= th.flat_eps * scale:
        return np.zeros(0, dtype=np.int64)
    if th.kind == "top":
        k = int(th.value)
        if k <= 0:
            return order[:0]
        cut = v[min(k, v.size) - 1]
        at_least = np.count_nonzero(v >= cut)
        return order[:k] if at_least <= k else order[:np.count_nonzero(v > cut)]
    if th.kind == "percentile":
        asc = v[::-1]
        pos = (v.size - 1) * th.value / 100.0
        lo = int(np.floor(pos))
        hi = min(lo + 1, v.size - 1)
        cut = float(asc[lo] + (asc[hi] - asc[lo]) * (pos - lo))  # np.percentile(v, q), linear
        budget = int(np.ceil((100.0 - th.value) / 100.0 * v.size))
        n = np.count_nonzero(v >= cut)
        return order[:n] if n <= max(budget, 1) else order[:np.count_nonzero(v > cut)]
    return order[:np.count_nonzero(v >= v.mean() + th.value * v.std())]  # adaptive
