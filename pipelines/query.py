"""Querying an index inside Ray: an actor that holds one Searcher (model and page matrix loaded once).

    actor = start_query_actor("/data/index")              # or QueryActor.options(...).remote(...)
    pages = ray.get(actor.query.remote("total amount due", top_pages=5))   # list of result dicts

For a Ray Data dataset of queries (column ``query``), :class:`QueryUDF` is the class UDF:

    ds.map_batches(QueryUDF, fn_constructor_kwargs={"index": uri}, batch_size=16,
                   compute=ray.data.ActorPoolStrategy(size=2))

Results are plain dicts (``PageResult.to_dict``) so they cross process boundaries cheaply.

Command line: ``python -m pipelines.query --index DIR "text" [...]`` (a local Ray is started).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Mapping, Sequence

from snappy.regions.blocks import DEFAULT_LEVEL, REGION_LEVELS
from snappy.regions.propagation import DEFAULT_METHOD, DEFAULT_THRESHOLD
from snappy.search.query import DEFAULT_TOP_PAGES

log = logging.getLogger("pipelines.query")


class QueryActorImpl:
    """The actor's body (a plain class, so it is testable without Ray)."""

    def __init__(self, index: str, encoder: str | None = None, storage_options: Mapping[str, str] | None = None,
                 auto_refresh: bool = True, dtype: str = "float32", log_queries: bool = False):
        from snappy.search import Searcher, SearchOptions

        self.searcher = Searcher(index, encoder=encoder, storage_options=storage_options,
                                 options=SearchOptions(dtype=dtype, auto_refresh=auto_refresh))
        _ = self.searcher.encoder if self.searcher.n_pages else None  # load the model now, once
        if log_queries and self.searcher.n_pages:  # the queries' vectors, for the nightly calibration
            from snappy.storage.querylog import QueryLogger

            enc = self.searcher.encoder
            self.searcher.query_log = QueryLogger(self.searcher.store.files, enc.encoder_id, prefix=enc.query_prefix)

    def query(self, text: str, top_pages: int = DEFAULT_TOP_PAGES, threshold: str = DEFAULT_THRESHOLD, method: str = DEFAULT_METHOD,
              patch_scores: bool = False, level: str = DEFAULT_LEVEL, target_recall: float | None = None) -> list[dict]:
        return self.query_batch([text], top_pages, threshold, method, patch_scores, level, target_recall)[0]

    def query_batch(self, texts: Sequence[str], top_pages: int = DEFAULT_TOP_PAGES, threshold: str = DEFAULT_THRESHOLD,
                    method: str = DEFAULT_METHOD, patch_scores: bool = False, level: str = DEFAULT_LEVEL,
                    target_recall: float | None = None) -> list[list[dict]]:
        results = self.searcher.query_batch(list(texts), top_pages, threshold, method, level, target_recall)
        return [[r.to_dict(with_patch_scores=patch_scores) for r in res] for res in results]

    def refresh(self) -> bool:
        return self.searcher.refresh()

    def flush_query_log(self) -> int:
        """Write the queries still buffered (the log writes every ``flush_queries`` queries by itself)."""
        return self.searcher.query_log.flush() if self.searcher.query_log is not None else 0

    def info(self) -> dict:
        s = self.searcher
        return {"index": s.store.uri, "pages": s.n_pages, "versions": s.loaded_versions,
                "encoder_id": s.encoder_id, "pid": os.getpid()}


def _remote_class():
    import ray

    return ray.remote(QueryActorImpl)


def start_query_actor(index: str, num_cpus: float = 1, num_gpus: float = 0, **kwargs: Any):
    """A QueryActor handle (Ray must be initialised)."""
    return _remote_class().options(num_cpus=num_cpus, num_gpus=num_gpus).remote(index, **kwargs)


class QueryUDF:
    """Ray Data class UDF: a batch with a ``query`` column -> the same rows plus ``results`` (JSON)."""

    def __init__(self, index: str, top_pages: int = DEFAULT_TOP_PAGES, threshold: str = DEFAULT_THRESHOLD, method: str = DEFAULT_METHOD,
                 level: str = DEFAULT_LEVEL, **kwargs: Any):
        self.impl = QueryActorImpl(index, auto_refresh=False, **kwargs)
        self.args = (top_pages, threshold, method, False, level)

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["query"]]
        results = self.impl.query_batch(texts, *self.args)
        return {**batch, "results": [json.dumps(r) for r in results]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.query", description="Query an index from a Ray actor.")
    p.add_argument("--index", required=True)
    p.add_argument("queries", nargs="+")
    p.add_argument("--top-pages", type=int, default=5)
    p.add_argument("--threshold", default=DEFAULT_THRESHOLD)
    p.add_argument("--level", default=DEFAULT_LEVEL, choices=REGION_LEVELS)
    p.add_argument("--method", default=DEFAULT_METHOD)
    p.add_argument("--encoder", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from snappy import logs

    logs.install()
    import ray

    from .cluster import start_ray

    with start_ray():  # $RAY_ADDRESS (`ray job submit`), else a local Ray on 127.0.0.1
        actor = start_query_actor(args.index, encoder=args.encoder)
        results = ray.get(actor.query_batch.remote(args.queries, args.top_pages, args.threshold, args.method,
                                                   False, args.level))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
