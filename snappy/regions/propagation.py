"""Patch -> region relevance propagation (the Snappy paper, arXiv 2512.02660).

A query's token vectors are compared with a page's patch vectors (MaxSim per patch); the
per-patch scores are propagated onto OCR regions through the region<->patch overlap:

    rel(r) = sum_p IoU(r, p) * s_p / sum_p IoU(r, p),   s_p = max_i <q_i, d_p>

The overlap (intersection areas, sparse ``[R, P]``) depends only on the page's geometry, so
it is computed once per page at index time; scoring a page is then one sparse mat-vec.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
import scipy.sparse as sp

from snappy.regions.region import box_areas

Reduce = Literal["max", "mean", "sum"]
Method = Literal["iou", "ior", "mean", "max"]
METHODS: tuple[str, ...] = ("iou", "ior", "mean", "max")
DEFAULT_METHOD: Method = "iou"  # the paper's


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
        return cls(intersection_matrix(region_boxes, patch_boxes), box_areas(region_boxes, np.float32),
                   box_areas(patch_boxes, np.float32))

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


def entry_weights(rows: np.ndarray, inter: np.ndarray, region_area: np.ndarray, patch_area: np.ndarray,
                  n_regions: int, method: str) -> np.ndarray:
    """The paper's region weights, one per region<->patch entry, normalised so each region's sum to 1.

    Per entry: its region ``rows``, intersection area ``inter`` and the areas of its region and its
    patch. ``iou``: intersection over union; ``ior``: intersection over the region's area (the share
    of the region the patch covers); ``mean`` / ``max``: equal. Denominators are guarded (a
    degenerate box never divides by zero); a weight that is not positive is 0, and a region whose
    weights are all 0 keeps them 0. The one implementation: :class:`RegionOverlap` (sparse matrices)
    and ``snappy.search.region_rows`` (flat arrays of many pages) both call it.
    """
    a = np.asarray(inter, np.float64)
    region_area = np.asarray(region_area, np.float64)
    if method == "iou":
        w = a / np.maximum(region_area + np.asarray(patch_area, np.float64) - a, 1e-12)
    elif method == "ior":
        w = a / np.maximum(region_area, 1e-12)
    elif method in ("mean", "max"):
        w = np.ones_like(a)
    else:
        raise ValueError(f"unknown region scoring method {method!r}; expected one of {METHODS}")
    w = np.where(w > 0, w, 0.0)
    totals = np.bincount(rows, weights=w, minlength=n_regions)
    return (w / np.maximum(totals[rows], 1e-12)).astype(np.float32)


def _normalised_weights(ov: RegionOverlap, method: str) -> sp.csr_matrix:
    inter = ov.inter.tocoo()
    rows, cols = inter.row, inter.col
    w = entry_weights(rows, inter.data, ov.region_area[rows], ov.patch_area[cols], ov.n_regions, method)
    keep = w > 0
    return sp.csr_matrix((w[keep], (rows[keep], cols[keep])), shape=ov.inter.shape)


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
    r"^(?:p(?P<pct>\d+(?:\.\d+)?)|adaptive(?::(?P<k>-?\d+(?:\.\d+)?))?|top(?P<top>\d+)"
    r"|gap(?::(?P<gap>\d*\.?\d+))?|(?P<fixed>-?\d*\.?\d+(?:e-?\d+)?))$"
)


DEFAULT_THRESHOLD = "gap"  # measured best with blocks (docs/eval.md); "p50" reproduces the paper


@dataclass(frozen=True)
class Threshold:
    """Which regions to keep, given their scores.

    - ``percentile`` (``p50``): scores at or above the k-th percentile of the page's regions
      (the paper's rule);
    - ``adaptive`` (``adaptive`` / ``adaptive:1.5``): scores >= mean + k*std (k default 1);
    - ``top`` (``top3``): the k best;
    - ``gap`` (``gap`` / ``gap:0.3``): everything above the largest drop between consecutive
      sorted scores, looked for among the best ``value`` share of the regions (default 0.5);
    - ``fixed`` (``0.4``): scores >= value (absolute; the only rule that may keep a flat page).

    Relative rules never drop the best evidence: all regions tied at the top are kept, even past
    the rule's budget (``top1`` on two tied best regions keeps both). They keep nothing only on a
    flat score map of two or more regions (range below ``flat_eps`` times the largest magnitude):
    no region stands out. Ties further down are kept only within the rule's budget (percentile:
    ``ceil((100-k)% * R)`` regions; top: k).
    """

    kind: Literal["percentile", "adaptive", "top", "gap", "fixed"]
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
            raise ValueError(f"bad threshold {spec!r}; use p50, adaptive[:k], top3, gap[:share] or a number like 0.4")
        if m["pct"] is not None:
            pct = float(m["pct"])
            if not 0 <= pct <= 100:
                raise ValueError(f"bad threshold {spec!r}: percentile must be within 0..100")
            return cls("percentile", pct)
        if m["top"] is not None:
            return cls("top", float(int(m["top"])))
        if m["gap"] is not None or spec.strip().lower() == "gap":
            share = float(m["gap"]) if m["gap"] is not None else 0.5
            if not 0 < share <= 1:
                raise ValueError(f"bad threshold {spec!r}: the gap rule's share must be within 0..1")
            return cls("gap", share)
        if m["fixed"] is not None:
            return cls("fixed", float(m["fixed"]))
        return cls("adaptive", float(m["k"]) if m["k"] is not None else 1.0)

    def __str__(self) -> str:
        return {"percentile": f"p{self.value:g}", "adaptive": f"adaptive:{self.value:g}",
                "top": f"top{int(self.value)}", "gap": f"gap:{self.value:g}", "fixed": f"{self.value:g}"}[self.kind]


class Selection(NamedTuple):
    """What a rule kept on one page, and how much the page's scores said.

    ``kept``: region indices, best first. ``peak``: how far the best region stands above the
    others, ``(best - mean) / std`` of the page's region scores (0 on a flat map; a lone region
    gives 0 too: nothing to compare with). ``reason`` says why nothing (or everything) was kept:
    ``"no regions"``, ``"flat"`` (every region scores the same: no evidence on this page), or
    ``"below threshold"`` (a fixed threshold above every score); None for a real selection."""

    kept: np.ndarray
    peak: float
    reason: str | None = None


_NOTHING = np.zeros(0, dtype=np.int64)
_NOTHING.flags.writeable = False


def select(scores: np.ndarray, threshold: "Threshold | str | float") -> Selection:
    """Apply a threshold to one page's region scores: the kept indices, the map's peak, and why
    nothing was kept when nothing was (NaN scores are never kept)."""
    th = threshold if isinstance(threshold, Threshold) else Threshold.parse(threshold)
    s = np.asarray(scores)
    order = np.argsort(-s, kind="stable")  # best first; NaN last
    v = s[order]  # descending
    if v.size and math.isnan(v[-1]):
        n = int(np.count_nonzero(~np.isnan(v)))
        order, v = order[:n], v[:n]
    if v.size == 0:
        return Selection(_NOTHING, 0.0, "no regions")
    vmax, vmin = float(v[0]), float(v[-1])
    flat = v.size > 1 and vmax - vmin <= th.flat_eps * max(abs(vmax), abs(vmin), 1e-12)
    mean = float(v.sum()) / v.size
    std = math.sqrt(max(float(v @ v) / v.size - mean * mean, 0.0))  # np.std's value at a tenth of its cost
    peak = 0.0 if flat or std == 0 else (vmax - mean) / std
    if th.kind == "fixed":
        n = int(np.count_nonzero(v >= th.value))
        return Selection(order[:n], peak, None if n else ("flat" if flat else "below threshold"))
    if flat:
        return Selection(_NOTHING, 0.0, "flat")
    if th.kind == "top":
        k = int(th.value)
        cut = v[min(max(k, 1), v.size) - 1]
        n = k if np.count_nonzero(v >= cut) <= k else int(np.count_nonzero(v > cut))
    elif th.kind == "percentile":
        pos = (v.size - 1) * th.value / 100.0  # np.percentile(v, q), linear, on the ascending order
        lo = int(pos)
        hi = min(lo + 1, v.size - 1)
        a_lo, a_hi = float(v[v.size - 1 - lo]), float(v[v.size - 1 - hi])
        cut = a_lo + (a_hi - a_lo) * (pos - lo)
        budget = math.ceil((100.0 - th.value) / 100.0 * v.size)
        n = int(np.count_nonzero(v >= cut))
        n = n if n <= max(budget, 1) else int(np.count_nonzero(v > cut))
    elif th.kind == "gap":
        m = min(v.size - 1, max(1, math.ceil(th.value * v.size)))  # drops looked at (0: a lone region)
        n = int(np.argmax(v[:m] - v[1:m + 1])) + 1 if m else 1  # up to the first largest drop
    else:  # adaptive
        n = int(np.count_nonzero(v >= mean + th.value * std))
    if n < v.size and v[n] >= vmax:  # regions tied at the top are always kept
        n = int(np.count_nonzero(v >= vmax))
    return Selection(order[:n], peak)


def select_regions(scores: np.ndarray, threshold: "Threshold | str | float") -> np.ndarray:
    """Indices of kept regions, best first, ties in region order (see :func:`select`).

    Every rule keeps a prefix of the regions sorted by score, so one stable sort serves them all
    (this runs once per result page: a few microseconds, no per-region Python)."""
    return select(scores, threshold).kept
