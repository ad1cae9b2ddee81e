"""Regions from the PDF text layer, and when a page needs OCR at all.

Most PDFs carry their text with exact glyph positions: reading it with pdfium costs milliseconds, OCR
costs seconds a page. :func:`text_layer_regions` does it for one page: :func:`read_text_layer` reads
every character, :func:`find_hidden` drops what a reader cannot see (render mode 3/7, no alpha, under
an image or a box, the colour of what is beneath it, under 2 pt, off the page), :func:`layer_lines`
builds line regions shaped like an OCR engine's, and :func:`decide` (pure: arrays and counts in,
no pdfium) says what OCR the page still needs:

* ``none``: the text layer is the page's text (or the page is blank: no characters, no ink).
* ``full``: OCR the whole page: (almost) no visible characters but ink (a scan, text drawn as
  outlines); many characters without a valid unicode (private use, U+FFFD, control codes, pdfium map
  errors); most text invisible (a scanner's own OCR layer: OCR again rather than trust it); images
  without text over most of the page; more characters than :data:`MAX_CHARS`.
* ``areas``: OCR only ``areas``, the pixel boxes of images of meaningful size that show no text-layer
  text (a pasted screenshot); the text layer gives the rest.

A broken ToUnicode map (every "a" read as "b") passes all of these: :func:`verify_with_ocr` OCRs a few
line crops once per document and compares the texts (:func:`compare_texts` is the pure part).

Pixel mapping (:class:`PageGeometry`). pdfium's boxes are PDF user space (points, y up), neither
relative to the page box nor rotated. ``render()`` draws the page box ``get_bbox()`` = (x0, y0, x1, y1)
(CropBox ∩ MediaBox) turned clockwise by /Rotate into W = ceil(w·scale) × H = ceil(h·scale) pixels,
w × h being the turned size. A point (x, y) becomes (u, v) = (x − x0, y1 − y) (top-left origin), is
turned: 0°: (u, v), 90°: (h0 − v, u), 180°: (w0 − u, h0 − v), 270°: (v, w0 − u) (w0 × h0 the unturned
size), then scaled by W/w and H/h, not by ``scale``: the ceil makes them differ.

PDFium is not thread-safe: call all of this from one thread per process (as snappy renders).
"""
from __future__ import annotations

import ctypes
import functools
import math
import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Callable, Literal, Sequence

import numpy as np
from PIL import Image, ImageOps
from scipy.sparse.csgraph import connected_components

from snappy.regions.region import Region

Action = Literal["none", "full", "areas"]
Mode = Literal["auto", "off", "only"]
MODES: tuple[str, ...] = ("auto", "off", "only")

# ---------------------------------------------------------------------- constants
# Line boxes shaped like an OCR line box of the same font size. Measured with snappy.ocr.make_ocr("rapid")
# (PP-OCRv6 small) on 146 generated lines (Helvetica, Times, Courier, DejaVu Sans and Liberation Serif TTF,
# 7-24 pt, 150 and 200 dpi; `benchmarks/bench_textlayer.py --height`): the box top lies 0.90 em above the
# baseline (p10-p90 0.79-1.03), its bottom 0.36 em below (0.24-0.47): 1.23 em tall; it reaches 0.12-0.13 em
# past the first and last glyph's advance box.
OCR_TOP_EM = 0.90  # line box top above the baseline, in em
OCR_BOTTOM_EM = 0.36  # line box bottom below the baseline, in em
OCR_SIDE_EM = 0.12  # line box padding left and right of the glyphs' advance boxes, in em

MIN_FONT_PT = 2.0  # smaller text is not meant to be read (1-pt hidden text); OCR misses it at any dpi
WORD_GAP_EM = 0.15  # gap between advance boxes that is a word break: spaces are 0.25-0.33 em, kerning < 0.1
CELL_GAP_EM = 1.5  # gap that starts a new line region (columns, table cells), as OCR detectors split
BASELINE_TOL_EM = 0.35  # baselines this close (of the larger font) share a row: superscripts rise ~0.33 em
OVERLAP_CELL_PT = 2.0  # grid for "is this character over another object" (find_hidden)
DUPLICATE_EM = 0.15  # same character drawn again within this distance: fake bold, double printing
CUT_TIE = 0.9  # reading order: gaps at least this share of the widest are cut together (even line spacing)
MAX_CHARS = 250_000  # characters read per page (a dense page has ~7k; 250k read in ~1 CPU-s); more: OCR

# Hidden text. Text is compared with a render of the page without its text objects (find_hidden).
INK_DIFF = 40  # colour difference (0-255, any channel) that is ink in that comparison; anti-aliasing noise is < 10
MIN_INK_PX = 2  # a visible character changes at least this many pixels of its tight box ...
MIN_INK_SHARE = 0.03  # ... and this share of them (edges of neighbouring glyphs spill a pixel or two)
NEAR_WHITE = 235  # fill channels all above this: text that vanishes on a white page
LOW_ALPHA = 64  # fill alpha below this: text that may be too faint to see, checked by rendering

# Decision (decide); shares are of the page's ink characters (not spaces).
MIN_GOOD_CHARS = 10  # fewer visible valid characters: the page has no usable text layer
INVALID_SHARE_FULL = 0.10  # more invalid unicode than this: text too damaged to index (a few symbols stay below)
INVISIBLE_SHARE_FULL = 0.5  # more render-mode-3/7 text: an OCR layer (scanner sandwich): OCR the image instead
MIN_IMAGE_SIDE_PT = 24.0  # images with a shorter side hold no readable line of text (bullets, rules, icons)
MIN_IMAGE_AREA_SHARE = 0.005  # ... or smaller than this share of the page (a small logo is ~0.8 %)
IMAGE_TEXT_CHARS = 10  # an image with at least this many visible characters on it carries its text
MAX_AREAS = 100  # more separate images without text (tiles of a scan): OCR the page
FULL_AREA_SHARE = 0.5  # OCR areas covering more of the page: OCR the page once instead
STATS_CELL = 4  # page statistics on cells of 4x4 pixels (2 pt at 150 dpi)
INK_LEVEL = 235  # a cell whose mean grey is below this holds ink
BLANK_INK_SHARE = 0.0005  # less ink than this share of cells: a blank page, nothing to OCR
UNEXPLAINED_INK = 0.25  # few characters and more than this share of the ink outside them: OCR the page

# Once-per-document OCR check (verify_with_ocr).
VERIFY_LINES = 3  # line crops OCR'd (median of 3: one odd line cannot decide)
VERIFY_MIN_CHARS = 12  # lines shorter than this say little
VERIFY_WINDOW_CHARS = 32  # longer lines: only their first words, cut at a space past this many characters.
# The recogniser's cost grows with the crop's width (~0.2 CPU-s for a 100-character line with paddle):
# windows, read by the engine's recogniser alone (OcrEngine.read_lines), bound the check to ~0.2 CPU-s
# a document (paddle or rapid, 3 lines); a wrong map still reads > 80 % wrong.
VERIFY_MAX_CER = 0.35  # median character error rate above this: the text layer is wrong (OCR alone ~0.02-0.1)

# Drop reasons of ink characters, in the order they are tested (code = position; 0 = kept).
DROP_REASONS: tuple[str, ...] = ("", "off_page", "invisible", "transparent", "tiny", "duplicate",
                                 "background", "covered")
_OFF_PAGE, _INVISIBLE, _TRANSPARENT, _TINY, _DUPLICATE, _BACKGROUND, _COVERED = range(1, 8)

_PAGEOBJ_TEXT, _PAGEOBJ_PATH, _PAGEOBJ_IMAGE, _PAGEOBJ_SHADING, _PAGEOBJ_FORM = 1, 2, 3, 4, 5
_ANNOTATION = 0  # obj_kind of an annotation's rectangle
_SPACES = np.array([0x09, 0x20, 0xA0, 0x1680, *range(0x2000, 0x200C), 0x202F, 0x205F, 0x3000, 0xFEFF])


