"""Benchmark the query side: the candidate stage against the exact scan, the options it was chosen
among, LanceDB, and the region step; on data with structure, never uniform noise.

    python benchmarks/bench_search.py build --pages 30000          # write an index (+ candidate stage) once
    python benchmarks/bench_search.py scale --pages 10000,30000,100000
    python benchmarks/bench_search.py sweep --pages 100000 --configs 7478:191,12288:256   # budgets
    python benchmarks/bench_search.py options --pages 10000        # probe / pooled / binary / MUVERA / LanceDB
    python benchmarks/bench_search.py lexical --pages 5000         # lexical-encoder vectors of generated pages
    python benchmarks/bench_search.py regions                      # the region step through the real path
    python benchmarks/bench_search.py stages --pages 5000 [--logged]   # recall per stage per corpus, calibrated
    python benchmarks/bench_search.py latency --pages 5000 --old /work/main   # old vs this code, interleaved

Corpora (``stages --corpora``): ``structured``, ``flat`` (flatter vocabulary, short noisy queries),
``templates100`` / ``templates1000`` (near-duplicate template groups; ``snappy.testing.synth_index``).

Data: ``snappy.testing.synth_index.StructuredCorpus`` (documented there: a Zipf vocabulary of concept
centroids, ~45 % near-identical background tokens, noisy content tokens, queries paraphrasing a
target page's rarer concepts; 1,024 tokens x 128 per page) and, for ``lexical``, the lexical
encoder's vectors of generated text pages (``snappy.testing.synth``) with queries made of each page's words.

Every measurement of ``scale`` runs in a fresh process (RSS and cold start are that process's),
with the BLAS threads given by ``--threads`` for both the exact scan and the candidate search.
Exact ground truth: in memory up to ``--exact-max`` pages, above that regenerated chunk by chunk
from the corpus's seeds (the same float16 values the index holds). Indexes are cached in
``--workdir`` (default ``~/.cache/snappy/bench-search``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_WORK = Path(os.environ.get("SNAPPY_CACHE", Path.home() / ".cache" / "snappy")) / "bench-search"


def corpus(n: int):
    from snappy.testing.synth_index import StructuredCorpus

    return StructuredCorpus(n)


# ---------------------------------------------------------------------- build
def build(n: int, work: Path) -> Path:
    """The structured index of ``n`` pages with its candidate stage (cached)."""
    from snappy.candidates.settings import CandidateSettings
    from snappy.candidates.maintain import QuerySamples, update_candidates
    from snappy.storage import IndexStore
    from snappy.testing.synth_index import write_vector_pages

    path = work / f"structured-{n}"
    done = path / "BUILT"
    if done.is_file():  # cached: brought up to date as a nightly run would (e.g. int8 codes re-packed to 4-bit)
        with IndexStore(str(path)).writer() as w:
            out = update_candidates(w, CandidateSettings(min_pages=1, batch_pages=512))
        if out.get("action"):
            print(f"{path}: candidate stage updated: {out}", flush=True)
        return path

    c = corpus(n)
    vocab = c.vocabulary_vectors()
    t = time.perf_counter()
    store = IndexStore(str(path))
    if path.exists() and store.snapshot() is not None and store.count_rows().get("pages") == n:
        print(f"{path}: pages already written, resuming at the candidate stage", flush=True)
        write_s = None
    else:
        store = write_vector_pages(str(path), n, lambda a, b: c.pages(a, b, vocab), "synthetic:structured",
                                   name="structured", batch_pages=200)
        write_s = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    with store.writer() as w:  # the encoder's prefix tokens, as the nightly run would take them from the encoder
        out = update_candidates(w, CandidateSettings(min_pages=1, batch_pages=512),
                                QuerySamples(prefix=vocab[c.vocabulary + c.background_styles:]))
    cand_s = time.perf_counter() - t
    done.write_text(json.dumps({"pages": n, "write_s": write_s, "candidates_s": round(cand_s, 1), **out}))
    print(f"built {path}: write {write_s} s, candidate stage {cand_s:.0f} s ({out})", flush=True)
    return path


def build_from_sketch(name: str, n: int, work: Path) -> Path:
    """The Lance index of corpus ``name`` at ``n`` pages, its candidate stage taken from the in-memory
    :func:`sketch` (the same codebook and codes the nightly run computes, without coding the pages a second
    time), then calibrated by ``update_candidates`` as the nightly run does (cached)."""
    import numpy as np

    from snappy.candidates.centroids import codes_table
    from snappy.candidates.maintain import QuerySamples, update_candidates
    from snappy.candidates.settings import CandidateSettings
    from snappy.storage import IndexStore
    from snappy.storage.commit import CommitBatch
    from snappy.storage.schema import CODEBOOK, CODES, PAGES
    from snappy.storage.writer import write_fragments
    from snappy.testing.synth_index import write_vector_pages

    path = work / f"{name}-{n}-lance"
    done = path / "BUILT"
    if done.is_file():
        return path
    d = sketch(name, n, 0, work)
    c, index = d["corpus"], d["index"]
    vocab = c.vocabulary_vectors()
    t = time.perf_counter()
    store = IndexStore(str(path))
    if not (path.exists() and store.snapshot() is not None and store.count_rows().get("pages") == n):
        store = write_vector_pages(str(path), n, lambda a, b: c.pages(a, b, vocab), f"synthetic:{name}", name=name,
                                   batch_pages=200)
    write_s = time.perf_counter() - t
    z = np.load(work / f"sketch-{name}-{n}.npz")
    cb = index.codebook
    meta = store.dataset(PAGES).to_table(columns=["page_id", "doc_id", "gen"], scan_in_order=True)
    number = {pid: i for i, pid in enumerate(_page_ids(name, n))}
    order = np.array([number[p] for p in meta.column("page_id").to_pylist()])
    code_at = np.concatenate([[0], np.cumsum(z["n_codes"])])
    vec_at = np.concatenate([[0], np.cumsum(z["n_pooled"])])
    all_codes, all_pooled = z["codes"], z["pooled"]  # (each z[...] reads the whole array again)
    codes = [all_codes[code_at[i]:code_at[i + 1]] for i in order]
    pooled = [all_pooled[vec_at[i]:vec_at[i + 1]] for i in order]
    table = codes_table(cb, meta.select(["page_id", "doc_id", "gen"]), codes, pooled,
                        np.full(len(order), cb.train_similarity, np.float32), cb.dim)
    with store.writer() as w:
        w.migrate()
        frags = write_fragments(store.table_uri(CODES), table, store.storage_options)
        w.commit(CommitBatch(replace={CODEBOOK: cb.to_table()}, fragments={CODES: frags}))
    t = time.perf_counter()
    with store.writer() as w:
        out = update_candidates(w, CandidateSettings(min_pages=1, batch_pages=512),
                                QuerySamples(prefix=vocab[c.vocabulary + c.background_styles:]))
    done.write_text(json.dumps({"pages": n, "write_s": round(write_s, 1),
                                "calibration_s": round(time.perf_counter() - t, 1), **out}))
    print(f"built {path}: {out}", flush=True)
    return path


def _page_ids(name: str, n: int) -> list[str]:
    from snappy.ids import doc_id_for, page_id_for

    return [page_id_for(doc_id_for(f"{name}://{i:07d}"), 1) for i in range(n)]


def queries(n_pages: int, n: int):
    c = corpus(n_pages)
    vocab = c.vocabulary_vectors()
    qs = [c.query(j, vocab) for j in range(n)]
    return [q for q, _ in qs], [t for _, t in qs]


def exact_offline(n_pages: int, qs, k: int = 10, chunk: int = 2000) -> list[list[int]]:
    """Exact top-k page numbers for ``qs``, regenerating the corpus chunk by chunk (no index read)."""
    import numpy as np

    from snappy.search.maxsim import PageMatrix, maxsim

    c = corpus(n_pages)
    vocab = c.vocabulary_vectors()
    best = np.full((len(qs), 0), -np.inf, np.float32)
    ids = np.zeros((len(qs), 0), np.int64)
    for a in range(0, n_pages, chunk):
        b = min(n_pages, a + chunk)
        s = maxsim(qs, PageMatrix.from_pages(c.pages(a, b, vocab), np.float32))
        best = np.concatenate([best, s], axis=1)
        ids = np.concatenate([ids, np.broadcast_to(np.arange(a, b), (len(qs), b - a))], axis=1)
        keep = np.argsort(-best, axis=1, kind="stable")[:, :k]
        best, ids = np.take_along_axis(best, keep, 1), np.take_along_axis(ids, keep, 1)
    return ids.tolist()


# ---------------------------------------------------------------------- the candidate stage in memory, per corpus
def sketch(name: str, n: int, n_q: int, work: Path) -> dict:
    """The candidate stage of corpus ``name`` at ``n`` pages built in memory exactly as the nightly run
    builds it (``train_codebook`` on 2,000 sampled pages, ``page_sketch`` of every page), with the exact
    MaxSim of every page for the corpus's first ``n_q`` queries; cached in ``work`` (npz). No Lance:
    recall per stage does not depend on the storage."""
    import numpy as np
    import pyarrow as pa

    from snappy.candidates.centroids import Codebook, CentroidIndex, page_sketch
    from snappy.candidates.maintain import train_codebook
    from snappy.candidates.settings import CandidateSettings
    from snappy.testing.synth_index import corpus_named

    path = work / f"sketch-{name}-{n}.npz"
    c = corpus_named(name, n)
    vocab = c.vocabulary_vectors()
    qs = [c.query(j, vocab) for j in range(n_q)]
    queries_, targets = [q for q, _ in qs], [t for _, t in qs]
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        cb = Codebook.from_table(pa.ipc.open_file(pa.BufferReader(z["codebook"].tobytes())).read_all())
        have = z["exact"]
        exact = have if len(have) >= n_q else None
    else:
        z, cb, exact = None, None, None
    if cb is None:
        t = time.perf_counter()
        s = CandidateSettings()
        rng = np.random.default_rng(s.seed)
        pick = np.sort(rng.choice(n, size=min(n, s.train_pages), replace=False))
        cb = train_codebook([c.page(int(i), vocab) for i in pick], n * c.n_tokens, n, s, 1, "synthetic:" + name)
        codes, pooled, n_codes, n_pooled = [], [], [], []
        exact = np.zeros((n_q, n), np.float32)
        for a in range(0, n, 500):
            pages = c.pages(a, min(n, a + 500), vocab)
            for p in pages:
                cc, pp, _ = page_sketch(cb, p)
                codes.append(cc), pooled.append(pp), n_codes.append(len(cc)), n_pooled.append(len(pp))
            exact[:, a:a + len(pages)] = exact_scores(queries_, pages)
            print(f"{name} {n}: {a + len(pages)} pages coded ({time.perf_counter() - t:.0f} s)", flush=True)
        sink = pa.BufferOutputStream()
        tbl = cb.to_table()
        with pa.ipc.new_file(sink, tbl.schema) as w:
            w.write_table(tbl)
        np.savez(path, codebook=np.frombuffer(sink.getvalue().to_pybytes(), np.uint8), codes=np.concatenate(codes),
                 n_codes=np.asarray(n_codes), pooled=np.concatenate(pooled), n_pooled=np.asarray(n_pooled),
                 exact=exact)
        z = np.load(path, allow_pickle=False)
    if exact is None:
        raise SystemExit(f"{path} holds the exact scores of fewer than {n_q} queries: remove it to rebuild")
    index = CentroidIndex._from_arrays(cb, z["n_codes"], z["codes"], z["n_pooled"], z["pooled"], z["pooled"].shape[1])
    return {"corpus": c, "index": index, "queries": queries_, "targets": targets, "exact": exact[:n_q]}


def pseudo(name: str, n: int, n_q: int, work: Path, d: dict | None = None, **kw) -> tuple[list, "np.ndarray"]:
    """Pseudo-queries of the corpus (``calibrate.pseudo_queries`` from ``n_q`` random pages, after the
    corpus's prefix tokens, as the encoder would give them) and their exact MaxSim over every page (cached)."""
    import numpy as np

    from snappy.candidates.calibrate import pseudo_queries

    d = d or sketch(name, n, 0, work)
    tag = "-".join(f"{k}{v}" for k, v in sorted(kw.items()))
    path = work / f"pseudo-{name}-{n}-{n_q}{tag}.npz"
    if path.is_file():
        z = np.load(path)
        lengths = z["lengths"]
        qs = np.split(z["queries"], np.cumsum(lengths)[:-1])
        return qs, z["exact"], z["hard"]
    c, index = d["corpus"], d["index"]
    vocab = c.vocabulary_vectors()
    rng = np.random.default_rng(1)
    pick = np.sort(rng.choice(n, size=n_q, replace=False))
    prefix = vocab[c.vocabulary + c.background_styles:]
    qs, hard = pseudo_queries([c.page(int(i), vocab) for i in pick], index.codebook, np.diff(index.list_indptr),
                              rng, prefix, **kw)
    exact = np.zeros((len(qs), n), np.float32)
    for a in range(0, n, 500):
        exact[:, a:min(n, a + 500)] = exact_scores(qs, c.pages(a, min(n, a + 500), vocab))
    np.savez(path, queries=np.concatenate(qs), lengths=np.array([len(q) for q in qs]), exact=exact, hard=hard)
    return qs, exact, hard


def logged_queries(name: str, n: int, n_q: int, work: Path, d: dict) -> tuple[list, "np.ndarray"]:
    """The corpus's queries ``1000 ... 1000 + n_q`` (disjoint from the measured ones) as the service's log
    would hold them, with their exact MaxSim over every page (cached)."""
    import numpy as np

    path = work / f"logged-{name}-{n}-{n_q}.npz"
    c = d["corpus"]
    vocab = c.vocabulary_vectors()
    qs = [c.query(j, vocab)[0] for j in range(1000, 1000 + n_q)]
    if path.is_file():
        return qs, np.load(path)["exact"]
    exact = np.zeros((len(qs), n), np.float32)
    for a in range(0, n, 500):
        exact[:, a:min(n, a + 500)] = exact_scores(qs, c.pages(a, min(n, a + 500), vocab))
    np.savez(path, exact=exact)
    return qs, exact


def stages(names: list[str], sizes: list[int], n_q: int, work: Path, target: float = 0.95,
           logged: bool = False) -> list[dict]:
    """Per corpus and size: the calibration (on pseudo-queries; with ``logged``, as the nightly run with a
    query log: on 100 other queries of the corpus standing for the log, and the pseudo-queries) and the recall per stage it gives on the
    corpus's own queries, beside the old defaults (``default_budgets``, fixed rerank)."""
    import numpy as np

    from snappy.candidates.calibrate import Budgets, calibrate, row_estimate, stage_recall
    from snappy.candidates.centroids import default_budgets

    rows = []
    for name in names:
        for n in sizes:
            d = sketch(name, n, n_q, work)
            pq, pex, hard = pseudo(name, n, n_q, work, d)
            groups = None
            if logged:  # as the nightly run measures with a query log: logged and pseudo-queries, each must pass
                lq, lex = logged_queries(name, n, n_q, work, d)
                pq, pex, hard = lq + pq, np.concatenate([lex, pex]), None
                groups = np.array(["logged"] * len(lq) + ["pseudo"] * (len(pq) - len(lq)))
            t = time.perf_counter()
            cal = calibrate(d["index"], pq, pex, target, n_pages=n, hard=hard, groups=groups)
            cal_s = time.perf_counter() - t
            pool, cand = default_budgets(n)
            old = Budgets(112, pool, cand, cand)
            real = stage_recall(d["index"], d["queries"], d["exact"], [old, cal.chosen])
            est = {json.dumps(r["budgets"], sort_keys=True): row_estimate(r) for r in cal.curve}  # the frontier
            check = stage_recall(d["index"], d["queries"], d["exact"], [Budgets(**r["budgets"]) for r in cal.curve])
            diffs = [r["recall"] - est[json.dumps(r["budgets"], sort_keys=True)] for r in check]
            row = {"corpus": name, "pages": n, "queries": n_q, "calibrated_on": "logged" if logged else "pseudo",
                   "calibration_s": round(cal_s, 1),
                   "before": {k: real[0][k] for k in ("probe", "pooled", "recall", "reranked", "cost_ms")},
                   "chosen": cal.chosen.__dict__, "estimate": cal.estimate,
                   "estimate_hard": next((r.get("recall_hard") for r in cal.curve if Budgets(**r["budgets"]) == cal.chosen),
                                         None),
                   "after": {k: real[1][k] for k in ("probe", "pooled", "recall", "reranked", "cost_ms")},
                   "curve_measured_minus_estimated": {"mean": round(float(np.mean(diffs)), 3),
                                                      "mean_abs": round(float(np.mean(np.abs(diffs))), 3)}}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def choice(names: list[str], sizes: list[int], n_q: int, work: Path, target: float = 0.95,
           margins: tuple[float, ...] = (0.0, 1.0, 1.5, 2.0, 3.0)) -> list[dict]:
    """How the calibration's choice holds on queries it did not see: the whole grid measured on the
    calibration queries (pseudo-queries; the corpus's queries 1000+ standing for the log) and on the
    corpus's own queries; per margin (``floor``'s standard errors), the point chosen on the first, its
    estimate, and its recall on the second."""
    from snappy.candidates.calibrate import choose, default_grid, row_estimate, stage_recall

    rows = []
    for name in names:
        for n in sizes:
            d = sketch(name, n, n_q, work)
            grid = default_grid(n)

            def cached(tag: str, make) -> list[dict]:  # a grid's curve, kept: the rules are compared for free
                path = work / f"curve-{name}-{n}-{n_q}-{tag}.json"
                if not path.is_file():
                    path.write_text(json.dumps(make()))
                return json.loads(path.read_text())

            real = {json.dumps(r["budgets"], sort_keys=True): r
                    for r in cached("real", lambda: stage_recall(d["index"], d["queries"], d["exact"], grid, n_pages=n))}
            curves = {}
            for on in ("pseudo", "logged", "both"):
                if on == "both":  # each group must pass (what the nightly run does with a query log)
                    curve = [dict(r, groups={"logged": {"recall": g["recall"], "se": g["se"]},
                                             "pseudo": {"recall": p["recall"], "se": p["se"]}},
                                  recall=(g["recall"] + p["recall"]) / 2, se=0.0)
                             for r, g, p in zip(curves["pseudo"], curves["logged"], curves["pseudo"])]
                    for r in curve:
                        r.pop("recall_hard", None)
                else:
                    qs, ex, hard = logged_queries(name, n, n_q, work, d) + (None,) if on == "logged" else \
                        pseudo(name, n, n_q, work, d)
                    curve = curves[on] = cached(on, lambda: stage_recall(d["index"], qs, ex, grid, n_pages=n, hard=hard))
                for z in margins:
                    row = choose(curve, target, z)
                    m = real[json.dumps(row["budgets"], sort_keys=True)]
                    out = {"corpus": name, "pages": n, "calibrated_on": on, "margin_se": z,
                           "budgets": row["budgets"], "estimate": row_estimate(row), "measured": m["recall"],
                           "error": round(m["recall"] - row["recall"], 3), "reranked": m["reranked"],
                           "cost_ms": m["cost_ms"]}
                    print(json.dumps(out), flush=True)
                    rows.append(out)
    return rows


def exact_scores(qs, pages) -> "np.ndarray":
    """``[len(qs), len(pages)]`` exact MaxSim (float32 of the stored float16 values)."""
    import numpy as np

    from snappy.search.maxsim import PageMatrix, maxsim

    return maxsim(qs, PageMatrix.from_pages(pages, np.float32)).astype(np.float32)


# ---------------------------------------------------------------------- one measurement, in its own process
MEASURE = r"""
import json, os, sys, time
import numpy as np, psutil
sys.path.insert(0, sys.argv[5])
import bench_search as B
from snappy.search import Searcher, SearchOptions
from snappy.candidates.centroids import CandidateOptions
path, mode, n_pages, n_q = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
opts = json.loads(sys.argv[6])
proc = psutil.Process()
t = time.perf_counter()
s = Searcher(path, options=SearchOptions(mode=mode, exact_max_pages=0, candidates=CandidateOptions(**opts)))
cold = time.perf_counter() - t
qs, targets = B.queries(n_pages, n_q)
s.search_vectors(qs[:2], top_pages=10)  # warm-up
lat, tops = [], []
for q in qs:
    t = time.perf_counter()
    (res,) = s.search_vectors([q], top_pages=10)
    lat.append(time.perf_counter() - t)
    tops.append([int(p.uri.rsplit("/", 1)[-1]) for p in res])  # structured://<page number>
# VmHWM: this process's own peak (ru_maxrss keeps the parent's RSS at fork across the exec: 3 GB at 30k)
peak_mb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024  # KiB
print(json.dumps({"mode": s.state.mode, "cold_start_s": round(cold, 2), "rss_mb": round(proc.memory_info().rss / 2**20),
                  "peak_rss_mb": round(peak_mb),
                  "median_ms": round(1000 * float(np.median(lat)), 1), "p90_ms": round(1000 * float(np.percentile(lat, 90)), 1),
                  "tops": tops, "info": s.info()}))
"""


def measure(path: Path, mode: str, n_pages: int, n_q: int, threads: int, options: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), mode, str(n_pages), str(n_q),
                          str(Path(__file__).parent), json.dumps(options)],
                         capture_output=True, text=True, env=env, timeout=7200)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def latency(n: int, work: Path, n_q: int, old: Path, rounds: int) -> dict:
    """Median latency of the candidate path of another checkout (``old``: e.g. the main branch) and of
    this one on the same index, interleaved (old, new, old, new, ...: the same machine load for both),
    each run in a fresh process with one BLAS thread and that checkout's interpreter."""
    import numpy as np

    path = build_from_sketch("structured", n, work)
    sides = {"old": old.resolve(), "new": REPO}
    out: dict = {"pages": n, "queries": n_q, "rounds": rounds, "old": str(sides["old"]), "runs": []}
    for r in range(rounds):
        for name, repo in sides.items():
            py = repo / ".venv" / "bin" / "python"
            env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "PYTHONPATH": str(repo)}
            load = os.getloadavg()[0]
            res = subprocess.run([str(py if py.exists() else sys.executable), "-c", MEASURE, str(path), "candidates",
                                  str(n), str(n_q), str(repo / "benchmarks"), "{}"], capture_output=True, text=True,
                                 env=env, timeout=7200)
            if res.returncode:
                raise RuntimeError(res.stderr[-3000:])
            m = json.loads(res.stdout.strip().splitlines()[-1])
            run = {"side": name, "round": r, "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
                   **{k: m[k] for k in ("median_ms", "p90_ms", "rss_mb", "peak_rss_mb", "cold_start_s")},
                   "tops": m["tops"], "budgets": m["info"].get("budgets")}
            print(json.dumps({k: v for k, v in run.items() if k != "tops"}), flush=True)
            out["runs"].append(run)
    for name in sides:
        med = [r["median_ms"] for r in out["runs"] if r["side"] == name]
        out[f"{name}_median_ms"] = round(float(np.median(med)), 1)
    out["ratio_new_old"] = round(out["new_median_ms"] / out["old_median_ms"], 2)
    return out


