"""OCR speed and accuracy: paddle, rapid and tesseract side by side on generated Letter pages.

    python benchmarks/bench_ocr.py [--quick] [--engines paddle,rapid,tesseract] [--variants NAME,...]
                                   [--pages dense,two_column,table,sparse] [--repeats 2] [--out results.json]

Pages (Letter, rendered at ``--dpi`` 200 = 1700x2200 px with snappy's own renderer) are drawn
from a seeded word list with snappy.testing.synth's primitives, so every line's text and box is known:

- ``dense``: one column, 56 lines of 9.5 pt text (the page the speed goal is about);
- ``two_column``: two columns, 2 x 54 lines of 9 pt text;
- ``table``: a title and a ruled 4-column table of 26 rows (10 pt);
- ``sparse``: a heading and 10 spread-out lines (11 pt).

Each (engine, variant) runs in its own spawned process: model load (+ one warm-up call on a
small crop) is timed and reported apart; then every page is recognised ``--repeats`` times.
Per page:

- CPU-s: ``time.process_time()`` around ``recognize()`` (all threads of the process) plus the
  CPU of finished child processes (``os.times()``: tesseract runs as a child); median of repeats;
- wall-s: ``time.perf_counter()`` around the same call; median of repeats;
- CER: character error rate, line by line. Each recognised line is assigned to the truth line it
  overlaps most (at least 30 % of its own box area; else it is an insertion); a truth line's
  hypothesis is its assigned lines' texts joined left to right. CER = (sum of edit distances +
  characters of unassigned recognised lines) / characters of truth. Whitespace runs collapse to
  one space; case and punctuation count;
- line recall: share of truth lines matched one-to-one (greedy by IoU) by a recognised box with
  IoU >= 0.5 (truth box: the line's ink extent padded by 15 % of the font size above and below).

The final markdown table is printed; ``--out`` writes all numbers as JSON.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import logging
import multiprocessing as mp
import os
import random
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger("bench_ocr")

DPI = 200.0

# Real words (common English plus report vocabulary), so that a misread is a character error.
WORDS = """
the of and to in is that for it as was with be by on not he this are or his from at which but
have an they you were her she there been one all we their has would when if so no will more
can who out up about what only other into some could them than then these time two may first
new any like very our over such also after most made many must before through back years
where much your way well down should because each just those people how too little state good
very make world still own see men work long get here between both life being under never day
same another know while last might great old year off come since against go came right used
take three states himself few house use during without again place around however home small
found thought went say part once general high upon school every does got united left number
course war until always away something fact though water less public put think almost hand
enough far took head yet government system better set told nothing night end why called
report committee budget revenue quarterly annual review board members meeting minutes agenda
approved pending contract supplier invoice delivery shipment warehouse inventory storage
customer account balance payment interest capital equity assets liabilities expenses income
growth decline forecast estimate variance margin operating net gross total average median
region district county municipal council regional national federal policy program project
schedule timeline milestone deadline phase stage plan design build test deploy monitor audit
compliance safety quality standard procedure process method analysis evaluation assessment
summary overview introduction background objective scope approach results findings outcome
recommendation conclusion appendix section chapter figure table chart exhibit reference source
engineering research development laboratory instrument measurement sample specimen protocol
temperature pressure voltage current frequency capacity volume weight length distance speed
harbor turbine glacier basalt saffron orbit violin station bridge tunnel railway highway airport
energy electricity generation transmission distribution consumption efficiency renewable solar
wind hydro nuclear carbon emissions reduction target baseline benchmark indicator metric
""".split()
CITIES = ("Valencia", "Kerala", "Oaxaca", "Yunnan", "Lisbon", "Tromso", "Cremona", "Denver", "Osaka",
          "Nairobi", "Quebec", "Bergen", "Porto", "Austin", "Leipzig", "Tucson", "Hobart", "Malaga")


# ---------------------------------------------------------------------------- page set
def _token(rng: random.Random, cap: bool) -> str:
    r = rng.random()
    if r < 0.02:
        return f"{rng.randint(1, 99)},{rng.randint(0, 999):03d}"
    if r < 0.03:
        return f"{rng.randint(1, 99)}.{rng.randint(0, 9)}%"
    if r < 0.045:
        return str(rng.randint(1990, 2030))
    if r < 0.055:
        return f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}"
    if r < 0.075:
        return rng.choice(CITIES)
    w = rng.choice(WORDS)
    return w.capitalize() if cap else w


def _text_line(rng: random.Random, width_pt: float, font_size: float, state: dict) -> str:
    """Words filling at most ``width_pt``; sentences run on across lines (``state`` carries it)."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    from snappy.testing.synth import FONT

    words: list[str] = []
    while True:
        tok = _token(rng, state.get("cap", True))
        state_next = False
        p = rng.random()
        if p < 0.07:
            tok += "."
            state_next = True
        elif p < 0.13:
            tok += ","
        cand = " ".join([*words, tok])
        if stringWidth(cand, FONT, font_size) > width_pt:
            return " ".join(words)
        words.append(tok)
        state["cap"] = state_next


