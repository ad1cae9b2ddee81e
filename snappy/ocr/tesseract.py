"""Tesseract engine (needs the ``tesseract`` binary on PATH or configured).

The binary runs once per page, the image piped in as PGM and word boxes read back as TSV. It
is started here rather than through pytesseract so that its OpenMP thread limit
(``OMP_THREAD_LIMIT``) is set for that process alone: tesseract's OpenMP threads cost several
times the CPU of one thread and read the same text (docs/ocr.md).
"""
from __future__ import annotations

import io
import logging
import os
import shlex
import shutil
import subprocess

import numpy as np
from PIL import Image

from snappy.ocr.base import OcrEngine
from snappy.ocr.options import TesseractOcrOptions, resolve_threads
from snappy.regions.region import Region

log = logging.getLogger(__name__)


def tesseract_available(cmd: str | None = None) -> bool:
    """True if the tesseract binary can be found."""
    return shutil.which(cmd or "tesseract") is not None


def tesseract_version(cmd: str | None = None) -> str | None:
    """The engine's version, the first line of ``tesseract --version`` (``"tesseract 5.3.0"``);
    None if the binary cannot be run."""
    try:
        out = subprocess.run([cmd or "tesseract", "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (out.stdout or out.stderr or "").strip().splitlines()  # older versions print it on stderr
    return lines[0].strip() if out.returncode == 0 and lines else None


class TesseractOcrEngine(OcrEngine):
    name = "tesseract"

    def __init__(self, options: TesseractOcrOptions | None = None):
        self.options = opts = options or TesseractOcrOptions()
        cmd = opts.tesseract_cmd or "tesseract"
        if shutil.which(cmd) is None:
            raise RuntimeError(
                f"tesseract OCR: binary {cmd!r} not found (install tesseract-ocr, or set tesseract_cmd)"
            )
        self._threads = resolve_threads(opts.threads)
        langs = subprocess.run([cmd, "--list-langs"], capture_output=True, env=self._environ(), timeout=60)
        # first line: 'List of available languages in "<tessdata>" (N):', then one name a line
        installed = {ln.strip() for ln in langs.stdout.decode("utf-8", "replace").splitlines()[1:] if ln.strip()}
        missing = [lang for lang in opts.lang.split("+") if lang not in installed]
        if missing:
            raise RuntimeError(
                f"tesseract OCR: language data {missing} not installed (have {sorted(installed)})"
            )
        config = f"--psm {opts.psm}"
        if opts.oem is not None:
            config += f" --oem {opts.oem}"
        self._config = f"{config} {opts.extra_config}".strip()
        self._cmd = [cmd, "stdin", "stdout", "-l", opts.lang, *shlex.split(self._config), "tsv"]

    def _environ(self) -> dict[str, str]:
        """This process's environment, plus the OpenMP thread limit for the tesseract process."""
        env = dict(os.environ)
        if self._threads is not None:
            env["OMP_THREAD_LIMIT"] = str(self._threads)
        return env

    def _data(self, image: Image.Image) -> dict[str, list]:
        """tesseract's TSV output as columns (like pytesseract's ``image_to_data`` DICT)."""
        buf = io.BytesIO()
        # Grey PGM: no encoding cost, a third of RGB's bytes; tesseract works on grey anyway
        # (same words and boxes on the generated pages, ~10 % less CPU: docs/ocr.md).
        image.convert("L").save(buf, "PPM")
        try:
            proc = subprocess.run(self._cmd, input=buf.getvalue(), capture_output=True, env=self._environ(),
                                  timeout=self.options.timeout_s or None)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"tesseract OCR: no result within timeout_s={self.options.timeout_s}") from e
        if proc.returncode:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise RuntimeError(f"tesseract OCR: {self._cmd[0]} exited with {proc.returncode}: {err[-500:]}")
        rows = proc.stdout.decode("utf-8", "replace").splitlines()
        names = rows[0].split("\t") if rows else []
        cols: dict[str, list] = {k: [] for k in names}
        for row in rows[1:]:
            if not row:
                continue
            vals = row.split("\t", len(names) - 1)
            if len(vals) < len(names):
                vals += [""] * (len(names) - len(vals))  # a word-less row may lack its text column
            for k, v in zip(names, vals):
                cols[k].append(v if k == "text" else float(v) if k == "conf" else int(v))
        if not cols:  # no output at all
            cols = {k: [] for k in ("level", "block_num", "par_num", "line_num", "left", "top", "width", "height",
                                    "conf", "text")}
        return cols

    def recognize(self, image: Image.Image) -> list[Region]:
        size = image.size  # (width, height): tesseract boxes are in these pixels
        data = self._data(image)
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
