"""Pre-computed predictions: the Snappy paper's run files and snappy's own per-sample JSONL.

Paper format (the run files released with the Snappy paper, ``<model>.summary.json``)::

    {"token_summary": {...}, "failed_count": N,
     "sample_results": [{sample_id, question, doc_name, category, gt_bboxes, pred_bboxes,
                         tokens_selected, tokens_all_ocr, tokens_full_image, failed,
                         error_message}, ...]}

snappy's per-sample JSONL (written by :mod:`snappy.eval.runner`) carries the same fields per
line plus ``pages``: per evidence page its own GT boxes, the page's regions and the selection,
so it is scored page by page. A paper file has no page split: it is scored as the paper did
(all GT boxes against one selection).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from snappy.eval.datasets import DatasetError, EvalSample, iter_jsonl
from snappy.eval.metrics import (
    DEFAULT_OVERLAP,
    HIT_THRESHOLDS,
    PageScore,
    as_boxes,
    best_iou_per_gt,
    mean_fields,
    score_page,
    summarize_paper,
)

log = logging.getLogger(__name__)


@dataclass
class PredictedSample:
    sample_id: str
    question: str
    doc_name: str
    category: str
    gt_boxes: np.ndarray  # [G, 4]
    pred_boxes: np.ndarray  # [S, 4]
    tokens_selected: int | None
    tokens_all_ocr: int | None
    tokens_full_image: int | None
    failed: bool
    error_message: str | None = None
    multi_page: bool | None = None  # None: unknown (paper files without the dataset)
    pages: list[dict] | None = None  # per-page detail from snappy runs
    mode: str = "all"
    no_words: bool = False  # a question with nothing to search for: neither scored nor failed

    @property
    def tokens(self) -> tuple[int | None, int | None, int | None]:
        return (self.tokens_selected, self.tokens_all_ocr, self.tokens_full_image)


def _opt_int(v) -> int | None:
    return None if v is None else int(v)


def _sample_from_record(rec: dict, where: str) -> PredictedSample:
    try:
        failed = bool(rec.get("failed", False))
        return PredictedSample(
            sample_id=str(rec["sample_id"]), question=str(rec.get("question", "")),
            doc_name=str(rec.get("doc_name", "")), category=str(rec.get("category", "")),
            gt_boxes=as_boxes(rec.get("gt_bboxes")), pred_boxes=as_boxes(rec.get("pred_bboxes")),
            tokens_selected=_opt_int(rec.get("tokens_selected")), tokens_all_ocr=_opt_int(rec.get("tokens_all_ocr")),
            tokens_full_image=_opt_int(rec.get("tokens_full_image")), failed=failed,
            error_message=rec.get("error_message"), multi_page=rec.get("multi_page"), pages=rec.get("pages"),
            mode=rec.get("mode", "all"), no_words=bool(rec.get("no_words", False)),
        )
    except (KeyError, ValueError, TypeError) as e:
        raise DatasetError(where, f"bad prediction record ({type(e).__name__}: {e})") from e


def load_predictions(path: str | Path) -> list[PredictedSample]:
    """Samples of a paper run file (``.json``) or a snappy per-sample JSONL."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DatasetError(str(path), f"cannot read predictions ({e.strerror or e})") from e
    stripped = text.lstrip()
    if path.suffix == ".json" or (stripped.startswith("{") and '"sample_results"' in text[:4096]):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(str(path), f"invalid JSON ({e.msg} at line {e.lineno})") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("sample_results"), list):
            raise DatasetError(str(path), "expected an object with a 'sample_results' list (the paper's run format)")
        out = [_sample_from_record(r, f"{path}: sample_results[{i}]") for i, r in enumerate(doc["sample_results"])]
    else:
        out = [_sample_from_record(rec, f"{path}:{i + 1}") for i, rec in iter_jsonl(text, str(path))]
    if not out:
        raise DatasetError(str(path), "no samples")
    return out


def model_name(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".summary.json", ".json", ".samples.jsonl", ".jsonl"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def attach_dataset(preds: Sequence[PredictedSample], dataset: Sequence[EvalSample]) -> int:
    """Mark single/multi-page from the dataset (joined on sample id); returns how many matched."""
    by_id = {s.sample_id: s for s in dataset}
    n = 0
    for p in preds:
        s = by_id.get(p.sample_id)
        if s is None:
            continue
        if len(s.gt_boxes) != len(p.gt_boxes) or not np.allclose(s.gt_boxes, p.gt_boxes):
            raise DatasetError(p.sample_id, "predictions' gt_bboxes differ from the dataset's for this sample id")
        p.multi_page = s.multi_page
        p.category = p.category or s.category
        n += 1
    return n


# ------------------------------------------------------------------ scoring


def sample_value(p: PredictedSample) -> float:
    """The paper's per-sample value; per evidence page when the record has pages."""
    if p.failed or p.no_words:
        return float("nan")
    if p.pages:
        per = np.concatenate([best_iou_per_gt(pg["gt_bboxes"], pg["pred_bboxes"]) for pg in p.pages])
    else:
        per = best_iou_per_gt(p.gt_boxes, p.pred_boxes)
    if per.size == 0:
        return float("nan")
    return float(per.max() if p.mode == "any" else per.mean())


def page_scores(p: PredictedSample, overlap: float = DEFAULT_OVERLAP) -> list[PageScore]:
    if p.failed or p.no_words:
        return []
    if p.pages:
        return [score_page(pg["gt_bboxes"], pg["pred_bboxes"], pg.get("region_bboxes"), pg.get("pred_idx"), overlap,
                           pg.get("line_bboxes"))
                for pg in p.pages]
    return [score_page(p.gt_boxes, p.pred_boxes, None, None, overlap)]


def evaluate_predictions(preds: Sequence[PredictedSample], overlap: float = DEFAULT_OVERLAP,
                         thresholds: Sequence[float] = HIT_THRESHOLDS) -> dict:
    """Paper table row + precision-aware means, overall and by page count and category."""

    values = {id(p): sample_value(p) for p in preds}  # scored once, reused by every split
    scores = {id(p): page_scores(p, overlap) for p in preds}

    def block(subset: Sequence[PredictedSample]) -> dict:
        s = summarize_paper([values[id(p)] for p in subset], [p.failed for p in subset],
                            [p.tokens for p in subset], thresholds).to_dict()
        s["precision"] = mean_fields([ps for p in subset for ps in scores[id(p)]])
        return s

    out = block(preds)
    if any(p.multi_page is not None for p in preds):
        out["single_page"] = block([p for p in preds if p.multi_page is False])
        out["multi_page"] = block([p for p in preds if p.multi_page])
    cats = sorted({p.category for p in preds if p.category})
    out["by_category"] = {c: block([p for p in preds if p.category == c]) for c in cats}
    return out


def union_of_selections(runs: Sequence[Sequence[PredictedSample]]) -> list[PredictedSample]:
    """Per sample, the union of the regions several runs selected: a measured lower bound on what
    returning all OCR regions scores under the paper's metric (the runs keep no full region list)."""
    by_id = [{p.sample_id: p for p in run} for run in runs]
    out = []
    for p in runs[0]:
        group = [m.get(p.sample_id) for m in by_id]
        if any(g is None for g in group):
            continue
        failed = any(g.failed for g in group)
        boxes = np.unique(np.concatenate([g.pred_boxes for g in group], axis=0), axis=0) if not failed else np.zeros((0, 4))
        out.append(PredictedSample(p.sample_id, p.question, p.doc_name, p.category, p.gt_boxes, boxes,
                                   None, None, None, failed, p.error_message, p.multi_page, None, p.mode))
    return out
