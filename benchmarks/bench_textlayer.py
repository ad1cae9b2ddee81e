"""Text layer vs OCR: CPU-s per page of snappy.documents.textlayer.text_layer_regions and of the OCR engines.

    python benchmarks/bench_textlayer.py [--dpi 150] [--repeats 7] [--engines rapid,paddle,tesseract]
                                         [--pdf real.pdf:1] [--no-ocr] [--out results.json]
    python benchmarks/bench_textlayer.py --height [--out height.json]
    python benchmarks/bench_textlayer.py --quality [--ocr paddle|none] [--pages 18] [--seed 0] [--out quality.json]

Pages (Letter, rendered with ``PdfPage.render(scale=dpi/72)`` as snappy.documents.pages does):

- ``dense``, ``two_column``, ``table``: bench_ocr.py's generated pages (56 lines of 9.5 pt; 2 x 54
  lines of 9 pt; a ruled 26-row table);
- ``mixed``: 30 lines of text and a pasted 300 x 200 pt raster screenshot without text layer;
- ``image_only``: the dense page as one full-page raster image (a scan, no text layer);
- ``sandwich``: that scan with the dense page's text drawn invisibly over it (render mode 3: a
  scanner's own OCR layer);
- ``real``: with ``--pdf PATH[:PAGE]``, a page of a real PDF (the figures in docs/ocr.md use page 1
  of ``test/pdfs/tracemonkey.pdf`` of github.com/mozilla/pdf.js, a pdfTeX paper; not in this repo).

Per page: CPU-s (``time.process_time``, min and median of ``--repeats``) of ``text_layer_regions``
(read, hidden-text check, lines, decision), its decision, and the share of truth lines read exactly;
then each of ``--engines`` (1 thread each) on the whole page (one run) and, for an ``areas``
decision, on the areas only. "auto" = text layer + the OCR its decision asks for (first engine).

``--height`` measures the OCR line box against the font (what ``textlayer.OCR_*_EM`` are set from):
lines in five fonts (Helvetica, Times, Courier, DejaVu Sans and Liberation Serif TrueType when
installed) at 7-24 pt, rendered at 150 and 200 dpi, OCR'd with rapid; per matched line the box top
and bottom relative to the baseline and the padding past the glyph advances, in em.

``--quality`` measures the regions themselves on the block-truth pages of docs/eval.md
(``snappy.testing.synth.block_pages(18, seed=0)``, vector text, rendered at ``--dpi`` 150) read the way the
pipeline reads them: ``snappy.documents.pages.iter_pages(pdf, RenderOptions(text_layer="auto"))`` gives each
page's image, text-layer line regions (``Page.regions``) and decision; blocks are
``snappy.regions.blocks.blocks_from_lines`` of those lines, as for OCR lines. Reported:

- text exactness: each generator line (``SynthPage.lines``, the text it drew) matched to the region of
  best IoU; mean CER (``snappy.documents.textlayer.cer``: case and spaces ignored), lines with CER > 0, lines whose
  text is not the same string, share of generator lines found at IoU >= 0.5, regions matching no line;
- ceilings as in docs/eval.md: per question of ``block_pages`` (its truth: the block's box, or a line's)
  the best IoU of any single region of the level (block level: ``blocks_from_lines`` blocks, lone lines
  included), mean over questions, per kind; for the text layer and, with ``--ocr paddle`` (default;
  ``none`` skips it), PaddleOCR (``make_ocr("paddle")``) on the same rendered images, side by side;
- image-only pages: each rendered page drawn as a lossless (Flate) full-page image into a one-page PDF
  (a scan) and as JPEG by PIL's PDF writer; read with the same ``iter_pages`` call, every one must be
  decided ``full`` (OCR) with no text-layer regions, and the lossless one renders to the very pixels
  of the vector page, so OCR sees the same image and its ceiling is the OCR column's (not re-run);
- CPU-s per page (``time.process_time``; medians of ``--repeats`` for the text layer): rendering alone
  (``text_layer="off"``), rendering + text layer (``"auto"``), their difference, ``blocks_from_lines``,
  and the OCR engine on the page (one run; PaddleOCR uses 1 thread, snappy's default).
"""
from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _pdf(draw, size=(612.0, 792.0)) -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=size, invariant=1)
    draw(c)
    c.showPage()
    c.save()
    return buf.getvalue()


