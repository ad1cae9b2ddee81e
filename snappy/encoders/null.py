"""A no-op encoder: zero vectors on a ColQwen-like grid. It measures the pipeline's own overhead."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from snappy.encoders.base import Encoder, PageEmbedding
from snappy.encoders.lexical import LexicalOptions, qwen_like_grid
from snappy.patches.grid import PatchGrid


class NullEncoder(Encoder):
    needs_regions = False
    loads_model = False
    needs_pixels = False

    def __init__(self, dim: int = 128):
        self.dim = dim
        self._opts = LexicalOptions(dim=dim)
        self.encoder_id = f"null:d{dim}"

    def grid_for(self, page_size: tuple[int, int]) -> PatchGrid:
        return qwen_like_grid(page_size, self._opts)

    def embed_pages(self, images, regions=None) -> list[PageEmbedding]:
        return [PageEmbedding(np.zeros((g.n_tokens, self.dim), np.float16), g)
                for g in (self.grid_for(img.size) for img in images)]

    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.zeros((1, self.dim), np.float32) for _ in texts]
