"""`snappy eval` on Ray: samples spread over an actor pool, records streamed back to the driver.

Each actor builds its scorer (OCR + encoder, or an index reader) and token counter once, in
``__init__``; batches of samples are evaluated in ``__call__``. The driver appends each record to
the run's per-sample JSONL as it arrives, so an interrupted run resumes exactly as a local one.
Used by ``snappy eval --ray-actors N``; works on a local Ray or under ``ray job submit``.
"""
from __future__ import annotations

import json
import logging
import pickle
from typing import Callable, Iterator, Sequence

from snappy.eval.datasets import EvalSample
from snappy.eval.runner import EvalConfig, evaluate_sample

log = logging.getLogger(__name__)


class EvalActor:
    def __init__(self, scorer_factory: Callable, cfg: EvalConfig, counter_factory: Callable | None):
        self.scorer = scorer_factory()
        self.cfg = cfg
        self.counter = counter_factory() if counter_factory else None

    def __call__(self, batch: dict) -> dict:
        samples = [pickle.loads(b) for b in batch["sample"]]
        records = [evaluate_sample(s, self.scorer, self.cfg, self.counter) for s in samples]
        return {"record": [json.dumps(r, separators=(",", ":")) for r in records]}


def evaluate_on_ray(samples: Sequence[EvalSample], scorer_factory: Callable, cfg: EvalConfig,
                    counter_factory: Callable | None, actors: int = 2, num_cpus: float = 1.0,
                    batch_size: int = 4, address: str | None = None) -> Iterator[dict]:
    """Yield one record per sample (in completion order) from an actor pool of ``actors``."""
    import ray
    from ray.data import ActorPoolStrategy

    if not samples:
        return
    from .cluster import RayOptions, start_ray

    session = start_ray(RayOptions(address=address, log_to_driver=False))
    try:
        items = [{"sample": pickle.dumps(s)} for s in samples]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 200)).map_batches(
            EvalActor, compute=ActorPoolStrategy(size=actors), num_cpus=num_cpus, batch_size=batch_size,
            fn_constructor_kwargs={"scorer_factory": scorer_factory, "cfg": cfg,
                                   "counter_factory": counter_factory})
        for row in ds.iter_rows():
            yield json.loads(row["record"])
    finally:
        session.close()
