"""OCR engines: real OCR on generated pages with known text boxes, options, model folders."""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont

from snappy.ocr import (
    NoOcr,
    OcrModelError,
    PaddleOcrOptions,
    RapidOcrOptions,
    TesseractOcrOptions,
    make_ocr,
    parse_ocr_options,
    provision_bundled_model,
    validate_model_dir,
)
from snappy.ocr.models import BUNDLED_MODELS, resolve_model
from snappy.ocr.tesseract import tesseract_available
from snappy.eval.metrics import iou_matrix

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
PAGE = (800, 600)  # non-square on purpose: a swapped x/y or a wrong normaliser shows up
SCALE = 1.6  # the rescaled copy: 1280x960, above the 960 px detector limit
# (text, top-left x, y, font px): spread over the page, right/bottom included.
LINES = [
    ("Quarterly revenue grew strongly", 40, 50, 30),
    ("Invoice 4711 overdue", 430, 250, 28),
    ("Zebra crossing near station", 150, 500, 26),
]


def _iou(a, b) -> float:
    return float(iou_matrix([a], [b])[0, 0])


def _norm(s: str) -> str:
    return re.sub(r"[^0-9a-z]", "", s.lower())


def _ink_box(text: str, xy, font) -> tuple[int, int, int, int]:
    """Exact ink box of ``text`` drawn at ``xy`` (page px), from its rendered pixels."""
    mask = Image.new("L", PAGE, 0)
    ImageDraw.Draw(mask).text(xy, text, font=font, fill=255)
    return mask.getbbox()


def _page():
    """An 800x600 page, its known line boxes and word boxes (page px, ink-tight).

    A word's known box spans its own ink horizontally and its line's ink vertically (OCR
    boxes cover the line height, not each glyph's ink: "revenue" has no ascenders).
    """
    img = Image.new("RGB", PAGE, "white")
    draw = ImageDraw.Draw(img)
    lines, words = {}, {}
    for text, x, y, px in LINES:
        font = ImageFont.truetype(FONT, px)
        draw.text((x, y), text, font=font, fill="black")
        lines[text] = _ink_box(text, (x, y), font)
        _, ly0, _, ly1 = lines[text]
        for m in re.finditer(r"\S+", text):
            wx = x + draw.textlength(text[: m.start()], font=font)
            bx0, _, bx1, _ = _ink_box(m.group(), (wx, y), font)
            words[m.group()] = (bx0, ly0, bx1, ly1)
    return img, lines, words


@pytest.fixture(scope="module")
def page():
    return _page()


@pytest.fixture(scope="module")
def ocr_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("snappy-cache")


def _engine_opts(name: str, cache: Path, level: str):
    if name == "paddle":
        return PaddleOcrOptions(level=level, cache_dir=str(cache))
    if name == "rapid":
        return RapidOcrOptions(level=level)
    if not tesseract_available():
        pytest.skip("tesseract binary not installed")
    return TesseractOcrOptions(level=level)


ENGINES = ["paddle", "rapid", "tesseract"]
_engines: dict = {}  # (name, level) -> engine, built once per test module (models load once)


@pytest.fixture(scope="module", autouse=True)
def _drop_engines():
    yield
    _engines.clear()


def _engine(name: str, level: str, cache: Path):
    key = (name, level)
    if key not in _engines:
        _engines[key] = make_ocr(_engine_opts(name, cache, level))
    return _engines[key]


_results: dict = {}  # (name, level, scale) -> regions


def _run(name: str, level: str, cache: Path, img: Image.Image, scale: float = 1.0):
    key = (name, level, scale)
    if key not in _results:
        if scale != 1.0:
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
        _results[key] = (img.size, _engine(name, level, cache).recognize(img))
    return _results[key]


def _check_regions(regions, size, level):
    assert regions, "no regions found"
    for r in regions:
        assert r.page_size == size
        assert r.level == level
        assert 0.0 <= r.confidence <= 1.0
        x0, y0, x1, y1 = r.bbox
        assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]


def _best(regions, word, truth):
    cands = [r for r in regions if _norm(word) in _norm(r.text)]
    assert cands, f"{word!r} not found in {[r.text for r in regions]}"
    return max(cands, key=lambda r: _iou(r.bbox, truth))


