"""PaddleOCR 3.x engine, offline on ONNX Runtime (no paddlepaddle needed)."""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from PIL import Image

from snappy.ocr.base import OcrEngine
from snappy.ocr.models import ModelChoice, resolve_model, validate_model_dir
from snappy.ocr.options import PaddleOcrOptions, resolve_threads
from snappy.regions.region import Region

log = logging.getLogger(__name__)


class PaddleOcrEngine(OcrEngine):
    """PaddleOCR's text detection + recognition pipeline (no orientation/unwarping steps)."""

    name = "paddle"

    def __init__(self, options: PaddleOcrOptions | None = None):
        self.options = opts = options or PaddleOcrOptions()
        # PaddleX otherwise probes model hosters before loading; we only load local folders.
        os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
        for task, name, folder in (("det", opts.det_model_name, opts.det_model_dir),
                                   ("rec", opts.rec_model_name, opts.rec_model_dir)):
            if folder is not None:  # fail fast on a bad user folder, before provisioning anything
                validate_model_dir(folder, name, task, opts.engine)
        self.det_model: ModelChoice = resolve_model("det", opts.det_model_name, opts.det_model_dir, opts.cache_dir, opts.engine)
        self.rec_model: ModelChoice = resolve_model("rec", opts.rec_model_name, opts.rec_model_dir, opts.cache_dir, opts.engine)
        kwargs: dict[str, Any] = {
            "text_detection_model_name": self.det_model.name,
            "text_detection_model_dir": self.det_model.folder and str(self.det_model.folder),
            "text_recognition_model_name": self.rec_model.name,
            "text_recognition_model_dir": self.rec_model.folder and str(self.rec_model.folder),
            "text_recognition_batch_size": opts.rec_batch_size,
            "use_doc_orientation_classify": False,
            "use_doc_unwarping": False,
            "use_textline_orientation": False,
            "text_det_limit_side_len": opts.det_limit_side_len,
            "text_det_limit_type": opts.det_limit_type,
            "text_det_thresh": opts.det_thresh,
            "text_det_box_thresh": opts.det_box_thresh,
            "text_det_unclip_ratio": opts.det_unclip_ratio,
            "text_rec_score_thresh": opts.rec_score_thresh,
            "return_word_box": opts.level == "word",
            "engine": opts.engine,
            "device": opts.device,
        }
        threads = resolve_threads(opts.cpu_threads)
        if threads is not None:
            if opts.engine == "onnxruntime":  # PaddleOCR's cpu_threads only reaches PaddlePaddle's engine
                kwargs["engine_config"] = {"onnxruntime": {"intra_op_num_threads": threads}}
            else:
                kwargs["cpu_threads"] = threads
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        from paddleocr import PaddleOCR

        self._rec = None  # a recogniser alone, for read_lines (built on first use)
        try:
            self._ocr = PaddleOCR(**kwargs)
        except Exception as e:  # PaddleX raises bare Exceptions for unknown/unreachable models
            where = {m.name: str(m.folder) if m.folder else "resolved by PaddleX (no local folder given)"
                     for m in (self.det_model, self.rec_model)}
            raise RuntimeError(
                f"PaddleOCR could not load its models {where} with engine={opts.engine!r}: {e}. "
                "Offline, pass det_model_dir/rec_model_dir folders (inference.onnx + inference.yml) "
                "or use the bundled PP-OCRv6 small models (the default)."
            ) from e

    def recognize(self, image: Image.Image) -> list[Region]:
        size = image.size  # (width, height): PaddleOCR returns boxes in these pixels
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # [H, W, 3]; PaddleX reads arrays as BGR
        res = self._ocr.predict(bgr)[0]
        polys, texts, scores = res["rec_polys"], res["rec_texts"], res["rec_scores"]
        if self.options.level == "line":
            return [
                Region.from_polygon(np.asarray(p, dtype=np.float64), size, text=t, confidence=_unit(s), level="line")
                for p, t, s in zip(polys, texts, scores)
                if t.strip()
            ]
        # Word level: CTC-aligned word boxes within each line; words share their line's score.
        regions = []
        for words, boxes, score in zip(res["text_word"], res["text_word_region"], scores):
            for word, poly in zip(words, boxes):
                if word.strip():
                    regions.append(Region.from_polygon(np.asarray(poly, dtype=np.float64), size, text=word.strip(),
                                                       confidence=_unit(score), level="word"))
        return regions


    def read_lines(self, crops: list[Image.Image]) -> list[str]:
        """Recognition only (PaddleOCR's ``TextRecognition`` with this engine's recognition model,
        built on first use), one tight line crop at a time: no detection."""
        if self._rec is None:
            from paddleocr import TextRecognition

            kwargs = {"model_name": self.rec_model.name, "engine": self.options.engine,
                      "model_dir": self.rec_model.folder and str(self.rec_model.folder), "device": self.options.device}
            threads = resolve_threads(self.options.cpu_threads)
            if threads is not None and self.options.engine == "onnxruntime":
                kwargs["engine_config"] = {"onnxruntime": {"intra_op_num_threads": threads}}
            self._rec = TextRecognition(**{k: v for k, v in kwargs.items() if v is not None})
        out = []
        for crop in crops:
            bgr = np.ascontiguousarray(np.asarray(crop.convert("RGB"))[:, :, ::-1])
            out.append(self._rec.predict([bgr])[0]["rec_text"])
        return out


def _unit(score: float) -> float:
    return float(min(max(float(score), 0.0), 1.0))
