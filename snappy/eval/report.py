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


def systems_table(systems: dict, method_label: str = "method") -> str:
    """mean IoU / hit rates of method and baselines, then their precision figures (the method's
    row is named ``method_label``: the run's label)."""
    def label(n: str) -> str:
        return method_label if n == "method" else SYSTEM_LABELS.get(n, n)

    lines = ["| system | samples | mean IoU | hit@0.25 | hit@0.5 | hit@0.7 |", "|---|---|---|---|---|---|"]
    for name, b in systems.items():
        h = b["hit_rate"]
        lines.append(f"| {label(name)} | {b['n_scored']} | {num(b['mean_iou'])} | "
                     f"{pct(h.get('0.25'))} | {pct(h.get('0.5'))} | {pct(h.get('0.7'))} |")
    return "\n".join(lines) + "\n\n" + precision_table([(label(n), b["precision"]) for n, b in systems.items()])


def curve_table(curve: dict) -> str:
    lines = ["| threshold | kept fraction | area recall | area precision | union IoU | mean IoU | hit@0.5 |",
             "|---|---|---|---|---|---|---|"]
    for spec, c in curve.items():
        lines.append(f"| {spec} | {num(c['kept_fraction'])} | {num(c['area_recall'])} | {num(c['area_precision'])} | "
                     f"{num(c['union_iou'])} | {num(c['mean_iou'])} | {pct(c['hit@0.5'])} |")
    return "\n".join(lines)


