import io

import pytest
from PIL import Image

from snappy.pages import DocumentError, RenderOptions, count_pages, load_pages
from snappy.synth import LETTER, LETTER_LANDSCAPE, SynthDoc, SynthPage, TextLine


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
    assert count_pages(tif.read_bytes()) == 3


def test_limits(tmp_path):
    src = _pdf(tmp_path, [LETTER] * 3)
    with pytest.raises(DocumentError, match="3 pages, over max_pages=2"):
        load_pages(src, RenderOptions(max_pages=2))
    with pytest.raises(DocumentError, match="over max_pixels"):
        load_pages(src, RenderOptions(dpi=300, max_pixels=1_000_000))


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"), (b"%PDF-1.7\n garbage", "not a readable PDF"), (b"hello world", "not a readable image"),
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