@pytest.mark.parametrize("name", ENGINES)
def test_lines_found_at_known_boxes(name, page, ocr_cache):
    img, lines, _ = page
    size, regions = _run(name, "line", ocr_cache, img)
    _check_regions(regions, size, "line")
    for text, box in lines.items():
        for word in text.split():
            r = _best(regions, word, box)
            assert _iou(r.bbox, box) >= 0.5, (word, r.bbox, box)
            assert r.confidence > 0.5
    found = " ".join(_norm(r.text) for r in regions)
    for text in lines:
        assert _norm(text) in found.replace(" ", "")


@pytest.mark.parametrize("name", ENGINES)
def test_words_found_at_known_boxes(name, page, ocr_cache):
    img, _, words = page
    size, regions = _run(name, "word", ocr_cache, img)
    _check_regions(regions, size, "word")
    for word, box in words.items():
        r = _best(regions, word, box)
        assert _norm(r.text) == _norm(word), (word, r.text)
        assert _iou(r.bbox, box) >= 0.5, (word, r.bbox, box)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        assert r.bbox[0] <= cx <= r.bbox[2] and r.bbox[1] <= cy <= r.bbox[3]
        if name == "tesseract":  # tesseract word boxes are tight: they hold the word's ink
            tol = 2.0
            assert r.bbox[0] <= box[0] + tol and r.bbox[2] >= box[2] - tol, (word, r.bbox, box)
    if name in ("paddle", "rapid"):  # PP-OCR gives 4-point polygons
        assert all(r.polygon is not None and len(r.polygon) == 4 for r in regions)


@pytest.mark.parametrize("name", ENGINES)
def test_boxes_scale_with_the_image(name, page, ocr_cache):
    img, lines, _ = page
    _, base = _run(name, "line", ocr_cache, img)
    size, scaled = _run(name, "line", ocr_cache, img, SCALE)
    assert size == (1280, 960)
    _check_regions(scaled, size, "line")
    for text, box in lines.items():
        word = text.split()[0]
        truth = tuple(v * SCALE for v in box)
        r = _best(scaled, word, truth)
        assert _iou(r.bbox, truth) >= 0.5, (word, r.bbox, truth)
        b = _best(base, word, box)
        assert _iou(r.bbox, tuple(v * SCALE for v in b.bbox)) >= 0.7
        np.testing.assert_allclose(r.bbox_norm, b.bbox_norm, atol=0.01)


def test_blank_page_gives_no_regions(ocr_cache):
    blank = Image.new("RGB", (320, 240), "white")
    assert _engine("rapid", "line", ocr_cache).recognize(blank) == []
    assert _engine("paddle", "line", ocr_cache).recognize(blank) == []


# --- options and factory -------------------------------------------------------------


def test_parse_options_from_names_dicts_and_objects():
    assert isinstance(parse_ocr_options(), PaddleOcrOptions)  # paddle is the default
    assert isinstance(parse_ocr_options("rapidocr"), RapidOcrOptions)
    assert isinstance(parse_ocr_options(" Tesseract "), TesseractOcrOptions)
    o = parse_ocr_options({"kind": "rapid", "level": "word", "det_limit_side_len": 1280})
    assert (o.kind, o.level, o.det_limit_side_len) == ("rapid", "word", 1280)
    assert parse_ocr_options(o.to_dict()) == o  # round trip
    t = parse_ocr_options("tesseract", psm=11)
    assert t.psm == 11 and parse_ocr_options(t, level="word").level == "word"
    p = parse_ocr_options({"kind": "paddle", "det_model_name": "PP-OCRv5_server_det"})
    assert p.det_model_name == "PP-OCRv5_server_det" and p.engine == "onnxruntime"


@pytest.mark.parametrize(
    "spec, match",
    [
        ("easyocr", "unknown OCR engine 'easyocr'"),
        ({"kind": "rapid", "lang": "en"}, r"rapid OCR: unknown option\(s\) \['lang'\]"),
        ({"kind": "paddle", "level": "block"}, "unknown level 'block'"),
        ({"kind": "tesseract", "psm": 14}, "psm must be in 0..13"),
        ({"kind": "rapid", "num_threads": -1}, "num_threads must be an integer >= 0"),
        ({"kind": "paddle", "cpu_threads": 1.5}, "cpu_threads must be an integer >= 0"),
        ({"kind": "tesseract", "threads": -2}, "threads must be an integer >= 0"),
        ({"kind": "paddle", "rec_batch_size": 0}, "rec_batch_size must be an integer >= 1"),
    ],
)
def test_parse_options_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_ocr_options(spec)


