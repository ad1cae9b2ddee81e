"""Result overlays: the page with the query's patch heat map blended in and the selected regions drawn."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from snappy.grid import PatchGrid

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
