"""The Ray Data stages of the indexing pipeline, batch by batch (``batch_format="pyarrow"``).

    prepare_documents (tasks)       read (bounded) + hash one document; unchanged bytes -> a "touch"
                                    report; else render its pages one by one (blank ones skipped; JPEG
                                    kept; raw pixels only if a later stage reads them), then the
                                    document's report row
    OcrStage          (CPU actors)  + regions_json (engine loaded once per actor; skipped for --ocr none)
    EmbedStage        (GPU actors)  + vectors, grid (model loaded once per actor); drops the pixels
    embed_batch       (tasks)       the same for weight-free encoders (lexical, null): no actor pool
    write_pages       (tasks)       pages + regions rows (overlaps precomputed) written as uncommitted
                                    Lance fragments; returns reports: one row per page / document and
                                    the fragments' metadata -- all the driver ever receives

Every stream row has ``kind`` "page" or "doc". A page row carries its document's generation
(``gen``: unique per attempt at the document, see ``snappy/storage/commit.py``). A document's
"doc" row says how many pages it emitted, or why it stopped. A stage that fails on one page
writes the reason into that row's ``error`` with its ``failure`` kind (``snappy.documents.failures``): the
driver settles the document once every page is accounted for. Units of work are registered with
the run's poison ledger (``pipelines/guard.py``) so a page that kills its worker fails instead of
looping, and watchdogs bound the time of each read, page render, OCR and embedding call.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from .guard import LedgerClient, Watchdog
from snappy.documents.failures import FailureKind, classify
from snappy.indexing.document import regions_from_json, regions_to_json
from snappy.errors import DocumentError
from snappy.documents.pages import RenderOptions, is_blank, iter_pages
from snappy.indexing.plan import Action
from snappy.indexing.poison import careful
from snappy.documents.sources import ReadLimits, Source
from snappy.storage.commit import make_gen
from snappy.ids import page_id_for
from snappy.indexing.records import region_table
from snappy.storage.schema import encode_image, pages_schema, vectors_array
from snappy.storage.writer import MAX_ROWS_PER_FILE, write_fragments

log = logging.getLogger(__name__)

PAGE, DOC = "page", "doc"
DOCUMENT = FailureKind.DOCUMENT.value

# The stream after prepare_documents (OCR and embedding append their columns).
STREAM_SCHEMA = pa.schema([
    ("kind", pa.string()), ("doc_id", pa.string()), ("gen", pa.int64()), ("uri", pa.string()),
    ("size", pa.int64()), ("content_hash", pa.string()), ("page_count", pa.int32()),
    ("blank_pages", pa.int32()),  # doc rows: blank pages skipped (not in page_count)
    ("error", pa.string()), ("failure", pa.string()), ("touched", pa.bool_()),
    ("page_number", pa.int32()), ("width", pa.int32()), ("height", pa.int32()),
    ("width_pt", pa.float32()), ("height_pt", pa.float32()), ("dpi", pa.float32()),
    ("pixels", pa.large_binary()),  # [height, width, 3] uint8 RGB, row-major; null when no stage reads them
    ("image", pa.binary()),  # the stored page image, JPEG
    ("read_s", pa.float64()), ("render_s", pa.float64()), ("encode_s", pa.float64()),
    # The PDF text layer (RenderOptions.text_layer; all null when off): its line regions (the JSON
    # OcrStage writes), whether the page still needs OCR, and why (snappy.documents.textlayer.PageDecision).
    ("regions_json", pa.large_string()),
    ("ocr_needed", pa.bool_()),  # null: no decision taken (text layer off): OCR the page
    ("text_action", pa.string()), ("text_reason", pa.string()),  # none | full | areas; why
    ("text_code", pa.string()), ("text_source", pa.string()),  # textlayer.CODES; pdf | ocr | pdf+ocr
    ("ocr_areas", pa.string()),  # JSON list of [x0, y0, x1, y1] page-pixel boxes to OCR (action "areas")
    ("text_check", pa.string()),  # doc rows: the OCR check of the document's text layer (why)
    ("text_check_ok", pa.bool_()),  # doc rows: its verdict (null: not checked)
])

# What write_pages returns to the driver.
REPORT_SCHEMA = pa.schema([
    ("kind", pa.string()),  # "page" | "doc" | "fragments"
    ("doc_id", pa.string()), ("gen", pa.int64()), ("page_number", pa.int32()),
    ("error", pa.string()), ("failure", pa.string()), ("touched", pa.bool_()),
    ("uri", pa.string()), ("size", pa.int64()), ("content_hash", pa.string()), ("page_count", pa.int32()),
    ("blank_pages", pa.int32()), ("regions", pa.int32()),
    ("table", pa.string()), ("fragments", pa.string()),  # kind "fragments": table name, JSON list of metadata
    ("read_s", pa.float64()),  # doc rows: reading + hashing the document
    ("render_s", pa.float64()), ("encode_s", pa.float64()),  # page rows: rasterising; JPEG (+ pixels)
    ("ocr_s", pa.float64()), ("embed_s", pa.float64()), ("write_s", pa.float64()),
    ("ocr_worker", pa.string()), ("embed_worker", pa.string()),
    ("text_source", pa.string()), ("text_code", pa.string()),  # page rows: where the text came from, why
    ("text_check", pa.string()), ("text_check_ok", pa.bool_()),  # doc rows: the text layer's OCR check
])

@dataclass(frozen=True)
class TimeLimits:
    """Hard limits per unit of work; past one the worker process ends and the unit is retried,
    then failed once it has done so ``max_deaths`` times (``pipelines/guard.py``)."""

    read_s: float | None = 600.0  # reading + hashing one document
    page_s: float | None = 300.0  # rendering one page; OCR of one page; embedding one page (x batch)


def worker_info(device: str | None = None) -> str:
    """JSON naming this process and the GPUs Ray assigned to it."""
    import ray

    gpus = []
    if ray.is_initialized():  # get_gpu_ids() outside Ray would start one
        try:
            gpus = [str(g) for g in ray.get_gpu_ids()]
        except Exception:
            gpus = []
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "gpu_ids": gpus,
                       "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                       "device": device or "cpu"}, sort_keys=True)


# ---------------------------------------------------------------------- prepare (tasks)
def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=STREAM_SCHEMA)


def _pixels(image) -> pa.Array:
    """The page's RGB pixels as one large_binary value, without an extra copy into Python bytes."""
    arr = np.ascontiguousarray(np.asarray(image.convert("RGB") if image.mode != "RGB" else image))
    buf = pa.py_buffer(arr)
    return pa.Array.from_buffers(pa.large_binary(), 1, [None, pa.py_buffer(np.array([0, buf.size], np.int64)), buf])


