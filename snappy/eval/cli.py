"""``snappy eval``: score pre-computed predictions or run the full chain on a dataset.

The ``snappy`` command (``pipelines/cli.py``) calls :func:`register` to add the command to its app.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import List, Optional

import typer

from snappy.eval.report import (
    ceilings_table,
    comparison_table,
    no_words_note,
    paper_table,
    precision_table,
    systems_table,
)

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
        known = [(n, r[split]) for n, r in results.items() if split in r]
        if not known:
            continue  # no dataset joined: single/multi-page unknown
        what = split.replace("_", "-")
        sub = [(n, r) for n, r in known if r.get("n_samples")]
        if not sub:
            typer.echo(f"\n{what} questions: none in these predictions.")
            continue
        protocol = ("each evidence page scored against its own page's selection" if all(
            p.pages for preds in runs.values() for p in preds if p.multi_page == (split == "multi_page"))
            else "paper protocol: every GT box against one selection")
        typer.echo(f"\n{what} questions ({protocol}):\n")
        typer.echo(paper_table(sub))


def _split_list(values: Optional[List[str]]) -> list[str]:
    """Repeated and/or comma-separated option values, in order."""
    return [v.strip() for item in (values or []) for v in item.split(",") if v.strip()]


def eval_command(
    ctx: typer.Context,
    predictions: Optional[List[Path]] = typer.Option(None, "--predictions", "-p", help="Pre-computed run file(s): the paper's summary.json format or snappy's per-sample JSONL."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="BBox-DocVQA folder / s3:// prefix / annotation JSONL, a generic JSONL, or hf:ID."),
    fmt: str = typer.Option("auto", "--format", help="auto | bbox-docvqa | jsonl | hf"),
    annotations: Optional[str] = typer.Option(None, "--annotations", help="BBox-DocVQA annotation JSONL if not in the dataset folder."),
    index: Optional[str] = typer.Option(None, "--index", help="Read pages from this snappy index instead of running OCR + encoder."),
    encoder: str = typer.Option("lexical", "--encoder", help="Encoder spec (lexical, tiny, colqwen2.5, an HF id or folder)."),
    ocr: str = typer.Option("paddle", "--ocr", help="OCR engine (paddle, rapid, tesseract)."),
    thresholds: List[str] = typer.Option(["p50"], "--thresholds", "--threshold", help="Selection(s), comma-separated or repeated: [line:|block:|auto:]p50 | adaptive[:k] | topK | gap[:share] | a number; default = what snappy query does by default. Several are evaluated from one OCR + encoder pass and compared in one report."),
    methods: List[str] = typer.Option(["iou"], "--method", "--methods", help="Region scoring, comma-separated or repeated: iou (paper) | max | mean | ior."),
    name: Optional[str] = typer.Option(None, "--name", help="The run's name in tables and reports (default: OCR+encoder, or index:NAME)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (run.json, summary.json, samples.jsonl, report.md, figures)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N samples."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip samples already in OUT (only if OUT/run.json has the same settings); --no-resume starts over."),
    random_repeats: int = typer.Option(20, "--random-repeats"),
    seed: int = typer.Option(0, "--seed"),
    overlap: float = typer.Option(0.5, "--overlap", help="Region-level criterion: share of a region inside the GT union."),
    tiktoken_file: Optional[Path] = typer.Option(None, "--tiktoken-file", help="Local cl100k_base.tiktoken (else $SNAPPY_CL100K_FILE / TIKTOKEN_CACHE_DIR)."),
    approx_text_tokens: bool = typer.Option(False, "--approx-text-tokens", help="If cl100k_base is unavailable, count text tokens approximately (reported as such)."),
    no_tokens: bool = typer.Option(False, "--no-tokens", help="Skip token counts."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress with ETA (a bar on a terminal, else a log line every 30 s)."),
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
        run = DatasetRun(dataset, fmt, annotations, index, encoder, ocr, tuple(_split_list(thresholds)),
                         tuple(_split_list(methods)), name, out, limit, resume, random_repeats, seed, overlap,
                         tiktoken_file, approx_text_tokens, no_tokens, as_json, progress, ray_actors, ray_address)
        _dataset_mode(run, (ctx.obj or {}).get("eval_on_ray"))
    except DatasetError as e:
        _fail(str(e))


def _package_versions(names: List[str]) -> dict:
    from importlib import metadata

    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


_OCR_PACKAGES = {"paddle": ["paddleocr", "paddlex", "onnxruntime"], "rapid": ["rapidocr", "onnxruntime"],
                 "tesseract": [], "none": []}  # tesseract: the binary's own version (tesseract --version)


def _dataset_fingerprint(samples) -> str:
    """sha256 over the loaded questions (ids, queries, modes, page refs and GT boxes)."""
    import hashlib

    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps([s.sample_id, s.query, s.mode, [[str(p.image), p.page, p.gt_boxes.tolist()]
                                                             for p in s.pages]]).encode())
    return h.hexdigest()


def _dataset_ref(dataset: str) -> str:
    return dataset if "://" in dataset or dataset.startswith("hf:") else str(Path(dataset).resolve())


def run_settings(dataset: str, fmt: str, annotations: Optional[str], fingerprint: str, index: Optional[str],
                 encoder: str, ocr: str, cfgs: dict, text_tokens: Optional[str]) -> dict:
    """What a run's records depend on (stored in OUT/run.json; a resume needs them equal)."""
    import snappy
    from snappy.ocr import parse_ocr_options

    first = next(iter(cfgs.values()))
    versions = {"snappy": snappy.__version__}
    ocr_opts = None
    if index:
        versions.update(_package_versions(["pylance"]))
    else:
        ocr_opts = parse_ocr_options(ocr).to_dict()
        versions.update(_package_versions(_OCR_PACKAGES.get(ocr_opts["kind"], [])))
        if ocr_opts["kind"] == "tesseract":
            from snappy.ocr.tesseract import tesseract_version

            versions["tesseract"] = tesseract_version(ocr_opts.get("tesseract_cmd"))
    if not (encoder.startswith(("lexical", "null", "none"))):
        versions.update(_package_versions(["colpali-engine", "transformers", "torch"]))
    return {
        "dataset": {"path": _dataset_ref(dataset), "format": fmt,
                    "annotations": _dataset_ref(annotations) if annotations else None, "sha256": fingerprint},
        "index": _dataset_ref(index) if index else None, "ocr": ocr_opts, "encoder": encoder,
        "thresholds": list(dict.fromkeys(c.threshold for c in cfgs.values())),
        "methods": list(dict.fromkeys(c.method for c in cfgs.values())),
        "reduce": first.reduce, "overlap": first.overlap, "random_repeats": first.random_repeats, "seed": first.seed,
        "curve": list(first.curve), "hit_thresholds": list(first.hit_thresholds), "text_tokens": text_tokens,
        "versions": versions,
    }


