"""IndexWriter: the one writer of an index (it holds the lease) and the commit protocol's I/O.

    with store.writer(run_id) as w:          # lease acquired (or LeaseHeld naming the holder)
        w.recover()                          # clean up after a writer that died mid-commit
        frags = write_fragments(store.table_uri("pages"), pages_table, store.storage_options)
        w.commit(CommitBatch(fragments={"pages": frags}, documents=docs, settle={...}))
        housekeep(w)                         # compaction, indexes, old versions (housekeeping.py)

:func:`write_fragments` is what workers call: it writes uncommitted Lance data files and returns
their metadata as JSON, so only that metadata travels to the driver. See ``commit.py`` for the
protocol and ``snapshot.py`` for what readers see.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Mapping, Sequence

import lance
import pyarrow as pa
import pyarrow.compute as pc

from snappy.storage import runlog
from snappy.storage import snapshot as snapshots
from snappy.storage.commit import CommitBatch, check_unique, delete_filter, make_gen, settle_for, sql_list, stale_generations
from snappy.storage.lease import Lease
from snappy.storage.schema import (CODEBOOK, CODES, DEFAULT_DIM, DOCUMENTS, INDEXED, KEYS, PAGES, REGIONS, ROW_TABLES, SCHEMAS,
                                   TABLES)

if TYPE_CHECKING:  # only a type here: the store makes its writers (IndexStore.writer), tables imports writer
    from snappy.storage.tables import IndexStore

log = logging.getLogger(__name__)

MAX_ROWS_PER_FILE = {PAGES: 4096, REGIONS: 1 << 20, DOCUMENTS: 1 << 20, CODES: 1 << 20,
                     CODEBOOK: 1 << 20}  # pages rows are ~0.4 MB each
IN_CHUNK = 5000  # values per SQL IN list


def table_schema(name: str, dim: int = DEFAULT_DIM) -> pa.Schema:
    return SCHEMAS[name](dim) if name in (PAGES, CODEBOOK, CODES) else SCHEMAS[name]()


def write_fragments(table_uri: str, data: pa.Table | pa.RecordBatchReader, storage_options: Mapping[str, str] | None,
                    max_rows_per_file: int = MAX_ROWS_PER_FILE[PAGES]) -> list[dict]:
    """Write ``data`` as uncommitted Lance fragments of the table at ``table_uri``; their metadata as JSON dicts.

    Nothing is visible until a writer commits them; files of fragments never committed are removed
    by housekeeping.
    """
    from lance.fragment import write_fragments as _write

    if isinstance(data, pa.Table) and data.num_rows == 0:
        return []
    frags = _write(data, table_uri, schema=data.schema, max_rows_per_file=max_rows_per_file,
                   storage_options=storage_options)
    return [f.to_json() for f in frags]


class IndexWriter:
    """Commits to one index while its lease is held (make it with ``IndexStore.writer``)."""

    def __init__(self, store: IndexStore, lease: Lease, run_id: str | None = None):
        self.store, self.lease, self.run_id = store, lease, run_id
        self.published: snapshots.Snapshot | None = snapshots.latest(store.files)
        self._migrated = False

    @property
    def epoch(self) -> int:
        return self.lease.epoch

    def gen(self, ordinal: int, attempt: int = 0) -> int:
        return make_gen(self.epoch, ordinal, attempt)

    # ------------------------------------------------------------------ commits
    def commit(self, batch: CommitBatch) -> snapshots.Snapshot | None:
        """Apply one batch (append fragments, merge documents, delete replaced rows) and publish a
        snapshot; returns it (None if the batch was empty)."""
        if batch.is_empty():
            return None
        self.lease.check()
        self.migrate()
        existed = {name: self.store.exists(name) for name in ROW_TABLES}
        for name in ROW_TABLES:
            frags = batch.fragments.get(name) or []
            if frags:
                self._append(name, frags, batch.dim)
        if batch.documents is not None and batch.documents.num_rows:
            self._merge_documents(batch.documents)
        where = delete_filter(batch.settle, batch.drop_gens)
        if where:
            for name in ROW_TABLES:
                if existed[name]:  # a table created by this commit has nothing to replace
                    self._delete(name, where)
        for name, where in batch.deletes.items():
            if self.store.exists(name):
                self._delete(name, where)
        for name, table in batch.replace.items():  # small tables rewritten whole (the codebook)
            lance.write_dataset(table, self.store.table_uri(name), schema=table.schema, mode="overwrite",
                                storage_options=self.store.storage_options)
        if batch.delete_documents and self.store.exists(DOCUMENTS):
            for i in range(0, len(batch.delete_documents), IN_CHUNK):
                self.store.dataset(DOCUMENTS).delete(f"doc_id IN ({sql_list(batch.delete_documents[i:i + IN_CHUNK])})")
        return self.publish()

    def publish(self) -> snapshots.Snapshot:
        """Publish the tables' latest versions as the next snapshot (after checking the lease)."""
        self.lease.check()
        versions = self.store.latest_versions()
        if self.published is not None and self.published.versions == versions:
            return self.published
        self.published = snapshots.publish(self.store.files, versions, self.run_id, self.epoch, after=self.published)
        log.debug("published snapshot %d: %s", self.published.seq, versions)
        return self.published

    def _append(self, name: str, frags: list[dict], dim: int) -> None:
        from lance.fragment import FragmentMetadata

        metas = [FragmentMetadata.from_json(json.dumps(f)) for f in frags]
        uri = self.store.table_uri(name)
        if self.store.exists(name):
            ds = self.store.dataset(name)
            lance.LanceDataset.commit(uri, lance.LanceOperation.Append(metas), read_version=ds.version,
                                      storage_options=self.store.storage_options)
        else:
            lance.LanceDataset.commit(uri, lance.LanceOperation.Overwrite(table_schema(name, dim), metas),
                                      storage_options=self.store.storage_options)

    def _merge_documents(self, docs: pa.Table) -> None:
        check_unique(DOCUMENTS, docs.column("doc_id"), "doc_id")
        schema = SCHEMAS[DOCUMENTS]()
        docs = _conform(docs, schema)
        if not self.store.exists(DOCUMENTS):
            lance.write_dataset(docs, self.store.table_uri(DOCUMENTS), schema=schema, mode="create",
                                storage_options=self.store.storage_options)
            return
        ds = self.store.dataset(DOCUMENTS)
        ds.merge_insert("doc_id").when_matched_update_all().when_not_matched_insert_all().execute(docs)

    def _delete(self, name: str, where: str) -> None:
        self.store.dataset(name).delete(where)

    # ------------------------------------------------------------------ whole documents (the direct API)
    def put_documents(self, documents, pages=None, regions=None, delete: Sequence[str] = (),
                      dim: int | None = None) -> snapshots.Snapshot:
        """Write whole documents (see :meth:`IndexStore.upsert`) in one commit."""
        self.migrate()  # fragments are written against the tables' current schemas
        docs = documents if isinstance(documents, pa.Table) else pa.Table.from_pylist(list(documents), schema=SCHEMAS[DOCUMENTS]())
        docs = _conform(docs, SCHEMAS[DOCUMENTS]())
        ids = docs.column("doc_id").to_pylist()
        statuses = docs.column("status").to_pylist()
        gens = [self.gen(i) if s == INDEXED else None for i, s in enumerate(statuses)]
        docs = docs.set_column(docs.schema.get_field_index("gen"), "gen", pa.array(gens, pa.int64()))
        gen_of = {d: g for d, g in zip(ids, gens)}
        batch = CommitBatch(documents=docs, settle=settle_for(docs.select(["doc_id", "status", "gen"]).to_pylist()))
        if pages is not None and not isinstance(pages, (pa.Table, pa.RecordBatchReader)):
            pages = list(pages)
        batch.dim = dim or (_dim_of_schema(pages.schema) if isinstance(pages, (pa.Table, pa.RecordBatchReader))
                            else _dim_of(pages or []))
        for name, data in ((PAGES, pages), (REGIONS, regions)):
            if data is None:
                continue
            if not isinstance(data, (pa.Table, pa.RecordBatchReader)):
                rows = list(data)
                if name == PAGES:
                    from snappy.storage.schema import to_table

                    data = to_table(PAGES, rows, batch.dim)
                else:
                    data = pa.Table.from_pylist(rows, schema=SCHEMAS[name]())
            batch.fragments[name] = write_fragments(self.store.table_uri(name), _with_gens(name, data, gen_of, batch.dim),
                                                    self.store.storage_options, MAX_ROWS_PER_FILE[name])
        for d in delete:
            batch.settle[d] = None
        batch.delete_documents = sorted(set(delete))
        snap = self.commit(batch)
        return snap if snap is not None else self.publish()

    # ------------------------------------------------------------------ recovery
    def migrate(self) -> None:
        """Add columns that tables written by an older snappy lack (generation 0 for existing rows)."""
        if self._migrated:
            return
        for name in TABLES:
            if not self.store.exists(name):
                continue
            ds = self.store.dataset(name)
            have = set(ds.schema.names)
            want = table_schema(name, _dim(ds))
            missing = [f for f in want if f.name not in have]
            if not missing:
                continue
            nested = [f for f in missing if pa.types.is_nested(f.type)]  # all-null columns, no SQL cast
            exprs = {f.name: ("CAST(0 AS BIGINT)" if f.name == "gen" else
                              "CAST(0 AS INT)" if f.name == "attempts" else
                              "'ocr'" if name == REGIONS and f.name == "source" else  # before the text layer
                              f"CAST(NULL AS {_sql_type(f.type)})") for f in missing if f not in nested}
            if exprs:
                ds.add_columns(exprs)
                ds = self.store.dataset(name)
                ds.alter_columns(*[{"path": n, "nullable": True} for n in exprs])
            if nested:
                ds.add_columns([f.with_nullable(True) for f in nested])
            log.warning("%s: added columns %s (index written by an older snappy)", name,
                        sorted(f.name for f in missing))
        self._migrated = True

    def recover(self) -> dict:
        """After a writer died between its Lance commits and its snapshot: delete the rows no
        document confirms, remove legacy staging, mark its run as died, publish. Returns what it did."""
        out: dict = {"swept": {}, "previous_run": None}
        prev = self.lease.previous
        if prev is not None and prev.run_id and not prev.released:
            if runlog.mark_dead(self.store.files, prev.run_id, f"the run stopped without releasing the index "
                                                                  f"(lease taken over by {self.run_id or 'a writer'})"):
                out["previous_run"] = prev.run_id
        removed = self.store.files.delete_tree("_staging")  # left by snappy versions before generations
        if removed:
            out["legacy_staging_files"] = removed
        self.migrate()  # before any fragment is written: a run's write tasks use the current schemas
        latest = self.store.latest_versions()
        if not latest or (self.published is not None and self.published.versions == latest):
            return out
        self.migrate()
        docs = self.store.dataset(DOCUMENTS).to_table(columns=["doc_id", "gen", "status"]) \
            if DOCUMENTS in latest else SCHEMAS[DOCUMENTS]().empty_table().select(["doc_id", "gen", "status"])
        for name in ROW_TABLES:
            if name not in latest:
                continue
            rows = self.store.dataset(name).to_table(columns=["doc_id", "gen"])
            stale = stale_generations(rows.column("doc_id"), rows.column("gen"), docs)
            for i in range(0, len(stale), IN_CHUNK):
                self._delete(name, f"gen IN ({sql_list(stale[i:i + IN_CHUNK])})")
            if stale:
                out["swept"][name] = len(stale)
        log.warning("recovered the index after an interrupted writer: %s", out)
        self.publish()
        return out


