"""The query path: query -> candidate pages -> exact MaxSim -> regions.

- :mod:`snappy.search.query` what a query request may be (:class:`QueryError` otherwise) and its defaults;
- :mod:`snappy.search.maxsim` the exact MaxSim kernel and top-k;
- :mod:`snappy.search.region_rows` region rows and patch->region scoring for result pages;
- :mod:`snappy.search.results` what a query returns;
- :mod:`snappy.search.searcher` the :class:`Searcher` that puts them together over an index snapshot.

The candidate stage it uses is :mod:`snappy.candidates`. :class:`Searcher` is loaded on first use
(``from snappy.search import Searcher`` works as usual), so the query checks and defaults do not
load Lance.
"""
from __future__ import annotations

from snappy.errors import QueryError
from snappy.search.maxsim import PageMatrix, maxsim, maxsim_reference, top_k
from snappy.search.region_rows import overlap_from_table
from snappy.search.results import PageResult, PageResults, RegionResult, merge_pages

_LAZY = ("Searcher", "SearchOptions")  # snappy.search.searcher loads Lance
__all__ = ["PageMatrix", "PageResult", "PageResults", "QueryError", "RegionResult", "SearchOptions", "Searcher",
           "maxsim", "maxsim_reference", "merge_pages", "overlap_from_table", "top_k"]


def __getattr__(name: str):
    if name in _LAZY:
        from snappy.search import searcher

        return getattr(searcher, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
