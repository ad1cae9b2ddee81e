"""Rows of the pages and regions tables built from what indexing a page produced (its image,
embedding, regions and text-layer decision); the schemas they fill are in
:mod:`snappy.storage.schema`. Kept out of the schema module so that storage depends on nothing
above it (blocks, overlaps, encoders).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from snappy.regions.blocks import with_blocks
from snappy.encoders.base import PageEmbedding
from snappy.ids import page_id_for, region_id_for
from snappy.documents.pages import Page
from snappy.regions.propagation import RegionOverlap
from snappy.regions.region import Region, boxes_array
from snappy.storage.schema import encode_image


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


def region_records(doc_id: str, page_number: int, regions: Sequence[Region], embedding_grid,
                   gen: int = 0, blocks: bool = True) -> list[dict]:
    """Region rows of one page, with their overlap on the page's patch grid precomputed: the OCR
    lines, then (``blocks``) the blocks they form (``snappy.regions.blocks``), each line naming its block."""
    page_id = page_id_for(doc_id, page_number)
    regions, parent = with_blocks(regions) if blocks else (list(regions), np.full(len(regions), -1))
    overlap = RegionOverlap.build(embedding_grid.boxes(), boxes_array(regions))
    idx, inter = overlap.to_lists()
    return [{
        "region_id": region_id_for(page_id, i), "page_id": page_id, "doc_id": doc_id,
        "page_number": page_number, "region_index": i, "bbox": list(r.bbox), "bbox_norm": list(r.bbox_norm),
        "polygon": [c for pt in r.polygon for c in pt] if r.polygon else None, "text": r.text,
        "confidence": r.confidence, "level": r.level, "parent": int(parent[i]) if parent[i] >= 0 else None,
        "area": r.area, "patch_idx": idx[i], "patch_inter": inter[i], "gen": gen, "source": r.source,
    } for i, r in enumerate(regions)]