# ---------------------------------------------------------------------------- helpers
def _with_gens(name: str, data: pa.Table | pa.RecordBatchReader, gen_of: dict[str, int | None], dim: int):
    """Conform pages/regions rows to the table schema and fill ``gen`` from their document's generation."""
    keys = pa.array(list(gen_of), pa.string())
    vals = pa.array(list(gen_of.values()), pa.int64())
    schema = table_schema(name, dim)
    missing = [n for n in schema.names if n not in data.schema.names and n != "gen"]
    if missing:
        raise ValueError(f"{name}: data lacks columns {missing}")

    def fix(batch):
        pos = pc.index_in(batch.column("doc_id"), value_set=keys)
        if pos.null_count:
            missing_docs = pc.filter(batch.column("doc_id"), pc.is_null(pos)).unique().to_pylist()[:5]
            raise ValueError(f"{name}: rows of documents that are not in this write: {missing_docs}")
        cols = {n: batch.column(n) for n in batch.schema.names}
        cols["gen"] = pc.take(vals, pos)
        arrays = [cols[f.name].cast(f.type) for f in schema]
        if isinstance(batch, pa.RecordBatch):
            return pa.RecordBatch.from_arrays(arrays, schema=schema)
        return pa.Table.from_arrays(arrays, schema=schema)

    if isinstance(data, pa.Table):
        check_unique(name, data.column(KEYS[name]), KEYS[name])
        return fix(data)
    return pa.RecordBatchReader.from_batches(schema, (fix(b) for b in data))


