import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from snappy.errors import DocumentError
from snappy.documents.pages import RenderOptions, iter_pages, load_pages
from snappy.testing.synth import LETTER, LETTER_LANDSCAPE, SynthDoc, SynthPage, TextLine


def _pdf(tmp_path, sizes):
    doc = SynthDoc("d", [SynthPage(s, [TextLine("hello", 72, 72)]) for s in sizes])
    return doc.write_pdf(tmp_path / "d.pdf")


def test_pdf_pages_sizes_in_points_and_pixels(tmp_path):
    pages = load_pages(_pdf(tmp_path, [LETTER, LETTER_LANDSCAPE]), RenderOptions(dpi=100))
    assert [p.number for p in pages] == [1, 2]
    assert (pages[0].width_pt, pages[0].height_pt) == (612, 792)
    assert pages[0].size == (850, 1100)
    assert pages[1].size == (1100, 850)
    assert pages[0].image.mode == "RGB" and pages[0].dpi == 100


def test_pdf_rotation_is_applied(tmp_path):
    import pypdfium2 as pdfium

    src = _pdf(tmp_path, [LETTER])
    pdf = pdfium.PdfDocument(src)
    pdf[0].set_rotation(90)
    out = tmp_path / "rot.pdf"
    pdf.save(out)
    (page,) = load_pages(out, RenderOptions(dpi=72))
    assert page.size == (792, 612) and (page.width_pt, page.height_pt) == (792, 612)


def test_images_and_multipage_tiff(tmp_path):
    png = tmp_path / "a.png"
    Image.new("RGB", (300, 200), "white").save(png, dpi=(150, 150))
    (p,) = load_pages(png)
    assert p.size == (300, 200) and p.dpi == pytest.approx(150, rel=1e-3) and p.width_pt == pytest.approx(144, rel=1e-3)
    tif = tmp_path / "b.tiff"
    frames = [Image.new("L", (100 + 10 * i, 50), 255) for i in range(3)]
    frames[0].save(tif, save_all=True, append_images=frames[1:])
    pages = load_pages(tif)
    assert [pg.size for pg in pages] == [(100, 50), (110, 50), (120, 50)]
    assert len(load_pages(tif.read_bytes())) == 3  # from bytes too


def test_limits(tmp_path):
    src = _pdf(tmp_path, [LETTER] * 3)
    with pytest.raises(DocumentError, match="3 pages, over max_pages=2"):
        load_pages(src, RenderOptions(max_pages=2))
    with pytest.raises(DocumentError, match="over max_pixels"):
        load_pages(src, RenderOptions(dpi=300, max_pixels=1_000_000))


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"%PDF-1.7\n garbage", "not a readable PDF (corrupt or truncated)"),
    (b"hello world", 'not a PDF or a supported image (starts with "hello world"; looks like plain text)'),
    (b"\x89PNG\r\n\x1a\n not really", "not a readable image (PNG header is truncated or corrupt)"),
    (b"<!DOCTYPE html><html><body>Not Found</body></html>", "looks like an HTML page"),
    (b"PK\x03\x04\x14\x00\x06\x00", "looks like a ZIP archive"),
])
def test_bad_input_names_file_and_reason(tmp_path, content, reason):
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(content)
    with pytest.raises(DocumentError) as e:
        load_pages(bad)
    assert str(bad) in str(e.value) and reason in str(e.value)


def test_truncated_image(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (400, 400), "red").save(buf, format="PNG")
    bad = tmp_path / "cut.png"
    bad.write_bytes(buf.getvalue()[:200])
    with pytest.raises(DocumentError, match="cut.png"):
        load_pages(bad)


def _reason(data, opts=RenderOptions(), source="doc") -> str:
    with pytest.raises(DocumentError) as e:
        load_pages(data, opts, source)
    assert e.value.source == source and str(e.value) == f"{source}: {e.value.reason}"
    return e.value.reason


