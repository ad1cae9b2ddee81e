"""Tesseract engine via pytesseract (needs the ``tesseract`` binary on PATH or configured)."""
from __future__ import annotations

import logging
import shutil

import numpy as np
from PIL import Image

from snappy.ocr.base import OcrEngine
from snappy.ocr.options import TesseractOcrOptions
from snappy.regions import Region

log = logging.getLogger(__name__)


def tesseract_available(cmd: str | None = None) -> bool:
    """True if the tesseract binary can be found."""
    return shutil.which(cmd or "tesseract") is not None


class TesseractOcrEngine(OcrEngine):
    name = "tesseract"

    def __init__(self, options: TesseractOcrOptions | None = None):
        self.options = opts = options or TesseractOcrOptions()
        cmd = opts.tesseract_cmd or "tesseract"
        if shutil.which(cmd) is None:
            raise RuntimeError(
                f"tesseract OCR: binary {cmd!r} not found (install tesseract-ocr, or set tesseract_cmd)"
            )
        import pytesseract

        self._pt = pytesseract
        if opts.tesseract_cmd:
            # pytesseract keeps the binary path module-wide; there is no per-call argument.
            pytesseract.pytesseract.tesseract_cmd = opts.tesseract_cmd
        installed = set(pytesseract.get_languages(config=""))
        missing = [lang for lang in opts.lang.split("+") if lang not in installed]
        if missing:
            raise RuntimeError(
                f"tesseract OCR: language data {missing} not installed (have {sorted(installed)})"
            )
        config = f"--psm {opts.psm}"
        if opts.oem is not None:
            config += f" --oem {opts.oem}"
        self._config = f"{config} {opts.extra_config}".strip()

    def recognize(self, image: Image.Image) -> list[Region]:
        size = image.size  # (width, height): tesseract boxes are in these pixels
        data = self._pt.image_to_data(
            image.convert("RGB"), lang=self.options.lang, config=self._config,
            output_type=self._pt.Output.DICT, timeout=self.options.timeout_s,
        )
        conf = np.asarray(data["conf"], dtype=np.float64) / 100.0  # [rows]; -1 rows are not words
        text = [str(t).strip() for t in data["text"]]
        keep = [i for i in range(len(text)) if data["level"][i] == 5 and text[i] and conf[i] >= 0
                and conf[i] >= self.options.min_confidence]
        left, top = np.asarray(data["left"], dtype=np.float64), np.asarray(data["top"], dtype=np.float64)
        right = left + np.asarray(data["width"], dtype=np.float64)
        bottom = top + np.asarray(data["height"], dtype=np.float64)
        if self.options.level == "word":
            return [
                Region(bbox=(left[i], top[i], right[i], bottom[i]), page_size=size, text=text[i],
                       confidence=float(min(conf[i], 1.0)), level="word")
                for i in keep
            ]
        # Lines: words sharing (block, paragraph, line) numbers, in tesseract's reading order.
        lines: dict[tuple[int, int, int], list[int]] = {}
        for i in keep:
            lines.setdefault((data["block_num"][i], data["par_num"][i], data["line_num"][i]), []).append(i)
        regions = []
        for idx in lines.values():
            ix = np.asarray(idx)
            regions.append(Region(
                bbox=(left[ix].min(), top[ix].min(), right[ix].max(), bottom[ix].max()), page_size=size,
                text=" ".join(text[i] for i in idx), confidence=float(min(conf[ix].mean(), 1.0)), level="line",
            ))
        return regions
