"""snappy: region-level document retrieval by patch-to-region relevance propagation."""
from __future__ import annotations

import warnings
from importlib import metadata

__version__ = "0.1.0"


def _python_snappy_clash() -> str | None:
    """python-snappy (the compression library) also imports as ``snappy``."""
    try:
        metadata.distribution("python-snappy")
    except metadata.PackageNotFoundError:
        return None
    return (
        "python-snappy (the Snappy compression library) is installed in this environment and also "
        "imports as `snappy`; the two packages overwrite each other. Uninstall it "
        "(`pip uninstall python-snappy`; cramjam is its maintained successor) or use a separate "
        "environment for snappy-regions."
    )


_clash = _python_snappy_clash()
if _clash:
    warnings.warn(_clash, RuntimeWarning, stacklevel=2)

# CPU torch beside a CUDA torchvision: call this before importing colpali_engine or transformers'
# image processors yourself (snappy's own loaders call it); importing snappy changes nothing.
from snappy._compat import ensure_torchvision_importable  # noqa: E402

__all__ = ["__version__", "ensure_torchvision_importable"]