def _text_layer_row(page) -> dict:
    """The stream's text-layer columns of a rendered page (empty when its text layer was not read)."""
    d = page.decision
    if d is None:
        return {}
    return {"regions_json": regions_to_json(page.regions or []), "ocr_needed": d.action != "none",
            "text_action": d.action, "text_reason": d.reason, "text_code": d.code, "text_source": d.source,
            "ocr_areas": json.dumps([list(a) for a in d.areas]) if d.action == "areas" else None}


def _page_table(base: dict, page, with_pixels: bool, image_quality: int, render_s: float) -> pa.Table:
    t = time.perf_counter()
    row = {**base, "kind": PAGE, "page_number": page.number, "width": page.width, "height": page.height,
           "width_pt": page.width_pt, "height_pt": page.height_pt, "dpi": page.dpi,
           "image": encode_image(page.image, image_quality), "render_s": render_s, **_text_layer_row(page)}
    table = _table([row])
    if with_pixels:
        table = table.set_column(table.schema.get_field_index("pixels"), "pixels", _pixels(page.image))
    return table.set_column(table.schema.get_field_index("encode_s"), "encode_s",
                            pa.array([time.perf_counter() - t], pa.float64()))


def prepare_documents(batch: pa.Table, source: Source, render: RenderOptions, limits: ReadLimits, epoch: int,
                      ledger=None, with_pixels: bool = True, image_quality: int = 85,
                      time_limits: TimeLimits = TimeLimits(), block_bytes: int = 8 << 20,
                      skip_blank: bool = True, pixels_for_ocr_only: bool = False,
                      checkers: list | None = None) -> Iterator[pa.Table]:
    """Read, hash and render the documents of ``batch`` (snappy.indexing.plan.WORK_SCHEMA rows), streaming their pages.

    A CHECK item whose bytes hash to ``known_hash`` yields only a "touched" document row. Pages are
    yielded in blocks of about ``block_bytes`` as they are rendered (a document never sits whole in
    memory; with raw pixels a block is one page); the document's "doc" row comes last and says how
    many pages were yielded (``page_count``: the driver waits for exactly those), or the error that
    stopped it. With ``skip_blank``, blank pages (:func:`snappy.documents.pages.is_blank`) are not yielded:
    the "doc" row counts them in ``blank_pages``, and a document of blank pages only fails.

    With ``render.text_layer`` on, each PDF page's text layer is read while it is rendered: its
    lines go into ``regions_json`` and its decision into ``ocr_needed`` / ``text_action`` /
    ``text_reason`` / ``ocr_areas``. ``pixels_for_ocr_only``: raw pixels only for pages that still
    need OCR (the encoder reads none). ``checkers`` (:class:`LayerChecker` actors): the first page
    with lines worth reading has a few of them OCR'd; a text layer that reads wrong sends that page
    and the document's later ones to OCR (:func:`snappy.documents.textlayer.after_check`); the "doc" row says
    why in ``text_check``.
    """
    ledger = ledger if isinstance(ledger, LedgerClient) else LedgerClient(ledger)

    def ship(page) -> bool:  # raw pixels with the page: only if a later stage reads them
        return with_pixels and not (pixels_for_ocr_only and page.decision is not None and page.decision.action == "none")

    for item in batch.to_pylist():
        uri, doc_id = item["uri"], item["doc_id"]
        key = f"doc:{doc_id}"
        attempt, _, poison = ledger.enter([key])[0]
        gen = make_gen(epoch, item["ordinal"], attempt)
        base = {"doc_id": doc_id, "gen": gen, "uri": uri}
        t0 = time.perf_counter()
        n, blank, digest, size, read_s = 0, 0, None, item["size"], None
        check = _DocumentCheck(checkers[_checker_of(doc_id, len(checkers))] if checkers else None,
                               time_limits.page_s)
        try:
            if poison:
                raise _Poisoned(f"reading or rendering: {poison}")
            raw = item["raw_path"]
            with Watchdog(time_limits.read_s, lambda: ledger.note(key, f"reading took over {time_limits.read_s:g} s")), \
                    source.open_document(uri, raw, limits) as doc:
                digest, size = doc.sha256, doc.size
                read_s = time.perf_counter() - t0
                if item["action"] == Action.CHECK and digest == item["known_hash"]:
                    yield _table([{**base, "kind": DOC, "size": size, "content_hash": digest, "page_count": 0,
                                   "touched": True, "read_s": read_s}])
                    continue
                pages = iter_pages(doc.data if doc.data is not None else doc.path, render, source=uri)
                block, block_size = [], 0
                while True:
                    t = time.perf_counter()
                    with Watchdog(time_limits.page_s, lambda: ledger.note(
                            key, f"rendering page {n + len(block) + blank + 1} took over {time_limits.page_s:g} s")):
                        page = next(pages, None)  # a page that fails drops the pages not yet yielded
                        if page is None:
                            break
                        if skip_blank and is_blank(page.image):
                            blank += 1
                            continue
                        ready = check.offer(page, time.perf_counter() - t)  # held while its check runs
                    for page, render_s in ready:
                        block.append(_page_table(base, page, ship(page), image_quality, render_s))
                        block_size += block[-1].nbytes
                    if block_size >= block_bytes:  # a block of pages: fewer, larger objects for Ray
                        yield pa.concat_tables(block)
                        n, block, block_size = n + len(block), [], 0
                for page, render_s in check.finish():
                    block.append(_page_table(base, page, ship(page), image_quality, render_s))
                if block:
                    yield pa.concat_tables(block)
                    n += len(block)
            if blank and not n:
                raise DocumentError(uri, f"all {blank} pages are blank" if blank > 1 else "its only page is blank")
            yield _table([{**base, "kind": DOC, "size": size, "content_hash": digest, "page_count": n,
                           "blank_pages": blank, "read_s": read_s, **check.row()}])
        except Exception as e:
            f = _failure(e, uri)
            log.warning("%s: %s (%s)", uri, f.reason, f.kind.value)
            yield _table([{**base, "kind": DOC, "size": size, "content_hash": digest, "page_count": n,
                           "blank_pages": blank, "error": f.reason, "failure": f.kind.value, "read_s": read_s}])
        finally:
            ledger.exit([key])


