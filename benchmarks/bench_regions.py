"""Region levels x selection rules on generated pages whose truth is a block or a line.

Writes ``snappy.testing.synth.write_block_dataset`` (paragraphs, two columns, tables, forms, captions,
sparse lines) to a folder, runs OCR once per page (cached there per engine) and the lexical
encoder, then evaluates every ``level:rule`` selection from that one pass with the eval runner
(the same code as ``snappy eval --thresholds``). Prints, per selection, the paper's mean IoU,
hit@0.5, area precision and kept fraction on block-truth and on line-truth questions, with the
level's OCR ceiling and the oracle (ground-truth patch scores, same rule).

    python benchmarks/bench_regions.py --ocr paddle --out /tmp/snappy-blocks
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import pickle
import sys
from pathlib import Path

log = logging.getLogger("bench_regions")

LEVELS = ("line", "block", "auto")
RULES = ("p50", "adaptive", "top1", "top3", "gap")


class CachedOcr:
    """An OCR engine whose results are kept in a pickle beside the dataset (one pass per engine)."""

    def __init__(self, engine: str, cache: Path):
        self.engine, self.cache, self.name = engine, cache, engine
        self.done = pickle.loads(cache.read_bytes()) if cache.exists() else {}
        self._ocr = None

    def recognize(self, image):
        h = hashlib.sha1(image.tobytes()).hexdigest()
        if h not in self.done:
            if self._ocr is None:
                from snappy.ocr import make_ocr

                self._ocr = make_ocr(self.engine)
            self.done[h] = self._ocr.recognize(image)
            self.cache.write_bytes(pickle.dumps(self.done))
        return self.done[h]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/snappy-blocks"))
    p.add_argument("--ocr", default="paddle")
    p.add_argument("--pages", type=int, default=18)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--levels", default=",".join(LEVELS))
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from snappy.encoders import make_encoder
    from snappy.eval.datasets import load_jsonl
    from snappy.eval.runner import ChainScorer, EvalConfig, plan_selections, run_selections, summarize_records
    from snappy.testing.synth import write_block_dataset

    dataset = args.out / "dataset.jsonl"
    if not dataset.exists():
        write_block_dataset(args.out, args.pages, args.seed)
    samples = load_jsonl(str(dataset))
    specs = [f"{lv}:{r}" for lv in args.levels.split(",") for r in args.rules.split(",")]
    cfgs = plan_selections(specs, ["iou"], EvalConfig(random_repeats=5, curve=()))
    scorer = ChainScorer(CachedOcr(args.ocr, args.out / f"ocr-{args.ocr}.pkl"), make_encoder("lexical"),
                         cache_pages=args.pages)
    results = run_selections(samples, scorer, cfgs, None, progress=False)
    rows = []
    for key, res in results.items():
        cfg = cfgs[key]
        for truth, keep in (("block", lambda r: r.get("category") != "line"), ("line", lambda r: r.get("category") == "line")):
            recs = [r for r in res.records if keep(r)]
            s = summarize_records(recs, cfg)["systems"]
            m, c, o = s["method"], s.get("ceiling", {}), s.get("oracle", {})
            rows.append({"selection": key, "truth": truth, "n": m["n_scored"], "mean_iou": m["mean_iou"],
                         "hit@0.5": m["hit_rate"].get("0.5"), "area_precision": m["precision"]["area_precision"],
                         "kept_fraction": m["precision"]["kept_fraction"], "ceiling_iou": c.get("mean_iou"),
                         "oracle_iou": o.get("mean_iou")})
    print(f"\nOCR {args.ocr}, lexical encoder, {len(samples)} questions on {args.pages} generated pages\n")
    print("| selection | truth | n | mean IoU | hit@0.5 | area precision | kept fraction | level ceiling | oracle |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['selection']} | {r['truth']} | {r['n']} | {r['mean_iou']:.3f} | {r['hit@0.5']:.3f} | "
              f"{r['area_precision']:.3f} | {r['kept_fraction']:.3f} | {r['ceiling_iou']:.3f} | {r['oracle_iou']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
