"""Full-chain evaluation runs: page image -> OCR -> encoder -> propagation -> threshold, scored
against ground truth with the method, the baselines and the threshold curves.

Each evidence page of a question is scored against that page's own regions. Results go to a
per-sample JSONL (one line per sample, appended and flushed, so an interrupted run resumes by
skipping the ids already there) and are summarised by :func:`summarize_records`.

Several *selections* (a selection spec such as ``p50`` plus a region-scoring method) can be
evaluated from one pass: each page is analysed (OCR + encoder + patch scores) once per question
and every selection's record is built from that analysis (:func:`evaluate_selections`,
:func:`run_selections`); each selection's records are exactly those a run of that selection
alone writes. A run folder keeps its settings in ``run.json`` and resumes only when they match
(:func:`prepare_run_dir`).

Scorers produce a :class:`PageAnalysis` (regions + region scores + overlap) for one page and
query: :class:`ChainScorer` runs OCR and an encoder on the image; :class:`IndexScorer` reads a
page that ``snappy index`` already stored (via :class:`snappy.search.Searcher`).
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np

from snappy.eval import baselines as bl
from snappy.eval.datasets import EvalSample, EvidencePage, iter_jsonl, open_image
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
from snappy.regions.blocks import parse_selection
from snappy.regions.propagation import METHODS, RegionOverlap, patch_scores, region_scores, select, select_regions
from snappy.regions.region import Region, box_areas, boxes_array

log = logging.getLogger(__name__)

DEFAULT_CURVE = ("p10", "p20", "p30", "p40", "p50", "p60", "p70", "p80", "p90",
                 "top1", "top2", "top3", "top5", "top10",
                 "adaptive:-0.5", "adaptive:0", "adaptive:0.5", "adaptive:1", "adaptive:1.5", "adaptive:2",
                 "gap:0.1", "gap:0.25", "gap:0.5", "gap:1")
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
    patch_scores: np.ndarray | None = None  # [P]: lets other region-scoring methods reuse the analysis
    method: str | None = None  # the method ``scores`` were computed with
    cache: dict = field(default_factory=dict, repr=False)  # per-level views' query-independent parts


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
        return PageAnalysis(regions, rs, ov, patch_boxes, image.size, image, ps, self.method)


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
        from snappy.ids import page_id_for

        s = self.searcher
        doc = self._doc_for(str(page.image))
        uri = s.doc_uri[doc]
        number = 1 if Path(uri).suffix.lower() != ".pdf" else page.page
        data = s.page(page_id_for(doc, number))  # stored vectors, grid and regions, read by row
        grid, (w, h), table = data["grid"], data["size"], data["regions"]
        if table.num_rows and "level" in table.schema.names:  # OCR regions only, as the chain scores them
            import pyarrow.compute as pc

            table = table.filter(pc.fill_null(pc.not_equal(table.column("level"), "block"), True))
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
        return PageAnalysis(regions, rs, ov, grid.boxes(), (w, h), None, ps, self.method)


# ------------------------------------------------------------------ selections
# A selection spec ("p50", "adaptive:1.5", "top3", "0.4", ...) is opaque outside the two helpers
# below: they are the only places a spec is parsed and applied (the default curve list above is
# the only other place that names rules).


def _select(scores: np.ndarray, spec: str) -> np.ndarray:
    """Indices of the regions the selection ``spec``'s rule keeps, given the page's region scores
    (the level is the caller's: :func:`_level_view` hands each level its own regions)."""
    return select_regions(scores, parse_selection(spec)[1]) if len(scores) else np.zeros(0, np.int64)


@dataclass
class LevelView:
    """A page's analysis seen at one region level: the candidate regions, their scores and
    overlap, and how a rule selects among them."""

    regions: list[Region]
    scores: np.ndarray  # [N]
    overlap: RegionOverlap  # [N, P]
    select: Callable[[np.ndarray, str], np.ndarray]
    lines: np.ndarray | None = None  # [L, 4] the page's OCR lines when ``regions`` are not just them


def _level_view(a: PageAnalysis, level: str, method: str) -> LevelView:
    """``line``: the OCR lines. ``block``: blocks of two or more lines and the lines that are blocks
    by themselves. ``auto``: lines and blocks, selected by :func:`snappy.regions.blocks.select_level`
    (per block: the block, its lines, or both, from how the evidence spreads over it)."""
    if level == "line" or not a.regions:
        return LevelView(a.regions, _scores_for(a, method), a.overlap, _select)
    from snappy.regions.blocks import PageLevels, select_level, with_blocks

    if a.patch_scores is None:
        raise ValueError("this page scorer keeps no patch scores: cannot score blocks")
    if "stored" not in a.cache:  # the page's lines and blocks, as an index stores them
        stored, parent = with_blocks(a.regions)
        a.cache["stored"] = (stored, RegionOverlap.build(a.patch_boxes, boxes_array(stored)),
                             PageLevels.build([r.level for r in stored], parent, [r.area for r in stored],
                                              float(np.median(box_areas(a.patch_boxes))) if len(a.patch_boxes) else 0.0))
    stored, ov, pl = a.cache["stored"]
    all_scores = region_scores(a.patch_scores, ov, method)
    if level == "block":
        units = pl.unit_rows
        sub = RegionOverlap(ov.inter[units], ov.region_area[units], ov.patch_area)
        return LevelView([stored[i] for i in units], all_scores[units], sub, _select, boxes_array(a.regions))

    def select_auto(sc: np.ndarray, spec: str) -> np.ndarray:
        return select_level(sc, pl, threshold=parse_selection(spec)[1], level="auto").kept if len(sc) else \
            np.zeros(0, np.int64)

    return LevelView(stored, all_scores, ov, select_auto, boxes_array(a.regions))


def selection_family(spec: str) -> str:
    """The rule a spec uses (for grouping curve points): the parsed rule's kind, else ``other``."""
    try:
        return str(getattr(parse_selection(spec)[1], "kind", "other"))
    except ValueError:
        return "other"


def region_methods() -> tuple[str, ...]:
    """Region-scoring methods :func:`snappy.regions.propagation.region_scores` accepts."""
    return tuple(METHODS)


def plan_selections(thresholds: Sequence[str], methods: Sequence[str] = ("iou",),
                    base: EvalConfig | None = None) -> dict[str, EvalConfig]:
    """One :class:`EvalConfig` per (method, selection spec), keyed by the selection's name: the
    spec alone with one method, ``method/spec`` with several. Specs and methods are validated
    (``ValueError``) and deduplicated, order kept."""
    base = base or EvalConfig()
    specs = list(dict.fromkeys(t.strip() for t in thresholds if t and t.strip()))
    meths = list(dict.fromkeys(m.strip() for m in methods if m and m.strip()))
    if not specs:
        raise ValueError("no selection (threshold) given")
    if not meths:
        raise ValueError("no region-scoring method given")
    for spec in specs:
        parse_selection(spec)[1]
    bad = [m for m in meths if m not in region_methods()]
    if bad:
        raise ValueError(f"unknown region-scoring method(s) {bad}; expected one of {list(region_methods())}")
    out: dict[str, EvalConfig] = {}
    for m in meths:
        for spec in specs:
            out[spec if len(meths) == 1 else f"{m}/{spec}"] = replace(base, threshold=spec, method=m)
    return out


@dataclass(frozen=True)
class SelectionSet:
    """Several selections evaluated from one analysis per page. Passed where an :class:`EvalConfig`
    goes (e.g. to the Ray runner), :func:`evaluate_sample` then returns a bundle
    ``{"sample_id", "by_selection": {name: record}}``."""

    items: tuple[tuple[str, EvalConfig], ...]

    @classmethod
    def of(cls, cfgs: Mapping[str, EvalConfig]) -> "SelectionSet":
        return cls(tuple(cfgs.items()))

    @property
    def configs(self) -> dict[str, EvalConfig]:
        return dict(self.items)


# ------------------------------------------------------------------ one page, one sample


def evaluate_page(gt: np.ndarray, region_boxes: np.ndarray, scores: np.ndarray, cfg: EvalConfig,
                  rng: np.random.Generator, patch_boxes: np.ndarray | None = None,
                  overlap: RegionOverlap | None = None,
                  select: Callable[[np.ndarray, str], np.ndarray] = _select,
                  lines: np.ndarray | None = None) -> dict:
    """Method, baselines and curve points of one page.

    Returns ``{"pred_idx", "per_gt": {system: [draws, G]}, "scores": {system: PageScore dict},
    "curve": {spec: {...}}, "oracle_curve": {...}}``; ``patch_boxes``/``overlap`` enable the
    oracle baseline. ``lines`` (the page's OCR lines, when ``region_boxes`` are blocks or lines
    and blocks): kept fractions count line equivalents, and the random baseline draws as many
    lines as the method's selection covers.
    """
    gt, regions = as_boxes(gt), as_boxes(region_boxes)
    scores = np.asarray(scores, dtype=np.float32)
    n = len(regions)
    lines = None if lines is None else as_boxes(lines)

    def score(idx: np.ndarray):
        return score_page(gt, regions[idx], regions, idx, cfg.overlap, lines)

    def per_gt(idx: np.ndarray) -> list[float]:
        return best_iou_per_gt(gt, regions[idx]).tolist()

    out: dict = {"per_gt": {}, "scores": {}, "selections": {}}
    sel = select(scores, cfg.threshold)
    out["pred_idx"] = sel.tolist()
    fixed = {"method": sel, "all_ocr": bl.all_ocr_selection(n), "ceiling": bl.ceiling_selection(gt, regions)}
    oracle_scores = None
    if patch_boxes is not None and overlap is not None and n:
        ps = bl.oracle_patch_scores(patch_boxes, gt)  # [P]
        oracle_scores = region_scores(ps, overlap, cfg.method)
        fixed["oracle"] = select(oracle_scores, cfg.threshold)
    for name, idx in fixed.items():
        out["per_gt"][name] = [per_gt(idx)]
        out["scores"][name] = score(idx).to_dict()
        if name != "method":
            out["selections"][name] = idx.tolist()
    if lines is None:
        draws = bl.random_selections(n, len(sel), cfg.random_repeats, rng)
        out["per_gt"]["random"] = [per_gt(d) for d in draws] or [per_gt(np.zeros(0, np.int64))]
        out["scores"]["random"] = bl.mean_scores([score(d) for d in draws]) or score(np.zeros(0, np.int64)).to_dict()
    else:  # random lines at the method's kept fraction (line equivalents)
        k = int(round((out["scores"]["method"]["kept_fraction"] or 0.0) * len(lines)))
        draws = bl.random_selections(len(lines), k, cfg.random_repeats, rng)

        def score_lines(idx: np.ndarray):
            return score_page(gt, lines[idx], lines, idx, cfg.overlap)

        out["per_gt"]["random"] = ([best_iou_per_gt(gt, lines[d]).tolist() for d in draws]
                                   or [best_iou_per_gt(gt, lines[:0]).tolist()])
        out["scores"]["random"] = (bl.mean_scores([score_lines(d) for d in draws])
                                   or score_lines(np.zeros(0, np.int64)).to_dict())

    def curve(sc: np.ndarray) -> dict:
        pts = {}
        for spec in cfg.curve:
            idx = select(sc, spec)
            s = score(idx)
            pts[spec] = {"per_gt": per_gt(idx), "kept_fraction": s.kept_fraction, "area_recall": s.area_recall,
                         "area_precision": s.area_precision, "union_iou": s.union_iou}
        return pts

    out["curve"] = curve(scores)
    if oracle_scores is not None:
        out["oracle_curve"] = curve(oracle_scores)
    return out


CEILING_LEVELS = ("line", "block", "auto")


def _level_ceilings(gt: np.ndarray, a: PageAnalysis, method: str) -> dict[str, list[float]]:
    """Per region level, each GT box's best IoU with any one region of that level: the best a
    selection of that level can reach on this page (``auto``: lines and blocks together); computed
    once per page analysis, whatever the number of selections."""
    if "ceilings" in a.cache:
        return a.cache["ceilings"]
    out = a.cache["ceilings"] = {}
    for lv in CEILING_LEVELS:
        if lv != "line" and a.patch_scores is None:
            continue
        view = _level_view(a, lv, method)
        out[lv] = best_iou_per_gt(gt, boxes_array(view.regions)).tolist()
    return out


def _sample_value(per_gt_pages: Sequence[Sequence[float]], mode: str) -> float:
    v = np.concatenate([np.asarray(p, np.float64) for p in per_gt_pages]) if per_gt_pages else np.zeros(0)
    if v.size == 0:
        return float("nan")
    return float(v.max() if mode == "any" else v.mean())


def _scores_for(a: PageAnalysis, method: str) -> np.ndarray:
    """Region scores of ``a`` under ``method``: the scorer's own when it used that method, else
    recomputed from its patch scores (the same call the scorer makes)."""
    if a.method is None or a.method == method:
        return a.scores
    if a.patch_scores is None:
        raise ValueError(f"this page scorer keeps no patch scores: cannot score regions with {method!r}")
    return region_scores(a.patch_scores, a.overlap, method) if a.regions else np.zeros(0, np.float32)


def _sample_header(sample: EvalSample) -> dict:
    return {"sample_id": sample.sample_id, "question": sample.query, "doc_name": sample.doc_name,
            "category": sample.category, "multi_page": sample.multi_page, "mode": sample.mode,
            "gt_bboxes": sample.gt_boxes.tolist(), "failed": False, "error_message": None}


def _failed(rec: dict, sample: EvalSample, e: Exception) -> dict:
    # a page that cannot be read/OCR'd/encoded fails its sample, as in the paper
    log.warning("sample %s failed: %s", sample.sample_id, e)
    rec.update(failed=True, error_message=f"{type(e).__name__}: {e}", pred_bboxes=[], pages=[],
               tokens_selected=None, tokens_all_ocr=None, tokens_full_image=None)
    return rec


def _sample_record(sample: EvalSample, analyses: Sequence[PageAnalysis], cfg: EvalConfig,
                   counter: TextCounter | None, page_tokens: list) -> dict:
    """One selection's record of a sample from its pages' analyses (``page_tokens`` caches the
    per-page text/token counts shared by every selection)."""
    rng = np.random.default_rng([cfg.seed, zlib.crc32(sample.sample_id.encode())])  # per-sample, order-free
    rec = _sample_header(sample)
    try:
        pages = []
        level = parse_selection(cfg.threshold)[0]
        for k, (page, a) in enumerate(zip(sample.pages, analyses)):
            view = _level_view(a, level, cfg.method)
            rb = boxes_array(view.regions)
            scores = view.scores
            res = evaluate_page(page.gt_boxes, rb, scores, cfg, rng, a.patch_boxes, view.overlap, view.select,
                                view.lines)
            why = select(scores, parse_selection(cfg.threshold)[1]) if len(scores) else None  # peak, and why nothing
            tok = None
            if counter is not None:
                if page_tokens[k] is None:  # all OCR = the lines, whatever the level
                    page_tokens[k] = (counter.total([r.text for r in a.regions]), image_tokens(*a.page_size))
                all_ocr, full = page_tokens[k]
                kept = [view.regions[i].text for i in res["pred_idx"]]  # a block carries its lines' text
                tok = {"selected": counter.total(kept), "all_ocr": all_ocr, "full_image": full}
            pages.append({
                "page": page.page, "image": page.image if isinstance(page.image, str) else None,
                "page_size": list(a.page_size), "gt_bboxes": page.gt_boxes.tolist(),
                "region_bboxes": rb.round(2).tolist(),
                "region_scores": [None if np.isnan(x) else round(float(x), 6) for x in scores] if cfg.store_scores else None,
                "pred_idx": res["pred_idx"], "pred_bboxes": rb[res["pred_idx"]].round(2).tolist(),
                "selections": res["selections"], "tokens": tok, "per_gt": res["per_gt"], "scores": res["scores"],
                "curve": res["curve"], "oracle_curve": res.get("oracle_curve"),
                "peak": round(why.peak, 4) if why else 0.0, "no_selection": why.reason if why else "no regions",
                "ceilings": _level_ceilings(page.gt_boxes, a, cfg.method),
                # the page's lines when the regions are blocks or lines and blocks (kept fractions in lines)
                "line_bboxes": None if view.lines is None else view.lines.round(2).tolist(),
            })
    except Exception as e:
        return _failed(rec, sample, e)
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
    rec["ceilings"] = {lv: _sample_value([p["ceilings"][lv] for p in pages], sample.mode) for lv in CEILING_LEVELS
                       if all(lv in p["ceilings"] for p in pages)}
    for key in ("curve", "oracle_curve"):
        if all(p[key] for p in pages):
            rec[key] = {spec: {"value": _sample_value([p[key][spec]["per_gt"] for p in pages], sample.mode),
                               **{m: float(np.mean([p[key][spec][m] or 0.0 for p in pages]))
                                  for m in ("kept_fraction", "area_recall", "area_precision", "union_iou")}}
                        for spec in cfg.curve}
    return rec


def evaluate_selections(sample: EvalSample, scorer: PageScorer, cfgs: Mapping[str, EvalConfig],
                        counter: TextCounter | None) -> dict[str, dict]:
    """One record per selection: every page is analysed (OCR, encoder, patch scores) once and each
    selection's record is built from that analysis, exactly as a run of that selection alone.
    A question without searchable words (punctuation only) is recorded as such, neither scored nor
    failed."""
    if not has_words(sample.query):
        rec = _sample_header(sample)
        rec.update(no_words=True, pred_bboxes=[], pages=[], tokens_selected=None, tokens_all_ocr=None,
                   tokens_full_image=None)
        return {k: dict(rec) for k in cfgs}
    try:
        analyses = [scorer.analyse(page, sample.query, sample) for page in sample.pages]
    except Exception as e:
        failed = _failed(_sample_header(sample), sample, e)
        return {k: dict(failed) for k in cfgs}
    page_tokens: list = [None] * len(analyses)
    return {k: _sample_record(sample, analyses, cfg, counter, page_tokens) for k, cfg in cfgs.items()}


_SEARCHABLE = re.compile(r"[^\W_]")  # a letter or a digit


def has_words(query: str) -> bool:
    """Whether a question has anything to search for (``"- -"`` or ``":"`` has not)."""
    return bool(_SEARCHABLE.search(query or ""))


def evaluate_sample(sample: EvalSample, scorer: PageScorer, cfg: "EvalConfig | SelectionSet",
                    counter: TextCounter | None) -> dict:
    """One per-sample record (paper-compatible top-level fields + per-page detail); with a
    :class:`SelectionSet`, the bundle ``{"sample_id", "by_selection": {name: record}}``."""
    if isinstance(cfg, SelectionSet):
        return {"sample_id": sample.sample_id, "by_selection": evaluate_selections(sample, scorer, cfg.configs, counter)}
    return evaluate_selections(sample, scorer, {"": cfg}, counter)[""]


# ------------------------------------------------------------------ runs


def read_records(path: str | Path) -> dict[str, dict]:
    """Records of a per-sample JSONL by sample id (the last line of an id wins)."""
    out: dict[str, dict] = {}
    p = Path(path)
    if not p.exists():
        return out
    for _, rec in iter_jsonl(p.read_text(encoding="utf-8"), str(p), skip_bad=True):
        out[str(rec["sample_id"])] = rec
    return out


@dataclass
class RunResult:
    records: list[dict]
    n_run: int
    n_skipped: int
    path: Path | None = None
    extra: dict = field(default_factory=dict)


RUN_FILE = "run.json"


class RunSettingsMismatch(Exception):
    """``OUT`` holds a run made with other settings (or whose settings are unknown)."""

    def __init__(self, out_dir: Path, diffs: Sequence[tuple[str, Any, Any]], reason: str = ""):
        self.out_dir, self.diffs, self.reason = Path(out_dir), list(diffs), reason
        super().__init__(str(self))

    def __str__(self) -> str:
        head = self.reason or f"{self.out_dir} holds a run with other settings (stored → requested):"
        lines = [head] + [f"  {k}: {_show(a)} → {_show(b)}" for k, a, b in self.diffs]
        lines.append(f"Pass --no-resume to start over in {self.out_dir}, or another --out.")
        return "\n".join(lines)


def _show(v: Any) -> str:
    return "(absent)" if v is _ABSENT else json.dumps(v, ensure_ascii=False)


_ABSENT = object()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def settings_diff(stored: dict, requested: dict) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, stored, requested)]`` for every setting that differs (absent keys included)."""
    a, b = _flatten(json.loads(json.dumps(stored))), _flatten(json.loads(json.dumps(requested)))
    keys = list(b) + [k for k in a if k not in b]
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in keys if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def selection_dir_name(key: str) -> str:
    """A selection's folder name in a multi-selection run (``adaptive:1.5`` -> ``adaptive_1.5``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key) or "_"


