"""A weight-free lexical encoder on a ColQwen-like patch grid.

Each page patch gets a hashed bag of the OCR word pieces it overlaps (weighted by the share
of each word's box inside the patch, L2-normalised); each query token is hashed the same way.
MaxSim between them is a spatial lexical match: it makes offline runs meaningful and is the
baseline a text-only system would give. Hashing is count-sketch style: every piece sets
``hashes`` signed coordinates, so two different pieces have a near-zero dot product.

Page text and query text go through one normalisation, :func:`text_pieces` (NFC, words =
runs of letters/digits, then :func:`normalize_piece`: case folded, accents stripped, a plural
``s`` folded). Stop words differ only in weight: pages keep them at ``STOPWORD_WEIGHT`` (content
words still dominate a patch's vector, but a form label such as "TO:" is findable), queries drop
them unless nothing else is left (:func:`query_pieces`). A query with no word at all is refused
(:class:`snappy.errors.QueryError`), never answered with a flat map.

The grid is ColQwen's: :func:`snappy.patches.geometry.qwen_grid` with factor ``patch_px``.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from snappy.encoders.base import Encoder, PageEmbedding
from snappy.errors import NO_WORDS, QueryError
from snappy.patches.geometry import qwen_grid
from snappy.patches.grid import PatchGrid
from snappy.regions.propagation import intersection_matrix
from snappy.regions.region import Region, box_areas

# Version of what the encoder computes from the same options; part of ``encoder_id`` so a
# change re-embeds existing indexes. v2: stop words kept on pages at STOPWORD_WEIGHT, words
# split at underscores, case folded, grid from geometry.smart_resize (differs only on pages with
# a side of 14 px or less). Ids without a version are v1.
VERSION = 2
# Weight of a stop word on a page, relative to a content word (1). Low enough that a patch
# holding "the revenue of" is still 0.94 cosine to "revenue" (0.58 at weight 1); non-zero so
# "TO:" / "FROM:" can be found (see tests/test_lexical.py).
STOPWORD_WEIGHT = 0.25

_WORD = re.compile(r"[^\W_]+")  # letters and digits; "_" and punctuation separate words
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
    version: int = VERSION  # the only one this code computes; older ids parse to it (and re-embed)

    def __post_init__(self) -> None:
        if self.version != VERSION:
            raise ValueError(f"lexical encoder version {self.version} is not available (this snappy computes "
                             f"v{VERSION}); re-index with the current encoder")


def normalize_piece(word: str) -> str:
    """Case folded, accents stripped, a plural 's' folded (documents -> document)."""
    w = unicodedata.normalize("NFKD", word.casefold())
    w = "".join(c for c in w if not unicodedata.combining(c))
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    return w


def text_words(text: str) -> list[tuple[str, int, int]]:
    """``(piece, start, end)`` for each word of ``text``: the one normalisation of page and query text.

    Offsets are into ``unicodedata.normalize("NFC", text)`` (the same length as ``text`` unless it
    held decomposed accents). A word is a run of letters/digits; its piece is
    :func:`normalize_piece` of it. Numbers stay as written ("1,000" is "1" and "000").
    """
    text = unicodedata.normalize("NFC", text)
    out = []
    for m in _WORD.finditer(text):
        piece = normalize_piece(m.group())
        if piece:
            out.append((piece, m.start(), m.end()))
    return out


def text_pieces(text: str) -> list[str]:
    """Normalised words of ``text``, stop words included (see :func:`text_words`)."""
    return [p for p, _, _ in text_words(text)]


def query_pieces(text: str) -> list[str]:
    """A query's pieces: its content words, or its stop words when it has nothing else ("TO:")."""
    words = text_pieces(text)
    return [w for w in words if w not in STOPWORDS] or words


def piece_weights(pieces: Sequence[str]) -> np.ndarray:
    """Page-side weight of each piece: 1, or ``STOPWORD_WEIGHT`` for a stop word."""
    return np.array([STOPWORD_WEIGHT if p in STOPWORDS else 1.0 for p in pieces], dtype=np.float64)


