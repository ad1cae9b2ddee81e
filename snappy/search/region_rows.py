"""Regions of result pages: their stored rows, their scoring weights (cached), the scores a query gives them.

The index stores, for every region, the patches it overlaps and the intersection areas
(``patch_idx``, ``patch_inter``; computed once at index time). What scoring needs beyond that does
not depend on the query either: the normalised weights of each method (``iou``: intersection over
union with each patch, divided by the region's total; :func:`snappy.regions.propagation.entry_weights`). :class:`RegionStore` fetches the regions of
result pages in one read per query batch, computes those weights for all of them at once (flat
arrays, no per-page sparse matrices), and keeps them in an LRU cache, so a page seen again costs
one gather and one segment sum: ``score[r] = sum_j w[j] * s[idx[j]]`` over region ``r``'s entries.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from snappy.regions.blocks import PageLevels, select_level
from snappy.patches.grid import PatchGrid
from snappy.regions.propagation import METHODS, RegionOverlap, entry_weights
from snappy.regions.region import box_areas

REGION_COLUMNS = ["region_id", "page_id", "region_index", "bbox", "bbox_norm", "text", "confidence", "level",
                  "parent", "area", "patch_idx", "patch_inter"]
RESULT_COLUMNS = ("region_id", "bbox", "bbox_norm", "text", "confidence", "level")


@dataclass
class PageRegions:
    """One page's regions (rows in reading order: lines, then blocks) and their per-method weights
    over its patches."""

    rows: pa.Table  # RESULT_COLUMNS, one row per region
    indptr: np.ndarray  # [R + 1] int64: region r's entries are [indptr[r], indptr[r+1])
    patch: np.ndarray  # int32 patch index per entry
    weights: dict[str, np.ndarray]  # method -> float32 weight per entry (rows sum to 1; "max": unused)
    levels: np.ndarray | None = None  # [R] object: "line"/"word"/"block"
    parent: np.ndarray | None = None  # [R] int64: a line's block row, -1 for none
    area: np.ndarray | None = None  # [R] float64 px^2
    patch_area: float = 0.0  # the page's patch area, px^2 (0: unknown)

    def select(self, region_scores: np.ndarray, threshold, level: str = "line"):
        """The rows to return for these scores (:func:`snappy.regions.blocks.select_level`)."""
        if self._levels is None:
            levels = self.levels if self.levels is not None else np.full(self.n_regions, "line", dtype=object)
            self._levels = PageLevels.build(levels, self.parent, self.area, self.patch_area)
        return select_level(region_scores, self._levels, threshold=threshold, level=level)

    @property
    def n_regions(self) -> int:
        return len(self.indptr) - 1

    def __post_init__(self) -> None:
        counts = np.diff(self.indptr)
        self._has = counts > 0
        self._all = bool(self._has.all())
        self._starts = np.minimum(self.indptr[:-1], max(len(self.patch) - 1, 0))
        self._levels = None  # PageLevels, built at the first selection

    def scores(self, patch_scores: np.ndarray, method: str = "iou") -> np.ndarray:
        """``[R]`` region scores from the page's ``[P]`` patch scores; NaN for a region over no patch."""
        if len(self.patch) == 0:
            return np.full(self.n_regions, np.nan, np.float32)
        vals = patch_scores[self.patch]
        if method == "max":
            red = np.maximum.reduceat(vals, self._starts)
        else:
            red = np.add.reduceat(vals * self.weights[method], self._starts)
        if self._all:
            return red
        out = np.full(self.n_regions, np.nan, np.float32)
        out[self._has] = red[self._has]
        return out


def _median(areas: np.ndarray) -> float:
    return float(np.median(areas)) if len(areas) else 0.0


def _patch_areas(grid: PatchGrid) -> np.ndarray:
    return box_areas(grid.boxes(), np.float32)