class _Poisoned(Exception):
    pass


def _failure(e: BaseException, uri: str):
    from snappy.documents.failures import Failure

    if isinstance(e, _Poisoned):
        return Failure(FailureKind.DOCUMENT, str(e))
    return classify(e, uri)


# ---------------------------------------------------------------------- the text layer's OCR check
class LayerChecker:
    """OCR of a few text-layer line crops per document (:func:`snappy.documents.textlayer.verify_with_ocr`
    split in two: the read task crops, this actor reads). Its engine is loaded on the first check."""

    def __init__(self, ocr: str = "paddle", threads: int = 1, engine=None):
        self.ocr, self.threads, self.engine = ocr, threads, engine  # engine: a built one to use instead

    def read(self, crops: list[bytes]) -> list[str]:
        """The OCR text of each PNG crop."""
        import io

        from PIL import Image

        from snappy.documents.textlayer import ocr_crops

        if self.engine is None:
            self.engine = _make_engine(self.ocr, self.threads)
        return ocr_crops([Image.open(io.BytesIO(c)) for c in crops], self.engine)


def _checker_of(doc_id: str, n: int) -> int:
    """Which of ``n`` checkers checks this document (spread, stable)."""
    return int(doc_id[:8], 16) % n if n > 1 else 0


class _DocumentCheck:
    """A document's OCR check of its text layer, taken on its first page with lines worth reading,
    without waiting idle for it: the pages that follow are rendered meanwhile and held (at most
    HOLD) until the verdict, which then applies to every page from the checked one on
    (:func:`snappy.documents.textlayer.after_check`). No checker: pages pass unchanged."""

    HOLD = 4

    def __init__(self, checker, timeout_s: float | None):
        self.checker, self.timeout_s = checker, timeout_s
        self.pending = None  # an ObjectRef (actor) or the OCR texts (a checker in this process)
        self.texts: list[str] = []
        self.result = None  # snappy.documents.textlayer.LayerCheck once decided
        self.held: list = []
        self.source = ""
        self.remote = False

    def offer(self, page, render_s: float) -> list:
        """[(page, render_s)] ready to go on, in order (empty while the check runs)."""
        if self.checker is None or page.decision is None:
            return [(page, render_s)]
        if self.result is not None:
            return [(page.checked(self.result), render_s)]
        if self.pending is None and not self._start(page):
            return [(page, render_s)]  # nothing worth reading on this page: no check yet
        self.held.append((page, render_s))
        if len(self.held) >= self.HOLD or self._ready():
            return self._release()
        return []

    def finish(self) -> list:
        return self._release() if self.held else []

    def row(self) -> dict:
        """The "doc" row's text_check columns."""
        if self.result is None:
            return {}
        return {"text_check": f"page text checked by OCR: {self.result.reason}", "text_check_ok": self.result.ok}

    def _start(self, page) -> bool:
        import io

        from snappy.documents.textlayer import check_crops

        if not page.regions:  # a page decided "full" has none
            return False
        crops, self.texts = check_crops(page.image, page.regions)
        if not crops:
            return False
        pngs = []
        for c in crops:
            buf = io.BytesIO()
            c.save(buf, "PNG")
            pngs.append(buf.getvalue())
        self.source = page.source
        self.remote = hasattr(self.checker.read, "remote")  # a LayerChecker actor, or one in this process
        try:
            self.pending = self.checker.read.remote(pngs) if self.remote else self.checker.read(pngs)
        except Exception as e:
            self._unavailable(e)
        return True

    def _ready(self) -> bool:
        if self.result is not None or not self.remote:  # decided, or the texts in hand
            return True
        import ray

        return bool(ray.wait([self.pending], timeout=0)[0])

    def _release(self) -> list:
        if self.result is None:
            from snappy.documents.textlayer import compare_texts

            try:
                read = self.pending
                if self.remote:
                    import ray

                    read = ray.get(read, timeout=self.timeout_s)
                self.result = compare_texts(self.texts, read)
            except Exception as e:
                self._unavailable(e)
        out = [(p.checked(self.result), r) for p, r in self.held]
        self.held = []
        return out

    def _unavailable(self, e: BaseException) -> None:
        from snappy.documents.textlayer import LayerCheck

        why = classify(e).reason
        log.warning("%s: the OCR check of the text layer failed (%s); not checked", self.source, why)
        self.result = LayerCheck(None, float("nan"), (), f"OCR check unavailable: {why}")


