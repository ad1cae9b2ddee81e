"""Lance storage of a snappy index: table schemas, the filesystem layer and IndexStore.

Ids are in :mod:`snappy.ids`; the pages and regions rows of an indexed page in :mod:`snappy.indexing.records`.
``IndexStore`` and its errors load Lance: they are imported on first use (``from snappy.storage
import IndexStore`` works as usual), so a module that needs only the schemas or ``fs`` (the
command line's settings) does not pay for Lance.
"""
from snappy.storage import fs
from snappy.storage.schema import (DOCUMENTS, KEYS, PAGES, REGIONS, SCHEMAS, TABLES, IndexSettings, document_record,
                                   to_table, vectors_array)

__all__ = [
    "DOCUMENTS", "PAGES", "REGIONS", "KEYS", "SCHEMAS", "TABLES", "IndexDamaged", "IndexSettings", "IndexStore", "IndexUnavailable", "fs",
    "document_record", "to_table", "vectors_array",
]

_FROM_TABLES = ("IndexDamaged", "IndexStore", "IndexUnavailable")


def __getattr__(name: str):
    if name in _FROM_TABLES:
        from snappy.storage import tables

        return getattr(tables, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FROM_TABLES))
