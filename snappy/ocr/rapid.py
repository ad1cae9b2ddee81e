"""rapidocr 3.x engine: PP-OCRv6 small ONNX models bundled in the wheel (fully offline)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from snappy.ocr.base import OcrEngine
from snappy.ocr.options import RapidOcrOptions, resolve_threads
from snappy.regions.region import Region

log = logging.getLogger(__name__)


def rapidocr_params(opts: RapidOcrOptions) -> dict[str, Any]:
    """rapidocr's dotted config keys for ``opts`` (``opts.params`` wins on conflicts)."""
    params: dict[str, Any] = {
        "Global.use_cls": opts.use_cls,
        "Global.text_score": opts.text_score,
        "Global.return_word_box": opts.level == "word",
        "Global.log_level": "warning",
        "Det.limit_side_len": opts.det_limit_side_len,
        "Det.limit_type": opts.det_limit_type,
        "Det.box_thresh": opts.box_thresh,
        "Det.unclip_ratio": opts.unclip_ratio,
        "Rec.rec_batch_num": opts.rec_batch_size,
        "Det.model_path": opts.det_model_path,
        "Rec.model_path": opts.rec_model_path,
        "Rec.rec_keys_path": opts.rec_keys_path,
        "EngineConfig.onnxruntime.intra_op_num_threads": resolve_threads(opts.num_threads),
        "EngineConfig.onnxruntime.enable_cpu_mem_arena": opts.mem_arena,
    }
    params = {k: v for k, v in params.items() if v is not None}
    params.update(opts.params)
    return params


class RapidOcrEngine(OcrEngine):
    name = "rapid"

    def __init__(self, options: RapidOcrOptions | None = None):
        self.options = opts = options or RapidOcrOptions()
        for key in ("det_model_path", "rec_model_path", "rec_keys_path"):
            path = getattr(opts, key)
            if path is not None and not Path(path).expanduser().is_file():
                raise FileNotFoundError(f"rapid OCR: {key}={path!r} does not exist")
        from rapidocr import RapidOCR

        self._ocr = RapidOCR(params=rapidocr_params(opts))

    def recognize(self, image: Image.Image) -> list[Region]:
        size = image.size  # (width, height); rapidocr maps boxes back to these pixels
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # [H, W, 3]; rapidocr reads arrays as BGR
        res = self._ocr(bgr)
        if getattr(res, "boxes", None) is None or getattr(res, "txts", None) is None:
            return []  # nothing found
        if self.options.level == "line":
            return [
                Region.from_polygon(box, size, text=txt, confidence=_unit(score), level="line")
                for box, txt, score in zip(res.boxes, res.txts, res.scores)  # box: [4, 2], clockwise from top-left
                if txt.strip()
            ]
        return [
            Region.from_polygon(box, size, text=word.strip(), confidence=_unit(score), level="word")
            for line in (res.word_results or ())
            for word, score, box in line
            if word.strip() and box is not None
        ]


    def read_lines(self, crops: list[Image.Image]) -> list[str]:
        """Recognition only, one tight line crop at a time (no detection)."""
        out = []
        for crop in crops:
            bgr = np.ascontiguousarray(np.asarray(crop.convert("RGB"))[:, :, ::-1])
            res = self._ocr(bgr, use_det=False, use_cls=False, use_rec=True)
            out.append(" ".join(t for t in (getattr(res, "txts", None) or ()) if t))
        return out


def _unit(score: float) -> float:
    return float(min(max(float(score), 0.0), 1.0))
