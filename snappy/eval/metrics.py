"""Region-grounding metrics: the Snappy paper's (recall-only) figures and precision-aware ones.

All boxes are ``[x0, y0, x1, y1]`` page pixels (top-left origin). Areas of unions are exact:
the plane is cut along every box edge (coordinate compression) and the resulting cells are
tested against the boxes in one vectorised comparison, so no page size or raster scale is
needed and overlapping boxes are never double-counted.

Paper metric (arXiv 2512.02660, reproduced exactly on its per-sample runs): for each
ground-truth box, the best IoU against any *single* selected region; a sample's value is the
mean over its ground-truth boxes (0 for a box when nothing is selected); ``hit@t`` is the share
of non-failed samples whose value is ``>= t``; mean IoU is the mean of the sample values.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

from snappy.regions import propagation
from snappy.regions.region import box_areas

HIT_THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.7)
DEFAULT_OVERLAP = 0.5  # region-level criterion: share of a region's area inside the GT union


def as_boxes(boxes: Sequence | np.ndarray | None) -> np.ndarray:
    """``[N, 4]`` float64 boxes (an empty input gives ``[0, 4]``)."""
    if boxes is None:
        return np.zeros((0, 4), dtype=np.float64)
    if isinstance(boxes, np.ndarray) and boxes.dtype == np.float64 and boxes.ndim == 2 and boxes.shape[1] == 4:
        return boxes  # arrays are trusted (loaders validate lists); keeps hot loops cheap
    a = np.asarray(boxes, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    a = a.reshape(-1, 4)
    if not np.isfinite(a).all() or (a[:, 2] < a[:, 0]).any() or (a[:, 3] < a[:, 1]).any():
        raise ValueError(f"invalid boxes (need finite x0<=x1, y0<=y1): {a.tolist()[:4]}")
    return a


def intersection_areas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, M]`` intersection areas of two (validated) box sets."""
    return propagation.intersection_areas(as_boxes(a), as_boxes(b))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, M]`` IoU of two box sets (0 where the union is empty)."""
    a, b = as_boxes(a), as_boxes(b)
    inter = intersection_areas(a, b)
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def best_iou_per_gt(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``[G]``: per ground-truth box, the best IoU against any single predicted box."""
    gt, pred = as_boxes(gt), as_boxes(pred)
    if len(pred) == 0:
        return np.zeros(len(gt), dtype=np.float64)
    return iou_matrix(gt, pred).max(axis=1)


def paper_sample_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """The paper's per-sample value: mean over GT boxes of the best single-region IoU."""
    per = best_iou_per_gt(gt, pred)
    return float(per.mean()) if per.size else float("nan")


# ------------------------------------------------------------------ exact union areas


