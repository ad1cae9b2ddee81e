"""snappy.documents.failures: which failures are the document's fault, and stable one-line reasons."""
from __future__ import annotations

import errno
import pickle
import re

import pytest

from snappy.documents.failures import Failure, FailureKind, classify, is_transient, reason_text
from snappy.errors import DocumentError
from snappy.errors import SourceReadError

URI = "s3://lake/docs/report.pdf"
DOC, TRANSIENT = FailureKind.DOCUMENT, FailureKind.TRANSIENT


def _named(name: str, base: type = Exception, module: str = "somewhere") -> type:
    """An exception class called ``name`` (as Ray/torch/botocore would define it, without importing them)."""
    return type(name, (base,), {"__module__": module})


def test_kinds_are_strings():
    assert FailureKind.DOCUMENT == "document" and FailureKind.TRANSIENT == "transient"
    assert FailureKind("transient") is TRANSIENT
    f = classify(DocumentError(URI, "empty file"), URI)
    assert f == Failure(DOC, "empty file")
    with pytest.raises(Exception):
        f.reason = "x"  # frozen


def test_document_error_is_the_documents_fault():
    assert classify(DocumentError(URI, "PDF has no pages"), URI) == Failure(DOC, "PDF has no pages")
    # without the uri, too; the reason is the DocumentError's own reason (not the message with the uri)
    assert classify(DocumentError(URI, "5000 pages, over max_pages=2000")).reason == "5000 pages, over max_pages=2000"


@pytest.mark.parametrize("exc", [
    _named("OutOfMemoryError", RuntimeError, "torch.cuda")("CUDA out of memory. Tried to allocate 2.00 GiB"),
    _named("OutOfMemoryError", RuntimeError, "torch")(""),
    MemoryError(),
    TimeoutError("took too long"),
    ConnectionError("reset by peer"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    OSError(errno.EIO, "Input/output error"),
    PermissionError(errno.EACCES, "Permission denied", "/data/x.pdf"),
    SourceReadError(URI, "S3 read timed out after 120 s"),
    _named("RayActorError", Exception, "ray.exceptions")("The actor died unexpectedly"),
    _named("ActorDiedError", _named("RayActorError", Exception, "ray.exceptions"), "ray.exceptions")("died"),
    _named("WorkerCrashedError", Exception, "ray.exceptions")("worker crashed"),
    _named("ObjectLostError", Exception, "ray.exceptions")("object lost"),
    _named("RaySystemError", Exception, "ray.exceptions")("system error"),
    _named("ClientError", Exception, "botocore.exceptions")("An error occurred (SlowDown)"),
    _named("EndpointConnectionError", Exception, "botocore.exceptions")("Could not connect"),
    _named("ReadTimeoutError", Exception, "urllib3.exceptions")("read timed out"),
])
def test_transient_failures(exc):
    f = classify(exc, URI)
    assert f.kind is TRANSIENT and f.reason and is_transient(exc)


def test_unexpected_exceptions_are_retried_too():
    assert classify(RuntimeError("onnxruntime: bad input tensor"), URI) == \
        Failure(TRANSIENT, "RuntimeError: onnxruntime: bad input tensor")
    assert classify(ValueError("shape mismatch")).kind is TRANSIENT
    assert classify(KeyError("regions")).reason == "KeyError: 'regions'"
    # known-transient vs unexpected (the indexer may cap retries of the latter sooner)
    assert not is_transient(RuntimeError("x")) and not is_transient(DocumentError(URI, "empty file"))


def test_source_read_error_reason_and_pickling():
    e = SourceReadError(URI, "no such object (deleted since listing?)")
    assert isinstance(e, OSError) and str(e) == f"{URI}: no such object (deleted since listing?)"
    assert reason_text(e, URI) == "no such object (deleted since listing?)"
    back = pickle.loads(pickle.dumps(e))  # Ray ships exceptions between processes
    assert (back.uri, back.reason) == (URI, e.reason)
    d = pickle.loads(pickle.dumps(DocumentError(URI, "empty file")))
    assert (d.source, d.reason, str(d)) == (URI, "empty file", f"{URI}: empty file")


def test_empty_message_names_the_class():
    ResizeImgError = _named("ResizeImgError", Exception, "rapidocr.ch_ppocr_det")
    assert reason_text(ResizeImgError(), URI) == "ResizeImgError (no message)"
    assert reason_text(ResizeImgError("   "), URI) == "ResizeImgError (no message)"
    assert classify(ResizeImgError(""), URI) == Failure(TRANSIENT, "ResizeImgError (no message)")
    assert reason_text(DocumentError(URI, ""), URI) == "DocumentError (no message)"
    assert reason_text(RuntimeError(URI), URI) == "RuntimeError (no message)"  # nothing but the uri


def test_object_addresses_are_removed_and_reasons_are_stable():
    reasons = set()
    for _ in range(3):
        obj = object()
        e = OSError(f"cannot identify image file <_io.BytesIO object at {hex(id(obj))}>")
        reasons.add(reason_text(e))
    (r,) = reasons
    assert r == "OSError: cannot identify image file <_io.BytesIO object>"
    assert "0x" not in reason_text(ValueError("bad pointer 0x7f3a2b1c9d80 in decoder"))
    assert "0x" not in reason_text(RuntimeError("<PdfDocument at 0x7fc0e9bc3fb0> failed"))


def test_uri_is_not_repeated():
    assert reason_text(RuntimeError(f"{URI}: page 3 failed"), URI) == "RuntimeError: page 3 failed"
    assert reason_text(DocumentError(URI, "empty file"), URI) == "empty file"
    assert reason_text(FileNotFoundError(errno.ENOENT, "No such file or directory", URI), URI) == \
        "FileNotFoundError: No such file or directory"


def test_temp_paths_are_removed():
    import tempfile

    tmp = tempfile.gettempdir()
    r = reason_text(OSError(errno.EIO, "Input/output error", f"{tmp}/snappy-abc123.pdf"), URI)
    assert r == "OSError: Input/output error"
    r = reason_text(RuntimeError(f"decoder failed on {tmp}/snappy-x1y2z3.png at frame 2"), URI)
    assert tmp not in r and r == "RuntimeError: decoder failed on <temp file> at frame 2"
    assert "/tmp/" not in reason_text(ValueError("cannot identify image file '/tmp/tmpab12cd.png'"))


def test_one_line_and_capped():
    r = reason_text(RuntimeError("line one\nline two\r\n\tline three"))
    assert "\n" not in r and "\r" not in r and "\t" not in r and r == "RuntimeError: line one line two line three"
    long = reason_text(ValueError("x" * 5000))
    assert len(long) <= 500 and long.startswith("ValueError: xxx")
    assert len(classify(DocumentError(URI, "y" * 2000)).reason) <= 500


def test_ray_task_error_is_unwrapped():
    RayTaskError = _named("RayTaskError", Exception, "ray.exceptions")
    wrapped = RayTaskError("Traceback (most recent call last):\n  File ...\nDocumentError: ...")
    wrapped.cause = DocumentError(URI, "PDF is encrypted (a password is required)")
    assert classify(wrapped, URI) == Failure(DOC, "PDF is encrypted (a password is required)")
    wrapped.cause = MemoryError()
    assert classify(wrapped, URI) == Failure(TRANSIENT, "MemoryError (no message)")


def test_reasons_never_contain_addresses():
    addr = re.compile(r"0x[0-9a-fA-F]{4,}")
    for e in [Exception(object()), ValueError(repr(object())), RuntimeError(str([object(), object()]))]:
        assert not addr.search(reason_text(e)), reason_text(e)
