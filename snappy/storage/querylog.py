"""The query log: a sample of the token vectors of the queries a service answered, kept in the index
(``<index>/_queries/``) for the nightly calibration of the candidate stage.

Pseudo-queries made from the index's pages estimate the candidate stage's recall well on some corpora
and 0.05-0.16 too high on others (docs/search.md); real queries make the estimate right. So the query
service logs what it searched, and the nightly run (:mod:`snappy.candidates.maintain`) calibrates on
the newest logged queries of the index's encoder and deletes those older than ``keep_days``.

- Only token vectors are logged (float16), never the query text.
- Each process writes its own files, ``<stamp>-<encoder>-<count>-<id>.npz`` (UTC stamp, 8 hex digits of
  the encoder id, queries in the file): append-only objects, no commit and no lease, so any number of
  service replicas log side by side while the one writer reads and prunes. The name alone says how many
  queries a file holds, and for which encoder: counting the log is a listing.
- ``prefix-<encoder>.npz``: the encoder's prefix tokens (its vectors of an empty query), which
  pseudo-queries start with.
- Logging must never fail a query: a write that fails (e.g. read-only credentials) is logged once and
  logging stops in that process.
"""
from __future__ import annotations

import calendar
import hashlib
import io
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from snappy.storage.fs import Files

log = logging.getLogger(__name__)

QUERY_LOG_DIR = "_queries"
DAY_S = 86400.0


@dataclass(frozen=True)
class QueryLogOptions:
    """How a process logs the queries it answers."""

    enabled: bool = True
    sample: float = 1.0  # share of queries logged
    flush_queries: int = 32  # write a file once this many queries are buffered ...
    flush_s: float = 300.0  # ... or the oldest buffered one is this old (checked at each query)
    max_tokens: int = 512  # longer query matrices are not logged

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample <= 1.0:
            raise ValueError(f"QueryLogOptions.sample must be within [0, 1], got {self.sample}")
        if self.flush_queries < 1 or self.flush_s <= 0:
            raise ValueError("QueryLogOptions.flush_queries must be >= 1 and flush_s > 0")


def encoder_key(encoder_id: str | None) -> str:
    """8 hex digits naming an encoder in the log's file names."""
    return hashlib.sha1((encoder_id or "").encode()).hexdigest()[:8]


def file_name(now: float, encoder_id: str | None, count: int) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    return f"{stamp}-{encoder_key(encoder_id)}-{count:05d}-{uuid.uuid4().hex[:8]}.npz"


@dataclass(frozen=True)
class LogFile:
    name: str
    at: float  # UTC seconds of the stamp
    encoder: str  # encoder_key
    count: int

    @classmethod
    def parse(cls, name: str) -> "LogFile | None":
        """The parts of a log file's name; None for any other name (the prefix file, a stray object)."""
        parts = name[:-4].split("-") if name.endswith(".npz") else []
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        try:
            at = calendar.timegm(time.strptime(parts[0][:15], "%Y%m%dT%H%M%S"))
        except ValueError:
            return None
        return cls(name, at, parts[1], int(parts[2]))


def log_files(files: Files, encoder_id: str | None = None) -> list[LogFile]:
    """The log's files, oldest first; only ``encoder_id``'s when given."""
    out = [f for f in map(LogFile.parse, files.list(QUERY_LOG_DIR)) if f is not None]
    if encoder_id is not None:
        key = encoder_key(encoder_id)
        out = [f for f in out if f.encoder == key]
    return out


def count(files: Files, encoder_id: str | None = None, since: float | None = None) -> int:
    """Queries logged (for ``encoder_id``; newer than ``since`` UTC seconds), from the names alone."""
    return sum(f.count for f in log_files(files, encoder_id) if since is None or f.at > since)


def write_batch(files: Files, queries: Sequence[np.ndarray], encoder_id: str | None, now: float | None = None) -> str:
    """One log file of ``queries`` (``[t, dim]`` each); returns its name."""
    now = time.time() if now is None else now
    lengths = np.array([len(q) for q in queries], np.int32)
    buf = io.BytesIO()
    np.savez(buf, vectors=np.concatenate([np.asarray(q, np.float16) for q in queries]), lengths=lengths,
             encoder_id=np.array(encoder_id or ""))
    name = file_name(now, encoder_id, len(queries))
    files.put(f"{QUERY_LOG_DIR}/{name}", buf.getvalue())
    return name


