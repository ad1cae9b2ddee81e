"""Stable ids of documents, pages and regions, and the content hash of a document's bytes."""
from __future__ import annotations

import hashlib


def doc_id_for(uri: str | bytes) -> str:
    """Stable id of a document, from its source URI (or the raw bytes of a local path).

    A local name that is not valid UTF-8 arrives as a ``str`` with surrogate escapes (what
    ``os.walk`` gives) or as bytes: both hash the file system's own bytes, so the id is stable.
    """
    raw = uri if isinstance(uri, bytes) else uri.encode("utf-8", "surrogateescape")
    return hashlib.sha1(raw).hexdigest()[:16]


def page_id_for(doc_id: str, page_number: int) -> str:
    return f"{doc_id}-p{page_number:05d}"


def region_id_for(page_id: str, index: int) -> str:
    return f"{page_id}-r{index:05d}"


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
