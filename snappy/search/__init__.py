"""The query path: query -> candidate pages -> exact MaxSim -> regions.

- :mod:`snappy.search.query` what a query request may be (:class:`QueryError` otherwise);
- :mod:`snappy.search.maxsim` the exact MaxSim kernel and top-k;
- :mod:`snappy.candidates.centroids` the first stage: centroid codes + pooled vectors -> candidate pages;
- :mod:`snappy.candidates.maintain` building and updating that structure during indexing runs;
- :mod:`snappy.search.region_rows` region rows and patch->region scoring for result pages;
- :mod:`snappy.search.results` what a query returns;
- :mod:`snappy.search.searcher` the :class:`Searcher` that puts them together over an index snapshot.
"""
from snappy.search.maxsim import PageMatrix, maxsim, maxsim_reference, top_k
from snappy.search.region_rows import overlap_from_table
from snappy.errors import QueryError
from snappy.search.results import PageResult, PageResults, RegionResult, merge_pages
from snappy.search.searcher import Searcher, SearchOptions

__all__ = ["PageMatrix", "PageResult", "PageResults", "QueryError", "RegionResult", "Searcher", "SearchOptions",
           "maxsim", "maxsim_reference", "merge_pages", "overlap_from_table", "top_k"]
