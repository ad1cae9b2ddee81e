"""The ``snappy`` command line: ``index``, ``query``, ``inspect`` (and ``eval`` when installed)."""
from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

log = logging.getLogger("snappy.cli")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Region-level document retrieval: index documents into Lance tables, query regions.")
err = Console(stderr=True)


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s",
                        handlers=[RichHandler(console=err, show_path=False)], force=True)
    logging.getLogger("snappy").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("pipelines").setLevel(logging.DEBUG if verbose else logging.INFO)


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
    limit: Optional[int] = typer.Option(None, help="index at most this many documents"),
    max_pages: Optional[int] = typer.Option(2000, help="per document; more pages -> a failed row"),
    full: bool = typer.Option(False, "--full", help="re-index every document (default: only changed ones)"),
    prune: bool = typer.Option(False, "--prune", help="delete documents no longer in the source"),
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
    """Index documents into Lance tables (a Ray Data job; starts a local Ray when none is running)."""
    try:
        from pipelines.config import IndexConfig
        from pipelines.index import format_summary, run_index
    except ImportError as e:
        raise typer.BadParameter(f"the indexing pipeline (pipelines/) cannot be imported: {e}") from e
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    values = dict(source=source, index=index_dir, encoder=encoder, ocr=ocr, dpi=dpi, limit=limit,
                  max_pages=max_pages, incremental=not full, prune=prune, ocr_actors=ocr_actors,
                  embed_actors=embed_actors, ocr_batch_size=ocr_batch_size, embed_batch_size=embed_batch_size,
                  ray_address=ray_address, ray_num_cpus=ray_num_cpus, ray_num_gpus=ray_num_gpus,
                  s3=_s3(s3_endpoint, s3_region))
    known = {f.name for f in fields(IndexConfig)}
    config = IndexConfig(**{k: v for k, v in values.items() if k in known})
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        progress.add_task(f"indexing {source} -> {index_dir} ({encoder}, ocr {ocr})", total=None)
        summary = run_index(config)
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
    top_pages: int = typer.Option(5, "--top-pages", "-k", min=1, help="result pages"),
    threshold: str = typer.Option("p50", help="region selection: p50 | adaptive[:k] | top3 | 0.4"),
    method: str = typer.Option("iou", help="region scoring: iou | ior | mean | max"),
    encoder: Optional[str] = typer.Option(None, help="query encoder (default: the one the index was built with)"),
    as_json: bool = typer.Option(False, "--json", help="print the result pages as JSON"),
    patch_scores: bool = typer.Option(False, "--patch-scores", help="include per-patch scores and grids in --json"),
    overlay: Optional[Path] = typer.Option(None, help="write result pages with regions + heat map (out.png or a folder)"),
    s3_endpoint: Optional[str] = typer.Option(None), s3_region: Optional[str] = typer.Option(None),
) -> None:
    """Rank pages by MaxSim and return their most relevant regions."""
    from snappy.propagation import METHODS, Threshold
    from snappy.search import Searcher

    try:
        Threshold.parse(threshold)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--threshold") from e
    if method not in METHODS:
        raise typer.BadParameter(f"{method!r} is not one of {METHODS}", param_hint="--method")
    try:
        searcher = Searcher(index_dir, encoder=encoder, storage_options=_s3(s3_endpoint, s3_region))
    except FileNotFoundError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    results = searcher.query(text, top_pages=top_pages, threshold=threshold, method=method)
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
        t = Table(title=f"#{r.rank}  {r.uri}  page {r.page_number}  score {r.score:.3f}", title_justify="left",
                  show_edge=False)
        for col in ("score", "bbox (px)", "text"):
            t.add_column(col)
        for reg in r.regions:
            t.add_row(f"{reg.score:.3f}", " ".join(f"{v:.0f}" for v in reg.bbox), reg.text)
        out.print(t)


# ---------------------------------------------------------------------------- inspect


@app.command()
def inspect(
    index_dir: str = typer.Argument(..., help="index location"),
    as_json: bool = typer.Option(False, "--json"),
    s3_endpoint: Optional[str] = typer.Option(None), s3_region: Optional[str] = typer.Option(None),
) -> None:
    """Table sizes, versions and failed documents of an index."""
    from snappy.storage import IndexStore, fs

    store = IndexStore(index_dir, _s3(s3_endpoint, s3_region))
    stats = store.stats()
    if not stats:
        err.print(f"[red]error:[/red] {store.uri}: no index tables found")
        raise typer.Exit(2)
    for name, s in stats.items():
        s["bytes"] = sum(f.size for f in fs.list_files(store.table_uri(name), None, store.storage_options))
    failed = store.failed_documents().to_pylist()
    if as_json:
        typer.echo(json.dumps({"index": store.uri, "tables": stats,
                               "failed": [{k: v for k, v in f.items() if k != "indexed_at"} for f in failed]}))
        return
    out = Console()
    t = Table(title=f"index {store.uri}", title_justify="left")
    for col in ("table", "rows", "version", "fragments", "size"):
        t.add_column(col, justify="right" if col != "table" else "left")
    for name, s in stats.items():
        t.add_row(name, str(s["rows"]), str(s["version"]), str(s["fragments"]), _human(s["bytes"]))
    out.print(t)
    docs = stats.get("documents", {})
    if docs:
        out.print("documents: " + ", ".join(f"{k} {v}" for k, v in sorted(docs.get("status", {}).items()))
                  + f"; encoder {', '.join(docs.get('encoders', [])) or '-'}")
    if failed:
        ft = Table(title=f"failed documents ({len(failed)})", title_justify="left")
        ft.add_column("uri")
        ft.add_column("error")
        for f in failed:
            ft.add_row(f["uri"], f["error"] or "")
        out.print(ft)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ---------------------------------------------------------------------------- eval (optional)

try:  # `snappy eval` lives in snappy.eval.cli; the CLI works without it
    from snappy.eval.cli import register as _register_eval
except ImportError as _e:  # pragma: no cover - depends on the installation
    log.debug("snappy eval unavailable: %s", _e)
else:
    _register_eval(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
