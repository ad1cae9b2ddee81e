"""Full-chain evaluation runs: page image -> OCR -> encoder -> propagation -> threshold, scored
against ground truth with the method, the baselines and the threshold curves.

Each evidence page of a question is scored against that page's own regions. Results go to a
per-sample JSONL (one line per sample, appended and flushed, so an interrupted run resumes by
skipping the ids already there) and are summarised by :func:`summarize_records`.

Scorers produce a :class:`PageAnalysis` (regions + region scores + overlap) for one page and
query: :class:`ChainScorer` runs OCR and an encoder on the image; :class:`IndexScorer` reads a
page that ``snappy index`` already stored (via :class:`snappy.search.Searcher`).
"""
from __future__ import annotations

import json
import logging
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from snappy.eval import baselines as bl
from snappy.eval.datasets import EvalSample, EvidencePage, open_image
from snappy.eval.metrics import (
    DEFAULT_OVERLAP,
    HIT_THRESHOLDS,
    PRECISION_FIELDS,
    as_boxes,
    best_iou_per_gt,
    hit_key,
    score_page,
)
from snappy.eval.tokens import TextCounter, image_tokens
from snappy.propagation import RegionOverlap, Threshold, patch_scores, region_scores, select_regions
from snappy.regions import Region, boxes_array

log = logging.getLogger(__name__)

DEFAULT_CURVE = ("p10", "p20", "p30", "p40", "p50", "p60", "p70", "p80", "p90",
                 "top1", "top2", "top3", "top5", "top10",
                 "adaptive:-0.5", "adaptive:0", "adaptive:0.5", "adaptive:1", "adaptive:1.5", "adaptive:2")
SYSTEMS = ("method", *bl.BASELINES)


@dataclass(frozen=True)
class EvalConfig:
    threshold: str = "p50"
    method: str = "iou"  # region scoring: iou (paper) | max | mean | ior
    reduce: str = "max"  # over query tokens
    curve: tuple[str, ...] = DEFAULT_CURVE
    overlap: float = DEFAULT_OVERLAP  # region-level relevance criterion
    random_repeats: int = 20
    seed: int = 0
    hit_thresholds: tuple[float, ...] = HIT_THRESHOLDS
    store_scores: bool = True  # keep region scores in the per-sample JSONL


@dataclass
class PageAnalysis:
    regions: list[Region]
    scores: np.ndarray  # [R] region relevance
    overlap: RegionOverlap  # [R, P]
    patch_boxes: np.ndarray  # [P, 4] page px
    page_size: tuple[int, int]
    image: Any = None  # PIL image when available (for overlays)


class PageScorer(Protocol):
    name: str

    def analyse(self, page: EvidencePage, query: str, sample: EvalSample) -> PageAnalysis: ...


class ChainScorer:
    """OCR + encoder on the page image (OCR and page embedding cached per image)."""

    def __init__(self, ocr, encoder, method: str = "iou", reduce: str = "max", cache_pages: int = 16):
        self.ocr, self.encoder, self.method, self.reduce = ocr, encoder, method, reduce
        self.name = f"{getattr(ocr, 'name', 'ocr')}+{encoder.encoder_id}"
        self._cache: OrderedDict = OrderedDict()
        self._cache_pages = cache_pages
        self._q: tuple[str, np.ndarray] | None = None

    def _page(self, ref: Any):
        key = ref if isinstance(ref, str) else id(ref)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        image = open_image(ref)
        regions = self.ocr.recognize(image)
        emb = self.encoder.embed_pages([image], [regions] if self.encoder.needs_regions else None)[0]
        patch_boxes = emb.grid.boxes()  # [P, 4]
        ov = RegionOverlap.build(patch_boxes, boxes_array(regions))
        entry = (image, regions, emb, patch_boxes, ov)
        self._cache[key] = entry
        if len(self._cache) > self._cache_pages:
            self._cache.popitem(last=False)
        return entry

    def analyse(self, page: EvidencePage, query: str, sample: EvalSample) -> PageAnalysis:
        image, regions, emb, patch_boxes, ov = self._page(page.image)
        if self._q is None or self._q[0] != query:
            self._q = (query, self.encoder.embed_queries([query])[0])
        ps = patch_scores(self._q[1], emb.vectors.astype(np.float32), reduce=self.reduce)  # [P]
        rs = region_scores(ps, ov, self.method) if regions else np.zeros(0, np.float32)
        return PageAnalysis(regions, rs, ov, patch_boxes, image.size, image)