def recall(got: list[list[int]], truth: list[list[int]], k: int = 10) -> float:
    return sum(len(set(g[:k]) & set(t[:k])) / k for g, t in zip(got, truth)) / len(truth)


def scale(sizes: list[int], work: Path, n_q: int, threads: int, exact_max: int, options: dict) -> list[dict]:
    rows = []
    for n in sizes:
        path = build(n, work)
        qs, _ = queries(n, n_q)
        row = {"pages": n, "threads": threads, "build": json.loads((path / "BUILT").read_text())}
        cand = measure(path, "candidates", n, n_q, threads, options)
        cached = work / f"exact-{n}-{n_q}q-{threads}t.json"  # the exact side does not depend on the options
        if cached.is_file():
            row["exact"] = json.loads(cached.read_text())
            truth = row["exact"].pop("tops")
        elif n <= exact_max:
            ex = measure(path, "exact", n, n_q, threads, options)
            cached.write_text(json.dumps(ex))
            truth = ex.pop("tops")
            row["exact"] = ex
        else:
            t = time.perf_counter()
            truth = exact_offline(n, qs)
            row["exact"] = {"offline_s": round(time.perf_counter() - t, 1)}
            cached.write_text(json.dumps({**row["exact"], "tops": truth}))
        row["candidates"] = {k: v for k, v in cand.items() if k != "tops"}
        row["recall@10"] = round(recall(cand["tops"], truth), 4)
        if "median_ms" in row["exact"]:
            row["speedup_median"] = round(row["exact"]["median_ms"] / cand["median_ms"], 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- budgets swept on one loaded index
def sweep(n: int, n_q: int, configs: list[tuple[int, int]], work: Path) -> list[dict]:
    """For each (pool, candidates): share of the exact top-10 the probe keeps, the pooled stage keeps,
    the final top-10 holds, and the latency (one searcher loaded once; truth from ``scale``'s cache)."""
    import dataclasses

    import numpy as np

    from snappy.search import Searcher, SearchOptions
    from snappy.candidates.centroids import CandidateOptions

    path = build(n, work)
    cached = sorted(work.glob(f"exact-{n}-*q-1t.json"))
    qs, _ = queries(n, n_q)
    truth = json.loads(cached[-1].read_text())["tops"][:n_q] if cached else exact_offline(n, qs)
    s = Searcher(str(path), options=SearchOptions(mode="candidates", exact_max_pages=0))
    st = s.state
    number = np.array([int(st.doc_uri[d].rsplit("/", 1)[-1]) for d in st.page_doc])  # state page -> page number
    rows = []
    for pool, cand in configs:
        s.options = dataclasses.replace(s.options, candidates=CandidateOptions(pool=pool, candidates=cand))
        holds, after, lat, final = [], [], [], []
        for q, tr in zip(qs, truth):
            probed = st.index.probe(q, s.options.candidates.nprobe, pool, s.options.candidates.probe_budget)
            holds.append(len(set(number[st.index_pages[probed]]) & set(tr)) / 10)
            kept = st.index._search_one(q, s.options.candidates)
            after.append(len(set(number[st.index_pages[kept]]) & set(tr)) / 10)
            t = time.perf_counter()
            (res,) = s.search_vectors([q], top_pages=10)
            lat.append(time.perf_counter() - t)
            final.append(len({int(r.uri.rsplit("/", 1)[-1]) for r in res} & set(tr)) / 10)
        row = {"pages": n, "pool": pool, "candidates": cand, "probe_holds": round(float(np.mean(holds)), 3),
               "after_pooled": round(float(np.mean(after)), 3), "recall@10": round(float(np.mean(final)), 3),
               "median_ms": round(1000 * float(np.median(lat)), 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- the options compared
def options(n: int, n_q: int, lancedb_queries: int, work: Path) -> dict:
    """Each first-stage option's recall of the exact top-10 vs the candidates it needs, same data."""
    import numpy as np

    from snappy.candidates.centroids import CandidateOptions, Codebook, CentroidIndex, default_k, pool_page
    from snappy.search.maxsim import PageMatrix, maxsim, top_k

    c = corpus(n)
    vocab = c.vocabulary_vectors()
    pages = c.pages(0, n, vocab)
    m = PageMatrix.from_pages(pages, np.float32)
    qs, _ = queries(n, n_q)
    t = time.perf_counter()
    exact_scores = maxsim(qs, m)
    exact_ms = 1000 * (time.perf_counter() - t) / len(qs)
    truth = top_k(exact_scores, 10)
    out: dict = {"pages": n, "queries": n_q, "exact_ms_per_query": round(exact_ms, 1), "options": {}}

    def curve(name: str, scores, budgets=(32, 64, 128, 256, 512, 1024), extra=None):
        rec = {}
        for b in budgets:
            top = top_k(scores, min(b, scores.shape[1]))
            rec[b] = round(float(np.mean([len(set(truth[i]) & set(top[i])) / 10 for i in range(len(qs))])), 3)
        out["options"][name] = {"recall@10_within_top_M": rec, **(extra or {})}
        print(name, out["options"][name], flush=True)

    # PLAID-style centroids: probe score (best probed centroid per token) and centroid interaction
    rng = np.random.default_rng(0)
    k = default_k(n * c.n_tokens)
    cb = Codebook.train(m.vectors[rng.choice(len(m.vectors), min(len(m.vectors), 1 << 18), replace=False)], k, 1, n)
    codes = [np.unique(cb.assign(p.astype(np.float32))[0]) for p in pages]
    import pyarrow as pa

    pooled = [pool_page(p.astype(np.float32), 8) for p in pages]
    cb4 = cb.with_pool_ranges(np.concatenate(pooled[:256]))  # as the indexing run fits them
    idx = CentroidIndex.build(cb4, pa.array(codes, pa.list_(pa.int32())), pa.array(
        [cb4.pack4(p).tolist() for p in pooled], pa.list_(pa.list_(pa.uint8(), 64))))
    probe_scores = np.stack([idx.probe_scores(q, 8, CandidateOptions().probe_budget) for q in qs])
    curve("centroids: probe (nprobe 8)", probe_scores, (256, 512, 1024, 2048, 4096),
          {"bytes_per_page_in_ram": int(np.mean([len(x) for x in codes]) * 2 * 2), "k": k})
    ci = np.stack([[float((q @ cb.centroids[c].T).max(axis=1).sum()) for c in codes] for q in qs])
    curve("centroids: centroid interaction (all codes)", ci)
    pm = PageMatrix.from_pages([cb.quantize(p).astype(np.float32) * cb.pool_scale for p in pooled], np.float32)
    curve("token pooling 8:1, int8 (16 KB/page)", maxsim(qs, pm), extra={"bytes_per_page_in_ram": 16 * 1024})
    pm4 = PageMatrix.from_pages([cb4.unpack4(cb4.pack4(p)) for p in pooled], np.float32)
    curve("token pooling 8:1, 4 bits per dimension (8 KB/page)", maxsim(qs, pm4),
          extra={"bytes_per_page_in_ram": 8 * 1024})
    pm12 = PageMatrix.from_pages([cb.quantize(pool_page(p.astype(np.float32), 12)).astype(np.float32) * cb.pool_scale
                                  for p in pages], np.float32)
    curve("token pooling 12:1, int8 (11 KB/page)", maxsim(qs, pm12), extra={"bytes_per_page_in_ram": 85 * 128})
    pm16 = PageMatrix.from_pages([pool_page(p.astype(np.float32), 16) for p in pages], np.float32)
    curve("token pooling 16:1, float", maxsim(qs, pm16), extra={"bytes_per_page_in_ram": 64 * 128 * 4})
    curve("binary tokens, q . sign(d) (16 KB/page)", maxsim(qs, PageMatrix(np.sign(m.vectors), m.offsets)),
          extra={"bytes_per_page_in_ram": c.n_tokens * 16})
    fde_pages = np.stack([_fde(p.astype(np.float32), False) for p in pages])
    fde_q = np.stack([_fde(q, True) for q in qs])
    curve(f"MUVERA FDE ({fde_pages.shape[1]} dims)", fde_q @ fde_pages.T, (64, 256, 1024, 2048, 4096),
          {"bytes_per_page_in_ram": fde_pages.shape[1] * 4})
    # the full pipeline: probe 2048 -> pooled -> 96 -> exact
    got = [idx._search_one(q, CandidateOptions()) for q in qs]
    rec = np.mean([len(set(truth[i]) & set(g[top_k(exact_scores[i:i + 1, g], 10)[0]])) / 10
                   for i, g in enumerate(got)])
    out["snappy_pipeline_recall@10"] = round(float(rec), 3)
    if lancedb_queries:
        out["lancedb"] = lancedb_compare(pages, qs[:lancedb_queries], truth[:lancedb_queries], work / f"lancedb-{n}")
    return out


def _fde(vecs, is_query: bool, k_sim: int = 5, d_proj: int = 16, reps: int = 20, seed: int = 0):
    """MUVERA fixed-dimensional encoding (SimHash partitions, sum for queries / mean for documents,
    random ±1 projections, ``reps`` repetitions): ``reps * 2**k_sim * d_proj`` dims."""
    import numpy as np

    out, b = [], 2 ** k_sim
    for r in range(reps):
        rng = np.random.default_rng([seed, r])
        g = rng.standard_normal((vecs.shape[1], k_sim)).astype(np.float32)
        proj = rng.choice([-1.0, 1.0], size=(vecs.shape[1], d_proj)).astype(np.float32) / np.sqrt(d_proj)
        bucket = ((vecs @ g > 0) * (1 << np.arange(k_sim))).sum(1)
        agg = np.zeros((b, vecs.shape[1]), np.float32)
        np.add.at(agg, bucket, vecs)
        if not is_query:
            cnt = np.bincount(bucket, minlength=b)
            agg[cnt > 0] /= cnt[cnt > 0][:, None]
        out.append((agg @ proj).reshape(-1))
    return np.concatenate(out)


def lancedb_compare(pages, qs, truth, path: Path) -> dict:
    """LanceDB's own multivector search (flat, and IVF_PQ with refine) on the same pages and queries."""
    import lancedb
    import numpy as np
    import pyarrow as pa

    from snappy.storage.schema import vectors_array

    path.mkdir(parents=True, exist_ok=True)
    db = lancedb.connect(str(path))
    if "pages" not in db.table_names():
        tbl = db.create_table("pages", pa.table({"id": np.arange(len(pages)),
                                                  "vectors": vectors_array([p.astype(np.float32) for p in pages])
                                                  .cast(pa.list_(pa.list_(pa.float32(), 128)))}))
    else:
        tbl = db.open_table("pages")
    out = {}
    for name, build in (("flat", None), ("ivf_pq", dict(metric="cosine", num_partitions=256, num_sub_vectors=16))):
        if build is not None and not tbl.list_indices():
            t = time.perf_counter()
            tbl.create_index(vector_column_name="vectors", index_type="IVF_PQ", **build)
            out["ivf_pq_build_s"] = round(time.perf_counter() - t, 1)
        lat, rec = [], []
        for q, tr in zip(qs, truth):
            t = time.perf_counter()
            search = tbl.search(q.tolist(), vector_column_name="vectors").limit(10)
            if build is not None:
                search = search.nprobes(16).refine_factor(10)
            res = search.to_arrow()
            lat.append(time.perf_counter() - t)
            rec.append(len(set(res.column("id").to_pylist()) & set(int(x) for x in tr)) / 10)
        out[name] = {"median_ms": round(1000 * float(np.median(lat)), 1), "recall@10": round(float(np.mean(rec)), 3)}
        print("lancedb", name, out[name], flush=True)
    return out


# ---------------------------------------------------------------------- lexical-encoder pages
def lexical(n: int, n_q: int, work: Path) -> dict:
    """Lexical-encoder vectors of ``n`` generated text pages; queries are each target page's fact words."""
    import random

    import numpy as np

    from snappy.encoders.lexical import LexicalEncoder
    from snappy.regions.region import Region
    from snappy.search import Searcher, SearchOptions
    from snappy.candidates.settings import CandidateSettings
    from snappy.candidates.maintain import update_candidates
    from snappy.testing.synth_index import write_vector_pages
    from snappy.testing.synth import LETTER, text_page

    enc = LexicalEncoder()
    rng = random.Random(0)
    facts = [f"the {rng.choice(['valve', 'ledger', 'turbine', 'invoice', 'harbor', 'ferry'])} number {i} "
             f"reads {rng.randint(100, 999)} units of {rng.choice(['cobalt', 'amber', 'saffron', 'granite'])}"
             for i in range(n)]
    dpi = 100.0

    def vectors(a: int, b: int):
        out = []
        for i in range(a, b):
            page = text_page(LETTER, [facts[i]], random.Random(i), n_lines=18)
            size = (round(LETTER[0] * dpi / 72), round(LETTER[1] * dpi / 72))
            regions = [Region(bbox=tuple(v * dpi / 72 for v in ln.bbox_pt), page_size=size, text=ln.text)
                       for ln in page.lines]
            out.append(enc.embed_regions(size, regions).vectors)
        return out

    path = work / f"lexical-{n}"
    if not (path / "BUILT").is_file():
        store = write_vector_pages(str(path), n, vectors, enc.encoder_id, name="lexical")
        with store.writer() as w:
            update_candidates(w, CandidateSettings(min_pages=1))
        (path / "BUILT").write_text("{}")
    targets = list(range(0, n, max(1, n // n_q)))[:n_q]
    qs = [enc.embed_queries([facts[i].split(" reads ")[0]])[0] for i in targets]
    exact = Searcher(str(path), options=SearchOptions(mode="exact"))
    cand = Searcher(str(path), options=SearchOptions(mode="candidates"))
    e_idx, e_sc = exact.rank(qs, 10)
    c_idx, c_sc = cand.rank(qs, 10)
    # Lexical scores tie a lot (every page with "the valve number" scores alike after the target):
    # a candidate page counts when its exact score reaches the exact 10th best (tie-aware recall)
    rec = np.mean([len({exact.state.page_ids[i] for i in a} & {cand.state.page_ids[i] for i in b}) / 10
                   for a, b in zip(e_idx, c_idx)])
    tie_rec = np.mean([np.count_nonzero(c >= e[-1] - 1e-4) / 10 for c, e in zip(c_sc, e_sc)])
    from snappy.ids import doc_id_for, page_id_for

    want = [page_id_for(doc_id_for(f"lexical://{i:07d}"), 1) for i in targets]
    hit = {m: float(np.mean([w in {s.state.page_ids[j] for j in row} for w, row in zip(want, ix)]))
           for m, s, ix in (("exact", exact, e_idx), ("candidates", cand, c_idx))}
    t = time.perf_counter()
    for q in qs:
        exact.rank([q], 10)
    e_ms = 1000 * (time.perf_counter() - t) / len(qs)
    t = time.perf_counter()
    for q in qs:
        cand.rank([q], 10)
    c_ms = 1000 * (time.perf_counter() - t) / len(qs)
    out = {"pages": n, "queries": len(qs), "recall@10 (page ids)": round(float(rec), 3),
           "recall@10 (tie-aware)": round(float(tie_rec), 3), "target_in_top10": hit, "exact_ms": round(e_ms, 1),
           "candidates_ms": round(c_ms, 1), "tokens_per_page": int(exact.state.n_tokens.mean())}
    print(json.dumps(out), flush=True)
    return out


# ---------------------------------------------------------------------- the region step
def regions(repeat: int) -> dict:
    """The region step per page through the searcher's own path, side by side with Snappy's scorer:
    100 regions, a 24x31 grid, 20 query tokens (as ``bench_propagation.py``)."""
    import numpy as np
    import pyarrow as pa

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_propagation import line_regions, per_call_us, reference_scores

    from snappy.patches.grid import PatchGrid
    from snappy.regions.propagation import Threshold, patch_scores, region_scores, select_regions
    from snappy.regions.region import Region
    from snappy.search.region_rows import REGION_COLUMNS, RegionStore, build_page_regions
    from snappy.indexing.records import region_records

    rng = np.random.default_rng(0)
    grid = PatchGrid.uniform("colqwen2.5", (1700, 2200), rows=31, cols=24, model_size=(672, 868))
    query = rng.normal(size=(20, 128)).astype(np.float32)
    patches = rng.normal(size=(grid.n_tokens, 128)).astype(np.float32)
    boxes = line_regions(rng, 100, 1700, 2200)
    regs = [Region(bbox=tuple(b), page_size=(1700, 2200), text="x") for b in boxes]
    pages = 10  # regions are fetched and their weights built for all result pages of a query at once
    rows = [r for p in range(pages) for r in region_records(f"d{p:015d}", 1, regs, grid, blocks=False)]
    table = pa.Table.from_pylist(rows).select(REGION_COLUMNS)
    # the same lines stored with their blocks, as the indexing run writes them (level "auto" selection)
    rows_b = [r for p in range(pages) for r in region_records(f"b{p:015d}", 1, regs, grid)]
    table_b = pa.Table.from_pylist(rows_b).select(REGION_COLUMNS)
    grids_b = {r["page_id"]: grid for r in rows_b}
    grids = {r["page_id"]: grid for r in rows}
    ps = patch_scores(query, patches)  # what the exact MaxSim of the rerank hands over (its per-patch maxima)
    ref = reference_scores(query, patches, grid.boxes(), boxes)
    store = RegionStore(lambda ids: table, cache_pages=100)
    pr = store.get(list(grids), grids)[rows[0]["page_id"]]
    np.testing.assert_allclose(pr.scores(ps, "iou"), ref, rtol=1e-4, atol=1e-5)
    thr, gap = Threshold.parse("p50"), Threshold.parse("gap")
    pb = RegionStore(lambda ids: table_b, cache_pages=100).get(list(grids_b), grids_b)[rows_b[0]["page_id"]]
    out = {"regions": 100, "grid": "24x31", "query_tokens": 20, "blocks": pb.n_regions - 100,
           "cached_us_per_page (scores only)": per_call_us(lambda: pr.scores(ps), repeat),
           "cached_us_per_page (scores + p50 selection)": per_call_us(lambda: select_regions(pr.scores(ps), thr), repeat),
           "cached_us_per_page (lines + blocks: scores + block level, gap rule)":
               per_call_us(lambda: pb.select(pb.scores(ps), gap, "block"), repeat),
           "cached_us_per_page (lines + blocks: scores + the default selection, auto level, gap rule)":
               per_call_us(lambda: pb.select(pb.scores(ps), gap, "auto"), repeat),
           "first_time_us_per_page (weights built from the stored rows, 10 pages at once)":
               per_call_us(lambda: build_page_regions(table, grids), max(repeat // 50, 5)) / pages,
           "before: overlap_from_table + region_scores per query and page":
               per_call_us(lambda: region_scores(ps, _rebuild(table.slice(0, 100), grid)), max(repeat // 10, 5)),
           "snappy_reference_us_per_page (the paper's per-region loop)":
               per_call_us(lambda: reference_scores(query, patches, grid.boxes(), boxes), max(repeat // 50, 5))}
    out = {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}
    print(json.dumps(out, indent=1), flush=True)
    return out


def _rebuild(table, grid):
    """What the query path did before: a RegionOverlap from the rows, weights normalised again."""
    from snappy.search.region_rows import overlap_from_table

    return overlap_from_table(table, grid)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", nargs="?", default="all", choices=["all", "build", "scale", "sweep", "options", "lexical",
                                                                "regions", "stages", "choice", "latency"])
    p.add_argument("--corpora", default="structured,flat,templates100,templates1000",
                   help="stages: the corpora (snappy.testing.synth_index.corpus_named)")
    p.add_argument("--logged", action="store_true", help="stages: calibrate on other queries of the corpus "
                   "(the service's query log) instead of pseudo-queries")
    p.add_argument("--old", default=None, help="latency: the checkout to compare with (its own .venv)")
    p.add_argument("--rounds", type=int, default=3, help="latency: old/new pairs")
    p.add_argument("--configs", default="4096:128,7478:191,8192:256,12288:192,12288:256,16384:256",
                   help="sweep: pool:candidates pairs")
    p.add_argument("--pages", default="10000")
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads for exact and candidates alike")
    p.add_argument("--exact-max", type=int, default=30000, help="largest index scanned exactly in memory")
    p.add_argument("--nprobe", type=int, default=8)
    p.add_argument("--pool", type=int, default=None, help="pages kept by the probe (default: grows with the index)")
    p.add_argument("--candidates", type=int, default=None, help="pages reranked exactly (default: grows with the index)")
    p.add_argument("--lancedb-queries", type=int, default=10)
    p.add_argument("--repeat", type=int, default=2000)
    p.add_argument("--workdir", default=str(DEFAULT_WORK))
    p.add_argument("--json", default=None)
    args = p.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(x) for x in args.pages.split(",")]
    opts = {"nprobe": args.nprobe, "pool": args.pool, "candidates": args.candidates}
    out: dict = {}
    if args.what in ("build",):
        for n in sizes:
            build(n, work)
    if args.what in ("all", "regions"):
        out["regions"] = regions(args.repeat)
    if args.what in ("all", "options"):
        out["options"] = options(sizes[0], min(args.queries, 50), args.lancedb_queries, work)
    if args.what in ("all", "lexical"):
        out["lexical"] = lexical(5000 if args.what == "all" else sizes[0], min(args.queries, 100), work)
    if args.what == "sweep":
        configs = [tuple(int(x) for x in c.split(":")) for c in args.configs.split(",")]
        out["sweep"] = [r for n in sizes for r in sweep(n, args.queries, configs, work)]
    if args.what == "stages":
        out["stages"] = stages(args.corpora.split(","), sizes, args.queries, work, logged=args.logged)
    if args.what == "choice":
        out["choice"] = choice(args.corpora.split(","), sizes, args.queries, work)
    if args.what == "latency":
        out["latency"] = [latency(n, work, args.queries, Path(args.old), args.rounds) for n in sizes]
    if args.what in ("all", "scale"):
        out["scale"] = scale(sizes, work, args.queries, args.threads, args.exact_max, opts)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
