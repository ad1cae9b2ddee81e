"""What a query returns: ranked pages, each with its selected regions (plain dicts for JSON/HTTP)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from snappy.patches.grid import PatchGrid


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
    peak: float = 0.0  # how far the best region stands out: (best - mean) / std of the region scores
    reason: str | None = None  # why no region was selected ("flat": no evidence on this page), else None

    def to_dict(self, with_patch_scores: bool = False) -> dict:
        d = {"rank": self.rank, "doc_id": self.doc_id, "uri": self.uri, "page_id": self.page_id,
             "page_number": int(self.page_number), "score": float(self.score), "width": int(self.width),
             "height": int(self.height), "peak": round(float(self.peak), 4), "reason": self.reason,
             "regions": [r.to_dict() for r in self.regions]}
        if with_patch_scores:
            d["patch_scores"] = [float(v) for v in self.patch_scores]
            d["grid"] = self.grid.to_dict()
        return d


# Why a query has no result pages (``PageResults.reason``).
NO_PAGES = "the index has no pages"
NO_MATCH = "every page scores 0 or less: no patch of any page is similar to the query"


class PageResults(list):
    """One query's result pages, best first: only pages that match it, so possibly fewer than asked for.
    ``reason`` says why there are none (None when there are)."""

    def __init__(self, pages=(), reason: str | None = None):
        super().__init__(pages)
        self.reason = None if self else reason


def no_results_message(reason: str | None) -> str:
    """What a client is told for an empty result (the CLI prints it; the service sends it as a header)."""
    return f"no page matches this query ({reason or NO_MATCH})"


def merge_pages(shard_pages: list[list[dict]], top_pages: int) -> list[dict]:
    """The best ``top_pages`` of several shards' result pages (``PageResult.to_dict`` dicts), ranked
    1..k by score, ties by page id: the same order a single searcher over all pages gives."""
    pages = [p for part in shard_pages for p in part]
    pages.sort(key=lambda p: (-p["score"], p["page_id"]))
    return [{**p, "rank": r} for r, p in enumerate(pages[:top_pages], start=1)]