def test_make_ocr_none_and_kinds():
    engine = make_ocr("none")
    assert isinstance(engine, NoOcr) and engine(Image.new("RGB", (50, 40))) == []
    assert {c.kind for c in (PaddleOcrOptions, RapidOcrOptions, TesseractOcrOptions)} == {"paddle", "rapid", "tesseract"}
    with pytest.raises(FileNotFoundError, match="det_model_path"):
        make_ocr("rapid", det_model_path="/nonexistent/det.onnx")


# --- CPU settings (docs/ocr.md): one thread, recognition batches of 1 --------------------


def test_cpu_defaults_and_resolution():
    from snappy.ocr.options import resolve_threads
    from snappy.ocr.rapid import rapidocr_params

    assert (PaddleOcrOptions().cpu_threads, RapidOcrOptions().num_threads, TesseractOcrOptions().threads) == (None,) * 3
    assert [resolve_threads(n) for n in (None, 0, 3)] == [1, None, 3]  # None: 1 thread; 0: the library's default
    assert PaddleOcrOptions().rec_batch_size is None and RapidOcrOptions().rec_batch_size == 6
    assert RapidOcrOptions().use_cls is False and RapidOcrOptions().mem_arena is True
    params = rapidocr_params(RapidOcrOptions())
    assert params["EngineConfig.onnxruntime.intra_op_num_threads"] == 1 and params["Rec.rec_batch_num"] == 6
    assert params["EngineConfig.onnxruntime.enable_cpu_mem_arena"] is True
    params = rapidocr_params(RapidOcrOptions(num_threads=0, rec_batch_size=1, mem_arena=False))
    assert "EngineConfig.onnxruntime.intra_op_num_threads" not in params and params["Rec.rec_batch_num"] == 1
    assert params["EngineConfig.onnxruntime.enable_cpu_mem_arena"] is False


@pytest.fixture
def ort_threads(monkeypatch):
    """Records (model file, intra_op_num_threads, enable_cpu_mem_arena) of every ONNX Runtime session created."""
    import onnxruntime as ort

    seen: list = []
    init = ort.InferenceSession.__init__

    def record(self, path_or_bytes, sess_options=None, *args, **kwargs):
        path = Path(str(path_or_bytes))
        opts = sess_options or ort.SessionOptions()
        seen.append((f"{path.parent.name}/{path.name}", opts.intra_op_num_threads, opts.enable_cpu_mem_arena))
        return init(self, path_or_bytes, sess_options, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "__init__", record)
    return seen


