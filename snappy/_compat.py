"""Import-time fixes for the dependency stack on CPU-only machines.

The torchvision wheel that resolves beside CPU torch 2.13 is a CUDA build whose compiled
ops do not load; torchvision then dies at import (``operator torchvision::nms does not
exist``) because its fake-tensor registrations assume the ops exist. transformers' image
processors and colpali-engine import torchvision, so snappy registers the two op schemas
that torchvision registers unguarded, before anything imports it. torchvision's Python
transforms then work; its compiled ops (not used by snappy) raise if called.

``import snappy`` installs :class:`TorchvisionImportHook` (``install_torchvision_hook``): a
``sys.meta_path`` finder that runs :func:`ensure_torchvision_importable` the first time anything
imports ``torchvision`` (transformers, colpali-engine, the user's own code), then steps aside.
So ``import snappy, colpali_engine`` works, and ``import snappy`` itself stays cheap: torch is
imported only when torchvision is, which imports torch anyway.
"""
from __future__ import annotations

import glob
import importlib.abc
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


class TorchvisionImportHook(importlib.abc.MetaPathFinder):
    """Runs :func:`ensure_torchvision_importable` before the first ``import torchvision``.

    It finds nothing itself (the regular finders load torchvision); after its one run, or while
    that run looks torchvision up itself, it returns None at once. It stays in ``sys.meta_path``
    (inert) because the import system iterates that list while calling finders: removing an
    entry then would skip the next finder.
    """

    def __init__(self) -> None:
        self.state = "waiting"  # -> "running" -> "done"

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision" or self.state != "waiting":
            return None
        with _lock:
            if self.state != "waiting":  # another thread ran it, or we are inside our own run
                return None
            self.state = "running"
            try:
                ensure_torchvision_importable()
            except Exception as e:  # torch itself broken: let the real import report it
                log.warning("could not prepare torchvision's import (%s: %s)", type(e).__name__, e)
            finally:
                self.state = "done"
        return None


def install_torchvision_hook() -> TorchvisionImportHook | None:
    """Put the hook first in ``sys.meta_path`` (once); None if torchvision is already imported."""
    for finder in sys.meta_path:
        if isinstance(finder, TorchvisionImportHook):
            return finder
    if "torchvision" in sys.modules:
        return None
    hook = TorchvisionImportHook()
    sys.meta_path.insert(0, hook)
    return hook
