"""The encoder interface: pages -> patch vectors on a PatchGrid, queries -> token vectors."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from snappy.patches.grid import PatchGrid
from snappy.regions.region import Region


@dataclass
class PageEmbedding:
    vectors: np.ndarray  # [n_tokens, dim] float16, one row per image patch token, in grid order
    grid: PatchGrid

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != self.grid.n_tokens:
            raise ValueError(
                f"embedding has {self.vectors.shape} rows but the grid has {self.grid.n_tokens} tokens"
            )


class Encoder(ABC):
    """Multi-vector page/query encoder.

    ``encoder_id`` names the model and its geometry settings (stored with the index so a
    change of encoder is detectable). ``needs_regions`` is True for encoders that read the
    page's OCR regions instead of (or as well as) its pixels; ``needs_pixels`` is False for
    encoders whose ``embed_pages`` reads only each image's ``.size`` (the pipeline then ships
    them no pixels); ``loads_model`` is False for encoders without weights, cheap to build (the
    pipeline runs them in its tasks instead of an actor pool).
    """

    encoder_id: str
    dim: int
    needs_regions: bool = False
    needs_pixels: bool = True
    loads_model: bool = True

    @abstractmethod
    def embed_pages(
        self, images: Sequence[Image.Image], regions: Sequence[Sequence[Region]] | None = None
    ) -> list[PageEmbedding]:
        """One PageEmbedding per image (vectors float16 ``[n_tokens, dim]``)."""

    @abstractmethod
    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One float32 ``[n_query_tokens, dim]`` array per query."""

    def query_prefix(self) -> np.ndarray | None:
        """The vectors every query carries (``[t, dim]``: its vectors of an empty query; None: none), which
        the candidate stage's calibration starts its pseudo-queries with."""
        return self.embed_queries([""])[0]

    def query_tokens(self, text: str) -> list[str]:
        """A label per row of ``embed_queries([text])[0]`` (for similarity maps); numbered by default."""
        return [f"#{i + 1}" for i in range(len(self.embed_queries([text])[0]))]

    @abstractmethod
    def grid_for(self, page_size: tuple[int, int]) -> PatchGrid:
        """The patch grid this encoder produces for a page of ``(width, height)`` pixels."""