# ---------------------------------------------------------------------- shared by the actor stages
def _pages(batch: pa.Table) -> list[int]:
    """Indices of the batch's page rows that have not failed yet."""
    kinds = batch.column("kind").to_pylist()
    errors = batch.column("error").to_pylist()
    return [i for i, (k, e) in enumerate(zip(kinds, errors)) if k == PAGE and e is None]


def _image(batch: pa.Table, i: int):
    """Row ``i``'s page as a PIL image (one copy, from the Arrow buffer)."""
    from PIL import Image

    w, h = batch.column("width")[i].as_py(), batch.column("height")[i].as_py()
    col = batch.column("pixels")
    if isinstance(col, pa.ChunkedArray):
        chunk_i = i
        for chunk in col.chunks:
            if chunk_i < len(chunk):
                col, i = chunk, chunk_i
                break
            chunk_i -= len(chunk)
    view = col.buffers()[2]
    offsets = np.frombuffer(col.buffers()[1], np.int64, len(col) + 1, col.offset * 8)
    data = np.frombuffer(view, np.uint8)[offsets[i]:offsets[i + 1]]
    if data.size != w * h * 3:
        raise ValueError(f"page pixels missing or of the wrong size ({data.size} bytes for {w}x{h})")
    return Image.fromarray(data.reshape(h, w, 3), "RGB")


