"""Import-time fixes for the dependency stack on CPU-only machines.

The torchvision wheel that resolves beside CPU torch 2.13 is a CUDA build whose compiled
ops do not load; torchvision then dies at import (``operator torchvision::nms does not
exist``) because its fake-tensor registrations assume the ops exist. transformers' image
processors and colpali-engine import torchvision, so snappy registers the two op schemas
that torchvision registers unguarded, before anything imports it. torchvision's Python
transforms then work; its compiled ops (not used by snappy) raise if called.

snappy calls :func:`ensure_torchvision_importable` itself before it imports transformers or
colpali-engine (model loading, the Idefics3 geometry); code that imports them first calls it too
(``snappy.ensure_torchvision_importable()``). Importing snappy changes nothing: no import hook,
no torch.
"""
from __future__ import annotations

import glob
import importlib.util
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the registered schemas alive for the process


_lock = threading.RLock()


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` work; True if the op schemas had to be registered."""
    with _lock:
        return _ensure()


def _ensure() -> bool:
    global _library
    if _library is not None or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    import torch

    if _has_nms(torch):
        return False
    for so in glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so")):
        try:
            torch.ops.load_library(so)
        except (OSError, RuntimeError) as e:
            log.debug("torchvision's compiled ops do not load (%s)", e)
    if _has_nms(torch):
        return False
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
    log.info("torchvision ops unavailable (CPU torch beside a CUDA torchvision); registered op schemas")
    return True


def _has_nms(torch) -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018  (attribute lookup resolves the op)
        return True
    except (AttributeError, RuntimeError):
        return False
