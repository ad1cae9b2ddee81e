"""Housekeeping after a run (the writer still holds the lease): compaction, scalar indexes, old versions.

- **Compaction** (Lance's ``compact_files``): a run appends many small fragments (one per worker
  write) and deletes replaced rows; once a table has ``compact_min_fragments`` fragments below the
  target size, or more than ``max_deleted_share`` of its rows are deleted, compaction merges the
  small fragments and materialises deletions, so readers open a few large files.
- **Scalar indexes** (BTREE) on the keys queries and commits filter by: ``documents.doc_id``
  (merge), ``pages.page_id`` (rows by id), ``regions.page_id`` (a page's regions), ``doc_id`` on
  pages/regions (replacing a document's rows). New fragments are added incrementally
  (``optimize_indices``).
- **Old versions** (``cleanup_old_versions``): every version older than ``retain_s`` is removed,
  except the versions of the latest snapshot (they are the latest versions once this runs). A
  reader that refreshes its snapshot at least every ``retain_s`` (default 1 hour; the query
  service refreshes every few seconds) never finds a file missing. Data files that no version
  references (fragments of a run that died before committing them) go too: no other writer can
  be writing while the lease is held.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from snappy.storage.schema import CODEBOOK, CODES, DOCUMENTS, PAGES, REGIONS
from snappy.storage.schema import TABLES
from snappy.storage.writer import MAX_ROWS_PER_FILE, IndexWriter

log = logging.getLogger(__name__)

SCALAR_INDEXES = {DOCUMENTS: ("doc_id",), PAGES: ("page_id", "doc_id"), REGIONS: ("page_id", "doc_id"),
                  CODES: ("doc_id",), CODEBOOK: ()}


@dataclass(frozen=True)
class HousekeepingOptions:
    compact: bool = True
    compact_min_fragments: int = 32  # small fragments that make compaction worth it
    max_deleted_share: float = 0.1  # deleted rows (of the table's physical rows) that do too
    scalar_indexes: bool = True
    retain_s: float = 3600.0  # versions younger than this stay readable (None: keep every version)
    target_rows: dict = field(default_factory=lambda: dict(MAX_ROWS_PER_FILE))  # rows per compacted fragment


def housekeep(writer: IndexWriter, options: HousekeepingOptions = HousekeepingOptions()) -> dict:
    """Compact, index and clean every table; publish the result. Returns what was done per table."""
    store = writer.store
    out: dict[str, dict] = {}
    for name in TABLES:
        if not store.exists(name):
            continue
        ds = store.dataset(name)
        info: dict = {"fragments_before": len(ds.get_fragments())}
        if options.compact and _needs_compaction(ds, options.target_rows[name], options):
            metrics = ds.optimize.compact_files(target_rows_per_fragment=options.target_rows[name],
                                                materialize_deletions=True,
                                                materialize_deletions_threshold=options.max_deleted_share)
            info["compacted"] = {"removed": metrics.fragments_removed, "added": metrics.fragments_added}
            ds = store.dataset(name)
        if options.scalar_indexes and SCALAR_INDEXES[name] and ds.count_rows():
            have = {c for idx in ds.describe_indices() for c in idx.field_names}
            new = [c for c in SCALAR_INDEXES[name] if c not in have]
            for column in new:
                ds.create_scalar_index(column, "BTREE")
            if have:
                ds.optimize.optimize_indices()
            info["indexes"] = sorted(have | set(new))
        info["fragments"] = len(store.dataset(name).get_fragments())
        out[name] = info
    writer.publish()
    if options.retain_s is not None:
        for name, info in out.items():
            stats = store.dataset(name).cleanup_old_versions(
                older_than=timedelta(seconds=options.retain_s), delete_unverified=True,
                error_if_tagged_old_versions=False)
            info["cleanup"] = {"versions_removed": stats.old_versions, "bytes_removed": stats.bytes_removed}
    log.info("housekeeping: %s", out)
    return out


def _needs_compaction(ds, target_rows: int, options: HousekeepingOptions) -> bool:
    frags = ds.get_fragments()
    small = sum(1 for f in frags if f.metadata.num_rows < target_rows)
    if small >= options.compact_min_fragments:
        return True
    physical = sum(f.metadata.num_rows for f in frags)
    deleted = sum(f.metadata.num_deletions for f in frags)
    return physical > 0 and deleted / physical > options.max_deleted_share
