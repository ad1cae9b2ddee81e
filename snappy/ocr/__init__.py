"""OCR engines behind one interface (``OcrEngine.recognize(image) -> list[Region]``).

``make_ocr("paddle" | "rapid" | "tesseract" | "none" | options | dict)`` builds an engine;
engines load their models once, in their constructor. Engine modules (and their heavy
imports) load only when that engine is built.
"""
from __future__ import annotations

from typing import Any, Mapping

from PIL import Image

from snappy.ocr.base import OcrEngine
from snappy.ocr.models import OcrModelError, provision_bundled_model, validate_model_dir
from snappy.ocr.options import (
    DEFAULT_OCR,
    NoOcrOptions,
    OcrOptions,
    PaddleOcrOptions,
    RapidOcrOptions,
    TesseractOcrOptions,
    parse_ocr_options,
)
from snappy.regions.region import Region

__all__ = [
    "DEFAULT_OCR",
    "NoOcr",
    "NoOcrOptions",
    "OcrEngine",
    "OcrModelError",
    "OcrOptions",
    "PaddleOcrOptions",
    "RapidOcrOptions",
    "TesseractOcrOptions",
    "make_ocr",
    "parse_ocr_options",
    "provision_bundled_model",
    "validate_model_dir",
]


class NoOcr(OcrEngine):
    """No OCR: returns no regions (pages are then scored without text regions)."""

    name = "none"

    def __init__(self, options: NoOcrOptions | None = None):
        self.options = options or NoOcrOptions()

    def recognize(self, image: Image.Image) -> list[Region]:
        return []


def make_ocr(spec: "str | Mapping[str, Any] | OcrOptions | None" = DEFAULT_OCR, **overrides: Any) -> OcrEngine:
    """An OCR engine from a name, a dict with ``kind``, or an options object.

    ``overrides`` replace option fields, e.g. ``make_ocr("rapid", level="word")``.
    """
    opts = parse_ocr_options(spec, **overrides)
    if isinstance(opts, PaddleOcrOptions):
        from snappy.ocr.paddle import PaddleOcrEngine

        return PaddleOcrEngine(opts)
    if isinstance(opts, RapidOcrOptions):
        from snappy.ocr.rapid import RapidOcrEngine

        return RapidOcrEngine(opts)
    if isinstance(opts, TesseractOcrOptions):
        from snappy.ocr.tesseract import TesseractOcrEngine

        return TesseractOcrEngine(opts)
    return NoOcr(opts)
