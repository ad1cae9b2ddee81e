"""Benchmark the indexing pipeline: pages/s per stage and end to end, the pipeline's own overhead, memory.

    python benchmarks/bench_pipeline.py --pages 40                    # lexical + rapid OCR, then no-op stages
    python benchmarks/bench_pipeline.py --pages 400 --only noop       # overhead / memory bound on a larger corpus

For N generated pages (snappy.synth text pages, Letter, ``--pages-per-doc`` per PDF) it runs
``run_index`` twice on a local Ray: once with the given OCR engine and encoder (default rapid +
lexical) and once with no-op stages (``--ocr none --encoder null``: zero vectors on a ColQwen-like
grid), which measures what listing, rendering, moving pixels between actors, building records
and writing Lance cost by themselves. Per-stage pages/s are per worker (pages / seconds that
stage spent on them); end to end is pages / wall time of the run (Ray start excluded).

Memory: a sampler sums the PSS of this process and every process under it (the local Ray:
GCS, raylet, workers, shared object store pages counted once) every 0.5 s; the peak is
reported, along with the object store size Ray was given.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def make_corpus(out: Path, pages: int, per_doc: int, seed: int = 0) -> list[Path]:
    from snappy.synth import A4_SIZE, LETTER, SynthDoc, text_page

    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for d in range(0, pages, per_doc):
        n = min(per_doc, pages - d)
        size = LETTER if (d // per_doc) % 2 == 0 else A4_SIZE
        doc = SynthDoc(f"doc{d // per_doc:05d}", [text_page(size, [f"Fact number {d + i} about item {rng.randint(0, 10**6)}."],
                                                            rng) for i in range(n)])
        paths.append(doc.write_pdf(out / f"{doc.name}.pdf"))
    return paths


class MemorySampler:
    """Peak PSS (bytes) of this process tree, sampled in a thread."""

    def __init__(self, interval: float = 0.5):
        import psutil

        self._psutil, self.interval, self.peak, self._stop = psutil, interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = self._psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(name: str, source: Path, index: Path, encoder: str, ocr: str, args) -> dict:
    from pipelines.config import IndexConfig
    from pipelines.index import run_index

    cfg = IndexConfig(str(source), str(index), encoder=encoder, ocr=ocr, dpi=args.dpi, ocr_actors=args.ocr_actors,
                      ocr_num_cpus=args.ocr_num_cpus, embed_actors=1, object_store_limit=args.object_store_limit,
                      block_bytes=int(args.block_mib * 2**20), embed_batch_size=args.embed_batch_size)
    with MemorySampler() as mem:
        t = time.perf_counter()
        s = run_index(cfg)
        wall = time.perf_counter() - t
    pages = s["pages"]
    return {
        "run": name, "encoder": encoder, "ocr": ocr, "pages": pages, "regions": s["regions"],
        "wall_s": round(wall, 2), "end_to_end_pages_per_s": round(pages / wall, 3),
        "stage_pages_per_s": {k: (round(v, 3) if v else None) for k, v in s["stage_pages_per_s"].items()},
        "stage_seconds": {k: round(v, 2) for k, v in s["stage_seconds"].items()},
        "phase_seconds": s["phase_seconds"], "peak_pss_mib": round(mem.peak / 2**20, 1), "versions": s["versions"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pages", type=int, default=40)
    p.add_argument("--pages-per-doc", type=int, default=5)
    p.add_argument("--dpi", type=float, default=150.0)
    p.add_argument("--ocr", default="rapid")
    p.add_argument("--encoder", default="lexical")
    p.add_argument("--only", choices=["real", "noop"], default=None)
    p.add_argument("--ocr-actors", type=int, default=1)
    p.add_argument("--ocr-num-cpus", type=float, default=1.0)
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray CPUs (default: all)")
    p.add_argument("--object-store-memory", type=int, default=512 * 2**20, help="local Ray object store, bytes")
    p.add_argument("--object-store-limit", type=int, default=None, help="Ray Data object store budget, bytes")
    p.add_argument("--block-mib", type=float, default=8.0, help="Ray Data target block size, MiB")
    p.add_argument("--embed-batch-size", type=int, default=8)
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None, help="write the results here too")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import ray

    work = Path(args.workdir or tempfile.mkdtemp(prefix="snappy-bench-"))
    t = time.perf_counter()
    make_corpus(work / "corpus", args.pages, args.pages_per_doc)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=args.num_cpus,
             object_store_memory=args.object_store_memory)
    ray_s = time.perf_counter() - t
    results = {"pages": args.pages, "dpi": args.dpi, "block_mib": args.block_mib, "cpus": ray.cluster_resources().get("CPU"),
               "object_store_mib": args.object_store_memory / 2**20, "generate_s": round(gen_s, 2),
               "ray_init_s": round(ray_s, 2), "runs": []}
    try:
        if args.only in (None, "real"):
            results["runs"].append(run("real", work / "corpus", work / "idx-real", args.encoder, args.ocr, args))
        if args.only in (None, "noop"):
            results["runs"].append(run("noop", work / "corpus", work / "idx-noop", "null", "none", args))
    finally:
        ray.shutdown()
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
