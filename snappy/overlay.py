"""Result overlays: the page with the query's patch heat map blended in and the selected regions
drawn; and box overlays for evaluation (ground truth vs selection vs other regions, with a legend)."""
from __future__ import annotations

import logging
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from snappy.patches.grid import PatchGrid

log = logging.getLogger(__name__)


def heatmap(scores: np.ndarray, grid: PatchGrid, size: tuple[int, int]) -> np.ndarray:
    """``[height, width]`` float32 map of per-patch scores painted over their page rectangles.

    Each grid block is resized (bilinear) onto its rectangle; where blocks overlap (tiles plus a
    global view) the values are averaged. Pixels no block covers are NaN.
    """
    s = np.asarray(scores, dtype=np.float32)
    if s.shape != (grid.n_tokens,):
        raise ValueError(f"got {s.size} patch scores for a grid of {grid.n_tokens} tokens")
    w, h = size
    sx, sy = w / grid.page_size[0], h / grid.page_size[1]  # grid page px -> output px
    total = np.zeros((h, w), np.float32)
    count = np.zeros((h, w), np.float32)
    start = 0
    for b in grid.blocks:  # a handful of blocks per page
        block = s[start:start + b.n_tokens].reshape(b.rows, b.cols)
        start += b.n_tokens
        x0, y0 = int(round(b.x0 * sx)), int(round(b.y0 * sy))
        x1, y1 = min(int(round(b.x1 * sx)), w), min(int(round(b.y1 * sy)), h)
        if x1 <= x0 or y1 <= y0:
            continue
        img = Image.fromarray(block, mode="F").resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)
        total[y0:y1, x0:x1] += np.asarray(img, np.float32)
        count[y0:y1, x0:x1] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def render_overlay(image: Image.Image, patch_scores: np.ndarray, grid: PatchGrid,
                   regions: Sequence[dict | object] = (), alpha: float = 0.45, cmap: str = "jet",
                   max_side: int | None = 1600) -> Image.Image:
    """The page with its patch heat map blended in (``alpha``) and the regions' boxes drawn, ranked.

    ``regions`` are RegionResult objects or dicts with ``bbox`` (page px) and ``score``, best first.
    """
    from matplotlib import colormaps

    page = image.convert("RGB")
    scale = 1.0
    if max_side and max(page.size) > max_side:
        scale = max_side / max(page.size)
        page = page.resize((round(page.width * scale), round(page.height * scale)), Image.Resampling.LANCZOS)
    grid_scale = (page.width / grid.page_size[0], page.height / grid.page_size[1])
    hm = heatmap(patch_scores, grid, page.size)  # [h, w]
    finite = np.isfinite(hm)
    lo, hi = (float(np.nanmin(hm)), float(np.nanmax(hm))) if finite.any() else (0.0, 1.0)
    norm = np.where(finite, (hm - lo) / (hi - lo if hi > lo else 1.0), 0.0)
    colours = (colormaps[cmap](norm)[..., :3] * 255).astype(np.float32)  # [h, w, 3]
    base = np.asarray(page, np.float32)
    a = np.where(finite, alpha, 0.0)[..., None]
    out = Image.fromarray((base * (1 - a) + colours * a).clip(0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 400))
    for rank, r in enumerate(regions, start=1):
        bbox = r["bbox"] if isinstance(r, dict) else r.bbox
        x0, y0, x1, y1 = (float(v) * grid_scale[i % 2] for i, v in enumerate(bbox))
        colour = (255, 0, 0) if rank == 1 else (255, 140, 0)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        draw.text((x0 + width, max(0.0, y0 - 12 - width)), str(rank), fill=colour)
    return out


def overlay_paths(target: str | Path, n: int) -> list[Path]:
    """Where ``n`` overlays go: a folder (``page-1.png`` ...) or ``out.png``, ``out-2.png``, ..."""
    target = Path(target)
    if target.suffix == "" or target.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return [target / f"page-{i}.png" for i in range(1, n + 1)]
    target.parent.mkdir(parents=True, exist_ok=True)
    return [target if i == 1 else target.with_name(f"{target.stem}-{i}{target.suffix}") for i in range(1, n + 1)]


def write_overlays(searcher, results: Sequence, target: str | Path) -> list[Path]:
    """Render and save one overlay per result page (``searcher`` gives the stored page images)."""
    paths = overlay_paths(target, len(results))
    for res, path in zip(results, paths):
        img = searcher.page_image(res.page_id)
        if img.size != (res.width, res.height):  # stored image may be downscaled: the grid is in page px
            img = img.resize((res.width, res.height))
        render_overlay(img, res.patch_scores, res.grid, res.regions).save(path)
        log.info("wrote %s", path)
    return paths


# ---------------------------------------------------------------------- box overlays (evaluation)

