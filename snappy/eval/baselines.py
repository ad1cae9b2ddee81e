"""Baselines, measured on the same pages and regions as the method.

- ``all_ocr``: every OCR region of the page.
- ``random``: a uniformly random subset of the page's regions of the same size as the method's
  selection (seeded; metrics averaged over ``repeats`` draws).
- ``ceiling``: the best achievable with these OCR regions under the paper's metric: per GT box
  the single region of best IoU (so its paper IoU is the maximum any selection can reach).
- ``oracle``: GT boxes rasterised onto the model's real patch grid (each patch scored by the
  share of its area inside the GT union), then propagated and thresholded exactly like the
  method. The gap between oracle and ceiling is what patch resolution + thresholding cost;
  between method and oracle, what the model's similarity map costs.
"""
from __future__ import annotations

import numpy as np

from snappy.eval.metrics import PageScore, as_boxes, coverage, iou_matrix

BASELINES: tuple[str, ...] = ("all_ocr", "random", "ceiling", "oracle")


def all_ocr_selection(n_regions: int) -> np.ndarray:
    return np.arange(n_regions, dtype=np.int64)


def random_selections(n_regions: int, k: int, repeats: int, rng: np.random.Generator) -> np.ndarray:
    """``[repeats, k]`` independent uniform draws of ``k`` of ``n_regions`` indices (no replacement)."""
    k = min(int(k), int(n_regions))
    if k == 0 or repeats <= 0:
        return np.zeros((max(repeats, 0), 0), dtype=np.int64)
    # argsort of iid uniforms: one random permutation per row, vectorised
    return np.argsort(rng.random((repeats, n_regions)), axis=1)[:, :k].astype(np.int64)


def ceiling_selection(gt: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Per GT box the index of its best-IoU region (deduplicated, GT order)."""
    gt, regions = as_boxes(gt), as_boxes(regions)
    if len(gt) == 0 or len(regions) == 0:
        return np.zeros(0, dtype=np.int64)
    best = iou_matrix(gt, regions).argmax(axis=1)  # [G]
    _, first = np.unique(best, return_index=True)
    return best[np.sort(first)].astype(np.int64)


def oracle_patch_scores(patch_boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``[P]`` float32: share of each patch's area covered by the GT union."""
    return coverage(patch_boxes, gt).astype(np.float32)


def mean_scores(scores: list[PageScore]) -> dict:
    """Field-wise mean of several PageScores (None fields stay None)."""
    if not scores:
        return {}
    out = {}
    for name, v in scores[0].to_dict().items():
        vals = [getattr(s, name) for s in scores]
        out[name] = None if v is None or any(x is None for x in vals) else float(np.nanmean(vals)) if vals else None
    return out
