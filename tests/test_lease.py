"""One writer at a time: the lease (local and s3://), and concurrent writers that lose nothing."""
from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import time

import pytest

from snappy.storage.fs import Files
from snappy.storage.lease import Lease, LeaseHeld, LeaseLost, LeaseRecord, is_free, record_name


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_second_writer_is_refused_with_the_holder_named(tmp_path):
    files = Files(str(tmp_path))
    a = Lease(files, run_id="run-a")
    a.acquire()
    with pytest.raises(LeaseHeld) as e:
        Lease(files, run_id="run-b").acquire(wait_s=0)
    msg = str(e.value)
    assert "run run-a" in msg and f"pid {a.pid}" in msg and "since 20" in msg and "UTC" in msg
    a.release()
    b = Lease(files, run_id="run-b")
    assert b.acquire().epoch == a.record.epoch + 1 if a.record else b.acquire
    assert b.previous is None  # a released cleanly: nothing was taken over


def test_expired_lease_is_taken_over_and_the_old_holder_stops(tmp_path):
    files, clock = Files(str(tmp_path)), Clock()
    a = Lease(files, run_id="a", ttl_s=10, clock=clock)
    a.acquire()
    a.host = b_host = "other-host"  # a holder elsewhere: its pid means nothing here
    files.put(record_name(a.record.epoch + 1), LeaseRecord(**{**a.record.__dict__, "epoch": a.record.epoch + 1,
                                                             "host": b_host}).to_json())
    a.record = LeaseRecord(**{**a.record.__dict__, "epoch": a.record.epoch + 1, "host": b_host})
    clock.t += 5
    with pytest.raises(LeaseHeld):
        Lease(files, run_id="b", clock=clock).acquire()
    clock.t += 6  # past a's expiry
    b = Lease(files, run_id="b", ttl_s=10, clock=clock)
    b.acquire()
    assert b.previous is not None and b.previous.run_id == "a"
    with pytest.raises(LeaseLost):
        a.check()
    with pytest.raises(LeaseLost):
        a.renew()
    b.check()  # b holds it


def test_a_dead_local_holder_frees_the_lease_at_once(tmp_path):
    files = Files(str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    a = Lease(files, run_id="killed")
    a.acquire()
    files.put(record_name(2), LeaseRecord(**{**a.record.__dict__, "epoch": 2, "pid": pid}).to_json())
    b = Lease(files, run_id="next")
    assert b.acquire().epoch == 3 and b.previous.run_id == "killed"
    assert is_free(None, 0.0, "h") and not is_free(b.record, b.record.started_at, "other-host")


def test_keepalive_renews_and_waiting_writer_gets_it_after_release(tmp_path):
    files = Files(str(tmp_path))
    a = Lease(files, ttl_s=1.0, renew_every_s=0.2)
    a.acquire()
    with a:
        time.sleep(1.5)
        a.check(margin_s=0)  # still held: renewed by the thread
        assert a.record.epoch > 1
    b = Lease(files)
    assert b.acquire(wait_s=0).released is False
    assert len(files.list("_lease")) <= 20  # old records are deleted


def test_lease_on_s3(s3_endpoint, s3_client):
    s3_client.create_bucket(Bucket="idx")
    opts = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "aws_region": "us-east-1",
            "aws_endpoint": s3_endpoint}
    files = Files("s3://idx/snappy", opts)
    assert files.put_if_absent("x.json", b"1") and not files.put_if_absent("x.json", b"2")
    assert files.get("x.json") == b"1" and files.list("") == ["x.json"] and files.get("missing") is None
    a = Lease(files, run_id="s3-a")
    a.acquire()
    with pytest.raises(LeaseHeld, match="s3-a"):
        Lease(files, run_id="s3-b").acquire(wait_s=0.5, poll_s=0.1)
    a.release()
    assert Lease(files, run_id="s3-b").acquire().run_id == "s3-b"


