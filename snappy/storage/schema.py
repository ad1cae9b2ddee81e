"""Arrow schemas of the five index tables, their names and the documents row builder.

documents: one row per source document (status ``indexed``, ``failed`` or ``pending``), keyed by doc_id.
pages:     one row per page: size, rendered image, patch vectors (image tokens only), grid.
regions:   one row per OCR region: boxes, text, and its sparse overlap with the page's patches.
codebook:  the candidate stage's centroids (snappy/candidates/centroids.py).
codes:     one row per page: its pooled, quantised vectors for the candidate stage.

The pages and regions rows of an indexed page are built in :mod:`snappy.indexing.records`; ids in :mod:`snappy.ids`.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Sequence

import numpy as np
import pyarrow as pa

from snappy.ids import doc_id_for

DOCUMENTS, PAGES, REGIONS = "documents", "pages", "regions"
CODEBOOK, CODES = "codebook", "codes"  # the candidate stage (snappy/candidates/centroids.py)
INDEXED, FAILED, PENDING = "indexed", "failed", "pending"
STATUSES = (INDEXED, FAILED, PENDING)  # pending: a transient failure of a document with no live rows yet
KEYS = {DOCUMENTS: "doc_id", PAGES: "page_id", REGIONS: "region_id", CODEBOOK: "centroid", CODES: "page_id"}
DEFAULT_DIM = 128
TABLES = (DOCUMENTS, PAGES, REGIONS, CODEBOOK, CODES)
ROW_TABLES = (PAGES, REGIONS, CODES)  # tables whose rows carry a generation


@dataclass(frozen=True)
class IndexSettings:
    """What a document was indexed with; a change means the document must be re-indexed."""

    encoder_id: str
    ocr_engine: str
    dpi: float
    text_layer: str = "off"  # PDF text layer: off | auto | only (snappy.documents.textlayer)

    def to_json(self) -> str:
        d = asdict(self)
        if d["text_layer"] == "off":  # what every run did before the setting existed: old rows stay equal
            del d["text_layer"]
        return json.dumps(d, sort_keys=True)


def documents_schema() -> pa.Schema:
    return pa.schema([
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        # Source fingerprint: a listed document whose fingerprint and settings are unchanged is
        # skipped without reading it (S3: size + ETag; local files: size + mtime).
        pa.field("size", pa.int64()),
        pa.field("etag", pa.string()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("content_hash", pa.string()),  # sha256 of the bytes indexed
        pa.field("page_count", pa.int32()),
        pa.field("status", pa.string()),  # see STATUSES
        pa.field("failure", pa.string()),  # "document" | "transient" | null (see snappy.documents.failures)
        pa.field("error", pa.string()),  # the reason; on an "indexed" row: the last update attempt failed
        pa.field("attempts", pa.int32()),  # consecutive transient failures (reset on success)
        pa.field("gen", pa.int64()),  # the generation of this document's live pages/regions rows
        pa.field("indexed_at", pa.timestamp("us", tz="UTC")),  # when its content was last indexed
        pa.field("checked_at", pa.timestamp("us", tz="UTC")),  # when this row was last written
        pa.field("encoder_id", pa.string()),
        pa.field("ocr_engine", pa.string()),
        pa.field("dpi", pa.float32()),
        pa.field("settings", pa.string()),  # IndexSettings JSON
    ])


def pages_schema(dim: int = DEFAULT_DIM) -> pa.Schema:
    return pa.schema([
        pa.field("page_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("page_number", pa.int32()),  # 1-based
        pa.field("width", pa.int32()),  # pixels
        pa.field("height", pa.int32()),
        pa.field("width_pt", pa.float32()),
        pa.field("height_pt", pa.float32()),
        pa.field("dpi", pa.float32()),
        pa.field("image", pa.binary()),  # the rendered page, JPEG
        pa.field("vectors", pa.list_(pa.list_(pa.float16(), dim))),  # [n_tokens, dim] image tokens
        pa.field("n_tokens", pa.int32()),
        pa.field("grid", pa.string()),  # PatchGrid JSON
        pa.field("encoder_id", pa.string()),
        pa.field("gen", pa.int64()),  # generation: live only if it equals the documents row's gen
        # Where the page's text came from (snappy.documents.textlayer.PageDecision): "pdf" (the text layer),
        # "ocr", "pdf+ocr" (OCR of image areas); why (a textlayer.CODES key), in words. Null: not recorded.
        pa.field("text_source", pa.string()),
        pa.field("text_code", pa.string()),
        pa.field("text_reason", pa.string()),
    ])


def regions_schema() -> pa.Schema:
    return pa.schema([
        pa.field("region_id", pa.string(), nullable=False),
        pa.field("page_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("page_number", pa.int32()),
        pa.field("region_index", pa.int32()),  # reading order on the page
        pa.field("bbox", pa.list_(pa.float32(), 4)),  # page pixels [x0, y0, x1, y1]
        pa.field("bbox_norm", pa.list_(pa.float32(), 4)),  # divided by page size
        pa.field("polygon", pa.list_(pa.float32())),  # flattened [x, y]*n, or null
        pa.field("text", pa.string()),
        pa.field("confidence", pa.float32()),
        pa.field("level", pa.string()),  # "line" (or "word") from OCR; "block": lines grouped (snappy.regions.blocks)
        pa.field("area", pa.float32()),  # px^2
        pa.field("patch_idx", pa.list_(pa.int32())),  # tokens the region overlaps
        pa.field("patch_inter", pa.list_(pa.float32())),  # intersection areas with them, px^2
        pa.field("gen", pa.int64()),  # generation (as pages)
        # last, so tables written before blocks gain it by migration with the same field order:
        pa.field("parent", pa.int32()),  # a line's block (its region_index); null for blocks and older indexes
        pa.field("source", pa.string()),  # "pdf" (text layer) | "ocr"; a block: "pdf" if all its lines are
    ])


def codebook_schema(dim: int = DEFAULT_DIM) -> pa.Schema:
    """One row per centroid of the candidate stage's codebook (rewritten whole when retrained)."""
    return pa.schema([
        pa.field("centroid", pa.int32(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dim)),  # unit vector
        pa.field("codebook_id", pa.int64()),  # names the training; codes rows carry it
        pa.field("trained_pages", pa.int64()),  # live pages when trained
        pa.field("train_similarity", pa.float32()),  # mean cosine of training tokens to their centroid
        pa.field("pool_scale", pa.float32()),  # int8 step of the pooled vectors (codes.pooled * pool_scale)
        pa.field("pool_factor", pa.int32()),  # tokens per pooled vector (absent in older indexes: 8)
        # 4-bit pooled vectors (codes.pooled4): value = pool_lo + code * pool_step per dimension, the
        # same on every row; null: the codes rows hold int8 (codes.pooled), as in older indexes
        pa.field("pool_lo", pa.list_(pa.float32(), dim)),
        pa.field("pool_step", pa.list_(pa.float32(), dim)),
        # the budgets measured on the index's own data and their estimated recall (JSON of
        # snappy.candidates.calibrate.Calibration, the same on every row; null: not calibrated yet)
        pa.field("calibration", pa.string()),
    ])


