"""The commit protocol's pure parts: generations, what one commit changes, and which rows are live.

Every pages and regions row carries a generation (``gen``, int64); the documents row of a
document names the one generation whose rows *are* the document (``documents.gen``). A row whose
generation differs from its document's is not part of the index: a reader drops it, and a later
commit deletes it. This is what lets a run commit often without readers ever seeing half a
document:

1. workers write pages/regions rows of a new generation as uncommitted Lance fragments;
2. a commit appends those fragments (invisible: their generation is not confirmed yet), then
   merges the documents rows that confirm the generations of the documents that are complete,
   then deletes the rows those documents no longer use, then publishes a snapshot;
3. readers open the snapshot's table versions and keep the rows whose ``(doc_id, gen)`` matches
   the documents table at that version.

A document whose pages are still in flight at commit time has some rows appended but not
confirmed: invisible until a later commit confirms them. A run that dies leaves unconfirmed rows;
the next writer finds them (:func:`stale_generations`) and deletes them.

Generation layout: ``epoch << 32 | ordinal << 6 | attempt``: the writer's lease epoch (unique per
writer), the document's position in the run (< 2**26) and the attempt at processing it (< 64), so
generations are unique without coordination and a retried document never reuses one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ORDINAL_BITS, ATTEMPT_BITS = 26, 6
MAX_ORDINAL, MAX_ATTEMPT = (1 << ORDINAL_BITS) - 1, (1 << ATTEMPT_BITS) - 1


def make_gen(epoch: int, ordinal: int, attempt: int = 0) -> int:
    """The generation of attempt ``attempt`` at the ``ordinal``-th document of the writer with lease ``epoch``."""
    if not 0 < epoch < (1 << 31):
        raise ValueError(f"lease epoch {epoch} out of range")
    if not 0 <= ordinal <= MAX_ORDINAL:
        raise ValueError(f"document ordinal {ordinal} out of range (one run handles at most {MAX_ORDINAL + 1})")
    return (epoch << 32) | (ordinal << ATTEMPT_BITS) | min(max(attempt, 0), MAX_ATTEMPT)


def sql_list(values: Iterable) -> str:
    """``'a', 'b'`` (strings, quotes escaped) or ``1, 2`` (integers) for a SQL ``IN (...)``."""
    out = []
    for v in values:
        out.append(str(int(v)) if isinstance(v, (int, np.integer)) else "'" + str(v).replace("'", "''") + "'")
    return ", ".join(out)


@dataclass
class CommitBatch:
    """What one commit writes (built by the indexing driver, applied by ``IndexWriter.commit``).

    ``fragments``: table -> Lance fragment metadata (JSON dicts) written by workers, to append.
    ``documents``: rows to merge into the documents table (by ``doc_id``).
    ``settle``: doc_id -> the generation whose rows the document keeps (``None``: it keeps no
    rows: it failed, was pruned, or has no pages). Every other row of these documents is deleted.
    ``drop_gens``: further generations to delete wherever they are (rows of abandoned attempts).
    ``delete_documents``: documents rows to delete (pruned documents; they are also in ``settle``).
    """

    fragments: dict[str, list[dict]] = field(default_factory=dict)
    documents: pa.Table | None = None
    settle: dict[str, int | None] = field(default_factory=dict)
    drop_gens: set[int] = field(default_factory=set)
    delete_documents: list[str] = field(default_factory=list)
    deletes: dict[str, str] = field(default_factory=dict)  # table -> filter of further rows to delete
    replace: dict[str, pa.Table] = field(default_factory=dict)  # small tables rewritten whole (the codebook)
    dim: int = 128  # vector width (to create the pages table on its first commit)

    def is_empty(self) -> bool:
        return not (any(self.fragments.values()) or (self.documents is not None and self.documents.num_rows)
                    or self.settle or self.drop_gens or self.delete_documents or self.deletes or self.replace)


def delete_filter(settle: Mapping[str, int | None], drop_gens: Iterable[int] = ()) -> str | None:
    """The Lance filter selecting the pages/regions rows a commit deletes (None: nothing).

    Generations are unique per document attempt, so "this document's rows whose generation is not
    the one it keeps" is ``doc_id IN (kept docs) AND gen NOT IN (their gens)`` exactly.
    """
    parts = []
    none = sorted(d for d, g in settle.items() if g is None)
    keep = {d: g for d, g in settle.items() if g is not None}
    if none:
        parts.append(f"doc_id IN ({sql_list(none)})")
    if keep:
        parts.append(f"(doc_id IN ({sql_list(sorted(keep))}) AND (gen IS NULL OR gen NOT IN "
                     f"({sql_list(sorted(set(keep.values())))})))")
    gens = sorted(set(int(g) for g in drop_gens))
    if gens:
        parts.append(f"gen IN ({sql_list(gens)})")
    return " OR ".join(parts) if parts else None


def live_mask(doc_ids: pa.Array | pa.ChunkedArray, gens: pa.Array | pa.ChunkedArray,
              documents: pa.Table) -> np.ndarray:
    """``[n]`` bool: which rows (with these doc_id/gen columns) are live given ``documents``
    (columns ``doc_id``, ``gen``, ``status``): their document is indexed and names their generation."""
    indexed = documents.filter(pc.equal(documents.column("status"), "indexed"))
    if len(doc_ids) == 0 or indexed.num_rows == 0:
        return np.zeros(len(doc_ids), bool)
    pos = pc.index_in(doc_ids, value_set=indexed.column("doc_id").combine_chunks())  # null if unknown
    found = pc.is_valid(pos).to_numpy(zero_copy_only=False)
    want = np.full(len(doc_ids), -1, np.int64)
    confirmed = pc.fill_null(indexed.column("gen"), -2).to_numpy().astype(np.int64)
    want[found] = confirmed[pc.drop_null(pos).to_numpy()]
    have = pc.fill_null(gens, -3).to_numpy(zero_copy_only=False).astype(np.int64)
    return found & (have == want)


def stale_generations(doc_ids: pa.Array | pa.ChunkedArray, gens: pa.Array | pa.ChunkedArray,
                      documents: pa.Table) -> list[int]:
    """Generations present in a pages/regions table that no indexed document confirms
    (what a writer that died left behind); rows with a null generation are never stale here."""
    if len(gens) == 0:
        return []
    live = live_mask(doc_ids, gens, documents)
    g = pc.fill_null(gens, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return sorted(int(x) for x in np.unique(g[~live]) if x >= 0)


def check_unique(name: str, keys: pa.ChunkedArray | pa.Array, what: str) -> None:
    """Refuse a write with duplicate keys, naming a few."""
    if len(pc.unique(keys)) != len(keys):
        counts = pc.value_counts(keys)
        dup = [c["values"] for c in counts.to_pylist() if c["counts"] > 1][:5]
        raise ValueError(f"{name}: duplicate {what} values in one write: {dup}")


def settle_for(rows: Sequence[dict]) -> dict[str, int | None]:
    """``settle`` entries for documents rows being written: an indexed row keeps its generation,
    any other status keeps no rows."""
    return {r["doc_id"]: (r.get("gen") if r.get("status", "indexed") == "indexed" else None) for r in rows}