def selection_paths(out_dir: str | Path, keys: Sequence[str]) -> dict[str, Path]:
    """Where each selection's per-sample JSONL goes: ``OUT/samples.jsonl`` for a single selection,
    ``OUT/<selection>/samples.jsonl`` for several."""
    out = Path(out_dir)
    if len(keys) == 1:
        return {keys[0]: out / "samples.jsonl"}
    dirs = {k: selection_dir_name(k) for k in keys}
    if len(set(dirs.values())) != len(dirs):
        raise ValueError(f"selections {list(keys)} map to clashing folder names {sorted(dirs.values())}")
    return {k: out / d / "samples.jsonl" for k, d in dirs.items()}


def prepare_run_dir(out_dir: str | Path, settings: dict, resume: bool = True, name: str | None = None) -> bool:
    """Check or write ``OUT/run.json``; True when the run resumes.

    Resuming needs the stored settings to equal ``settings`` (else :class:`RunSettingsMismatch`
    listing each differing key); a folder with records but no ``run.json`` is refused too (its
    settings cannot be checked). Without ``resume`` the settings are (re)written: a new run."""
    out = Path(out_dir)
    path = out / RUN_FILE
    requested = json.loads(json.dumps(settings))
    if resume and path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RunSettingsMismatch(out, [], f"{path} is unreadable ({e.msg}): its run's settings cannot be checked.") from e
        diffs = settings_diff(stored.get("settings") or {}, requested)
        if diffs:
            raise RunSettingsMismatch(out, diffs)
        return True
    if resume and out.is_dir() and (any(out.glob("samples.jsonl")) or any(out.glob("*/samples.jsonl"))):
        raise RunSettingsMismatch(out, [], f"{out} holds records but no {RUN_FILE} (an older or foreign run): "
                                           "its settings cannot be checked.")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "settings": requested,
                                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1) + "\n")
    return False


