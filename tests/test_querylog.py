"""The query log: what a service logs of its queries, and the nightly calibration that reads it."""
from __future__ import annotations

import numpy as np

from snappy.storage import querylog
from snappy.storage.fs import Files
from snappy.storage.querylog import LogFile, QueryLogger, QueryLogOptions

DAY = querylog.DAY_S


def _queries(n: int, seed: int = 0, dim: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(3, 9)), dim)).astype(np.float32) for _ in range(n)]


class _Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_logger_writes_full_buffers_and_the_newest_are_read_back(tmp_path):
    files, clock = Files(str(tmp_path / "idx")), _Clock()
    logger = QueryLogger(files, "enc:a", QueryLogOptions(flush_queries=5, flush_s=60), clock=clock)
    qs = _queries(12)
    logger.record(qs[:4])
    assert querylog.log_files(files) == []  # 4 buffered, nothing written yet
    logger.record(qs[4:5])
    (first,) = querylog.log_files(files)
    assert first.count == 5 and first.encoder == querylog.encoder_key("enc:a") and first.at == int(clock.t)
    logger.record(qs[5:6])
    clock.t += 61  # the oldest buffered query is older than flush_s: written at the next query
    logger.record(qs[6:7])
    assert [f.count for f in querylog.log_files(files)] == [5, 2]
    logger.record(qs[7:12])
    assert querylog.count(files, "enc:a") == 12 and querylog.count(files, "enc:b") == 0
    assert querylog.count(files, "enc:a", since=first.at) == 7
    got = querylog.read_recent(files, 6, "enc:a", dim=8)  # newest first
    assert len(got) == 6 and all(g.dtype == np.float32 for g in got)
    for g, q in zip(got, qs[11:5:-1]):
        np.testing.assert_allclose(g, q, atol=2e-3)  # stored as float16
    assert querylog.read_recent(files, 50, "enc:b") == []
    assert querylog.read_recent(files, 50, "enc:a", dim=16) == []  # another dimension: skipped, not an error


def test_logging_never_fails_a_query(tmp_path, caplog):
    class ReadOnly(Files):
        puts = 0

        def put(self, name, data):
            ReadOnly.puts += 1
            raise PermissionError("AccessDenied: the service's credentials are read-only")

    logger = QueryLogger(ReadOnly(str(tmp_path / "idx")), "enc:a", QueryLogOptions(flush_queries=2))
    logger.record(_queries(2))  # the write fails: logged once, logging stops
    logger.record(_queries(4, seed=1))
    assert ReadOnly.puts == 1 and not logger.active and "read-only" in logger.failed
    assert sum("logging stops" in r.getMessage() for r in caplog.records) == 1
    # bad vectors and a sample of 0 are not logged; a prefix that cannot be computed does not stop the log
    files = Files(str(tmp_path / "ok"))
    none = QueryLogger(files, "enc:a", QueryLogOptions(sample=0.0, flush_queries=1))
    none.record(_queries(5))
    odd = QueryLogger(files, "enc:a", QueryLogOptions(flush_queries=1, max_tokens=4),
                      prefix=lambda: (_ for _ in ()).throw(ValueError("no empty query")))
    odd.record([np.zeros((0, 8), np.float32), np.full((3, 8), np.nan, np.float32), np.ones((9, 8), np.float32)])
    assert querylog.log_files(files) == []
    odd.record([np.ones((3, 8), np.float32)])
    assert querylog.count(files) == 1 and odd.active and querylog.read_prefix(files, "enc:a") is None


def test_the_prefix_is_stored_once_and_old_files_are_pruned(tmp_path):
    files, clock = Files(str(tmp_path / "idx")), _Clock()
    calls = []
    prefix = np.arange(16, dtype=np.float32).reshape(2, 8)
    logger = QueryLogger(files, "enc:a", QueryLogOptions(flush_queries=1), clock=clock,
                         prefix=lambda: calls.append(1) or prefix)
    for day in range(5):
        clock.t = 1_800_000_000.0 + day * DAY
        logger.record(_queries(1, seed=day))
    assert len(calls) == 1
    np.testing.assert_array_equal(querylog.read_prefix(files, "enc:a"), prefix)
    assert querylog.read_prefix(files, "enc:b") is None
    log = querylog.log_files(files)
    assert [f.name for f in querylog.expired(log, clock.t, 2.5)] == [f.name for f in log[:2]]  # pure
    assert querylog.prune(files, 2.5, now=clock.t) == 2 and querylog.count(files) == 3
    assert LogFile.parse("prefix-0123abcd.npz") is None and LogFile.parse("notes.txt") is None


def test_the_calibration_is_redone_when_the_log_can_replace_pseudo_queries():
    from snappy.candidates.calibrate import Budgets, Calibration, plan_calibration

    cal = Calibration(7, 1000, 0.95, 100, 0, Budgets(), 0.96, [])
    assert plan_calibration(1000, 7, cal, 0.95, logged=40) is None  # too few to change much
    assert "holds 50 queries, the calibration used 0" in plan_calibration(1000, 7, cal, 0.95, logged=50)
    half = Calibration(7, 1000, 0.95, 100, 60, Budgets(), 0.96, [])
    assert plan_calibration(1000, 7, half, 0.95, logged=5000) is None  # 60 -> 100: +40 only
    full = Calibration(7, 1000, 0.95, 100, 100, Budgets(), 0.96, [])
    assert plan_calibration(1000, 7, full, 0.95, logged=10 ** 6, newer=99, age_days=30) is None
    assert "8 days old" in plan_calibration(1000, 7, full, 0.95, logged=10 ** 6, newer=100, age_days=8)
    assert plan_calibration(1000, 7, full, 0.95, logged=10 ** 6, newer=500, age_days=6) is None


def test_queries_searched_with_a_logger_reach_the_log(tmp_path):
    from snappy.search import Searcher
    from snappy.testing.synth_index import SynthDocSpec, SynthPageSpec, write_index

    uri = str(tmp_path / "idx")
    words = ["total amount due", "invoice number 17", "tax balance", "shipping address"]
    write_index(uri, [SynthDocSpec(f"mem://d{i}.pdf", [SynthPageSpec((800, 1000), [((40, 60, 700, 110), w)])])
                      for i, w in enumerate(words)])
    s = Searcher(uri)
    s.query_log = QueryLogger(s.store.files, s.encoder_id, QueryLogOptions(flush_queries=2))
    assert s.query("total amount due")
    assert querylog.count(s.store.files) == 0
    s.query_batch(["invoice number", "tax"])
    assert querylog.count(s.store.files, s.encoder_id) == 3
    (v,) = querylog.read_recent(s.store.files, 1, s.encoder_id)  # the newest
    np.testing.assert_allclose(v, s.encode(["tax"])[0], atol=2e-3)
