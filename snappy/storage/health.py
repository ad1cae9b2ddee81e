"""Is an index intact? Checks what ``snappy inspect`` reports, naming the table, the file and the cause.

For each table of the latest snapshot: its manifest opens at the snapshot's version, its schema has
the columns snappy writes, every data and deletion file the version references exists with the
size the manifest recorded, and a small column (``gen``) reads through every data file (a file whose
footer was overwritten fails here). ``deep=True`` reads every column of every row; ``quick=True``
checks only the manifests and the files (no schema check, no read: what the query service runs
before it loads a snapshot).
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow.fs as pafs

from snappy.storage import fs
from snappy.storage.schema import DOCUMENTS, PAGES, REGIONS, SCHEMAS
from snappy.storage.snapshot import Snapshot
from snappy.storage.tables import IndexDamaged, IndexStore, reraise_fatal


@dataclass(frozen=True)
class Problem:
    table: str
    cause: str
    file: str | None = None

    def __str__(self) -> str:
        return f"{self.table}: {self.file + ': ' if self.file else ''}{self.cause}"

    def to_dict(self) -> dict:
        return {"table": self.table, "file": self.file, "cause": self.cause}


def summary(problems: list[Problem], most: int = 3) -> str:
    """The first ``most`` problems on one line."""
    more = f" (+{len(problems) - most} more)" if len(problems) > most else ""
    return "; ".join(str(p) for p in problems[:most]) + more


class Damaged(IndexDamaged):
    """IndexDamaged with the problems the check found (each names a table, a file and the cause)."""

    def __init__(self, uri: str, what: str, problems: list[Problem]):
        super().__init__(uri, f"{what}: {summary(problems)}")
        self.what, self.problems = what, list(problems)

    def __reduce__(self):  # picklable (Ray): the message alone would not rebuild it
        return type(self), (self.uri, self.what, self.problems)


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def check(store: IndexStore, deep: bool = False, snap: Snapshot | None = None, quick: bool = False) -> list[Problem]:
    """Problems found in the index at ``snap`` (default: its latest snapshot); empty list: intact."""
    if snap is None:
        try:
            snap = store.snapshot()
        except BaseException as e:  # a Rust panic too (see reraise_fatal)
            reraise_fatal(e)
            return [Problem("_snapshots", f"the latest snapshot cannot be read ({_short(e)})")]
    if snap is None:
        return []
    problems: list[Problem] = []
    if DOCUMENTS not in snap.versions and (PAGES in snap.versions or REGIONS in snap.versions):
        problems.append(Problem(DOCUMENTS, "the table is missing but pages/regions exist"))
    for name, version in snap.versions.items():
        problems.extend(_check_table(store, name, version, deep, quick))
    return problems


def _check_table(store: IndexStore, name: str, version: int, deep: bool, quick: bool = False) -> list[Problem]:
    uri = store.table_uri(name)
    try:
        ds = store.dataset(name, version)
        frags = ds.get_fragments()
    except BaseException as e:  # a corrupt manifest can make Lance panic
        reraise_fatal(e)
        return [Problem(name, f"version {version} cannot be opened ({_short(e)})", file=_manifest(store, name, version))]
    schema_fn = SCHEMAS[name]
    missing = [c for c in (schema_fn() if name != PAGES else schema_fn()).names if c not in ds.schema.names]
    out = [Problem(name, f"columns missing: {missing}")] if missing and not quick else []
    pfs, root = fs.filesystem(uri, store.storage_options)
    sizes = _sizes(pfs, f"{root}/data")
    deletions = _sizes(pfs, f"{root}/_deletions")
    for frag in frags:
        meta = frag.metadata
        for f in meta.data_files():
            have = sizes.get(f.path)
            expect = f.file_size_bytes
            if have is None:
                out.append(Problem(name, "data file missing", file=f"{uri}/data/{f.path}"))
            elif expect and have != expect:
                out.append(Problem(name, f"data file is {have} bytes, the manifest says {expect} (truncated or "
                                         f"overwritten)", file=f"{uri}/data/{f.path}"))
        dfile = meta.deletion_file
        if dfile is not None:
            rel = dfile.path(frag.fragment_id)  # "_deletions/<fragment>-<version>-<id>.<ext>"
            if rel.split("/", 1)[-1] not in deletions:
                out.append(Problem(name, "deletion file missing", file=f"{uri}/{rel}"))
    if out or quick:
        return out
    columns = None if deep else (["gen"] if "gen" in ds.schema.names else [ds.schema.names[0]])
    for frag in frags:
        try:
            for _ in frag.to_batches(columns=columns, batch_size=8192):
                pass
        except BaseException as e:
            reraise_fatal(e)
            files = ", ".join(f.path for f in frag.metadata.data_files())
            out.append(Problem(name, f"fragment {frag.fragment_id} cannot be read ({_short(e)})",
                               file=f"{uri}/data/{files}"))
    return out


def _manifest(store: IndexStore, name: str, version: int) -> str:
    """The manifest file of ``version`` (Lance names it ``<version>`` or ``<2^64-1-version>``)."""
    uri = store.table_uri(name)
    pfs, root = fs.filesystem(uri, store.storage_options)
    names = _sizes(pfs, f"{root}/_versions")
    for candidate in (f"{(1 << 64) - 1 - version:020d}.manifest", f"{version}.manifest"):
        if candidate in names:
            return f"{uri}/_versions/{candidate}"
    return f"{uri}/_versions (no manifest for version {version})"


def _sizes(pfs: pafs.FileSystem, folder: str) -> dict[str, int]:
    try:
        infos = pfs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return {}
    return {i.path[len(folder) + 1:]: i.size for i in infos if i.type == pafs.FileType.File}