def run(samples: Sequence[EvalSample], scorer: PageScorer | None, cfg: EvalConfig, counter: TextCounter | None,
        out_jsonl: str | Path | None = None, resume: bool = True, progress: bool = True,
        on_record: Callable[[dict], None] | None = None,
        evaluate: Callable[[Sequence[EvalSample]], Iterable[dict]] | None = None, label: str = "") -> RunResult:
    """Evaluate ``samples``; with ``out_jsonl`` each record is appended as it is made and, when
    ``resume``, samples already there (not failed) are skipped (no settings check: see
    :func:`run_selections`). ``evaluate`` replaces the local loop (e.g.
    :func:`pipelines.eval.evaluate_on_ray`): it gets the samples still to do and yields their
    records in any order."""
    key = cfg.threshold
    res = _run(samples, scorer, {key: cfg}, counter, {key: Path(out_jsonl)} if out_jsonl else None, resume, progress,
               (lambda b: on_record(b[key])) if on_record else None, evaluate, label)
    return res[key]


def run_selections(samples: Sequence[EvalSample], scorer: PageScorer | None, cfgs: Mapping[str, EvalConfig],
                   counter: TextCounter | None, out_dir: str | Path | None = None, resume: bool = True,
                   progress: bool = True, evaluate: Callable[[Sequence[EvalSample]], Iterable[dict]] | None = None,
                   label: str = "", settings: dict | None = None, name: str | None = None) -> dict[str, RunResult]:
    """Evaluate several selections (:func:`plan_selections`) from one analysis per page.

    With ``out_dir``: records go to :func:`selection_paths`; with ``settings`` too, the folder's
    ``run.json`` is checked first (:func:`prepare_run_dir`: a resume with other settings raises
    :class:`RunSettingsMismatch`). ``evaluate`` yields records or ``by_selection`` bundles (it is
    handed the samples still to do; build it with ``cfg=SelectionSet.of(cfgs)``)."""
    keys = list(cfgs)
    paths = selection_paths(out_dir, keys) if out_dir is not None else None
    if out_dir is not None and settings is not None:
        prepare_run_dir(out_dir, settings, resume, name)
    return _run(samples, scorer, dict(cfgs), counter, paths, resume, progress, None, evaluate, label)