# ---------------------------------------------------------------------- pdfium calls
class _Raw:
    """pdfium functions without ctypes' argument checks (pointers passed as ints): the checked
    bindings cost ~1.5 us a call, these ~0.4 us; a dense page makes ~20k calls."""

    def __init__(self) -> None:
        import pypdfium2.raw as pdfium_c

        try:
            from pypdfium2_raw.bindings import _libs

            lib = _libs["pdfium"]
        except (ImportError, KeyError, AttributeError):  # another packaging: load the same library again
            lib = ctypes.CDLL(_library_path(pdfium_c))
        vp, i, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_double

        def fn(name: str, restype, *argtypes):
            func = lib[name]  # a new function object: pypdfium2's own stays as it is
            func.restype, func.argtypes = restype, argtypes
            return func

        self.count_chars = fn("FPDFText_CountChars", i, vp)
        self.get_text = fn("FPDFText_GetText", i, vp, i, i, vp)
        self.unicode = fn("FPDFText_GetUnicode", ctypes.c_uint, vp, i)
        self.loose_box = fn("FPDFText_GetLooseCharBox", i, vp, i, vp)
        self.char_box = fn("FPDFText_GetCharBox", i, vp, i, vp, vp, vp, vp)
        self.text_object = fn("FPDFText_GetTextObject", vp, vp, i)
        self.map_error = fn("FPDFText_HasUnicodeMapError", i, vp, i)
        self.is_generated = fn("FPDFText_IsGenerated", i, vp, i)
        self.is_hyphen = fn("FPDFText_IsHyphen", i, vp, i)
        self.font_size = fn("FPDFText_GetFontSize", d, vp, i)
        self.matrix = fn("FPDFText_GetMatrix", i, vp, i, vp)
        self.render_mode = fn("FPDFTextObj_GetTextRenderMode", i, vp)
        self.fill_color = fn("FPDFPageObj_GetFillColor", i, vp, vp, vp, vp, vp)
        self.stroke_color = fn("FPDFPageObj_GetStrokeColor", i, vp, vp, vp, vp, vp)
        self.count_objects = fn("FPDFPage_CountObjects", i, vp)
        self.get_object = fn("FPDFPage_GetObject", vp, vp, i)
        self.form_count = fn("FPDFFormObj_CountObjects", i, vp)
        self.form_object = fn("FPDFFormObj_GetObject", vp, vp, ctypes.c_ulong)
        self.obj_type = fn("FPDFPageObj_GetType", i, vp)
        self.obj_bounds = fn("FPDFPageObj_GetBounds", i, vp, vp, vp, vp, vp)
        self.obj_matrix = fn("FPDFPageObj_GetMatrix", i, vp, vp)
        self.get_active = fn("FPDFPageObj_GetIsActive", i, vp, vp)
        self.set_active = fn("FPDFPageObj_SetIsActive", i, vp, i)
        self.render = fn("FPDF_RenderPageBitmap", None, vp, vp, i, i, i, i, i, i)
        self.annot_count = fn("FPDFPage_GetAnnotCount", i, vp)
        self.get_annot = fn("FPDFPage_GetAnnot", vp, vp, i)
        self.annot_rect = fn("FPDFAnnot_GetRect", i, vp, vp)
        self.close_annot = fn("FPDFPage_CloseAnnot", None, vp)
        self.annot_flag = int(pdfium_c.FPDF_ANNOT)
        self.bgr = int(pdfium_c.FPDFBitmap_BGR)


def _library_path(pdfium_c) -> str:
    import pathlib

    return str(next(pathlib.Path(pdfium_c.__file__).parent.glob("*pdfium*.*")))


_RAW: _Raw | None = None


def _raw() -> _Raw:
    global _RAW
    if _RAW is None:
        _RAW = _Raw()
    return _RAW


def _addr(handle) -> int:
    """The address of a pypdfium2 handle (a wrapper with ``.raw`` or a ctypes pointer)."""
    raw = getattr(handle, "raw", handle)
    return int(ctypes.cast(raw, ctypes.c_void_p).value or 0)


# ---------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class PageGeometry:
    """How PDF user space maps to the pixels of a page as ``PdfPage.render()`` draws it (module doc)."""

    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1: CropBox ∩ MediaBox, user space
    rotation: int  # /Rotate, clockwise: 0, 90, 180 or 270
    size_px: tuple[int, int]  # rendered (W, H)

    @classmethod
    def of(cls, page, scale: float | None = None, size_px: tuple[int, int] | None = None) -> "PageGeometry":
        """The geometry of ``page`` rendered at ``scale`` (dpi / 72) or into ``size_px`` pixels."""
        x0, y0, x1, y1 = (float(v) for v in page.get_bbox())
        rotation = int(page.get_rotation()) % 360
        if size_px is None:
            w, h = cls._turned(x1 - x0, y1 - y0, rotation)
            s = 1.0 if scale is None else float(scale)
            size_px = (math.ceil(w * s), math.ceil(h * s))  # as render(): ceil
        return cls((x0, y0, x1, y1), rotation, (int(size_px[0]), int(size_px[1])))

    @staticmethod
    def _turned(w: float, h: float, rotation: int) -> tuple[float, float]:
        return (h, w) if rotation in (90, 270) else (w, h)

    @property
    def size_pt(self) -> tuple[float, float]:
        """The displayed (turned) page size in points."""
        x0, y0, x1, y1 = self.bbox
        return self._turned(x1 - x0, y1 - y0, self.rotation)

    @property
    def scale(self) -> tuple[float, float]:
        """Pixels per point, horizontally and vertically (W/w, H/h)."""
        w, h = self.size_pt
        return self.size_px[0] / max(w, 1e-9), self.size_px[1] / max(h, 1e-9)

    def to_pixels(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (X, Y) of user-space points (arrays of the same shape)."""
        x0, y0, x1, y1 = self.bbox
        u = np.asarray(x, np.float64) - x0
        v = y1 - np.asarray(y, np.float64)
        w0, h0 = x1 - x0, y1 - y0
        r = self.rotation
        if r == 90:
            u, v = h0 - v, u
        elif r == 180:
            u, v = w0 - u, h0 - v
        elif r == 270:
            u, v = v, w0 - u
        sx, sy = self.scale
        return u * sx, v * sy

    def boxes_to_pixels(self, boxes) -> np.ndarray:
        """``[N, 4]`` user-space boxes (left, bottom, right, top) -> pixel boxes (x0, y0, x1, y1)."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        xa, ya = self.to_pixels(b[:, 0], b[:, 1])
        xb, yb = self.to_pixels(b[:, 2], b[:, 3])
        return np.stack([np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb)], axis=1)

    @property
    def rotation_rad(self) -> float:
        return math.radians(self.rotation)


# ---------------------------------------------------------------------- the text layer
@dataclass
class TextLayer:
    """One page's characters as pdfium reports them (arrays of length N, pdfium's order) plus the
    page's other objects. ``drop`` holds each character's drop reason (an index into
    :data:`DROP_REASONS`; 0: kept); :func:`read_text_layer` sets the attribute reasons,
    :func:`find_hidden` the rendered ones."""

    geometry: PageGeometry
    code: np.ndarray  # [N] int64 unicode code point (pdfium's; 0x02 = hyphen marker)
    box: np.ndarray  # [N, 4] float64 loose box, user space: left, bottom, right, top
    base: np.ndarray  # [N, 2] float64 a point on the character's baseline (its text object's origin)
    font_size: np.ndarray  # [N] float64 em in points, scaled by the text matrix and CTM
    angle: np.ndarray  # [N] float64 radians, clockwise, user space (before /Rotate)
    render_mode: np.ndarray  # [N] int8 PDF text render mode (-1: unknown)
    fill: np.ndarray  # [N, 4] uint8 RGBA fill colour of its text object
    stroke: np.ndarray  # [N, 4] uint8 RGBA stroke colour
    generated: np.ndarray  # [N] bool inserted by pdfium (spaces, CR/LF), not drawn
    map_error: np.ndarray  # [N] bool the font has no unicode for the glyph
    hyphen: np.ndarray  # [N] bool a line-end hyphen (pdfium's IsHyphen)
    obj: np.ndarray  # [N] int32 paint order of its text object (-1: none)
    drop: np.ndarray  # [N] int8 drop reason code
    obj_kind: np.ndarray  # [M] int8 non-text leaf objects (2 path, 3 image, 4 shading), annotations (0)
    obj_box: np.ndarray  # [M, 4] float64 their bounds, user space (left, bottom, right, top)
    obj_order: np.ndarray  # [M] int32 their paint order (annotations after all content)
    n_chars: int = 0  # pdfium's character count (more than N when not read)
    truncated: bool = False  # over max_chars: nothing read
    text_objects: list[int] = field(default_factory=list, repr=False)  # addresses, for find_hidden

    @functools.cached_property
    def ink(self) -> np.ndarray:
        """[N] bool: drawn characters that are not spaces."""
        return ~self.generated & ~np.isin(self.code, _SPACES)

    @property
    def visible(self) -> np.ndarray:
        return self.ink & (self.drop == 0)

    @property
    def invalid(self) -> np.ndarray:
        """[N] bool: no valid unicode: private use, U+FFFD/FFFE/FFFF, controls (not the hyphen marker),
        surrogates, 0, or a pdfium map error."""
        c = self.code
        pua = ((c >= 0xE000) & (c <= 0xF8FF)) | (c >= 0xF0000)
        control = ((c < 0x20) & ~((c == 0x02) & self.hyphen)) | ((c >= 0x7F) & (c <= 0x9F))
        return pua | control | ((c >= 0xD800) & (c <= 0xDFFF)) | (c == 0xFFFD) | (c == 0xFFFE) | (c == 0xFFFF) \
            | self.map_error

    def drop_counts(self) -> dict[str, int]:
        """Ink characters dropped, by reason (reasons with none left out)."""
        counts = np.bincount(self.drop[self.ink], minlength=len(DROP_REASONS))
        return {DROP_REASONS[k]: int(n) for k, n in enumerate(counts) if k and n}

    def pixel_boxes(self, idx=None) -> np.ndarray:
        b = self.box if idx is None else self.box[idx]
        return self.geometry.boxes_to_pixels(b)

    def image_boxes_px(self) -> np.ndarray:
        """``[K, 4]`` pixel boxes of the page's image objects, clipped to the page."""
        boxes = self.geometry.boxes_to_pixels(self.obj_box[self.obj_kind == _PAGEOBJ_IMAGE])
        w, h = self.geometry.size_px
        return np.clip(boxes, 0, [w, h, w, h])