GT_COLOUR = (0, 150, 60)  # ground truth
SELECTED_COLOUR = (225, 25, 25)  # the selection
OTHER_COLOUR = (40, 110, 220)  # regions not selected
MIN_OVERLAY_WIDTH = 1200
MAX_OVERLAY_WIDTH = 2400


def font(size: int) -> ImageFont.ImageFont:
    """A scalable font of ``size`` px (Pillow's bundled one; the bitmap default if FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType
        return ImageFont.load_default()


@dataclass
class BoxLayer:
    """Boxes (page px) drawn in one colour; ``width`` is relative (1 = thin)."""

    boxes: Sequence[Sequence[float]]
    colour: tuple[int, int, int]
    label: str
    width: float = 1.0
    fill_alpha: int = 0  # 0..255 tint inside the boxes
    outset: float = 0.0  # drawn this many line widths outside the box (keeps boxes below visible)


@dataclass
class BoxPage:
    page_size: tuple[int, int]  # (w, h) of the page the boxes are in
    layers: list[BoxLayer]
    image: Image.Image | None = None  # None: a white page
    caption: str = ""


def _canvas(page: BoxPage, width: int) -> tuple[Image.Image, float]:
    w, h = page.page_size
    scale = width / max(w, 1)
    size = (width, max(1, round(h * scale)))
    if page.image is None:
        return Image.new("RGB", size, "white"), scale
    return page.image.convert("RGB").resize(size, Image.Resampling.LANCZOS), scale


def _wrap(text: str, fnt: ImageFont.ImageFont, width: int) -> list[str]:
    avg = max(fnt.getlength("abcdefghijklmnopqrstuvwxyz") / 26, 1.0)
    return textwrap.wrap(text, max(10, int(width / avg))) or [""]


def render_box_overlay(pages: Sequence[BoxPage], title: Sequence[str] = (), min_width: int = MIN_OVERLAY_WIDTH,
                       max_width: int = MAX_OVERLAY_WIDTH) -> Image.Image:
    """Pages stacked vertically, each drawn at the full image width (at least ``min_width`` px:
    small pages are upscaled; at most ``max_width``), the layers' boxes drawn in order (later on
    top), under a header with the ``title`` lines and a legend naming every layer's colour."""
    width = max(min_width, min(max_width, max((p.page_size[0] for p in pages), default=min_width)))
    unit = max(2, round(width / 600))  # line width unit
    fs = max(16, round(width / 60))
    f, fb = font(fs), font(round(fs * 1.15))
    pad = fs // 2
    body = []
    for page in pages:
        img, scale = _canvas(page, width)
        if any(layer.fill_alpha for layer in page.layers):
            tint = Image.new("RGBA", img.size, (0, 0, 0, 0))
            td = ImageDraw.Draw(tint)
            for layer in page.layers:
                if layer.fill_alpha:
                    for b in layer.boxes:
                        td.rectangle([v * scale for v in b], fill=(*layer.colour, layer.fill_alpha))
            img = Image.alpha_composite(img.convert("RGBA"), tint).convert("RGB")
        d = ImageDraw.Draw(img)
        for layer in page.layers:
            lw = max(1, round(unit * layer.width))
            o = lw / 2 + layer.outset * lw
            for b in layer.boxes:
                x0, y0, x1, y1 = (float(v) * scale for v in b)
                d.rectangle([x0 - o, y0 - o, x1 + o, y1 + o], outline=layer.colour, width=lw)
        if page.caption:
            cap = Image.new("RGB", (width, fs + 2 * pad), (245, 245, 245))
            ImageDraw.Draw(cap).text((pad, pad), page.caption, fill=(0, 0, 0), font=f)
            body.append(cap)
        body.append(img)
    # header: title lines, then one legend entry per distinct layer label
    lines = [(ln, fb if i == 0 else f) for i, t in enumerate(title)
             for ln in _wrap(t, fb if i == 0 else f, width - 2 * pad)]
    legend = list(dict.fromkeys((layer.label, layer.colour, layer.width, layer.fill_alpha)
                                for p in pages for layer in p.layers))
    line_h = round(fs * 1.35)
    head_h = pad + len(lines) * line_h + (line_h + pad if legend else 0) + pad
    head = Image.new("RGB", (width, head_h), "white")
    hd = ImageDraw.Draw(head)
    y = pad
    for ln, fnt in lines:
        hd.text((pad, y), ln, fill=(0, 0, 0), font=fnt)
        y += line_h
    x = pad
    for label, colour, lw, alpha in legend:
        sw = round(fs * 1.6)
        fill = tuple(round(255 - (255 - c) * alpha / 255) for c in colour) if alpha else None
        hd.rectangle([x, y + 2, x + sw, y + fs], outline=colour, fill=fill, width=max(1, round(unit * lw)))
        x += sw + pad
        hd.text((x, y), label, fill=(0, 0, 0), font=f)
        x += round(f.getlength(label)) + 2 * pad
    parts = [head, *body]
    out = Image.new("RGB", (width, sum(p.height for p in parts)), "white")
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height
    return out