def make_pages(dpi: float, real: str | None = None) -> dict[str, tuple[bytes, list[str]]]:
    """name -> (one-page PDF, truth line texts)."""
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw
    from reportlab.lib.utils import ImageReader

    from bench_ocr import make_pages as ocr_pages
    from snappy.testing.synth import SynthDoc

    out = {}
    synth = ocr_pages(0)
    for name in ("dense", "two_column", "table"):
        out[name] = (SynthDoc(name, [synth[name]]).write_pdf_bytes(), [ln.text for ln in synth[name].lines])
    text = [ln.text for ln in synth["dense"].lines[:30]]
    shot = Image.new("RGB", (600, 400), (236, 240, 246))
    d = ImageDraw.Draw(shot)
    for k in range(12):
        d.text((24, 20 + 30 * k), f"screenshot line {k}: settings, values and a status message", fill=(20, 20, 20))

    def mixed(c):
        c.setFont("Helvetica", 9.5)
        for k, t in enumerate(text):
            c.drawString(54, 740 - 12.2 * k, t)
        c.drawImage(ImageReader(shot), 150, 80, width=300, height=200)
    out["mixed"] = (_pdf(mixed), text)
    dense = pdfium.PdfDocument(out["dense"][0])[0].render(scale=200 / 72).to_pil().convert("L")
    out["image_only"] = (_pdf(lambda c: c.drawImage(ImageReader(dense), 0, 0, width=612, height=792)), [])

    def sandwich(c):  # the scan, then its text as an invisible layer where it is drawn
        c.drawImage(ImageReader(dense), 0, 0, width=612, height=792)
        from reportlab.pdfbase.pdfmetrics import getAscentDescent

        for ln in synth["dense"].lines:  # ln.y: top of the line's ink, top-left origin
            t = c.beginText(ln.x, 792 - ln.y - getAscentDescent("Helvetica", ln.font_size)[0])
            t.setTextRenderMode(3)
            t.setFont("Helvetica", ln.font_size)
            t.textLine(ln.text)
            c.drawText(t)
    out["sandwich"] = (_pdf(sandwich), [])
    if real:
        path, _, number = real.partition(":")
        doc = pdfium.PdfDocument(path)
        one = pdfium.PdfDocument.new()
        one.import_pages(doc, [int(number or 1) - 1])
        buf = io.BytesIO()
        one.save(buf)
        out["real"] = (buf.getvalue(), [])
    return out


def _cpu_now() -> float:
    """CPU-s of this process and its finished children (tesseract runs as a child process)."""
    import resource

    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + c.ru_utime + c.ru_stime


