"""Pages: render PDFs (pypdfium2) and read images (PNG/JPEG/TIFF, multi-page TIFF).

Given a path, nothing is read whole: PDFs are opened by pdfium from the file, images lazily by
Pillow. Every limit (page count, pixels, side, aspect ratio) is checked from the header / page
box BEFORE pixels are decoded or rendered. Anything wrong with the document is a
:class:`DocumentError` with a short, stable reason (same text every run: no object reprs, no
temporary paths).
"""
from __future__ import annotations

import io
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from typing import Iterator

from PIL import Image, ImageOps, UnidentifiedImageError

from snappy.errors import DocumentError, SourceReadError, clean_message
from snappy.documents.localfile import _display, open_local_fd

PDF_SUFFIXES = {".pdf"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}
DOCUMENT_SUFFIXES = PDF_SUFFIXES | IMAGE_SUFFIXES
# Pillow formats tried on non-PDF content (not every plugin: TGA and friends accept almost anything).
IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP", "GIF")  # JPEG covers MPO
HEAD = 1024  # pdfium looks for "%PDF" in the first 1024 bytes


@dataclass(frozen=True)
class RenderOptions:
    dpi: float = 150.0  # PDF render resolution; images keep their pixels
    max_pages: int | None = 2000  # per document; more is an error (None: no limit)
    max_pixels: int | None = 40_000_000  # per page after rendering (None: no limit)
    image_dpi: float = 72.0  # assumed resolution of images that carry no dpi
    max_side: int | None = 20_000  # px, either side of a rendered page / image
    max_aspect: float | None = 50.0  # long side / short side
    max_render_s: float | None = 1800.0  # rendering time per document, checked between pages
    # PDF text layer (snappy.documents.textlayer) read while each page is open: "off" (nothing read), "auto"
    # (regions + what OCR the page still needs), "only" (regions, never OCR). Images have no text layer.
    text_layer: str = "off"


def _rgb(image: Image.Image) -> Image.Image:
    """The image in RGB mode (no copy when it already is)."""
    return image if image.mode == "RGB" else image.convert("RGB")


@dataclass
class Page:
    image: Image.Image  # RGB, rotation applied
    number: int  # 1-based
    width_pt: float
    height_pt: float
    dpi: float
    source: str
    # With RenderOptions.text_layer != "off": the text-layer line regions (page pixels) and the
    # snappy.documents.textlayer.PageDecision (what OCR the page still needs); None when not read.
    regions: list | None = None
    decision: object | None = None

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def checked(self, check) -> "Page":
        """This page once its document's text-layer OCR check (a ``snappy.documents.textlayer.LayerCheck``, or
        None) is known: unchanged, or, when the layer reads wrong, sent to OCR (``textlayer.after_check``)."""
        if self.decision is None or check is None or check.ok is not False:
            return self
        from dataclasses import replace

        from snappy.documents.textlayer import after_check

        regions, decision = after_check(self.regions, self.decision, check)
        return replace(self, regions=regions, decision=decision)


# ---------------------------------------------------------------------- blank pages
BLANK_LEVELS = 16  # of 255: a page whose averaged greyscale varies less than this shows nothing
BLANK_GRID = 256  # averaging blocks are about 1/BLANK_GRID of the page's short side (~0.7 mm on Letter)


def is_blank(image: Image.Image, levels: int = BLANK_LEVELS) -> bool:
    """Whether a rendered page shows nothing: its greyscale, averaged over blocks of about
    1/``BLANK_GRID`` of its short side, has its darkest and lightest block less than ``levels``
    apart. A uniform page of any colour is blank; scanner noise and specks average out; a page
    number, a light grey line or a 1 pt dot is not blank. ~1.5 ms for a Letter page at 150 dpi."""
    grey = image.convert("L")
    factor = min(grey.size) // BLANK_GRID
    if factor > 1:
        grey = grey.reduce(factor)
    lo, hi = grey.getextrema()
    return hi - lo < levels


