"""Small hand-made indexes without OCR or a model, for tests, benchmarks and demos.

- :func:`write_index` writes pages you describe (regions with text, optional vectors) through
  the real record builders and :class:`IndexStore`; vectors default to the weight-free lexical
  encoder, so queries return real regions.
- :func:`write_random_pages` writes N pages of random unit vectors (the MaxSim benchmark).
- :class:`StructuredCorpus` / :func:`write_vector_pages` write pages that look like
  late-interaction page embeddings, with queries that target one page each (the search
  benchmark): recall on uniform noise says nothing about a real index.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa
from PIL import Image

from snappy.encoders.base import Encoder, PageEmbedding
from snappy.patches.grid import PatchGrid
from snappy.documents.pages import Page
from snappy.regions.region import Region
from snappy.ids import doc_id_for, page_id_for
from snappy.indexing.records import page_record, region_table
from snappy.storage.schema import PAGES, IndexSettings, document_record, to_table, vectors_array
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
            region_rows.append(region_table(doc_id, n, regions, emb.grid))
    store = IndexStore(uri, storage_options)
    store.upsert(doc_rows, to_table(PAGES, page_rows, dim) if page_rows else None,
                 pa.concat_tables(region_rows) if region_rows else None, dim=dim)
    return store


def random_unit_pages(n_pages: int, n_tokens: int = 1024, dim: int = 128, seed: int = 0,
                      dtype=np.float16) -> np.ndarray:
    """``[n_pages, n_tokens, dim]`` random unit vectors."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n_pages, n_tokens, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return v.astype(dtype)


