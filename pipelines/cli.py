"""The ``snappy`` command line: ``index``, ``query``, ``serve``, ``inspect``, ``eval``.

An entry point, so it lives with the Ray entry points: it composes the library (``snappy``) and the
pipelines (indexing, serving); the library never imports this package.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from snappy.regions.blocks import DEFAULT_LEVEL
from snappy.regions.propagation import DEFAULT_METHOD, DEFAULT_THRESHOLD
from snappy.search.query import DEFAULT_TOP_PAGES, MAX_QUERY_CHARS, MAX_TOP_PAGES

from .config import options as index_options

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
_INDEX_OPTIONS = {o.name: o for o in index_options()}


def _ix(name: str):
    """A ``snappy index`` option as ``python -m pipelines.index`` has it (pipelines/config.py OPTIONS)."""
    o = _INDEX_OPTIONS[name]
    flag = "--" + name.replace("_", "-")
    decls = ((f"{flag}/--no-{flag[2:]}",) if o.default else (flag,)) if o.type is bool else ()
    return typer.Option(o.default, *decls, help=o.help, rich_help_panel=o.panel)


@app.command()
def index(
    source: str = typer.Argument(..., help="folder, file or s3://bucket/prefix of PDFs and images"),
    index_dir: str = typer.Option(..., "--index", help="index location: folder or s3://bucket/prefix"),
    encoder: str = _ix("encoder"),
    ocr: str = _ix("ocr"),
    dpi: float = _ix("dpi"),
    text_layer: str = _ix("text_layer"),
    full: bool = _ix("full"),
    retry_failed: bool = _ix("retry_failed"),
    max_attempts: int = _ix("max_attempts"),
    prune: bool = _ix("prune"),
    limit: Optional[int] = _ix("limit"),
    max_pages: Optional[int] = _ix("max_pages"),
    max_pixels: Optional[int] = _ix("max_pixels"),
    max_bytes: Optional[int] = _ix("max_bytes"),
    max_in_memory: int = _ix("max_in_memory"),
    read_timeout_s: Optional[float] = _ix("read_timeout_s"),
    page_timeout_s: Optional[float] = _ix("page_timeout_s"),
    max_deaths: int = _ix("max_deaths"),
    image_quality: int = _ix("image_quality"),
    commit_every_docs: int = _ix("commit_every_docs"),
    commit_every_s: float = _ix("commit_every_s"),
    lease_wait_s: float = _ix("lease_wait_s"),
    lease_ttl_s: float = _ix("lease_ttl_s"),
    candidates: bool = _ix("candidates"),
    candidate_min_pages: int = _ix("candidate_min_pages"),
    housekeeping: bool = _ix("housekeeping"),
    retain_s: float = _ix("retain_s"),
    task_num_cpus: float = _ix("task_num_cpus"),
    task_memory: int = _ix("task_memory"),
    ocr_actors: int = _ix("ocr_actors"),
    ocr_min_actors: int = _ix("ocr_min_actors"),
    ocr_num_cpus: float = _ix("ocr_num_cpus"),
    ocr_batch_size: int = _ix("ocr_batch_size"),
    embed_actors: int = _ix("embed_actors"),
    embed_num_gpus: Optional[float] = _ix("embed_num_gpus"),
    embed_num_cpus: Optional[float] = _ix("embed_num_cpus"),
    embed_batch_size: int = _ix("embed_batch_size"),
    write_rows: int = _ix("write_rows"),
    block_bytes: int = _ix("block_bytes"),
    ray_address: Optional[str] = _ix("ray_address"),
    ray_num_cpus: Optional[int] = _ix("ray_num_cpus"),
    ray_num_gpus: Optional[int] = _ix("ray_num_gpus"),
    object_store_memory: Optional[int] = _ix("object_store_memory"),
    object_store_limit: Optional[int] = _ix("object_store_limit"),
    progress: bool = _ix("progress"),
    s3_endpoint: Optional[str] = _ix("s3_endpoint"),
    s3_region: Optional[str] = _ix("s3_region"),
    summary_json: Optional[Path] = typer.Option(None, help="also write the run summary here",
                                                rich_help_panel="Output"),
    as_json: bool = typer.Option(False, "--json", help="print the run summary as JSON", rich_help_panel="Output"),
) -> None:
    """Index documents into Lance tables: an incremental Ray Data job (a local Ray only if there is work).

    The options are those of `python -m pipelines.index` (docs/pipeline.md).
    """
    values = {**locals(), "index": index_dir}  # every option by name, for IndexConfig.from_options
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from snappy.storage.lease import LeaseHeld

    from .config import IndexConfig
    from .index import EXIT_BUSY, format_summary, run_index

    try:
        config = IndexConfig.from_options(values)
    except ValueError as e:  # a setting out of range: one line, exit 2 (typer's usage error)
        raise typer.BadParameter(str(e)) from e
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        bar.add_task(f"indexing {source} -> {index_dir} ({encoder}, ocr {ocr})", total=None)
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
    top_pages: int = typer.Option(DEFAULT_TOP_PAGES, "--top-pages", "-k", help=f"result pages (1..{MAX_TOP_PAGES})"),
    threshold: str = typer.Option(DEFAULT_THRESHOLD, help="region selection: p50 | adaptive[:k] | top3 | gap[:share] | 0.4"),
    method: str = typer.Option(DEFAULT_METHOD, help="region scoring: iou | ior | mean | max"),
    level: str = typer.Option(DEFAULT_LEVEL, help="regions returned: line | block | auto (per block: the block, its lines or both, from the evidence)"),
    encoder: Optional[str] = typer.Option(None, help="query encoder (default: the one the index was built with)"),
    as_json: bool = typer.Option(False, "--json", help="print the result pages as JSON"),
    patch_scores: bool = typer.Option(False, "--patch-scores", help="include per-patch scores and grids in --json"),
    overlay: Optional[Path] = typer.Option(None, help="write result pages with regions + heat map (out.png or a folder)"),
    exact: bool = typer.Option(False, "--exact", help="scan every page (skip the candidate stage of a large index)"),
    target_recall: Optional[float] = typer.Option(None, help="the candidate stage's recall@10 target for this query "
                                                  "(default: the index's calibrated one)"),
    s3_endpoint: Optional[str] = typer.Option(None), s3_region: Optional[str] = typer.Option(None),
) -> None:
    """Rank pages by MaxSim and return their most relevant regions."""
    from snappy.search import QueryError, Searcher, SearchOptions
    from snappy.search.query import check_level, check_query, check_request, check_target

    try:
        check_request(top_pages, threshold, method)
        check_level(level)
        check_target(target_recall)
        check_query(text)
    except QueryError as e:
        raise typer.BadParameter(e.reason, param_hint={"query": "TEXT"}.get(e.field, f"--{e.field.replace('_', '-')}")) \
            from e
    with _index_errors():
        searcher = Searcher(index_dir, encoder=encoder, storage_options=_s3(s3_endpoint, s3_region),
                            options=SearchOptions(mode="exact" if exact else "auto"))
        results = searcher.query(text, top_pages=top_pages, threshold=threshold, method=method, level=level,
                                 target_recall=target_recall)
    if overlay is not None and results:
        from snappy.overlay import write_overlays

        paths = write_overlays(searcher, results, overlay)
        err.print(f"wrote {len(paths)} overlay(s): {', '.join(str(p) for p in paths)}")
    if as_json:
        typer.echo(json.dumps([r.to_dict(with_patch_scores=patch_scores) for r in results]))
        return
    if not results:
        from snappy.search.results import no_results_message

        typer.echo(no_results_message(results.reason))
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
    max_query_chars: int = typer.Option(MAX_QUERY_CHARS, help="longer queries get 400"),
    log_queries: bool = typer.Option(True, "--log-queries/--no-log-queries",
                                     help="log the queries' token vectors (never their text) in the index, for the "
                                          "nightly calibration of the candidate stage"),
    ray_address: Optional[str] = typer.Option(None, help="Ray address (default: $RAY_ADDRESS, else a local Ray)"),
    s3_endpoint: Optional[str] = typer.Option(None), s3_region: Optional[str] = typer.Option(None),
) -> None:
    """Serve the index over HTTP with Ray Serve: a search page at /, POST /query, GET /healthz, /version."""
    from snappy.storage import IndexStore

    from .serve import ServeConfig, run

    with _index_errors():  # before any Ray starts: a wrong location is one line and exit 2, not a crash loop
        snap = IndexStore(index_dir, storage_options=_s3(s3_endpoint, s3_region)).snapshot()
    if snap is None or "documents" not in snap.versions:
        err.print(f"[red]error:[/red] {index_dir}: no index here (run `snappy index` first)", soft_wrap=True)
        raise typer.Exit(2)
    config = ServeConfig(index=index_dir, encoder=encoder, shards=shards, replicas=replicas,
                         shard_replicas=shard_replicas, refresh_s=refresh_s, max_query_chars=max_query_chars,
                         mode="exact" if exact else "auto", s3_endpoint=s3_endpoint, s3_region=s3_region,
                         log_queries=log_queries)
    err.print(f"serving {index_dir} on http://{host}:{port} ({shards} shard(s)); Ctrl-C stops")
    run(config, host=host, port=port, ray_address=ray_address)


# ---------------------------------------------------------------------------- inspect
EXIT_NO_TABLES = 4  # inspect: runs or a lease are recorded but no table yet (no run has committed)


@app.command()
def inspect(
    index_dir: str = typer.Argument(..., help="index location"),
    runs: int = typer.Option(5, help="how many of the last runs to show"),
    deep: bool = typer.Option(False, "--deep", help="read every column of every row (slow) when checking"),
    as_json: bool = typer.Option(False, "--json"),
    s3_endpoint: Optional[str] = typer.Option(None), s3_region: Optional[str] = typer.Option(None),
) -> None:
    """Tables, snapshot, writer lease, last runs, failed documents, and whether the index is intact.

    Exit status: 0 intact; 2 nothing here; 3 damaged; 4 no table yet, but runs or a lease are
    recorded (a first run still running, or one that died before its first commit).
    """
    from snappy.storage import IndexStore
    from snappy.storage.report import index_report

    store = IndexStore(index_dir, _s3(s3_endpoint, s3_region))
    report = index_report(store, runs=runs, deep=deep)
    if report["empty"]:
        err.print(f"[red]error:[/red] {escape(store.uri)}: no index tables found", soft_wrap=True)
        raise typer.Exit(2)
    problems = report["problems"]
    if as_json:
        typer.echo(json.dumps(report, default=str))
    else:
        _print_inspect(report)
    if problems:
        raise typer.Exit(3)
    if report["no_tables"]:
        raise typer.Exit(EXIT_NO_TABLES)


def _time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"


def _print_inspect(report: dict) -> None:
    # A terminal folds long cells; a pipe or a file gets every line whole (paths stay greppable).
    out = Console()
    if not out.is_terminal:
        out = Console(width=1 << 16)
    snap = report["snapshot"]
    out.print(f"index {escape(report['index'])}" + (f"  snapshot {snap['seq']}" if snap else ""), soft_wrap=True)
    lease = report.get("lease")
    if lease and lease["state"] == "held":
        out.print(f"[yellow]being written by {escape(lease['holder_text'])}; its lease expires at "
                  f"{_time(lease['expires_at'])} UTC unless renewed", soft_wrap=True)
    elif lease and lease["state"] == "stale":
        out.print(f"[yellow]stale lease: held by {escape(lease['holder_text'])}, but {escape(lease['stale_reason'])}; "
                  f"the next run takes it over", soft_wrap=True)
    if report["tables"]:
        t = Table(title="tables", title_justify="left")
        for col in ("table", "rows", "version", "fragments", "size"):
            t.add_column(col, justify="right" if col != "table" else "left")
        for name, s in report["tables"].items():
            t.add_row(name, str(s["rows"]), str(s["version"]), str(s["fragments"]),
                      decimal(s["bytes"]) if s.get("bytes") is not None else "?")
        out.print(t)
    docs = report["tables"].get("documents", {})
    if docs:
        out.print("documents: " + ", ".join(f"{k} {v}" for k, v in sorted(docs.get("status", {}).items()))
                  + f"; encoder {escape(', '.join(docs.get('encoders', [])) or '-')}", soft_wrap=True)
    text = report.get("text")
    if text and text["pages_by_source"]:
        names = {"pdf": "text layer", "ocr": "OCR", "pdf+ocr": "text layer + OCR of image areas",
                 "unrecorded": "not recorded (indexed before the text layer)"}
        out.print("page text: " + ", ".join(f"{v} {names.get(k, k)}" for k, v in text["pages_by_source"].items())
                  + ("; why: " + ", ".join(f"{k} {v}" for k, v in text["pages_by_reason"].items())
                     if text["pages_by_reason"] else ""), soft_wrap=True)
    cal = (report.get("candidates") or {}).get("calibration")
    if cal:
        b = cal["budgets"]
        logged = cal["logged_queries"]
        source = f"{logged} logged" if logged else "pseudo-queries only: a prior, logged queries make it right"
        out.print(f"candidate stage: estimated recall@10 {cal['estimated_recall']} (target {cal['target_recall']}, "
                  f"{cal['queries']} queries, {source}, on {cal['pages']} pages, {cal['measured_at']}); budgets: probe "
                  f"{b['probe_budget']}, pool {b['pool']}, rerank {b['candidates']}-{b['max_candidates']}", soft_wrap=True)
    qlog = (report.get("candidates") or {}).get("query_log")
    if qlog and qlog["queries"]:
        out.print(f"query log: {qlog['queries']} queries in {qlog['files']} files, newest {qlog['newest']}", soft_wrap=True)
    for what in report.get("unreported", []):
        out.print(Text(f"not reported: {what}", style="yellow"), soft_wrap=True)
    if report["runs"]:
        rt = Table(title="last runs", title_justify="left")
        for col in ("run", "status", "started", "duration", "indexed", "touched", "unchanged", "failed", "pruned"):
            rt.add_column(col, overflow="fold")
        for r in report["runs"]:
            d = r.get("documents") or r.get("progress") or {}
            dur = f"{r['duration_s']:.1f} s" if r.get("duration_s") is not None else "-"
            status = r.get("status", "?") + (f", dead: {r['dead']}" if r.get("dead") else "")
            rt.add_row(Text(r["run_id"]), Text(status, style="red" if r.get("dead") else ""),
                       _time(r.get("started_at")), dur, *(str(d.get(k, "")) for k in ("indexed", "touched", "skipped", "failed", "pruned")))
        out.print(rt)
    if report["failed"]:
        ft = Table(title=f"documents not indexed or not up to date ({len(report['failed'])})", title_justify="left")
        for col in ("uri", "status", "kind", "attempts", "reason"):
            ft.add_column(col, overflow="fold")
        for f in report["failed"]:
            ft.add_row(Text(f["uri"]), f["status"], f.get("failure") or "", str(f.get("attempts") or 0),
                       Text(f["error"] or ""))
        out.print(ft)
    if report["problems"]:
        out.print("[red]the index is damaged:")
        for p in report["problems"]:
            out.print(Text(f"  {p}", style="red"), soft_wrap=True)
    elif report.get("no_tables"):
        out.print(Text(report["no_tables"], style="yellow"), soft_wrap=True)
    else:
        out.print("[green]intact")


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
