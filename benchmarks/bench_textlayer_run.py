"""Whole index runs with the PDF text layer against OCR of every page (issue 17), on the same cores.

    python benchmarks/bench_textlayer_run.py                         # 300 pages; "before" on 25-page samples
    python benchmarks/bench_textlayer_run.py --pages 50 --sample 5 --skip before  # quick look

Corpora (``snappy.testing.synth.write_page_corpus``, 150 dpi, ``--pages-per-doc`` pages a PDF):

* **born-digital**: ``--pages`` generated text pages (vector text: every page has its text layer);
* **mix**: the same number of pages, 80 % born-digital and 20 % image-only (every fifth document
  rasterised at the render dpi into an image-only PDF: a scanner's output without its OCR layer).

Runs (``run_index``, lexical encoder, **default settings** otherwise: PaddleOCR, one OCR actor):

* **after**: ``--text-layer auto`` (the default) on the whole corpus;
* **before**: ``--text-layer off`` (every page OCR'd, as snappy did before the text layer) on a
  ``--sample``-page sample of the corpus with the same mix (OCR-bound: its pages/s does not depend on
  the corpus size, and 300 pages of paddle would take ~40 minutes here);
* **ocr-none** (born-digital only): ``--ocr none --text-layer auto``: no OCR actor at all, what Ray
  costs over the work itself;
* **limit**: render + text layer (+ JPEG, which the index stores) in a plain process pool of one
  process per core: what any pipeline must do for these pages.

Speed-ups are pages/s after / pages/s before (wall clock of ``run_index``, Ray started beforehand).
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def rasterise(pdf: Path, out: Path, dpi: float) -> Path:
    """An image-only PDF of ``pdf``'s pages rendered at ``dpi`` (no text layer)."""
    from snappy.documents.pages import RenderOptions, iter_pages

    images = [p.image.convert("RGB") for p in iter_pages(str(pdf), RenderOptions(dpi=dpi))]
    images[0].save(out, "PDF", resolution=dpi, save_all=True, append_images=images[1:])
    return out


def corpus(root: Path, pages: int, per_doc: int, image_share: float, dpi: float, seed: int = 0) -> list[Path]:
    """``pages`` pages under ``root``, every ``1/image_share``-th document rasterised (image-only)."""
    from snappy.testing.synth import write_page_corpus

    paths = write_page_corpus(root, pages, per_doc, seed=seed)
    every = round(1 / image_share) if image_share else 0
    for i, p in enumerate(paths):
        if every and i % every == every - 1:
            tmp = p.with_suffix(".tmp")
            rasterise(p, tmp, dpi)
            tmp.replace(p)
    return paths


def _limit_one(args) -> int:
    path, dpi, quality, jpeg = args
    from snappy.documents.pages import RenderOptions, iter_pages
    from snappy.storage.schema import encode_image

    n = 0
    for page in iter_pages(str(path), RenderOptions(dpi=dpi, text_layer="auto")):  # render + text layer
        if jpeg:
            encode_image(page.image, quality)
        n += 1
    return n


def limit(paths, dpi: float, processes: int, jpeg: bool, quality: int = 85) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(processes) as pool:
        pool.map(_limit_one, [(paths[0], dpi, quality, jpeg)])  # warm the workers
        t = time.perf_counter()
        n = sum(pool.map(_limit_one, [(p, dpi, quality, jpeg) for p in paths], chunksize=1))
        wall = time.perf_counter() - t
    return {"pages": n, "wall_s": round(wall, 2), "pages_per_s": round(n / wall, 2)}


