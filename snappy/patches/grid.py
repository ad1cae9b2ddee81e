"""PatchGrid: which page-pixel rectangle each patch token of a model covers.

A grid is a sequence of blocks in token order. Each block is a ``rows x cols``
lattice (row-major) laid over one rectangle of the page. ColQwen and ColPali have
one block over the whole page; Idefics3-style models have one block per tile plus
a global block over the whole page. The per-family constructors live in
``snappy.patches.geometry``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class GridBlock:
    rows: int
    cols: int
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def n_tokens(self) -> int:
        return self.rows * self.cols

    def boxes(self) -> np.ndarray:
        """``[rows*cols, 4]`` boxes, row-major (token k is row k // cols, col k % cols)."""
        xs = np.linspace(self.x0, self.x1, self.cols + 1)
        ys = np.linspace(self.y0, self.y1, self.rows + 1)
        x0, y0 = np.meshgrid(xs[:-1], ys[:-1])  # [rows, cols]
        x1, y1 = np.meshgrid(xs[1:], ys[1:])
        return np.stack([x0, y0, x1, y1], axis=-1).reshape(-1, 4)


@dataclass(frozen=True)
class PatchGrid:
    """Token geometry of one page for one model family.

    ``page_size`` is ``(width, height)`` of the page image given to the model, in pixels;
    ``model_size`` is ``(width, height)`` of the image after the processor's resize.
    """

    family: str
    page_size: tuple[int, int]
    blocks: tuple[GridBlock, ...]
    model_size: tuple[int, int] | None = None

    @property
    def n_tokens(self) -> int:
        return sum(b.n_tokens for b in self.blocks)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the first block (the whole-page block for single-block grids)."""
        return (self.blocks[0].rows, self.blocks[0].cols)

    def boxes(self) -> np.ndarray:
        """``[n_tokens, 4]`` float64 token boxes in page pixels, in token order."""
        return np.concatenate([b.boxes() for b in self.blocks], axis=0)

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "page_size": list(self.page_size),
            "model_size": list(self.model_size) if self.model_size else None,
            "blocks": [asdict(b) for b in self.blocks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "PatchGrid":
        return cls(
            family=d["family"],
            page_size=tuple(d["page_size"]),
            blocks=tuple(GridBlock(**b) for b in d["blocks"]),
            model_size=tuple(d["model_size"]) if d.get("model_size") else None,
        )

    @classmethod
    def from_json(cls, s: str) -> "PatchGrid":
        return cls.from_dict(json.loads(s))

    @classmethod
    def uniform(cls, family: str, page_size: tuple[int, int], rows: int, cols: int,
                model_size: tuple[int, int] | None = None) -> "PatchGrid":
        """One ``rows x cols`` block stretched over the whole page."""
        w, h = page_size
        return cls(family, (int(w), int(h)), (GridBlock(rows, cols, 0.0, 0.0, float(w), float(h)),), model_size)