def read_recent(files: Files, n: int, encoder_id: str | None, dim: int | None = None) -> list[np.ndarray]:
    """The newest ``n`` logged queries of ``encoder_id`` (float32 ``[t, dim]`` each, newest first).
    A file that cannot be read, or of another dimension, is skipped with a warning."""
    out: list[np.ndarray] = []
    for f in reversed(log_files(files, encoder_id)):
        if len(out) >= n:
            break
        try:
            z = np.load(io.BytesIO(files.get(f"{QUERY_LOG_DIR}/{f.name}") or b""), allow_pickle=False)
            if str(z["encoder_id"]) != (encoder_id or ""):
                continue  # another encoder with the same 8 hex digits
            vectors, lengths = z["vectors"].astype(np.float32), z["lengths"].astype(np.int64)
            if vectors.ndim != 2 or lengths.sum() != len(vectors) or (dim and vectors.shape[1] != dim):
                raise ValueError(f"vectors {vectors.shape}, lengths sum {int(lengths.sum())}, wanted dim {dim}")
        except Exception as e:  # one bad object must not stop a calibration
            log.warning("query log: skipping %s (%s: %s)", f.name, type(e).__name__, e)
            continue
        out.extend(reversed(np.split(vectors, np.cumsum(lengths)[:-1])))  # newest first
    return out[:n]


def write_prefix(files: Files, encoder_id: str | None, prefix: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, prefix=np.asarray(prefix, np.float32), encoder_id=np.array(encoder_id or ""))
    files.put(f"{QUERY_LOG_DIR}/prefix-{encoder_key(encoder_id)}.npz", buf.getvalue())


def read_prefix(files: Files, encoder_id: str | None) -> np.ndarray | None:
    """The prefix tokens a service stored for ``encoder_id`` (None: none stored)."""
    data = files.get(f"{QUERY_LOG_DIR}/prefix-{encoder_key(encoder_id)}.npz")
    if not data:
        return None
    try:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        return z["prefix"].astype(np.float32) if str(z["encoder_id"]) == (encoder_id or "") else None
    except Exception as e:
        log.warning("query log: cannot read the prefix of %s (%s: %s)", encoder_id, type(e).__name__, e)
        return None


def expired(log: list[LogFile], now: float, keep_days: float) -> list[LogFile]:
    """The files older than ``keep_days`` (pure)."""
    return [f for f in log if now - f.at > keep_days * DAY_S]


def prune(files: Files, keep_days: float, now: float | None = None) -> int:
    """Delete the log files older than ``keep_days`` (the index's writer does, nightly); returns how many."""
    gone = expired(log_files(files), time.time() if now is None else now, keep_days)
    for f in gone:
        files.delete(f"{QUERY_LOG_DIR}/{f.name}")
    return len(gone)


class QueryLogger:
    """Buffers the queries one process answers and writes them to the index's log (thread-safe).

    ``prefix``: a zero-argument callable giving the encoder's prefix tokens, stored once with the first
    file (``prefix-<encoder>.npz``) for the nightly run's pseudo-queries."""

    def __init__(self, files: Files, encoder_id: str | None, options: QueryLogOptions = QueryLogOptions(),
                 prefix: Callable[[], np.ndarray | None] | None = None, seed: int | None = None,
                 clock: Callable[[], float] = time.time):
        self.files, self.encoder_id, self.options = files, encoder_id, options
        self._prefix = prefix
        self._rng = np.random.default_rng(seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._buffer: list[np.ndarray] = []
        self._since: float | None = None
        self.written = 0  # queries written so far
        self.failed: str | None = None  # why logging stopped

    @property
    def active(self) -> bool:
        return self.options.enabled and self.failed is None

    def record(self, queries: Sequence[np.ndarray]) -> None:
        """Buffer (a sample of) ``queries``; write a file when the buffer is full or old enough."""
        if not self.active:
            return
        with self._lock:
            for q in queries:
                q = np.asarray(q)
                if q.ndim != 2 or not 0 < len(q) <= self.options.max_tokens or not np.isfinite(q).all():
                    continue
                if self.options.sample < 1.0 and self._rng.random() >= self.options.sample:
                    continue
                self._buffer.append(q.astype(np.float16))
                self._since = self._since if self._since is not None else self._clock()
            due = len(self._buffer) >= self.options.flush_queries or (
                self._buffer and self._clock() - self._since >= self.options.flush_s)
        if due:
            self.flush()

    def flush(self) -> int:
        """Write what is buffered; returns the queries written (0 when none or the write failed)."""
        with self._lock:
            batch, self._buffer, self._since = self._buffer, [], None
        if not batch or self.failed is not None:
            return 0
        prefix = None
        if self._prefix is not None:
            make, self._prefix = self._prefix, None
            try:
                prefix = make()
            except Exception as e:  # e.g. an encoder without prefix tokens refuses an empty query
                log.info("query log: no prefix tokens for %s (%s: %s)", self.encoder_id, type(e).__name__, e)
        try:
            if prefix is not None and len(prefix):
                write_prefix(self.files, self.encoder_id, prefix)
            write_batch(self.files, batch, self.encoder_id, self._clock())
        except Exception as e:  # never fail a query for its log
            self.failed = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            log.warning("query log: cannot write to %s/%s, logging stops in this process (%s)", self.files.root,
                        QUERY_LOG_DIR, self.failed)
            return 0
        self.written += len(batch)
        return len(batch)
