"""Text layer vs OCR: CPU-s per page of snappy.textlayer.text_layer_regions and of rapid OCR.

    python benchmarks/bench_textlayer.py [--dpi 150] [--repeats 7] [--no-ocr] [--out results.json]
    python benchmarks/bench_textlayer.py --height [--out height.json]

Pages (Letter, rendered with ``PdfPage.render(scale=dpi/72)`` as snappy.pages does):

- ``dense``, ``two_column``, ``table``: bench_ocr.py's generated pages (56 lines of 9.5 pt; 2 x 54
  lines of 9 pt; a ruled 26-row table);
- ``mixed``: 30 lines of text and a pasted 300 x 200 pt raster screenshot without text layer;
- ``image_only``: the dense page as one full-page raster image (a scan, no text layer).

Per page: CPU-s (``time.process_time``, min and median of ``--repeats``) of ``text_layer_regions``
(read, hidden-text check, lines, decision), its decision, and the share of truth lines read exactly;
then rapid OCR (``make_ocr("rapid")``, 1 ONNX thread) of the whole page (one run) and, for an
``areas`` decision, of the areas only. "auto" = text layer + the OCR its decision asks for.

``--height`` measures the OCR line box against the font (what ``textlayer.OCR_*_EM`` are set from):
lines in five fonts (Helvetica, Times, Courier, DejaVu Sans and Liberation Serif TrueType when
installed) at 7-24 pt, rendered at 150 and 200 dpi, OCR'd with rapid; per matched line the box top
and bottom relative to the baseline and the padding past the glyph advances, in em.
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


def make_pages(dpi: float) -> dict[str, tuple[bytes, list[str]]]:
    """name -> (one-page PDF, truth line texts)."""
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw
    from reportlab.lib.utils import ImageReader

    from bench_ocr import make_pages as ocr_pages
    from snappy.synth import SynthDoc

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
    return out


def _cpu(fn, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.process_time()
        result = fn()
        times.append(time.process_time() - t0)
    return times, result


def run(dpi: float, repeats: int, ocr_on: bool) -> dict:
    import pypdfium2 as pdfium

    from snappy import textlayer as tl

    ocr = None
    if ocr_on:
        from snappy.ocr import make_ocr

        ocr = make_ocr("rapid", num_threads=1)
        ocr.recognize(pdfium.PdfDocument(_pdf(lambda c: c.drawString(72, 700, "warm up"))).get_page(0)
                      .render(scale=1).to_pil().convert("RGB"))
    results = {}
    for name, (data, truth) in make_pages(dpi).items():
        pdf = pdfium.PdfDocument(data)
        page = pdf[0]
        image = page.render(scale=dpi / 72).to_pil().convert("RGB")
        tl.text_layer_regions(page, image)  # warm
        times, (regions, decision) = _cpu(lambda: tl.text_layer_regions(page, image), repeats)
        got = [r.text for r in regions]
        row = {"chars": decision.counts.get("chars"), "regions": len(regions), "action": decision.action,
               "reason": decision.reason, "layer_cpu_s_min": min(times), "layer_cpu_s_median": statistics.median(times),
               "exact_lines": (sum(t in got for t in truth) / len(truth)) if truth else None}
        if ocr is not None:
            t, ocr_regions = _cpu(lambda: ocr.recognize(image), 1)
            row["ocr_cpu_s"] = t[0]
            row["ocr_regions"] = len(ocr_regions)
            extra = 0.0
            if decision.action == "full":
                extra = t[0]
            elif decision.action == "areas":
                crops = [image.crop(tuple(int(round(v)) for v in a)) for a in decision.areas]
                ta, _ = _cpu(lambda: [ocr.recognize(c) for c in crops], 1)
                row["areas_ocr_cpu_s"] = extra = ta[0]
            row["auto_cpu_s"] = row["layer_cpu_s_median"] + extra
        results[name] = row
        pdf.close()
    return results


def print_table(results: dict, dpi: float) -> None:
    print(f"\nCPU-s per page at {dpi:g} dpi (text layer: median of repeats, min in brackets)\n")
    print("| page | chars | action | regions | exact lines | text layer CPU-s | rapid OCR CPU-s | auto CPU-s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        exact = "-" if r["exact_lines"] is None else f"{r['exact_lines']:.0%}"
        ocr = f"{r['ocr_cpu_s']:.2f}" if "ocr_cpu_s" in r else "-"
        auto = f"{r['auto_cpu_s']:.3f}" if "auto_cpu_s" in r else "-"
        if "areas_ocr_cpu_s" in r:
            auto += f" (areas OCR {r['areas_ocr_cpu_s']:.2f})"
        print(f"| {name} | {r['chars']} | {r['action']} | {r['regions']} | {exact} | "
              f"{r['layer_cpu_s_median']:.4f} ({r['layer_cpu_s_min']:.4f}) | {ocr} | {auto} |")
    for name, r in results.items():
        print(f"  {name}: {r['reason']}")


# ---------------------------------------------------------------------- OCR line height
def measure_height(seed: int = 1) -> dict:
    import glob

    import pypdfium2 as pdfium
    from reportlab.pdfbase.pdfmetrics import registerFont, stringWidth
    from reportlab.pdfbase.ttfonts import TTFont

    from snappy.ocr import make_ocr
    from snappy.synth import _FILLER

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dpi", type=float, default=150.0)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-ocr", action="store_true", help="time the text layer only")
    p.add_argument("--height", action="store_true", help="measure OCR line boxes against font size instead")
    p.add_argument("--out", default=None, help="write the results here (JSON)")
    args = p.parse_args()
    if args.height:
        out = measure_height()
    else:
        results = run(args.dpi, args.repeats, not args.no_ocr)
        print_table(results, args.dpi)
        out = {"dpi": args.dpi, "repeats": args.repeats, "pages": results}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
