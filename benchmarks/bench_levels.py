"""Region levels per kind of page: the ceilings, the oracle and the encoder for each selection.

For each dataset (snappy's eval JSONL: `benchmarks/realpages.py` writes the real ones,
`python -m snappy.testing.synth blocks OUT` the generated one) and each category in it, prints per
selection: the ceiling of its level, the oracle (relevance map = the truth box) hit@0.5 / area
precision / kept fraction, the encoder's, and random lines at the encoder's kept fraction, plus
the default's share of the best level's ceiling. Kept fractions count line equivalents.

OCR output is cached per image in ``--ocr-cache`` (a folder of JSON files), so a rerun with other
selections or options costs only the scoring::

    python benchmarks/bench_levels.py /tmp/r18/receipts/dataset.jsonl /tmp/r18/papers/dataset.jsonl \\
        --ocr paddle --ocr-cache /tmp/r18/ocr --thresholds line:p50,line:gap,block:gap,default
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from snappy.regions import Region


class CachedOcr:
    """An OCR engine whose output is kept per image (sha256 of its pixels) in a folder."""

    def __init__(self, spec: str, folder: Path):
        self.spec, self.folder, self._engine = spec, Path(folder), None
        self.name = spec
        self.folder.mkdir(parents=True, exist_ok=True)

    def recognize(self, image) -> list[Region]:
        key = hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()[:32]
        path = self.folder / f"{self.spec}-{key}.json"
        if path.exists():
            return [Region.from_dict(d) for d in json.loads(path.read_text())]
        if self._engine is None:
            from snappy.ocr import make_ocr

            self._engine = make_ocr(self.spec)
        regions = self._engine.recognize(image)
        path.write_text(json.dumps([r.to_dict() for r in regions]))
        return regions


def _fig(block: dict | None, key: str) -> float | None:
    if not block:
        return None
    if key == "hit@0.5":
        return (block.get("hit_rate") or {}).get("0.5")
    return (block.get("precision") or {}).get(key)


def run(datasets: list[str], ocr: str, cache: Path, thresholds: list[str], encoder: str) -> dict:
    from snappy.encoders import make_encoder
    from snappy.eval.datasets import load_dataset
    from snappy.eval.runner import ChainScorer, EvalConfig, level_ceilings, plan_selections, run_selections, \
        summarize_records

    scorer = ChainScorer(CachedOcr(ocr, cache), make_encoder(encoder))
    cfgs = plan_selections(thresholds, ["iou"], EvalConfig(curve=("gap",)))
    out = {}
    for ds in datasets:
        samples = load_dataset(ds, "jsonl", None)
        res = run_selections(samples, scorer, cfgs, None, None, progress=False)
        cats = sorted({s.category for s in samples})
        for cat in [None] + (cats if len(cats) > 1 else []):  # the whole set, then each category
            def mine(x, cat=cat):
                return cat is None or x.get("category") == cat

            rows = {}
            for key, r in res.items():
                recs = [x for x in r.records if mine(x)]
                summ = summarize_records(recs, cfgs[key])
                sy = summ["systems"]
                rows[key] = {"n": summ["n_scored"], "no_words": len(summ["no_words"]),
                             "ceiling": _fig(sy.get("ceiling"), "hit@0.5"),
                             "ceiling_prec": _fig(sy.get("ceiling"), "area_precision"),
                             "oracle_hit": _fig(sy.get("oracle"), "hit@0.5"),
                             "oracle_prec": _fig(sy.get("oracle"), "area_precision"),
                             "oracle_kept": _fig(sy.get("oracle"), "kept_fraction"),
                             "hit": _fig(sy.get("method"), "hit@0.5"),
                             "prec": _fig(sy.get("method"), "area_precision"),
                             "kept": _fig(sy.get("method"), "kept_fraction"),
                             "random_hit": _fig(sy.get("random"), "hit@0.5")}
            first = next(iter(res.values())).records
            ceil = level_ceilings([x for x in first if mine(x)])
            out[Path(ds).parent.name + (f"/{cat}" if cat else " (all)")] = {"ceilings": {lv: c["hit_rate"]["0.5"] for lv, c in ceil.items()},
                                                    "selections": rows}
    return out


def table(results: dict) -> str:
    def p(x):
        return "n/a" if x is None else f"{100 * x:.0f}%"

    def f(x):
        return "n/a" if x is None else f"{x:.2f}"

    lines = ["| kind | questions | ceiling line / block / auto | selection | oracle hit@0.5 | oracle area prec. | "
             "oracle kept | % of best ceiling | encoder hit@0.5 | encoder area prec. | encoder kept | random hit@0.5 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, r in results.items():
        c = r["ceilings"]
        best = max(c.values()) if c else None
        cs = " / ".join(p(c.get(lv)) for lv in ("line", "block", "auto"))
        for k, (sel, x) in enumerate(r["selections"].items()):
            share = None if not best or x["oracle_hit"] is None else x["oracle_hit"] / best
            lines.append(f"| {kind if k == 0 else ''} | {x['n'] if k == 0 else ''} | {cs if k == 0 else ''} | {sel} | "
                         f"{p(x['oracle_hit'])} | {f(x['oracle_prec'])} | {f(x['oracle_kept'])} | {p(share)} | "
                         f"{p(x['hit'])} | {f(x['prec'])} | {f(x['kept'])} | {p(x['random_hit'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--ocr", default="paddle")
    ap.add_argument("--ocr-cache", type=Path, default=Path("/tmp/snappy-ocr-cache"))
    ap.add_argument("--thresholds", default="line:p50,line:gap,block:gap,default")
    ap.add_argument("--encoder", default="lexical")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--options", default="", help="BlockOptions fields to try, e.g. line_ratio=0.5,support=0.7")
    a = ap.parse_args()
    if a.options:  # a tuning aid: every BlockOptions() made in this process takes these values
        import functools

        import snappy.regions.blocks as blocks

        kw = {k: float(v) for k, v in (kv.split("=") for kv in a.options.split(","))}
        blocks.BlockOptions = functools.partial(blocks.BlockOptions, **kw)
    res = run(a.datasets, a.ocr, a.ocr_cache, [t for t in a.thresholds.split(",") if t], a.encoder)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    print(table(res))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