def comparison_table(comparison: dict) -> str:
    """Selections of one run side by side (rows: :func:`snappy.eval.runner.compare_selections`):
    the method, then the same selection on the oracle map (relevance = the truth box), the best
    its level's regions allow, and random lines at the method's kept fraction. Kept fractions
    count line equivalents, so they compare across levels."""
    lines = ["| selection | samples | failed | mean IoU | hit@0.5 | area precision | area recall | kept fraction | "
             "regions kept | oracle hit@0.5 | oracle area precision | oracle kept | level ceiling hit@0.5 | "
             "random hit@0.5 | token saving vs all OCR | vs full image |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, c in comparison.items():
        o, ce, r = c.get("oracle") or {}, c.get("ceiling") or {}, c.get("random") or {}
        lines.append(f"| {c.get('label', key)} | {c.get('n_scored', 0)} | {c.get('n_failed', 0)} | {num(c.get('mean_iou'))} | "
                     f"{pct(c.get('hit@0.5'))} | {num(c.get('area_precision'))} | {num(c.get('area_recall'))} | "
                     f"{num(c.get('kept_fraction'))} | {num(c.get('n_selected'), 1)} | "
                     f"{pct(o.get('hit@0.5'))} | {num(o.get('area_precision'))} | {num(o.get('kept_fraction'))} | "
                     f"{pct(ce.get('hit@0.5'))} | {pct(r.get('hit@0.5'))} | "
                     f"{pct(c.get('token_savings_vs_all_ocr'))} | {pct(c.get('token_savings_vs_full_image'))} |")
    return "\n".join(lines)


def ceilings_table(ceilings: dict) -> str:
    """The best one region per GT box can reach at each level (``auto``: lines and blocks)."""
    lines = ["| level | samples | ceiling mean IoU | hit@0.25 | hit@0.5 | hit@0.7 |", "|---|---|---|---|---|---|"]
    for lv, c in (ceilings or {}).items():
        h = c.get("hit_rate") or {}
        lines.append(f"| {lv} | {c.get('n_scored', 0)} | {num(c.get('mean_iou'))} | {pct(h.get('0.25'))} | "
                     f"{pct(h.get('0.5'))} | {pct(h.get('0.7'))} |")
    return "\n".join(lines)


def no_words_note(items: Sequence[dict]) -> str:
    """One line on the questions with nothing to search for (reported apart from failures)."""
    if not items:
        return ""
    shown = ", ".join(f"`{i['sample_id']}` ({i.get('question')!r})" for i in items[:10])
    return (f"{len(items)} question(s) have no searchable words (punctuation only) and are not scored: {shown}"
            + (" ..." if len(items) > 10 else ""))


def _label(s: dict) -> str:
    return s.get("label") or s.get("name") or "method"


def _figures_note(figures: dict | None) -> list[str]:
    if figures is None:
        return ["", "Figures: `curve.png` (kept fraction vs area recall per threshold rule), "
                "`best_*.png` / `worst_*.png` (green: ground truth, red: selection, blue: other OCR regions)."]
    out = ["", "## Figures", ""]
    if figures.get("curve"):
        out.append(f"- `{figures['curve']}`: fraction of regions kept vs recall of ground-truth area, per threshold rule "
                   "(method and oracle patches), with the run's selection and the random baseline marked.")
    for tag, what in (("best", "best questions (highest paper IoU)"), ("worst", "worst questions (lowest paper IoU)")):
        if figures.get(tag):
            out.append(f"- {what}: " + ", ".join(f"`{f}`" for f in figures[tag]))
    if figures.get("only"):
        out.append(f"- only one question was scored, so there is no best/worst pair: `{figures['only'][0]}`")
    if not any(figures.get(k) for k in ("best", "worst", "only")):
        out.append("- no scored question: no overlays")
    out.append("- overlays: green = ground truth, red = selected regions, blue = other OCR regions (legend in each image)")
    return out


def markdown_report(summary: dict, title: str | None = None, figures: dict | None = None) -> str:
    s = summary
    label = _label(s)
    out = [f"# {title or 'snappy eval: ' + (s.get('name') or label)}", ""]
    cfg = s.get("config", {})
    out.append(f"Run `{label}`: threshold `{cfg.get('threshold')}`, region scoring `{cfg.get('method')}`, "
               f"{s['n_samples']} samples ({s['n_scored']} scored, {s['n_failed']} failed). Each evidence "
               "page is scored against its own page's regions.")
    if s.get("tokens_exact") is False:
        out.append("\n**Text token counts are APPROXIMATE** (cl100k_base was not available).")
    out += ["", "## Paper metrics", "", paper_table([(label, s)]), "", "## Method vs baselines", "",
            systems_table(s["systems"], label)]
    if s.get("ceilings"):
        out += ["", "## Ceilings per region level", "", ceilings_table(s["ceilings"])]
    if s.get("no_words"):
        out += ["", no_words_note(s["no_words"])]
    for key, title_ in (("single_page", "Single-page questions"), ("multi_page", "Multi-page questions")):
        if s.get(key) and s[key].get("method", {}).get("n_scored"):
            out += ["", f"## {title_}", "", systems_table(s[key], label)]
    if s.get("by_category"):
        out += ["", "## By category", "", f"| category | samples | {label} mean IoU | hit@0.5 | area precision | "
                "all-OCR mean IoU | random mean IoU | oracle mean IoU |", "|---|---|---|---|---|---|---|---|"]
        for c, sy in s["by_category"].items():
            m = sy.get("method", {})
            out.append(f"| {c} | {m.get('n_scored', 0)} | {num(m.get('mean_iou'))} | {pct((m.get('hit_rate') or {}).get('0.5'))} | "
                       f"{num((m.get('precision') or {}).get('area_precision'))} | "
                       + " | ".join(num(sy.get(k, {}).get("mean_iou")) for k in ("all_ocr", "random", "oracle")) + " |")
    for key, title_ in (("curve", "Threshold curve (method)"), ("oracle_curve", "Threshold curve (oracle patches)")):
        if s.get(key):
            out += ["", f"## {title_}", "", curve_table(s[key])]
    if s.get("no_selection"):
        out += ["", "Evidence pages where the selection kept nothing: "
                + ", ".join(f"{n} {why}" for why, n in sorted(s["no_selection"].items()))
                + " (\"flat\": every region scored the same, the query matched nothing on the page)."]
    if s.get("failures"):
        out += ["", "## Failures", ""] + [f"- `{f['sample_id']}`: {f['error']}" for f in s["failures"][:50]]
    out += _figures_note(figures)
    return "\n".join(out) + "\n"


def comparison_report(top: dict, figures: dict | None = None) -> str:
    """report.md of a run with several selections: one table comparing them, then the links."""
    name = top.get("name") or "snappy eval"
    comp = top["comparison"]
    out = [f"# snappy eval: {name}", "",
           f"Run `{name}`: {len(comp)} selections evaluated from one OCR + encoder pass over "
           f"{top.get('n_samples', 0)} samples. Each selection's records, summary, report and figures are in "
           "its own folder; every figure there equals a run of that selection alone.", "",
           "## Selections compared", "", comparison_table(comp)]
    if top.get("ceilings"):
        out += ["", "Ceilings per region level (the best one region per GT box can reach; kept fractions above "
                "count line equivalents):", "", ceilings_table(top["ceilings"])]
    if top.get("no_words"):
        out += ["", no_words_note(top["no_words"])]
    base = top.get("baselines") or {}
    if base:
        out += ["", "Selection-independent references on the same pages and regions:", "",
                systems_table(base)]
    out += ["", "## Per selection", ""]
    for key, c in comp.items():
        out.append(f"- `{c.get('label', key)}`: `{top['folders'][key]}/report.md`")
    if top.get("failures"):
        out += ["", "## Failures", ""] + [f"- `{f['sample_id']}`: {f['error']}" for f in top["failures"][:50]]
    if figures and figures.get("curve"):
        out += ["", "## Figures", "", f"- `{figures['curve']}`: fraction of regions kept vs recall of ground-truth "
                "area per threshold rule, each selection's operating point marked and labelled."]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ figures


def _rule_label(family: str) -> str:
    return {"percentile": "percentile rule (pK)", "top": "top-k rule (topK)", "adaptive": "adaptive rule (mean + k·std)",
            "fixed": "fixed score"}.get(family, f"{family} rule")


def plot_curves(summary: dict, path: Path, points: dict[str, tuple[float, float]] | None = None,
                curves: dict[str, dict] | None = None, title: str | None = None) -> Path | None:
    """Kept fraction vs area recall: one labelled series per threshold rule (method, and oracle
    patches), each point annotated with its spec; the random baseline (the diagonal, and its
    point at the run's budget) and the run's selections (``points``: label -> (kept, recall);
    default: this summary's own) are labelled markers too. ``curves`` (label -> curve dict)
    replaces the summary's method curve (one per region-scoring method)."""
    fig = curve_figure(summary, points, curves, title)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=150, metadata={"Software": None})
    plt.close(fig)
    return path