def test_paddle_threads_and_batch_reach_paddleocr(monkeypatch, ocr_cache):
    """PaddleOCR's own cpu_threads never reaches ONNX Runtime: snappy passes engine_config."""
    import paddleocr

    calls: list = []

    class Fake:
        def __init__(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setattr(paddleocr, "PaddleOCR", Fake)
    make_ocr("paddle", cache_dir=str(ocr_cache))
    make_ocr("paddle", cache_dir=str(ocr_cache), cpu_threads=3, rec_batch_size=1)
    make_ocr("paddle", cache_dir=str(ocr_cache), cpu_threads=0)
    make_ocr("paddle", cache_dir=str(ocr_cache), engine="paddle")
    default, three, all_cores, static = calls
    assert default["engine_config"] == {"onnxruntime": {"intra_op_num_threads": 1}}
    assert "text_recognition_batch_size" not in default and "cpu_threads" not in default  # batch: PaddleOCR's 6
    assert three["engine_config"] == {"onnxruntime": {"intra_op_num_threads": 3}}
    assert three["text_recognition_batch_size"] == 1
    assert "engine_config" not in all_cores and "cpu_threads" not in all_cores
    assert static["cpu_threads"] == 1 and "engine_config" not in static  # PaddlePaddle's engine takes cpu_threads


def test_paddle_onnx_sessions_get_the_thread_count(ort_threads, ocr_cache, page):
    engine = make_ocr("paddle", cache_dir=str(ocr_cache), cpu_threads=2)
    runs = sorted(x for x in ort_threads if x[0].endswith("/inference.onnx"))  # not provisioning's metadata read
    assert runs == [("PP-OCRv6_small_det/inference.onnx", 2, True), ("PP-OCRv6_small_rec/inference.onnx", 2, True)]
    img, lines, _ = page
    found = "".join(_norm(r.text) for r in engine.recognize(img))
    assert all(_norm(text) in found for text in lines)


def test_rapid_onnx_sessions_get_the_thread_count(ort_threads, page):
    img, lines, _ = page
    engine = make_ocr("rapid")  # rapidocr loads its models on the first page
    found = "".join(_norm(r.text) for r in engine.recognize(img))
    assert all(_norm(text) in found for text in lines)
    assert sorted(ort_threads) == [("models/PP-OCRv6_det_small.onnx", 1, True), ("models/PP-OCRv6_rec_small.onnx", 1, True)]
    assert engine._ocr.text_rec.rec_batch_num == 6
    ort_threads.clear()
    engine = make_ocr("rapid", num_threads=0, mem_arena=False, rec_batch_size=1)
    engine.recognize(img)
    assert {(n, arena) for _, n, arena in ort_threads} == {(0, False)}  # 0: ONNX Runtime's own default (all cores)
    assert engine._ocr.text_rec.rec_batch_num == 1


def test_tesseract_thread_limit_reaches_the_process(tmp_path, monkeypatch, page):
    if not tesseract_available():
        pytest.skip("tesseract binary not installed")
    import shutil

    log = tmp_path / "omp.log"
    wrapper = tmp_path / "tesseract-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "limit=$OMP_THREAD_LIMIT" >> "{log}"\nexec "{shutil.which("tesseract")}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    img, lines, _ = page
    for threads, expect in ((None, "limit=1"), (2, "limit=2"), (0, "limit=")):
        log.unlink(missing_ok=True)
        regions = make_ocr("tesseract", tesseract_cmd=str(wrapper), threads=threads).recognize(img)
        assert log.read_text().splitlines()[-1] == expect  # the recognition call (the last one logged)
        found = "".join(_norm(r.text) for r in regions)
        assert all(_norm(text) in found for text in lines)
    assert "OMP_THREAD_LIMIT" not in os.environ  # this process is left alone


# --- PaddleOCR model folders -----------------------------------------------------------


def test_provisioning_creates_valid_folders_idempotently_and_race_safely(tmp_path):
    results: list = []
    errors: list = []

    def work():
        try:
            results.append(provision_bundled_model("PP-OCRv6_small_rec", tmp_path))
        except Exception as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]  # racing writers
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    folder = results[0]
    assert all(r == folder for r in results)
    assert folder.parent.parent.parent == tmp_path  # <cache>/paddleocr-models/rapidocr-<v>/<name>
    assert sorted(p.name for p in folder.parent.iterdir()) == ["PP-OCRv6_small_rec"]  # no temp leftovers
    assert validate_model_dir(folder, "PP-OCRv6_small_rec", "rec") == "PP-OCRv6_small_rec"
    cfg = yaml.safe_load((folder / "inference.yml").read_text(encoding="utf-8"))
    chars = cfg["PostProcess"]["character_dict"]
    assert cfg["Global"]["model_name"] == "PP-OCRv6_small_rec"
    assert cfg["PostProcess"]["name"] == "CTCLabelDecode" and len(chars) == 18708 and "A" in chars
    assert (folder / "inference.onnx").stat().st_size > 1_000_000

    mtime = (folder / "inference.onnx").stat().st_mtime_ns
    assert provision_bundled_model("PP-OCRv6_small_rec", tmp_path) == folder  # idempotent: no rewrite
    assert (folder / "inference.onnx").stat().st_mtime_ns == mtime

    det = provision_bundled_model("PP-OCRv6_small_det", tmp_path)
    dcfg = yaml.safe_load((det / "inference.yml").read_text(encoding="utf-8"))
    assert dcfg["Global"]["model_name"] == "PP-OCRv6_small_det"
    assert dcfg["PostProcess"]["name"] == "DBPostProcess"
    assert any("DetResizeForTest" in op for op in dcfg["PreProcess"]["transform_ops"])

    (folder / "inference.onnx").write_bytes(b"truncated")  # a damaged folder is rebuilt
    assert provision_bundled_model("PP-OCRv6_small_rec", tmp_path) == folder
    assert (folder / "inference.onnx").stat().st_size > 1_000_000


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPPY_CACHE", str(tmp_path / "envcache"))
    choice = resolve_model("det", None, None)
    assert choice.name == "PP-OCRv6_small_det"
    assert choice.folder is not None and str(choice.folder).startswith(str(tmp_path / "envcache"))
    # A name PaddleX must resolve itself (no bundled copy) is passed through without a folder.
    assert resolve_model("det", "PP-OCRv5_server_det", None).folder is None
    assert set(BUNDLED_MODELS) == {"PP-OCRv6_small_det", "PP-OCRv6_small_rec"}