def _as_bundle(item: dict, keys: Sequence[str]) -> dict[str, dict]:
    if "by_selection" in item:
        bundle = item["by_selection"]
        missing = [k for k in keys if k not in bundle]
        if missing:
            raise ValueError(f"sample {item.get('sample_id')}: no record for selection(s) {missing}")
        return bundle
    if len(keys) == 1:
        return {keys[0]: item}
    raise ValueError("a multi-selection run got a single record: evaluate with cfg=SelectionSet.of(cfgs)")


def _run(samples, scorer, cfgs: dict[str, EvalConfig], counter, paths: dict[str, Path] | None, resume: bool,
         progress: bool, on_bundle, evaluate, label: str) -> dict[str, RunResult]:
    keys = list(cfgs)
    done = {k: read_records(paths[k]) if (paths and resume) else {} for k in keys}

    def finished(sid: str) -> bool:
        return all(sid in done[k] and not done[k][sid].get("failed") for k in keys)

    todo = [s for s in samples if not finished(s.sample_id)]
    n_skipped = len(samples) - len(todo)
    if n_skipped:
        log.info("resuming: %d of %d samples already done in %s", n_skipped, len(samples),
                 ", ".join(str(p) for p in paths.values()) if paths else "-")
    files = {}
    new: dict[str, dict[str, dict]] = {k: {} for k in keys}
    try:
        if paths:
            for k, p in paths.items():
                p.parent.mkdir(parents=True, exist_ok=True)
                files[k] = open(p, "a" if resume else "w", encoding="utf-8")
        if evaluate:
            stream = evaluate(todo)
        else:
            stream = ({"sample_id": s.sample_id, "by_selection": evaluate_selections(s, scorer, cfgs, counter)}
                      for s in todo)
        what = label or getattr(scorer, "name", "") or "run"
        if len(keys) > 1:
            what += f" ({len(keys)} selections)"
        for item in _progress(stream, progress, f"eval {what}", total=len(todo)):
            bundle = _as_bundle(item, keys)
            for k in keys:
                rec = bundle[k]
                new[k][str(rec["sample_id"])] = rec
                if k in files:
                    files[k].write(json.dumps(rec, separators=(",", ":")) + "\n")
                    files[k].flush()
            if on_bundle:
                on_bundle(bundle)
    finally:
        for fh in files.values():
            fh.close()
    ids = [s.sample_id for s in samples]
    return {k: RunResult([new[k].get(i) or done[k][i] for i in ids], len(todo), n_skipped,
                         paths[k] if paths else None) for k in keys}


