"""IndexStore: the three Lance tables of an index under one location (local folder or ``s3://``).

Each table is a Lance dataset at ``<index>/<name>.lance`` (so ``lancedb.connect(<index>)`` opens
the same tables by name). Writes are upserts keyed on the table's id column; every
:meth:`IndexStore.upsert` call is exactly one Lance commit (one new version).
"""
from __future__ import annotations

import logging
from typing import Iterable, Mapping, Sequence

import lance
import pyarrow as pa
import pyarrow.compute as pc

from snappy.storage import fs
from snappy.storage.schema import DOCUMENTS, KEYS, PAGES, REGIONS, SCHEMAS

log = logging.getLogger(__name__)

TABLES = (DOCUMENTS, PAGES, REGIONS)


def sql_list(values: Iterable[str]) -> str:
    """``'a', 'b'`` for a SQL ``IN (...)`` filter, quotes escaped."""
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


class IndexStore:
    """Handles on the tables of one index.

    ``storage_options`` are Lance storage options (see :func:`snappy.storage.fs.lance_options`);
    for ``s3://`` the ``AWS_*`` environment fills what is not given.
    """

    def __init__(self, uri: str, storage_options: Mapping[str, str] | fs.S3Settings | None = None):
        self.uri = fs.normalize(uri)
        self.storage_options = fs.lance_options(self.uri, storage_options)

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
        except (FileNotFoundError, ValueError):
            return False
        except OSError as e:  # object stores report a missing dataset as an IO error
            if "not found" in str(e).lower():
                return False
            raise

    def dataset(self, name: str, version: int | None = None) -> lance.LanceDataset:
        """The table's latest version (or ``version``); FileNotFoundError if it was never written."""
        uri = self.table_uri(name)
        try:
            return lance.dataset(uri, version=version, storage_options=self.storage_options)
        except ValueError as e:
            if "not found" in str(e).lower() or "does not exist" in str(e).lower():
                raise FileNotFoundError(f"{uri}: table {name!r} does not exist in index {self.uri}") from e
            raise

    # ------------------------------------------------------------------ writes
    def upsert(self, name: str, data: pa.Table | pa.RecordBatchReader,
               replace_docs: Sequence[str] | None = None) -> int:
        """Insert or update ``data`` by the table's key in one commit; returns the new version.

        With ``replace_docs``, rows of those doc_ids that are not in ``data`` are deleted in the
        same commit, so a re-indexed document leaves no stale pages/regions behind. Creates the
        table on first write. Idempotent: the same call twice leaves the same rows.
        """
        key = KEYS.get(name)
        if key is None:
            raise ValueError(f"unknown table {name!r}; expected one of {tuple(KEYS)}")
        docs = sorted(set(replace_docs)) if replace_docs else []
        if not self.exists(name):
            if isinstance(data, pa.Table):
                _check_unique(name, data, key)
            ds = lance.write_dataset(data, self.table_uri(name), schema=data.schema, mode="create",
                                     storage_options=self.storage_options)
            log.debug("created %s with %d rows (version %d)", name, ds.count_rows(), ds.version)
            return ds.version
        ds = self.dataset(name)
        data = _conform(data, ds.schema)
        if isinstance(data, pa.Table):
            _check_unique(name, data, key)
        builder = ds.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
        if docs:
            builder = builder.when_not_matched_by_source_delete(f"doc_id IN ({sql_list(docs)})")
        stats = builder.execute(data)
        version = self.dataset(name).version
        log.debug("upsert %s: %s (version %d)", name, stats, version)
        return version

    def delete_documents(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """Delete every row of these documents from all tables (one commit per table that has any)."""
        doc_ids = sorted(set(doc_ids))
        out = {}
        for name in TABLES:
            if not self.exists(name):
                continue
            ds = self.dataset(name)
            if doc_ids:
                ds.delete(f"doc_id IN ({sql_list(doc_ids)})")
            out[name] = self.dataset(name).version
        return out

    # ------------------------------------------------------------------ reads
    def versions(self) -> dict[str, int]:
        """Latest version of each existing table."""
        return {name: self.dataset(name).version for name in TABLES if self.exists(name)}

    def count_rows(self) -> dict[str, int]:
        return {name: self.dataset(name).count_rows() for name in TABLES if self.exists(name)}

    def documents(self, columns: Sequence[str] | None = None, filter: str | None = None) -> pa.Table:
        """The documents table (empty, with its schema, when the index has none yet)."""
        if not self.exists(DOCUMENTS):
            schema = SCHEMAS[DOCUMENTS]()
            return schema.empty_table().select(list(columns)) if columns else schema.empty_table()
        return self.dataset(DOCUMENTS).to_table(columns=list(columns) if columns else None, filter=filter)

    def failed_documents(self) -> pa.Table:
        return self.documents(columns=["doc_id", "uri", "error", "indexed_at"], filter="status = 'failed'")

    def stats(self) -> dict[str, dict]:
        """Per table: rows, version, files on disk (fragments), and the index's encoder ids."""
        out: dict[str, dict] = {}
        for name in TABLES:
            if not self.exists(name):
                continue
            ds = self.dataset(name)
            out[name] = {"rows": ds.count_rows(), "version": ds.version, "fragments": len(ds.get_fragments())}
        if DOCUMENTS in out:
            docs = self.documents(columns=["status", "encoder_id"])
            status = pc.value_counts(docs.column("status")).to_pylist()
            out[DOCUMENTS]["status"] = {s["values"]: s["counts"] for s in status}
            out[DOCUMENTS]["encoders"] = sorted({e for e in docs.column("encoder_id").to_pylist() if e})
        return out


def _check_unique(name: str, table: pa.Table, key: str) -> None:
    """Lance merge_insert rejects (or mis-applies) duplicate keys in the source: say which."""
    keys = table.column(key)
    if len(pc.unique(keys)) != len(keys):
        counts = pc.value_counts(keys)
        dup = [c["values"] for c in counts.to_pylist() if c["counts"] > 1][:5]
        raise ValueError(f"{name}: duplicate {key} values in one write: {dup}")


def _conform(data: pa.Table | pa.RecordBatchReader, schema: pa.Schema):
    """Order/cast ``data``'s columns to the table's schema (a clear error if a column is missing)."""
    names = schema.names
    have = data.schema.names
    missing = [n for n in names if n not in have]
    extra = [n for n in have if n not in names]
    if missing or extra:
        raise ValueError(f"data does not match the table schema: missing {missing}, unexpected {extra}")
    if data.schema.equals(schema, check_metadata=False):
        return data
    if isinstance(data, pa.Table):
        return data.select(names).cast(schema)
    batches = (pa.RecordBatch.from_arrays([b.column(n) for n in names], names=names).cast(schema) for b in data)
    return pa.RecordBatchReader.from_batches(schema, batches)