class _Shape:
    """A page's size, standing in for its image for encoders that read only ``.size`` (``needs_pixels=False``)."""

    def __init__(self, width: int, height: int):
        self.size, self.width, self.height = (int(width), int(height)), int(width), int(height)


def _set_column(batch: pa.Table, name: str, values, type_=None) -> pa.Table:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type=type_)
    idx = batch.schema.get_field_index(name)
    if idx >= 0:
        return batch.set_column(idx, name, arr)
    return batch.append_column(name, arr)


def _guarded(batch: pa.Table, idx: list[int], stage: str, ledger: LedgerClient, limit_s: float | None, fn,
             errors: list, seconds: list) -> list:
    """Run ``fn(indices) -> results`` over the batch's pages, whole or (after a death) one by one,
    under the poison ledger and a watchdog; a failing page gets its ``errors`` entry."""
    keys = [f"{stage}:{batch.column('gen')[i].as_py()}:{batch.column('page_number')[i].as_py()}" for i in idx]
    results: list = [None] * len(idx)
    verdicts = ledger.enter(keys)
    page_no = batch.column("page_number")

    def fail(j: int, e: BaseException | str) -> None:
        i = idx[j]
        if isinstance(e, str):
            errors[i], kind = f"{stage} failed on page {page_no[i].as_py()}: {e}", DOCUMENT
        else:
            f = classify(e)
            errors[i], kind = f"{stage} failed on page {page_no[i].as_py()}: {f.reason}", f.kind.value
        errors[i] = (errors[i], kind)
        log.warning("%s: %s", batch.column("uri")[i].as_py(), errors[i][0])

    if not careful([d for _, d, _ in verdicts]):
        t = time.perf_counter()
        try:
            with Watchdog(limit_s * len(idx) if limit_s else None,
                          lambda: [ledger.note(k, f"{stage} took over {limit_s:g} s a page") for k in keys]):
                results = fn(list(range(len(idx))))
            for j in range(len(idx)):
                seconds[idx[j]] = (time.perf_counter() - t) / len(idx)
            ledger.exit(keys)
            return results
        except Exception:
            ledger.exit(keys)  # fall through: one by one isolates the page that fails
    else:
        ledger.exit(keys)
    for j, k in enumerate(keys):  # one by one: a death is now charged to the page that caused it
        (_, _, poison), = ledger.enter([k])
        if poison:
            fail(j, poison)
            ledger.exit([k])
            continue
        t = time.perf_counter()
        try:
            with Watchdog(limit_s, lambda: ledger.note(k, f"{stage} took over {limit_s:g} s")):
                results[j] = fn([j])[0]
        except Exception as e:
            fail(j, e)
        finally:
            ledger.exit([k])
        seconds[idx[j]] = time.perf_counter() - t
    return results