def _hms(seconds: float) -> str:
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _progress(items: Iterable, enabled: bool, label: str, total: int, every_s: float = 30.0,
              tty: bool | None = None) -> Iterable:
    """Progress of a run: a rich bar with elapsed time and ETA on a terminal (stderr); elsewhere
    (a job log, a pipe) an INFO line ``label: done/total (pct), elapsed, ETA`` after the first
    item, then at most every ``every_s`` seconds, and at the end."""
    if not enabled or not total:
        yield from items
        return
    if tty is None:
        tty = sys.stderr.isatty()
    if tty:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                      transient=True) as prog:
            task = prog.add_task(label, total=total)
            for it in items:
                yield it
                prog.advance(task)
        return
    t0 = last = time.monotonic()
    for i, it in enumerate(items, start=1):
        yield it
        now = time.monotonic()
        if i == 1 or i == total or now - last >= every_s:
            last = now
            elapsed = now - t0
            eta = elapsed / i * (total - i)
            log.info("%s: %d/%d samples (%.0f%%), elapsed %s, ETA %s", label, i, total, 100.0 * i / total,
                     _hms(elapsed), _hms(eta))


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
        # questions with nothing to search for (punctuation only): neither scored nor failed
        "no_words": [{"sample_id": r["sample_id"], "question": r.get("question")} for r in recs if r.get("no_words")],
        "ceilings": level_ceilings(recs, cfg.hit_thresholds),
        # evidence pages where the rule kept nothing, by reason ("flat": the query matched nothing there)
        "no_selection": dict(Counter([p.get("no_selection") for r in recs if not r.get("failed") for p in r.get("pages", [])
                                if p.get("no_selection")])),
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


