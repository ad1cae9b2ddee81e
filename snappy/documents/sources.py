"""Document sources: list the documents under a local folder or an ``s3://bucket/prefix`` and read them.

Listing (:meth:`Source.iter_entries`) streams :class:`SourceEntry` metadata (uri, size, etag,
mtime) without opening anything: an entry that matches the suffix filter but cannot be a
document (a folder named ``x.pdf``, a FIFO, a broken or looping symbolic link, ...) is listed
with a ``problem`` instead of being skipped silently. Bytes are read later, where the document
is processed, with :meth:`Source.open_document`: bounded (``ReadLimits``), never blocking on a
FIFO, streaming large files instead of holding them in memory.

Errors: the document's own fault is a :class:`snappy.errors.DocumentError` (kept as a failed
document); a read that failed for reasons outside the document (network, S3 5xx, EIO, a file
deleted since listing, permissions) is a :class:`SourceReadError` (retried next run).
Both carry a short, stable ``reason``.

S3 goes through boto3 with a configurable endpoint (a local S3 such as moto on 127.0.0.1
works); credentials and region come from explicit settings or the usual ``AWS_*``
environment (see :func:`snappy.storage.fs.lance_options`). A :class:`Source` is picklable
(its boto3 clients are created lazily in each process), so a Ray pipeline ships it to workers.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import stat
import tempfile
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

from rich.filesize import decimal

from snappy.errors import DocumentError, SourceReadError, s3_reason
from snappy.documents.localfile import _display, _not_regular, _strerror, open_local_fd
from snappy.documents.pages import DOCUMENT_SUFFIXES, RenderOptions
from snappy.storage import fs

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # read/hash granularity (1 MiB)


@dataclass(frozen=True)
class SourceEntry:
    """One listed document (or, with ``problem`` set, one name that cannot be a document)."""

    uri: str  # display URI, valid UTF-8: absolute local path (undecodable bytes as \\xNN) or s3://bucket/key
    size: int | None = None  # bytes
    etag: str | None = None  # S3 ETag (quotes stripped); None for local files
    mtime_ns: int | None = None  # local st_mtime_ns; S3 LastModified in ns
    raw_path: bytes | None = None  # exact local path bytes, only when the name is not valid UTF-8
    problem: str | None = None  # why this entry cannot be a document; None for a regular file/object

    @property
    def doc_id(self) -> str:
        from snappy.ids import doc_id_for

        return doc_id_for(self.raw_path if self.raw_path is not None else self.uri)

    @property
    def mtime(self) -> float | None:
        return None if self.mtime_ns is None else self.mtime_ns / 1e9

    @property
    def fingerprint(self) -> tuple[int | None, str | None, int | None]:
        """What changes when the document changes, known without reading it."""
        return (self.size, self.etag, self.mtime_ns)

    def to_dict(self) -> dict:
        return {"uri": self.uri, "size": self.size, "etag": self.etag, "mtime": self.mtime,
                "mtime_ns": self.mtime_ns, "problem": self.problem,
                "raw_path": None if self.raw_path is None else self.raw_path.hex()}


@dataclass(frozen=True)
class ReadLimits:
    max_bytes: int | None = 1 << 30  # larger documents are a DocumentError, raised before reading
    max_in_memory: int = 64 << 20  # larger ones are handed over as a file path, never read whole
    timeout_s: float = 120.0  # S3 connect/read timeout; local reads are checked between chunks
    attempts: int = 3  # S3 attempts per request (botocore retries)


@dataclass(frozen=True)
class DocumentBytes:
    """A document opened for processing: exactly one of ``data`` / ``path`` is set."""

    uri: str
    size: int
    sha256: str
    data: bytes | None = None
    path: str | None = None  # the local file itself, or a temporary copy of an S3 object

    @property
    def content(self) -> bytes | str:
        return self.data if self.data is not None else self.path  # type: ignore[return-value]

    def iter_pages(self, opts: RenderOptions = RenderOptions()):
        from snappy.documents.pages import iter_pages

        return iter_pages(self.content, opts, source=self.uri)


class Source:
    """The documents under ``root`` (a folder, a single file, or an S3 prefix).

    ``suffixes`` filters file names case-insensitively (default: the PDF and image types
    snappy reads). Hidden files and folders (``.name``) below the root are skipped without a row,
    as most lake tools do (``.Trash/``, macOS's ``._name.pdf`` companion files); a root that
    names one file is read whatever its name.
    """

    def __init__(self, root: str | os.PathLike,
                 storage_options: Mapping[str, str] | fs.S3Settings | None = None,
                 suffixes: Iterable[str] | None = DOCUMENT_SUFFIXES):
        self.root = fs.normalize(root)
        self.remote = fs.is_remote(self.root)
        self.options = fs.lance_options(self.root, storage_options) or {}
        self.suffixes = frozenset(s.lower() for s in suffixes) if suffixes is not None else None
        self._client = None  # boto3 S3 client, made on first use in each process
        self._read_clients: dict = {}

    def __repr__(self) -> str:
        return f"Source({self.root!r})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_client"] = None  # boto3 clients do not pickle
        state["_read_clients"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        state.setdefault("_read_clients", {})
        self.__dict__.update(state)

    def _wanted(self, name: str | bytes, named: bool = False) -> bool:
        """A listed name to read: not hidden (unless the root ``named`` it) and of a wanted type."""
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        base = name.rsplit("/", 1)[-1]
        if base.startswith(".") and not named:
            return False
        return self.suffixes is None or os.path.splitext(base)[1].lower() in self.suffixes

    # ------------------------------------------------------------------ listing
    def list(self, limit: int | None = None) -> list[SourceEntry]:
        """Entries sorted by uri (the first ``limit`` of them); problem entries included."""
        docs = sorted(self.iter_entries(), key=lambda d: d.uri)
        return docs[:limit] if limit is not None else docs

    def iter(self) -> Iterator[SourceEntry]:
        return self.iter_entries()

    def iter_entries(self) -> Iterator[SourceEntry]:
        """Stream the entries (local: sorted, depth-first; S3: key order). Never opens a file."""
        return self._iter_s3() if self.remote else self._iter_local()

    def iter_chunks(self, size: int = 10_000) -> Iterator[list[SourceEntry]]:
        """The entries in lists of at most ``size``."""
        chunk: list[SourceEntry] = []
        for entry in self.iter_entries():
            chunk.append(entry)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _iter_local(self) -> Iterator[SourceEntry]:
        root = os.fsencode(self.root)
        try:
            st = os.stat(root)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.root}: no such file or folder") from None
        except OSError as e:
            raise SourceReadError(self.root, f"cannot read source root ({_strerror(e)})") from None
        if not stat.S_ISDIR(st.st_mode):  # a single document
            entry = self._local_entry(root)
            if entry is not None:
                yield entry
            return
        unlisted: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted.append, followlinks=False):
            while unlisted:
                yield self._unlisted(unlisted.pop(0))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(b"."))
            names = sorted([(n, False) for n in filenames if self._wanted(n)]
                           + [(d, True) for d in dirnames if self._wanted(d)])
            for name, _ in names:
                entry = self._local_entry(os.path.join(dirpath, name))
                if entry is not None:
                    yield entry
        while unlisted:
            yield self._unlisted(unlisted.pop(0))

    def _unlisted(self, e: OSError) -> SourceEntry:
        raw = os.fsencode(e.filename) if e.filename is not None else os.fsencode(self.root)
        uri, raw_path = _display(raw)
        log.warning("%s: folder skipped (%s)", uri, _strerror(e))
        return SourceEntry(uri, raw_path=raw_path, problem=f"cannot list folder ({_strerror(e)})")

    def _local_entry(self, path: bytes) -> SourceEntry | None:
        uri, raw = _display(path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            log.info("%s: vanished while listing", uri)
            return None
        except OSError as e:
            return SourceEntry(uri, raw_path=raw, problem=f"cannot stat ({_strerror(e)})")
        if stat.S_ISLNK(st.st_mode):
            link_mtime = st.st_mtime_ns
            try:
                st = os.stat(path)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR):
                    problem = "broken symbolic link (target missing)"
                elif e.errno == errno.ELOOP:
                    problem = "symbolic link loop"
                else:
                    problem = f"cannot stat symbolic link target ({_strerror(e)})"
                log.info("%s: %s", uri, problem)
                return SourceEntry(uri, mtime_ns=link_mtime, raw_path=raw, problem=problem)
        if stat.S_ISREG(st.st_mode):
            return SourceEntry(uri, st.st_size, None, st.st_mtime_ns, raw)
        problem = _not_regular(st.st_mode)
        log.info("%s: %s", uri, problem)
        return SourceEntry(uri, mtime_ns=st.st_mtime_ns, raw_path=raw, problem=problem)

    def _bucket_key(self, uri: str) -> tuple[str, str]:
        rest = uri[len("s3://"):]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ValueError(f"{uri}: no bucket in S3 URI")
        return bucket, key

    def _iter_s3(self) -> Iterator[SourceEntry]:
        bucket, prefix = self._bucket_key(self.root)
        client = self.client()
        folder = prefix.rstrip("/") + "/" if prefix else ""
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    entry = self._s3_entry(bucket, prefix, folder, obj)
                    if entry is not None:
                        yield entry
        except DocumentError:
            raise
        except Exception as e:
            raise SourceReadError(self.root, f"cannot list: {s3_reason(e, 0)}") from e

    def _s3_entry(self, bucket: str, prefix: str, folder: str, obj: dict) -> SourceEntry | None:
        key = obj["Key"]
        # The prefix names one object or a folder ("pre" must not match "pre-other/...").
        if prefix and key != prefix and not key.startswith(folder):
            return None
        named = key == prefix  # the root names this object: read whatever its name, as locally
        if not named and any(part.startswith(".") for part in key[len(folder):].split("/")):
            return None
        lm = obj.get("LastModified")
        mtime_ns = None
        if lm is not None:
            mtime_ns = int(lm.timestamp()) * 1_000_000_000 + lm.microsecond * 1000
        uri = f"s3://{bucket}/{key}"
        if key.endswith("/"):
            if key.rstrip("/") and self._wanted(key.rstrip("/")):
                log.info("%s: folder marker named like a document", uri)
                return SourceEntry(uri, mtime_ns=mtime_ns, problem="is a folder marker, not a document")
            return None
        if not self._wanted(key, named):
            return None
        return SourceEntry(uri, int(obj["Size"]), obj.get("ETag", "").strip('"') or None, mtime_ns)

    # ------------------------------------------------------------------ reading
    @contextlib.contextmanager
    def open_document(self, uri: str, raw_path: bytes | None = None,
                      limits: ReadLimits = ReadLimits()) -> Iterator[DocumentBytes]:
        """Open one document for processing: bounded by ``limits``, hashed (sha256), never
        blocking on a FIFO. Yields :class:`DocumentBytes` (bytes up to ``max_in_memory``, else
        a file path, valid inside the ``with``). DocumentError / SourceReadError on failure."""
        if fs.is_remote(uri):
            with self._open_s3(uri, limits) as doc:
                yield doc
        else:
            yield self._open_local(raw_path if raw_path is not None else uri, uri, limits)

    def _over_max(self, uri: str, size: int, limits: ReadLimits) -> None:
        if limits.max_bytes is not None and size > limits.max_bytes:
            raise DocumentError(uri, f"{decimal(size)} file, over max_bytes={decimal(limits.max_bytes)}")

    def _open_local(self, path: str | bytes, uri: str, limits: ReadLimits) -> DocumentBytes:
        fd, st = open_local_fd(path, uri)
        try:
            self._over_max(uri, st.st_size, limits)
            digest, t0, n = hashlib.sha256(), time.monotonic(), 0
            keep = st.st_size <= limits.max_in_memory
            parts: list[bytes] = []
            while True:
                try:
                    chunk = os.read(fd, CHUNK)
                except OSError as e:
                    raise SourceReadError(uri, f"read error ({_strerror(e)})") from None
                if not chunk:
                    break
                n += len(chunk)
                self._over_max(uri, n, limits)  # the file grew since fstat
                digest.update(chunk)
                if keep:
                    parts.append(chunk)
                    if n > limits.max_in_memory:  # grew past the in-memory limit: hand over the path
                        keep, parts = False, []
                if time.monotonic() - t0 > limits.timeout_s:
                    raise SourceReadError(uri, f"read timed out after {limits.timeout_s:g} s")
        finally:
            os.close(fd)
        if keep:
            return DocumentBytes(uri, n, digest.hexdigest(), data=b"".join(parts))
        return DocumentBytes(uri, n, digest.hexdigest(), path=os.fsdecode(path))

    @contextlib.contextmanager
    def _open_s3(self, uri: str, limits: ReadLimits) -> Iterator[DocumentBytes]:
        bucket, key = self._bucket_key(uri)
        if key.endswith("/"):
            raise DocumentError(uri, "is a folder marker, not a document")
        client = self._read_client(limits)
        try:
            resp = client.get_object(Bucket=bucket, Key=key)
        except Exception as e:
            raise SourceReadError(uri, s3_reason(e, limits.timeout_s)) from e
        body = resp["Body"]
        tmp_path = None
        try:
            size = int(resp.get("ContentLength") or 0)
            self._over_max(uri, size, limits)  # before reading any byte of the body
            digest, n = hashlib.sha256(), 0
            if size <= limits.max_in_memory:
                out = io.BytesIO()
            else:
                fd, tmp_path = tempfile.mkstemp(prefix="snappy-", suffix=os.path.splitext(key)[1][:16])
                out = os.fdopen(fd, "wb")
            with out:
                while True:
                    try:
                        chunk = body.read(CHUNK)
                    except Exception as e:
                        raise SourceReadError(uri, s3_reason(e, limits.timeout_s)) from e
                    if not chunk:
                        break
                    n += len(chunk)
                    self._over_max(uri, n, limits)
                    digest.update(chunk)
                    out.write(chunk)
                if n != size:
                    raise SourceReadError(uri, f"incomplete read ({n} of {size} bytes)")
                data = out.getvalue() if tmp_path is None else None
            yield DocumentBytes(uri, n, digest.hexdigest(), data=data, path=tmp_path)
        finally:
            with contextlib.suppress(Exception):
                body.close()
            if tmp_path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_path)

    def read(self, uri: str) -> bytes:
        """The bytes of one document, whole (for small callers; see :meth:`open_document`).

        FileNotFoundError (naming the uri) if it is gone; DocumentError if it is not a regular
        file (a FIFO is never opened in blocking mode)."""
        if not fs.is_remote(uri):
            try:
                fd, _ = open_local_fd(uri, uri)
            except SourceReadError as e:
                raise FileNotFoundError(f"{uri}: cannot read ({e.reason})") from e
            with os.fdopen(fd, "rb") as f:
                return f.read()
        bucket, key = self._bucket_key(uri)
        try:
            return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as e:  # botocore raises ClientError / EndpointConnectionError / ...
            raise FileNotFoundError(f"{uri}: cannot read ({s3_reason(e, 0)})") from e

    def client(self):
        """The boto3 S3 client for this source (made once per process)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _read_client(self, limits: ReadLimits):
        k = (limits.timeout_s, limits.attempts)
        if k not in self._read_clients:
            self._read_clients[k] = self._make_client(limits.timeout_s, limits.attempts)
        return self._read_clients[k]

    def _make_client(self, timeout_s: float | None = None, attempts: int = 5):
        return fs.s3_client(self.options, timeout_s, attempts)