def _empty_layer(geometry: PageGeometry, n_chars: int, truncated: bool) -> TextLayer:
    z = np.zeros
    return TextLayer(geometry, z(0, np.int64), z((0, 4)), z((0, 2)), z(0), z(0), z(0, np.int8), z((0, 4), np.uint8),
                     z((0, 4), np.uint8), z(0, bool), z(0, bool), z(0, bool), z(0, np.int32), z(0, np.int8),
                     z(0, np.int8), z((0, 4)), z(0, np.int32), n_chars=n_chars, truncated=truncated)


def _walk_objects(raw: _Raw, page_addr: int):
    """Page objects in paint order, forms entered: (address, type, order, matrix to page space).
    Nested objects report bounds in their form's space; the matrix maps them to the page."""
    out: list[tuple[int, int, int, tuple[float, ...] | None]] = []
    mat = (ctypes.c_float * 6)()

    def children(parent: int, is_form: bool):
        n = raw.form_count(parent) if is_form else raw.count_objects(parent)
        get = raw.form_object if is_form else raw.get_object
        return [get(parent, k) for k in range(max(n, 0))]

    # depth-first, in paint order
    def visit(parent: int, is_form: bool, m, depth: int) -> None:
        for obj in children(parent, is_form):
            if not obj:
                continue
            t = raw.obj_type(obj)
            out.append((obj, t, len(out), m))
            if t == _PAGEOBJ_FORM and depth < 8:
                if raw.obj_matrix(obj, ctypes.addressof(mat)):
                    fm = tuple(float(v) for v in mat)
                    visit(obj, True, fm if m is None else _compose(fm, m), depth + 1)

    visit(page_addr, False, None, 0)
    return out


def _compose(inner, outer):
    """Matrix of ``inner`` then ``outer`` (PDF a b c d e f row-vector convention)."""
    a, b, c, d, e, f = inner
    A, B, C, D, E, F = outer
    return (a * A + b * C, a * B + b * D, c * A + d * C, c * B + d * D, e * A + f * C + E, e * B + f * D + F)


def _transform_box(box, m) -> tuple[float, float, float, float]:
    l, b, r, t = box
    a, bb, c, d, e, f = m
    xs = [a * x + c * y + e for x, y in ((l, b), (l, t), (r, b), (r, t))]
    ys = [bb * x + d * y + f for x, y in ((l, b), (l, t), (r, b), (r, t))]
    return min(xs), min(ys), max(xs), max(ys)


def read_text_layer(pdf_page, *, scale: float | None = None, size_px: tuple[int, int] | None = None,
                    textpage=None, max_chars: int = MAX_CHARS) -> TextLayer:
    """Every character of an open ``pypdfium2.PdfPage`` as arrays (:class:`TextLayer`), with the
    attribute drop reasons set (off the page, render mode 3/7, no alpha, under MIN_FONT_PT,
    duplicates). Pixels are those of ``render(scale=scale)`` or of an image of ``size_px``.
    ``textpage``: an open ``PdfTextPage`` of the page (one is opened and closed otherwise).
    A page with more than ``max_chars`` characters is not read (``truncated``)."""
    raw = _raw()
    geometry = PageGeometry.of(pdf_page, scale, size_px)
    own = textpage is None
    tp_handle = pdf_page.get_textpage() if own else textpage
    try:
        tp = _addr(tp_handle)
        n = int(raw.count_chars(tp))
        if n <= 0 or n > max_chars:
            return _empty_layer(geometry, max(n, 0), n > max_chars)
        return _read(raw, pdf_page, tp, n, geometry)
    finally:
        if own:
            tp_handle.close()


def _read(raw: _Raw, pdf_page, tp: int, n: int, geometry: PageGeometry) -> TextLayer:
    # per character: loose box, text object, map error (three calls: the bulk of the time)
    boxes = (ctypes.c_float * (4 * n))()
    b0 = ctypes.addressof(boxes)
    loose, tobj, merr = raw.loose_box, raw.text_object, raw.map_error
    for i in range(n):
        loose(tp, i, b0 + 16 * i)
    objs = np.array([tobj(tp, i) or 0 for i in range(n)], np.uint64)
    map_error = np.array([merr(tp, i) for i in range(n)], bool)
    ltrb = np.frombuffer(boxes, np.float32).reshape(n, 4).astype(np.float64)  # FS_RECTF: left, top, right, bottom
    box = ltrb[:, [0, 3, 2, 1]]  # left, bottom, right, top
    code = _codes(raw, tp, n)

    # per text object: size, direction, baseline point, render mode, colours, paint order
    walk = _walk_objects(raw, _addr(pdf_page))
    order_of = {o: k for o, t, k, _ in walk if t == _PAGEOBJ_TEXT}
    uniq, first, inv = np.unique(objs, return_index=True, return_inverse=True)
    k = len(uniq)
    o_fs, o_ang = np.zeros(k), np.zeros(k)
    o_base = np.zeros((k, 2))
    o_mode = np.full(k, -1, np.int8)
    o_fill = np.zeros((k, 4), np.uint8)
    o_stroke = np.zeros((k, 4), np.uint8)
    o_order = np.full(k, -1, np.int32)
    mat = (ctypes.c_float * 6)()
    rgba = (ctypes.c_uint * 4)()
    ra = ctypes.addressof(rgba)
    for j, (addr, i) in enumerate(zip(uniq.tolist(), first.tolist())):
        fs = raw.font_size(tp, i)
        if raw.matrix(tp, i, ctypes.addressof(mat)):
            a, b, c, d, e, f = (float(v) for v in mat)
        else:
            a, b, c, d, e, f = 1.0, 0.0, 0.0, 1.0, float(box[i, 0]), float(box[i, 1])
        o_fs[j] = abs(fs) * math.hypot(c, d)  # glyph height scale (Tf excludes the matrix; Tf < 0 mirrors)
        o_ang[j] = math.atan2(-b, a) % (2 * math.pi)  # clockwise, as FPDFText_GetCharAngle
        o_base[j] = (e, f)
        if addr:
            o_mode[j] = raw.render_mode(addr)
            if raw.fill_color(addr, ra, ra + 4, ra + 8, ra + 12):
                o_fill[j] = rgba[:]
            if raw.stroke_color(addr, ra, ra + 4, ra + 8, ra + 12):
                o_stroke[j] = rgba[:]
            o_order[j] = order_of.get(addr, -1)
    font_size, angle, base = o_fs[inv], o_ang[inv], o_base[inv]
    generated = np.zeros(n, bool)
    for i in np.flatnonzero(objs == 0).tolist():  # pdfium's inserted spaces and line breaks have no object
        generated[i] = bool(raw.is_generated(tp, i))
        if not generated[i]:  # drawn but without a text object (not seen): its own size and matrix
            fs = raw.font_size(tp, i)
            if raw.matrix(tp, i, ctypes.addressof(mat)):
                a, b, c, d, e, f = (float(v) for v in mat)
                font_size[i], angle[i], base[i] = abs(fs) * math.hypot(c, d), math.atan2(-b, a) % (2 * math.pi), (e, f)
    hyphen = np.zeros(n, bool)
    for i in np.flatnonzero(np.isin(code, (0x02, 0x2D, 0xAD))).tolist():
        hyphen[i] = bool(raw.is_hyphen(tp, i))

    m_kind, m_box, m_order = [], [], []
    fb = (ctypes.c_float * 4)()
    fa = ctypes.addressof(fb)
    for addr, t, order, m in walk:
        if t in (_PAGEOBJ_PATH, _PAGEOBJ_IMAGE, _PAGEOBJ_SHADING) and raw.obj_bounds(addr, fa, fa + 4, fa + 8, fa + 12):
            l, b, r, tt = (float(v) for v in fb)  # left, bottom, right, top
            m_kind.append(t)
            m_box.append(_transform_box((l, b, r, tt), m) if m is not None else (l, b, r, tt))
            m_order.append(order)
    page_addr = _addr(pdf_page)
    for k in range(max(raw.annot_count(page_addr), 0)):  # annotations are drawn over the content
        annot = raw.get_annot(page_addr, k)
        if annot:
            if raw.annot_rect(annot, fa):
                l, t_, r, b = (float(v) for v in fb)  # FS_RECTF: left, top, right, bottom
                m_kind.append(_ANNOTATION)
                m_box.append((min(l, r), min(b, t_), max(l, r), max(b, t_)))
                m_order.append(len(walk) + k)
            raw.close_annot(annot)

    layer = TextLayer(
        geometry=geometry, code=code, box=box, base=base, font_size=font_size, angle=angle,
        render_mode=o_mode[inv], fill=o_fill[inv], stroke=o_stroke[inv], generated=generated,
        map_error=map_error, hyphen=hyphen, obj=o_order[inv], drop=np.zeros(n, np.int8),
        obj_kind=np.asarray(m_kind, np.int8), obj_box=np.asarray(m_box, np.float64).reshape(-1, 4),
        obj_order=np.asarray(m_order, np.int32), n_chars=n,
        text_objects=[a for a, t, _, _ in walk if t == _PAGEOBJ_TEXT])
    _attribute_drops(layer)
    return layer


