"""The Ray Data stages of the indexing pipeline, batch by batch (``batch_format="pyarrow"``).

    hash_documents   (tasks)   a first, light pass: which documents changed (no model is loaded)
    render_documents (tasks)  one document -> its pages (raw RGB pixels + the stored JPEG), then a "doc" row
    OcrStage         (CPU actors)  + regions_json              (engine loaded once per actor)
    EmbedStage       (GPU actors)  + vectors, grid, n_tokens; drops the pixels (model loaded once per actor)
    build_records    (tasks)   -> staging rows: a pages row with its regions (overlaps precomputed)

Pixels travel only as far as the encoder: what reaches the write (which buffers ``write_rows``
rows per task) is JPEG + vectors, about 0.4 MB a page.

Every stream row has ``kind`` "page" or "doc". A document's "doc" row comes after its pages and
carries its size, hash, page count and error. A stage that fails on one page writes the reason into
that row's ``error`` (the driver then marks the whole document failed), so one bad document
never stops the run. The per-row ``*_s`` columns (seconds spent on that row in each stage)
and the ``*_worker`` columns (which actor, which GPUs) feed the run summary.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Iterator

import numpy as np
import pyarrow as pa

from snappy.encoders import make_encoder
from snappy.indexing import (embed_pages, error_text, image_from_pixels, page_pixels, regions_from_json,
                             regions_to_json)
from snappy.pages import Page, RenderOptions, iter_pages
from snappy.sources import Source
from snappy.storage.schema import (content_hash, doc_id_for, encode_image, page_id_for, pages_schema, region_records,
                                   regions_schema, vectors_array)

log = logging.getLogger(__name__)

PAGE, DOC = "page", "doc"

# Columns of the stream after rendering (OCR and embedding append theirs).
RENDER_SCHEMA = pa.schema([
    ("kind", pa.string()), ("doc_id", pa.string()), ("uri", pa.string()), ("size", pa.int64()),
    ("content_hash", pa.string()), ("page_count", pa.int32()), ("error", pa.string()),
    ("page_number", pa.int32()), ("width", pa.int32()), ("height", pa.int32()),
    ("width_pt", pa.float32()), ("height_pt", pa.float32()), ("dpi", pa.float32()),
    ("pixels", pa.large_binary()),  # [height, width, 3] uint8 RGB, row-major
    ("image", pa.binary()),  # the stored page image, JPEG
    ("render_s", pa.float64()),
])

TIMING = ("render_s", "ocr_s", "embed_s", "records_s")
WORKERS = ("ocr_worker", "embed_worker")


def staging_schema(dim: int) -> pa.Schema:
    """Rows the pipeline writes to the staging dataset: pages rows + their regions + doc rows."""
    page_fields = [f.with_nullable(True) for f in pages_schema(dim) if f.name != "doc_id"]
    region_struct = pa.struct([f.with_nullable(True) for f in regions_schema()])
    return pa.schema([
        ("kind", pa.string()), ("doc_id", pa.string()), ("uri", pa.string()), ("size", pa.int64()),
        ("content_hash", pa.string()), ("page_count", pa.int32()), ("error", pa.string()),
        *page_fields,
        ("regions", pa.list_(region_struct)),
        *[(t, pa.float64()) for t in TIMING], *[(w, pa.string()) for w in WORKERS],
    ])


def worker_info(device: str | None = None) -> str:
    """JSON naming this process and the GPUs Ray assigned to it."""
    import ray

    try:
        gpus = [str(g) for g in ray.get_gpu_ids()]
    except Exception:  # outside a Ray worker
        gpus = []
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "gpu_ids": gpus,
                       "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                       "device": device or "cpu"}, sort_keys=True)


# ---------------------------------------------------------------------- render (tasks)
def _row(**values) -> dict:
    return {name: values.get(name) for name in RENDER_SCHEMA.names}


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=RENDER_SCHEMA)


HASH_SCHEMA = pa.schema([("uri", pa.string()), ("size", pa.int64()), ("content_hash", pa.string()),
                         ("error", pa.string())])


def hash_documents(batch: pa.Table, source: Source) -> pa.Table:
    """Read and hash each document of ``batch`` (column uri); a read error is kept as ``error``."""
    rows = []
    for uri in batch.column("uri").to_pylist():
        try:
            data = source.read(uri)
        except Exception as e:
            rows.append({"uri": uri, "size": None, "content_hash": None, "error": error_text(e, uri)})
            continue
        rows.append({"uri": uri, "size": len(data), "content_hash": content_hash(data), "error": None})
    return pa.Table.from_pylist(rows, schema=HASH_SCHEMA)


def unchanged(doc_hash: str | None, known: tuple[str, str, str] | None, settings_json: str,
              retry_failed: bool = False) -> bool:
    """Whether a document with content hash ``doc_hash`` needs no work, given the index's
    ``known`` (content_hash, settings JSON, status) for it."""
    if doc_hash is None or known is None:
        return False
    prev_hash, prev_settings, status = known
    return prev_hash == doc_hash and prev_settings == settings_json and (status == "indexed" or not retry_failed)


def render_documents(batch: pa.Table, source: Source, render: RenderOptions, image_quality: int = 85,
                     pages_per_block: int = 1) -> Iterator[pa.Table]:
    """Read, hash and render the documents of ``batch`` (column uri), streaming their pages.

    Pages are yielded as they are rendered (one document never sits whole in memory); the
    document's "doc" row (size, hash, page count, or the error that stopped it) comes last.
    """
    for uri in batch.column("uri").to_pylist():
        doc_id = doc_id_for(uri)
        t0 = time.perf_counter()
        try:
            data = source.read(uri)
        except Exception as e:
            log.warning("%s", e)
            yield _table([_row(kind=DOC, doc_id=doc_id, uri=uri, error=error_text(e, uri),
                               render_s=time.perf_counter() - t0)])
            continue
        digest = content_hash(data)  # of the bytes indexed now, even if the file changed since listing
        n, error, rows = 0, None, []
        pages = iter_pages(data, render, source=uri)
        while True:
            t = time.perf_counter()
            try:
                page: Page | None = next(pages, None)
            except Exception as e:  # DocumentError, or anything a broken file triggers in the decoder
                error = error_text(e, uri)
                log.warning("%s: %s", uri, error)
                break
            if page is None:
                break
            n += 1
            rows.append(_row(kind=PAGE, doc_id=doc_id, uri=uri, page_number=page.number, width=page.width,
                             height=page.height, width_pt=page.width_pt, height_pt=page.height_pt, dpi=page.dpi,
                             pixels=page_pixels(page), image=encode_image(page.image, image_quality),
                             render_s=time.perf_counter() - t))
            if len(rows) >= pages_per_block:
                yield _table(rows)
                rows = []
        if rows:
            yield _table(rows)
        yield _table([_row(kind=DOC, doc_id=doc_id, uri=uri, size=len(data), content_hash=digest,
                           page_count=None if error else n, error=error, render_s=time.perf_counter() - t0)])
        del data


def _pages(batch: pa.Table) -> list[int]:
    """Indices of the batch's page rows that have not failed yet."""
    kinds = batch.column("kind").to_pylist()
    errors = batch.column("error").to_pylist()
    return [i for i, (k, e) in enumerate(zip(kinds, errors)) if k == PAGE and e is None]