def codes_schema(dim: int = DEFAULT_DIM) -> pa.Schema:
    """One row per page: what the candidate stage keeps of it (a generation row, like pages)."""
    return pa.schema([
        pa.field("page_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("codebook_id", pa.int64()),
        pa.field("codes", pa.list_(pa.int32())),  # sorted unique centroids its tokens fall in
        pa.field("pooled", pa.list_(pa.list_(pa.int8(), dim))),  # its tokens pooled, int8 (x pool_scale); or null
        pa.field("similarity", pa.float32()),  # mean cosine of the page's tokens to their centroids
        pa.field("gen", pa.int64()),
        # last, so older tables gain it by migration; the same vectors at 4 bits (Codebook.pack4), set
        # instead of "pooled" when the codebook has pool ranges
        pa.field("pooled4", pa.list_(pa.list_(pa.uint8(), dim // 2))),
    ])


SCHEMAS = {DOCUMENTS: documents_schema, PAGES: pages_schema, REGIONS: regions_schema, CODEBOOK: codebook_schema,
           CODES: codes_schema}


def document_record(uri: str, settings: IndexSettings, *, size: int | None = None, digest: str | None = None,
                    page_count: int | None = None, error: str | None = None, gen: int | None = 0,
                    etag: str | None = None, mtime_ns: int | None = None, failure: str | None = None,
                    status: str | None = None, attempts: int = 0, doc_id: str | None = None,
                    indexed_at: datetime | None = None) -> dict:
    """A documents row. Without ``status``: ``failed`` (failure ``document``) if ``error`` else ``indexed``."""
    now = datetime.now(timezone.utc)
    status = status or (FAILED if error else INDEXED)
    if status not in STATUSES:
        raise ValueError(f"unknown document status {status!r}; expected one of {STATUSES}")
    return {
        "doc_id": doc_id or doc_id_for(uri), "uri": uri, "size": size, "etag": etag, "mtime_ns": mtime_ns,
        "content_hash": digest, "page_count": page_count, "status": status,
        "failure": failure or ("document" if status == FAILED else None), "error": error, "attempts": attempts,
        "gen": gen if status == INDEXED else None, "indexed_at": indexed_at or now, "checked_at": now,
        "encoder_id": settings.encoder_id, "ocr_engine": settings.ocr_engine, "dpi": settings.dpi,
        "settings": settings.to_json(),
    }


def encode_image(image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    (image if image.mode == "RGB" else image.convert("RGB")).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def to_table(name: str, records: list[dict], dim: int = DEFAULT_DIM) -> pa.Table:
    """Records -> an Arrow table of the named index table's schema."""
    if name != PAGES:
        return pa.Table.from_pylist(records, schema=SCHEMAS[name]())
    schema = pages_schema(dim)
    others = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "vectors"} for r in records],
                                  schema=schema.remove(schema.get_field_index("vectors")))
    return others.add_column(schema.get_field_index("vectors"), schema.field("vectors"),
                             vectors_array([r["vectors"] for r in records], dim))


def vectors_array(per_page: Sequence[np.ndarray], dim: int = DEFAULT_DIM) -> pa.ListArray:
    """``list<fixed_size_list<float16, dim>>`` from per-page ``[n_tokens, dim]`` arrays, without Python loops over rows."""
    arrays = [np.asarray(v, dtype=np.float16).reshape(-1, dim) for v in per_page]
    offsets = np.concatenate([[0], np.cumsum([a.shape[0] for a in arrays])]).astype(np.int32)
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.float16)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float16()), dim)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)