def _codes(raw: _Raw, tp: int, n: int) -> np.ndarray:
    """Code points of characters 0..n-1: one FPDFText_GetText call when it gives one UTF-16 unit a
    character (no surrogate pairs), else one FPDFText_GetUnicode call a character."""
    buf = (ctypes.c_uint16 * (n + 1))()
    got = raw.get_text(tp, 0, n, ctypes.addressof(buf)) - 1  # count includes the terminating 0
    units = np.frombuffer(buf, np.uint16)[:n].astype(np.int64)
    if got == n and not ((units >= 0xD800) & (units <= 0xDFFF)).any():
        return units
    return np.fromiter((raw.unicode(tp, i) for i in range(n)), np.int64, n)


def _attribute_drops(layer: TextLayer) -> None:
    """Drop reasons that need no rendering, first reason wins."""
    ink = layer.ink
    drop = layer.drop
    x0, y0, x1, y1 = layer.geometry.bbox
    cx = (layer.box[:, 0] + layer.box[:, 2]) / 2
    cy = (layer.box[:, 1] + layer.box[:, 3]) / 2
    mode = layer.render_mode
    fills = np.isin(mode, (0, 2, 4, 6)) | (mode < 0)
    strokes = np.isin(mode, (1, 2, 5, 6))
    alpha = np.maximum(np.where(fills, layer.fill[:, 3], 0), np.where(strokes, layer.stroke[:, 3], 0))
    finite = np.isfinite(layer.box).all(axis=1) & np.isfinite(layer.base).all(axis=1) & np.isfinite(layer.font_size)
    rules = [
        (_OFF_PAGE, ~finite | ~((cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1))),
        (_INVISIBLE, np.isin(mode, (3, 7))),
        (_TRANSPARENT, (alpha == 0) & (mode >= 0)),
        (_TINY, layer.font_size < MIN_FONT_PT),
    ]
    for reason, hit in rules:
        drop[ink & (drop == 0) & hit] = reason
    _mark_duplicates(layer)


def _mark_duplicates(layer: TextLayer) -> None:
    """The same character drawn again at (almost) the same place (fake bold, double printing): one
    copy is kept. "Almost": within DUPLICATE_EM and within half the glyph's box (condensed text)."""
    idx = np.flatnonzero(layer.ink & (layer.drop == 0))
    if len(idx) < 2:
        return
    b = layer.box[idx]
    tol = DUPLICATE_EM * np.maximum(layer.font_size[idx], MIN_FONT_PT)
    tx = np.minimum(tol, 0.5 * (b[:, 2] - b[:, 0]))
    ty = np.minimum(tol, 0.5 * (b[:, 3] - b[:, 1]))
    yq = np.floor(b[:, 1] / np.maximum(tol, 1e-6) / 2)
    order = np.lexsort((idx, b[:, 0], yq, layer.code[idx]))
    c, xs, ys = layer.code[idx][order], b[order, 0], b[order, 1]
    same = ((c[1:] == c[:-1]) & (np.abs(xs[1:] - xs[:-1]) < tx[order][1:])
            & (np.abs(ys[1:] - ys[:-1]) < ty[order][1:]))
    layer.drop[idx[order][1:][same]] = _DUPLICATE


# ---------------------------------------------------------------------- hidden text (rendered)
def find_hidden(pdf_page, layer: TextLayer, image: Image.Image | None = None, *, textpage=None,
                check_all: bool = False) -> dict[str, int]:
    """Drop characters that leave no ink: under an opaque image, box or annotation drawn later
    ("covered"), or with nothing over them: the colour of what is beneath them, white on white
    included, or clipped away ("background").

    Only characters that could be hidden are checked: those over another object or annotation,
    near-white or faint ones; ``check_all``: every one (finds text cut away by a clip path or in
    hidden optional content too). The page is rendered without its text objects
    (``FPDFPageObj_SetIsActive``, restored after) over the box around them and compared with
    ``image`` (the normal render of the page in ``layer.geometry``'s pixels; rendered here when None
    or of another size): a character whose tight box shows no difference is not visible.
    ``textpage``: the open ``PdfTextPage`` the layer was read from (opened again otherwise).
    Returns the counts dropped here by reason."""
    raw = _raw()
    g = layer.geometry
    cand = np.flatnonzero(layer.visible)
    if not len(cand) or not layer.text_objects:
        return {}
    suspect, covered_by_later = _over_objects(layer, cand)
    mode = layer.render_mode[cand]
    fills = np.isin(mode, (0, 2, 4, 6))
    white = fills & (layer.fill[cand, :3] >= NEAR_WHITE).all(axis=1)
    white |= np.isin(mode, (1, 5)) & (layer.stroke[cand, :3] >= NEAR_WHITE).all(axis=1)
    faint = np.where(fills, layer.fill[cand, 3], layer.stroke[cand, 3]) < LOW_ALPHA
    suspect |= white | faint | check_all
    suspect &= layer.obj[cand] >= 0  # text outside the object tree cannot be switched off: not testable
    if not suspect.any():
        return {}
    sidx = cand[suspect]
    tight = _tight_boxes_px(raw, pdf_page, layer, sidx, textpage)
    w, h = g.size_px
    cx0, cy0 = int(max(math.floor(tight[:, 0].min()) - 2, 0)), int(max(math.floor(tight[:, 1].min()) - 2, 0))
    cx1, cy1 = int(min(math.ceil(tight[:, 2].max()) + 2, w)), int(min(math.ceil(tight[:, 3].max()) + 2, h))
    if cx1 <= cx0 or cy1 <= cy0:
        return {}
    page_addr = _addr(pdf_page)
    if image is not None and image.size == (w, h):
        normal = np.asarray(image.crop((cx0, cy0, cx1, cy1)).convert("RGB"))
    else:
        normal = _render_crop(raw, pdf_page, page_addr, (cx0, cy0, cx1, cy1), (w, h))[:, :, ::-1]
    active = ctypes.c_int()
    switched = []
    try:
        for obj in layer.text_objects:
            if raw.get_active(obj, ctypes.addressof(active)) and active.value:
                raw.set_active(obj, 0)
                switched.append(obj)
        bare = _render_crop(raw, pdf_page, page_addr, (cx0, cy0, cx1, cy1), (w, h))[:, :, ::-1]
    finally:
        for obj in switched:
            raw.set_active(obj, 1)
    diff = (np.abs(normal.astype(np.int16) - bare.astype(np.int16)).max(axis=2) > INK_DIFF).astype(np.int32)
    integral = np.zeros((diff.shape[0] + 1, diff.shape[1] + 1), np.int64)
    integral[1:, 1:] = diff.cumsum(0).cumsum(1)
    bx0 = np.clip(np.floor(tight[:, 0]).astype(np.int64) - cx0, 0, cx1 - cx0)
    by0 = np.clip(np.floor(tight[:, 1]).astype(np.int64) - cy0, 0, cy1 - cy0)
    bx1 = np.clip(np.ceil(tight[:, 2]).astype(np.int64) - cx0, 0, cx1 - cx0)
    by1 = np.clip(np.ceil(tight[:, 3]).astype(np.int64) - cy0, 0, cy1 - cy0)
    ink_px = integral[by1, bx1] - integral[by0, bx1] - integral[by1, bx0] + integral[by0, bx0]
    area = np.maximum((bx1 - bx0) * (by1 - by0), 1)
    hidden = ink_px < np.maximum(MIN_INK_PX, MIN_INK_SHARE * area)
    reason = np.where(covered_by_later[suspect], _COVERED, _BACKGROUND).astype(np.int8)
    layer.drop[sidx[hidden]] = reason[hidden]
    counts = np.bincount(reason[hidden], minlength=len(DROP_REASONS))
    return {DROP_REASONS[k]: int(c) for k, c in enumerate(counts) if c}


