"""IndexStore: the Lance tables of an index under one location (local folder or ``s3://``).

Each table is a Lance dataset at ``<index>/<name>.lance`` (so ``lancedb.connect(<index>)`` opens
the same tables by name). Beside them the index keeps small JSON objects: ``_lease/`` (the one
writer), ``_snapshots/`` (the published table versions readers use) and ``_runs/`` (the run log).

Reads go through the latest published snapshot (:meth:`IndexStore.snapshot`) and keep only live
rows (:mod:`snappy.storage.commit`): a reader never sees half a commit. Writes go through
:meth:`IndexStore.writer` (which holds the lease) or, for whole documents at once,
:meth:`IndexStore.upsert`.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import lance
import pyarrow as pa
import pyarrow.compute as pc

from snappy.storage import fs
from snappy.storage import snapshot as snapshots
from snappy.storage.commit import live_mask
from snappy.storage.schema import DOCUMENTS, INDEXED, KEYS, ROW_TABLES, SCHEMAS, TABLES

if TYPE_CHECKING:
    from snappy.storage.writer import IndexWriter

log = logging.getLogger(__name__)

class IndexDamaged(RuntimeError):
    """A table of the index cannot be read as its snapshot says; the message names it and the cause."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"{reason} (run `snappy inspect {uri}` for the whole check)")
        self.uri, self.reason = uri, reason


