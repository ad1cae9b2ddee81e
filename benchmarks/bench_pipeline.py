"""Benchmark the indexing pipeline's own cost against the limit rendering sets, side by side in one run.

    python benchmarks/bench_pipeline.py                        # 1,000 pages, 150 dpi, no-op OCR + encoder
    python benchmarks/bench_pipeline.py --pages 40 --real      # also rapid OCR + lexical encoder

For N generated text pages (``snappy.testing.synth.write_page_corpus``, Letter/A4, ``--pages-per-doc`` per
PDF) it measures, on the same cores:

1. **the limit**: render every page (pypdfium2 at ``--dpi``) and JPEG-encode it in a plain
   ``multiprocessing`` pool of one process per core -- what any pipeline must do for these pages;
2. **the pipeline**: ``run_index`` with no-op stages (``--ocr none --encoder null``: no OCR pass,
   zero vectors on a ColQwen-like grid), i.e. listing, planning, reading + hashing, rendering, JPEG,
   embedding placeholders, Lance fragment writes, streaming reports and commits, on a local Ray
   started beforehand (its start-up is reported separately);
3. **one pixel hop**: what moving a page's raw RGB pixels to a stage that reads them costs
   (``ray.put`` of the page as an Arrow row + ``ray.get`` + a PIL image), which a real OCR or
   model stage adds per page and the no-op pipeline does not pay.

Per-stage figures are milliseconds of worker time per page (from the run's reports); the CPU
split is milliseconds of CPU per page by process role (driver, Ray workers by stage, raylet/GCS,
Ray Data's own actors), sampled every 0.5 s from the process tree.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _render_encode(args) -> int:
    path, dpi, quality = args
    from snappy.documents.pages import RenderOptions, iter_pages
    from snappy.storage.schema import encode_image

    n = 0
    for page in iter_pages(str(path), RenderOptions(dpi=dpi)):
        encode_image(page.image, quality)
        n += 1
    return n


def limit(paths, dpi: float, quality: int, processes: int) -> dict:
    """Pages/s of render + JPEG in a plain process pool (one process per core)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(processes) as pool:
        pool.map(_render_encode, [(paths[0], dpi, quality)])  # warm the workers (imports)
        t = time.perf_counter()
        pages = sum(pool.map(_render_encode, [(p, dpi, quality) for p in paths], chunksize=1))
        wall = time.perf_counter() - t
    return {"pages": pages, "wall_s": round(wall, 2), "pages_per_s": round(pages / wall, 2),
            "ms_per_page_per_core": round(1000 * wall * processes / pages, 1)}


def pixel_hop(path, dpi: float, repeats: int = 20) -> dict:
    """ms to move one rendered page's pixels through the object store to a reader (one hop)."""
    import ray

    from pipelines.stages import _image, _pixels, _table
    from snappy.documents.pages import RenderOptions, iter_pages

    page = next(iter(iter_pages(str(path), RenderOptions(dpi=dpi))))
    t = time.perf_counter()
    for _ in range(repeats):
        row = _table([{"kind": "page", "width": page.width, "height": page.height}])
        row = row.set_column(row.schema.get_field_index("pixels"), "pixels", _pixels(page.image))
        got = ray.get(ray.put(row))
        _image(got, 0)
    return {"ms_per_hop": round(1000 * (time.perf_counter() - t) / repeats, 1),
            "mib_per_page": round(page.width * page.height * 3 / 2**20, 2)}


