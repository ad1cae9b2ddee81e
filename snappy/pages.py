"""Pages: render PDFs (pypdfium2) and read images (PNG/JPEG/TIFF, multi-page TIFF)."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image, ImageOps, UnidentifiedImageError

PDF_SUFFIXES = {".pdf"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}
DOCUMENT_SUFFIXES = PDF_SUFFIXES | IMAGE_SUFFIXES


class DocumentError(ValueError):
    """A document that cannot be read; the message names the file and the reason."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class RenderOptions:
    dpi: float = 150.0  # PDF render resolution; images keep their pixels
    max_pages: int | None = 2000  # per document; more is an error (None: no limit)
    max_pixels: int | None = 40_000_000  # per page after rendering (None: no limit)
    image_dpi: float = 72.0  # assumed resolution of images that carry no dpi


@dataclass
class Page:
    image: Image.Image  # RGB, rotation applied
    number: int  # 1-based
    width_pt: float
    height_pt: float
    dpi: float
    source: str

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def _check_pixels(source: str, number: int, w: int, h: int, opts: RenderOptions) -> None:
    if opts.max_pixels is not None and w * h > opts.max_pixels:
        raise DocumentError(
            source, f"page {number} would be {w}x{h} = {w * h} pixels, over max_pixels={opts.max_pixels}"
        )


def _check_count(source: str, n: int, opts: RenderOptions) -> None:
    if opts.max_pages is not None and n > opts.max_pages:
        raise DocumentError(source, f"{n} pages, over max_pages={opts.max_pages}")


def count_pages(data: bytes, source: str = "<bytes>") -> int:
    """Page count without rendering."""
    if _is_pdf(data):
        pdf = _open_pdf(data, source)
        try:
            return len(pdf)
        finally:
            pdf.close()
    img = _open_image(data, source)
    return getattr(img, "n_frames", 1)


def _is_pdf(data: bytes) -> bool:
    return data[:1024].lstrip().startswith(b"%PDF")


def _open_pdf(data: bytes, source: str):
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        raise DocumentError(source, f"not a readable PDF ({e})") from e


def _open_image(data: bytes, source: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DocumentError(source, f"not a readable image ({e})") from e


def iter_pages(data: bytes | str | os.PathLike, opts: RenderOptions = RenderOptions(),
               source: str | None = None) -> Iterator[Page]:
    """Yield the pages of a PDF or image file (given as a path or its bytes)."""
    if not isinstance(data, (bytes, bytearray)):
        source = source or str(data)
        try:
            data = Path(data).read_bytes()
        except OSError as e:
            raise DocumentError(source, f"cannot read file ({e.strerror or e})") from e
    source = source or "<bytes>"
    if not data:
        raise DocumentError(source, "empty file")
    if _is_pdf(data):
        yield from _pdf_pages(bytes(data), opts, source)
    else:
        yield from _image_pages(bytes(data), opts, source)


def load_pages(data: bytes | str | os.PathLike, opts: RenderOptions = RenderOptions(),
               source: str | None = None) -> list[Page]:
    return list(iter_pages(data, opts, source))


def _pdf_pages(data: bytes, opts: RenderOptions, source: str) -> Iterator[Page]:
    pdf = _open_pdf(data, source)
    try:
        n = len(pdf)
        if n == 0:
            raise DocumentError(source, "PDF has no pages")
        _check_count(source, n, opts)
        scale = opts.dpi / 72.0
        for i in range(n):
            try:
                page = pdf[i]
                # get_size() is the rotated (displayed) size in points; render() applies /Rotate.
                w_pt, h_pt = page.get_size()
                _check_pixels(source, i + 1, round(w_pt * scale), round(h_pt * scale), opts)
                image = page.render(scale=scale).to_pil().convert("RGB")
                page.close()
            except DocumentError:
                raise
            except Exception as e:  # pdfium raises several types for broken pages
                raise DocumentError(source, f"page {i + 1} cannot be rendered ({e})") from e
            yield Page(image=image, number=i + 1, width_pt=float(w_pt), height_pt=float(h_pt),
                       dpi=opts.dpi, source=source)
    finally:
        pdf.close()


def _image_pages(data: bytes, opts: RenderOptions, source: str) -> Iterator[Page]:
    img = _open_image(data, source)
    n = getattr(img, "n_frames", 1)
    _check_count(source, n, opts)
    for i in range(n):
        try:
            img.seek(i)
            _check_pixels(source, i + 1, img.width, img.height, opts)
            frame = ImageOps.exif_transpose(img).convert("RGB")  # EXIF orientation applied
        except DocumentError:
            raise
        except (OSError, ValueError) as e:
            raise DocumentError(source, f"frame {i + 1} cannot be decoded ({e})") from e
        dpi = img.info.get("dpi", (opts.image_dpi,))[0] or opts.image_dpi
        dpi = float(dpi)
        yield Page(image=frame, number=i + 1, width_pt=frame.width * 72.0 / dpi,
                   height_pt=frame.height * 72.0 / dpi, dpi=dpi, source=source)