class IndexUnavailable(OSError):
    """The index location cannot be reached (network, endpoint, credentials)."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"{uri}: cannot reach the index location ({reason})")
        self.uri, self.reason = uri, reason


def reraise_fatal(e: BaseException) -> None:
    """Lance reports some broken files as a Rust panic, pyo3's ``PanicException``, which derives from
    BaseException: callers catch BaseException to name the damage, and this lets the rest through."""
    if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise e




class IndexStore:
    """Handles on the tables of one index.

    ``storage_options`` are Lance storage options (see :func:`snappy.storage.fs.lance_options`);
    for ``s3://`` the ``AWS_*`` environment fills what is not given.
    """

    def __init__(self, uri: str, storage_options: Mapping[str, str] | fs.S3Settings | None = None):
        self.uri = fs.normalize(uri)
        self.storage_options = fs.lance_options(self.uri, storage_options)
        self.files = fs.Files(self.uri, self.storage_options)

    def __repr__(self) -> str:
        return f"IndexStore({self.uri!r})"

    # ------------------------------------------------------------------ locations
    def table_uri(self, name: str) -> str:
        if name not in KEYS:
            raise ValueError(f"unknown table {name!r}; expected one of {tuple(KEYS)}")
        return fs.join(self.uri, f"{name}.lance")

    def exists(self, name: str) -> bool:
        try:
            self.dataset(name)
            return True
        except FileNotFoundError:
            return False

    def dataset(self, name: str, version: int | None = None) -> lance.LanceDataset:
        """The table at ``version`` (default: its latest version); FileNotFoundError if it was never written."""
        uri = self.table_uri(name)
        try:
            return lance.dataset(uri, version=version, storage_options=self.storage_options)
        except (ValueError, OSError) as e:
            text = str(e).lower()
            if "not found" in text or "does not exist" in text or "no such file" in text:
                raise FileNotFoundError(f"{uri}: table {name!r} does not exist in index {self.uri}") from e
            raise

    # ------------------------------------------------------------------ versions
    def latest_versions(self) -> dict[str, int]:
        """Latest Lance version of each existing table (what a writer builds on; may be ahead of the snapshot)."""
        return {name: self.dataset(name).version for name in TABLES if self.exists(name)}

    def snapshot(self) -> snapshots.Snapshot | None:
        """The latest published snapshot; for an index written before snapshots existed, its
        latest versions as snapshot 0; None for an empty location."""
        try:
            snap = snapshots.latest(self.files)
        except snapshots.SnapshotCorrupt as e:
            raise IndexDamaged(self.uri, str(e)) from e
        except Exception as e:  # botocore: EndpointConnectionError, ClientError (403, NoSuchBucket), ...
            if not self.files.remote:
                raise
            from snappy.errors import s3_reason

            raise IndexUnavailable(self.uri, s3_reason(e, 0)) from e
        if snap is not None:
            return snap
        latest = self.latest_versions()
        return snapshots.Snapshot(seq=0, versions=latest, created_at=0.0) if latest else None

    def versions(self) -> dict[str, int]:
        """The table versions readers see now (the latest snapshot's)."""
        snap = self.snapshot()
        return dict(snap.versions) if snap else {}

    def at(self, name: str, snap: snapshots.Snapshot | None = None) -> lance.LanceDataset:
        """The table at the snapshot's version (default: the latest snapshot)."""
        snap = snap if snap is not None else self.snapshot()
        if snap is None or name not in snap.versions:
            raise FileNotFoundError(f"{self.table_uri(name)}: table {name!r} does not exist in index {self.uri}")
        return self.dataset(name, snap.versions[name])

    # ------------------------------------------------------------------ reads (live rows of a snapshot)
    def documents(self, columns: Sequence[str] | None = None, filter: str | None = None,
                  snap: snapshots.Snapshot | None = None) -> pa.Table:
        """The documents table at the snapshot (empty, with its schema, when the index has none)."""
        snap = snap if snap is not None else self.snapshot()
        if snap is None or DOCUMENTS not in snap.versions:
            schema = SCHEMAS[DOCUMENTS]()
            return schema.empty_table().select(list(columns)) if columns else schema.empty_table()
        return self.at(DOCUMENTS, snap).to_table(columns=list(columns) if columns else None, filter=filter)

    def read(self, name: str, columns: Sequence[str] | None = None, filter: str | None = None,
             snap: snapshots.Snapshot | None = None, documents: pa.Table | None = None) -> pa.Table:
        """Live rows of ``pages`` or ``regions`` at the snapshot (rows of unconfirmed generations dropped).

        ``documents`` (doc_id, gen, status at the same snapshot) may be passed to avoid re-reading it.
        """
        if name not in ROW_TABLES:
            raise ValueError(f"read() is for {ROW_TABLES}; use documents() for {name!r}")
        snap = snap if snap is not None else self.snapshot()
        if snap is None or name not in snap.versions:
            schema = SCHEMAS[name]()
            return schema.empty_table().select(list(columns)) if columns else schema.empty_table()
        want = list(columns) if columns else None
        extra = [c for c in ("doc_id", "gen") if want is not None and c not in want]
        table = self.at(name, snap).to_table(columns=(want + extra) if want is not None else None, filter=filter)
        if documents is None:
            documents = self.documents(["doc_id", "gen", "status"], snap=snap)
        keep = live_mask(table.column("doc_id"), table.column("gen"), documents)
        if not keep.all():  # a filter copies every column, even when it keeps every row
            table = table.filter(pa.array(keep))
        return table.drop_columns(extra)

    def count_rows(self, snap: snapshots.Snapshot | None = None) -> dict[str, int]:
        """Live rows per table at the snapshot."""
        snap = snap if snap is not None else self.snapshot()
        if snap is None:
            return {}
        docs = self.documents(["doc_id", "gen", "status"], snap=snap)
        out = {DOCUMENTS: docs.num_rows} if DOCUMENTS in snap.versions else {}
        for name in ROW_TABLES:
            if name in snap.versions:
                out[name] = self.read(name, ["doc_id"], snap=snap, documents=docs).num_rows
        return out

    def failed_documents(self) -> pa.Table:
        return self.documents(columns=["doc_id", "uri", "status", "failure", "error", "attempts", "checked_at"],
                              filter="status != 'indexed' OR error IS NOT NULL")

    def stats(self) -> dict[str, dict]:
        """Per table at the snapshot: rows, version, fragments; documents by status; encoder ids."""
        snap = self.snapshot()
        out: dict[str, dict] = {}
        if snap is None:
            return out
        for name in TABLES:
            if name not in snap.versions:
                continue
            ds = self.dataset(name, snap.versions[name])
            out[name] = {"rows": ds.count_rows(), "version": ds.version, "fragments": len(ds.get_fragments())}
        if DOCUMENTS in out:
            docs = self.documents(columns=["status", "encoder_id"], snap=snap)
            status = pc.value_counts(docs.column("status")).to_pylist()
            out[DOCUMENTS]["status"] = {s["values"]: s["counts"] for s in status}
            indexed = docs.filter(pc.equal(docs.column("status"), INDEXED))
            out[DOCUMENTS]["encoders"] = sorted({e for e in indexed.column("encoder_id").to_pylist() if e})
        return out

    # ------------------------------------------------------------------ writes
    @contextmanager
    def writer(self, run_id: str | None = None, wait_s: float = 60.0, ttl_s: float = 300.0) -> Iterator["IndexWriter"]:
        """Hold the index's lease (waiting up to ``wait_s`` for another writer) and yield its writer.

        Raises :class:`snappy.storage.lease.LeaseHeld` naming the holder if it stays busy.
        """
        from snappy.storage.lease import Lease
        from snappy.storage.writer import IndexWriter

        lease = Lease(self.files, run_id=run_id, ttl_s=ttl_s)
        lease.acquire(wait_s=wait_s)
        with lease:
            yield IndexWriter(self, lease, run_id)

    def upsert(self, documents: pa.Table | Sequence[dict], pages: pa.Table | pa.RecordBatchReader | Sequence[dict] | None = None,
               regions: pa.Table | pa.RecordBatchReader | Sequence[dict] | None = None,
               delete: Sequence[str] = (), wait_s: float = 60.0, dim: int | None = None) -> snapshots.Snapshot:
        """Write whole documents in one commit: their documents rows, and ALL their pages and
        regions (rows these documents had before and that are not given are deleted); ``delete``
        removes documents. Holds the lease while writing; waits up to ``wait_s`` for another
        writer. Returns the published snapshot. Idempotent: the same call twice leaves the same rows.
        """
        with self.writer(wait_s=wait_s) as w:
            return w.put_documents(documents, pages, regions, delete=delete, dim=dim)

    def delete_documents(self, doc_ids: Sequence[str], wait_s: float = 60.0) -> snapshots.Snapshot:
        """Delete every row of these documents (one commit, lease held)."""
        with self.writer(wait_s=wait_s) as w:
            return w.put_documents([], delete=doc_ids)
