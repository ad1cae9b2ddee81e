"""Index a document collection into Lance tables with a Ray Data job.

    python -m pipelines.index --source DIR_or_s3://bucket/prefix --index DIR_or_s3://bucket/prefix [...]

Runs locally (an embedded Ray is started when none is given) and unchanged under
``ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m pipelines.index ...``
(the job's ``RAY_ADDRESS`` is used).

The job: list documents (driver) -> read + hash + render pages (tasks) -> OCR (CPU actor pool)
-> embed (GPU actor pool; CPU without GPUs) -> records with region/patch overlaps (tasks) ->
a staging Lance dataset written by lance-ray -> one ``IndexStore.upsert`` per table on the
driver (pages, regions, then documents), so each run adds one Lance version per changed table.
The documents table is written last: a run that dies before it is simply redone next time.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import uuid
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import IndexConfig
from pipelines.stages import (DOC, PAGE, TIMING, WORKERS, EmbedStage, OcrStage, build_records, hash_documents,
                             render_documents, staging_schema, unchanged)
from snappy.pages import RenderOptions
from snappy.sources import Source
from snappy.storage import fs
from snappy.storage.schema import (DOCUMENTS, PAGES, REGIONS, IndexSettings, doc_id_for, document_record,
                                   pages_schema, regions_schema, to_table)
from snappy.storage.tables import IndexStore

log = logging.getLogger("pipelines.index")


# ---------------------------------------------------------------------- settings
def describe_encoder(spec: str) -> tuple[str, int]:
    """(encoder_id, dim) of an encoder spec. Model encoders load only their processor here, not weights."""
    from snappy.encoders import make_encoder

    enc = make_encoder(spec, device="cpu" if spec not in ("lexical", "null", "none") else None)
    return enc.encoder_id, int(enc.dim)


def index_settings(config: IndexConfig, encoder_id: str) -> IndexSettings:
    return IndexSettings(encoder_id=encoder_id, ocr_engine=config.ocr, dpi=float(config.dpi))


# ---------------------------------------------------------------------- Ray
def ensure_ray(config: IndexConfig) -> tuple[bool, str]:
    """Connect to the configured Ray (or ``$RAY_ADDRESS``), else start a local one; (started_here, address)."""
    import ray

    if ray.is_initialized():
        return False, "existing"
    address = config.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return True, address
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind 127.0.0.1 only
    kwargs = {k: v for k, v in {"num_cpus": config.ray_num_cpus, "num_gpus": config.ray_num_gpus,
                                "object_store_memory": config.object_store_memory}.items() if v is not None}
    # address="local": never attach by accident to another cluster started with `ray start` here.
    ray.init(address="local", include_dashboard=False, **kwargs)
    return True, "local"


def _check_resources(config: IndexConfig, resources: dict) -> None:
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    need = config.reserved_cpus()
    if need >= cpus:
        raise ValueError(
            f"the OCR and embed actor pools reserve {need:g} CPUs but the cluster has {cpus:g}; nothing would be "
            f"left for rendering and writing (lower ocr_actors/ocr_num_cpus/embed_num_cpus)")
    if config.embed_num_gpus and config.embed_actors * config.embed_num_gpus > gpus:
        raise ValueError(f"{config.embed_actors} embed actors x {config.embed_num_gpus:g} GPUs do not fit the "
                         f"cluster's {gpus:g} GPUs")


# ---------------------------------------------------------------------- staging -> tables
def _scan(staging, columns: Sequence[str], kind: str, batch_size: int = 64) -> Iterator[pa.RecordBatch]:
    return staging.to_batches(columns=list(columns), filter=f"kind = '{kind}'", batch_size=batch_size)


def _without(batch: pa.RecordBatch, failed: pa.Array) -> pa.RecordBatch:
    if len(failed) == 0:
        return batch
    return batch.filter(pc.invert(pc.is_in(batch.column("doc_id"), value_set=failed)))


def _pages_reader(staging, failed: pa.Array, dim: int) -> pa.RecordBatchReader:
    schema = pages_schema(dim)

    def batches():
        for b in _scan(staging, schema.names, PAGE):
            b = _without(b, failed)
            if b.num_rows:
                yield pa.RecordBatch.from_arrays([b.column(n) for n in schema.names], schema=schema)
    return pa.RecordBatchReader.from_batches(schema, batches())


def _regions_reader(staging, failed: pa.Array) -> pa.RecordBatchReader:
    schema = regions_schema()

    def batches():
        for b in _scan(staging, ["doc_id", "regions"], PAGE):
            b = _without(b, failed)
            flat = pc.list_flatten(b.column("regions"))  # struct<regions fields>, one per region
            if len(flat):
                yield pa.RecordBatch.from_struct_array(flat).cast(schema)
    return pa.RecordBatchReader.from_batches(schema, batches())


def _document_rows(staging, settings: IndexSettings) -> tuple[pa.Table, dict[str, str]]:
    """documents rows of this run; a page-level error fails its whole document."""
    docs = staging.to_table(columns=["doc_id", "uri", "size", "content_hash", "page_count", "error"],
                            filter=f"kind = '{DOC}'").to_pylist()
    page_errors = staging.to_table(columns=["doc_id", "error"], filter=f"kind = '{PAGE}' AND error IS NOT NULL")
    errors = {d["doc_id"]: d["error"] for d in docs if d["error"]}
    for d, e in zip(page_errors.column("doc_id").to_pylist(), page_errors.column("error").to_pylist()):
        errors.setdefault(d, e)
    records = [document_record(d["uri"], settings, size=d["size"], digest=d["content_hash"],
                               page_count=None if d["doc_id"] in errors else d["page_count"],
                               error=errors.get(d["doc_id"])) for d in docs]
    return to_table(DOCUMENTS, records), errors


def _stage_stats(staging) -> dict:
    t = staging.to_table(columns=["kind", *TIMING, *WORKERS])
    pages = t.filter(pc.equal(t.column("kind"), PAGE))
    seconds = {c[:-2]: float(pc.sum(pages.column(c)).as_py() or 0.0) for c in TIMING}
    n = pages.num_rows
    workers = {}
    for w in WORKERS:
        infos = [json.loads(s) for s in pc.unique(pages.column(w).drop_null()).to_pylist()]
        workers[w[:-len("_worker")]] = sorted(infos, key=lambda i: (i["host"], i["pid"]))
    return {"stage_seconds": seconds,
            "stage_pages_per_s": {k: (n / v if v > 0 else None) for k, v in seconds.items()},
            "workers": workers}


def _delete_tree(uri: str, storage_options) -> None:
    """Delete the staging dataset (a local folder, or every object under an S3 prefix)."""
    if not fs.is_remote(uri):
        shutil.rmtree(uri, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(uri))  # the _staging folder, once no run uses it
        except OSError:
            pass
        return
    try:
        src = Source(uri, storage_options, suffixes=None)
        client = src.client()
        bucket, prefix = uri[len("s3://"):].split("/", 1)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    except Exception as e:  # a leftover staging dataset is harmless: log, do not fail the run
        log.warning("could not delete staging %s: %s", uri, e)


# ---------------------------------------------------------------------- the run
def run_index(config: IndexConfig) -> dict:
    """Index ``config.source`` into ``config.index``; returns the run summary (also logged)."""
    import ray

    t_start = time.perf_counter()
    store = IndexStore(config.index, config.s3)
    source = Source(config.source, config.s3)
    encoder_id, dim = describe_encoder(config.encoder)
    settings = index_settings(config, encoder_id)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]

    listed = source.list()
    if config.limit is not None:
        listed = listed[:config.limit]
    listed_ids = {d.uri for d in listed}

    known: dict[str, tuple[str, str, str]] = {}
    pruned: list[str] = []
    existing = store.documents(columns=["doc_id", "uri", "content_hash", "settings", "status"])
    for r in existing.to_pylist():
        if config.incremental:
            known[r["doc_id"]] = (r["content_hash"], r["settings"], r["status"])
        if config.prune and source.contains(r["uri"]) and r["uri"] not in listed_ids:
            pruned.append(r["doc_id"])
    phases: dict[str, float] = {"list": time.perf_counter() - t_start}  # seconds, incl. reading the index
    log.info("run %s: %d documents listed under %s, %d known, %d to prune; settings %s", run_id, len(listed),
             source.root, len(known), len(pruned), settings.to_json())

    summary: dict = {"run_id": run_id, "source": source.root, "index": store.uri, "settings": json.loads(settings.to_json()),
                     "config": config.to_dict()}
    staging_uri = fs.join(store.uri, "_staging", f"{run_id}.lance")
    staging = None
    started, address = False, None
    try:
        if listed:
            started, address = ensure_ray(config)
            resources = ray.cluster_resources()
            config = config.resolved(float(resources.get("GPU", 0)))
            _check_resources(config, resources)
            summary["ray"] = {"address": address, "resources": {k: v for k, v in resources.items()
                                                               if k in ("CPU", "GPU", "memory", "object_store_memory")}}
            phases["ray_init"] = time.perf_counter() - t_start - phases["list"]
            t = time.perf_counter()
            todo = _changed(config, source, listed, known, settings) if known else [d.uri for d in listed]
            phases["hash"] = time.perf_counter() - t
            log.info("%d of %d documents are new or changed", len(todo), len(listed))
            if todo:
                t = time.perf_counter()
                staging = _run_pipeline(config, source, todo, dim, staging_uri, store)
                phases["pipeline"] = time.perf_counter() - t
        versions_before = store.versions()
        t = time.perf_counter()
        committed = _commit(store, staging, settings, dim, pruned)
        phases["commit"] = time.perf_counter() - t
        summary.update(committed)
        summary["versions_before"] = versions_before
        summary["versions"] = store.versions()
        docs = summary["documents"]
        docs["listed"] = len(listed)
        docs["skipped"] = len(listed) - docs["indexed"] - docs["failed"]
        if staging is not None:
            summary.update(_stage_stats(staging))
    finally:
        if staging is not None and not config.keep_staging:
            _delete_tree(staging_uri, store.storage_options)
        if started and config.ray_address is None and address == "local":
            ray.shutdown()
    elapsed = time.perf_counter() - t_start
    summary["elapsed_s"] = elapsed
    summary["phase_seconds"] = {k: round(v, 3) for k, v in phases.items()}
    summary["pages_per_s"] = summary["pages"] / elapsed if elapsed > 0 else None
    log.info("run %s done in %.1f s: %s; versions %s", run_id, elapsed, summary["documents"], summary["versions"])
    return summary


def _changed(config: IndexConfig, source: Source, listed, known, settings: IndexSettings) -> list[str]:
    """URIs of the listed documents that need indexing: a light Ray Data pass reads and hashes
    them, so no OCR or GPU actor starts when nothing changed."""
    import ray

    settings_json = settings.to_json()
    todo, maybe = [], []
    for d in listed:
        k = known.get(doc_id_for(d.uri))
        if k is None or k[0] is None or k[1] != settings_json or (k[2] != "indexed" and config.retry_failed):
            todo.append(d.uri)  # new, unreadable last time, indexed differently, or a failure to re-try
        else:
            maybe.append(d.uri)  # same settings: changed only if its bytes changed
    if maybe:
        hashed = ray.data.from_items([{"uri": u} for u in maybe], override_num_blocks=min(len(maybe), 200)) \
            .map_batches(hash_documents, batch_size=8, batch_format="pyarrow", num_cpus=config.render_num_cpus,
                         fn_kwargs={"source": source})
        for row in hashed.iter_rows():
            if not unchanged(row["content_hash"], known.get(doc_id_for(row["uri"])), settings_json,
                             config.retry_failed):
                todo.append(row["uri"])
    order = {d.uri: i for i, d in enumerate(listed)}
    return sorted(todo, key=order.__getitem__)


def _run_pipeline(config: IndexConfig, source: Source, uris: list[str], dim: int, staging_uri: str,
                  store: IndexStore):
    """Run the Ray Data job into the staging dataset; returns it (None if no row was written)."""
    import lance
    import lance_ray
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.execution_options.resource_limits, ctx.target_max_block_size)
    ctx.enable_progress_bars = config.progress
    ctx.target_max_block_size = config.block_bytes  # small blocks: pages flow on instead of piling up
    if config.object_store_limit is not None:
        ctx.execution_options.resource_limits = saved[1].copy(object_store_memory=config.object_store_limit)
    try:
        render = RenderOptions(dpi=config.dpi, max_pages=config.max_pages, max_pixels=config.max_pixels)
        docs = ray.data.from_items([{"uri": u} for u in uris], override_num_blocks=min(len(uris), 1000))
        ds = docs.map_batches(render_documents, batch_size=1, batch_format="pyarrow",
                              num_cpus=config.render_num_cpus,
                              fn_kwargs={"source": source, "render": render, "image_quality": config.image_quality})
        ds = ds.map_batches(
            OcrStage, compute=ActorPoolStrategy(size=config.ocr_actors), num_cpus=config.ocr_num_cpus,
            batch_size=config.ocr_batch_size, batch_format="pyarrow", fn_constructor_kwargs={"ocr": config.ocr, "threads": max(1, round(config.ocr_num_cpus))})
        embed_resources = {"num_cpus": config.embed_num_cpus}
        if config.embed_num_gpus:
            embed_resources["num_gpus"] = config.embed_num_gpus
        ds = ds.map_batches(
            EmbedStage, compute=ActorPoolStrategy(size=config.embed_actors), batch_size=config.embed_batch_size,
            batch_format="pyarrow", fn_constructor_kwargs={"encoder": config.encoder, "dim": dim}, **embed_resources)
        ds = ds.map_batches(build_records, batch_format="pyarrow", num_cpus=config.records_num_cpus,
                            fn_kwargs={"dim": dim})
        lance_ray.write_lance(ds, staging_uri, schema=staging_schema(dim), mode="create",
                              min_rows_per_file=config.write_rows, max_rows_per_file=max(config.write_rows, 1 << 20),
                              storage_options=store.storage_options,
                              ray_remote_args={"num_cpus": config.write_num_cpus})
    finally:
        ctx.enable_progress_bars = saved[0]
        ctx.execution_options.resource_limits = saved[1]
        ctx.target_max_block_size = saved[2]
    try:
        return lance.dataset(staging_uri, storage_options=store.storage_options)
    except (ValueError, FileNotFoundError, OSError):
        return None  # every document was unchanged: nothing was written


def _commit(store: IndexStore, staging, settings: IndexSettings, dim: int, pruned: Sequence[str]) -> dict:
    """One upsert per table from the staging dataset (pages, regions, then documents)."""
    if staging is None:
        doc_table, errors = to_table(DOCUMENTS, []), {}
    else:
        doc_table, errors = _document_rows(staging, settings)
    processed = doc_table.column("doc_id").to_pylist()
    replace_docs = sorted(set(processed) | set(pruned))
    failed = pa.array(sorted(errors), type=pa.string())
    out = {"documents": {"indexed": len(processed) - len(errors), "failed": len(errors), "pruned": len(pruned)},
           "pages": 0, "regions": 0, "committed": {}}
    out["failures"] = [{"uri": u, "error": e} for u, e, s in zip(
        doc_table.column("uri").to_pylist(), doc_table.column("error").to_pylist(),
        doc_table.column("status").to_pylist()) if s == "failed"][:50]
    if not replace_docs:
        return out
    if staging is not None:
        out["pages"] = staging.count_rows(filter=f"kind = '{PAGE}' AND error IS NULL")
        out["pages"] -= _count_failed_pages(staging, failed)
        out["committed"][PAGES] = store.upsert(PAGES, _pages_reader(staging, failed, dim), replace_docs=replace_docs)
        counted = _CountingReader(_regions_reader(staging, failed))
        out["committed"][REGIONS] = store.upsert(REGIONS, counted.reader(), replace_docs=replace_docs)
        out["regions"] = counted.rows
    else:
        out["committed"][PAGES] = store.upsert(PAGES, to_table(PAGES, [], dim), replace_docs=replace_docs)
        out["committed"][REGIONS] = store.upsert(REGIONS, to_table(REGIONS, []), replace_docs=replace_docs)
    out["committed"][DOCUMENTS] = store.upsert(DOCUMENTS, doc_table, replace_docs=list(pruned) or None)
    return out


def _count_failed_pages(staging, failed: pa.Array) -> int:
    if len(failed) == 0:
        return 0
    t = staging.to_table(columns=["doc_id"], filter=f"kind = '{PAGE}' AND error IS NULL")
    return int(pc.sum(pc.is_in(t.column("doc_id"), value_set=failed)).as_py() or 0)


class _CountingReader:
    """Wraps a RecordBatchReader and counts the rows that pass through it."""

    def __init__(self, reader: pa.RecordBatchReader):
        self._reader, self.rows = reader, 0

    def reader(self) -> pa.RecordBatchReader:
        def gen():
            for b in self._reader:
                self.rows += b.num_rows
                yield b
        return pa.RecordBatchReader.from_batches(self._reader.schema, gen())


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    d = IndexConfig("", "")
    p = argparse.ArgumentParser(prog="python -m pipelines.index", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", required=True, help="folder, file or s3://bucket/prefix of documents")
    p.add_argument("--index", required=True, help="index location (folder or s3://bucket/prefix)")
    p.add_argument("--encoder", default=d.encoder, help="lexical | null | tiny[:family] | colqwen2.5 | <hf id or folder>")
    p.add_argument("--ocr", default=d.ocr, help="paddle | rapid | tesseract | none")
    p.add_argument("--dpi", type=float, default=d.dpi)
    p.add_argument("--max-pages", type=int, default=d.max_pages)
    p.add_argument("--max-pixels", type=int, default=d.max_pixels)
    p.add_argument("--limit", type=int, default=None, help="index at most this many documents")
    p.add_argument("--full", action="store_true", help="re-index every document (not incremental)")
    p.add_argument("--retry-failed", action="store_true", help="re-try unchanged documents that failed before")
    p.add_argument("--prune", action="store_true", help="delete documents no longer in the source")
    for name in ("ocr_actors", "embed_actors", "ocr_batch_size", "embed_batch_size", "write_rows"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("render_num_cpus", "ocr_num_cpus", "embed_num_cpus", "embed_num_gpus", "records_num_cpus"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--ray-address", default=None, help="Ray address; default $RAY_ADDRESS, else a local Ray")
    p.add_argument("--ray-num-cpus", type=int, default=None, help="local Ray: CPUs")
    p.add_argument("--ray-num-gpus", type=int, default=None, help="local Ray: GPUs (declared; fake ones work)")
    p.add_argument("--object-store-memory", type=int, default=None, help="local Ray: object store bytes")
    p.add_argument("--object-store-limit", type=int, default=None, help="object store bytes this job may use")
    p.add_argument("--s3-endpoint", default=None, help="S3 endpoint, e.g. http://127.0.0.1:9000")
    p.add_argument("--s3-region", default=None)
    p.add_argument("--progress", action="store_true", help="Ray Data progress bars")
    p.add_argument("--keep-staging", action="store_true")
    p.add_argument("--summary-json", default=None, help="also write the run summary to this file")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> IndexConfig:
    from snappy.storage.fs import S3Settings

    fields = set(IndexConfig.field_names())
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["incremental"] = not args.full
    values["s3"] = S3Settings(endpoint=args.s3_endpoint, region=args.s3_region)
    return IndexConfig(**values)


def format_summary(s: dict) -> str:
    d = s["documents"]
    lines = [f"run {s['run_id']}: {s['source']} -> {s['index']}",
             f"  documents: {d['listed']} listed, {d['indexed']} indexed, {d['skipped']} unchanged, "
             f"{d['failed']} failed, {d['pruned']} pruned",
             f"  rows written: {s['pages']} pages, {s['regions']} regions in {s['elapsed_s']:.1f} s",
             "  versions: " + ", ".join(f"{k} v{v}" + ("" if k in s["committed"] else " (unchanged)")
                                        for k, v in s["versions"].items())]
    for f in s.get("failures", [])[:10]:
        lines.append(f"  failed: {f['uri']}: {f['error']}")
    if "workers" in s:
        for stage, infos in s["workers"].items():
            if not infos:
                continue
            lines.append(f"  {stage} actors: " + "; ".join(f"pid {i['pid']} gpus {i['gpu_ids'] or '-'} ({i['device']})"
                                                          for i in infos))
    if "stage_pages_per_s" in s:
        lines.append("  pages/s per stage (per worker): " + ", ".join(
            f"{k} {v:.2f}" for k, v in s["stage_pages_per_s"].items() if v))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = run_index(config_from_args(args))
    print(format_summary(summary))
    print(json.dumps({k: summary[k] for k in ("run_id", "documents", "pages", "regions", "versions")}))
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