class IndexScorer:
    """Pages already in a snappy index: stored vectors, grid and regions (no re-encoding).

    A dataset page is found by its image URI among the index's document URIs (exact, else the
    unique document whose URI ends with the same path), at page 1 for image documents or the
    evidence page number for PDFs.
    """

    def __init__(self, searcher, method: str = "iou", reduce: str = "max"):
        self.searcher, self.method, self.reduce = searcher, method, reduce
        self.name = f"index:{getattr(searcher.store, 'uri', '?')}"
        self._by_uri = {u: d for d, u in searcher.doc_uri.items()}

    def _doc_for(self, ref: str) -> str:
        if ref in self._by_uri:
            return self._by_uri[ref]
        tail = "/".join(Path(ref).parts[-3:])
        hits = [d for u, d in self._by_uri.items() if u.endswith(tail)]
        if len(hits) != 1:
            raise KeyError(f"{ref}: {'not in' if not hits else 'ambiguous in'} the index")
        return hits[0]

    def analyse(self, page: EvidencePage, query: str, sample: EvalSample) -> PageAnalysis:
        from snappy.search import overlap_from_table
        from snappy.storage.schema import page_id_for

        s = self.searcher
        doc = self._doc_for(str(page.image))
        uri = s.doc_uri[doc]
        number = 1 if Path(uri).suffix.lower() != ".pdf" else page.page
        data = s.page(page_id_for(doc, number))  # stored vectors, grid and regions, read by row
        grid, (w, h), table = data["grid"], data["size"], data["regions"]
        q = s.encoder.embed_queries([query])[0]
        ps = patch_scores(q, np.asarray(data["vectors"], np.float32), reduce=self.reduce)
        regions = []
        if table.num_rows:
            for b, t in zip(table.column("bbox").to_pylist(), table.column("text").to_pylist()):
                regions.append(Region(bbox=tuple(b), page_size=(w, h), text=t or ""))
            ov = overlap_from_table(table, grid)
        else:
            ov = RegionOverlap.build(grid.boxes(), np.zeros((0, 4)))
        rs = region_scores(ps, ov, self.method) if regions else np.zeros(0, np.float32)
        return PageAnalysis(regions, rs, ov, grid.boxes(), (w, h), None)


# ------------------------------------------------------------------ one page, one sample


def _select(scores: np.ndarray, spec: str) -> np.ndarray:
    return select_regions(scores, Threshold.parse(spec)) if len(scores) else np.zeros(0, np.int64)


