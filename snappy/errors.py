"""The exceptions snappy raises across layers, and the one-line messages they carry.

The bottom layer: imports nothing from snappy, so every other module can raise or catch these.

- :class:`DocumentError`: a document that cannot be read (its own fault; kept as a failed row).
- :class:`SourceReadError`: a read that failed for a reason that is not the document's fault.
- :class:`QueryError`: a query request the search refuses (the service answers 400).
- :func:`clean_message`, :func:`s3_reason`: short, stable reasons (same text every run).
"""
from __future__ import annotations

import re
import tempfile


class DocumentError(ValueError):
    """A document that cannot be read; the message names the file and the reason."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason

    def __reduce__(self):  # picklable across processes (Ray)
        return (type(self), (self.source, self.reason))


class SourceReadError(OSError):
    """A document could not be read for a reason that is not the document's fault (network,
    S3 throttling/5xx, EIO, a file deleted since listing, permissions): retry later.

    ``reason`` is short and stable; the message names the uri."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.reason = reason

    def __reduce__(self):  # picklable across processes (Ray)
        return (type(self), (self.uri, self.reason))


# The reason a query without a word is refused, by the query checks and by the lexical encoder itself.
NO_WORDS = "query has no words to search after normalisation (no letters or digits)"


class QueryError(ValueError):
    """A request the search refuses; ``field`` names what is wrong (the service answers 400)."""

    def __init__(self, reason: str, field: str = "query"):
        super().__init__(reason)
        self.reason, self.field = reason, field


MAX_REASON = 500

_ADDRESS = re.compile(r"\s+at\s+0x[0-9a-fA-F]+(?=>)|\bat 0x[0-9a-fA-F]+\b")
_BARE_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
_WS = re.compile(r"[\r\n\t\f\v\x85\u2028\u2029]+")


def _temp_dirs() -> list[str]:
    dirs = {tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"}
    return sorted((d.rstrip("/") for d in dirs if d and d != "/"), key=len, reverse=True)


def _temp_pattern() -> re.Pattern:
    alts = "|".join(re.escape(d) for d in _temp_dirs())
    return re.compile(rf"(?:{alts})/[^\s'\",:;)\]>]*")


def clean_message(text: str, uri: str = "") -> str:
    """One line, at most 500 characters, without object addresses, temp paths or a leading
    ``"{uri}: "``."""
    text = _WS.sub(" ", str(text)).strip()  # one line
    if uri:
        prefix = f"{uri}: "
        while text.startswith(prefix):
            text = text[len(prefix):]
        if text == uri:
            text = ""
    text = _ADDRESS.sub("", text)
    text = _BARE_ADDRESS.sub("<address>", text)
    text = _temp_pattern().sub("<temp file>", text)
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON - 1] + "…"
    return text


def s3_reason(e: BaseException, timeout_s: float) -> str:
    """A short, stable reason for an S3 failure (no endpoint, no request id)."""
    name = type(e).__name__
    response = getattr(e, "response", None)
    if isinstance(response, dict) and "Error" in response:
        code = str(response.get("Error", {}).get("Code") or "")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404", "NotFound"):
            return "no such object (deleted since listing?)"
        if code in ("NoSuchBucket",):
            return "no such bucket"
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"permission denied ({code})"
        if code in ("SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503"):
            return f"throttled by S3 ({code})"
        return f"S3 error {code or 'unknown'}" + (f" (HTTP {status})" if status else "")
    if name in ("EndpointConnectionError", "ConnectionClosedError", "ProxyConnectionError"):
        return "cannot connect to the S3 endpoint"
    if name == "ConnectTimeoutError":
        return f"S3 connect timed out after {timeout_s:g} s" if timeout_s else "S3 connect timed out"
    if name in ("ReadTimeoutError", "ReadTimeout"):
        return f"S3 read timed out after {timeout_s:g} s" if timeout_s else "S3 read timed out"
    if name in ("IncompleteReadError", "ResponseStreamingError", "ProtocolError"):
        return "S3 connection broke while reading"
    if name == "NoCredentialsError":
        return "no S3 credentials"
    return clean_message(f"{name}: {e}" if str(e) else name)
