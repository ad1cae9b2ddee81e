"""``snappy eval``: score pre-computed predictions or run the full chain on a dataset.

The ``snappy`` command (``pipelines/cli.py``) calls :func:`register` to add the command to its app.
"""
from __future__ import annotations

import json
import logging
import math
from functools import partial
from pathlib import Path
from typing import List, Optional

import typer

from snappy.eval.report import paper_table, precision_table, systems_table

log = logging.getLogger(__name__)


def _clean(o):
    """JSON-safe copy (NaN -> null)."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, float) and math.isnan(o):
        return None
    return o


def _fail(msg: str) -> None:
    typer.echo(f"snappy eval: {msg}", err=True)
    raise typer.Exit(2)


def _predictions_mode(files: List[Path], dataset: Optional[str], fmt: str, annotations: Optional[str],
                      overlap: float, as_json: bool, out: Optional[Path]) -> None:
    from snappy.eval.datasets import load_dataset
    from snappy.eval.predictions import (
        attach_dataset,
        evaluate_predictions,
        load_predictions,
        model_name,
        union_of_selections,
    )

    runs = {model_name(f): load_predictions(f) for f in files}
    if len(runs) != len(files):
        _fail("two prediction files have the same model name")
    if dataset:
        ds = load_dataset(dataset, fmt, annotations)
        for name, preds in runs.items():
            n = attach_dataset(preds, ds)
            log.info("%s: %d of %d samples matched the dataset", name, n, len(preds))
    results = {name: evaluate_predictions(preds, overlap) for name, preds in runs.items()}
    if len(runs) > 1:
        union = union_of_selections(list(runs.values()))
        results_union = evaluate_predictions(union, overlap)
    else:
        results_union = None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(_clean({"runs": results, "union_of_selections": results_union}), indent=1))
    if as_json:
        obj = results[next(iter(results))] if len(results) == 1 else {"runs": results, "union_of_selections": results_union}
        typer.echo(json.dumps(_clean(obj)))
        return
    typer.echo(paper_table(list(results.items())))
    if results_union is not None:
        typer.echo("\nUnion of the runs' selections (a measured lower bound on returning every OCR region; "
                   "the run files hold no full region list):\n")
        typer.echo(paper_table([("union of selections", results_union)]))
    typer.echo("\nPrecision-aware figures (per sample, all GT boxes against the one selection):\n")
    rows = list(results.items()) + ([("union of selections", results_union)] if results_union else [])
    typer.echo(precision_table([(n, r["precision"]) for n, r in rows]))
    for split in ("single_page", "multi_page"):
        sub = [(n, r[split]) for n, r in results.items() if split in r]
        if sub:
            typer.echo(f"\n{split.replace('_', '-')} questions (paper protocol: every GT box against the first page's "
                       "selection):\n")
            typer.echo(paper_table(sub))


def eval_command(
    ctx: typer.Context,
    predictions: Optional[List[Path]] = typer.Option(None, "--predictions", "-p", help="Pre-computed run file(s): the paper's summary.json format or snappy's per-sample JSONL."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="BBox-DocVQA folder / s3:// prefix / annotation JSONL, a generic JSONL, or hf:ID."),
    fmt: str = typer.Option("auto", "--format", help="auto | bbox-docvqa | jsonl | hf"),
    annotations: Optional[str] = typer.Option(None, "--annotations", help="BBox-DocVQA annotation JSONL if not in the dataset folder."),
    index: Optional[str] = typer.Option(None, "--index", help="Read pages from this snappy index instead of running OCR + encoder."),
    encoder: str = typer.Option("lexical", "--encoder", help="Encoder spec (lexical, tiny, colqwen2.5, an HF id or folder)."),
    ocr: str = typer.Option("paddle", "--ocr", help="OCR engine (paddle, rapid, tesseract)."),
    threshold: str = typer.Option("p50", "--threshold", help="p50 | adaptive[:k] | topK | a number"),
    method: str = typer.Option("iou", "--method", help="Region scoring: iou (paper) | max | mean | ior"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (summary.json, samples.jsonl, report.md, figures)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N samples."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip samples already in OUT/samples.jsonl."),
    random_repeats: int = typer.Option(20, "--random-repeats"),
    seed: int = typer.Option(0, "--seed"),
    overlap: float = typer.Option(0.5, "--overlap", help="Region-level criterion: share of a region inside the GT union."),
    tiktoken_file: Optional[Path] = typer.Option(None, "--tiktoken-file", help="Local cl100k_base.tiktoken (else $SNAPPY_CL100K_FILE / TIKTOKEN_CACHE_DIR)."),
    approx_text_tokens: bool = typer.Option(False, "--approx-text-tokens", help="If cl100k_base is unavailable, count text tokens approximately (reported as such)."),
    no_tokens: bool = typer.Option(False, "--no-tokens", help="Skip token counts."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    ray_actors: int = typer.Option(0, "--ray-actors", help="Spread samples over N Ray actors (0: this process)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray address (default: $RAY_ADDRESS, else a local Ray)."),
) -> None:
    """Region-grounding evaluation: the paper's metrics, precision-aware metrics and baselines."""
    from snappy.eval.datasets import DatasetError

    try:
        if predictions:
            _predictions_mode(list(predictions), dataset, fmt, annotations, overlap, as_json, out)
            return
        if not dataset:
            _fail("give --predictions FILE or --dataset PATH")
        _dataset_mode(dataset, fmt, annotations, index, encoder, ocr, threshold, method, out, limit, resume,
                      random_repeats, seed, overlap, tiktoken_file, approx_text_tokens, no_tokens, as_json, progress,
                      ray_actors, ray_address, (ctx.obj or {}).get("eval_on_ray"))
    except DatasetError as e:
        _fail(str(e))