def _over_objects(layer: TextLayer, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For characters ``cand``: whether a non-text object's box touches theirs, and whether one drawn
    after their text object does. Objects thinner than MIN_FONT_PT (rules, underlines) are left out:
    they cannot hide a character that is kept. On a grid of OVERLAP_CELL_PT cells holding the
    last-drawn object (linear in objects and characters; up to a cell of slack, so no overlap is
    missed; "drawn after" is read on at most 8 x 8 cells of a big glyph)."""
    n = len(cand)
    if not len(layer.obj_box) or not n:
        return np.zeros(n, bool), np.zeros(n, bool)
    x0, y0, x1, y1 = layer.geometry.bbox
    cell = max(OVERLAP_CELL_PT, math.sqrt((x1 - x0) * (y1 - y0) / 4e6))  # at most ~4M cells
    gw, gh = int(math.ceil((x1 - x0) / cell)) + 1, int(math.ceil((y1 - y0) / cell)) + 1

    def cells(b):
        cx0 = np.clip(np.floor((b[:, 0] - x0) / cell), 0, gw - 1).astype(np.int64)
        cy0 = np.clip(np.floor((b[:, 1] - y0) / cell), 0, gh - 1).astype(np.int64)
        cx1 = np.clip(np.floor((b[:, 2] - x0) / cell), 0, gw - 1).astype(np.int64)
        cy1 = np.clip(np.floor((b[:, 3] - y0) / cell), 0, gh - 1).astype(np.int64)
        return cx0, cy0, cx1, cy1

    last = np.full((gh, gw), -1, np.int32)  # paint order of the last object over each cell
    ob = layer.obj_box
    on_page = (ob[:, 2] >= x0) & (ob[:, 0] <= x1) & (ob[:, 3] >= y0) & (ob[:, 1] <= y1)
    on_page &= np.minimum(ob[:, 2] - ob[:, 0], ob[:, 3] - ob[:, 1]) >= MIN_FONT_PT  # rules cannot hide text
    o = np.flatnonzero(on_page)
    o = o[np.argsort(layer.obj_order[o], kind="stable")]  # later objects written last
    ox0, oy0, ox1, oy1 = cells(ob[o])
    for a, b, c, d, k in zip(ox0.tolist(), oy0.tolist(), ox1.tolist(), oy1.tolist(), layer.obj_order[o].tolist()):
        last[b:d + 1, a:c + 1] = k
    cx0, cy0, cx1, cy1 = cells(layer.box[cand])
    covered = np.zeros((gh + 1, gw + 1), np.int64)
    covered[1:, 1:] = (last >= 0).cumsum(0).cumsum(1)
    over = (covered[cy1 + 1, cx1 + 1] - covered[cy0, cx1 + 1] - covered[cy1 + 1, cx0] + covered[cy0, cx0]) > 0
    steps = int(min(8, max(int((cx1 - cx0).max()), int((cy1 - cy0).max())) + 1))  # big glyphs: sampled
    top = np.full(n, -1, np.int32)
    for i in range(steps):
        xs = cx0 + ((cx1 - cx0) * i) // max(steps - 1, 1)
        for j in range(steps):
            top = np.maximum(top, last[cy0 + ((cy1 - cy0) * j) // max(steps - 1, 1), xs])
    return over, top > layer.obj[cand]


def _tight_boxes_px(raw: _Raw, pdf_page, layer: TextLayer, idx: np.ndarray, textpage=None) -> np.ndarray:
    """Pixel boxes of the glyphs' ink (FPDFText_GetCharBox) of characters ``idx``; the loose box
    where pdfium gives none."""
    tb = np.array(layer.box[idx], np.float64)
    tp_handle = pdf_page.get_textpage() if textpage is None else textpage
    try:
        tp = _addr(tp_handle)
        vals = (ctypes.c_double * 4)()
        va = ctypes.addressof(vals)
        for k, i in enumerate(idx.tolist()):
            if raw.char_box(tp, i, va, va + 8, va + 16, va + 24):
                l, r, b, t = vals  # left, right, bottom, top
                if r > l and t > b:
                    tb[k] = (l, b, r, t)
    finally:
        if textpage is None:
            tp_handle.close()
    return layer.geometry.boxes_to_pixels(tb)


def _render_crop(raw: _Raw, pdf_page, page_addr: int, crop: tuple[int, int, int, int],
                 size: tuple[int, int]) -> np.ndarray:
    """``[h, w, 3]`` BGR pixels ``crop`` (x0, y0, x1, y1) of the page rendered into ``size``, pixel for
    pixel the same as that region of ``PdfPage.render()`` (same flags, same page matrix)."""
    import pypdfium2 as pdfium

    x0, y0, x1, y1 = crop
    bitmap = pdfium.PdfBitmap.new_native(x1 - x0, y1 - y0, raw.bgr)
    bitmap.fill_rect((255, 255, 255, 255), 0, 0, x1 - x0, y1 - y0)
    raw.render(_addr(bitmap), page_addr, -x0, -y0, size[0], size[1], 0, raw.annot_flag)
    out = np.array(bitmap.to_numpy()[:, :, :3])
    bitmap.close()
    return out


# ---------------------------------------------------------------------- lines
def _char_text(code: np.ndarray, hyphen: np.ndarray) -> list[str]:
    """Text of drawn characters: pdfium's hyphen marker (0x02 with IsHyphen) and a drawn soft hyphen
    as "-" (what the page shows), other controls and non-characters as U+FFFD."""
    bad = (code < 0x20) | ((code >= 0x7F) & (code <= 0x9F)) | ((code >= 0xD800) & (code <= 0xDFFF)) \
        | (code == 0xFFFE) | (code == 0xFFFF) | (code > 0x10FFFF)
    out = [chr(c) if not b else "\ufffd" for c, b in zip(code.tolist(), bad.tolist())]
    for i in np.flatnonzero(((code == 0x02) & hyphen) | (code == 0xAD)).tolist():
        out[i] = "-"
    return out


def layer_lines(layer: TextLayer) -> list[Region]:
    """Line regions (level ``line``) of the visible characters, in reading order.

    Characters are grouped by geometry in their own direction (displayed angle, /Rotate included),
    not by pdfium's order: rows of baselines within BASELINE_TOL_EM, split at gaps of CELL_GAP_EM
    (columns, table cells); words joined with one space where the gap is at least WORD_GAP_EM;
    right-to-left text (Hebrew, Arabic) put in logical order (:func:`logical_order`).
    Boxes in page pixels, as tall as an OCR line box of the font (OCR_TOP_EM / OCR_BOTTOM_EM around
    the baseline, OCR_SIDE_EM past the glyphs); lines not upright get their polygon."""
    g = layer.geometry
    idx = np.flatnonzero(layer.visible)
    if not len(idx):
        return []
    pix = g.boxes_to_pixels(layer.box[idx])
    bx, by = g.to_pixels(layer.base[idx, 0], layer.base[idx, 1])
    sx, sy = g.scale
    fs = layer.font_size[idx] * (sx + sy) / 2
    deg = np.round(np.degrees(layer.angle[idx] + g.rotation_rad)).astype(np.int64) % 360
    texts = _char_text(layer.code[idx], layer.hyphen[idx])
    w, h = g.size_px
    regions = []
    # upright text first, then the other directions by size; each read in its own frame
    dirs, counts = np.unique(deg, return_counts=True)
    for d in sorted(dirs.tolist(), key=lambda d: (d != 0, -int(counts[dirs == d][0]), d)):
        sel = np.flatnonzero(deg == d)
        found = _direction_lines(d, pix[sel], bx[sel], by[sel], fs[sel], [texts[i] for i in sel.tolist()])
        for k in reading_order(np.asarray([f[3] for f in found])).tolist():
            b, text, poly, _ = found[k]
            regions.append(Region(bbox=tuple(float(v) for v in b), page_size=(w, h), text=text, confidence=1.0,
                                  level="line", polygon=poly, source="pdf"))
    return regions


def _direction_lines(deg: int, pix: np.ndarray, bx: np.ndarray, by: np.ndarray, fs: np.ndarray,
                     texts: list[str]) -> list[tuple[np.ndarray, str, tuple | None, tuple]]:
    """Lines of characters that all run at ``deg`` degrees (clockwise on the page image): (pixel
    bbox, text, polygon or None when upright, box in the text's frame)."""
    phi = math.radians(deg)
    c, s = math.cos(phi), math.sin(phi)
    ac, as_ = abs(c), abs(s)
    cxp, cyp = (pix[:, 0] + pix[:, 2]) / 2, (pix[:, 1] + pix[:, 3]) / 2
    wb, hb = pix[:, 2] - pix[:, 0], pix[:, 3] - pix[:, 1]
    # advance width along the text from its axis-aligned box (exact at multiples of 90 degrees)
    det = c * c - s * s
    if abs(det) > 0.3:
        adv = (wb * ac - hb * as_) / det
    else:  # near 45 degrees the box cannot tell width from height: assume a 1.1 em tall box
        adv = (wb + hb) / (ac + as_) - 1.1 * fs
    adv = np.clip(adv, 0.0, 5.0 * fs)
    a_c = cxp * c + cyp * s  # along the text
    a0, a1 = a_c - adv / 2, a_c + adv / 2
    base = -bx * s + by * c  # across (down the page in the text's frame)
    # rows: sorted baselines, broken where consecutive ones are further apart than the tolerance
    o = np.argsort(base, kind="stable")
    fo = fs[o]
    brk = np.diff(base[o]) > BASELINE_TOL_EM * np.maximum(fo[1:], fo[:-1])
    row = np.empty(len(o), np.int64)
    row[o] = np.concatenate([[0], np.cumsum(brk)])
    # within a row, by position along the text; segments split at wide gaps
    o = np.lexsort((a0, row))
    r, a0s, a1s, fss = row[o], a0[o], a1[o], fs[o]
    span = float(a1s.max() - a0s.min()) + 1.0
    lo = float(a0s.min())
    reach = np.maximum.accumulate((a1s - lo) + r * span * 2) - r * span * 2 + lo  # running end within the row
    gap = a0s[1:] - reach[:-1]
    fpair = np.maximum(fss[1:], fss[:-1])
    new = (r[1:] != r[:-1]) | (gap >= CELL_GAP_EM * fpair)
    space = ~new & (gap >= WORD_GAP_EM * fpair)
    starts = np.concatenate([[0], np.flatnonzero(new) + 1])
    ends = np.concatenate([starts[1:], [len(o)]])
    bs = base[o]
    top = np.minimum.reduceat(bs - OCR_TOP_EM * fss, starts)
    bottom = np.maximum.reduceat(bs + OCR_BOTTOM_EM * fss, starts)
    pad = OCR_SIDE_EM * np.maximum.reduceat(fss, starts)
    left = a0s[starts] - pad
    right = np.maximum.reduceat(reach, starts) + pad
    pieces = [texts[i] for i in o.tolist()]
    for k in np.flatnonzero(space).tolist():
        pieces[k + 1] = " " + pieces[k + 1]
    out = []
    for j, (st, en) in enumerate(zip(starts.tolist(), ends.tolist())):
        corners = [(left[j], top[j]), (right[j], top[j]), (right[j], bottom[j]), (left[j], bottom[j])]
        pts = np.array([(a * c - b * s, a * s + b * c) for a, b in corners])  # back to page pixels
        bbox = np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])
        poly = None if deg == 0 else tuple((float(x), float(y)) for x, y in pts)
        out.append((bbox, logical_order("".join(pieces[st:en])), poly, (left[j], top[j], right[j], bottom[j])))
    return out


