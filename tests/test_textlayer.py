"""Regions from the PDF text layer (snappy.documents.textlayer) on PDFs generated here with reportlab and
edited with pypdfium2: exact text, boxes on the rendered ink, rotated pages with an offset CropBox,
hidden text, the OCR decision, and bad inputs."""
from __future__ import annotations

import ctypes
import glob
import io
import math
import random
import re
import time

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image, ImageDraw
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

from snappy.documents import textlayer as tl
from snappy.regions.blocks import blocks_from_lines
from snappy.regions.region import Region
from snappy.testing.synth import A4_SIZE, LETTER, SynthDoc, table_page, text_page, two_column_page

DPI = 100
SCALE = DPI / 72


# ---------------------------------------------------------------------- helpers
def make_pdf(draw, pagesize=(612, 792)) -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=pagesize, invariant=1, pageCompression=0)
    draw(c)
    c.showPage()
    c.save()
    return buf.getvalue()


def open_page(data: bytes, index: int = 0):
    pdf = pdfium.PdfDocument(data)
    page = pdf[index]
    page._keep_pdf = pdf  # the document must outlive the page in the test
    return page


def render(page, scale: float = SCALE) -> Image.Image:
    return page.render(scale=scale).to_pil().convert("RGB")  # as snappy.documents.pages renders


def regions_of(data: bytes, mode="auto", scale=SCALE, index=0):
    page = open_page(data, index)
    image = render(page, scale)
    regions, decision = tl.text_layer_regions(page, image, mode)
    return page, image, regions, decision


def ink_boxes(page, scale: float = SCALE) -> list[tuple[float, float, float, float]]:
    """Pixel bbox of the rendered ink of each top-level text object (all other objects switched off)."""
    objs = list(page.get_objects(max_depth=1))
    out = []
    for target in objs:
        if target.type != pdfium_c.FPDF_PAGEOBJ_TEXT:
            continue
        for o in objs:
            pdfium_c.FPDFPageObj_SetIsActive(o.raw, o is target)
        a = np.asarray(render(page, scale)).min(axis=2)
        ys, xs = np.nonzero(a < 200)
        if len(xs):
            out.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    for o in objs:
        pdfium_c.FPDFPageObj_SetIsActive(o.raw, True)
    return out


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def contains(outer, inner, tol=1.0) -> bool:
    return (outer[0] - tol <= inner[0] and outer[1] - tol <= inner[1]
            and outer[2] + tol >= inner[2] and outer[3] + tol >= inner[3])


def assert_boxes_on_ink(page, regions, min_iou=0.5):
    """Every line box holds all the ink of its text, and fits it (IoU with the ink bbox)."""
    inks = ink_boxes(page)
    assert len(inks) == len(regions)
    for ink in inks:
        best = max(regions, key=lambda r: iou(r.bbox, ink))
        assert contains(best.bbox, ink), (best.text, best.bbox, ink)
        assert iou(best.bbox, ink) >= min_iou, (best.text, best.bbox, ink, iou(best.bbox, ink))