# ---------------------------------------------------------------------- limits
def _check_size(source: str, number: int, w: int, h: int, opts: RenderOptions) -> None:
    if w < 1 or h < 1:
        raise DocumentError(source, f"page {number} is {w}x{h} px (empty page box)")
    if opts.max_side is not None and max(w, h) > opts.max_side:
        raise DocumentError(source, f"page {number} is {w}x{h} px, over max_side={opts.max_side}")
    if opts.max_aspect is not None and max(w, h) / min(w, h) > opts.max_aspect:
        raise DocumentError(source, f"page {number} is {w}x{h} px, aspect ratio {max(w, h) / min(w, h):.0f}:1 "
                                    f"over max_aspect={opts.max_aspect:g}")
    if opts.max_pixels is not None and w * h > opts.max_pixels:
        raise DocumentError(
            source, f"page {number} would be {w}x{h} = {w * h} pixels, over max_pixels={opts.max_pixels}"
        )



def _check_count(source: str, n: int, opts: RenderOptions) -> None:
    if opts.max_pages is not None and n > opts.max_pages:
        raise DocumentError(source, f"{n} pages, over max_pages={opts.max_pages}")


class _Budget:
    """Rendering time spent inside the generator (not while the consumer holds a page)."""

    def __init__(self, source: str, opts: RenderOptions):
        self.source, self.limit, self.spent, self.t0 = source, opts.max_render_s, 0.0, 0.0

    def start(self, done: int) -> None:
        if self.limit is not None and self.spent > self.limit:
            raise DocumentError(self.source, f"rendering stopped after page {done}: "
                                             f"over max_render_s={self.limit:g}")
        self.t0 = time.monotonic()

    def stop(self) -> None:
        self.spent += time.monotonic() - self.t0


# ---------------------------------------------------------------------- sniffing
def _is_pdf(data: bytes) -> bool:
    return b"%PDF" in data[:HEAD]


def _shown(head: bytes, n: int = 12) -> str:
    out = []
    for b in head[:n]:
        ch = chr(b)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif 32 <= b < 127:
            out.append(ch)
        else:
            out.append({9: "\\t", 10: "\\n", 13: "\\r"}.get(b, f"\\x{b:02x}"))
    return '"' + "".join(out) + ("..." if len(head) > n else "") + '"'


_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
    (b"GIF8", "GIF"),
)
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive, DOCX, XLSX, PPTX or EPUB"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "a gzip file"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"Rar!", "a RAR archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Microsoft Office file, DOC, XLS or PPT"),
    (b"%!PS", "a PostScript file"),
    (b"{\\rtf", "an RTF document"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"\x00\x00\x01\x00", "an icon file (ICO)"),
)


def _image_magic(head: bytes) -> str | None:
    for magic, fmt in _IMAGE_MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _looks_like(head: bytes) -> str | None:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[4:8] == b"ftyp":
        return "an ISO media file, HEIC, AVIF or MP4"
    if not head.strip(b"\x00"):
        return "only zero bytes"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:  # a multi-byte character cut at the end of the head is fine
        if e.start < len(head) - 4:
            return None
        text = head[:e.start].decode("utf-8")
    low = text.lstrip("\ufeff \t\r\n").lower()
    if low.startswith(("<!doctype html", "<html", "<head", "<body")) or "<html" in low[:300]:
        return "an HTML page"
    if "<svg" in low[:300]:
        return "an SVG image"
    if low.startswith("<?xml"):
        return "an XML document"
    if low.startswith(("{", "[")):
        return "JSON or other text"
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "plain text" if text.strip() else "only whitespace"
    return None


def _unknown_format(head: bytes) -> str:
    fmt = _image_magic(head)
    if fmt:
        return f"not a readable image ({fmt} header is truncated or corrupt)"
    what = _looks_like(head)
    return f"not a PDF or a supported image (starts with {_shown(head)}" + (f"; looks like {what})" if what else ")")


def _clean(e: BaseException) -> str:
    text = clean_message(str(e))
    return text or f"{type(e).__name__} (no message)"


# ---------------------------------------------------------------------- entry points
def iter_pages(data: bytes | str | os.PathLike, opts: RenderOptions = RenderOptions(),
               source: str | None = None) -> Iterator[Page]:
    """Yield the pages of a PDF or image file (given as a path or its bytes).

    A path is opened without blocking (a FIFO or device is a DocumentError, never a hang) and
    never read whole: pdfium and Pillow read what they need from the file. Limits in ``opts``
    are checked before each page is rendered or decoded. DocumentError: the document's fault;
    :class:`snappy.errors.SourceReadError` (an OSError): the file is gone or unreadable."""
    with _opened(data, source) as (src, head, source):
        if _is_pdf(head):
            yield from _pdf_pages(src, opts, source)
        else:
            yield from _image_pages(src, head, opts, source)


