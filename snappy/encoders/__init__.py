"""Encoders: ``make_encoder(spec)`` builds one from a CLI-style spec or a stored encoder_id.

Specs: ``lexical`` (weight-free), ``tiny`` / ``tiny:colqwen2`` / ``tiny:colidefics3`` (tiny random
models built offline, for tests), a colpali-engine alias (``colqwen2.5``, ``colpali``, ...), a
Hugging Face id or a local model folder. Neural encoders import torch lazily.
"""
from __future__ import annotations

from snappy.encoders.base import Encoder, PageEmbedding
from snappy.encoders.lexical import LexicalEncoder, LexicalOptions

__all__ = ["Encoder", "PageEmbedding", "LexicalEncoder", "LexicalOptions", "make_encoder"]


def make_encoder(spec: str = "lexical", **options) -> Encoder:
    """An encoder from a spec (see module doc) or from the ``encoder_id`` an index stored."""
    spec = spec.strip()
    if spec == "lexical":
        return LexicalEncoder(LexicalOptions(**options))
    if spec.startswith("lexical:"):
        return LexicalEncoder(_parse_lexical_id(spec))
    from snappy.encoders.colpali import ColpaliEncoder  # torch + colpali-engine: import only when asked

    if spec == "tiny" or spec.startswith("tiny:"):
        family = spec.partition(":")[2] or "colqwen2.5"
        return ColpaliEncoder.tiny(family, **options)
    if hasattr(ColpaliEncoder, "from_id") and "|" in spec:
        return ColpaliEncoder.from_id(spec)
    return ColpaliEncoder.from_spec(spec, **options)


def _parse_lexical_id(encoder_id: str) -> LexicalOptions:
    """Inverse of LexicalEncoder.encoder_id (``lexical:d128:p28:t768:h8:s0``)."""
    keys = {"d": "dim", "p": "patch_px", "t": "max_num_visual_tokens", "h": "hashes", "s": "seed"}
    fields = {}
    for part in encoder_id.split(":")[1:]:
        if not part or part[0] not in keys or not part[1:].isdigit():
            raise ValueError(f"bad lexical encoder id {encoder_id!r}")
        fields[keys[part[0]]] = int(part[1:])
    return LexicalOptions(**fields)