def _columns(rng, x0s: Sequence[float], top: float, width: float, n_lines: int, leading: float, fs: float):
    from snappy.testing.synth import TextLine

    lines = []
    for x0 in x0s:
        state = {"cap": True}
        for i in range(n_lines):
            # ragged right edge: most lines fill the column, some stop short (paragraph ends)
            w = width if rng.random() > 0.12 else width * rng.uniform(0.3, 0.8)
            lines.append(TextLine(_text_line(rng, w, fs, state), x0, top + i * leading, fs))
    return lines


def make_pages(seed: int = 0) -> dict[str, Any]:
    """The generated page set: name -> snappy.testing.synth.SynthPage (Letter)."""
    from snappy.testing.synth import LETTER, SynthPage, TextLine

    rng = random.Random(seed)
    w, h = LETTER
    pages: dict[str, Any] = {}
    # dense: 56 lines of 9.5 pt, 12.2 pt leading, 54 pt side margins
    pages["dense"] = SynthPage(LETTER, _columns(rng, [54.0], 52.0, w - 108.0, 56, 12.2, 9.5))
    # two columns: 2 x 54 lines of 9 pt, 12.5 pt leading, 22 pt gutter
    col_w = (w - 108.0 - 22.0) / 2
    pages["two_column"] = SynthPage(LETTER, _columns(rng, [54.0, 54.0 + col_w + 22.0], 52.0, col_w, 54, 12.5, 9.0))
    # table: title + ruled 4-column table, 26 rows of 10 pt
    fs, margin, row_h = 10.0, 60.0, 24.0
    header = ["Item", "Region", "Date", "Amount"]
    col = (w - 2 * margin) / len(header)
    page = SynthPage(LETTER, [TextLine("Table 4: Shipments by region and quarter", margin, margin, 14.0)])
    top = margin + 40.0
    rows = [header] + [
        [f"{rng.choice(WORDS).capitalize()} {rng.choice(WORDS)}", rng.choice(CITIES),
         f"{rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
         f"{rng.randint(1, 99)},{rng.randint(0, 999):03d}.{rng.randint(0, 99):02d}"]
        for _ in range(25)
    ]
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            page.lines.append(TextLine(cell, margin + c * col + 8.0, top + r * row_h + 0.6 * fs, fs))
    for r in range(len(rows) + 1):
        page.rules.append((margin, top + r * row_h, w - margin, top + r * row_h))
    for c in range(len(header) + 1):
        page.rules.append((margin + c * col, top, margin + c * col, top + len(rows) * row_h))
    pages["table"] = page
    # sparse: a heading and 10 lines of 11 pt spread over the page
    page = SynthPage(LETTER, [TextLine("Memorandum on the harbor turbine review", 72.0, 72.0, 18.0)])
    state = {"cap": True}
    for i in range(10):
        page.lines.append(TextLine(_text_line(rng, rng.uniform(200, 460), 11.0, state), 72.0, 140.0 + i * 58.0, 11.0))
    pages["sparse"] = page
    return pages


