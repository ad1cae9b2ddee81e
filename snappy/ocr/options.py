"""Typed per-engine OCR options (one dataclass per engine, told apart by ``kind``).

In the style of Docling's OCR options: each engine has its own option set and a ``kind``
literal naming it. ``parse_ocr_options`` turns a name (``"paddle"``), a dict
(``{"kind": "rapid", "level": "word"}``) or an options object into an options object.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, Union

OcrLevel = Literal["line", "word"]
OCR_LEVELS: tuple[str, ...] = ("line", "word")
_THREAD_KNOBS = ("cpu_threads", "num_threads", "threads")  # paddle, rapid, tesseract


def resolve_threads(n: int | None) -> int | None:
    """An engine's thread option as passed on: None -> 1 (snappy's default), 0 -> None (the
    library's own default, all cores), N -> N."""
    if n is None:
        return 1
    return n or None


@dataclass(frozen=True)
class _BaseOcrOptions:
    kind: ClassVar[str]
    level: OcrLevel = "line"  # region granularity: text lines or single words

    def __post_init__(self) -> None:
        if self.level not in OCR_LEVELS:
            raise ValueError(f"{self.kind} OCR: unknown level {self.level!r}; expected one of {OCR_LEVELS}")
        for knob in _THREAD_KNOBS:
            n = getattr(self, knob, None)
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
                raise ValueError(f"{self.kind} OCR: {knob} must be an integer >= 0 (0: all cores), got {n!r}")
        batch = getattr(self, "rec_batch_size", None)
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise ValueError(f"{self.kind} OCR: rec_batch_size must be an integer >= 1, got {batch!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with ``kind`` (round-trips through ``parse_ocr_options``)."""
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class PaddleOcrOptions(_BaseOcrOptions):
    """PaddleOCR 3.x pipeline (text detection + recognition), offline on ONNX Runtime.

    Models: by default the PP-OCRv6 small det/rec models bundled in the ``rapidocr`` wheel,
    provisioned into PaddleOCR model folders in the cache (see ``snappy.ocr.models``).
    A ``*_model_dir`` is a user folder (``inference.onnx`` + ``inference.yml``); a
    ``*_model_name`` alone (e.g. ``"PP-OCRv5_server_det"``) is resolved by PaddleX from its
    own model cache (``~/.paddlex/official_models``).
    """

    kind: ClassVar[Literal["paddle"]] = "paddle"
    det_model_name: str | None = None
    det_model_dir: str | None = None
    rec_model_name: str | None = None
    rec_model_dir: str | None = None
    engine: str = "onnxruntime"  # PaddleX inference engine ("paddle" needs paddlepaddle)
    device: str | None = None  # e.g. "cpu", "gpu:0"; None: PaddleX's default
    # Detector input size: longest side capped at 960 px keeps Letter pages fast; None keeps
    # the pipeline default (shortest side >= 64, i.e. about full resolution).
    det_limit_side_len: int | None = 960
    det_limit_type: Literal["max", "min"] | None = "max"
    det_thresh: float | None = None  # DB pixel threshold (model default 0.3)
    det_box_thresh: float | None = None  # DB box score threshold (model default 0.6)
    det_unclip_ratio: float | None = None  # DB box expansion (model default 1.5)
    rec_score_thresh: float = 0.0  # drop lines recognised below this confidence
    # Lines per recognition call; None: PaddleOCR's default (6). 1 costs 10-20 % less CPU, but
    # lines then lose the padding that batching adds and a line-final character is dropped now
    # and then (docs/ocr.md).
    rec_batch_size: int | None = None
    # ONNX Runtime intra-op threads (engine "onnxruntime"; PaddlePaddle's CPU threads otherwise).
    # None: 1 thread, the least CPU per page (docs/ocr.md); 0: the runtime's default (all cores).
    cpu_threads: int | None = None
    cache_dir: str | None = None  # where bundled models are provisioned; None: $SNAPPY_CACHE or ~/.cache/snappy


@dataclass(frozen=True)
class RapidOcrOptions(_BaseOcrOptions):
    """rapidocr 3.x with its bundled PP-OCRv6 small ONNX models (fully offline)."""

    kind: ClassVar[Literal["rapid"]] = "rapid"
    det_limit_side_len: int = 960  # detector input: longest side capped (limit_type "max")
    det_limit_type: Literal["max", "min"] = "max"
    use_cls: bool = False  # text-angle classifier: off (rendered pages are upright; on, it flips upright lines)
    rec_batch_size: int = 6  # lines per recognition call (1: less CPU and memory, a few more errors; docs/ocr.md)
    text_score: float = 0.5  # drop lines recognised below this confidence
    box_thresh: float | None = None  # DB box score threshold (rapidocr default 0.5)
    unclip_ratio: float | None = None  # DB box expansion (rapidocr default 1.6)
    det_model_path: str | None = None  # user ONNX models; None: the bundled ones
    rec_model_path: str | None = None
    rec_keys_path: str | None = None
    # ONNX Runtime intra-op threads. None: 1 thread, the least CPU per page (docs/ocr.md);
    # 0: the runtime's default (all cores).
    num_threads: int | None = None
    # ONNX Runtime's CPU memory arena. rapidocr turns it off; on, the same results cost ~15 % less
    # CPU on dense pages at the same peak memory (docs/ocr.md).
    mem_arena: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)  # extra raw rapidocr params ("Det.thresh": ...)


@dataclass(frozen=True)
class TesseractOcrOptions(_BaseOcrOptions):
    """Tesseract (needs the ``tesseract`` binary; snappy runs it once per page).

    Word boxes are tesseract's own; line boxes are the union of the words sharing a
    (block, paragraph, line) number.
    """

    kind: ClassVar[Literal["tesseract"]] = "tesseract"
    lang: str = "eng"
    psm: int = 3  # page segmentation mode; 11 (sparse text) also finds text inside bordered boxes
    oem: int | None = None  # OCR engine mode; None: tesseract's default
    min_confidence: float = 0.0  # drop words below this confidence (0..1)
    tesseract_cmd: str | None = None  # path to the binary; None: found on PATH
    extra_config: str = ""  # appended to the tesseract command line
    timeout_s: float = 0.0  # per page; 0: no limit
    # OpenMP threads of the tesseract process (OMP_THREAD_LIMIT). None: 1 thread, which reads the
    # same text for a fraction of the CPU (docs/ocr.md); 0: tesseract's default (all cores).
    threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.psm <= 13:
            raise ValueError(f"tesseract OCR: psm must be in 0..13, got {self.psm}")


@dataclass(frozen=True)
class NoOcrOptions(_BaseOcrOptions):
    """No OCR: every page gets no regions."""

    kind: ClassVar[Literal["none"]] = "none"


OcrOptions = Union[PaddleOcrOptions, RapidOcrOptions, TesseractOcrOptions, NoOcrOptions]

OPTIONS_BY_KIND: dict[str, type] = {
    cls.kind: cls for cls in (PaddleOcrOptions, RapidOcrOptions, TesseractOcrOptions, NoOcrOptions)
}
_ALIASES = {"paddleocr": "paddle", "rapidocr": "rapid", "tesserocr": "tesseract", "pytesseract": "tesseract", "off": "none"}
DEFAULT_OCR = "paddle"


def _kind(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in OPTIONS_BY_KIND:
        raise ValueError(f"unknown OCR engine {name!r}; expected one of {sorted(OPTIONS_BY_KIND)}")
    return key


def parse_ocr_options(spec: "str | Mapping[str, Any] | OcrOptions | None" = None, **overrides: Any) -> OcrOptions:
    """Options from a name, a dict with ``kind``, or an options object (+ field overrides).

    ``None`` means the default engine (PaddleOCR). Unknown fields raise a ``ValueError``
    naming the engine and its valid fields.
    """
    if spec is None:
        spec = DEFAULT_OCR
    if isinstance(spec, _BaseOcrOptions):
        return dataclasses.replace(spec, **overrides) if overrides else spec  # type: ignore[return-value]
    if isinstance(spec, str):
        kind, fields = _kind(spec), {}
    elif isinstance(spec, Mapping):
        fields = dict(spec)
        kind = _kind(str(fields.pop("kind", DEFAULT_OCR)))
    else:
        raise TypeError(f"OCR options must be a name, a dict or an options object, got {type(spec).__name__}")
    fields.update(overrides)
    cls = OPTIONS_BY_KIND[kind]
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise ValueError(f"{kind} OCR: unknown option(s) {unknown}; valid options are {sorted(valid)}")
    return cls(**fields)
