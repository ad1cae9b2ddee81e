"""The ``snappy`` command line: ``index``, ``query``, ``serve``, ``inspect``, ``eval``.

An entry point, so it lives with the Ray entry points: it composes the library (``snappy``) and the
pipelines (indexing, serving); the library never imports this package.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from snappy.blocks import DEFAULT_LEVEL
from snappy.propagation import DEFAULT_THRESHOLD

log = logging.getLogger("pipelines.cli")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Region-level document retrieval: index documents into Lance tables, query regions.")
err = Console(stderr=True)


@app.callback()
def _setup(ctx: typer.Context, verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    ctx.obj = {"eval_on_ray": _eval_on_ray}  # `snappy eval --ray-actors` (snappy.eval.cli) runs through it
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s",
                        handlers=[RichHandler(console=err, show_path=False)], force=True)
    logging.getLogger("snappy").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("pipelines").setLevel(logging.DEBUG if verbose else logging.INFO)
    from snappy import logs

    logs.install(verbose=verbose)  # no credential in any log, at any level


@contextmanager
def _index_errors():
    """An index that is missing or unreachable: exit 2; damaged: exit 3; one line each."""
    from snappy.storage import IndexDamaged, IndexUnavailable

    try:
        yield
    except (FileNotFoundError, IndexUnavailable) as e:
        err.print(f"[red]error:[/red] {e}", soft_wrap=True)
        raise typer.Exit(2) from e
    except IndexDamaged as e:
        err.print(f"[red]damaged index:[/red] {e}", soft_wrap=True)
        raise typer.Exit(3) from e


def _s3(endpoint: str | None, region: str | None):
    from snappy.storage.fs import S3Settings

    return S3Settings(endpoint=endpoint, region=region)


# ---------------------------------------------------------------------------- index


@app.command()
def index(
    source: str = typer.Argument(..., help="folder, file or s3://bucket/prefix of PDFs and images"),
    index_dir: str = typer.Option(..., "--index", help="index location: folder or s3://bucket/prefix"),
    encoder: str = typer.Option("lexical", help="lexical | tiny[:family] | colqwen2.5 | <hf id or model folder>"),
    ocr: str = typer.Option("paddle", help="paddle (PaddleOCR, the production default) | rapid | tesseract | none"),
    dpi: float = typer.Option(150.0, help="PDF render resolution"),
    limit: Optional[int] = typer.Option(None, help="read at most this many documents this run (the rest: next run)"),
    max_pages: Optional[int] = typer.Option(2000, help="per document; more pages -> a failed row"),
    max_bytes: Optional[int] = typer.Option(1 << 30, help="per document file; larger -> a failed row, nothing read"),
    full: bool = typer.Option(False, "--full", help="re-index every document (default: only changed ones)"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="re-try documents that failed for a reason of their own"),
    prune: bool = typer.Option(False, "--prune", help="delete documents no longer in the source"),
    commit_every_docs: int = typer.Option(2000, help="commit at least every N finished documents"),
    commit_every_s: float = typer.Option(600.0, help="... or every N seconds (a crash loses at most one interval)"),
    lease_wait_s: float = typer.Option(0.0, help="another run holds the index: wait this long before giving up"),
    retain_s: float = typer.Option(3600.0, help="keep old table versions readable this long"),
    ocr_actors: int = typer.Option(1, help="OCR actor pool size"),
    embed_actors: int = typer.Option(1, help="embed actor pool size"),
    ocr_batch_size: int = typer.Option(4, help="pages per OCR call"),
    embed_batch_size: int = typer.Option(8, help="pages per encoder call"),
    ray_address: Optional[str] = typer.Option(None, help="Ray address (default: $RAY_ADDRESS, else a local Ray)"),
    ray_num_cpus: Optional[int] = typer.Option(None, help="local Ray: CPUs"),
    ray_num_gpus: Optional[int] = typer.Option(None, help="local Ray: GPUs"),
    s3_endpoint: Optional[str] = typer.Option(None, help="S3 endpoint, e.g. http://127.0.0.1:9000"),
    s3_region: Optional[str] = typer.Option(None),
    summary_json: Optional[Path] = typer.Option(None, help="also write the run summary here"),
    as_json: bool = typer.Option(False, "--json", help="print the run summary as JSON"),
) -> None:
    """Index documents into Lance tables: an incremental Ray Data job (a local Ray only if there is work)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from snappy.storage.lease import LeaseHeld

    from .config import IndexConfig
    from .index import EXIT_BUSY, format_summary, run_index

    values = dict(source=source, index=index_dir, encoder=encoder, ocr=ocr, dpi=dpi, limit=limit,
                  max_pages=max_pages, max_bytes=max_bytes, incremental=not full, retry_failed=retry_failed,
                  prune=prune, commit_every_docs=commit_every_docs, commit_every_s=commit_every_s,
                  lease_wait_s=lease_wait_s, retain_s=retain_s, ocr_actors=ocr_actors,
                  embed_actors=embed_actors, ocr_batch_size=ocr_batch_size, embed_batch_size=embed_batch_size,
                  ray_address=ray_address, ray_num_cpus=ray_num_cpus, ray_num_gpus=ray_num_gpus,
                  s3=_s3(s3_endpoint, s3_region))
    known = {f.name for f in fields(IndexConfig)}
    config = IndexConfig(**{k: v for k, v in values.items() if k in known})
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        progress.add_task(f"indexing {source} -> {index_dir} ({encoder}, ocr {ocr})", total=None)
        try:
            summary = run_index(config)
        except LeaseHeld as e:
            err.print(f"[red]busy:[/red] {e}")
            raise typer.Exit(EXIT_BUSY) from e
    if summary_json:
        summary_json.write_text(json.dumps(summary, indent=1, default=str))
    typer.echo(json.dumps(summary, default=str) if as_json else format_summary(summary))
    if summary.get("documents", {}).get("failed"):
        err.print(f"[yellow]{summary['documents']['failed']} document(s) failed; see `snappy inspect {index_dir}`")