def load_pages(data: bytes | str | os.PathLike, opts: RenderOptions = RenderOptions(),
               source: str | None = None) -> list[Page]:
    """All pages of a document at once (:func:`iter_pages` renders them one at a time)."""
    return list(iter_pages(data, opts, source))


class _File:
    """An opened local document: fd plus the path pdfium can open (race-free via /proc)."""

    def __init__(self, fd: int, path: str | bytes):
        self.fd = fd
        proc = f"/proc/self/fd/{fd}"
        self.pdf_path = os.fsencode(proc if os.path.exists(proc) else path) + b"\0"


class _opened:
    """Context manager: (bytes or _File, first bytes, source name); DocumentError on empty input."""

    def __init__(self, data, source: str | None):
        self.data, self.source, self.fd = data, source, None

    def __enter__(self):
        data, source = self.data, self.source
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
            source = source or "<bytes>"
            if not data:
                raise DocumentError(source, "empty file")
            return data, data[:HEAD], source
        path = os.fspath(data)
        if source is None:
            source = _display(os.fsencode(path))[0]
        self.fd, st = open_local_fd(path, source)
        try:
            head = os.pread(self.fd, HEAD, 0) if st.st_size else b""
            if not head:
                raise DocumentError(source, "empty file")
        except OSError as e:
            self.__exit__()
            raise SourceReadError(source, f"read error ({e.strerror or type(e).__name__})") from None
        except BaseException:
            self.__exit__()
            raise
        return _File(self.fd, path), head, source

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------------- PDF
_PDF_ERRORS = {
    1: "not a readable PDF (unknown pdfium error)",
    2: "not a readable PDF (pdfium cannot open the file)",
    3: "not a readable PDF (corrupt or truncated)",
    4: "PDF is encrypted (a password is required)",
    5: "PDF uses an unsupported security handler",
    6: "PDF page tree is broken",
}