def sample_image(w=300, h=120, text="PASTED SCREENSHOT") -> Image.Image:
    img = Image.new("RGB", (w, h), (230, 236, 245))
    d = ImageDraw.Draw(img)
    d.rectangle([4, 4, w - 5, h - 5], outline=(40, 40, 40), width=3)
    d.text((20, h // 2 - 6), text, fill=(0, 0, 0))
    return img


def body(c, lines, x=72, top=720, size=11, leading=None, font="Helvetica"):
    c.setFont(font, size)
    for k, text in enumerate(lines):
        c.drawString(x, top - k * (leading or 2 * size), text)


BODY = ["The committee reviewed the annual budget in detail.",
        "Several departments reported higher costs than planned.",
        "A follow-up meeting is scheduled for the first week of May.",
        "All figures are given in thousands of euros."]


def remap_tounicode(data: bytes, fn) -> bytes:
    """Rewrite every ``<XX> <UUUU>`` entry of the (uncompressed) ToUnicode maps with fn(code point);
    same length, so the cross-reference table stays valid."""
    def section(m):
        return re.sub(rb"<([0-9A-F]{2})> <([0-9A-F]{4})>",
                      lambda e: b"<%s> <%04X>" % (e.group(1), fn(int(e.group(2), 16))), m.group(0))
    out = re.sub(rb"beginbfchar.*?endbfchar", section, data, flags=re.S)
    assert out != data and len(out) == len(data)
    return out


def ttf(name_part: str = "DejaVuSans.ttf") -> str:
    found = sorted(glob.glob(f"/usr/share/fonts/**/{name_part}", recursive=True)) \
        or sorted(glob.glob("/usr/share/fonts/**/*.ttf", recursive=True))
    if not found:
        pytest.skip("no TrueType font under /usr/share/fonts (install fonts-dejavu-core)")
    return found[0]


def register_ttf(alias="TestTTF") -> str:
    from reportlab.pdfbase.pdfmetrics import registerFont
    from reportlab.pdfbase.ttfonts import TTFont

    registerFont(TTFont(alias, ttf()))
    return alias


# ---------------------------------------------------------------------- geometry
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_geometry_matches_pdfium_page_to_device(rotation):
    data = make_pdf(lambda c: c.drawString(100, 100, "x"), pagesize=(600, 800))
    pdf = pdfium.PdfDocument(data)
    page = pdf[0]
    page.set_cropbox(37.5, 61.25, 571.3, 755.9)
    page.set_rotation(rotation)
    g = tl.PageGeometry.of(page, scale=1.37)
    w, h = page.get_size()
    assert g.size_px == (math.ceil(w * 1.37), math.ceil(h * 1.37))  # render()'s size
    assert render(page, 1.37).size == g.size_px
    rng = np.random.default_rng(0)
    xs, ys = rng.uniform(40, 570, 50), rng.uniform(65, 750, 50)
    px, py = g.to_pixels(xs, ys)
    dx, dy = ctypes.c_int(), ctypes.c_int()
    W, H = g.size_px
    for x, y, X, Y in zip(xs, ys, px, py):
        assert pdfium_c.FPDF_PageToDevice(page.raw, 0, 0, W, H, 0, float(x), float(y), dx, dy)
        assert abs(dx.value - X) <= 1.0 and abs(dy.value - Y) <= 1.0  # pdfium rounds to integers


# ---------------------------------------------------------------------- born-digital text
def test_born_digital_page_text_exact_and_boxes_on_ink():
    page_spec = text_page(LETTER, ["The Zephyr turbine produced forty megawatts."], random.Random(3), n_lines=14)
    page, image, regions, decision = regions_of(SynthDoc("d", [page_spec]).write_pdf_bytes())
    assert decision.action == "none" and decision.code == "text_layer", decision.reason
    drawn = [ln.text for ln in page_spec.lines]
    assert [r.text for r in regions] == drawn  # exact, in reading order
    assert all(tl.cer(d, r.text) == 0 for d, r in zip(drawn, regions))
    assert all(r.level == "line" and r.page_size == image.size for r in regions)
    assert_boxes_on_ink(page, regions)


def test_line_height_is_the_ocr_box_of_the_font_size():
    data = make_pdf(lambda c: (body(c, ["tall line of text"], size=10),
                               body(c, ["tall line of text"], top=600, size=20)))
    _, _, regions, _ = regions_of(data)
    heights = sorted(r.bbox[3] - r.bbox[1] for r in regions)
    em = (tl.OCR_TOP_EM + tl.OCR_BOTTOM_EM) * SCALE
    assert heights == pytest.approx([10 * em, 20 * em], rel=0.01)


def test_truetype_subset_font_text_exact():
    font = register_ttf()
    lines = ["Grüße aus Köln: café, naïve façade", "Ünïcödé — “quotes” and € 12,50",
             "Plain ASCII line 3"]
    data = make_pdf(lambda c: body(c, lines, font=font, size=12))
    assert b"FontFile2" in data  # an embedded TrueType subset
    page, _, regions, decision = regions_of(data)
    assert decision.action == "none"
    assert [r.text for r in regions] == lines
    assert_boxes_on_ink(page, regions)


def _upright_on_rotated_page(rotation: int, crop=(40.0, 70.0, 560.0, 760.0), mediabox=(600, 800)):
    """A page with /Rotate ``rotation`` and an offset CropBox whose text is drawn turned so that it
    reads upright on screen; returns (pdf bytes, lines)."""
    x0, y0, x1, y1 = crop
    w0, h0 = x1 - x0, y1 - y0
    lines = ["Rotated page, first line of text", "second line: the CropBox is offset", "third line 12345"]

    def user_point(X, Y):  # displayed point (points from the displayed top-left) -> user space
        u, v = {0: (X, Y), 90: (Y, h0 - X), 180: (w0 - X, h0 - Y), 270: (w0 - Y, X)}[rotation]
        return x0 + u, y1 - v

    def draw(c):
        c.setFont("Helvetica", 12)
        for k, text in enumerate(lines):
            ux, uy = user_point(40, 60 + 30 * k)
            c.saveState()
            c.translate(ux, uy)
            c.rotate(rotation)  # counter-clockwise: the clockwise /Rotate turns it back upright
            c.drawString(0, 0, text)
            c.restoreState()
        c.drawString(x1 + 5, y1 + 5, "outside the crop box")  # cut off: not on the rendered page

    pdf = pdfium.PdfDocument(make_pdf(draw, pagesize=mediabox))
    page = pdf[0]
    page.set_cropbox(*crop)
    page.set_rotation(rotation)
    buf = io.BytesIO()
    pdf.save(buf)
    return buf.getvalue(), lines


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_page_with_offset_cropbox(rotation):
    data, lines = _upright_on_rotated_page(rotation)
    page, image, regions, decision = regions_of(data)
    assert page.get_rotation() == rotation
    assert decision.action == "none", decision.reason
    assert [r.text for r in regions] == lines  # upright on screen: read as lines, top to bottom
    assert all(r.polygon is None for r in regions)
    assert decision.counts["dropped"] == {"off_page": len("outside the crop box") - 3}  # spaces are not ink
    assert_boxes_on_ink(page, regions)  # (the cut-off line renders no ink)


def test_rotated_page_without_turned_text_reads_vertical_lines():
    data = make_pdf(lambda c: body(c, BODY[:2], size=12))
    pdf = pdfium.PdfDocument(data)
    pdf[0].set_rotation(90)
    buf = io.BytesIO()
    pdf.save(buf)
    page, image, regions, decision = regions_of(buf.getvalue())
    assert [r.text for r in regions] == BODY[:2]  # in the text's own direction
    assert all(r.polygon is not None for r in regions)
    assert all(r.bbox[3] - r.bbox[1] > 5 * (r.bbox[2] - r.bbox[0]) for r in regions)  # running down the image
    assert "not upright" in decision.reason
    assert_boxes_on_ink(page, regions)


# ---------------------------------------------------------------------- decisions
def test_image_only_page_needs_full_ocr():
    scan = sample_image(850, 1100, "SCANNED PAGE TEXT")
    data = make_pdf(lambda c: c.drawImage(ImageReader(scan), 0, 0, width=612, height=792))
    _, _, regions, decision = regions_of(data)
    assert decision.action == "full" and regions == []
    assert "no usable text layer" in decision.reason and decision.code == "no_text_layer"


def test_scanner_sandwich_is_full_ocr_without_regions():
    scan = sample_image(850, 1100, "SCANNED PAGE TEXT")

    def draw(c):
        c.drawImage(ImageReader(scan), 0, 0, width=612, height=792)
        t = c.beginText(72, 700)
        t.setTextRenderMode(3)
        t.setFont("Helvetica", 11)
        for line in BODY:
            t.textLine(line)
        c.drawText(t)

    page, image, regions, decision = regions_of(data := make_pdf(draw))
    assert decision.action == "full" and regions == []
    assert "invisible" in decision.reason and "OCR layer" in decision.reason and decision.code == "invisible_layer"
    assert decision.counts["visible"] == 0
    # in "only" mode the invisible text still gives no region
    assert regions_of(data, mode="only")[2] == []


def test_mixed_page_ocrs_only_the_pasted_image():
    shot = sample_image()

    def draw(c):
        body(c, BODY)
        c.drawImage(ImageReader(shot), 150, 300, width=300, height=120)

    page, image, regions, decision = regions_of(make_pdf(draw))
    assert decision.action == "areas" and decision.code == "image_areas", decision.reason
    assert len(decision.areas) == 1
    expect = (150 * SCALE, (792 - 420) * SCALE, 450 * SCALE, (792 - 300) * SCALE)
    assert decision.areas[0] == pytest.approx(expect, abs=0.01)
    # the area is where the image's pixels are in the render
    a = np.asarray(image).astype(int)
    ys, xs = np.nonzero((np.abs(a - [230, 236, 245]).max(axis=2) <= 3))
    x0, y0, x1, y1 = decision.areas[0]
    assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1 and y0 - 1 <= ys.min() and ys.max() <= y1 + 1
    assert [r.text for r in regions] == BODY


def test_image_under_text_carries_text_and_small_images_are_ignored():
    bg = sample_image(400, 300, "")

    def draw(c):
        c.drawImage(ImageReader(bg), 60, 520, width=480, height=250)  # a background behind the text
        body(c, BODY)
        c.drawImage(ImageReader(bg), 500, 100, width=12, height=12)  # an icon
    _, _, regions, decision = regions_of(make_pdf(draw))
    assert decision.action == "none", decision.reason
    assert [r.text for r in regions] == BODY


def test_scan_in_strips_is_one_area_and_full_ocr():
    strip = sample_image(850, 110, "")

    def draw(c):
        for k in range(10):  # some scanners store a page as strips of image
            c.drawImage(ImageReader(strip), 0, k * 79.2, width=612, height=79.2)
        c.setFillColorRGB(0.1, 0.1, 0.1)
        body(c, BODY[:2], top=40)  # a visible footer stamped on it
    _, _, regions, decision = regions_of(make_pdf(draw))
    assert decision.action == "full" and "images without text cover 90%" in decision.reason  # the footer strip has text
    assert decision.code == "images_cover_page"


def test_many_vector_objects_in_bounded_time():
    def draw(c):
        c.setFillColorRGB(0.9, 0.9, 0.95)
        for row in range(100):
            for col in range(60):
                c.rect(10 + col * 10, 10 + row * 7.5, 8, 6, fill=1, stroke=0)  # 6000 light path objects
        c.setFillColorRGB(0, 0, 0)
        body(c, BODY)
    page = open_page(make_pdf(draw))
    image = render(page)
    t0 = time.process_time()
    regions, decision = tl.text_layer_regions(page, image)
    assert time.process_time() - t0 < 5.0
    assert [r.text for r in regions] == BODY and decision.counts["dropped"] == {}


def test_bulk_text_codes_equal_per_character_unicode():
    font = register_ttf()
    data = make_pdf(lambda c: (body(c, ["Grüße café € 12", "x\u00adline"], font=font), body(c, BODY, top=500)))
    page = open_page(data)
    tp = page.get_textpage()
    n = pdfium_c.FPDFText_CountChars(tp.raw)
    per_char = [pdfium_c.FPDFText_GetUnicode(tp.raw, i) for i in range(n)]
    assert tl._codes(tl._raw(), tl._addr(tp), n).tolist() == per_char


def test_private_use_map_needs_full_ocr():
    font = register_ttf()
    data = make_pdf(lambda c: body(c, BODY, font=font))
    pua = remap_tounicode(data, lambda u: 0xE000 + u if 0x20 < u < 0x80 else u)
    _, _, regions, decision = regions_of(pua)
    assert decision.action == "full" and regions == []
    assert "no valid unicode" in decision.reason and decision.code == "invalid_unicode"
    # the same page with its true map is fine
    assert regions_of(data)[3].action == "none"


def _hidden_page(kind: str) -> bytes:
    secret = "SECRET hidden phrase here"

    def draw(c):
        body(c, BODY)
        c.setFont("Helvetica", 11)
        if kind == "mode3":
            t = c.beginText(72, 400)
            t.setTextRenderMode(3)
            t.textLine(secret)
            c.drawText(t)
        elif kind == "white":
            c.setFillColorRGB(1, 1, 1)
            c.drawString(72, 400, secret)
        elif kind == "under_box":
            c.drawString(72, 400, secret)
            c.setFillColorRGB(0.1, 0.1, 0.1)
            c.rect(60, 390, 300, 30, fill=1, stroke=0)
        elif kind == "under_image":
            c.drawString(72, 400, secret)
            c.drawImage(ImageReader(sample_image(60, 60, "")), 60, 380, width=300, height=60)
        elif kind == "tiny":
            c.setFont("Helvetica", 1)
            c.drawString(72, 400, secret)
        elif kind == "transparent":
            c.setFillAlpha(0)
            c.drawString(72, 400, secret)
        elif kind == "same_colour":
            c.setFillColorRGB(0.2, 0.4, 0.8)
            c.rect(60, 390, 300, 30, fill=1, stroke=0)
            c.drawString(72, 400, secret)
    return make_pdf(draw)


@pytest.mark.parametrize("kind, reason", [("mode3", "invisible"), ("white", "background"),
                                          ("under_box", "covered"), ("under_image", "covered"),
                                          ("tiny", "tiny"), ("same_colour", "background"),
                                          ("transparent", "transparent")])
def test_hidden_text_is_dropped_and_counted(kind, reason):
    _, _, regions, decision = regions_of(_hidden_page(kind), mode="only")
    texts = [r.text for r in regions]
    assert texts == BODY  # the visible text, nothing of the hidden one
    assert decision.counts["dropped"] == {reason: len("SECRETHiddenphrasehere")}
    # the image hiding text is itself OCR'd (it could hold text); nothing else needs OCR
    assert regions_of(_hidden_page(kind))[3].action == ("areas" if kind == "under_image" else "none")


def test_text_under_a_filled_annotation_is_covered():
    pdf = pdfium.PdfDocument(make_pdf(lambda c: (body(c, BODY), c.drawString(72, 400, "SECRET redacted words"))))
    page = pdf[0]  # held: the annotation handle lives in the page
    annot = pdfium_c.FPDFPage_CreateAnnot(page.raw, pdfium_c.FPDF_ANNOT_SQUARE)
    pdfium_c.FPDFAnnot_SetRect(annot, pdfium_c.FS_RECTF(60, 420, 300, 390))  # left, top, right, bottom
    for kind in (pdfium_c.FPDFANNOT_COLORTYPE_InteriorColor, pdfium_c.FPDFANNOT_COLORTYPE_Color):
        pdfium_c.FPDFAnnot_SetColor(annot, kind, 0, 0, 0, 255)
    pdfium_c.FPDFPage_CloseAnnot(annot)
    page.close()
    buf = io.BytesIO()
    pdf.save(buf)
    _, _, regions, decision = regions_of(buf.getvalue())
    assert [r.text for r in regions] == BODY
    assert decision.counts["dropped"] == {"covered": len("SECRETredactedwords")}


def test_clipped_away_text_needs_check_all():
    def draw(c):
        body(c, BODY)
        c.saveState()
        p = c.beginPath()
        p.rect(60, 100, 100, 20)
        c.clipPath(p, stroke=0, fill=0)
        c.drawString(72, 400, "clipped away entirely")  # outside its clip: never drawn
        c.restoreState()
    page = open_page(make_pdf(draw))
    image = render(page)
    layer = tl.read_text_layer(page, size_px=image.size)
    assert tl.find_hidden(page, layer, image) == {}  # not a suspect by default
    assert tl.find_hidden(page, layer, image, check_all=True) == {"background": len("clippedawayentirely")}
    assert [r.text for r in tl.layer_lines(layer)] == BODY


def test_visible_text_over_a_box_or_image_is_kept():
    def draw(c):
        c.setFillColorRGB(0.85, 0.9, 1.0)
        c.rect(60, 600, 400, 150, fill=1, stroke=0)  # a light panel behind the text
        c.setFillColorRGB(0, 0, 0)
        body(c, BODY)
        c.drawImage(ImageReader(Image.new("RGB", (300, 60), (20, 40, 90))), 60, 380, width=400, height=60)
        c.setFillColorRGB(1, 1, 1)
        c.drawString(72, 400, "white caption on the image")  # white on a dark image: visible
    _, _, regions, decision = regions_of(make_pdf(draw))
    assert "white caption on the image" in [r.text for r in regions]
    assert all(t in [r.text for r in regions] for t in BODY)
    assert decision.counts["dropped"] == {}


def test_fake_bold_double_print_reads_once():
    from reportlab.pdfbase.pdfmetrics import stringWidth

    head, tail = BODY[0].split(" ", 1)

    def draw(c):
        body(c, BODY[:1])
        # the same line again 0.4 pt to the right, cut differently (pdfium only drops whole repeated objects)
        c.drawString(72.4, 720, head)
        c.drawString(72.4 + stringWidth(head + " ", "Helvetica", 11), 720, tail)
    page, _, regions, decision = regions_of(make_pdf(draw))
    assert page.get_textpage().get_text_range().count("committee") == 2
    assert [r.text for r in regions] == BODY[:1]
    assert decision.counts["dropped"] == {"duplicate": len(BODY[0].replace(" ", ""))}


def test_blank_page_needs_nothing_and_outlines_need_ocr():
    _, _, regions, decision = regions_of(make_pdf(lambda c: None))
    assert decision.action == "none" and regions == [] and "blank" in decision.reason and decision.code == "blank"

    def outlines(c):  # glyph-like shapes drawn as paths, no text layer
        for row in range(30):
            for col in range(40):
                c.rect(60 + col * 12, 80 + row * 20, 7, 9, fill=1, stroke=0)
    _, _, regions, decision = regions_of(make_pdf(outlines))
    assert decision.action == "full" and "no usable text layer" in decision.reason
    assert decision.code == "no_text_layer"


# ---------------------------------------------------------------------- layout
def test_two_columns_are_separate_lines_in_column_order():
    spec = two_column_page(A4_SIZE, [], [], random.Random(5))
    _, _, regions, _ = regions_of(SynthDoc("d", [spec]).write_pdf_bytes())
    left = [ln.text for ln in spec.lines if ln.x < 200]
    right = [ln.text for ln in spec.lines if ln.x >= 200]
    assert [r.text for r in regions] == left + right


def test_table_cells_are_separate_lines():
    spec = table_page(LETTER, ["Region", "Crop", "Yield"],
                      [["Valencia", "Saffron", "12 kg"], ["Kerala", "Green cardamom pods", "340 kg"],
                       ["Oaxaca", "Vanilla", "85 kg"]], "Table 3: Spice harvest by region")
    page, _, regions, decision = regions_of(SynthDoc("d", [spec]).write_pdf_bytes())
    assert decision.action == "none"
    assert sorted(r.text for r in regions) == sorted(ln.text for ln in spec.lines)
    assert_boxes_on_ink(page, regions)


def test_cell_gap_splits_lines_and_word_gaps_make_spaces():
    def draw(c):
        c.setFont("Helvetica", 10)
        c.drawString(72, 700, "Name")
        c.drawString(72 + 40, 700, "Value")  # ~1.4 em after "Name": same line
        c.drawString(300, 700, "Far cell")  # far: a line of its own
        for x, word in [(72, "separately"), (122, "drawn"), (155, "words")]:  # an object a word, no spaces
            c.drawString(x, 650, word)  # gaps 0.4 and 0.6 em
    _, _, regions, _ = regions_of(make_pdf(draw))
    assert sorted(r.text for r in regions) == ["Far cell", "Name Value", "separately drawn words"]


def test_blocks_group_text_layer_paragraph_lines():
    para = ["Lines of one paragraph set at the usual leading of", "one point two times the font size are grouped",
            "into a single block by snappy.regions.blocks exactly like", "the lines an OCR engine would have returned."]
    other = ["A second paragraph further down the page."]

    def draw(c):
        c.setFont("Helvetica-Bold", 16)
        c.drawString(72, 740, "A Heading")
        body(c, para, top=700, size=10, leading=12)
        body(c, other, top=600, size=10, leading=12)
    _, _, regions, _ = regions_of(make_pdf(draw))
    blocks, labels = blocks_from_lines(regions)
    by_text = {r.text: labels[i] for i, r in enumerate(regions)}
    assert len({by_text[t] for t in para}) == 1
    assert by_text["A Heading"] != by_text[para[0]] and by_text[other[0]] != by_text[para[0]]
    assert blocks[by_text[para[0]]].text == " ".join(para)


# ---------------------------------------------------------------------- bad inputs
def test_angled_and_vertical_text_no_crash_and_a_reason():
    def draw(c):
        body(c, BODY[:2])
        for angle, (x, y) in [(90, (500, 200)), (30, (150, 250)), (45, (300, 150)), (180, (400, 450))]:
            c.saveState()
            c.translate(x, y)
            c.rotate(angle)
            c.drawString(0, 0, f"text at {angle} degrees")
            c.restoreState()
    page, image, regions, decision = regions_of(make_pdf(draw))
    texts = [r.text for r in regions]
    for angle in (90, 30, 45, 180):
        assert f"text at {angle} degrees" in texts
    assert all(t in texts for t in BODY[:2])
    assert decision.action == "none" and "not upright" in decision.reason
    assert_boxes_on_ink(page, regions, min_iou=0.3)  # angled lines: axis-aligned hulls


def test_text_far_outside_the_page_is_dropped_and_counted():
    def draw(c):
        body(c, BODY)
        c.drawString(5000, 5000, "far away")
        c.drawString(-3000, 100, "left of it")
    _, _, regions, decision = regions_of(make_pdf(draw))
    assert [r.text for r in regions] == BODY
    assert decision.counts["dropped"] == {"off_page": len("farawayleftofit")}


def _many_chars_pdf(n_lines=1100, per_line=96) -> bytes:
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"

    def draw(c):
        c.setFont("Helvetica", 4)
        for k in range(n_lines):
            c.drawString(20, 3300 - k * 3, "".join(rng.choice(letters) for _ in range(per_line)))
    return make_pdf(draw, pagesize=(400, 3320))


def test_page_with_100k_characters_in_bounded_time():
    data = _many_chars_pdf()
    page = open_page(data)
    image = render(page, 0.5)
    t0 = time.process_time()
    regions, decision = tl.text_layer_regions(page, image)
    spent = time.process_time() - t0
    assert decision.counts["chars"] >= 100_000
    assert len(regions) == 1100 and decision.action == "none" and decision.code == "text_layer"
    assert spent < 20.0, spent  # ~1 CPU-s here; bounded, never a hang
    layer = tl.read_text_layer(page, size_px=image.size, max_chars=50_000)
    assert layer.truncated and len(layer.code) == 0
    d = tl.decide(layer, tl.page_stats(image))
    assert d.action == "full" and "over MAX_CHARS" in d.reason and d.code == "too_many_chars"


# Bad inputs read as snappy reads them: through snappy.documents.pages.iter_pages, the page open and rendered.
def auto_pages(data: bytes, mode: str = "auto"):
    from snappy.documents.pages import RenderOptions, iter_pages

    return list(iter_pages(data, RenderOptions(dpi=DPI, text_layer=mode)))


def assert_clear_decision(page):
    """A page rendered (with ink) and decided: an action, a known code, a reason; no regions for OCR."""
    d = page.decision
    assert d is not None and d.action in ("none", "full", "areas"), d
    assert d.code in tl.CODES and d.reason.strip(), d
    assert page.regions is not None and (d.action != "full" or page.regions == [])
    assert np.asarray(page.image).min() < 128  # rendered: the page's ink is there


def pdf_from_objects(objs: list[bytes]) -> bytes:
    """A PDF of objects 1..N (1: the catalog) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for k, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (k, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def pdf_stream(data: bytes) -> bytes:
    return b"<< /Length %d >>\nstream\n%s\nendstream" % (len(data), data)


_AGL = {" ": "space", ".": "period", ",": "comma", "-": "hyphen"}  # Adobe glyph names; letters are their own


def type3_pdf(lines: list[str], tounicode: bool, glyph_names: str = "custom") -> bytes:
    """A page of ``lines`` (12 pt, 14 pt leading) in a Type 3 font whose glyph procedures fill a
    rectangle a character (height by character). ``tounicode``: with a ToUnicode map to the true
    characters; ``glyph_names``: "custom" (/g97: no unicode without the map) or "standard" (/a,
    /period: pdfium maps them by the Adobe glyph list)."""
    codes = sorted({ord(ch) for line in lines for ch in line})
    assert all(32 <= c < 127 for c in codes)
    names = [(_AGL.get(chr(c), chr(c)) if glyph_names == "standard" else f"g{c}").encode() for c in codes]
    procs, widths = [], []
    for c in codes:
        if c == 32:
            procs.append(b"300 0 d0")  # an empty glyph
            widths.append(300)
        else:
            top = 450 + 40 * (c % 7)
            procs.append(b"550 0 50 0 450 %d d1 50 0 400 %d re f" % (top, top))  # uncoloured: the text's fill
            widths.append(550)
    first_proc = 6
    to_unicode = b""
    tail = []
    if tounicode:
        cmap = (b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /T3U def\n"
                b"1 begincodespacerange <00> <FF> endcodespacerange\n%d beginbfchar\n" % len(codes)
                + b"".join(b"<%02X> <%04X>\n" % (c, c) for c in codes)
                + b"endbfchar endcmap CMapName currentdict /CMap defineresource pop end end")
        to_unicode = b"/ToUnicode %d 0 R " % (first_proc + len(codes))
        tail.append(pdf_stream(cmap))
    font = (b"<< /Type /Font /Subtype /Type3 /FontBBox [0 0 600 800] /FontMatrix [0.001 0 0 0.001 0 0] /CharProcs << "
            + b" ".join(b"/%s %d 0 R" % (n, first_proc + k) for k, n in enumerate(names))
            + b" >> /Encoding << /Type /Encoding /Differences ["
            + b" ".join(b"%d /%s" % (c, n) for c, n in zip(codes, names))
            + b"] >> /FirstChar %d /LastChar %d /Widths [" % (codes[0], codes[-1])
            + b" ".join(b"%d" % (widths[codes.index(c)] if c in codes else 0) for c in range(codes[0], codes[-1] + 1))
            + b"] /Resources << >> " + to_unicode + b">>")
    content = b"BT /F1 12 Tf 14 TL 72 720 Td " + b" ".join(b"(%s) Tj T*" % ln.encode() for ln in lines) + b" ET"
    page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
            b"/Contents 5 0 R >>")
    return pdf_from_objects([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>", page,
                             font, pdf_stream(content)] + [pdf_stream(p) for p in procs] + tail)


def test_type3_font_with_tounicode_reads_text():
    """Type 3 glyphs are content streams (here: filled rectangles); with a ToUnicode map pdfium reads
    their text and boxes like any font's: the text layer is the page's text."""
    data = type3_pdf(BODY, tounicode=True)
    (page,) = auto_pages(data)
    assert_clear_decision(page)
    assert page.decision.action == "none" and page.decision.code == "text_layer", page.decision.reason
    assert [r.text for r in page.regions] == BODY
    pdf_page, _, regions, _ = regions_of(data)
    assert_boxes_on_ink(pdf_page, regions)  # the glyph procedures' ink is inside the line boxes


@pytest.mark.parametrize("glyph_names", ["custom", "standard"])
def test_type3_font_without_tounicode_needs_full_ocr(glyph_names):
    """No ToUnicode map: pdfium takes no unicode from a Type 3 font's glyph names, not even standard
    ones (/T, /period); it falls back to the character codes and flags a map error on each
    (FPDFText_HasUnicodeMapError): text that cannot be trusted, so the page is OCR'd."""
    data = type3_pdf(BODY, tounicode=False, glyph_names=glyph_names)
    pdf_page = open_page(data)
    tp = pdf_page.get_textpage()
    assert tp.get_text_range().startswith(BODY[0])  # the codes happen to be ASCII ...
    assert all(pdfium_c.FPDFText_HasUnicodeMapError(tp.raw, i) for i in range(5))  # ... but unmapped
    (page,) = auto_pages(data)
    assert_clear_decision(page)
    assert page.decision.action == "full" and page.regions == []
    assert page.decision.code == "invalid_unicode" and "no valid unicode" in page.decision.reason


# Right-to-left lines (logical order) and how a PDF stores them: the glyphs in visual order, left to right.
RTL_LINES = {
    "hebrew": ("שלום עולם טוב", "בוט םלוע םולש"),
    "hebrew_number": ("סך הכל 1,250.50 שקלים (כולל מסים)", "(םיסמ ללוכ) םילקש 1,250.50 לכה ךס"),
    "arabic": ("مرحبا بالعالم", "ملاعلاب ابحرم"),
    "mixed_ltr": ("Total: שלום עולם in the budget", "Total: םלוע םולש in the budget"),
}


def _rtl_pdf() -> bytes:
    font = register_ttf()  # DejaVu Sans has Hebrew and Arabic (unshaped: isolated forms, as drawn here)

    def draw(c):
        c.setFont(font, 14)
        for k, (logical, visual) in enumerate(RTL_LINES.values()):
            if logical[0].isascii():
                c.drawString(72, 700 - 40 * k, visual)
            else:
                c.drawRightString(540, 700 - 40 * k, visual)  # right-aligned, as right-to-left text is set
    return make_pdf(draw)


def test_right_to_left_lines_read_in_logical_order():
    """pdfium's own text (FPDFText_GetText) is in logical order for right-to-left lines; the line
    regions are built from the boxes (visual order) and put back in logical order (logical_order)."""
    data = _rtl_pdf()
    assert b"FontFile2" in data
    (page,) = auto_pages(data)
    assert_clear_decision(page)
    assert page.decision.action == "none" and page.decision.code == "text_layer", page.decision.reason
    assert [r.text for r in page.regions] == [logical for logical, _ in RTL_LINES.values()]
    pdf_page, _, regions, _ = regions_of(data)
    pdfium_lines = pdf_page.get_textpage().get_text_range().split("\r\n")
    for name in ("hebrew", "hebrew_number", "arabic"):  # pdfium agrees on the right-to-left lines
        assert RTL_LINES[name][0] in pdfium_lines
    # (on the left-to-right line with Hebrew words in it, this pdfium puts the two words in the wrong order)
    assert_boxes_on_ink(pdf_page, regions)


@pytest.mark.parametrize("visual, logical", [
    ("plain left to right", "plain left to right"),
    ("בוט םלוע םולש", "שלום עולם טוב"),  # Hebrew
    ("ملاعلاب ابحرم", "مرحبا بالعالم"),  # Arabic
    ("םלוע 123 םולש", "שלום 123 עולם"),  # numbers read left to right inside right-to-left text
    ("ןוילימ 1,250.50 ךס", "סך 1,250.50 מיליון"),  # ... with their separators
    ("החנה 50%", "50% הנחה"),  # ... and signs
    (")םיסמ ללוכ(", "(כולל מסים)"),  # brackets as pdfium reports them: mirrored in right-to-left text
    ("Total: םלוע םולש in the budget", "Total: שלום עולם in the budget"),  # left-to-right line
    ("PDF 2.0 ןקתה", "התקן PDF 2.0"),  # a left-to-right run in a right-to-left line
])
def test_logical_order_of_visual_lines(visual, logical):
    assert tl.logical_order(visual) == logical


def _corrupt_xref(data: bytes, kind: str) -> bytes:
    xref, trailer = data.rindex(b"xref"), data.rindex(b"trailer")
    if kind == "zero_offsets":
        return re.sub(rb"\d{10} 00000 n", b"0000000000 00000 n", data)
    if kind == "shifted_offsets":
        return re.sub(rb"(\d{10}) 00000 n", lambda m: b"%010d 00000 n" % (int(m.group(1)) + 37), data)
    if kind == "garbled_table":
        return data[:xref] + b"xref\n0 8\n" + b"not a cross-reference entry\n" * 8 + data[trailer:]
    if kind == "bad_startxref":
        return re.sub(rb"startxref\s+\d+", b"startxref\n999999", data)
    if kind == "no_startxref":
        return data[:data.rindex(b"startxref")]
    if kind == "no_xref_no_trailer":
        return data[:xref]
    if kind == "junk_before_header":
        return b"junk " * 20 + data
    if kind == "no_trailer":
        return data[:trailer]
    if kind == "trailer_cut_in_dict":
        return data[:data.index(b"/Root", trailer)]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["zero_offsets", "shifted_offsets", "garbled_table", "bad_startxref",
                                  "no_startxref", "no_xref_no_trailer", "junk_before_header"])
def test_broken_xref_is_repaired_and_the_page_read(kind):
    """pdfium rebuilds a broken cross-reference table by scanning the objects: the page renders and
    its text layer reads as in the intact file."""
    data = _corrupt_xref(make_pdf(lambda c: body(c, BODY)), kind)
    (page,) = auto_pages(data)
    assert_clear_decision(page)
    assert page.decision.action == "none" and page.decision.code == "text_layer", page.decision.reason
    assert [r.text for r in page.regions] == BODY


@pytest.mark.parametrize("kind", ["no_trailer", "trailer_cut_in_dict"])
def test_xref_without_its_trailer_is_a_document_error(kind):
    """A cross-reference table whose trailer is cut off: pdfium (this build) does not rebuild, the
    document does not open; a DocumentError that says so, not a crash (no page to OCR)."""
    from snappy.errors import DocumentError

    data = _corrupt_xref(make_pdf(lambda c: body(c, BODY)), kind)
    with pytest.raises(DocumentError, match="corrupt or truncated"):
        auto_pages(data)


def test_unreadable_text_layer_falls_back_to_ocr(monkeypatch):
    """Whatever pdfium or the reading raises on a page, the page is rendered and OCR'd ("unreadable")."""
    data = make_pdf(lambda c: body(c, BODY))

    def broken(*args, **kwargs):
        raise RuntimeError("FPDFText_LoadPage failed")

    monkeypatch.setattr(tl, "text_layer_regions", broken)
    (page,) = auto_pages(data)
    assert_clear_decision(page)
    assert page.decision.action == "full" and page.decision.code == "unreadable"
    assert "text layer unreadable" in page.decision.reason and "FPDFText_LoadPage failed" in page.decision.reason
    (page,) = auto_pages(data, "only")
    assert page.decision.action == "none" and page.decision.code == "only" and page.regions == []


def test_image_file_has_no_text_layer():
    buf = io.BytesIO()
    sample_image().save(buf, "PNG")
    (page,) = auto_pages(buf.getvalue())
    assert_clear_decision(page)
    assert page.decision.action == "full" and page.decision.code == "image_file"
    (page,) = auto_pages(buf.getvalue(), "only")
    assert page.decision.action == "none" and page.decision.code == "only"


def test_modes_off_only_and_unknown():
    data = _hidden_page("mode3")
    page = open_page(data)
    image = render(page)
    assert tl.text_layer_regions(page, image, "off") == ([], tl.PageDecision("full", "text layer off", code="off"))
    regions, d = tl.text_layer_regions(page, image, "only")
    assert d.action == "none" and "text layer only" in d.reason and len(regions) == len(BODY) and d.code == "only"
    with pytest.raises(ValueError, match="unknown text layer mode"):
        tl.text_layer_regions(page, image, "sometimes")


def test_page_left_as_it_was():
    """find_hidden switches text objects off for one render and back on: renders stay identical."""
    data = _hidden_page("under_box")
    page = open_page(data)
    before = np.asarray(render(page))
    tl.text_layer_regions(page, Image.fromarray(before))
    assert (np.asarray(render(page)) == before).all()


# ---------------------------------------------------------------------- pure parts
def test_decide_is_pure_on_arrays():
    g = tl.PageGeometry((0, 0, 100, 100), 0, (100, 100))
    n = 40
    z = np.zeros

    def layer(code, drop=None, mode=0):
        return tl.TextLayer(g, np.asarray(code, np.int64), np.tile([10, 10, 15, 20], (n, 1)).astype(float),
                            z((n, 2)), np.full(n, 10.0), z(n), np.full(n, mode, np.int8),
                            np.tile([0, 0, 0, 255], (n, 1)).astype(np.uint8), z((n, 4), np.uint8), z(n, bool),
                            z(n, bool), z(n, bool), z(n, np.int32), z(n, np.int8) if drop is None else drop,
                            z(0, np.int8), z((0, 4)), z(0, np.int32), n_chars=n)
    stats = tl.PageStats(0.05, 0.0)
    assert tl.decide(layer([ord("a")] * n), stats).action == "none"
    assert tl.decide(layer([0xFFFD] * n), stats).action == "full"
    assert tl.decide(layer([ord("a")] * n), stats, layer_ok=False).action == "full"
    inv = np.full(n, tl.DROP_REASONS.index("invisible"), np.int8)
    assert "OCR layer" in tl.decide(layer([ord("a")] * n, inv, 3), stats).reason


def _array_layer(n=40, code=ord("a"), drop=0, mode=0, images=(), truncated=False, n_chars=None):
    """A TextLayer of ``n`` characters on a 1000 x 1000 pt page (1 px a point), all at its bottom
    left, and image objects ``images`` (user-space boxes)."""
    g = tl.PageGeometry((0, 0, 1000, 1000), 0, (1000, 1000))
    z = np.zeros
    img = np.asarray(images, float).reshape(-1, 4)
    return tl.TextLayer(
        geometry=g, code=np.full(n, code, np.int64), box=np.tile([10, 10, 15, 20], (n, 1)).astype(float),
        base=z((n, 2)), font_size=np.full(n, 10.0), angle=z(n), render_mode=np.full(n, mode, np.int8),
        fill=np.tile([0, 0, 0, 255], (n, 1)).astype(np.uint8), stroke=z((n, 4), np.uint8), generated=z(n, bool),
        map_error=z(n, bool), hyphen=z(n, bool), obj=z(n, np.int32), drop=np.full(n, drop, np.int8),
        obj_kind=np.full(len(img), 3, np.int8), obj_box=img, obj_order=np.arange(len(img), dtype=np.int32),
        n_chars=n if n_chars is None else n_chars, truncated=truncated)


_INK, _NO_INK = tl.PageStats(0.05, 0.0), tl.PageStats(0.0, 0.0)
_GRID = [(100 + 80 * i, 100 + 80 * j, 175 + 80 * i, 175 + 80 * j) for i in range(11) for j in range(11)]


@pytest.mark.parametrize("code, layer, stats, kwargs, action", [
    ("text_layer", lambda: _array_layer(), _INK, {}, "none"),
    ("blank", lambda: _array_layer(0), _NO_INK, {}, "none"),
    ("no_text_layer", lambda: _array_layer(0), tl.PageStats(0.05, 1.0), {}, "full"),
    ("invalid_unicode", lambda: _array_layer(code=0xFFFD), _INK, {}, "full"),
    ("invisible_layer", lambda: _array_layer(drop=tl.DROP_REASONS.index("invisible"), mode=3), _INK, {}, "full"),
    ("image_areas", lambda: _array_layer(images=[(300, 300, 600, 500)]), _INK, {}, "areas"),
    ("images_cover_page", lambda: _array_layer(images=[(100, 100, 1000, 1000)]), _INK, {}, "full"),
    ("many_images", lambda: _array_layer(images=_GRID), _INK, {}, "full"),  # 121 > MAX_AREAS
    ("too_many_chars", lambda: _array_layer(0, truncated=True, n_chars=tl.MAX_CHARS + 1), _INK, {}, "full"),
    ("check_failed", lambda: _array_layer(), _INK, {"layer_ok": False}, "full"),
])
def test_decide_gives_each_code(code, layer, stats, kwargs, action):
    d = tl.decide(layer(), stats, **kwargs)
    assert (d.code, d.action) == (code, action), d.reason
    assert code in tl.CODES and d.reason.strip()
    assert d.source == tl.SOURCE_OF[action] and (len(d.areas) > 0) == (action == "areas")


def test_areas_merge_overlapping_images_and_decisions_serialise():
    merged = tl._merge_boxes([[0, 0, 10, 10], [5, 5, 20, 20], [18, 0, 30, 3], [50, 50, 60, 60]])
    assert sorted(map(tuple, merged.tolist())) == [(0, 0, 30, 20), (50, 50, 60, 60)]  # a chain merges
    d = tl.PageDecision("areas", "why", ((1.0, 2.0, 3.0, 4.0),), {"dropped": {"tiny": 3}})
    import json
    assert json.loads(json.dumps(d.to_dict()))["areas"] == [[1.0, 2.0, 3.0, 4.0]]


def test_char_text_hyphen_and_controls():
    code = np.array([ord("a"), 0x02, 0x02, 0x0D, 0xE001, 0x1F600, 0xAD])
    hyphen = np.array([False, True, False, False, False, False, False])
    assert tl._char_text(code, hyphen) == ["a", "-", "\ufffd", "\ufffd", "\ue001", "\U0001F600", "-"]


def test_reading_order_columns_then_rows():
    boxes = np.array([[0, 0, 100, 10], [0, 20, 100, 30], [150, 0, 250, 10], [150, 20, 250, 30],
                      [0, 60, 250, 70]], float)  # two columns, then a full-width line below
    assert tl.reading_order(boxes).tolist() == [0, 1, 2, 3, 4]


def test_compare_texts_flags_a_shifted_map():
    truth = ["The committee reviewed the annual budget", "Several departments reported higher costs",
             "A follow-up meeting is scheduled for May"]
    shifted = ["".join(chr(ord(ch) + 1) if ch.isalpha() else ch for ch in t) for t in truth]
    noisy_ocr = ["The comittee reviewed the annual budqet", "Several departments reported higher costs",
                 "A follow-up meetinq is scheduled for May"]
    bad = tl.compare_texts(shifted, noisy_ocr)
    assert bad.ok is False and bad.cer > 0.8 and "reads wrong" in bad.reason
    good = tl.compare_texts(truth, noisy_ocr)
    assert good.ok is True and good.cer < 0.1
    assert tl.compare_texts([], []).ok is None


def window(line: str) -> str:
    """What check_crops keeps of a line: its first words (the crop is cut where they end)."""
    cut = line.find(" ", tl.VERIFY_WINDOW_CHARS)
    return line[:cut] if cut > 0 and len(line) - cut > 8 else line


class TruthOcr:
    """A stand-in OCR engine that reads what was drawn: the lines it is given, matched by position."""

    def __init__(self, truth):
        self.truth, self.calls = [window(t) for t in truth], 0

    def recognize(self, image):
        self.calls += 1
        return [Region((0, 0, 10, 10), image.size, text=self.truth[self.calls - 1])]


def test_verify_with_ocr_catches_a_shifted_tounicode_map():
    font = register_ttf()
    data = make_pdf(lambda c: body(c, BODY, font=font))
    shifted = remap_tounicode(data, lambda u: u + 1 if chr(u).isalpha() else u)  # "a" reads as "b"
    page, image, regions, decision = regions_of(shifted)
    assert decision.action == "none"  # every per-character test passes
    assert regions[0].text.startswith("Uif")
    picked = tl.pick_check_lines(regions, 3)
    check = tl.verify_with_ocr(image, regions, TruthOcr([BODY[i] for i in picked]), n=3)
    assert check.ok is False and len(check.lines) == 3
    _, true_image, true_regions, _ = regions_of(data)
    assert tl.verify_with_ocr(true_image, true_regions, TruthOcr([BODY[i] for i in picked]), n=3).ok is True
    # the document-level verdict then sends the page to OCR
    page = open_page(shifted)
    failed = tl.text_layer_regions(page, render(page), layer_ok=False)[1]
    assert failed.action == "full" and failed.code == "check_failed"
    # ... as does after_check on the page's regions and decision
    assert tl.after_check(regions, decision, tl.compare_texts([], [])) == (regions, decision)  # no verdict: kept
    regions, decision = tl.after_check(regions, decision, check)
    assert regions == [] and decision.action == "full" and decision.code == "check_failed"
    assert "failed the OCR check" in decision.reason


def test_verify_with_rapid_ocr():
    pytest.importorskip("rapidocr")
    from snappy.ocr import make_ocr

    font = register_ttf()
    data = make_pdf(lambda c: body(c, BODY, font=font, size=12))
    shifted = remap_tounicode(data, lambda u: u + 1 if chr(u).isalpha() else u)
    ocr = make_ocr("rapid")
    page, image, regions, _ = regions_of(data, scale=150 / 72)
    good = tl.verify_with_ocr(image, regions, ocr, n=2)
    page, image, regions, _ = regions_of(shifted, scale=150 / 72)
    bad = tl.verify_with_ocr(image, regions, ocr, n=2)
    assert good.ok is True and good.cer < 0.15, good
    assert bad.ok is False, bad
