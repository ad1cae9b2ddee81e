"""Page ranking benchmark: snappy's exact MaxSim vs LanceDB's multivector search on the same table.

    python benchmarks/bench_maxsim.py [--pages 2000] [--tokens 1024] [--queries 8] [--workdir DIR]

Writes ``--pages`` synthetic pages of ``--tokens`` x 128 float16 unit vectors into the ``pages``
table of an index (snappy's schema, through IndexStore), then times on the same table:

- snappy exact MaxSim (Searcher's PageMatrix + ``maxsim``): per query alone and batched,
  checked against a float64 reference (top-10 identical, max score difference);
- LanceDB flat multivector search (exact; slow, so only ``--lancedb-queries`` queries);
- LanceDB with an IVF_PQ index on the multivector column (cosine), recall@10 vs exact.

Queries are 32 tokens: noisy copies of 32 patches of a random page (so each query has a true
page), renormalised; all vectors are unit length, so cosine equals the dot product MaxSim uses.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import lance
import numpy as np

from snappy.search import Searcher, SearchOptions, maxsim, maxsim_reference, top_k
from snappy.storage import PAGES
from snappy.testing.synth_index import random_unit_pages, write_random_pages

log = logging.getLogger("bench_maxsim")


def make_queries(n: int, n_pages: int, n_tokens: int, q_tokens: int, dim: int, seed: int, noise: float):
    """Queries built from random pages' patches (regenerated with the writer's per-batch seeds)."""
    rng = np.random.default_rng(seed + 12345)
    targets = rng.integers(0, n_pages, size=n)
    out = []
    for t in targets:
        batch_start = (t // 250) * 250  # write_random_pages' batch layout (batch_pages=250)
        page = random_unit_pages(min(250, n_pages - batch_start), n_tokens, dim, seed + batch_start)[t - batch_start]
        pick = rng.choice(n_tokens, size=q_tokens, replace=False)
        q = page[pick].astype(np.float32) + noise * rng.standard_normal((q_tokens, dim)).astype(np.float32) / np.sqrt(dim)
        out.append(q / np.linalg.norm(q, axis=1, keepdims=True))
    return out, targets


def timed(fn, repeat: int = 1):
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pages", type=int, default=2000)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--query-tokens", type=int, default=32)
    p.add_argument("--noise", type=float, default=1.0)
    p.add_argument("--lancedb-queries", type=int, default=2, help="queries for LanceDB flat search (slow)")
    p.add_argument("--index-queries", type=int, default=8, help="queries for the LanceDB IVF_PQ index")
    p.add_argument("--partitions", type=int, default=64)
    p.add_argument("--sub-vectors", type=int, default=16)
    p.add_argument("--nprobes", type=int, default=16)
    p.add_argument("--refine-factor", type=int, default=10)
    p.add_argument("--no-lancedb", action="store_true")
    p.add_argument("--no-lancedb-index", action="store_true", help="skip the IVF_PQ part (slow to build on 2 cores)")
    p.add_argument("--workdir", default=None, help="reuse/keep the index here (default: a temp dir, removed)")
    p.add_argument("--json", dest="json_out", default=None, help="write the results here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    res: dict = {"pages": args.pages, "tokens_per_page": args.tokens, "dim": args.dim, "query_tokens": args.query_tokens}

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_maxsim-"))
    index = work / "index"
    try:
        if not (index / f"{PAGES}.lance").exists():
            t, _ = timed(lambda: write_random_pages(str(index), args.pages, args.tokens, args.dim))
            res["write_s"] = t
            log.info("wrote %d pages in %.1f s", args.pages, t)
        queries, targets = make_queries(args.queries, args.pages, args.tokens, args.query_tokens, args.dim, 0, args.noise)

        # ---- snappy exact MaxSim
        for dtype in ("float32", "float16"):
            t, s = timed(lambda: Searcher(str(index), encoder="null", options=SearchOptions(dtype=dtype)))
            m = s.state.matrix
            log.info("%s: loaded %d pages (%.0f MiB) in %.1f s", dtype, m.n_pages, m.vectors.nbytes / 2**20, t)
            single, _ = timed(lambda: [maxsim([q], m) for q in queries[:4]], repeat=2)
            r = {"load_s": t, "matrix_mib": m.vectors.nbytes / 2**20, "s_per_query_single": single / 4}
            for b in (4, 8):
                if len(queries) >= b:
                    tb, _ = timed(lambda: maxsim(queries[:b], m), repeat=2)
                    r[f"s_per_query_batch{b}"] = tb / b
            res[f"snappy_{dtype}"] = r
            log.info("snappy %s: %s", dtype, r)
        scores = maxsim(queries, m)  # [Q, pages] float32
        pages = [m.page(i) for i in range(m.n_pages)]
        t_ref, ref = timed(lambda: maxsim_reference(queries, pages))
        exact_top = top_k(scores, 10)
        res["reference_f64_s_per_query"] = t_ref / len(queries)
        res["top10_identical_to_f64"] = bool(np.array_equal(exact_top, top_k(ref, 10)))
        res["max_abs_diff_vs_f64"] = float(np.abs(scores - ref).max())
        res["max_rel_diff_vs_f64"] = float((np.abs(scores - ref) / np.abs(ref).max()).max())
        page_ids = np.asarray(s.state.page_ids)
        res["top1_is_source_page"] = float(np.mean(exact_top[:, 0] == targets))
        log.info("exact vs float64: top10 identical %s, max abs diff %.2e", res["top10_identical_to_f64"],
                 res["max_abs_diff_vs_f64"])

        if not args.no_lancedb:
            import lancedb

            tbl = lancedb.connect(str(index)).open_table(PAGES)
            exact_sets = [set(page_ids[row]) for row in exact_top]

            def lance_top(q, **kw):
                b = tbl.search(q.astype(np.float32), vector_column_name="vectors").distance_type("cosine")
                for k, v in kw.items():
                    b = getattr(b, k)(v)
                return b.select(["page_id", "_distance"]).limit(10).to_arrow().column("page_id").to_pylist()

            n = min(args.lancedb_queries, len(queries))
            if n:
                t, tops = timed(lambda: [lance_top(q) for q in queries[:n]])
                res["lancedb_flat_s_per_query"] = t / n
                res["lancedb_flat_recall10"] = float(np.mean([len(set(a) & e) / 10 for a, e in zip(tops, exact_sets)]))
                log.info("lancedb flat: %.2f s/query, recall@10 %.2f", t / n, res["lancedb_flat_recall10"])
            if args.no_lancedb_index:
                return _finish(res, args, work)
            ds = lance.dataset(str(index / f"{PAGES}.lance"))  # pylance directly: same index LanceDB uses
            t, _ = timed(lambda: ds.create_index("vectors", index_type="IVF_PQ", metric="cosine",
                                                 num_partitions=args.partitions, num_sub_vectors=args.sub_vectors))
            tbl = lancedb.connect(str(index)).open_table(PAGES)
            res["lancedb_index_build_s"] = t
            log.info("lancedb IVF_PQ index built in %.1f s", t)
            n = min(args.index_queries, len(queries))
            for label, kw in (("lancedb_ivfpq", {"nprobes": args.nprobes}),
                              ("lancedb_ivfpq_refine", {"nprobes": args.nprobes, "refine_factor": args.refine_factor})):
                lance_top(queries[0], **kw)  # warm the index cache
                t, tops = timed(lambda: [lance_top(q, **kw) for q in queries[:n]])
                res[f"{label}_s_per_query"] = t / n
                res[f"{label}_recall10"] = float(np.mean([len(set(a) & e) / 10 for a, e in zip(tops, exact_sets[:n])]))
                log.info("%s: %.3f s/query, recall@10 %.2f", label, t / n, res[f"{label}_recall10"])
            res["lancedb_index"] = {"type": "IVF_PQ", "metric": "cosine", "num_partitions": args.partitions,
                                    "num_sub_vectors": args.sub_vectors, "nprobes": args.nprobes,
                                    "refine_factor": args.refine_factor}
    except BaseException:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        raise
    _finish(res, args, work)


def _finish(res: dict, args, work: Path) -> None:
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res, indent=1))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