def _split_errors(errors: list) -> tuple[list, list]:
    msgs = [e[0] if isinstance(e, tuple) else e for e in errors]
    kinds = [e[1] if isinstance(e, tuple) else None for e in errors]
    return msgs, kinds


def _merge_failures(batch: pa.Table, errors: list) -> pa.Table:
    msgs, kinds = _split_errors(errors)
    old = batch.column("failure").to_pylist()
    kinds = [k if k is not None else o for k, o in zip(kinds, old)]
    batch = _set_column(batch, "error", msgs, pa.string())
    return _set_column(batch, "failure", kinds, pa.string())


# ---------------------------------------------------------------------- OCR (CPU actors)
def _make_engine(ocr: str, threads: int | None):
    from dataclasses import fields, replace

    from snappy.ocr import make_ocr, parse_ocr_options

    options = parse_ocr_options(ocr)
    # ONNX Runtime takes every core by default: cap it at the actor's CPUs so pools don't oversubscribe.
    names = {f.name for f in fields(options)}
    for knob in ("num_threads", "cpu_threads"):  # rapid, paddle
        if threads and knob in names and getattr(options, knob) is None:
            options = replace(options, **{knob: threads})
    return make_ocr(options)


class OcrStage:
    """OCR actor: the engine is built once; each call recognises a batch of pages."""

    def __init__(self, ocr: str = "paddle", threads: int | None = None, ledger=None,
                 time_limits: TimeLimits = TimeLimits(), engine=None):
        self.ocr, self.threads, self._engine = ocr, threads, engine  # engine: a built one to use instead
        self.ledger = LedgerClient(ledger)
        self.limits = time_limits
        self.worker = worker_info("cpu")
        log.info("OCR actor ready: %s %s", ocr, self.worker)

    @property
    def engine(self):
        """The OCR engine, loaded on the first page that needs it (text-layer pages only pass through)."""
        if self._engine is None:
            self._engine = _make_engine(self.ocr, self.threads)
        return self._engine

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        names = batch.schema.names
        needed = batch.column("ocr_needed").to_pylist() if "ocr_needed" in names else [None] * n
        idx = [i for i in _pages(batch) if needed[i] is not False]  # the text layer is the rest's text
        if not idx:  # nothing to read: pass the batch on as it is (its regions JSON not copied)
            batch = _set_column(batch, "ocr_s", pa.array([0.0] * n, pa.float64()))
            return _set_column(batch, "ocr_worker", pa.nulls(n, pa.string()))
        regions: list[str | None] = (batch.column("regions_json").to_pylist() if "regions_json" in names
                                     else [None] * n)
        areas = batch.column("ocr_areas").to_pylist() if "ocr_areas" in names else [None] * n
        seconds = [0.0] * n
        errors = batch.column("error").to_pylist()
        source = batch.column("text_source").to_pylist() if "text_source" in names else [None] * n
        code = batch.column("text_code").to_pylist() if "text_code" in names else [None] * n
        for i in idx:
            if needed[i] is None:  # text layer off: OCR is the page's text
                source[i], code[i] = "ocr", "off"
        results = _guarded(batch, idx, "OCR", self.ledger, self.limits.page_s,
                           lambda js: [self._ocr(batch, idx[j], areas[idx[j]], regions[idx[j]]) for j in js],
                           errors, seconds)
        for j, i in enumerate(idx):
            regions[i] = results[j]
        batch = _merge_failures(batch, errors)
        batch = _set_column(batch, "regions_json", regions, pa.large_string())
        batch = _set_column(batch, "text_source", source, pa.string())
        batch = _set_column(batch, "text_code", code, pa.string())
        batch = _set_column(batch, "ocr_s", seconds, pa.float64())
        ocred = set(idx)
        return _set_column(batch, "ocr_worker", [self.worker if i in ocred else None for i in range(n)], pa.string())

    def _ocr(self, batch: pa.Table, i: int, areas_json: str | None, layer_json: str | None) -> str:
        """Row ``i``'s regions JSON: the whole page OCR'd, or (``areas_json``) only those crops, merged
        with the text layer's lines (:func:`snappy.documents.textlayer.page_regions`)."""
        from snappy.documents.textlayer import PageDecision, page_regions

        image = _image(batch, i)
        if areas_json is None:
            return regions_to_json(self.engine.recognize(image))
        areas = tuple(tuple(a) for a in json.loads(areas_json))
        return regions_to_json(page_regions(image, regions_from_json(layer_json), PageDecision("areas", "", areas),
                                            self.engine))