# ---------------------------------------------------------------------------- query


@app.command()
def query(
    index_dir: str = typer.Argument(..., help="index location"),
    text: str = typer.Argument(..., help="the query"),
    top_pages: int = typer.Option(5, "--top-pages", "-k", help="result pages (1..100)"),
    threshold: str = typer.Option(DEFAULT_THRESHOLD, help="region selection: p50 | adaptive[:k] | top3 | gap[:share] | 0.4"),
    method: str = typer.Option("iou", help="region scoring: iou | ior | mean | max"),
    level: str = typer.Option(DEFAULT_LEVEL, help="regions returned: line | block | auto (blocks whose lines are selected)"),
    encoder: Optional[str] = typer.Option(None, help="query encoder (default: the one the index was built with)"),
    as_json: bool = typer.Option(False, "--json", help="print the result pages as JSON"),
    patch_scores: bool = typer.Option(False, "--patch-scores", help="include per-patch scores and grids in --json"),
    overlay: Optional[Path] = typer.Option(None, help="write result pages with regions + heat map (out.png or a folder)"),
    exact: bool = typer.Option(False, "--exact", help="scan every page (skip the candidate stage of a large index)"),
    s3_endpoint: Optional[str] = typer.Option(None), s3_region: Optional[str] = typer.Option(None),
) -> None:
    """Rank pages by MaxSim and return their most relevant regions."""
    from snappy.search import QueryError, Searcher, SearchOptions
    from snappy.search.query import check_level, check_query, check_request

    try:
        check_request(top_pages, threshold, method)
        check_level(level)
        check_query(text)
    except QueryError as e:
        raise typer.BadParameter(e.reason, param_hint={"query": "TEXT"}.get(e.field, f"--{e.field.replace('_', '-')}")) \
            from e
    with _index_errors():
        searcher = Searcher(index_dir, encoder=encoder, storage_options=_s3(s3_endpoint, s3_region),
                            options=SearchOptions(mode="exact" if exact else "auto"))
        results = searcher.query(text, top_pages=top_pages, threshold=threshold, method=method, level=level)
    if overlay is not None and results:
        from snappy.overlay import write_overlays

        paths = write_overlays(searcher, results, overlay)
        err.print(f"wrote {len(paths)} overlay(s): {', '.join(str(p) for p in paths)}")
    if as_json:
        typer.echo(json.dumps([r.to_dict(with_patch_scores=patch_scores) for r in results]))
        return
    if not results:
        typer.echo("no results (the index has no pages)")
        return
    out = Console()
    for r in results:
        note = f"  (no region selected: {r.reason})" if r.reason else f"  peak {r.peak:.1f}"
        t = Table(title=f"#{r.rank}  {r.uri}  page {r.page_number}  score {r.score:.3f}{note}", title_justify="left",
                  show_edge=False)
        for col in ("score", "level", "bbox (px)", "text"):
            t.add_column(col)
        for reg in r.regions:
            t.add_row(f"{reg.score:.3f}", reg.level or "", " ".join(f"{v:.0f}" for v in reg.bbox), reg.text)
        out.print(t)