# Blocks that hold right-to-left letters (Hebrew, Arabic, Syriac, Thaana, NKo, ..., their presentation forms):
# a fast test before the per-character bidi classes.
_RTL_BLOCKS = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc\U00010800-\U00010fff\U0001e800-\U0001efff]")


def logical_order(text: str) -> str:
    """A line's text in logical order from its visual order (characters left to right, as
    :func:`layer_lines` sorts them by position) when it holds right-to-left letters (Hebrew, Arabic):
    pdfium's own text is in logical order, but the lines are built from the boxes.

    A small inverse of the Unicode bidi algorithm for one line: the base direction is that of most of
    its strong letters; letters get level 0 (left-to-right; 2 in a right-to-left line) or 1
    (right-to-left), digits 2 (numbers read left to right) unless next to left-to-right letters (rule
    W7: then as those letters), a separator between digits or a currency/percent sign by them (W4, W5)
    as the digits, other neutrals (spaces, punctuation) the level of both neighbours when they agree,
    else the base level (N1, N2); the runs are then reversed as rule L2 does (which undoes itself).
    Brackets are left as pdfium reports them: it already mirrors those of a right-to-left text object
    (the "(" drawn at the left end of "(םולש)" reads as ")"). Text without right-to-left letters is
    returned unchanged. A number between left-to-right and right-to-left
    letters is ambiguous in visual order; it is read with the left-to-right ones."""
    if not _RTL_BLOCKS.search(text):
        return text
    cls = [unicodedata.bidirectional(ch) for ch in text]
    n_rtl = sum(c in ("R", "AL") for c in cls)
    if not n_rtl:
        return text
    base = "R" if n_rtl > cls.count("L") else "L"
    n = len(text)
    strong = ["L" if c == "L" else "R" if c in ("R", "AL") else "" for c in cls]
    before, after = [base] * n, [base] * n  # nearest strong letter on each side (the base at the ends)
    for i in range(1, n):
        before[i] = strong[i - 1] or before[i - 1]
    for i in range(n - 2, -1, -1):
        after[i] = strong[i + 1] or after[i + 1]
    # kind: L, R, D (digits, read left to right inside right-to-left text) or "" (neutral)
    kind = [s or ("L" if c == "EN" and "L" in (before[i], after[i]) else "D" if c in ("EN", "AN") else "")
            for i, (s, c) in enumerate(zip(strong, cls))]
    for i in range(1, n - 1):  # 1,000 and 3.5: a single separator between digits (W4)
        if not kind[i] and cls[i] in ("CS", "ES") and kind[i - 1] == kind[i + 1] and cls[i - 1] in ("EN", "AN") \
                and cls[i + 1] in ("EN", "AN"):
            kind[i] = kind[i - 1]
    for order in (range(n), range(n - 1, -1, -1)):  # 50% and $5: signs next to digits (W5)
        prev = ""
        for i in order:
            if not kind[i] and cls[i] == "ET" and prev:
                kind[i] = prev
            prev = kind[i] if cls[i] in ("EN", "AN") or (cls[i] == "ET" and kind[i]) else ""
    i = 0
    while i < n:  # neutrals: as both neighbours when they agree (digits count as right-to-left), else the base
        if kind[i]:
            i += 1
            continue
        j = i
        while j < n and not kind[j]:
            j += 1
        left = {"D": "R"}.get(kind[i - 1], kind[i - 1]) if i else base
        right = {"D": "R"}.get(kind[j], kind[j]) if j < n else base
        kind[i:j] = [left if left == right else base] * (j - i)
        i = j
    level = [(0 if base == "L" else 2) if k == "L" else 1 if k == "R" else 2 for k in kind]
    chars = list(text)
    for lv in range(max(level), 0, -1):  # rule L2: reverse every run at this level or above
        i = 0
        while i < n:
            if level[i] < lv:
                i += 1
                continue
            j = i
            while j < n and level[j] >= lv:
                j += 1
            chars[i:j], level[i:j] = chars[i:j][::-1], level[i:j][::-1]
            i = j
    return "".join(chars)