def _dataset_mode(dataset, fmt, annotations, index, encoder, ocr, threshold, method, out, limit, resume,
                  random_repeats, seed, overlap, tiktoken_file, approx_text_tokens, no_tokens, as_json, progress,
                  ray_actors=0, ray_address=None, eval_on_ray=None) -> None:
    from snappy.eval.datasets import load_dataset
    from snappy.eval.report import markdown_report, write_report
    from snappy.eval.runner import EvalConfig, run, summarize_records
    from snappy.eval.tokens import TokenizerUnavailable, text_counter
    from snappy.propagation import Threshold

    try:
        Threshold.parse(threshold)
    except ValueError as e:
        _fail(str(e))
    counter = None
    if not no_tokens:
        try:
            counter = text_counter(tiktoken_file, approximate=approx_text_tokens)
        except TokenizerUnavailable as e:
            _fail(f"{e} (or --no-tokens to skip token counts)")
    samples = load_dataset(dataset, fmt, annotations)
    if limit is not None:
        samples = samples[:limit]
    cfg = EvalConfig(threshold=threshold, method=method, overlap=overlap, random_repeats=random_repeats, seed=seed)
    factory = partial(make_scorer, index, encoder, ocr, method)
    jsonl = (out / "samples.jsonl") if out else None
    if ray_actors > 0:
        if eval_on_ray is None:  # the Ray runner comes from the pipelines package (the `snappy` CLI passes it)
            _fail("--ray-actors needs the Ray pipelines: run it through the `snappy` command")
        counter_factory = None if counter is None else partial(text_counter, tiktoken_file, approx_text_tokens)
        name = f"index:{index}" if index else f"{ocr}+{encoder}"
        evaluate = partial(eval_on_ray, scorer_factory=factory, cfg=cfg, counter_factory=counter_factory,
                           actors=ray_actors, address=ray_address)
        result = run(samples, None, cfg, counter, jsonl, resume=resume, progress=progress, evaluate=evaluate,
                     label=f"{name} on {ray_actors} Ray actors")
    else:
        scorer = factory()
        name = scorer.name
        result = run(samples, scorer, cfg, counter, jsonl, resume=resume, progress=progress)
    summary = summarize_records(result.records, cfg)
    summary["scorer"] = name
    summary["text_tokens"] = counter.name if counter else None
    if out:
        write_report(out, _clean(summary), result.records)
    if as_json:
        typer.echo(json.dumps(_clean(summary)))
        return
    if counter is not None and not counter.exact:
        typer.echo("NOTE: text token counts are APPROXIMATE (cl100k_base unavailable, --approx-text-tokens).")
    typer.echo(paper_table([(name, summary)]))
    typer.echo("")
    typer.echo(systems_table(summary["systems"]))
    if out:
        typer.echo(f"\nwrote {out}/summary.json, samples.jsonl, report.md and figures")
    else:
        log.debug(markdown_report(summary))


def make_scorer(index: str | None, encoder: str, ocr: str, method: str):
    """The page scorer of a run: pages read from a snappy index, or OCR + encoder on each image."""
    from snappy.eval.runner import ChainScorer, IndexScorer

    if index:
        from snappy.search import Searcher

        return IndexScorer(Searcher(index, encoder=None if encoder == "lexical" else encoder), method)
    from snappy.encoders import make_encoder
    from snappy.ocr import make_ocr

    return ChainScorer(make_ocr(ocr), make_encoder(encoder), method)


def register(app: typer.Typer, name: str = "eval") -> None:
    """Add the ``eval`` command to a Typer app (the main ``snappy`` CLI). ``--ray-actors`` uses the
    runner the app puts in ``ctx.obj["eval_on_ray"]`` (the library does not import the pipelines)."""
    app.command(name)(eval_command)
