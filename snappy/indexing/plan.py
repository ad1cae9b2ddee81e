"""What an indexing run does with each listed entry: the decisions, as pure functions.

The index remembers, per document, its source fingerprint (size + ETag on S3, size + mtime for
local files), the content hash it indexed, the settings it was indexed with and how it ended
(indexed, failed, pending a retry). A run compares the listing against that, chunk by chunk,
without reading any document:

| listed entry                                             | action  |
|----------------------------------------------------------|---------|
| not a readable entry (directory named x.pdf, FIFO, ...)   | REJECT: a failed row with the reason (SKIP if already recorded) |
| unknown to the index                                     | INDEX   |
| ``--full``, or indexed with other settings               | INDEX   |
| fingerprint changed, content hash known                  | CHECK: read + hash; same hash only updates the fingerprint ("touch") |
| fingerprint changed, no content hash                     | INDEX   |
| unchanged and indexed                                    | SKIP    |
| unchanged, last attempt failed transiently               | INDEX (retry) while ``attempts < max_attempts``, then SKIP |
| unchanged, failed for a reason of its own                | SKIP (``retry_failed``: INDEX) |

A document that waits after a failure (failed for a reason of its own, or transient failures up to
``max_attempts``) or an entry already rejected for the same reason waits for a *real* change: its
size or ETag. Its mtime alone does not count: some entries get a new mtime on every listing while
every read fails the same way (a symlink into ``/proc``: its mtime is the lister's start), and
counting that would re-read them, start Ray and publish a snapshot every night. Such an entry comes
back with a new size or ETag, new settings, ``--full`` or ``--retry-failed``.

Known documents under the source root that the complete listing did not contain are pruned
(``prune``). ``limit`` caps the documents read in this run (INDEX + CHECK); the rest wait for the
next run and are not pruned.

The index side is held as sorted 64-bit keys and NumPy columns (about 60 bytes a document plus
its content hash and settings strings), so a chunk of listed entries is planned with a binary
search per entry and no Python dict of the whole lake.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from snappy.storage.schema import FAILED, INDEXED, PENDING, IndexSettings

if TYPE_CHECKING:
    from snappy.documents.sources import Source


class Action(IntEnum):
    SKIP = 0
    INDEX = 1
    CHECK = 2  # read + hash; index only if the bytes changed
    REJECT = 3  # the entry cannot be a document: record why
    DEFER = 4  # over --limit: next run


# Why an entry got its action (counted in the run summary).
WHY = ("unchanged", "new", "changed", "settings", "full", "retry", "failed_unchanged", "gave_up", "rejected",
       "rejected_unchanged", "deferred", "unhashed")


@dataclass(frozen=True)
class PlanOptions:
    incremental: bool = True  # False: --full, re-index everything listed
    retry_failed: bool = False  # re-try documents that failed for a reason of their own
    max_attempts: int = 3  # transient failures in a row before a document waits for a change
    limit: int | None = None  # documents read (INDEX + CHECK) per run


def doc_keys(doc_ids: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
    """``uint64`` keys of 16-hex-digit doc_ids (vectorised)."""
    arr = pa.array(doc_ids, pa.string()) if not isinstance(doc_ids, (pa.Array, pa.ChunkedArray)) else doc_ids
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if len(arr) == 0:
        return np.zeros(0, np.uint64)
    lengths = pc.utf8_length(arr).to_numpy(zero_copy_only=False)
    if arr.null_count or not (lengths == 16).all():
        raise ValueError("doc_ids must be 16 hexadecimal digits")
    offsets = np.frombuffer(arr.buffers()[1], np.int32, len(arr) + 1, arr.offset * 4)
    data = np.frombuffer(arr.buffers()[2], np.uint8)
    chars = data[offsets[0]:offsets[-1]].reshape(-1, 16)
    nib = np.where(chars >= ord("a"), chars - (ord("a") - 10), chars - ord("0")).astype(np.uint64)
    if (nib > 15).any():
        raise ValueError("doc_ids must be lowercase hexadecimal")
    shifts = np.arange(60, -1, -4, dtype=np.uint64)
    return (nib << shifts).sum(axis=1, dtype=np.uint64)


_KNOWN_COLUMNS = ["doc_id", "uri", "size", "etag", "mtime_ns", "content_hash", "status", "error", "attempts", "gen",
                  "settings"]


@dataclass
class KnownDocuments:
    """The index's documents, sorted by key, as the planner needs them."""

    keys: np.ndarray  # uint64 [n], sorted
    table: pa.Table  # _KNOWN_COLUMNS, in key order
    in_scope: np.ndarray  # bool [n]: under the listed source root (prune candidates)
    seen: np.ndarray = field(init=False)  # bool [n]: matched by the listing so far

    def __post_init__(self) -> None:
        self.seen = np.zeros(len(self.keys), bool)
        t = self.table
        self.size = pc.fill_null(t.column("size"), -1).to_numpy().astype(np.int64)
        self.mtime_ns = pc.fill_null(t.column("mtime_ns"), -1).to_numpy().astype(np.int64)
        self.attempts = pc.fill_null(t.column("attempts"), 0).to_numpy().astype(np.int64)
        status = t.column("status")
        self.indexed = pc.equal(status, INDEXED).to_numpy(zero_copy_only=False)
        self.failed = pc.equal(status, FAILED).to_numpy(zero_copy_only=False)
        self.pending = pc.equal(status, PENDING).to_numpy(zero_copy_only=False)
        self.has_error = pc.is_valid(t.column("error")).to_numpy(zero_copy_only=False)
        self.has_hash = pc.is_valid(t.column("content_hash")).to_numpy(zero_copy_only=False)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_table(cls, docs: pa.Table, root: str | None = None) -> "KnownDocuments":
        """From documents rows (at least ``_KNOWN_COLUMNS``); ``root`` scopes pruning to one source."""
        docs = docs.select(_KNOWN_COLUMNS)
        keys = doc_keys(docs.column("doc_id"))
        order = np.argsort(keys, kind="stable")
        docs = docs.take(pa.array(order))
        keys = keys[order]
        if root is None:
            scope = np.ones(len(keys), bool)
        else:
            r = root.rstrip("/")
            uris = docs.column("uri")
            scope = pc.or_(pc.equal(uris, r), pc.starts_with(uris, r + "/")).to_numpy(zero_copy_only=False)
        return cls(keys, docs, np.asarray(scope, bool))

    @classmethod
    def empty(cls) -> "KnownDocuments":
        from snappy.storage.schema import documents_schema

        return cls.from_table(documents_schema().empty_table())

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Positions of ``keys`` in this table, -1 where unknown."""
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, max(len(self.keys) - 1, 0))
        hit = (len(self.keys) > 0) & (self.keys[pos] == keys) if len(self.keys) else np.zeros(len(keys), bool)
        return np.where(hit, pos, -1)

    def unseen_in_scope(self) -> pa.Table:
        """Known documents under the source root that the listing did not contain (prune candidates)."""
        return self.table.filter(pa.array(self.in_scope & ~self.seen)).select(["doc_id", "uri"])


@dataclass
class ListedChunk:
    """A chunk of listed entries as columns."""

    doc_id: pa.Array  # string
    size: np.ndarray  # int64, -1 unknown
    etag: pa.Array  # string (null for local files)
    mtime_ns: np.ndarray  # int64, -1 unknown
    problem: list[str | None]

    @classmethod
    def from_entries(cls, entries: Sequence) -> "ListedChunk":
        """From ``snappy.documents.sources.SourceEntry``-like objects (doc_id, size, etag, mtime_ns, problem)."""
        return cls(doc_id=pa.array([e.doc_id for e in entries], pa.string()),
                   size=np.array([-1 if e.size is None else e.size for e in entries], np.int64),
                   etag=pa.array([e.etag for e in entries], pa.string()),
                   mtime_ns=np.array([-1 if e.mtime_ns is None else e.mtime_ns for e in entries], np.int64),
                   problem=[e.problem for e in entries])

    def __len__(self) -> int:
        return len(self.doc_id)


@dataclass
class ChunkPlan:
    action: np.ndarray  # int8 [n] Action
    why: np.ndarray  # int8 [n] index into WHY
    known: np.ndarray  # int64 [n] position in KnownDocuments, -1 if new

    def counts(self) -> dict[str, int]:
        vals, n = np.unique(self.why, return_counts=True)
        return {WHY[v]: int(c) for v, c in zip(vals, n)}


def plan_chunk(chunk: ListedChunk, known: KnownDocuments, settings: str, options: PlanOptions = PlanOptions(),
               budget: int | None = None) -> ChunkPlan:
    """Decide each listed entry's action (see the module table); marks the matched known rows as seen.

    ``budget``: how many more documents this run may read (INDEX + CHECK); the rest are DEFER.
    """
    n = len(chunk)
    pos = known.lookup(doc_keys(chunk.doc_id))
    is_known = pos >= 0
    known.seen[pos[is_known]] = True
    p = np.where(is_known, pos, 0)  # safe gather index
    take = pa.array(p) if n else pa.array([], pa.int64())

    def gather(values: np.ndarray) -> np.ndarray:  # the known column for each listed entry (junk where unknown)
        return values[p] if len(known) else np.zeros(n, values.dtype)

    def gather_str(name: str) -> pa.Array:
        return pc.take(known.table.column(name), take) if len(known) else pa.nulls(n, pa.string())

    problem = np.array([x is not None for x in chunk.problem], bool)
    same_size_etag = is_known & (gather(known.size) == chunk.size) & _null_safe_equal(gather_str("etag"), chunk.etag)
    same_fp = same_size_etag & (gather(known.mtime_ns) == chunk.mtime_ns)
    same_settings = is_known & pc.fill_null(pc.equal(gather_str("settings"), settings), False).to_numpy(
        zero_copy_only=False)
    indexed, failed, pending = (is_known & gather(known.indexed)), (is_known & gather(known.failed)), \
        (is_known & gather(known.pending))
    transient = (indexed & gather(known.has_error)) | pending
    under_cap = gather(known.attempts) < options.max_attempts
    has_hash = gather(known.has_hash)
    same_problem = failed & _null_safe_equal(gather_str("error"), pa.array(chunk.problem, pa.string()))
    # failed, or transient at the cap: waits for a change, and a new mtime alone is none (module doc)
    waiting = (failed | (transient & ~under_cap)) & (not options.retry_failed)
    changed = ~same_fp & ~(waiting & same_size_etag)

    why = np.full(n, WHY.index("unchanged"), np.int8)
    action = np.full(n, Action.SKIP, np.int8)

    def rule(mask, act, reason):  # the first matching rule decides
        free = mask & ~decided
        action[free] = act
        why[free] = WHY.index(reason)
        decided[free] = True

    decided = np.zeros(n, bool)
    rule(problem & same_problem & same_size_etag, Action.SKIP, "rejected_unchanged")
    rule(problem, Action.REJECT, "rejected")
    rule(~is_known, Action.INDEX, "new")
    rule(np.full(n, not options.incremental), Action.INDEX, "full")
    rule(~same_settings, Action.INDEX, "settings")
    rule(changed & has_hash, Action.CHECK, "changed")
    rule(changed, Action.INDEX, "unhashed")
    rule(transient & (under_cap | options.retry_failed), Action.INDEX, "retry")
    rule(transient, Action.SKIP, "gave_up")
    rule(failed & options.retry_failed, Action.INDEX, "retry")
    rule(failed, Action.SKIP, "failed_unchanged")
    # what is left: unchanged and indexed -> SKIP / "unchanged"

    if budget is not None:
        reads = np.flatnonzero((action == Action.INDEX) | (action == Action.CHECK))
        over = reads[max(budget, 0):]
        action[over] = Action.DEFER
        why[over] = WHY.index("deferred")
    return ChunkPlan(action, why, np.where(is_known, pos, -1))


def _null_safe_equal(a: pa.Array, b: pa.Array) -> np.ndarray:
    eq = pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b)).to_numpy(zero_copy_only=False)
    return np.asarray(eq | both_null, bool)


# ---------------------------------------------------------------------- a run's plan
# Work items: what the driver plans for each document to read.
WORK_SCHEMA = pa.schema([
    ("ordinal", pa.int64()), ("doc_id", pa.string()), ("uri", pa.string()), ("raw_path", pa.binary()),
    ("size", pa.int64()), ("etag", pa.string()), ("mtime_ns", pa.int64()), ("known_hash", pa.string()),
    ("action", pa.int8()),
])


@dataclass
class Plan:
    work: list[pa.Table] = field(default_factory=list)  # WORK_SCHEMA chunks
    rejects: list[tuple[dict, str]] = field(default_factory=list)  # (listed entry, reason)
    counts: dict[str, int] = field(default_factory=dict)
    listed: int = 0
    listed_of: dict[str, dict] = field(default_factory=dict)  # doc_id -> listing fields (work + rejects only)

    @property
    def n_work(self) -> int:
        return sum(t.num_rows for t in self.work)


def plan_run(source: Source, known: KnownDocuments, settings: IndexSettings, opts: PlanOptions = PlanOptions(),
             chunk_size: int = 10_000) -> Plan:
    """List the source chunk by chunk and decide what to do with each entry; reads no document."""
    plan, settings_json = Plan(), settings.to_json()
    hashes = known.table.column("content_hash")
    for entries in source.iter_chunks(chunk_size):
        budget = None if opts.limit is None else opts.limit - plan.n_work
        cp = plan_chunk(ListedChunk.from_entries(entries), known, settings_json, opts, budget)
        plan.listed += len(entries)
        for k, v in cp.counts().items():
            plan.counts[k] = plan.counts.get(k, 0) + v
        rows = []
        for j, e in enumerate(entries):
            act = int(cp.action[j])
            if act in (Action.INDEX, Action.CHECK):
                rows.append({"ordinal": plan.n_work + len(rows), "doc_id": e.doc_id, "uri": e.uri,
                             "raw_path": e.raw_path, "size": e.size, "etag": e.etag, "mtime_ns": e.mtime_ns,
                             "known_hash": hashes[int(cp.known[j])].as_py() if act == Action.CHECK else None,
                             "action": act})
            elif act == Action.REJECT:
                plan.rejects.append((_listed(e), e.problem))
            else:
                continue
            plan.listed_of[e.doc_id] = _listed(e)
        if rows:
            plan.work.append(pa.Table.from_pylist(rows, schema=WORK_SCHEMA))
    return plan


def _listed(e) -> dict:
    return {"doc_id": e.doc_id, "uri": e.uri, "size": e.size, "etag": e.etag, "mtime_ns": e.mtime_ns}