def evaluate_page(gt: np.ndarray, region_boxes: np.ndarray, scores: np.ndarray, cfg: EvalConfig,
                  rng: np.random.Generator, patch_boxes: np.ndarray | None = None,
                  overlap: RegionOverlap | None = None) -> dict:
    """Method, baselines and curve points of one page.

    Returns ``{"pred_idx", "per_gt": {system: [draws, G]}, "scores": {system: PageScore dict},
    "curve": {spec: {...}}, "oracle_curve": {...}}``; ``patch_boxes``/``overlap`` enable the
    oracle baseline.
    """
    gt, regions = as_boxes(gt), as_boxes(region_boxes)
    scores = np.asarray(scores, dtype=np.float32)
    n = len(regions)

    def score(idx: np.ndarray):
        return score_page(gt, regions[idx], regions, idx, cfg.overlap)

    def per_gt(idx: np.ndarray) -> list[float]:
        return best_iou_per_gt(gt, regions[idx]).tolist()

    out: dict = {"per_gt": {}, "scores": {}, "selections": {}}
    sel = _select(scores, cfg.threshold)
    out["pred_idx"] = sel.tolist()
    fixed = {"method": sel, "all_ocr": bl.all_ocr_selection(n), "ceiling": bl.ceiling_selection(gt, regions)}
    oracle_scores = None
    if patch_boxes is not None and overlap is not None and n:
        ps = bl.oracle_patch_scores(patch_boxes, gt)  # [P]
        oracle_scores = region_scores(ps, overlap, cfg.method)
        fixed["oracle"] = _select(oracle_scores, cfg.threshold)
    for name, idx in fixed.items():
        out["per_gt"][name] = [per_gt(idx)]
        out["scores"][name] = score(idx).to_dict()
        if name != "method":
            out["selections"][name] = idx.tolist()
    draws = bl.random_selections(n, len(sel), cfg.random_repeats, rng)
    out["per_gt"]["random"] = [per_gt(d) for d in draws] or [per_gt(np.zeros(0, np.int64))]
    out["scores"]["random"] = bl.mean_scores([score(d) for d in draws]) or score(np.zeros(0, np.int64)).to_dict()

    def curve(sc: np.ndarray) -> dict:
        pts = {}
        for spec in cfg.curve:
            idx = _select(sc, spec)
            s = score(idx)
            pts[spec] = {"per_gt": per_gt(idx), "kept_fraction": s.kept_fraction, "area_recall": s.area_recall,
                         "area_precision": s.area_precision, "union_iou": s.union_iou}
        return pts

    out["curve"] = curve(scores)
    if oracle_scores is not None:
        out["oracle_curve"] = curve(oracle_scores)
    return out


def _sample_value(per_gt_pages: Sequence[Sequence[float]], mode: str) -> float:
    v = np.concatenate([np.asarray(p, np.float64) for p in per_gt_pages]) if per_gt_pages else np.zeros(0)
    if v.size == 0:
        return float("nan")
    return float(v.max() if mode == "any" else v.mean())


def evaluate_sample(sample: EvalSample, scorer: PageScorer, cfg: EvalConfig,
                    counter: TextCounter | None) -> dict:
    """One per-sample record (paper-compatible top-level fields + per-page detail)."""
    rng = np.random.default_rng([cfg.seed, zlib.crc32(sample.sample_id.encode())])  # per-sample, order-free
    rec: dict = {"sample_id": sample.sample_id, "question": sample.query, "doc_name": sample.doc_name,
                 "category": sample.category, "multi_page": sample.multi_page, "mode": sample.mode,
                 "gt_bboxes": sample.gt_boxes.tolist(), "failed": False, "error_message": None}
    try:
        pages = []
        for page in sample.pages:
            a = scorer.analyse(page, sample.query, sample)
            rb = boxes_array(a.regions)
            res = evaluate_page(page.gt_boxes, rb, a.scores, cfg, rng, a.patch_boxes, a.overlap)
            texts = [r.text for r in a.regions]
            tok = None
            if counter is not None:
                tok = {"selected": counter.total([texts[i] for i in res["pred_idx"]]),
                       "all_ocr": counter.total(texts), "full_image": image_tokens(*a.page_size)}
            pages.append({
                "page": page.page, "image": page.image if isinstance(page.image, str) else None,
                "page_size": list(a.page_size), "gt_bboxes": page.gt_boxes.tolist(),
                "region_bboxes": rb.round(2).tolist(),
                "region_scores": [None if np.isnan(x) else round(float(x), 6) for x in a.scores] if cfg.store_scores else None,
                "pred_idx": res["pred_idx"], "pred_bboxes": rb[res["pred_idx"]].round(2).tolist(),
                "selections": res["selections"], "tokens": tok, "per_gt": res["per_gt"], "scores": res["scores"],
                "curve": res["curve"], "oracle_curve": res.get("oracle_curve"),
            })
    except Exception as e:  # a page that cannot be read/OCR'd/encoded fails its sample, as in the paper
        log.warning("sample %s failed: %s", sample.sample_id, e)
        rec.update(failed=True, error_message=f"{type(e).__name__}: {e}", pred_bboxes=[], pages=[],
                   tokens_selected=None, tokens_all_ocr=None, tokens_full_image=None)
        return rec
    rec["pages"] = pages
    rec["pred_bboxes"] = [b for p in pages for b in p["pred_bboxes"]]
    for key in ("selected", "all_ocr", "full_image"):
        rec[f"tokens_{key}"] = sum(p["tokens"][key] for p in pages) if counter is not None else None
    rec["tokens_exact"] = counter.exact if counter is not None else None
    # sample-level paper values per system (a list of draws; one for deterministic systems)
    values = {}
    for name in SYSTEMS:
        if not all(name in p["per_gt"] for p in pages):
            continue
        n_draws = max(len(p["per_gt"][name]) for p in pages)
        values[name] = [_sample_value([p["per_gt"][name][min(j, len(p["per_gt"][name]) - 1)] for p in pages], sample.mode)
                        for j in range(n_draws)]
    rec["values"] = values
    rec["paper_iou"] = values["method"][0]
    for key in ("curve", "oracle_curve"):
        if all(p[key] for p in pages):
            rec[key] = {spec: {"value": _sample_value([p[key][spec]["per_gt"] for p in pages], sample.mode),
                               **{m: float(np.mean([p[key][spec][m] or 0.0 for p in pages]))
                                  for m in ("kept_fraction", "area_recall", "area_precision", "union_iou")}}
                        for spec in cfg.curve}
    return rec