@dataclass(frozen=True)
class StructuredCorpus:
    """Synthetic page embeddings with the structure of ColPali-family pages, deterministic per page.

    - A **vocabulary** of ``vocabulary`` concept centroids (unit vectors): what a patch can show.
      Concepts are drawn with a Zipf law (exponent ``zipf``): a few appear on most pages (headers,
      boilerplate), most on few pages (the facts a query asks for).
    - A page shows ``concepts`` (uniform in the range) concepts; each of its content tokens is one of
      them plus Gaussian noise of norm ``noise`` relative to the centroid, re-normalised: neighbouring
      patches of one word or figure are similar but not identical.
    - ``background`` of a page's tokens are near-identical **background** tokens (one of
      ``background_styles`` unit vectors with noise ``background_noise``): white margins, rules.
    - A **query** targets one page: ``query_concepts`` of that page's concepts (rarer ones more
      likely), one token each with noise ``query_noise`` (a query paraphrases), plus
      ``query_prefix`` tokens shared by every query (the encoder's instruction prefix).

    ``page(i)`` and ``query(j)`` depend only on ``(seed, i)`` / ``(seed, j)``, so the exact top-k of a
    100,000-page index is computed by regenerating pages chunk by chunk, without reading them back.
    """

    n_pages: int
    n_tokens: int = 1024
    dim: int = 128
    vocabulary: int = 8192
    zipf: float = 1.05
    concepts: tuple[int, int] = (24, 72)
    background: float = 0.45
    background_styles: int = 8
    noise: float = 0.6
    background_noise: float = 0.08
    query_concepts: tuple[int, int] = (6, 14)
    query_noise: float = 0.7
    query_prefix: int = 8
    seed: int = 0

    def _rng(self, kind: int, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, kind, i])

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    def _noisy(self, rng, centers: np.ndarray, level: float) -> np.ndarray:
        noise = rng.standard_normal(centers.shape, dtype=np.float32) * (level / np.sqrt(self.dim))
        return self._unit(centers + noise)

    def vocabulary_vectors(self) -> np.ndarray:
        """``[vocabulary + background_styles + query_prefix, dim]`` the fixed vectors of the corpus."""
        rng = self._rng(0, 0)
        n = self.vocabulary + self.background_styles + self.query_prefix
        return self._unit(rng.standard_normal((n, self.dim), dtype=np.float32))

    def _popularity(self) -> np.ndarray:
        w = 1.0 / np.arange(1, self.vocabulary + 1) ** self.zipf
        return w / w.sum()

    def page_concepts(self, i: int) -> np.ndarray:
        rng = self._rng(1, i)
        m = int(rng.integers(self.concepts[0], self.concepts[1] + 1))
        return rng.choice(self.vocabulary, size=m, replace=False, p=self._popularity())

    def page(self, i: int, vocab: np.ndarray | None = None) -> np.ndarray:
        """``[n_tokens, dim]`` float16 unit vectors of page ``i``."""
        vocab = self.vocabulary_vectors() if vocab is None else vocab
        rng = self._rng(2, i)
        concepts = self.page_concepts(i)
        n_bg = int(round(self.background * self.n_tokens))
        styles = rng.integers(0, 2, size=n_bg) + rng.integers(0, self.background_styles // 2, size=1)  # 2 styles a page
        bg = self._noisy(rng, vocab[self.vocabulary + styles], self.background_noise)
        owners = concepts[rng.integers(0, len(concepts), size=self.n_tokens - n_bg)]
        content = self._noisy(rng, vocab[owners], self.noise)
        tokens = np.concatenate([bg, content])
        return tokens[rng.permutation(len(tokens))].astype(np.float16)

    def query(self, j: int, vocab: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """``([t, dim] float32 query tokens, target page)`` of query ``j``."""
        vocab = self.vocabulary_vectors() if vocab is None else vocab
        rng = self._rng(3, j)
        target = int(rng.integers(0, self.n_pages))
        concepts = self.page_concepts(target)
        rarity = 1.0 / self._popularity()[concepts]
        k = int(min(len(concepts), rng.integers(self.query_concepts[0], self.query_concepts[1] + 1)))
        chosen = rng.choice(concepts, size=k, replace=False, p=rarity / rarity.sum())
        prefix = vocab[self.vocabulary + self.background_styles:]
        return np.concatenate([prefix, self._noisy(rng, vocab[chosen], self.query_noise)]), target

    def pages(self, start: int, stop: int, vocab: np.ndarray | None = None) -> list[np.ndarray]:
        vocab = self.vocabulary_vectors() if vocab is None else vocab
        return [self.page(i, vocab) for i in range(start, stop)]


def flat_corpus(n_pages: int, seed: int = 0, **kw) -> StructuredCorpus:
    """A flatter vocabulary (32,768 concepts, Zipf 0.9), 60 % background and short noisy queries
    (3-6 concepts, noise 0.85): the pooled rescoring and the probe both lose more here than on the
    default corpus (issue 15)."""
    return StructuredCorpus(n_pages, vocabulary=32768, zipf=0.9, background=0.6, query_concepts=(3, 6),
                            query_noise=0.85, seed=seed, **kw)


@dataclass(frozen=True)
class TemplateCorpus(StructuredCorpus):
    """Near-duplicates: pages in groups of ``group`` consecutive pages (one supplier's invoices) show the
    same template's concepts, plus ``specific`` page-specific concepts drawn uniformly from the whole
    vocabulary (so rare). A query (as :class:`StructuredCorpus`'s, rarer concepts more likely) then
    names mostly its page's specific concepts and a few of the template's: the exact top-10 beyond the
    target are pages of the same template, near-identical to each other."""

    group: int = 1000
    specific: tuple[int, int] = (3, 6)

    def page_concepts(self, i: int) -> np.ndarray:
        t = self._rng(4, i // self.group)
        m = int(t.integers(self.concepts[0], self.concepts[1] + 1))
        template = t.choice(self.vocabulary, size=m, replace=False, p=self._popularity())
        rng = self._rng(1, i)
        own = rng.choice(self.vocabulary, size=int(rng.integers(self.specific[0], self.specific[1] + 1)), replace=False)
        return np.unique(np.concatenate([template, own]))


def corpus_named(name: str, n_pages: int, seed: int = 0) -> StructuredCorpus:
    """The benchmark's corpora by name: ``structured`` (:class:`StructuredCorpus`), ``flat``
    (:func:`flat_corpus`), ``templates100`` / ``templates1000`` (:class:`TemplateCorpus` with groups of
    100 / 1,000 pages)."""
    if name == "structured":
        return StructuredCorpus(n_pages, seed=seed)
    if name == "flat":
        return flat_corpus(n_pages, seed=seed)
    if name.startswith("templates"):
        return TemplateCorpus(n_pages, seed=seed, group=int(name[len("templates"):] or 1000))
    raise ValueError(f"unknown corpus {name!r}: structured, flat, templates100, templates1000")


def _page_batch(schema: pa.Schema, uris: list[str], vecs, grids: list[str], encoder_id: str, dim: int) -> pa.RecordBatch:
    """A pages batch of one-page documents ``uris`` with these vectors and grids (no image; columns
    not set here, e.g. the text source, are null)."""
    n = len(uris)
    doc_ids = [doc_id_for(u) for u in uris]
    cols = {
        "page_id": [page_id_for(d, 1) for d in doc_ids], "doc_id": doc_ids, "page_number": [1] * n,
        "width": [len(v) * 4 for v in vecs], "height": [4] * n, "width_pt": [float(len(v) * 4) for v in vecs],
        "height_pt": [4.0] * n, "dpi": [72.0] * n, "n_tokens": [len(v) for v in vecs], "grid": grids,
        "encoder_id": [encoder_id] * n,
        "gen": [0] * n,  # replaced by each document's generation when written
    }
    return pa.RecordBatch.from_arrays([vectors_array(list(vecs), dim) if f.name == "vectors" else
                                       pa.array(cols.get(f.name, [None] * n), f.type) for f in schema], schema=schema)


def write_vector_pages(uri: str, n_pages: int, page_vectors, encoder_id: str, dim: int = 128,
                       batch_pages: int = 250, storage_options=None, name: str = "synthetic") -> IndexStore:
    """An index of ``n_pages`` one-page documents whose vectors are ``page_vectors(start, stop) -> [arrays]``
    (no regions, no images), written in one streaming commit."""
    store = IndexStore(uri, storage_options)
    settings = IndexSettings(encoder_id=encoder_id, ocr_engine="none", dpi=72.0)
    uris = [f"{name}://{i:07d}" for i in range(n_pages)]
    docs = [document_record(u, settings, page_count=1) for u in uris]
    schema = to_table(PAGES, [], dim).schema

    def batches():
        for start in range(0, n_pages, batch_pages):
            vecs = page_vectors(start, min(start + batch_pages, n_pages))
            grids = [PatchGrid.uniform("synthetic", (len(v) * 4, 4), 1, len(v)).to_json() for v in vecs]
            yield _page_batch(schema, uris[start:start + len(vecs)], vecs, grids, encoder_id, dim)

    store.upsert(docs, pa.RecordBatchReader.from_batches(schema, batches()), dim=dim)
    return store


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
            yield _page_batch(schema, [f"synthetic://{i:06d}" for i in ids], vecs, [grid] * len(ids),
                              f"random:d{dim}", dim)

    store.upsert(docs, pa.RecordBatchReader.from_batches(schema, batches()), dim=dim)
    return store