def render_pages(pages: dict[str, Any], out_dir: Path, dpi: float) -> dict[str, dict]:
    """Render each page with snappy's renderer; PNG files + truth (text, box in px) per page."""
    from snappy.documents.pages import RenderOptions, load_pages
    from snappy.testing.synth import SynthDoc

    out = {}
    for name, page in pages.items():
        pdf = SynthDoc(name, [page]).write_pdf_bytes()
        img = load_pages(pdf, RenderOptions(dpi=dpi))[0].image
        path = out_dir / f"{name}.png"
        img.save(path)
        out[name] = {"image": str(path), "size": list(img.size),
                     "truth": [{"text": ln.text, "bbox": list(ln.bbox_px(dpi))} for ln in page.lines if ln.text]}
    return out


# ---------------------------------------------------------------------------- variants
# name -> (engine, options). "default" is today's snappy defaults for that engine.
# "before": the defaults before the tuning in docs/ocr.md (all cores; rapid: no memory arena).
VARIANTS: dict[str, tuple[str, dict]] = {
    "paddle:default": ("paddle", {}),
    "paddle:before": ("paddle", {"cpu_threads": 0}),
    "paddle:rec-batch1": ("paddle", {"rec_batch_size": 1}),
    "paddle:det736": ("paddle", {"det_limit_side_len": 736}),
    "paddle:det1280": ("paddle", {"det_limit_side_len": 1280}),
    "paddle:unclip2": ("paddle", {"det_unclip_ratio": 2.0}),
    "rapid:default": ("rapid", {}),
    "rapid:before": ("rapid", {"num_threads": 0, "mem_arena": False}),
    "rapid:all-cores": ("rapid", {"num_threads": 0}),
    "rapid:no-arena": ("rapid", {"mem_arena": False}),
    "rapid:rec-batch1": ("rapid", {"rec_batch_size": 1}),
    "rapid:det736": ("rapid", {"det_limit_side_len": 736}),
    "rapid:det1280": ("rapid", {"det_limit_side_len": 1280}),
    "rapid:cls": ("rapid", {"use_cls": True}),
    "rapid:rec-width48": ("rapid", {"params": {"Rec.rec_img_shape": [3, 48, 48]}}),  # no padding of short lines to 320
    # rapidocr's own defaults: detector short side >= 736, angle classifier on, all cores, no arena
    "rapid:stock": ("rapid", {"det_limit_side_len": 736, "det_limit_type": "min", "use_cls": True,
                              "num_threads": 0, "mem_arena": False}),
    "tesseract:default": ("tesseract", {}),
    "tesseract:before": ("tesseract", {"threads": 0}),
    "tesseract:psm11": ("tesseract", {"psm": 11}),
    "tesseract:oem1": ("tesseract", {"oem": 1}),  # LSTM engine only
    "tesseract:psm6": ("tesseract", {"psm": 6}),  # one uniform block: no page layout analysis
}
QUICK = ("paddle:default", "rapid:default", "tesseract:default")
BEFORE_AFTER = ("paddle:before", "paddle:default", "rapid:before", "rapid:default", "tesseract:before",
                "tesseract:default")