# ---------------------------------------------------------------------- embed (GPU actors)
def _device() -> str:
    """``cuda`` when Ray gave this actor a GPU and torch can use it, else ``cpu``."""
    import ray

    if not ray.get_gpu_ids():
        return "cpu"
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


class EmbedStage:
    """Embedding actor: the encoder (model) is loaded once; each call embeds a batch of pages."""

    def __init__(self, encoder: str = "lexical", dim: int = 128, ledger=None, time_limits: TimeLimits = TimeLimits()):
        from snappy.encoders import make_encoder

        self.device = _device()
        self.encoder = make_encoder(encoder, device=self.device if self.device != "cpu" else None)
        if self.encoder.dim != dim:
            raise ValueError(f"encoder {encoder!r} gives {self.encoder.dim}-d vectors, the index expects {dim}")
        self.dim = dim
        self.ledger = LedgerClient(ledger)
        self.limits = time_limits
        self.worker = worker_info(self.device)
        log.info("embed actor ready: %s %s", self.encoder.encoder_id, self.worker)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _embed(batch, self.encoder, self.dim, self.ledger, self.limits, self.worker)


def embed_batch(batch: pa.Table, encoder: str = "lexical", dim: int = 128, ledger=None,
                time_limits: TimeLimits = TimeLimits()) -> pa.Table:
    """The embed stage as a task, for weight-free encoders (``loads_model=False``: built per call)."""
    from snappy.encoders import make_encoder

    enc = make_encoder(encoder)
    if enc.dim != dim:
        raise ValueError(f"encoder {encoder!r} gives {enc.dim}-d vectors, the index expects {dim}")
    return _embed(batch, enc, dim, LedgerClient(ledger), time_limits, worker_info("cpu"))


def _embed(batch: pa.Table, encoder, dim: int, ledger: LedgerClient, limits: TimeLimits, worker: str) -> pa.Table:
    """+ vectors, grid, n_tokens for the batch's good pages; pixels dropped."""
    from snappy.indexing.document import embed_pages

    n = batch.num_rows
    idx = _pages(batch)
    errors = batch.column("error").to_pylist()
    vectors: list[np.ndarray] = [np.zeros((0, dim), np.float16)] * n
    grids: list[str | None] = [None] * n
    n_tokens: list[int | None] = [None] * n
    seconds = [0.0] * n
    has_regions = "regions_json" in batch.schema.names

    def inputs(i: int):
        if encoder.needs_pixels:
            return _image(batch, i)
        return _Shape(batch.column("width")[i].as_py(), batch.column("height")[i].as_py())

    if idx:
        def run(js):
            regions = [regions_from_json(batch.column("regions_json")[idx[j]].as_py()) if has_regions else []
                       for j in js]
            return embed_pages(encoder, [inputs(idx[j]) for j in js], regions)

        embs = _guarded(batch, idx, "embedding", ledger, limits.page_s, run, errors, seconds)
        for i, emb in zip(idx, embs):
            if emb is not None:
                vectors[i] = np.asarray(emb.vectors, np.float16)  # [n_tokens, dim]
                grids[i] = emb.grid.to_json()
                n_tokens[i] = int(emb.vectors.shape[0])
    batch = _merge_failures(batch, errors)
    batch = _set_column(batch, "vectors", vectors_array(vectors, dim))
    batch = _set_column(batch, "grid", grids, pa.string())
    batch = _set_column(batch, "n_tokens", n_tokens, pa.int32())
    batch = _set_column(batch, "embed_s", seconds, pa.float64())
    batch = _set_column(batch, "encoder_id", [encoder.encoder_id] * n, pa.string())
    batch = _set_column(batch, "embed_worker", [worker] * n, pa.string())
    return batch.drop_columns(["pixels"])  # no later stage needs them