def _open_pdf(src: bytes | _File, source: str):
    """(PdfDocument, page count); DocumentError with pdfium's error code in words."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    if isinstance(src, bytes):
        raw = pdfium_c.FPDF_LoadMemDocument64(src, len(src), None)
    else:
        raw = pdfium_c.FPDF_LoadDocument(src.pdf_path, None)
    if not raw:
        code = pdfium_c.FPDF_GetLastError()
        raise DocumentError(source, _PDF_ERRORS.get(code, f"not a readable PDF (pdfium error {code})"))
    n = pdfium_c.FPDF_GetPageCount(raw)
    if n < 1:  # pypdfium2 would say "Failed to load document (PDFium: Success)"
        pdfium_c.FPDF_CloseDocument(raw)
        raise DocumentError(source, "PDF has no pages")
    pdf = pdfium.PdfDocument(raw)
    if isinstance(src, bytes):
        pdf._data_holder.append(src)  # pdfium reads the buffer lazily: keep it alive with the document
    return pdf, n


def _pdf_pages(src: bytes | _File, opts: RenderOptions, source: str) -> Iterator[Page]:
    import pypdfium2 as pdfium

    text_layer = opts.text_layer
    if text_layer != "off":
        from snappy.documents.textlayer import MODES

        if text_layer not in MODES:
            raise ValueError(f"unknown text layer mode {text_layer!r}; expected one of {', '.join(MODES)}")
    pdf, n = _open_pdf(src, source)
    try:
        _check_count(source, n, opts)
        scale = opts.dpi / 72.0
        budget = _Budget(source, opts)
        for i in range(n):
            budget.start(i)
            try:
                page = pdf[i]
            except pdfium.PdfiumError:
                raise DocumentError(source, f"page {i + 1} cannot be loaded (corrupt page)") from None
            try:
                # get_size() is the rotated (displayed) size in points; render() applies /Rotate.
                w_pt, h_pt = page.get_size()
                _check_size(source, i + 1, math.ceil(w_pt * scale), math.ceil(h_pt * scale), opts)  # as render()
                try:
                    image = _rgb(page.render(scale=scale).to_pil())
                except MemoryError:
                    raise
                except Exception as e:  # pdfium raises several types for broken pages
                    raise DocumentError(source, f"page {i + 1} cannot be rendered ({_clean(e)})") from e
                regions = decision = None
                if text_layer != "off":
                    regions, decision = _read_text_layer(page, image, text_layer, source, i + 1)
            finally:
                page.close()
            budget.stop()
            yield Page(image=image, number=i + 1, width_pt=float(w_pt), height_pt=float(h_pt),
                       dpi=opts.dpi, source=source, regions=regions, decision=decision)
    finally:
        pdf.close()


def _read_text_layer(page, image, mode: str, source: str, number: int):
    """(regions, decision) of an open page; a text layer pdfium cannot read means OCR the page
    (the page itself rendered: never a document error)."""
    from snappy.documents.textlayer import PageDecision, text_layer_regions

    try:
        return text_layer_regions(page, image, mode)
    except MemoryError:
        raise
    except Exception as e:
        if mode == "only":
            return [], PageDecision("none", f"text layer unreadable ({_clean(e)}); text layer only", code="only")
        return [], PageDecision("full", f"text layer unreadable ({_clean(e)})", code="unreadable")


def image_decision(mode: str):
    """The decision for a page with no text layer (an image file): OCR it whole, unless "only"."""
    from snappy.documents.textlayer import PageDecision

    if mode == "only":
        return PageDecision("none", "image: no text layer; text layer only", code="only")
    return PageDecision("full", "image: no text layer", code="image_file")


# ---------------------------------------------------------------------- images
_BOMB = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+)")


def _open_image(src: bytes | _File, head: bytes, source: str) -> Image.Image:
    """Open lazily (header only: no pixels are decoded here)."""
    fp = io.BytesIO(src) if isinstance(src, bytes) else os.fdopen(os.dup(src.fd), "rb")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limits follow
            img = Image.open(fp, formats=IMAGE_FORMATS)
        img._snappy_fp = fp  # closed with the image (Pillow leaves a caller's file open)
    except Image.DecompressionBombError as e:
        fp.close()
        m = _BOMB.search(str(e))
        pixels = f"{int(m.group(1))} pixels" if m else "too many pixels"
        limit = f" (limit {int(m.group(2))})" if m else ""
        raise DocumentError(source, f"image header claims {pixels}: a decompression bomb{limit}") from None
    except UnidentifiedImageError:
        fp.close()
        raise DocumentError(source, _unknown_format(head)) from None
    except MemoryError:
        fp.close()
        raise
    except Exception as e:
        fp.close()
        fmt = _image_magic(head)
        what = f"{fmt} header" if fmt else "header"
        raise DocumentError(source, f"not a readable image ({what} cannot be read: {_clean(e)})") from None
    return img


def _frame_count(img: Image.Image, source: str) -> int:
    try:
        return int(getattr(img, "n_frames", 1))
    except MemoryError:
        raise
    except Exception as e:
        raise DocumentError(source, f"{img.format} frame list cannot be read ({_clean(e)})") from None


def _image_pages(src: bytes | _File, head: bytes, opts: RenderOptions, source: str) -> Iterator[Page]:
    img = _open_image(src, head, source)
    try:
        fmt = img.format or "image"
        n = _frame_count(img, source)
        _check_count(source, n, opts)
        budget = _Budget(source, opts)
        for i in range(n):
            budget.start(i)
            what = f"{fmt} image is truncated or corrupt" if n == 1 else f"{fmt} frame {i + 1} cannot be decoded"
            try:
                img.seek(i)
            except MemoryError:
                raise
            except Exception as e:
                raise DocumentError(source, f"{what} ({_clean(e)})") from None
            w, h = img.size
            _check_size(source, i + 1, w, h, opts)  # from the header: nothing decoded yet
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    img.load()
                    frame = _rgb(ImageOps.exif_transpose(img))  # EXIF orientation applied
            except MemoryError:
                raise
            except Exception as e:  # OSError, SyntaxError, ValueError, struct.error, ... from decoders
                raise DocumentError(source, f"{what} ({_clean(e)})") from None
            dpi = img.info.get("dpi", (opts.image_dpi,))[0] or opts.image_dpi
            try:
                dpi = float(dpi)
            except (TypeError, ValueError):
                dpi = opts.image_dpi
            if not 1.0 <= dpi <= 100_000.0:
                dpi = opts.image_dpi
            budget.stop()
            off = opts.text_layer == "off"
            yield Page(image=frame, number=i + 1, width_pt=frame.width * 72.0 / dpi,
                       height_pt=frame.height * 72.0 / dpi, dpi=dpi, source=source,
                       regions=None if off else [], decision=None if off else image_decision(opts.text_layer))
    finally:
        img.close()
        img._snappy_fp.close()
