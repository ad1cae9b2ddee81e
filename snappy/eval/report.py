"""Reports: the paper's table, precision-aware tables, summary.json, markdown, PNG figures."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

SYSTEM_LABELS = {"method": "method", "all_ocr": "all OCR regions", "random": "random (same size)",
                 "ceiling": "OCR ceiling", "oracle": "oracle patches"}


def pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def paper_table(rows: Sequence[tuple[str, dict]]) -> str:
    """The paper's table: one row per (name, summary with n_scored, mean_iou, hit_rate, savings)."""
    lines = ["| model | samples | failed | mean IoU | hit@0.25 | hit@0.5 | hit@0.7 | token saving vs all OCR | vs full image |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in rows:
        h = s.get("hit_rate") or {}
        lines.append(f"| {name} | {s.get('n_scored', 0)} | {s.get('n_failed', 0)} | {num(s.get('mean_iou'))} | "
                     f"{pct(h.get('0.25'))} | {pct(h.get('0.5'))} | {pct(h.get('0.7'))} | "
                     f"{pct(s.get('token_savings_vs_all_ocr'))} | {pct(s.get('token_savings_vs_full_image'))} |")
    return "\n".join(lines)


def precision_table(rows: Sequence[tuple[str, dict]]) -> str:
    """Precision-aware means: rows of (name, precision dict)."""
    lines = ["| system | area precision | area recall | union IoU | region P | region R | region F1 | GT boxes found | kept fraction | regions kept |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in rows:
        lines.append(f"| {name} | {num(p.get('area_precision'))} | {num(p.get('area_recall'))} | {num(p.get('union_iou'))} | "
                     f"{num(p.get('region_precision'))} | {num(p.get('region_recall'))} | {num(p.get('region_f1'))} | "
                     f"{num(p.get('gt_box_recall'))} | {num(p.get('kept_fraction'))} | {num(p.get('n_selected'), 1)} |")
    return "\n".join(lines)


def systems_table(systems: dict) -> str:
    """mean IoU / hit rates of method and baselines, then their precision figures."""
    lines = ["| system | samples | mean IoU | hit@0.25 | hit@0.5 | hit@0.7 |", "|---|---|---|---|---|---|"]
    for name, b in systems.items():
        h = b["hit_rate"]
        lines.append(f"| {SYSTEM_LABELS.get(name, name)} | {b['n_scored']} | {num(b['mean_iou'])} | "
                     f"{pct(h.get('0.25'))} | {pct(h.get('0.5'))} | {pct(h.get('0.7'))} |")
    return "\n".join(lines) + "\n\n" + precision_table([(SYSTEM_LABELS.get(n, n), b["precision"]) for n, b in systems.items()])


def curve_table(curve: dict) -> str:
    lines = ["| threshold | kept fraction | area recall | area precision | union IoU | mean IoU | hit@0.5 |",
             "|---|---|---|---|---|---|---|"]
    for spec, c in curve.items():
        lines.append(f"| {spec} | {num(c['kept_fraction'])} | {num(c['area_recall'])} | {num(c['area_precision'])} | "
                     f"{num(c['union_iou'])} | {num(c['mean_iou'])} | {pct(c['hit@0.5'])} |")
    return "\n".join(lines)


def markdown_report(summary: dict, title: str = "snappy eval") -> str:
    s = summary
    out = [f"# {title}", ""]
    cfg = s.get("config", {})
    out.append(f"Threshold `{cfg.get('threshold')}`, region scoring `{cfg.get('method')}`, "
               f"{s['n_samples']} samples ({s['n_scored']} scored, {s['n_failed']} failed). Each evidence "
               "page is scored against its own page's regions.")
    if s.get("tokens_exact") is False:
        out.append("\n**Text token counts are APPROXIMATE** (cl100k_base was not available).")
    out += ["", "## Paper metrics", "", paper_table([("method", s)]), "", "## Method vs baselines", "",
            systems_table(s["systems"])]
    for key, label in (("single_page", "Single-page questions"), ("multi_page", "Multi-page questions")):
        if s.get(key) and s[key].get("method", {}).get("n_scored"):
            out += ["", f"## {label}", "", systems_table(s[key])]
    if s.get("by_category"):
        out += ["", "## By category", "", "| category | samples | method mean IoU | hit@0.5 | area precision | "
                "all-OCR mean IoU | random mean IoU | oracle mean IoU |", "|---|---|---|---|---|---|---|---|"]
        for c, sy in s["by_category"].items():
            m = sy.get("method", {})
            out.append(f"| {c} | {m.get('n_scored', 0)} | {num(m.get('mean_iou'))} | {pct((m.get('hit_rate') or {}).get('0.5'))} | "
                       f"{num((m.get('precision') or {}).get('area_precision'))} | "
                       + " | ".join(num(sy.get(k, {}).get("mean_iou")) for k in ("all_ocr", "random", "oracle")) + " |")
    for key, label in (("curve", "Threshold curve (method)"), ("oracle_curve", "Threshold curve (oracle patches)")):
        if s.get(key):
            out += ["", f"## {label}", "", curve_table(s[key])]
    if s.get("failures"):
        out += ["", "## Failures", ""] + [f"- `{f['sample_id']}`: {f['error']}" for f in s["failures"][:50]]
    out += ["", "Figures: `curve.png` (kept fraction vs area recall per threshold family), "
            "`best_*.png` / `worst_*.png` (green: ground truth, red: selection, grey: other regions)."]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ figures


def _family(spec: str) -> str:
    return "percentile" if spec.startswith("p") else "top-k" if spec.startswith("top") else \
        "adaptive" if spec.startswith("adaptive") else "fixed"


def plot_curves(summary: dict, path: Path) -> Path | None:
    if not summary.get("curve"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, style in (("curve", "-o"), ("oracle_curve", ":x")):
        curve = summary.get(key) or {}
        for fam in ("percentile", "top-k", "adaptive"):
            pts = sorted((c["kept_fraction"], c["area_recall"]) for s, c in curve.items() if _family(s) == fam)
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, ms=3, label=f"{fam}{' (oracle)' if key == 'oracle_curve' else ''}")
    rnd = summary.get("systems", {}).get("random", {}).get("precision", {})
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, label="random (area recall ≈ kept)")
    if rnd.get("kept_fraction") is not None:
        ax.plot([rnd["kept_fraction"]], [rnd["area_recall"]], "s", color="grey")
    ax.set_xlabel("fraction of regions kept")
    ax.set_ylabel("recall of ground-truth area")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_overlay(record: dict, path: Path, image=None) -> Path | None:
    """GT (green) vs selection (red) vs other regions (grey) on the first evidence page."""
    if not record.get("pages"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt

    pages = record["pages"]
    fig, axes = plt.subplots(1, len(pages), figsize=(4.5 * len(pages), 6), squeeze=False)
    for ax, pg in zip(axes[0], pages):
        w, h = pg["page_size"]
        img = image
        if img is None and pg.get("image"):
            try:
                from snappy.eval.datasets import open_image

                img = open_image(pg["image"])
            except Exception:  # overlays still work on a blank page
                img = None
        if img is not None:
            ax.imshow(img)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        sel = set(pg["pred_idx"])
        for i, b in enumerate(pg["region_bboxes"]):
            if i not in sel:
                ax.add_patch(mpatches.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="0.6", lw=0.5))
        for b in pg["pred_bboxes"]:
            ax.add_patch(mpatches.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="red", lw=1.2))
        for b in pg["gt_bboxes"]:
            ax.add_patch(mpatches.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="green", lw=2))
        ax.set_title(f"page {pg['page']}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{record['sample_id']}: IoU {num(record.get('paper_iou'))} — {record.get('question', '')[:80]}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out_dir: str | Path, summary: dict, records: Sequence[dict], n_overlays: int = 3,
                 title: str = "snappy eval") -> dict[str, Path]:
    """Write summary.json, report.md, curve.png and best/worst overlays into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "report": out / "report.md"}
    paths["summary"].write_text(json.dumps(summary, indent=1, default=_json_default))
    paths["report"].write_text(markdown_report(summary, title))
    if (p := plot_curves(summary, out / "curve.png")) is not None:
        paths["curve"] = p
    scored = [r for r in records if not r.get("failed") and r.get("pages") and not math.isnan(r.get("paper_iou", math.nan))]
    scored.sort(key=lambda r: r["paper_iou"])
    for tag, group in (("worst", scored[:n_overlays]), ("best", scored[::-1][:n_overlays])):
        for k, r in enumerate(group):
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(r["sample_id"]))
            if (p := plot_overlay(r, out / f"{tag}_{k + 1}_{safe}.png")) is not None:
                paths[f"{tag}_{k + 1}"] = p
    return paths


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)