def run(name: str, source: Path, index: Path, **settings) -> dict:
    from pipelines.config import IndexConfig
    from pipelines.index import run_index

    from bench_pipeline import CpuByRole  # CPU per page by process role

    shutil.rmtree(index, ignore_errors=True)
    cfg = IndexConfig(str(source), str(index), encoder="lexical", **settings)
    with CpuByRole() as cpu:
        t = time.perf_counter()
        s = run_index(cfg)
        wall = time.perf_counter() - t
    out = {"run": name, "settings": settings, "pages": s["pages"], "wall_s": round(wall, 2),
           "pages_per_s": round(s["pages"] / wall, 3), "text": s["text"],
           "worker_ms_per_page": s["stage_ms_per_page"], "cpu_ms_per_page": cpu.ms_per(max(s["pages"], 1)),
           "failed": s["documents"]["failed"]}
    logging.getLogger("bench").warning("%s: %s pages in %.1f s (%.3f pages/s)", name, s["pages"], wall, s["pages"] / wall)
    return out


def sample(paths: list[Path], n_pages: int, per_doc: int, root: Path) -> Path:
    """A folder with whole documents of ``paths`` making ``n_pages`` pages, in the corpus' proportions."""
    root.mkdir(parents=True, exist_ok=True)
    for p in paths[:max(1, n_pages // per_doc)]:  # the corpus' first documents: its pattern repeats
        shutil.copy(p, root / p.name)
    return root


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pages", type=int, default=300)
    p.add_argument("--pages-per-doc", type=int, default=5)
    p.add_argument("--sample", type=int, default=25, help="pages of the 'before' runs (whole documents; "
                                                          "the mix: one in five documents image-only)")
    p.add_argument("--dpi", type=float, default=150.0)
    p.add_argument("--ocr", default="paddle", help="the OCR engine (the default: paddle)")
    p.add_argument("--skip", default="", help="comma list of runs to skip: before,mix,limit,ocr-none")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    skip = set(filter(None, args.skip.split(",")))

    import ray

    cores = os.cpu_count()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="snappy-bench-tl-"))
    out: dict = {"pages": args.pages, "pages_per_doc": args.pages_per_doc, "sample": args.sample, "dpi": args.dpi,
                 "cores": cores, "ocr": args.ocr}
    born = corpus(work / "born", args.pages, args.pages_per_doc, 0.0, args.dpi)
    mixed = corpus(work / "mix", args.pages, args.pages_per_doc, 0.2, args.dpi, seed=1) if "mix" not in skip else []
    if "limit" not in skip:
        out["limit_render_textlayer"] = limit(born, args.dpi, cores, jpeg=False)
        out["limit_render_textlayer_jpeg"] = limit(born, args.dpi, cores, jpeg=True)
    ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=cores)
    try:
        common = {"ocr": args.ocr, "dpi": args.dpi}
        out["born_after"] = run("born-digital, text layer auto", work / "born", work / "idx", **common)
        if "ocr-none" not in skip:
            out["born_ocr_none"] = run("born-digital, --ocr none", work / "born", work / "idx", ocr="none", dpi=args.dpi)
        if "before" not in skip:
            s = sample(born, args.sample, args.pages_per_doc, work / "born-sample")
            out["born_before"] = run("born-digital sample, text layer off", s, work / "idx", text_layer="off", **common)
            out["born_speedup"] = round(out["born_after"]["pages_per_s"] / out["born_before"]["pages_per_s"], 1)
        if mixed:
            out["mix_after"] = run("80/20 mix, text layer auto", work / "mix", work / "idx", **common)
            if "before" not in skip:
                s = sample(mixed, args.sample, args.pages_per_doc, work / "mix-sample")
                out["mix_before"] = run("80/20 mix sample, text layer off", s, work / "idx", text_layer="off", **common)
                out["mix_speedup"] = round(out["mix_after"]["pages_per_s"] / out["mix_before"]["pages_per_s"], 1)
    finally:
        ray.shutdown()
    for key in ("limit_render_textlayer", "limit_render_textlayer_jpeg"):
        if key in out:
            for r in ("born_after", "born_ocr_none"):
                if r in out:
                    out[r][f"share_of_{key}"] = round(out[r]["pages_per_s"] / out[key]["pages_per_s"], 3)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
