"""Why a document failed, and whether that is the document's fault.

:func:`classify` turns any exception raised while reading, rendering, OCR-ing or embedding a
document into a :class:`Failure`: its :class:`FailureKind` and a one-line, stable reason (same
text every run: no object addresses, no temporary paths, no empty messages, the uri not
repeated).

- ``DOCUMENT``: the document's own fault (cannot be decoded, over a limit, not a regular file):
  kept as a failed row until its bytes or the index settings change.
- ``TRANSIENT``: not the document's fault (out of memory, timeouts, lost Ray workers, S3 or
  file-system errors, an unexpected exception from an engine): the indexer keeps the
  document's previous rows and retries next run (capping retries itself).

Pure Python: neither Ray, torch nor botocore is imported; their exceptions are recognised by
class name / module.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from snappy.errors import DocumentError, clean_message


class FailureKind(str, Enum):
    DOCUMENT = "document"
    TRANSIENT = "transient"


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    reason: str


# Exception class names (anywhere in the MRO) that mean "not the document's fault".
TRANSIENT_NAMES = frozenset({
    "OutOfMemoryError",  # torch.cuda.OutOfMemoryError / torch.OutOfMemoryError
    "RayActorError", "ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError",
    "WorkerCrashedError", "ObjectLostError", "ObjectFetchTimedOutError", "OwnerDiedError",
    "ReferenceCountingAssertionError", "ObjectReconstructionFailedError", "RaySystemError",
    "NodeDiedError", "OutOfDiskError", "GetTimeoutError", "TaskCancelledError", "LocalRayletDiedError",
    "PlasmaObjectNotAvailable", "ObjectStoreFullError",
    "SourceReadError",
})
TRANSIENT_MODULES = ("botocore", "boto3", "urllib3", "s3transfer", "requests", "aiohttp", "grpc")



def _names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _unwrap(exc: BaseException) -> BaseException:
    """The user exception inside a Ray task error (``RayTaskError(...).cause``)."""
    seen = 0
    while seen < 5 and any(n.startswith("RayTaskError") for n in _names(exc)) and \
            isinstance(getattr(exc, "cause", None), BaseException):
        if isinstance(exc, DocumentError):
            break
        exc = exc.cause  # type: ignore[assignment]
        seen += 1
    return exc


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is known not to be the document's fault (see module doc)."""
    exc = _unwrap(exc)
    if isinstance(exc, DocumentError):
        return False
    if isinstance(exc, (MemoryError, TimeoutError, ConnectionError, OSError)):
        return True
    if _names(exc) & TRANSIENT_NAMES:
        return True
    return any((c.__module__ or "").split(".")[0] in TRANSIENT_MODULES for c in type(exc).__mro__)


def reason_text(exc: BaseException, uri: str = "") -> str:
    """The one-line, stable reason for ``exc`` (see :func:`clean_message`)."""
    exc = _unwrap(exc)
    reason = getattr(exc, "reason", None)
    if isinstance(exc, DocumentError) or (isinstance(reason, str) and "SourceReadError" in _names(exc)):
        text = clean_message(reason or "", uri)
        return text or f"{type(exc).__name__} (no message)"
    name = type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        msg = exc.strerror  # drops "[Errno N]" and the file name (the uri, or a temp path)
    else:
        msg = str(exc)
        if not msg.strip() and exc.args:
            msg = " ".join(str(a) for a in exc.args)
    msg = clean_message(msg, uri)
    if not msg or msg in ("''", '""', "None"):
        return f"{name} (no message)"
    return clean_message(f"{name}: {msg}")


def classify(exc: BaseException, uri: str = "") -> Failure:
    """The :class:`Failure` for an exception raised while processing document ``uri``."""
    inner = _unwrap(exc)
    if isinstance(inner, DocumentError):
        return Failure(FailureKind.DOCUMENT, reason_text(inner, uri))
    # Everything else is retried (the indexer caps retries): transient by nature, or unexpected.
    return Failure(FailureKind.TRANSIENT, reason_text(inner, uri))
