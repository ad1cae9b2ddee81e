"""Benchmark the nightly rerun with nothing changed: listing + planning only, whatever the lake size.

    python benchmarks/bench_rerun.py                          # 1,000 / 10,000 / 100,000 local + 10,000 on S3
    python benchmarks/bench_rerun.py --sizes 1000,10000 --s3 0

For each size it writes that many small one-page PDFs (``snappy.testing.synth.minimal_pdf``, distinct bytes)
and an index that already holds all of them, as a completed run leaves it: one documents row each
with the listing's fingerprint, the content hash and the run settings (seeded directly through
``IndexStore.upsert``; indexing 100,000 documents first would take hours here and changes nothing
of what the rerun does). Then it times ``run_index`` (no OCR, lexical encoder) in a fresh
process, three times, and counts:

- **source files opened**: a Python audit hook counts ``open`` events under the source root
  (every local read in snappy goes through ``os.open``);
- **Ray**: whether ``ray`` was imported at all, and whether a Ray instance was started;
- **S3 reads**: ``GetObject``/``HeadObject`` calls on source keys, counted by a botocore event hook
  (index objects -- lease, snapshots -- are not source reads and are not counted).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROBE = r"""
import json, os, sys, time
t0 = time.perf_counter()
root = sys.argv[1]
opened = []
def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes)) and os.fsdecode(args[0]).startswith(root):
        opened.append(os.fsdecode(args[0]))
sys.addaudithook(hook)
s3_reads = []
if root.startswith("s3://"):
    import boto3
    prefix = root[len("s3://"):].split("/", 1)[1]
    def count(params, **kw):
        if params.get("Key", "").startswith(prefix):
            s3_reads.append(params["Key"])
    boto3.setup_default_session()
    for op in ("GetObject", "HeadObject"):
        boto3.DEFAULT_SESSION.events.register(f"before-parameter-build.s3.{op}", count)
from pipelines.config import IndexConfig
from pipelines.index import run_index
from snappy.storage.fs import S3Settings
s3 = S3Settings(endpoint=sys.argv[3], region="us-east-1") if sys.argv[3] != "-" else S3Settings()
t1 = time.perf_counter()
s = run_index(IndexConfig(root, sys.argv[2], encoder="lexical", ocr="none", dpi=72.0, s3=s3))
t2 = time.perf_counter()
print(json.dumps({"total_s": round(t2 - t0, 3), "import_s": round(t1 - t0, 3), "run_s": round(t2 - t1, 3),
                  "phase_s": s["phase_seconds"], "plan": s["plan"], "opened": len(opened), "s3_reads": len(s3_reads),
                  "ray_imported": "ray" in sys.modules, "ray_started": s["ray"] is not None,
                  "commits": s["commits"]}))
"""


def write_lake(root: Path, n: int) -> None:
    from snappy.testing.synth import minimal_pdf

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        d = root / f"{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(exist_ok=True)
        (d / f"doc{i:07d}.pdf").write_bytes(minimal_pdf([(612, 792)], pad=i % 97) + f"%{i}\n".encode())


def seed_index(source: str, index: str, storage_options=None) -> int:
    """An index that knows every listed document as indexed, as the last run left it."""
    from pipelines.config import IndexConfig
    from pipelines.index import describe_encoder, index_settings
    from snappy.documents.sources import Source
    from snappy.storage import IndexStore
    from snappy.storage.schema import document_record

    cfg = IndexConfig(source, index, encoder="lexical", ocr="none", dpi=72.0)
    settings = index_settings(cfg, describe_encoder(cfg.encoder).encoder_id)
    src = Source(source, storage_options)
    rows = []
    for e in src.iter_entries():
        with src.open_document(e.uri, e.raw_path) as doc:
            digest = doc.sha256
        rows.append(document_record(e.uri, settings, size=e.size, etag=e.etag, mtime_ns=e.mtime_ns, digest=digest,
                                    page_count=1, doc_id=e.doc_id))
    IndexStore(index, storage_options).upsert(rows)
    return len(rows)


def rerun(source: str, index: str, endpoint: str = "-", env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, source, index, endpoint], cwd=REPO, capture_output=True,
                         text=True, timeout=1800, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_of(fn, repeats: int) -> dict:
    runs = [fn() for _ in range(repeats)]
    runs.sort(key=lambda r: r["total_s"])
    best = dict(runs[len(runs) // 2])  # the median run
    best["total_s_all"] = [r["total_s"] for r in runs]
    return best


def local(n: int, work: Path, repeats: int) -> dict:
    src, idx = work / f"lake-{n}", work / f"idx-{n}"
    t = time.perf_counter()
    write_lake(src, n)
    gen = time.perf_counter() - t
    t = time.perf_counter()
    seed_index(str(src), str(idx))
    seed = time.perf_counter() - t
    return {"documents": n, "generate_s": round(gen, 1), "seed_s": round(seed, 1),
            **best_of(lambda: rerun(str(src), str(idx)), repeats)}


def s3(n: int, work: Path, repeats: int) -> dict:
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}
    os.environ.update(env)
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="lake")
        write_lake(work / f"s3-lake-{n}", n)
        t = time.perf_counter()
        for p in sorted((work / f"s3-lake-{n}").rglob("*.pdf")):
            client.put_object(Bucket="lake", Key=f"docs/{p.parent.name}/{p.name}", Body=p.read_bytes())
        upload = time.perf_counter() - t
        opts = {"aws_endpoint": endpoint, "aws_region": "us-east-1", "aws_access_key_id": "bench",
                "aws_secret_access_key": "bench"}
        seed_index("s3://lake/docs", "s3://lake/index", opts)
        result = best_of(lambda: rerun("s3://lake/docs", "s3://lake/index", endpoint, env), repeats)
        return {"documents": n, "upload_s": round(upload, 1), **result}
    finally:
        server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--s3", type=int, default=10000, help="documents on the loopback S3 (0: skip)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="snappy-rerun-"))
    out = {"local": [local(int(n), work, args.repeats) for n in args.sizes.split(",") if n]}
    if args.s3:
        out["s3"] = s3(args.s3, work, args.repeats)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