def reading_order(boxes: np.ndarray) -> np.ndarray:
    """Order of line boxes ``[L, 4]`` for reading: recursive XY cut, each step cutting along the axis
    with the wider empty gap, at that gap and the gaps nearly as wide (CUT_TIE: evenly spaced lines
    in one step). Columns come before rows when the gutter is wider than the gaps between lines
    (so tables read by column); where no gap is left, top to bottom then left to right."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    out: list[np.ndarray] = []
    stack = [np.arange(len(b))]
    while stack:
        idx = stack.pop()
        if len(idx) <= 1:
            out.append(idx)
            continue
        parts_y, gy = _cuts(b[idx, 1], b[idx, 3])
        parts_x, gx = _cuts(b[idx, 0], b[idx, 2])
        if gy <= 0 and gx <= 0:
            out.append(idx[np.lexsort((b[idx, 0], (b[idx, 1] + b[idx, 3]) / 2))])
            continue
        parts = parts_x if gx > gy else parts_y
        stack.extend(idx[p] for p in reversed(parts))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _cuts(lo: np.ndarray, hi: np.ndarray) -> tuple[list[np.ndarray], float]:
    """Groups (index arrays, in order) of intervals split at the empty gaps at least CUT_TIE of the
    widest, and the widest gap (0 when none)."""
    o = np.argsort(lo, kind="stable")
    reach = np.maximum.accumulate(hi[o])
    gaps = lo[o][1:] - reach[:-1]
    widest = float(gaps.max()) if len(gaps) else 0.0
    if widest <= 0:
        return [o], 0.0
    cut = np.flatnonzero(gaps >= CUT_TIE * widest)
    return np.split(o, cut + 1), widest


# ---------------------------------------------------------------------- page statistics
@dataclass(frozen=True)
class PageStats:
    """What the page image says, on cells of STATS_CELL pixels: the share of cells with ink, and the
    share of those outside the given text boxes (ink the text layer does not explain)."""

    ink_share: float
    unexplained_ink: float


def page_stats(image: Image.Image, boxes: Sequence[Sequence[float]] = ()) -> PageStats:
    """:class:`PageStats` of a page image and the pixel boxes of its visible text (lines)."""
    grey = image.convert("L")
    cells = np.asarray(grey.reduce(STATS_CELL) if min(grey.size) >= STATS_CELL else grey) < INK_LEVEL
    n_ink = int(cells.sum())
    if not n_ink:
        return PageStats(0.0, 0.0)
    free = cells.copy()
    ch, cw = cells.shape
    for x0, y0, x1, y1 in boxes:
        free[max(int(y0) // STATS_CELL, 0):min(-(-int(math.ceil(y1)) // STATS_CELL), ch),
             max(int(x0) // STATS_CELL, 0):min(-(-int(math.ceil(x1)) // STATS_CELL), cw)] = False
    return PageStats(n_ink / cells.size, float(free.sum()) / n_ink)


# ---------------------------------------------------------------------- decision
@dataclass(frozen=True)
class PageDecision:
    """What OCR a page needs: ``action`` none / full / areas, why (``reason`` for people, ``code``
    from :data:`CODES` for counting), the ``areas`` (page pixel boxes) for ``areas``, and the
    counts it was decided on."""

    action: Action
    reason: str
    areas: tuple[tuple[float, float, float, float], ...] = ()
    counts: dict = field(default_factory=dict, compare=False)
    code: str = ""

    @property
    def source(self) -> str:
        """Where the page's text comes from: ``pdf`` (none), ``ocr`` (full), ``pdf+ocr`` (areas)."""
        return SOURCE_OF[self.action]

    def to_dict(self) -> dict:
        return {"action": self.action, "code": self.code, "reason": self.reason,
                "areas": [list(a) for a in self.areas], "counts": dict(self.counts)}


SOURCE_OF = {"none": "pdf", "full": "ocr", "areas": "pdf+ocr"}
# Why a page was decided so (PageDecision.code): what `snappy index` and `snappy inspect` count.
CODES: dict[str, str] = {
    "text_layer": "the text layer is the page's text",
    "blank": "no characters and no ink",
    "image_areas": "images without text are OCR'd, the text layer gives the rest",
    "no_text_layer": "no usable text layer (a scan, text drawn as outlines)",
    "invalid_unicode": "too many characters without a valid unicode",
    "invisible_layer": "most text invisible (a scanner's OCR layer)",
    "images_cover_page": "images without text cover most of the page",
    "many_images": "too many images without text (tiles of a scan)",
    "too_many_chars": "more characters than MAX_CHARS",
    "check_failed": "the document's text layer failed the OCR check",
    "unreadable": "pdfium could not read the text layer",
    "image_file": "an image file: no text layer",
    "only": "--text-layer only: the text layer, never OCR",
    "off": "--text-layer off: OCR every page",
}


