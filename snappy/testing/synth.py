"""Generated documents with known text boxes, for tests, benchmarks and the sample corpus.

Pages are laid out in PDF points (top-left origin here; reportlab's bottom-left origin is
handled when drawing) and written as real vector-text PDFs. Every line's box is known, so a
query for a line's words has a ground-truth location: ``TextLine.bbox_px(dpi)`` is the box on
the page as snappy renders it at ``dpi``.
"""
from __future__ import annotations

import json
import os
import random
import re
import socket
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
        self._draw(str(path))
        return path

    def write_pdf_bytes(self) -> bytes:
        import io

        buf = io.BytesIO()
        self._draw(buf)
        return buf.getvalue()

    def _draw(self, target) -> None:
        c = canvas.Canvas(target, pagesize=self.pages[0].size_pt, invariant=1)  # invariant: byte-stable
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


# ---------------------------------------------------------------------- block-level pages
# Pages whose ground truth is a block: paragraphs, two-column text, table rows, form fields
# (label + value), multi-line addresses, figure captions; plus single-line facts on sparse text
# pages (line ground truth). Every block's lines carry ``group`` = the block's id, so its truth box
# is ``SynthPage.box_px(block_id, dpi)``; its question names two made-up words from the block.

@dataclass(frozen=True)
class BlockQuestion:
    query: str
    page: int  # 0-based page in the set
    block: str  # group id of the block's lines on that page
    kind: str  # paragraph | column | table_row | form_field | address | caption | line


def _words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(_FILLER) for _ in range(n)]


def _paragraph_lines(page: SynthPage, x: float, top: float, width: float, text: str, font_size: float,
                     group: str, leading: float = 1.25) -> float:
    """Wrap ``text`` into lines at ``leading`` x font size; returns the y below the paragraph."""
    y = top
    for line in _wrap(text, width, font_size):
        page.lines.append(TextLine(line, x, y, font_size, group))
        y += leading * font_size
    return y


def _keyed_text(rng: random.Random, used: set[str], n_words: int) -> tuple[str, list[str]]:
    """Filler text of ``n_words`` with two made-up key words at random places; returns (text, keys)."""
    words = _words(rng, n_words)
    keys = [_made_up_word(rng, used), _made_up_word(rng, used)]
    for k in keys:
        words.insert(rng.randrange(len(words) + 1), k)
    return " ".join(words), keys


def _paragraph_page(rng, used, size, qs, p, two_columns=False):
    w, h = size
    margin, fs = 60.0, 10.0
    page = SynthPage(size, [TextLine(" ".join(_words(rng, 4)).title(), margin, margin, 15.0, "heading")])
    cols = [(margin, (w - 2 * margin - 24) / 2), (margin + (w - 2 * margin + 24) / 2, (w - 2 * margin - 24) / 2)] \
        if two_columns else [(margin, w - 2 * margin)]
    kind = "column" if two_columns else "paragraph"
    n, asked = 0, []
    for x, cw in cols:
        y = margin + 36
        while True:
            text, keys = _keyed_text(rng, used, rng.randint(25, 70) if not two_columns else rng.randint(18, 45))
            lines = _wrap(text, cw, fs)
            if y + len(lines) * 1.25 * fs > h - margin:
                break
            gid = f"b{n}"
            n += 1
            y = _paragraph_lines(page, x, y, cw, text, fs, gid) + 1.1 * fs
            asked.append(BlockQuestion(" ".join(keys), p, gid, kind))
    qs.extend(rng.sample(asked, min(4, len(asked))))
    return page


def _figure_page(rng, used, size, qs, p):
    """Two figures (drawn frames) with one- or two-line captions, and a paragraph between them."""
    w, h = size
    margin, fs = 60.0, 10.0
    page = SynthPage(size)
    y = margin
    for k in range(2):
        fh = rng.uniform(150, 200)
        x0, x1 = margin + 40, w - margin - 40
        page.rules += [(x0, y, x1, y), (x0, y + fh, x1, y + fh), (x0, y, x0, y + fh), (x1, y, x1, y + fh)]
        y += fh + 8
        text, keys = _keyed_text(rng, used, rng.randint(6, 22))
        y = _paragraph_lines(page, x0, y, x1 - x0, f"Figure {k + 1}: {text}", 9.0, f"cap{k}") + 18
        qs.append(BlockQuestion(" ".join(keys), p, f"cap{k}", "caption"))
        if k == 0:
            text, keys = _keyed_text(rng, used, rng.randint(25, 45))
            y = _paragraph_lines(page, margin, y, w - 2 * margin, text, fs, "p0") + 24
            qs.append(BlockQuestion(" ".join(keys), p, "p0", "paragraph"))
    return page


