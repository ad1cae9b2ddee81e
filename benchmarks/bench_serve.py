"""Load test of `snappy serve` while a nightly-style indexing run commits into the index it serves.

    python benchmarks/bench_serve.py                      # concurrency 8 for 30 s, 2 shards
    python benchmarks/bench_serve.py --concurrency 8 --seconds 30 --shards 2 --docs-before 40 --docs-during 60

1. ``--docs-before`` one-page text PDFs (``snappy.testing.synth.write_good_corpus``, each with a made-up
   word only it contains) are indexed with ``snappy index`` (rapid OCR, lexical encoder);
2. ``snappy serve`` starts on 127.0.0.1 (its own local Ray, ``--refresh-s 1``);
3. ``--docs-during`` more PDFs land in the lake and a second ``snappy index`` run starts, committing
   every 4 documents, while ``--concurrency`` clients send ``POST /query`` for ``--seconds``
   (bounded by ``--max-requests`` too), asking for the made-up words of old and new documents;
4. afterwards every answer is checked against a Searcher opened at the snapshot the answer names
   (``X-Snappy-Snapshot``): an answer that is not exactly that snapshot's is a *mixed* answer.

Reports requests, throughput, latency p50/p90/p99/max, errors (non-200 or no answer), snapshots
seen, commits during the load, and mixed answers. Everything listens on loopback; the processes
this script starts are stopped by PID (process group) at the end, whatever happens.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "COLUMNS": "200"}
SNAPPY = [sys.executable, "-m", "pipelines.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 60) -> tuple[int, list | dict | None, int | None]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            seq = r.headers.get("x-snappy-snapshot")
            return r.status, json.loads(r.read()), int(seq) if seq else None
    except urllib.error.HTTPError as e:
        return e.code, None, None
    except OSError:
        return -1, None, None


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def stop(proc: subprocess.Popen, name: str, grace: float = 60) -> None:
    """Stop a process group this script started: SIGINT, then SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            print(f"{name} still running after {sig.name}", file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--docs-before", type=int, default=40)
    p.add_argument("--docs-during", type=int, default=60)
    p.add_argument("--top-pages", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args()

    from snappy.search import Searcher
    from snappy.storage import snapshot as snapshots
    from snappy.testing.synth import write_good_corpus

    work = Path(tempfile.mkdtemp(prefix="snappy-bench-serve-"))
    procs: list[tuple[subprocess.Popen, str]] = []
    try:
        entries = write_good_corpus(work / "gen", n=args.docs_before + args.docs_during, seed=11)
        lake, index = work / "lake", str(work / "index")
        lake.mkdir()
        for e in entries[:args.docs_before]:
            shutil.copy(work / "gen" / e.name, lake / Path(e.name).name)
        t0 = time.perf_counter()
        subprocess.run([*SNAPPY, "index", str(lake), "--index", index, "--ocr", "rapid", "--encoder", "lexical"],
                       check=True, env=ENV, cwd=ROOT, capture_output=True, timeout=900)
        print(f"initial index: {args.docs_before} documents in {time.perf_counter() - t0:.0f} s", flush=True)

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        serve_log = open(work / "serve.log", "w")
        server = subprocess.Popen([*SNAPPY, "serve", index, "--port", str(port), "--shards", str(args.shards),
                                   "--refresh-s", "1"], env=ENV, cwd=ROOT, stdout=serve_log, stderr=serve_log,
                                  start_new_session=True)
        procs.append((server, "snappy serve"))
        t0 = time.perf_counter()
        while not healthy(base):
            if server.poll() is not None or time.perf_counter() - t0 > 300:
                raise RuntimeError("snappy serve did not start:\n" + (work / "serve.log").read_text()[-3000:])
            time.sleep(0.5)
        print(f"service healthy after {time.perf_counter() - t0:.0f} s", flush=True)

        files = Searcher(index).store.files
        first = snapshots.latest(files).seq
        for e in entries[args.docs_before:]:
            shutil.copy(work / "gen" / e.name, lake / Path(e.name).name)
        index_log = open(work / "index.log", "w")
        indexer = subprocess.Popen([*SNAPPY, "index", str(lake), "--index", index, "--ocr", "rapid", "--encoder",
                                    "lexical", "--commit-every-docs", "4", "--commit-every-s", "5"], env=ENV,
                                   cwd=ROOT, stdout=index_log, stderr=index_log, start_new_session=True)
        procs.append((indexer, "snappy index"))
        t0 = time.perf_counter()  # the load starts with the run's first commit, so that it overlaps commits
        while snapshots.latest(files).seq == first:
            if indexer.poll() is not None or time.perf_counter() - t0 > 900:
                raise RuntimeError("the indexing run made no commit:\n" + (work / "index.log").read_text()[-3000:])
            time.sleep(0.2)
        print(f"indexing run's first commit after {time.perf_counter() - t0:.0f} s: load starts", flush=True)
        at_start = snapshots.latest(files).seq
        queries = [e.query for e in entries if e.query]
        answers: list[tuple[float, float, int, int | None, str, list | None]] = []
        lock = threading.Lock()
        count = iter(range(args.max_requests))
        t_start = time.perf_counter()
        t_end = t_start + args.seconds

        def client(k: int) -> None:
            i = k
            while time.perf_counter() < t_end and next(count, None) is not None:
                q = queries[(i * 7919) % len(queries)]
                i += args.concurrency
                t = time.perf_counter()
                status, pages, seq = post(f"{base}/query", {"query": q, "top_pages": args.top_pages})
                with lock:
                    answers.append((t - t_start, time.perf_counter() - t, status, seq, q, pages))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        load_s = time.perf_counter() - t_start
        commits = [s for s in (snapshots.get(files, q) for q in range(at_start + 1, snapshots.latest(files).seq + 1))
                   if s is not None]  # published while the clients ran
        indexer.wait(900)
        print(f"indexing run finished (exit {indexer.returncode})", flush=True)

        # every answer against a Searcher at the snapshot it names
        reader = Searcher(index)
        expected, mixed, checked = {}, 0, 0
        for _, _, status, seq, q, pages in answers:
            if status != 200:
                continue
            if (seq, q) not in expected:
                snap = snapshots.get(files, seq)
                state = reader.load(snap)
                expected[seq, q] = [(p.page_id, round(p.score, 4), [r.region_id for r in p.regions])
                                    for p in reader.search_vectors(reader.encode([q]), args.top_pages, state=state)[0]]
            got = [(p["page_id"], round(p["score"], 4), [r["region_id"] for r in p["regions"]]) for p in pages]
            mixed += got != expected[seq, q]
            checked += 1
        import numpy as np

        lat = np.array([a[1] for a in answers if a[2] == 200]) * 1000
        errors = sum(a[2] != 200 for a in answers)
        seqs = sorted({a[3] for a in answers if a[3] is not None})
        name_of = {e.query: Path(e.name).name for e in entries if e.query}
        new_queries = {e.query for e in entries[args.docs_before:]}
        new_found = sum(1 for a in answers if a[2] == 200 and a[4] in new_queries and a[5]
                        and a[5][0]["uri"].endswith(name_of[a[4]]))
        result = {
            "concurrency": args.concurrency, "seconds": round(load_s, 1), "shards": args.shards,
            "requests": len(answers), "throughput_rps": round(len(answers) / load_s, 1),
            "latency_ms": {k: round(float(np.percentile(lat, q)), 1) for k, q in
                           (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))} if len(lat) else None,
            "errors": errors, "snapshots_seen": seqs, "commits_during_load": len(commits),
            "answers_checked": checked, "mixed_snapshot_answers": mixed,
            "new_documents_found_by_their_word": new_found,
        }
        print(json.dumps(result, indent=1))
        print(f"\n| concurrency | duration | requests | req/s | p50 | p99 | max | errors | commits | "
              f"snapshots seen | mixed answers |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
              f"| {args.concurrency} | {load_s:.0f} s | {len(answers)} | {result['throughput_rps']} | "
              f"{result['latency_ms']['p50']} ms | {result['latency_ms']['p99']} ms | {result['latency_ms']['max']} ms | "
              f"{errors} | {len(commits)} | {len(seqs)} | {mixed} |")
        return 0 if errors == 0 and mixed == 0 else 1
    finally:
        for proc, name in reversed(procs):
            stop(proc, name)
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