def test_pdf_open_errors_in_words(tmp_path):
    import random

    from snappy.testing.synth import _encrypted_pdf, minimal_pdf

    # pypdfium2 itself says "Failed to load document (PDFium: Success)" for a valid zero-page PDF
    assert _reason(minimal_pdf([])) == "PDF has no pages"
    assert _reason(_encrypted_pdf("secret", "owner", 128)) == "PDF is encrypted (a password is required)"
    assert len(load_pages(_encrypted_pdf("", "owner", 128), RenderOptions(dpi=20))) == 1  # owner password only
    full = _pdf(tmp_path, [LETTER, LETTER]).read_bytes()
    assert _reason(full[: len(full) // 2]) == "not a readable PDF (corrupt or truncated)"
    # pdfium rebuilds the xref table when the trailer survives: such a truncated file renders
    assert len(load_pages(full[: full.rindex(b"startxref")], RenderOptions(dpi=20))) == 2
    rnd = random.Random(1)
    assert _reason(b"%PDF-1.4\n" + bytes(rnd.getrandbits(8) for _ in range(999))) == \
        "not a readable PDF (corrupt or truncated)"


def test_page_limits_before_rendering(tmp_path, monkeypatch):
    import pypdfium2 as pdfium

    from snappy.testing.synth import minimal_pdf

    def no_render(*a, **k):
        raise AssertionError("rendered")

    monkeypatch.setattr(pdfium.PdfPage, "render", no_render)
    assert _reason(minimal_pdf([(24000, 30)]), RenderOptions(dpi=150)) == "page 1 is 50000x63 px, over max_side=20000"
    assert _reason(minimal_pdf([(2000, 20)]), RenderOptions(dpi=72)) == \
        "page 1 is 2000x20 px, aspect ratio 100:1 over max_aspect=50"
    t0 = time.monotonic()
    assert _reason(minimal_pdf([(100, 100)] * 5000)) == "5000 pages, over max_pages=2000"
    assert time.monotonic() - t0 < 2
    monkeypatch.undo()
    assert len(load_pages(minimal_pdf([(2000, 20)]), RenderOptions(dpi=72, max_aspect=None))) == 1


def test_render_time_limit_is_checked_between_pages(tmp_path):
    src = _pdf(tmp_path, [LETTER] * 3)
    it = iter_pages(src, RenderOptions(dpi=30, max_render_s=0.0), "doc")
    assert next(it).number == 1  # the first page always renders
    with pytest.raises(DocumentError) as e:
        next(it)
    assert e.value.reason == "rendering stopped after page 1: over max_render_s=0"
    assert len(load_pages(src, RenderOptions(dpi=30, max_render_s=None))) == 3


def test_image_limits_from_the_header(tmp_path, monkeypatch):
    from PIL import ImageFile

    from snappy.testing.synth import header_png

    def no_decode(self, *a, **k):
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    assert _reason(header_png(13_000, 13_000)) == \
        "page 1 would be 13000x13000 = 169000000 pixels, over max_pixels=40000000"
    assert _reason(header_png(25_000, 10, full=False)) == "page 1 is 25000x10 px, over max_side=20000"
    assert _reason(header_png(100_000, 100_000, full=False)) == \
        "image header claims 10000000000 pixels: a decompression bomb (limit 178956970)"


def test_huge_png_is_rejected_without_allocating_its_pixels(tmp_path):
    """A 13000x13000 PNG (20 KB on disk, 169 MB decoded, 507 MB as RGB): peak RSS of a fresh
    process stays far below the decoded size."""
    from snappy.testing.synth import header_png

    png = tmp_path / "huge.png"
    png.write_bytes(header_png(13_000, 13_000))
    code = (
        "import resource, sys\n"
        "from snappy.documents.pages import iter_pages\nfrom snappy.errors import DocumentError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    list(iter_pages(sys.argv[1]))\nexcept DocumentError as e:\n    print(e.reason)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(png)], capture_output=True, text=True, timeout=60,
                         cwd=str(Path(__file__).parent.parent), check=True).stdout.split("\n")
    assert "over max_pixels=40000000" in out[0]
    assert int(out[1]) < 30_000, f"peak RSS grew by {out[1]} KB"  # decoding would add >= 169,000 KB


def test_truncated_and_corrupt_frames(tmp_path):
    from snappy.testing.synth import _tiff_bytes, _tiff_frame_offset

    buf = io.BytesIO()
    Image.new("RGB", (400, 300), "red").save(buf, format="JPEG")
    jpg = buf.getvalue()
    assert _reason(jpg[: len(jpg) // 2]).startswith("JPEG image is truncated or corrupt (image file is truncated")
    tif = _tiff_bytes()
    off, _ = _tiff_frame_offset(tif, 2)
    assert _reason(tif[: off + 100]) == "TIFF frame 3 cannot be decoded (image file is truncated (100 bytes not processed))"


def test_reasons_are_stable_and_hide_temp_paths(tmp_path):
    """Same text for the same bytes, whether given as bytes or as a (temporary) path."""
    cases = [b"hello", b"\x89PNG\r\n\x1a\n not really", b"%PDF-1.4\n" + bytes(50), b"GIF89a"]
    for data in cases:
        p = tmp_path / "x.bin"
        p.write_bytes(data)
        reasons = {_reason(data), _reason(data), _reason(p, source="doc"), _reason(str(p), source="doc")}
        assert len(reasons) == 1, reasons
        (r,) = reasons
        assert str(tmp_path) not in r and "0x" not in r and "<" not in r.split("starts with")[0]


def test_blank_page_decision():
    """A page that shows nothing is blank; any visible mark, however small or light, is not."""
    import numpy as np
    from reportlab.pdfgen import canvas

    from snappy.documents.pages import is_blank

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=LETTER)
    c.showPage()  # 1: nothing
    c.setFont("Helvetica", 10)
    c.drawString(300, 30, "3")
    c.showPage()  # 2: a page number only
    c.setFillGray(0.8)
    c.setFont("Helvetica", 9)
    c.drawString(72, 700, "light grey text")
    c.showPage()  # 3
    c.circle(300, 400, 0.5, fill=1)
    c.showPage()  # 4: a 1 pt dot
    c.setFont("Helvetica", 12)
    c.drawString(72, 700, "An ordinary line of text.")
    c.showPage()  # 5
    c.setFillColorRGB(0.2, 0.3, 0.8)
    c.rect(0, 0, *LETTER, fill=1, stroke=0)
    c.showPage()  # 6: one colour, nothing on it
    c.save()
    for dpi in (72, 150, 300):
        pages = load_pages(buf.getvalue(), RenderOptions(dpi=dpi))
        assert [is_blank(p.image) for p in pages] == [True, False, False, False, False, True], dpi
    rng = np.random.default_rng(0)
    scan = np.clip(240 + rng.normal(0, 6, (2200, 1700)), 0, 255).astype(np.uint8)  # a blank sheet, scanned
    assert is_blank(Image.fromarray(scan, "L").convert("RGB"))
    scan[1000:1024, 800:812] = 60  # a 3 x 2 mm mark at 200 dpi
    assert not is_blank(Image.fromarray(scan, "L").convert("RGB"))
    assert is_blank(Image.new("RGB", (5, 5), "white"))  # smaller than the averaging grid
    tiny = Image.new("RGB", (5, 5), "white")
    tiny.putpixel((2, 2), (0, 0, 0))
    assert not is_blank(tiny)


# ---------------------------------------------------------------------- text layer at render time
def _text_and_scan_pdf() -> bytes:
    """Page 1: born-digital text; page 2: an image of text only (a scan); page 3: text + a pasted image."""
    import numpy as np
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    rng = np.random.default_rng(1)
    noise = Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=LETTER, invariant=1)
    c.setFont("Helvetica", 11)
    for k in range(12):
        c.drawString(72, 700 - 16 * k, f"Line {k} of born digital text about invoices and contracts.")
    c.showPage()
    c.drawImage(ImageReader(noise), 0, 0, width=LETTER[0], height=LETTER[1])
    c.showPage()
    c.setFont("Helvetica", 11)
    for k in range(6):
        c.drawString(72, 700 - 16 * k, f"Paragraph line {k} above a pasted screenshot of a table.")
    c.drawImage(ImageReader(noise), 72, 200, width=300, height=200)
    c.showPage()
    c.save()
    return buf.getvalue()


def test_text_layer_regions_attached_while_rendering():
    data = _text_and_scan_pdf()
    off = load_pages(data, RenderOptions(dpi=72))
    assert all(p.regions is None and p.decision is None for p in off)  # default: nothing read
    pages = load_pages(data, RenderOptions(dpi=72, text_layer="auto"))
    assert [p.decision.action for p in pages] == ["none", "full", "areas"]
    first, scan, mixed = pages
    assert [r.text for r in first.regions][:2] == ["Line 0 of born digital text about invoices and contracts.",
                                                   "Line 1 of born digital text about invoices and contracts."]
    assert len(first.regions) == 12 and all(r.page_size == first.size for r in first.regions)
    assert scan.regions == []
    assert len(mixed.regions) == 6 and len(mixed.decision.areas) == 1
    x0, y0, x1, y1 = mixed.decision.areas[0]  # the pasted image, in page pixels (72 dpi: points, y down)
    assert abs(x0 - 72) <= 1 and abs(x1 - 372) <= 1 and abs(y0 - (792 - 400)) <= 1 and abs(y1 - (792 - 200)) <= 1
    only = load_pages(data, RenderOptions(dpi=72, text_layer="only"))
    assert [p.decision.action for p in only] == ["none", "none", "none"]
    # the same images either way: reading the text layer leaves the render alone
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(off, pages))


def test_text_layer_on_images_and_bad_mode(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGB", (50, 40), "white").save(p)
    (page,) = load_pages(p, RenderOptions(text_layer="auto"))
    assert page.regions == [] and page.decision.action == "full" and "image" in page.decision.reason
    (page,) = load_pages(p, RenderOptions(text_layer="only"))
    assert page.decision.action == "none"
    (page,) = load_pages(p)
    assert page.regions is None and page.decision is None
    with pytest.raises(ValueError, match="text layer mode"):
        load_pages(_text_and_scan_pdf(), RenderOptions(text_layer="bogus"))
