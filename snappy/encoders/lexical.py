"""A weight-free lexical encoder on a ColQwen-like patch grid.

Each page patch gets a hashed bag of the OCR word pieces it overlaps (weighted by the share
of each word's box inside the patch, L2-normalised); each query token is hashed the same way.
MaxSim between them is a spatial lexical match: it makes offline runs meaningful and is the
baseline a text-only system would give. Hashing is count-sketch style: every piece sets
``hashes`` signed coordinates, so two different pieces have a near-zero dot product.
"""
from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from snappy.encoders.base import Encoder, PageEmbedding
from snappy.grid import PatchGrid
from snappy.propagation import intersection_matrix
from snappy.regions import Region

_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how in is it its of on or "
    "that the their there these this to was were what when where which who whom why will with "
    "much many list show give tell".split()
)


@dataclass(frozen=True)
class LexicalOptions:
    dim: int = 128
    patch_px: int = 28  # model-input pixels per token side, as ColQwen2/2.5 (patch 14 x merge 2)
    max_num_visual_tokens: int = 768  # caps the grid like ColQwen2.5's default
    min_num_visual_tokens: int = 4
    hashes: int = 8  # signed coordinates per piece
    seed: int = 0
    drop_stopwords: bool = True


def normalize_piece(word: str) -> str:
    """Lowercase, accents stripped, a plural 's' folded (documents -> document)."""
    w = unicodedata.normalize("NFKD", word.lower())
    w = "".join(c for c in w if not unicodedata.combining(c))
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    return w


def qwen_like_grid(page_size: tuple[int, int], opts: LexicalOptions) -> PatchGrid:
    """Rows x cols as a Qwen2-VL smart_resize would give (factor ``patch_px``), over the whole page."""
    w, h = page_size
    f = opts.patch_px
    max_px, min_px = opts.max_num_visual_tokens * f * f, opts.min_num_visual_tokens * f * f
    hb, wb = max(f, round(h / f) * f), max(f, round(w / f) * f)
    if hb * wb > max_px:
        beta = math.sqrt(h * w / max_px)
        hb, wb = max(f, math.floor(h / beta / f) * f), max(f, math.floor(w / beta / f) * f)
    elif hb * wb < min_px:
        beta = math.sqrt(min_px / (h * w))
        hb, wb = math.ceil(h * beta / f) * f, math.ceil(w * beta / f) * f
    return PatchGrid.uniform("lexical", (w, h), hb // f, wb // f, model_size=(wb, hb))


class LexicalEncoder(Encoder):
    needs_regions = True
    loads_model = False
    needs_pixels = False  # words and their boxes, on a grid sized from the page

    def __init__(self, options: LexicalOptions | None = None):
        self.options = options or LexicalOptions()
        o = self.options
        self.dim = o.dim
        self.encoder_id = f"lexical:d{o.dim}:p{o.patch_px}:t{o.max_num_visual_tokens}:h{o.hashes}:s{o.seed}"

    # -- hashing
    def pieces(self, text: str) -> list[str]:
        words = [normalize_piece(m.group()) for m in _WORD.finditer(text)]
        if not self.options.drop_stopwords:
            return words
        kept = [w for w in words if w not in STOPWORDS]
        return kept or words

    def _hash_rows(self, pieces: Sequence[str]) -> np.ndarray:
        """``[n, dim]`` unit vectors, one per piece."""
        o = self.options
        out = np.zeros((len(pieces), o.dim), dtype=np.float32)
        for i, piece in enumerate(pieces):
            digest = hashlib.blake2b(f"{o.seed}:{piece}".encode(), digest_size=3 * o.hashes).digest()
            idx = np.frombuffer(digest[: 2 * o.hashes], dtype="<u2") % o.dim
            sign = np.where(np.frombuffer(digest[2 * o.hashes:], dtype=np.uint8) & 1, 1.0, -1.0)
            np.add.at(out[i], idx, sign)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    # -- Encoder API
    def grid_for(self, page_size: tuple[int, int]) -> PatchGrid:
        return qwen_like_grid(page_size, self.options)

    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for text in texts:
            pieces = self.pieces(text)
            out.append(self._hash_rows(pieces) if pieces else np.zeros((1, self.dim), np.float32))
        return out

    def embed_pages(self, images: Sequence[Image.Image],
                    regions: Sequence[Sequence[Region]] | None = None) -> list[PageEmbedding]:
        if regions is None or len(regions) != len(images):
            raise ValueError("the lexical encoder needs each page's OCR regions (regions=[...] per image)")
        return [self.embed_regions(img.size, regs) for img, regs in zip(images, regions)]

    def embed_regions(self, page_size: tuple[int, int], regions: Sequence[Region]) -> PageEmbedding:
        grid = self.grid_for(page_size)
        boxes, pieces = word_boxes(regions)
        if not pieces:
            return PageEmbedding(np.zeros((grid.n_tokens, self.dim), np.float16), grid)
        kept = [i for i, p in enumerate(pieces) if not (self.options.drop_stopwords and p in STOPWORDS)]
        boxes, pieces = boxes[kept], [pieces[i] for i in kept]
        inter = intersection_matrix(boxes, grid.boxes())  # [W, P] word-patch overlap areas
        area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
        share = inter.multiply(1.0 / area[:, None]).tocsr()  # share of each word inside each patch
        vecs = np.asarray(share.T @ self._hash_rows(pieces))  # [P, dim]
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs = np.where(norms > 0, vecs / np.maximum(norms, 1e-12), 0.0)
        return PageEmbedding(vecs.astype(np.float16), grid)


def word_boxes(regions: Sequence[Region]) -> tuple[np.ndarray, list[str]]:
    """Split each region into word boxes: x-span proportional to character offsets, full height."""
    boxes, pieces = [], []
    for r in regions:
        text = r.text
        if not text:
            continue
        x0, y0, x1, y1 = r.bbox
        spans = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
        width, n = x1 - x0, max(len(text), 1)
        for word, a, b in spans:
            boxes.append((x0 + width * a / n, y0, x0 + width * b / n, y1))
            pieces.append(normalize_piece(word))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), pieces