# ------------------------------------------------------------------ runs


def read_records(path: str | Path) -> dict[str, dict]:
    """Records of a per-sample JSONL by sample id (the last line of an id wins)."""
    out: dict[str, dict] = {}
    p = Path(path)
    if not p.exists():
        return out
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: skipping a truncated line (interrupted run?)", p, i + 1)
            continue
        out[str(rec["sample_id"])] = rec
    return out


@dataclass
class RunResult:
    records: list[dict]
    n_run: int
    n_skipped: int
    path: Path | None = None
    extra: dict = field(default_factory=dict)


def run(samples: Sequence[EvalSample], scorer: PageScorer | None, cfg: EvalConfig, counter: TextCounter | None,
        out_jsonl: str | Path | None = None, resume: bool = True, progress: bool = True,
        on_record: Callable[[dict], None] | None = None,
        evaluate: Callable[[Sequence[EvalSample]], Iterable[dict]] | None = None, label: str = "") -> RunResult:
    """Evaluate ``samples``; with ``out_jsonl`` each record is appended as it is made and, when
    ``resume``, samples already there (not failed) are skipped. ``evaluate`` replaces the local
    loop (e.g. :func:`pipelines.eval.evaluate_on_ray`): it gets the samples still to do and
    yields their records in any order."""
    done = read_records(out_jsonl) if (out_jsonl and resume) else {}
    todo = [s for s in samples if not (s.sample_id in done and not done[s.sample_id].get("failed"))]
    n_skipped = len(samples) - len(todo)
    if n_skipped:
        log.info("resuming: %d of %d samples already in %s", n_skipped, len(samples), out_jsonl)
    fh = None
    if out_jsonl:
        Path(out_jsonl).parent.mkdir(parents=True, exist_ok=True)
        fh = open(out_jsonl, "a" if resume else "w", encoding="utf-8")
    new: dict[str, dict] = {}
    try:
        stream = evaluate(todo) if evaluate else (evaluate_sample(s, scorer, cfg, counter) for s in todo)
        for rec in _progress(stream, progress, f"eval {label or scorer.name}", total=len(todo)):
            new[str(rec["sample_id"])] = rec
            if fh:
                fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
                fh.flush()
            if on_record:
                on_record(rec)
    finally:
        if fh:
            fh.close()
    ids = [s.sample_id for s in samples]
    records = [new.get(i) or done[i] for i in ids]
    return RunResult(records, len(todo), n_skipped, Path(out_jsonl) if out_jsonl else None)