def _cells(*box_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cells of the grid cut along all box edges: centres ``cx [X]``, ``cy [Y]``, widths, heights."""
    allb = np.concatenate([as_boxes(b) for b in box_sets], axis=0)
    xs = np.unique(allb[:, [0, 2]])
    ys = np.unique(allb[:, [1, 3]])
    return (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2, np.diff(xs), np.diff(ys)


def _cover(boxes: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """``[Y, X]`` bool: cells whose centre lies inside any of ``boxes``."""
    b = as_boxes(boxes)
    if len(b) == 0:
        return np.zeros((len(cy), len(cx)), dtype=bool)
    inx = (cx[None, :] > b[:, 0:1]) & (cx[None, :] < b[:, 2:3])  # [K, X]
    iny = (cy[None, :] > b[:, 1:2]) & (cy[None, :] < b[:, 3:4])  # [K, Y]
    # any box covers cell (y, x): boolean matmul over boxes
    return (iny.T.astype(np.int32) @ inx.astype(np.int32)) > 0  # [Y, X]


@dataclass(frozen=True)
class AreaOverlap:
    selected: float  # area of the union of selected boxes
    gt: float  # area of the union of ground-truth boxes
    inter: float  # area of (selected union) ∩ (GT union)

    @property
    def union(self) -> float:
        return self.selected + self.gt - self.inter


def area_overlap(selected: np.ndarray, gt: np.ndarray) -> AreaOverlap:
    """Exact areas of the selection union, the GT union and their intersection."""
    selected, gt = as_boxes(selected), as_boxes(gt)
    if len(selected) == 0 and len(gt) == 0:
        return AreaOverlap(0.0, 0.0, 0.0)
    cx, cy, w, h = _cells(selected, gt)
    cell_area = h[:, None] * w[None, :]  # [Y, X]
    s, g = _cover(selected, cx, cy), _cover(gt, cx, cy)
    return AreaOverlap(float(cell_area[s].sum()), float(cell_area[g].sum()), float(cell_area[s & g].sum()))


def coverage(boxes: np.ndarray, by: np.ndarray) -> np.ndarray:
    """``[N]``: share of each box's area covered by the union of ``by`` (exact)."""
    boxes, by = as_boxes(boxes), as_boxes(by)
    out = np.zeros(len(boxes), dtype=np.float64)
    if len(boxes) == 0 or len(by) == 0:
        return out
    cx, cy, w, h = _cells(by)
    xs = np.concatenate([cx - w / 2, [cx[-1] + w[-1] / 2]]) if len(cx) else np.zeros(1)
    ys = np.concatenate([cy - h / 2, [cy[-1] + h[-1] / 2]]) if len(cy) else np.zeros(1)
    cov = _cover(by, cx, cy)  # [Y, X]
    yy, xx = np.nonzero(cov)
    cells = np.stack([xs[xx], ys[yy], xs[xx + 1], ys[yy + 1]], axis=1)  # [C, 4] covered cells
    covered = intersection_areas(boxes, cells).sum(axis=1)  # [N]
    area = box_areas(as_boxes(boxes))
    np.divide(covered, area, out=out, where=area > 0)
    return np.clip(out, 0.0, 1.0)


# ------------------------------------------------------------------ per-page record


@dataclass
class PageScore:
    """All metrics of one selection on one page (or one sample under the paper's protocol)."""

    paper_iou: float  # mean over GT boxes of best single-region IoU
    area_precision: float  # |sel ∩ GT| / |sel| (0 when nothing is selected)
    area_recall: float  # |sel ∩ GT| / |GT|
    union_iou: float  # |sel ∩ GT| / |sel ∪ GT|
    region_precision: float  # share of selected regions that lie (>= overlap) inside the GT union
    region_recall: float | None  # share of relevant page regions that were selected (needs all regions)
    region_f1: float | None
    gt_box_recall: float  # share of GT boxes covered >= overlap by the selection union
    n_selected: int
    n_regions: int | None
    kept_fraction: float | None
    any_box_iou: float  # best single-region IoU over GT boxes ("any box" mode)

    def to_dict(self) -> dict:
        return asdict(self)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def score_page(gt: np.ndarray, selected: np.ndarray, all_regions: np.ndarray | None = None,
               selected_idx: np.ndarray | None = None, overlap: float = DEFAULT_OVERLAP,
               lines: np.ndarray | None = None) -> PageScore:
    """Score a selection against GT boxes.

    ``all_regions`` (the page's OCR boxes) enables recall over regions and the kept fraction;
    ``selected_idx`` says which of them were selected (else they are matched by box).
    A region is relevant when at least ``overlap`` of its area lies inside the GT union.
    The kept fraction counts line equivalents: with ``lines`` (the page's OCR lines, when
    ``all_regions`` are blocks or lines and blocks), the share of lines at least half inside the
    selection; without, the selected share of ``all_regions`` (they are the lines).
    """
    gt, selected = as_boxes(gt), as_boxes(selected)
    per_gt = best_iou_per_gt(gt, selected)
    ao = area_overlap(selected, gt)
    a_prec = ao.inter / ao.selected if ao.selected > 0 else 0.0
    a_rec = ao.inter / ao.gt if ao.gt > 0 else 0.0
    u_iou = ao.inter / ao.union if ao.union > 0 else 0.0
    sel_rel = coverage(selected, gt) >= overlap  # [S]
    r_prec = float(sel_rel.mean()) if len(selected) else 0.0
    gt_cov = coverage(gt, selected) if len(selected) else np.zeros(len(gt))
    gt_rec = float((gt_cov >= overlap).mean()) if len(gt) else 0.0
    r_rec = f1 = kept = None
    n_all = None
    if all_regions is not None:
        all_regions = as_boxes(all_regions)
        n_all = len(all_regions)
        relevant = coverage(all_regions, gt) >= overlap  # [R]
        n_rel = int(relevant.sum())
        if n_rel:
            if selected_idx is None:  # match the selection to the page's regions by box
                sel_set = {tuple(b) for b in selected.tolist()}
                chosen = np.fromiter((tuple(b) in sel_set for b in all_regions.tolist()), bool, n_all)
            else:
                chosen = np.zeros(n_all, dtype=bool)
                chosen[np.asarray(selected_idx, dtype=np.int64)] = True
            r_rec = float((chosen & relevant).sum() / n_rel)
        else:
            r_rec = 0.0
        f1 = _f1(r_prec, r_rec)
        kept = len(selected) / n_all if n_all else 0.0
    if lines is not None:
        lines = as_boxes(lines)
        kept = float((coverage(lines, selected) >= 0.5).mean()) if len(lines) and len(selected) else 0.0
    return PageScore(
        paper_iou=float(per_gt.mean()) if per_gt.size else float("nan"),
        area_precision=a_prec, area_recall=a_rec, union_iou=u_iou,
        region_precision=r_prec, region_recall=r_rec, region_f1=f1, gt_box_recall=gt_rec,
        n_selected=len(selected), n_regions=n_all, kept_fraction=kept,
        any_box_iou=float(per_gt.max()) if per_gt.size else float("nan"),
    )


# ------------------------------------------------------------------ aggregation (paper table)


@dataclass
class PaperSummary:
    n_samples: int
    n_scored: int
    n_failed: int
    mean_iou: float
    hit_rate: dict[str, float]  # "0.25" -> fraction
    n_with_tokens: int
    tokens_selected: int
    tokens_all_ocr: int
    tokens_full_image: int
    token_savings_vs_all_ocr: float | None
    token_savings_vs_full_image: float | None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return d


def hit_key(t: float) -> str:
    return f"{t:g}"


def summarize_paper(values: Iterable[float], failed: Iterable[bool],
                    tokens: Iterable[tuple[int | None, int | None, int | None]] = (),
                    thresholds: Sequence[float] = HIT_THRESHOLDS) -> PaperSummary:
    """The paper's table row from per-sample values (NaN/failed samples are not scored).

    ``tokens``: per sample ``(selected, all_ocr, full_image)``; savings are
    ``1 - sum(selected) / sum(reference)`` over the non-failed samples that have all three.
    """
    v = np.asarray(list(values), dtype=np.float64)
    f = np.asarray(list(failed), dtype=bool)
    if v.shape != f.shape:
        raise ValueError("values and failed flags differ in length")
    ok = ~f & ~np.isnan(v)
    sv = v[ok]
    toks = [t for t, fl in zip(tokens, f) if not fl and t is not None and None not in t]
    sel = sum(int(t[0]) for t in toks)
    all_ocr = sum(int(t[1]) for t in toks)
    full = sum(int(t[2]) for t in toks)
    return PaperSummary(
        n_samples=len(v), n_scored=int(ok.sum()), n_failed=int(f.sum()),
        mean_iou=float(sv.mean()) if sv.size else float("nan"),
        hit_rate={hit_key(t): float((sv >= t).mean()) if sv.size else float("nan") for t in thresholds},
        n_with_tokens=len(toks), tokens_selected=sel, tokens_all_ocr=all_ocr, tokens_full_image=full,
        token_savings_vs_all_ocr=(1 - sel / all_ocr) if all_ocr else None,
        token_savings_vs_full_image=(1 - sel / full) if full else None,
    )


PRECISION_FIELDS = ("area_precision", "area_recall", "union_iou", "region_precision", "region_recall",
                    "region_f1", "gt_box_recall", "kept_fraction", "n_selected")


def mean_fields(scores: Sequence[PageScore], fields: Sequence[str] = PRECISION_FIELDS) -> dict[str, float | None]:
    """Means of the precision-aware fields over pages (None where no page has the field)."""
    out: dict[str, float | None] = {}
    for name in fields:
        vals = [getattr(s, name) for s in scores if getattr(s, name) is not None]
        out[name] = float(np.mean(vals)) if vals else None
    return out