def curve_figure(summary: dict, points: dict[str, tuple[float, float]] | None = None,
                 curves: dict[str, dict] | None = None, title: str | None = None):
    """The matplotlib figure of :func:`plot_curves` (None without a curve)."""
    from snappy.eval.runner import selection_family

    curves = curves if curves is not None else ({"method": summary["curve"]} if summary.get("curve") else {})
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 7))
    series = [(name, c, "-o", True) for name, c in curves.items()]
    if summary.get("oracle_curve"):
        series.append(("oracle patches", summary["oracle_curve"], ":x", False))
    annotated: list[tuple[float, float]] = []
    for name, curve, style, annotate in series:
        fams = list(dict.fromkeys(selection_family(s) for s in curve))
        for fam in fams:
            pts = sorted((c["kept_fraction"], c["area_recall"], s) for s, c in curve.items() if selection_family(s) == fam)
            if not pts:
                continue
            xs, ys, specs = zip(*pts)
            line, = ax.plot(xs, ys, style, ms=4, label=f"{name}: {_rule_label(fam)}")
            if annotate:
                for x, y, sp in pts:
                    if all(abs(x - a) > 0.03 or abs(y - b) > 0.03 for a, b in annotated):  # no piles of text
                        annotated.append((x, y))
                        ax.annotate(sp, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7,
                                    color=line.get_color())
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, label="random selection (expected recall = kept fraction)")
    rnd = summary.get("systems", {}).get("random", {}).get("precision", {})
    if rnd.get("kept_fraction") is not None and rnd.get("area_recall") is not None:
        ax.plot([rnd["kept_fraction"]], [rnd["area_recall"]], "s", color="grey", ms=7,
                label=f"random baseline at {_label(summary)}'s budget")
    if points is None:
        m = summary.get("systems", {}).get("method", {}).get("precision", {})
        points = {_label(summary): (m["kept_fraction"], m["area_recall"])} if m.get("kept_fraction") is not None else {}
    for lab, (x, y) in points.items():
        if x is not None and y is not None:
            ax.plot([x], [y], "*", ms=14, mec="black", mew=0.6, label=f"selection {lab}")
    ax.set_xlabel("fraction of the page's OCR regions kept")
    ax.set_ylabel("recall of ground-truth area")
    ax.set_title(title or f"snappy eval: {summary.get('name') or _label(summary)}", fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_overlay(record: dict, path: Path, image=None, label: str = "", tag: str = "") -> Path | None:
    """Every evidence page at full width (>= 1200 px) with ground truth (green), the selection
    (red) and the other OCR regions (blue), a legend, and the question, its IoU and run label."""
    from snappy.overlay import GT_COLOUR, OTHER_COLOUR, SELECTED_COLOUR, BoxLayer, BoxPage, render_box_overlay

    if not record.get("pages"):
        return None
    pages = []
    for k, pg in enumerate(record["pages"]):
        img = image if k == 0 else None
        if img is None and pg.get("image"):
            try:
                from snappy.eval.datasets import open_image

                img = open_image(pg["image"])
            except Exception:  # overlays still work on a blank page
                img = None
        sel = set(pg["pred_idx"])
        n = len(pg["region_bboxes"])
        others = [b for i, b in enumerate(pg["region_bboxes"]) if i not in sel]
        layers = [BoxLayer(others, OTHER_COLOUR, "other OCR regions", 0.6),
                  BoxLayer(pg["pred_bboxes"], SELECTED_COLOUR, "selected regions", 1.0, fill_alpha=40),
                  BoxLayer(pg["gt_bboxes"], GT_COLOUR, "ground truth", 1.8, outset=1.0)]
        cap = (f"page {pg['page']}: {len(pg['gt_bboxes'])} ground-truth box(es), {len(sel)} of {n} OCR regions selected")
        pages.append(BoxPage(tuple(pg["page_size"]), layers, img, cap))
    head = f"{tag + ': ' if tag else ''}{record['sample_id']}, paper IoU {num(record.get('paper_iou'))}"
    if label:
        head += f" ({label})"
    render_box_overlay(pages, [head, f"Q: {record.get('question', '')}"]).save(path)
    return path


def _overlay_groups(scored: Sequence[dict], n: int) -> dict[str, list[dict]]:
    """Best and worst questions, never the same one: with one scored question, ``only``."""
    if len(scored) == 1:
        return {"only": list(scored)}
    asc = sorted(scored, key=lambda r: r["paper_iou"])
    n_best = min(n, (len(asc) + 1) // 2)
    n_worst = min(n, len(asc) - n_best)
    return {"best": asc[::-1][:n_best], "worst": asc[:n_worst]}


def write_report(out_dir: str | Path, summary: dict, records: Sequence[dict], n_overlays: int = 3,
                 title: str | None = None) -> dict[str, Path]:
    """Write summary.json, report.md, curve.png and best/worst overlays into ``out_dir`` (overlays
    of an earlier report there are removed first)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "report": out / "report.md"}
    paths["summary"].write_text(json.dumps(summary, indent=1, default=_json_default))
    figures: dict = {}
    if (p := plot_curves(summary, out / "curve.png")) is not None:
        paths["curve"] = p
        figures["curve"] = p.name
    for tag in ("best", "worst", "only"):
        for old in out.glob(f"{tag}_*.png"):
            old.unlink()
    scored = [r for r in records if not r.get("failed") and r.get("pages") and not math.isnan(r.get("paper_iou", math.nan))]
    for tag, group in _overlay_groups(scored, n_overlays).items():
        for k, r in enumerate(group):
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(r["sample_id"]))
            if (p := plot_overlay(r, out / f"{tag}_{k + 1}_{safe}.png", label=_label(summary),
                                  tag=f"{tag} {k + 1}" if tag != "only" else "only scored question")) is not None:
                paths[f"{tag}_{k + 1}"] = p
                figures.setdefault(tag, []).append(p.name)
    paths["report"].write_text(markdown_report(summary, title, figures))
    return paths


def write_comparison(out_dir: str | Path, top: dict, summaries: dict[str, dict]) -> dict[str, Path]:
    """The top of a multi-selection run: summary.json (``top``), report.md comparing the selections
    and curve.png (each region-scoring method's curve, every selection's point labelled)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "report": out / "report.md"}
    paths["summary"].write_text(json.dumps(top, indent=1, default=_json_default))
    figures: dict = {}
    first = next(iter(summaries.values()))
    curves = {}
    for s in summaries.values():
        m = s.get("config", {}).get("method")
        if s.get("curve") and f"method {m}" not in curves:
            curves[f"method {m}"] = s["curve"]
    pts = {}
    for key, s in summaries.items():
        p = (s.get("systems", {}).get("method") or {}).get("precision") or {}
        pts[_label(s)] = (p.get("kept_fraction"), p.get("area_recall"))
    if curves:
        base = dict(first)
        base.pop("systems", None)  # the random point depends on the selection: the diagonal stands for it
        if len({s.get("config", {}).get("method") for s in summaries.values()}) > 1:
            base.pop("oracle_curve", None)  # one oracle curve per method: see the selections' own figures
        if (p := plot_curves(base, out / "curve.png", points=pts, curves=curves,
                             title=f"snappy eval: {top.get('name')}")) is not None:
            paths["curve"] = p
            figures["curve"] = p.name
    paths["report"].write_text(comparison_report(top, figures))
    return paths


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)
