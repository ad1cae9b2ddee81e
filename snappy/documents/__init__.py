"""What a document is and where it comes from: sources, rendering, the text layer, failures.

- :mod:`~snappy.documents.sources` listing and reading documents from a folder or ``s3://``;
- :mod:`~snappy.documents.pages` PDFs and images -> :class:`Page` (every limit checked first);
- :mod:`~snappy.documents.textlayer` regions from the PDF's own text, and whether a page needs OCR;
- :mod:`~snappy.documents.failures` whether a failure is the document's fault, and its stable reason;
- :mod:`~snappy.documents.localfile` opening local files without blocking.
"""
from snappy.documents.failures import FailureKind, classify
from snappy.documents.pages import Page, RenderOptions, iter_pages, load_pages
from snappy.documents.sources import ReadLimits, Source, SourceEntry

__all__ = ["FailureKind", "Page", "ReadLimits", "RenderOptions", "Source", "SourceEntry", "classify", "iter_pages",
           "load_pages"]
