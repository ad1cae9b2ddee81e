"""Index a document collection into Lance tables with a Ray Data job: the nightly incremental run.

    python -m pipelines.index --source DIR_or_s3://bucket/prefix --index DIR_or_s3://bucket/prefix [...]

Runs locally (an embedded Ray on 127.0.0.1, started only if there is work) and unchanged under
``ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m pipelines.index ...``
(the job's ``RAY_ADDRESS`` is used).

A run: take the index's lease (one writer at a time) -> recover from a writer that died ->
list the source in chunks and plan each entry against the index without reading it
(``snappy/indexing/plan.py``) -> if anything must be read: a Ray Data job (read + render tasks, OCR CPU
actors, embed GPU actors, fragment-writing tasks) whose small reports stream back to this driver
-> a commit at least every ``commit_every_docs`` documents or ``commit_every_s`` seconds
(``snappy/storage/commit.py``: readers see whole documents or none) -> prune -> housekeeping ->
run log -> release the lease. A crash loses at most one commit interval; the next run resumes.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa

from .cluster import RayOptions, start_ray
from .config import IndexConfig
from snappy.indexing.committer import Cadence, Committer
from snappy.documents.pages import RenderOptions
from snappy.indexing.plan import KnownDocuments, Plan, PlanOptions, plan_run
from snappy.documents.sources import ReadLimits, Source
from snappy.storage import IndexStore, runlog
from snappy.storage.schema import CODEBOOK, CODES, DOCUMENTS, PAGES, REGIONS, IndexSettings

log = logging.getLogger("pipelines.index")

EXIT_BUSY = 75  # EX_TEMPFAIL: another run holds the index


# ---------------------------------------------------------------------- settings
@dataclass(frozen=True)
class EncoderInfo:
    encoder_id: str
    dim: int
    needs_pixels: bool  # False: the pipeline ships its stage no pixels
    loads_model: bool  # False: it runs inside the task stages instead of an actor pool
    needs_regions: bool = False  # True: it embeds the page's OCR text (nothing to embed without OCR)


def describe_encoder(spec: str) -> EncoderInfo:
    """What the run needs to know of an encoder spec. Model encoders load only their processor here."""
    from snappy.encoders import make_encoder

    enc = make_encoder(spec, device="cpu" if spec not in ("lexical", "null", "none") else None)
    return EncoderInfo(enc.encoder_id, int(enc.dim), bool(enc.needs_pixels), bool(enc.loads_model),
                       bool(enc.needs_regions))


def settings_warnings(config: IndexConfig, encoder: EncoderInfo) -> list[str]:
    """What is wrong with settings that run but build an index no query can match (pure)."""
    out = []
    if encoder.needs_regions and config.ocr in ("none", "") and config.text_layer == "off":
        out.append(f"encoder {encoder.encoder_id} embeds the text OCR finds, and --ocr none finds none: every "
                   f"page gets zero vectors and no query will match (use --ocr paddle|rapid|tesseract)")
    if config.ocr in ("none", "") and config.text_layer != "off":
        out.append("--ocr none: pages without a usable text layer (scans, images) get no regions "
                   "(use --ocr paddle|rapid|tesseract to read them)")
    if encoder.encoder_id.startswith("null:"):
        out.append("the null encoder stores zero vectors (it measures the pipeline): no query will match")
    return out


def index_settings(config: IndexConfig, encoder_id: str) -> IndexSettings:
    return IndexSettings(encoder_id=encoder_id, ocr_engine=config.ocr, dpi=float(config.dpi),
                         text_layer=config.text_layer)


# ---------------------------------------------------------------------- Ray
def ray_options(config: IndexConfig) -> RayOptions:
    return RayOptions(address=config.ray_address, num_cpus=config.ray_num_cpus, num_gpus=config.ray_num_gpus,
                      object_store_memory=config.object_store_memory)


def plan_options(config: IndexConfig) -> PlanOptions:
    return PlanOptions(incremental=config.incremental, retry_failed=config.retry_failed,
                       max_attempts=config.max_attempts, limit=config.limit)


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


# ---------------------------------------------------------------------- the run
def run_index(config: IndexConfig) -> dict:
    """Index ``config.source`` into ``config.index``; returns the run summary (also in the run log)."""
    t_start = time.perf_counter()
    store = IndexStore(config.index, config.s3)
    source = Source(config.source, config.s3)
    encoder = describe_encoder(config.encoder)
    settings = index_settings(config, encoder.encoder_id)
    run_id = runlog.new_run_id()
    summary: dict = {"run_id": run_id, "source": source.root, "index": store.uri,
                     "settings": json.loads(settings.to_json()), "config": config.to_dict(), "ray": None,
                     "warnings": settings_warnings(config, encoder)}
    for w in summary["warnings"]:
        log.warning("%s", w)
    phases: dict[str, float] = {}
    with store.writer(run_id, wait_s=config.lease_wait_s, ttl_s=config.lease_ttl_s) as writer:
        record = {"run_id": run_id, "status": "running", "started_at": time.time(), "source": source.root,
                  "index": store.uri, "settings": summary["settings"], "host": writer.lease.host,
                  "pid": writer.lease.pid}
        runlog.write(store.files, record)
        try:
            summary["recovered"] = writer.recover()
            t = time.perf_counter()
            known = _known_documents(store, source.root)
            plan = plan_run(source, known, settings, plan_options(config))
            phases["plan"] = time.perf_counter() - t
            summary["plan"] = dict(plan.counts)
            log.info("run %s: %d entries listed under %s; plan %s", run_id, plan.listed, source.root, plan.counts)

            def progress(c: Committer) -> None:
                record.update(progress={**c.counts, "to_read": plan.n_work}, updated_at=time.time())
                runlog.write(store.files, record)

            committer = Committer(writer, known, settings, plan, Cadence(config.commit_every_docs, config.commit_every_s),
                                  encoder.dim, on_commit=progress)
            committer.add_rejects(plan.rejects)
            if plan.n_work:
                t = time.perf_counter()
                summary["ray"] = _run_pipeline(config, source, store, plan, encoder, writer, committer)
                phases["pipeline"] = time.perf_counter() - t
            if config.prune:
                committer.add_prune(known.unseen_in_scope().column("doc_id").to_pylist())
            t = time.perf_counter()
            committer.finish()
            phases["commit"] = time.perf_counter() - t
            if config.candidates.enabled:  # train / retrain / backfill the candidate stage when due
                from snappy.candidates.maintain import QuerySamples, update_candidates

                t = time.perf_counter()
                samples = QuerySamples(prefix=lambda: _query_prefix(config, encoder))  # called when calibrating
                summary["candidates"] = update_candidates(writer, config.candidates, samples)
                phases["candidates"] = time.perf_counter() - t
                if summary["candidates"].get("action"):
                    committer.counts["commits"] += 1
            if config.housekeeping and committer.counts["commits"]:
                from snappy.storage.housekeeping import HousekeepingOptions, housekeep

                t = time.perf_counter()
                summary["housekeeping"] = housekeep(writer, HousekeepingOptions(retain_s=config.retain_s))
                phases["housekeeping"] = time.perf_counter() - t
            snap = writer.publish() if store.latest_versions() else None
            summary.update(_summary(committer, plan, snap))
        except BaseException as e:
            record.update(status="failed", error=f"{type(e).__name__}: {e}"[:2000], finished_at=time.time())
            runlog.write(store.files, record)
            raise
        elapsed = time.perf_counter() - t_start
        summary["elapsed_s"] = elapsed
        summary["phase_seconds"] = {k: round(v, 3) for k, v in phases.items()}
        summary["pages_per_s"] = summary["pages"] / elapsed if elapsed > 0 else None
        record.update(status="ok", finished_at=time.time(), duration_s=round(elapsed, 3),
                      documents=summary["documents"], pages=summary["pages"], regions=summary["regions"],
                      failures=summary["failures"][:20], snapshot=summary["snapshot"], progress=None)
        runlog.write(store.files, record)
        runlog.prune(store.files)
    log.info("run %s done in %.1f s: %s; snapshot %s", run_id, elapsed, summary["documents"], summary["snapshot"])
    return summary


def _known_documents(store: IndexStore, root: str) -> KnownDocuments:
    if not store.exists(DOCUMENTS):
        return KnownDocuments.empty()
    table = store.dataset(DOCUMENTS).to_table()  # the writer's view: latest version (recovered)
    return KnownDocuments.from_table(table, root)


def _summary(c: Committer, plan: Plan, snap) -> dict:
    skipped = plan.counts.get("unchanged", 0) + plan.counts.get("failed_unchanged", 0) + \
        plan.counts.get("gave_up", 0) + plan.counts.get("rejected_unchanged", 0)
    docs = {"listed": plan.listed, "indexed": c.counts["indexed"], "touched": c.counts["touched"],
            "skipped": skipped, "deferred": plan.counts.get("deferred", 0), "failed": c.counts["failed"],
            "retry_later": c.counts["retry_later"], "pruned": c.counts["pruned"]}
    n = max(c.counts["pages"], 1)
    return {"documents": docs, "pages": c.counts["pages"], "blank_pages": c.counts["blank_pages"],
            "regions": c.counts["regions"], "text": c.text.summary(),
            "commits": c.counts["commits"], "failures": c.failures[:50],
            "snapshot": snap.seq if snap else None, "versions": dict(snap.versions) if snap else {},
            "stage_seconds": {k: round(v, 3) for k, v in c.stage_seconds.items()},
            "stage_pages_per_s": {k: (c.counts["pages"] / v if v > 0 else None) for k, v in c.stage_seconds.items()},
            "stage_ms_per_page": {k: round(1000 * v / n, 2) for k, v in c.stage_seconds.items()},
            "workers": {k: sorted((json.loads(w) for w in v), key=lambda i: (i["host"], i["pid"]))
                        for k, v in c.workers.items()}}


def _codebook(store: IndexStore):
    """The index's candidate codebook (the writer's view), for the write stage; None if it has none."""
    if not store.exists(CODEBOOK):
        return None
    from snappy.candidates.centroids import Codebook

    return Codebook.from_table(store.dataset(CODEBOOK).to_table())


def _query_prefix(config: IndexConfig, encoder: EncoderInfo):
    """The encoder's prefix tokens (its vectors of an empty query), which the calibration's pseudo-queries
    start with, from a Ray task with the embed stage's resources. Weight-free encoders (lexical) have none."""
    def prefix(spec: str):
        from snappy.encoders import make_encoder

        return make_encoder(spec).query_prefix()

    if not encoder.loads_model:
        return None
    import ray

    config = config.resolved(float(ray.cluster_resources().get("GPU", 0)))  # a GPU where the embed actors get one
    resources = {"num_cpus": config.embed_num_cpus} | (
        {"num_gpus": config.embed_num_gpus} if config.embed_num_gpus else {})
    return ray.get(ray.remote(**resources)(prefix).remote(config.encoder), timeout=600)