class CpuByRole:
    """CPU seconds of this process tree by role, from psutil samples (a worker is charged to the
    last stage its process title named)."""

    def __init__(self, interval: float = 0.5):
        import psutil

        self.psutil, self.interval = psutil, interval
        self.me = psutil.Process()
        self.last: dict[int, tuple[str, float]] = {}
        self.base: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _role(self, p) -> str:
        if p.pid == self.me.pid:
            return "driver"
        cmd = " ".join(p.cmdline())
        if cmd.startswith("ray::"):
            title = cmd.split()[0][5:]
            for stage in ("prepare_documents", "OcrStage", "EmbedStage", "write_pages", "LayerChecker"):
                if stage in title:
                    return stage
            return "ray-internal:" + title if title != "IDLE" else "idle-workers"
        for name in ("raylet", "gcs_server"):
            if name in cmd:
                return "raylet+gcs"
        return "ray-other"

    def _sample(self, into: dict) -> None:
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                c = p.cpu_times()
                role = self._role(p)
                prev = into.get(p.pid)
                if prev and prev[0] not in ("idle-workers",) and role == "idle-workers":
                    role = prev[0]
                into[p.pid] = (role, c.user + c.system)
            except self.psutil.Error:
                continue

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(self.last)

    def __enter__(self):
        base: dict = {}
        self._sample(base)
        self.base = {pid: cpu for pid, (_, cpu) in base.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample(self.last)

    def ms_per(self, n: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, (role, cpu) in self.last.items():
            out[role] = out.get(role, 0.0) + cpu - self.base.get(pid, 0.0)
        return {k: round(1000 * v / n, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0.01}


def pipeline(name: str, source: Path, index: Path, encoder: str, ocr: str, args) -> dict:
    from pipelines.config import IndexConfig
    from pipelines.index import run_index

    cfg = IndexConfig(str(source), str(index), encoder=encoder, ocr=ocr, dpi=args.dpi, task_num_cpus=args.task_num_cpus,
                      embed_batch_size=args.embed_batch_size, write_rows=args.write_rows, ocr_actors=1,
                      ocr_num_cpus=args.ocr_num_cpus)
    with CpuByRole() as cpu:
        t = time.perf_counter()
        s = run_index(cfg)
        wall = time.perf_counter() - t
    n = max(s["pages"], 1)
    stream = s["phase_seconds"].get("pipeline", wall)
    return {"run": name, "encoder": encoder, "ocr": ocr, "pages": s["pages"], "wall_s": round(wall, 2),
            "pages_per_s": round(s["pages"] / wall, 2), "pipeline_pages_per_s": round(s["pages"] / stream, 2),
            "commits": s["commits"], "phase_s": s["phase_seconds"], "worker_ms_per_page": s["stage_ms_per_page"],
            "cpu_ms_per_page": cpu.ms_per(n)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pages", type=int, default=1000)
    p.add_argument("--pages-per-doc", type=int, default=10)
    p.add_argument("--dpi", type=float, default=150.0)
    p.add_argument("--quality", type=int, default=85, help="JPEG quality (the pipeline's default)")
    p.add_argument("--real", action="store_true", help="also run rapid OCR + the lexical encoder")
    p.add_argument("--ocr-num-cpus", type=float, default=1.0)
    p.add_argument("--task-num-cpus", type=float, default=0.5, help="CPUs per task stage (see IndexConfig)")
    p.add_argument("--embed-batch-size", type=int, default=8)
    p.add_argument("--write-rows", type=int, default=64)
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray CPUs and pool processes (default: all)")
    p.add_argument("--object-store-memory", type=int, default=512 * 2**20)
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import ray

    from snappy.testing.synth import write_page_corpus

    cores = args.num_cpus or os.cpu_count()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="snappy-bench-"))
    paths = write_page_corpus(work / "corpus", args.pages, args.pages_per_doc)
    out: dict = {"pages": args.pages, "pages_per_doc": args.pages_per_doc, "dpi": args.dpi, "cores": cores}
    out["limit_render_jpeg"] = limit(paths, args.dpi, args.quality, cores)
    t = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=cores,
             object_store_memory=args.object_store_memory)
    out["ray_init_s"] = round(time.perf_counter() - t, 2)
    try:
        out["noop"] = pipeline("noop", work / "corpus", work / "idx-noop", "null", "none", args)
        lim = out["limit_render_jpeg"]["pages_per_s"]
        out["noop"]["share_of_limit"] = round(out["noop"]["pages_per_s"] / lim, 3)
        out["noop"]["pipeline_share_of_limit"] = round(out["noop"]["pipeline_pages_per_s"] / lim, 3)
        out["pixel_hop"] = pixel_hop(paths[0], args.dpi)
        if args.real:
            out["real"] = pipeline("real", work / "corpus", work / "idx-real", "lexical", "rapid", args)
    finally:
        ray.shutdown()
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
