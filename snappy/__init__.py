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

# CPU torch beside a CUDA torchvision: make a later `import torchvision` (by transformers,
# colpali-engine or the user's code) work, without importing torch now (snappy/_compat.py).
from snappy._compat import install_torchvision_hook  # noqa: E402

install_torchvision_hook()