# ---------------------------------------------------------------------------- serve


@app.command()
def serve(
    index_dir: str = typer.Argument(..., help="index location"),
    host: str = typer.Option("127.0.0.1", help="HTTP address (loopback by default; 0.0.0.0 to expose it)"),
    port: int = typer.Option(8000, help="HTTP port"),
    replicas: int = typer.Option(1, min=1, help="router replicas (HTTP + query encoding)"),
    shards: int = typer.Option(1, min=1, help="shard deployments (each holds the pages of 1/N of the documents)"),
    shard_replicas: int = typer.Option(1, min=1, help="replicas per shard"),
    refresh_s: float = typer.Option(10.0, help="look for a newer snapshot this often (seconds)"),
    encoder: Optional[str] = typer.Option(None, help="query encoder (default: the index's own)"),
    exact: bool = typer.Option(False, "--exact", help="always scan every page (no candidate stage)"),
    max_query_chars: int = typer.Option(2000, help="longer queries get 400"),
    ray_address: Optional[str] = typer.Option(None, help="Ray address (default: $RAY_ADDRESS, else a local Ray)"),
    s3_endpoint: Optional[str] = typer.Option(None), s3_region: Optional[str] = typer.Option(None),
) -> None:
    """Serve the index over HTTP with Ray Serve: POST /query, GET /healthz, GET /version."""
    import os

    from snappy.storage import IndexStore

    from .serve import ServeConfig, run

    with _index_errors():  # before any Ray starts: a wrong location is one line and exit 2, not a crash loop
        snap = IndexStore(index_dir, storage_options=_s3(s3_endpoint, s3_region)).snapshot()
    if snap is None or "documents" not in snap.versions:
        err.print(f"[red]error:[/red] {index_dir}: no index here (run `snappy index` first)", soft_wrap=True)
        raise typer.Exit(2)
    if ray_address:
        os.environ["RAY_ADDRESS"] = ray_address
    config = ServeConfig(index=index_dir, encoder=encoder, shards=shards, replicas=replicas,
                         shard_replicas=shard_replicas, refresh_s=refresh_s, max_query_chars=max_query_chars,
                         mode="exact" if exact else "auto", s3_endpoint=s3_endpoint, s3_region=s3_region)
    err.print(f"serving {index_dir} on http://{host}:{port} ({shards} shard(s)); Ctrl-C stops")
    run(config, host=host, port=port)


# ---------------------------------------------------------------------------- inspect


