"""What the nightly run keeps for the search's candidate stage (the codebook and the codes):
its settings, apart from the code that applies them (:mod:`snappy.candidates.maintain`), so that a
run's configuration loads without the search."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CandidateSettings:
    enabled: bool = True
    min_pages: int = 5000  # below: no codebook (the exact scan serves small indexes)
    k: int | None = None  # centroids; None: default_k(tokens in the index)
    train_pages: int = 2000  # pages sampled for training
    train_tokens: int = 1 << 18  # token vectors k-means sees
    retrain_growth: float = 4.0  # retrain when the index has grown this many times since training
    retrain_similarity: float = 0.95  # ... or new pages fit the centroids below this share of the training fit
    pool_factor: int | None = None  # tokens per pooled vector; None: default_pool_factor(the pages' encoder)
    pool_bits: int | None = None  # 4 or 8 bits per pooled dimension; None: default_pool_bits(the pages' encoder)
    range_pages: int = 256  # training pages pooled to fit the 4-bit ranges
    batch_pages: int = 256  # pages read and coded at a time
    seed: int = 0
    calibrate: bool = True  # measure the budgets that reach target_recall on the index's own data
    target_recall: float = 0.95  # recall@10 the calibrated budgets aim at
    calibration_queries: int = 100  # pseudo-queries measured, and logged queries up to as many
    recalibrate_growth: float = 1.5  # measure again when the index grew or shrank this many times
    query_log: bool = True  # calibrate on the queries the service logged (snappy.storage.querylog) when there are some
    query_log_days: float = 30.0  # logged queries are deleted after this many days
    recalibrate_days: float = 7.0  # measure again when this old and the log holds calibration_queries newer queries