def qwen_like_grid(page_size: tuple[int, int], opts: LexicalOptions) -> PatchGrid:
    """The ColQwen grid (:func:`snappy.patches.geometry.qwen_grid`) for factor ``patch_px`` and the token caps."""
    f = opts.patch_px
    return qwen_grid(page_size, min_pixels=opts.min_num_visual_tokens * f * f,
                     max_pixels=opts.max_num_visual_tokens * f * f, patch_size=f, merge_size=1, family="lexical")


class LexicalEncoder(Encoder):
    needs_regions = True
    loads_model = False
    needs_pixels = False  # words and their boxes, on a grid sized from the page

    def __init__(self, options: LexicalOptions | None = None):
        self.options = options or LexicalOptions()
        o = self.options
        self.dim = o.dim
        self.encoder_id = (f"lexical:d{o.dim}:p{o.patch_px}:t{o.max_num_visual_tokens}:h{o.hashes}:s{o.seed}"
                           f":v{o.version}")

    # -- hashing
    def pieces(self, text: str) -> list[str]:
        """A query's pieces (:func:`query_pieces`)."""
        return query_pieces(text)

    def _hash_rows(self, pieces: Sequence[str]) -> np.ndarray:
        """``[n, dim]`` unit vectors, one per piece."""
        o = self.options
        uniq, inverse = np.unique(np.asarray(pieces, dtype=object).astype(str), return_inverse=True)
        h = o.hashes
        digests = np.frombuffer(b"".join(hashlib.blake2b(f"{o.seed}:{piece}".encode(), digest_size=3 * h).digest()
                                         for piece in uniq), np.uint8).reshape(len(uniq), 3 * h)
        idx = digests[:, : 2 * h].copy().view("<u2") % o.dim  # [U, h]: one hash per unique piece
        sign = np.where(digests[:, 2 * h:] & 1, 1.0, -1.0)  # [U, h]
        rows = np.zeros((len(uniq), o.dim), dtype=np.float32)
        np.add.at(rows, (np.repeat(np.arange(len(uniq)), h), idx.ravel()), sign.ravel())
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return rows[inverse.reshape(-1)]

    # -- Encoder API
    def grid_for(self, page_size: tuple[int, int]) -> PatchGrid:
        return qwen_like_grid(page_size, self.options)

    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        """``[pieces, dim]`` unit rows per query; QueryError for a query without a word."""
        out = []
        for text in texts:
            pieces = self.pieces(text)
            if not pieces:
                raise QueryError(NO_WORDS)
            out.append(self._hash_rows(pieces))
        return out

    def query_prefix(self) -> None:
        """None: a lexical query is its words alone."""
        return None

    def query_tokens(self, text: str) -> list[str]:
        return list(self.pieces(text))  # one vector per piece, in order

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
        inter = intersection_matrix(boxes, grid.boxes())  # [W, P] word-patch overlap areas
        # share of each word inside each patch, times the word's weight (stop words count less)
        share = inter.multiply((piece_weights(pieces) / np.maximum(box_areas(boxes), 1e-6))[:, None]).tocsr()
        vecs = np.asarray(share.T @ self._hash_rows(pieces))  # [P, dim]
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs = np.where(norms > 0, vecs / np.maximum(norms, 1e-12), 0.0)
        return PageEmbedding(vecs.astype(np.float16), grid)


def word_boxes(regions: Sequence[Region]) -> tuple[np.ndarray, list[str]]:
    """Split each region into word boxes (x-span proportional to character offsets, full height)
    and their pieces (:func:`text_words`, the normalisation queries get)."""
    boxes, pieces = [], []
    for r in regions:
        if not r.text:
            continue
        x0, y0, x1, y1 = r.bbox
        width, n = x1 - x0, max(len(unicodedata.normalize("NFC", r.text)), 1)
        for piece, a, b in text_words(r.text):
            boxes.append((x0 + width * a / n, y0, x0 + width * b / n, y1))
            pieces.append(piece)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), pieces
