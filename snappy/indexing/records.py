"""Rows of the pages and regions tables built from what indexing a page produced (its image,
embedding, regions and text-layer decision); the schemas they fill are in
:mod:`snappy.storage.schema`. Kept out of the schema module so that storage depends on nothing
above it (blocks, overlaps, encoders).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from snappy.regions.blocks import with_blocks
from snappy.encoders.base import PageEmbedding
from snappy.ids import page_id_for, region_id_for
from snappy.documents.pages import Page
from snappy.regions.propagation import RegionOverlap
from snappy.regions.region import Region, boxes_array
from snappy.storage.schema import encode_image, regions_schema


def page_record(doc_id: str, page: Page, embedding: PageEmbedding, encoder_id: str,
                image_bytes: bytes | None = None, gen: int = 0) -> dict:
    vectors = np.asarray(embedding.vectors, dtype=np.float16)  # [n_tokens, dim]
    return {
        "page_id": page_id_for(doc_id, page.number), "doc_id": doc_id, "page_number": page.number,
        "width": page.width, "height": page.height, "width_pt": page.width_pt, "height_pt": page.height_pt,
        "dpi": page.dpi, "image": image_bytes if image_bytes is not None else encode_image(page.image),
        "vectors": vectors, "n_tokens": vectors.shape[0], "grid": embedding.grid.to_json(),
        "encoder_id": encoder_id, "gen": gen, **text_columns(page.decision),
    }


def text_columns(decision) -> dict:
    """The pages row's ``text_source`` / ``text_code`` / ``text_reason`` of a page's
    :class:`snappy.documents.textlayer.PageDecision` (None: the text layer was off, OCR read the page)."""
    if decision is None:
        return {"text_source": "ocr", "text_code": "off", "text_reason": "text layer off"}
    return {"text_source": decision.source, "text_code": decision.code, "text_reason": decision.reason}


def region_table(doc_id: str, page_number: int, regions: Sequence[Region], embedding_grid,
                 gen: int = 0, blocks: bool = True) -> pa.Table:
    """The regions rows of one page (``regions_schema``), with their overlap on the page's patch grid
    precomputed: the OCR lines, then (``blocks``) the blocks they form (``snappy.regions.blocks``),
    each line naming its block. Built column by column."""
    page_id = page_id_for(doc_id, page_number)
    regions, parent = with_blocks(regions) if blocks else (list(regions), np.full(len(regions), -1))
    n = len(regions)
    boxes = boxes_array(regions) if n else np.zeros((0, 4), np.float32)  # [R, 4] page px
    inter = RegionOverlap.build(embedding_grid.boxes(), boxes).inter  # CSR [R, P]: intersection areas
    offsets = pa.array(inter.indptr.astype(np.int32))
    parent = np.asarray(parent)
    columns = {
        "region_id": [region_id_for(page_id, i) for i in range(n)],
        "page_id": [page_id] * n, "doc_id": [doc_id] * n,
        "page_number": np.full(n, page_number, np.int32), "region_index": np.arange(n, dtype=np.int32),
        "bbox": _fixed4(boxes), "bbox_norm": _fixed4(np.array([r.bbox_norm for r in regions], np.float32).reshape(n, 4)),
        "polygon": [[c for pt in r.polygon for c in pt] if r.polygon else None for r in regions],
        "text": [r.text for r in regions], "confidence": np.array([r.confidence for r in regions], np.float32),
        "level": [r.level for r in regions], "area": np.array([r.area for r in regions], np.float32),
        "patch_idx": pa.ListArray.from_arrays(offsets, pa.array(inter.indices.astype(np.int32))),
        "patch_inter": pa.ListArray.from_arrays(offsets, pa.array(inter.data.astype(np.float32))),
        "gen": np.full(n, gen, np.int64),
        "parent": pa.array(parent.astype(np.int32), mask=parent < 0),
        "source": [r.source for r in regions],
    }
    schema = regions_schema()
    return pa.Table.from_arrays([pa.array(columns[f.name], f.type) if not isinstance(columns[f.name], pa.Array)
                                 else columns[f.name] for f in schema], schema=schema)


def _fixed4(a: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(a, np.float32).reshape(-1)), 4)