def _table_page(rng, used, size, qs, p):
    """A table (top, header and bottom rules, as in papers); a question names an asked row's label
    and one of its values, and its truth is the row."""
    w, _ = size
    margin, fs = 60.0, 10.0
    n_cols, n_rows = rng.randint(3, 5), rng.randint(8, 14)
    row_h, col_w = fs * 2.4, (w - 2 * margin) / n_cols
    page = SynthPage(size, [TextLine(f"Table {p + 1}: " + " ".join(_words(rng, 5)), margin, margin, 12.0, "title")])
    top = margin + 3 * fs
    header = ["Item"] + [w_.title() for w_ in _words(rng, n_cols - 1)]
    for c, cell in enumerate(header):
        page.lines.append(TextLine(cell, margin + c * col_w + 6, top + 0.6 * fs, fs, "header"))
    asked = set(rng.sample(range(n_rows), min(4, n_rows)))
    for r in range(n_rows):
        gid = f"row{r}"
        label = _made_up_word(rng, used).title()
        value = _made_up_word(rng, used)
        cells = [label] + [value if c == 1 else f"{rng.randint(1, 9999)}" for c in range(1, n_cols)]
        y = top + (r + 1) * row_h + 0.6 * fs
        for c, cell in enumerate(cells):
            page.lines.append(TextLine(cell, margin + c * col_w + 6, y, fs, gid))
        if r in asked:
            qs.append(BlockQuestion(f"{label.lower()} {value}", p, gid, "table_row"))
    for r in (0, 1, n_rows + 1):  # booktabs style: top, header and bottom rules only
        page.rules.append((margin, top + r * row_h, w - margin, top + r * row_h))
    return page


def _form_page(rng, used, size, qs, p):
    """Label/value pairs on spaced rows and a multi-line address beside its label."""
    w, h = size
    margin, fs = 60.0, 10.0
    page = SynthPage(size, [TextLine("Application Form " + _made_up_word(rng, used).title(), margin, margin, 15.0,
                                     "title")])
    y = margin + 40
    labels = ["Applicant name", "Reference", "Department", "Project title", "Contact person", "Phone", "Email",
              "Start date", "Budget code", "Supervisor", "Location", "Notes"]
    rng.shuffle(labels)
    n_fields = rng.randint(6, 9)
    address_at = rng.randrange(n_fields)
    for i in range(n_fields):
        if i == address_at:
            page.lines.append(TextLine("Mailing address:", margin, y, fs, "addr_label"))
            street = f"{rng.randint(2, 400)} {_made_up_word(rng, used).title()} Street"
            town = f"{_made_up_word(rng, used).title()} City"
            for k, text in enumerate([street, town, f"Postcode {rng.randint(10000, 99999)}"]):
                page.lines.append(TextLine(text, margin + 160, y + k * 1.25 * fs, fs, "address"))
            qs.append(BlockQuestion(f"{street.split()[1].lower()} {town.split()[0].lower()}", p, "address", "address"))
            y += 3 * 1.25 * fs + 1.4 * fs
            continue
        gid = f"f{i}"
        value = f"{_made_up_word(rng, used).title()} {_made_up_word(rng, used).title()}"
        page.lines.append(TextLine(f"{labels[i]}:", margin, y, fs, gid))
        page.lines.append(TextLine(value, margin + 160, y, fs, gid))
        qs.append(BlockQuestion(f"{labels[i].split()[0].lower()} {value.split()[0].lower()}", p, gid, "form_field"))
        y += 2.4 * fs
    return page


def _line_page(rng, used, size, qs, p):
    """Sparse single lines (as the sample corpus): a fact's ground truth is its own line."""
    margin, fs = 60.0, 11.0
    page = SynthPage(size)
    n = 18
    facts = set(rng.sample(range(n), 3))
    for i in range(n):
        y = margin + i * fs * 2.2  # visibly separate lines (a list of entries), not a double-spaced paragraph
        if i in facts:
            text, keys = _keyed_text(rng, used, rng.randint(4, 7))
            page.lines.append(TextLine(text, margin, y, fs, f"l{i}"))
            qs.append(BlockQuestion(" ".join(keys), p, f"l{i}", "line"))
        else:
            page.lines.append(TextLine(_filler(rng, size[0] - 2 * margin, fs), margin, y, fs, None))
    return page


BLOCK_LAYOUTS = ("paragraphs", "two_columns", "table", "form", "figures", "lines")


def block_pages(n_pages: int = 18, seed: int = 0) -> tuple[list[SynthPage], list[BlockQuestion]]:
    """``n_pages`` Letter pages cycling through :data:`BLOCK_LAYOUTS`, and their questions."""
    rng, used = random.Random(seed), set()
    pages, qs = [], []
    for p in range(n_pages):
        layout = BLOCK_LAYOUTS[p % len(BLOCK_LAYOUTS)]
        make = {"paragraphs": _paragraph_page, "two_columns": lambda *a: _paragraph_page(*a, two_columns=True),
                "table": _table_page, "form": _form_page, "figures": _figure_page, "lines": _line_page}[layout]
        pages.append(make(rng, used, LETTER, qs, p))
    return pages, qs


