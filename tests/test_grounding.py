"""End to end without Ray: generated PDFs -> real OCR -> lexical encoder -> MaxSim pages -> regions."""
import numpy as np

from snappy.encoders.lexical import LexicalEncoder
from snappy.regions.propagation import RegionOverlap, patch_scores, region_scores, select_regions
from snappy.regions.region import boxes_array
from snappy.eval.metrics import iou_matrix


def iou(a, b) -> float:
    return float(iou_matrix([a], [b])[0, 0])


def test_query_words_land_in_the_region_that_holds_them(sample_corpus, ocr_corpus):
    _, facts, docs = sample_corpus
    enc = LexicalEncoder()
    embedded = {k: enc.embed_regions(page.size, regions) for k, (page, regions) in ocr_corpus.items()}
    for fact in facts:
        (q,) = enc.embed_queries([fact.query])
        page_scores = {k: float((q @ e.vectors.astype(np.float32).T).max(axis=1).sum()) for k, e in embedded.items()}
        best = max(page_scores, key=page_scores.get)
        assert best == (fact.doc, fact.page_number), f"{fact.query!r}: top page {best}"

        page, regions = ocr_corpus[best]
        emb = embedded[best]
        overlap = RegionOverlap.build(emb.grid.boxes(), boxes_array(regions))
        scores = region_scores(patch_scores(q, emb.vectors), overlap)
        top_index = select_regions(scores, "top1")[0]
        top = regions[top_index]
        truth = docs_page(docs, fact).line_boxes_px(fact.line_text, dpi=100)
        assert max(iou(top.bbox, t) for t in truth) >= 0.5, f"{fact.query!r}: top region {top.text!r} {top.bbox}"
        # p50 keeps the answer and drops at least half of the page
        kept = select_regions(scores, "p50")
        assert top_index in kept and len(kept) <= (len(regions) + 1) // 2


def docs_page(docs, fact):
    return next(d for d in docs if d.name == fact.doc).pages[fact.page_number - 1]