@app.command()
def inspect(
    index_dir: str = typer.Argument(..., help="index location"),
    runs: int = typer.Option(5, help="how many of the last runs to show"),
    deep: bool = typer.Option(False, "--deep", help="read every column of every row (slow) when checking"),
    as_json: bool = typer.Option(False, "--json"),
    s3_endpoint: Optional[str] = typer.Option(None), s3_region: Optional[str] = typer.Option(None),
) -> None:
    """Tables, snapshot, writer, last runs, failed documents, and whether the index is intact (exit 3 if not)."""
    from snappy.storage import IndexStore, fs, runlog
    from snappy.storage.health import check
    from snappy.storage.lease import Lease

    store = IndexStore(index_dir, _s3(s3_endpoint, s3_region))
    problems = check(store, deep=deep)
    try:
        stats = store.stats()
    except Exception as e:  # a table that cannot even be opened: the problems say which
        stats = {}
        log.debug("stats failed: %s", e)
    if not stats and not problems:
        err.print(f"[red]error:[/red] {store.uri}: no index tables found")
        raise typer.Exit(2)
    for name, s in stats.items():
        try:
            s["bytes"] = sum(f.size for f in fs.list_files(store.table_uri(name), None, store.storage_options))
        except Exception:
            s["bytes"] = None
    snap = store.snapshot() if stats else None
    holder = Lease(store.files).current()
    recent = runlog.recent(store.files, runs)
    try:
        failed = store.failed_documents().to_pylist()
    except Exception:
        failed = []
    report = {"index": store.uri, "intact": not problems, "problems": [str(p) for p in problems],
              "snapshot": {"seq": snap.seq, "versions": snap.versions, "run_id": snap.run_id} if snap else None,
              "writer": None if holder is None or holder.released else holder.describe(),
              "tables": stats, "runs": recent,
              "failed": [{k: v for k, v in f.items() if k != "checked_at"} for f in failed]}
    if as_json:
        typer.echo(json.dumps(report, default=str))
    else:
        _print_inspect(report)
    if problems:
        raise typer.Exit(3)


def _print_inspect(report: dict) -> None:
    out = Console()
    snap = report["snapshot"]
    out.print(f"index {report['index']}" + (f"  snapshot {snap['seq']}" if snap else ""))
    if report["writer"]:
        out.print(f"[yellow]being written by {report['writer']}")
    t = Table(title="tables", title_justify="left")
    for col in ("table", "rows", "version", "fragments", "size"):
        t.add_column(col, justify="right" if col != "table" else "left")
    for name, s in report["tables"].items():
        t.add_row(name, str(s["rows"]), str(s["version"]), str(s["fragments"]),
                  _human(s["bytes"]) if s.get("bytes") is not None else "?")
    out.print(t)
    docs = report["tables"].get("documents", {})
    if docs:
        out.print("documents: " + ", ".join(f"{k} {v}" for k, v in sorted(docs.get("status", {}).items()))
                  + f"; encoder {', '.join(docs.get('encoders', [])) or '-'}")
    if report["runs"]:
        rt = Table(title="last runs", title_justify="left")
        for col in ("run", "status", "started", "duration", "indexed", "touched", "unchanged", "failed", "pruned"):
            rt.add_column(col)
        for r in report["runs"]:
            d = r.get("documents") or r.get("progress") or {}
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["started_at"])) if r.get("started_at") else "-"
            dur = f"{r['duration_s']:.1f} s" if r.get("duration_s") is not None else "-"
            rt.add_row(r["run_id"], r.get("status", "?"), started, dur,
                       *(str(d.get(k, "")) for k in ("indexed", "touched", "skipped", "failed", "pruned")))
        out.print(rt)
    if report["failed"]:
        ft = Table(title=f"documents not indexed or not up to date ({len(report['failed'])})", title_justify="left")
        for col in ("uri", "status", "kind", "attempts", "reason"):
            ft.add_column(col)
        for f in report["failed"]:
            ft.add_row(f["uri"], f["status"], f.get("failure") or "", str(f.get("attempts") or 0), f["error"] or "")
        out.print(ft)
    if report["problems"]:
        out.print("[red]the index is damaged:")
        for p in report["problems"]:
            out.print(f"[red]  {p}")
    else:
        out.print("[green]intact")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ---------------------------------------------------------------------------- eval (optional)

def _eval_on_ray(*args, **kwargs):
    from .eval import evaluate_on_ray

    return evaluate_on_ray(*args, **kwargs)


from snappy.eval.cli import register as _register_eval  # noqa: E402  (the eval commands are library code)

_register_eval(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
