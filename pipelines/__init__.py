"""snappy's Ray jobs.

- ``python -m pipelines.index`` / :func:`pipelines.index.run_index`: the indexing job
  (documents -> pages -> OCR -> patch vectors -> Lance tables), configured by
  :class:`pipelines.config.IndexConfig`; its Ray Data stages live in :mod:`pipelines.stages`.

Importing this package does not import Ray.
"""