def write_block_dataset(out: str | Path, n_pages: int = 18, seed: int = 0, dpi: float = 150.0) -> Path:
    """Render :func:`block_pages` to ``out/page_NNN.png`` and write ``out/dataset.jsonl`` (snappy's
    generic eval format: one question a line, its block's box as ground truth, ``category`` = the
    block kind). Returns the JSONL path."""
    from snappy.documents.pages import RenderOptions, iter_pages

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pages, qs = block_pages(n_pages, seed)
    for p, page in enumerate(pages):
        pdf = SynthDoc(f"page_{p:03d}", [page]).write_pdf_bytes()
        img = next(iter(iter_pages(pdf, RenderOptions(dpi=dpi)))).image
        img.save(out / f"page_{p:03d}.png")
    with open(out / "dataset.jsonl", "w", encoding="utf-8") as fh:
        for i, q in enumerate(qs):
            box = pages[q.page].box_px(q.block, dpi)
            fh.write(json.dumps({"id": f"q{i:04d}", "query": q.query, "image": f"page_{q.page:03d}.png",
                                 "boxes": [[round(v, 2) for v in box]], "category": q.kind}) + "\n")
    return out / "dataset.jsonl"


# ---------------------------------------------------------------------- bad-input corpus
# Odd, broken and hostile inputs for the "one bad file never fails or hangs a run" tests. Each
# entry says what must happen to it: "indexed" (renders, even if its name or bytes are odd),
# "skipped" (not listed at all: hidden, not a document suffix), or a stable substring of the
# reason it fails with (a listing ``problem`` or a DocumentError reason).

INDEXED, SKIPPED = "indexed", "skipped"
BIG_FILE_SIZE = 3 << 29  # 1.5 GiB (1.6 GB), written sparse


@dataclass
class CorpusEntry:
    name: str | bytes  # path relative to the corpus root; bytes for names that are not valid UTF-8
    expect: str  # "indexed", "skipped", or a substring of the expected failure reason
    kind: str = ""  # family (corrupt-pdf, truncated-pdf, fifo, ...)
    query: str | None = None  # good documents: a query that finds them
    fact: str | None = None  # good documents: the sentence holding the query's answer
    render: dict = field(default_factory=dict)  # RenderOptions overrides this entry needs
    pages: int | None = None  # page count when indexed (None: not checked)
    pipeline: str | None = None  # what the indexing pipeline expects instead (it stores no blank page)

    @property
    def raw_name(self) -> bytes:
        return self.name if isinstance(self.name, bytes) else self.name.encode("utf-8")