def _cpu(fn, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = _cpu_now()
        result = fn()
        times.append(_cpu_now() - t0)
    return times, result


def run(dpi: float, repeats: int, engines: list[str], real: str | None = None) -> dict:
    import pypdfium2 as pdfium

    from snappy.documents import textlayer as tl
    from snappy.ocr import make_ocr

    warm = pdfium.PdfDocument(_pdf(lambda c: c.drawString(72, 700, "warm up"))).get_page(0).render(scale=1).to_pil()
    ocrs = {}
    for name in engines:
        try:
            ocrs[name] = make_ocr({"kind": name, ("num_threads" if name == "rapid" else
                                                  "cpu_threads" if name == "paddle" else "threads"): 1})
            ocrs[name].recognize(warm.convert("RGB"))
        except Exception as e:  # tesseract not installed, ...
            print(f"{name}: not available ({e})", file=sys.stderr)
            ocrs.pop(name, None)
    results = {}
    for name, (data, truth) in make_pages(dpi, real).items():
        pdf = pdfium.PdfDocument(data)
        page = pdf[0]
        image = page.render(scale=dpi / 72).to_pil().convert("RGB")
        tl.text_layer_regions(page, image)  # warm
        times, (regions, decision) = _cpu(lambda: tl.text_layer_regions(page, image), repeats)
        got = [r.text for r in regions]
        row = {"chars": decision.counts.get("chars"), "regions": len(regions), "action": decision.action,
               "reason": decision.reason, "layer_cpu_s_min": min(times), "layer_cpu_s_median": statistics.median(times),
               "exact_lines": (sum(t in got for t in truth) / len(truth)) if truth else None}
        for k, (engine, ocr) in enumerate(ocrs.items()):
            t, ocr_regions = _cpu(lambda: ocr.recognize(image), 1)
            row[f"{engine}_cpu_s"] = t[0]
            row[f"{engine}_regions"] = len(ocr_regions)
            if k:
                continue
            extra = 0.0  # "auto" with the first engine
            if decision.action == "full":
                extra = t[0]
            elif decision.action == "areas":
                crops = [image.crop(tuple(int(round(v)) for v in a)) for a in decision.areas]
                ta, _ = _cpu(lambda: [ocr.recognize(c) for c in crops], 1)
                row["areas_ocr_cpu_s"] = extra = ta[0]
            row["auto_cpu_s"] = row["layer_cpu_s_median"] + extra
            row["auto_engine"] = engine
        results[name] = row
        pdf.close()
    return results


def print_table(results: dict, dpi: float) -> None:
    engines = [k[:-6] for k in next(iter(results.values())) if k.endswith("_cpu_s") and k[:-6] not in
               ("layer", "auto", "areas_ocr")]
    print(f"\nCPU-s per page at {dpi:g} dpi (text layer: median of repeats, min in brackets; OCR: 1 thread)\n")
    print("| page | chars | action | regions | exact lines | text layer | " + " | ".join(engines)
          + " | auto |")
    print("|---|---|---|---|---|---|" + "---|" * len(engines) + "---|")
    for name, r in results.items():
        exact = "-" if r["exact_lines"] is None else f"{r['exact_lines']:.0%}"
        auto = f"{r['auto_cpu_s']:.3f}" if "auto_cpu_s" in r else "-"
        if "areas_ocr_cpu_s" in r:
            auto += f" (areas OCR {r['areas_ocr_cpu_s']:.2f})"
        cols = " | ".join(f"{r[e + '_cpu_s']:.2f}" for e in engines)
        print(f"| {name} | {r['chars']} | {r['action']} | {r['regions']} | {exact} | "
              f"{r['layer_cpu_s_median']:.4f} ({r['layer_cpu_s_min']:.4f}) | {cols} | {auto} |")
    for name, r in results.items():
        print(f"  {name}: {r['reason']}")


# ---------------------------------------------------------------------- OCR line height
def measure_height(seed: int = 1) -> dict:
    import glob

    import pypdfium2 as pdfium
    from reportlab.pdfbase.pdfmetrics import registerFont, stringWidth
    from reportlab.pdfbase.ttfonts import TTFont

    from snappy.ocr import make_ocr
    from snappy.testing.synth import _FILLER

    fonts = ["Helvetica", "Times-Roman", "Courier"]
    for alias, pattern in (("DejaVuSans", "DejaVuSans.ttf"), ("LiberationSerif", "LiberationSerif-Regular.ttf")):
        found = glob.glob(f"/usr/share/fonts/**/{pattern}", recursive=True)
        if found:
            registerFont(TTFont(alias, found[0]))
            fonts.append(alias)
    rng = random.Random(seed)
    ocr = make_ocr("rapid", num_threads=1)
    rows = []
    for font in fonts:
        lines = []

        def draw(c):
            y = 740.0
            for fs in (7, 8, 9, 10, 11, 12, 14, 18, 24):
                for k in range(2):
                    words = " ".join(rng.choice(_FILLER) for _ in range(6 if fs < 14 else 4))
                    words = words.capitalize() if k else words
                    c.setFont(font, fs)
                    c.drawString(72, y, words)
                    lines.append((fs, 72.0, 72.0 + stringWidth(words, font, fs), y, words))
                    y -= fs * 2.2
        data = _pdf(draw)
        for dpi in (150, 200):
            s = dpi / 72
            image = pdfium.PdfDocument(data)[0].render(scale=s).to_pil().convert("RGB")
            regions = ocr.recognize(image)
            for fs, x0, x1, base, words in lines:
                by = (792 - base) * s
                hits = [r for r in regions if r.bbox[1] - 0.2 * fs * s < by < r.bbox[3] + 0.2 * fs * s
                        and r.bbox[0] < x1 * s and r.bbox[2] > x0 * s]
                if len(hits) != 1:
                    continue  # not found (small text under the detector's 960 px limit) or split
                r = hits[0]
                em = fs * s
                rows.append({"font": font, "dpi": dpi, "size": fs, "top_em": (by - r.bbox[1]) / em,
                             "bottom_em": (r.bbox[3] - by) / em, "left_em": (x0 * s - r.bbox[0]) / em,
                             "right_em": (r.bbox[2] - x1 * s) / em})
    keys = ("top_em", "bottom_em", "left_em", "right_em")
    summary = {k: {"median": float(np.median([r[k] for r in rows])),
                   "p10": float(np.percentile([r[k] for r in rows], 10)),
                   "p90": float(np.percentile([r[k] for r in rows], 90))} for k in keys}
    summary["height_em_median"] = float(np.median([r["top_em"] + r["bottom_em"] for r in rows]))
    summary["lines"] = len(rows)
    summary["fonts"] = fonts
    print(f"{len(rows)} OCR lines matched ({', '.join(fonts)}; 150 and 200 dpi)")
    for k in keys:
        print(f"  {k:10s} median {summary[k]['median']:.3f}  p10 {summary[k]['p10']:.3f}  p90 {summary[k]['p90']:.3f}")
    print(f"  height     median {summary['height_em_median']:.3f} em")
    return {"summary": summary, "rows": rows}


# ---------------------------------------------------------------------- region quality (--quality)
BLOCK_KINDS = ("paragraph", "column", "table_row", "form_field", "address", "caption")


def _boxes(regions) -> np.ndarray:
    return np.asarray([r.bbox for r in regions], np.float64).reshape(-1, 4)


def _median_cpu(fn, repeats: int):
    times, result = _cpu(fn, repeats)
    return statistics.median(times), result


def line_exactness(page, regions, dpi: float) -> list[dict]:
    """Per generator line of ``page`` (a SynthPage): the region of best IoU, its IoU and text, the CER."""
    from snappy.eval.metrics import iou_matrix
    from snappy.documents.textlayer import cer

    gt = np.asarray([ln.bbox_px(dpi) for ln in page.lines], np.float64).reshape(-1, 4)
    m = iou_matrix(gt, _boxes(regions)) if regions else np.zeros((len(gt), 0))
    rows = []
    for i, ln in enumerate(page.lines):
        j = int(m[i].argmax()) if m.shape[1] else -1
        got = regions[j].text if j >= 0 else ""
        rows.append({"text": ln.text, "got": got, "iou": float(m[i, j]) if j >= 0 else 0.0,
                     "cer": float(cer(ln.text, got)), "exact": got == ln.text})
    return rows


def _unmatched(page, regions, dpi: float, at: float = 0.5) -> int:
    """Regions that overlap no generator line at IoU >= ``at`` (split, merged or spurious lines)."""
    from snappy.eval.metrics import iou_matrix

    if not regions:
        return 0
    gt = np.asarray([ln.bbox_px(dpi) for ln in page.lines], np.float64).reshape(-1, 4)
    return int((iou_matrix(_boxes(regions), gt).max(axis=1) < at).sum())


def question_ceilings(pages, questions, lines_per_page: list[list], dpi: float) -> list[dict]:
    """Per question: its kind and the best IoU of one region of each level with its truth box."""
    from snappy.regions.blocks import blocks_from_lines
    from snappy.eval.metrics import best_iou_per_gt

    blocks = [blocks_from_lines(lines)[0] for lines in lines_per_page]
    out = []
    for q in questions:
        gt = np.asarray([pages[q.page].box_px(q.block, dpi)], np.float64)
        out.append({"page": q.page, "block": q.block, "kind": q.kind,
                    "line": float(best_iou_per_gt(gt, _boxes(lines_per_page[q.page]))[0]),
                    "block_level": float(best_iou_per_gt(gt, _boxes(blocks[q.page]))[0])})
    return out


def summarize_ceilings(rows: list[dict]) -> dict:
    """Mean ceilings per kind, over all block truth, and over line truth: {group: {n, line, block}}."""
    groups = {k: [r for r in rows if r["kind"] == k] for k in BLOCK_KINDS}
    groups["block truth"] = [r for r in rows if r["kind"] != "line"]
    groups["line truth"] = [r for r in rows if r["kind"] == "line"]
    return {g: {"n": len(rs), "line": float(np.mean([r["line"] for r in rs])) if rs else None,
                "block": float(np.mean([r["block_level"] for r in rs])) if rs else None}
            for g, rs in groups.items()}


def summarize_exactness(rows: list[dict], unmatched: int, n_regions: int) -> dict:
    cers = [r["cer"] for r in rows]
    return {"lines": len(rows), "regions": n_regions, "mean_cer": float(np.mean(cers)),
            "lines_cer_gt_0": int(sum(c > 0 for c in cers)), "lines_not_exact": int(sum(not r["exact"] for r in rows)),
            "found_iou_0.5": float(np.mean([r["iou"] >= 0.5 for r in rows])),
            "mean_iou": float(np.mean([r["iou"] for r in rows])), "regions_unmatched": unmatched,
            "worst": sorted(({"text": r["text"], "got": r["got"], "cer": r["cer"], "iou": r["iou"]}
                             for r in rows if r["cer"] > 0 or r["iou"] < 0.5), key=lambda r: -r["cer"])[:10]}


def raster_pdfs(image, width_pt: float, height_pt: float) -> dict[str, bytes]:
    """The page image as a one-page image-only PDF (a scan): ``flate`` (reportlab, lossless) and
    ``jpeg`` (PIL's PDF writer) at the image's own resolution."""
    from reportlab.lib.utils import ImageReader

    buf = io.BytesIO()
    image.save(buf, "PDF", resolution=image.width / width_pt * 72.0)
    return {"flate": _pdf(lambda c: c.drawImage(ImageReader(image), 0, 0, width=width_pt, height=height_pt),
                          size=(width_pt, height_pt)),
            "jpeg": buf.getvalue()}


def quality(dpi: float, n_pages: int, seed: int, ocr_name: str, repeats: int) -> dict:
    from snappy.regions.blocks import blocks_from_lines
    from snappy.documents.pages import RenderOptions, iter_pages
    from snappy.testing.synth import SynthDoc, block_pages

    pages, questions = block_pages(n_pages, seed)
    auto, off = RenderOptions(dpi=dpi, text_layer="auto"), RenderOptions(dpi=dpi, text_layer="off")
    per_page, layer_lines, images, exact_rows, raster = [], [], [], [], []
    unmatched = n_regions = 0
    for p, spage in enumerate(pages):
        data = SynthDoc(f"page_{p:03d}", [spage]).write_pdf_bytes()
        list(iter_pages(data, auto))  # warm
        t_auto, got = _median_cpu(lambda: list(iter_pages(data, auto)), repeats)
        t_off, _ = _median_cpu(lambda: list(iter_pages(data, off)), repeats)
        (page,) = got
        t_blocks, (blocks, _) = _median_cpu(lambda: blocks_from_lines(page.regions), repeats)
        rows = line_exactness(spage, page.regions, dpi)
        exact_rows += rows
        um = _unmatched(spage, page.regions, dpi)
        unmatched += um
        n_regions += len(page.regions)
        layer_lines.append(page.regions)
        images.append(page.image)
        per_page.append({"page": p, "action": page.decision.action, "code": page.decision.code,
                         "generator_lines": len(spage.lines), "regions": len(page.regions), "blocks": len(blocks),
                         "regions_unmatched": um, "lines_cer_gt_0": sum(r["cer"] > 0 for r in rows),
                         "render_cpu_s": t_off, "render_layer_cpu_s": t_auto, "layer_cpu_s": t_auto - t_off,
                         "blocks_cpu_s": t_blocks})
        # the same page as a scan: the text layer must send it to OCR, the pixels must not change
        for kind, scan in raster_pdfs(page.image, page.width_pt, page.height_pt).items():
            t_scan, got = _median_cpu(lambda: list(iter_pages(scan, auto)), repeats)
            t_scan_off, _ = _median_cpu(lambda: list(iter_pages(scan, off)), repeats)
            (sp,) = got
            same = sp.image.size == page.image.size and np.array_equal(np.asarray(sp.image), np.asarray(page.image))
            raster.append({"page": p, "pdf": kind, "action": sp.decision.action, "code": sp.decision.code,
                           "regions": len(sp.regions or []), "same_pixels": bool(same),
                           "layer_cpu_s": t_scan - t_scan_off, "reason": sp.decision.reason})
    rows = question_ceilings(pages, questions, layer_lines, dpi)
    out = {"dpi": dpi, "pages": n_pages, "seed": seed, "repeats": repeats, "questions": len(questions),
           "per_page": per_page, "raster": raster,
           "text_layer": {"exactness": summarize_exactness(exact_rows, unmatched, n_regions),
                          "ceilings": summarize_ceilings(rows), "ceiling_rows": rows,
                          "cpu_s_per_page": {k: float(np.mean([r[k] for r in per_page])) for k in
                                             ("render_cpu_s", "render_layer_cpu_s", "layer_cpu_s", "blocks_cpu_s")}}}
    scans = {}
    for kind in ("flate", "jpeg"):
        rs = [r for r in raster if r["pdf"] == kind]
        scans[kind] = {"pages": len(rs), "full": sum(r["action"] == "full" for r in rs),
                       "regions": sum(r["regions"] for r in rs), "same_pixels": sum(r["same_pixels"] for r in rs),
                       "codes": sorted({r["code"] for r in rs}),
                       "layer_cpu_s": float(np.mean([r["layer_cpu_s"] for r in rs]))}
    out["scans"] = scans
    if ocr_name != "none":
        from snappy.ocr import make_ocr

        ocr = make_ocr(ocr_name)
        ocr.recognize(images[0].crop((0, 0, 400, 200)))  # load and warm up
        ocr_lines, t_ocr, o_rows, o_unmatched = [], [], [], 0
        for p, (spage, image) in enumerate(zip(pages, images)):
            t, regions = _cpu(lambda: ocr.recognize(image), 1)
            t_ocr.append(t[0])
            ocr_lines.append(regions)
            o_rows += line_exactness(spage, regions, dpi)
            o_unmatched += _unmatched(spage, regions, dpi)
            per_page[p]["ocr_cpu_s"] = t[0]
            per_page[p]["ocr_regions"] = len(regions)
            t_b, _ = _median_cpu(lambda: blocks_from_lines(regions), repeats)
            per_page[p]["ocr_blocks_cpu_s"] = t_b
        rows = question_ceilings(pages, questions, ocr_lines, dpi)
        out["ocr"] = {"engine": ocr_name,
                      "exactness": summarize_exactness(o_rows, o_unmatched, sum(map(len, ocr_lines))),
                      "ceilings": summarize_ceilings(rows), "ceiling_rows": rows,
                      "cpu_s_per_page": {"ocr_cpu_s": float(np.mean(t_ocr)),
                                         "blocks_cpu_s": float(np.mean([r["ocr_blocks_cpu_s"] for r in per_page]))}}
    return out


def print_quality(q: dict) -> None:
    tl, oc = q["text_layer"], q.get("ocr")
    eng = oc["engine"] if oc else None
    print(f"\nGenerated block pages: snappy.testing.synth.block_pages({q['pages']}, seed={q['seed']}), {q['dpi']:g} dpi, "
          f"{q['questions']} questions; text layer read by iter_pages(RenderOptions(text_layer=\"auto\")); "
          f"decisions: {', '.join(sorted({r['action'] for r in q['per_page']}))}\n")
    print("Text exactness: each generator line against the region of best IoU (CER: case and spaces ignored)\n")
    print("| source | generator lines | found (IoU >= 0.5) | mean IoU | mean CER | lines CER > 0 | lines not the same string | regions | regions matching no line |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, part in (("text layer", tl), (eng, oc)):
        if part is None:
            continue
        e = part["exactness"]
        print(f"| {name} | {e['lines']} | {e['found_iou_0.5']:.1%} | {e['mean_iou']:.3f} | {e['mean_cer']:.4f} | "
              f"{e['lines_cer_gt_0']} | {e['lines_not_exact']} | {e['regions']} | {e['regions_unmatched']} |")
    print("\nCeilings (per question the best IoU of one region of the level, mean over questions), "
          "as in docs/eval.md\n")
    cols = ["truth", "n", "text layer: blocks"] + ([f"{eng}: blocks"] if oc else []) + ["text layer: lines"] \
        + ([f"{eng}: lines"] if oc else [])
    print("| " + " | ".join(cols) + " |")
    print("|---" * len(cols) + "|")
    for g, c in tl["ceilings"].items():
        o = oc["ceilings"][g] if oc else None
        bold = "**" if g in ("block truth", "line truth") else ""
        cells = [f"{c['block']:.3f}"] + ([f"{o['block']:.3f}"] if o else []) + [f"{c['line']:.3f}"] \
            + ([f"{o['line']:.3f}"] if o else [])
        print(f"| {bold}{g.replace('_', ' ')}{bold} | {c['n']} | " + " | ".join(cells) + " |")
    print("\nImage-only pages (each rendered page as a one-page image PDF, read the same way)\n")
    print("| image PDF | pages | decided full (OCR) | text-layer regions | renders to the same pixels | codes | text-layer check CPU-s/page |")
    print("|---|---|---|---|---|---|---|")
    for kind, s in q["scans"].items():
        label = {"flate": "lossless (reportlab, Flate)", "jpeg": "JPEG (PIL PDF writer)"}[kind]
        print(f"| {label} | {s['pages']} | {s['full']} | {s['regions']} | {s['same_pixels']} | "
              f"{', '.join(s['codes'])} | {s['layer_cpu_s']:.4f} |")
    if oc and q["scans"]["flate"]["same_pixels"] == q["scans"]["flate"]["pages"]:
        print(f"\nEvery lossless scan is OCR'd whole and renders to the vector page's pixels: {eng} sees the same "
              f"images, so its ceilings there are the {eng} columns above (not re-run).")
    cpu = tl["cpu_s_per_page"]
    print("\nCPU-s per page (mean over pages; text layer: medians of repeats)\n")
    print("| step | CPU-s per page |")
    print("|---|---|")
    print(f"| render only (`text_layer=\"off\"`) | {cpu['render_cpu_s']:.4f} |")
    print(f"| render + text layer (`\"auto\"`) | {cpu['render_layer_cpu_s']:.4f} |")
    print(f"| text layer (difference) | {cpu['layer_cpu_s']:.4f} |")
    print(f"| blocks_from_lines, text-layer lines | {cpu['blocks_cpu_s']:.5f} |")
    if oc:
        print(f"| {eng} OCR of the page (1 thread) | {oc['cpu_s_per_page']['ocr_cpu_s']:.2f} |")
        print(f"| blocks_from_lines, {eng} lines | {oc['cpu_s_per_page']['blocks_cpu_s']:.5f} |")
        print(f"\n{eng} / text layer: {oc['cpu_s_per_page']['ocr_cpu_s'] / max(cpu['layer_cpu_s'], 1e-9):.0f}x")
    for name, part in (("text layer", tl), (eng, oc)):
        if part and part["exactness"]["worst"]:
            print(f"\n{name}: worst lines (CER > 0 or IoU < 0.5):")
            for r in part["exactness"]["worst"][:5]:
                print(f"  CER {r['cer']:.2f} IoU {r['iou']:.2f}: {r['text']!r} -> {r['got']!r}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dpi", type=float, default=150.0)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-ocr", action="store_true", help="time the text layer only")
    p.add_argument("--engines", default="rapid,paddle,tesseract", help="OCR engines to time (first: 'auto')")
    p.add_argument("--pdf", default=None, help="also a real page: PATH[:PAGE] (1-based)")
    p.add_argument("--height", action="store_true", help="measure OCR line boxes against font size instead")
    p.add_argument("--quality", action="store_true",
                   help="text exactness and block/line ceilings of text-layer regions on the block-truth pages")
    p.add_argument("--ocr", default="paddle", help="--quality: OCR engine to compare with, or none (default paddle)")
    p.add_argument("--pages", type=int, default=18, help="--quality: generated block pages (default 18)")
    p.add_argument("--seed", type=int, default=0, help="--quality: generator seed (default 0)")
    p.add_argument("--out", default=None, help="write the results here (JSON)")
    args = p.parse_args()
    if args.height:
        out = measure_height()
    elif args.quality:
        out = quality(args.dpi, args.pages, args.seed, args.ocr, args.repeats)
        print_quality(out)
    else:
        results = run(args.dpi, args.repeats, [] if args.no_ocr else args.engines.split(","), args.pdf)
        print_table(results, args.dpi)
        out = {"dpi": args.dpi, "repeats": args.repeats, "pages": results}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