def default_run_name(index: Optional[str], encoder: str, ocr: str) -> str:
    if index:
        return f"index:{Path(index.rstrip('/')).name or index}"
    try:
        from snappy.ocr import parse_ocr_options

        kind = parse_ocr_options(ocr).kind
    except ValueError:
        kind = ocr
    return f"{kind}+{encoder}"


@dataclass(frozen=True)
class DatasetRun:
    """What ``snappy eval --dataset`` runs: the command's options, typed (``eval_command`` fills it)."""

    dataset: str
    fmt: str = "auto"
    annotations: Optional[str] = None
    index: Optional[str] = None
    encoder: str = "lexical"
    ocr: str = "paddle"
    thresholds: tuple[str, ...] = ("p50",)
    methods: tuple[str, ...] = ("iou",)
    name: Optional[str] = None
    out: Optional[Path] = None
    limit: Optional[int] = None
    resume: bool = True
    random_repeats: int = 20
    seed: int = 0
    overlap: float = 0.5
    tiktoken_file: Optional[Path] = None
    approx_text_tokens: bool = False
    no_tokens: bool = False
    as_json: bool = False
    progress: bool = True
    ray_actors: int = 0
    ray_address: Optional[str] = None


def _dataset_mode(run: DatasetRun, eval_on_ray=None) -> None:
    """Evaluate every selection of ``run`` from one OCR + encoder pass; print, and write OUT."""
    from snappy.eval.datasets import load_dataset
    from snappy.eval.runner import EvalConfig, plan_selections

    try:
        cfgs = plan_selections(list(run.thresholds), list(run.methods),
                               EvalConfig(overlap=run.overlap, random_repeats=run.random_repeats, seed=run.seed))
    except ValueError as e:
        _fail(str(e))
    if not run.index:
        try:
            from snappy.ocr import parse_ocr_options

            parse_ocr_options(run.ocr)
        except ValueError as e:
            _fail(str(e))
    counter = _text_counter(run)
    samples = load_dataset(run.dataset, run.fmt, run.annotations)
    settings = run_settings(run.dataset, run.fmt, run.annotations, _dataset_fingerprint(samples), run.index,
                            run.encoder, run.ocr, cfgs, counter.name if counter else None)
    if run.limit is not None:
        samples = samples[:run.limit]
    name = run.name or default_run_name(run.index, run.encoder, run.ocr)
    results = _evaluate(run, name, samples, cfgs, counter, settings, eval_on_ray)
    summaries = _summaries(results, cfgs, name, counter)
    if len(summaries) == 1:
        _single_report(run, next(iter(summaries.values())), next(iter(results.values())).records, counter)
    else:
        _comparison_report(run, name, results, summaries, counter)


