"""Shared fixtures: the generated sample corpus and the anchor data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray binds 127.0.0.1 only

REPO = Path(__file__).resolve().parent.parent
ANCHORS = REPO.parent / "shared" / "anchors"


@pytest.fixture(scope="session")
def anchors_dir() -> Path:
    if not ANCHORS.is_dir():
        pytest.skip(f"anchor data not found at {ANCHORS} (CI clones the repo with ../shared beside it)")
    return ANCHORS


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory):
    """(pdf paths, facts, docs) of snappy.synth's sample corpus, written once per session."""
    from snappy.synth import sample_corpus as build, write_corpus

    out = tmp_path_factory.mktemp("corpus")
    paths, facts = write_corpus(out)
    docs, _ = build()
    return paths, facts, docs


@pytest.fixture(scope="session")
def ocr_corpus(sample_corpus):
    """The sample corpus rendered at 100 dpi and OCR'd once (rapid engine): {(doc, page): (Page, regions)}."""
    from snappy.ocr import make_ocr
    from snappy.pages import RenderOptions, load_pages

    paths, facts, docs = sample_corpus
    ocr = make_ocr("rapid")
    out = {}
    for path in paths:
        for page in load_pages(path, RenderOptions(dpi=100)):
            out[(path.stem, page.number)] = (page, ocr.recognize(page.image))
    return out
