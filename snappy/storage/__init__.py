"""Lance storage of a snappy index: table schemas, the filesystem layer and IndexStore.

Ids are in :mod:`snappy.ids`; the pages and regions rows of an indexed page in :mod:`snappy.records`.
"""
from snappy.storage import fs
from snappy.storage.schema import (DOCUMENTS, KEYS, PAGES, REGIONS, SCHEMAS, TABLES, IndexSettings, document_record,
                                   to_table, vectors_array)
from snappy.storage.tables import IndexDamaged, IndexStore, IndexUnavailable

__all__ = [
    "DOCUMENTS", "PAGES", "REGIONS", "KEYS", "SCHEMAS", "TABLES", "IndexDamaged", "IndexSettings", "IndexStore", "IndexUnavailable", "fs",
    "document_record", "to_table", "vectors_array",
]