def _text_counter(run: DatasetRun):
    """The text-token counter of the run (None with --no-tokens)."""
    from snappy.eval.tokens import TokenizerUnavailable, text_counter

    if run.no_tokens:
        return None
    try:
        return text_counter(run.tiktoken_file, approximate=run.approx_text_tokens)
    except TokenizerUnavailable as e:
        _fail(f"{e} (or --no-tokens to skip token counts)")


def _evaluate(run: DatasetRun, name: str, samples, cfgs: dict, counter, settings: dict, eval_on_ray) -> dict:
    """Per selection, the run's records: in this process, or spread over Ray actors."""
    from snappy.eval.runner import RunSettingsMismatch, SelectionSet, prepare_run_dir, run_selections
    from snappy.eval.tokens import text_counter

    factory = partial(make_scorer, run.index, run.encoder, run.ocr, next(iter(cfgs.values())).method)
    try:
        if run.ray_actors > 0:
            if eval_on_ray is None:  # the Ray runner comes from the pipelines package (the `snappy` CLI passes it)
                _fail("--ray-actors needs the Ray pipelines: run it through the `snappy` command")
            counter_factory = None if counter is None else partial(text_counter, run.tiktoken_file,
                                                                    run.approx_text_tokens)
            evaluate = partial(eval_on_ray, scorer_factory=factory, cfg=SelectionSet.of(cfgs),
                               counter_factory=counter_factory, actors=run.ray_actors, address=run.ray_address)
            return run_selections(samples, None, cfgs, counter, run.out, resume=run.resume, progress=run.progress,
                                  evaluate=evaluate, label=f"{name} on {run.ray_actors} Ray actors",
                                  settings=settings, name=name)
        if run.out is not None:  # check OUT/run.json before loading OCR and encoder
            prepare_run_dir(run.out, settings, run.resume, name)
        return run_selections(samples, factory(), cfgs, counter, run.out, resume=run.resume, progress=run.progress,
                              label=name)
    except RunSettingsMismatch as e:
        _fail(str(e))


def _summaries(results: dict, cfgs: dict, name: str, counter) -> dict[str, dict]:
    from snappy.eval.runner import selection_label, summarize_records

    out = {}
    for k, res in results.items():
        s = summarize_records(res.records, cfgs[k])
        s.update(name=name, selection=k, label=selection_label(name, k), text_tokens=counter.name if counter else None)
        out[k] = _clean(s)
    return out


def _single_report(run: DatasetRun, summary: dict, records, counter) -> None:
    from snappy.eval.report import write_report

    if run.out:
        write_report(run.out, summary, records)
    if run.as_json:
        typer.echo(json.dumps(summary))
        return
    _token_note(counter)
    typer.echo(f"snappy eval: {summary['label']}\n")
    typer.echo(paper_table([(summary["label"], summary)]))
    typer.echo("")
    typer.echo(systems_table(summary["systems"], summary["label"]))
    _level_notes(summary)
    if run.out:
        typer.echo(f"\nwrote {run.out}/run.json, summary.json, samples.jsonl, report.md and figures")


def _comparison_report(run: DatasetRun, name: str, results: dict, summaries: dict, counter) -> None:
    from snappy.eval.report import write_comparison, write_report
    from snappy.eval.runner import compare_selections, selection_dir_name

    keys = list(summaries)
    first_s = summaries[keys[0]]
    top = _clean({
        "name": name, "selections": keys, "n_samples": first_s["n_samples"],
        "folders": {k: selection_dir_name(k) for k in keys},
        "comparison": compare_selections(summaries),
        "baselines": {b: first_s["systems"][b] for b in ("all_ocr", "ceiling") if b in first_s["systems"]},
        "ceilings": first_s.get("ceilings", {}), "no_words": first_s.get("no_words", []),
        "failures": first_s.get("failures", []), "text_tokens": counter.name if counter else None,
        "summaries": summaries,
    })
    if run.out:
        for k, res in results.items():
            write_report(run.out / selection_dir_name(k), summaries[k], res.records)
        write_comparison(run.out, {k: v for k, v in top.items() if k != "summaries"}, summaries)
    if run.as_json:
        typer.echo(json.dumps(top))
        return
    _token_note(counter)
    typer.echo(f"snappy eval: {name}, {len(keys)} selections from one OCR + encoder pass\n")
    typer.echo(comparison_table(top["comparison"]))
    _level_notes(top)
    if run.out:
        typer.echo(f"\nwrote {run.out}/run.json, summary.json, report.md, curve.png and one folder per selection "
                   f"({', '.join(top['folders'].values())})")


def _level_notes(summary: dict) -> None:
    if summary.get("ceilings"):
        typer.echo("\nCeilings per region level (the best one region per GT box can reach):\n")
        typer.echo(ceilings_table(summary["ceilings"]))
    if summary.get("no_words"):
        typer.echo("\n" + no_words_note(summary["no_words"]))


def _token_note(counter) -> None:
    if counter is not None and not counter.exact:
        typer.echo("NOTE: text token counts are APPROXIMATE (cl100k_base unavailable, --approx-text-tokens).")


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