def test_bad_user_model_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPPY_CACHE", str(tmp_path / "cache"))
    missing = tmp_path / "nope"
    with pytest.raises(OcrModelError, match=r"nope.*does not exist"):
        make_ocr("paddle", det_model_dir=str(missing))

    bad = tmp_path / "my_rec"
    bad.mkdir()
    (bad / "inference.yml").write_text(yaml.safe_dump({"Global": {"model_name": "PP-OCRv5_server_rec"}}))
    with pytest.raises(OcrModelError) as e:
        make_ocr("paddle", rec_model_dir=str(bad))
    msg = str(e.value)
    assert not (tmp_path / "cache").exists()  # failed before provisioning the (good) det model
    assert str(bad) in msg and "inference.onnx is missing" in msg and "character_dict" in msg

    (bad / "inference.onnx").write_bytes(b"x")
    with pytest.raises(OcrModelError, match="names model 'PP-OCRv5_server_rec' but 'PP-OCRv5_mobile_rec' was requested"):
        validate_model_dir(bad, "PP-OCRv5_mobile_rec", "det")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OcrModelError, match=r"empty.*inference\.onnx is missing.*inference\.yml is missing"):
        validate_model_dir(empty, None, "det")


def test_user_model_folder_is_used(tmp_path, ocr_cache, page):
    """A user folder (here a copy of the provisioned models) is validated and runs."""
    import shutil

    src = provision_bundled_model("PP-OCRv6_small_det", ocr_cache)
    user = tmp_path / "cluster-models" / "det"
    shutil.copytree(src, user)
    choice = resolve_model("det", None, user)
    assert choice.name == "PP-OCRv6_small_det" and choice.folder == user
    engine = make_ocr("paddle", det_model_dir=str(user), cache_dir=str(ocr_cache))
    assert engine.det_model.folder == user
    img, lines, _ = page
    found = "".join(_norm(r.text) for r in engine.recognize(img))
    assert all(_norm(text) in found for text in lines)


@pytest.mark.slow
@pytest.mark.parametrize("name", ENGINES)
def test_letter_page_at_200_dpi(name, ocr_cache, tmp_path):
    """A full synthetic Letter page (1700x2200): every word read, every line located."""
    import random

    from snappy.testing import synth
    from snappy.documents.pages import RenderOptions, load_pages

    spage = synth.text_page(synth.LETTER, ["The Zephyr turbine produced forty megawatts during the harbor trial."],
                            random.Random(0))
    path = synth.SynthDoc("letter", [spage]).write_pdf(tmp_path / "letter.pdf")
    img = load_pages(path, RenderOptions(dpi=200))[0].image
    assert img.size == (1700, 2200)
    regions = _engine(name, "line", ocr_cache).recognize(img)
    _check_regions(regions, img.size, "line")
    read = {_norm(w) for r in regions for w in r.text.split()}
    for line in spage.lines:
        assert all(_norm(w) in read for w in line.text.split()), line.text
        box = line.bbox_px(200)
        assert max(_iou(r.bbox, box) for r in regions) >= 0.5, line.text


@pytest.mark.parametrize("name", ENGINES)
def test_read_lines_reads_tight_line_crops(name, page, ocr_cache):
    """read_lines: the text of line crops as an OCR detector would box them (what the text layer's
    OCR check sends); paddle and rapid skip detection, tesseract uses the padded default."""
    img, lines, _ = page
    crops, texts = [], []
    for text, (x0, y0, x1, y1) in lines.items():
        h = y1 - y0
        crops.append(img.crop((int(x0 - 0.15 * h), int(y0 - 0.25 * h), int(x1 + 0.15 * h), int(y1 + 0.25 * h))))
        texts.append(text)
    read = _engine(name, "line", ocr_cache).read_lines(crops)
    assert len(read) == len(texts)
    for text, got in zip(texts, read):
        assert _norm(got) == _norm(text), (text, got)
