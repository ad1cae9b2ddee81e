"""Small hand-made indexes without OCR or a model, for tests, benchmarks and demos.

- :func:`write_index` writes pages you describe (regions with text, optional vectors) through
  the real record builders and :class:`IndexStore`; vectors default to the weight-free lexical
  encoder, so queries return real regions.
- :func:`write_random_pages` writes N pages of random unit vectors (the MaxSim benchmark).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa
from PIL import Image

from snappy.encoders.base import Encoder, PageEmbedding
from snappy.grid import PatchGrid
from snappy.pages import Page
from snappy.regions import Region
from snappy.storage.schema import (PAGES, REGIONS, IndexSettings, doc_id_for, document_record,
                                   page_id_for, page_record, region_records, to_table, vectors_array)
from snappy.storage.tables import IndexStore


@dataclass
class SynthPageSpec:
    size: tuple[int, int]  # (width, height) px
    regions: list[tuple[tuple[float, float, float, float], str]]  # (bbox px, text)
    vectors: np.ndarray | None = None  # [n_tokens, dim]; None: the encoder embeds the regions
    grid: PatchGrid | None = None  # with ``vectors``


@dataclass
class SynthDocSpec:
    uri: str
    pages: list[SynthPageSpec] = field(default_factory=list)
    error: str | None = None  # a failed document


def _page_image(spec: SynthPageSpec) -> Image.Image:
    from PIL import ImageDraw

    img = Image.new("RGB", spec.size, "white")
    draw = ImageDraw.Draw(img)
    for (x0, y0, x1, y1), text in spec.regions:
        draw.rectangle([x0, y0, x1, y1], outline=(200, 200, 200))
        draw.text((x0 + 2, y0 + 2), text, fill="black")
    return img


def write_index(uri: str, docs: Sequence[SynthDocSpec], encoder: Encoder | None = None,
                storage_options=None, dim: int = 128) -> IndexStore:
    """Write ``docs`` into an index at ``uri`` (one upsert per table) and return its store."""
    if encoder is None:
        from snappy.encoders.lexical import LexicalEncoder

        encoder = LexicalEncoder()
    settings = IndexSettings(encoder_id=encoder.encoder_id, ocr_engine="synthetic", dpi=72.0)
    doc_rows, page_rows, region_rows = [], [], []
    for d in docs:
        doc_id = doc_id_for(d.uri)
        if d.error:
            doc_rows.append(document_record(d.uri, settings, error=d.error))
            continue
        doc_rows.append(document_record(d.uri, settings, size=0, digest="", page_count=len(d.pages)))
        for n, spec in enumerate(d.pages, start=1):
            image = _page_image(spec)
            regions = [Region(bbox=b, page_size=spec.size, text=t) for b, t in spec.regions]
            if spec.vectors is not None:
                emb = PageEmbedding(np.asarray(spec.vectors, np.float16), spec.grid)
            else:
                emb = encoder.embed_pages([image], [regions])[0]
            page = Page(image=image, number=n, width_pt=float(spec.size[0]), height_pt=float(spec.size[1]),
                        dpi=72.0, source=d.uri)
            page_rows.append(page_record(doc_id, page, emb, encoder.encoder_id))
            region_rows.extend(region_records(doc_id, n, regions, emb.grid))
    store = IndexStore(uri, storage_options)
    store.upsert(doc_rows, to_table(PAGES, page_rows, dim) if page_rows else None,
                 to_table(REGIONS, region_rows) if region_rows else None, dim=dim)
    return store


def random_unit_pages(n_pages: int, n_tokens: int = 1024, dim: int = 128, seed: int = 0,
                      dtype=np.float16) -> np.ndarray:
    """``[n_pages, n_tokens, dim]`` random unit vectors."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n_pages, n_tokens, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return v.astype(dtype)


def write_random_pages(uri: str, n_pages: int, n_tokens: int = 1024, dim: int = 128, seed: int = 0,
                       batch_pages: int = 250, storage_options=None) -> IndexStore:
    """An index of ``n_pages`` one-page documents of random unit vectors (no regions, no images)."""
    store = IndexStore(uri, storage_options)
    grid = PatchGrid.uniform("random", (n_tokens * 4, 4), 1, n_tokens).to_json()
    settings = IndexSettings(encoder_id=f"random:d{dim}", ocr_engine="none", dpi=72.0)
    docs = [document_record(f"synthetic://{i:06d}", settings, page_count=1) for i in range(n_pages)]
    schema = to_table(PAGES, [], dim).schema

    def batches():
        for start in range(0, n_pages, batch_pages):
            ids = range(start, min(start + batch_pages, n_pages))
            vecs = random_unit_pages(len(ids), n_tokens, dim, seed + start)
            cols = {
                "page_id": [page_id_for(doc_id_for(f"synthetic://{i:06d}"), 1) for i in ids],
                "doc_id": [doc_id_for(f"synthetic://{i:06d}") for i in ids],
                "page_number": [1] * len(ids), "width": [n_tokens * 4] * len(ids), "height": [4] * len(ids),
                "width_pt": [float(n_tokens * 4)] * len(ids), "height_pt": [4.0] * len(ids), "dpi": [72.0] * len(ids),
                "image": [None] * len(ids), "vectors": vectors_array(list(vecs), dim),
                "n_tokens": [n_tokens] * len(ids), "grid": [grid] * len(ids), "encoder_id": [f"random:d{dim}"] * len(ids),
                "gen": [0] * len(ids),  # replaced by each document's generation when written
            }
            yield pa.RecordBatch.from_arrays([pa.array(cols[f.name], f.type) if f.name != "vectors" else cols[f.name]
                                              for f in schema], schema=schema)

    store.upsert(docs, pa.RecordBatchReader.from_batches(schema, batches()), dim=dim)
    return store
