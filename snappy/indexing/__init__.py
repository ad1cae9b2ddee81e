"""The index run's decisions and rows, without Ray.

- :mod:`~snappy.indexing.plan` what a run does with each listed entry (skip, index, check, reject, defer);
- :mod:`~snappy.indexing.settle` when a document is complete, and its new documents row;
- :mod:`~snappy.indexing.committer` the workers' reports -> settled documents -> commits when due;
- :mod:`~snappy.indexing.records` the pages and regions rows of an indexed page;
- :mod:`~snappy.indexing.poison` giving up on work that kills its worker;
- :mod:`~snappy.indexing.document` indexing one document in this process (:func:`index_document`).

``index_document`` and ``IndexedDocument`` are loaded on first use (they pull in the encoders and OCR).
"""
__all__ = ["IndexedDocument", "index_document"]


def __getattr__(name: str):
    if name in __all__:
        from snappy.indexing import document

        return getattr(document, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