def build_page_regions(table: pa.Table, grids: dict[str, PatchGrid]) -> dict[str, PageRegions]:
    """PageRegions of every page in ``table`` (REGION_COLUMNS rows of any number of pages),
    with the weights of every method computed in one vectorised pass over all their entries."""
    if table.num_rows == 0:
        return {}
    table = table.sort_by([("page_id", "ascending"), ("region_index", "ascending")])
    idx_col = table.column("patch_idx").combine_chunks()
    inter_col = table.column("patch_inter").combine_chunks()
    idx_col = pc.fill_null(idx_col, pa.scalar([], idx_col.type)) if idx_col.null_count else idx_col
    inter_col = pc.fill_null(inter_col, pa.scalar([], inter_col.type)) if inter_col.null_count else inter_col
    off = idx_col.offsets.to_numpy()
    indptr = (off - off[0]).astype(np.int64)  # over all regions of all pages
    patch = idx_col.flatten().to_numpy(zero_copy_only=False).astype(np.int32)
    inter = inter_col.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    if len(patch) != len(inter):
        raise ValueError("stored region overlaps are inconsistent: patch_idx and patch_inter lengths differ")
    region_area = table.column("area").to_numpy(zero_copy_only=False).astype(np.float64)
    pids = np.asarray(table.column("page_id").to_pylist(), dtype=object)
    page_starts = np.flatnonzero(np.r_[True, pids[1:] != pids[:-1]])
    page_ends = np.r_[page_starts[1:], len(pids)]
    row_of_entry = np.repeat(np.arange(len(pids)), np.diff(indptr))
    # each entry's patch area, from its page's grid (grids shared by pages of one size are computed once)
    patch_area = np.empty(len(patch), np.float64)
    areas_cache: dict[int, np.ndarray] = {}
    for a, b in zip(page_starts, page_ends):
        grid = grids[pids[a]]
        areas = areas_cache.get(id(grid))
        if areas is None:
            areas = areas_cache[id(grid)] = _patch_areas(grid)
        e0, e1 = indptr[a], indptr[b]
        if e1 > e0 and patch[e0:e1].max() >= len(areas):
            raise ValueError(f"stored region overlap of page {pids[a]} refers to patch {patch[e0:e1].max()} but "
                             f"its grid has {len(areas)}")
        patch_area[e0:e1] = areas[patch[e0:e1]]
    weights = {method: entry_weights(row_of_entry, inter, region_area[row_of_entry], patch_area, len(pids), method)
               for method in ("iou", "ior", "mean")}
    rows = table.select(list(RESULT_COLUMNS))
    levels = np.asarray(table.column("level").to_pylist(), dtype=object)
    parent = (pc.fill_null(table.column("parent").cast(pa.int64()), -1).to_numpy(zero_copy_only=False)
              if "parent" in table.schema.names else np.full(len(pids), -1, np.int64))
    out = {}
    for a, b in zip(page_starts, page_ends):
        e0 = indptr[a]
        out[str(pids[a])] = PageRegions(rows.slice(a, b - a), indptr[a:b + 1] - e0, patch[e0:indptr[b]],
                                        {m: w[e0:indptr[b]] for m, w in weights.items()},
                                        levels[a:b], parent[a:b], region_area[a:b],
                                        _median(areas_cache[id(grids[pids[a]])]))
    return out


class RegionStore:
    """The regions of one snapshot's pages, fetched on demand and kept in an LRU cache."""

    def __init__(self, read_regions, cache_pages: int = 4096):
        """``read_regions(page_ids) -> pa.Table`` of live REGION_COLUMNS rows of those pages."""
        self._read = read_regions
        self.cache_pages = cache_pages
        self._cache: OrderedDict[str, PageRegions] = OrderedDict()

    def get(self, page_ids: Sequence[str], grids: dict[str, PatchGrid]) -> dict[str, PageRegions]:
        """Regions of these pages (pages without regions are absent from the result)."""
        out, missing = {}, []
        for p in dict.fromkeys(page_ids):
            hit = self._cache.get(p)
            if hit is not None:
                self._cache.move_to_end(p)
                out[p] = hit
            else:
                missing.append(p)
        if missing:
            fetched = build_page_regions(self._read(missing), grids)
            empty = PageRegions(pa.table({c: [] for c in RESULT_COLUMNS}), np.zeros(1, np.int64),
                                np.zeros(0, np.int32), {m: np.zeros(0, np.float32) for m in METHODS})
            for p in missing:
                pr = fetched.get(p, empty)
                self._cache[p] = pr
                if pr.n_regions:
                    out[p] = pr
            while len(self._cache) > self.cache_pages:
                self._cache.popitem(last=False)
        return out


def overlap_from_table(regions: pa.Table, grid: PatchGrid) -> RegionOverlap:
    """The page's RegionOverlap (the propagation module's sparse form) from its stored region rows."""
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
    region_area = regions.column("area").to_numpy(zero_copy_only=False).astype(np.float32)
    return RegionOverlap(inter, region_area, _patch_areas(grid))