def _cpu() -> float:
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def run_variant(name: str, engine: str, options: dict, pages: dict[str, dict], repeats: int) -> dict:
    """In a fresh process: build the engine, warm it up, recognise every page ``repeats`` times."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from PIL import Image

    from snappy.ocr import make_ocr

    c0, w0 = _cpu(), time.perf_counter()
    ocr = make_ocr({"kind": engine, **options})
    first = next(iter(pages.values()))
    with Image.open(first["image"]) as im:
        crop = im.convert("RGB").crop((0, 0, min(im.width, 800), min(im.height, 400)))
    ocr.recognize(crop)  # rapidocr loads its models on the first call; ORT allocates on it
    out: dict[str, Any] = {"variant": name, "engine": engine, "options": options,
                           "resolved_options": ocr.options.to_dict(),
                           "load_cpu_s": _cpu() - c0, "load_wall_s": time.perf_counter() - w0, "pages": {}}
    for pname, page in pages.items():
        with Image.open(page["image"]) as im:
            img = im.convert("RGB")
        cpu, wall = [], []
        regions: list = []
        for _ in range(repeats):
            c, w = _cpu(), time.perf_counter()
            regions = ocr.recognize(img)
            wall.append(time.perf_counter() - w)
            cpu.append(_cpu() - c)
        out["pages"][pname] = {"cpu_s": cpu, "wall_s": wall,
                               "regions": [{"text": r.text, "bbox": list(r.bbox)} for r in regions]}
        log.info("%s %s: %.2f CPU-s, %.2f s wall, %d lines", name, pname, statistics.median(cpu),
                 statistics.median(wall), len(regions))
    return out


# ---------------------------------------------------------------------------- accuracy
from snappy.documents.textlayer import edit_distance  # noqa: E402  (Levenshtein, one implementation)

def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def _boxes(items) -> np.ndarray:
    return np.asarray([it["bbox"] for it in items], dtype=np.float64).reshape(-1, 4)


def _area(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # [N]


def _inter(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] intersection areas."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def score_page(truth: list[dict], regions: list[dict], iou_min: float = 0.5, assign_min: float = 0.3) -> dict:
    """CER (line-assigned) and line-box recall of ``regions`` against ``truth`` (see module doc)."""
    t_boxes, r_boxes = _boxes(truth), _boxes(regions)
    n_t, n_r = len(t_boxes), len(r_boxes)
    truth_chars = sum(len(_norm(t["text"])) for t in truth)
    if n_r == 0:
        return {"cer": 1.0, "line_recall": 0.0, "matched": 0, "truth_lines": n_t, "found": 0,
                "truth_chars": truth_chars, "char_errors": truth_chars}
    # one-to-one greedy matching by IoU
    inter = _inter(t_boxes, r_boxes)  # [T, R]
    union = _area(t_boxes)[:, None] + _area(r_boxes)[None, :] - inter
    iou = inter / np.maximum(union, 1e-9)
    pairs = sorted(((iou[i, j], i, j) for i, j in zip(*np.nonzero(iou >= iou_min))), reverse=True)
    used_t, used_r = set(), set()
    for _, i, j in pairs:
        if i not in used_t and j not in used_r:
            used_t.add(i)
            used_r.add(j)
    # text: each recognised line goes to the truth line it overlaps most
    inter = inter.T  # [R, T]
    share = inter / np.maximum(_area(r_boxes), 1e-9)[:, None]
    assigned: dict[int, list[int]] = {}
    errors = 0
    for j in range(n_r):
        i = int(np.argmax(inter[j]))
        if share[j, i] >= assign_min:
            assigned.setdefault(i, []).append(j)
        else:
            errors += len(_norm(regions[j]["text"]))  # text where there is none: insertions
    for i in range(n_t):
        js = sorted(assigned.get(i, []), key=lambda j: r_boxes[j, 0])
        hyp = _norm(" ".join(regions[j]["text"] for j in js))
        errors += edit_distance(_norm(truth[i]["text"]), hyp)
    return {"cer": errors / max(truth_chars, 1), "line_recall": len(used_t) / max(n_t, 1), "matched": len(used_t),
            "truth_lines": n_t, "found": n_r, "truth_chars": truth_chars, "char_errors": errors}


# ---------------------------------------------------------------------------- main
def _table(rows: list[dict]) -> str:
    head = ("| engine:variant | page | CPU-s/page | wall-s/page | CER % | line recall % | lines found/truth |\n"
            "|---|---|---:|---:|---:|---:|---:|")
    body = [f"| {r['variant']} | {r['page']} | {r['cpu_s']:.2f} | {r['wall_s']:.2f} | {100 * r['cer']:.2f} | "
            f"{100 * r['line_recall']:.1f} | {r['found']}/{r['truth_lines']} |" for r in rows]
    return "\n".join([head, *body])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", default="paddle,rapid,tesseract")
    p.add_argument("--variants", default=None,
                   help=f"comma-separated variant names (default: all of the chosen engines'): {', '.join(VARIANTS)}")
    p.add_argument("--pages", default="dense,two_column,table,sparse")
    p.add_argument("--repeats", type=int, default=2, help="recognitions per page (median reported)")
    p.add_argument("--dpi", type=float, default=DPI)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="today's default of each engine only, dense + sparse, 1 repeat")
    p.add_argument("--before-after", action="store_true", help="only the defaults before and after the tuning")
    p.add_argument("--out", default=None, help="write the results here (JSON)")
    p.add_argument("--keep-pages", default=None, help="write the rendered pages and truth to this folder")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.variants:
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in names if v not in VARIANTS]
        if unknown:
            p.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    else:
        names = [v for v in (QUICK if args.quick else BEFORE_AFTER if args.before_after else VARIANTS)
                 if VARIANTS[v][0] in engines]
    page_names = ["dense", "sparse"] if args.quick else [s.strip() for s in args.pages.split(",") if s.strip()]
    repeats = 1 if args.quick else args.repeats
    if "tesseract" in {VARIANTS[v][0] for v in names}:
        from snappy.ocr.tesseract import tesseract_available

        if not tesseract_available():
            log.warning("tesseract binary not found: skipping the tesseract variants")
            names = [v for v in names if VARIANTS[v][0] != "tesseract"]

    work = Path(args.keep_pages) if args.keep_pages else Path(tempfile.mkdtemp(prefix="bench_ocr_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        all_pages = make_pages(args.seed)
        unknown = [n for n in page_names if n not in all_pages]
        if unknown:
            p.error(f"unknown page type(s) {unknown}; known: {list(all_pages)}")
        pages = render_pages({n: all_pages[n] for n in page_names}, work, args.dpi)
        if args.keep_pages:
            (work / "truth.json").write_text(json.dumps(pages, indent=1))
        for n, pg in pages.items():
            log.info("page %s: %dx%d px, %d lines", n, *pg["size"], len(pg["truth"]))
        results, rows = [], []
        ctx = mp.get_context("spawn")
        for name in names:
            engine, options = VARIANTS[name]
            log.info("running %s %s", name, options)
            with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                try:
                    res = pool.submit(run_variant, name, engine, options, pages, repeats).result()
                except Exception as e:  # noqa: BLE001 - one engine failing should not end the run
                    log.error("%s failed: %s", name, e)
                    results.append({"variant": name, "engine": engine, "options": options, "error": str(e)})
                    continue
            log.info("%s: load %.1f CPU-s, %.1f s wall", name, res["load_cpu_s"], res["load_wall_s"])
            for pname, pr in res["pages"].items():
                acc = score_page(pages[pname]["truth"], pr["regions"])
                pr.update(acc)
                rows.append({"variant": name, "page": pname, "cpu_s": statistics.median(pr["cpu_s"]),
                             "wall_s": statistics.median(pr["wall_s"]), **acc})
            results.append(res)
    finally:
        if not args.keep_pages:
            shutil.rmtree(work, ignore_errors=True)
    summary = {"dpi": args.dpi, "seed": args.seed, "repeats": repeats, "cpu_count": os.cpu_count(),
               "load": {r["variant"]: {"cpu_s": r.get("load_cpu_s"), "wall_s": r.get("load_wall_s")} for r in results},
               "rows": rows, "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
        log.info("wrote %s", args.out)
    print(_table(rows))
    loads = [f"{r['variant']} {r['load_cpu_s']:.1f} CPU-s / {r['load_wall_s']:.1f} s" for r in results if "load_cpu_s" in r]
    print("\nmodel load + warm-up (not in the table): " + "; ".join(loads))


if __name__ == "__main__":
    main()
