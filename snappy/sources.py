"""Document sources: list the documents under a local folder or an ``s3://bucket/prefix`` and read them.

Listing returns metadata only (uri, size, etag, mtime); bytes are read later, where the
document is processed. S3 goes through boto3 with a configurable endpoint (a local S3 such
as moto on 127.0.0.1 works); credentials and region come from explicit settings or the usual
``AWS_*`` environment (see :func:`snappy.storage.fs.lance_options`).

A :class:`Source` is picklable (its boto3 client is created lazily in each process), so a Ray
pipeline ships it to its workers.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from snappy.pages import DOCUMENT_SUFFIXES
from snappy.storage import fs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceDocument:
    uri: str  # absolute local path or s3://bucket/key
    size: int  # bytes
    etag: str | None = None  # S3 ETag (quotes stripped); None for local files
    mtime: float | None = None  # POSIX seconds (S3: LastModified)

    def to_dict(self) -> dict:
        return {"uri": self.uri, "size": self.size, "etag": self.etag, "mtime": self.mtime}


class Source:
    """The documents under ``root`` (a folder, a single file, or an S3 prefix).

    ``suffixes`` filters file names case-insensitively (default: the PDF and image types
    snappy reads); hidden files and folders (``.name``) are skipped.
    """

    def __init__(self, root: str | os.PathLike,
                 storage_options: Mapping[str, str] | fs.S3Settings | None = None,
                 suffixes: Iterable[str] | None = DOCUMENT_SUFFIXES):
        self.root = fs.normalize(root)
        self.remote = fs.is_remote(self.root)
        self.options = fs.lance_options(self.root, storage_options) or {}
        self.suffixes = frozenset(s.lower() for s in suffixes) if suffixes is not None else None
        self._client = None  # boto3 S3 client, made on first use in each process

    def __repr__(self) -> str:
        return f"Source({self.root!r})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_client"] = None  # boto3 clients do not pickle
        return state

    def _wanted(self, name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        if base.startswith("."):
            return False
        return self.suffixes is None or Path(base).suffix.lower() in self.suffixes

    # ------------------------------------------------------------------ listing
    def list(self, limit: int | None = None) -> list[SourceDocument]:
        """Documents sorted by uri (the first ``limit`` of them)."""
        docs = sorted(self.iter(), key=lambda d: d.uri)
        return docs[:limit] if limit is not None else docs

    def iter(self) -> Iterator[SourceDocument]:
        return self._iter_s3() if self.remote else self._iter_local()

    def _iter_local(self) -> Iterator[SourceDocument]:
        root = Path(self.root)
        if root.is_file():
            st = root.stat()
            yield SourceDocument(str(root), st.st_size, None, st.st_mtime)
            return
        if not root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such file or folder")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not self._wanted(name):
                    continue
                path = Path(dirpath, name)
                try:
                    st = path.stat()
                except OSError as e:  # vanished or unreadable between walk and stat
                    log.warning("%s: skipped (%s)", path, e)
                    continue
                yield SourceDocument(str(path), st.st_size, None, st.st_mtime)

    def _bucket_key(self, uri: str) -> tuple[str, str]:
        rest = uri[len("s3://"):]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ValueError(f"{uri}: no bucket in S3 URI")
        return bucket, key

    def _iter_s3(self) -> Iterator[SourceDocument]:
        bucket, prefix = self._bucket_key(self.root)
        client = self.client()
        folder = prefix.rstrip("/") + "/" if prefix else ""
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                # The prefix names one object or a folder ("pre" must not match "pre-other/...").
                if key.endswith("/") or (prefix and key != prefix and not key.startswith(folder)):
                    continue
                rel = key[len(folder):] if key != prefix else key.rsplit("/", 1)[-1]
                if any(part.startswith(".") for part in rel.split("/")) or not self._wanted(key):
                    continue
                yield SourceDocument(f"s3://{bucket}/{key}", int(obj["Size"]), obj.get("ETag", "").strip('"') or None,
                                     obj["LastModified"].timestamp() if obj.get("LastModified") else None)

    # ------------------------------------------------------------------ reading
    def read(self, uri: str) -> bytes:
        """The bytes of one document; FileNotFoundError (naming the uri) if it cannot be read."""
        if not fs.is_remote(uri):
            try:
                return Path(uri).read_bytes()
            except OSError as e:
                raise FileNotFoundError(f"{uri}: cannot read ({e.strerror or e})") from e
        bucket, key = self._bucket_key(uri)
        try:
            return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as e:  # botocore raises ClientError / EndpointConnectionError / ...
            raise FileNotFoundError(f"{uri}: cannot read ({e})") from e

    def client(self):
        """The boto3 S3 client for this source (made once per process)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            o = self.options
            self._client = boto3.client(
                "s3", endpoint_url=o.get("aws_endpoint"), region_name=o.get("aws_region") or "us-east-1",
                aws_access_key_id=o.get("aws_access_key_id"), aws_secret_access_key=o.get("aws_secret_access_key"),
                aws_session_token=o.get("aws_session_token"),
                config=Config(retries={"max_attempts": 5, "mode": "standard"}),
            )
        return self._client

    def contains(self, uri: str) -> bool:
        """Whether ``uri`` lies under this source's root (used to scope pruning)."""
        root = self.root.rstrip("/")
        return uri == root or uri.startswith(root + "/")