def _image(batch: pa.Table, i: int):
    return image_from_pixels(batch.column("pixels")[i].as_py(), batch.column("width")[i].as_py(),
                             batch.column("height")[i].as_py())


def _set_column(batch: pa.Table, name: str, values, type_=None) -> pa.Table:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type=type_)
    idx = batch.schema.get_field_index(name)
    if idx >= 0:
        return batch.set_column(idx, name, arr)
    return batch.append_column(name, arr)


# ---------------------------------------------------------------------- OCR (CPU actors)
class OcrStage:
    """OCR actor: the engine is built once; each call recognises a batch of pages."""

    def __init__(self, ocr: str = "paddle", threads: int | None = None):
        from dataclasses import fields, replace

        from snappy.ocr import make_ocr, parse_ocr_options

        options = parse_ocr_options(ocr)
        # ONNX Runtime takes every core by default: cap it at the actor's CPUs so pools don't oversubscribe.
        names = {f.name for f in fields(options)}
        for knob in ("num_threads", "cpu_threads"):  # rapid, paddle
            if threads and knob in names and getattr(options, knob) is None:
                options = replace(options, **{knob: threads})
        self.engine = make_ocr(options)
        self.worker = worker_info("cpu")
        log.info("OCR actor ready: %s %s", ocr, self.worker)

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        regions: list[str | None] = [None] * n
        seconds = [0.0] * n
        errors = batch.column("error").to_pylist()
        for i in _pages(batch):
            t = time.perf_counter()
            try:
                regions[i] = regions_to_json(self.engine.recognize(_image(batch, i)))
            except Exception as e:  # a page the engine chokes on fails its document, not the run
                errors[i] = f"OCR failed on page {batch.column('page_number')[i].as_py()}: {error_text(e, '')}"
                log.warning("%s: %s", batch.column("uri")[i].as_py(), errors[i])
            seconds[i] = time.perf_counter() - t
        batch = _set_column(batch, "error", errors, pa.string())
        batch = _set_column(batch, "regions_json", regions, pa.large_string())
        batch = _set_column(batch, "ocr_s", seconds, pa.float64())
        return _set_column(batch, "ocr_worker", [self.worker] * n, pa.string())


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

    def __init__(self, encoder: str = "lexical", dim: int = 128):
        self.device = _device()
        self.encoder = make_encoder(encoder, device=self.device if self.device != "cpu" else None)
        if self.encoder.dim != dim:
            raise ValueError(f"encoder {encoder!r} gives {self.encoder.dim}-d vectors, the index expects {dim}")
        self.dim = dim
        self.worker = worker_info(self.device)
        log.info("embed actor ready: %s %s", self.encoder.encoder_id, self.worker)

    def _embed(self, images, regions) -> list:
        return embed_pages(self.encoder, images, regions)

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        idx = _pages(batch)
        errors = batch.column("error").to_pylist()
        vectors: list[np.ndarray] = [np.zeros((0, self.dim), np.float16)] * n
        grids: list[str | None] = [None] * n
        n_tokens: list[int | None] = [None] * n
        seconds = [0.0] * n
        if idx:
            images = [_image(batch, i) for i in idx]
            regions = [regions_from_json(batch.column("regions_json")[i].as_py()) for i in idx]
            t = time.perf_counter()
            try:
                embs: list = self._embed(images, regions)
            except Exception:  # isolate the page that fails: embed one by one
                embs = []
                for i, img, regs in zip(idx, images, regions):
                    try:
                        embs.extend(self._embed([img], [regs]))
                    except Exception as e:
                        embs.append(None)
                        errors[i] = f"embedding failed on page {batch.column('page_number')[i].as_py()}: " \
                                    f"{error_text(e, '')}"
                        log.warning("%s: %s", batch.column("uri")[i].as_py(), errors[i])
            per_page = (time.perf_counter() - t) / len(idx)
            for i, emb in zip(idx, embs):
                seconds[i] = per_page
                if emb is not None:
                    vectors[i] = np.asarray(emb.vectors, np.float16)  # [n_tokens, dim]
                    grids[i] = emb.grid.to_json()
                    n_tokens[i] = int(emb.vectors.shape[0])
        batch = _set_column(batch, "error", errors, pa.string())
        batch = _set_column(batch, "vectors", vectors_array(vectors, self.dim))
        batch = _set_column(batch, "grid", grids, pa.string())
        batch = _set_column(batch, "n_tokens", n_tokens, pa.int32())
        batch = _set_column(batch, "embed_s", seconds, pa.float64())
        batch = _set_column(batch, "encoder_id", [self.encoder.encoder_id] * n, pa.string())
        batch = _set_column(batch, "embed_worker", [self.worker] * n, pa.string())
        return batch.drop_columns(["pixels"])  # no later stage needs them


