"""Generated documents with known text boxes, for tests, benchmarks and the sample corpus.

Pages are laid out in PDF points (top-left origin here; reportlab's bottom-left origin is
handled when drawing) and written as real vector-text PDFs. Every line's box is known, so a
query for a line's words has a ground-truth location: ``TextLine.bbox_px(dpi)`` is the box on
the page as snappy renders it at ``dpi``.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from reportlab.lib.pagesizes import A4, letter, landscape
from reportlab.pdfbase.pdfmetrics import getAscentDescent, stringWidth
from reportlab.pdfgen import canvas

FONT = "Helvetica"
LETTER, A4_SIZE, LETTER_LANDSCAPE = tuple(letter), tuple(A4), tuple(landscape(letter))

_FILLER = (
    "the report describes general observations about routine operations and standard "
    "procedures that were followed during the period under review while the committee noted "
    "several minor items for later discussion and agreed to continue monitoring ordinary "
    "activity across departments with careful attention to overall consistency and quality"
).split()


@dataclass(frozen=True)
class TextLine:
    text: str
    x: float  # left edge, points
    y: float  # top of the text box, points from the page top
    font_size: float = 11.0
    group: str | None = None  # the fact this line belongs to (a fact may wrap over lines)

    @property
    def bbox_pt(self) -> tuple[float, float, float, float]:
        """The line box: ink extent (ascent to descent) padded by 15% of the font size above and
        below, i.e. about the 1.2 em line height a layout annotator draws around a line."""
        ascent, descent = getAscentDescent(FONT, self.font_size)
        pad = 0.15 * self.font_size
        return (self.x, self.y - pad, self.x + stringWidth(self.text, FONT, self.font_size),
                self.y + ascent - descent + pad)

    def bbox_px(self, dpi: float) -> tuple[float, float, float, float]:
        s = dpi / 72.0
        return tuple(v * s for v in self.bbox_pt)  # type: ignore[return-value]


@dataclass
class SynthPage:
    size_pt: tuple[float, float]
    lines: list[TextLine] = field(default_factory=list)
    rules: list[tuple[float, float, float, float]] = field(default_factory=list)  # table lines, points

    def box_pt(self, text: str) -> tuple[float, float, float, float]:
        """Box (points) of the fact ``text`` (union of its wrapped lines) or of the line containing it."""
        lines = [ln for ln in self.lines if ln.group == text] or [ln for ln in self.lines if text in ln.text]
        if not lines:
            raise KeyError(text)
        boxes = [ln.bbox_pt for ln in lines]
        return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))

    def line_boxes_px(self, text: str, dpi: float) -> list[tuple[float, float, float, float]]:
        """Pixel boxes of each line of the fact ``text`` (or of the lines containing it)."""
        lines = [ln for ln in self.lines if ln.group == text] or [ln for ln in self.lines if text in ln.text]
        return [ln.bbox_px(dpi) for ln in lines]

    def box_px(self, text: str, dpi: float) -> tuple[float, float, float, float]:
        s = dpi / 72.0
        return tuple(v * s for v in self.box_pt(text))  # type: ignore[return-value]


@dataclass
class SynthDoc:
    name: str
    pages: list[SynthPage]

    def write_pdf(self, path: str | Path) -> Path:
        path = Path(path)
        c = canvas.Canvas(str(path), pagesize=self.pages[0].size_pt, invariant=1)  # invariant: byte-stable
        for page in self.pages:
            w, h = page.size_pt
            c.setPageSize((w, h))
            for x0, y0, x1, y1 in page.rules:
                c.line(x0, h - y0, x1, h - y1)
            for line in page.lines:
                ascent, _ = getAscentDescent(FONT, line.font_size)
                c.setFont(FONT, line.font_size)
                c.drawString(line.x, h - line.y - ascent, line.text)
            c.showPage()
        c.save()
        return path


@dataclass(frozen=True)
class Fact:
    """A query and where its answer is: document, page (1-based), the line holding it."""

    query: str
    doc: str
    page_number: int
    line_text: str


def _filler(rng: random.Random, width: float, font_size: float) -> str:
    """Random filler words filling at most ``width`` points."""
    words: list[str] = []
    while True:
        nxt = " ".join([*words, rng.choice(_FILLER)])
        if stringWidth(nxt, FONT, font_size) > width:
            return " ".join(words)
        words = nxt.split(" ")


def _wrap(text: str, width: float, font_size: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and stringWidth(f"{lines[-1]} {word}", FONT, font_size) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _column(page: SynthPage, x: float, top: float, width: float, n_lines: int, leading: float,
            font_size: float, facts: Sequence[str], rng: random.Random) -> None:
    """Fill one column with filler lines and wrapped facts at random, non-overlapping slots."""
    wrapped = [_wrap(f, width, font_size) for f in facts]
    need = sum(len(w) for w in wrapped)
    starts = sorted(rng.sample(range(n_lines - need + 1), len(facts)))
    # shift so wrapped facts never overlap
    slots: dict[int, tuple[str, str]] = {}
    offset = 0
    for start, fact, lines in zip(starts, facts, wrapped):
        for k, text in enumerate(lines):
            slots[start + offset + k] = (text, fact)
        offset += len(lines) - 1
    for i in range(n_lines):
        text, group = slots.get(i, (_filler(rng, width, font_size), None))
        page.lines.append(TextLine(text, x, top + i * leading, font_size, group))


def text_page(size_pt: tuple[float, float], facts: Sequence[str], rng: random.Random,
              n_lines: int = 24, font_size: float = 11.0) -> SynthPage:
    """A one-column page of filler lines with ``facts`` placed on spread-out lines."""
    w, h = size_pt
    margin, leading = 60.0, font_size * 1.9
    page = SynthPage(size_pt)
    _column(page, margin, margin, w - 2 * margin, min(n_lines, int((h - 2 * margin) // leading)),
            leading, font_size, facts, rng)
    return page


def two_column_page(size_pt: tuple[float, float], left: Sequence[str], right: Sequence[str],
                    rng: random.Random, font_size: float = 10.0) -> SynthPage:
    """Two columns; ``left``/``right`` facts land (wrapped) in their column."""
    w, h = size_pt
    margin, gutter, leading = 54.0, 24.0, font_size * 1.9
    col_w = (w - 2 * margin - gutter) / 2
    n_lines = int((h - 2 * margin) // leading)
    page = SynthPage(size_pt)
    for col, facts in enumerate((left, right)):
        _column(page, margin + col * (col_w + gutter), margin, col_w, n_lines, leading, font_size, facts, rng)
    return page


def table_page(size_pt: tuple[float, float], header: Sequence[str], rows: Sequence[Sequence[str]],
               title: str, font_size: float = 11.0) -> SynthPage:
    """A title and a ruled table; every cell is its own line of text."""
    w, _ = size_pt
    margin, row_h = 60.0, font_size * 2.4
    col_w = (w - 2 * margin) / len(header)
    page = SynthPage(size_pt, [TextLine(title, margin, margin, font_size + 3)])
    top = margin + 3 * font_size
    for r, cells in enumerate([header, *rows]):
        for c, cell in enumerate(cells):
            page.lines.append(TextLine(cell, margin + c * col_w + 6, top + r * row_h + 0.6 * font_size, font_size))
    n_rows = len(rows) + 1
    for r in range(n_rows + 1):
        page.rules.append((margin, top + r * row_h, w - margin, top + r * row_h))
    for c in range(len(header) + 1):
        page.rules.append((margin + c * col_w, top, margin + c * col_w, top + n_rows * row_h))
    return page


def sample_corpus(seed: int = 0) -> tuple[list[SynthDoc], list[Fact]]:
    """A small corpus (several pages, mixed sizes, a table, two columns) and known facts."""
    rng = random.Random(seed)
    f = {
        "turbine": "The Zephyr turbine produced forty megawatts during the harbor trial.",
        "glacier": "Researchers measured glacier retreat near Tromso using drone photogrammetry.",
        "vaccine": "Phase three vaccine enrollment reached nine thousand volunteers in Lisbon.",
        "basalt": "Basalt columns at the quarry were dated with argon isotopes.",
        "saffron": "Saffron prices in Valencia doubled after the autumn hailstorm.",
        "orbit": "The satellite orbit decays faster when solar flux is elevated.",
        "violin": "A violin workshop in Cremona restored the varnish on old instruments.",
    }
    report = SynthDoc("annual-report", [
        text_page(LETTER, [f["turbine"]], rng),
        text_page(LETTER, [f["glacier"]], rng),
        table_page(LETTER, ["Region", "Crop", "Yield"],
                   [["Valencia", "Saffron", "12 kg"], ["Kerala", "Green cardamom pods", "340 kg"],
                    ["Oaxaca", "Vanilla", "85 kg"], ["Yunnan", "Pu-erh tea", "910 kg"]],
                   "Table 3: Spice harvest by region"),
    ])
    journal = SynthDoc("journal-a4", [
        two_column_page(A4_SIZE, [f["vaccine"]], [f["basalt"]], rng),
        text_page(A4_SIZE, [f["saffron"]], rng),
    ])
    memo = SynthDoc("memo-landscape", [
        text_page(LETTER_LANDSCAPE, [f["orbit"], f["violin"]], rng, n_lines=14),
    ])
    facts = [
        Fact("zephyr turbine megawatts", "annual-report", 1, f["turbine"]),
        Fact("glacier retreat drone photogrammetry", "annual-report", 2, f["glacier"]),
        Fact("how much cardamom", "annual-report", 3, "Green cardamom pods"),
        Fact("vaccine enrollment volunteers lisbon", "journal-a4", 1, f["vaccine"]),
        Fact("basalt columns argon isotopes", "journal-a4", 1, f["basalt"]),
        Fact("saffron prices hailstorm", "journal-a4", 2, f["saffron"]),
        Fact("satellite orbit solar flux", "memo-landscape", 1, f["orbit"]),
        Fact("violin varnish cremona", "memo-landscape", 1, f["violin"]),
    ]
    return [report, journal, memo], facts


def write_corpus(out_dir: str | Path, seed: int = 0) -> tuple[list[Path], list[Fact]]:
    """Write the sample corpus as PDFs plus ``facts.json``; returns the PDF paths and facts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs, facts = sample_corpus(seed)
    paths = [d.write_pdf(out / f"{d.name}.pdf") for d in docs]
    (out / "facts.json").write_text(json.dumps([asdict(x) for x in facts], indent=1))
    return paths, facts


def fact_box_px(docs: Sequence[SynthDoc], fact: Fact, dpi: float) -> tuple[float, float, float, float]:
    """Ground-truth box of a fact's line at ``dpi``."""
    doc = next(d for d in docs if d.name == fact.doc)
    return doc.pages[fact.page_number - 1].box_px(fact.line_text, dpi)
