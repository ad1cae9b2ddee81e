"""Logging without credentials: a filter that masks secrets in every record, and a setup helper.

botocore logs each request's ``Authorization`` header (access key id, signature) at DEBUG, and
urllib3 the signed URLs; ``snappy -v`` must not put those in a terminal or a job log. Two layers:

- the wire-level loggers (botocore, boto3, s3transfer, urllib3, aiobotocore) stay at INFO even
  when the rest is at DEBUG;
- :class:`RedactSecrets`, attached to the handlers, rewrites any record that still carries
  credential material: the values of the ``AWS_*`` secrets and of the index's storage options,
  ``Authorization`` headers, ``Credential=``/``Signature=``/``AWSAccessKeyId=`` parts, ``X-Amz-Security-Token``
  and ``X-Amz-Signature`` values, and anything shaped like an AWS access key id.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Iterable

MASK = "***"
WIRE_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "aiobotocore", "s3fs", "fsspec")
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

_PATTERNS = [
    (re.compile(r"(?i)(['\"]?authorization['\"]?\s*[:=]\s*b?)(['\"]).*?\2"), rf"\1\2{MASK}\2"),
    (re.compile(r"(?i)(authorization\s*[:=]\s*)[^\s,'\"}]+(\s+[^\s,'\"}]+)*"), rf"\1{MASK}"),
    (re.compile(r"(?i)(credential=)[^,\s'\"&]+"), rf"\1{MASK}"),
    # "b" only as a bytes repr's prefix (b'...'): a hex signature may itself start with "b"
    (re.compile(r"(?i)((?:signature|awsaccesskeyid)['\"]?\s*[:=]\s*(?:b?['\"])?)[^&\s,'\"}]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)(x-amz-(?:security-token|signature|credential)['\"]?\s*[:=]\s*(?:b?['\"])?)[^'\"&\s,}]+"),
     rf"\1{MASK}"),
    (re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[0-9A-Z]{12,}\b"), MASK),
]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credential material masked (the literal ``secrets`` and the known shapes)."""
    for s in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(s, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactSecrets(logging.Filter):
    """Masks credentials in a record's message (formatted once, arguments dropped) and traceback."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = set(secrets)

    def add(self, *secrets: str | None) -> None:
        self.secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets | {os.environ.get(k, "") for k in SECRET_ENV}
        msg = record.getMessage()
        clean = redact(msg, secrets)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        return True


def install(handlers: Iterable[logging.Handler] | None = None, verbose: bool = False,
            secrets: Iterable[str] = ()) -> RedactSecrets:
    """Attach one :class:`RedactSecrets` to ``handlers`` (default: the root logger's) and keep the
    wire-level loggers at INFO or above. Returns the filter (``.add`` more secrets later)."""
    flt = RedactSecrets(secrets)
    for h in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in h.filters):
            h.addFilter(flt)
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    return flt