def _merge_boxes(boxes: list[list[float]]) -> np.ndarray:
    """``[K, 4]`` hulls of boxes that overlap or touch, merged until none do (so they are disjoint)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    while len(b) > 1:
        touch = ((b[:, None, 0] <= b[None, :, 2]) & (b[None, :, 0] <= b[:, None, 2])
                 & (b[:, None, 1] <= b[None, :, 3]) & (b[None, :, 1] <= b[:, None, 3]))
        k, label = connected_components(touch, directed=False)
        if k == len(b):
            break
        order = np.argsort(label, kind="stable")
        starts = np.searchsorted(label[order], np.arange(k))
        b = np.stack([np.minimum.reduceat(b[order, 0], starts), np.minimum.reduceat(b[order, 1], starts),
                      np.maximum.reduceat(b[order, 2], starts), np.maximum.reduceat(b[order, 3], starts)], axis=1)
    return b


def decide(layer: TextLayer, stats: PageStats, *, layer_ok: bool | None = None) -> PageDecision:
    """What OCR the page needs, from its text layer's arrays and its image statistics (no pdfium).

    ``layer_ok``: the document's :func:`verify_with_ocr` verdict (False: OCR every page)."""
    g = layer.geometry
    w, h = g.size_px
    ink, vis = layer.ink, layer.visible
    n_ink, n_vis = int(ink.sum()), int(vis.sum())
    invalid = layer.invalid
    n_bad = int((vis & invalid).sum())
    n_good = n_vis - n_bad
    n_invisible = int((ink & (layer.drop == _INVISIBLE)).sum())
    dropped = layer.drop_counts()
    deg = np.round(np.degrees(layer.angle[vis] + g.rotation_rad)).astype(np.int64) % 360
    n_angled = int((deg != 0).sum())
    counts = {"chars": layer.n_chars, "ink": n_ink, "visible": n_vis, "good": n_good, "invalid": n_bad,
              "angled": n_angled, "dropped": dropped, "ink_share": round(stats.ink_share, 5),
              "unexplained_ink": round(stats.unexplained_ink, 4)}
    notes = []
    if dropped:
        notes.append("dropped " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    if n_angled:
        notes.append(f"{n_angled} characters not upright, read in their own direction")
    note = f" ({'; '.join(notes)})" if notes else ""

    def out(action: Action, code: str, reason: str, areas=()) -> PageDecision:
        return PageDecision(action, reason + note, tuple(tuple(float(v) for v in a) for a in areas), counts, code)

    if layer.truncated:
        return out("full", "too_many_chars", f"{layer.n_chars} characters, over MAX_CHARS={MAX_CHARS}: not read")
    if layer_ok is False:
        return out("full", "check_failed", "the document's text layer failed the OCR check")
    if n_ink and n_invisible > INVISIBLE_SHARE_FULL * n_ink:
        return out("full", "invisible_layer", f"{n_invisible} of {n_ink} characters invisible (render mode 3/7): an OCR layer")
    if n_vis >= MIN_GOOD_CHARS and n_bad > INVALID_SHARE_FULL * n_vis:
        return out("full", "invalid_unicode", f"{n_bad} of {n_vis} visible characters have no valid unicode")
    if n_good < MIN_GOOD_CHARS:
        if stats.ink_share < BLANK_INK_SHARE:
            return out("none", "blank", f"blank page ({n_good} valid visible characters, no ink)")
        if n_good and stats.unexplained_ink <= UNEXPLAINED_INK:
            return out("none", "text_layer", f"{n_good} valid visible characters explain the page's ink")
        return out("full", "no_text_layer", f"no usable text layer ({n_good} valid visible characters, ink on "
                           f"{stats.ink_share:.1%} of the page)")
    # images of meaningful size that show no text-layer text
    sx, sy = g.scale
    imgs = layer.image_boxes_px()
    pix = layer.pixel_boxes(np.flatnonzero(vis))
    cx, cy = (pix[:, 0] + pix[:, 2]) / 2, (pix[:, 1] + pix[:, 3]) / 2
    areas = []
    for x0, y0, x1, y1 in imgs:
        small = (x1 - x0) * (y1 - y0) < MIN_IMAGE_AREA_SHARE * w * h
        if small or min((x1 - x0) / sx, (y1 - y0) / sy) < MIN_IMAGE_SIDE_PT:
            continue
        if int(((cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)).sum()) >= IMAGE_TEXT_CHARS:
            continue
        areas.append([x0, y0, x1, y1])
    if len(areas) > MAX_AREAS:
        return out("full", "many_images", f"{len(areas)} images without text")
    areas = _merge_boxes(areas)
    if len(areas):
        share = float(((areas[:, 2] - areas[:, 0]) * (areas[:, 3] - areas[:, 1])).sum()) / (w * h)  # disjoint
        if share > FULL_AREA_SHARE:
            return out("full", "images_cover_page", f"images without text cover {share:.0%} of the page")
        return out("areas", "image_areas", f"{len(areas)} image area(s) without text ({share:.1%} of the page); "
                            f"{n_vis} visible characters", areas)
    return out("none", "text_layer", f"text layer: {n_vis} visible characters")


# ---------------------------------------------------------------------- OCR check of the layer
@dataclass(frozen=True)
class LayerCheck:
    """Text-layer lines compared with OCR of the same pixels: ``ok`` False when the layer reads
    wrong (median CER over VERIFY_MAX_CER), None when there was nothing to compare."""

    ok: bool | None
    cer: float  # median character error rate (nan when nothing was compared)
    lines: tuple[tuple[str, str, float], ...] = ()  # (layer text, OCR text, CER)
    reason: str = ""


def _norm(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate of ``hypothesis`` against ``reference`` (case, width forms and spaces ignored)."""
    r, h = _norm(reference), _norm(hypothesis)
    if not r:
        return 0.0 if not h else 1.0
    return edit_distance(r, h) / len(r)


def compare_texts(layer_texts: Sequence[str], ocr_texts: Sequence[str],
                  max_cer: float = VERIFY_MAX_CER) -> LayerCheck:
    """Pure verdict on pairs of (text-layer line, OCR of its crop)."""
    pairs = [(a, b, cer(a, b)) for a, b in zip(layer_texts, ocr_texts)]
    if not pairs:
        return LayerCheck(None, float("nan"), (), "no lines to compare")
    med = float(np.median([p[2] for p in pairs]))
    ok = med <= max_cer
    why = (f"median CER {med:.2f} over {len(pairs)} lines "
           + ("within" if ok else "over") + f" {max_cer:g}" + ("" if ok else ": the text layer reads wrong"))
    return LayerCheck(ok, med, tuple(pairs), why)


def pick_check_lines(regions: Sequence[Region], n: int = VERIFY_LINES, min_chars: int = VERIFY_MIN_CHARS) -> list[int]:
    """Indices of up to ``n`` upright lines worth OCR-ing: the longest with mostly letters or digits,
    spread over the list."""
    scored = []
    for i, r in enumerate(regions):
        t = r.text.strip()
        alnum = sum(ch.isalnum() for ch in t)
        if r.polygon is None and alnum >= min_chars and alnum >= 0.6 * len(t):
            scored.append((alnum, i))
    best = sorted(i for _, i in sorted(scored, reverse=True)[: 4 * n])
    if len(best) <= n:
        return best
    step = len(best) / n
    return [best[int(k * step)] for k in range(n)]


def check_crops(image: Image.Image, regions: Sequence[Region], n: int = VERIFY_LINES) -> tuple[list[Image.Image], list[str]]:
    """The line crops of ``image`` an OCR check reads (:func:`pick_check_lines`; a line box, shaped
    like an OCR detector's, cut to its first words) and the text-layer texts they are compared with;
    empty when no line is worth it."""
    crops, texts = [], []
    for i in pick_check_lines(regions, n):
        r = regions[i]
        x0, y0, x1, y1 = r.bbox
        text = r.text
        cut = text.find(" ", VERIFY_WINDOW_CHARS)
        if cut > 0 and len(text) - cut > 8:  # the window's end, where its share of the characters lies
            text = text[:cut]
            x1 = x0 + (x1 - x0) * (cut + 0.5) / len(r.text)  # half a character into the space
        box = (max(int(x0), 0), max(int(y0), 0), min(int(math.ceil(x1)), image.width),
               min(int(math.ceil(y1)), image.height))
        crops.append(image.crop(box).convert("RGB"))
        texts.append(text)
    return crops, texts


def ocr_crops(crops: Sequence[Image.Image], ocr: Callable[[Image.Image], list[Region]] | object) -> list[str]:
    """The text ``ocr`` reads on each line crop: its ``read_lines`` (an OCR engine), or, for a
    callable image -> regions, those regions' texts on the crop padded with white."""
    if hasattr(ocr, "read_lines"):
        return list(ocr.read_lines(list(crops)))
    recognize = getattr(ocr, "recognize", ocr)
    padded = [ImageOps.expand(c, border=16, fill=(255, 255, 255)) for c in crops]
    return [" ".join(q.text for q in sorted(recognize(c), key=lambda q: q.bbox[0])) for c in padded]


def verify_with_ocr(image: Image.Image, regions: Sequence[Region], ocr: Callable[[Image.Image], list[Region]] | object,
                    n: int = VERIFY_LINES, max_cer: float = VERIFY_MAX_CER) -> LayerCheck:
    """OCR ``n`` text-layer line crops of ``image`` with ``ocr`` and compare (:func:`compare_texts`).
    Once per document is enough: a wrong ToUnicode map is wrong on every page that uses the font."""
    crops, texts = check_crops(image, regions, n)
    return compare_texts(texts, ocr_crops(crops, ocr), max_cer)


def after_check(regions: list[Region], decision: PageDecision, check: LayerCheck | None) -> tuple[list[Region], PageDecision]:
    """A page's regions and decision once its document's OCR check is known: a failed check means
    OCR the page (its text-layer lines are dropped); otherwise unchanged."""
    if check is None or check.ok is not False or decision.action == "full":
        return regions, decision
    return [], replace(decision, action="full", areas=(), code="check_failed",
                       reason=f"the document's text layer failed the OCR check ({check.reason})")


# ---------------------------------------------------------------------- one page
def text_layer_regions(pdf_page, image: Image.Image, mode: Mode = "auto", *, textpage=None,
                       layer_ok: bool | None = None) -> tuple[list[Region], PageDecision]:
    """Line regions of one open page from its text layer, and what OCR it still needs.

    ``image`` is the page as rendered from this page object (its size sets the pixels). ``mode``:
    ``auto``: regions as the decision allows (none for ``full``; for ``areas``, lines outside the
    areas, which OCR reads); ``only``: every visible line, action ``none`` (the decision kept in the
    reason); ``off``: no regions, action ``full``."""
    if mode not in MODES:
        raise ValueError(f"unknown text layer mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "off":
        return [], PageDecision("full", "text layer off", code="off")
    tp = pdf_page.get_textpage() if textpage is None else textpage
    try:
        layer = read_text_layer(pdf_page, size_px=image.size, textpage=tp)
        if not layer.truncated:
            find_hidden(pdf_page, layer, image, textpage=tp)
    finally:
        if textpage is None:
            tp.close()
    lines = layer_lines(layer)
    decision = decide(layer, page_stats(image, [r.bbox for r in lines]), layer_ok=layer_ok)
    if mode == "only":
        return lines, replace(decision, action="none", areas=(), code="only",
                              reason=f"text layer only (auto: {decision.action}: {decision.reason})")
    if decision.action == "full":
        return [], decision
    if decision.action == "areas":
        lines = [r for r in lines if not _inside_any(r.bbox, decision.areas)]
    return lines, decision


def page_regions(image: Image.Image, lines: Sequence[Region], decision: PageDecision | None, ocr) -> list[Region]:
    """A page's line regions once its decision is carried out with ``ocr`` (an engine with
    ``recognize``): ``none``: the text layer's ``lines``; ``full`` (or no decision: text layer
    off): OCR of the whole page; ``areas``: the lines plus OCR of each area's crop, moved back to
    page pixels, all in reading order."""
    if decision is None or decision.action == "full":
        return list(ocr.recognize(image))
    if decision.action == "none":
        return list(lines)
    out = list(lines)
    for box in decision.areas:
        x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
        x1, y1 = min(int(math.ceil(box[2])), image.width), min(int(math.ceil(box[3])), image.height)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        out.extend(r.moved(x0, y0, image.size) for r in ocr.recognize(image.crop((x0, y0, x1, y1))))
    if out:
        order = reading_order(np.asarray([r.bbox for r in out], np.float64))
        out = [out[k] for k in order]
    return out


def _inside_any(bbox, areas) -> bool:
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    return any(a[0] <= cx <= a[2] and a[1] <= cy <= a[3] for a in areas)


__all__ = [
    "CODES", "DROP_REASONS", "LayerCheck", "MODES", "PageDecision", "PageGeometry", "PageStats", "SOURCE_OF",
    "TextLayer", "after_check", "cer", "check_crops", "compare_texts", "ocr_crops", "page_regions", "decide", "edit_distance", "find_hidden", "layer_lines", "page_stats", "pick_check_lines",
    "logical_order", "read_text_layer", "reading_order", "text_layer_regions", "verify_with_ocr",
]