# ---------------------------------------------------------------------- write (tasks)

def write_pages(batch: pa.Table, pages_uri: str, regions_uri: str, storage_options, dim: int = 128,
                codes_uri: str | None = None, codebook=None) -> pa.Table:
    """Pages and regions rows of the batch's good pages -> uncommitted Lance fragments; reports for the driver.

    With a ``codebook`` (the index has one), also the pages' candidate-stage rows (``codes``), so new
    pages are searchable through the candidate stage from the commit that adds them.
    """
    from snappy.patches.grid import PatchGrid

    t0 = time.perf_counter()
    cols = {name: batch.column(name).to_pylist() for name in batch.schema.names
            if name not in ("vectors", "regions_json", "image")}
    n = batch.num_rows
    errors = list(cols["error"])
    failures = list(cols["failure"])
    good, region_tables, n_regions = [], [], [0] * n
    has_regions = "regions_json" in batch.schema.names
    for i in range(n):
        if cols["kind"][i] != PAGE or errors[i] is not None:
            continue
        try:
            grid = PatchGrid.from_json(cols["grid"][i])
            regions = regions_from_json(batch.column("regions_json")[i].as_py()) if has_regions else []
            rows = region_table(cols["doc_id"][i], cols["page_number"][i], regions, grid, gen=cols["gen"][i])
            region_tables.append(rows)
            n_regions[i] = rows.num_rows
            good.append(i)
        except Exception as e:
            f = classify(e)
            errors[i], failures[i] = f"records failed on page {cols['page_number'][i]}: {f.reason}", f.kind.value
            log.warning("%s: %s", cols["uri"][i], errors[i])
    reports = []
    if good:
        sel = pa.array(good, pa.int64())
        schema = pages_schema(dim)
        picked = batch.take(sel)
        page_ids = [page_id_for(cols["doc_id"][i], cols["page_number"][i]) for i in good]
        arrays = {"page_id": pa.array(page_ids, pa.string())}
        for f in schema:
            if f.name != "page_id":
                arrays[f.name] = picked.column(f.name).combine_chunks().cast(f.type)
        pages = pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)
        reports.append(("pages", write_fragments(pages_uri, pages, storage_options, MAX_ROWS_PER_FILE["pages"])))
        if any(t.num_rows for t in region_tables):
            regions = pa.concat_tables(region_tables)
            reports.append(("regions", write_fragments(regions_uri, regions, storage_options,
                                                       MAX_ROWS_PER_FILE["regions"])))
        if codebook is not None and codes_uri:
            from snappy.candidates.centroids import sketch_table

            codes = sketch_table(codebook, pages.select(["page_id", "doc_id", "gen"]), pages.column("vectors"))
            reports.append(("codes", write_fragments(codes_uri, codes, storage_options, MAX_ROWS_PER_FILE["codes"])))
    write_s = (time.perf_counter() - t0) / max(len(good), 1)
    out = {name: [cols.get(name, [None] * n)[i] for i in range(n)] for name in REPORT_SCHEMA.names
           if name not in ("table", "fragments", "regions", "write_s", "error", "failure")}
    out["error"], out["failure"], out["regions"] = errors, failures, n_regions
    written = set(good)
    out["write_s"] = [write_s if i in written else 0.0 for i in range(n)]
    out["table"], out["fragments"] = [None] * n, [None] * n
    table = pa.Table.from_pydict({k: out[k] for k in REPORT_SCHEMA.names}, schema=REPORT_SCHEMA)
    if reports:
        extra = {name: [None] * len(reports) for name in REPORT_SCHEMA.names}
        extra["kind"] = ["fragments"] * len(reports)
        extra["table"] = [r[0] for r in reports]
        extra["fragments"] = [json.dumps(r[1]) for r in reports]
        table = pa.concat_tables([table, pa.Table.from_pydict(extra, schema=REPORT_SCHEMA)])
    return table
