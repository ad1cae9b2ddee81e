"""Exact patch geometry of ColPali-family models: which page rectangle each image token covers.

Each function reproduces the resize arithmetic of the model's image processor, using the
processor's own helpers where transformers exposes them, and returns a ``PatchGrid`` whose
blocks are in the order the image tokens appear in ``input_ids``:

* Qwen2-VL family (ColQwen2, ColQwen2.5, ColQwen3): ``smart_resize`` to multiples of
  ``patch_size * merge_size`` within ``[min_pixels, max_pixels]``, a plain resize (no padding,
  so x and y scale slightly differently), then one token per ``factor x factor`` cell, row by
  row: one block over the whole page.
* PaliGemma (ColPali): the page is stretched to the SigLIP input (448x448): one ``n x n`` block.
* Idefics3 family (ColIdefics3, ColSmol, ColModernVBert): resize the longest edge, stretch up to
  whole tiles, split into ``rows x cols`` tiles (row-major, each ``n x n`` tokens over its page
  rectangle), then a global tile (``n x n`` over the whole page). A page that fits in one tile
  is not split and gives only that tile's ``n x n`` tokens.

``grid_for(processor, (w, h))`` picks the family from the processor object.

The Qwen2-VL resize is :func:`smart_resize`, an exact copy of transformers'
``qwen2_vl.image_processing_qwen2_vl.smart_resize`` (tested equal on ~20,000 page sizes): that
module imports torch and torchvision (~5 s), too much for the weight-free lexical encoder,
which takes its grid from :func:`qwen_grid` too, so every Qwen-like grid in snappy has one source.
"""
from __future__ import annotations

import math
from typing import Any

from snappy.patches.grid import GridBlock, PatchGrid

QWEN_FAMILIES = ("colqwen2", "colqwen2.5", "colqwen3")
IDEFICS3_FAMILIES = ("colidefics3", "colsmol", "colmodernvbert")
PALIGEMMA_FAMILIES = ("colpali",)
FAMILIES = QWEN_FAMILIES + PALIGEMMA_FAMILIES + IDEFICS3_FAMILIES


def _page(page_size: tuple[int, int]) -> tuple[int, int]:
    w, h = (int(v) for v in page_size)
    if w <= 0 or h <= 0:
        raise ValueError(f"invalid page size {page_size!r}: width and height must be positive")
    return w, h


# --- Qwen2-VL family -------------------------------------------------------------------------

def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """``(height, width)`` of the model input: transformers' Qwen2-VL ``smart_resize``, line for line.

    Both sides become multiples of ``factor``, the pixel count lands within
    ``[min_pixels, max_pixels]`` and the aspect ratio is kept as closely as possible. Like the
    original it raises ValueError for an aspect ratio over 200 (the model cannot take such a page).
    Keep every expression and its order as in transformers: float rounding decides thin pages.
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen_grid(
    page_size: tuple[int, int],
    *,
    min_pixels: int,
    max_pixels: int,
    patch_size: int = 14,
    merge_size: int = 2,
    family: str = "colqwen2.5",
) -> PatchGrid:
    """Grid of a Qwen2-VL-style processor (:func:`smart_resize`, one token per merged cell)."""
    w, h = _page(page_size)
    factor = patch_size * merge_size
    # smart_resize takes (height, width) and returns (height, width)
    h_new, w_new = smart_resize(h, w, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return PatchGrid.uniform(family, (w, h), rows=h_new // factor, cols=w_new // factor, model_size=(w_new, h_new))


def qwen_params(processor: Any) -> dict:
    """``min_pixels``/``max_pixels``/``patch_size``/``merge_size`` as the processor's resize uses them."""
    ip = processor.image_processor
    size = ip.size
    return {
        "min_pixels": int(size["shortest_edge"]),
        "max_pixels": int(size["longest_edge"]),
        "patch_size": int(ip.patch_size),
        "merge_size": int(ip.merge_size),
    }


# --- PaliGemma (ColPali) ---------------------------------------------------------------------

def paligemma_grid(
    page_size: tuple[int, int], *, n_tokens: int = 1024, image_size: tuple[int, int] = (448, 448),
    family: str = "colpali",
) -> PatchGrid:
    """The page stretched to ``image_size`` (width, height): one square ``n x n`` token block."""
    n = math.isqrt(n_tokens)
    if n * n != n_tokens:
        raise ValueError(f"PaliGemma image_seq_length {n_tokens} is not a square number of patches")
    return PatchGrid.uniform(family, _page(page_size), rows=n, cols=n, model_size=tuple(image_size))


def paligemma_params(processor: Any) -> dict:
    size = processor.image_processor.size
    return {"n_tokens": int(processor.image_seq_length), "image_size": (int(size["width"]), int(size["height"]))}


# --- Idefics3 family -------------------------------------------------------------------------