def level_ceilings(records: Sequence[dict], hits: Sequence[float] = HIT_THRESHOLDS) -> dict[str, dict]:
    """Per region level (``line``, ``block``, ``auto``): mean IoU and hit rates of the best single
    region per GT box, over the scored questions (the most any selection of that level can reach)."""
    out = {}
    for lv in CEILING_LEVELS:
        v = [r["ceilings"][lv] for r in records if not r.get("failed") and lv in (r.get("ceilings") or {})]
        v = np.asarray([x for x in v if x is not None and not np.isnan(x)], np.float64)
        if v.size:
            out[lv] = {"n_scored": int(v.size), "mean_iou": float(v.mean()),
                       "hit_rate": {hit_key(t): float((v >= t).mean()) for t in hits}}
    return out


def selection_label(name: str, key: str) -> str:
    """How a run's selection is named everywhere (stdout, report.md, summary.json)."""
    return f"{name} @ {key}" if name else key


def compare_selections(summaries: Mapping[str, dict]) -> dict[str, dict]:
    """Side-by-side figures of several selections of one run: the method's, and the oracle's, random's
    and the ceiling's of each."""
    out = {}
    for key, s in summaries.items():
        prec = (s.get("systems", {}).get("method") or {}).get("precision") or {}
        out[key] = {"label": s.get("label", key), "threshold": s.get("config", {}).get("threshold"),
                    "method": s.get("config", {}).get("method"),
                    "n_scored": s.get("n_scored"), "n_failed": s.get("n_failed"), "mean_iou": s.get("mean_iou"),
                    "hit@0.5": (s.get("hit_rate") or {}).get("0.5"),
                    "area_precision": prec.get("area_precision"), "area_recall": prec.get("area_recall"),
                    "kept_fraction": prec.get("kept_fraction"), "n_selected": prec.get("n_selected"),
                    "token_savings_vs_all_ocr": s.get("token_savings_vs_all_ocr"),
                    "token_savings_vs_full_image": s.get("token_savings_vs_full_image")}
        for sysname in ("oracle", "random", "ceiling"):
            b = s.get("systems", {}).get(sysname) or {}
            p = b.get("precision") or {}
            out[key][sysname] = {"mean_iou": b.get("mean_iou"), "hit@0.5": (b.get("hit_rate") or {}).get("0.5"),
                                 "area_precision": p.get("area_precision"), "kept_fraction": p.get("kept_fraction")}
    return out