def _run_pipeline(config: IndexConfig, source: Source, store: IndexStore, plan: Plan, encoder: EncoderInfo,
                  writer, committer: Committer) -> dict:
    """Run the Ray Data job over the planned work, committing as reports arrive.

    Stages that hold a model (OCR engines, model encoders) are actor pools that load it once; the
    others are tasks with identical resource requests, which Ray Data fuses where adjacent: with
    ``--ocr none`` and a weight-free encoder a document is read, rendered, embedded and written
    by one task, and no page crosses a process boundary.
    """
    import ray
    from ray.data import ActorPoolStrategy

    from .guard import start_ledger
    from .stages import EmbedStage, LayerChecker, OcrStage, TimeLimits, embed_batch, prepare_documents, write_pages

    session = start_ray(ray_options(config))
    try:
        resources = ray.cluster_resources()
        config = config.resolved(float(resources.get("GPU", 0)))
        _check_resources(config, resources)
        info = {"address": session.address, "resources": {k: v for k, v in resources.items()
                                                   if k in ("CPU", "GPU", "memory", "object_store_memory")}}
        ledger = start_ledger(config.max_deaths)
        limits = TimeLimits(read_s=config.read_timeout_s, page_s=config.page_timeout_s)
        use_ocr = config.ocr not in ("none", "")
        checkers = None
        if use_ocr and config.text_layer == "auto":  # the once-per-document OCR check of the text layer
            checker = ray.remote(num_cpus=0)(LayerChecker)
            checkers = [checker.remote(config.ocr, 1) for _ in range(max(1, config.ocr_actors // 4))]
        try:
            work = pa.concat_tables(plan.work)
            per_block = max(1, -(-work.num_rows // 10_000))  # at most ~10k read tasks, each a few documents
            ds = ray.data.from_arrow([work.slice(i, per_block) for i in range(0, work.num_rows, per_block)])
            _configure(ds.context, config)  # this run's copy of Ray Data's context; the process's is untouched
            task = {"num_cpus": config.task_num_cpus, "memory": config.task_memory}
            ds = ds.map_batches(
                prepare_documents, batch_size=1, batch_format="pyarrow", **task,
                fn_kwargs={"source": source, "render": RenderOptions(dpi=config.dpi, max_pages=config.max_pages,
                                                                     max_pixels=config.max_pixels,
                                                                     text_layer=config.text_layer),
                           "limits": ReadLimits(max_bytes=config.max_bytes, max_in_memory=config.max_in_memory),
                           "epoch": writer.epoch, "ledger": ledger, "with_pixels": use_ocr or encoder.needs_pixels,
                           "image_quality": config.image_quality, "time_limits": limits,
                           "block_bytes": config.block_bytes,
                           "pixels_for_ocr_only": not encoder.needs_pixels, "checkers": checkers})
            if use_ocr:
                ds = ds.map_batches(
                    # pages the text layer reads pass through; the pool grows only while OCR work waits
                    OcrStage, compute=ActorPoolStrategy(min_size=min(config.ocr_min_actors, config.ocr_actors),
                                                        max_size=config.ocr_actors),
                    num_cpus=config.ocr_num_cpus,
                    batch_size=config.ocr_batch_size, batch_format="pyarrow",
                    fn_constructor_kwargs={"ocr": config.ocr, "threads": max(1, round(config.ocr_num_cpus)),
                                           "ledger": ledger, "time_limits": limits})
            embed_args = {"encoder": config.encoder, "dim": encoder.dim, "ledger": ledger, "time_limits": limits}
            if encoder.loads_model:
                embed_resources = {"num_cpus": config.embed_num_cpus}
                if config.embed_num_gpus:
                    embed_resources["num_gpus"] = config.embed_num_gpus
                ds = ds.map_batches(EmbedStage, compute=ActorPoolStrategy(size=config.embed_actors),
                                    batch_size=config.embed_batch_size, batch_format="pyarrow",
                                    fn_constructor_kwargs=embed_args, **embed_resources)
            else:  # a weight-free encoder: nothing to load once, so no actor pool (whole blocks: see below)
                ds = ds.map_batches(embed_batch, batch_size=None, batch_format="pyarrow", fn_kwargs=embed_args,
                                    **task)
            # Fused into the read task (no actor stage before it), the write takes whole blocks: a batch
            # size there would make Ray Data hand each task that many *documents*, not pages.
            codebook = _codebook(store) if config.candidates.enabled else None
            ds = ds.map_batches(write_pages, batch_size=config.write_batch_rows(use_ocr, encoder.loads_model),
                                batch_format="pyarrow",
                                **task,
                                fn_kwargs={"pages_uri": store.table_uri(PAGES), "regions_uri": store.table_uri(REGIONS),
                                           "codes_uri": store.table_uri(CODES), "codebook": codebook,
                                           "storage_options": store.storage_options, "dim": encoder.dim})
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                committer.add_reports(batch)
                if committer.due():
                    committer.commit()
        finally:
            for actor in [ledger, *(checkers or [])]:
                try:
                    ray.kill(actor)
                except Exception as e:  # already gone with its node
                    log.debug("could not stop %s: %s", actor, e)
        return info
    finally:
        if session.address == "local":  # a Ray this run started; a joined cluster stays up
            session.close()


def _configure(ctx, config: IndexConfig) -> None:
    """Ray Data settings of one run, on the dataset's own ``DataContext`` (a copy made by ``from_arrow``
    that every later stage and the executor use)."""
    ctx.enable_progress_bars = config.progress
    ctx.target_max_block_size = config.block_bytes  # small blocks: pages flow on instead of piling up
    if config.object_store_limit is not None:
        ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
            object_store_memory=config.object_store_limit)


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The options of ``config.OPTIONS`` (``snappy index`` offers the same), in its help panels."""
    from .config import options

    p = argparse.ArgumentParser(prog="python -m pipelines.index", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", required=True, help="folder, file or s3://bucket/prefix of documents")
    p.add_argument("--index", required=True, help="index location (folder or s3://bucket/prefix)")
    opts = options()
    groups = {panel: p.add_argument_group(panel) for panel in dict.fromkeys(o.panel for o in opts)}
    for o in opts:
        flag = "--" + o.name.replace("_", "-")
        if o.type is bool:  # --full, --prune, ...; a flag on by default also has --no-...
            action = argparse.BooleanOptionalAction if o.default else "store_true"
            groups[o.panel].add_argument(flag, dest=o.name, action=action, default=o.default, help=o.help)
        else:
            groups[o.panel].add_argument(flag, dest=o.name, type=o.type, default=o.default, help=o.help)
    p.add_argument("--summary-json", default=None, help="also write the run summary to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(args: argparse.Namespace) -> IndexConfig:
    return IndexConfig.from_options(vars(args))


def format_summary(s: dict) -> str:
    d = s["documents"]
    lines = [f"run {s['run_id']}: {s['source']} -> {s['index']}",
             f"  documents: {d['listed']} listed, {d['indexed']} indexed, {d['touched']} touched, {d['skipped']} "
             f"unchanged, {d['failed']} failed, {d['retry_later']} to retry, {d['deferred']} deferred, "
             f"{d['pruned']} pruned",
             f"  rows written: {s['pages']} pages"
             + (f" ({s['blank_pages']} blank pages skipped)" if s.get("blank_pages") else "")
             + f", {s['regions']} regions in {s['elapsed_s']:.1f} s, "
             f"{s['commits']} commit(s)",
             "  snapshot: " + (f"{s['snapshot']} (" + ", ".join(f"{k} v{v}" for k, v in s["versions"].items()) + ")"
                               if s["snapshot"] else "none")]
    t = s.get("text") or {}
    if t.get("pages_by_source"):
        names = {"pdf": "text layer", "ocr": "OCR", "pdf+ocr": "text layer + OCR of image areas", "none": "no text"}
        lines.append("  page text: " + ", ".join(f"{v} {names.get(k, k)}" for k, v in t["pages_by_source"].items())
                     + " (why: " + ", ".join(f"{k} {v}" for k, v in list(t["pages_by_reason"].items())[:6]) + ")")
        ch = t.get("checks") or {}
        if any(ch.values()):
            lines.append(f"  text layer OCR checks: {ch['passed']} passed, {ch['failed']} failed"
                         + (f", {ch['unavailable']} unavailable" if ch.get("unavailable") else ""))
        for f in t.get("failed_checks", [])[:5]:
            lines.append(f"  text layer read wrong, OCR'd instead: {f['uri']}: {f['check']}")
    for f in s.get("failures", [])[:10]:
        lines.append(f"  failed: {f['uri']}: {f['error']}")
    for w in s.get("warnings", []):
        lines.append(f"  warning: {w}")
    for stage, infos in (s.get("workers") or {}).items():
        if infos:
            lines.append(f"  {stage} actors: " + "; ".join(f"pid {i['pid']} gpus {i['gpu_ids'] or '-'} ({i['device']})"
                                                          for i in infos))
    if s.get("pages"):
        lines.append("  ms per page per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in s["stage_ms_per_page"].items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from snappy.storage.lease import LeaseHeld

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from snappy import logs

    logs.install(verbose=args.verbose)
    try:
        summary = run_index(config_from_args(args))
    except LeaseHeld as e:
        log.error("%s", e)
        return EXIT_BUSY
    print(format_summary(summary))
    print(json.dumps({k: summary[k] for k in ("run_id", "documents", "pages", "regions", "snapshot", "versions")}))
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