def _progress(items: Iterable, enabled: bool, label: str, total: int) -> Iterable:
    if not enabled or not total:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as prog:
        task = prog.add_task(label, total=total)
        for it in items:
            yield it
            prog.advance(task)


# ------------------------------------------------------------------ summaries


def _system_block(recs: Sequence[dict], name: str, cfg_hits: Sequence[float]) -> dict | None:
    ok = [r for r in recs if not r.get("failed") and name in r.get("values", {})]
    if not ok and name != "method":
        return None
    vals = [np.asarray(r["values"][name], np.float64) for r in ok]
    vals = [v[~np.isnan(v)] for v in vals]
    vals = [v for v in vals if v.size]
    page_scores = [p["scores"][name] for r in ok for p in r["pages"] if name in p["scores"]]
    prec = {}
    for f in PRECISION_FIELDS:
        xs = [ps[f] for ps in page_scores if ps.get(f) is not None]
        prec[f] = float(np.mean(xs)) if xs else None
    return {
        "n_scored": len(vals),
        "mean_iou": float(np.mean([v.mean() for v in vals])) if vals else float("nan"),
        "hit_rate": {hit_key(t): float(np.mean([(v >= t).mean() for v in vals])) if vals else float("nan")
                     for t in cfg_hits},
        "precision": prec,
    }


def summarize_records(records: Sequence[dict], cfg: EvalConfig) -> dict:
    """Summary of a run: the paper's figures (per-page protocol) for the method, the baselines,
    single-/multi-page and per-category splits, token savings and the curves."""
    recs = list(records)
    failed = [r for r in recs if r.get("failed")]

    def systems(subset: Sequence[dict]) -> dict:
        return {n: b for n in SYSTEMS if (b := _system_block(subset, n, cfg.hit_thresholds)) is not None}

    toks = [r for r in recs if not r.get("failed") and r.get("tokens_selected") is not None]
    sel = sum(r["tokens_selected"] for r in toks)
    all_ocr = sum(r["tokens_all_ocr"] for r in toks)
    full = sum(r["tokens_full_image"] for r in toks)
    method = systems(recs).get("method", {})
    out = {
        "n_samples": len(recs), "n_scored": method.get("n_scored", 0), "n_failed": len(failed),
        "mean_iou": method.get("mean_iou"), "hit_rate": method.get("hit_rate"),
        "tokens_selected": sel, "tokens_all_ocr": all_ocr, "tokens_full_image": full,
        "token_savings_vs_all_ocr": (1 - sel / all_ocr) if all_ocr else None,
        "token_savings_vs_full_image": (1 - sel / full) if full else None,
        "tokens_exact": all(r.get("tokens_exact") for r in toks) if toks else None,
        "config": {"threshold": cfg.threshold, "method": cfg.method, "reduce": cfg.reduce, "overlap": cfg.overlap,
                   "random_repeats": cfg.random_repeats, "seed": cfg.seed},
        "systems": systems(recs),
        "single_page": systems([r for r in recs if not r.get("multi_page")]),
        "multi_page": systems([r for r in recs if r.get("multi_page")]),
        "by_category": {c: systems([r for r in recs if r.get("category") == c])
                        for c in sorted({r.get("category") or "" for r in recs} - {""})},
        "failures": [{"sample_id": r["sample_id"], "error": r.get("error_message")} for r in failed],
    }
    for key in ("curve", "oracle_curve"):
        ok = [r for r in recs if not r.get("failed") and r.get(key)]
        if ok:
            out[key] = {spec: {"mean_iou": float(np.nanmean([r[key][spec]["value"] for r in ok])),
                               "hit@0.5": float(np.mean([r[key][spec]["value"] >= 0.5 for r in ok])),
                               **{m: float(np.mean([r[key][spec][m] for r in ok]))
                                  for m in ("kept_fraction", "area_recall", "area_precision", "union_iou")}}
                        for spec in cfg.curve}
    return out
