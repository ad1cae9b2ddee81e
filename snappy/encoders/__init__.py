"""Encoders: ``make_encoder(spec)`` builds one from a CLI-style spec or a stored encoder_id.

Specs: ``lexical`` (weight-free), ``null`` (zero vectors, for overhead benchmarks), ``tiny`` /
``tiny:colqwen2`` / ``tiny:colidefics3`` (tiny random models built offline, for tests), a
colpali-engine alias (``colqwen2.5``, ``colpali``, ...), a Hugging Face id or a local model folder.
Stored ids (``Encoder.encoder_id``, kept in the index) are parsed back: ``lexical:d128:p28:...``,
``null:d128``, ``colpali:<family>:<model or tiny-<family>-s<seed>-vN>:<geometry>``.
Neural encoders import torch lazily.
"""
from __future__ import annotations

import re

from snappy.encoders.base import Encoder, PageEmbedding
from snappy.encoders.lexical import LexicalEncoder, LexicalOptions
from snappy.encoders.null import NullEncoder

__all__ = ["Encoder", "PageEmbedding", "LexicalEncoder", "LexicalOptions", "NullEncoder", "make_encoder"]

_TINY_NAME = re.compile(r"tiny-(?P<family>[\w.]+)-s(?P<seed>\d+)-v\d+")


def make_encoder(spec: str = "lexical", device: str | None = None, **options) -> Encoder:
    """An encoder from a spec or stored id (see module doc); ``options`` go to its options class
    (e.g. ``batch_size=8`` for colpali-engine models; ``dim=`` for lexical). ``device`` (``cpu``,
    ``cuda``, ``cuda:N``) applies to model encoders only; the others run on NumPy."""
    spec = spec.strip()
    if spec == "lexical":
        return LexicalEncoder(LexicalOptions(**options))
    if spec.startswith("lexical:"):
        return LexicalEncoder(_parse_lexical_id(spec))
    m = re.fullmatch(r"(?:null|none)(?::d(\d+))?", spec)
    if m:
        return NullEncoder(int(m[1] or options.get("dim", 128)))
    from snappy.encoders.colpali import ColpaliEncoder, ColpaliOptions  # torch: only when asked

    if device:
        options["device"] = device
    if spec == "tiny" or spec.startswith("tiny:"):
        return ColpaliEncoder.tiny(spec.partition(":")[2] or "colqwen2.5", **options)
    if spec.startswith("colpali:"):
        _, family, rest = spec.split(":", 2)
        model = rest.rsplit(":", 1)[0] if ":" in rest else rest
        tiny = _TINY_NAME.fullmatch(model)
        if tiny:
            return ColpaliEncoder.tiny(tiny["family"], seed=int(tiny["seed"]), **options)
        return ColpaliEncoder(ColpaliOptions(model=model, family=family), **options)
    return ColpaliEncoder(ColpaliOptions(model=spec), **options)


def _parse_lexical_id(encoder_id: str) -> LexicalOptions:
    """Inverse of LexicalEncoder.encoder_id (``lexical:d128:p28:t768:h8:s0``)."""
    keys = {"d": "dim", "p": "patch_px", "t": "max_num_visual_tokens", "h": "hashes", "s": "seed", "v": "version"}
    fields = {}
    for part in encoder_id.split(":")[1:]:
        m = re.fullmatch(r"([a-z])(-?\d+)", part)
        if not m or m[1] not in keys:
            raise ValueError(f"bad lexical encoder id {encoder_id!r} (part {part!r})")
        fields[keys[m[1]]] = int(m[2])
    return LexicalOptions(**fields)