def minimal_pdf(sizes: Sequence[tuple[float, float]], kids: bool = True, pad: int = 0) -> bytes:
    """A hand-written PDF with blank pages of ``sizes`` (points) and a correct xref table.

    ``sizes=[]`` gives a valid PDF with zero pages; ``kids=False`` omits the /Kids array;
    ``pad`` adds a comment line of that many bytes after the header (a big file that is cheap)."""
    n = len(sizes)
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids_s = f"/Kids [{' '.join(f'{3 + i} 0 R' for i in range(n))}] " if kids else ""
    objs.append(f"<< /Type /Pages {kids_s}/Count {n} >>".encode())
    objs += [f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w:g} {h:g}] >>".encode() for w, h in sizes]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    if pad:
        out += b"%" + b"x" * pad + b"\n"
    offsets = []
    for i, body in enumerate(objs):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def header_png(width: int, height: int, full: bool = True) -> bytes:
    """A 1-bit grayscale PNG of ``width`` x ``height`` (all black). ``full``: a complete, valid
    IDAT (compresses to a few KB per 10^8 pixels); else a tiny IDAT (a decompression bomb header)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    if full:
        row = bytes(1 + (width + 7) // 8)
        co = zlib.compressobj(9)
        idat = b"".join(co.compress(row) for _ in range(height)) + co.flush()
    else:
        idat = zlib.compress(bytes(64))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _image_bytes(fmt: str, size=(400, 300), seed: int = 0, **kw) -> bytes:
    import io

    from PIL import Image

    rng = random.Random(seed)
    img = Image.effect_noise(size, 40 + rng.random() * 40).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _tiff_bytes(compression: str | None = None, frames: int = 3) -> bytes:
    import io

    from PIL import Image

    imgs = [Image.effect_noise((120, 80), 60) for _ in range(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, "TIFF", save_all=True, append_images=imgs[1:], compression=compression)
    return buf.getvalue()


def _tiff_frame_offset(data: bytes, frame: int) -> tuple[int, int]:
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.seek(frame)
    return img.tag_v2[273][0], img.tag_v2[279][0]  # StripOffsets, StripByteCounts


def _text_pdf(text: str, seed: int = 0) -> bytes:
    import io

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=LETTER, invariant=1)
    c.setFont(FONT, 14)
    c.drawString(72, 700, text)
    c.showPage()
    c.save()
    return buf.getvalue()


def _encrypted_pdf(user: str, owner: str, strength: int) -> bytes:
    import io

    from reportlab.lib import pdfencrypt

    buf = io.BytesIO()
    enc = pdfencrypt.StandardEncryption(user, ownerPassword=owner, canPrint=0, strength=strength)
    c = canvas.Canvas(buf, pagesize=LETTER, invariant=1, encrypt=enc)
    c.setFont(FONT, 14)
    c.drawString(72, 700, "an encrypted page")
    c.showPage()
    c.save()
    return buf.getvalue()


_SYLLABLES = ("zor", "vex", "quil", "bran", "tho", "mip", "glo", "darn", "fesk", "yul", "pon", "kri", "sab",
              "wel", "tur", "nox", "jiv", "hap", "lum", "creb")


def _made_up_word(rng: random.Random, used: set[str]) -> str:
    while True:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(3))
        if w not in used:
            used.add(w)
            return w


def write_page_corpus(out: str | Path, pages: int, pages_per_doc: int = 5, seed: int = 0) -> list[Path]:
    """``pages`` text pages in PDFs of ``pages_per_doc`` (Letter and A4 alternating) under ``out``;
    each page carries the fact "Fact number <i> ..." (benchmarks, pipeline tests)."""
    rng = random.Random(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for d in range(0, pages, pages_per_doc):
        n = min(pages_per_doc, pages - d)
        size = LETTER if (d // pages_per_doc) % 2 == 0 else A4_SIZE
        doc = SynthDoc(f"doc{d // pages_per_doc:05d}",
                       [text_page(size, [f"Fact number {d + i} about item {rng.randint(0, 10**6)}."], rng)
                        for i in range(n)])
        paths.append(doc.write_pdf(out / f"{doc.name}.pdf"))
    return paths


def write_good_corpus(root: str | Path, n: int = 20, seed: int = 0) -> list[CorpusEntry]:
    """``n`` one-page text PDFs under ``root/good/``, each with a unique, searchable fact sentence
    built around a made-up word (the entry's ``query``)."""
    root = Path(root)
    (root / "good").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    used: set[str] = set()
    entries = []
    for i in range(n):
        word = _made_up_word(rng, used)
        fact = f"The {word} gauge read {rng.randint(10, 999)} units at dawn."
        name = f"good/good-{i:02d}.pdf"
        SynthDoc(name, [text_page(LETTER, [fact], rng, n_lines=12)]).write_pdf(root / name)
        entries.append(CorpusEntry(name, INDEXED, "good", query=word, fact=fact, pages=1))
    return entries


def write_bad_corpus(root: str | Path, seed: int = 0) -> list[CorpusEntry]:
    """Write over 100 bad, odd or hostile local entries under ``root`` (see :class:`CorpusEntry`).

    Needs a POSIX file system (FIFOs, sockets, symlinks, sparse files, non-UTF-8 names); an
    entry the platform cannot create is left out of the returned list."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    c = _BadCorpus(root, random.Random(seed), seed, good=_text_pdf("a small valid document", seed),
                   png=_image_bytes("PNG", seed=seed), jpg=_image_bytes("JPEG", seed=seed))
    for family in (_corrupt_pdfs, _truncated_pdfs, _encrypted_pdfs, _page_limits, _bad_images, _not_documents,
                   _empty_files, _special_files, _too_big, _names, _never_listed):
        family(c)  # in this order: they share one random stream
    return c.out


_BAD_PDF = "not a readable PDF (corrupt or truncated)"
_NOT_DOC = "not a PDF or a supported image"


@dataclass
class _BadCorpus:
    """What the families of :func:`write_bad_corpus` share: where they write, one random stream, the entries."""

    root: Path
    rng: random.Random
    seed: int
    good: bytes  # a small valid PDF
    png: bytes  # a valid PNG and JPEG, cut and corrupted by the image families
    jpg: bytes
    out: list[CorpusEntry] = field(default_factory=list)

    def put(self, name: str | bytes, data: bytes, expect: str, kind: str, **kw) -> None:
        path = os.path.join(os.fsencode(self.root), name if isinstance(name, bytes) else name.encode())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.out.append(CorpusEntry(name, expect, kind, **kw))


def _corrupt_pdfs(c: _BadCorpus) -> None:
    """Corrupt PDFs: random bytes after a %PDF- header."""
    for s in range(20):
        r = random.Random(c.seed * 1000 + s)
        body = bytes(r.getrandbits(8) for _ in range(r.choice((16, 200, 2000, 20000))))
        c.put(f"corrupt/random-{s:02d}.pdf", f"%PDF-1.{s % 8}\n".encode() + body, _BAD_PDF, "corrupt-pdf")
    c.put("corrupt/header-only.pdf", b"%PDF-1.7\n", _BAD_PDF, "corrupt-pdf")
    c.put("corrupt/garbage-objects.pdf", b"%PDF-1.7\n1 0 obj garbage, the rest of this file is missing", _BAD_PDF,
        "corrupt-pdf")


def _truncated_pdfs(c: _BadCorpus) -> None:
    """Truncated PDFs: pdfium rebuilds a broken xref table only when the trailer survives."""
    full = SynthDoc("t", [text_page(LETTER, ["Truncation test page one."], c.rng),
                          text_page(LETTER, ["Truncation test page two."], c.rng)]).write_pdf_bytes()
    xref = full.rindex(b"\nxref") + 1
    trailer = full.rindex(b"trailer")
    startxref = full.rindex(b"startxref")
    eof = full.rindex(b"%%EOF")
    objs = [m.start() for m in re.finditer(rb"\d+ 0 obj", full)]
    cuts = {"header": 12, "mid-xref": (xref + trailer) // 2, "mid-trailer": trailer + 12}
    cuts.update({f"before-obj-{k + 1}": o for k, o in enumerate(objs) if k > 0})
    cuts.update({f"at-{p}pct": len(full) * p // 100 for p in (25, 50, 75)})
    cuts["before-xref"] = xref
    for label, cut in cuts.items():
        c.put(f"truncated/{label}.pdf", full[:cut], _BAD_PDF, "truncated-pdf")
    for label, cut in {"before-startxref": startxref, "before-eof": eof, "no-final-newline": len(full) - 1}.items():
        c.put(f"truncated/{label}.pdf", full[:cut], INDEXED, "truncated-pdf (repaired by pdfium)", pages=2)
    wrong = full[:startxref] + b"startxref\n7\n%%EOF\n"
    c.put("truncated/wrong-startxref.pdf", wrong, INDEXED, "damaged-pdf (repaired by pdfium)", pages=2)


def _encrypted_pdfs(c: _BadCorpus) -> None:
    """Encrypted PDFs: a user password blocks opening; an owner-only password does not."""
    c.put("encrypted/user-password-40bit.pdf", _encrypted_pdf("secret", "owner", 40),
        "PDF is encrypted (a password is required)", "encrypted-pdf")
    c.put("encrypted/user-password-128bit.pdf", _encrypted_pdf("secret", "owner", 128),
        "PDF is encrypted (a password is required)", "encrypted-pdf")
    c.put("encrypted/same-user-and-owner.pdf", _encrypted_pdf("same", "same", 128),
        "PDF is encrypted (a password is required)", "encrypted-pdf")
    c.put("encrypted/owner-password-only.pdf", _encrypted_pdf("", "owner", 128), INDEXED, "encrypted-pdf", pages=1)


def _page_limits(c: _BadCorpus) -> None:
    """Page counts and page boxes."""
    c.put("pages/zero-pages.pdf", minimal_pdf([]), "PDF has no pages", "zero-pages")
    # pdfium counts a /Pages node without /Kids as one page, which then fails to load
    c.put("pages/zero-pages-no-kids.pdf", minimal_pdf([], kids=False), "page 1 cannot be loaded", "zero-pages")
    c.put("pages/5000-pages.pdf", minimal_pdf([(100, 100)] * 5000), "5000 pages, over max_pages=2000", "many-pages")
    c.put("pages/2001-pages.pdf", minimal_pdf([(100, 100)] * 2001), "2001 pages, over max_pages=2000", "many-pages")
    c.put("pages/wide-page.pdf", minimal_pdf([(24000, 30)]), "page 1 is 50000x63 px, over max_side=20000",
        "huge-page", render={"dpi": 150.0})
    c.put("pages/long-strip.pdf", minimal_pdf([(2000, 20)]), "over max_aspect=50", "aspect")
    c.put("pages/tall-strip.pdf", minimal_pdf([(20, 2000)]), "over max_aspect=50", "aspect")
    c.put("pages/count-lies.pdf", minimal_pdf([]).replace(b"/Count 0", b"/Count 5"),
        "page 1 cannot be loaded (corrupt page)", "zero-pages")  # pdfium trusts /Count
    c.put("pages/second-page-huge.pdf", minimal_pdf([(300, 300), (40000, 40000)]), "page 2 is", "huge-page")
    c.put("pages/tiny-page.pdf", minimal_pdf([(0.5, 0.5)]), INDEXED, "tiny-page", pages=1,  # renders 1x1 px
        pipeline="its only page is blank")
    c.put("pages/blank-pages.pdf", minimal_pdf([(300, 400)] * 3), INDEXED, "blank-pdf", pages=3,
        pipeline="all 3 pages are blank")


def _bad_images(c: _BadCorpus) -> None:
    """Images: limits are checked from the header, before any pixel is decoded."""
    c.put("images/bomb-100000.png", header_png(100_000, 100_000, full=False), "decompression bomb", "bomb")
    c.put("images/bomb-30000.png", header_png(30_000, 30_000, full=False), "decompression bomb", "bomb")
    c.put("images/huge-13000.png", header_png(13_000, 13_000), "13000x13000 = 169000000 pixels, over max_pixels",
        "huge-image")
    c.put("images/wide-25000.png", header_png(25_000, 10, full=False), "over max_side=20000", "huge-image")
    png = c.png
    for cut, expect in ((6, f"{_NOT_DOC} (starts with"), (16, "not a readable image (PNG header"),
                        (30, "not a readable image (PNG header is truncated or corrupt)"),
                        (45, "PNG image is truncated or corrupt"),
                        (60, "PNG image is truncated or corrupt"), (200, "PNG image is truncated or corrupt"),
                        (len(png) // 2, "PNG image is truncated or corrupt")):
        c.put(f"images/truncated-{cut}.png", png[:cut], expect, "truncated-png")
    flipped = bytearray(png)
    flipped[png.index(b"IDAT") + 40] ^= 0xFF
    c.put("images/flipped-byte.png", bytes(flipped), "PNG image is truncated or corrupt", "corrupt-png")
    jpg = c.jpg
    for cut, expect in ((3, "not a readable image (JPEG header is truncated or corrupt)"),
                        (20, "not a readable image (JPEG header is truncated or corrupt)"),
                        (100, "not a readable image (JPEG header cannot be read"),
                        (len(jpg) // 2, "JPEG image is truncated or corrupt"),
                        (len(jpg) - 40, "JPEG image is truncated or corrupt")):
        c.put(f"images/truncated-{cut}.jpg", jpg[:cut], expect, "truncated-jpeg")
    tif = _tiff_bytes()
    off3, _ = _tiff_frame_offset(tif, 2)
    c.put("images/truncated-frame-3.tiff", tif[:off3 + 100], "TIFF frame 3 cannot be decoded", "truncated-tiff")
    tif = bytearray(_tiff_bytes("tiff_deflate"))
    off2, n2 = _tiff_frame_offset(bytes(tif), 1)
    tif[off2:off2 + min(n2, 400)] = bytes(min(n2, 400))
    c.put("images/corrupt-frame-2.tif", bytes(tif), "TIFF frame 2 cannot be decoded", "corrupt-tiff")
    c.put("images/riff-junk.webp", b"RIFF\x10\x00\x00\x00WEBPVP8 junk", "not a readable image (WebP header", "corrupt-webp")
    c.put("images/bm-junk.bmp", b"BM" + bytes(c.rng.getrandbits(8) for _ in range(60)), "not a readable image", "corrupt-bmp")
    c.put("images/good-3-frames.tiff", _tiff_bytes(), INDEXED, "tiff", pages=3)


def _not_documents(c: _BadCorpus) -> None:
    """Non-PDF content named .pdf (or .png)."""
    png, jpg = c.png, c.jpg
    zipped = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(c.rng.getrandbits(8) for _ in range(200))
    for name, data, what in (
            ("html.pdf", b"<!DOCTYPE html>\n<html><body><h1>404 Not Found</h1></body></html>\n", "HTML"),
            ("html-lower.pdf", b"\n  <html><head><title>login</title></head></html>", "HTML"),
            ("xml.pdf", b'<?xml version="1.0"?><doc>x</doc>', "XML"),
            ("svg.pdf", b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
            ("zip.pdf", zipped, "ZIP"), ("docx.pdf", zipped.replace(b"PK", b"PK", 1), "ZIP"),
            ("text.pdf", b"Meeting notes\nNothing to see here.\n", "plain text"),
            ("json.pdf", b'{"error": "AccessDenied"}', "JSON"),
            ("gzip.pdf", b"\x1f\x8b\x08\x00" + bytes(40), "gzip"),
            ("ole.pdf", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), "Microsoft Office"),
            ("rtf.pdf", b"{\\rtf1\\ansi hello}", "RTF"), ("ps.pdf", b"%!PS-Adobe-3.0\n", "PostScript"),
            ("elf.pdf", b"\x7fELF\x02\x01\x01" + bytes(60), "ELF"), ("zeros.pdf", bytes(4096), "zero bytes"),
            ("one-byte.pdf", b"x", "plain text"), ("whitespace.pdf", b"  \n\t\n ", "whitespace"),
            ("binary.pdf", bytes(range(256)) * 4, ""), ("html.png", b"<html><body>error</body></html>", "HTML"),
            ("text.jpg", b"JFIF? no, just text", "plain text"), ("zip.png", zipped, "ZIP")):
        c.put(f"not-pdf/{name}", data, f"{_NOT_DOC} (starts with" if not what else what, "not-a-document")
    c.put("not-pdf/png-named.pdf", png, INDEXED, "image-named-pdf", pages=1)
    c.put("not-pdf/jpeg-named.pdf", jpg, INDEXED, "image-named-pdf", pages=1)
    c.put("not-pdf/pdf-named.png", c.good, INDEXED, "pdf-named-png", pages=1)


def _empty_files(c: _BadCorpus) -> None:
    """Empty files."""
    for name in ("empty.pdf", "empty.png", "empty.jpg", "empty.tiff", "EMPTY.PDF", "empty.webp"):
        c.put(f"empty/{name}", b"", "empty file", "empty")


def _special_files(c: _BadCorpus) -> None:
    """Not regular files: folders, FIFOs, a socket, devices, symbolic links."""
    special = c.root / "special"
    special.mkdir(exist_ok=True)
    (special / "folder.pdf").mkdir(exist_ok=True)
    c.out.append(CorpusEntry("special/folder.pdf", "is a directory, not a document", "directory"))
    c.put("special/folder.pdf/inside.pdf", c.good, INDEXED, "inside-directory-named-pdf", pages=1)
    (special / "Folder.PNG").mkdir(exist_ok=True)
    c.out.append(CorpusEntry("special/Folder.PNG", "is a directory, not a document", "directory"))
    if hasattr(os, "mkfifo"):
        for name in ("pipe.pdf", "pipe.png"):
            os.mkfifo(special / name)
            c.out.append(CorpusEntry(f"special/{name}", "not a regular file (FIFO)", "fifo"))
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(special / "socket.pdf"))
        c.out.append(CorpusEntry("special/socket.pdf", "not a regular file (socket)", "socket"))
    except (OSError, AttributeError):  # AF_UNIX path too long, or no AF_UNIX
        pass
    links = {
        "devnull.pdf": ("/dev/null", "not a regular file (character device)", "device"),
        "dangling.pdf": ("no-such-target.pdf", "broken symbolic link (target missing)", "dangling-symlink"),
        "dangling-abs.pdf": (str(c.root / "nowhere" / "gone.pdf"), "broken symbolic link (target missing)",
                             "dangling-symlink"),
        "loop-self.pdf": ("loop-self.pdf", "symbolic link loop", "symlink-loop"),
        "loop-a.pdf": ("loop-b.pdf", "symbolic link loop", "symlink-loop"),
        "loop-b.pdf": ("loop-a.pdf", "symbolic link loop", "symlink-loop"),
        "link-to-good.pdf": ("folder.pdf/inside.pdf", INDEXED, "symlink"),
        "link-to-dir.pdf": ("folder.pdf", "is a directory, not a document", "symlink-to-directory"),
    }
    for name, (target, expect, kind) in links.items():
        os.symlink(target, special / name)
        c.out.append(CorpusEntry(f"special/{name}", expect, kind, pages=1 if expect == INDEXED else None))


def _too_big(c: _BadCorpus) -> None:
    """Files over the default max_bytes (sparse: no disk used)."""
    special = c.root / "special"
    with open(special / "big.pdf", "wb") as f:
        f.write(b"%PDF-1.4\n")
        f.truncate(BIG_FILE_SIZE)
    c.out.append(CorpusEntry("special/big.pdf", "1.6 GB file, over max_bytes=1.1 GB", "too-big"))
    with open(special / "big-2g.tiff", "wb") as f:
        f.write(b"II*\x00")
        f.truncate(2 << 30)
    c.out.append(CorpusEntry("special/big-2g.tiff", "2.1 GB file, over max_bytes=1.1 GB", "too-big"))


def _names(c: _BadCorpus) -> None:
    """Names: not valid UTF-8 (valid documents index fine), odd but valid."""
    for raw in (b"latin1-\xe9t\xe9.pdf", b"bad-\xff\xfe.pdf", b"cp1252-\x93quoted\x94.pdf", b"\xc3(half-utf8.pdf"):
        c.put(b"names/" + raw, c.good, INDEXED, "non-utf8-name", pages=1)
    c.put(b"names/\xe9-corrupt.pdf", b"%PDF-1.4\n" + bytes(300), _BAD_PDF, "non-utf8-name")
    c.put(b"names/latin1-dir-\xe9/inside.pdf", c.good, INDEXED, "non-utf8-folder", pages=1)
    odd = ["with space.pdf", " leading-space.pdf", "trailing-space .pdf", "unicode-café-日本語.pdf",
           "emoji-\U0001F600.pdf", "percent%20encoded.pdf", "percent%.pdf", "hash#fragment.pdf",
           "question?mark.pdf", "plus+sign.pdf", "amp&eq=.pdf", "quote'double\".pdf", "back\\slash.pdf",
           "semi;colon,comma.pdf", "brackets[1]{2}(3).pdf", "new\nline.pdf", "tab\tname.pdf", "UPPER.PDF",
           "-dash-first.pdf", "x" * 240 + ".pdf", "é" * 120 + ".pdf", "deep/a/b/c/d/e/f/g/nested.pdf",
           "dots..in..name.pdf", "no-dot-before-suffixpdf.pdf", "\u202eright-to-left.pdf", "nfd-cafe\u0301.pdf"]
    for name in odd:
        c.put(f"names/{name}", c.good, INDEXED, "odd-name", pages=1)


def _never_listed(c: _BadCorpus) -> None:
    """Never listed: hidden, not a document suffix."""
    for name in (".hidden.pdf", ".hidden-dir/inside.pdf", "notes.txt", "archive.pdf.bak", "no-suffix"):
        c.put(f"skipped/{name}", c.good, SKIPPED, "not-listed")


def bad_s3_objects(seed: int = 0) -> list[tuple[str, bytes, str]]:
    """(key relative to a prefix, body, expect) for an S3 prefix: odd keys holding valid
    documents ("indexed"), a ``x.pdf/`` folder marker, zero-byte and corrupt objects, and keys
    that are never listed ("skipped")."""
    rng = random.Random(seed)
    good = _text_pdf("a small valid object", seed)
    png = _image_bytes("PNG", seed=seed)
    objs: list[tuple[str, bytes, str]] = []
    odd = ["with space.pdf", "unicode-café-日本語.pdf", "emoji-\U0001F600.pdf", "percent%20encoded.pdf",
           "percent%.pdf", "plus+sign.pdf", "hash#fragment.pdf", "question?mark.pdf", "amp&eq=.pdf",
           "double//slash.pdf", "sub/dir/deep.pdf", "tilde~.pdf", "quote'double\".pdf", "brackets[1]{2}.pdf",
           "semi;colon,comma.pdf", "UPPER.PDF", "back\\slash.pdf", "star*.pdf", "colon:name.pdf",
           "long-" + "k" * 990 + ".pdf", "png-named.pdf"]
    for key in odd:
        objs.append((key, png if key == "png-named.pdf" else good, INDEXED))
    objs.append(("image.png", png, INDEXED))
    objs.append(("folder.pdf/", b"", "is a folder marker, not a document"))
    objs.append(("empty.pdf", b"", "empty file"))
    objs.append(("empty.png", b"", "empty file"))
    for s in range(5):
        r = random.Random(seed * 100 + s)
        objs.append((f"corrupt-{s}.pdf", b"%PDF-1.5\n" + bytes(r.getrandbits(8) for _ in range(500)),
                     "not a readable PDF (corrupt or truncated)"))
    objs.append(("html.pdf", b"<!DOCTYPE html><html>403 Forbidden</html>", "looks like an HTML page"))
    objs.append(("truncated.png", png[:len(png) // 2], "PNG image is truncated or corrupt"))
    objs.append(("encrypted.pdf", _encrypted_pdf("secret", "owner", 128), "PDF is encrypted"))
    objs.append(("zero-pages.pdf", minimal_pdf([]), "PDF has no pages"))
    objs.append(("bomb.png", header_png(100_000, 100_000, full=False), "decompression bomb"))
    objs.append((".hidden.pdf", good, SKIPPED))
    objs.append((".hidden-dir/x.pdf", good, SKIPPED))
    objs.append(("notes.txt", b"text", SKIPPED))
    objs.append(("plain-folder/", b"", SKIPPED))
    rng.shuffle(objs)
    return objs


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m snappy.testing.synth blocks OUT [--pages N] [--seed S] [--dpi D]``: the block-level eval set."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m snappy.testing.synth", description="Generated documents with known boxes.")
    sub = p.add_subparsers(dest="what", required=True)
    b = sub.add_parser("blocks", help="pages whose truth is a block or a line, as an eval JSONL + PNGs")
    b.add_argument("out")
    b.add_argument("--pages", type=int, default=18)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--dpi", type=float, default=150.0)
    args = p.parse_args(argv)
    path = write_block_dataset(args.out, args.pages, args.seed, args.dpi)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
