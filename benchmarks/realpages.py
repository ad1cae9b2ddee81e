"""Real pages for `snappy eval`: public scans with ground-truth boxes, converted to its JSONL format.

Nothing here ships data: each source is read from a local mirror of its public repository (a bare
git directory, e.g. what `git clone --mirror` makes) at a pinned commit, and the pages and a
`dataset.jsonl` are written to OUT (keep OUT out of git).

Sources (repository, commit, paths, licence):

- ``publaynet`` (papers; the answer is a block): ibm-aur-nlp/PubLayNet @ a9a8113,
  ``examples/samples.json`` (COCO boxes of text/title/list/table/figure blocks) and the 20
  ``examples/PMC*.jpg`` pages. Annotations CDLA-Permissive-1.0 (IBM); images from the PMC Open
  Access subset, under its terms of use. One question per text, title and list block (at most 4 a
  page); its query is two words of the block that occur once on the page, read with ``--ocr`` (the
  annotations hold no text), so the lexical encoder can find it; the oracle needs no query.
- ``wildreceipt`` (receipts; the answer is one field or line): open-mmlab/mmocr (Apache-2.0),
  the WildReceipt test fixtures ``tests/data/kie_toy_dataset/wildreceipt/{1,2}.jpeg`` +
  ``data.txt`` @ 966296f and ``tests/data/kie_toy_dataset/image_files/Image_{36,83}/...jpeg`` +
  ``test.txt``/``train.txt`` @ 05031be: 4 receipts with a box, text and class per text segment.
  Questions: each ``*_value`` whose ``*_key`` is on the page is asked by the key's text ("TOTAL" ->
  the total's box: a value beside its label); a store address is asked by its words and its truth
  is every address box (an address given one box per line); product items by their own text.
- ``irsforms`` (form layouts; the answer is one field's value): conmecto/instead-assignment @
  8ce0906, ``test-scripts/{fw4,fw9,f1040,fw2}.pdf`` (IRS forms W-4, W-9, 1040, W-2: US government
  works, public domain). Real layouts, **not scans**: each page is rendered at 150 dpi, every text
  field (AcroForm widget at least 60 x 8 pt) gets a made-up value drawn into its box, and a question
  asks for a field by the printed label beside or above it (up to 4 words read from the text layer);
  its truth is the drawn value's box. W-2 is limited to its first 2 pages (the others repeat them).

Usage::

    # mirrors: the `fetch` tool or `git clone --mirror https://github.com/OWNER/NAME`
    python benchmarks/realpages.py publaynet /work/.mirror/ibm-aur-nlp+PubLayNet/repo OUT/papers
    python benchmarks/realpages.py wildreceipt /work/.mirror/open-mmlab+mmocr/repo OUT/receipts
    python benchmarks/realpages.py irsforms /work/.mirror/conmecto+instead-assignment/repo OUT/forms
    snappy eval --dataset OUT/papers/dataset.jsonl --ocr paddle --encoder lexical \\
        --thresholds line:gap,block:gap,default --out runs/papers
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

IRS_COMMIT = "8ce0906"
IRS_FORMS = {"fw4": None, "fw9": None, "f1040": None, "fw2": 2}  # form -> pages used (None: all)
PUBLAYNET_COMMIT = "a9a8113"
PUBLAYNET_KINDS = {1: "text", 2: "title", 3: "list"}  # blocks with words; tables and figures are left out
MMOCR_HEAD = "966296f26ac34cf0e96d40ab4a0a94c9a697909a"
MMOCR_OLD = "05031be0453a4d0b0658a90a45ef486007148645"
WILDRECEIPT = [  # (commit, annotation file, path prefix the file's names are relative to)
    (MMOCR_HEAD, "tests/data/kie_toy_dataset/wildreceipt/data.txt", ""),
    (MMOCR_OLD, "tests/data/kie_toy_dataset/test.txt", "tests/data/kie_toy_dataset/"),
    (MMOCR_OLD, "tests/data/kie_toy_dataset/train.txt", "tests/data/kie_toy_dataset/"),
]
WORD = re.compile(r"[^\W_]+")


def git_show(mirror: str, commit: str, path: str) -> bytes:
    return subprocess.run(["git", "--git-dir", mirror, "show", f"{commit}:{path}"], check=True,
                          capture_output=True).stdout


def _unique_words(lines, box, page_words: Counter, k: int = 2) -> list[str]:
    """Up to ``k`` words (>= 4 letters, longest first) of the lines inside ``box`` that occur once on the page."""
    x0, y0, x1, y1 = box
    inside = []
    for r in lines:
        a, b, c, d = r.bbox
        ov = max(0.0, min(c, x1) - max(a, x0)) * max(0.0, min(d, y1) - max(b, y0))
        if (c - a) * (d - b) > 0 and ov >= 0.5 * (c - a) * (d - b):
            inside += [w.lower() for w in WORD.findall(r.text)]
    cands = sorted({w for w in inside if len(w) >= 4 and w.isalpha() and page_words[w] == 1}, key=lambda w: (-len(w), w))
    return cands[:k]


def publaynet(mirror: str, out: Path, ocr: str, per_page: int) -> Path:
    from PIL import Image

    from snappy.ocr import make_ocr

    engine = make_ocr(ocr)
    coco = json.loads(git_show(mirror, PUBLAYNET_COMMIT, "examples/samples.json"))
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        if a["category_id"] in PUBLAYNET_KINDS:
            by_image.setdefault(a["image_id"], []).append(a)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for im in sorted(coco["images"], key=lambda i: i["file_name"]):
        data = git_show(mirror, PUBLAYNET_COMMIT, f"examples/{im['file_name']}")
        (out / im["file_name"]).write_bytes(data)
        lines = engine.recognize(Image.open(io.BytesIO(data)).convert("RGB"))
        words = Counter(w.lower() for r in lines for w in WORD.findall(r.text))
        anns = sorted(by_image.get(im["id"], []), key=lambda a: -a["bbox"][2] * a["bbox"][3])
        asked = 0
        for a in anns:
            x, y, w, h = a["bbox"]
            box = [x, y, x + w, y + h]
            q = _unique_words(lines, box, words)
            if len(q) < 2 or asked >= per_page:
                continue
            asked += 1
            rows.append({"id": f"{Path(im['file_name']).stem}_{a['id']}", "query": " ".join(q),
                         "image": im["file_name"], "boxes": [[round(v, 1) for v in box]],
                         "category": f"paper {PUBLAYNET_KINDS[a['category_id']]}"})
    return _write(out, rows)


def _quad_box(q: list[float]) -> list[float]:
    xs, ys = q[0::2], q[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


def wildreceipt(mirror: str, out: Path) -> Path:
    classes = {int(k): v.strip() for k, v in (ln.split(" ", 1) for ln in git_show(
        mirror, MMOCR_HEAD, "tests/data/kie_toy_dataset/wildreceipt/class_list.txt").decode().splitlines() if ln.strip())}
    out.mkdir(parents=True, exist_ok=True)
    rows, seen = [], set()
    for commit, ann_file, prefix in WILDRECEIPT:
        for line in git_show(mirror, commit, ann_file).decode().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            data = git_show(mirror, commit, prefix + rec["file_name"])
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:  # the same receipt under another name
                continue
            seen.add(digest)
            name = f"receipt_{len(seen):02d}.jpg"
            (out / name).write_bytes(data)
            segs = [(classes.get(a["label"], "Others"), a["text"], _quad_box(a["box"])) for a in rec["annotations"]]
            keys = {c[:-4]: (t, b) for c, t, b in segs if c.endswith("_key")}
            addr = [b for c, _, b in segs if c == "Store_addr_value"]
            if len(addr) >= 2:
                text = " ".join(t for c, t, _ in segs if c == "Store_addr_value")
                rows.append({"id": f"{name[:-4]}_address", "query": text, "image": name, "boxes": addr,
                             "category": "receipt address"})
            for k, (c, t, b) in enumerate(segs):
                if c.endswith("_value") and c[:-6] in keys and c != "Store_addr_value":
                    rows.append({"id": f"{name[:-4]}_{k}", "query": keys[c[:-6]][0], "image": name, "boxes": [b],
                                 "category": "receipt key/value"})
                elif c == "Prod_item_value":
                    rows.append({"id": f"{name[:-4]}_{k}", "query": t, "image": name, "boxes": [b],
                                 "category": "receipt line"})
    return _write(out, rows)


def _label_words(textpage, l: float, b: float, r: float, t: float) -> list[str]:
    """Up to 4 words of the printed label left of a field (same row), else just above it (PDF points)."""
    h = t - b
    for box in ((max(l - 220, 0), b - 0.2 * h, l - 1, t + 0.2 * h), (l, t, r, t + max(h, 10))):
        words = [w for w in WORD.findall(textpage.get_text_bounded(*box)) if len(w) >= 3 and w.isalpha()]
        if words:
            return words[-4:]
    return []


def irsforms(mirror: str, out: Path, dpi: float = 150.0, per_page: int = 6, seed: int = 0) -> Path:
    import random

    import matplotlib
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw
    from PIL import ImageDraw, ImageFont

    rng = random.Random(seed)
    font_path = Path(matplotlib.__file__).parent / "mpl-data/fonts/ttf/DejaVuSans.ttf"
    scale = dpi / 72.0
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for form, n_pages in IRS_FORMS.items():
        pdf = pdfium.PdfDocument(git_show(mirror, IRS_COMMIT, f"test-scripts/{form}.pdf"))
        pdf.init_forms()
        fh = pdf.formenv.raw
        for i in range(min(len(pdf), n_pages or len(pdf))):
            page = pdf[i]
            x0, _, _, y1 = page.get_bbox()
            fields = []
            for k in range(raw.FPDFPage_GetAnnotCount(page.raw)):
                a = raw.FPDFPage_GetAnnot(page.raw, k)
                if (raw.FPDFAnnot_GetSubtype(a) == raw.FPDF_ANNOT_WIDGET
                        and raw.FPDFAnnot_GetFormFieldType(fh, a) == raw.FPDF_FORMFIELD_TEXTFIELD):
                    rect = raw.FS_RECTF()
                    raw.FPDFAnnot_GetRect(a, rect)
                    if rect.right - rect.left >= 60 and rect.top - rect.bottom >= 8:
                        fields.append((rect.left, rect.bottom, rect.right, rect.top))
                raw.FPDFPage_CloseAnnot(a)
            if not fields:
                continue
            image = page.render(scale=scale, may_draw_forms=True).to_pil().convert("RGB")
            draw = ImageDraw.Draw(image)
            textpage = page.get_textpage()
            name = f"{form}_{i + 1}.png"
            asked = []
            for (l, b, r, t) in fields:
                px = ((l - x0) * scale, (y1 - t) * scale, (r - x0) * scale, (y1 - b) * scale)
                size = max(8, int(0.6 * (px[3] - px[1])))
                font = ImageFont.truetype(str(font_path), size)
                value = rng.choice([f"{rng.randint(10, 99999)}", f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/2024",
                                    " ".join(w.title() for w in rng.sample(_VALUE_WORDS, 2))])
                org = (px[0] + 4, px[1] + (px[3] - px[1] - size) / 2)
                box = draw.textbbox(org, value, font=font)
                if box[2] > px[2]:  # does not fit: leave the field empty
                    continue
                draw.text(org, value, fill=(20, 20, 90), font=font)
                q = _label_words(textpage, l, b, r, t)
                if len(q) >= 1:
                    asked.append({"query": " ".join(q), "boxes": [[round(v, 1) for v in box]]})
            image.save(out / name)
            for k, q in enumerate(rng.sample(asked, min(per_page, len(asked)))):
                rows.append({"id": f"{name[:-4]}_{k}", "image": name, "category": "form field", **q})
    return _write(out, rows)


_VALUE_WORDS = ["harbor", "maple", "quartz", "linden", "cobalt", "meadow", "juniper", "falcon", "granite", "willow",
                "summit", "orchard", "beacon", "cedar", "marlow", "thistle"]


def _write(out: Path, rows: list[dict]) -> Path:
    path = out / "dataset.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{path}: {len(rows)} questions on {len({r['image'] for r in rows})} pages")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", choices=("publaynet", "wildreceipt", "irsforms"))
    p.add_argument("mirror", help="the source repository's git directory (bare mirror)")
    p.add_argument("out", type=Path)
    p.add_argument("--ocr", default="paddle", help="publaynet: the engine that reads the words for the queries")
    p.add_argument("--per-page", type=int, default=4, help="publaynet: questions per page")
    a = p.parse_args()
    if a.source == "publaynet":
        publaynet(a.mirror, a.out, a.ocr, a.per_page)
    elif a.source == "irsforms":
        irsforms(a.mirror, a.out)
    else:
        wildreceipt(a.mirror, a.out)


if __name__ == "__main__":
    main()
