"""OCR regions: one box of text on a page, in page pixels (top-left origin)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import numpy as np

Level = Literal["word", "line", "block"]
LEVELS: tuple[str, ...] = ("word", "line", "block")
SOURCES: tuple[str, ...] = ("ocr", "pdf")  # where a region's text comes from: an OCR engine, the PDF text layer


@dataclass(frozen=True)
class Region:
    """A text region on a page.

    ``bbox`` is ``[x0, y0, x1, y1]`` in pixels of the rendered page (top-left origin,
    x to the right, y down); ``page_size`` is that page's ``(width, height)`` in pixels,
    so ``bbox_norm`` is the same box divided by the page size.
    """

    bbox: tuple[float, float, float, float]
    page_size: tuple[int, int]
    text: str = ""
    confidence: float = 1.0
    level: Level = "line"
    polygon: tuple[tuple[float, float], ...] | None = field(default=None, compare=False)
    source: str = "ocr"  # "ocr" or "pdf" (the text layer); a block: "pdf" only if all its lines are

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = (float(v) for v in self.bbox)
        w, h = self.page_size
        if not (np.isfinite([x0, y0, x1, y1]).all() and x0 <= x1 and y0 <= y1):
            raise ValueError(f"invalid region box {self.bbox!r}: need x0<=x1 and y0<=y1")
        if w <= 0 or h <= 0:
            raise ValueError(f"invalid page size {self.page_size!r}")
        if self.level not in LEVELS:
            raise ValueError(f"unknown region level {self.level!r}; expected one of {LEVELS}")
        if self.source not in SOURCES:
            raise ValueError(f"unknown region source {self.source!r}; expected one of {SOURCES}")
        # Clip to the page: engines sometimes return boxes a pixel outside it.
        clipped = (min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h))
        object.__setattr__(self, "bbox", clipped)
        object.__setattr__(self, "page_size", (int(w), int(h)))

    @property
    def bbox_norm(self) -> tuple[float, float, float, float]:
        w, h = self.page_size
        x0, y0, x1, y1 = self.bbox
        return (x0 / w, y0 / h, x1 / w, y1 / h)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.bbox
        return (x1 - x0) * (y1 - y0)

    @classmethod
    def from_polygon(
        cls,
        polygon: Sequence[Sequence[float]],
        page_size: tuple[int, int],
        text: str = "",
        confidence: float = 1.0,
        level: Level = "line",
    ) -> "Region":
        """Region whose bbox is the axis-aligned hull of a (4-point) polygon."""
        pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        bbox = (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
        poly = tuple((float(x), float(y)) for x, y in pts)
        return cls(bbox=bbox, page_size=page_size, text=text, confidence=float(confidence), level=level, polygon=poly)

    def to_dict(self) -> dict:
        """JSON-ready fields; ``Region.from_dict`` reads them back."""
        return {
            "bbox": list(self.bbox),
            "page_size": list(self.page_size),
            "text": self.text,
            "confidence": self.confidence,
            "level": self.level,
            "polygon": [list(p) for p in self.polygon] if self.polygon else None,
            "source": self.source,
        }

    def moved(self, dx: float, dy: float, page_size: tuple[int, int]) -> "Region":
        """This region, found on a crop whose top-left corner is at (dx, dy), in the page's pixels."""
        x0, y0, x1, y1 = self.bbox
        poly = tuple((x + dx, y + dy) for x, y in self.polygon) if self.polygon else None
        return Region(bbox=(x0 + dx, y0 + dy, x1 + dx, y1 + dy), page_size=page_size, text=self.text,
                      confidence=self.confidence, level=self.level, polygon=poly, source=self.source)

    @classmethod
    def from_dict(cls, d: dict) -> "Region":
        poly = tuple(tuple(p) for p in d["polygon"]) if d.get("polygon") else None
        return cls(bbox=tuple(d["bbox"]), page_size=tuple(d["page_size"]), text=d.get("text", ""),
                   confidence=float(d.get("confidence", 1.0)), level=d.get("level", "line"), polygon=poly,
                   source=d.get("source") or "ocr")


def boxes_array(regions: Iterable[Region]) -> np.ndarray:
    """``[R, 4]`` float64 array of region boxes in page pixels."""
    boxes = [r.bbox for r in regions]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def box_areas(boxes: np.ndarray | Sequence[Sequence[float]], dtype: type = np.float64) -> np.ndarray:
    """``[N]`` areas (px^2) of ``[N, 4]`` ``[x0, y0, x1, y1]`` boxes, as ``dtype``.

    The one place box area is computed (encoders, propagation); boxes are taken as given
    (an inverted box gives a negative area; validate where boxes enter).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).astype(dtype, copy=False)