def idefics3_resized_size(
    page_size: tuple[int, int], *, longest_edge: int | None, tile: int, do_resize: bool = True,
) -> tuple[int, int]:
    """``(width, height)`` of the image that is cut into tiles (a multiple of ``tile`` both ways).

    Mirrors ``Idefics3ImageProcessor._preprocess``: ``resize`` (longest edge, then below the
    4096 px cap) followed by ``resize_for_vision_encoder`` (round up to whole tiles).
    """
    from snappy._compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers.models.idefics3 import image_processing_idefics3 as ip_mod

    w, h = _page(page_size)
    if do_resize and longest_edge:
        h, w = ip_mod._resize_output_size_rescale_to_max_len(h, w, max_len=longest_edge)
        h, w = ip_mod._resize_output_size_scale_below_upper_bound(h, w, max_len=ip_mod.MAX_IMAGE_SIZE)
    # resize_for_vision_encoder (same expression order; the second side uses the rounded first)
    aspect_ratio = w / h
    if w >= h:
        w = math.ceil(w / tile) * tile
        h = int(w / aspect_ratio)
        h = math.ceil(h / tile) * tile
    else:
        h = math.ceil(h / tile) * tile
        w = int(h * aspect_ratio)
        w = math.ceil(w / tile) * tile
    return w, h


def idefics3_tiles(
    page_size: tuple[int, int], *, longest_edge: int | None, tile: int, do_resize: bool = True,
) -> tuple[int, int]:
    """``(rows, cols)`` of local tiles as the processor's ``return_row_col_info`` gives them
    (``(0, 0)`` when the page fits in one tile and is not split)."""
    rw, rh = idefics3_resized_size(page_size, longest_edge=longest_edge, tile=tile, do_resize=do_resize)
    if rw > tile or rh > tile:
        return math.ceil(rh / tile), math.ceil(rw / tile)
    return 0, 0


def idefics3_grid(
    page_size: tuple[int, int],
    *,
    longest_edge: int | None,
    tile: int,
    tokens_per_tile: int,
    do_image_splitting: bool = True,
    do_resize: bool = True,
    family: str = "colidefics3",
) -> PatchGrid:
    """Tiles (row-major, ``n x n`` tokens each) followed by the global tile over the whole page."""
    w, h = _page(page_size)
    n = math.isqrt(tokens_per_tile)
    if n * n != tokens_per_tile:
        raise ValueError(f"image_seq_len {tokens_per_tile} is not a square number of tokens per tile")
    if not do_image_splitting:  # the page is stretched to one tile
        return PatchGrid.uniform(family, (w, h), n, n, model_size=(tile, tile))
    rows, cols = idefics3_tiles((w, h), longest_edge=longest_edge, tile=tile, do_resize=do_resize)
    if rows == 0:  # not split: the single tile is the whole page
        return PatchGrid.uniform(family, (w, h), n, n, model_size=(tile, tile))
    tw, th = w / cols, h / rows  # page pixels per tile (the resize stretches, no padding)
    blocks = [
        GridBlock(n, n, c * tw, r * th, (c + 1) * tw, (r + 1) * th) for r in range(rows) for c in range(cols)
    ]
    blocks.append(GridBlock(n, n, 0.0, 0.0, float(w), float(h)))  # global tile, last in input_ids
    return PatchGrid(family, (w, h), tuple(blocks), model_size=(cols * tile, rows * tile))


def idefics3_params(processor: Any) -> dict:
    ip = processor.image_processor
    size = ip.size
    return {
        "longest_edge": size.get("longest_edge") if hasattr(size, "get") else size["longest_edge"],
        "tile": int(ip.max_image_size["longest_edge"]),
        "tokens_per_tile": int(processor.image_seq_len),
        "do_image_splitting": bool(ip.do_image_splitting),
        "do_resize": bool(ip.do_resize),
    }


# --- dispatch --------------------------------------------------------------------------------

def geometry_kind(processor: Any) -> str:
    """``"qwen"``, ``"idefics3"`` or ``"paligemma"`` for a (colpali-engine) processor."""
    ip = getattr(processor, "image_processor", None)
    if ip is None:
        raise TypeError(f"{type(processor).__name__} has no image_processor; not a vision processor")
    if hasattr(ip, "merge_size") and hasattr(ip, "patch_size"):
        return "qwen"
    if hasattr(ip, "max_image_size") and hasattr(processor, "image_seq_len"):
        return "idefics3"
    if hasattr(processor, "image_seq_length"):
        return "paligemma"
    raise TypeError(f"unsupported processor {type(processor).__name__} (image processor {type(ip).__name__})")


def family_of_processor(processor: Any) -> str:
    """Best-effort family name from the processor class (ColSmol shares ColIdefics3's class)."""
    name = type(processor).__name__.lower()
    for key, fam in (("colqwen2_5", "colqwen2.5"), ("colqwen2", "colqwen2"), ("colqwen3", "colqwen3"),
                     ("colmodernvbert", "colmodernvbert"), ("colidefics3", "colidefics3"), ("colpali", "colpali")):
        if name.startswith(key):
            return fam
    return {"qwen": "colqwen2.5", "idefics3": "colidefics3", "paligemma": "colpali"}[geometry_kind(processor)]


def grid_for(processor: Any, page_size: tuple[int, int], family: str | None = None) -> PatchGrid:
    """The PatchGrid ``processor`` produces for a page of ``(width, height)`` pixels."""
    kind = geometry_kind(processor)
    family = family or family_of_processor(processor)
    if kind == "qwen":
        return qwen_grid(page_size, family=family, **qwen_params(processor))
    if kind == "idefics3":
        return idefics3_grid(page_size, family=family, **idefics3_params(processor))
    return paligemma_grid(page_size, family=family, **paligemma_params(processor))
