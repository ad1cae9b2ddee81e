"""Indexing one document, without Ray: bytes -> pages -> regions (text layer / OCR) -> patch vectors -> rows.

The Ray stages in ``pipelines/stages.py`` compose the same library pieces (pages, textlayer, ocr,
encoders, storage.schema) batch by batch across processes; this runs them for one document in this
process (a notebook, a unit test, a one-off re-index)::

    enc, ocr = snappy.encoders.make_encoder("lexical"), snappy.ocr.make_ocr("rapid")
    settings = IndexSettings(enc.encoder_id, "rapid", 150.0, text_layer="auto")
    out = index_document("a.pdf", Path("a.pdf").read_bytes(), enc, ocr, settings)
    store.upsert([out.document], out.pages, out.regions)      # one commit, under the index's lease

A document that cannot be read becomes a ``failed`` documents row with the reason
(:class:`snappy.errors.DocumentError`); nothing else of it is written.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import pyarrow as pa
from PIL import Image

from snappy.documents import textlayer
from snappy.encoders.base import Encoder, PageEmbedding
from snappy.ocr.base import OcrEngine
from snappy.errors import DocumentError
from snappy.documents.pages import Page, RenderOptions, iter_pages
from snappy.regions.region import Region
from snappy.ids import content_hash, doc_id_for
from snappy.indexing.records import page_record, region_table
from snappy.storage.schema import IndexSettings, document_record, encode_image, regions_schema

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------- regions <-> JSON
def regions_to_json(regions: Sequence[Region]) -> str:
    return json.dumps([r.to_dict() for r in regions], separators=(",", ":"))


def regions_from_json(s: str | None) -> list[Region]:
    return [Region.from_dict(d) for d in json.loads(s)] if s else []


# ---------------------------------------------------------------------- one document
def embed_pages(encoder: Encoder, images: Sequence[Image.Image],
                regions: Sequence[Sequence[Region]]) -> list[PageEmbedding]:
    """One embedding per image, checked against the encoder's grid."""
    embs = encoder.embed_pages(list(images), [list(r) for r in regions] if encoder.needs_regions else None)
    if len(embs) != len(images):
        raise RuntimeError(f"{encoder.encoder_id}: {len(embs)} embeddings for {len(images)} pages")
    return embs


def page_rows(doc_id: str, page: Page, regions: Sequence[Region], embedding: PageEmbedding, encoder_id: str,
              image_quality: int = 85) -> tuple[dict, pa.Table]:
    """The pages row and the regions rows (overlaps precomputed) of one page."""
    row = page_record(doc_id, page, embedding, encoder_id, encode_image(page.image, image_quality))
    return row, region_table(doc_id, page.number, regions, embedding.grid)


@dataclass
class IndexedDocument:
    document: dict  # documents row (status "indexed" or "failed")
    pages: list[dict] = field(default_factory=list)
    regions: pa.Table = field(default_factory=lambda: regions_schema().empty_table())
    seconds: dict[str, float] = field(default_factory=dict)  # render / ocr / embed / records

    @property
    def failed(self) -> bool:
        return self.document["status"] == "failed"


def index_document(uri: str, data: bytes, encoder: Encoder, ocr: OcrEngine, settings: IndexSettings,
                   render: RenderOptions | None = None, batch_size: int = 8,
                   image_quality: int = 85) -> IndexedDocument:
    """Index one document in this process; a DocumentError gives a ``failed`` documents row."""
    render = render or RenderOptions(dpi=settings.dpi, text_layer=settings.text_layer)
    size, digest = len(data), content_hash(data)
    secs = {"render": 0.0, "ocr": 0.0, "embed": 0.0, "records": 0.0}
    pages, regions = [], []
    n, check = 0, None
    try:
        it = iter_pages(data, render, source=uri)
        while True:
            t = time.perf_counter()
            batch = [p for _, p in zip(range(batch_size), it)]
            secs["render"] += time.perf_counter() - t
            if not batch:
                break
            t = time.perf_counter()
            if render.text_layer == "auto":  # once per document, on its first page with lines worth reading
                for k, p in enumerate(batch):
                    if check is None and p.regions and textlayer.pick_check_lines(p.regions):
                        check = textlayer.verify_with_ocr(p.image, p.regions, ocr)
                    batch[k] = p.checked(check)  # as the read stage does: from the checked page on
            regs = [textlayer.page_regions(p.image, p.regions or [], p.decision, ocr) for p in batch]
            secs["ocr"] += time.perf_counter() - t
            t = time.perf_counter()
            embs = embed_pages(encoder, [p.image for p in batch], regs)
            secs["embed"] += time.perf_counter() - t
            t = time.perf_counter()
            for page, r, e in zip(batch, regs, embs):
                prow, rrows = page_rows(doc_id_for(uri), page, r, e, encoder.encoder_id, image_quality)
                pages.append(prow)
                regions.append(rrows)
            secs["records"] += time.perf_counter() - t
            n += len(batch)
    except DocumentError as e:
        log.warning("%s", e)
        return IndexedDocument(document_record(uri, settings, size=size, digest=digest, error=e.reason),
                               seconds=secs)
    record = document_record(uri, settings, size=size, digest=digest, page_count=n)
    return IndexedDocument(record, pages, pa.concat_tables(regions) if regions else regions_schema().empty_table(), secs)
