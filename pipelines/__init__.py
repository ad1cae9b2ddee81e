"""snappy's entry points on Ray: the jobs and the service that compose the ``snappy`` library.

Installed as ``snappy_pipelines`` (the wheel adds no generic top-level name); in a checkout, and in
``ray job submit --working-dir .``, the same modules import as ``pipelines``. Modules import each
other relatively, and the library never imports them.

- ``index`` (``python -m pipelines.index`` / :func:`run_index`): the indexing job (documents -> pages
  -> OCR -> patch vectors -> Lance tables), configured by ``config.IndexConfig``; Ray Data stages in
  ``stages``;
- ``serve``: the HTTP query service on Ray Serve (router + shard deployments), ``snappy serve``;
- ``query``: a query actor and a Ray Data query UDF;
- ``cli``: the ``snappy`` command (``index | query | serve | inspect | eval``).

Importing this package does not import Ray.
"""