# ---------------------------------------------------------------------- records (tasks)
PAGE_COLUMNS = ("page_number", "width", "height", "width_pt", "height_pt", "dpi", "image", "n_tokens", "grid",
                "encoder_id")


def build_records(batch: pa.Table, dim: int = 128) -> pa.Table:
    """Stream rows -> staging rows: the pages row and its regions, with region/patch overlaps precomputed."""
    from snappy.grid import PatchGrid

    schema = staging_schema(dim)
    n = batch.num_rows
    cols = {name: batch.column(name).to_pylist() for name in batch.schema.names if name not in ("vectors", "regions_json")}
    out: dict[str, list] = {name: cols.get(name, [None] * n) for name in schema.names if name != "vectors"}
    for name in PAGE_COLUMNS + ("page_id", "regions", "records_s"):
        if name not in cols:
            out[name] = [None] * n
    for i in range(n):  # page columns only on page rows that made it here
        if cols["kind"][i] != PAGE or out["error"][i] is not None:
            for name in PAGE_COLUMNS:
                out[name][i] = None
    vectors = batch.column("vectors")
    for i in _pages(batch):
        t = time.perf_counter()
        try:
            grid = PatchGrid.from_json(cols["grid"][i])
            regions = regions_from_json(batch.column("regions_json")[i].as_py())
            out["regions"][i] = region_records(cols["doc_id"][i], cols["page_number"][i], regions, grid)
            out["page_id"][i] = page_id_for(cols["doc_id"][i], cols["page_number"][i])
        except Exception as e:
            out["error"][i] = f"records failed on page {cols['page_number'][i]}: {error_text(e, '')}"
            log.warning("%s: %s", cols["uri"][i], out["error"][i])
        out["records_s"][i] = time.perf_counter() - t
    arrays = [vectors.combine_chunks() if f.name == "vectors" else pa.array(out[f.name], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)