def _dim_of_schema(schema: pa.Schema) -> int:
    """Vector width of a pages (``vectors``), codes (``pooled``) or codebook (``vector``) schema."""
    for name in ("vectors", "pooled", "vector"):
        t = schema.field(name).type if name in schema.names else None
        t = t.value_type if t is not None and pa.types.is_list(t) else t
        if t is not None and pa.types.is_fixed_size_list(t):
            return t.list_size
    return DEFAULT_DIM


def _dim(ds) -> int:
    return _dim_of_schema(ds.schema)


def _dim_of(rows: list[dict]) -> int:
    for r in rows:
        v = r.get("vectors")
        if v is not None and len(v):
            return int(len(v[0]))
    return DEFAULT_DIM


def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Order/cast ``data``'s columns to the table's schema (a clear error if a column is missing)."""
    missing = [n for n in schema.names if n not in data.schema.names]
    extra = [n for n in data.schema.names if n not in schema.names]
    if missing or extra:
        raise ValueError(f"data does not match the table schema: missing {missing}, unexpected {extra}")
    return data.select(schema.names).cast(schema)


def _sql_type(t: pa.DataType) -> str:
    if pa.types.is_string(t):
        return "STRING"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_int32(t):
        return "INT"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_floating(t):
        return "DOUBLE"
    raise ValueError(f"cannot add a column of type {t}")
