"""Lance storage of a snappy index: table schemas, record builders, the filesystem layer and IndexStore."""
from snappy.storage import fs
from snappy.storage.schema import (DOCUMENTS, KEYS, PAGES, REGIONS, SCHEMAS, IndexSettings, doc_id_for,
                                   document_record, page_id_for, page_record, region_id_for, region_records,
                                   to_table, vectors_array)
from snappy.storage.tables import TABLES, IndexDamaged, IndexStore, IndexUnavailable

__all__ = [
    "DOCUMENTS", "PAGES", "REGIONS", "KEYS", "SCHEMAS", "TABLES", "IndexDamaged", "IndexSettings", "IndexStore", "IndexUnavailable", "fs",
    "doc_id_for", "page_id_for", "region_id_for", "document_record", "page_record", "region_records",
    "to_table", "vectors_array",
]