# ---------------------------------------------------------------------- two writers at the same instant
def _writer(index: str, who: str, trials: int, barrier, storage_options, out) -> None:
    """Write 3 documents (1 page, 2 regions each) per trial, all writers released at the same instant."""
    from snappy.storage import IndexStore

    try:
        for t in range(trials):
            docs, pages, regions = _rows(who, t)
            store = IndexStore(f"{index}/t{t:02d}", storage_options)
            barrier.wait(timeout=120)
            store.upsert(docs, pages, regions, wait_s=120)
        out.put((who, "ok"))
    except BaseException as e:  # report, don't hang the parent
        out.put((who, f"{type(e).__name__}: {e}"))


def _rows(who: str, trial: int):
    import numpy as np

    from snappy.ids import page_id_for, region_id_for
    from snappy.storage.schema import IndexSettings, document_record

    s = IndexSettings("e", "o", 72.0)
    docs, pages, regions = [], [], []
    for i in range(3):
        d = document_record(f"mem://{who}/{trial}/{i}.pdf", s, page_count=1)
        docs.append(d)
        pid = page_id_for(d["doc_id"], 1)
        pages.append({"page_id": pid, "doc_id": d["doc_id"], "page_number": 1, "width": 8, "height": 8,
                      "width_pt": 8.0, "height_pt": 8.0, "dpi": 72.0, "image": None,
                      "vectors": np.ones((2, 128), np.float16), "n_tokens": 2, "grid": "{}", "encoder_id": "e"})
        for r in range(2):
            regions.append({"region_id": region_id_for(pid, r), "page_id": pid, "doc_id": d["doc_id"],
                            "page_number": 1, "region_index": r, "bbox": [0, 0, 1, 1], "bbox_norm": [0, 0, .1, .1],
                            "polygon": None, "text": "t", "confidence": 1.0, "level": "line", "area": 1.0,
                            "patch_idx": [0], "patch_inter": [1.0]})
    return docs, pages, regions


def _race(index: str, trials: int, existing: bool, storage_options=None) -> list[dict]:
    from snappy.storage import IndexStore

    if existing:  # both writers then update tables that exist
        for t in range(trials):
            IndexStore(f"{index}/t{t:02d}", storage_options).upsert(*_rows("seed", t))
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(index, who, trials, barrier, storage_options, out)) for who in "AB"]
    for p in procs:
        p.start()
    try:
        results = dict(out.get(timeout=600) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert results == {"A": "ok", "B": "ok"}, results
    outcomes = []
    for t in range(trials):
        store = IndexStore(f"{index}/t{t:02d}", storage_options)
        docs = store.documents(["doc_id"]).column("doc_id").to_pylist()
        pages = store.read("pages", ["page_id"]).column("page_id").to_pylist()
        regions = store.read("regions", ["region_id"]).column("region_id").to_pylist()
        raw_pages = store.dataset("pages").to_table(columns=["page_id"]).column("page_id").to_pylist()
        outcomes.append({"docs": len(docs), "unique_docs": len(set(docs)), "pages": len(pages),
                         "unique_pages": len(set(pages)), "regions": len(regions), "unique_regions": len(set(regions)),
                         "raw_pages": len(raw_pages)})
    return outcomes


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing"])
def test_two_writers_at_the_same_instant_lose_and_duplicate_nothing(tmp_path, existing):
    trials = 20
    n = 6 + (3 if existing else 0)
    for o in _race(str(tmp_path / "idx"), trials, existing):
        assert o == {"docs": n, "unique_docs": n, "pages": n, "unique_pages": n, "regions": 2 * n,
                     "unique_regions": 2 * n, "raw_pages": n}, o


@pytest.mark.slow
@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing"])
def test_two_writers_at_the_same_instant_on_s3(s3_endpoint, s3_client, existing):
    s3_client.create_bucket(Bucket="race")
    opts = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "aws_region": "us-east-1",
            "aws_endpoint": s3_endpoint}
    n = 6 + (3 if existing else 0)
    for o in _race("s3://race/idx", 5, existing, opts):
        assert o["docs"] == o["unique_docs"] == n and o["pages"] == o["unique_pages"] == o["raw_pages"] == n, o
